"""Chapter 6: few-shot STS-B — vanilla LoRA against Deep LoRA over sample sizes, the numerical
ranks of their updates, robustness to the rank, and compressed against wide and random-narrow
Deep LoRA (arXiv:2406.04112, Deep LoRA experiments; the authors' scripts stsb_fewshot.py,
stsb_varying_rank.py and stsb_narrow.py at deep-lora-transformers@618c410).

Vanilla and deep runs are paired by seed: a seed fixes the few-shot subset (drawn with
replacement), the head, the adapters, dropout and the batch order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from companion.adapt import training
from companion.adapt.training import FinetuneConfig
from companion.book import claims
from companion.book.chapters import adaptation
from companion.book.claims import PaperValue
from companion.book.profiles import check_profile_name, with_overrides

NOTEBOOK = "06_fewshot_stsb"
PRECISION = "float32"  # how tightly smoke runs reproduce across machines (book.regression.tolerance)
VARIANTS = ("wide", "compressed", "random-narrow")


@dataclass(frozen=True)
class Config:
    """Chapter 6's settings."""

    base: FinetuneConfig  # shared settings; its steps are the curve's (paper: 500)
    samples: tuple[int, ...]  # few-shot sizes of the curve (paper: 16, 64, 256)
    seeds: int  # seeds per size and method, paired (paper: 20)
    ranks: tuple[int, ...]  # rank-robustness sweep (paper: 8, 16, 32, 64)
    rank_seeds: int  # seeds per rank (paper: 5)
    rank_samples: int  # few-shot size of the sweep (paper: 16)
    rank_steps: int  # steps of the sweep (paper: 200)
    compare_samples: int  # few-shot size of compressed vs wide vs narrow (paper: 16)
    compare_steps: int  # steps of that comparison (paper: 200)
    compare_eval_every: int  # steps between its validation scores (paper reports 20/40/80/200)
    compressed_inner_lr: float = 1e-2  # paper: compressed inner factors train with 1e-2
    gamma: float = 0.01  # paper: outer factors with γ × the inner step
    deep_method: str = "deep-lora"  # the few-shot "deep" runs: wide, as the paper's reported runs
    parallel: int | None = None  # most seeds per vectorised program (memory); None: all


def config(profile: str, *, seeds: int | None = None, online: bool = False, model: str | None = None) -> Config:
    """The chapter's settings for a profile; ``seeds`` overrides the curve's seed count, ``model``
    the profile's backbone."""
    check_profile_name(profile)
    parallel = adaptation.PARALLEL[profile]
    if profile == "smoke":
        # Smoke: the few-shot curve runs long enough to fit (its claims need it); the rank sweep and
        # the variant comparison, which claim nothing at this size, run half as long.
        steps = adaptation.SMOKE_STEPS
        cfg = Config(base=adaptation.base(profile, online=online, model=model, steps=steps), samples=(16, 32),
                     seeds=2, ranks=(8, 32), rank_seeds=2, rank_samples=16, rank_steps=steps // 2,
                     compare_samples=16, compare_steps=steps // 2, compare_eval_every=5, parallel=parallel)
    else:
        cfg = Config(base=adaptation.base(profile, online=online, model=model, steps=500), samples=(16, 64, 256), seeds=20,
                     ranks=(8, 16, 32, 64), rank_seeds=5, rank_samples=16, rank_steps=200, compare_samples=16,
                     compare_steps=200, compare_eval_every=10, parallel=parallel)
    return with_overrides(cfg, seeds=seeds)


@dataclass(frozen=True)
class Result:
    """Everything the chapter plots.

    Attributes:
      curve: one row per (method, samples, seed), ``adaptation.run_row``: value (validation
        Pearson), initial_value, first_loss, last_loss, fitted.
      ranks: {method: numerical rank of every adapted ΔW} at the largest sample size, seed 0.
      rank_sweep: one row per (method, rank, seed), ``adaptation.run_row``.
      compare: {variant: {"curve": [(step, score)], "loss": [(step, loss)], "fitted": bool}} for VARIANTS.
      backbone: the backbone's description; n_validation: validation examples scored.
    """

    config: Config
    curve: list[dict]
    ranks: dict[str, list[int]]
    rank_sweep: list[dict]
    compare: dict[str, dict]
    backbone: str
    n_validation: int
    wall_time_s: float


def run(cfg: Config) -> Result:
    """The few-shot curve, the numerical ranks, the rank sweep and the variant comparison."""
    start = time.perf_counter()
    base = adaptation.vary(cfg.base, model=training.choose_backbone(cfg.base.model, cfg.base.online))
    curve, ranks = [], {}
    for n in cfg.samples:
        for method in ("lora", cfg.deep_method):
            runs = training.fit(adaptation.vary(base, method=method, samples=n), list(range(cfg.seeds)),
                                numerical_ranks=n == max(cfg.samples), parallel=cfg.parallel)
            curve += [adaptation.run_row(r, method=method, samples=n) for r in runs]
            if runs[0].numerical_ranks is not None:
                ranks[method] = list(runs[0].numerical_ranks.values())  # seed 0
    sweep = []
    for rank in cfg.ranks:  # paper: narrow depth-3 Deep LoRA of width r against vanilla LoRA of rank r
        for method in ("lora", "deep-lora-narrow"):
            c = adaptation.vary(base, method=method, rank=rank, steps=cfg.rank_steps, samples=cfg.rank_samples)
            sweep += [adaptation.run_row(r, method=method, rank=rank)
                      for r in training.fit(c, list(range(cfg.rank_seeds)), parallel=cfg.parallel)]
    evals = tuple(range(cfg.compare_eval_every, cfg.compare_steps, cfg.compare_eval_every))
    variants = {"compressed": dict(method="deep-lora-compressed", inner_lr=cfg.compressed_inner_lr, gamma=cfg.gamma),
                "wide": dict(method="deep-lora"), "random-narrow": dict(method="deep-lora-narrow")}
    compare = {}
    for name, changes in variants.items():
        c = adaptation.vary(base, steps=cfg.compare_steps, samples=cfg.compare_samples, **changes)
        (r,) = training.fit(c, [0], log_every=1, eval_at=evals)
        compare[name] = {"curve": [tuple(p) for p in r.curve], "loss": [tuple(p) for p in r.train_loss],
                         "fitted": r.fitted}
    return Result(config=cfg, curve=curve, ranks=ranks, rank_sweep=sweep, compare=compare,
                  backbone=training.backbone_note(base.model, base.num_layers, base.head_pooling), n_validation=runs[0].n_validation,
                  wall_time_s=time.perf_counter() - start)


def scores(rows: list[dict], method: str, key: str = "value", **where) -> np.ndarray:
    """The ``key`` (default: the score) of ``method``'s rows matching ``where`` (e.g. samples=16),
    in seed order."""
    keep = [r for r in rows if r["method"] == method and all(r[k] == v for k, v in where.items())]
    return np.array([r[key] for r in sorted(keep, key=lambda r: r["seed"])])


def summary(result: Result) -> dict[str, float | int]:
    """The flat metrics of metrics.json."""
    cfg, deep = result.config, result.config.deep_method
    n_min = min(cfg.samples)
    delta = scores(result.curve, deep, samples=n_min) - scores(result.curve, "lora", samples=n_min)  # paired
    runs = result.curve + result.rank_sweep + [dict(fitted=v["fitted"]) for v in result.compare.values()]
    out = dict(seeds=cfg.seeds, rank_seeds=cfg.rank_seeds, n_validation=result.n_validation,
               runs=len(runs), runs_fitted=sum(bool(r["fitted"]) for r in runs),
               curve_runs=len(result.curve), curve_fitted=adaptation.fitted_count(result.curve)[0],
               delta_smallest_n_mean=delta.mean(), delta_smallest_n_std=delta.std(),
               mean_rank_vanilla=float(np.mean(result.ranks["lora"])), mean_rank_deep=float(np.mean(result.ranks[deep])),
               study_time_s=result.wall_time_s)
    for n in cfg.samples:
        for method, name in (("lora", "vanilla"), (deep, "deep")):
            out[f"{name}_n{n}_mean"] = scores(result.curve, method, samples=n).mean()
            out[f"{name}_n{n}_std"] = scores(result.curve, method, samples=n).std()
            out[f"{name}_n{n}_fitted"] = adaptation.fitted_count(result.curve, method=method, samples=n)[0]
            out[f"{name}_n{n}_initial"] = scores(result.curve, method, samples=n, key="initial_value").mean()
    for rank in cfg.ranks:
        out[f"rank{rank}_vanilla_mean"] = scores(result.rank_sweep, "lora", rank=rank).mean()
        out[f"rank{rank}_deep_narrow_mean"] = scores(result.rank_sweep, "deep-lora-narrow", rank=rank).mean()
    for variant, data in result.compare.items():
        for step, value in data["curve"]:
            out[f"{variant.replace('-', '_')}_step{step}"] = value
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in out.items()}


LOGS = "arXiv:2406.04112, few-shot STS-B (bert-base-cased, all-dense, 500 steps, 20 seeds; the authors' logs)"
RANKS = "arXiv:2406.04112, rank robustness (STS-B n = 16, 5 seeds, 200 steps; the authors' logs)"
COMPARE = "arXiv:2406.04112, compressed Deep LoRA (STS-B n = 16, seed 0, 200 steps; the authors' logs)"
PAPER = {
    "curve": {"lora": {16: PaperValue(0.529, LOGS, 0.122), 64: PaperValue(0.735, LOGS, 0.037),
                       256: PaperValue(0.814, LOGS, 0.012)},
              "deep": {16: PaperValue(0.598, LOGS, 0.103), 64: PaperValue(0.751, LOGS, 0.035),
                       256: PaperValue(0.828, LOGS, 0.007)}},
    "delta_n16": PaperValue(0.069, LOGS),
    "ranks": {"lora": {8: PaperValue(0.539, RANKS), 16: PaperValue(0.524, RANKS), 32: PaperValue(0.456, RANKS),
                       64: PaperValue(0.175, RANKS)},
              "deep": {8: PaperValue(0.635, RANKS), 16: PaperValue(0.652, RANKS), 32: PaperValue(0.660, RANKS),
                       64: PaperValue(0.667, RANKS)}},
    "compare": {v: {s: PaperValue(x, COMPARE) for s, x in zip((20, 40, 80, 200), xs)}
                for v, xs in (("wide", (0.649, 0.745, 0.735, 0.694)), ("compressed", (0.601, 0.736, 0.706, 0.680)),
                              ("random-narrow", (-0.018, 0.032, 0.569, 0.720)))},
    "numerical_rank": {"lora": PaperValue("all 8", "arXiv:2406.04112, numerical-rank histogram (n = 256, seed 0)"),
                       "deep": PaperValue("mostly 0, spread over 1–8",
                                          "arXiv:2406.04112, numerical-rank histogram (n = 256, seed 0)")},
}


def paper_means(kind: str) -> dict:
    """The paper's means as the plots take them: {"lora" | "deep" | variant: {x: mean}}."""
    return {m: {x: p.value for x, p in v.items()} for m, v in PAPER[kind].items()}


def _pm(p: PaperValue | None) -> str:
    return "—" if p is None else p.text()


def table(result: Result, stamp: str) -> str:
    """The paper-vs-ours Markdown tables."""
    cfg, m, deep = result.config, summary(result), result.config.deep_method
    n_min, curve = min(cfg.samples), PAPER["curve"]
    rows = "\n".join(f"| n = {n} | {_pm(curve['lora'].get(n))} / {_pm(curve['deep'].get(n))} | "
                     f"{m[f'vanilla_n{n}_mean']:.3f} ± {m[f'vanilla_n{n}_std']:.3f} / "
                     f"{m[f'deep_n{n}_mean']:.3f} ± {m[f'deep_n{n}_std']:.3f} | "
                     f"{m[f'vanilla_n{n}_fitted']} / {m[f'deep_n{n}_fitted']} of {cfg.seeds} |" for n in cfg.samples)
    pair = [r for r in result.curve if r["samples"] == n_min]
    why = adaptation.not_drawn(pair)
    delta = why or f"{m['delta_smallest_n_mean']:+.3f} ± {m['delta_smallest_n_std']:.3f}"
    def fitted_of(rank):
        counts = [adaptation.fitted_count(result.rank_sweep, method=x, rank=rank) for x in ("lora", "deep-lora-narrow")]
        return " / ".join(f"{f}" for f, _ in counts) + f" of {counts[0][1]}"

    rank_rows = "\n".join(f"| r = {k} | {_pm(PAPER['ranks']['lora'].get(k))} / {_pm(PAPER['ranks']['deep'].get(k))} | "
                          f"{m[f'rank{k}_vanilla_mean']:.3f} / {m[f'rank{k}_deep_narrow_mean']:.3f} | {fitted_of(k)} |"
                          for k in cfg.ranks)
    steps = [s for s, _ in result.compare["wide"]["curve"]]
    cmp_rows = "\n".join(
        f"| step {s} | " + " / ".join(_pm(PAPER["compare"][v].get(s)) for v in VARIANTS) + " | "
        + " / ".join(f"{dict(result.compare[v]['curve'])[s]:.3f}" for v in VARIANTS) + " |"
        for s in steps if s in PAPER["compare"]["wide"] or s == steps[-1])
    zeros = sum(v == 0 for v in result.ranks[deep])
    return adaptation.smoke_note(stamp) + f"""
**Backbone:** {result.backbone}. Validation Pearson on {result.n_validation} pairs; {stamp}.

{m['runs_fitted']} of {m['runs']} runs fitted their training data (last training losses at most half of both
their first ones and the best constant prediction's); a comparison is drawn only from runs that learned:
fitted, and ended with a validation score above the untrained model's ({m[f'vanilla_n{n_min}_initial']:.3f}).

| few-shot STS-B, vanilla r=8 / Deep LoRA, mean ± std | paper ({LOGS}) | ours ({cfg.seeds} seeds, {cfg.base.steps} steps) | runs fitted |
|---|---|---|---|
{rows}
| Δ = deep − vanilla at n = {n_min}, paired | {PAPER['delta_n16'].value:+.3f} | {delta} | |

| numerical rank of ΔW (σ > 1e-3), seed 0 | paper (n=256, 500 steps) | ours (n={max(cfg.samples)}, {cfg.base.steps} steps) |
|---|---|---|
| vanilla LoRA r=8 | {PAPER['numerical_rank']['lora'].text()} | mean {m['mean_rank_vanilla']:.2f} over {len(result.ranks['lora'])} matrices |
| Deep LoRA | {PAPER['numerical_rank']['deep'].text()} | mean {m['mean_rank_deep']:.2f}; {zeros} of {len(result.ranks[deep])} at 0 |

| rank robustness, vanilla / narrow Deep LoRA | paper ({RANKS}) | ours (n={cfg.rank_samples}, {cfg.rank_seeds} seeds, {cfg.rank_steps} steps) | runs fitted |
|---|---|---|---|
{rank_rows}

| Pearson, wide / compressed / random-narrow | paper ({COMPARE}) | ours (n={cfg.compare_samples}, seed 0, {cfg.compare_steps} steps) |
|---|---|---|
{cmp_rows}
"""


def check_claims(metrics: dict, profile: str) -> list[claims.Claim]:
    """The paper's few-shot claims (full profile, with margins) and what holds in every run."""
    cfg = config(profile)
    r_min, r_max, rank = min(cfg.ranks), max(cfg.ranks), cfg.base.adapter.rank
    claims.require(metrics, "mean_rank_vanilla", "mean_rank_deep", "delta_smallest_n_mean",
                   f"rank{r_min}_vanilla_mean", f"rank{r_max}_vanilla_mean")
    vanilla, deep = metrics["mean_rank_vanilla"], metrics["mean_rank_deep"]
    claims.require(metrics, "runs", "runs_fitted", "curve_runs", "curve_fitted",
                   *(f"{name}_n{n}_{k}" for n in cfg.samples for name in ("vanilla", "deep") for k in ("mean", "initial")))
    rises = {name: np.mean([metrics[f"{name}_n{n}_mean"] - metrics[f"{name}_n{n}_initial"] for n in cfg.samples])
             for name in ("vanilla", "deep")}
    out = [
        claims.claim("every number is finite", all(np.isfinite(v) for v in metrics.values())),
        claims.claim("every run of the few-shot curve fitted its training data (last loss ≤ half its first and the "
                     "constant predictor's)", metrics["curve_fitted"] == metrics["curve_runs"],
                     f"{metrics['curve_fitted']} of {metrics['curve_runs']}"),
        claims.claim("validation Pearson rises above the untrained model's for both methods (mean over the curve's "
                     "sizes and seeds ≥ +0.05)", all(v >= 0.05 for v in rises.values()),
                     ", ".join(f"{k} {v:+.3f}" for k, v in rises.items())),
        claims.claim(f"vanilla LoRA's updates fill their rank {rank}", vanilla == rank, f"mean {vanilla:.2f}"),
        claims.claim("Deep LoRA's updates have low numerical rank (mean ≤ vanilla's − 2)", deep <= vanilla - 2,
                     f"{deep:.2f} vs {vanilla:.2f}"),
    ]
    if profile == "full":
        out.append(claims.claim("every run fitted its training data", metrics["runs_fitted"] == metrics["runs"],
                                f"{metrics['runs_fitted']} of {metrics['runs']}"))
        d = metrics["delta_smallest_n_mean"]
        v_lo, v_hi = metrics[f"rank{r_min}_vanilla_mean"], metrics[f"rank{r_max}_vanilla_mean"]
        n_lo, n_hi = metrics[f"rank{r_min}_deep_narrow_mean"], metrics[f"rank{r_max}_deep_narrow_mean"]
        comp, wide, rand = metrics["compressed_step40"], metrics["wide_step40"], metrics["random_narrow_step40"]
        out += [
            claims.claim(f"Deep LoRA is at least as good as vanilla at n = {min(cfg.samples)} (mean paired Δ ≥ −0.01)",
                         d >= -0.01, f"Δ = {d:+.3f}"),
            claims.claim(f"vanilla LoRA degrades with rank (r = {r_max} ≤ r = {r_min} − 0.1)", v_hi <= v_lo - 0.1,
                         f"{v_lo:.3f} → {v_hi:.3f}"),
            claims.claim(f"narrow Deep LoRA does not degrade with rank (r = {r_max} ≥ r = {r_min} − 0.05)",
                         n_hi >= n_lo - 0.05, f"{n_lo:.3f} → {n_hi:.3f}"),
            claims.claim("compressed starts faster than random narrow (step 40, ≥ + 0.1)", comp >= rand + 0.1,
                         f"{comp:.3f} vs {rand:.3f}"),
            claims.claim("compressed keeps the wide model's early progress (step 40, ≥ wide − 0.1)", comp >= wide - 0.1,
                         f"{comp:.3f} vs {wide:.3f}"),
        ]
    return claims.verify(out)
