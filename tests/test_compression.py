"""companion.linear.compression: the outer factors, the exact gap, Prop. 2's bound (PAPER.md §2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.linear import compression, factorization, theory
from companion.book.configs import FactorizationSetting
from companion.book.experiments import compress_point, initial_state


@pytest.mark.parametrize("d,r,L,scales", [(40, 3, 3, (0.5,) * 3), (30, 2, 2, (0.6, 0.9)), (24, 4, 4, (0.5, 0.7, 0.6, 0.8))])
def test_outer_factors_span_complement_of_S(d, r, L, scales):
    s = FactorizationSetting(width=d, rank=r, depth=L, scales=scales, lr=0.1, weight_decay=0.0, steps=1)
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
    s = FactorizationSetting(width=20, rank=2, depth=3, scales=(0.5, 0.7, 0.9), lr=0.1, weight_decay=0.0, steps=1)
    w0, phi = initial_state(s)
    g = factorization.gradients(w0, phi)[0]
    a = compression.lowrank_part_of_first_gradient(g, w0[0], s.scales)
    np.testing.assert_allclose(a, (w0[2] @ w0[1]).T @ phi, atol=1e-15)


@pytest.mark.parametrize("r_hat,scales", [(3, (0.5, 0.5, 0.5)), (3, (0.4, 0.7, 0.6)), (5, (0.5, 0.5, 0.5))])
def test_gap_equals_sqrt_d_minus_2r_prod_rho_and_respects_bound(r_hat, scales):
    """gap(t) = √(d − 2r̂) ∏ρ_l(t) to 1e-9 relative; gap² ≤ (d − 2r̂)∏ε² (Prop. 2)."""
    s = FactorizationSetting(width=40, rank=3, depth=3, scales=scales, lr=0.1, weight_decay=0.0, steps=200)
    out = compress_point(s, r_hat)
    assert out["max_rel_err_vs_exact"] < 1e-9
    assert out["max_gap_over_bound"] <= 1 + 1e-12
    assert out["max_gap_over_bound"] > 0.999  # attained at t = 0, where ρ = ε
    assert out["params_compressed"] == 2 * 40 * 2 * r_hat + 3 * (2 * r_hat) ** 2


def test_compressed_tracks_the_original_loss():
    s = FactorizationSetting(width=30, rank=3, depth=3, scales=(0.05,) * 3, lr=0.5, weight_decay=0.0, steps=400)
    w0, phi = initial_state(s)
    c = compression.compress_factorization(w0, phi, s.scales, 3)
    tr = compression.track_gap(w0, phi, c, lr=s.lr, steps=400, record_every=20)
    lo, lc = np.asarray(tr["loss_original"]), np.asarray(tr["loss_compressed"])
    assert lo[-1] < 1e-3 * lo[0]  # it learned
    # The losses differ only by the ρ block's ½(d − 2r*)∏ρ², below ½·24·(0.05³)² ≈ 2e-7.
    assert np.max(np.abs(lo - lc)) < 2e-7


def test_parameter_count_and_errors():
    assert compression.parameter_count(1000, 1000, 5, 3) == 2000 * 10 + 3 * 100
    s = FactorizationSetting(width=10, rank=2, depth=2, scales=(0.5, 0.5), lr=0.1, weight_decay=0.0, steps=1)
    w0, phi = initial_state(s)
    with pytest.raises(ValueError, match="rank estimate 6 needs"):
        compression.compress_factorization(w0, phi, s.scales, 6)


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
