"""Statistics over seeds for the book's comparisons (paired differences between methods)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def paired_deltas(rows: Sequence[dict], deep: str, vanilla: str = "lora") -> dict[str, Any]:
    """Δ = deep − vanilla per seed, per task and overall (arXiv:2406.04112, limited-data GLUE:
    the paper reports the mean Δ per task over seeds paired by seed).

    Args:
      rows: dicts with task, method, seed, value; every (task, seed) must have both methods.
      deep, vanilla: the two methods compared.

    Returns:
      {"per_task": {task: {"deltas": [Δ per seed], "mean", "std" (ddof 1), "seeds"}},
       "overall_mean" (mean of every per-seed Δ), "pooled_std" (√ of the seed-count-weighted mean
       of the per-task variances, ddof 1)}.

    Raises:
      ValueError: a (task, seed) lacks one of the two methods.
    """
    by = {(r["task"], r["seed"], r["method"]): r["value"] for r in rows}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    per_task, all_d, num, den = {}, [], 0.0, 0
    for t in tasks:
        seeds = sorted({s for (tt, s, _) in by if tt == t})
        missing = [s for s in seeds if (t, s, deep) not in by or (t, s, vanilla) not in by]
        if missing:
            raise ValueError(f"task {t}: seeds {missing} lack a {deep} or {vanilla} run; Δ needs pairs")
        d = np.array([by[(t, s, deep)] - by[(t, s, vanilla)] for s in seeds])
        std = float(np.std(d, ddof=1)) if len(d) > 1 else float("nan")
        per_task[t] = {"deltas": d.tolist(), "mean": float(d.mean()), "std": std, "seeds": len(d)}
        all_d += d.tolist()
        if len(d) > 1:
            num += (len(d) - 1) * std**2
            den += len(d) - 1
    return {"per_task": per_task, "overall_mean": float(np.mean(all_d)),
            "pooled_std": float(np.sqrt(num / den)) if den else float("nan")}


# The verdict rule of every paired comparison, fixed before any result was looked at: the
# percentile bootstrap of the mean per-seed Δ (resampling seeds, which keeps each seed's pair
# together), 95 %, 10 000 resamples, generator seed 0.
BOOTSTRAP_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000


def paired_bootstrap(deltas: Sequence[float], *, level: float = BOOTSTRAP_LEVEL,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of paired differences.

    Args:
      deltas: (S,) one Δ = deep − vanilla per seed (both methods run with that seed).
      level: the interval's coverage, in (0, 1).
      resamples: bootstrap draws of S seeds with replacement.
      seed: the generator's seed (the interval is deterministic).

    Returns:
      (low, high). With few seeds the interval is narrow by construction (S = 3 has only 10
      distinct resample means), which is why the verdict also reports S.

    Raises:
      ValueError: fewer than 2 deltas, a non-finite one, or a level outside (0, 1).
    """
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"a paired bootstrap needs at least 2 paired seeds, got {d.size}; run more seeds")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"paired differences must be finite, got {d.tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def verdict(interval: tuple[float, float], paper_delta: float) -> str:
    """Whether a paired Δ reproduces the paper's sign: "reproduced" when the whole interval lies on
    the paper's side of 0, "not reproduced" when it lies wholly on the other side (or at 0), else
    "inconclusive". The size of the paper's Δ is compared in the text, not here: on another
    backbone only the direction of the claim carries over.

    Args:
      interval: (low, high) of ``paired_bootstrap``.
      paper_delta: the paper's Δ (nonzero), e.g. +0.069 for few-shot STS-B at n = 16.
    """
    low, high = interval
    if paper_delta == 0 or low > high:
        raise ValueError(f"need a nonzero paper Δ and low ≤ high, got {paper_delta}, {interval}")
    sign = 1.0 if paper_delta > 0 else -1.0
    lo, hi = sorted((sign * low, sign * high))
    if lo > 0:
        return "reproduced"
    if hi <= 0:
        return "not reproduced"
    return "inconclusive"
