"""The invariant-subspace theorem and the objects of its proof (arXiv:2406.04112, the
invariant-subspace theorem; proof sketch on slides 8–9 of the authors' ICML 2024 talk).

Theorem (d > 2r*): with ε_l-scaled orthogonal initialisation, gradient descent on the deep
matrix factorization keeps, for every layer and every step,

    W_l(t) = U_l · blockdiag(W̃_l(t) ∈ R^{2r*×2r*}, ρ_l(t) I_{d−2r*}) · V_lᵀ,   V_{l+1} = U_l,

with ρ_l(0) = ε_l and ρ_l(t) = ρ_l(t−1) · (1 − ηλ − η ∏_{k≠l} ρ_k(t−1)²)   (recursion (1)).

The proof builds, from Φ and Θ(0) alone, m = dim S ≥ d − 2r* pairs of unit vectors
(v_i^(l), u_i^(l)) per layer for which four events hold at every t:

    A(t)  W_l(t) v_i = ρ_l(t) u_i          B(t)  W_l(t)ᵀ u_i = ρ_l(t) v_i
    C(t)  Φᵀ W_{L:l+1}(t) u_i = 0           D(t)  Φ W_{l−1:1}(t)ᵀ v_i = 0

This module computes ρ, S, the vectors, the residuals of A–D, and the singular-value counts
that the chapters and the CLI report (``check_theorem`` runs one setting and measures them all).
Arrays follow ``factorization``: weights (L, d, d). Every public function runs in float64
(``precision.float64``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from companion.linear import factorization
from companion.linear.factorization import FactorizationSetting
from companion.linear.precision import float64

Array = jax.Array


@float64
def rho_trajectory(init_scales: Sequence[float], lr: float, weight_decay: float, steps: int) -> Array:
    """ρ_l(t) for t = 0 … T from the theorem's recursion (1) (arXiv:2406.04112, the
    invariant-subspace theorem): ρ_l(0) = ε_l, ρ_l(t) = ρ_l(t−1)(1 − ηλ − η ∏_{k≠l} ρ_k(t−1)²).

    Args:
      init_scales: (ε_1, …, ε_L); per-layer scales are allowed.
      lr: η.
      weight_decay: λ.
      steps: T.

    Returns:
      float64 array (T + 1, L); row t is (ρ_1(t), …, ρ_L(t)).
    """
    rho0 = jnp.asarray(init_scales, dtype=jnp.float64)

    def step(rho, _):
        sq = rho**2
        # ∏_{k≠l} ρ_k² without dividing by ρ_l (ρ_l may underflow to 0 with weight decay).
        others = jnp.array([jnp.prod(jnp.delete(sq, l)) for l in range(rho.shape[0])])
        new = rho * (1.0 - lr * weight_decay - lr * others)
        return new, new

    _, rest = jax.lax.scan(step, rho0, None, length=steps)
    return jnp.concatenate([rho0[None], rest], axis=0)


@float64
def layer_scales(weights: Array, tol: float = 1e-10) -> Array:
    """Recover (ε_1, …, ε_L) from ε-scaled orthogonal factors, checking the assumption.

    Args:
      weights: (L, d, d) initial factors.
      tol: allowed relative deviation of W_lᵀ W_l from ε_l² I.

    Returns:
      (L,) the scales.

    Raises:
      ValueError: a factor is not a scaled orthogonal matrix (the theorem's hypothesis).
    """
    d = weights.shape[-1]
    eye = jnp.eye(d, dtype=weights.dtype)
    scales = []
    for l, w in enumerate(weights):
        eps2 = jnp.trace(w.T @ w) / d
        dev = float(jnp.max(jnp.abs(w.T @ w - eps2 * eye)) / eps2)
        if not dev <= tol:
            raise ValueError(
                f"layer {l + 1} is not an ε-scaled orthogonal matrix (‖WᵀW/ε² − I‖_max = "
                f"{dev:.2e} > {tol:.0e}); the theorem assumes ε-scaled orthogonal initialisation"
            )
        scales.append(jnp.sqrt(eps2))
    return jnp.stack(scales)


@float64
def invariant_subspace(weights0: Array, target: Array) -> Array:
    """Orthonormal basis of the proof's S = N(W_{L:2}(0)ᵀ Φ) ∩ N((W_{L:2}(0)ᵀ Φ)ᵀ W_1(0)).

    Both null spaces have dimension ≥ d − r*, so dim S ≥ d − 2r* (the proof's start, slide 8 of
    the authors' ICML 2024 talk).
    S is the null space of the stacked (2d × d) matrix [A; Aᵀ W_1(0)] with A = W_{L:2}(0)ᵀ Φ,
    computed from its SVD with the usual numerical-rank threshold d · eps · σ_max.

    Args:
      weights0: (L, d, d) Θ(0).
      target: (d, d) Φ.

    Returns:
      (d, m) with orthonormal columns, m = dim S.
    """
    above = factorization.suffix_products(weights0)[1]  # W_{L:2}(0)
    a = above.T @ target
    stacked = jnp.concatenate([a, a.T @ weights0[0]], axis=0)
    _, s, vt = np.linalg.svd(np.asarray(stacked))
    threshold = max(stacked.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)
    rank = int(np.sum(s > threshold))
    return jnp.asarray(vt[rank:].T)


class ProofVectors(NamedTuple):
    """The proof's vectors for every layer.

    Attributes:
      v: (L, d, m); ``v[l-1][:, i] = v_i^(l)``.
      u: (L, d, m); ``u[l-1][:, i] = u_i^(l)``, and ``v[l] = u[l-1]`` (v^(l+1) = u^(l)).
    """

    v: Array
    u: Array


@float64
def proof_vectors(weights0: Array, target: Array) -> ProofVectors:
    """v_i^(1) = orthonormal basis of S, u_i^(l) = W_l(0) v_i^(l) / ε_l, v^(l+1) = u^(l).

    Args:
      weights0: (L, d, d) ε-scaled orthogonal Θ(0) (checked; ε_l recovered from it).
      target: (d, d) Φ.

    Returns:
      ProofVectors with arrays (L, d, m), m = dim S.
    """
    scales = layer_scales(weights0)
    v = invariant_subspace(weights0, target)
    vs, us = [], []
    for l in range(weights0.shape[0]):
        u = weights0[l] @ v / scales[l]
        vs.append(v)
        us.append(u)
        v = u
    return ProofVectors(v=jnp.stack(vs), u=jnp.stack(us))


@float64
def event_residuals(weights: Array, target: Array, vectors: ProofVectors, rho: Array) -> Array:
    """Relative residuals of the proof's four events at one step t, per layer.

    Each residual is the largest, over i, of the norm of the event's left-hand side minus its
    right-hand side, divided by the natural scale of that side, so that exact arithmetic gives 0
    and float64 gives ~1e-16 whatever ε, d or Φ:

      A_l = max_i ‖W_l v_i − ρ_l u_i‖ / ‖W_l‖_2
      B_l = max_i ‖W_lᵀ u_i − ρ_l v_i‖ / ‖W_l‖_2
      C_l = max_i ‖Φᵀ W_{L:l+1} u_i‖ / (‖Φ‖_2 ∏_{k>l} ‖W_k‖_2)
      D_l = max_i ‖Φ W_{l−1:1}ᵀ v_i‖ / (‖Φ‖_2 ∏_{k<l} ‖W_k‖_2)

    Args:
      weights: (L, d, d) Θ(t).
      target: (d, d) Φ.
      vectors: the proof's vectors (arrays (L, d, m)).
      rho: (L,) ρ_l(t).

    Returns:
      (4, L) residuals; rows are A, B, C, D.
    """
    depth = weights.shape[0]
    below = factorization.prefix_products(weights)
    above = factorization.suffix_products(weights)
    norms = jnp.linalg.norm(weights, ord=2, axis=(1, 2))  # spectral norms (L,)
    phi_norm = jnp.linalg.norm(target, ord=2)
    col = lambda m: jnp.max(jnp.linalg.norm(m, axis=0))  # noqa: E731 — max over vectors i
    rows = {"A": [], "B": [], "C": [], "D": []}
    for l in range(depth):
        w, v, u = weights[l], vectors.v[l], vectors.u[l]
        rows["A"].append(col(w @ v - rho[l] * u) / norms[l])
        rows["B"].append(col(w.T @ u - rho[l] * v) / norms[l])
        rows["C"].append(col(target.T @ (above[l + 1] @ u)) / (phi_norm * jnp.prod(norms[l + 1 :])))
        rows["D"].append(col(target @ (below[l].T @ v)) / (phi_norm * jnp.prod(norms[:l])))
    return jnp.stack([jnp.stack(rows[k]) for k in "ABCD"])


def _relative_gap(singular_values: Array, rho: Array) -> Array:
    """|σ_i − |ρ_l|| / |ρ_l|: the ρ block ρ_l I has singular value |ρ_l| (ρ_l < 0 when ηλ + η∏ρ² > 1)."""
    r = jnp.abs(rho)[..., None]
    return jnp.abs(singular_values - r) / r


@float64
def count_equal_to_rho(singular_values: Array, rho: Array, rtol: float = 1e-8) -> Array:
    """How many singular values of each layer equal ρ_l to ``rtol`` relative.

    Args:
      singular_values: (..., L, d).
      rho: (..., L).
      rtol: relative tolerance (the CLI's ``min_count`` uses 1e-8).

    Returns:
      integer array (..., L). The theorem says ≥ d − 2r* at every step.
    """
    return jnp.sum(_relative_gap(singular_values, rho) <= rtol, axis=-1)


@float64
def rho_deviation(singular_values: Array, rho: Array, count: int) -> Array:
    """Largest relative deviation from ρ_l of the ``count`` singular values closest to it.

    Args:
      singular_values: (..., L, d).
      rho: (..., L).
      count: how many singular values the theorem pins to ρ (d − 2r*).

    Returns:
      (..., L) max_i |σ_i − ρ_l| / ρ_l over the ``count`` closest σ_i. The theorem says 0.
    """
    rel = _relative_gap(singular_values, rho)
    closest = jnp.sort(rel, axis=-1)[..., :count]
    return jnp.max(closest, axis=-1) if count > 0 else jnp.zeros(rel.shape[:-1])


@float64
def rho_block_mean(singular_values: Array, rho: Array, count: int) -> Array:
    """Mean of the ``count`` singular values closest to ρ_l: the measured ρ_l(t), (..., L)."""
    mask = rho_group(singular_values, rho, count)
    return jnp.sum(jnp.where(mask, singular_values, 0.0), axis=-1) / count


@float64
def rho_group(singular_values: Array, rho: Array, count: int) -> Array:
    """Boolean mask (..., L, d): the ``count`` singular values closest to ρ_l (the ρ block)."""
    rel = _relative_gap(singular_values, rho)
    order = jnp.argsort(rel, axis=-1)
    ranks = jnp.argsort(order, axis=-1)
    return ranks < count


@float64
def singular_vector_angles(
    right_vectors: Array,
    singular_values: Array,
    rho: Array,
    subspace: Array,
    reference: Array,
) -> Array:
    """Angle (radians) of every right singular vector of W_l(t) to its initial position.

    The theorem splits the right singular vectors of W_l(t) into the ρ block (m of them, the
    singular values closest to ρ_l(t)) and the 2r* learning block. At t = 0 every singular value
    equals ε_l, so individual singular vectors are not defined there; "initial" therefore means:

    - ρ block: the initial invariant subspace S^(l) = span{v_i^(l)}, built from Φ and Θ(0)
      alone. The angle is arcsin ‖(I − P_S) q_i(t)‖; the theorem says 0 for all t.
    - learning block: the matching singular vector of W_l(1), the first iterate at which the
      2r* learning directions have separated from ρ (vectors matched by rank within the block).
      The angle is atan2(‖q − (q·r) r‖, |q·r|), which is accurate near 0 and π/2.

    Args:
      right_vectors: (L, d, d) right singular vectors of W_l(t) as columns, σ descending.
      singular_values: (L, d) σ descending.
      rho: (L,) ρ_l(t).
      subspace: (L, d, m) orthonormal bases of S^(l) (``ProofVectors.v``).
      reference: (L, d, d − m) learning-block right singular vectors of W_l(1), σ descending.

    Returns:
      (L, d) angles in radians, column i for the i-th largest singular value.
    """
    m = subspace.shape[-1]
    in_rho = rho_group(singular_values, rho, m)  # (L, d)
    proj = jnp.einsum("ldm,ldi->lmi", subspace, right_vectors)
    outside = jnp.linalg.norm(right_vectors - jnp.einsum("ldm,lmi->ldi", subspace, proj), axis=1)
    angle_rho = jnp.arcsin(jnp.clip(outside, 0.0, 1.0))
    # Position of each learning vector within the learning block (0 = largest σ).
    slot = jnp.clip(jnp.cumsum(~in_rho, axis=-1) - 1, 0, reference.shape[-1] - 1)
    ref = jnp.take_along_axis(reference, slot[:, None, :], axis=2)  # (L, d, d)
    dots = jnp.sum(right_vectors * ref, axis=1)
    perp = jnp.linalg.norm(right_vectors - ref * dots[:, None, :], axis=1)
    angle_learning = jnp.arctan2(perp, jnp.abs(dots))
    return jnp.where(in_rho, angle_rho, angle_learning)


@float64
def learning_reference(weights1: Array, rho1: Array, m: int) -> Array:
    """Right singular vectors of W_l(1) outside the ρ block, σ descending.

    Args:
      weights1: (L, d, d) Θ(1), the first iterate.
      rho1: (L,) ρ_l(1).
      m: size of the ρ block (dim S).

    Returns:
      (L, d, d − m): the references of ``singular_vector_angles`` for the learning block.
    """
    _, s, vt = jnp.linalg.svd(weights1)
    keep = ~rho_group(s, rho1, m)
    q = jnp.swapaxes(vt, 1, 2)
    idx = jnp.argsort(~keep, axis=-1, stable=True)[:, : weights1.shape[-1] - m]
    return jnp.take_along_axis(q, idx[:, None, :], axis=2)


# ---------------------------------------------------------------------------------------------
# One setting, every claim of the theorem measured (chapter 1 and ``companion theorem``).


@dataclass(frozen=True)
class TheoremRun:
    """The theorem's quantities at the recorded steps (R = T/k + 1 of them).

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

    def summary(self) -> dict[str, int | float]:
        """The headline numbers (``companion theorem`` prints them; chapter 1 reports them)."""
        return {
            "required_count": self.setting.required_count,
            "min_count": int(self.counts.min()),
            "max_rel_dev": float(self.rel_dev.max()),
            "events_max_residual": float(self.events.max()),
            "dim_s": self.dim_s,
            "final_loss": float(self.loss[-1]),
        }


@float64
def check_theorem(s: FactorizationSetting, rtol: float = 1e-8, angles: bool = True) -> TheoremRun:
    """Train the factorization and measure the theorem's claims at every recorded step.

    arXiv:2406.04112, the invariant-subspace theorem: at least d − 2r* singular values of each
    W_l(t) equal ρ_l(t) of recursion (1), their singular vectors never move, and the proof's
    events A–D hold.

    Args:
      s: the setting.
      rtol: tolerance for "σ_i equals ρ_l(t)".
      angles: also record singular-vector angles (one full SVD per layer per record).

    Returns:
      TheoremRun (NumPy arrays, float64).

    Raises:
      ValueError: gradient descent diverged (lower the step size).
    """
    start = time.perf_counter()
    weights0, target = factorization.initial_state(s)
    vectors = proof_vectors(weights0, target)
    m = vectors.v.shape[-1]
    rho_full = rho_trajectory(s.init_scales, s.lr, s.weight_decay, s.steps)
    reference = None
    if angles:
        weights1 = factorization.gd_step(weights0, target, s.lr, s.weight_decay)
        reference = learning_reference(weights1, rho_full[1], m)

    def record(w, t):
        rho = rho_full[t]
        out = {"events": event_residuals(w, target, vectors, rho), "loss": factorization.loss(w, target)}
        if angles:
            _, sv, vt = jnp.linalg.svd(w)
            out["angles"] = singular_vector_angles(jnp.swapaxes(vt, 1, 2), sv, rho, vectors.v, reference)
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
        counts=np.asarray(count_equal_to_rho(rec["sv"], rho, rtol)),
        rel_dev=np.asarray(rho_deviation(rec["sv"], rho, s.required_count)),
        rho_measured=np.asarray(rho_block_mean(rec["sv"], rho, s.required_count)),
        events=rec["events"],
        angles=rec.get("angles"),
        loss=rec["loss"],
        dim_s=m,
        wall_time_s=time.perf_counter() - start,
    )
