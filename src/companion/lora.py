"""Adapters over the Flax NNX BERT, as a small library (PAPER.md §4).

An adapter adds a trainable low-rank product to a frozen dense weight: for a layer y = x·W̄
(kernel (in, out)), the adapted layer is y = x·(W̄ + s·F_1 F_2 ⋯ F_L) with factors F_i. Vanilla
LoRA is the chain of two: in the paper's notation W = W̄ + W_2 W_1 with W_1 ∈ R^{r×n} ~ N(0, 1)
and W_2 = 0, i.e. F_1 = W_1ᵀ (in × r) Gaussian, F_2 = W_2ᵀ (r × out) zero, and no α/r
scaling (s = 1; PEFT's s = α/r is an option). Deep LoRA (a later chapter) is a longer chain
under the same API.

Only adapter factors are trained: they are ``Adapter`` parameters (a Param subtype, as
``nnx.LoRAParam`` is), and the optimizer takes ``wrt=trainable_filter(...)``. The new
classifier head stays frozen at its random init by default (the paper's choice) and is
trainable on request.

Targets: the paper's three sets — "query-value"; "attention-mlp" (query, key, value,
attention output, intermediate, output: 72 matrices in BERT-base); "all-dense" (every 2-D
weight whose smaller side is ≥ a threshold, default the hidden size: those 72 + pooler + word
embeddings = 74 in BERT-base; in the 384-wide MiniLM the 512 × 384 position table qualifies
too) — or regular expressions over the layer names.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from companion.bert import BertForSequenceClassification, BertModel, Embed, Head, Linear

Array = jax.Array
TARGET_SETS = ("query-value", "attention-mlp", "all-dense")
KINDS = ("lora",)
_ATTENTION_MLP = ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense", "intermediate.dense", "output.dense")


class Adapter(nnx.Param):
    """Trainable adapter factors (the only parameters the optimizer updates by default)."""


@dataclass(frozen=True)
class AdapterConfig:
    """How to adapt a model (written to adapter_config.json)."""

    kind: str = "lora"  # adapter kind: "lora" (depth-2 chain); later chapters add Deep LoRA kinds
    rank: int = 8  # r: inner width of the chain
    targets: str | tuple[str, ...] = "query-value"  # one of TARGET_SETS, or regexes over layer names
    alpha: float | None = None  # None: no scaling (paper); a number: PEFT-style scale α/r
    min_side: int | None = None  # all-dense threshold on min(in, out); None: the hidden size
    train_head: bool = False  # train the classifier head too (paper: frozen at random init)
    seed: int = 0  # initialises the adapters (paired with the run's seed)
    adapted: tuple[str, ...] = field(default=())  # filled in by apply_adapters: the layer names

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown adapter kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def chain_apply(x: Array, factors: tuple[Array, ...], scale: float) -> Array:
    """y = scale · x F_1 F_2 ⋯ F_L with ``factors = (W_1 (k_1, in), F_2, …, F_L)``, F_1 = W_1ᵀ.

    x: (..., in) → y: (..., out). The backward pass is written out (``custom_vjp``): every
    factor gradient is one einsum over the batch axes producing a (k, ·) result, and nothing of
    size (..., in) is transposed. Differentiating the plain expression instead lets XLA:CPU pick
    layouts that cost ~9 ms more per adapted BERT-base-sized layer and step (measured).
    """
    return _chain_forward(x, factors, scale)[0]


def _chain_forward(x, factors, scale):
    hs = [x @ factors[0].T]
    for f in factors[1:]:
        hs.append(hs[-1] @ f)
    return scale * hs[-1], hs


def _chain_fwd(x, factors, scale):
    y, hs = _chain_forward(x, factors, scale)
    return y, (x, factors, hs[:-1])


def _chain_bwd(scale, residuals, gy):
    x, factors, hs = residuals
    g = scale * gy
    grads = [None] * len(factors)
    for i in range(len(factors) - 1, 0, -1):
        grads[i] = jnp.einsum("...a,...b->ab", hs[i - 1], g)  # (k_{i-1}, k_i)
        g = g @ factors[i].T
    grads[0] = jnp.einsum("...k,...i->ki", g, x)  # (k_1, in)
    return g @ factors[0], tuple(grads)


chain_apply.defvjp(_chain_fwd, _chain_bwd)


class FactorChain(nnx.Module):
    """ΔW = scale · F_1 F_2 ⋯ F_L (in, out), with F_1 (in, k_1), …, F_L (k_{L-1}, out).

    F_1 is *stored transposed*, as ``factors[0]`` of shape (k_1, in) — the paper's W_1 ∈ R^{r×n}
    and PEFT's ``lora_A`` layout. Speed, not taste: the gradient of a factor stored (in, k) is a
    tall-thin (in × k) contraction over the batch that XLA:CPU runs ~15× slower than the same
    numbers produced as (k × in). ``x → x·ΔW`` goes through the narrow factors (never forming
    ΔW), and for an embedding table the looked-up rows are F_1[ids] F_2 ⋯ F_L.
    """

    def __init__(self, factors: Sequence[Array], scale: float = 1.0):
        self.factors = nnx.List([Adapter(jnp.asarray(f, dtype=jnp.float32)) for f in factors])
        self.scale = scale
        self.merged = False

    def _rest(self, y: Array) -> Array:
        for f in list(self.factors)[1:]:
            y = y @ f[...]
        return self.scale * y

    def __call__(self, x: Array) -> Array:
        if self.merged:
            return jnp.zeros(x.shape[:-1] + (self.factors[-1][...].shape[-1],), x.dtype)
        return chain_apply(x, tuple(f[...] for f in self.factors), self.scale)

    def lookup(self, ids: Array) -> Array:
        if self.merged:
            return jnp.zeros(ids.shape + (self.factors[-1][...].shape[-1],))
        return self._rest(jnp.take(self.factors[0][...], ids, axis=1).T if ids.ndim == 1
                          else jnp.moveaxis(jnp.take(self.factors[0][...], ids, axis=1), 0, -1))

    def delta(self) -> Array:
        """ΔW (in, out), float32."""
        return self._rest(self.factors[0][...].T)

    @property
    def in_features(self) -> int:
        return self.factors[0][...].shape[1]


def lora_factors(key: Array, in_features: int, out_features: int, rank: int) -> list[Array]:
    """Vanilla LoRA at init (PAPER.md §4): W_1 (r, in) ~ N(0, 1) stored as is (F_1 = W_1ᵀ),
    F_2 = W_2ᵀ (r, out) = 0."""
    return [jax.random.normal(key, (rank, in_features), dtype=jnp.float32),
            jnp.zeros((rank, out_features), dtype=jnp.float32)]


def _encoder(model) -> BertModel:
    return model.bert if isinstance(model, BertForSequenceClassification) else model


def select_targets(model, targets: str | Sequence[str], min_side: int | None = None) -> list[str]:
    """Names of the layers an adapter goes on (classifier excluded).

    Raises:
      ValueError: an unknown set name, or nothing matches; the message lists the model's layers.
    """
    layers = dict(_encoder(model).named_layers())
    names = list(layers)
    if isinstance(targets, str) and targets in TARGET_SETS:
        if targets == "query-value":
            chosen = [n for n in names if n.endswith(("attention.self.query", "attention.self.value"))]
        elif targets == "attention-mlp":
            chosen = [n for n in names if n.startswith("encoder.layer.") and n.endswith(_ATTENTION_MLP)]
        else:
            threshold = min_side if min_side is not None else _encoder(model).config.hidden_size
            chosen = [n for n in names if min(layers[n].in_features, layers[n].out_features) >= threshold]
    else:
        patterns = [targets] if isinstance(targets, str) else list(targets)
        try:
            compiled = [re.compile(p) for p in patterns]
        except re.error as e:
            raise ValueError(f"bad target pattern: {e}") from None
        chosen = [n for n in names if any(p.search(n) for p in compiled)]
    if not chosen:
        raise ValueError(
            f"no layer matches targets {targets!r} (sets: {', '.join(TARGET_SETS)}); the model's layers are: "
            + ", ".join(names)
        )
    return chosen


def apply_adapters(model, config: AdapterConfig) -> AdapterConfig:
    """Attach adapters to the target layers of ``model`` (in place).

    Returns:
      the config with ``adapted`` filled in (the names, in model order).
    """
    names = select_targets(model, config.targets, config.min_side)
    layers = dict(_encoder(model).named_layers())
    key = jax.random.key(config.seed)
    for i, name in enumerate(names):
        layer = layers[name]
        if layer.adapter is not None:
            raise ValueError(f"{name} already has an adapter")
        factors = lora_factors(jax.random.fold_in(key, i), layer.in_features, layer.out_features, config.rank)
        layer.adapter = FactorChain(factors, config.scale)
    return _replace(config, adapted=tuple(names))


def _replace(config: AdapterConfig, **changes) -> AdapterConfig:
    values = asdict(config)
    values.update(changes)
    values["targets"] = tuple(values["targets"]) if isinstance(values["targets"], list) else values["targets"]
    values["adapted"] = tuple(values["adapted"])
    return AdapterConfig(**values)


def trainable_filter(train_head: bool = False):
    """What the optimizer updates: adapter factors, plus the head when asked."""
    return nnx.Any(Adapter, Head) if train_head else Adapter


def count_parameters(model, filter_=Adapter) -> int:
    """Number of scalars in the parameters that match ``filter_``."""
    state = nnx.state(model, filter_)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state)))


def _adapted_layers(model):
    for name, layer in _encoder(model).named_layers():
        if layer.adapter is not None:
            yield name, layer


def merge(model) -> int:
    """Fold every adapter into its base weight (float32): W̄ ← W̄ + ΔW; adapters then add 0.

    Returns the number of merged layers. Raises ValueError (and changes nothing) if any ΔW has
    NaN or inf, or a layer is already merged.
    """
    deltas = {}
    for name, layer in _adapted_layers(model):
        if layer.adapter.merged:
            raise ValueError(f"{name} is already merged")
        delta = layer.adapter.delta()
        if not bool(jnp.all(jnp.isfinite(delta))):
            raise ValueError(f"adapter of {name} has NaN or inf; not merging")
        deltas[name] = delta
    for name, layer in _adapted_layers(model):
        weight = layer.embedding if isinstance(layer, Embed) else layer.kernel
        weight[...] = (weight[...].astype(jnp.float32) + deltas[name]).astype(weight[...].dtype)
        layer.adapter.merged = True
    return len(deltas)


def unmerge(model) -> int:
    """Undo ``merge``: W̄ ← W̄ − ΔW and the adapters act again."""
    count = 0
    for name, layer in _adapted_layers(model):
        if not layer.adapter.merged:
            raise ValueError(f"{name} is not merged")
        weight = layer.embedding if isinstance(layer, Embed) else layer.kernel
        weight[...] = (weight[...].astype(jnp.float32) - layer.adapter.delta()).astype(weight[...].dtype)
        layer.adapter.merged = False
        count += 1
    return count


CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


def save(model, config: AdapterConfig, folder: str | Path, extra: dict | None = None) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (adapters and the head).

    Keys: ``<layer name>.adapter.<i>`` for factor i (factor 0 stored (r, in) like PEFT's
    lora_A, the others (k_{i-1}, k_i)), ``classifier.kernel``/``classifier.bias``.
    """
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, layer in _adapted_layers(model):
        if layer.adapter.merged:
            raise ValueError(f"{name} is merged; unmerge before saving adapters")
        for i, f in enumerate(layer.adapter.factors):
            tensors[f"{name}.adapter.{i}"] = np.asarray(f[...])
    if isinstance(model, BertForSequenceClassification):
        tensors["classifier.kernel"] = np.asarray(model.classifier.kernel[...])
        tensors["classifier.bias"] = np.asarray(model.classifier.bias[...])
    save_file(tensors, str(folder / WEIGHTS_FILE))
    meta = asdict(config)
    meta["num_labels"] = getattr(model, "num_labels", None)
    meta.update(extra or {})
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load(model, folder: str | Path) -> AdapterConfig:
    """Attach the adapters saved in ``folder`` to ``model`` and restore their values and the head.

    Raises:
      FileNotFoundError: a file is missing. ValueError: keys or shapes do not fit the model.
    """
    from safetensors.numpy import load_file

    folder = Path(folder)
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / f).exists():
            raise FileNotFoundError(f"{folder / f} not found: not an adapter folder")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    known = set(AdapterConfig.__dataclass_fields__)
    config = _replace(AdapterConfig(), **{k: v for k, v in meta.items() if k in known})
    tensors = load_file(str(folder / WEIGHTS_FILE))
    layers = dict(_encoder(model).named_layers())
    unknown = [n for n in config.adapted if n not in layers]
    if unknown:
        raise ValueError(f"{folder}: adapted layer(s) {unknown} do not exist in this model")
    for name in config.adapted:
        layer = layers[name]
        count = len([k for k in tensors if k.startswith(f"{name}.adapter.")])
        factors = [tensors[f"{name}.adapter.{i}"] for i in range(count)]
        if factors[0].shape[1] != layer.in_features or factors[-1].shape[-1] != layer.out_features:
            raise ValueError(f"{folder}: adapter of {name} has shape {factors[0].shape}…{factors[-1].shape}, "
                             f"layer is {layer.in_features} → {layer.out_features}")
        layer.adapter = FactorChain(factors, config.scale)
    if isinstance(model, BertForSequenceClassification):
        if "classifier.kernel" not in tensors:
            raise ValueError(f"{folder}: no classifier head saved")
        if tensors["classifier.kernel"].shape != model.classifier.kernel[...].shape:
            raise ValueError(f"{folder}: classifier shape {tensors['classifier.kernel'].shape} does not fit "
                             f"{model.classifier.kernel[...].shape}")
        model.classifier.kernel[...] = jnp.asarray(tensors["classifier.kernel"])
        model.classifier.bias[...] = jnp.asarray(tensors["classifier.bias"])
    return config
