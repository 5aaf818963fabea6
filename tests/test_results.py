"""companion.book.results and companion.book.regression: files written, and differences found."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from companion.book import regression as baselines
from companion.book.results import Results, read_table, write_table


def _result(tmp_path, value=1.0):
    r = Results(tmp_path, "smoke", "nb", config={"a": 1})
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, value])
    r.save_figure(fig, "line", {"x": [0, 1], "y": [0.0, value], "label": ["a", "b"]})
    plt.close(fig)
    r.add_metrics(value=value, count=np.int64(3), flag=True)
    r.finish()
    return r.path


def test_results_layout(tmp_path):
    path = _result(tmp_path)
    assert path == tmp_path / "smoke" / "nb"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "line.csv", "line.png", "metrics.json", "provenance.json"]
    assert json.loads((path / "metrics.json").read_text()) == {"count": 3, "flag": 1, "value": 1.0}
    prov = json.loads((path / "provenance.json").read_text())
    assert prov["profile"] == "smoke" and prov["figures"] == ["line"] and prov["wall_time_s"] >= 0
    assert read_table(path / "line.csv") == {"x": ["0", "1"], "y": ["0.0", "1.0"], "label": ["a", "b"]}


def test_metrics_are_kept_as_they_come_and_provenance_only_when_finished(tmp_path):
    """A notebook stopped after measuring (a failed claim, say) leaves its metrics but no
    provenance, so nothing reads it as a finished run."""
    r = Results(tmp_path, "smoke", "nb")
    r.add_metrics(gap=0.5)
    r.add_metrics(steps=np.int64(7))
    assert json.loads((r.path / "metrics.json").read_text()) == {"gap": 0.5, "steps": 7}
    assert not (r.path / "provenance.json").exists()
    r.finish()
    assert (r.path / "provenance.json").exists()


def test_rerun_clears_old_files(tmp_path):
    path = _result(tmp_path)
    (path / "stale.csv").write_text("x\n1\n")
    Results(tmp_path, "smoke", "nb")
    assert not (path / "stale.csv").exists()


def test_write_table_is_lossless_and_checks_lengths(tmp_path):
    x = [0.1 + 0.2, 1e-300, np.float64(np.pi)]
    write_table(tmp_path / "t.csv", {"x": x})
    assert [float(v) for v in read_table(tmp_path / "t.csv")["x"]] == [float(v) for v in x]
    with pytest.raises(ValueError, match="differ in length"):
        write_table(tmp_path / "u.csv", {"a": [1, 2], "b": [1]})


def test_baseline_compare(tmp_path):
    base = tmp_path / "base"
    baselines.update(_result(tmp_path / "r1"), base)
    assert baselines.compare(_result(tmp_path / "r2"), base) == []
    assert baselines.compare(_result(tmp_path / "r3", value=1.0 + 1e-9), base) == []  # within rtol
    problems = baselines.compare(_result(tmp_path / "r4", value=1.001), base)
    assert any("metrics.json: value" in p for p in problems)
    assert any("line.csv: row 2, column y" in p for p in problems)
    assert baselines.compare(_result(tmp_path / "r5"), tmp_path / "none") == [
        f"no baseline in {tmp_path / 'none'}; run 'make baselines' and review the diff"]


def test_seconds_are_not_compared(tmp_path):
    for name, t in (("a", 1.0), ("b", 9.0)):
        r = Results(tmp_path / name, "smoke", "nb")
        write_table(r.path / "t.csv", {"step": [1, 2], "wall_time_s": [t, 2 * t]})
        r.add_metrics(steps=10, wall_time_s=t)
        r.finish()
    base = tmp_path / "base"
    baselines.update(tmp_path / "a" / "smoke" / "nb", base)
    assert baselines.compare(tmp_path / "b" / "smoke" / "nb", base) == []


def test_describe_config_wraps_every_field_under_its_dataclass():
    """A chapter's config printed for a reader: every field once, no line over the width."""
    from companion.book.chapters import ch02_proof, ch06_fewshot
    from companion.book.results import describe_config

    text = describe_config(ch06_fewshot.config("smoke"), width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.splitlines()[0] == "Config" and "\nbase (FinetuneConfig)\n" in text
    assert "\nbase.adapter (AdapterConfig)\n" in text and "targets='query-value'" in text
    assert text.count("max_seq_length=32") == 1 and "compare_eval_every=5" in text
    cases = describe_config(ch02_proof.config("smoke"))
    assert cases.count("(FactorizationSetting)") == 4 and "cases[3] (FactorizationSetting)" in cases
    assert describe_config(3) == "3"


def test_provenance_names_the_revision_the_run_started_at(tmp_path, monkeypatch):
    """A run that outlives a commit records the code it ran, not the checkout it finished in."""
    from companion.book import results as module

    monkeypatch.setattr(module, "git_revision", lambda cwd=None: "a" * 40)
    r = Results(tmp_path, "smoke", "nb")
    monkeypatch.setattr(module, "git_revision", lambda cwd=None: "b" * 40)
    assert r.finish()["git_revision"] == "a" * 40
