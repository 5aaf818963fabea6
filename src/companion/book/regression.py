"""Regression of smoke results against reviewed baselines (``baselines/smoke/<notebook>/``).

A baseline is a copy of a smoke run's ``metrics.json`` and figure CSVs. Smoke runs are
deterministic on a CPU, so they are compared at a tight tolerance: |a − b| ≤ atol + rtol·|b|.
Baselines change only through ``make baselines`` (``companion reproduce --update-baselines``).

Wall-clock seconds are never reproducible: by convention every metric key and CSV column that
holds them ends in ``_s``; those are checked for presence, not compared.

Precision decides how far "deterministic" reaches. The float64 chapters (1–4) agree to 1e-6 on
any CPU, except quantities that sit at float64 rounding by construction (a chapter lists them
in ``ROUNDING_LIMITED``, with the absolute tolerance their size allows). The float32 fine-tuning chapters (5–7) are bit-for-bit repeatable on one machine, but
another CPU model or another jaxlib rounds the float32 forward pass differently (the untrained
score moves by ~1e-6), and a few dozen training steps at toy size amplify that to ~0.1 in a
score, and to far more in single layers' singular values. So every baseline records the
platform it was made on (``platform.json``: CPU model, vector extensions, jax/jaxlib
versions); float32 results are compared at the tight tolerance on that platform, and
elsewhere their metrics at ``FLOAT32_OTHER_PLATFORM`` and their figure CSVs for columns and
row counts only. That still catches missing keys, changed shapes, NaNs, changed counts and
summary numbers off by more than noise.
"""

from __future__ import annotations

import json
import math
import shutil
import platform as _platform
import re
from importlib import metadata
from pathlib import Path

from companion.book.results import read_table

RTOL = 1e-6  # relative: float64 runs on one CPU type agree far tighter than this
ATOL = 1e-9  # absolute: residuals at machine precision (~1e-16) vary with BLAS, not with code
# float32 training chapters on another platform than the baseline's (measured: scores within
# ~0.15, losses within a few per cent after 30–60 toy steps; counts and shapes exact).
FLOAT32_OTHER_PLATFORM = {"rtol": 0.05, "atol": 0.2, "csv_values": False}
PLATFORM_FILE = "platform.json"


def platform() -> dict[str, str]:
    """What decides float32 rounding here: CPU model, its vector extensions, jax and jaxlib."""
    model, flags = _platform.processor() or "", ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", info, re.M).group(1).strip()
        flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M).group(1)
    except (OSError, AttributeError):
        pass
    isa = sorted({f for f in flags.split() if f.startswith(("avx", "amx", "fma", "sse4"))})
    versions = {name: metadata.version(name) for name in ("jax", "jaxlib")}
    return {"cpu": model or _platform.machine(), "isa": " ".join(isa), **versions}


def tolerance(precision: str, baseline: str | Path) -> dict[str, float | bool]:
    """How to compare a run with ``baseline``: ``compare``'s rtol, atol and csv_values (see the
    module docstring).

    Args:
      precision: "float64" or "float32", the chapter's (``PRECISION`` of its module).
      baseline: ``baselines/smoke/<notebook>``.

    Raises:
      ValueError: an unknown precision.
    """
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    recorded = Path(baseline) / PLATFORM_FILE
    same = recorded.exists() and json.loads(recorded.read_text()) == platform()
    if precision == "float64" or same:
        return {"rtol": RTOL, "atol": ATOL, "csv_values": True}
    return dict(FLOAT32_OTHER_PLATFORM)


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def _is_seconds(name: str) -> bool:
    return name.endswith("_s")


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def compare(result: str | Path, baseline: str | Path, rtol: float = RTOL,
            atol: float = ATOL, csv_values: bool = True, column_atol: dict[str, float] | None = None) -> list[str]:
    """Differences between a run's outputs and its baseline, as readable lines (empty = equal).

    Args:
      result: ``results/smoke/<notebook>``.
      baseline: ``baselines/smoke/<notebook>``.
      rtol, atol: |a − b| ≤ atol + rtol·|b| for every number.
      csv_values: compare the figure CSVs' numbers too (else only their columns and rows).
      column_atol: a larger atol for the metric keys and CSV columns named here: quantities that
        sit at float64 rounding by construction (a chapter's ``ROUNDING_LIMITED``), whose last
        digits follow the CPU's summation order rather than the code.

    Returns:
      one line per difference (missing files or keys, changed shapes, numbers out of tolerance;
      at most five numeric differences are listed per file).
    """
    result, baseline = Path(result), Path(baseline)
    column_atol = column_atol or {}
    if not (baseline / "metrics.json").exists():
        return [f"no baseline in {baseline}; run 'make baselines' and review the diff"]
    problems = []
    got = json.loads((result / "metrics.json").read_text())
    want = json.loads((baseline / "metrics.json").read_text())
    for key in sorted(set(got) | set(want)):
        if key not in got or key not in want:
            problems.append(f"metrics.json: key {key!r} only in {'baseline' if key in want else 'result'}")
        elif _is_seconds(key):
            continue
        elif not _close(float(got[key]), float(want[key]), rtol, max(atol, column_atol.get(key, 0.0))):
            problems.append(f"metrics.json: {key} = {got[key]!r}, baseline {want[key]!r}")
    for csv in sorted(baseline.glob("*.csv")):
        mine = result / csv.name
        if not mine.exists():
            problems.append(f"{csv.name}: missing from the result")
            continue
        a, b = read_table(mine), read_table(csv)
        if list(a) != list(b) or any(len(a[k]) != len(b[k]) for k in b):
            problems.append(f"{csv.name}: columns or row count changed")
            continue
        if not csv_values:
            continue
        bad = []
        for name in b:
            if _is_seconds(name):
                continue
            tol = max(atol, column_atol.get(name, 0.0))
            for i, (x, y) in enumerate(zip(a[name], b[name])):
                fx, fy = _as_float(x), _as_float(y)
                same = x == y if fx is None or fy is None else _close(fx, fy, rtol, tol)
                if not same:
                    bad.append(f"{csv.name}: row {i + 1}, column {name}: {x} vs baseline {y}")
        problems += bad[:5] + ([f"{csv.name}: … {len(bad) - 5} more"] if len(bad) > 5 else [])
    return problems


def has_baseline(notebook: str) -> bool:
    """Whether a notebook's smoke outputs are regression-checked against ``baselines/smoke/``: every
    chapter's are, except one whose module sets ``BASELINE = False`` (the reproduction report,
    whose numbers are the committed study records' and are checked against those instead)."""
    import importlib

    from companion.book.chapters import CHAPTERS

    return bool(getattr(importlib.import_module(f"companion.book.chapters.{CHAPTERS[notebook]}"), "BASELINE", True))


def update(result: str | Path, baseline: str | Path) -> list[Path]:
    """Replace the baseline with the run's metrics.json and CSVs; returns the files written."""
    result, baseline = Path(result), Path(baseline)
    if baseline.exists():
        shutil.rmtree(baseline)
    baseline.mkdir(parents=True)
    written = []
    for f in [result / "metrics.json", *sorted(result.glob("*.csv"))]:
        shutil.copy2(f, baseline / f.name)
        written.append(baseline / f.name)
    (baseline / PLATFORM_FILE).write_text(json.dumps(platform(), indent=2) + "\n")
    return [*written, baseline / PLATFORM_FILE]
