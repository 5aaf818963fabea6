"""Compressing a deep factorization to width 2r̂ from its first gradient (PAPER.md §2).

The theorem (``theory``) says that all learning happens in a 2r*-dimensional subspace of
every layer; the rest is ρ_l(t)·I. Dropping that rest gives the compressed model

    f_C(Θ̃) = U_{L,1} · W̃_L ⋯ W̃_1 · V_{1,1}ᵀ,   W̃_l ∈ R^{2r̂×2r̂}, W̃_l(0) = ε_l I,

with 2·d·2r̂ + L(2r̂)² parameters instead of L·d². Stored as ``Compressed(left, inner, right)``
with ``left = U_{L,1}`` (d_out, k), ``inner`` (L, k, k), ``right = V_{1,1}`` (d_in, k), k = 2r̂.

Why the recipe is right. At an ε-scaled orthogonal start the first gradient of layer 1 is
G = ∇_{W_1} ℓ(Θ(0)) = c·W_1(0) − A with c = ∏_{k≠1} ε_k² and A = W_{L:2}(0)ᵀ Φ of rank ≤ r*
(talk slide "Insight at initialization"). The proof's invariant subspace is
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
(Prop. 2 of the talk, PAPER.md §2).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from companion.linear import factorization

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
    """(d_out + d_in)·2r̂ + L·(2r̂)²: the compressed model's size (PAPER.md §2)."""
    k = 2 * rank_estimate
    return (width_out + width_in) * k + depth * k * k


def inner_product(inner: Array) -> Array:
    """W̃_{L:1} = inner[L-1] ⋯ inner[0], (k, k); the identity when there are no inner layers."""
    if inner.shape[0] == 0:
        return jnp.eye(inner.shape[-1], dtype=inner.dtype)
    return factorization.end_to_end(inner)


def end_to_end(c: Compressed) -> Array:
    """The compressed end-to-end matrix left · W̃_{L:1} · rightᵀ, (d_out, d_in)."""
    return c.left @ inner_product(c.inner) @ c.right.T


def _orthonormal_basis(vectors: Array, k: int) -> Array:
    """The top-k left singular vectors of ``vectors``: an orthonormal basis of their span."""
    u, _, _ = jnp.linalg.svd(vectors, full_matrices=False)
    return u[:, :k]


def _sign_fixed_qr(m: Array) -> Array:
    q, r = jnp.linalg.qr(m)
    return q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)[None, :]


def lowrank_part_of_first_gradient(grad_first: Array, first0: Array, scales: Sequence[float]) -> Array:
    """A = c·W_1(0) − G for the factorization loss, with c = ∏_{k≠1} ε_k² (PAPER.md §2).

    Args:
      grad_first: (d_1, d_in) G = ∇_{W_1} ℓ(Θ(0)).
      first0: (d_1, d_in) W_1(0).
      scales: (ε_1, …, ε_L).

    Returns:
      (d_1, d_in) A = W_{L:2}(0)ᵀ Φ, exactly (up to round-off), rank ≤ r*.
    """
    c = jnp.prod(jnp.asarray(scales[1:], dtype=first0.dtype) ** 2)
    return c * first0 - grad_first


def outer_factors(
    a: Array, first0: Array, end_to_end0: Array, scales: Sequence[float], rank_estimate: int
) -> tuple[Array, Array]:
    """U_{L,1} and V_{1,1} from the low-rank part A of the first gradient (PAPER.md §2).

    ``right`` = orthonormal basis of row_r̂(A) + W_1(0)ᵀ col_r̂(A), where row_r̂/col_r̂ are the
    top-r̂ right/left singular directions of A; ``left`` = W_{L:1}(0)·right/∏ε_l. For
    non-square outer layers W_{L:1}(0)/∏ε_l is only semi-orthogonal, so ``left`` is then
    re-orthonormalised (sign-fixed QR, which leaves an already orthonormal matrix unchanged).

    Args:
      a: (d_1, d_in) A (``lowrank_part_of_first_gradient``, or −G for a general loss, as the
        authors do for matrix completion).
      first0: (d_1, d_in) W_1(0).
      end_to_end0: (d_out, d_in) W_{L:1}(0).
      scales: (ε_1, …, ε_L).
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
    eps1 = jnp.asarray(scales[0], dtype=a.dtype)
    candidates = jnp.concatenate([vta[:rank_estimate].T, first0.T @ ua[:, :rank_estimate] / eps1], axis=1)
    right = _orthonormal_basis(candidates, k)
    left = _sign_fixed_qr(end_to_end0 @ right / jnp.prod(jnp.asarray(scales, dtype=a.dtype)))
    return left, right


def compress_factorization(
    weights0: Array, target: Array, scales: Sequence[float], rank_estimate: int
) -> Compressed:
    """The compressed model of a deep matrix factorization at t = 0 (PAPER.md §2).

    Args:
      weights0: (L, d, d) ε-scaled orthogonal Θ(0).
      target: (d, d) Φ (enters only through the first gradient, as in the paper).
      scales: (ε_1, …, ε_L).
      rank_estimate: r̂ ≥ r*.

    Returns:
      Compressed with inner factors ε_l I_{2r̂}.
    """
    g = factorization.gradients(weights0, target)[0]
    a = lowrank_part_of_first_gradient(g, weights0[0], scales)
    left, right = outer_factors(a, weights0[0], factorization.end_to_end(weights0), scales, rank_estimate)
    k = 2 * rank_estimate
    inner = jnp.stack([e * jnp.eye(k, dtype=weights0.dtype) for e in scales])
    return Compressed(left, inner, right)


def frozen_outer_target(c: Compressed, target: Array) -> Array:
    """UᵀΦV, (k, k): with frozen orthonormal outer factors, ½‖U W̃_{L:1} Vᵀ − Φ‖² equals
    ½‖W̃_{L:1} − UᵀΦV‖² plus a constant, so the inner factors follow a small deep factorization."""
    return c.left.T @ target @ c.right


def gap_bound(width: int, rank_estimate: int, scales: Sequence[float]) -> float:
    """(d − 2r̂) ∏_l ε_l²: the bound on ‖f(Θ(t)) − f_C(t)‖_F² of Prop. 2 (PAPER.md §2)."""
    prod = 1.0
    for e in scales:
        prod *= float(e) ** 2
    return (width - 2 * rank_estimate) * prod


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

    def step(state, _):
        w, inner = state
        return (factorization.gd_step(w, target, lr), factorization.gd_step(inner, small_target, lr)), None

    return _scan_pair(weights0, c.inner, steps // record_every, record_every, step, record)


def _scan_pair(w, inner, n_records, record_every, step, record):
    @jax.jit
    def go(w, inner):
        def outer(state, i):
            state, _ = jax.lax.scan(step, state, None, length=record_every)
            return state, record(state, (i + 1) * record_every)

        first = record((w, inner), 0)
        _, rest = jax.lax.scan(outer, (w, inner), jnp.arange(n_records))
        return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)

    return go(w, inner)
