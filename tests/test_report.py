"""companion.book.report: the paper's claims judged from committed study records."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from companion.book import report, statistics, studies
from companion.cli import main
from conftest import ROOT

FEWSHOT = ROOT / "reports" / "reference" / "fewshot-stsb"


def _raw_pearson(method, samples):
    """{seed: Pearson} read straight from the record files, without the package's reader."""
    out = {}
    for path in FEWSHOT.glob("*.json"):
        raw = json.loads(path.read_text())
        if raw["config"]["adapter"]["method"] == method and raw["config"]["samples"] == samples:
            out[raw["seed"]] = (raw["result"]["value"], raw["result"]["fitted"])
    return out


def test_fewshot_delta_recomputed_from_the_committed_records():
    """The n = 16 compressed row is the per-seed difference of the stored Pearson values, judged by
    the paired bootstrap; on MiniLM it lies below 0, against the paper's +0.069."""
    rows = report.fewshot_rows(studies.find_records(FEWSHOT))
    row = next(r for r in rows if r.claim.startswith("few-shot STS-B n = 16: compressed"))
    lora, deep = _raw_pearson("lora", 16), _raw_pearson("deep-lora-compressed", 16)
    seeds = sorted(s for s in deep if s in lora and deep[s][1] and lora[s][1])
    expected = [deep[s][0] - lora[s][0] for s in seeds]
    assert len(seeds) >= 3
    np.testing.assert_allclose(row.values, expected, rtol=0, atol=1e-12)
    assert row.paper.value == pytest.approx(0.598 - 0.529)
    low, high = statistics.paired_bootstrap(expected)
    assert f"[{low:+.3f}, {high:+.3f}]" in row.ours
    assert row.verdict == statistics.verdict((low, high), 0.069) == "not reproduced"
    assert "sentence-embedding model" in row.backbone


def test_unfitted_pairs_are_left_out(tmp_path):
    """A pair with a run that did not fit is counted but not compared."""
    shutil.copytree(FEWSHOT, tmp_path / "runs")
    records = studies.find_records(tmp_path)
    target = next(r for r in records if r.config.method == "deep-lora-compressed" and r.config.samples == 16)
    store = studies.Store(tmp_path / "runs")
    store.save(target.config, dataclasses.replace(target.result, fitted=False), target.revision, target.device,
               target.wall_time_s)
    before = {r.claim: r for r in report.fewshot_rows(records)}
    after = {r.claim: r for r in report.fewshot_rows(studies.find_records(tmp_path))}
    claim = next(c for c in after if c.startswith("few-shot STS-B n = 16: compressed"))
    total = int(before[claim].seeds.split(" of ")[1])
    assert after[claim].seeds == f"{total - 1} of {total}"
    assert len(after[claim].values) == len(before[claim].values) - 1


def test_find_records_reads_only_record_names_and_refuses_a_cut_one(tmp_path):
    shutil.copytree(FEWSHOT, tmp_path / "study")
    (tmp_path / "metrics.json").write_text("{}")  # a notebook's file beside the study: not a record
    assert len(studies.find_records(tmp_path)) == len(list(FEWSHOT.glob("*.json")))
    victim = sorted((tmp_path / "study").glob("*.json"))[0]
    victim.write_text(victim.read_text()[:100])
    with pytest.raises(studies.RecordError, match="not a whole JSON record"):
        studies.find_records(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        studies.find_records(tmp_path / "absent")


def test_cli_report(capsys, tmp_path):
    assert main(["report", str(FEWSHOT)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| claim | paper |") and "not reproduced" in out
    assert main(["report", str(FEWSHOT), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {"claim", "paper", "ours", "seeds", "backbone", "device", "verdict"} <= set(lines[0])
    shutil.copytree(FEWSHOT, tmp_path / "runs")
    sorted((tmp_path / "runs").glob("*.json"))[0].write_text("{")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "delete it to run that run again" in err


def test_no_records_no_claims(tmp_path):
    assert report.report(tmp_path) == "No claim can be judged from these records (no paired runs found)."


@pytest.mark.parametrize("names, cell", [
    (["cpu (2 cores)", "cpu (2 cores)"], "cpu (2 cores)"),
    (["cpu (cpu)", "cpu"], "cpu"),
    (["cpu (cpu)", "cpu (2 cores)", "gpu: NVIDIA H200"], "cpu; cpu (2 cores); gpu: NVIDIA H200"),
])
def test_device_cell_reads_the_early_cpu_label_as_cpu(names, cell):
    assert report.devices(names) == cell
