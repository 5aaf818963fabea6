"""Shared fixtures: the smoke notebooks are executed once per session (papermill)."""

from __future__ import annotations

import os
from pathlib import Path

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
    return {
        e.notebook: e
        for e in runner.reproduce("smoke", root=ROOT, results_dir=results_dir)
    }
