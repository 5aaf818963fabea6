"""Low-rank adapter layers: the factor chain ΔW = F_1 ⋯ F_L and its initialisations.

arXiv:2406.04112 compares vanilla LoRA, W = W̄ + W_2 W_1, with Deep LoRA, W = W̄ + W_3 W_2 W_1,
whose factors start ε-scaled orthogonal (Section 4), and with its compressed form built from one
gradient (Section 2). All three are one layer type here, a ``FactorChain``: for a frozen dense
layer y = x·W̄ (kernel (in, out)) the adapted layer is y = x·(W̄ + s·F_1 F_2 ⋯ F_L). Vanilla LoRA
is the chain of two, F_1 = W_1ᵀ (in × r) zero and F_2 = W_2ᵀ (r × out) Gaussian, with s = 1 (the
paper's unscaled LoRA; PEFT's s = α/r is an option of ``adapters.AdapterConfig``).

Factors are ``AdapterParam`` parameters (a Param subtype, as ``nnx.LoRAParam`` is), so an
optimizer built with ``wrt=AdapterParam`` trains only them; compressed Deep LoRA's outer
factors are ``OuterAdapterParam`` (an ``AdapterParam`` subtype) so they can take a smaller step.
Where adapters go in a model, and how they are merged, saved and loaded, is
``companion.adapt.adapters`` (PEFT separates ``layer.py`` from ``model.py`` the same way).
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


class AdapterParam(nnx.Param):
    """Trainable adapter factors (the only parameters the optimizer updates by default)."""


class FrozenColumns(nnx.Variable):
    """State of a chain whose first factor trains on some columns only (``FactorChain.restrict``):
    the full first factor as drawn, the trained column indices and the column → slot map. Not a
    Param: the optimizer never sees it. It differs per seed, so training vectorised over seeds
    stacks it with the heads rather than sharing it with the frozen encoder."""


class OuterAdapterParam(AdapterParam):
    """Outer factors of compressed Deep LoRA (U_{L,1}, V_{1,1}), trained with the discrepant step
    γη (arXiv:2406.04112, compression from the first gradient). An ``AdapterParam`` too, so
    ``wrt=AdapterParam`` trains them."""


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def chain_apply(x: Array, factors: tuple[Array, ...], scale: float) -> Array:
    """y = scale · x F_1 F_2 ⋯ F_L, the adapter's share of an adapted layer's output.

    The backward pass is written out (``custom_vjp``): every factor gradient is one einsum over
    the batch axes producing a (k, ·) result, and nothing of size (..., in) is transposed.
    Differentiating the plain expression instead lets XLA:CPU pick layouts that cost ~9 ms more
    per adapted BERT-base-sized layer and step (measured).

    Args:
      x: (..., in) inputs.
      factors: (W_1 (k_1, in), F_2 (k_1, k_2), …, F_L (k_{L-1}, out)), F_1 = W_1ᵀ.
      scale: s (1 in the paper; α/r PEFT-style).

    Returns:
      (..., out).
    """
    return _chain_forward(x, factors, scale)[0]


def _chain_forward(x, factors, scale):
    hs = [x @ factors[0].T]
    for f in factors[1:]:
        hs.append(hs[-1] @ f)
    return scale * hs[-1], hs


def _chain_fwd(x, factors, scale):
    y, hs = _chain_forward(x, factors, scale)
    return y, (x, factors, hs[:-1])


def _chain_bwd(scale, residuals, gy):
    x, factors, hs = residuals
    g = scale * gy
    grads = [None] * len(factors)
    for i in range(len(factors) - 1, 0, -1):
        grads[i] = jnp.einsum("...a,...b->ab", hs[i - 1], g)  # (k_{i-1}, k_i)
        g = g @ factors[i].T
    grads[0] = jnp.einsum("...k,...i->ki", g, x)  # (k_1, in)
    return g @ factors[0], tuple(grads)


chain_apply.defvjp(_chain_fwd, _chain_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def rest_apply(h: Array, factors: tuple[Array, ...], scale: float) -> Array:
    """y = scale · h F_2 ⋯ F_L: the chain after its first factor, for inputs h = x F_1 already
    formed (an embedding's looked-up columns of W_1, ``FactorChain.lookup``).

    The backward pass is written out as ``chain_apply``'s: each factor gradient one einsum over
    the batch axes producing (k_{i-1}, k_i). Differentiating ``h @ F_2`` plainly makes XLA:CPU
    produce ∂y transposed, (out, tokens), and it fuses that transpose into the large fusion that
    computes ∂y (the layer norm's and dropout's backward, with dropout's Threefry recomputed),
    which then runs on transposed reads: 69 ms of a 0.54 s all-dense LoRA step (batch 16 × 64
    tokens, measured with ``companion.bench.profile``).

    Args:
      h: (..., k_1). factors: (F_2 (k_1, k_2), …, F_L (k_{L-1}, out)). scale: s.

    Returns:
      (..., out).
    """
    return _rest_forward(h, factors, scale)[0]


def _rest_forward(h, factors, scale):
    hs = [h]
    for f in factors:
        hs.append(hs[-1] @ f)
    return scale * hs[-1], hs


def _rest_fwd(h, factors, scale):
    y, hs = _rest_forward(h, factors, scale)
    return y, (factors, hs[:-1])


def _rest_bwd(scale, residuals, gy):
    factors, hs = residuals
    g = scale * gy
    grads = [None] * len(factors)
    for i in range(len(factors) - 1, -1, -1):
        grads[i] = jnp.einsum("...a,...b->ab", hs[i], g)  # (k_i, k_{i+1})
        g = g @ factors[i].T
    return g, tuple(grads)


rest_apply.defvjp(_rest_fwd, _rest_bwd)


class FactorChain(nnx.Module):
    """ΔW = scale · F_1 F_2 ⋯ F_L (in, out), with F_1 (in, k_1), …, F_L (k_{L-1}, out).

    F_1 is *stored transposed*, as ``factors[0]`` of shape (k_1, in) — the paper's W_1 ∈ R^{r×n}
    and PEFT's ``lora_A`` layout. Speed, not taste: the gradient of a factor stored (in, k) is a
    tall-thin (in × k) contraction over the batch that XLA:CPU runs ~15× slower than the same
    numbers produced as (k × in). ``x → x·ΔW`` goes through the narrow factors (never forming
    ΔW), and for an embedding table the looked-up rows are F_1[ids] F_2 ⋯ F_L.
    """

    def __init__(self, factors: Sequence[Array], scale: float = 1.0, outer: Sequence[bool] = ()):
        outer = tuple(outer) or (False,) * len(factors)
        self.factors = nnx.List([(OuterAdapterParam if o else AdapterParam)(jnp.asarray(f, dtype=jnp.float32))
                                 for f, o in zip(factors, outer)])
        self.scale = scale
        self.merged = False
        # Set by ``restrict``: the first factor as drawn (k_1, in), the trained columns (m,), and
        # each column's slot among them (in,), −1 for the others.
        self.all_columns = nnx.data(None)
        self.columns = nnx.data(None)
        self.slots = nnx.data(None)

    @property
    def restricted(self) -> bool:
        """Whether only some columns of the first factor train (``restrict``)."""
        return self.slots is not None

    def restrict(self, columns) -> None:
        """Train only the columns ``columns`` (m,) of the first factor W_1 (k_1, in); the others
        stay as drawn, frozen.

        For an embedding table the columns are tokens (rows of ΔW): only the looked-up ones enter
        the forward pass, so every other column's gradient is exactly 0, and with AdamW without
        weight decay (this package's, and the authors') a column whose gradient has always been 0
        keeps zero moments and an update of exactly 0/(0 + ε̂) = 0. Restricting the trained factor
        to the tokens of the training rows therefore changes no number of the run, while the
        gradient, the optimizer state and the update shrink from (k_1, vocab) to (k_1, m):
        a step costs what the batch's tokens cost, not the vocabulary (``companion bench
        embedding``). ``unrestrict`` puts the trained columns back into the full factor.

        Raises:
          ValueError: already restricted, merged, or columns not distinct indices of the input side.
        """
        if self.restricted or self.merged:
            raise ValueError("restrict a chain that is neither restricted nor merged")
        full = self.factors[0][...]
        columns = jnp.asarray(columns, dtype=jnp.int32)
        n = full.shape[1]
        if columns.ndim != 1 or columns.size == 0 or int(columns.min()) < 0 or int(columns.max()) >= n \
                or len(set(columns.tolist())) != columns.size:
            raise ValueError(f"columns must be distinct indices in [0, {n}), got shape {columns.shape}")
        slots = jnp.full((n,), -1, dtype=jnp.int32).at[columns].set(jnp.arange(columns.size, dtype=jnp.int32))
        self.all_columns, self.columns, self.slots = FrozenColumns(full), FrozenColumns(columns), FrozenColumns(slots)
        self.factors[0] = type(self.factors[0])(full[:, columns])

    def first(self) -> Array:
        """The first factor W_1 (k_1, in), the trained columns put back when ``restricted``."""
        if not self.restricted:
            return self.factors[0][...]
        return self.all_columns[...].at[:, self.columns[...]].set(self.factors[0][...])

    def unrestrict(self) -> None:
        """Undo ``restrict``: the first factor is whole again (its trained columns as trained)."""
        if self.restricted:
            self.factors[0] = type(self.factors[0])(self.first())
            self.all_columns = self.columns = self.slots = None

    def full_factors(self) -> list[Array]:
        """[W_1 (k_1, in), F_2, …, F_L] as arrays, W_1 whole even when ``restricted``."""
        return [self.first()] + [f[...] for f in list(self.factors)[1:]]

    def _first_columns(self, ids: Array) -> Array:
        """W_1[:, ids] (k_1, *ids.shape): from the trained columns where a column has a slot."""
        if not self.restricted:
            return jnp.take(self.factors[0][...], ids, axis=1)
        slot = jnp.take(self.slots[...], ids)
        inside = jnp.take(self.factors[0][...], jnp.maximum(slot, 0), axis=1)
        return jnp.where(slot >= 0, inside, jnp.take(self.all_columns[...], ids, axis=1))

    def _rest(self, y: Array) -> Array:
        for f in list(self.factors)[1:]:
            y = y @ f[...]
        return self.scale * y

    def __call__(self, x: Array) -> Array:
        """x (..., in) → x·ΔW (..., out) through the narrow factors; zeros once merged."""
        if self.merged:
            return jnp.zeros(x.shape[:-1] + (self.factors[-1][...].shape[-1],), x.dtype)
        return chain_apply(x, tuple(self.full_factors()), self.scale)

    def lookup(self, ids: Array) -> Array:
        """Rows ΔW[ids] of an embedding table's update: ids (...,) int → (..., out); zeros once merged."""
        if self.merged:
            return jnp.zeros(ids.shape + (self.factors[-1][...].shape[-1],), jnp.float32)
        cols = self._first_columns(ids)  # (k_1, ...)
        h = cols.T if ids.ndim == 1 else jnp.moveaxis(cols, 0, -1)  # (..., k_1)
        return rest_apply(h, tuple(f[...] for f in list(self.factors)[1:]), self.scale)

    def delta(self) -> Array:
        """ΔW (in, out), float32."""
        return self._rest(self.first().T)

    @property
    def in_features(self) -> int:
        """n, the input side of ΔW."""
        return (self.all_columns if self.restricted else self.factors[0])[...].shape[1]


def lora_factors(key: Array, in_features: int, out_features: int, rank: int) -> list[Array]:
    """Vanilla LoRA at init: F_1 = W_1ᵀ (in, r) = 0, stored (r, in); F_2 = W_2ᵀ (r, out) ~ N(0, 1).

    arXiv:2406.04112, Deep LoRA experiments: W = W̄ + W_2 W_1 without α/r scaling, ΔW = 0 at init.
    Replication choice, the orientation of the authors' code (cjyaras/deep-lora-transformers@618c410,
    models.py, ``MatrixFactorization`` with depth 2): on a Flax kernel K (in, out) the update is
    ΔK = w1·w0 with w1 (in, r) zeros and w0 (r, out) standard normal, so the zero factor is the
    input side and the Gaussian one the output side. At step 0 only the input-side factor gets a
    gradient; for an embedding table (K = (vocab, hidden)) that zero factor is the token-indexed
    one, so the rows of ΔW of tokens never seen in training stay exactly 0.

    Args:
      key: PRNG key of the Gaussian factor.
      in_features, out_features: n, m of the layer (kernel (n, m)).
      rank: r.

    Returns:
      [W_1 (r, n) = 0, W_2ᵀ (r, m) ~ N(0, 1)], the chain layout of ``FactorChain``.
    """
    return [jnp.zeros((rank, in_features), dtype=jnp.float32),
            jax.random.normal(key, (rank, out_features), dtype=jnp.float32)]


def _scaled_orthogonal(key: Array, rows: int, cols: int, eps: float) -> Array:
    """ε times a Haar-random matrix with orthonormal rows or columns, (rows, cols)."""
    g = jax.random.normal(key, (max(rows, cols), min(rows, cols)), dtype=jnp.float32)
    q, r = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    return eps * (q if rows >= cols else q.T)


def deep_factors(key: Array, in_features: int, out_features: int, width: int, depth: int,
                 eps: float) -> list[Array]:
    """Deep LoRA at init: W = W̄ + W_L ⋯ W_1, every W_i ε-scaled (semi-)orthogonal.

    arXiv:2406.04112, Deep LoRA (Section 4, with the initialisation of Section 2): depth L = 3,
    ε = 1e-3; the wide variant has width k = min(in, out), the narrow one a width r.

    Args:
      key: PRNG key (split into L).
      in_features, out_features: n, m of the layer.
      width: k.
      depth: L ≥ 2.
      eps: ε.

    Returns:
      [W_1 (k, n), W_2ᵀ (k, k), …, W_Lᵀ (k, m)], the chain layout of ``FactorChain``.
    """
    keys = jax.random.split(key, depth)
    factors = [_scaled_orthogonal(keys[0], width, in_features, eps)]
    factors += [_scaled_orthogonal(keys[i], width, width, eps).T for i in range(1, depth - 1)]
    factors.append(_scaled_orthogonal(keys[-1], out_features, width, eps).T)
    return factors


def compressed_factors(key: Array, in_features: int, out_features: int, rank: int, depth: int,
                       eps: float, gradient: Array) -> list[Array]:
    """Compressed Deep LoRA from one gradient of the wide model.

    arXiv:2406.04112, compression from the first gradient (Section 2, Theorem 1 and
    Proposition 2, applied to adapters in Section 4), in the orientation and normalisation of the
    authors' code (deep-lora-transformers@618c410, train.py, ``create_compressed_lora_train_state``
    and its ``get_left_right_factors``; models.py, ``MatrixFactorization``).

    The wide adapter of this layer (width k = min(in, out), ``deep_factors``) is drawn, used and
    dropped here: only one wide layer exists at a time. In the kernel layout (in, out) the wide
    update is ΔW = F_1 F_2 ⋯ F_L, and the authors' first factor ``w0`` is the one on the
    *output* side, F_L (k, out) (their ``MatrixFactorization`` multiplies ``w_i @ x`` onto
    ``w0`` of shape (rank, out)). With ∂ℓ/∂ΔW = Gᵀ (in, out) at the wide init (ΔW = O(ε^L)):

    - g = ∂ℓ/∂F_L = (F_1 ⋯ F_{L-1})ᵀ Gᵀ (k, out);
    - v_1: the top r/2 right singular vectors of g; v_2: the top r/2 right singular vectors of
      gᵀ F_L (out, out), which span F_Lᵀ times g's top left singular vectors (Theorem 1's
      col(W_1(0)ᵀ ·) term, Proposition 2);
    - the output-side outer factor R (out, r) is an orthonormal basis of [v_1, v_2];
    - the input-side outer factor is ΔW(0) R / ε^L (in, r), *not* re-orthonormalised: for an
      expanding layer (in < out) ΔW(0)/ε^L has orthonormal rows, so its columns are shorter
      than 1 and not orthogonal (measured on MiniLM's six 384 → 1536 layers: norms 0.7–0.8),
      as in the authors' code.

    The chain is [(ΔW(0) R/ε^L)ᵀ, ε I_r × L, Rᵀ]: ΔW = (ΔW(0) R/ε^L)(ε^L I) Rᵀ = ΔW(0) R Rᵀ at
    the start, the wide update projected onto R.

    Args:
      key: PRNG key of the wide initialisation (``deep_factors``).
      in_features, out_features: n, m of the layer.
      rank: r, even (r/2 directions from each singular-vector set).
      depth: L.
      eps: ε.
      gradient: (out, in) ∂ℓ/∂W in the paper's layout (kernel gradient transposed).

    Returns:
      [(ΔW(0) R/ε^L)ᵀ (r, n), ε I_r × L, Rᵀ (r, m)], L + 2 factors in chain layout.

    Raises:
      ValueError: r > min(n, m).
    """
    width = min(in_features, out_features)
    if rank > width:
        raise ValueError(f"rank {rank} exceeds the layer's width min(in, out) = {width}")
    wide = deep_factors(key, in_features, out_features, width, depth, eps)
    below = wide[0].T  # F_1 ⋯ F_{L-1} (in, k): everything but the output-side factor
    for f in wide[1:-1]:
        below = below @ f
    last = wide[-1]  # F_L (k, out), the authors' w0
    g = below.T @ gradient.T  # ∂ℓ/∂F_L (k, out)
    half = rank // 2
    v1 = jnp.linalg.svd(g, full_matrices=False)[2][:half].T  # (out, r/2)
    v2 = jnp.linalg.svd(g.T @ last, full_matrices=False)[2][:half].T  # (out, r/2)
    right = jnp.linalg.svd(jnp.concatenate([v1, v2], axis=1), full_matrices=False)[0]  # R (out, r)
    left = (below @ last) @ right / eps**depth  # ΔW(0) R / ε^L (in, r)
    inner = [eps * jnp.eye(rank, dtype=jnp.float32) for _ in range(depth)]  # distinct buffers
    return [left.T, *inner, right.T]


# One compiled program per layer shape (reused across layers and runs) instead of op-by-op
# QR and SVD; the ValueError for a rank above the width is raised while tracing, before any work.
deep_factors_jit = jax.jit(deep_factors, static_argnums=(1, 2, 3, 4, 5))
compressed_factors_jit = jax.jit(compressed_factors, static_argnums=(1, 2, 3, 4, 5))
