"""Compressing a deep factorization to width 2r̂ from its first gradient (arXiv:2406.04112,
compression from the first gradient).

The theorem (``theory``) says that all learning happens in a 2r*-dimensional subspace of
every layer; the rest is ρ_l(t)·I. Dropping that rest gives the compressed model

    f_C(Θ̃) = U_{L,1} · W̃_L ⋯ W̃_1 · V_{1,1}ᵀ,   W̃_l ∈ R^{2r̂×2r̂}, W̃_l(0) = ε_l I,

with 2·d·2r̂ + L(2r̂)² parameters instead of L·d². Stored as ``Compressed(left, inner, right)``
with ``left = U_{L,1}`` (d_out, k), ``inner`` (L, k, k), ``right = V_{1,1}`` (d_in, k), k = 2r̂.

Why the recipe is right. At an ε-scaled orthogonal start the first gradient of layer 1 is
G = ∇_{W_1} ℓ(Θ(0)) = c·W_1(0) − A with c = ∏_{k≠1} ε_k² and A = W_{L:2}(0)ᵀ Φ of rank ≤ r*
(the authors' ICML 2024 talk, slide "Insight at initialization"). The proof's invariant subspace is
S = N(A) ∩ N(Aᵀ W_1(0)), so its orthogonal complement — the only directions that ever
move — is row(A) + W_1(0)ᵀ col(A): r* directions from each term, 2r* in all. ``right`` is an
orthonormal basis of it (``outer_factors``), and ``left = W_{L:1}(0) · right / ∏ε_l`` is where
the end-to-end map sends it (orthonormal, since W_{L:1}(0)/∏ε_l is orthogonal). A is
recovered *exactly* as c·W_1(0) − G, where the authors take the top singular directions of G
itself (equal to A's only up to O(c)). With an over-estimate r̂ ≥ r* the top r̂ directions of
each term are used; the extra ones lie in S and simply follow ρ.

With the outer factors frozen (γ = 0) and r̂ = r*, gradient descent on the inner factors is
gradient descent on a 2r̂ × 2r̂ deep factorization of UᵀΦV, and the gap to the original
trajectory is exactly ‖f(Θ(t)) − f_C(t)‖_F = √(d − 2r*) ∏_l ρ_l(t) ≤ √(d − 2r) ∏ ε_l
(the gap bound, Prop. 2 of the authors' ICML 2024 talk; ``gap_against_theory`` measures both).

Names: ``rank_estimate`` is r̂ (the compressed width is k = 2r̂); ``init_scales`` are
(ε_1, …, ε_L). Every public function runs in float64 (``precision.float64``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from companion.linear import factorization, theory
from companion.linear.factorization import FactorizationSetting
from companion.linear.precision import float64

Array = jax.Array


class Compressed(NamedTuple):
    """f_C = left · inner[L-1] ⋯ inner[0] · rightᵀ.

    Attributes:
      left: (d_out, k) U_{L,1}.
      inner: (L, k, k) W̃_1 … W̃_L (``inner[0]`` touches the input side).
      right: (d_in, k) V_{1,1}.
    """

    left: Array
    inner: Array
    right: Array


def parameter_count(width_out: int, width_in: int, rank_estimate: int, depth: int) -> int:
    """(d_out + d_in)·2r̂ + L·(2r̂)²: the compressed model's size (arXiv:2406.04112, compression
    from the first gradient; L·d² for the original square factorization)."""
    k = 2 * rank_estimate
    return (width_out + width_in) * k + depth * k * k


@float64
def inner_product(inner: Array) -> Array:
    """W̃_{L:1} = inner[L-1] ⋯ inner[0], (k, k), from inner (L, k, k); the identity when L = 0."""
    if inner.shape[0] == 0:
        return jnp.eye(inner.shape[-1], dtype=inner.dtype)
    return factorization.end_to_end(inner)


@float64
def end_to_end(c: Compressed) -> Array:
    """The compressed end-to-end matrix left · W̃_{L:1} · rightᵀ, (d_out, d_in)."""
    return c.left @ inner_product(c.inner) @ c.right.T


def _orthonormal_basis(vectors: Array, k: int) -> Array:
    """The top-k left singular vectors of ``vectors``: an orthonormal basis of their span."""
    u, _, _ = jnp.linalg.svd(vectors, full_matrices=False)
    return u[:, :k]


@float64
def lowrank_part_of_first_gradient(grad_first: Array, first0: Array, init_scales: Sequence[float]) -> Array:
    """A = c·W_1(0) − G for the factorization loss, with c = ∏_{k≠1} ε_k² (arXiv:2406.04112,
    compression from the first gradient).

    Args:
      grad_first: (d_1, d_in) G = ∇_{W_1} ℓ(Θ(0)).
      first0: (d_1, d_in) W_1(0).
      init_scales: (ε_1, …, ε_L).

    Returns:
      (d_1, d_in) A = W_{L:2}(0)ᵀ Φ, exactly (up to round-off), rank ≤ r*.
    """
    c = jnp.prod(jnp.asarray(init_scales[1:], dtype=first0.dtype) ** 2)
    return c * first0 - grad_first


@float64
def outer_factors(
    a: Array, first0: Array, end_to_end0: Array, init_scales: Sequence[float], rank_estimate: int
) -> tuple[Array, Array]:
    """U_{L,1} and V_{1,1} from the low-rank part A of the first gradient (arXiv:2406.04112,
    compression from the first gradient).

    ``right`` = orthonormal basis of row_r̂(A) + W_1(0)ᵀ col_r̂(A), where row_r̂/col_r̂ are the
    top-r̂ right/left singular directions of A; ``left`` = W_{L:1}(0)·right/∏ε_l. For
    non-square outer layers W_{L:1}(0)/∏ε_l is only semi-orthogonal, so ``left`` is then
    re-orthonormalised (sign-fixed QR, which leaves an already orthonormal matrix unchanged).

    Args:
      a: (d_1, d_in) A (``lowrank_part_of_first_gradient``, or −G for a general loss, as the
        authors do for matrix completion).
      first0: (d_1, d_in) W_1(0).
      end_to_end0: (d_out, d_in) W_{L:1}(0).
      init_scales: (ε_1, …, ε_L).
      rank_estimate: r̂ ≥ r*; 2r̂ columns are returned.

    Returns:
      (left (d_out, 2r̂), right (d_in, 2r̂)), both with orthonormal columns.

    Raises:
      ValueError: 2r̂ exceeds a side of the end-to-end matrix, or r̂ < 1.
    """
    d_out, d_in = end_to_end0.shape
    k = 2 * rank_estimate
    if rank_estimate < 1 or k > min(d_out, d_in, first0.shape[0]):
        raise ValueError(
            f"rank estimate {rank_estimate} needs 1 ≤ 2r̂ ≤ min(d_out, d_in) = {min(d_out, d_in)}"
        )
    ua, _, vta = jnp.linalg.svd(a, full_matrices=False)
    eps1 = jnp.asarray(init_scales[0], dtype=a.dtype)
    candidates = jnp.concatenate([vta[:rank_estimate].T, first0.T @ ua[:, :rank_estimate] / eps1], axis=1)
    right = _orthonormal_basis(candidates, k)
    left = factorization.orthonormalize(end_to_end0 @ right / jnp.prod(jnp.asarray(init_scales, dtype=a.dtype)))
    return left, right


@float64
def compress_factorization(
    weights0: Array, target: Array, init_scales: Sequence[float], rank_estimate: int
) -> Compressed:
    """The compressed model of a deep matrix factorization at t = 0 (arXiv:2406.04112,
    compression from the first gradient).

    Args:
      weights0: (L, d, d) ε-scaled orthogonal Θ(0).
      target: (d, d) Φ (enters only through the first gradient, as in the paper).
      init_scales: (ε_1, …, ε_L).
      rank_estimate: r̂ ≥ r*.

    Returns:
      Compressed with inner factors ε_l I_{2r̂}.
    """
    g = factorization.gradients(weights0, target)[0]
    a = lowrank_part_of_first_gradient(g, weights0[0], init_scales)
    left, right = outer_factors(a, weights0[0], factorization.end_to_end(weights0), init_scales, rank_estimate)
    k = 2 * rank_estimate
    inner = jnp.stack([e * jnp.eye(k, dtype=weights0.dtype) for e in init_scales])
    return Compressed(left, inner, right)


@float64
def frozen_outer_target(c: Compressed, target: Array) -> Array:
    """UᵀΦV, (k, k): with frozen orthonormal outer factors, ½‖U W̃_{L:1} Vᵀ − Φ‖² equals
    ½‖W̃_{L:1} − UᵀΦV‖² plus a constant, so the inner factors follow a small deep factorization."""
    return c.left.T @ target @ c.right


def gap_bound(width: int, rank_estimate: int, init_scales: Sequence[float]) -> float:
    """(d − 2r̂) ∏_l ε_l²: the bound on ‖f(Θ(t)) − f_C(t)‖_F² (the gap bound, Prop. 2 of the
    authors' ICML 2024 talk), for r̂ ≥ r* and d − 2r̂ > 0."""
    prod = 1.0
    for e in init_scales:
        prod *= float(e) ** 2
    return (width - 2 * rank_estimate) * prod


@float64
def track_gap(
    weights0: Array, target: Array, c: Compressed, *, lr: float, steps: int, record_every: int
) -> dict[str, Array]:
    """Run the original and the compressed factorization (γ = 0) side by side in one scan.

    Both take plain GD steps of size ``lr`` on ½‖·− Φ‖_F² (sum loss); nothing but the
    recorded numbers is kept.

    Args:
      weights0: (L, d, d) Θ(0). target: (d, d) Φ. c: the compressed model at t = 0.
      lr: η on the sum loss. steps: T, a multiple of record_every.

    Returns:
      dict of (T/k + 1,) arrays: "gap" ‖f(Θ(t)) − f_C(t)‖_F, "loss_original", "loss_compressed".
    """
    small_target = frozen_outer_target(c, target)
    # ½‖U K Vᵀ − Φ‖² = ½‖K − UᵀΦV‖² + ½(‖Φ‖² − ‖UᵀΦV‖²) for orthonormal U, V.
    offset = 0.5 * (jnp.sum(target**2) - jnp.sum(small_target**2))

    def record(state, t):
        w, inner = state
        f, k = factorization.end_to_end(w), inner_product(inner)
        return {
            "gap": jnp.linalg.norm(f - c.left @ k @ c.right.T),
            "loss_original": 0.5 * jnp.sum((f - target) ** 2),
            "loss_compressed": 0.5 * jnp.sum((k - small_target) ** 2) + offset,
        }

    def step(state):
        w, inner = state
        return factorization.gd_step(w, target, lr), factorization.gd_step(inner, small_target, lr)

    @jax.jit
    def go(w, inner):
        _, records = factorization.scan_records(step, record, (w, inner), steps=steps,
                                                record_every=record_every)
        return records

    return go(weights0, c.inner)


@dataclass(frozen=True)
class GapTrack:
    """The measured gap between the original and the compressed run against the theory.

    Attributes:
      steps: (G,) recorded steps t.
      gap: (G,) ‖f(Θ(t)) − f_C(t)‖_F.
      exact: (G,) √(d − 2r̂) |∏_l ρ_l(t)|, the exact gap with frozen outer factors (r̂ = r*
        gives √(d − 2r*) ∏ρ_l(t); for r̂ > r* the extra directions lie in the ρ block, so only
        d − 2r̂ of its directions are dropped).
      bound: (d − 2r̂) ∏ε_l², the bound on gap² (Prop. 2 of the authors' ICML 2024 talk).
      loss_original, loss_compressed: (G,) ½‖f − Φ‖_F² of each run.
    """

    steps: np.ndarray
    gap: np.ndarray
    exact: np.ndarray
    bound: float
    loss_original: np.ndarray
    loss_compressed: np.ndarray

    @property
    def max_gap_over_bound(self) -> float:
        """max_t gap(t)² / ((d − 2r̂) ∏ε_l²); Prop. 2 says ≤ 1 (attained at t = 0)."""
        return float(np.max(self.gap**2) / self.bound)

    @property
    def max_rel_err_vs_exact(self) -> float:
        """max_t |gap − exact| / exact; the theory says 0."""
        return float(np.max(np.abs(self.gap - self.exact) / self.exact))

    @property
    def distance(self) -> np.ndarray:
        """(G,) ‖f(Θ(t)) − Φ‖_F of the original run, for scale."""
        return np.sqrt(2 * self.loss_original)


@float64
def gap_against_theory(
    weights0: Array, target: Array, c: Compressed, init_scales: Sequence[float], *,
    lr: float, steps: int, record_every: int,
) -> GapTrack:
    """The gap of the frozen-outer (γ = 0) compressed run, measured and predicted.

    arXiv:2406.04112, compression from the first gradient; the gap bound (Prop. 2 of the
    authors' ICML 2024 talk): ‖f(Θ(t)) − f_C(t)‖_F = √(d − 2r̂) ∏_l ρ_l(t) ≤ √((d − 2r̂) ∏_l ε_l²),
    with ρ_l(t) from the theorem's recursion (1) at λ = 0.

    Args:
      weights0: (L, d, d) ε-scaled orthogonal Θ(0).
      target: (d, d) Φ.
      c: the compressed model at t = 0 (``compress_factorization``), width k = 2r̂.
      init_scales: (ε_1, …, ε_L) of Θ(0).
      lr: η on the sum loss ½‖·− Φ‖_F².
      steps: T, a multiple of record_every.
      record_every: steps between records.

    Returns:
      GapTrack (NumPy, float64).
    """
    width, rank_estimate = weights0.shape[-1], c.inner.shape[-1] // 2
    tracked = track_gap(weights0, target, c, lr=lr, steps=steps, record_every=record_every)
    recorded = np.arange(0, steps + 1, record_every)
    rho = np.asarray(theory.rho_trajectory(init_scales, lr, 0.0, steps))[recorded]
    return GapTrack(
        steps=recorded,
        gap=np.asarray(tracked["gap"]),
        exact=np.sqrt(width - 2 * rank_estimate) * np.abs(np.prod(rho, axis=1)),
        bound=gap_bound(width, rank_estimate, init_scales),
        loss_original=np.asarray(tracked["loss_original"]),
        loss_compressed=np.asarray(tracked["loss_compressed"]),
    )


@float64
def compress_point(s: FactorizationSetting, rank_estimate: int | None = None) -> dict[str, Any]:
    """One factorization run, original and compressed (γ = 0) side by side (``companion compress``).

    Same conventions as ``theory.check_theorem`` (Φ of unit spectral norm, η on ½‖·‖_F²), plain
    gradient descent (λ = 0).

    Args:
      s: the setting (its weight decay must be 0).
      rank_estimate: r̂ with r* ≤ r̂ and 2r̂ < d (default r*).

    Returns:
      flat dict: max_gap_over_bound (Prop. 2 says ≤ 1), max_rel_err_vs_exact (the theory says 0),
      final_gap, final_loss_original, final_loss_compressed, params_original,
      params_compressed, rank_estimate and wall_time_s.

    Raises:
      ValueError: r̂ out of range, λ ≠ 0, or gradient descent diverged.
    """
    r_hat = s.target_rank if rank_estimate is None else rank_estimate
    if r_hat < s.target_rank or 2 * r_hat >= s.width:
        raise ValueError(f"rank estimate {r_hat} must satisfy r* = {s.target_rank} ≤ r̂ and 2r̂ < d = {s.width}")
    if s.weight_decay != 0:
        raise ValueError(f"the compressed comparison runs plain gradient descent; got weight decay {s.weight_decay}")
    start = time.perf_counter()
    weights0, target = factorization.initial_state(s)
    c = compress_factorization(weights0, target, s.init_scales, r_hat)
    track = gap_against_theory(weights0, target, c, s.init_scales, lr=s.lr, steps=s.steps,
                               record_every=s.record_every)
    if not np.all(np.isfinite(track.gap)) or not np.all(np.isfinite(track.loss_original)):
        raise ValueError(f"gradient descent diverged with step size {s.lr}; lower the step size")
    return {
        "max_gap_over_bound": track.max_gap_over_bound,
        "max_rel_err_vs_exact": track.max_rel_err_vs_exact,
        "final_gap": float(track.gap[-1]),
        "final_loss_original": float(track.loss_original[-1]),
        "final_loss_compressed": float(track.loss_compressed[-1]),
        "params_original": s.depth * s.width**2,
        "params_compressed": parameter_count(s.width, s.width, r_hat, s.depth),
        "rank_estimate": r_hat,
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
