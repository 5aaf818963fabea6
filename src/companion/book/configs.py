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


# ---------------------------------------------------------------------------------------------
# Deep LoRA chapters (PAPER.md §4). The smoke profile keeps every code path at toy size on a
# CPU: the first 2 of MiniLM's 6 layers, query-value targets (Figure 1: attention+MLP), batches
# of 8 sequences of at most 32 tokens (longer examples dropped, as the paper drops those over
# 128), a 96-example validation subset, a few dozen steps and a larger step (1e-3) so that
# those steps move the adapters. Its numbers are regression checks, not replications.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdaptationSetting:
    """What every fine-tuning run of chapters 5–7 shares (PAPER.md §4, "Training")."""

    model: str  # backbone: "auto" (bert-base-cased if it can be loaded, else the packaged MiniLM), a name or folder
    num_layers: int | None  # keep the first k encoder layers (smoke); None: all (paper)
    max_seq_length: int  # paper: 128; longer train and validation examples are dropped
    batch_size: int  # paper: 16
    lr: float  # AdamW step (paper: 1e-4, constant)
    eval_examples: int | None  # validation examples scored (None: the full split, paper)
    targets: str  # adapted matrices (paper's few-shot and GLUE runs: all-dense)
    rank: int = 8  # vanilla LoRA rank (paper: 8)
    depth: int = 3  # Deep LoRA factors (paper: 3)
    scale_init: float = 1e-3  # Deep LoRA ε (paper: 1e-3)
    online: bool = False  # allow hub downloads (bert-base-cased, GLUE); offline is the default
    data_dir: str | None = None  # GLUE folder (default: COMPANION_DATA_DIR)
    parallel_seeds: int | None = None  # most seeds in one vectorised program (memory); None: all

    @classmethod
    def for_profile(cls, profile: str, **changes: Any) -> "AdaptationSetting":
        _check_profile_name(profile)
        if profile == "smoke":
            base = cls(model="minilm", num_layers=2, max_seq_length=32, batch_size=8, lr=1e-3,
                       eval_examples=96, targets="query-value")
        else:  # PAPER.md §4
            # Wide all-dense Deep LoRA on BERT-base holds ~195M adapter parameters per seed (with
            # the gradient and AdamW's two moments ~3 GB): 5 seeds at a time fit an 80 GB GPU.
            base = cls(model="auto", num_layers=None, max_seq_length=128, batch_size=16, lr=1e-4,
                       eval_examples=None, targets="all-dense", parallel_seeds=5)
        return dataclasses.replace(base, **changes)


@dataclass(frozen=True)
class SubspaceConfig:
    """Chapter 5 (notebooks/05_invariant_subspaces_bert.ipynb): the paper's Figure 1."""

    setting: AdaptationSetting  # shared fine-tuning settings (targets: attention-mlp)
    task: str  # paper: STS-B, full training split
    steps: int  # paper: 2000
    lr_end: float  # linear decay of the step to this value (paper: 1e-4 → 1e-5)
    record_every: int  # steps between snapshots of every ΔW's singular subspaces
    top_values: int = 10  # singular values shown per ΔW (paper: top 10)
    subspace_rank: int = 8  # dimension of the compared singular subspaces (paper: top 8)
    seed: int = 0  # fixes head, adapters, dropout and batch order

    @classmethod
    def for_profile(cls, profile: str, **setting: Any) -> "SubspaceConfig":
        """``setting``: changes to the shared AdaptationSetting (e.g. online=True)."""
        _check_profile_name(profile)
        # Figure 1 adapts attention+MLP with wide depth-3 Deep LoRA (PAPER.md §4).
        setting = AdaptationSetting.for_profile(profile, **{"targets": "attention-mlp", **setting})
        if profile == "smoke":
            return cls(setting=setting, task="stsb", steps=60, lr_end=1e-4, record_every=5)
        return cls(setting=setting, task="stsb", steps=2000, lr_end=1e-5, record_every=50)


@dataclass(frozen=True)
class FewShotConfig:
    """Chapter 6 (notebooks/06_fewshot_stsb.ipynb): few-shot STS-B, numerical ranks, rank
    robustness, and compressed vs wide vs random-narrow (PAPER.md §4)."""

    setting: AdaptationSetting  # shared fine-tuning settings
    samples: tuple[int, ...]  # few-shot sizes of the curve (paper: 16, 64, 256)
    seeds: int  # seeds per size and method, paired (paper: 20)
    steps: int  # steps of the curve runs (paper: 500)
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

    @classmethod
    def for_profile(cls, profile: str, **setting: Any) -> "FewShotConfig":
        """``setting``: changes to the shared AdaptationSetting (e.g. online=True)."""
        _check_profile_name(profile)
        if profile == "smoke":
            return cls(setting=AdaptationSetting.for_profile(profile, **setting), samples=(16, 64), seeds=2, steps=30,
                       ranks=(8, 32), rank_seeds=2, rank_samples=16, rank_steps=30,
                       compare_samples=16, compare_steps=30, compare_eval_every=5)
        return cls(setting=AdaptationSetting.for_profile(profile, **setting), samples=(16, 64, 256), seeds=20, steps=500,
                   ranks=(8, 16, 32, 64), rank_seeds=5, rank_samples=16, rank_steps=200,
                   compare_samples=16, compare_steps=200, compare_eval_every=10)


@dataclass(frozen=True)
class GlueLimitedConfig:
    """Chapter 7 (notebooks/07_glue_limited_data.ipynb): limited-data GLUE, Deep LoRA − LoRA
    paired by seed (PAPER.md §4)."""

    setting: AdaptationSetting  # shared fine-tuning settings
    samples: int  # training examples per task, drawn with replacement (paper: 1024)
    seeds: int  # paired seeds per task (paper: 10)
    steps: int  # steps per run (paper: 1000)
    steps_by_task: tuple[tuple[str, int], ...] = ()  # exceptions (paper: SST-2 600)
    tasks: tuple[str, ...] = ()  # () = every task whose data is present
    deep_method: str = "deep-lora"  # wide, as the paper's reported runs

    @classmethod
    def for_profile(cls, profile: str, **setting: Any) -> "GlueLimitedConfig":
        """``setting``: changes to the shared AdaptationSetting (e.g. online=True)."""
        _check_profile_name(profile)
        if profile == "smoke":
            return cls(setting=AdaptationSetting.for_profile(profile, **setting), samples=64, seeds=2, steps=25)
        return cls(setting=AdaptationSetting.for_profile(profile, **setting), samples=1024, seeds=10, steps=1000,
                   steps_by_task=(("sst2", 600),))

    def steps_for(self, task: str) -> int:
        return dict(self.steps_by_task).get(task, self.steps)
