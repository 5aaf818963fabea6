"""Frozen configurations of the chapters' experiments, one per notebook, per profile.

Each config is a frozen dataclass with one comment per field. ``for_profile(profile)`` gives
the settings of that profile; variants come from ``dataclasses.replace``. Both profiles run
the same code path: only sizes differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from companion.profiles import PROFILES


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
