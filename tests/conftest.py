"""Shared fixtures: the smoke notebooks are executed once per session (papermill)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_executions(tmp_path_factory):
    """Execute every notebook at profile=smoke; results in a temporary folder, executed copies
    in book/executed/ (where the book build reads them). Returns {name: Execution}."""
    from companion import runner

    results_dir = tmp_path_factory.mktemp("results")
    return {
        e.notebook: e
        for e in runner.reproduce("smoke", root=ROOT, results_dir=results_dir)
    }
