"""Chapter 2 (notebooks/02_proof_verification.ipynb): the proof's events A–D, checked step by step.

From Φ and Θ(0) alone the proof of the invariant-subspace theorem (arXiv:2406.04112; proof
sketch on slides 8–9 of the authors' ICML 2024 talk) builds the subspace S and the vectors
(v_i^(l), u_i^(l)); four events hold at every step. This chapter builds them over several
settings (depth 2 to 5, unequal ε_l, with and without weight decay) and records every event's
relative residual at every recorded step.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from companion.book import claims
from companion.book.profiles import check_profile_name, with_overrides
from companion.linear import factorization, theory
from companion.linear.factorization import FactorizationSetting
from companion.linear.precision import float64

NOTEBOOK = "02_proof_verification"
PRECISION = "float64"  # how tightly smoke runs reproduce across machines (book.regression.tolerance)

PROOF = "arXiv:2406.04112, the invariant-subspace theorem (proof)"
PAPER = {
    "dim_s": claims.PaperValue("dim S ≥ d − 2r*", PROOF),
    "events": claims.PaperValue("0 at every t (proved, no residuals reported)", PROOF),
}
TOLERANCE = 1e-10  # every residual of A–D must stay below this (float64)
ORTHONORMALITY = 1e-12  # ‖VᵀV − I‖_max of the constructed vectors must stay below this


@dataclass(frozen=True)
class Config:
    """Chapter 2's settings: events A–D over several factorizations."""

    cases: tuple[FactorizationSetting, ...]  # settings checked (unequal ε_l among them)
    tolerance: float = TOLERANCE  # every residual of A–D must stay below this (float64)


def config(profile: str, **overrides: Any) -> Config:
    """The profile's Config; ``overrides`` (None ignored) naming a setting field, e.g. ``steps``,
    apply to every case, the others to Config."""
    check_profile_name(profile)
    S = FactorizationSetting
    if profile == "smoke":
        cases = (
            S(width=20, target_rank=2, depth=2, init_scales=(0.5, 0.8), lr=0.1, weight_decay=0.0, steps=200),
            S(width=30, target_rank=3, depth=3, init_scales=(0.5,) * 3, lr=0.1, weight_decay=1e-3, steps=200, seed=1),
            S(width=24, target_rank=4, depth=4, init_scales=(0.6, 0.4, 0.7, 0.5), lr=0.1, weight_decay=0.0, steps=200, seed=2),
            S(width=16, target_rank=1, depth=5, init_scales=(0.8, 0.9, 0.7, 1.0, 0.6), lr=0.05, weight_decay=1e-2, steps=200, seed=3),
        )
    else:
        cases = (
            S(width=100, target_rank=5, depth=2, init_scales=(0.5, 0.8), lr=0.1, weight_decay=0.0, steps=2000, record_every=10),
            S(width=300, target_rank=5, depth=4, init_scales=(0.5,) * 4, lr=0.1, weight_decay=1e-3, steps=2000, seed=1, record_every=10),
            S(width=200, target_rank=10, depth=3, init_scales=(0.6, 0.4, 0.7), lr=0.1, weight_decay=0.0, steps=2000, seed=2, record_every=10),
            S(width=150, target_rank=20, depth=5, init_scales=(0.8, 0.9, 0.7, 1.0, 0.6), lr=0.05, weight_decay=1e-2, steps=2000, seed=3, record_every=10),
        )
    names = {f.name for f in dataclasses.fields(FactorizationSetting)}
    each = {k: v for k, v in overrides.items() if k in names}
    cfg = Config(cases=tuple(with_overrides(c, **each) for c in cases))
    return with_overrides(cfg, **{k: v for k, v in overrides.items() if k not in names})


@dataclass(frozen=True)
class Case:
    """One setting's numbers.

    Attributes:
      setting: the run's settings.
      steps: (R,) recorded steps.
      dim_s: dim S (the theorem needs ≥ d − 2r*).
      events: (R, 4, L) relative residuals of A–D.
      basis_orthonormality: ‖VᵀV − I‖_max of the constructed v^(l), u^(l), all layers.
    """

    setting: FactorizationSetting
    steps: np.ndarray
    dim_s: int
    events: np.ndarray
    basis_orthonormality: float

    @property
    def label(self) -> str:
        """A one-line description of the setting (figure titles, table rows)."""
        s = self.setting
        return (f"d={s.width}, r*={s.target_rank}, L={s.depth}, "
                f"ε={','.join(f'{e:g}' for e in s.init_scales)}, λ={s.weight_decay:g}")


@dataclass(frozen=True)
class Result:
    """Chapter 2's runs, one Case per setting."""

    config: Config
    cases: tuple[Case, ...]

    @property
    def labels(self) -> list[str]:
        """One label per case."""
        return [c.label for c in self.cases]

    @property
    def dims(self) -> list[int]:
        """dim S per case."""
        return [c.dim_s for c in self.cases]

    @property
    def required_counts(self) -> list[int]:
        """d − 2r* per case (the proof's lower bound on dim S)."""
        return [c.setting.required_count for c in self.cases]


@float64
def run_case(s: FactorizationSetting) -> Case:
    """Build S and the proof's vectors for one setting and record A–D at every recorded step."""
    weights0, target = factorization.initial_state(s)
    vectors = theory.proof_vectors(weights0, target)
    rho_full = theory.rho_trajectory(s.init_scales, s.lr, s.weight_decay, s.steps)
    _, events = factorization.run_gd(
        weights0, target, lr=s.lr, weight_decay=s.weight_decay, steps=s.steps, record_every=s.record_every,
        record=lambda w, t: theory.event_residuals(w, target, vectors, rho_full[t]),
    )
    m = vectors.v.shape[-1]
    eye = jnp.eye(m)
    ortho = max(float(jnp.max(jnp.abs(jnp.swapaxes(b, 1, 2) @ b - eye))) for b in (vectors.v, vectors.u))
    return Case(setting=s, steps=np.arange(0, s.steps + 1, s.record_every), dim_s=m,
                events=np.asarray(events), basis_orthonormality=ortho)


@float64
def run(cfg: Config) -> Result:
    """Every case of the config, in float64."""
    return Result(cfg, tuple(run_case(s) for s in cfg.cases))


def summary(result: Result) -> dict[str, int | float]:
    """The flat metrics of metrics.json: per case dim S, d − 2r*, orthonormality, max residuals."""
    out: dict[str, Any] = {}
    for i, c in enumerate(result.cases, start=1):
        out[f"case{i}_dim_s"] = c.dim_s
        out[f"case{i}_required_count"] = c.setting.required_count
        out[f"case{i}_basis_orthonormality"] = c.basis_orthonormality
        for e, name in enumerate("ABCD"):
            out[f"case{i}_max_residual_{name}"] = float(c.events[:, e].max())
    out["events_max_residual"] = max(float(c.events.max()) for c in result.cases)
    out["cases"] = len(result.cases)
    return out


def table(result: Result, stamp: str) -> str:
    """Per case: dim S against d − 2r*, the largest residual of each event, orthonormality."""
    rows = "\n".join(
        f"| {i + 1} | {c.label} | {c.dim_s} | {c.setting.required_count} | "
        + " | ".join(f"{c.events[:, e].max():.1e}" for e in range(4)) + f" | {c.basis_orthonormality:.1e} |"
        for i, c in enumerate(result.cases)
    )
    return (f"Paper: {PAPER['dim_s'].text()}, events A–D {PAPER['events'].text()} ({PROOF}). "
            f"This run: {stamp}.\n\n"
            "| case | setting | dim S | d − 2r* | max A | max B | max C | max D | ‖VᵀV − I‖ |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + rows)


def paper_rows(folder: str | Path) -> list[tuple[str, claims.PaperValue, str]]:
    """The paper's numbers beside this chapter's, from a stored run (its metrics.json): one
    (quantity, paper value with its source, ours) per number the paper gives.

    Args:
      folder: a run's output folder, e.g. reports/reference/chapters/full/02_proof_verification/.

    Raises:
      FileNotFoundError: no metrics.json there.
    """
    m = json.loads((Path(folder) / "metrics.json").read_text())
    cases = range(1, int(m["cases"]) + 1)
    worst = max(v for k, v in m.items() if re.fullmatch(r"case\d+_max_residual_[A-D]", k))
    return [
        ("dimension of the invariant subspace S, per case", PAPER["dim_s"],
         "; ".join(f"case {i}: {m[f'case{i}_dim_s']} (d − 2r* = {m[f'case{i}_required_count']})" for i in cases)),
        ("residuals of the proof's events A–D", PAPER["events"], f"largest {worst:.1e} over every step and case"),
    ]


def check_claims(metrics: Mapping[str, float], profile: str) -> list[claims.Claim]:
    """Per case: dim S ≥ d − 2r*, every residual < 1e-10, orthonormal vectors; both profiles.

    Raises:
      claims.ClaimsFailed: a claim does not hold (all failures listed).
    """
    check_profile_name(profile)
    claims.require(metrics, "cases")
    out = []
    for i in range(1, int(metrics["cases"]) + 1):
        k = f"case{i}_"
        claims.require(metrics, k + "dim_s", k + "required_count", k + "basis_orthonormality",
                       *(f"{k}max_residual_{e}" for e in "ABCD"))
        worst = max(metrics[f"{k}max_residual_{e}"] for e in "ABCD")
        out += [
            claims.claim(f"case {i}: dim S ≥ d − 2r*", metrics[k + "dim_s"] >= metrics[k + "required_count"],
                         f"{metrics[k + 'dim_s']} vs {metrics[k + 'required_count']}"),
            claims.claim(f"case {i}: events A–D hold to < {TOLERANCE:.0e} at every step", worst < TOLERANCE,
                         f"{worst:.1e}"),
            claims.claim(f"case {i}: the proof's vectors are orthonormal to < {ORTHONORMALITY:.0e}",
                         metrics[k + "basis_orthonormality"] < ORTHONORMALITY,
                         f"{metrics[k + 'basis_orthonormality']:.1e}"),
        ]
    return claims.verify(out)
