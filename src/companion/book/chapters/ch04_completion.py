"""Chapter 4 (notebooks/04_matrix_completion.ipynb): deep matrix completion, compressed.

The studies of arXiv:2406.04112's deep matrix completion experiments (authors' notebooks), with
one interface and, within a study, the same η, tolerance and budget for every method:
trajectories of original vs compressed (γ) vs compressed (γ = 0); the rank-estimate sweep,
compressed vs random narrow; depth 2 vs 3 over hidden widths.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from companion.book import claims
from companion.book.pieces import Pieces
from companion.book.results import read_table
from companion.book.profiles import check_profile_name, with_overrides
from companion.linear import completion
from companion.linear.precision import float64

NOTEBOOK = "04_matrix_completion"
PRECISION = "float64"  # how tightly smoke runs reproduce across machines (book.regression.tolerance)

EXPERIMENT = "arXiv:2406.04112, deep matrix completion experiments (authors' notebooks)"
FIG = f"{EXPERIMENT}, read off the figure"
PAPER = {
    "steps": claims.PaperValue("≈ 19,500 / ≈ 19,500", FIG),
    "wall_time": claims.PaperValue("≈ 43 s / ≈ 6 s, ≈ 7×", FIG),
    "gamma0": claims.PaperValue("stalls near 5e-4", FIG),
    "sweep": claims.PaperValue("≈ 19,500 for every r̂ / 45,000–62,000", FIG),
    "depth": claims.PaperValue("depth 3 recovers at every width; depth 2 errs more as width grows", FIG),
}
SWEEP_RANGES = {"compressed": (19_000, 20_000), "narrow": (45_000, 62_000)}  # steps, d = 1000 [fig]
TRAJECTORY_METHODS = ("original", "compressed", "compressed-gamma0")


@dataclass(frozen=True)
class Config:
    """Chapter 4's settings: deep matrix completion."""

    width: int  # d
    target_rank: int  # r*
    depth: int  # L
    init_scale: float  # ε
    fraction: float  # p: ⌊p·d²⌋ observed entries
    lr: float  # η on the mean loss (paper: 5e3 at d = 1000)
    gamma: float  # γ: outer factors' step ratio (paper: 0.01)
    budget: int  # most steps for the trajectory figure (paper: 170,000)
    tol: float  # training-loss tolerance for the trajectory figure (paper: 1e-9)
    record_every: int  # steps between records
    iterate_every: int  # steps between stored end-to-end matrices
    sweep_rank_estimates: tuple[int, ...]  # r̂ values of the sweep (paper: 5, 8, …, 20)
    sweep_trials: int  # seeds per r̂ (paper: 5)
    sweep_budget: int  # most steps in the sweep (paper: 200,000)
    sweep_tol: float  # tolerance in the sweep (paper: 1e-10)
    depth_width: int  # d of the depth study (paper: 100)
    depth_target_rank: int  # r* of the depth study (paper: 10)
    depth_fraction: float  # p of the depth study (paper: 0.3)
    depth_hidden: tuple[int, ...]  # hidden widths (paper: 10 … 100)
    depth_lr: tuple[tuple[int, float], ...]  # (depth, η): paper 3e2 for L = 3, 1e2 for L = 2
    depth_budget: int  # most steps (paper: 60,000)
    depth_tol: float  # tolerance (paper: 1e-10)
    seed: int = 0  # fixes Φ, Ω and Θ(0) of the trajectory figure and the depth study


def config(profile: str, **overrides: Any) -> Config:
    """The profile's Config with ``overrides`` (None ignored), e.g. ``sweep_trials``."""
    check_profile_name(profile)
    if profile == "smoke":
        cfg = Config(width=100, target_rank=4, depth=3, init_scale=1e-3, fraction=0.3, lr=3e2, gamma=0.01,
                     budget=30_000, tol=1e-9, record_every=100, iterate_every=100,
                     sweep_rank_estimates=(4, 6, 8), sweep_trials=2, sweep_budget=40_000, sweep_tol=1e-10,
                     depth_width=50, depth_target_rank=4, depth_fraction=0.4, depth_hidden=(10, 25, 50),
                     depth_lr=((3, 1e2), (2, 4e1)), depth_budget=30_000, depth_tol=1e-10)
    else:  # the paper's completion trajectories, r̂ sweep and depth study
        cfg = Config(width=1000, target_rank=5, depth=3, init_scale=1e-3, fraction=0.2, lr=5e3, gamma=0.01,
                     budget=170_000, tol=1e-9, record_every=200, iterate_every=2000,
                     sweep_rank_estimates=(5, 8, 11, 14, 17, 20), sweep_trials=5, sweep_budget=200_000,
                     sweep_tol=1e-10, depth_width=100, depth_target_rank=10, depth_fraction=0.3,
                     depth_hidden=tuple(range(10, 101, 10)), depth_lr=((3, 3e2), (2, 1e2)),
                     depth_budget=60_000, depth_tol=1e-10)
    return with_overrides(cfg, **overrides)


def paper_ranges(profile: str) -> dict[str, tuple[int, int]]:
    """The paper's step ranges of the r̂ sweep (d = 1000) to shade in the full profile only."""
    return SWEEP_RANGES if check_profile_name(profile) == "full" else {}


@dataclass(frozen=True)
class Result:
    """Chapter 4's numbers.

    Attributes:
      config: the settings.
      runs: {method: CompletionRun} for original, compressed (γ), compressed-gamma0.
      pcs: {method: (R, 2)} projections on the original run's principal components.
      sweep: rows (rank_estimate, trial, method, steps, wall_time_s, converged, recovery_error).
      depth: rows (depth, hidden, steps, converged, recovery_error).
      pieces: how many sweep and depth rows were read from stored pieces and how many computed.
    """

    config: Config
    runs: dict[str, completion.CompletionRun]
    pcs: dict[str, np.ndarray]
    sweep: list[dict]
    depth: list[dict]
    pieces: str = "pieces kept nowhere"


# Settings that only choose which pieces a run needs, not what a piece holds (a run with fewer
# trials reads the first trials of a run with more).
NOT_PIECE_SETTINGS = ("sweep_trials", "sweep_rank_estimates", "depth_hidden", "depth_lr")


def piece_settings(cfg: Config) -> dict[str, Any]:
    """What every piece of the r̂ sweep and the depth study depends on (``pieces.Pieces``)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_PIECE_SETTINGS}


def sweep_piece(r_hat: int, trial: int, method: str) -> str:
    return f"sweep-rhat{r_hat}-trial{trial}-{method}"


def depth_piece(layers: int, hidden: int, lr: float) -> str:
    return f"depth{layers}-hidden{hidden}-lr{lr:g}"


def piece_names(cfg: Config) -> list[str]:
    """Every piece a run of ``cfg`` keeps (``run``'s ``pieces_dir``), in the order it computes them."""
    return ([sweep_piece(r_hat, trial, method) for trial in range(cfg.sweep_trials)
             for r_hat in cfg.sweep_rank_estimates for method in ("compressed", "narrow")]
            + [depth_piece(layers, hidden, lr) for layers, lr in cfg.depth_lr for hidden in cfg.depth_hidden])


@float64
def run(cfg: Config, pieces_dir: str | Path | None = None) -> Result:
    """The three studies, in float64.

    Args:
      pieces_dir: where each finished run of the r̂ sweep and of the depth study is kept
        (``pieces.Pieces``), so a cut run resumes from them; None keeps nothing. The trajectory
        runs (an hour of the full profile on a CPU) are computed every time: their stored iterates
        are too large to keep.

    Raises:
      pieces.PieceError: a stored piece is cut or was made with other settings.
    """
    store = Pieces(pieces_dir, piece_settings(cfg))
    store.verify()  # a stored piece of other settings stops the run before hours of work
    key = completion.problem_key
    sweep = []
    for trial in range(cfg.sweep_trials):
        seed = cfg.seed + 1 + trial
        trial_problem = completion.make_problem(key(seed), cfg.width, cfg.target_rank, cfg.fraction)
        for r_hat in cfg.sweep_rank_estimates:
            for method in ("compressed", "narrow"):
                def one(method=method, r_hat=r_hat, seed=seed, trial=trial, problem=trial_problem) -> dict:
                    r = completion.run_method(method, problem, depth=cfg.depth, init_scale=cfg.init_scale,
                                              lr=cfg.lr, rank_estimate=r_hat, gamma=cfg.gamma,
                                              budget=cfg.sweep_budget, tol=cfg.sweep_tol, seed=seed,
                                              record_every=cfg.record_every)
                    return dict(rank_estimate=r_hat, trial=trial, method=method, steps=r.steps_to_tol,
                                wall_time_s=r.wall_time_s, converged=int(r.converged),
                                recovery_error=float(r.recovery_error[-1]))

                sweep.append(store.get(sweep_piece(r_hat, trial, method), one))
    depth = []
    depth_problem = completion.make_problem(key(cfg.seed), cfg.depth_width, cfg.depth_target_rank, cfg.depth_fraction)
    for layers, lr in cfg.depth_lr:
        for hidden in cfg.depth_hidden:
            def one(layers=layers, lr=lr, hidden=hidden) -> dict:
                r = completion.run_method("narrow", depth_problem, depth=layers, init_scale=cfg.init_scale, lr=lr,
                                          hidden=hidden, budget=cfg.depth_budget, tol=cfg.depth_tol, seed=cfg.seed,
                                          record_every=cfg.record_every)
                return dict(depth=layers, hidden=hidden, steps=r.steps_to_tol, converged=int(r.converged),
                            recovery_error=float(r.recovery_error[-1]))

            depth.append(store.get(depth_piece(layers, hidden, lr), one))
    # The trajectories last: a run cut before them has kept every piece (each run has its own problem
    # and seed, so the order changes no number).
    problem = completion.make_problem(key(cfg.seed), cfg.width, cfg.target_rank, cfg.fraction)
    kw = dict(depth=cfg.depth, init_scale=cfg.init_scale, lr=cfg.lr, rank_estimate=cfg.target_rank,
              gamma=cfg.gamma, budget=cfg.budget, tol=cfg.tol, seed=cfg.seed, record_every=cfg.record_every,
              iterate_every=cfg.iterate_every)
    runs = {m: completion.run_method(m, problem, **kw) for m in TRAJECTORY_METHODS}
    pcs = dict(zip(runs, completion.principal_components(*(r.iterates for r in runs.values()))))
    return Result(cfg, runs, pcs, sweep, depth, store.describe())


def _mean_steps(rows: list[dict], method: str, r_hat: int | None = None) -> float:
    return float(np.mean([r["steps"] for r in rows
                          if r["method"] == method and r_hat in (None, r["rank_estimate"])]))


def summary(result: Result) -> dict[str, int | float]:
    """The flat metrics of metrics.json."""
    o, cg, c0 = (result.runs[m] for m in TRAJECTORY_METHODS)
    sweep, r_hats = result.sweep, sorted({r["rank_estimate"] for r in result.sweep})
    return dict(
        steps_original=o.steps_to_tol, steps_compressed=cg.steps_to_tol, steps_compressed_gamma0=c0.steps_to_tol,
        recovery_original=float(o.recovery_error[-1]), recovery_compressed=float(cg.recovery_error[-1]),
        recovery_compressed_gamma0=float(c0.recovery_error[-1]), converged_compressed_gamma0=int(c0.converged),
        sweep_trials=result.config.sweep_trials,
        sweep_mean_steps_compressed=_mean_steps(sweep, "compressed"),
        sweep_mean_steps_narrow=_mean_steps(sweep, "narrow"),
        **{f"sweep_steps_compressed_rhat{rh}": _mean_steps(sweep, "compressed", rh) for rh in r_hats},
        **{f"depth{r['depth']}_hidden{r['hidden']}_recovery": r["recovery_error"] for r in result.depth},
        **{f"depth{r['depth']}_hidden{r['hidden']}_steps": r["steps"] for r in result.depth},
    )


def _by_width(rows: list[dict], layers: int) -> list[dict]:
    return sorted((r for r in rows if r["depth"] == layers), key=lambda r: r["hidden"])


def table(result: Result, stamp: str) -> str:
    """The paper-vs-ours Markdown table (wall times: compilation excluded)."""
    c, m, P = result.config, summary(result), PAPER
    o, cg, c0 = (result.runs[k] for k in TRAJECTORY_METHODS)
    d3, d2 = _by_width(result.depth, 3), _by_width(result.depth, 2)
    r_hats = sorted({r["rank_estimate"] for r in result.sweep})
    return f"""
| | paper ({EXPERIMENT}; d=1000, r*=5, p=0.2, GPU) | this run ({stamp}) |
|---|---|---|
| steps, original / compressed (γ={c.gamma}) | {P['steps'].text()} | {o.steps_to_tol} / {cg.steps_to_tol} (tol {c.tol:.0e}, d={c.width}, r*={c.target_rank}, p={c.fraction}) |
| wall time, original / compressed | {P['wall_time'].text()} | {o.wall_time_s:.2f} s / {cg.wall_time_s:.2f} s, {o.wall_time_s / cg.wall_time_s:.1f}× |
| compressed with γ = 0 | {P['gamma0'].text()} | recovery error {c0.recovery_error[-1]:.1e} after {c0.steps_to_tol} steps |
| r̂ sweep: steps compressed / random narrow | {P['sweep'].text()} | {m['sweep_mean_steps_compressed']:.0f} / {m['sweep_mean_steps_narrow']:.0f} (mean over r̂ ∈ {r_hats}, {c.sweep_trials} seeds) |
| depth 3 vs 2 | {P['depth'].text()} | depth 3: {', '.join(f"{r['recovery_error']:.0e}" for r in d3)}; depth 2: {', '.join(f"{r['recovery_error']:.0e}" for r in d2)} (widths {[r['hidden'] for r in d3]}) |
"""


def paper_rows(folder: str | Path) -> list[tuple[str, claims.PaperValue, str]]:
    """The paper's numbers beside this chapter's, from a stored run (its metrics.json,
    completion_trajectories.csv and rank_sweep.csv): one (quantity, paper value with its source,
    ours) per number the paper gives.

    Args:
      folder: a run's output folder, e.g. reports/reference/chapters/full/04_matrix_completion/.

    Raises:
      FileNotFoundError: no metrics.json there.
    """
    from companion.book.chapters.ch03_trajectories import _last_wall_times

    folder = Path(folder)
    m = json.loads((folder / "metrics.json").read_text())
    wall = _last_wall_times(folder / "completion_trajectories.csv")
    times = ("not stored" if not wall or not {"original", "compressed"} <= set(wall) else
             f"{wall['original']:.3g} s / {wall['compressed']:.3g} s, {wall['original'] / wall['compressed']:.1f}×")
    sweep = "not stored"
    if (folder / "rank_sweep.csv").is_file():
        t = read_table(folder / "rank_sweep.csv")
        steps = {meth: [float(s) for mm, s in zip(t["method"], t["steps_mean"]) if mm == meth]
                 for meth in ("compressed", "narrow")}
        if all(steps.values()):
            sweep = " / ".join(f"{min(v):,.0f}–{max(v):,.0f}" for v in steps.values()) + " (mean over trials, per r̂)"
    d3 = [v for k, v in m.items() if k.startswith("depth3_hidden") and k.endswith("_recovery")]
    d2 = [v for k, v in m.items() if k.startswith("depth2_hidden") and k.endswith("_recovery")]
    return [
        ("steps, original / compressed (γ)", PAPER["steps"], f"{m['steps_original']:,} / {m['steps_compressed']:,}"),
        ("wall time, original / compressed", PAPER["wall_time"], times),
        ("compressed with γ = 0", PAPER["gamma0"], f"recovery error {m['recovery_compressed_gamma0']:.1e} after "
         f"{m['steps_compressed_gamma0']:,} steps" + ("" if m["converged_compressed_gamma0"] else " (did not converge)")),
        ("r̂ sweep: steps, compressed / random narrow", PAPER["sweep"], sweep),
        ("depth 3 vs depth 2, recovery error over the widths", PAPER["depth"],
         f"depth 3 at most {max(d3):.0e}; depth 2 from {min(d2):.0e} to {max(d2):.0e}" if d3 and d2 else "not stored"),
    ]


def check_claims(metrics: Mapping[str, float], profile: str) -> list[claims.Claim]:
    """Completion's claims with margins, the same in both profiles (budgets of the profile).

    Raises:
      claims.ClaimsFailed: a claim does not hold (all failures listed).
    """
    cfg, m = config(profile), metrics
    claims.require(m, "steps_original", "steps_compressed", "recovery_compressed", "recovery_compressed_gamma0",
                   "converged_compressed_gamma0", "sweep_mean_steps_compressed", "sweep_mean_steps_narrow")
    per_rhat = [v for k, v in m.items() if k.startswith("sweep_steps_compressed_rhat")]
    widths = sorted({int(k.split("_hidden")[1].split("_")[0]) for k in m if k.startswith("depth3_hidden")})
    if not per_rhat or not widths:
        raise KeyError("metrics lack the sweep or the depth study; was the chapter's summary() changed?")
    d3 = [(m[f"depth3_hidden{h}_steps"], m[f"depth3_hidden{h}_recovery"]) for h in widths]
    d2 = [(m[f"depth2_hidden{h}_steps"], m[f"depth2_hidden{h}_recovery"]) for h in widths]
    so, sc = m["steps_original"], m["steps_compressed"]
    rc, r0 = m["recovery_compressed"], m["recovery_compressed_gamma0"]
    return claims.verify([
        claims.claim(f"original and compressed (γ) converge within {cfg.budget} steps",
                     so < cfg.budget and sc < cfg.budget, f"{so}, {sc}"),
        claims.claim("compressed (γ) needs at most 1.5 × the original's steps", sc <= 1.5 * so, f"{sc} vs {so}"),
        claims.claim("γ = 0 stalls: not converged, recovery error > 1e3 × compressed (γ)'s",
                     not m["converged_compressed_gamma0"] and r0 > 1e3 * rc, f"{r0:.1e} vs {rc:.1e}"),
        claims.claim("compressed needs fewer steps than random narrow (mean over r̂ and seeds)",
                     m["sweep_mean_steps_compressed"] < m["sweep_mean_steps_narrow"],
                     f"{m['sweep_mean_steps_compressed']:.0f} vs {m['sweep_mean_steps_narrow']:.0f}"),
        claims.claim("compressed steps do not depend on r̂ (max ≤ 1.25 × min)", max(per_rhat) <= 1.25 * min(per_rhat),
                     f"{min(per_rhat):.0f}–{max(per_rhat):.0f}"),
        claims.claim(f"depth 3 converges within {cfg.depth_budget} steps at every width",
                     all(s < cfg.depth_budget for s, _ in d3), f"steps {[s for s, _ in d3]}"),
        claims.claim("wider depth-3 networks converge in fewer steps", d3[-1][0] < d3[0][0],
                     f"{d3[0][0]} → {d3[-1][0]}"),
        claims.claim("depth 2 errs more as its width grows", d2[-1][1] > d2[0][1], f"{d2[0][1]:.1e} → {d2[-1][1]:.1e}"),
        claims.claim("depth 3 recovers better than depth 2 at every width",
                     all(a[1] < b[1] for a, b in zip(d3, d2)), f"widths {widths}"),
    ])
