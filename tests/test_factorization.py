"""companion.linear.factorization: init, products, gradients, GD in lax.scan."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.linear import factorization as F


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
