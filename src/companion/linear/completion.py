"""Deep matrix completion with the paper's conventions, four methods, one interface
(arXiv:2406.04112, deep matrix completion experiments (authors' notebooks)).

Loss: ℓ = ½ · mean over all d² entries of ((f − Φ) ⊙ M)², M the mask of exactly ⌊p·d²⌋
observed entries drawn without replacement; Φ the rank-r* truncation of a standard Gaussian
d × d matrix (not normalised, as in the authors' notebooks). Recovery error: the same
expression on the unobserved entries (1 − M). Plain gradient descent in float64, stopped when
the training loss drops below a tolerance.

Methods (``METHODS``):
  original           L factors d × d, ε-scaled orthogonal, step η on all.
  compressed         U_{L,1}, V_{1,1} from the first gradient (``compression``), L inner
                     2r̂ × 2r̂ factors at ε I; inner step η, outer step γη (γ = 0.01).
  compressed-gamma0  the same with γ = 0 (outer factors frozen): stalls (arXiv:2406.04112,
                     compression from the first gradient, matrix completion).
  narrow             a randomly initialised network of width 2r̂ (d → 2r̂ → … → 2r̂ → d),
                     every factor ε-scaled (semi-)orthogonal, step η on all.

Speed: the compressed and narrow steps never multiply two d × d matrices. With X = U·W̃_{L:1}
(d × 2r̂), the prediction is X Vᵀ and the gradients need only R V, Rᵀ X (d × 2r̂) and
Uᵀ(R V) (2r̂ × 2r̂), R the residual on Ω: O(d²·r̂) work per step against the original's O(d³),
or O(|Ω|·r̂) through the sparse layouts when few entries are observed (``compressed_grads``).

Names: ``target_rank`` is r*, ``rank_estimate`` r̂, ``hidden`` the width of a narrow network
(2r̂ by default), ``init_scale`` ε (the same for every layer). Every public function runs in
float64 (``precision.float64``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from companion.linear import compression, factorization
from companion.linear.precision import float64

Array = jax.Array
METHODS = ("original", "compressed", "compressed-gamma0", "narrow")


class Problem(NamedTuple):
    """A completion instance.

    Attributes:
      target: (d, d) Φ.
      mask: (d, d) float64, 1 on Ω.
      rows, cols: (|Ω|,) int32 indices of the observed entries, sorted by row.
      values: (|Ω|,) Φ on Ω.
      csr_cols, csr_values, csr_valid: (d, m) the observed entries row by row, padded to the
        largest row count m (column index, Φ value, 1/0 for real/padding).
      csc_rows, csc_source, csc_valid: (d, m') column by column: row index, position of the
        entry in the flattened (d, m) row layout, 1/0. The sparse compressed step uses these two
        layouts so that it needs only gathers and batched products, no scatter-add (slow on
        XLA's CPU backend).
      observed: (d, d) bool, True on Ω (the dense compressed step reads it: 1 byte an entry
        against the float mask's 8).
    """

    target: Array
    mask: Array
    rows: Array
    cols: Array
    values: Array
    csr_cols: Array
    csr_values: Array
    csr_valid: Array
    csc_rows: Array
    csc_source: Array
    csc_valid: Array
    observed: Array

    @property
    def width(self) -> int:
        """d, the side of Φ."""
        return self.target.shape[0]


def _padded_layouts(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, width: int) -> dict:
    """Row-major and column-major padded index layouts of Ω (see Problem)."""
    n = rows.size
    count = np.bincount(rows, minlength=width)
    m = max(int(count.max()), 1)
    pos = np.arange(n) - np.repeat(np.cumsum(count) - count, count)  # rows are sorted
    csr_cols = np.zeros((width, m), np.int32)
    csr_values = np.zeros((width, m))
    csr_valid = np.zeros((width, m))
    csr_cols[rows, pos], csr_values[rows, pos], csr_valid[rows, pos] = cols, values, 1.0
    order = np.lexsort((rows, cols))
    c_rows, c_cols = rows[order], cols[order]
    c_count = np.bincount(c_cols, minlength=width)
    m2 = max(int(c_count.max()), 1)
    c_pos = np.arange(n) - np.repeat(np.cumsum(c_count) - c_count, c_count)
    csc_rows = np.zeros((width, m2), np.int32)
    csc_source = np.zeros((width, m2), np.int32)
    csc_valid = np.zeros((width, m2))
    csc_rows[c_cols, c_pos] = c_rows
    csc_source[c_cols, c_pos] = (rows * m + pos)[order]
    csc_valid[c_cols, c_pos] = 1.0
    return dict(csr_cols=csr_cols, csr_values=csr_values, csr_valid=csr_valid,
                csc_rows=csc_rows, csc_source=csc_source, csc_valid=csc_valid)


def validate(width: int, target_rank: int, fraction: float, rank_estimate: int | None = None) -> int:
    """Check a completion setting; returns |Ω| = ⌊p·d²⌋.

    Args:
      width: d. target_rank: r*. fraction: p. rank_estimate: r̂ (None: not checked).

    Raises:
      ValueError: p outside (0, 1], fewer observed entries than the 2dr* − r*² degrees of freedom
        of a rank-r* matrix, r̂ < r*, or 2r̂ ≥ d.
    """
    for name, v in (("width", width), ("rank", target_rank)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"the observed fraction p must be in (0, 1], got {fraction}")
    if 2 * target_rank >= width:
        raise ValueError(f"need 2r* < d: rank {target_rank}, width {width}")
    n_obs = int(np.floor(fraction * width * width))
    dof = target_rank * (2 * width - target_rank)
    if n_obs < dof:
        raise ValueError(
            f"⌊p·d²⌋ = {n_obs} observed entries cannot determine a rank-{target_rank} {width}×{width} "
            f"matrix ({dof} degrees of freedom); raise the fraction"
        )
    if rank_estimate is not None:
        if rank_estimate < target_rank:
            raise ValueError(f"rank estimate r̂ = {rank_estimate} must be ≥ r* = {target_rank}")
        if 2 * rank_estimate >= width:
            raise ValueError(f"need 2r̂ < d: rank estimate {rank_estimate}, width {width}")
    return n_obs


def problem_key(seed: int) -> Array:
    """The key of Φ and Ω for a seed; Θ(0) uses ``jax.random.key(seed)`` itself, so the
    problem and the initialisation of one seed are independent."""
    return jax.random.fold_in(jax.random.key(seed), 1)


@float64
def make_problem(key: Array, width: int, target_rank: int, fraction: float) -> Problem:
    """A completion instance (arXiv:2406.04112, deep matrix completion experiments (authors'
    notebooks)): Φ = rank-r* truncation of a d × d standard Gaussian (not normalised); Ω =
    ⌊p·d²⌋ entries drawn without replacement. One key, split for Φ and Ω.

    Args:
      key: PRNG key (``problem_key(seed)`` in the chapters and the CLI).
      width: d. target_rank: r*. fraction: p ∈ (0, 1].

    Returns:
      Problem (float64).

    Raises:
      ValueError: see ``validate``.
    """
    n_obs = validate(width, target_rank, fraction)
    k_phi, k_mask = jax.random.split(key)
    target = factorization.low_rank_target(k_phi, width, target_rank, normalize=False)
    flat = jax.random.choice(k_mask, width * width, (n_obs,), replace=False)
    flat = np.sort(np.asarray(flat))
    rows, cols = (flat // width).astype(np.int32), (flat % width).astype(np.int32)
    values = np.asarray(target)[rows, cols]
    mask = np.zeros(width * width)
    mask[flat] = 1.0
    layouts = {k: jnp.asarray(v) for k, v in _padded_layouts(rows, cols, values, width).items()}
    return Problem(target, jnp.asarray(mask.reshape(width, width)), jnp.asarray(rows),
                   jnp.asarray(cols), jnp.asarray(values), **layouts,
                   observed=jnp.asarray(mask.reshape(width, width) > 0))


# ---------------------------------------------------------------------------------------------
# Losses and gradients.


@float64
def dense_loss(f: Array, problem: Problem) -> Array:
    """½ mean((f − Φ) ⊙ M)² over all d² entries: the training loss, a scalar; f is (d, d)."""
    return 0.5 * jnp.mean(((f - problem.target) * problem.mask) ** 2)


@float64
def recovery_error(f: Array, problem: Problem) -> Array:
    """½ mean((f − Φ) ⊙ (1 − M))² over all d² entries: the error on the unobserved entries,
    a scalar; f is (d, d) (the authors' notebooks' convention)."""
    return 0.5 * jnp.mean(((f - problem.target) * (1.0 - problem.mask)) ** 2)


@float64
def original_grads(weights: Array, problem: Problem) -> tuple[Array, Array]:
    """(loss, ∇ of every d × d factor) for the original network: weights (L, d, d) → (L, d, d)."""
    below = factorization.prefix_products(weights)
    residual = problem.mask * (below[-1] - problem.target) / problem.width**2
    return dense_loss(below[-1], problem), factorization.backprop(weights, below, residual)


# Below this observed fraction the compressed step walks the sparse layouts, above it the dense
# residual. Measured by ``companion bench completion`` on a 2-core AMD EPYC (XLA:CPU, float64,
# d = 1000, 2r̂ = 10): the sparse step costs about 40 ns per padded entry of Ω (XLA's gathers
# run as scalar loops), the dense one about 2.5 ns per entry of the d × d matrix, so they cross
# near p = 1/16.
DENSE_FRACTION = 1 / 16


def step_layout(problem: Problem) -> str:
    """"dense" or "sparse": which form of the compressed step ``compressed_grads`` takes for this
    problem, from its shapes alone (so it is fixed when the step is compiled): dense when
    |Ω| ≥ d²/16 (``DENSE_FRACTION``)."""
    d = problem.width
    return "dense" if problem.rows.shape[0] >= DENSE_FRACTION * d * d else "sparse"


@float64
def compressed_grads(c: compression.Compressed, problem: Problem,
                     layout: str | None = None) -> tuple[Array, compression.Compressed]:
    """(loss, gradients) of f_C = U W̃_{L:1} Vᵀ with no product of d × d matrices.

    ∂ℓ/∂f is the matrix R with R_ij = (f_ij − Φ_ij)/d² on Ω and 0 elsewhere. Then
    ∇U = (R V) W̃ᵀ, ∇V = Rᵀ (U W̃), ∇W̃_{L:1} = Uᵀ (R V), and the inner factors by ``backprop``;
    with X = U W̃_{L:1} (d × 2r̂) everything is O(d²·r̂) or less, against the original step's
    O(d³) products.

    Two forms, the same numbers to rounding (``step_layout`` picks one):
      dense: f = X Vᵀ, R = where(Ω, f − Φ, 0)/d², then R V and Rᵀ X; it streams Φ and the
        boolean mask once and touches 3 d × d arrays, O(d²·r̂) work.
      sparse: only the entries of Ω, through the padded row and column layouts; O(|Ω|·r̂) work,
        for small observed fractions (or widths whose d × d arrays would not fit).

    Args:
      c: Compressed, left and right (d, k), inner (L, k, k). problem: the instance.
      layout: "dense", "sparse" or None (``step_layout``).

    Returns:
      (loss, Compressed of gradients with the shapes of ``c``).
    """
    layout = layout or step_layout(problem)
    if layout not in ("dense", "sparse"):
        raise ValueError(f"layout must be 'dense' or 'sparse', got {layout!r}")
    d = problem.width
    if c.inner.shape[0]:
        below = factorization.prefix_products(c.inner)
        k_mat = below[-1]
    else:
        below, k_mat = [], jnp.eye(c.left.shape[1], dtype=c.left.dtype)
    x = c.left @ k_mat  # (d, k)
    if layout == "dense":
        r = jnp.where(problem.observed, x @ c.right.T - problem.target, 0.0) / d**2  # (d, d)
        loss = 0.5 * jnp.sum(r**2) * d**2
        rv, rtx = r @ c.right, r.T @ x  # R V, Rᵀ X: (d, k)
    else:
        v_obs = c.right[problem.csr_cols]  # (d, m, k): v_j for (i, j) ∈ Ω, row by row
        err = (jnp.einsum("ik,ijk->ij", x, v_obs) - problem.csr_values) * problem.csr_valid
        loss = 0.5 * jnp.sum(err**2) / d**2
        r = err / d**2  # ∂ℓ/∂f on Ω, (d, m)
        rv = jnp.einsum("ij,ijk->ik", r, v_obs)  # R V, (d, k)
        r_by_col = r.reshape(-1)[problem.csc_source] * problem.csc_valid  # (d, m')
        x_obs = x[problem.csc_rows]  # (d, m', k): x_i for (i, j) ∈ Ω, column by column
        rtx = jnp.einsum("ji,jik->jk", r_by_col, x_obs)  # Rᵀ X, (d, k)
    g_left = rv @ k_mat.T
    g_k = c.left.T @ rv
    g_inner = factorization.backprop(c.inner, below, g_k) if c.inner.shape[0] else c.inner
    return loss, compression.Compressed(g_left, g_inner, rtx)


@float64
def compressed_grads_dense(c: compression.Compressed, problem: Problem) -> tuple[Array, compression.Compressed]:
    """The same by automatic differentiation of the dense loss (reference for tests)."""
    return jax.value_and_grad(lambda p: dense_loss(compression.end_to_end(p), problem))(c)


# ---------------------------------------------------------------------------------------------
# Initialisation of each method.


@float64
def init_original(key: Array, width: int, depth: int, init_scale: float) -> Array:
    """(L, d, d) ε-scaled orthogonal factors (the same ε for every layer)."""
    return factorization.scaled_orthogonal(key, width, (init_scale,) * depth)


@float64
def init_compressed(weights0: Array, problem: Problem, init_scale: float, rank_estimate: int) -> compression.Compressed:
    """Outer factors from the first gradient of the original network (arXiv:2406.04112,
    compression from the first gradient, applied to deep matrix completion).

    Args:
      weights0: (L, d, d) the original network's Θ(0). problem: the instance.
      init_scale: ε of Θ(0). rank_estimate: r̂; the compressed width is 2r̂.

    Returns:
      Compressed with left, right (d, 2r̂) and inner (L, 2r̂, 2r̂) = ε I.


    For completion, ∂ℓ/∂f = M ⊙ (f − Φ)/d² is not low rank, so (as the authors do) the
    directions are the top r̂ singular directions of the first gradient G of W_1 itself.
    """
    depth = weights0.shape[0]
    scales = (init_scale,) * depth
    if int(problem.csr_cols.shape[1]) == problem.width and float(problem.mask.min()) == 1.0:
        # Fully observed (deep matrix factorization): the exact recipe (``compress_factorization``).
        return compression.compress_factorization(weights0, problem.target, scales, rank_estimate)
    _, grads = original_grads(weights0, problem)
    left, right = compression.outer_factors(
        -grads[0], weights0[0], factorization.end_to_end(weights0), scales, rank_estimate
    )
    k = 2 * rank_estimate
    inner = jnp.stack([init_scale * jnp.eye(k, dtype=weights0.dtype)] * depth)
    return compression.Compressed(left, inner, right)


@float64
def init_narrow(key: Array, width: int, depth: int, init_scale: float, hidden: int) -> compression.Compressed:
    """A random network W_L (d×k) ⋯ W_1 (k×d) of hidden width k, every factor ε-scaled
    (semi-)orthogonal. The paper's "random narrow" baseline has k = 2r̂ (arXiv:2406.04112, deep
    matrix completion experiments, rank-estimate sweep); its depth study varies k.

    Args:
      key: PRNG key. width: d. depth: L ≥ 2. init_scale: ε. hidden: k.

    Returns:
      Compressed(left=W_L (d, k), inner=W_{L−1},…,W_2 (L − 2, k, k), right=W_1ᵀ (d, k)).
    """
    k = hidden
    keys = jax.random.split(key, depth)
    left = init_scale * factorization.haar_orthogonal(keys[0], width, k)
    right = init_scale * factorization.haar_orthogonal(keys[1], width, k)
    inner = (factorization.scaled_orthogonal(keys[2], k, (init_scale,) * (depth - 2)) if depth > 2
             else jnp.zeros((0, k, k)))
    return compression.Compressed(left, inner, right)


# ---------------------------------------------------------------------------------------------
# Training to a tolerance inside one jitted loop.


@dataclass(frozen=True)
class CompletionRun:
    """One method's run.

    Attributes:
      method: one of METHODS.
      steps: (R,) recorded steps (0, k, 2k, …, up to convergence or the budget).
      train_loss: (R,) ℓ at those steps.
      recovery_error: (R,) error on the unobserved entries at those steps.
      steps_to_tol: first step with ℓ < tol, or the budget if never reached.
      converged: whether ℓ < tol was reached within the budget.
      wall_time_s: seconds of the compiled run (compilation excluded, see compile_time_s).
      compile_time_s: seconds to compile.
      time_per_step_s: wall_time_s / steps taken.
      iterates: (R_it, d, d) end-to-end matrices every ``iterate_every`` steps, or None.
      iterate_steps: (R_it,) their steps, or None.
    """

    method: str
    steps: np.ndarray
    train_loss: np.ndarray
    recovery_error: np.ndarray
    steps_to_tol: int
    converged: bool
    wall_time_s: float
    compile_time_s: float
    time_per_step_s: float
    iterates: np.ndarray | None = None
    iterate_steps: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        """The run's final numbers as a flat dict (``companion complete`` prints it)."""
        return {
            "method": self.method,
            "recovery_error": float(self.recovery_error[-1]),
            "train_loss": float(self.train_loss[-1]),
            "steps": int(self.steps_to_tol),
            "converged": bool(self.converged),
            "wall_time_s": float(self.wall_time_s),
            "time_per_step_s": float(self.time_per_step_s),
        }


def _optimizer(method: str, lr: float, gamma: float) -> optax.GradientTransformation:
    """Plain GD; compressed methods give the outer factors the discrepant step γη
    (arXiv:2406.04112, compression from the first gradient, matrix completion)."""
    if method in ("compressed", "compressed-gamma0"):
        labels = compression.Compressed("outer", "inner", "outer")
        return optax.multi_transform(
            {"inner": optax.sgd(lr), "outer": optax.sgd(gamma * lr) if gamma else optax.set_to_zero()},
            labels,
        )
    return optax.sgd(lr)


def _end_to_end(method: str, params: Any) -> Array:
    return factorization.end_to_end(params) if method == "original" else compression.end_to_end(params)


def _grads(method: str, params: Any, problem: Problem):
    if method == "original":
        return original_grads(params, problem)
    return compressed_grads(params, problem)


@partial(jax.jit, static_argnames=("method", "optimizer", "budget", "record_every", "iterate_every"))
def _train(params, problem, tol, *, method, optimizer, budget, record_every, iterate_every):
    """GD until ℓ < tol or ``budget`` steps, in a while_loop over chunks of ``record_every``
    steps (each a lax.scan). After the step at which ℓ < tol the parameters are frozen, so the
    reported step count is exact even though the loop exits at a chunk boundary."""
    n_rec = budget // record_every + 1
    n_it = budget // iterate_every + 1 if iterate_every else 1
    d = problem.width
    nan = jnp.full((n_rec,), jnp.nan, dtype=jnp.float64)

    def measure(p):
        f = _end_to_end(method, p)
        return dense_loss(f, problem), recovery_error(f, problem), f

    def step(carry, _):
        p, opt_state, t, hit = carry
        loss, g = _grads(method, p, problem)
        hit = jnp.where((hit < 0) & (loss < tol), t, hit)
        updates, new_state = optimizer.update(g, opt_state, p)
        new_p = optax.apply_updates(p, updates)
        frozen = hit >= 0
        p = jax.tree.map(lambda a, b: jnp.where(frozen, a, b), p, new_p)
        opt_state = jax.tree.map(lambda a, b: jnp.where(frozen, a, b), opt_state, new_state)
        return (p, opt_state, t + jnp.where(frozen, 0, 1), hit), None

    def chunk(state):
        p, opt_state, t, hit, i, losses, errors, its = state
        (p, opt_state, t, hit), _ = jax.lax.scan(step, (p, opt_state, t, hit), None, length=record_every)
        loss, err, f = measure(p)
        losses, errors = losses.at[i].set(loss), errors.at[i].set(err)
        if iterate_every:
            slot = (i * record_every) // iterate_every
            its = jax.lax.cond((i * record_every) % iterate_every == 0,
                               lambda a: a.at[slot].set(f.astype(a.dtype)), lambda a: a, its)
        return p, opt_state, t, hit, i + 1, losses, errors, its

    def running(state):
        _, _, t, hit, i, *_ = state
        return (hit < 0) & (i < n_rec)

    loss0, err0, f0 = measure(params)
    its = jnp.zeros((n_it, d, d) if iterate_every else (1, 1, 1), dtype=jnp.float32)
    if iterate_every:
        its = its.at[0].set(f0.astype(jnp.float32))
    hit0 = jnp.where(loss0 < tol, 0, -1)
    state = (params, optimizer.init(params), jnp.asarray(0), hit0, jnp.asarray(1),
             nan.at[0].set(loss0), nan.at[0].set(err0), its)
    p, _, t, hit, i, losses, errors, its = jax.lax.while_loop(running, chunk, state)
    return p, t, hit, i, losses, errors, its


@float64
def train(
    method: str,
    params: Any,
    problem: Problem,
    *,
    lr: float,
    gamma: float = 0.0,
    budget: int,
    tol: float,
    record_every: int = 100,
    iterate_every: int | None = None,
) -> CompletionRun:
    """Train one method from ``params`` until ℓ < tol or ``budget`` steps.

    Args:
      method: one of METHODS (selects the gradient and the optimizer).
      params: (L, d, d) for "original", else Compressed.
      problem: the instance.
      lr: η on the mean loss (the authors' notebooks: 5e3 for completion at d = 1000).
      gamma: γ, the outer factors' step ratio (compressed methods).
      budget: largest number of steps, a multiple of ``record_every``.
      tol: stop when the training loss is below it.
      record_every: steps between records of loss and recovery error.
      iterate_every: also keep the end-to-end matrix (float32) every so many steps (a multiple
        of record_every), for the principal-component figure.

    Returns:
      CompletionRun; the wall time excludes compilation, which is timed separately.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if budget < record_every or budget % record_every:
        raise ValueError(f"budget {budget} must be a positive multiple of record_every {record_every}")
    if iterate_every and iterate_every % record_every:
        raise ValueError(f"iterate_every {iterate_every} must be a multiple of record_every {record_every}")
    optimizer = _optimizer(method, lr, gamma)
    kwargs = dict(method=method, optimizer=optimizer, budget=budget, record_every=record_every,
                  iterate_every=iterate_every or 0)
    start = time.perf_counter()
    compiled = _train.lower(params, problem, tol, **kwargs).compile()
    compile_time = time.perf_counter() - start
    start = time.perf_counter()
    out = compiled(params, problem, tol)
    jax.block_until_ready(out)
    wall = time.perf_counter() - start
    _, t, hit, n, losses, errors, its = out
    n, t, hit = int(n), int(t), int(hit)
    losses, errors = np.asarray(losses[:n]), np.asarray(errors[:n])
    if not np.all(np.isfinite(losses)):
        raise ValueError(f"{method}: gradient descent diverged with step size {lr}; lower the step size")
    steps = np.minimum(np.arange(n) * record_every, t)
    iterates = iterate_steps = None
    if iterate_every:
        n_it = (n - 1) * record_every // iterate_every + 1
        iterate_steps = np.minimum(np.arange(n_it) * iterate_every, t)
        iterates = np.asarray(its[:n_it])
    return CompletionRun(
        method=method, steps=steps, train_loss=losses, recovery_error=errors,
        steps_to_tol=hit if hit >= 0 else t, converged=hit >= 0, wall_time_s=wall,
        compile_time_s=compile_time, time_per_step_s=wall / max(t, 1),
        iterates=iterates, iterate_steps=iterate_steps,
    )


@float64
def run_method(
    method: str,
    problem: Problem,
    *,
    depth: int,
    init_scale: float,
    lr: float,
    rank_estimate: int | None = None,
    gamma: float = 0.01,
    budget: int,
    tol: float,
    seed: int = 0,
    record_every: int = 100,
    iterate_every: int | None = None,
    hidden: int | None = None,
) -> CompletionRun:
    """Initialise ``method`` from ``seed`` and train it (same η, tol and budget for all).

    The original network's Θ(0) comes from ``seed``; the compressed methods take their outer
    factors from that same Θ(0)'s first gradient; the narrow network draws its own factors from
    the same seed. ``gamma`` is used by "compressed" only (γ = 0 for "compressed-gamma0").
    ``hidden`` overrides the narrow network's width 2r̂.

    Args:
      method: one of METHODS. problem: the instance. depth: L ≥ 2. init_scale: ε > 0.
      lr: η on the mean loss. rank_estimate: r̂ (compressed and narrow methods).
      gamma: γ. budget, tol, record_every, iterate_every: as in ``train``. seed: Θ(0)'s seed.
      hidden: the narrow network's width (default 2r̂).

    Returns:
      CompletionRun.

    Raises:
      ValueError: unknown method, L < 2, ε ≤ 0, a missing r̂, or divergence.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if depth < 2:
        raise ValueError(f"depth must be ≥ 2, got {depth}")
    if not init_scale > 0:
        raise ValueError(f"scale ε must be > 0, got {init_scale}")
    d = problem.width
    key = jax.random.key(seed)
    if method == "original":
        params = init_original(key, d, depth, init_scale)
    elif method == "narrow":
        if rank_estimate is None and hidden is None:
            raise ValueError("the narrow network needs a rank estimate r̂ (width 2r̂) or a hidden width")
        params = init_narrow(key, d, depth, init_scale, hidden if hidden else 2 * rank_estimate)
    else:
        if rank_estimate is None:
            raise ValueError("compression needs a rank estimate r̂")
        params = init_compressed(init_original(key, d, depth, init_scale), problem, init_scale, rank_estimate)
    return train(method, params, problem, lr=lr, gamma=gamma if method == "compressed" else 0.0,
                 budget=budget, tol=tol, record_every=record_every, iterate_every=iterate_every)


def principal_components(reference: np.ndarray, *others: np.ndarray, count: int = 2) -> list[np.ndarray]:
    """Project trajectories of end-to-end matrices on the principal components of ``reference``
    (the trajectory panels of arXiv:2406.04112's deep matrix factorization and completion
    figures: the PCs are the original run's).

    Args:
      reference: (R, d, d) the original run's iterates.
      others: more (R_i, d, d) trajectories, projected on the same components.
      count: number of components.

    Returns:
      [(R, count), (R_i, count), …] coordinates after removing the reference's mean (NumPy,
      float64).
    """
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    mean = ref.mean(axis=0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    comps = vt[:count]
    return [(t.reshape(t.shape[0], -1).astype(np.float64) - mean) @ comps.T for t in (reference, *others)]
