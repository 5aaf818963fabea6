"""companion.book.regression: smoke results against baselines, per precision and platform."""

import importlib
import json

import pytest

from companion.book import notebooks, regression
from companion.book.chapters import CHAPTERS
from companion.book.results import write_table


def _run(folder, value, rows=3):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"score": value, "count": 7, "wall_time_s": value * 99}))
    write_table(folder / "curve.csv", {"step": list(range(rows)), "y": [value + i for i in range(rows)]})
    return folder


def test_tight_comparison_and_seconds_ignored(tmp_path):
    base = _run(tmp_path / "base", 0.5)
    assert regression.compare(_run(tmp_path / "same", 0.5), base) == []
    problems = regression.compare(_run(tmp_path / "off", 0.5 + 1e-5), base)
    assert any("score" in p for p in problems) and any("curve.csv" in p for p in problems)
    assert not any("wall_time_s" in p for p in problems)


def test_rounding_limited_columns_get_their_own_atol_and_nothing_else_does(tmp_path):
    base = _run(tmp_path / "base", 1e-8)
    noisy = _run(tmp_path / "noisy", 2e-8)  # "y" and "score" both move by 1e-8
    tight = regression.compare(noisy, base)
    assert any("column y" in p for p in tight) and any("score" in p for p in tight)
    only_y = regression.compare(noisy, base, column_atol={"y": 1e-7})
    assert not any("column y" in p for p in only_y) and any("score" in p for p in only_y)
    assert regression.compare(noisy, base, column_atol={"y": 1e-7, "score": 1e-7}) == []
    from companion.book.chapters import ch03_trajectories

    assert set(ch03_trajectories.ROUNDING_LIMITED) == {"relative_error", "max_rel_err_vs_exact"}


def test_loose_comparison_checks_shapes_not_csv_values(tmp_path):
    base = _run(tmp_path / "base", 0.5)
    loose = regression.FLOAT32_OTHER_PLATFORM
    assert regression.compare(_run(tmp_path / "noisy", 0.6), base, **loose) == []
    assert any("score" in p for p in regression.compare(_run(tmp_path / "far", 1.5), base, **loose))
    assert regression.compare(_run(tmp_path / "short", 0.5, rows=2), base, **loose) == [
        "curve.csv: columns or row count changed"]


def test_tolerance_follows_precision_and_platform(tmp_path):
    base = _run(tmp_path / "base", 0.5)
    tight = {"rtol": regression.RTOL, "atol": regression.ATOL, "csv_values": True}
    assert regression.tolerance("float64", base) == tight
    assert regression.tolerance("float32", base) == regression.FLOAT32_OTHER_PLATFORM  # no platform.json
    regression.update(_run(tmp_path / "run", 0.5), base)
    assert json.loads((base / regression.PLATFORM_FILE).read_text()) == regression.platform()
    assert regression.tolerance("float32", base) == tight  # made here
    (base / regression.PLATFORM_FILE).write_text(json.dumps({**regression.platform(), "jaxlib": "0.0"}))
    assert regression.tolerance("float32", base) == regression.FLOAT32_OTHER_PLATFORM
    with pytest.raises(ValueError, match="precision must be"):
        regression.tolerance("bfloat16", base)


@pytest.mark.parametrize("name", notebooks.NOTEBOOKS)
def test_every_notebook_has_its_chapter_module(name):
    chapter = importlib.import_module(f"companion.book.chapters.{CHAPTERS[name]}")
    assert chapter.NOTEBOOK == name and chapter.PRECISION in ("float64", "float32")
    for part in ("config", "run", "summary", "PAPER", "table", "check_claims"):
        assert hasattr(chapter, part), f"{CHAPTERS[name]} lacks {part}"
