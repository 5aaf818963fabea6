"""Fine-tuning BERT with adapters on GLUE, the paper's protocol (PAPER.md §4).

AdamW (b1 0.9, b2 0.999, eps 1e-6, no weight decay), learning rate 1e-4 held constant (the
paper's decay_ratio 1; a linear decay to ``lr_end`` is an option), batch 16, sequences padded to
128 tokens, dropout on in training. STS-B is regression (MSE on logit 0), the others
cross-entropy. One seed fixes the few-shot subset, the head and adapter initialisation, dropout
and the order of batches, so runs of two methods with the same seed are paired. The score is
the last evaluation on the full validation split (MNLI: matched).

The train step is a pure function of (trainable state, optimizer state, frozen state, batch,
key): the NNX model is split once (``nnx.split`` with the trainable filter) and the step is
``jax.jit``-compiled for the fixed batch shape, so no Python graph traversal happens per step.
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

from companion.adapt import bert, glue as data, lora, metrics

METHODS = ("lora", "deep-lora", "deep-lora-narrow", "deep-lora-compressed", "full")


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run (written to config.json beside its results)."""

    task: str  # GLUE task key: cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb
    method: str = "lora"  # an adapter kind of companion.adapt.lora.KINDS, or "full" (every weight; reference)
    samples: int | None = None  # few-shot size, drawn with replacement (None: full train split)
    steps: int = 500  # optimizer steps
    seed: int = 0  # fixes subset, head and adapter init, dropout, batch order
    rank: int = 8  # adapter rank r
    targets: str = "all-dense"  # query-value, attention-mlp, all-dense, or a regex
    model: str = "minilm"  # checkpoint: local folder, "minilm" (packaged, offline), hub name (online)
    num_layers: int | None = None  # keep the first k encoder layers (smoke-profile toy size); None: all
    lr: float = 1e-4  # AdamW learning rate (paper: 1e-4)
    lr_end: float | None = None  # None: constant (paper); else linear decay to this value
    batch_size: int = 16  # paper: 16
    max_seq_length: int = 128  # paper: 128; longer train and validation examples are dropped
    alpha: float | None = None  # PEFT-style scaling α/r (None: the paper's unscaled LoRA)
    depth: int = 3  # Deep LoRA factors (paper: 3)
    scale_init: float = 1e-3  # Deep LoRA ε (paper: 1e-3)
    gamma: float = 0.01  # compressed Deep LoRA: outer factors train with step γ·inner_lr (paper: 0.01)
    inner_lr: float | None = None  # compressed Deep LoRA: step of the inner factors (default: lr)
    train_head: bool = False  # paper: the new head stays frozen at its random init
    eval_examples: int | None = None  # evaluate on the first N validation examples (None: all)
    data_dir: str | None = None  # GLUE folder (default: COMPANION_DATA_DIR)
    online: bool = False  # allow hub downloads of the model and data

    def __post_init__(self):
        if self.task not in data.TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(data.TASKS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        for name in ("steps", "batch_size", "max_seq_length", "rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.samples is not None and (not isinstance(self.samples, int) or self.samples < 1):
            raise ValueError(f"samples must be a positive integer, got {self.samples!r}")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be > 0, got {self.lr}")


def _adamw(lr: float, lr_end: float | None, steps: int) -> optax.GradientTransformation:
    schedule = lr if lr_end is None else optax.linear_schedule(lr, lr_end, steps)
    return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0)


def optimizer(cfg: FinetuneConfig) -> optax.GradientTransformation:
    """AdamW with the paper's settings (PAPER.md §4).

    Compressed Deep LoRA trains its inner factors with ``inner_lr`` and its outer factors with
    the discrepant step γ·inner_lr (PAPER.md §2, §4); everything else uses ``lr``. Equal
    settings give the same (cached) object, so runs of one structure share compiled steps.
    """
    compressed = cfg.method == "deep-lora-compressed"
    return _optimizer(compressed, cfg.lr, cfg.lr_end, cfg.steps if cfg.lr_end is not None else 0,
                      cfg.gamma if compressed else None,
                      (cfg.inner_lr if cfg.inner_lr is not None else cfg.lr) if compressed else None)


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
            if isinstance(v, lora.OuterAdapter):
                return "outer"
            return "inner" if isinstance(v, lora.Adapter) else "other"

        return jax.tree.map(label, params, is_leaf=lambda x: isinstance(x, nnx.Variable))

    return optax.multi_transform({"inner": adamw(inner), "outer": outer, "other": adamw(lr)}, labels)


def loss_function(task: data.GlueTask) -> Callable:
    """Weighted mean loss: MSE on logit 0 for regression (STS-B), else cross-entropy."""

    def loss(logits, labels, weight):
        if task.is_regression:
            per = (logits[:, 0] - labels) ** 2
        else:
            per = optax.softmax_cross_entropy_with_integer_labels(logits, labels.astype(jnp.int32))
        return jnp.sum(per * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    return loss


def step_functions(graphdef, task: data.GlueTask, tx: optax.GradientTransformation):
    """The pure train step and forward of one model structure, shared by every training loop.

    ``nnx.merge(graphdef, params, *rest)`` rebuilds the model, so the same functions serve a
    single run (``rest = (frozen,)``) and seeds vectorised with ``jax.vmap``
    (``rest = (heads, shared encoder)``).

    Returns:
      train_step(params, opt_state, rest, batch, key) → (params, opt_state, loss) and
      predict(params, rest, batch) → logits (B, labels).
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


@functools.lru_cache(maxsize=32)
def _compiled(graphdef, task: data.GlueTask, tx: optax.GradientTransformation, vectorised: bool):
    """Jitted (train_step, predict), cached by model structure, task and optimizer: runs that
    differ only in seed, sample size or data reuse the compiled programs."""
    train_step, predict = step_functions(graphdef, task, tx)
    if vectorised:  # seeds stacked on axis 0; rest = (heads (stacked), shared encoder)
        return (jax.jit(jax.vmap(train_step, in_axes=(0, 0, (0, None), 0, 0)), donate_argnums=(0, 1)),
                jax.jit(jax.vmap(predict, in_axes=(0, (0, None), None))))
    return jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(predict)


class Trainer:
    """Holds the split model, the optimizer state and the jitted steps for one run.

    Args:
      model: BertForSequenceClassification with adapters attached (or none, for "full").
      task: the GLUE task.
      tx: the optimizer.
      trainable: the NNX filter of the parameters to train.
    """

    def __init__(self, model, task: data.GlueTask, tx: optax.GradientTransformation, trainable):
        self.task = task
        self.graphdef, self.params, self.frozen = nnx.split(model, trainable, ...)
        self.opt_state = tx.init(self.params)
        self._train_step, self._predict = _compiled(self.graphdef, task, tx, False)

    def step(self, batch: data.Batch, key: jax.Array) -> float:
        """One optimizer step; returns the batch loss (before the update)."""
        self.params, self.opt_state, value = self._train_step(
            self.params, self.opt_state, (self.frozen,), _device(batch), key)
        return value

    def predictions(self, arrays: data.Batch, batch_size: int) -> np.ndarray:
        """Predicted labels (class index, or the score for regression) for every example."""
        out = []
        for batch in data.batches(arrays, batch_size, shuffle=False, seed=None, drop_remainder=False):
            logits = np.asarray(self._predict(self.params, (self.frozen,), _device(batch)))
            out.append(_to_predictions(logits, batch.weight, self.task))
        return np.concatenate(out)

    def model(self):
        """The trained model (a fresh NNX object from the current state)."""
        return nnx.merge(self.graphdef, self.params, self.frozen)


def _to_predictions(logits: np.ndarray, weight: np.ndarray, task: data.GlueTask) -> np.ndarray:
    """(B, labels) logits → predictions of the real rows (weight > 0): the score for regression,
    else the class index."""
    keep = np.asarray(weight) > 0
    return logits[keep, 0] if task.is_regression else logits[keep].argmax(-1)


def _device(batch: data.Batch) -> data.Batch:
    return data.Batch(*(jnp.asarray(x) for x in batch))


def evaluate(trainer: Trainer, arrays: data.Batch, labels: np.ndarray, batch_size: int) -> dict[str, float]:
    """All of the task's metrics on the given examples."""
    preds = trainer.predictions(arrays, batch_size)
    return metrics.compute(trainer.task.metrics, preds, labels)


def prepare(cfg: FinetuneConfig, tokenizer) -> dict[str, Any]:
    """Load, filter (≤ max_seq_length tokens) and sample the data; returns arrays and counts."""
    task = data.TASKS[cfg.task]
    train = data.load_split(cfg.task, "train", cfg.data_dir, online=cfg.online)
    val = data.load_split(cfg.task, "validation", cfg.data_dir, online=cfg.online)
    # Paper: train and validation examples longer than 128 tokens are dropped.
    train, dropped_train = data.drop_long(train, tokenizer, cfg.max_seq_length)
    val, dropped_val = data.drop_long(val, tokenizer, cfg.max_seq_length)
    if cfg.samples is not None:
        train = data.few_shot(train, cfg.samples, cfg.seed)  # paper: with replacement, run's seed
    if cfg.eval_examples is not None:
        val = data.Examples(text_a=val.text_a[: cfg.eval_examples],
                            text_b=None if val.text_b is None else val.text_b[: cfg.eval_examples],
                            labels=val.labels[: cfg.eval_examples], task=val.task)
    return {
        "task": task,
        "train": data.to_arrays(train, tokenizer, cfg.max_seq_length),
        "validation": data.to_arrays(val, tokenizer, cfg.max_seq_length),
        "validation_labels": np.asarray(val.labels),
        "n_train": len(train.labels), "dropped_train": dropped_train,
        "n_validation": len(val.labels), "dropped_validation": dropped_val,
    }


def build_model(cfg: FinetuneConfig, task: data.GlueTask, first_batch: data.Batch | None = None):
    """Pretrained backbone + new head (seeded) + adapters (seeded); returns (model, filter, adapter config).

    Compressed Deep LoRA takes its outer factors from one gradient on ``first_batch`` (the run's
    first training batch), computed at the pretrained weights without dropout: the wide adapter
    adds only O(ε^L) there, and one dropout draw should not pick the directions.
    """
    num_labels = 1 if task.is_regression else len(task.label_names)
    model = bert.from_pretrained(cfg.model, num_labels, seed=cfg.seed, online=cfg.online,
                                 num_layers=cfg.num_layers)
    if cfg.method == "full":
        return model, nnx.Param, None
    adapter = lora.AdapterConfig(kind=cfg.method, rank=cfg.rank, depth=cfg.depth, scale_init=cfg.scale_init,
                                 targets=cfg.targets, alpha=cfg.alpha, train_head=cfg.train_head, seed=cfg.seed)
    gradients = None
    if cfg.method == "deep-lora-compressed":
        if first_batch is None:
            raise ValueError("compressed Deep LoRA needs a training batch for its first gradient")
        names = lora.select_targets(model, cfg.targets, adapter.min_side)
        loss = loss_function(task)
        b = _device(first_batch)
        gradients = lora.first_gradients(
            model, names,
            lambda m: loss(m(b.input_ids, b.attention_mask, b.token_type_ids), b.labels, b.weight))
    return model, lora.trainable_filter(cfg.train_head), lora.apply_adapters(model, adapter, gradients)


def choose_backbone(model: str, online: bool = False) -> str:
    """The backbone of a chapter's runs: ``model`` itself, or for "auto" the paper's
    bert-base-cased when it can be loaded (a local folder named so, or the hub when online) and
    the packaged MiniLM otherwise. Every output names the choice (``backbone_note``)."""
    if model != "auto":
        return model
    try:
        bert.resolve("bert-base-cased", online)
        return "bert-base-cased"
    except Exception as e:  # offline, or the hub unreachable: say so, then use the packaged model
        print(f"bert-base-cased cannot be loaded ({type(e).__name__}: {str(e)[:120]}); "
              "using the packaged all-MiniLM-L6-v2 instead")
        return "minilm"


def backbone_note(model_name: str, num_layers: int | None = None) -> str:
    """How results name their backbone (PAPER.md §4 uses bert-base-cased)."""
    cut = "" if num_layers is None else f"; only its first {num_layers} encoder layer(s) kept"
    if model_name.lower() in bert.PACKAGED_MINILM:
        return ("all-MiniLM-L6-v2 (packaged offline; a sentence-embedding model, 6 layers, hidden 384, "
                f"uncased — not the paper's bert-base-cased{cut})")
    return model_name + (f" ({cut[2:]})" if cut else "")


def check_run_dir(run_dir: str | Path | None) -> Path | None:
    """Refuse to reuse a run directory that already holds files (never silently overwrite)."""
    if run_dir is None:
        return None
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} already exists and is not empty; choose a new one")
    return run_dir


def finetune(cfg: FinetuneConfig, run_dir: str | Path | None = None, progress: bool = False,
             log_every: int = 10) -> dict[str, Any]:
    """Run one fine-tuning and evaluate on the validation split.

    Returns:
      results: task, method, metric (the paper's main metric), value, metrics (all), steps,
      trainable_params, wall_time_s, step_time_s (median, compilation excluded), compile_time_s,
      train_loss (every ``log_every`` steps), initial_value (metric before training), counts,
      backbone.
    """
    run_dir = check_run_dir(run_dir)
    start = time.perf_counter()
    tokenizer = bert.load_tokenizer(cfg.model, cfg.online)
    prepared = prepare(cfg, tokenizer)
    task = prepared["task"]
    stream = data.train_stream(prepared["train"], cfg.batch_size, cfg.seed)
    first = next(stream)
    t_build = time.perf_counter()
    model, trainable, adapter_cfg = build_model(cfg, task, first)
    build_time = time.perf_counter() - t_build  # includes compression for deep-lora-compressed
    trainer = Trainer(model, task, optimizer(cfg), trainable)
    initial = evaluate(trainer, prepared["validation"], prepared["validation_labels"], cfg.batch_size)
    stream = _prepend(first, stream)
    key = jax.random.fold_in(jax.random.key(cfg.seed), 7)  # dropout keys for this run
    losses, times = [], []
    bar = _progress(cfg.steps, progress)
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        loss = trainer.step(next(stream), jax.random.fold_in(key, step))
        if step % log_every == 0 or step == cfg.steps - 1:
            losses.append((step, float(loss)))  # synchronises: timed steps below exclude these
        else:
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t0)
        if step == 0:
            compile_time = time.perf_counter() - t0
        bar(step, float(loss) if step % log_every == 0 else None)
    final = evaluate(trainer, prepared["validation"], prepared["validation_labels"], cfg.batch_size)
    results = {
        "task": cfg.task, "method": cfg.method, "metric": task.main_metric,
        "value": final[task.main_metric], "metrics": final,
        "initial_value": initial[task.main_metric], "steps": cfg.steps, "seed": cfg.seed,
        "trainable_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(trainer.params))),
        "adapted_layers": len(adapter_cfg.adapted) if adapter_cfg else None,
        "wall_time_s": time.perf_counter() - start,
        "step_time_s": float(np.median(times)) if times else float("nan"),
        "compile_time_s": compile_time,
        "train_loss": losses,
        "n_train": prepared["n_train"], "dropped_train": prepared["dropped_train"],
        "n_validation": prepared["n_validation"], "dropped_validation": prepared["dropped_validation"],
        "backbone": backbone_note(cfg.model, cfg.num_layers),
        "device": jax.devices()[0].platform,
        "build_time_s": build_time,
    }
    if adapter_cfg is not None:
        results["numerical_ranks"] = lora.numerical_ranks(trainer.model())
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        if adapter_cfg is not None:
            lora.save(trainer.model(), adapter_cfg, run_dir / "adapter", extra={"base_model": cfg.model})
    return results


def _prepend(first, rest):
    yield first
    yield from rest


def _progress(total: int, enabled: bool):
    """A tqdm bar on stderr when enabled (and tqdm is installed); otherwise nothing."""
    if not enabled:
        return lambda step, loss: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="fine-tuning", unit="step", leave=False)

    def update(step, loss):
        bar.update(1)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4f}")
        if step == total - 1:
            bar.close()

    return update


def finetune_seeds(cfg: FinetuneConfig, seeds: Sequence[int], log_every: int = 10,
                   eval_at: Sequence[int] = (), observe_at: Sequence[int] = (),
                   observe: Callable[[int, int, Any], None] | None = None,
                   numerical_ranks: bool = False) -> dict[str, Any]:
    """Several seeds of one setting as one vectorised program (``jax.vmap`` over seeds).

    Each seed keeps everything a sequential run would draw from it — its few-shot subset, head,
    adapters, dropout keys and batch order — while the frozen encoder is shared, not copied: the
    model is split into (trainable, head, encoder) and only the first two are stacked. With one
    seed this is a plain run (the experiments of chapters 05–07 all go through here).

    Args:
      cfg: the setting (its ``seed`` is ignored: ``seeds`` are used).
      seeds: distinct seeds, S of them.
      log_every: record the training loss every k steps (and at the last step).
      eval_at: after these step counts (1…steps), evaluate on the validation examples too: the
        curves of PAPER.md §4's compressed-vs-wide comparison. Step 0 (before training) and the
        last step are always evaluated.
      observe_at: after these step counts (0 = before training), call
        ``observe(step, seed_index, model)`` with the model of every seed (Figure 1's snapshots).
      numerical_ranks: report each seed's numerical rank per adapted layer at the end.

    Returns:
      {"runs": [per seed: the ``finetune`` fields (no run directory) plus "curve": [(step,
       value)] and, when asked, "numerical_ranks"], "seeds", "wall_time_s", "step_time_s" (median
       time of one vectorised step, all seeds), "compile_time_s" (first step)}.
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct seeds, got {seeds}")
    for name, steps in (("eval_at", eval_at), ("observe_at", observe_at)):
        low = 1 if name == "eval_at" else 0
        bad = [t for t in steps if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not low <= t <= cfg.steps]
        if bad:
            raise ValueError(f"{name} steps must be integers in {low}…{cfg.steps} (the run's steps), got {bad}")
    if observe_at and observe is None:
        raise ValueError("observe_at needs an observe(step, seed_index, model) function")
    start = time.perf_counter()
    tokenizer = bert.load_tokenizer(cfg.model, cfg.online)
    per_seed, params, heads, streams, adapters = [], [], [], [], []
    graphdef = shared = None
    t_build = time.perf_counter()
    for seed in seeds:
        c = _with_seed(cfg, seed)
        prepared = prepare(c, tokenizer)
        stream = data.train_stream(prepared["train"], c.batch_size, seed)
        first = next(stream)
        model, trainable, adapter_cfg = build_model(c, prepared["task"], first)
        graphdef, p, h, rest = nnx.split(model, trainable, bert.Head, ...)
        shared = rest if shared is None else shared  # the frozen encoder is the same for every seed
        params.append(p)
        heads.append(h)
        streams.append(_prepend(first, stream))
        adapters.append(adapter_cfg)
        per_seed.append(prepared)
    build_time = time.perf_counter() - t_build
    task = per_seed[0]["task"]
    stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
    params, heads = stack(params), stack(heads)
    tx = optimizer(cfg)
    opt_state = jax.vmap(tx.init)(params)
    vstep, vpredict = _compiled(graphdef, task, tx, True)
    trainable_params = int(sum(np.prod(x.shape[1:]) for x in jax.tree.leaves(params)))

    def evaluate_all(p):
        outs = []
        for batch in data.batches(per_seed[0]["validation"], cfg.batch_size, shuffle=False, seed=None,
                                  drop_remainder=False):
            logits = np.asarray(vpredict(p, (heads, shared), _device(batch)))  # (seeds, B, labels)
            outs.append(np.stack([_to_predictions(x, batch.weight, task) for x in logits]))
        preds = np.concatenate(outs, axis=1)
        return [metrics.compute(task.metrics, pr, per_seed[0]["validation_labels"]) for pr in preds]

    def model_of(p, i):
        pick = lambda tree: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
        return nnx.merge(graphdef, pick(p), pick(heads), shared)

    def watch(step, p):
        if step in observe_at:
            for i in range(len(seeds)):
                observe(step, i, model_of(p, i))

    initial = evaluate_all(params)
    curves = [[(0, m[task.main_metric])] for m in initial]
    watch(0, params)
    keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 7) for s in seeds])
    losses, times, compile_time = [[] for _ in seeds], [], float("nan")
    eval_at = set(eval_at) - {cfg.steps}
    for t in range(cfg.steps):
        batch = data.Batch(*(jnp.asarray(np.stack(x)) for x in zip(*(next(s) for s in streams))))
        t0 = time.perf_counter()
        params, opt_state, values = vstep(params, opt_state, (heads, shared), batch,
                                          jax.vmap(lambda k: jax.random.fold_in(k, t))(keys))
        values = np.asarray(values)  # synchronises
        if t == 0:
            compile_time = time.perf_counter() - t0  # includes compilation
        else:
            times.append(time.perf_counter() - t0)
        if t % log_every == 0 or t == cfg.steps - 1:
            for i, v in enumerate(values):
                losses[i].append((t, float(v)))
        if t + 1 in eval_at:
            for i, m in enumerate(evaluate_all(params)):
                curves[i].append((t + 1, m[task.main_metric]))
        watch(t + 1, params)
    final = evaluate_all(params)
    runs = []
    for i, seed in enumerate(seeds):
        curves[i].append((cfg.steps, final[i][task.main_metric]))
        run = {"task": cfg.task, "method": cfg.method, "metric": task.main_metric, "seed": seed,
               "value": final[i][task.main_metric], "metrics": final[i],
               "initial_value": initial[i][task.main_metric], "steps": cfg.steps, "train_loss": losses[i],
               "curve": curves[i], "n_train": per_seed[i]["n_train"],
               "dropped_train": per_seed[i]["dropped_train"], "n_validation": per_seed[i]["n_validation"],
               "dropped_validation": per_seed[i]["dropped_validation"],
               "trainable_params": trainable_params,
               "adapted_layers": len(adapters[i].adapted) if adapters[i] else None,
               "backbone": backbone_note(cfg.model, cfg.num_layers)}
        if numerical_ranks and adapters[i] is not None:
            run["numerical_ranks"] = lora.numerical_ranks(model_of(params, i))
        runs.append(run)
    return {"runs": runs, "seeds": seeds, "wall_time_s": time.perf_counter() - start,
            "build_time_s": build_time, "compile_time_s": compile_time,
            "step_time_s": float(np.median(times)) if times else float("nan"),
            "device": jax.devices()[0].platform}


def _with_seed(cfg: FinetuneConfig, seed: int) -> FinetuneConfig:
    from dataclasses import replace

    return replace(cfg, seed=seed)
