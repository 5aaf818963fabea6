"""The chapters' experiments as single calls: config in, NumPy arrays and flat metrics out.

Notebooks and the command line call these; they hold no plotting and no file output.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from companion.linear import completion, compression, factorization, theory
from companion.book.configs import CompletionConfig, FactorizationSetting, ProofConfig, TrajectoryConfig


@dataclass(frozen=True)
class TheoremRun:
    """Everything chapter 1 plots, at the recorded steps (R = T/k + 1 of them).

    Attributes:
      setting: the run's settings.
      steps: (R,) recorded steps t.
      singular_values: (R, L, d) σ_i(W_l(t)), descending.
      rho: (R, L) ρ_l(t) from the recursion (1).
      rho_full: (T + 1, L) ρ_l(t) at every step.
      counts: (R, L) number of σ_i within ``rtol`` relative of ρ_l(t).
      rel_dev: (R, L) largest relative deviation of the d − 2r* σ_i closest to ρ_l(t).
      rho_measured: (R, L) mean of the d − 2r* σ_i closest to ρ_l(t).
      events: (R, 4, L) relative residuals of A, B, C, D.
      angles: (R, L, d) angles of right singular vectors to their initial positions, or None.
      loss: (R,) ½‖W_{L:1} − Φ‖_F².
      dim_s: dim S of the proof.
      wall_time_s: seconds for the GD run and its records (compilation included).
    """

    setting: FactorizationSetting
    steps: np.ndarray
    singular_values: np.ndarray
    rho: np.ndarray
    rho_full: np.ndarray
    counts: np.ndarray
    rel_dev: np.ndarray
    rho_measured: np.ndarray
    events: np.ndarray
    angles: np.ndarray | None
    loss: np.ndarray
    dim_s: int
    wall_time_s: float

    def summary(self) -> dict[str, Any]:
        """The CLI's and metrics' headline numbers (issue 2, item 5)."""
        s = self.setting
        return {
            "required_count": s.required_count,
            "min_count": int(self.counts.min()),
            "max_rel_dev": float(self.rel_dev.max()),
            "events_max_residual": float(self.events.max()),
            "dim_s": self.dim_s,
            "final_loss": float(self.loss[-1]),
        }


def initial_state(s: FactorizationSetting) -> tuple[jax.Array, jax.Array]:
    """Θ(0) (L, d, d) and Φ (d, d) from the setting's seed (one key split in two)."""
    k_init, k_target = jax.random.split(jax.random.key(s.seed))
    weights0 = factorization.scaled_orthogonal(k_init, s.width, s.scales)
    target = factorization.low_rank_target(k_target, s.width, s.rank)
    return weights0, target


def run_theorem(s: FactorizationSetting, rtol: float = 1e-8, angles: bool = True) -> TheoremRun:
    """Train the factorization and measure the theorem's claims at every recorded step.

    Args:
      s: the setting.
      rtol: tolerance for "σ_i equals ρ_l(t)".
      angles: also record singular-vector angles (one full SVD per layer per record).

    Returns:
      TheoremRun.

    Raises:
      ValueError: gradient descent diverged (lower the step size).
    """
    start = time.perf_counter()
    weights0, target = initial_state(s)
    vectors = theory.proof_vectors(weights0, target)
    m = vectors.v.shape[-1]
    rho_full = theory.rho_trajectory(s.scales, s.lr, s.weight_decay, s.steps)
    reference = None
    if angles:
        weights1 = factorization.gd_step(weights0, target, s.lr, s.weight_decay)
        reference = theory.learning_reference(weights1, rho_full[1], m)

    def record(w, t):
        rho = rho_full[t]
        out = {"events": theory.event_residuals(w, target, vectors, rho), "loss": factorization.loss(w, target)}
        if angles:
            _, sv, vt = jnp.linalg.svd(w)
            out["angles"] = theory.singular_vector_angles(
                jnp.swapaxes(vt, 1, 2), sv, rho, vectors.v, reference
            )
        else:
            sv = jnp.linalg.svd(w, compute_uv=False)
        out["sv"] = sv
        return out

    _, rec = factorization.run_gd(
        weights0, target, lr=s.lr, weight_decay=s.weight_decay, steps=s.steps,
        record_every=s.record_every, record=record,
    )
    rec = factorization.as_numpy(rec)
    if angles:
        # At t = 0 every σ equals ε_l and any orthonormal basis is a set of singular vectors:
        # the initial vectors are, by definition, the ones the later vectors are compared with.
        rec["angles"][0] = 0.0
    steps = np.arange(0, s.steps + 1, s.record_every)
    rho_full = np.asarray(rho_full)
    rho = rho_full[steps]
    if not (np.all(np.isfinite(rec["sv"])) and np.all(np.isfinite(rec["loss"]))):
        raise ValueError(f"gradient descent diverged with step size {s.lr}; lower the step size")
    return TheoremRun(
        setting=s,
        steps=steps,
        singular_values=rec["sv"],
        rho=rho,
        rho_full=rho_full,
        counts=np.asarray(theory.count_equal_to_rho(rec["sv"], rho, rtol)),
        rel_dev=np.asarray(theory.rho_deviation(rec["sv"], rho, s.required_count)),
        rho_measured=np.asarray(theory.rho_block_mean(rec["sv"], rho, s.required_count)),
        events=rec["events"],
        angles=rec.get("angles"),
        loss=rec["loss"],
        dim_s=m,
        wall_time_s=time.perf_counter() - start,
    )


@dataclass(frozen=True)
class ProofRun:
    """Chapter 2's numbers for one setting.

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


def run_proof(config: ProofConfig) -> list[ProofRun]:
    """Build S and the proof's vectors for every case and record A–D over t."""
    runs = []
    for s in config.cases:
        weights0, target = initial_state(s)
        vectors = theory.proof_vectors(weights0, target)
        rho_full = theory.rho_trajectory(s.scales, s.lr, s.weight_decay, s.steps)
        _, events = factorization.run_gd(
            weights0, target, lr=s.lr, weight_decay=s.weight_decay, steps=s.steps,
            record_every=s.record_every,
            record=lambda w, t: theory.event_residuals(w, target, vectors, rho_full[t]),
        )
        m = vectors.v.shape[-1]
        eye = jnp.eye(m)
        ortho = max(
            float(jnp.max(jnp.abs(jnp.swapaxes(b, 1, 2) @ b - eye))) for b in (vectors.v, vectors.u)
        )
        runs.append(
            ProofRun(
                setting=s,
                steps=np.arange(0, s.steps + 1, s.record_every),
                dim_s=m,
                events=np.asarray(events),
                basis_orthonormality=ortho,
            )
        )
    return runs


# ---------------------------------------------------------------------------------------------
# Chapters 3 and 4: compression and deep matrix completion (PAPER.md §2–3).



def problem_key(seed: int) -> jax.Array:
    """Key of Φ and Ω for a seed (Θ(0) uses ``jax.random.key(seed)`` itself)."""
    return jax.random.fold_in(jax.random.key(seed), 1)


def principal_components(reference: np.ndarray, *others: np.ndarray, count: int = 2) -> list[np.ndarray]:
    """Project trajectories of end-to-end matrices on the principal components of ``reference``.

    Args:
      reference: (R, d, d) the original run's iterates (the PCs are theirs, as in the paper).
      others: more (R_i, d, d) trajectories, projected on the same components.
      count: number of components.

    Returns:
      [(R, count), (R_i, count), …] coordinates after removing the reference's mean.
    """
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    mean = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    comps = vt[:count]
    return [(t.reshape(t.shape[0], -1).astype(np.float64) - mean) @ comps.T for t in (reference, *others)]


@dataclass(frozen=True)
class TrajectoryRun:
    """Chapter 3's numbers: timed runs, principal components and the gap against theory."""

    config: TrajectoryConfig
    original: completion.CompletionRun
    compressed: completion.CompletionRun
    pcs: list  # [(R, 2) original, (R', 2) compressed]
    gap_steps: np.ndarray  # (G,)
    gap: np.ndarray  # (G,) ‖f(Θ(t)) − f_C(t)‖_F
    gap_exact: np.ndarray  # (G,) √(d − 2r*) ∏ ρ_l(t)
    gap_bound: float  # (d − 2r̂) ∏ ε_l² (bound on gap²)
    distance: np.ndarray  # (G,) ‖f(Θ(t)) − Φ‖_F of the original run, for scale


def run_trajectories(cfg: TrajectoryConfig) -> TrajectoryRun:
    """Original vs compressed (γ = 0) deep matrix factorization (PAPER.md §2, §3b)."""
    problem = completion.make_problem(problem_key(cfg.seed), cfg.width, cfg.rank, 1.0)
    kw = dict(depth=cfg.depth, scale=cfg.scale, lr=cfg.lr, rank_estimate=cfg.rank_estimate,
              budget=cfg.budget, tol=cfg.tol, seed=cfg.seed, record_every=cfg.record_every,
              iterate_every=cfg.iterate_every)
    original = completion.run_method("original", problem, **kw)
    compressed = completion.run_method("compressed-gamma0", problem, **kw)
    pcs = principal_components(original.iterates, compressed.iterates)
    # The gap, in float64 and in one scan, over the original's steps to tolerance.
    weights0 = completion.init_original(jax.random.key(cfg.seed), cfg.width, cfg.depth, cfg.scale)
    c0 = completion.init_compressed(weights0, problem, cfg.scale, cfg.rank_estimate)
    lr_sum = cfg.lr / cfg.width**2  # mean loss with step η = sum loss with step η/d²
    steps = int(np.ceil(max(original.steps_to_tol, cfg.record_every) / cfg.record_every)) * cfg.record_every
    tracked = compression.track_gap(weights0, problem.target, c0, lr=lr_sum, steps=steps,
                                    record_every=cfg.record_every)
    gap_steps = np.arange(0, steps + 1, cfg.record_every)
    rho = np.asarray(theory.rho_trajectory((cfg.scale,) * cfg.depth, lr_sum, 0.0, steps))[gap_steps]
    return TrajectoryRun(
        config=cfg, original=original, compressed=compressed, pcs=pcs, gap_steps=gap_steps,
        gap=np.asarray(tracked["gap"]),
        gap_exact=np.sqrt(cfg.width - 2 * cfg.rank) * np.prod(rho, axis=1),
        gap_bound=compression.gap_bound(cfg.width, cfg.rank_estimate, (cfg.scale,) * cfg.depth),
        distance=np.sqrt(2 * np.asarray(tracked["loss_original"])),
    )


@dataclass(frozen=True)
class CompletionStudy:
    """Chapter 4's numbers.

    Attributes:
      runs: {method: CompletionRun} for original, compressed (γ), compressed-gamma0.
      pcs: {method: (R, 2)} projections on the original run's principal components.
      sweep: rows (rank_estimate, trial, method, steps, wall_time_s, converged, recovery_error).
      depth: rows (depth, hidden, steps, converged, recovery_error).
    """

    config: CompletionConfig
    runs: dict
    pcs: dict
    sweep: list
    depth: list


def run_completion_study(cfg: CompletionConfig) -> CompletionStudy:
    """The three studies of PAPER.md §3 (a), (c), (d) with one interface and the same η, tol
    and budget for every method within a study."""
    problem = completion.make_problem(problem_key(cfg.seed), cfg.width, cfg.rank, cfg.fraction)
    kw = dict(depth=cfg.depth, scale=cfg.scale, lr=cfg.lr, rank_estimate=cfg.rank, gamma=cfg.gamma,
              budget=cfg.budget, tol=cfg.tol, seed=cfg.seed, record_every=cfg.record_every,
              iterate_every=cfg.iterate_every)
    runs = {m: completion.run_method(m, problem, **kw) for m in ("original", "compressed", "compressed-gamma0")}
    projected = principal_components(*(runs[m].iterates for m in runs))
    pcs = dict(zip(runs, projected))

    sweep = []
    for trial in range(cfg.sweep_trials):
        seed = cfg.seed + 1 + trial
        trial_problem = completion.make_problem(problem_key(seed), cfg.width, cfg.rank, cfg.fraction)
        for r_hat in cfg.sweep_rank_estimates:
            for method in ("compressed", "narrow"):
                run = completion.run_method(
                    method, trial_problem, depth=cfg.depth, scale=cfg.scale, lr=cfg.lr,
                    rank_estimate=r_hat, gamma=cfg.gamma, budget=cfg.sweep_budget, tol=cfg.sweep_tol,
                    seed=seed, record_every=cfg.record_every,
                )
                sweep.append(dict(rank_estimate=r_hat, trial=trial, method=method,
                                  steps=run.steps_to_tol, wall_time_s=run.wall_time_s,
                                  converged=int(run.converged),
                                  recovery_error=float(run.recovery_error[-1])))

    depth_rows = []
    depth_problem = completion.make_problem(problem_key(cfg.seed), cfg.depth_width, cfg.depth_rank,
                                            cfg.depth_fraction)
    for depth, lr in cfg.depth_lr:
        for hidden in cfg.depth_hidden:
            run = completion.run_method(
                "narrow", depth_problem, depth=depth, scale=cfg.scale, lr=lr, hidden=hidden,
                budget=cfg.depth_budget, tol=cfg.depth_tol, seed=cfg.seed, record_every=cfg.record_every,
            )
            depth_rows.append(dict(depth=depth, hidden=hidden, steps=run.steps_to_tol,
                                   converged=int(run.converged),
                                   recovery_error=float(run.recovery_error[-1])))
    return CompletionStudy(config=cfg, runs=runs, pcs=pcs, sweep=sweep, depth=depth_rows)


def compress_point(s: FactorizationSetting, rank_estimate: int | None = None) -> dict[str, Any]:
    """One factorization run, original and compressed (γ = 0) side by side (``companion compress``).

    Same conventions as ``run_theorem`` (Φ of unit spectral norm, η on ½‖·‖_F²).

    Returns:
      max_gap_over_bound: max_t gap(t)² / ((d − 2r̂) ∏ε_l²) (Prop. 2 says ≤ 1);
      max_rel_err_vs_exact: max_t |gap − √(d − 2r̂)∏ρ_l(t)| / √(d − 2r̂)∏ρ_l(t), the exact gap
        (with r̂ = r*, the default, this is √(d − 2r*)∏ρ_l(t); for r̂ > r* the 2(r̂ − r*) extra
        directions lie in the ρ block, so only d − 2r̂ of its directions are dropped);
      and the final losses, parameter counts and wall time.
    """
    r_hat = s.rank if rank_estimate is None else rank_estimate
    if r_hat < s.rank or 2 * r_hat >= s.width:
        raise ValueError(f"rank estimate {r_hat} must satisfy r* = {s.rank} ≤ r̂ and 2r̂ < d = {s.width}")
    start = time.perf_counter()
    weights0, target = initial_state(s)
    c = compression.compress_factorization(weights0, target, s.scales, r_hat)
    tracked = compression.track_gap(weights0, target, c, lr=s.lr, steps=s.steps, record_every=s.record_every)
    gap = np.asarray(tracked["gap"])
    if not np.all(np.isfinite(gap)) or not np.all(np.isfinite(np.asarray(tracked["loss_original"]))):
        raise ValueError(f"gradient descent diverged with step size {s.lr}; lower the step size")
    rho = np.asarray(theory.rho_trajectory(s.scales, s.lr, s.weight_decay, s.steps))[:: s.record_every]
    exact = np.sqrt(s.width - 2 * r_hat) * np.abs(np.prod(rho, axis=1))
    return {
        "max_gap_over_bound": float(np.max(gap**2) / compression.gap_bound(s.width, r_hat, s.scales)),
        "max_rel_err_vs_exact": float(np.max(np.abs(gap - exact) / exact)),
        "final_gap": float(gap[-1]),
        "final_loss_original": float(tracked["loss_original"][-1]),
        "final_loss_compressed": float(tracked["loss_compressed"][-1]),
        "params_original": s.depth * s.width**2,
        "params_compressed": compression.parameter_count(s.width, s.width, r_hat, s.depth),
        "rank_estimate": r_hat,
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
