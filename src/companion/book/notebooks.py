"""Execute the chapters' notebooks with papermill, the only executor (STYLE.md).

``reproduce`` runs each notebook with ``-k python3`` and an explicit per-cell timeout, writes
the executed copy to ``book/executed/`` (the book renders those, ``execute_notebooks: off``)
and the outputs to ``results/<profile>/<notebook>/``. A failing notebook raises, so
``make book`` and ``make test`` fail with it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

NOTEBOOKS = ("01_theorem", "02_proof_verification", "03_compressed_trajectories", "04_matrix_completion",
             "05_invariant_subspaces_bert", "06_fewshot_stsb", "07_glue_limited_data", "08_reproduction_report")
# Parameters every notebook's `parameters` cell must declare (papermill only warns otherwise).
REQUIRED_PARAMETERS = ("profile", "results_dir", "force")
ONLINE_ENV = "COMPANION_ONLINE"  # as companion.adapt.bert.ONLINE_ENV (not imported: no JAX in the runner)
# Per-cell limits (papermill's execution_timeout): generous, but never papermill's "no limit".
CELL_TIMEOUT_S = {"smoke": 1200, "full": 4 * 3600}

# XLA's backend optimisation level for the smoke kernels of these notebooks: 1, not XLA's default
# 3. Their smoke runs compile many small programs, and at level 3 most of their time on a CPU went
# to LLVM optimising them; the numbers do not change (tests/test_training.py checks a run bit for
# bit at both levels). Measured on 2 cores: a smoke GLUE fit 130 s -> 66 s (compile of a 2-layer
# MiniLM step 14 s -> 3 s, step 132 ms -> 124 ms); chapters 1-4 a fifth faster, chapter 6 476 s
# against 555 s. Not chapter 5, whose wide Deep LoRA on the attention and MLP matrices runs more
# than it compiles: in test-suite runs (beside the unit tests) it took 668 s and 248 s at level 1,
# 177 s and 266 s at level 3, no gain to show, so it keeps XLA's default. Full-profile kernels
# keep XLA's default too, and an XLA_FLAGS that chooses a level is always kept.
FAST_COMPILE = "--xla_backend_optimization_level=1"
FAST_COMPILE_NOTEBOOKS = ("01_theorem", "02_proof_verification", "03_compressed_trajectories",
                          "04_matrix_completion", "06_fewshot_stsb", "07_glue_limited_data")
# The XLA_FLAGS the kernels start from, where it is not this process's own (the test suite sets
# FAST_COMPILE for its own processes, tests/conftest.py, and keeps the caller's flags here).
KERNEL_XLA_FLAGS_ENV = "COMPANION_KERNEL_XLA_FLAGS"


def with_fast_compile(flags: str | None) -> str:
    """``flags`` (XLA_FLAGS) with FAST_COMPILE added, unless they already choose a level."""
    if "xla_backend_optimization_level" in (flags or ""):
        return flags
    return f"{flags} {FAST_COMPILE}".strip() if flags else FAST_COMPILE


def kernel_xla_flags(notebook: str, profile: str, environ=os.environ) -> str | None:
    """The XLA_FLAGS a notebook's kernel gets: the caller's, plus FAST_COMPILE for the smoke
    kernels of FAST_COMPILE_NOTEBOOKS unless the caller's flags choose a level. None: unset."""
    flags = environ.get(KERNEL_XLA_FLAGS_ENV, environ.get("XLA_FLAGS"))
    if profile == "smoke" and notebook in FAST_COMPILE_NOTEBOOKS:
        return with_fast_compile(flags)
    return flags or None


@dataclass(frozen=True)
class Execution:
    """One executed notebook: where its copy and outputs are and how long it took."""

    notebook: str
    executed: Path
    results: Path
    wall_time_s: float


def repository_root(start: str | Path | None = None) -> Path:
    """The folder holding ``notebooks/`` and ``_toc.yml`` (searched upwards from ``start``)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "_toc.yml").exists():
            return folder
    raise FileNotFoundError(
        f"no companion checkout (a folder with notebooks/ and _toc.yml) at or above {here}; "
        "run from the repository or pass --root"
    )


def check_parameters(path: str | Path) -> dict:
    """The parameters papermill can read from a notebook's ``parameters`` cell.

    Papermill silently ignores ``-p`` values it cannot match (a line it fails to parse, e.g.
    one whose comment contains '='), so a missing required parameter is an error here.

    Raises:
      ValueError: the notebook has no parseable ``profile``, ``results_dir`` or ``force``.
    """
    import papermill

    found = papermill.inspect_notebook(str(path))
    missing = [p for p in REQUIRED_PARAMETERS if p not in found]
    if missing:
        raise ValueError(
            f"{path}: papermill finds no parameter(s) {missing} in the cell tagged 'parameters' "
            "(one 'name = value  # comment' per line, no '=' in comments)"
        )
    return found


def execute(
    notebook: str,
    profile: str,
    *,
    root: str | Path | None = None,
    results_dir: str | Path | None = None,
    executed_dir: str | Path | None = None,
    force: bool = False,
    timeout_s: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Execution:
    """Run one notebook with papermill.

    Args:
      notebook: name without extension (one of NOTEBOOKS).
      profile: "smoke" or "full" (passed as the ``profile`` parameter).
      root: repository root (found from the working directory by default).
      results_dir: root of the results (default ``<root>/results``).
      executed_dir: where the executed copy goes (default ``<root>/book/executed``).
      force: passed as the ``force`` parameter (run ``full`` without a GPU).
      timeout_s: per-cell timeout (default by profile).
      extra: more parameters, each one the notebook declares (e.g. chapter 4's ``pieces_dir``).

    Raises:
      ValueError: unknown notebook or profile.
      papermill.PapermillExecutionError: a cell failed (the message names it).
    """
    import papermill

    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; choose from {', '.join(NOTEBOOKS)}")
    if profile not in CELL_TIMEOUT_S:
        raise ValueError(f"unknown profile {profile!r}; choose smoke or full")
    root = repository_root(root)
    results_dir = Path(results_dir or root / "results").resolve()
    executed_dir = Path(executed_dir or root / "book" / "executed").resolve()
    executed_dir.mkdir(parents=True, exist_ok=True)
    source = root / "notebooks" / f"{notebook}.ipynb"
    target = executed_dir / f"{notebook}.ipynb"
    declared = check_parameters(source)
    parameters = {"profile": profile, "results_dir": _shown(results_dir, root / "notebooks"), "force": bool(force)}
    unknown = sorted(set(extra or ()) - set(declared))
    if unknown:
        raise ValueError(f"{notebook} declares no parameter {unknown}; its parameters are {', '.join(declared)}")
    parameters.update(extra or {})
    if "online" in declared:  # chapters 5-7: COMPANION_ONLINE=1 lets them download (bert-base-cased, GLUE)
        parameters["online"] = os.environ.get(ONLINE_ENV, "") not in ("", "0")
    start = time.perf_counter()
    # The kernel inherits this environment: an MPLBACKEND=Agg set for headless scripts would
    # keep every figure out of the executed notebook, and so out of the book; XLA_FLAGS as
    # kernel_xla_flags says.
    kernel_env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline",
                  "XLA_FLAGS": kernel_xla_flags(notebook, profile)}
    previous = {k: os.environ.get(k) for k in kernel_env}
    for k, v in kernel_env.items():
        _set_env(k, v)
    try:
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=parameters,
            kernel_name="python3",
            execution_timeout=timeout_s or CELL_TIMEOUT_S[profile],
            cwd=str(root / "notebooks"),
            progress_bar=False,
        )
    finally:
        for k, v in previous.items():
            _set_env(k, v)
    hide_injected_parameters(target)
    return Execution(notebook, target, results_dir / profile / notebook, time.perf_counter() - start)


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


INJECTED_TAG = "injected-parameters"  # papermill's tag on the cell it adds under the parameters cell
HIDDEN_TAG = "remove-cell"  # Jupyter Book leaves a cell with this tag out of the page


def hide_injected_parameters(path: str | Path) -> int:
    """Tag the cell papermill injected (``# Parameters`` with the values passed) ``remove-cell`` in
    an executed notebook, so the book shows one parameters cell, the chapter's own; the injected
    cell stays in the notebook (its values are also in results' config.json and provenance).

    Returns:
      The number of cells tagged.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    tagged = 0
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if INJECTED_TAG in tags and HIDDEN_TAG not in tags:
            tags.append(HIDDEN_TAG)
            tagged += 1
    if tagged:
        nbformat.write(nb, str(path))
    return tagged


def _shown(path: Path, cwd: Path) -> str:
    """``path`` relative to the kernel's working directory when inside the checkout (the
    executed copy, and so the book, then shows no machine-specific absolute path)."""
    try:
        path.relative_to(cwd.parent)
    except ValueError:
        return str(path)
    return os.path.relpath(path, cwd)


def reproduce(profile: str, notebooks: Sequence[str] | None = None, **kwargs) -> list[Execution]:
    """Execute several notebooks in order (all by default); stops at the first failure."""
    return [execute(name, profile, **kwargs) for name in (notebooks or NOTEBOOKS)]
