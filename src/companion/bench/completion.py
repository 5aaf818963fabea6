"""Speed of compressed vs original deep matrix completion, measured in one run.

Two ratios, both with compilation excluded and on whatever device JAX uses, and beside them the
machine's own limits measured in the same run (``machine_rates``): the original step's FLOP rate
against a plain d × d product's, and the compressed step's bytes per second against a stream
through memory. Those two say whether each side of the ratio is as fast as the machine allows.

- per-step time of the original and the compressed (γ) step at the paper's d = 1000, r* = 5,
  L = 3, p = 0.2 (arXiv:2406.04112, deep matrix completion experiments (authors' notebooks)),
  from short runs with the records switched off as far as the
  loop allows (one record per run);
- wall time to a recovery error of 1e-8 at d = 300: each method runs to a tight training-loss
  tolerance with frequent records, and the time at the first record whose recovery error is
  ≤ 1e-8 is (that step) × (the run's measured time per step).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from companion.linear import completion
from companion.linear.precision import float64
from companion.book.profiles import device_description


def _best_seconds(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times)


@float64
def machine_rates(width: int = 1000, stream_mib: int = 256, repeats: int = 5) -> dict[str, float]:
    """The machine's dense-product rate and memory bandwidth, in float64, best of ``repeats``.

    Args:
      width: d of the (d, d) @ (d, d) product timed (2d³ FLOP).
      stream_mib: size of the array summed to measure the read bandwidth (far larger than any
        cache, so every byte comes from memory).

    Returns:
      {"dgemm_gflop_s", "read_gb_s"}.
    """
    a = jax.random.normal(jax.random.key(0), (width, width), jnp.float64)
    matmul = jax.jit(lambda x: x @ x)
    dgemm = 2 * width**3 / _best_seconds(matmul, a, repeats=repeats) / 1e9
    big = jnp.ones((stream_mib * 2**20 // 8,), jnp.float64)
    read = big.nbytes / _best_seconds(jax.jit(jnp.sum), big, repeats=repeats) / 1e9
    return {"dgemm_gflop_s": dgemm, "read_gb_s": read}


def original_flops(width: int, depth: int) -> float:
    """FLOP of one original step: L − 1 products forward (W_{l:1}) and 2L − 2 backward
    (``factorization.backprop``), each 2d³; the O(d²) elementwise work is left out."""
    return (3 * depth - 3) * 2.0 * width**3


def compressed_bytes(width: int) -> dict[str, float]:
    """Bytes one dense-layout compressed step moves through memory (``completion.compressed_grads``).

    ``program``: as XLA:CPU runs it, every pass over a d × d array reading its inputs and
    writing its output once (XLA fuses the elementwise work but not the products): write
    f = X Vᵀ (8d²); read f, Φ (16d²) and the boolean Ω (d²), write R (8d²); read R for the
    loss, R V and Rᵀ X (24d²): 57 d² bytes. ``fused``: the least any program must read, Φ and
    Ω once (9 d²), if the products and the residual were one pass. The d × 2r̂ factors are
    negligible.
    """
    return {"program": 57.0 * width**2, "fused": 9.0 * width**2}


@float64
def grads_seconds(problem: completion.Problem, rank_estimate: int, layout: str, steps: int = 100,
                  depth: int = 3, seed: int = 0) -> float:
    """Seconds per compressed gradient step (gradient and plain update, in one compiled loop of
    ``steps``) in the given layout ("dense" or "sparse"): times the layout the step did not
    choose, beside the one it did."""
    weights0 = completion.init_original(jax.random.key(seed), problem.width, depth, 1e-3)
    c0 = completion.init_compressed(weights0, problem, 1e-3, rank_estimate)

    @jax.jit
    def loop(c):
        def body(_, c):
            _, g = completion.compressed_grads(c, problem, layout)
            return jax.tree.map(lambda a, b: a - 1e-6 * b, c, g)
        return jax.lax.fori_loop(0, steps, body, c)

    return _best_seconds(loop, c0, repeats=3) / steps


@float64
def dense_step_passes(problem: completion.Problem, rank_estimate: int, seed: int = 0,
                      repeats: int = 20) -> dict[str, float]:
    """Seconds of each operation of the dense compressed step (``completion.compressed_grads``)
    timed alone, on the step's own shapes: what the step is made of, and so the least time a
    program of XLA:CPU's operations can take for it.

    The step is three passes over d × d arrays that XLA:CPU does not fuse with each other: the
    residual R = where(Ω, X Vᵀ − Φ, 0)/d² with its sum of squares (a product fused with the
    elementwise work), then the thin products R V and Rᵀ X (k = 2r̂ columns). The rest of the
    step (the inner factors' products, the update) works on d × k arrays.

    Args:
      problem: the instance (d × d). rank_estimate: r̂ (k = 2r̂). seed: the random factors.
      repeats: best of this many calls, each compiled once beforehand.

    Returns:
      {"residual_s", "rv_s", "rtx_s", "sum_s"}.
    """
    d, k = problem.width, 2 * rank_estimate
    x, v = (jax.random.normal(key, (d, k), jnp.float64) for key in jax.random.split(jax.random.key(seed)))

    def residual(x, v):
        r = jnp.where(problem.observed, x @ v.T - problem.target, 0.0) / d**2
        return r, jnp.sum(r**2)

    r, _ = jax.jit(residual)(x, v)
    out = {"residual_s": _best_seconds(jax.jit(residual), x, v, repeats=repeats),
           "rv_s": _best_seconds(jax.jit(lambda r, v: r @ v), r, v, repeats=repeats),
           "rtx_s": _best_seconds(jax.jit(lambda r, x: r.T @ x), r, x, repeats=repeats)}
    out["sum_s"] = sum(out.values())
    return out


def lr_for(width: int, fraction: float) -> float:
    """η on the mean loss scaled from the paper's 5e3 at d = 1000, p = 0.2 (arXiv:2406.04112,
    deep matrix completion experiments (authors' notebooks)).

    The curvature of the mean loss near the solution grows like p·σ_max(Φ)^{4/3}/d² ∝ p·d^{-4/3}
    for depth 3 (σ_max ∝ √d for a Gaussian Φ), so η ∝ d^{4/3}/p keeps the step at the paper's
    fraction of the stability limit.
    """
    return 5e3 * (width / 1000) ** (4 / 3) * (0.2 / fraction)


def per_step(width: int = 1000, target_rank: int = 5, depth: int = 3, fraction: float = 0.2,
             steps_original: int = 20, steps_compressed: int = 2000, seed: int = 0) -> dict[str, float]:
    """Seconds per step of the original and the compressed (γ = 0.01) step, compilation excluded.

    Args:
      width: d. target_rank: r* (= r̂). depth: L. fraction: p. seed: problem and Θ(0).
      steps_original, steps_compressed: length of each timed run.

    Returns:
      {"original": s, "compressed": s, "problem": the instance, "layout": the compressed step's layout,
       "other_layout": the other one, "other_layout_s": its seconds per step
       (``grads_seconds``)}.
    """
    problem = completion.make_problem(completion.problem_key(seed), width, target_rank, fraction)
    out: dict[str, Any] = {}
    for method, steps in (("original", steps_original), ("compressed", steps_compressed)):
        run = completion.run_method(method, problem, depth=depth, init_scale=1e-3, lr=lr_for(width, fraction),
                                    rank_estimate=target_rank, budget=steps, tol=0.0, record_every=steps, seed=seed)
        out[method] = run.time_per_step_s
    out["problem"] = problem
    out["layout"] = completion.step_layout(problem)
    out["other_layout"] = "sparse" if out["layout"] == "dense" else "dense"
    out["other_layout_s"] = grads_seconds(problem, target_rank, out["other_layout"], depth=depth, seed=seed)
    return out


def time_to_error(width: int = 300, target_rank: int = 5, depth: int = 3, fraction: float = 0.2,
                  target_error: float = 1e-8, budget: int = 60_000, record_every: int = 20,
                  seed: int = 0) -> dict[str, Any]:
    """Steps and seconds until the recovery error first reaches ``target_error``.

    Args:
      width: d. target_rank: r* (= r̂). depth: L. fraction: p. target_error: the recovery error.
      budget: most steps. record_every: steps between records. seed: problem and Θ(0).

    Returns:
      {method: {"steps", "seconds", "time_per_step_s"}} for original and compressed.

    Raises:
      RuntimeError: a method did not reach the error within the budget.
    """
    problem = completion.make_problem(completion.problem_key(seed), width, target_rank, fraction)
    out = {}
    for method in ("original", "compressed"):
        run = completion.run_method(method, problem, depth=depth, init_scale=1e-3, lr=lr_for(width, fraction),
                                    rank_estimate=target_rank, budget=budget, tol=1e-14,
                                    record_every=record_every, seed=seed)
        hit = np.nonzero(run.recovery_error <= target_error)[0]
        if hit.size == 0:
            raise RuntimeError(f"{method} did not reach recovery error {target_error} in {budget} steps")
        step = int(run.steps[hit[0]])
        out[method] = {"steps": step, "seconds": step * run.time_per_step_s,
                       "time_per_step_s": run.time_per_step_s}
    return out


def completion_benchmark(quick: bool = False) -> dict[str, Any]:
    """Both measurements and their ratios (``companion bench completion``).

    Args:
      quick: smaller sizes (d = 300 per step, d = 100 to error) for a fast check; the targets
        (≥ 100× per step at d = 1000, ≥ 10× to error at d = 300) refer to the default sizes.
    """
    start = time.perf_counter()
    width = 300 if quick else 1000
    depth, fraction = 3, 0.2
    rates = machine_rates(width=width)
    if quick:
        step = per_step(width=width, steps_original=20, steps_compressed=500)
        to_err = time_to_error(width=100, fraction=0.3, budget=40_000)
    else:
        step = per_step()
        to_err = time_to_error()
    flop = original_flops(width, depth)
    moved = compressed_bytes(width)
    compressed = {"s": step["compressed"], "layout": step["layout"]}
    if step["layout"] == "dense":
        gb_s = moved["program"] / step["compressed"] / 1e9
        compressed.update(
            bytes_per_step=moved["program"], gb_s=gb_s, fraction_of_read_bandwidth=gb_s / rates["read_gb_s"],
            # The step's time if it moved its bytes at the measured read rate, and the same for
            # one fused pass (Φ and Ω only): original_s over these is the most this program, and
            # any program, could reach against the original on this machine.
            program_floor_s=moved["program"] / (rates["read_gb_s"] * 1e9),
            fused_floor_s=moved["fused"] / (rates["read_gb_s"] * 1e9))
        compressed["ratio_at_program_floor"] = step["original"] / compressed["program_floor_s"]
        compressed["ratio_at_fused_floor"] = step["original"] / compressed["fused_floor_s"]
        # Its three d × d operations timed alone in this run: if the step were nothing else, the
        # ratio would be ratio_at_pass_sum.
        passes = dense_step_passes(step["problem"], 5)
        compressed.update(passes=passes,
                          ratio_at_pass_sum=step["original"] / passes["sum_s"],
                          rest_of_step_s=step["compressed"] - passes["sum_s"])
    return {
        "device": device_description(),
        "quick": quick,
        "machine": rates,
        "per_step": {"width": width, "rank": 5, "depth": depth, "fraction": fraction,
                     "original_s": step["original"], "compressed_s": step["compressed"],
                     f"compressed_{step['other_layout']}_layout_s": step["other_layout_s"]},
        "original": {"flop_per_step": flop, "gflop_s": flop / step["original"] / 1e9,
                     "fraction_of_dgemm": flop / step["original"] / 1e9 / rates["dgemm_gflop_s"]},
        "compressed": compressed,
        "per_step_ratio": step["original"] / step["compressed"],
        "per_step_target": 100.0,
        "time_to_error": {"width": 100 if quick else 300, "target_recovery_error": 1e-8, **to_err},
        "time_to_error_ratio": to_err["original"]["seconds"] / to_err["compressed"]["seconds"],
        "time_to_error_target": 10.0,
        "benchmark_wall_time_s": round(time.perf_counter() - start, 1),
    }
