"""companion.adapt.bert: parity with PyTorch transformers' BertModel, loading, heads, tokenizer."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from companion.adapt import bert

PAIRS = [
    ("A plane is taking off.", "An air plane is taking off."),
    ("A man is playing a large flute.", "A man is playing a flute."),
    ("Three men are playing chess.", "Two men are playing chess while the clock keeps running."),
    ("A woman is slicing an onion.", "A woman is cutting an onion."),
]


@pytest.fixture(scope="module")
def tokenizer():
    return bert.load_tokenizer("minilm")


def padded(tokenizer, pairs, extra=4):
    enc = tokenizer.encode_batch(pairs)
    t = max(len(e.ids) for e in enc) + extra  # padding on every row
    ids, mask, types = (np.zeros((len(pairs), t), np.int64) for _ in range(3))
    for i, e in enumerate(enc):
        n = len(e.ids)
        ids[i, :n], mask[i, :n], types[i, :n] = e.ids, 1, e.type_ids
    return ids, mask, types


def test_parity_with_transformers(tokenizer):
    """Last hidden state ≤ 1e-4 absolute from PyTorch transformers' BertModel, padded batch."""
    torch = pytest.importorskip("torch", reason="torch is in the test extra")
    from transformers import BertModel as TorchBert

    ids, mask, types = padded(tokenizer, PAIRS)
    reference = TorchBert.from_pretrained(str(bert.resolve("minilm"))).eval()
    with torch.no_grad():
        ref = reference(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        token_type_ids=torch.tensor(types))
    ours = bert.from_pretrained("minilm")(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types))
    diff = np.abs(np.asarray(ours.last_hidden_state) - ref.last_hidden_state.numpy())
    assert diff[mask.astype(bool)].max() <= 1e-4
    assert diff.max() <= 1e-4  # padded positions too
    assert np.abs(np.asarray(ours.pooler_output) - ref.pooler_output.numpy()).max() <= 1e-4


def test_tokenizer_ids_on_known_pairs(tokenizer):
    e = tokenizer.encode("A man is playing a flute.", "A man plays the flute.")
    assert e.ids == [101, 1037, 2158, 2003, 2652, 1037, 8928, 1012, 102, 1037, 2158, 3248, 1996, 8928, 1012, 102]
    assert e.type_ids == [0] * 9 + [1] * 7
    long = tokenizer.encode(" ".join(["word"] * 300))
    assert len(long.ids) == 302  # no truncation: the data pipeline drops long examples itself


def test_bert_prefix_and_key_errors(tmp_path):
    src = bert.resolve("minilm")
    weights = load_file(str(src / "model.safetensors"))
    folder = tmp_path / "prefixed"
    folder.mkdir()
    shutil.copy(src / "config.json", folder / "config.json")
    save_file({f"bert.{k}": v for k, v in weights.items()}, str(folder / "model.safetensors"))
    a = bert.from_pretrained(str(folder))
    b = bert.from_pretrained("minilm")
    np.testing.assert_array_equal(a.layers[2].query.kernel[...], b.layers[2].query.kernel[...])

    model = bert.BertModel(bert.BertConfig.from_json(src / "config.json"), rngs=bert.nnx.Rngs(0))
    missing = {k: v for k, v in weights.items() if k != "encoder.layer.3.output.dense.bias"}
    with pytest.raises(ValueError, match=r"missing key\(s\) \['encoder.layer.3.output.dense.bias'\]"):
        bert.load_weights(model, missing)
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['encoder.layer.9.extra'\]"):
        bert.load_weights(model, {**weights, "encoder.layer.9.extra": np.zeros(3)})
    bad = dict(weights)
    bad["pooler.dense.weight"] = np.zeros((384, 10), np.float32)
    with pytest.raises(ValueError, match="shape mismatch for pooler.dense.weight"):
        bert.load_weights(model, bad)


def test_resolve_offline_errors(tmp_path, monkeypatch):
    monkeypatch.delenv(bert.ONLINE_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="COMPANION_ONLINE=1"):
        bert.resolve("bert-base-cased")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        bert.read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is not 'bert'"):
        bert.BertConfig.from_json(tmp_path / "config.json")


def test_classification_head_and_dropout(tokenizer):
    model = bert.from_pretrained("minilm", 3)
    ids, mask, types = (jnp.asarray(a) for a in padded(tokenizer, PAIRS[:2]))
    logits = model(ids, mask, types)
    assert logits.shape == (2, 3)
    np.testing.assert_array_equal(logits, model(ids, mask, types))  # no key: deterministic
    import jax

    a = model(ids, mask, types, dropout_key=jax.random.key(0))
    b = model(ids, mask, types, dropout_key=jax.random.key(0))
    c = model(ids, mask, types, dropout_key=jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(a - c).max()) > 1e-4 and float(jnp.abs(a - logits).max()) > 1e-4
    other = bert.from_pretrained("minilm", 3, head_seed=2)
    assert float(jnp.abs(other.classifier.kernel[...] - model.classifier.kernel[...]).max()) > 0


def test_independent_of_jax_x64_mode(tokenizer):
    """The deep-linear half switches x64 on; BERT (init, head, outputs) must not change with it."""
    import jax

    ids, mask, types = (jnp.asarray(a, dtype=jnp.int32) for a in padded(tokenizer, PAIRS[:2]))
    previous = jax.config.jax_enable_x64
    try:
        jax.config.update("jax_enable_x64", False)
        a = bert.from_pretrained("minilm", 2, head_seed=3)(ids, mask, types)
        jax.config.update("jax_enable_x64", True)
        b = bert.from_pretrained("minilm", 2, head_seed=3)(ids, mask, types)
    finally:
        jax.config.update("jax_enable_x64", previous)
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("num_labels, num_layers", [(1, None), (2, None), (3, 1)])
def test_with_head_is_one_fixed_lecun_normal_head(num_labels, num_layers):
    """The new head is Flax's default Dense init (LeCun normal: a normal truncated at ±2σ with
    variance 1/h; bias 0; the authors' code at 618c410 via transformers' from_pretrained) from one
    fixed key: the same head on every encoder, whichever run builds it."""
    import jax

    encoder = bert.pretrained_encoder("minilm", num_layers=num_layers)
    model = bert.with_head(encoder, num_labels)
    assert model.bert is encoder and isinstance(model.classifier.kernel, bert.HeadParam)
    assert model.classifier.kernel[...].shape == (384, num_labels)
    expected = bert.head_init(bert.nnx.Rngs(bert.HEAD_SEED).params(), (384, num_labels))
    np.testing.assert_array_equal(model.classifier.kernel[...], expected)
    other = bert.with_head(bert.pretrained_encoder("minilm", num_layers=2), num_labels)  # another encoder
    np.testing.assert_array_equal(other.classifier.kernel[...], model.classifier.kernel[...])
    same = bert.from_pretrained("minilm", num_labels, num_layers=num_layers)
    np.testing.assert_array_equal(same.classifier.kernel[...], model.classifier.kernel[...])
    assert float(jnp.abs(same.classifier.bias[...]).max()) == 0.0
    for a, b in zip(jax.tree.leaves(bert.nnx.state(same.bert)), jax.tree.leaves(bert.nnx.state(encoder))):
        np.testing.assert_array_equal(a, b)


def test_head_init_is_lecun_normal():
    import jax

    k = np.asarray(bert.head_init(jax.random.key(0), (768, 3000)))
    assert k.dtype == np.float32 and k.std() == pytest.approx(1 / np.sqrt(768), rel=0.01)
    bound = 2 / np.sqrt(768) / 0.87962566  # truncation at 2 standard deviations of the underlying normal
    assert np.abs(k).max() <= bound + 1e-6 and np.abs(k).max() > 0.95 * bound
    np.testing.assert_array_equal(k, jax.nn.initializers.lecun_normal()(jax.random.key(0), (768, 3000), jnp.float32))


def test_num_layers_keeps_the_first_layers():
    full, cut = bert.pretrained_encoder("minilm"), bert.pretrained_encoder("minilm", num_layers=2)
    assert len(cut.layers) == 2 and cut.config.num_hidden_layers == 2
    np.testing.assert_array_equal(cut.layers[1].value.kernel[...], full.layers[1].value.kernel[...])
    with pytest.raises(ValueError, match="num_layers must be an integer in 1…6"):
        bert.pretrained_encoder("minilm", num_layers=7)


@pytest.mark.parametrize("shape, positions", [((2, 9, 4), (1,)), ((2, 3, 9, 9), (2, 3)), ((9, 5), (0,))])
def test_dropout_masks_are_indexed_by_position(shape, positions):
    """A shorter padding drops the same entries of the positions it keeps: the mask of token
    position (i, j) comes from fold_in(fold_in(key, i), j), not from the padded shape."""
    import jax

    key = jax.random.key(3)
    x = jnp.ones(shape)
    cut = tuple(slice(0, 6) if a in positions else slice(None) for a in range(len(shape)))
    full, short = bert.dropout(x, 0.1, key, positions), bert.dropout(x[cut], 0.1, key, positions)
    np.testing.assert_array_equal(full[cut], short)
    np.testing.assert_allclose(np.unique(np.asarray(full)), [0.0, 1 / 0.9], rtol=1e-6)
    big = bert.dropout(jnp.ones((64, 64, 64)), 0.1, key, (1,))
    assert float((big == 0).mean()) == pytest.approx(0.1, abs=0.005)  # Bernoulli(0.9) keeps
    assert float(jnp.abs(bert.dropout(x, 0.1, jax.random.key(4), positions) - full).max()) > 0
    np.testing.assert_array_equal(bert.dropout(x, 0.1, None, positions), x)  # evaluation


def test_dropout_does_not_depend_on_padding(tokenizer):
    """Training forward passes (dropout on) of real pairs padded to 32 or to 128 tokens agree."""
    import jax

    model = bert.from_pretrained("minilm", 1)
    arrays = [jnp.asarray(a) for a in padded(tokenizer, PAIRS[:2], extra=128 - 20)]
    longest = int(arrays[1].sum(-1).max())
    assert longest <= 20 and arrays[0].shape[1] >= 120
    key = jax.random.key(5)
    full = model(*arrays, dropout_key=key)
    short = model(*(a[:, :32] for a in arrays), dropout_key=key)
    np.testing.assert_allclose(short, full, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(full - model(*arrays)).max()) > 1e-4  # dropout did act


def test_mean_pooling_reads_the_real_tokens_only(tokenizer):
    """pooling="mean" is the mean of the last hidden states over the attention mask (the pooling
    all-MiniLM-L6-v2 was trained with): more padding changes nothing, and it is not the pooler."""
    m = jnp.array([[1, 1, 0], [1, 0, 0]])
    h = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    np.testing.assert_allclose(bert.mean_pool(h, m), [[1.0, 2.0], [6.0, 7.0]])
    encoder = bert.pretrained_encoder("minilm", num_layers=1)
    mean, pooler = bert.with_head(encoder, 1, pooling="mean"), bert.with_head(encoder, 1)
    short = [jnp.asarray(a) for a in padded(tokenizer, PAIRS[:2], extra=1)]
    long = [jnp.asarray(a) for a in padded(tokenizer, PAIRS[:2], extra=30)]
    np.testing.assert_allclose(mean(*short), mean(*long), rtol=1e-5, atol=1e-6)
    out = encoder(*short)
    expected = bert.mean_pool(out.last_hidden_state, short[1]) @ mean.classifier.kernel[...] + mean.classifier.bias[...]
    np.testing.assert_allclose(mean(*short), expected, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(mean(*short) - pooler(*short)).max()) > 1e-3
    with pytest.raises(ValueError, match="unknown pooling 'max'; choose one of pooler, mean"):
        bert.with_head(encoder, 1, pooling="max")


_DRAWS = """
import json, sys
import jax
if sys.argv[1] == "companion":
    from companion.adapt import bert
key = jax.random.key(7)
out = {
    "bits": jax.jit(lambda k: jax.random.bits(k, (3, 1001)))(key).tolist(),
    "fold_in": jax.random.key_data(jax.jit(lambda k: jax.random.fold_in(k, 12345))(key)).tolist(),
    "bernoulli": jax.jit(lambda k: jax.random.bernoulli(k, 0.9, (2, 3, 50, 7)))(key).tolist(),
}
print(json.dumps(out))
"""


def test_unrolled_threefry_draws_the_same_bits():
    # The CPU lowering that bert registers (its rounds unrolled, no loop) against JAX's own
    # rolled one in a fresh process: every bit of jax.random.bits and fold_in is the same.
    import subprocess
    import sys

    import jax

    assert bert.UNROLLED_THREEFRY
    hlo = jax.jit(lambda k: jax.random.bits(k, (64,))).lower(jax.random.key(0)).as_text()
    assert "while" not in hlo
    runs = {}
    for who in ("jax", "companion"):
        proc = subprocess.run([sys.executable, "-c", _DRAWS, who], capture_output=True, text=True, check=True,
                              env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
        runs[who] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs["jax"]["bits"] == runs["companion"]["bits"]
    assert runs["jax"]["fold_in"] == runs["companion"]["fold_in"]
    assert runs["jax"]["bernoulli"] == runs["companion"]["bernoulli"]
