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
