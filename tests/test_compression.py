"""companion.linear.compression: the outer factors, the exact gap, Prop. 2's bound (arXiv:2406.04112, compression from the first gradient;
Prop. 2 of the authors' ICML 2024 talk)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.linear import compression, factorization, theory
from companion.linear.compression import compress_point
from companion.linear.factorization import FactorizationSetting, initial_state
from companion.linear.precision import float64


@pytest.fixture(autouse=True)
def _float64():
    """The tests build their own arrays too: run each one in float64, as the library does."""
    with float64():
        yield


@pytest.mark.parametrize("d,r,L,scales", [(40, 3, 3, (0.5,) * 3), (30, 2, 2, (0.6, 0.9)), (24, 4, 4, (0.5, 0.7, 0.6, 0.8))])
def test_outer_factors_span_complement_of_S(d, r, L, scales):
    s = FactorizationSetting(width=d, target_rank=r, depth=L, init_scales=scales, lr=0.1, weight_decay=0.0, steps=1)
    w0, phi = initial_state(s)
    c = compression.compress_factorization(w0, phi, scales, r)
    basis = theory.invariant_subspace(w0, phi)
    assert c.right.shape == (d, 2 * r) and c.left.shape == (d, 2 * r)
    assert float(jnp.max(jnp.abs(basis.T @ c.right))) < 1e-12  # right ⟂ S
    both = jnp.concatenate([basis, c.right], axis=1)  # together: an orthonormal basis of R^d
    np.testing.assert_allclose(both.T @ both, np.eye(d), atol=1e-12)
    np.testing.assert_allclose(c.left.T @ c.left, np.eye(2 * r), atol=1e-13)
    np.testing.assert_allclose(c.left, factorization.end_to_end(w0) @ c.right / np.prod(scales), atol=1e-13)
    np.testing.assert_allclose(c.inner, np.stack([e * np.eye(2 * r) for e in scales]), atol=0)


def test_low_rank_part_recovered_exactly():
    s = FactorizationSetting(width=20, target_rank=2, depth=3, init_scales=(0.5, 0.7, 0.9), lr=0.1, weight_decay=0.0, steps=1)
    w0, phi = initial_state(s)
    g = factorization.gradients(w0, phi)[0]
    a = compression.lowrank_part_of_first_gradient(g, w0[0], s.init_scales)
    np.testing.assert_allclose(a, (w0[2] @ w0[1]).T @ phi, atol=1e-15)


@pytest.mark.parametrize("r_hat,scales", [(3, (0.5, 0.5, 0.5)), (3, (0.4, 0.7, 0.6)), (5, (0.5, 0.5, 0.5))])
def test_gap_equals_sqrt_d_minus_2r_prod_rho_and_respects_bound(r_hat, scales):
    """gap(t) = √(d − 2r̂) ∏ρ_l(t) to 1e-9 relative; gap² ≤ (d − 2r̂)∏ε² (Prop. 2)."""
    s = FactorizationSetting(width=40, target_rank=3, depth=3, init_scales=scales, lr=0.1, weight_decay=0.0, steps=200)
    out = compress_point(s, r_hat)
    assert out["max_rel_err_vs_exact"] < 1e-9
    assert out["max_gap_over_bound"] <= 1 + 1e-12
    assert out["max_gap_over_bound"] > 0.999  # attained at t = 0, where ρ = ε
    assert out["params_compressed"] == 2 * 40 * 2 * r_hat + 3 * (2 * r_hat) ** 2


def test_compressed_tracks_the_original_loss():
    s = FactorizationSetting(width=30, target_rank=3, depth=3, init_scales=(0.05,) * 3, lr=0.5, weight_decay=0.0, steps=400)
    w0, phi = initial_state(s)
    c = compression.compress_factorization(w0, phi, s.init_scales, 3)
    tr = compression.track_gap(w0, phi, c, lr=s.lr, steps=400, record_every=20)
    lo, lc = np.asarray(tr["loss_original"]), np.asarray(tr["loss_compressed"])
    assert lo[-1] < 1e-3 * lo[0]  # it learned
    # The losses differ only by the ρ block's ½(d − 2r*)∏ρ², below ½·24·(0.05³)² ≈ 2e-7.
    assert np.max(np.abs(lo - lc)) < 2e-7


def test_parameter_count_and_errors():
    assert compression.parameter_count(1000, 1000, 5, 3) == 2000 * 10 + 3 * 100
    s = FactorizationSetting(width=10, target_rank=2, depth=2, init_scales=(0.5, 0.5), lr=0.1, weight_decay=0.0, steps=1)
    w0, phi = initial_state(s)
    with pytest.raises(ValueError, match="rank estimate 6 needs"):
        compression.compress_factorization(w0, phi, s.init_scales, 6)


def test_non_square_outer_layers():
    """Outer factors for W_1 (k × n) and W_L (m × k), k = min(m, n): orthonormal, right sized."""
    m, n, k, r = 12, 20, 12, 2
    keys = jax.random.split(jax.random.key(0), 4)
    q1 = jnp.linalg.qr(jax.random.normal(keys[0], (n, k), dtype=jnp.float64))[0].T  # k × n, orthonormal rows
    q2 = jnp.linalg.qr(jax.random.normal(keys[1], (k, k), dtype=jnp.float64))[0]
    q3 = jnp.linalg.qr(jax.random.normal(keys[2], (m, k), dtype=jnp.float64))[0]  # m × k
    eps = 0.5
    w1, w2, w3 = eps * q1, eps * q2, eps * q3
    a = jax.random.normal(keys[3], (k, r), dtype=jnp.float64) @ jax.random.normal(keys[3], (r, n), dtype=jnp.float64)
    left, right = compression.outer_factors(a, w1, w3 @ w2 @ w1, (eps,) * 3, r)
    assert left.shape == (m, 2 * r) and right.shape == (n, 2 * r)
    np.testing.assert_allclose(left.T @ left, np.eye(2 * r), atol=1e-12)
    np.testing.assert_allclose(right.T @ right, np.eye(2 * r), atol=1e-12)
    # row(A) lies in span(right).
    _, _, vt = np.linalg.svd(np.asarray(a))
    proj = right @ (right.T @ vt[:r].T)
    np.testing.assert_allclose(proj, vt[:r].T, atol=1e-12)


@pytest.mark.parametrize("r_hat,steps,every", [(3, 100, 10), (4, 60, 20)])
def test_gap_against_theory_matches_the_exact_gap(r_hat, steps, every):
    s = FactorizationSetting(width=30, target_rank=3, depth=3, init_scales=(0.5, 0.6, 0.7), lr=0.1,
                             weight_decay=0.0, steps=steps, record_every=every)
    w0, phi = initial_state(s)
    c = compression.compress_factorization(w0, phi, s.init_scales, r_hat)
    g = compression.gap_against_theory(w0, phi, c, s.init_scales, lr=s.lr, steps=steps, record_every=every)
    np.testing.assert_array_equal(g.steps, np.arange(0, steps + 1, every))
    rho = np.asarray(theory.rho_trajectory(s.init_scales, s.lr, 0.0, steps))[::every]
    np.testing.assert_allclose(g.exact, np.sqrt(30 - 2 * r_hat) * np.prod(rho, axis=1), rtol=1e-15)
    assert g.bound == pytest.approx((30 - 2 * r_hat) * (0.5 * 0.6 * 0.7) ** 2, rel=1e-15)
    assert g.max_rel_err_vs_exact < 1e-9 and 0.999 < g.max_gap_over_bound <= 1 + 1e-12
    np.testing.assert_allclose(g.distance, np.sqrt(2 * g.loss_original), rtol=0)


def test_compress_point_refuses_weight_decay_and_bad_estimates():
    s = FactorizationSetting(width=20, target_rank=3, depth=3, init_scales=(0.5,) * 3, lr=0.1,
                             weight_decay=1e-3, steps=10)
    with pytest.raises(ValueError, match="plain gradient descent"):
        compress_point(s)
    with pytest.raises(ValueError, match="rank estimate 2 must satisfy"):
        compress_point(s, 2)
