"""Speed of compressed vs original deep matrix completion, measured in one run.

Two ratios, both with compilation excluded and on whatever device JAX uses:
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

import numpy as np

from companion.linear import completion
from companion.book.profiles import device_description


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
      {"original": s, "compressed": s}.
    """
    problem = completion.make_problem(completion.problem_key(seed), width, target_rank, fraction)
    out = {}
    for method, steps in (("original", steps_original), ("compressed", steps_compressed)):
        run = completion.run_method(method, problem, depth=depth, init_scale=1e-3, lr=lr_for(width, fraction),
                                    rank_estimate=target_rank, budget=steps, tol=0.0, record_every=steps, seed=seed)
        out[method] = run.time_per_step_s
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
    if quick:
        step = per_step(width=300, steps_original=20, steps_compressed=500)
        to_err = time_to_error(width=100, fraction=0.3, budget=40_000)
    else:
        step = per_step()
        to_err = time_to_error()
    return {
        "device": device_description(),
        "quick": quick,
        "per_step": {"width": 300 if quick else 1000, "rank": 5, "depth": 3, "fraction": 0.2,
                     "original_s": step["original"], "compressed_s": step["compressed"]},
        "per_step_ratio": step["original"] / step["compressed"],
        "per_step_target": 100.0,
        "time_to_error": {"width": 100 if quick else 300, "target_recovery_error": 1e-8, **to_err},
        "time_to_error_ratio": to_err["original"]["seconds"] / to_err["compressed"]["seconds"],
        "time_to_error_target": 10.0,
        "benchmark_wall_time_s": round(time.perf_counter() - start, 1),
    }
