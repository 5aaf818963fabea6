"""Deep matrix factorization trained by gradient descent (PAPER.md §1).

The model is the end-to-end product ``W_{L:1} = W_L ⋯ W_1`` of ``L`` square ``d × d``
factors, stored as one array ``weights`` of shape ``(L, d, d)`` with ``weights[l - 1] = W_l``
(so ``weights[0]`` is the layer that touches the input). The loss is

    ℓ(Θ) = ½ ‖W_{L:1} − Φ‖_F²,

and gradient descent with weight decay λ and step η is

    W_l(t+1) = (1 − ηλ) W_l(t) − η ∇_{W_l} ℓ(Θ(t)),
    ∇_{W_l} ℓ = W_{L:l+1}ᵀ (W_{L:1} − Φ) W_{l−1:1}ᵀ.

Everything here runs in float64: the theorem claims *exact* equalities, and checking them to
1e-10 needs double precision. Importing this module therefore switches JAX's x64 mode on
(``jax_enable_x64``); arrays of other halves of the package keep their explicit dtypes.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import jax

jax.config.update("jax_enable_x64", True)  # the theorem is checked to float64 precision

import jax.numpy as jnp
import numpy as np

Array = jax.Array
Recorder = Callable[[Array, Array], Any]


def scaled_orthogonal(key: Array, width: int, scales: Sequence[float]) -> Array:
    """ε_l-scaled orthogonal initialisation, one Haar-random orthogonal matrix per layer.

    PAPER.md §1: ``W_l(0) W_l(0)ᵀ = W_l(0)ᵀ W_l(0) = ε_l² I``.

    Args:
      key: PRNG key.
      width: d, the side of every factor.
      scales: (ε_1, …, ε_L), one positive scale per layer; its length is the depth L.

    Returns:
      float64 array of shape (L, d, d) with ``weights[l-1] = ε_l Q_l``.
    """
    scales = jnp.asarray(scales, dtype=jnp.float64)
    keys = jax.random.split(key, scales.shape[0])

    def one(k, eps):
        g = jax.random.normal(k, (width, width), dtype=jnp.float64)
        q, r = jnp.linalg.qr(g)
        # Multiply by the signs of diag(R) so Q is Haar distributed (not biased by QR's convention).
        q = q * jnp.sign(jnp.diagonal(r))[None, :]
        return eps * q

    return jax.vmap(one)(keys, scales)


def low_rank_target(key: Array, width: int, rank: int, normalize: bool = True) -> Array:
    """Φ: the rank-r* truncation of a d × d standard Gaussian matrix (PAPER.md §3).

    Args:
      key: PRNG key.
      width: d.
      rank: r*, the number of singular triplets kept.
      normalize: divide by the largest singular value so ‖Φ‖_2 = 1. The theorem holds for
        any Φ; a unit spectral norm lets one step size serve every width in the theorem
        chapters. The completion experiments use the paper's unnormalised Φ (normalize=False).

    Returns:
      float64 array (d, d) of rank r*.
    """
    g = jax.random.normal(key, (width, width), dtype=jnp.float64)
    u, s, vt = jnp.linalg.svd(g)
    s = s[:rank]
    if normalize:
        s = s / s[0]
    return (u[:, :rank] * s[None, :]) @ vt[:rank]


def end_to_end(weights: Array) -> Array:
    """The end-to-end matrix W_{L:1} = W_L ⋯ W_1.

    Args:
      weights: (L, d, d), ``weights[0] = W_1``.

    Returns:
      (d, d).
    """
    product = weights[0]
    for w in weights[1:]:
        product = w @ product
    return product


def prefix_products(weights: Array) -> list[Array]:
    """[W_{0:1}, W_{1:1}, …, W_{L:1}] where W_{0:1} = I (the products below each layer)."""
    d = weights.shape[-1]
    out = [jnp.eye(d, dtype=weights.dtype)]
    for w in weights:
        out.append(w @ out[-1])
    return out


def suffix_products(weights: Array) -> list[Array]:
    """[W_{L:1}, W_{L:2}, …, W_{L:L+1}] where W_{L:L+1} = I (the products above each layer).

    Entry ``l`` (0-based) is ``W_{L:l+1}`` = the product of layers l+1, …, L (1-based).
    """
    d = weights.shape[-1]
    out = [jnp.eye(d, dtype=weights.dtype)]
    for w in weights[::-1]:
        out.append(out[-1] @ w)
    return out[::-1]


def loss(weights: Array, target: Array) -> Array:
    """ℓ(Θ) = ½ ‖W_{L:1} − Φ‖_F² (PAPER.md §1). Weight decay enters the step, not the loss."""
    return 0.5 * jnp.sum((end_to_end(weights) - target) ** 2)


def backprop(weights: Array, below: list[Array], residual: Array) -> Array:
    """Layer gradients from the gradient with respect to the end-to-end matrix.

    For any loss of the end-to-end matrix with ∂ℓ/∂W_{L:1} = ``residual``,
    ∇_{W_l} ℓ = W_{L:l+1}ᵀ · residual · W_{l−1:1}ᵀ (PAPER.md §1 for the squared loss).

    Args:
      weights: (L, k, k) factors.
      below: ``prefix_products(weights)`` (already computed for the forward pass).
      residual: (k, k) ∂ℓ/∂W_{L:1}.

    Returns:
      (L, k, k) gradients, with one pass of suffix products (O(L) products, not O(L²)).
    """
    depth = weights.shape[0]
    grads = [None] * depth
    above = residual
    for l in range(depth - 1, -1, -1):
        grads[l] = above @ below[l].T  # (W_{L:l+1}ᵀ R) W_{l−1:1}ᵀ
        above = weights[l].T @ above
    return jnp.stack(grads)


def gradients(weights: Array, target: Array) -> Array:
    """∇_{W_l} ℓ = W_{L:l+1}ᵀ (W_{L:1} − Φ) W_{l−1:1}ᵀ for every layer, shape (L, d, d)."""
    below = prefix_products(weights)  # below[l] = W_{l:1}
    return backprop(weights, below, below[-1] - target)


def gd_step(weights: Array, target: Array, lr: float, weight_decay: float = 0.0) -> Array:
    """One step W_l ← (1 − ηλ) W_l − η ∇_{W_l} ℓ for every layer at once (PAPER.md §1)."""
    return (1.0 - lr * weight_decay) * weights - lr * gradients(weights, target)


def run_gd(
    weights: Array,
    target: Array,
    *,
    lr: float,
    weight_decay: float = 0.0,
    steps: int,
    record_every: int = 1,
    record: Recorder | None = None,
) -> tuple[Array, Any]:
    """Gradient descent for ``steps`` steps inside one jitted ``lax.scan``.

    Only what ``record`` returns is kept, at t = 0, k, 2k, …, steps (k = ``record_every``):
    the iterates themselves are never stacked unless ``record`` asks for them.

    Args:
      weights: (L, d, d) initial factors Θ(0).
      target: (d, d) Φ.
      lr: η.
      weight_decay: λ.
      steps: T, a multiple of ``record_every``.
      record_every: k.
      record: ``record(weights, t) -> pytree`` evaluated at recorded steps (default: the loss).

    Returns:
      (Θ(T), records) where every leaf of ``records`` has a leading axis of T/k + 1.

    Raises:
      ValueError: bad sizes, or gradient descent diverged (non-finite iterate); the message
        says to lower the step size.
    """
    if steps < 0 or record_every < 1 or steps % record_every:
        raise ValueError(
            f"steps ({steps}) must be a non-negative multiple of record_every ({record_every})"
        )
    if record is None:
        record = lambda w, t: loss(w, target)  # noqa: E731
    final, records = _scan_gd(
        weights, target, lr, weight_decay, steps // record_every, record_every, record
    )
    if not bool(jnp.all(jnp.isfinite(final))):
        raise ValueError(
            f"gradient descent diverged with step size {lr} (non-finite weights after {steps} "
            "steps); lower the step size"
        )
    return final, records


@partial(jax.jit, static_argnames=("n_records", "record_every", "record"))
def _scan_gd(weights, target, lr, weight_decay, n_records, record_every, record):
    def inner(w, _):
        return gd_step(w, target, lr, weight_decay), None

    def outer(carry, i):
        w, = carry
        w, _ = jax.lax.scan(inner, w, None, length=record_every)
        t = (i + 1) * record_every
        # A diverged iterate is replaced by zeros before recording: its records are never
        # returned (run_gd raises), and LAPACK must not see NaNs (it prints to stdout).
        finite = jnp.all(jnp.isfinite(w))
        return (w,), record(jnp.where(finite, w, jnp.zeros_like(w)), t)

    first = record(weights, jnp.asarray(0))
    (final,), rest = jax.lax.scan(outer, (weights,), jnp.arange(n_records))
    records = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first, rest)
    return final, records


def as_numpy(tree: Any) -> Any:
    """Device arrays → NumPy (float64 kept) for saving and plotting."""
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)
