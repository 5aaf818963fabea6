"""Adapters in a model: which layers get one, how they are initialised, merged, saved and loaded.

The layer itself is ``companion.adapt.lora.FactorChain``; this module puts chains on the layers
of a BERT (PEFT's ``model.py`` to its ``layer.py``). arXiv:2406.04112, Deep LoRA experiments:

- Methods: vanilla LoRA (rank r); Deep LoRA, wide (depth 3, width min(in, out)), narrow (width
  r) or compressed from the first gradient (rank r, r/2 directions per side).
- Targets, the paper's three sets: "query-value"; "attention-mlp" (query, key, value,
  attention output, intermediate, output: 72 matrices in BERT-base); "all-dense" (every 2-D
  weight whose smaller side is ≥ a threshold, default the hidden size: those 72 + pooler + word
  embeddings = 74 in BERT-base; in the 384-wide MiniLM the 512 × 384 position table qualifies
  too) — or regular expressions over the layer names.
- Only adapter factors train (``trainable_filter``); the new classifier head stays frozen at
  its random init unless ``train_head`` (the paper keeps it frozen).

Saved adapters follow PEFT's layout: ``adapter_config.json`` and ``adapter_model.safetensors``,
the head included.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from companion.adapt.glue import is_positive_int
from companion.adapt.bert import BertForSequenceClassification, BertModel, Embed, HeadParam, Linear
from companion.adapt.lora import (AdapterParam, FactorChain, compressed_factors_jit, deep_factors_jit,
                                  lora_factors)

Array = jax.Array
METHODS = ("lora", "deep-lora", "deep-lora-narrow", "deep-lora-compressed")  # adapter methods
TARGET_SETS = ("query-value", "attention-mlp", "all-dense")
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_ATTENTION_MLP = ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense", "intermediate.dense", "output.dense")
_OLD_NAMES = {"kind": "method", "scale_init": "init_scale"}  # adapter_config.json of earlier versions


@dataclass(frozen=True)
class AdapterConfig:
    """How to adapt a model: the adapter's structure and initialisation (adapter_config.json).

    What the optimizer does with the adapters (learning rates, compressed Deep LoRA's γ and inner
    step) belongs to ``companion.adapt.training.FinetuneConfig``; the seed that draws the factors
    is the run's (``apply_adapters``' key).
    """

    method: str = "lora"  # one of METHODS: "lora", "deep-lora" (wide), "deep-lora-narrow", "deep-lora-compressed"
    rank: int = 8  # adapter rank r: LoRA rank; narrow width; compressed rank (even: r/2 per side); unused by wide
    depth: int = 3  # Deep LoRA: number of factors L (paper: 3); LoRA is always 2
    init_scale: float = 1e-3  # Deep LoRA: ε, every factor ε-scaled (semi-)orthogonal at init (paper: 1e-3)
    targets: str | tuple[str, ...] = "all-dense"  # one of TARGET_SETS (paper: all-dense), or regexes over layer names
    alpha: float | None = None  # None: unscaled ΔW (paper); a number: PEFT-style multiplier α/r (``delta_scale``)
    min_side: int | None = None  # all-dense threshold on min(in, out); None: the hidden size
    train_head: bool = False  # train the classifier head too, like PEFT's modules_to_save (paper: frozen)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown adapter method {self.method!r}; choose from {', '.join(METHODS)}")
        if not is_positive_int(self.rank):
            raise ValueError(f"rank must be a positive integer, got {self.rank!r}")
        if self.method.startswith("deep-lora"):
            if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 3:
                raise ValueError(f"Deep LoRA needs depth ≥ 3 (paper: 3), got {self.depth!r}")
            if not self.init_scale > 0:
                raise ValueError(f"the init scale ε must be > 0, got {self.init_scale}")
        if self.method == "deep-lora-compressed" and self.rank % 2:
            raise ValueError(f"rank {self.rank} must be even for compressed Deep LoRA "
                             "(r/2 directions from each side of the first gradient)")
        if isinstance(self.targets, list):  # JSON gives lists; keep the config hashable
            object.__setattr__(self, "targets", tuple(self.targets))
        if self.min_side is not None and not is_positive_int(self.min_side):
            raise ValueError(f"min_side must be a positive integer or None, got {self.min_side!r}")

    @property
    def delta_scale(self) -> float:
        """The multiplier s of ΔW = s·F_1 ⋯ F_L: 1 (paper), or PEFT's α/r when ``alpha`` is set."""
        return 1.0 if self.alpha is None else self.alpha / self.rank

    @classmethod
    def from_dict(cls, values: dict) -> "AdapterConfig":
        """The config of an ``adapter_config.json`` (or ``asdict``): unknown keys (layer names,
        num_labels, base_model, …) are ignored; the names of earlier versions (``kind``,
        ``scale_init``) are read as ``method``, ``init_scale``."""
        known = {f.name for f in fields(cls)}
        renamed = {_OLD_NAMES.get(k, k): v for k, v in values.items()}
        return cls(**{k: v for k, v in renamed.items() if k in known})


def _encoder(model) -> BertModel:
    return model.bert if isinstance(model, BertForSequenceClassification) else model


def select_targets(model, targets: str | Sequence[str], min_side: int | None = None) -> list[str]:
    """Names of the layers an adapter goes on (the classifier never; the pooler not when the
    model's head reads mean-pooled states, ``bert.mean_pool``, since it is then unused).

    Args:
      model: a ``BertModel`` or ``BertForSequenceClassification``.
      targets: one of ``TARGET_SETS`` or regular expressions searched in the layer names.
      min_side: the all-dense threshold on min(in, out) (default: the hidden size).

    Returns:
      Layer names in model order.

    Raises:
      ValueError: a bad pattern, or nothing matches; the message lists the model's layers.
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
    if getattr(model, "pooling", "pooler") != "pooler" and "pooler.dense" in chosen:
        # A head that reads mean-pooled states never uses the pooler: an adapter there would never
        # receive a gradient (and would count as an unused, rank-0 update).
        chosen = [n for n in chosen if n != "pooler.dense"]
        if not chosen:
            raise ValueError(f"targets {targets!r} select only the pooler, which a head with "
                             f"pooling={model.pooling!r} does not read; choose other layers or pooling='pooler'")
    return chosen


def apply_adapters(model, config: AdapterConfig, key: Array,
                   gradients: dict[str, Array] | None = None) -> tuple[str, ...]:
    """Attach a ``FactorChain`` to every target layer of ``model`` (in place).

    Layer i of the targets draws its factors from ``fold_in(key, i)``: vanilla LoRA
    (``lora_factors``), wide or narrow Deep LoRA (``deep_factors``), compressed Deep LoRA
    (``compressed_factors``, from ``gradients``); arXiv:2406.04112, Deep LoRA experiments.

    Args:
      model: a ``BertModel`` or ``BertForSequenceClassification``.
      config: what to attach.
      key: PRNG key of the factors (the run's seed: ``jax.random.key(seed)``).
      gradients: compressed Deep LoRA only: {layer name: ∂ℓ/∂W (out, in)} from one training
        batch (``first_gradients``).

    Returns:
      The names of the adapted layers, in model order.

    Raises:
      ValueError: a layer already has an adapter, a rank exceeds a layer's width, or compressed
        Deep LoRA lacks its gradients.
    """
    names = select_targets(model, config.targets, config.min_side)
    layers = dict(_encoder(model).named_layers())
    if config.method == "deep-lora-compressed" and gradients is None:
        raise ValueError("compressed Deep LoRA needs the first gradients (companion.adapt.adapters.first_gradients)")
    for i, name in enumerate(names):
        layer = layers[name]
        if layer.adapter is not None:
            raise ValueError(f"{name} already has an adapter")
        k, n, m = jax.random.fold_in(key, i), layer.in_features, layer.out_features
        outer = ()
        if config.method == "lora":
            factors = lora_factors(k, n, m, config.rank)
        elif config.method == "deep-lora":
            factors = deep_factors_jit(k, n, m, min(n, m), config.depth, config.init_scale)
        elif config.method == "deep-lora-narrow":
            if config.rank > min(n, m):
                raise ValueError(f"rank {config.rank} exceeds the width min(in, out) = {min(n, m)} of {name}")
            factors = deep_factors_jit(k, n, m, config.rank, config.depth, config.init_scale)
        else:
            try:
                factors = compressed_factors_jit(k, n, m, config.rank, config.depth, config.init_scale,
                                                 gradients[name])
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            outer = (True,) + (False,) * config.depth + (True,)
        layer.adapter = FactorChain(factors, config.delta_scale, outer)
    return tuple(names)


def first_gradients(model, names: Sequence[str], loss_fn: Callable) -> dict[str, Array]:
    """∂ℓ/∂W (out, in) for the named layers, from one call of ``loss_fn(model)`` (one batch).

    arXiv:2406.04112, compression from the first gradient: compressed Deep LoRA's outer factors
    are the top singular directions of this gradient. Only those layers' base weights are
    differentiated (a path filter splits them from the rest of the model): the memory is one
    dense gradient per adapted layer, never a wide adapter. The gradient is one compiled
    program (``jax.jit``), which takes less time and peak memory than running the backward
    pass op by op.

    Args:
      model: the model without adapters.
      names: layer names (``select_targets``).
      loss_fn: model → scalar loss; any dropout is its own (``training.build_model`` calls the
        model with a dropout key, as the authors' code at 618c410 does).

    Returns:
      {name: (out, in) gradient, the kernel gradient transposed}.
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


def trainable_filter(train_head: bool = False):
    """What the optimizer updates: adapter factors, plus the head when asked (an NNX filter)."""
    return nnx.Any(AdapterParam, HeadParam) if train_head else AdapterParam


def count_parameters(model, filter_=AdapterParam) -> int:
    """Number of scalars in the parameters of ``model`` that match ``filter_``."""
    state = nnx.state(model, filter_)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state)))


def adapted_layers(model) -> list[tuple[str, Linear | Embed]]:
    """(name, layer) of every layer that carries an adapter, in model order."""
    return [(name, layer) for name, layer in _encoder(model).named_layers() if layer.adapter is not None]


def restrict_embeddings(model, columns: dict[str, Array]) -> int:
    """Train only the given rows of each adapted embedding table (``FactorChain.restrict``):
    ``columns`` maps a layer name (``embeddings.word_embeddings``, …) to the row ids (m,) that
    training can look up — every other row's update is exactly 0 under AdamW without weight
    decay, so no number changes and a step's cost follows the batch's tokens, not the table.

    Returns:
      The number of restricted layers.

    Raises:
      ValueError: a name is not an adapted embedding table of ``model``.
    """
    layers = dict(adapted_layers(model))
    for name in columns:
        if not isinstance(layers.get(name), Embed):
            raise ValueError(f"{name!r} is not an adapted embedding table; adapted: {', '.join(layers)}")
    for name, ids in columns.items():
        layers[name].adapter.restrict(ids)
    return len(columns)


def unrestrict(model) -> int:
    """Undo ``restrict_embeddings`` on every adapter of ``model``; returns how many were restricted."""
    count = 0
    for _, layer in adapted_layers(model):
        count += layer.adapter.restricted
        layer.adapter.unrestrict()
    return count


DEEP_RANK_CAP = 8  # the authors' literal cap of a Deep LoRA rank (the rank 8 of the LoRA it is compared with)
DEEP_NORM_FLOOR = 1e-3  # a Deep LoRA ΔW with ‖ΔW‖₂ at most this counts as rank 0 (the authors' rule)


def rank_of_update(delta, deep: bool, cap: int = DEEP_RANK_CAP) -> int:
    """The numerical rank of one adapter update ΔW by the authors' rule.

    Replication choice (the authors' code, cjyaras/deep-lora-transformers@618c410, plot_utils.py,
    ``get_fewshot_256_ranks``; arXiv:2406.04112's histogram of ranks): vanilla LoRA counts
    ``np.linalg.matrix_rank(ΔW)`` with numpy's default tolerance (σ_max · max(m, n) · machine
    epsilon of ΔW's dtype; their ΔW is float32, and so is ours); Deep LoRA counts
    ``min(matrix_rank(ΔW), 8)`` when ‖ΔW‖₂ > 1e-3 and 0 otherwise — its ε³-sized directions that
    never moved are not counted.

    Args:
      delta: ΔW, any 2-D array (kept in its float32 precision).
      deep: Deep LoRA's rule (else vanilla LoRA's).
      cap: the Deep LoRA cap (the authors' literal 8).

    Returns:
      The rank.
    """
    d = np.asarray(delta, dtype=np.float32)
    s = np.linalg.svd(d, compute_uv=False)
    if s.size == 0 or s[0] == 0:
        return 0
    rank = int(np.sum(s > s[0] * max(d.shape) * np.finfo(s.dtype).eps))  # = np.linalg.matrix_rank(d)
    if not deep:
        return rank
    return min(rank, cap) if float(s[0]) > DEEP_NORM_FLOOR else 0


def numerical_ranks(model, cap: int = DEEP_RANK_CAP) -> dict[str, int]:
    """Per adapted layer, the numerical rank of ΔW by the authors' rule (``rank_of_update``).

    A chain of two factors is vanilla LoRA (plain ``matrix_rank``); a longer one is Deep LoRA —
    wide, narrow or compressed — (``min(matrix_rank, cap)`` if ‖ΔW‖₂ > 1e-3, else 0). The
    authors applied the Deep LoRA rule, with its literal 8, to the wide model (rank None)
    compared with rank-8 LoRA (618c410, plot_utils.py; stsb_save_checkpoint.py); we apply the
    same cap 8 to every Deep LoRA variant: narrow and compressed updates have rank ≤ r anyway,
    so it changes them only for r > 8 (pass ``cap`` to move it).

    Returns:
      {layer name: rank}.
    """
    return {name: rank_of_update(layer.adapter.delta(), deep=len(layer.adapter.factors) > 2, cap=cap)
            for name, layer in adapted_layers(model)}


def _weight(layer):
    return layer.embedding if isinstance(layer, Embed) else layer.kernel


def merge(model) -> int:
    """Fold every adapter into its base weight (float32): W̄ ← W̄ + ΔW; adapters then add 0.

    Returns:
      The number of merged layers.

    Raises:
      ValueError (and changes nothing): some ΔW has NaN or inf, or a layer is already merged.
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
        weight = _weight(layer)
        weight[...] = (weight[...].astype(jnp.float32) + deltas[name]).astype(weight[...].dtype)
        layer.adapter.merged = True
    return len(deltas)


def unmerge(model) -> int:
    """Undo ``merge``: W̄ ← W̄ − ΔW and the adapters act again.

    Returns:
      The number of unmerged layers.

    Raises:
      ValueError: a layer is not merged.
    """
    count = 0
    for name, layer in adapted_layers(model):
        if not layer.adapter.merged:
            raise ValueError(f"{name} is not merged")
        weight = _weight(layer)
        weight[...] = (weight[...].astype(jnp.float32) - layer.adapter.delta()).astype(weight[...].dtype)
        layer.adapter.merged = False
        count += 1
    return count


def save(model, config: AdapterConfig, folder: str | Path, extra: dict | None = None) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (adapters and the head).

    Tensor keys: ``<layer name>.adapter.<i>`` for factor i (factor 0 stored (r, in) like PEFT's
    lora_A, the others (k_{i-1}, k_i)), ``classifier.kernel``/``classifier.bias``. The JSON
    holds the config's fields, ``adapted`` (the layer names), ``num_labels``, ``pooling`` (what the
    head reads) and ``extra``.

    Returns:
      ``folder``.

    Raises:
      ValueError: an adapter is merged.
    """
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, names = {}, []
    for name, layer in adapted_layers(model):
        if layer.adapter.merged:
            raise ValueError(f"{name} is merged; unmerge before saving adapters")
        names.append(name)
        for i, f in enumerate(layer.adapter.full_factors()):
            tensors[f"{name}.adapter.{i}"] = np.asarray(f)
    if isinstance(model, BertForSequenceClassification):
        tensors["classifier.kernel"] = np.asarray(model.classifier.kernel[...])
        tensors["classifier.bias"] = np.asarray(model.classifier.bias[...])
    save_file(tensors, str(folder / WEIGHTS_FILE))
    meta = asdict(config)
    meta["adapted"] = names
    meta["num_labels"] = getattr(model, "num_labels", None)
    meta["pooling"] = getattr(model, "pooling", None)  # what the saved head reads (bert.POOLINGS)
    meta.update(extra or {})
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load(model, folder: str | Path) -> tuple[AdapterConfig, tuple[str, ...]]:
    """Attach the adapters saved in ``folder`` to ``model`` and restore their values and the head.

    Returns:
      (the config, the adapted layer names).

    Raises:
      FileNotFoundError: a file is missing. ValueError: keys or shapes do not fit the model, or
      the head was trained on another pooling than the model's.
    """
    from safetensors.numpy import load_file

    folder = Path(folder)
    for f in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / f).exists():
            raise FileNotFoundError(f"{folder / f} not found: not an adapter folder")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    config = AdapterConfig.from_dict(meta)
    names = tuple(meta.get("adapted", ()))
    tensors = load_file(str(folder / WEIGHTS_FILE))
    layers = dict(_encoder(model).named_layers())
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ValueError(f"{folder}: adapted layer(s) {unknown} do not exist in this model")
    for name in names:
        layer = layers[name]
        count = len([k for k in tensors if k.startswith(f"{name}.adapter.")])
        factors = [tensors[f"{name}.adapter.{i}"] for i in range(count)]
        if factors[0].shape[1] != layer.in_features or factors[-1].shape[-1] != layer.out_features:
            raise ValueError(f"{folder}: adapter of {name} has shape {factors[0].shape}…{factors[-1].shape}, "
                             f"layer is {layer.in_features} → {layer.out_features}")
        outer = (True,) + (False,) * (count - 2) + (True,) if config.method == "deep-lora-compressed" else ()
        layer.adapter = FactorChain(factors, config.delta_scale, outer)
    if isinstance(model, BertForSequenceClassification):
        saved = meta.get("pooling") or "pooler"  # folders written before the field: BERT's pooler
        if saved != model.pooling:
            raise ValueError(f"{folder}: the head was trained on pooling={saved!r}, the model reads "
                             f"pooling={model.pooling!r}; build it with bert.with_head(..., pooling={saved!r})")
        if "classifier.kernel" not in tensors:
            raise ValueError(f"{folder}: no classifier head saved")
        if tensors["classifier.kernel"].shape != model.classifier.kernel[...].shape:
            raise ValueError(f"{folder}: classifier shape {tensors['classifier.kernel'].shape} does not fit "
                             f"{model.classifier.kernel[...].shape}")
        model.classifier.kernel[...] = jnp.asarray(tensors["classifier.kernel"])
        model.classifier.bias[...] = jnp.asarray(tensors["classifier.bias"])
    return config, names
