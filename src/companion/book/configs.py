"""Frozen configurations of the chapters' experiments, one per notebook, per profile.

Each config is a frozen dataclass with one comment per field. ``for_profile(profile)`` gives
the settings of that profile; variants come from ``dataclasses.replace``. Both profiles run
the same code path: only sizes differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from companion.book.profiles import PROFILES


def _check_profile_name(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")


def with_overrides(config: Any, **overrides: Any) -> Any:
    """``dataclasses.replace`` that ignores ``None`` (a notebook parameter left unset)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - {f.name for f in dataclasses.fields(config)}
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for {type(config).__name__}")
    return dataclasses.replace(config, **given)


@dataclass(frozen=True)
class FactorizationSetting:
    """One deep matrix factorization run of the theorem (PAPER.md §1)."""

    width: int  # d: every factor is d × d
    rank: int  # r*: rank of the target Φ
    depth: int  # L: number of factors
    scales: tuple[float, ...]  # (ε_1, …, ε_L): ε-scaled orthogonal init per layer
    lr: float  # η: gradient-descent step on ½‖W_{L:1} − Φ‖_F²
    weight_decay: float  # λ: the step is (1 − ηλ) W − η ∇ℓ
    steps: int  # T: number of GD steps
    seed: int = 0  # fixes Φ (Gaussian, rank-r* truncation, unit spectral norm) and Θ(0)
    record_every: int = 1  # keep singular values, angles and residuals every k steps

    def __post_init__(self) -> None:
        validate_setting(self)

    @property
    def required_count(self) -> int:
        """d − 2r*: how many singular values per layer the theorem pins to ρ_l(t)."""
        return self.width - 2 * self.rank


def validate_setting(s: FactorizationSetting) -> None:
    """Reject settings outside the theorem's hypotheses with a message that says what to do."""
    for name in ("width", "rank", "depth", "steps", "seed", "record_every"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if s.rank < 1:
        raise ValueError(f"rank must be ≥ 1, got {s.rank}")
    if s.width <= 2 * s.rank:
        raise ValueError(
            f"the theorem needs d > 2r*: width {s.width} ≤ 2 × rank {s.rank}; "
            "use a larger width or a smaller rank"
        )
    if s.depth < 2:
        raise ValueError(f"depth must be ≥ 2 (a deep factorization), got {s.depth}")
    if len(s.scales) != s.depth:
        raise ValueError(f"give one scale per layer: {len(s.scales)} scales for depth {s.depth}")
    if any(not (e > 0) for e in s.scales):
        raise ValueError(f"every scale ε_l must be > 0, got {list(s.scales)}")
    if not s.lr > 0:
        raise ValueError(f"the step size must be > 0, got {s.lr}")
    if s.weight_decay < 0:
        raise ValueError(f"weight decay must be ≥ 0, got {s.weight_decay}")
    if s.steps < 1 or s.record_every < 1 or s.steps % s.record_every:
        raise ValueError(
            f"steps ({s.steps}) must be a positive multiple of record_every ({s.record_every})"
        )


@dataclass(frozen=True)
class TheoremConfig:
    """Chapter 1 (notebooks/01_theorem.ipynb): the theorem on one factorization."""

    setting: FactorizationSetting  # the run whose singular values and vectors are plotted
    rtol: float = 1e-8  # a singular value "equals ρ_l(t)" within this relative tolerance
    angle_layers: tuple[int, ...] = (1,)  # layers (1-based) whose singular-vector angles are drawn

    @classmethod
    def for_profile(cls, profile: str) -> "TheoremConfig":
        _check_profile_name(profile)
        if profile == "smoke":
            # The talk's theorem figure (PAPER.md §3, "Theorem figure"): d=30, r*=3, L=3.
            # ε = 0.5 and η = 0.1 as in PAPER.md §1's check; λ = 0 as in the talk's figure.
            setting = FactorizationSetting(
                width=30, rank=3, depth=3, scales=(0.5,) * 3, lr=0.1, weight_decay=0.0, steps=300
            )
        else:
            # Larger, deeper and with weight decay (issue 2: d=300, r*=5, L=4, λ > 0).
            setting = FactorizationSetting(
                width=300, rank=5, depth=4, scales=(0.5,) * 4, lr=0.1, weight_decay=1e-3,
                steps=3000, record_every=10,
            )
        return cls(setting=setting)


@dataclass(frozen=True)
class ProofConfig:
    """Chapter 2 (notebooks/02_proof_verification.ipynb): events A–D over several settings."""

    cases: tuple[FactorizationSetting, ...] = field(default_factory=tuple)  # settings checked
    tolerance: float = 1e-10  # every residual of A–D must stay below this (float64)

    @classmethod
    def for_profile(cls, profile: str) -> "ProofConfig":
        _check_profile_name(profile)
        S = FactorizationSetting
        if profile == "smoke":
            cases = (
                S(width=20, rank=2, depth=2, scales=(0.5, 0.8), lr=0.1, weight_decay=0.0, steps=200),
                S(width=30, rank=3, depth=3, scales=(0.5,) * 3, lr=0.1, weight_decay=1e-3, steps=200, seed=1),
                S(width=24, rank=4, depth=4, scales=(0.6, 0.4, 0.7, 0.5), lr=0.1, weight_decay=0.0, steps=200, seed=2),
                S(width=16, rank=1, depth=5, scales=(0.8, 0.9, 0.7, 1.0, 0.6), lr=0.05, weight_decay=1e-2, steps=200, seed=3),
            )
        else:
            cases = (
                S(width=100, rank=5, depth=2, scales=(0.5, 0.8), lr=0.1, weight_decay=0.0, steps=2000, record_every=10),
                S(width=300, rank=5, depth=4, scales=(0.5,) * 4, lr=0.1, weight_decay=1e-3, steps=2000, seed=1, record_every=10),
                S(width=200, rank=10, depth=3, scales=(0.6, 0.4, 0.7), lr=0.1, weight_decay=0.0, steps=2000, seed=2, record_every=10),
                S(width=150, rank=20, depth=5, scales=(0.8, 0.9, 0.7, 1.0, 0.6), lr=0.05, weight_decay=1e-2, steps=2000, seed=3, record_every=10),
            )
        return cls(cases=cases)


@dataclass(frozen=True)
class TrajectoryConfig:
    """Chapter 3 (notebooks/03_compressed_trajectories.ipynb): original vs compressed
    factorization (PAPER.md §3, "factorization trajectories"; γ = 0, p = 1)."""

    width: int  # d
    rank: int  # r*: rank of Φ (rank-r* truncation of a Gaussian, not normalised)
    depth: int  # L
    scale: float  # ε: every factor ε-scaled orthogonal
    lr: float  # η on the mean loss ½·mean((f − Φ)²) (paper: 1e3 at d = 1000)
    budget: int  # most steps
    tol: float  # stop when the training loss is below it (paper: 1e-10)
    rank_estimate: int  # r̂ (= r* in the paper's figure)
    seed: int = 0  # fixes Φ and Θ(0)
    record_every: int = 100  # steps between loss records (and between gap records)
    iterate_every: int = 500  # steps between stored end-to-end matrices (principal components)

    @classmethod
    def for_profile(cls, profile: str) -> "TrajectoryConfig":
        _check_profile_name(profile)
        if profile == "smoke":
            # Same conventions at d = 80, r* = 4: η scaled so that η·σ_max(Φ)^{4/3}/d² stays
            # as far from divergence as the paper's setting.
            return cls(width=80, rank=4, depth=3, scale=1e-3, lr=40.0, budget=30_000, tol=1e-10,
                       rank_estimate=4, record_every=100, iterate_every=100)
        # PAPER.md §3 table, "factorization trajectories".
        return cls(width=1000, rank=10, depth=3, scale=1e-3, lr=1e3, budget=1_000_000, tol=1e-10,
                   rank_estimate=10, record_every=200, iterate_every=2000)


@dataclass(frozen=True)
class CompletionConfig:
    """Chapter 4 (notebooks/04_matrix_completion.ipynb): deep matrix completion (PAPER.md §3)."""

    width: int  # d
    rank: int  # r*
    depth: int  # L
    scale: float  # ε
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
    depth_rank: int  # r* of the depth study (paper: 10)
    depth_fraction: float  # p of the depth study (paper: 0.3)
    depth_hidden: tuple[int, ...]  # hidden widths (paper: 10 … 100)
    depth_lr: tuple[tuple[int, float], ...]  # (depth, η): paper 3e2 for L = 3, 1e2 for L = 2
    depth_budget: int  # most steps (paper: 60,000)
    depth_tol: float  # tolerance (paper: 1e-10)
    seed: int = 0  # fixes Φ, Ω and Θ(0) of the trajectory figure and the depth study

    @classmethod
    def for_profile(cls, profile: str) -> "CompletionConfig":
        _check_profile_name(profile)
        if profile == "smoke":
            return cls(
                width=100, rank=4, depth=3, scale=1e-3, fraction=0.3, lr=3e2, gamma=0.01,
                budget=30_000, tol=1e-9, record_every=100, iterate_every=100,
                sweep_rank_estimates=(4, 6, 8), sweep_trials=2, sweep_budget=40_000, sweep_tol=1e-10,
                depth_width=50, depth_rank=4, depth_fraction=0.4, depth_hidden=(10, 25, 50),
                depth_lr=((3, 1e2), (2, 4e1)), depth_budget=30_000, depth_tol=1e-10,
            )
        # PAPER.md §3 table: completion trajectories, r̂ sweep, depth 2 vs 3.
        return cls(
            width=1000, rank=5, depth=3, scale=1e-3, fraction=0.2, lr=5e3, gamma=0.01,
            budget=170_000, tol=1e-9, record_every=200, iterate_every=2000,
            sweep_rank_estimates=(5, 8, 11, 14, 17, 20), sweep_trials=5, sweep_budget=200_000,
            sweep_tol=1e-10, depth_width=100, depth_rank=10, depth_fraction=0.3,
            depth_hidden=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
            depth_lr=((3, 3e2), (2, 1e2)), depth_budget=60_000, depth_tol=1e-10,
        )
