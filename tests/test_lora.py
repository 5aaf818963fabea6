"""companion.adapt.lora: the factor chain and the initialisations of LoRA and Deep LoRA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.adapt import lora
from companion.linear import compression


def _random_factors(key, shapes):
    return [jax.random.normal(k, s, jnp.float32) / 4 for k, s in zip(jax.random.split(key, len(shapes)), shapes)]


@pytest.mark.parametrize("shapes, batch_shape", [
    ([(4, 6), (4, 5)], (3,)),  # LoRA: W_1 (r, in), W_2ᵀ (r, out)
    ([(3, 6), (3, 3), (3, 5)], (2, 3)),  # Deep LoRA, depth 3, two batch axes
    ([(2, 6), (2, 2), (2, 2), (2, 2), (2, 5)], (4,)),  # compressed: outer, three inner, outer
])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_chain_apply_and_its_backward_pass(shapes, batch_shape, scale):
    """y = s·x F_1 ⋯ F_L, and the hand-written backward pass equals autodiff of the plain product."""
    factors = tuple(_random_factors(jax.random.key(0), shapes))
    x = jax.random.normal(jax.random.key(1), batch_shape + (6,), jnp.float32)
    delta = factors[0].T
    for f in factors[1:]:
        delta = delta @ f
    np.testing.assert_allclose(lora.chain_apply(x, factors, scale), scale * x @ delta, rtol=1e-5, atol=1e-6)
    chain = lambda x, fs: jnp.sum(jnp.sin(lora.chain_apply(x, fs, scale)))  # noqa: E731

    def plain(x, fs):
        d = fs[0].T
        for f in fs[1:]:
            d = d @ f
        return jnp.sum(jnp.sin(scale * x @ d))

    got, want = jax.grad(chain, argnums=(0, 1))(x, factors), jax.grad(plain, argnums=(0, 1))(x, factors)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shapes, batch_shape", [
    ([(4, 5)], (3,)),  # vanilla LoRA's second factor alone
    ([(4, 4), (4, 5)], (2, 3)),  # Deep LoRA after its first factor
    ([(2, 2), (2, 2), (2, 2), (2, 5)], (4,)),  # compressed: three inner, outer
])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_rest_apply_and_its_backward_pass(shapes, batch_shape, scale):
    """y = s·h F_2 ⋯ F_L (an embedding's looked-up rows through the rest of the chain), and the
    hand-written backward pass equals autodiff of the plain product, for h and every factor."""
    factors = tuple(_random_factors(jax.random.key(3), shapes))
    h = jax.random.normal(jax.random.key(4), batch_shape + (shapes[0][0],), jnp.float32)

    def plain(h, fs):
        for f in fs:
            h = h @ f
        return scale * h

    np.testing.assert_allclose(lora.rest_apply(h, factors, scale), plain(h, factors), rtol=1e-5, atol=1e-6)
    got = jax.grad(lambda h, fs: jnp.sum(jnp.sin(lora.rest_apply(h, fs, scale))), argnums=(0, 1))(h, factors)
    want = jax.grad(lambda h, fs: jnp.sum(jnp.sin(plain(h, fs))), argnums=(0, 1))(h, factors)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_factor_chain_delta_lookup_and_types():
    fs = _random_factors(jax.random.key(2), [(3, 7), (3, 3), (3, 5)])
    chain = lora.FactorChain(fs, 2.0, outer=(True, False, True))
    delta = chain.delta()
    assert delta.shape == (7, 5) and chain.in_features == 7
    np.testing.assert_allclose(delta, 2.0 * fs[0].T @ fs[1] @ fs[2], rtol=1e-5, atol=1e-6)
    ids = jnp.array([[0, 6, 3], [2, 2, 1]])
    np.testing.assert_allclose(chain.lookup(ids), delta[ids], rtol=1e-5, atol=1e-6)  # rows of ΔW
    np.testing.assert_allclose(chain.lookup(ids[0]), delta[ids[0]], rtol=1e-5, atol=1e-6)
    kinds = [type(f) for f in chain.factors]
    assert kinds == [lora.OuterAdapterParam, lora.AdapterParam, lora.OuterAdapterParam]
    assert issubclass(lora.OuterAdapterParam, lora.AdapterParam)
    chain.merged = True  # a merged chain adds nothing (its ΔW is in the base weight)
    assert float(jnp.abs(chain(jnp.ones((2, 7)))).max()) == 0.0 and chain.lookup(ids).shape == (2, 3, 5)


def test_lora_factors_are_the_authors_init():
    """The authors' orientation (618c410, models.py): input side W_1 = 0, output side W_2ᵀ ~ N(0, 1)
    unscaled, so ΔW = 0 at init."""
    w1, w2 = lora.lora_factors(jax.random.key(0), 384, 1536, 8)
    assert w1.shape == (8, 384) and w2.shape == (8, 1536)
    assert w1.dtype == w2.dtype == jnp.float32
    assert float(jnp.abs(w1).max()) == 0.0
    assert 0.95 < float(jnp.std(w2)) < 1.05 and abs(float(jnp.mean(w2))) < 0.05
    chain = lora.FactorChain([w1, w2])
    assert float(jnp.abs(chain.delta()).max()) == 0.0


def test_lora_embedding_update_stays_on_the_batch_tokens():
    """On an embedding table (vocab, hidden) the token-indexed factor is the zero one: after an
    AdamW step only the rows of tokens in the batch move (the other rows of ΔW stay exactly 0)."""
    import optax
    from flax import nnx

    vocab, hidden, rank = 50, 16, 4
    chain = lora.FactorChain(lora.lora_factors(jax.random.key(0), vocab, hidden, rank))
    ids = jnp.asarray([[3, 7, 7, 11], [11, 20, 3, 3]])
    target = jax.random.normal(jax.random.key(1), ids.shape + (hidden,), jnp.float32)
    graphdef, state = nnx.split(chain)
    tx = optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0)
    opt = tx.init(state)

    def loss(st):
        return jnp.mean((nnx.merge(graphdef, st).lookup(ids) - target) ** 2)

    grads = jax.grad(loss)(state)
    updates, _ = tx.update(grads, opt, state)
    trained = nnx.merge(graphdef, optax.apply_updates(state, updates))
    w1 = np.asarray(trained.factors[0][...])  # (r, vocab): the input-side, token-indexed factor
    seen = np.unique(np.asarray(ids))
    unseen = np.setdiff1d(np.arange(vocab), seen)
    assert np.all(np.abs(w1[:, seen]).max(axis=0) > 0) and np.abs(w1[:, unseen]).max() == 0.0
    delta = np.asarray(trained.delta())
    assert np.abs(delta[unseen]).max() == 0.0 and np.all(np.abs(delta[seen]).max(axis=1) > 0)


@pytest.mark.parametrize("n, m, width, depth", [(384, 1536, 384, 3), (1536, 384, 384, 3), (64, 64, 8, 4)])
def test_deep_factors_are_scaled_orthogonal(n, m, width, depth):
    f = lora.deep_factors(jax.random.key(0), n, m, width, depth, 0.1)
    assert [x.shape for x in f] == [(width, n)] + [(width, width)] * (depth - 2) + [(width, m)]
    for x in f:
        small = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
        np.testing.assert_allclose(small, 0.01 * np.eye(small.shape[0]), atol=1e-6)
    jitted = lora.deep_factors_jit(jax.random.key(0), n, m, width, depth, 0.1)
    for a, b in zip(f, jitted):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_compressed_factors_shapes_and_errors():
    g = jax.random.normal(jax.random.key(3), (48, 32))  # (out, in)
    f = lora.compressed_factors(jax.random.key(0), 32, 48, 6, 3, 1e-2, g)
    assert [x.shape for x in f] == [(6, 32), (6, 6), (6, 6), (6, 6), (6, 48)]
    for inner in f[1:-1]:
        np.testing.assert_array_equal(inner, 1e-2 * np.eye(6, dtype=np.float32))
    with pytest.raises(ValueError, match="rank 40 exceeds the layer's width"):
        lora.compressed_factors(jax.random.key(0), 32, 48, 40, 3, 1e-2, g)


@pytest.mark.parametrize("n, m", [(12, 20), (20, 12), (16, 16)])
def test_compressed_factors_take_the_authors_output_side(n, m):
    """The authors' orientation (deep-lora-transformers@618c410, train.py): the SVDs are of the
    gradient of the output-side factor F_L (their ``w0``), R (out, r) is orthonormal and spans its
    top right singular vectors and F_Lᵀ times its top left ones, and the input-side factor is
    ΔW(0) R/ε^L without re-orthonormalisation, so the adapter starts at ΔW(0) R Rᵀ."""
    rank, depth, eps = 4, 3, 0.1
    key = jax.random.key(9)
    g_w = jax.random.normal(jax.random.key(10), (m, n))  # ∂ℓ/∂W, (out, in)
    f = [np.asarray(x, np.float64) for x in lora.compressed_factors(key, n, m, rank, depth, eps, g_w)]
    wide = [np.asarray(x, np.float64) for x in lora.deep_factors(key, n, m, min(n, m), depth, eps)]
    delta0 = wide[0].T @ wide[1] @ wide[2]  # ΔW(0), (in, out)
    grad_last = (wide[0].T @ wide[1]).T @ np.asarray(g_w, np.float64).T  # ∂ℓ/∂F_L, (k, out)
    u, _, vt = np.linalg.svd(grad_last)
    right = f[-1].T  # R (out, r)
    np.testing.assert_allclose(right.T @ right, np.eye(rank), atol=1e-5)
    outside = np.eye(m) - right @ right.T
    np.testing.assert_allclose(outside @ vt[: rank // 2].T, 0, atol=1e-4)  # top right singular vectors
    np.testing.assert_allclose(outside @ wide[2].T @ u[:, : rank // 2], 0, atol=1e-4 * eps)  # F_Lᵀ u
    np.testing.assert_allclose(f[0].T, delta0 @ right / eps**depth, rtol=1e-4, atol=1e-5)
    start = f[0].T @ f[1] @ f[2] @ f[3] @ f[4]
    np.testing.assert_allclose(start, delta0 @ right @ right.T, rtol=1e-4, atol=1e-4 * eps**depth)
    norms = np.linalg.norm(f[0], axis=1)
    if n < m:  # ΔW(0)/ε^L has orthonormal rows: shorter columns, as the authors leave them
        assert norms.max() < 1 - 1e-3
    else:  # orthonormal columns: the input-side factor is orthonormal too
        np.testing.assert_allclose(norms, 1, atol=1e-4)


def test_compressed_follows_wide_on_a_deep_factorization_layer():
    """A layer whose loss is ½‖ΔW − Φ‖_F² (W̄ = 0) is a deep matrix factorization: gradient descent
    on the compressed adapter (outer frozen) stays within Prop. 2's bound of the wide adapter
    (arXiv:2406.04112, compression from the first gradient)."""
    d, r_star, rank, eps, lr, steps = 40, 3, 6, 0.1, 0.1, 500
    key = jax.random.key(0)
    u, _, vt = np.linalg.svd(np.random.default_rng(0).normal(size=(d, d)))
    phi = jnp.asarray((u[:, :r_star] * np.array([3.0, 2.0, 1.0])) @ vt[:r_star], jnp.float32)  # (out, in)
    wide = lora.deep_factors(key, d, d, d, 3, eps)
    delta = lambda fs: lora.chain_apply(jnp.eye(d, dtype=jnp.float32), tuple(fs), 1.0).T  # noqa: E731 (out, in)
    loss = lambda fs: 0.5 * jnp.sum((delta(fs) - phi) ** 2)  # noqa: E731
    grad_w = delta(wide) - phi  # ∂ℓ/∂W at the wide init, (out, in)
    comp = lora.compressed_factors(key, d, d, rank, 3, eps, grad_w)
    step = jax.jit(lambda fs: [f - lr * g for f, g in zip(fs, jax.grad(loss)(fs))])
    frozen_outer = jax.jit(lambda fs: [fs[0]] + [f - lr * g for f, g in zip(fs[1:-1], jax.grad(loss)(fs)[1:-1])]
                           + [fs[-1]])
    bound = compression.gap_bound(d, rank // 2, (eps,) * 3)
    worst = 0.0
    for _ in range(steps):
        wide, comp = step(wide), frozen_outer(comp)
        worst = max(worst, float(jnp.sum((delta(wide) - delta(comp)) ** 2)) / bound)
    assert float(loss(wide)) < 1e-2 * float(0.5 * jnp.sum(phi**2))  # both learned Φ
    assert worst <= 1.05  # float32 and the top-direction recipe: within 5% of the bound


def test_embedding_lookup_gathers_rows_and_scatters_their_gradient():
    """The table's update enters only through the looked-up rows: F_1[ids] F_2 ⋯ F_L equals the
    rows of ΔW, and the gradient of the token-indexed factor is a scatter into those tokens'
    columns (zero for every token not in the batch), as for the dense ΔW[ids]."""
    fs = _random_factors(jax.random.key(3), [(4, 50), (4, 4), (4, 6)])
    ids = jnp.array([[3, 7, 7], [0, 49, 3]])
    weights = jax.random.normal(jax.random.key(4), (2, 3, 6), jnp.float32)

    def through_chain(factors):
        return jnp.sum(lora.FactorChain(factors, 0.5).lookup(ids) * weights)

    def through_delta(factors):
        return jnp.sum(lora.FactorChain(factors, 0.5).delta()[ids] * weights)

    np.testing.assert_allclose(through_chain(fs), through_delta(fs), rtol=1e-5)
    got, want = jax.grad(through_chain)(fs), jax.grad(through_delta)(fs)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    unseen = np.setdiff1d(np.arange(50), np.asarray(ids))
    assert float(jnp.abs(got[0][:, unseen]).max()) == 0.0 and float(jnp.abs(got[0][:, [0, 3, 7, 49]]).min()) > 0


def test_restricted_chain_trains_the_same_numbers_on_its_columns():
    """restrict(columns): the lookup and ΔW are unchanged, the trained factor is (k, m), and an
    AdamW step on a batch whose tokens are among the columns gives the whole chain's step exactly
    (columns never looked up have zero gradient and zero moments, so zero update)."""
    import optax
    from flax import nnx

    fs = lora.deep_factors(jax.random.key(5), 40, 6, 6, 3, 0.3)
    ids = jnp.asarray([[3, 7, 7, 11], [11, 20, 3, 0]])
    target = jax.random.normal(jax.random.key(6), ids.shape + (6,), jnp.float32)
    columns = np.array([0, 3, 7, 11, 20, 33])  # the tokens training can see (33 never appears)
    tx = optax.adamw(1e-2, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0)

    def train(restrict: bool, steps: int = 3):
        chain = lora.FactorChain(fs)
        if restrict:
            chain.restrict(columns)
            assert chain.restricted and chain.factors[0][...].shape == (6, 6) and chain.in_features == 40
        graphdef, params, rest = nnx.split(chain, lora.AdapterParam, ...)
        opt = tx.init(params)
        loss = lambda p: jnp.mean((nnx.merge(graphdef, p, rest).lookup(ids) - target) ** 2)  # noqa: E731
        for _ in range(steps):
            updates, opt = tx.update(jax.grad(loss)(params), opt, params)
            params = optax.apply_updates(params, updates)
        return nnx.merge(graphdef, params, rest)

    whole, part = train(False), train(True)
    np.testing.assert_array_equal(part.delta(), whole.delta())
    np.testing.assert_array_equal(part.lookup(ids), whole.lookup(ids))
    for a, b in zip(part.full_factors(), whole.full_factors()):
        np.testing.assert_array_equal(a, b)
    unseen = np.setdiff1d(np.arange(40), np.asarray(ids))
    np.testing.assert_array_equal(np.asarray(part.first())[:, unseen], np.asarray(fs[0])[:, unseen])
    part.unrestrict()
    assert not part.restricted and part.factors[0][...].shape == (6, 40)
    np.testing.assert_array_equal(part.factors[0][...], whole.factors[0][...])
    assert type(lora.FactorChain(fs, outer=(True, False, True)).factors[0]) is lora.OuterAdapterParam
    outer = lora.FactorChain(fs, outer=(True, False, True))
    outer.restrict(columns)
    assert type(outer.factors[0]) is lora.OuterAdapterParam  # compressed Deep LoRA keeps its step group


def test_restrict_refuses_bad_columns():
    chain = lora.FactorChain(lora.lora_factors(jax.random.key(0), 10, 4, 2))
    for bad in ([], [3, 3], [-1], [10], [[1, 2]]):
        with pytest.raises(ValueError, match="distinct indices"):
            chain.restrict(bad)
    chain.restrict([1, 2])
    with pytest.raises(ValueError, match="neither restricted nor merged"):
        chain.restrict([1, 2])
