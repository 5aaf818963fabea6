"""Chapter 1 (notebooks/01_theorem.ipynb): gradient descent moves only a 2r*-dimensional subspace.

One deep matrix factorization is trained and every claim of the invariant-subspace theorem of
arXiv:2406.04112 is measured on it: d − 2r* singular values of each layer equal ρ_l(t) of
recursion (1), their singular vectors never move, and the other 2r* learn Φ.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from companion.book import claims
from companion.book.profiles import check_profile_name, with_overrides
from companion.linear import theory
from companion.linear.factorization import FactorizationSetting
from companion.linear.precision import float64

NOTEBOOK = "01_theorem"
PRECISION = "float64"  # how tightly smoke runs reproduce across machines (book.regression.tolerance)

THEOREM = "arXiv:2406.04112, the invariant-subspace theorem"
PAPER = {
    "count": claims.PaperValue("at least d − 2r*, equal to ρ_l(t) exactly", f"{THEOREM}, recursion (1)"),
    "deviation": claims.PaperValue("0 (exact equality)", f"{THEOREM}, recursion (1)"),
    "angle": claims.PaperValue("0 (the ρ-block vectors never move)", THEOREM),
    "figure": claims.PaperValue("d=30, r*=3, L=3, ε=0.5", "the theorem figure of the authors' ICML 2024 talk"),
}


@dataclass(frozen=True)
class Config:
    """Chapter 1's settings: the theorem on one factorization."""

    setting: FactorizationSetting  # the run whose singular values and vectors are plotted
    rtol: float = 1e-8  # a singular value "equals ρ_l(t)" within this relative tolerance
    angle_layers: tuple[int, ...] = (1,)  # layers (1-based) whose singular-vector angles are drawn


def config(profile: str, **overrides: Any) -> Config:
    """The profile's Config; ``overrides`` (None ignored) name fields of Config or of its setting.

    smoke: the talk's theorem figure, d=30, r*=3, L=3, ε=0.5, η=0.1, λ=0. full: larger and
    deeper with weight decay, d=300, r*=5, L=4, λ=1e-3.
    """
    check_profile_name(profile)
    if profile == "smoke":
        setting = FactorizationSetting(width=30, target_rank=3, depth=3, init_scales=(0.5,) * 3, lr=0.1,
                                       weight_decay=0.0, steps=300)
    else:
        setting = FactorizationSetting(width=300, target_rank=5, depth=4, init_scales=(0.5,) * 4, lr=0.1,
                                       weight_decay=1e-3, steps=3000, record_every=10)
    names = {f.name for f in dataclasses.fields(FactorizationSetting)}
    setting = with_overrides(setting, **{k: v for k, v in overrides.items() if k in names})
    return with_overrides(Config(setting=setting), **{k: v for k, v in overrides.items() if k not in names})


@dataclass(frozen=True)
class Result:
    """Chapter 1's run.

    Attributes:
      config: the settings.
      run: the theorem's quantities at every recorded step (``theory.TheoremRun``).
      rho_block: (R, L, d) bool, the d − 2r* singular values closest to ρ_l(t) (the ρ block).
    """

    config: Config
    run: theory.TheoremRun
    rho_block: np.ndarray

    @property
    def in_rho_end(self) -> np.ndarray:
        """(L, d) bool: the ρ block at the last recorded step (colours of the figures)."""
        return self.rho_block[-1]


@float64
def run(cfg: Config) -> Result:
    """Train the factorization in float64 and measure the theorem at every recorded step."""
    r = theory.check_theorem(cfg.setting, rtol=cfg.rtol, angles=True)
    return Result(cfg, r, np.asarray(theory.rho_group(r.singular_values, r.rho, r.dim_s)))


def _angles(result: Result) -> tuple[float, np.ndarray]:
    """(largest ρ-block angle to S over t ≥ 1 in degrees, final learning-block angles in degrees)."""
    a, block = result.run.angles, result.rho_block
    return float(np.degrees(a[1:][block[1:]].max())), np.degrees(a[-1][~block[-1]])


def summary(result: Result) -> dict[str, int | float]:
    """The flat metrics of metrics.json."""
    r, s = result.run, result.config.setting
    head = r.summary()
    max_angle, learning = _angles(result)
    return dict(
        required_count=s.required_count, min_count=head["min_count"],
        max_count_after_step0=int(r.counts[1:].max()), max_rel_dev=head["max_rel_dev"],
        events_max_residual=head["events_max_residual"], dim_s=r.dim_s, final_loss=head["final_loss"],
        max_angle_rho_block_deg=max_angle, min_final_angle_learning_deg=float(learning.min()),
        max_final_angle_learning_deg=float(learning.max()),
        **{f"rho_final_layer{l + 1}": float(r.rho[-1, l]) for l in range(s.depth)},
        **{f"min_count_layer{l + 1}": int(r.counts[:, l].min()) for l in range(s.depth)},
    )


def table(result: Result, stamp: str) -> str:
    """The paper-vs-ours Markdown table."""
    s, m, c = result.config.setting, summary(result), result.config
    return f"""
| | paper (arXiv:2406.04112, the invariant-subspace theorem) | this run ({stamp}) |
|---|---|---|
| setting | {PAPER['figure'].text()} ({PAPER['figure'].source}) | d={s.width}, r*={s.target_rank}, L={s.depth}, ε={list(s.init_scales)}, η={s.lr}, λ={s.weight_decay}, {s.steps} steps |
| singular values equal to ρ_l(t), per layer | {PAPER['count'].text()} ({PAPER['count'].source}) | min {m['min_count']}, max after t=0 {m['max_count_after_step0']}; d − 2r* = {m['required_count']} (to {c.rtol:.0e}) |
| largest relative deviation of those from ρ_l(t) | {PAPER['deviation'].text()} | {m['max_rel_dev']:.1e} |
| ρ-block singular vectors: largest angle to S | {PAPER['angle'].text()} | {m['max_angle_rho_block_deg']:.1e} degrees |
"""


def paper_rows(folder: str | Path) -> list[tuple[str, claims.PaperValue, str]]:
    """The paper's numbers beside this chapter's, from a stored run (its metrics.json): one
    (quantity, paper value with its source, ours) per number the paper gives.

    Args:
      folder: a run's output folder, e.g. reports/reference/chapters/full/01_theorem/.

    Raises:
      FileNotFoundError: no metrics.json there.
    """
    m = json.loads((Path(folder) / "metrics.json").read_text())
    return [
        ("singular values of every W_l(t) that equal ρ_l(t)", PAPER["count"],
         f"at least {m['min_count']} per layer at every step (d − 2r* = {m['required_count']})"),
        ("their deviation from the recursion's ρ_l(t)", PAPER["deviation"], f"largest relative {m['max_rel_dev']:.1e}"),
        ("angle of the ρ-block singular vectors to their start", PAPER["angle"],
         f"largest {m['max_angle_rho_block_deg']:.1e}°"),
    ]


def check_claims(metrics: Mapping[str, float], profile: str) -> list[claims.Claim]:
    """The theorem's claims with margins (float64 round-off is ~1e-16); the same in both profiles.

    Raises:
      claims.ClaimsFailed: a claim does not hold (all failures listed).
    """
    check_profile_name(profile)
    m = metrics
    claims.require(m, "required_count", "min_count", "max_count_after_step0", "max_rel_dev",
                   "max_angle_rho_block_deg", "min_final_angle_learning_deg", "events_max_residual")
    need = m["required_count"]
    return claims.verify([
        claims.claim("at least d − 2r* singular values of every layer equal ρ_l(t) at every t",
                     m["min_count"] >= need, f"min {m['min_count']}, d − 2r* = {need}"),
        claims.claim("after t = 0 exactly d − 2r* equal ρ_l(t) (generic Φ and Θ(0))",
                     m["max_count_after_step0"] == need, f"max {m['max_count_after_step0']}"),
        claims.claim("their relative deviation from recursion (1) is < 1e-10",
                     m["max_rel_dev"] < 1e-10, f"{m['max_rel_dev']:.1e}"),
        claims.claim("no ρ-block singular vector moves: angle to S < 1e-8 degrees",
                     m["max_angle_rho_block_deg"] < 1e-8, f"{m['max_angle_rho_block_deg']:.1e}"),
        claims.claim("every one of the 2r* learning vectors moves by > 1 degree",
                     m["min_final_angle_learning_deg"] > 1.0, f"min {m['min_final_angle_learning_deg']:.1f}"),
        claims.claim("the proof's events A–D hold to < 1e-10", m["events_max_residual"] < 1e-10,
                     f"{m['events_max_residual']:.1e}"),
    ])
