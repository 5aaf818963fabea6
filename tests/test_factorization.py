"""companion.linear.factorization: init, products, gradients, GD in lax.scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.linear import factorization as F
from companion.linear.precision import float64


@pytest.fixture(autouse=True)
def _float64():
    """The tests build their own arrays too: run each one in float64, as the library does."""
    with float64():
        yield


@pytest.fixture
def problem():
    k1, k2 = jax.random.split(jax.random.key(3))
    return F.scaled_orthogonal(k1, 12, [0.5, 0.8, 1.2]), F.low_rank_target(k2, 12, 2)


@pytest.mark.parametrize("scales", [(0.5,), (0.1, 2.0), (1e-3, 0.3, 0.7, 1.0)])
def test_scaled_orthogonal(scales):
    w = F.scaled_orthogonal(jax.random.key(0), 9, scales)
    assert w.shape == (len(scales), 9, 9) and w.dtype == jnp.float64
    for l, eps in enumerate(scales):
        np.testing.assert_allclose(w[l] @ w[l].T, eps**2 * np.eye(9), atol=1e-14 * max(1, eps**2))
        np.testing.assert_allclose(w[l].T @ w[l], eps**2 * np.eye(9), atol=1e-14 * max(1, eps**2))


def test_low_rank_target_has_rank_and_unit_norm():
    phi = F.low_rank_target(jax.random.key(1), 20, 4)
    s = np.linalg.svd(np.asarray(phi), compute_uv=False)
    assert s[0] == pytest.approx(1.0, abs=1e-14)
    assert np.all(s[4:] < 1e-14) and s[3] > 1e-3


def test_products_and_closed_form_gradient(problem):
    w, phi = problem
    np.testing.assert_allclose(F.end_to_end(w), w[2] @ w[1] @ w[0], atol=1e-15)
    below, above = F.prefix_products(w), F.suffix_products(w)
    np.testing.assert_allclose(below[2], w[1] @ w[0], atol=1e-15)
    np.testing.assert_allclose(above[1], w[2] @ w[1], atol=1e-15)
    np.testing.assert_allclose(F.gradients(w, phi), jax.grad(F.loss)(w, phi), atol=1e-14)


def test_products_skip_the_identity_bit_for_bit(problem):
    # prefix_products and backprop leave out the products with W_{0:1} = I; the results are the
    # same as with them, to the last bit (x · 1 + 0 · y = x in floating point).
    w, phi = problem
    eye = jnp.eye(w.shape[-1], dtype=w.dtype)
    with_eye = [eye]
    for layer in w:
        with_eye.append(layer @ with_eye[-1])
    below = F.prefix_products(w)
    for a, b in zip(below, with_eye):
        assert np.array_equal(a, b)
    residual = below[-1] - phi
    expected, above = [None] * w.shape[0], residual
    for l in range(w.shape[0] - 1, -1, -1):
        expected[l] = above @ with_eye[l].T
        above = w[l].T @ above
    assert np.array_equal(F.backprop(w, below, residual), jnp.stack(expected))


def test_gd_step_is_weight_decay_plus_gradient(problem):
    w, phi = problem
    lr, wd = 0.05, 0.1
    expected = (1 - lr * wd) * w - lr * jax.grad(F.loss)(w, phi)
    np.testing.assert_allclose(F.gd_step(w, phi, lr, wd), expected, atol=1e-14)


def test_run_gd_records_every_k_and_matches_python_loop(problem):
    w, phi = problem
    final, losses = F.run_gd(w, phi, lr=0.1, weight_decay=1e-3, steps=12, record_every=4)
    assert losses.shape == (4,)
    ref = w
    for _ in range(12):
        ref = F.gd_step(ref, phi, 0.1, 1e-3)
    np.testing.assert_allclose(final, ref, atol=1e-13)
    assert float(losses[-1]) == pytest.approx(float(F.loss(ref, phi)), rel=1e-12)
    assert losses[0] > losses[-1]


def test_run_gd_rejects_bad_sizes_and_divergence(problem):
    w, phi = problem
    with pytest.raises(ValueError, match="multiple of record_every"):
        F.run_gd(w, phi, lr=0.1, steps=10, record_every=3)
    with pytest.raises(ValueError, match="diverged.*lower the step size"):
        F.run_gd(w, phi, lr=100.0, steps=200)


@pytest.mark.parametrize("rows,cols", [(9, 9), (12, 5), (5, 12), (1, 4)])
def test_haar_orthogonal_is_semi_orthogonal(rows, cols):
    q = F.haar_orthogonal(jax.random.key(2), rows, cols)
    assert q.shape == (rows, cols) and q.dtype == jnp.float64
    gram = q.T @ q if rows >= cols else q @ q.T
    np.testing.assert_allclose(gram, np.eye(min(rows, cols)), atol=1e-14)


def test_orthonormalize_fixes_signs_and_keeps_orthonormal_columns():
    q = F.haar_orthogonal(jax.random.key(4), 10, 4)
    np.testing.assert_allclose(F.orthonormalize(q), q, atol=1e-14)  # already orthonormal: unchanged
    m = jax.random.normal(jax.random.key(5), (10, 4), dtype=jnp.float64)
    q2 = F.orthonormalize(m)
    r = q2.T @ m  # R = QᵀM, upper triangular with a positive diagonal
    assert np.all(np.diagonal(np.asarray(r)) > 0)
    np.testing.assert_allclose(np.tril(np.asarray(r), -1), 0, atol=1e-13)


@pytest.mark.parametrize("steps,every", [(12, 4), (6, 1), (0, 3)])
def test_scan_records_counts_and_times(steps, every):
    final, rec = jax.jit(lambda x: F.scan_records(lambda s: s + 1.0, lambda s, t: {"s": s, "t": t}, x,
                                                  steps=steps, record_every=every))(jnp.asarray(0.0))
    assert float(final) == steps
    np.testing.assert_array_equal(rec["t"], np.arange(0, steps + 1, every))
    np.testing.assert_array_equal(rec["s"], np.arange(0, steps + 1, every))


def test_scan_records_guard_hides_non_finite_states():
    _, rec = jax.jit(lambda x: F.scan_records(lambda s: s * 1e300, lambda s, t: s, x, steps=3, record_every=1,
                                              guard_finite=True))(jnp.asarray(1e10))
    assert float(rec[0]) == 1e10 and np.all(np.asarray(rec[2:]) == 0)


@pytest.mark.parametrize("change,message", [
    (dict(width=6), "d > 2r"),
    (dict(depth=1, init_scales=(0.5,)), "depth must be ≥ 2"),
    (dict(init_scales=(0.5, 0.5)), "one scale per layer"),
    (dict(init_scales=(0.5, 0.0, 0.5)), "every scale ε_l must be > 0"),
    (dict(lr=0.0), "step size must be > 0"),
    (dict(weight_decay=-1.0), "weight decay must be ≥ 0"),
    (dict(steps=10, record_every=3), "multiple of record_every"),
    (dict(target_rank=2.0), "target_rank must be an integer"),
])
def test_setting_rejects_what_the_theorem_excludes(change, message):
    base = dict(width=20, target_rank=3, depth=3, init_scales=(0.5,) * 3, lr=0.1, weight_decay=0.0, steps=12)
    with pytest.raises(ValueError, match=message):
        F.FactorizationSetting(**{**base, **change})


def test_initial_state_from_the_seed():
    s = F.FactorizationSetting(width=10, target_rank=2, depth=3, init_scales=(0.5, 0.6, 0.7), lr=0.1,
                               weight_decay=0.0, steps=1, seed=4)
    assert s.required_count == 6
    w0, phi = F.initial_state(s)
    w0b, phib = F.initial_state(s)
    np.testing.assert_array_equal(w0, w0b)
    np.testing.assert_array_equal(phi, phib)
    assert w0.shape == (3, 10, 10) and np.linalg.matrix_rank(np.asarray(phi)) == 2
