"""The invariant-subspace theorem and the objects of its proof (PAPER.md §1, talk slides 8–9).

Theorem (d > 2r*): with ε_l-scaled orthogonal initialisation, gradient descent on the deep
matrix factorization keeps, for every layer and every step,

    W_l(t) = U_l · blockdiag(W̃_l(t) ∈ R^{2r*×2r*}, ρ_l(t) I_{d−2r*}) · V_lᵀ,   V_{l+1} = U_l,

with ρ_l(0) = ε_l and ρ_l(t) = ρ_l(t−1) · (1 − ηλ − η ∏_{k≠l} ρ_k(t−1)²)   (equation (1)).

The proof builds, from Φ and Θ(0) alone, m = dim S ≥ d − 2r* pairs of unit vectors
(v_i^(l), u_i^(l)) per layer for which four events hold at every t:

    A(t)  W_l(t) v_i = ρ_l(t) u_i          B(t)  W_l(t)ᵀ u_i = ρ_l(t) v_i
    C(t)  Φᵀ W_{L:l+1}(t) u_i = 0           D(t)  Φ W_{l−1:1}(t)ᵀ v_i = 0

This module computes ρ, S, the vectors, the residuals of A–D, and the singular-value counts
that the chapters and the CLI report. Arrays follow ``factorization``: weights (L, d, d).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from companion.linear import factorization

Array = jax.Array


def rho_trajectory(scales: Sequence[float], lr: float, weight_decay: float, steps: int) -> Array:
    """ρ_l(t) for t = 0 … T from the theorem's recursion, equation (1) of PAPER.md §1.

    Args:
      scales: (ε_1, …, ε_L); per-layer scales are allowed.
      lr: η.
      weight_decay: λ.
      steps: T.

    Returns:
      float64 array (T + 1, L); row t is (ρ_1(t), …, ρ_L(t)).
    """
    rho0 = jnp.asarray(scales, dtype=jnp.float64)

    def step(rho, _):
        sq = rho**2
        # ∏_{k≠l} ρ_k² without dividing by ρ_l (ρ_l may underflow to 0 with weight decay).
        others = jnp.array([jnp.prod(jnp.delete(sq, l)) for l in range(rho.shape[0])])
        new = rho * (1.0 - lr * weight_decay - lr * others)
        return new, new

    _, rest = jax.lax.scan(step, rho0, None, length=steps)
    return jnp.concatenate([rho0[None], rest], axis=0)


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


def invariant_subspace(weights0: Array, target: Array) -> Array:
    """Orthonormal basis of the proof's S = N(W_{L:2}(0)ᵀ Φ) ∩ N((W_{L:2}(0)ᵀ Φ)ᵀ W_1(0)).

    Both null spaces have dimension ≥ d − r*, so dim S ≥ d − 2r* (PAPER.md §1, "Start").
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


def rho_block_mean(singular_values: Array, rho: Array, count: int) -> Array:
    """Mean of the ``count`` singular values closest to ρ_l: the measured ρ_l(t), (..., L)."""
    mask = rho_group(singular_values, rho, count)
    return jnp.sum(jnp.where(mask, singular_values, 0.0), axis=-1) / count


def rho_group(singular_values: Array, rho: Array, count: int) -> Array:
    """Boolean mask (..., L, d): the ``count`` singular values closest to ρ_l (the ρ block)."""
    rel = _relative_gap(singular_values, rho)
    order = jnp.argsort(rel, axis=-1)
    ranks = jnp.argsort(order, axis=-1)
    return ranks < count


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


def learning_reference(weights1: Array, rho1: Array, m: int) -> Array:
    """Right singular vectors of W_l(1) outside the ρ block, σ descending: (L, d, d − m)."""
    _, s, vt = jnp.linalg.svd(weights1)
    keep = ~rho_group(s, rho1, m)
    q = jnp.swapaxes(vt, 1, 2)
    idx = jnp.argsort(~keep, axis=-1, stable=True)[:, : weights1.shape[-1] - m]
    return jnp.take_along_axis(q, idx[:, None, :], axis=2)
