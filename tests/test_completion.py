"""companion.linear.completion: the paper's conventions, the sparse step, the four methods (arXiv:2406.04112, deep matrix
completion experiments (authors' notebooks))."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.linear import completion, compression, factorization
from companion.linear.precision import float64


@pytest.fixture(autouse=True)
def _float64():
    """The tests build their own arrays too: run each one in float64, as the library does."""
    with float64():
        yield


@pytest.fixture(scope="module")
def small():
    return completion.make_problem(jax.random.key(0), 40, 3, 0.4)


def test_problem_conventions(small):
    p = small
    assert p.rows.shape == (int(np.floor(0.4 * 40 * 40)),)  # exactly ⌊p d²⌋
    flat = np.asarray(p.rows) * 40 + np.asarray(p.cols)
    assert len(set(flat.tolist())) == flat.size  # without replacement
    assert float(p.mask.sum()) == flat.size
    np.testing.assert_allclose(p.values, np.asarray(p.target)[p.rows, p.cols])
    s = np.linalg.svd(np.asarray(p.target), compute_uv=False)
    assert s[2] > 1 and s[3] < 1e-12  # rank r* = 3, not normalised (Gaussian scale)
    # Padded layouts hold exactly Ω.
    assert float(p.csr_valid.sum()) == flat.size == float(p.csc_valid.sum())
    np.testing.assert_allclose(float((p.csr_values * p.csr_valid).sum()), float(p.values.sum()), rtol=1e-12)


def test_losses_are_means_over_all_entries(small):
    f = jnp.zeros((40, 40))
    obs = 0.5 * float(jnp.sum(small.values**2)) / 1600
    assert float(completion.dense_loss(f, small)) == pytest.approx(obs, rel=1e-12)
    total = 0.5 * float(jnp.sum(small.target**2)) / 1600
    assert float(completion.recovery_error(f, small)) == pytest.approx(total - obs, rel=1e-12)


def test_original_grads_match_autodiff(small):
    w = completion.init_original(jax.random.key(1), 40, 3, 0.7)
    loss, g = completion.original_grads(w, small)
    ref_loss, ref = jax.value_and_grad(lambda w: completion.dense_loss(factorization.end_to_end(w), small))(w)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-13)
    np.testing.assert_allclose(g, ref, atol=1e-15)


@pytest.mark.parametrize("inner_depth", [0, 1, 3])
def test_sparse_and_dense_compressed_steps_agree(small, inner_depth):
    keys = jax.random.split(jax.random.key(2), 3)
    k = 6
    c = compression.Compressed(
        jax.random.normal(keys[0], (40, k), dtype=jnp.float64),
        jax.random.normal(keys[1], (inner_depth, k, k), dtype=jnp.float64) * 0.5,
        jax.random.normal(keys[2], (40, k), dtype=jnp.float64),
    )
    ld, gd = completion.compressed_grads_dense(c, small)
    for layout in ("sparse", "dense"):
        ls, gs = completion.compressed_grads(c, small, layout)
        assert abs(float(ls) - float(ld)) <= 1e-12 * float(ld)
        for a, b in zip(jax.tree.leaves(gs), jax.tree.leaves(gd)):
            assert a.shape == b.shape
            if b.size == 0:
                continue
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * max(1.0, float(jnp.abs(b).max())))


def test_step_layout_follows_the_observed_fraction():
    # |Ω| ≥ d²/16: the dense residual; fewer observed entries: the sparse layouts.
    assert completion.step_layout(completion.make_problem(jax.random.key(0), 40, 2, 0.4)) == "dense"
    assert completion.step_layout(completion.make_problem(jax.random.key(0), 40, 2, 1.0)) == "dense"
    assert completion.step_layout(completion.make_problem(jax.random.key(0), 200, 2, 0.05)) == "sparse"
    assert completion.step_layout(completion.make_problem(jax.random.key(0), 200, 2, 0.07)) == "dense"
    assert np.array_equal(np.asarray(completion.make_problem(jax.random.key(0), 40, 2, 0.4).observed),
                          np.asarray(completion.make_problem(jax.random.key(0), 40, 2, 0.4).mask) > 0)


def test_compressed_grads_refuses_an_unknown_layout(small):
    c = completion.init_narrow(jax.random.key(0), 40, 3, 0.1, 6)
    with pytest.raises(ValueError, match="'dense' or 'sparse'"):
        completion.compressed_grads(c, small, "csr")


def test_sparse_layout_trains_like_the_dense_one():
    # A sparse-layout problem (p < 1/16) trains to the same loss curve as the dense form would:
    # the gradients agree with autodiff to rounding, so 300 steps stay within 1e-10 relative.
    problem = completion.make_problem(jax.random.key(3), 200, 2, 0.05)
    assert completion.step_layout(problem) == "sparse"
    c = completion.init_narrow(jax.random.key(1), 200, 3, 0.3, 4)
    finals = []
    for layout in ("sparse", "dense"):
        @jax.jit
        def run(c, layout=layout):
            def body(_, c):
                return jax.tree.map(lambda a, b: a - 2e3 * b, c, completion.compressed_grads(c, problem, layout)[1])
            c = jax.lax.fori_loop(0, 300, body, c)
            return completion.compressed_grads(c, problem, layout)[0]
        finals.append(float(run(c)))
    first = float(completion.compressed_grads(c, problem, "dense")[0])
    assert finals[0] < 0.5 * first
    assert finals[0] == pytest.approx(finals[1], rel=1e-10)


def test_narrow_init_is_scaled_semi_orthogonal():
    c = completion.init_narrow(jax.random.key(0), 30, 3, 0.1, 8)
    assert c.left.shape == (30, 8) and c.right.shape == (30, 8) and c.inner.shape == (1, 8, 8)
    np.testing.assert_allclose(c.left.T @ c.left, 0.01 * np.eye(8), atol=1e-15)
    np.testing.assert_allclose(c.right.T @ c.right, 0.01 * np.eye(8), atol=1e-15)
    assert completion.init_narrow(jax.random.key(0), 30, 2, 0.1, 8).inner.shape == (0, 8, 8)


@pytest.fixture(scope="module")
def methods():
    """A small completion problem solved by the four methods with one η, tol and budget."""
    p = completion.make_problem(jax.random.key(3), 60, 3, 0.35)
    kw = dict(depth=3, init_scale=1e-3, lr=1.5e2, rank_estimate=3, gamma=0.01, budget=40_000, tol=1e-10, record_every=100)
    return {m: completion.run_method(m, p, **kw) for m in completion.METHODS}


def test_compressed_gamma_matches_original_steps_and_gamma0_stalls(methods):
    o, c, c0 = methods["original"], methods["compressed"], methods["compressed-gamma0"]
    assert o.converged and c.converged
    assert 0.8 * o.steps_to_tol <= c.steps_to_tol <= 1.3 * o.steps_to_tol  # "about the original's"
    assert c.recovery_error[-1] < 1e-7
    assert not c0.converged and c0.train_loss[-1] > 1e3 * 1e-10 and c0.recovery_error[-1] > 1e-4
    assert methods["narrow"].converged and methods["narrow"].steps_to_tol > c.steps_to_tol


def test_steps_to_tolerance_is_exact():
    p = completion.make_problem(jax.random.key(4), 30, 2, 0.5)
    run = completion.run_method("original", p, depth=3, init_scale=0.3, lr=50.0, budget=3000, tol=1e-6, record_every=1)
    hit = run.steps_to_tol
    assert run.converged and run.train_loss[hit] < 1e-6 <= run.train_loss[hit - 1]
    assert run.steps[-1] == hit  # the loop stopped there


def test_validation_messages():
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
        completion.validate(50, 2, 0.0)
    with pytest.raises(ValueError, match="cannot determine a rank-5"):
        completion.validate(50, 5, 0.05)
    with pytest.raises(ValueError, match="r̂ = 1 must be ≥ r\\* = 2"):
        completion.validate(50, 2, 0.5, 1)
    with pytest.raises(ValueError, match="need 2r̂ < d"):
        completion.validate(50, 2, 0.5, 25)
    p = completion.make_problem(jax.random.key(0), 20, 2, 0.5)
    with pytest.raises(ValueError, match="unknown method 'dense'"):
        completion.run_method("dense", p, depth=3, init_scale=1e-3, lr=1.0, budget=10, tol=0.0, record_every=10)
    with pytest.raises(ValueError, match="diverged"):
        completion.run_method("original", p, depth=3, init_scale=0.5, lr=1e7, budget=100, tol=0.0, record_every=10)


def test_problem_key_is_independent_of_the_init_key():
    a, b = completion.problem_key(3), completion.problem_key(3)
    assert np.array_equal(jax.random.key_data(a), jax.random.key_data(b))
    assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(jax.random.key(3)))
    p1 = completion.make_problem(a, 20, 2, 0.5)
    p2 = completion.make_problem(b, 20, 2, 0.5)
    np.testing.assert_array_equal(p1.target, p2.target)
    np.testing.assert_array_equal(p1.mask, p2.mask)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_principal_components_of_a_line(count):
    """Iterates on a line through the mean: all variance on PC 1, the others see ~0."""
    direction = np.zeros((4, 4))
    direction[1, 2] = 1.0
    ts = np.linspace(-1, 1, 7)
    ref = np.stack([t * direction for t in ts])
    other = ref[:3] + 0.5 * direction
    pcs = completion.principal_components(ref, other, count=count)
    assert [p.shape for p in pcs] == [(7, count), (3, count)]
    np.testing.assert_allclose(np.abs(pcs[0][:, 0]), np.abs(ts), atol=1e-12)
    np.testing.assert_allclose(np.abs(pcs[1][:, 0]), np.abs(ts[:3] + 0.5), atol=1e-12)
    if count > 1:
        np.testing.assert_allclose(pcs[0][:, 1:], 0, atol=1e-12)
