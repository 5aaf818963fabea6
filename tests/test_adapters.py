"""companion.adapt.adapters: targets, injection, the trainable filter, merge/unmerge, save/load."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from companion.adapt import adapters, bert
from companion.adapt.adapters import AdapterConfig
from companion.adapt.lora import AdapterParam, OuterAdapterParam

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def encoder():
    return bert.pretrained_encoder("minilm")


@pytest.fixture
def model(encoder):
    return bert.with_head(nnx.clone(encoder), 2)


@pytest.fixture(scope="module")
def batch():
    tok = bert.load_tokenizer("minilm")
    enc = tok.encode_batch([("A dog runs.", "A dog is running fast."), ("Cats sleep.", "Nothing.")])
    t = 16
    ids = np.zeros((2, t), np.int32)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, : len(e.ids)], mask[i, : len(e.ids)], types[i, : len(e.ids)] = e.ids, 1, e.type_ids
    return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)


def _perturb(model, seed=1):
    """Non-zero adapters (LoRA starts with ΔW = 0, which would make merge tests vacuous)."""
    for i, (_, layer) in enumerate(adapters.adapted_layers(model)):
        for f in layer.adapter.factors:
            f[...] = 0.05 * jax.random.normal(jax.random.key(seed + i), f[...].shape, jnp.float32)


@pytest.mark.parametrize("targets,count", [("query-value", 12), ("attention-mlp", 36), ("all-dense", 39),
                                           (["pooler"], 1), (r"layer\.0\..*query", 1)])
def test_target_sets(model, targets, count):
    names = adapters.select_targets(model, targets)
    assert len(names) == count and "classifier" not in names
    if targets == "all-dense":  # 36 + pooler + word and position embeddings (min side ≥ 384)
        assert {"pooler.dense", "embeddings.word_embeddings", "embeddings.position_embeddings"} <= set(names)
        assert "embeddings.token_type_embeddings" not in names


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="deep"), "unknown adapter method 'deep'"),
    (dict(rank=0), "rank must be a positive integer"),
    (dict(method="deep-lora-compressed", rank=9), "rank 9 must be even"),
    (dict(method="deep-lora", depth=2), "needs depth ≥ 3"),
    (dict(method="deep-lora", init_scale=0.0), "ε must be > 0"),
    (dict(min_side=0), "min_side must be a positive integer"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdapterConfig(**kwargs)


def test_config_defaults_and_scale():
    c = AdapterConfig()
    assert (c.method, c.rank, c.depth, c.init_scale, c.targets, c.alpha) == ("lora", 8, 3, 1e-3, "all-dense", None)
    assert c.delta_scale == 1.0 and AdapterConfig(rank=8, alpha=16.0).delta_scale == 2.0
    assert AdapterConfig(targets=["a", "b"]).targets == ("a", "b")  # JSON lists stay hashable


def test_no_match_lists_layers(model):
    with pytest.raises(ValueError, match="the model's layers are: embeddings.word_embeddings"):
        adapters.select_targets(model, ["nope"])
    with pytest.raises(ValueError, match="bad target pattern"):
        adapters.select_targets(model, ["("])


def test_lora_init_leaves_outputs_unchanged_and_counts(model, batch):
    before = model(*batch)
    names = adapters.apply_adapters(model, AdapterConfig(rank=8, targets="query-value"), jax.random.key(3))
    np.testing.assert_array_equal(model(*batch), before)  # W_1 = 0: ΔW = 0 exactly
    layer = model.bert.layers[0].query
    f1, f2 = (f[...] for f in layer.adapter.factors)
    assert f1.shape == (8, 384) and f2.shape == (8, 384) and float(jnp.abs(f1).max()) == 0.0
    assert 0.9 < float(jnp.std(f2)) < 1.1  # authors (618c410): output side ~ N(0, 1), no α/r scaling
    assert adapters.count_parameters(model) == 12 * (384 * 8 + 8 * 384)
    assert names[0] == "encoder.layer.0.attention.self.query" and len(names) == 12
    assert [n for n, _ in adapters.adapted_layers(model)] == list(names)
    with pytest.raises(ValueError, match="already has an adapter"):
        adapters.apply_adapters(model, AdapterConfig(targets="query-value"), KEY)


def test_the_key_draws_the_factors(encoder):
    a, b, c = (bert.with_head(nnx.clone(encoder), 1) for _ in range(3))
    for m, seed in ((a, 0), (b, 0), (c, 1)):
        adapters.apply_adapters(m, AdapterConfig(targets="query-value"), jax.random.key(seed))
    first = lambda m: m.bert.layers[0].query.adapter.factors[1][...]  # noqa: E731  (the Gaussian factor)
    np.testing.assert_array_equal(first(a), first(b))
    assert float(jnp.abs(first(a) - first(c)).max()) > 0.1


def _change(encoder, batch, eps):
    model = bert.with_head(nnx.clone(encoder), 1)
    ref = model(*batch)
    adapters.apply_adapters(model, AdapterConfig(method="deep-lora", targets="attention-mlp", init_scale=eps), KEY)
    return float(jnp.abs(model(*batch) - ref).max())


def test_wide_deep_lora_at_init_changes_outputs_by_eps_cubed(encoder, batch):
    """ΔW(0) = ε³ Q₃Q₂Q₁: outputs move by O(ε³), and doubling ε multiplies the change by ≈ 8."""
    small, large = _change(encoder, batch, 2e-2), _change(encoder, batch, 4e-2)  # above float32 noise
    assert small < 1e-5
    assert 6.0 < large / small < 10.0
    assert _change(encoder, batch, 1e-3) < 1e-6  # the paper's ε: invisible in float32


@pytest.mark.parametrize("method, per_layer, outer", [
    ("lora", (384 + 384) * 8, 0),
    ("deep-lora-narrow", (384 + 384) * 8 + 8 * 8, 0),
    ("deep-lora", 3 * 384 * 384, 0),
    ("deep-lora-compressed", (384 + 384) * 8 + 3 * 8 * 8, (384 + 384) * 8),  # (m+n)r + 3r²
])
def test_parameter_counts(model, method, per_layer, outer):
    names = adapters.select_targets(model, "query-value")
    grads = {n: jnp.ones((384, 384)) for n in names} if method == "deep-lora-compressed" else None
    adapters.apply_adapters(model, AdapterConfig(method=method, rank=8, targets="query-value"), KEY, grads)
    assert adapters.count_parameters(model) == 12 * per_layer
    assert adapters.count_parameters(model, OuterAdapterParam) == 12 * outer


def test_rank_above_width_and_missing_gradient(model):
    with pytest.raises(ValueError, match="rank 400 exceeds the width"):
        adapters.apply_adapters(model, AdapterConfig(method="deep-lora-narrow", rank=400, targets=["pooler"]), KEY)
    with pytest.raises(ValueError, match="needs the first gradients"):
        adapters.apply_adapters(model, AdapterConfig(method="deep-lora-compressed", targets=["pooler"]), KEY)
    with pytest.raises(ValueError, match="pooler.dense: rank 400 exceeds"):
        adapters.apply_adapters(model, AdapterConfig(method="deep-lora-compressed", rank=400, targets=["pooler"]),
                                KEY, {"pooler.dense": jnp.ones((384, 384))})


def test_first_gradients_are_the_weight_gradients(model, batch):
    """∂ℓ/∂W (out, in) of the named layers: the transposed kernel gradient, and nothing else."""
    loss = lambda m: jnp.sum(m(*batch) ** 2)  # noqa: E731
    names = ["pooler.dense", "embeddings.word_embeddings"]
    grads = adapters.first_gradients(model, names, loss)
    full = nnx.grad(loss)(model)
    np.testing.assert_allclose(grads["pooler.dense"], full["bert"]["pooler"]["kernel"][...].T, rtol=1e-5, atol=1e-7)
    assert grads["embeddings.word_embeddings"].shape == (384, 30522) and set(grads) == set(names)


@pytest.mark.parametrize("train_head, extra", [(False, 0), (True, 384 * 2 + 2)])
def test_only_the_filtered_parameters_change_after_a_step(model, batch, train_head, extra):
    adapters.apply_adapters(model, AdapterConfig(rank=4, targets="all-dense", train_head=train_head), KEY)
    _perturb(model)
    trainable = adapters.trainable_filter(train_head)
    assert adapters.count_parameters(model, trainable) == adapters.count_parameters(model) + extra
    frozen_before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Not(trainable)))
    trained_before = jax.tree.map(jnp.copy, nnx.state(model, trainable))
    opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=trainable)

    def loss(m):
        return jnp.mean(m(*batch, dropout_key=jax.random.key(0)) ** 2)

    opt.update(model, nnx.grad(loss, argnums=nnx.DiffState(0, trainable))(model))
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), nnx.state(model, trainable), trained_before)
    assert all(jax.tree.leaves(changed))
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), nnx.state(model, nnx.Not(trainable)), frozen_before)
    assert all(jax.tree.leaves(same))  # encoder (and the head unless asked) untouched


@pytest.mark.parametrize("method, alpha, targets, count", [
    ("lora", None, "all-dense", 39), ("lora", 16.0, "all-dense", 39), ("deep-lora-narrow", None, "all-dense", 39),
    ("deep-lora-compressed", None, "query-value", 12),  # compression of the embeddings is slow on CPU
])
def test_merge_equals_unmerged_forward(model, batch, method, alpha, targets, count):
    grads = None
    if method == "deep-lora-compressed":  # gradients of the right shape (out, in) per layer
        grads = {n: jax.random.normal(jax.random.key(i), (384, 384))
                 for i, n in enumerate(adapters.select_targets(model, targets))}
    adapters.apply_adapters(model, AdapterConfig(method=method, rank=8, targets=targets, alpha=alpha), KEY, grads)
    _perturb(model)
    adapted = model(*batch)
    base = model.bert.layers[1].value.kernel[...]
    assert adapters.merge(model) == count
    np.testing.assert_allclose(model(*batch), adapted, atol=2e-5)
    assert float(jnp.abs(model.bert.layers[1].value.kernel[...] - base).max()) > 1e-4
    with pytest.raises(ValueError, match="already merged"):
        adapters.merge(model)
    assert adapters.unmerge(model) == count
    np.testing.assert_allclose(model.bert.layers[1].value.kernel[...], base, atol=1e-6)
    np.testing.assert_allclose(model(*batch), adapted, atol=2e-5)
    with pytest.raises(ValueError, match="is not merged"):
        adapters.unmerge(model)


def test_merge_refuses_nan(model):
    adapters.apply_adapters(model, AdapterConfig(rank=2, targets="query-value"), KEY)
    layer = model.bert.layers[0].query
    layer.adapter.factors[1][...] = jnp.full_like(layer.adapter.factors[1][...], jnp.nan)
    before = model.bert.layers[3].query.kernel[...]
    with pytest.raises(ValueError, match="NaN or inf"):
        adapters.merge(model)
    np.testing.assert_array_equal(model.bert.layers[3].query.kernel[...], before)  # nothing changed


def _low_rank(rank, scale, shape=(48, 40), seed=0):
    """A synthetic float32 ΔW of exact rank ``rank`` with ‖ΔW‖₂ = scale."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], rank)))
    v, _ = np.linalg.qr(rng.standard_normal((shape[1], rank)))
    s = scale * np.linspace(1.0, 0.5, rank)
    return ((u * s) @ v.T).astype(np.float32)


@pytest.mark.parametrize("rank, scale, deep, expected", [
    (5, 1.0, False, 5),  # vanilla: plain matrix_rank
    (12, 1.0, False, 12),  # vanilla: no cap
    (12, 1e-4, False, 12),  # vanilla: no norm floor
    (0, 0.0, False, 0),
    (5, 1.0, True, 5),  # Deep LoRA: matrix_rank …
    (12, 1.0, True, 8),  # … capped at the authors' 8
    (12, 2e-3, True, 8),  # ‖ΔW‖₂ > 1e-3
    (12, 5e-4, True, 0),  # ‖ΔW‖₂ ≤ 1e-3: rank 0
    (0, 0.0, True, 0),
])
def test_rank_of_update_is_the_authors_rule(rank, scale, deep, expected):
    delta = _low_rank(rank, scale) if rank else np.zeros((48, 40), np.float32)
    assert adapters.rank_of_update(delta, deep=deep) == expected
    if not deep:
        assert expected == np.linalg.matrix_rank(delta)  # numpy's default tolerance, float32


def test_rank_of_update_uses_numpys_float32_tolerance():
    """A float32-rounding-sized tail does not count (numpy's tolerance for float32 ΔW)."""
    delta = _low_rank(3, 1.0) + 1e-9 * np.random.default_rng(1).standard_normal((48, 40)).astype(np.float32)
    assert adapters.rank_of_update(delta, deep=False) == np.linalg.matrix_rank(delta.astype(np.float32)) == 3
    assert adapters.rank_of_update(_low_rank(12, 1.0), deep=True, cap=10) == 10


def test_numerical_ranks(model, encoder):
    adapters.apply_adapters(model, AdapterConfig(rank=4, targets="query-value"), KEY)
    assert set(adapters.numerical_ranks(model).values()) == {0}  # ΔW = 0 at init
    _perturb(model)
    assert set(adapters.numerical_ranks(model).values()) == {4}
    # Deep LoRA (a chain of 3): the wide init has ‖ΔW‖₂ = ε³ ≤ 1e-3, rank 0; once moved, at most 8.
    deep = bert.with_head(nnx.clone(encoder), 2)
    adapters.apply_adapters(deep, AdapterConfig(method="deep-lora", targets=["pooler"]), KEY)
    assert adapters.numerical_ranks(deep) == {"pooler.dense": 0}
    _perturb(deep)
    assert adapters.numerical_ranks(deep) == {"pooler.dense": 8}
    assert adapters.numerical_ranks(deep, cap=20) == {"pooler.dense": 20}


@pytest.mark.parametrize("config", [
    AdapterConfig(method="lora", rank=4, targets="attention-mlp", train_head=True),
    AdapterConfig(method="deep-lora-narrow", rank=4, targets="query-value", alpha=8.0),
    AdapterConfig(method="deep-lora-compressed", rank=4, targets=("pooler",)),
])
def test_save_load_round_trip_with_head(tmp_path, model, encoder, batch, config):
    grads = {"pooler.dense": jax.random.normal(KEY, (384, 384))} if config.method == "deep-lora-compressed" else None
    names = adapters.apply_adapters(model, config, jax.random.key(5), grads)
    _perturb(model)
    model.classifier.kernel[...] = model.classifier.kernel[...] + 0.3  # a trained head
    expected = model(*batch)
    adapters.save(model, config, tmp_path / "adapter", extra={"base_model": "minilm"})
    meta = json.loads((tmp_path / "adapter" / adapters.CONFIG_FILE).read_text())
    assert meta["adapted"] == list(names) and meta["num_labels"] == 2 and meta["base_model"] == "minilm"
    assert meta["pooling"] == "pooler"
    fresh = bert.with_head(nnx.clone(encoder), 2, head_seed=123)  # a different random head
    assert float(jnp.abs(fresh(*batch) - expected).max()) > 1e-3
    loaded, loaded_names = adapters.load(fresh, tmp_path / "adapter")
    assert loaded == config and loaded_names == names
    np.testing.assert_array_equal(fresh(*batch), expected)
    kinds = {type(f) for _, layer in adapters.adapted_layers(fresh) for f in layer.adapter.factors}
    assert (OuterAdapterParam in kinds) == (config.method == "deep-lora-compressed") and AdapterParam in kinds
    with pytest.raises(FileNotFoundError, match="not an adapter folder"):
        adapters.load(fresh, tmp_path)


def test_loads_the_config_of_earlier_versions(tmp_path, model, encoder, batch):
    """adapter_config.json once said kind/scale_init and stored the seed: still loadable."""
    config = AdapterConfig(method="lora", rank=2, targets="query-value")
    adapters.apply_adapters(model, config, KEY)
    _perturb(model)
    expected = model(*batch)
    adapters.save(model, config, tmp_path)
    meta = json.loads((tmp_path / adapters.CONFIG_FILE).read_text())
    meta["kind"], meta["scale_init"], meta["seed"] = meta.pop("method"), meta.pop("init_scale"), 0
    (tmp_path / adapters.CONFIG_FILE).write_text(json.dumps(meta))
    fresh = bert.with_head(nnx.clone(encoder), 2, head_seed=7)
    loaded, _ = adapters.load(fresh, tmp_path)
    assert loaded == config
    np.testing.assert_array_equal(fresh(*batch), expected)


def test_a_head_loads_only_onto_its_pooling(tmp_path, encoder, batch):
    """A head trained on mean-pooled states is refused by a model that reads the pooler, with what
    to do; built with the saved pooling it gives the saved model's outputs."""
    config = AdapterConfig(method="lora", rank=2, targets="query-value")
    mean = bert.with_head(nnx.clone(encoder), 2, pooling="mean")
    adapters.apply_adapters(mean, config, KEY)
    _perturb(mean)
    adapters.save(mean, config, tmp_path)
    with pytest.raises(ValueError, match="pooling='mean'.*pooling='pooler'.*with_head"):
        adapters.load(bert.with_head(nnx.clone(encoder), 2), tmp_path)
    fresh = bert.with_head(nnx.clone(encoder), 2, pooling="mean")
    adapters.load(fresh, tmp_path)
    np.testing.assert_array_equal(fresh(*batch), mean(*batch))


def test_a_mean_pooled_head_leaves_the_unused_pooler_alone(encoder):
    """With pooling="mean" the pooler never enters the logits, so all-dense skips it and a
    pooler-only target set is refused with what to do."""
    mean = bert.with_head(nnx.clone(encoder), 1, pooling="mean")
    names = adapters.select_targets(mean, "all-dense")
    assert "pooler.dense" not in names
    assert set(adapters.select_targets(bert.with_head(nnx.clone(encoder), 1), "all-dense")) == {*names, "pooler.dense"}
    with pytest.raises(ValueError, match="select only the pooler.*pooling='pooler'"):
        adapters.select_targets(mean, ["pooler"])
