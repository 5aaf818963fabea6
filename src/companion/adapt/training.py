"""Fine-tuning BERT with adapters on GLUE: one training loop, vectorised over seeds.

The protocol of arXiv:2406.04112 (Deep LoRA experiments: few-shot STS-B, limited-data GLUE;
the authors' code cjyaras/deep-lora-transformers@618c410, train.py): AdamW (b1 0.9, b2 0.999,
eps 1e-6, no weight decay), learning rate 1e-4 held constant (their decay_ratio 1; a linear
decay to ``lr_end`` is an option), batch 16, sequences of at most 128 tokens (longer train and
validation examples dropped), dropout on in training, the new classifier head frozen at its
random init (one fixed head for every seed, ``bert.with_head``). STS-B is regression (MSE on
logit 0), the others cross-entropy. One seed fixes the few-shot subset, the adapter
initialisation, dropout and the order of batches, so runs of two methods with the same seed are
paired. The score is the last evaluation on the
validation split (MNLI: matched).

``fit(config, seeds)`` is the only loop. It reads the data, tokenises it and loads the
checkpoint once, then trains the seeds as one program per ``parallel`` of them: the model is
split into (trainable state, head, frozen encoder), the first two are stacked over seeds and the
encoder is shared, and the pure train step (``step_functions``) is ``jax.vmap``-ed over seeds and
``jax.jit``-compiled. Evaluation batches are padded to the bucket of their longest row
(``batching.trim``), not to max_seq_length, and so are training batches (``TRAIN_BUCKETS``; the
dropout masks are indexed by token position, so padding does not change them). Every result
carries its first and last training loss and a ``fitted`` verdict (``fit_verdict``): a run that
did not fit its training data is not a result. ``finetune`` is ``fit`` for one seed plus a run
directory (config.json, results.json, the adapter).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from companion.adapt import adapters, batching, bert, glue, lora, metrics
from companion.adapt.adapters import AdapterConfig
from companion.adapt.batching import Batch
from companion.adapt.lora import AdapterParam, OuterAdapterParam

FULL = "full"  # the method name of full fine-tuning (``FinetuneConfig.adapter=None``)
METHODS = (*adapters.METHODS, FULL)  # every value of FinetuneConfig.method


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning setting (written to config.json beside its results).

    The adapter's structure and initialisation are ``adapter`` (None: full fine-tuning, every
    weight trains, the head included). The optimizer's settings are here, compressed Deep
    LoRA's two step sizes (``inner_lr``, ``gamma``) among them: they say how the adapter is
    trained, not what it is, and the adapter file does not need them.
    """

    task: str  # GLUE task key: cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb
    adapter: AdapterConfig | None = AdapterConfig()  # method, rank, targets, … (None: full fine-tuning)
    samples: int | None = None  # few-shot size, drawn with replacement with the seed (None: full train split)
    steps: int = 500  # optimizer steps (paper: 500 few-shot STS-B, 1000 limited-data GLUE)
    seed: int = 0  # fixes subset, adapter init, dropout, batch order (fit's default seed); the head is fixed
    model: str = "minilm"  # backbone, always explicit: local folder, "minilm" (packaged, offline), hub name (online)
    pooling: str | None = None  # what the head reads, bert.POOLINGS; None: the backbone's (default_pooling)
    num_layers: int | None = None  # keep the first k encoder layers (smoke-profile toy size); None: all
    lr: float = 1e-4  # AdamW learning rate (paper: 1e-4)
    lr_end: float | None = None  # None: constant (paper); else linear decay to this value over the steps
    gamma: float = 0.01  # compressed Deep LoRA only: outer factors train with step γ·inner_lr (paper: 0.01)
    inner_lr: float | None = None  # compressed Deep LoRA only: step of the inner factors (None: lr)
    batch_size: int = 16  # paper: 16
    max_seq_length: int = 128  # paper: 128; longer train and validation examples are dropped
    eval_examples: int | None = None  # evaluate on the first N kept validation examples (None: all)
    data_dir: str | None = None  # GLUE folder (default: COMPANION_DATA_DIR)
    online: bool = False  # allow hub downloads of the model and data

    def __post_init__(self):
        if self.task not in glue.TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(glue.TASKS)}")
        if self.pooling is not None:
            bert.check_pooling(self.pooling)
        if isinstance(self.adapter, dict):  # from config.json
            object.__setattr__(self, "adapter", AdapterConfig.from_dict(self.adapter))
        if self.adapter is not None and not isinstance(self.adapter, AdapterConfig):
            raise ValueError(f"adapter must be an AdapterConfig or None (full fine-tuning), got {self.adapter!r}")
        for name in ("steps", "batch_size", "max_seq_length"):
            v = getattr(self, name)
            if not glue.is_positive_int(v):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("samples", "eval_examples", "num_layers"):
            v = getattr(self, name)
            if v is not None and not glue.is_positive_int(v):
                raise ValueError(f"{name} must be a positive integer or None, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be > 0, got {self.lr}")
        if self.lr_end is not None and not self.lr_end >= 0:
            raise ValueError(f"lr_end must be ≥ 0 or None, got {self.lr_end}")
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be ≥ 0, got {self.gamma}")
        if self.inner_lr is not None and not self.inner_lr > 0:
            raise ValueError(f"inner_lr must be > 0 or None, got {self.inner_lr}")

    @property
    def method(self) -> str:
        """The adapter's method, or "full" without one."""
        return FULL if self.adapter is None else self.adapter.method

    @property
    def head_pooling(self) -> str:
        """What the classifier head reads: ``pooling``, or the backbone's ``default_pooling``."""
        return self.pooling if self.pooling is not None else default_pooling(self.model)

    @classmethod
    def from_dict(cls, values: dict) -> "FinetuneConfig":
        """The config of a config.json (``asdict``), its adapter included."""
        return cls(**values)


@dataclass(frozen=True)
class RunResult:
    """One seed of one setting, as ``fit`` returns it (results.json is ``to_dict``)."""

    task: str  # GLUE task key
    method: str  # one of METHODS
    seed: int  # the seed value
    metric: str  # the task's main metric (CoLA matthews, STS-B pearson, others accuracy)
    value: float  # main metric after the last step
    initial_value: float  # main metric before training
    metrics: dict[str, float]  # every metric of the task after the last step
    steps: int  # optimizer steps
    train_loss: tuple[tuple[int, float], ...]  # (step, batch loss before that step's update), every log_every and the last
    first_loss: float  # mean batch loss of the first loss_window(steps) steps (``fit_verdict``)
    last_loss: float  # mean batch loss of the last loss_window(steps) steps
    constant_loss: float  # the training loss of the best constant prediction on the seed's training rows
    fitted: bool  # last_loss ≤ FIT_RATIO × min(first_loss, constant_loss): the run fitted its training data
    curve: tuple[tuple[int, float], ...]  # (steps done, main metric): 0, every eval_at, the last step
    n_train: int  # training examples (the few-shot draw, repeats counted)
    dropped_train: int  # train-split examples longer than max_seq_length
    n_validation: int  # validation examples scored
    dropped_validation: int  # validation examples longer than max_seq_length
    trainable_params: int  # scalars the optimizer updates (per seed)
    adapted_layers: int | None  # layers with an adapter (None: full fine-tuning)
    backbone: str  # backbone_note(model, num_layers, pooling)
    device: str  # JAX platform (cpu, gpu, tpu)
    numerical_ranks: dict[str, int] | None  # per adapted layer, when asked (adapters.numerical_ranks)
    wall_time_s: float  # shared preparation (data, checkpoint) plus the whole program of this seed's chunk
    build_time_s: float  # building the chunk's models and adapters (compression included)
    compile_time_s: float  # the chunk's first step (compilation included)
    step_time_s: float  # median time of one later step of the chunk (all its seeds at once); NaN for 1 step

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (pairs as lists); ``from_dict`` inverts it."""
        out = asdict(self)
        out["train_loss"] = [list(p) for p in self.train_loss]
        out["curve"] = [list(p) for p in self.curve]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunResult":
        """The result of a ``to_dict`` (e.g. read back from results.json)."""
        values = dict(values)
        values["train_loss"] = tuple((int(s), float(v)) for s, v in values["train_loss"])
        values["curve"] = tuple((int(s), float(v)) for s, v in values["curve"])
        return cls(**values)

    @property
    def learned(self) -> bool:
        """Fitted, and the validation metric ended above its untrained value: a result."""
        return bool(self.fitted and self.value > self.initial_value)


FIT_RATIO = 0.5  # fitted: the last losses at most half of both the first ones and the constant predictor's


def loss_window(steps: int) -> int:
    """Steps averaged at each end of a run for its first and last loss: max(1, steps // 20)
    (batch losses carry dropout and sampling noise; 25 steps of a 500-step run)."""
    return max(1, int(steps) // 20)


def constant_loss(task: glue.GlueTask, labels: np.ndarray) -> float:
    """The loss of the best constant prediction on ``labels`` (N,): their variance for
    regression (MSE of the mean), else the entropy of the label frequencies (cross-entropy of
    the class prior). A run that does not beat it by far has not fitted its training data."""
    labels = np.asarray(labels)
    if task.is_regression:
        return float(np.var(labels.astype(np.float64)))
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def fit_verdict(losses: Sequence[float], constant: float, ratio: float = FIT_RATIO) -> tuple[float, float, bool]:
    """(first, last, fitted) of a run's per-step batch losses.

    first and last are the means of the first and last ``loss_window`` steps; fitted is
    last ≤ ratio × min(first, constant): the training loss fell well below both where it
    started and what predicting a constant gets. A run that fails it is not compared with
    anything (chapters 5–7 count and exclude such runs).

    Raises:
      ValueError: no losses.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.size == 0:
        raise ValueError("a run without steps has no fit verdict")
    w = loss_window(losses.size)
    first, last = float(losses[:w].mean()), float(losses[-w:].mean())
    return first, last, bool(np.isfinite(last) and last <= ratio * min(first, constant))


# ---------------------------------------------------------------------------------------------
# Optimizer, loss and the pure step.


def _adamw(lr: float, lr_end: float | None, steps: int) -> optax.GradientTransformation:
    schedule = lr if lr_end is None else optax.linear_schedule(lr, lr_end, steps)
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0)


def optimizer(config: FinetuneConfig) -> optax.GradientTransformation:
    """AdamW with the paper's settings (authors' code cjyaras/deep-lora-transformers@618c410,
    train.py: b1 0.9, b2 0.999, eps 1e-6, no weight decay).

    Compressed Deep LoRA trains its inner factors with ``inner_lr`` and its outer factors
    (``OuterAdapterParam``) with the discrepant step γ·inner_lr (arXiv:2406.04112, compression
    from the first gradient); everything else uses ``lr``. A decay to ``lr_end`` scales with
    each group's rate. Equal settings give the same (cached) object, so runs of one structure
    share compiled steps.
    """
    compressed = config.method == "deep-lora-compressed"
    return _optimizer(compressed, config.lr, config.lr_end, config.steps if config.lr_end is not None else 0,
                      config.gamma if compressed else None,
                      (config.inner_lr if config.inner_lr is not None else config.lr) if compressed else None)


@functools.lru_cache(maxsize=64)
def _optimizer(compressed: bool, lr: float, lr_end: float | None, steps: int, gamma: float | None,
               inner: float | None) -> optax.GradientTransformation:
    def adamw(rate):  # a decay to lr_end scales with the group's rate
        return _adamw(rate, None if lr_end is None else lr_end * rate / lr, steps)

    if not compressed:
        return adamw(lr)
    outer = optax.set_to_zero() if gamma == 0 else adamw(gamma * inner)

    def labels(params):
        def label(v):
            if isinstance(v, OuterAdapterParam):
                return "outer"
            return "inner" if isinstance(v, AdapterParam) else "other"

        return jax.tree.map(label, params, is_leaf=lambda x: isinstance(x, nnx.Variable))

    return optax.multi_transform({"inner": adamw(inner), "outer": outer, "other": adamw(lr)}, labels)


def loss_function(task: glue.GlueTask) -> Callable:
    """The weighted mean loss ``loss(logits (B, labels), labels (B,), weight (B,)) → ()``: MSE on
    logit 0 for regression (STS-B), else cross-entropy; rows of weight 0 (padding) count 0."""

    def loss(logits, labels, weight):
        if task.is_regression:
            per = (logits[:, 0] - labels) ** 2
        else:
            per = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
        return jnp.sum(per * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    return loss


def step_functions(graphdef, task: glue.GlueTask, tx: optax.GradientTransformation):
    """The pure train step and forward of one model structure.

    ``nnx.merge(graphdef, params, *rest)`` rebuilds the model, so the functions serve a whole
    model (``rest = (frozen,)``) and seeds vectorised with ``jax.vmap`` (``rest = (heads,
    shared encoder)``).

    Returns:
      train_step(params, opt_state, rest, batch, key) → (params, opt_state, loss) — the loss of
      the batch before the update — and predict(params, rest, batch) → logits (B, labels).
    """
    loss = loss_function(task)

    def objective(params, rest, batch, key):
        m = nnx.merge(graphdef, params, *rest)
        logits = m(batch.input_ids, batch.attention_mask, batch.token_type_ids, dropout_key=key)
        return loss(logits, batch.labels, batch.weight)

    def train_step(params, opt_state, rest, batch, key):
        value, grads = jax.value_and_grad(objective)(params, rest, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    def predict(params, rest, batch):
        m = nnx.merge(graphdef, params, *rest)
        return m(batch.input_ids, batch.attention_mask, batch.token_type_ids)

    return train_step, predict


def _compiled(graphdef, task: glue.GlueTask, tx: optax.GradientTransformation):
    """Jitted vectorised (train_step, predict), cached by model structure, loss and optimizer:
    runs that differ only in seeds, sample size, data or task (the four two-class tasks of
    chapter 7 share one set) reuse the compiled programs. Seeds are stacked on axis 0 of params,
    optimizer state, heads, batches and keys; the encoder is shared."""
    # The steps read the task only through its loss (loss_function), and the head's width is in
    # the arrays' shapes, which jit keys on anyway.
    loss_kind = glue.TASKS["stsb"] if task.is_regression else glue.TASKS["sst2"]
    return _compiled_for(graphdef, loss_kind, tx)


@functools.lru_cache(maxsize=32)
def _compiled_for(graphdef, task: glue.GlueTask, tx: optax.GradientTransformation):
    train_step, predict = step_functions(graphdef, task, tx)
    return (jax.jit(jax.vmap(train_step, in_axes=(0, 0, (0, None), 0, 0)), donate_argnums=(0, 1)),
            jax.jit(jax.vmap(predict, in_axes=(0, (0, None), None))))


EVAL_BATCH_SIZE = 128  # evaluation rows per batch (no gradients are kept, so larger than training's)
# Training batches are padded to the bucket of their longest row (``batching.bucket_lengths`` of
# max_seq_length), so a step costs what its tokens cost (measured: 0.42× the 128-token step on
# few-shot STS-B, ``companion bench padding``). Dropout masks are indexed by token position
# (``bert.dropout``), so a seed's draws do not depend on the padded length, on the bucket edges,
# or on the seeds sharing its program. False pads every batch to max_seq_length (the authors').
TRAIN_BUCKETS = True
# Adapted embedding tables train only the rows the run's training batches can look up
# (``trained_columns``; ``lora.FactorChain.restrict``): the same numbers, since every other row's
# gradient and AdamW update are exactly 0, at a cost that follows the tokens, not the vocabulary
# (``companion bench embedding``). False trains the whole (k, vocab) factor, as the authors' code.
RESTRICT_EMBEDDINGS = True
DROPOUT_TAG = 1_000_007  # training dropout keys: fold_in(fold_in(key(seed), DROPOUT_TAG), step)


def dropout_keys(seed: int) -> jax.Array:
    """The base key of a seed's training dropout, ``fold_in(key(seed), 1_000_007)``; step t uses
    ``fold_in(base, t)``. Apart from every other draw of the seed: layer i's adapter factors
    take ``fold_in(key(seed), i)`` (i < 1,000,000) and the compression gradient
    ``compression_dropout_key``."""
    return jax.random.fold_in(jax.random.key(seed), DROPOUT_TAG)


def trained_columns(config: FinetuneConfig, rows: Sequence[Batch]) -> dict[str, np.ndarray]:
    """The rows of each embedding table that training on ``rows`` (one Batch per seed, tokenised
    to ``config.max_seq_length``) can look up: the token ids they hold (padding included), the
    positions below max_seq_length and the token types they hold — sorted, shared by the seeds of
    a program (a row only one seed looks up still has zero gradient for the others)."""
    ids = [np.asarray(r.input_ids) for r in rows]
    types = [np.asarray(r.token_type_ids) for r in rows]
    return {"embeddings.word_embeddings": np.unique(np.concatenate([x.ravel() for x in ids])),
            "embeddings.position_embeddings": np.arange(max(x.shape[1] for x in ids)),
            "embeddings.token_type_embeddings": np.unique(np.concatenate([x.ravel() for x in types]))}


def _device(batch: Batch) -> Batch:
    return Batch(*(jnp.asarray(x) for x in batch))


def _to_predictions(logits: np.ndarray, weight: np.ndarray, task: glue.GlueTask) -> np.ndarray:
    """(B, labels) logits → predictions of the real rows (weight > 0): the score for regression,
    else the class index."""
    keep = np.asarray(weight) > 0
    return logits[keep, 0] if task.is_regression else logits[keep].argmax(-1)


# ---------------------------------------------------------------------------------------------
# Data and models.


@dataclass(frozen=True, eq=False)
class _Data:
    """A setting's data, tokenised once for all its seeds."""

    task: glue.GlueTask
    train: Batch  # every kept train example (the seeds draw their few-shot rows from it)
    validation: Batch  # the scored validation examples
    dropped_train: int
    dropped_validation: int


def _prepare(config: FinetuneConfig) -> _Data:
    """Read both splits, drop examples over max_seq_length tokens, keep eval_examples, tokenise."""
    task = glue.TASKS[config.task]
    tokenizer = bert.load_tokenizer(config.model, config.online)
    train = glue.load_split(config.task, "train", config.data_dir, online=config.online)
    val = glue.load_split(config.task, "validation", config.data_dir, online=config.online)
    # Paper: train and validation examples longer than 128 tokens are dropped.
    train_arrays, dropped_train = batching.tokenize(train, tokenizer, config.max_seq_length)
    val_arrays, dropped_val = batching.tokenize(val, tokenizer, config.max_seq_length)
    if config.eval_examples is not None:
        val_arrays = Batch(*(a[: config.eval_examples] for a in val_arrays))
    return _Data(task, train_arrays, val_arrays, dropped_train, dropped_val)


def _train_rows(config: FinetuneConfig, data: _Data, seed: int) -> Batch:
    """The seed's training set: a few-shot draw with replacement (paper), or the whole split."""
    if config.samples is None:
        return data.train
    return batching.take(data.train, batching.few_shot_indices(len(data.train.labels), config.samples, seed))


COMPRESSION_DROPOUT_TAG = 1_000_003  # compression_dropout_key folds this into key(seed); no layer index reaches it


def compression_dropout_key(seed: int) -> jax.Array:
    """The dropout key of compressed Deep LoRA's first gradient: ``fold_in(key(seed), 1_000_003)``.

    Derived from the run's seed only, and apart from the keys the seed's other draws use (layer i's
    adapter factors take ``fold_in(key(seed), i)``, training dropout ``dropout_keys(seed)``
    then the step). The authors (618c410, finetune.py) split theirs from ``PRNGKey(seed)`` the
    same way, as the key that then starts the training dropout stream.
    """
    return jax.random.fold_in(jax.random.key(seed), COMPRESSION_DROPOUT_TAG)


def build_model(config: FinetuneConfig, encoder: bert.BertModel, seed: int, first_batch: Batch | None = None,
                dropout_key: jax.Array | None = None):
    """The model of one seed: ``encoder`` (shared) + the fixed new head + adapters drawn from ``seed``.

    The head is ``bert.with_head``'s, drawn from its one fixed key and not from ``seed``: every
    seed starts from the same head (the authors' code, cjyaras/deep-lora-transformers@618c410,
    finetune.py: the pretrained model and its new head are made once, before the loop over seeds).

    Compressed Deep LoRA takes its outer factors from one gradient on ``first_batch`` (the run's
    first training batch; arXiv:2406.04112, compression from the first gradient), computed at the
    pretrained weights with dropout ON, drawn from ``dropout_key`` (default
    ``compression_dropout_key(seed)``). Replication choice: at 618c410 (train.py,
    ``create_compressed_lora_train_state`` calls the training loss with ``train=True`` and the
    run's dropout key) the compression gradient has dropout on; the repository's later HEAD
    (dlt/train.py) takes it with dropout off — we follow the paper-time commit. The adapters are
    attached to a clone of the encoder's graph (its weights are shared, not copied), so
    ``encoder`` itself stays bare.

    Returns:
      (model, the NNX filter of what trains, the adapted layer names or None for full fine-tuning).
    """
    task = glue.TASKS[config.task]
    model = bert.with_head(nnx.clone(encoder), task.num_labels, pooling=config.head_pooling)
    if config.adapter is None:
        return model, nnx.Param, None
    a = config.adapter
    gradients = None
    if a.method == "deep-lora-compressed":
        if first_batch is None:
            raise ValueError("compressed Deep LoRA needs a training batch for its first gradient")
        names = adapters.select_targets(model, a.targets, a.min_side)
        loss = loss_function(task)
        b = _device(first_batch)
        key = compression_dropout_key(seed) if dropout_key is None else dropout_key
        gradients = adapters.first_gradients(
            model, names,
            lambda m: loss(m(b.input_ids, b.attention_mask, b.token_type_ids, dropout_key=key), b.labels, b.weight))
    names = adapters.apply_adapters(model, a, jax.random.key(seed), gradients)
    return model, adapters.trainable_filter(a.train_head), names


def choose_backbone(model: str, online: bool = False) -> str:
    """The backbone of a chapter's runs: ``model`` itself, checked to be loadable now.

    There is no automatic choice: the backbone is always named by the caller (and by every
    output, ``backbone_note``), never swapped silently.

    Raises:
      ValueError: an empty name, or "auto" (no longer accepted).
      FileNotFoundError: the checkpoint cannot be loaded (offline without a local copy); the
        message says how to get it or which packaged backbone to name instead.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"name a backbone (e.g. model='bert-base-cased' or model='minilm'), got {model!r}")
    if model == "auto":
        raise ValueError("model='auto' is no longer accepted: name the backbone, e.g. model='bert-base-cased' "
                         "(the paper's; online or a local copy) or model='minilm' (the packaged all-MiniLM-L6-v2)")
    try:
        bert.resolve(model, online)
    except FileNotFoundError as e:
        if model.lower() in bert.PACKAGED_MINILM:
            raise
        raise FileNotFoundError(
            f"{model} is not available {'online' if online else 'offline'} ({e}); go online (online=True or "
            "COMPANION_ONLINE=1) or pass a local checkpoint folder, or pass model='minilm' to use the packaged "
            "all-MiniLM-L6-v2 (a sentence-embedding model, not the paper's bert-base-cased backbone)") from None
    return model


def default_pooling(model_name: str) -> str:
    """What the new head reads on a backbone when the config names nothing (``bert.POOLINGS``).

    "pooler", tanh(pooler(h_CLS)), for every BERT checkpoint: the paper's protocol
    (transformers' ``FlaxBertForSequenceClassification``, the authors' models.py at 618c410).
    "mean", the mean of the last hidden states, for the packaged all-MiniLM-L6-v2 only: a
    sentence-embedding model trained with mean pooling, whose pooler was never trained (weight
    std ≈ 0.009, spectral norm ≈ 0.35), so through it the frozen head can hardly reach STS-B's
    0–5 labels with attention+MLP adapters. The departure was chosen by measurement against
    adapting the pooler and training the head, on the same seeds (the book's reproducibility page).
    """
    return "mean" if model_name.lower() in bert.PACKAGED_MINILM else "pooler"


def backbone_note(model_name: str, num_layers: int | None = None, pooling: str | None = None) -> str:
    """How results name their backbone (arXiv:2406.04112 fine-tunes bert-base-cased) and, when it
    is not the paper's pooler, what the head reads."""
    pooling = default_pooling(model_name) if pooling is None else pooling
    head = "" if pooling == "pooler" else "; the head reads the mean of the last hidden states, not the pooler"
    cut = "" if num_layers is None else f"; only its first {num_layers} encoder layer(s) kept"
    if model_name.lower() in bert.PACKAGED_MINILM:
        return ("all-MiniLM-L6-v2 (packaged offline; a sentence-embedding model, 6 layers, hidden 384, "
                f"uncased — not the paper's bert-base-cased{cut}{head})")
    extra = (cut + head)[2:]
    return model_name + (f" ({extra})" if extra else "")


def check_run_dir(run_dir: str | Path | None) -> Path | None:
    """Refuse to reuse a run directory that already holds files (never silently overwrite)."""
    if run_dir is None:
        return None
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} already exists and is not empty; choose a new one")
    return run_dir


# ---------------------------------------------------------------------------------------------
# The loop.


def _check_steps(name: str, steps: Sequence[int], low: int, high: int) -> None:
    bad = [t for t in steps if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not low <= t <= high]
    if bad:
        raise ValueError(f"{name} steps must be integers in {low}…{high} (the run's steps), got {bad}")


def fit(config: FinetuneConfig, seeds: Sequence[int] | None = None, *, log_every: int = 10,
        eval_at: Sequence[int] = (), observe_at: Sequence[int] = (),
        observe: Callable[[int, int, Any], None] | None = None, numerical_ranks: bool = False,
        parallel: int | None = None, progress: bool = False,
        eval_batch_size: int = EVAL_BATCH_SIZE,
        on_chunk: Callable[[list[RunResult]], None] | None = None) -> list[RunResult]:
    """Fine-tune one setting for several seeds, vectorised over seeds (``jax.vmap``).

    Each seed keeps everything a run of its own would draw from it — its few-shot subset,
    adapters, dropout keys and batch order; the head is the authors' one, shared by every seed —
    while data, tokenisation and the pretrained encoder are prepared once and the frozen encoder
    is shared by the seeds, not copied. At most ``parallel`` seeds run in one program; a seed's
    numbers do not depend on which others share its program (up to float rounding of the
    vectorised kernels).

    Evaluation visits the validation examples sorted by length in batches of
    ``eval_batch_size``, each padded to the bucket of its longest row (``batching.eval_batches``;
    no dropout, so the scores equal fixed-length ones up to rounding). Training batches are
    padded the same way (``TRAIN_BUCKETS``); dropout masks are indexed by position, so a seed's
    run does not depend on the padding either, up to rounding.

    Args:
      config: the setting (its ``seed`` is the default of ``seeds``).
      seeds: distinct non-negative seeds, S of them; None: ``[config.seed]``.
      log_every: record the training loss every k steps (and at the last step).
      eval_at: after these step counts (1…steps), evaluate on the validation examples too (the
        curves of arXiv:2406.04112's compressed-vs-wide comparison). Step 0 (before training)
        and the last step are always evaluated.
      observe_at: after these step counts (0 = before training), call ``observe(step, seed,
        model)`` with each seed's model (a fresh NNX object; Figure 1's snapshots).
      observe: the callback of ``observe_at``.
      numerical_ranks: report each seed's numerical rank per adapted layer at the end.
      parallel: most seeds per vectorised program (None: all at once); bounds device memory.
      progress: show a tqdm bar per program.
      eval_batch_size: validation rows per forward pass (predictions do not depend on it beyond
        float rounding).
      on_chunk: called with the results of each vectorised program as soon as it ends (a study
        stores them there, so an interrupted study loses at most the program that was cut; with
        ``parallel=1``, one seed).

    Returns:
      One ``RunResult`` per seed, in the order of ``seeds``.

    Raises:
      ValueError: bad seeds or step lists; FileNotFoundError: no data or checkpoint.
    """
    seeds = [config.seed] if seeds is None else list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct seeds, got {seeds}")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0]
    if bad:
        raise ValueError(f"seeds must be non-negative integers, got {bad}")
    if not glue.is_positive_int(log_every):
        raise ValueError(f"log_every must be a positive integer, got {log_every!r}")
    if parallel is not None and not glue.is_positive_int(parallel):
        raise ValueError(f"parallel must be a positive integer or None, got {parallel!r}")
    if not glue.is_positive_int(eval_batch_size):
        raise ValueError(f"eval_batch_size must be a positive integer, got {eval_batch_size!r}")
    _check_steps("eval_at", eval_at, 1, config.steps)
    _check_steps("observe_at", observe_at, 0, config.steps)
    if observe_at and observe is None:
        raise ValueError("observe_at needs an observe(step, seed, model) function")
    start = time.perf_counter()
    data = _prepare(config)
    encoder = bert.pretrained_encoder(config.model, online=config.online, num_layers=config.num_layers)
    buckets = batching.bucket_lengths(config.max_seq_length)
    train_buckets = buckets if TRAIN_BUCKETS else (config.max_seq_length,)
    # Sorted by length, trimmed and on the device once, for every evaluation of every chunk.
    validation = batching.eval_batches(data.validation, min(int(eval_batch_size), len(data.validation.labels)),
                                       buckets)
    validation = validation._replace(batches=[_device(b) for b in validation.batches])
    prepare_time = time.perf_counter() - start
    chunk = len(seeds) if parallel is None else int(parallel)
    results: list[RunResult] = []
    for i in range(0, len(seeds), chunk):
        done = _fit_chunk(config, data, encoder, [int(s) for s in seeds[i:i + chunk]], log_every=log_every,
                          eval_at=set(int(t) for t in eval_at), observe_at=set(int(t) for t in observe_at),
                          observe=observe, numerical_ranks=numerical_ranks, progress=progress,
                          prepare_time=prepare_time, buckets=train_buckets, validation=validation)
        if on_chunk is not None:
            on_chunk(done)
        results += done
    return results


def _fit_chunk(config: FinetuneConfig, data: _Data, encoder, seeds: list[int], *, log_every: int,
               eval_at: set[int], observe_at: set[int], observe, numerical_ranks: bool, progress: bool,
               prepare_time: float, buckets: tuple[int, ...], validation: batching.EvalBatches) -> list[RunResult]:
    """One vectorised program: the seeds of ``seeds`` trained side by side."""
    start = time.perf_counter()
    task = data.task
    params, heads, streams, n_train, constant = [], [], [], [], []
    graphdef = shared = names = None
    all_rows = [_train_rows(config, data, seed) for seed in seeds]
    columns = trained_columns(config, all_rows) if RESTRICT_EMBEDDINGS else {}
    adapter_params = None
    for seed, rows in zip(seeds, all_rows):
        stream = batching.train_stream(rows, config.batch_size, seed)
        first = next(stream)
        model, trainable, names = build_model(config, encoder, seed, batching.trim(first, buckets))
        if adapter_params is None:  # what the adapters hold, restricted or not
            adapter_params = adapters.count_parameters(model, trainable)
        if names is not None:
            adapters.restrict_embeddings(model, {n: c for n, c in columns.items() if n in names})
        # Per seed: trained parameters; heads and the frozen columns of restricted factors. Shared: the encoder.
        graphdef, p, h, rest = nnx.split(model, trainable, nnx.Any(bert.HeadParam, lora.FrozenColumns), ...)
        shared = rest if shared is None else shared  # the frozen encoder is the same for every seed
        params.append(p)
        heads.append(h)
        streams.append(_prepend(first, stream))
        n_train.append(len(rows.labels))
        constant.append(constant_loss(task, rows.labels))
    build_time = time.perf_counter() - start
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
    params, heads = stack(params), stack(heads)
    tx = optimizer(config)
    opt_state = jax.vmap(tx.init)(params)
    vstep, vpredict = _compiled(graphdef, task, tx)
    trainable_params = adapter_params
    labels = np.asarray(data.validation.labels)

    def evaluate(p) -> list[dict[str, float]]:
        outs = []
        for batch in validation.batches:
            logits = np.asarray(vpredict(p, (heads, shared), batch))  # (seeds, B, labels)
            outs.append(np.stack([_to_predictions(x, batch.weight, task) for x in logits]))
        preds = validation.restore(np.concatenate(outs, axis=1), axis=1)  # back to the split's order
        return [metrics.compute(task.metrics, pr, labels) for pr in preds]

    def model_of(p, i):
        pick = lambda tree: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
        model = nnx.merge(graphdef, pick(p), pick(heads), shared)
        adapters.unrestrict(model)  # whole factors for observers, ranks and saving
        return model

    def watch(step, p):
        if step in observe_at:
            for i, seed in enumerate(seeds):
                observe(step, seed, model_of(p, i))

    initial = evaluate(params)
    curves = [[(0, m[task.main_metric])] for m in initial]
    watch(0, params)
    keys = jnp.stack([dropout_keys(s) for s in seeds])
    losses, every, times, compile_time = [[] for _ in seeds], [], [], float("nan")
    evals = eval_at - {config.steps}
    bar = _progress(config.steps, progress, len(seeds))
    for t in range(config.steps):
        # One padded length for all seeds of the step (with buckets: the longest row among them).
        batch = _device(batching.trim(Batch(*(np.stack(x) for x in zip(*(next(s) for s in streams)))), buckets))
        t0 = time.perf_counter()
        params, opt_state, values = vstep(params, opt_state, (heads, shared), batch,
                                          jax.vmap(lambda k: jax.random.fold_in(k, t))(keys))
        values = np.asarray(values)  # synchronises
        every.append(values)
        if t == 0:
            compile_time = time.perf_counter() - t0  # includes compilation
        else:
            times.append(time.perf_counter() - t0)
        logged = t % log_every == 0 or t == config.steps - 1
        if logged:
            for i, v in enumerate(values):
                losses[i].append((t, float(v)))
        if t + 1 in evals:
            for i, m in enumerate(evaluate(params)):
                curves[i].append((t + 1, m[task.main_metric]))
        watch(t + 1, params)
        bar(float(values.mean()) if logged else None)
    final = evaluate(params)
    ranks = [adapters.numerical_ranks(model_of(params, i)) if numerical_ranks and names is not None else None
             for i in range(len(seeds))]
    wall = prepare_time + time.perf_counter() - start
    step_time = float(np.median(times)) if times else float("nan")
    device = jax.devices()[0].platform
    every = np.stack(every, axis=1)  # (seeds, steps)
    verdicts = [fit_verdict(every[i], constant[i]) for i in range(len(seeds))]
    return [RunResult(
        task=config.task, method=config.method, seed=seed, metric=task.main_metric,
        value=final[i][task.main_metric], initial_value=initial[i][task.main_metric], metrics=final[i],
        steps=config.steps, train_loss=tuple(losses[i]),
        first_loss=verdicts[i][0], last_loss=verdicts[i][1], constant_loss=constant[i], fitted=verdicts[i][2],
        curve=tuple(curves[i] + [(config.steps, final[i][task.main_metric])]),
        n_train=n_train[i], dropped_train=data.dropped_train, n_validation=len(labels),
        dropped_validation=data.dropped_validation, trainable_params=trainable_params,
        adapted_layers=None if names is None else len(names),
        backbone=backbone_note(config.model, config.num_layers, config.head_pooling), device=device,
        numerical_ranks=ranks[i],
        wall_time_s=wall, build_time_s=build_time, compile_time_s=compile_time, step_time_s=step_time,
    ) for i, seed in enumerate(seeds)]


def _prepend(first, rest):
    yield first
    yield from rest


def _progress(total: int, enabled: bool, seeds: int):
    """A tqdm bar on stderr when enabled; otherwise nothing. Call it once per step."""
    if not enabled:
        return lambda loss: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"fine-tuning ({seeds} seed{'s' if seeds > 1 else ''})", unit="step", leave=False)

    def update(loss):
        bar.update(1)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4f}")
        if bar.n >= total:
            bar.close()

    return update


def finetune(config: FinetuneConfig, run_dir: str | Path | None = None, progress: bool = False,
             log_every: int = 10) -> RunResult:
    """``fit`` for ``config.seed``, with the numerical ranks of its adapters, optionally saved.

    Args:
      config: the setting.
      run_dir: a new (or empty) folder for config.json, results.json and, with adapters,
        ``adapter/`` (``adapters.save``: adapter_config.json, adapter_model.safetensors with
        the head); None saves nothing.
      progress: show a tqdm bar.
      log_every: record the training loss every k steps (and at the last).

    Returns:
      The run's ``RunResult``.

    Raises:
      FileExistsError: ``run_dir`` holds files already.
    """
    run_dir = check_run_dir(run_dir)
    trained = {}
    save = run_dir is not None and config.adapter is not None
    (result,) = fit(config, log_every=log_every, numerical_ranks=config.adapter is not None, progress=progress,
                    observe_at=(config.steps,) if save else (),
                    observe=lambda step, seed, model: trained.update(model=model))
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
        (run_dir / "results.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        if save:
            adapters.save(trained["model"], config.adapter, run_dir / "adapter", extra={"base_model": config.model})
    return result


__all__ = ["FIT_RATIO", "FULL", "METHODS", "FinetuneConfig", "RunResult", "backbone_note", "build_model",
           "check_run_dir", "choose_backbone", "constant_loss", "dropout_keys", "finetune", "fit", "fit_verdict",
           "loss_function", "loss_window", "optimizer", "step_functions"]
