"""Chapter 7: limited-data GLUE — Deep LoRA − vanilla LoRA, paired by seed, per task and overall
(arXiv:2406.04112, limited-data GLUE; the authors' scripts/glue_fewshot.py at
deep-lora-transformers@618c410): per task 1,024 training examples drawn with replacement by the
seed, 1,000 steps (SST-2: 600), 10 seeds; the score is the task's metric on the full validation
split (MNLI: matched)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from companion.adapt import glue, training
from companion.adapt.training import FinetuneConfig
from companion.book import claims, statistics
from companion.book.chapters import adaptation
from companion.book.claims import PaperValue
from companion.book.profiles import check_profile_name, with_overrides

NOTEBOOK = "07_glue_limited_data"
PRECISION = "float32"  # how tightly smoke runs reproduce across machines (book.regression.tolerance)


@dataclass(frozen=True)
class Config:
    """Chapter 7's settings."""

    base: FinetuneConfig  # shared settings; its steps are every task's but steps_by_task (paper: 1000)
    samples: int  # training examples per task, drawn with replacement (paper: 1024)
    seeds: int  # paired seeds per task (paper: 10)
    steps_by_task: tuple[tuple[str, int], ...] = ()  # exceptions (paper: SST-2 600)
    tasks: tuple[str, ...] = ()  # () = every task whose data is present
    deep_method: str = "deep-lora"  # wide, as the paper's reported runs
    parallel: int | None = None  # most seeds per vectorised program (memory); None: all

    def steps_for(self, task: str) -> int:
        """The number of steps of ``task``'s runs."""
        return dict(self.steps_by_task).get(task, self.base.steps)


def config(profile: str, *, seeds: int | None = None, tasks: str | None = None, online: bool = False,
           model: str | None = None) -> Config:
    """The chapter's settings; ``tasks`` is a comma-separated list such as "rte,mrpc"; ``model``
    overrides the profile's backbone."""
    check_profile_name(profile)
    chosen = tuple(t.strip().lower() for t in tasks.split(",") if t.strip()) if tasks else None
    if profile == "smoke":
        # Smoke: 64 tokens, not 32 (at 32, MRPC and RTE keep only 22 and 24 validation pairs), and
        # batches of 8, which halves the cost of those longer sequences (measured: 629 s at 16).
        cfg = Config(base=adaptation.base(profile, online=online, model=model, steps=adaptation.SMOKE_STEPS,
                                          max_seq_length=64, batch_size=8), samples=32, seeds=2)
    else:
        cfg = Config(base=adaptation.base(profile, online=online, model=model, steps=1000), samples=1024, seeds=10,
                     steps_by_task=(("sst2", 600),), parallel=adaptation.PARALLEL[profile])
    return with_overrides(cfg, seeds=seeds, tasks=chosen)


@dataclass(frozen=True)
class Result:
    """Every run's score and the paired differences.

    Attributes:
      rows: one per (task, method, seed), ``adaptation.run_row``: task, method, metric, steps,
        n_validation, seed, value, initial_value, first_loss, last_loss, fitted.
      deltas: ``statistics.paired_deltas(rows, deep)``.
      tasks: the tasks run; absent: the tasks without data here (listed, not run).
    """

    config: Config
    rows: list[dict]
    deltas: dict[str, Any]
    tasks: tuple[str, ...]
    absent: tuple[str, ...]
    backbone: str
    wall_time_s: float


def tasks_to_run(cfg: Config) -> tuple[list[str], list[str]]:
    """(tasks to run, tasks absent here); every task online, else those with data.

    Raises:
      ValueError: an unknown task. FileNotFoundError: a chosen task has no data, or none has.
    """
    s = cfg.base
    present, absent = (list(glue.TASKS), []) if s.online else (glue.available_tasks(s.data_dir),
                                                                glue.missing_tasks(s.data_dir))
    tasks = list(cfg.tasks) or present
    unknown = [t for t in tasks if t not in glue.TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(glue.TASKS)}")
    lacking = [t for t in tasks if t not in present]
    if lacking:
        raise FileNotFoundError(f"no GLUE data for {lacking} in {glue.data_dir(s.data_dir)}; "
                                "set COMPANION_DATA_DIR, go online, or leave them out of tasks")
    if not tasks:
        raise FileNotFoundError(f"no GLUE task has data in {glue.data_dir(s.data_dir)}; "
                                "set COMPANION_DATA_DIR or go online")
    return tasks, [t for t in absent if t not in tasks]


def run(cfg: Config) -> Result:
    """Per task, vanilla LoRA and Deep LoRA on the same examples, paired by seed."""
    start = time.perf_counter()
    tasks, absent = tasks_to_run(cfg)
    base = adaptation.vary(cfg.base, model=training.choose_backbone(cfg.base.model, cfg.base.online))
    rows = []
    for task in tasks:
        for method in ("lora", cfg.deep_method):
            c = adaptation.vary(base, task=task, method=method, steps=cfg.steps_for(task), samples=cfg.samples)
            rows += [adaptation.run_row(r, task=task, method=method, metric=r.metric, steps=c.steps,
                                        n_validation=r.n_validation)
                     for r in training.fit(c, list(range(cfg.seeds)), parallel=cfg.parallel)]
    return Result(config=cfg, rows=rows, deltas=statistics.paired_deltas(rows, cfg.deep_method), tasks=tuple(tasks),
                  absent=tuple(absent), backbone=training.backbone_note(base.model, base.num_layers, base.head_pooling),
                  wall_time_s=time.perf_counter() - start)


def mean_of(result: Result, task: str, method: str) -> float:
    """Mean score of ``method`` on ``task`` over seeds."""
    return float(np.mean([r["value"] for r in result.rows if r["task"] == task and r["method"] == method]))


def summary(result: Result) -> dict[str, float | int]:
    """The flat metrics of metrics.json."""
    per, deep = result.deltas["per_task"], result.config.deep_method
    out: dict[str, float | int] = dict(seeds=result.config.seeds, tasks_run=len(result.tasks),
                                       tasks_absent=len(result.absent), overall_delta=result.deltas["overall_mean"],
                                       pooled_std=result.deltas["pooled_std"], study_time_s=result.wall_time_s,
                                       runs=len(result.rows),
                                       runs_fitted=adaptation.fitted_count(result.rows)[0])
    for t in result.tasks:
        out.update({f"{t}_delta_mean": per[t]["mean"], f"{t}_delta_std": per[t]["std"],
                    f"{t}_vanilla_mean": mean_of(result, t, "lora"), f"{t}_deep_mean": mean_of(result, t, deep),
                    f"{t}_initial": float(np.mean([r["initial_value"] for r in result.rows if r["task"] == t])),
                    f"{t}_fitted": adaptation.fitted_count(result.rows, task=t)[0]})
    return out


SOURCE = "arXiv:2406.04112, limited-data GLUE (bert-base-cased, 1024 samples, 10 seeds; the authors' logs)"
PAPER = {t: PaperValue(d, SOURCE) for t, d in (("cola", 0.090), ("mnli", 0.011), ("mrpc", 0.004), ("qnli", 0.048),
                                              ("qqp", 0.005), ("rte", 0.029), ("sst2", 0.019), ("stsb", 0.018))}
PAPER_OVERALL = PaperValue(0.028, SOURCE + "; 8 tasks", 0.040)  # spread: the pooled std over tasks


def table(result: Result, stamp: str) -> str:
    """The paper-vs-ours Markdown table (absent tasks listed as not run)."""
    cfg, per, deep = result.config, result.deltas["per_task"], result.config.deep_method
    lines = []
    for t in result.tasks:
        metric = next(r["metric"] for r in result.rows if r["task"] == t)
        fitted, total = adaptation.fitted_count(result.rows, task=t)
        ours = adaptation.not_drawn(result.rows, task=t) or f"{per[t]['mean']:+.3f} ± {per[t]['std']:.3f} ({per[t]['seeds']} seeds)"
        n_val = next(r["n_validation"] for r in result.rows if r["task"] == t)
        untrained = np.mean([r["initial_value"] for r in result.rows if r["task"] == t])
        lines.append(f"| {t.upper()} | {metric} | {PAPER[t].value:+.3f} | {ours} | {mean_of(result, t, 'lora'):.3f} / "
                     f"{mean_of(result, t, deep):.3f} (untrained {untrained:.3f}) | {fitted} of {total} | {n_val} |")
    lines += [f"| {t.upper()} | — | {PAPER[t].value:+.3f} | not run: no data here | — | — | — |" for t in result.absent]
    sst2 = f" (SST-2: {cfg.steps_for('sst2')})" if cfg.steps_for("sst2") != cfg.base.steps else ""
    overall, pooled = result.deltas["overall_mean"], result.deltas["pooled_std"]
    overall_cell = adaptation.not_drawn(result.rows) or f"{overall:+.3f} (pooled std {pooled:.3f}, {len(result.tasks)} tasks)"
    body = "\n".join(lines)
    return adaptation.smoke_note(stamp) + f"""
**Backbone:** {result.backbone}; {stamp}; {cfg.samples} training examples, {cfg.base.steps} steps{sst2}.

A Δ is drawn only where every run of the task learned: it fitted its training data (last training
losses at most half of both their first ones and the best constant prediction's) and ended with a
validation score above the untrained model's.

| task | metric | paper Δ ({SOURCE}) | our Δ, mean ± std over seeds | our vanilla / deep mean | runs fitted | validation examples |
|---|---|---|---|---|---|---|
{body}
| overall | | {PAPER_OVERALL.value:+.3f} (pooled std {PAPER_OVERALL.spread:.3f}, 8 tasks) | {overall_cell} | | | |
"""


def check_claims(metrics: dict, profile: str) -> list[claims.Claim]:
    """The paper's GLUE claim (full profile) and what holds in every run."""
    claims.require(metrics, "seeds", "tasks_run", "overall_delta", "runs", "runs_fitted")
    run_tasks = [t for t in glue.TASKS if f"{t}_delta_mean" in metrics]
    scores = [metrics[f"{t}_{k}"] for t in run_tasks for k in ("delta_mean", "vanilla_mean", "deep_mean")]
    out = [
        claims.claim("every score and mean Δ is finite", all(np.isfinite(scores + [metrics["overall_delta"]]))),
        claims.claim("every task run is reported", len(run_tasks) == metrics["tasks_run"] > 0,
                     f"{len(run_tasks)} of {metrics['tasks_run']}"),
        claims.claim("every run fitted its training data (last loss ≤ half its first and the constant predictor's)",
                     metrics["runs_fitted"] == metrics["runs"], f"{metrics['runs_fitted']} of {metrics['runs']}"),
    ]
    if profile == "full":
        d = metrics["overall_delta"]
        out.append(claims.claim("Deep LoRA is not worse than vanilla LoRA on average (overall Δ ≥ −0.005)", d >= -0.005,
                                f"Δ = {d:+.3f}"))
    return claims.verify(out)
