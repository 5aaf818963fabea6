"""Deep LoRA adapter kinds (PAPER.md §4): wide, narrow, compressed from one gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from companion.adapt import bert, lora
from companion.linear import compression
from companion.adapt.finetune import FinetuneConfig, optimizer


@pytest.fixture(scope="module")
def batch():
    ids = jnp.array([[101, 2000, 2003, 1037, 3899, 102, 0, 0], [101, 1996, 4937, 102, 2003, 2204, 102, 0]], jnp.int32)
    return ids, (ids > 0).astype(jnp.int32)


def _change(batch, eps, targets="attention-mlp"):
    base = bert.from_pretrained("minilm", 1)
    ref = base(*batch)
    lora.apply_adapters(base, lora.AdapterConfig(kind="deep-lora", targets=targets, scale_init=eps))
    return float(jnp.abs(base(*batch) - ref).max())


def test_wide_depth3_at_init_changes_outputs_by_eps_cubed(batch):
    """ΔW(0) = ε³ Q₃Q₂Q₁: outputs move by O(ε³), and doubling ε multiplies the change by ≈ 8."""
    small, large = _change(batch, 2e-2), _change(batch, 4e-2)  # above float32 noise (~1e-8)
    assert small < 1e-5
    assert 6.0 < large / small < 10.0
    assert _change(batch, 1e-3) < 1e-6  # the paper's ε: invisible in float32


def test_wide_factors_are_scaled_orthogonal():
    f = lora.deep_factors(jax.random.key(0), 384, 1536, 384, 3, 0.1)
    assert [x.shape for x in f] == [(384, 384), (384, 384), (384, 1536)]
    for x in f:
        small = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
        np.testing.assert_allclose(small, 0.01 * np.eye(small.shape[0]), atol=1e-6)


def test_parameter_counts():
    model = bert.from_pretrained("minilm", 1)
    m, n, r = 384, 384, 8
    grads = {name: jnp.ones((384, 384)) for name in lora.select_targets(model, "query-value")}
    lora.apply_adapters(model, lora.AdapterConfig(kind="deep-lora-compressed", rank=r, targets="query-value"), grads)
    assert lora.count_parameters(model) == 12 * ((m + n) * r + 3 * r * r)  # (m+n)r + 3r² per layer
    assert lora.count_parameters(model, lora.OuterAdapter) == 12 * (m + n) * r
    narrow = bert.from_pretrained("minilm", 1)
    lora.apply_adapters(narrow, lora.AdapterConfig(kind="deep-lora-narrow", rank=r, targets="query-value"))
    assert lora.count_parameters(narrow) == 12 * ((m + n) * r + r * r)


@pytest.mark.parametrize("kwargs,message", [
    (dict(kind="deep-lora-compressed", rank=9), "rank 9 must be even"),
    (dict(kind="deep-lora", depth=2), "needs depth ≥ 3"),
    (dict(kind="deep-lora", scale_init=0.0), "ε must be > 0"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        lora.AdapterConfig(**kwargs)


def test_rank_above_width_and_missing_gradient():
    model = bert.from_pretrained("minilm", 1)
    with pytest.raises(ValueError, match="rank 400 exceeds the width"):
        lora.apply_adapters(model, lora.AdapterConfig(kind="deep-lora-narrow", rank=400, targets=["pooler"]))
    with pytest.raises(ValueError, match="needs the first gradients"):
        lora.apply_adapters(model, lora.AdapterConfig(kind="deep-lora-compressed", targets=["pooler"]))
    with pytest.raises(ValueError, match="pooler.dense: rank 400 exceeds"):
        lora.apply_adapters(model, lora.AdapterConfig(kind="deep-lora-compressed", rank=400, targets=["pooler"]),
                            {"pooler.dense": jnp.ones((384, 384))})


def test_compressed_follows_wide_on_a_deep_factorization_layer():
    """A layer whose loss is ½‖ΔW − Φ‖_F² (W̄ = 0) is a deep matrix factorization: gradient descent
    on the compressed adapter (outer frozen) stays within Prop. 2's bound of the wide adapter."""
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
    frozen_outer = jax.jit(lambda fs: [fs[0]] + [f - lr * g for f, g in zip(fs[1:-1], jax.grad(loss)(fs)[1:-1])] + [fs[-1]])
    bound = compression.gap_bound(d, rank // 2, (eps,) * 3)
    worst = 0.0
    for _ in range(steps):
        wide, comp = step(wide), frozen_outer(comp)
        worst = max(worst, float(jnp.sum((delta(wide) - delta(comp)) ** 2)) / bound)
    assert float(loss(wide)) < 1e-2 * float(0.5 * jnp.sum(phi**2))  # both learned Φ
    assert worst <= 1.05  # float32 and the top-direction recipe: within 5% of the bound


def test_outer_factors_take_the_discrepant_step():
    """Compressed Deep LoRA: AdamW's first step moves inner entries by η and outer ones by γη."""
    cfg = FinetuneConfig(task="stsb", method="deep-lora-compressed", inner_lr=1e-2, gamma=0.01)
    model = bert.from_pretrained("minilm", 1)
    lora.apply_adapters(model, lora.AdapterConfig(kind="deep-lora-compressed", rank=4, targets=["pooler"]),
                        {"pooler.dense": jax.random.normal(jax.random.key(1), (384, 384))})
    state = bert.nnx.state(model, lora.Adapter)
    grads = jax.tree.map(lambda x: jnp.ones_like(x), state)
    tx = optimizer(cfg)
    updates, _ = tx.update(grads, tx.init(state), state)
    chain = [jax.tree.leaves(u) for u in [updates]][0]
    sizes = sorted({round(float(jnp.abs(x).max()), 6) for x in chain})
    assert sizes == [pytest.approx(1e-4, rel=1e-3), pytest.approx(1e-2, rel=1e-3)]
