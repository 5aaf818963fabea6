"""The chapters' experiments as single calls: config in, NumPy arrays and flat metrics out.

Notebooks and the command line call these; they hold no plotting and no file output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from companion import factorization, theory
from companion.configs import FactorizationSetting, ProofConfig, TheoremConfig


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
