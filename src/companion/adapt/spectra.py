"""Singular subspaces of adapter updates ΔW: how far two of them are apart (Figure 1 of
arXiv:2406.04112 (v3) compares the top singular subspaces of ΔW(t) with the final ones)."""

from __future__ import annotations

import numpy as np


def principal_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between span(a) and span(b).

    Args:
      a, b: (n, k) matrices with orthonormal columns (e.g. top-k singular vectors).

    Returns:
      (k,) the singular values of aᵀb, clipped to [0, 1], descending: 1 where the subspaces
      share a direction, 0 where they are orthogonal.

    Raises:
      ValueError: the two bases differ in shape or are not matrices.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"compare two (n, k) bases of equal shape, got {a.shape} and {b.shape}")
    return np.clip(np.linalg.svd(a.T @ b, compute_uv=False), 0.0, 1.0)


def largest_principal_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """‖aᵀb‖₂, the cosine of the smallest principal angle between span(a) and span(b): the
    authors' "cosine angle" of Figure 1 (deep-lora-transformers@618c410, utils.cosine_angle).

    Args:
      a, b: (n, k) orthonormal bases.

    Returns:
      max_i cos θ_i ∈ [0, 1]: 1 as soon as the subspaces share one direction.
    """
    return float(principal_cosines(a, b)[0])


def subspace_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine of the principal angles between span(a) and span(b), in [0, 1].

    Args:
      a, b: (n, k) orthonormal bases.

    Returns:
      (1/k) Σ_i cos θ_i: 1 when the subspaces coincide, 0 when they are orthogonal.
    """
    return float(np.mean(principal_cosines(a, b)))


def top_singular_bases(delta: np.ndarray, k: int, values: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k left and right singular vectors and the top singular values of one update.

    Args:
      delta: (out, in) ΔW in the paper's layout; decomposed in float64.
      k: dimension of the bases.
      values: how many singular values to return.

    Returns:
      (left (out, k), right (in, k), singular values (values,)), σ descending.
    """
    u, s, vt = np.linalg.svd(np.asarray(delta, dtype=np.float64), full_matrices=False)
    return u[:, :k], vt[:k].T, s[:values]
