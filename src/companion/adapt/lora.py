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

from companion.adapt.bert import BertForSequenceClassification, BertModel, Embed, Head

Array = jax.Array
TARGET_SETS = ("query-value", "attention-mlp", "all-dense")
KINDS = ("lora", "deep-lora", "deep-lora-narrow", "deep-lora-compressed")
_ATTENTION_MLP = ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense", "intermediate.dense", "output.dense")


class Adapter(nnx.Param):
    """Trainable adapter factors (the only parameters the optimizer updates by default)."""


class OuterAdapter(Adapter):
    """Outer factors of compressed Deep LoRA (U_{L,1}, V_{1,1}): trained with the discrepant
    step γη (PAPER.md §2, §4). An ``Adapter`` too, so ``wrt=Adapter`` trains them."""


@dataclass(frozen=True)
class AdapterConfig:
    """How to adapt a model (written to adapter_config.json)."""

    kind: str = "lora"  # "lora", "deep-lora" (wide), "deep-lora-narrow", "deep-lora-compressed"
    rank: int = 8  # r: LoRA rank; narrow width; compressed rank (even: r/2 directions per side)
    depth: int = 3  # Deep LoRA: number of factors (paper: 3); LoRA is always 2
    scale_init: float = 1e-3  # Deep LoRA: every factor ε-scaled (semi-)orthogonal (paper: 1e-3)
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
        if self.kind.startswith("deep-lora"):
            if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 3:
                raise ValueError(f"Deep LoRA needs depth ≥ 3 (paper: 3), got {self.depth!r}")
            if not self.scale_init > 0:
                raise ValueError(f"the init scale ε must be > 0, got {self.scale_init}")
        if self.kind == "deep-lora-compressed" and self.rank % 2:
            raise ValueError(f"rank {self.rank} must be even for compressed Deep LoRA "
                             "(r/2 directions from each side of the first gradient)")

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

    def __init__(self, factors: Sequence[Array], scale: float = 1.0, outer: Sequence[bool] = ()):
        outer = tuple(outer) or (False,) * len(factors)
        self.factors = nnx.List([(OuterAdapter if o else Adapter)(jnp.asarray(f, dtype=jnp.float32))
                                 for f, o in zip(factors, outer)])
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
            return jnp.zeros(ids.shape + (self.factors[-1][...].shape[-1],), jnp.float32)
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


def _scaled_orthogonal(key: Array, rows: int, cols: int, eps: float) -> Array:
    """ε times a Haar-random matrix with orthonormal rows or columns, (rows, cols)."""
    g = jax.random.normal(key, (max(rows, cols), min(rows, cols)), dtype=jnp.float32)
    q, r = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    return eps * (q if rows >= cols else q.T)


def deep_factors(key: Array, in_features: int, out_features: int, width: int, depth: int,
                 eps: float) -> list[Array]:
    """Deep LoRA at init (PAPER.md §4): W = W̄ + W_L ⋯ W_1, every W_i ε-scaled (semi-)orthogonal,
    W_1 (k, in), W_2 … W_{L−1} (k, k), W_L (out, k); returned in chain layout
    [W_1, W_2ᵀ, …, W_Lᵀ] (factor 0 stored (k, in), the others (k, ·))."""
    keys = jax.random.split(key, depth)
    factors = [_scaled_orthogonal(keys[0], width, in_features, eps)]
    factors += [_scaled_orthogonal(keys[i], width, width, eps).T for i in range(1, depth - 1)]
    factors.append(_scaled_orthogonal(keys[-1], out_features, width, eps).T)
    return factors


def compressed_factors(key: Array, in_features: int, out_features: int, rank: int, depth: int,
                       eps: float, gradient: Array) -> list[Array]:
    """Compressed Deep LoRA from one gradient of the wide model (PAPER.md §2, §4).

    The wide adapter of this layer (width k = min(in, out), ``deep_factors``) is drawn, used and
    dropped here: only one wide layer exists at a time. With G = ∂ℓ/∂W (out, in) the gradient of
    the loss with respect to the layer's weight at the wide init (ΔW = O(ε^L)), the first factor's
    gradient is W_{L:2}(0)ᵀ G; as for completion its top r/2 singular directions per side give
    V_{1,1} (in, r) and U_{L,1} (out, r) (``compression.outer_factors``). The chain is
    [V_{1,1}ᵀ, W̃_1ᵀ … W̃_Lᵀ, U_{L,1}ᵀ] with inner W̃_l = ε I_r.

    Args:
      gradient: (out, in) ∂ℓ/∂W in the paper's layout (kernel gradient transposed).
    """
    from companion.linear import compression

    width = min(in_features, out_features)
    if rank > width:
        raise ValueError(f"rank {rank} exceeds the layer's width min(in, out) = {width}")
    wide = deep_factors(key, in_features, out_features, width, depth, eps)
    w1 = wide[0]  # (k, in)
    above = wide[-1].T  # W_L (out, k)
    for f in reversed(wide[1:-1]):
        above = above @ f.T  # W_{L:2} = W_L ⋯ W_2
    grad_w1 = above.T @ gradient  # (k, in)
    end_to_end = above @ w1  # W_{L:1}(0), (out, in)
    left, right = compression.outer_factors(-grad_w1, w1, end_to_end, (eps,) * depth, rank // 2)
    inner = [eps * jnp.eye(rank, dtype=jnp.float32) for _ in range(depth)]  # distinct buffers
    return [right.T, *inner, left.T]


# One compiled program per layer shape (reused across layers and runs) instead of op-by-op
# QR and SVD; the ValueError for a rank above the width is raised while tracing, before any work.
_deep_factors_jit = jax.jit(deep_factors, static_argnums=(1, 2, 3, 4, 5))
_compressed_factors_jit = jax.jit(compressed_factors, static_argnums=(1, 2, 3, 4, 5))


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


def apply_adapters(model, config: AdapterConfig, gradients: dict[str, Array] | None = None) -> AdapterConfig:
    """Attach adapters to the target layers of ``model`` (in place).

    Args:
      gradients: compressed Deep LoRA only: {layer name: ∂ℓ/∂W (out, in)} from one training
        batch (``first_gradients``).

    Returns:
      the config with ``adapted`` filled in (the names, in model order).
    """
    names = select_targets(model, config.targets, config.min_side)
    layers = dict(_encoder(model).named_layers())
    key = jax.random.key(config.seed)
    if config.kind == "deep-lora-compressed" and gradients is None:
        raise ValueError("compressed Deep LoRA needs the first gradients (companion.adapt.lora.first_gradients)")
    for i, name in enumerate(names):
        layer = layers[name]
        if layer.adapter is not None:
            raise ValueError(f"{name} already has an adapter")
        k, n, m = jax.random.fold_in(key, i), layer.in_features, layer.out_features
        outer = ()
        if config.kind == "lora":
            factors = lora_factors(k, n, m, config.rank)
        elif config.kind == "deep-lora":
            factors = _deep_factors_jit(k, n, m, min(n, m), config.depth, config.scale_init)
        elif config.kind == "deep-lora-narrow":
            if config.rank > min(n, m):
                raise ValueError(f"rank {config.rank} exceeds the width min(in, out) = {min(n, m)} of {name}")
            factors = _deep_factors_jit(k, n, m, config.rank, config.depth, config.scale_init)
        else:
            try:
                factors = _compressed_factors_jit(k, n, m, config.rank, config.depth, config.scale_init,
                                                  gradients[name])
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            outer = (True,) + (False,) * config.depth + (True,)
        layer.adapter = FactorChain(factors, config.scale, outer)
    return _replace(config, adapted=tuple(names))


def first_gradients(model, names: Sequence[str], loss_fn) -> dict[str, Array]:
    """∂ℓ/∂W (out, in) for the named layers, from one call of ``loss_fn(model)`` (one batch).

    Only those layers' base weights are differentiated (a path filter splits them from the rest
    of the model): the memory is one dense gradient per adapted layer, never a wide adapter.
    The gradient is one compiled program (``jax.jit``), which takes less time and peak memory
    than running the backward pass op by op.
    """
    layers = dict(_encoder(model).named_layers())
    by_id = {id(layers[n]): n for n in names}
    paths = {}
    for path, node in nnx.iter_graph(model):
        if id(node) in by_id:
            leaf = "embedding" if isinstance(node, Embed) else "kernel"
            paths[tuple(path) + (leaf,)] = by_id[id(node)]
    wanted = lambda path, _: tuple(path) in paths  # noqa: E731
    graphdef, weights, rest = nnx.split(model, wanted, ...)

    def loss_of(w, rest):
        return loss_fn(nnx.merge(graphdef, w, rest))

    grads = jax.jit(jax.grad(loss_of))(weights, rest)
    out = {}
    for path, value in nnx.to_flat_state(grads):
        g = jnp.asarray(value[...] if isinstance(value, nnx.Variable) else value)
        out[paths[tuple(path)]] = g.T  # kernel (in, out) / table (num, features) → (out, in)
    return out


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


def adapted_layers(model):
    """(name, layer) of every layer that carries an adapter, in model order."""
    for name, layer in _encoder(model).named_layers():
        if layer.adapter is not None:
            yield name, layer


def numerical_ranks(model, tol: float = 1e-3) -> dict[str, int]:
    """Per adapted layer, the number of singular values of ΔW above ``tol`` (absolute).

    PAPER.md §4's histogram counts a Deep LoRA update with ‖ΔW‖₂ ≤ 1e-3 as rank 0.
    """
    out = {}
    for name, layer in adapted_layers(model):
        s = np.linalg.svd(np.asarray(layer.adapter.delta(), dtype=np.float64), compute_uv=False)
        out[name] = int(np.sum(s > tol))
    return out


def merge(model) -> int:
    """Fold every adapter into its base weight (float32): W̄ ← W̄ + ΔW; adapters then add 0.

    Returns the number of merged layers. Raises ValueError (and changes nothing) if any ΔW has
    NaN or inf, or a layer is already merged.
    """
    deltas = {}
    for name, layer in adapted_layers(model):
        if layer.adapter.merged:
            raise ValueError(f"{name} is already merged")
        delta = layer.adapter.delta()
        if not bool(jnp.all(jnp.isfinite(delta))):
            raise ValueError(f"adapter of {name} has NaN or inf; not merging")
        deltas[name] = delta
    for name, layer in adapted_layers(model):
        weight = layer.embedding if isinstance(layer, Embed) else layer.kernel
        weight[...] = (weight[...].astype(jnp.float32) + deltas[name]).astype(weight[...].dtype)
        layer.adapter.merged = True
    return len(deltas)


def unmerge(model) -> int:
    """Undo ``merge``: W̄ ← W̄ − ΔW and the adapters act again."""
    count = 0
    for name, layer in adapted_layers(model):
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
    for name, layer in adapted_layers(model):
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
        outer = (True,) + (False,) * (count - 2) + (True,) if config.kind == "deep-lora-compressed" else ()
        layer.adapter = FactorChain(factors, config.scale, outer)
    if isinstance(model, BertForSequenceClassification):
        if "classifier.kernel" not in tensors:
            raise ValueError(f"{folder}: no classifier head saved")
        if tensors["classifier.kernel"].shape != model.classifier.kernel[...].shape:
            raise ValueError(f"{folder}: classifier shape {tensors['classifier.kernel'].shape} does not fit "
                             f"{model.classifier.kernel[...].shape}")
        model.classifier.kernel[...] = jnp.asarray(tensors["classifier.kernel"])
        model.classifier.bias[...] = jnp.asarray(tensors["classifier.bias"])
    return config
