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
from companion.adapt import glue as data, finetune, lora
from companion.book.configs import (AdaptationSetting, CompletionConfig, FactorizationSetting, FewShotConfig,
                               GlueLimitedConfig, ProofConfig, SubspaceConfig, TrajectoryConfig)


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


# ---------------------------------------------------------------------------------------------
# Deep LoRA chapters (PAPER.md §4): BERT fine-tuning experiments of chapters 5–7. Every run goes
# through ``finetune.finetune_seeds`` (seeds of one setting vectorised with jax.vmap).
# ---------------------------------------------------------------------------------------------


def finetune_config(setting: AdaptationSetting, task: str, method: str, backbone: str, *,
                    steps: int, samples: int | None, **changes: Any) -> finetune.FinetuneConfig:
    """The ``FinetuneConfig`` of one run of chapters 5–7 (the shared settings plus the run's)."""
    s = setting
    return finetune.FinetuneConfig(
        task=task, method=method, samples=samples, steps=steps, rank=s.rank, targets=s.targets,
        model=backbone, num_layers=s.num_layers, lr=s.lr, batch_size=s.batch_size,
        max_seq_length=s.max_seq_length, depth=s.depth, scale_init=s.scale_init,
        eval_examples=s.eval_examples, data_dir=s.data_dir, online=s.online, **changes)


def seeds_in_chunks(cfg: finetune.FinetuneConfig, seeds: list[int], chunk: int | None,
                    **kwargs: Any) -> list[dict]:
    """``finetune_seeds`` over ``seeds`` at most ``chunk`` at a time (None: all in one program);
    returns the per-seed runs in order. Chunks bound the memory of wide adapters."""
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"parallel_seeds must be a positive integer or None, got {chunk!r}")
    step = chunk or len(seeds)
    runs: list[dict] = []
    for i in range(0, len(seeds), step):
        runs += finetune.finetune_seeds(cfg, seeds[i:i + step], **kwargs)["runs"]
    return runs


def subspace_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine of the principal angles between span(a) and span(b) (Figure 1's "cosine").

    Args:
      a, b: (n, k) matrices with orthonormal columns (top-k singular vectors).

    Returns:
      (1/k) Σ_i cos θ_i ∈ [0, 1], where cos θ_i are the singular values of aᵀb: 1 when the two
      subspaces coincide, 0 when they are orthogonal.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"compare two (n, k) bases of equal shape, got {a.shape} and {b.shape}")
    s = np.linalg.svd(a.T @ b, compute_uv=False)
    return float(np.mean(np.clip(s, 0.0, 1.0)))


@dataclass(frozen=True)
class SubspaceRun:
    """Everything chapter 5 (Figure 1) plots, for the A adapted layers at R snapshots.

    Attributes:
      steps: (R,) snapshot steps (0 = before training, the last = the final step).
      layers: the A adapted layer names.
      top_values: (A, k) the top-k singular values of every ΔW at the end.
      cos_left, cos_right: (R, A) mean cosine of the principal angles between the top-r left
        (output-side) / right (input-side) singular subspace of ΔW(t) and that of the final ΔW.
      loss_steps, loss: the training loss (every logged step).
      result: the run's ``finetune_seeds`` entry (score, initial score, counts, backbone, …).
      wall_time_s: seconds for the run and its snapshots.
    """

    steps: np.ndarray
    layers: tuple[str, ...]
    top_values: np.ndarray
    cos_left: np.ndarray
    cos_right: np.ndarray
    loss_steps: np.ndarray
    loss: np.ndarray
    result: dict
    wall_time_s: float


def run_subspaces(cfg: SubspaceConfig) -> SubspaceRun:
    """Fine-tune with wide Deep LoRA and follow the singular subspaces of every ΔW (Figure 1).

    At every ``record_every`` steps each adapted layer's ΔW = W_3 W_2 W_1 (paper layout
    (out, in)) is decomposed in float64 and its top ``subspace_rank`` left and right singular
    vectors kept; afterwards each snapshot is compared with the final one (``subspace_cosine``).
    """
    start = time.perf_counter()
    backbone = finetune.choose_backbone(cfg.setting.model, cfg.setting.online)
    run_cfg = finetune_config(cfg.setting, cfg.task, "deep-lora", backbone, steps=cfg.steps, samples=None,
                              seed=cfg.seed, lr_end=cfg.lr_end)
    k = cfg.subspace_rank
    snaps: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    names: list[str] = []

    def observe(step, _seed_index, model):
        names[:] = [n for n, _ in lora.adapted_layers(model)]
        bases = []
        for _, layer in lora.adapted_layers(model):
            delta = np.asarray(layer.adapter.delta(), dtype=np.float64).T  # (out, in), the paper's layout
            u, s, vt = np.linalg.svd(delta, full_matrices=False)
            bases.append((u[:, :k], vt[:k].T, s[: cfg.top_values]))
        snaps[step] = bases

    record = sorted(set(range(0, cfg.steps + 1, cfg.record_every)) | {cfg.steps})
    out = finetune.finetune_seeds(run_cfg, [cfg.seed], log_every=max(1, cfg.steps // 300),
                                  observe_at=record, observe=observe)
    final = snaps[cfg.steps]
    cos_left = np.array([[subspace_cosine(u, fu) for (u, _, _), (fu, _, _) in zip(snaps[t], final)] for t in record])
    cos_right = np.array([[subspace_cosine(v, fv) for (_, v, _), (_, fv, _) in zip(snaps[t], final)] for t in record])
    run = out["runs"][0]
    loss = np.array(run["train_loss"], dtype=np.float64)
    return SubspaceRun(steps=np.array(record), layers=tuple(names),
                       top_values=np.array([s for _, _, s in final]), cos_left=cos_left, cos_right=cos_right,
                       loss_steps=loss[:, 0].astype(int), loss=loss[:, 1], result=run,
                       wall_time_s=time.perf_counter() - start)


@dataclass(frozen=True)
class FewShotStudy:
    """Everything chapter 6 plots.

    Attributes:
      curve: one row per (method, samples, seed): the validation score (paper: Pearson).
      ranks: {method: numerical rank of every adapted ΔW} at the largest sample size, seed 0.
      rank_sweep: one row per (method, rank, seed): the score.
      compare: {variant: {"curve": [(step, score)], "loss": [(step, loss)]}} for compressed,
        wide and random-narrow Deep LoRA.
      backbone: the backbone's description.
      n_validation: validation examples scored.
      wall_time_s: seconds for the whole study.
    """

    curve: list[dict]
    ranks: dict[str, list[int]]
    rank_sweep: list[dict]
    compare: dict[str, dict]
    backbone: str
    n_validation: int
    wall_time_s: float


def run_fewshot_study(cfg: FewShotConfig) -> FewShotStudy:
    """Few-shot STS-B (PAPER.md §4): vanilla LoRA r vs Deep LoRA over sample sizes, the
    numerical ranks of their updates, the rank-robustness sweep and compressed vs wide vs
    random-narrow. Vanilla and deep runs are paired by seed (same subset, head, batches)."""
    start = time.perf_counter()
    s = cfg.setting
    backbone = finetune.choose_backbone(s.model, s.online)
    seeds = list(range(cfg.seeds))
    curve, ranks = [], {}
    for n in cfg.samples:
        for method in ("lora", cfg.deep_method):
            c = finetune_config(s, "stsb", method, backbone, steps=cfg.steps, samples=n)
            runs = seeds_in_chunks(c, seeds, s.parallel_seeds, numerical_ranks=n == max(cfg.samples))
            for run in runs:
                curve.append(dict(method=method, samples=n, seed=run["seed"], value=run["value"],
                                  initial_value=run["initial_value"]))
                if "numerical_ranks" in run and run["seed"] == 0:
                    ranks[method] = list(run["numerical_ranks"].values())
    n_validation = runs[0]["n_validation"]
    sweep = []
    for r in cfg.ranks:
        # Paper: narrow depth-3 Deep LoRA of width r against vanilla LoRA of rank r.
        for method in ("lora", "deep-lora-narrow"):
            c = dataclasses.replace(finetune_config(s, "stsb", method, backbone, steps=cfg.rank_steps,
                                                    samples=cfg.rank_samples), rank=r)
            runs = seeds_in_chunks(c, list(range(cfg.rank_seeds)), s.parallel_seeds)
            sweep += [dict(method=method, rank=r, seed=run["seed"], value=run["value"]) for run in runs]
    compare = {}
    every = cfg.compare_eval_every
    evals = tuple(range(every, cfg.compare_steps, every))
    variants = {
        "compressed": dict(method="deep-lora-compressed", inner_lr=cfg.compressed_inner_lr, gamma=cfg.gamma),
        "wide": dict(method="deep-lora"),
        "random-narrow": dict(method="deep-lora-narrow"),
    }
    for name, kw in variants.items():
        method = kw.pop("method")
        c = finetune_config(s, "stsb", method, backbone, steps=cfg.compare_steps, samples=cfg.compare_samples, **kw)
        run = finetune.finetune_seeds(c, [0], log_every=1, eval_at=evals)["runs"][0]
        compare[name] = {"curve": run["curve"], "loss": run["train_loss"]}
    return FewShotStudy(curve=curve, ranks=ranks, rank_sweep=sweep, compare=compare,
                        backbone=finetune.backbone_note(backbone, s.num_layers), n_validation=n_validation,
                        wall_time_s=time.perf_counter() - start)


def paired_deltas(rows: list[dict], deep: str, vanilla: str = "lora") -> dict[str, Any]:
    """Δ = deep − vanilla per seed, per task and overall (PAPER.md §4's limited-data table).

    Args:
      rows: dicts with task, method, seed, value; every (task, seed) must have both methods.

    Returns:
      {"per_task": {task: {"deltas": [Δ per seed], "mean", "std", "seeds"}}, "overall_mean" (mean
      of every per-seed Δ), "pooled_std" (√ of the seed-count-weighted mean of the per-task
      variances, ddof 1)}.

    Raises:
      ValueError: a (task, seed) lacks one of the two methods.
    """
    by = {(r["task"], r["seed"], r["method"]): r["value"] for r in rows}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    per_task, all_d, num, den = {}, [], 0.0, 0
    for t in tasks:
        seeds = sorted({s for (tt, s, _) in by if tt == t})
        missing = [s for s in seeds if (t, s, deep) not in by or (t, s, vanilla) not in by]
        if missing:
            raise ValueError(f"task {t}: seeds {missing} lack a {deep} or {vanilla} run; Δ needs pairs")
        d = np.array([by[(t, s, deep)] - by[(t, s, vanilla)] for s in seeds])
        std = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
        per_task[t] = {"deltas": d.tolist(), "mean": float(d.mean()), "std": std, "seeds": len(d)}
        all_d += d.tolist()
        if len(d) > 1:
            num += (len(d) - 1) * std**2
            den += len(d) - 1
    return {"per_task": per_task, "overall_mean": float(np.mean(all_d)),
            "pooled_std": float(np.sqrt(num / den)) if den else float("nan")}


@dataclass(frozen=True)
class GlueStudy:
    """Chapter 7: every run's score and the paired differences.

    Attributes:
      rows: one per (task, method, seed): task, method, seed, value, metric, steps.
      deltas: ``paired_deltas(rows, deep)``.
      tasks: the tasks run; absent: the tasks without data here (listed, not run).
      backbone: the backbone's description.
      wall_time_s: seconds.
    """

    rows: list[dict]
    deltas: dict[str, Any]
    tasks: tuple[str, ...]
    absent: tuple[str, ...]
    backbone: str
    wall_time_s: float


def run_glue_limited(cfg: GlueLimitedConfig) -> GlueStudy:
    """Limited-data GLUE (PAPER.md §4): per task, vanilla LoRA and Deep LoRA on the same
    ``samples`` examples (drawn with replacement by each seed), paired by seed."""
    start = time.perf_counter()
    s = cfg.setting
    backbone = finetune.choose_backbone(s.model, s.online)
    if s.online:
        present, absent = list(data.TASKS), []
    else:
        present, absent = data.available_tasks(s.data_dir), data.missing_tasks(s.data_dir)
    tasks = list(cfg.tasks) or present
    unknown = [t for t in tasks if t not in data.TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(data.TASKS)}")
    lacking = [t for t in tasks if t not in present]
    if lacking:
        raise FileNotFoundError(f"no GLUE data for {lacking} in {data.data_dir(s.data_dir)}; "
                                "set COMPANION_DATA_DIR, go online, or leave them out of tasks")
    if not tasks:
        raise FileNotFoundError(f"no GLUE task has data in {data.data_dir(s.data_dir)}; set COMPANION_DATA_DIR or go online")
    rows = []
    for task in tasks:
        for method in ("lora", cfg.deep_method):
            c = finetune_config(s, task, method, backbone, steps=cfg.steps_for(task), samples=cfg.samples)
            for run in seeds_in_chunks(c, list(range(cfg.seeds)), s.parallel_seeds):
                rows.append(dict(task=task, method=method, seed=run["seed"], value=run["value"],
                                 metric=run["metric"], steps=c.steps))
    return GlueStudy(rows=rows, deltas=paired_deltas(rows, cfg.deep_method), tasks=tuple(tasks),
                     absent=tuple(t for t in absent if t not in tasks), backbone=finetune.backbone_note(backbone, s.num_layers),
                     wall_time_s=time.perf_counter() - start)
