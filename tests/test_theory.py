"""companion.linear.theory: the theorem over a table of settings, the recursion, the proof's events
(arXiv:2406.04112, the invariant-subspace theorem)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.linear import factorization as F
from companion.linear import theory
from companion.linear.factorization import FactorizationSetting, initial_state
from companion.linear.precision import float64


@pytest.fixture(autouse=True)
def _float64():
    """The tests build their own arrays too: run each one in float64, as the library does."""
    with float64():
        yield

# (d, r*, L, scales, η, λ): λ = 0 and λ > 0, depth 2–5, equal and unequal ε_l, several d and r*.
TABLE = [
    (10, 2, 2, (0.5, 0.5), 0.1, 0.0),
    (12, 1, 2, (0.3, 0.9), 0.1, 1e-2),
    (20, 3, 3, (0.5, 0.5, 0.5), 0.1, 1e-3),
    (16, 4, 3, (0.4, 0.7, 1.1), 0.05, 0.0),
    (24, 5, 4, (0.6,) * 4, 0.1, 1e-3),
    (18, 2, 4, (0.5, 0.9, 0.6, 0.8), 0.1, 0.0),
    (15, 3, 5, (0.8,) * 5, 0.05, 1e-2),
    (14, 1, 5, (0.9, 0.7, 1.0, 0.8, 0.6), 0.05, 0.0),
]


@pytest.mark.parametrize("d,r,L,scales,lr,wd", TABLE)
def test_theorem_holds(d, r, L, scales, lr, wd):
    s = FactorizationSetting(width=d, target_rank=r, depth=L, init_scales=scales, lr=lr, weight_decay=wd, steps=60)
    run = theory.check_theorem(s, angles=False)
    assert run.dim_s == d - 2 * r  # generic Φ, Θ(0): the bound is met with equality
    # From the first step on, exactly d − 2r* singular values equal ρ_l(t) (all d at t = 0).
    assert run.counts[0].min() == d
    assert run.counts[1:].min() == d - 2 * r and run.counts[1:].max() == d - 2 * r
    assert run.rel_dev.max() < 1e-12
    assert run.events.max() < 1e-10
    assert run.loss[-1] < run.loss[0]  # it is learning, not standing still


def test_rho_recursion_by_hand():
    scales, lr, wd = (0.5, 0.8, 1.1), 0.1, 0.01
    rho = np.asarray(theory.rho_trajectory(scales, lr, wd, 3))
    expected = [np.array(scales)]
    for _ in range(3):
        p = expected[-1]
        others = np.array([np.prod(np.delete(p, l) ** 2) for l in range(3)])
        expected.append(p * (1 - lr * wd - lr * others))
    np.testing.assert_allclose(rho, np.array(expected), rtol=1e-15)
    # With equal ε all layers share one ρ(t) (the talk's remark after equation (1)).
    rho_eq = np.asarray(theory.rho_trajectory((0.5,) * 4, 0.1, 0.0, 10))
    assert np.all(rho_eq == rho_eq[:, :1])


def test_rho_block_does_not_depend_on_target():
    """ρ_l(t) is independent of Φ: two targets, same ρ-block singular values."""
    setting = FactorizationSetting(width=16, target_rank=2, depth=3, init_scales=(0.5, 0.7, 0.6), lr=0.1,
                                   weight_decay=1e-3, steps=40)
    w0, phi_a = initial_state(setting)
    phi_b = F.low_rank_target(jax.random.key(99), 16, 3)
    rho = theory.rho_trajectory(setting.init_scales, 0.1, 1e-3, 40)[-1]
    for phi, r in ((phi_a, 2), (phi_b, 3)):
        final, _ = F.run_gd(w0, phi, lr=0.1, weight_decay=1e-3, steps=40)
        sv = jnp.linalg.svd(final, compute_uv=False)
        assert np.all(np.asarray(theory.count_equal_to_rho(sv, rho, 1e-10)) >= 16 - 2 * r)


def test_proof_vectors_satisfy_events_at_start_and_chain():
    setting = FactorizationSetting(width=14, target_rank=3, depth=3, init_scales=(0.5, 1.5, 0.8), lr=0.1,
                                   weight_decay=0.0, steps=1)
    w0, phi = initial_state(setting)
    vec = theory.proof_vectors(w0, phi)
    assert vec.v.shape == (3, 14, 8)
    np.testing.assert_allclose(vec.v[1:], vec.u[:-1], atol=0)  # v^(l+1) = u^(l)
    for b in (vec.v, vec.u):
        np.testing.assert_allclose(jnp.swapaxes(b, 1, 2) @ b, np.broadcast_to(np.eye(8), (3, 8, 8)), atol=1e-14)
    res = theory.event_residuals(w0, phi, vec, jnp.array(setting.init_scales))
    assert res.shape == (4, 3) and float(res.max()) < 1e-14
    # A wrong ρ breaks events A and B by exactly the relative error made.
    bad = theory.event_residuals(w0, phi, vec, jnp.array(setting.init_scales) * 1.01)
    assert float(bad[0].min()) == pytest.approx(0.01, rel=1e-6)


def test_layer_scales_rejects_non_orthogonal():
    w = F.scaled_orthogonal(jax.random.key(0), 6, (0.5, 0.5))
    np.testing.assert_allclose(theory.layer_scales(w), [0.5, 0.5], rtol=1e-14)
    with pytest.raises(ValueError, match="layer 2 is not an ε-scaled orthogonal"):
        theory.layer_scales(w.at[1, 0, 0].add(0.1))


def test_angles_only_learning_vectors_move():
    s = FactorizationSetting(width=12, target_rank=2, depth=3, init_scales=(0.5,) * 3, lr=0.1,
                             weight_decay=0.0, steps=80, record_every=4)
    run = theory.check_theorem(s, angles=True)
    rho_block = np.asarray(theory.rho_group(run.singular_values, run.rho, run.dim_s))
    assert np.degrees(run.angles[1:][rho_block[1:]]).max() < 1e-8
    assert np.degrees(run.angles[-1][~rho_block[-1]]).min() > 1.0
    assert np.all(run.angles[0] == 0)


def test_counts_and_deviation_helpers():
    sv = jnp.array([[3.0, 0.5, 0.5 * (1 + 1e-9), 0.5 * (1 + 1e-6)]])
    rho = jnp.array([0.5])
    assert int(theory.count_equal_to_rho(sv, rho, 1e-8)[0]) == 2
    assert float(theory.rho_deviation(sv, rho, 3)[0]) == pytest.approx(1e-6, rel=1e-6)
    # A negative ρ (step size past 1/∏ρ²) is a block with singular value |ρ|.
    assert int(theory.count_equal_to_rho(sv, -rho, 1e-8)[0]) == 2
    assert list(np.asarray(theory.rho_group(sv, rho, 2)[0])) == [False, True, True, False]


def test_papers_own_check():
    """d=40, r*=3, L=3, ε=0.5, η=0.1, λ=1e-3, 300 steps, float64: exactly 34 = d − 2r* singular
    values of each layer equal ρ_l(t) to 1e-9 relative (the theorem, arXiv:2406.04112)."""
    s = FactorizationSetting(width=40, target_rank=3, depth=3, init_scales=(0.5,) * 3, lr=0.1, weight_decay=1e-3, steps=300)
    run = theory.check_theorem(s, rtol=1e-9, angles=False)
    assert run.counts[1:].min() == 34 and run.counts[1:].max() == 34
    assert run.rel_dev.max() < 1e-12
