"""Where a notebook's outputs go: ``results/<profile>/<notebook>/``.

Each figure is saved as PNG together with a CSV of exactly the numbers it plots; the
notebook's reported numbers go to a flat ``metrics.json``, rewritten as each number comes in
(so a run stopped by a failed claim keeps what it measured); the configuration to
``config.json``; and ``provenance.json``, written only when the run finishes, says which code,
packages, device and profile produced them and how long it took. A run is finished when its
folder has ``provenance.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import math
import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from companion.book.profiles import device_description

PACKAGES = ("companion", "jax", "jaxlib", "flax", "optax", "numpy", "matplotlib", "papermill")


def git_revision(cwd: str | Path | None = None) -> str:
    """The checkout's commit (with '+dirty' when the tree has changes), or 'unknown'."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that produce the numbers."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_table(path: Path, columns: Mapping[str, Sequence[Any]]) -> None:
    """Write equal-length columns to CSV (floats with 17 significant digits: lossless)."""
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of {path.name} differ in length: {lengths}")
    names = list(columns)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for row in zip(*(columns[n] for n in names)):
            writer.writerow([_format(v) for v in row])


def _format(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return repr(float(v)) if math.isfinite(v) else str(float(v))
    if isinstance(v, (np.integer,)):
        return str(int(v))
    return str(v)


def describe_config(config: Any, width: int = 76) -> str:
    """A configuration as a reader can read it in a code cell: one block per (nested) dataclass,
    named by its path (``base.adapter``), its fields as ``name=value`` wrapped at ``width``, and
    nested dataclasses in their own block after it (the notebooks' setup cells print this).

    Args:
      config: a dataclass instance (a chapter's Config).
      width: the longest line.
    """
    import textwrap

    if not dataclasses.is_dataclass(config):
        return textwrap.fill(repr(config), width)
    blocks, todo = [], [("", config)]
    while todo:
        path, obj = todo.pop(0)
        items = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                todo.append((f"{path}.{f.name}" if path else f.name, value))
            elif isinstance(value, tuple) and value and all(dataclasses.is_dataclass(v) for v in value):
                todo += [(f"{path + '.' if path else ''}{f.name}[{i}]", v) for i, v in enumerate(value)]
            else:
                items.append(f"{f.name}={value!r}")
        title = f"{path} ({type(obj).__name__})" if path else type(obj).__name__
        body = textwrap.fill(", ".join(items), width, initial_indent="  ", subsequent_indent="  ",
                             break_long_words=False, break_on_hyphens=False) if items else "  (no other fields)"
        blocks.append(f"{title}\n{body}")
    return "\n".join(blocks)


def read_table(path: str | Path) -> dict[str, list[str]]:
    """Read a CSV written by ``write_table`` into columns of strings."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty")
    header, body = rows[0], rows[1:]
    return {name: [r[i] for r in body] for i, name in enumerate(header)}


class Results:
    """Collects one notebook's outputs under ``<results_dir>/<profile>/<notebook>/``.

    The folder is emptied when the object is created, so a re-run never mixes its files with
    those of an earlier run.

    Args:
      results_dir: root folder (the notebooks' ``results_dir`` parameter).
      profile: "smoke" or "full".
      notebook: the notebook's name without extension, e.g. "01_theorem".
      config: the experiment's configuration (a dataclass), written to config.json.
    """

    def __init__(self, results_dir: str | Path, profile: str, notebook: str, config: Any = None):
        self.profile = profile
        self.notebook = notebook
        self.path = Path(results_dir) / profile / notebook
        if self.path.exists():
            for old in self.path.iterdir():
                if old.is_file():
                    old.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics: dict[str, float | int] = {}
        self.figures: list[str] = []
        self._start = time.perf_counter()
        # The code that runs is the checkout as it is now: a long run may finish after later commits.
        self.revision = git_revision()
        self.device = device_description()
        if config is not None:
            (self.path / "config.json").write_text(json.dumps(_jsonable(config), indent=2) + "\n")

    @property
    def stamp(self) -> str:
        """The line every figure carries: profile and device."""
        return f"profile={self.profile} · device={self.device}"

    def save_figure(self, fig: Any, name: str, columns: Mapping[str, Sequence[Any]]) -> Path:
        """Save ``fig`` as ``<name>.png`` and the plotted numbers as ``<name>.csv``.

        Args:
          fig: a matplotlib Figure.
          name: file stem, e.g. "singular_values".
          columns: the exact numbers drawn, as equal-length named columns (long format).

        Returns:
          the PNG's path.
        """
        png = self.path / f"{name}.png"
        fig.savefig(png, dpi=120, bbox_inches="tight")
        write_table(self.path / f"{name}.csv", columns)
        self.figures.append(name)
        return png

    def add_metrics(self, **values: float | int) -> dict[str, float | int]:
        """Record reported numbers (flat: one key per number) and rewrite metrics.json with every
        metric so far, so that a notebook stopped later (by a failed claim, say) keeps them;
        returns every metric so far."""
        for key, value in values.items():
            if isinstance(value, (bool, np.bool_)):
                value = int(value)
            elif isinstance(value, (int, np.integer)):
                value = int(value)
            else:
                value = float(value)
            self.metrics[key] = value
        self._write_metrics()
        return dict(self.metrics)

    def _write_metrics(self) -> None:
        (self.path / "metrics.json").write_text(
            json.dumps(self.metrics, indent=2, sort_keys=True) + "\n"
        )

    def finish(self) -> dict[str, Any]:
        """Write metrics.json and provenance.json (the run is finished); returns the provenance."""
        self._write_metrics()
        provenance = {
            "notebook": self.notebook,
            "profile": self.profile,
            "device": self.device,
            "git_revision": self.revision,
            "packages": package_versions(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),  # e.g. the smoke kernels' compile level
            "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_time_s": round(time.perf_counter() - self._start, 3),
            "figures": self.figures,
        }
        (self.path / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        return provenance
