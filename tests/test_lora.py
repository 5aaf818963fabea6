"""companion.adapt.lora: targets, the paper's init, merge/unmerge, save/load with the head."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from companion.adapt import bert, lora


@pytest.fixture
def model():
    return bert.from_pretrained("minilm", 2, seed=0)


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


@pytest.mark.parametrize("targets,count", [("query-value", 12), ("attention-mlp", 36), ("all-dense", 39),
                                           (["pooler"], 1), (r"layer\.0\..*query", 1)])
def test_target_sets(model, targets, count):
    names = lora.select_targets(model, targets)
    assert len(names) == count and "classifier" not in names
    if targets == "all-dense":  # 36 + pooler + word and position embeddings (min side ≥ 384)
        assert {"pooler.dense", "embeddings.word_embeddings", "embeddings.position_embeddings"} <= set(names)
        assert "embeddings.token_type_embeddings" not in names


def test_no_match_lists_layers(model):
    with pytest.raises(ValueError, match="the model's layers are: embeddings.word_embeddings"):
        lora.select_targets(model, ["nope"])
    with pytest.raises(ValueError, match="unknown adapter kind 'deep'"):
        lora.AdapterConfig(kind="deep")
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        lora.AdapterConfig(rank=0)


def test_init_leaves_outputs_unchanged_and_counts(model, batch):
    before = model(*batch)
    cfg = lora.apply_adapters(model, lora.AdapterConfig(rank=8, targets="query-value", seed=3))
    np.testing.assert_array_equal(model(*batch), before)  # W_2 = 0: ΔW = 0 exactly
    layer = model.bert.layers[0].query
    f1, f2 = (f[...] for f in layer.adapter.factors)
    assert f1.shape == (8, 384) and f2.shape == (8, 384) and float(jnp.abs(f2).max()) == 0.0
    assert 0.9 < float(jnp.std(f1)) < 1.1  # paper: W_1 ~ N(0, 1), no α/r scaling
    assert lora.count_parameters(model) == 12 * (384 * 8 + 8 * 384)
    assert cfg.adapted[0] == "encoder.layer.0.attention.self.query"
    with pytest.raises(ValueError, match="already has an adapter"):
        lora.apply_adapters(model, lora.AdapterConfig(targets="query-value"))


def _perturb(model, seed=1):
    for i, (_, layer) in enumerate(lora.adapted_layers(model)):
        for f in layer.adapter.factors:
            f[...] = 0.05 * jax.random.normal(jax.random.key(seed + i), f[...].shape, jnp.float32)


def test_only_adapters_change_after_a_step(model, batch):
    lora.apply_adapters(model, lora.AdapterConfig(rank=4, targets="all-dense"))
    _perturb(model)
    frozen_before = jax.tree.map(jnp.copy, nnx.state(model, nnx.Not(lora.Adapter)))
    adapters_before = jax.tree.map(jnp.copy, nnx.state(model, lora.Adapter))
    opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=lora.trainable_filter(False))

    def loss(m):
        return jnp.mean(m(*batch, dropout_key=jax.random.key(0)) ** 2)

    grads = nnx.grad(loss, argnums=nnx.DiffState(0, lora.Adapter))(model)
    opt.update(model, grads)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), nnx.state(model, lora.Adapter), adapters_before)
    assert all(jax.tree.leaves(changed))
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), nnx.state(model, nnx.Not(lora.Adapter)), frozen_before)
    assert all(jax.tree.leaves(same))  # encoder and head untouched (head frozen by default)


@pytest.mark.parametrize("alpha", [None, 16.0])
def test_merge_equals_unmerged_forward(model, batch, alpha):
    lora.apply_adapters(model, lora.AdapterConfig(rank=8, targets="all-dense", alpha=alpha))
    _perturb(model)
    adapted = model(*batch)
    base = model.bert.layers[1].value.kernel[...]
    assert lora.merge(model) == 39
    np.testing.assert_allclose(model(*batch), adapted, atol=2e-5)
    assert float(jnp.abs(model.bert.layers[1].value.kernel[...] - base).max()) > 1e-3
    with pytest.raises(ValueError, match="already merged"):
        lora.merge(model)
    assert lora.unmerge(model) == 39
    np.testing.assert_allclose(model.bert.layers[1].value.kernel[...], base, atol=1e-6)
    np.testing.assert_allclose(model(*batch), adapted, atol=2e-5)


def test_merge_refuses_nan(model):
    lora.apply_adapters(model, lora.AdapterConfig(rank=2, targets="query-value"))
    layer = model.bert.layers[0].query
    layer.adapter.factors[1][...] = jnp.full_like(layer.adapter.factors[1][...], jnp.nan)
    before = model.bert.layers[3].query.kernel[...]
    with pytest.raises(ValueError, match="NaN or inf"):
        lora.merge(model)
    np.testing.assert_array_equal(model.bert.layers[3].query.kernel[...], before)  # nothing changed


def test_save_load_round_trip_with_head(tmp_path, model, batch):
    cfg = lora.apply_adapters(model, lora.AdapterConfig(rank=4, targets="attention-mlp", train_head=True, seed=5))
    _perturb(model)
    model.classifier.kernel[...] = model.classifier.kernel[...] + 0.3  # a trained head
    expected = model(*batch)
    lora.save(model, cfg, tmp_path / "adapter")
    fresh = bert.from_pretrained("minilm", 2, seed=123)  # different random head
    assert float(jnp.abs(fresh(*batch) - expected).max()) > 1e-3
    loaded = lora.load(fresh, tmp_path / "adapter")
    assert loaded.adapted == cfg.adapted and loaded.rank == 4 and loaded.train_head
    np.testing.assert_array_equal(fresh(*batch), expected)
    with pytest.raises(FileNotFoundError, match="not an adapter folder"):
        lora.load(fresh, tmp_path)
