"""Deep matrix factorization trained by gradient descent (arXiv:2406.04112, the deep matrix
factorization setting of the invariant-subspace theorem).

The model is the end-to-end product ``W_{L:1} = W_L ⋯ W_1`` of ``L`` square ``d × d``
factors, stored as one array ``weights`` of shape ``(L, d, d)`` with ``weights[l - 1] = W_l``
(so ``weights[0]`` is the layer that touches the input). The loss is

    ℓ(Θ) = ½ ‖W_{L:1} − Φ‖_F²,

and gradient descent with weight decay λ and step η is

    W_l(t+1) = (1 − ηλ) W_l(t) − η ∇_{W_l} ℓ(Θ(t)),
    ∇_{W_l} ℓ = W_{L:l+1}ᵀ (W_{L:1} − Φ) W_{l−1:1}ᵀ.

Everything here runs in float64 (``precision.float64`` on every public function): the theorem
claims *exact* equalities, and checking them to 1e-10 needs double precision. Importing this
module changes no global JAX mode.

Names: ``target_rank`` is r*, the rank of Φ; ``init_scales`` are (ε_1, …, ε_L) of the
ε-scaled orthogonal initialisation; ``width`` is d.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from companion.linear.precision import float64

Array = jax.Array
Recorder = Callable[[Array, Array], Any]


# ---------------------------------------------------------------------------------------------
# One run's settings.


@dataclass(frozen=True)
class FactorizationSetting:
    """One deep matrix factorization run of the invariant-subspace theorem (arXiv:2406.04112).

    Construction validates the setting against the theorem's hypotheses (``validate_setting``).
    """

    width: int  # d: every factor is d × d
    target_rank: int  # r*: rank of the target Φ
    depth: int  # L: number of factors
    init_scales: tuple[float, ...]  # (ε_1, …, ε_L): ε-scaled orthogonal init per layer
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
        return self.width - 2 * self.target_rank


def validate_setting(s: FactorizationSetting) -> None:
    """Reject settings outside the theorem's hypotheses with a message that says what to do.

    Raises:
      ValueError: a non-integer size, d ≤ 2r*, L < 2, a scale per layer missing or ≤ 0, η ≤ 0,
        λ < 0, or T not a positive multiple of the record interval.
    """
    for name in ("width", "target_rank", "depth", "steps", "seed", "record_every"):
        value = getattr(s, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if s.target_rank < 1:
        raise ValueError(f"rank must be ≥ 1, got {s.target_rank}")
    if s.width <= 2 * s.target_rank:
        raise ValueError(
            f"the theorem needs d > 2r*: width {s.width} ≤ 2 × rank {s.target_rank}; "
            "use a larger width or a smaller rank"
        )
    if s.depth < 2:
        raise ValueError(f"depth must be ≥ 2 (a deep factorization), got {s.depth}")
    if len(s.init_scales) != s.depth:
        raise ValueError(f"give one scale per layer: {len(s.init_scales)} scales for depth {s.depth}")
    if any(not (e > 0) for e in s.init_scales):
        raise ValueError(f"every scale ε_l must be > 0, got {list(s.init_scales)}")
    if not s.lr > 0:
        raise ValueError(f"the step size must be > 0, got {s.lr}")
    if s.weight_decay < 0:
        raise ValueError(f"weight decay must be ≥ 0, got {s.weight_decay}")
    if s.steps < 1 or s.record_every < 1 or s.steps % s.record_every:
        raise ValueError(
            f"steps ({s.steps}) must be a positive multiple of record_every ({s.record_every})"
        )


@float64
def initial_state(s: FactorizationSetting) -> tuple[Array, Array]:
    """Θ(0) and Φ of a setting, from its seed (one key split in two).

    Returns:
      (weights0 (L, d, d) ε-scaled orthogonal, target (d, d) of rank r* and unit spectral norm).
    """
    k_init, k_target = jax.random.split(jax.random.key(s.seed))
    weights0 = scaled_orthogonal(k_init, s.width, s.init_scales)
    target = low_rank_target(k_target, s.width, s.target_rank)
    return weights0, target


# ---------------------------------------------------------------------------------------------
# Initialisation and target.


@float64
def orthonormalize(m: Array) -> Array:
    """Q of m = QR with the signs fixed so that diag(R) > 0 (a unique, basis-free choice).

    Applied to a Gaussian matrix this gives a Haar-distributed (semi-)orthogonal matrix; applied
    to a matrix with orthonormal columns it returns it unchanged.

    Args:
      m: (n, k), n ≥ k.

    Returns:
      (n, k) with orthonormal columns spanning the columns of m.
    """
    q, r = jnp.linalg.qr(m)
    return q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)[None, :]


@float64
def haar_orthogonal(key: Array, rows: int, cols: int) -> Array:
    """A Haar-random (semi-)orthogonal matrix: orthonormal columns if rows ≥ cols, else rows.

    Args:
      key: PRNG key.
      rows, cols: its shape.

    Returns:
      float64 (rows, cols), ``QᵀQ = I`` (rows ≥ cols) or ``QQᵀ = I`` (rows < cols).
    """
    g = jax.random.normal(key, (max(rows, cols), min(rows, cols)), dtype=jnp.float64)
    q = orthonormalize(g)
    return q if rows >= cols else q.T


@float64
def scaled_orthogonal(key: Array, width: int, init_scales: Sequence[float]) -> Array:
    """ε_l-scaled orthogonal initialisation, one Haar-random orthogonal matrix per layer.

    arXiv:2406.04112, the theorem's initialisation: ``W_l(0) W_l(0)ᵀ = W_l(0)ᵀ W_l(0) = ε_l² I``.

    Args:
      key: PRNG key.
      width: d, the side of every factor.
      init_scales: (ε_1, …, ε_L), one positive scale per layer; its length is the depth L.

    Returns:
      float64 array of shape (L, d, d) with ``weights[l-1] = ε_l Q_l``.
    """
    init_scales = jnp.asarray(init_scales, dtype=jnp.float64)
    keys = jax.random.split(key, init_scales.shape[0])
    return jax.vmap(lambda k, eps: eps * haar_orthogonal(k, width, width))(keys, init_scales)


@float64
def low_rank_target(key: Array, width: int, target_rank: int, normalize: bool = True) -> Array:
    """Φ: the rank-r* truncation of a d × d standard Gaussian matrix.

    arXiv:2406.04112, deep matrix factorization and completion experiments (authors'
    notebooks): Φ is the rank-r* truncation of a Gaussian matrix.

    Args:
      key: PRNG key.
      width: d.
      target_rank: r*, the number of singular triplets kept.
      normalize: divide by the largest singular value so ‖Φ‖_2 = 1. The theorem holds for
        any Φ; a unit spectral norm lets one step size serve every width in the theorem
        chapters. The completion experiments use the paper's unnormalised Φ (normalize=False).

    Returns:
      float64 array (d, d) of rank r*.
    """
    g = jax.random.normal(key, (width, width), dtype=jnp.float64)
    u, s, vt = jnp.linalg.svd(g)
    s = s[:target_rank]
    if normalize:
        s = s / s[0]
    return (u[:, :target_rank] * s[None, :]) @ vt[:target_rank]


# ---------------------------------------------------------------------------------------------
# Products, loss and gradients.


@float64
def end_to_end(weights: Array) -> Array:
    """The end-to-end matrix W_{L:1} = W_L ⋯ W_1.

    Args:
      weights: (L, m, m), ``weights[0] = W_1``.

    Returns:
      (m, m).
    """
    product = weights[0]
    for w in weights[1:]:
        product = w @ product
    return product


@float64
def prefix_products(weights: Array) -> list[Array]:
    """[W_{0:1}, W_{1:1}, …, W_{L:1}] where W_{0:1} = I (the products below each layer).

    Args:
      weights: (L, m, m).

    Returns:
      L + 1 arrays (m, m); entry ``l`` is W_{l:1}. L − 1 products: W_{1:1} is W_1 itself, not
      W_1 · I (XLA does not remove a product with an identity, and at d = 1000 each costs as much
      as a real one; the result is the same bit for bit).
    """
    d = weights.shape[-1]
    out = [jnp.eye(d, dtype=weights.dtype)]
    for w in weights:
        out.append(w if len(out) == 1 else w @ out[-1])
    return out


@float64
def suffix_products(weights: Array) -> list[Array]:
    """[W_{L:1}, W_{L:2}, …, W_{L:L+1}] where W_{L:L+1} = I (the products above each layer).

    Args:
      weights: (L, m, m).

    Returns:
      L + 1 arrays (m, m); entry ``l`` (0-based) is ``W_{L:l+1}`` = the product of layers
      l+1, …, L (1-based).
    """
    d = weights.shape[-1]
    out = [jnp.eye(d, dtype=weights.dtype)]
    for w in weights[::-1]:
        out.append(out[-1] @ w)
    return out[::-1]


@float64
def loss(weights: Array, target: Array) -> Array:
    """ℓ(Θ) = ½ ‖W_{L:1} − Φ‖_F², a scalar. Weight decay enters the step, not the loss.

    Args:
      weights: (L, d, d). target: (d, d) Φ.
    """
    return 0.5 * jnp.sum((end_to_end(weights) - target) ** 2)


@float64
def backprop(weights: Array, below: list[Array], residual: Array) -> Array:
    """Layer gradients from the gradient with respect to the end-to-end matrix.

    For any loss of the end-to-end matrix with ∂ℓ/∂W_{L:1} = ``residual``,
    ∇_{W_l} ℓ = W_{L:l+1}ᵀ · residual · W_{l−1:1}ᵀ (the theorem's gradient for the squared loss).

    Args:
      weights: (L, k, k) factors.
      below: ``prefix_products(weights)`` (already computed for the forward pass).
      residual: (k, k) ∂ℓ/∂W_{L:1}.

    Returns:
      (L, k, k) gradients, with one pass of suffix products: 2L − 2 products (the first layer's
      gradient needs no product with W_{0:1} = I).
    """
    depth = weights.shape[0]
    grads = [None] * depth
    above = residual
    for l in range(depth - 1, 0, -1):
        grads[l] = above @ below[l].T  # (W_{L:l+1}ᵀ R) W_{l−1:1}ᵀ
        above = weights[l].T @ above
    grads[0] = above  # W_{L:2}ᵀ R
    return jnp.stack(grads)


@float64
def gradients(weights: Array, target: Array) -> Array:
    """∇_{W_l} ℓ = W_{L:l+1}ᵀ (W_{L:1} − Φ) W_{l−1:1}ᵀ for every layer.

    Args:
      weights: (L, d, d). target: (d, d) Φ.

    Returns:
      (L, d, d).
    """
    below = prefix_products(weights)  # below[l] = W_{l:1}
    return backprop(weights, below, below[-1] - target)


@float64
def gd_step(weights: Array, target: Array, lr: float, weight_decay: float = 0.0) -> Array:
    """One step W_l ← (1 − ηλ) W_l − η ∇_{W_l} ℓ for every layer at once.

    Args:
      weights: (L, d, d) Θ(t). target: (d, d) Φ. lr: η. weight_decay: λ.

    Returns:
      (L, d, d) Θ(t + 1).
    """
    return (1.0 - lr * weight_decay) * weights - lr * gradients(weights, target)


# ---------------------------------------------------------------------------------------------
# Long runs: one jitted lax.scan that keeps only what is recorded.


def scan_records(
    step: Callable[[Any], Any],
    record: Callable[[Any, Array], Any],
    state: Any,
    *,
    steps: int,
    record_every: int,
    guard_finite: bool = False,
) -> tuple[Any, Any]:
    """Iterate ``step`` for ``steps`` steps, recording at t = 0, k, 2k, …, steps (k = record_every).

    Call it inside ``jax.jit`` (the callers do): it is two nested ``lax.scan`` loops, the inner
    one of ``record_every`` steps without records, the outer one recording after each.

    Args:
      step: state → state, one iteration.
      record: (state, t) → pytree, evaluated at the recorded steps.
      state: the initial state (any pytree of arrays).
      steps: T, a multiple of ``record_every``.
      record_every: k.
      guard_finite: replace a non-finite state by zeros before recording it, so a diverged run
        never hands NaNs to LAPACK (it prints to stdout); the caller must then reject the run.

    Returns:
      (final state, records); every leaf of ``records`` has a leading axis of T/k + 1.
    """

    def inner(s, _):
        return step(s), None

    def outer(s, i):
        s, _ = jax.lax.scan(inner, s, None, length=record_every)
        t = (i + 1) * record_every
        shown = s
        if guard_finite:
            finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(s)]))
            shown = jax.tree.map(lambda a: jnp.where(finite, a, jnp.zeros_like(a)), s)
        return s, record(shown, t)

    first = record(state, jnp.asarray(0))
    final, rest = jax.lax.scan(outer, state, jnp.arange(steps // record_every))
    records = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first, rest)
    return final, records


@float64
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
    final, records = _scan_gd(weights, target, lr, weight_decay, steps, record_every, record)
    if not bool(jnp.all(jnp.isfinite(final))):
        raise ValueError(
            f"gradient descent diverged with step size {lr} (non-finite weights after {steps} "
            "steps); lower the step size"
        )
    return final, records


@partial(jax.jit, static_argnames=("steps", "record_every", "record"))
def _scan_gd(weights, target, lr, weight_decay, steps, record_every, record):
    # η, λ and Φ stay arguments of the compiled program (not constants folded into it).
    return scan_records(lambda w: gd_step(w, target, lr, weight_decay), record, weights,
                        steps=steps, record_every=record_every, guard_finite=True)


def as_numpy(tree: Any) -> Any:
    """Device arrays → NumPy (float64 kept) for saving and plotting; same pytree structure."""
    return jax.tree.map(lambda a: np.array(a, copy=True), tree)
