"""Chapter 7 (limited-data GLUE): settings, tasks present or absent, the claims."""

import dataclasses
import json

import pytest

from companion.book import claims
from companion.book.chapters import ch07_glue as ch
from conftest import ROOT

SMOKE = json.loads((ROOT / "baselines" / "smoke" / ch.NOTEBOOK / "metrics.json").read_text())


def test_full_profile_is_the_papers_protocol():
    c = ch.config("full")
    assert c.samples == 1024 and c.seeds == 10 and c.steps_for("sst2") == 600 and c.steps_for("rte") == 1000
    assert c.base.adapter.targets == "all-dense" and c.deep_method == "deep-lora"
    assert ch.config("smoke", tasks="RTE, mrpc").tasks == ("rte", "mrpc")
    assert c.base.model == "bert-base-cased" and ch.config("smoke").base.model == "minilm"
    assert ch.config("full", model="minilm").base.model == "minilm"


def test_paper_overall_is_the_mean_of_the_tasks():
    assert sum(p.value for p in ch.PAPER.values()) / 8 == pytest.approx(ch.PAPER_OVERALL.value, abs=1e-3)


@pytest.mark.parametrize("profile,change,fails", [
    ("smoke", {"rte_deep_mean": float("nan")}, "finite"),
    ("smoke", {"tasks_run": 6}, "every task run is reported"),
    ("full", {"overall_delta": -0.01}, "not worse than vanilla"),
    ("smoke", {"runs_fitted": 0}, "every run fitted"),
])
def test_claims(profile, change, fails):
    good = {**SMOKE, "overall_delta": 0.02} if profile == "full" else SMOKE
    assert all(c.holds for c in ch.check_claims(good, profile))
    with pytest.raises(claims.ClaimsFailed, match=fails):
        ch.check_claims({**good, **change}, profile)


def test_refuses_unknown_or_absent_tasks(tmp_path):
    cfg = ch.config("smoke")
    with pytest.raises(ValueError, match="unknown task"):
        ch.tasks_to_run(dataclasses.replace(cfg, tasks=("squad",)))
    (tmp_path / "RTE").mkdir()
    empty = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="no GLUE data for \\['rte'\\]"):
        ch.tasks_to_run(dataclasses.replace(empty, tasks=("rte",)))
    with pytest.raises(FileNotFoundError, match="no GLUE task has data"):
        ch.tasks_to_run(empty)


@pytest.mark.parametrize("stamp,noted", [("profile=smoke · device=cpu (2 cores)", True), ("profile=full · device=gpu", False)])
def test_smoke_tables_say_they_are_code_checks(stamp, noted):
    from companion.book.chapters import adaptation

    assert ("not a result" in adaptation.smoke_note(stamp)) is noted


def test_comparisons_are_drawn_from_fitted_runs_only():
    """adaptation.not_drawn names how many runs did not fit; fitted_count counts them per subset."""
    from companion.book.chapters import adaptation

    rows = [dict(task="rte", method=m, seed=s, fitted=not (m == "deep-lora" and s == 1), value=0.6, initial_value=0.5)
            for m in ("lora", "deep-lora") for s in (0, 1)]
    assert adaptation.fitted_count(rows) == (3, 4) and adaptation.fitted_count(rows, method="lora") == (2, 2)
    assert adaptation.not_drawn(rows, method="lora") is None
    assert adaptation.not_drawn(rows) == "not drawn: 1 of 4 runs did not fit their training data"
    # A run that fitted but scores no better than the untrained model did not learn either.
    rows[0]["value"] = 0.5
    assert not adaptation.learned(rows[0]) and adaptation.learned(rows[1])
    assert adaptation.not_drawn(rows, method="lora") == "not drawn: 1 of 2 scored no better than untrained"
    assert adaptation.not_drawn(rows) == ("not drawn: 1 of 4 runs did not fit their training data; "
                                          "1 of 4 scored no better than untrained")
