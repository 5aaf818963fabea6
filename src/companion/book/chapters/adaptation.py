"""What every fine-tuning run of chapters 5–7 shares, per profile.

The full profile is the paper's protocol (arXiv:2406.04112, Deep LoRA experiments; the authors'
deep-lora-transformers@618c410 scripts): bert-base-cased, all-dense targets, AdamW at 1e-4,
batches of 16 sequences of at most 128 tokens, the full validation split. The smoke profile runs
the same code at toy size on a CPU, sized so that its runs still fit their training data: the
first 2 of MiniLM's 6 layers (whose head reads mean-pooled states, ``training.default_pooling``),
query-value targets, batches of 16 sequences of at most 32 tokens (longer examples dropped, as
the paper drops those over 128), a larger step (1e-3) so that 60 steps fit a few-shot set, and
the first 500 kept validation examples (Pearson's standard error ≤ (1 − ρ²)/√499 < 0.045).
Smoke numbers are regression checks of the code, not replications.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from companion.adapt.adapters import AdapterConfig
from companion.adapt.training import FinetuneConfig, RunResult
from companion.book.profiles import check_profile_name

# Most seeds in one vectorised program. Full: wide all-dense Deep LoRA on BERT-base holds ~195M
# adapter parameters per seed (~3 GB with the gradient and AdamW's two moments), so 5 seeds at a
# time fit an 80 GB GPU. Smoke: every seed at once.
PARALLEL = {"smoke": None, "full": 5}
SMOKE_EVAL_EXAMPLES = 500  # validation examples of smoke runs: Pearson's standard error < 0.045
SMOKE_STEPS = 60  # steps of every smoke run: enough for 2 MiniLM layers at 1e-3 to fit 16–64 examples


def base(profile: str, *, model: str | None = None, **changes: Any) -> FinetuneConfig:
    """The shared fine-tuning settings of a profile, with ``changes`` applied (``vary``).

    The backbone is always named: full "bert-base-cased" (the paper's; online or a local copy),
    smoke "minilm" (the packaged all-MiniLM-L6-v2). A backbone that cannot be loaded fails the
    run with a message (``training.choose_backbone``); it is never swapped silently.

    Args:
      profile: "smoke" or "full".
      model: the backbone instead of the profile's (a local folder, "minilm", a hub name).
      changes: fields of FinetuneConfig or of its AdapterConfig (e.g. targets, online).

    Returns:
      FinetuneConfig for STS-B with vanilla LoRA of rank 8 (each chapter varies it).
    """
    check_profile_name(profile)
    adapter = AdapterConfig(method="lora", rank=8, depth=3, init_scale=1e-3,
                            targets="query-value" if profile == "smoke" else "all-dense")
    if profile == "smoke":
        config = FinetuneConfig(task="stsb", adapter=adapter, model="minilm", num_layers=2, max_seq_length=32,
                                batch_size=16, lr=1e-3, eval_examples=SMOKE_EVAL_EXAMPLES)
    else:
        # The paper's backbone (arXiv:2406.04112; the authors' configs.py at 618c410: bert-base-cased).
        config = FinetuneConfig(task="stsb", adapter=adapter, model="bert-base-cased", num_layers=None,
                                max_seq_length=128, batch_size=16, lr=1e-4, eval_examples=None)
    if model is not None:
        changes["model"] = model
    return vary(config, **changes)


def vary(config: FinetuneConfig, **changes: Any) -> FinetuneConfig:
    """``dataclasses.replace`` on the config and its adapter at once: each change goes to the
    dataclass that has the field (``vary(c, method="deep-lora", steps=200)``).

    Raises:
      ValueError: a name that neither FinetuneConfig nor AdapterConfig has.
    """
    top = {f.name for f in dataclasses.fields(FinetuneConfig)}
    inner = {f.name for f in dataclasses.fields(AdapterConfig)}
    unknown = sorted(set(changes) - top - inner)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; FinetuneConfig and AdapterConfig have {sorted(top | inner)}")
    adapter_changes = {k: v for k, v in changes.items() if k in inner and k not in top}
    config = dataclasses.replace(config, **{k: v for k, v in changes.items() if k in top})
    if adapter_changes:
        config = dataclasses.replace(config, adapter=dataclasses.replace(config.adapter, **adapter_changes))
    return config


def smoke_note(stamp: str) -> str:
    """The line that heads a smoke run's paper-vs-ours table (``Results.stamp`` names the
    profile): toy-size fine-tuning checks the code, its scores are not results."""
    if "profile=smoke" not in stamp:
        return ""
    return ("**Smoke run: a check of the code at toy size, not a result.** Its scores are not comparable with "
            "the paper's; the full profile is the comparison.\n")


def run_row(result: RunResult, **fields: Any) -> dict:
    """One run as a chapter stores it: ``fields`` (method, samples, …), its seed and score, and
    its fit verdict (``training.fit_verdict``), so no comparison is drawn from runs that did not fit."""
    return dict(**fields, seed=result.seed, value=result.value, initial_value=result.initial_value,
                first_loss=result.first_loss, last_loss=result.last_loss, fitted=result.fitted)


def fitted_count(rows: list[dict], **where: Any) -> tuple[int, int]:
    """(runs that fitted their training data, runs) among ``rows`` matching ``where``."""
    keep = [r for r in rows if all(r[k] == v for k, v in where.items())]
    return sum(bool(r["fitted"]) for r in keep), len(keep)


def learned(row: dict) -> bool:
    """A run is a result only if it learned: it fitted its training data and its validation score
    ended above the untrained model's (``initial_value``, the same head and encoder before any step)."""
    return bool(row["fitted"]) and row["value"] > row["initial_value"]


def not_drawn(rows: list[dict], **where: Any) -> str | None:
    """None when every run matching ``where`` learned (``learned``); else why a comparison of them is
    not drawn: how many did not fit their training data, and how many fitted but scored no better
    than untrained."""
    keep = [r for r in rows if all(r[k] == v for k, v in where.items())]
    unfit = sum(not r["fitted"] for r in keep)
    flat = sum(bool(r["fitted"]) and not learned(r) for r in keep)
    if not unfit and not flat:
        return None
    why = [f"{unfit} of {len(keep)} runs did not fit their training data"] if unfit else []
    why += [f"{flat} of {len(keep)} scored no better than untrained"] if flat else []
    return "not drawn: " + "; ".join(why)
