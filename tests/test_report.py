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


def _synthetic(method, rank, seed, value, *, steps=200, curve=None, initial=-0.05, fitted=True):
    """A record of the n = 16 STS-B setting at ``steps`` (one of the committed runs relabelled)."""
    template = next(r for r in studies.find_records(FEWSHOT) if r.config.samples == 16 and r.seed == 0)
    adapter = dataclasses.replace(template.config.adapter, method=method, rank=rank)
    config = dataclasses.replace(template.config, adapter=adapter, steps=steps, seed=seed)
    curve = tuple(curve or ((0, initial), (steps, value)))
    result = dataclasses.replace(template.result, method=method, seed=seed, value=value, initial_value=initial,
                                 fitted=fitted, curve=curve)
    return dataclasses.replace(template, key=studies.run_key(config, seed), config=config, seed=seed, result=result)


def test_fewshot_claims_read_only_the_500_step_curve():
    """The rank sweep's and the comparison's n = 16 runs (200 steps) never enter the few-shot Δ."""
    records = studies.find_records(FEWSHOT)
    intruders = [_synthetic(m, 8, s, 0.9) for m in ("lora", "deep-lora", "deep-lora-compressed") for s in range(3)]
    before = {r.claim: r.values for r in report.fewshot_rows(records)}
    after = {r.claim: r.values for r in report.fewshot_rows(records + intruders)}
    assert before == after
    # The intruders are n = 16 runs: the two n = 16 rows must exist, with committed seeds to guard
    # (at least 3; rows at other n may still hold fewer while their runs land).
    guarded = [v for claim, v in before.items() if "n = 16:" in claim]
    assert len(guarded) == 2 and all(len(v) >= 3 for v in guarded)
    assert len(report.fewshot_records(records + intruders)) == len(records)


def test_rank_row_is_the_difference_of_differences():
    """Per seed [Deep LoRA(64) − Deep LoRA(8)] − [LoRA(64) − LoRA(8)]; a second record of the same
    narrow r = 8 run (the comparison study's) adds no seed."""
    values = {("lora", 8): (0.50, 0.55, 0.45), ("lora", 64): (0.20, 0.30, 0.10),
              ("deep-lora-narrow", 8): (0.40, 0.42, 0.38), ("deep-lora-narrow", 64): (0.41, 0.40, 0.45)}
    records = [_synthetic(m, r, s, v[s]) for (m, r), v in values.items() for s in range(3)]
    records.append(_synthetic("deep-lora-narrow", 8, 0, 0.40, curve=((0, -0.05), (20, 0.1), (200, 0.40))))
    row, = report.rank_rows(records)
    expected = [(values[("deep-lora-narrow", 64)][s] - values[("deep-lora-narrow", 8)][s])
                - (values[("lora", 64)][s] - values[("lora", 8)][s]) for s in range(3)]
    np.testing.assert_allclose(row.values, expected, atol=1e-12)
    assert row.paper.value == pytest.approx((0.667 - 0.635) - (0.175 - 0.539))
    assert row.verdict == "reproduced" and row.seeds == "3 of 3" and "LoRA -0.300" in row.ours
    swap = {"lora": "deep-lora-narrow", "deep-lora-narrow": "lora"}  # LoRA the robust one: Δ changes sign
    flipped, = report.rank_rows([_synthetic(swap[m], r, s, v[s]) for (m, r), v in values.items() for s in range(3)])
    np.testing.assert_allclose(flipped.values, -np.array(expected), atol=1e-12)
    assert flipped.verdict == "not reproduced"
    assert report.rank_rows([])[:1] == [] and report.rank_rows([], missing=True)[0].verdict == report.NOT_RUN


@pytest.mark.parametrize("interval, verdict", [
    ((-0.05, 0.02), "reproduced"), ((-0.3, -0.15), "not reproduced"), ((-0.2, 0.01), "inconclusive")])
def test_noninferiority(interval, verdict):
    assert report.noninferior(interval, 0.1) == verdict


def _compare(compressed, wide, narrow, initial=-0.05):
    """Three seeds of the comparison: the step-20 scores given, every run ending at 0.3."""
    out = []
    for method, at20 in (("deep-lora-compressed", compressed), ("deep-lora", wide), ("deep-lora-narrow", narrow)):
        for s in range(3):
            curve = ((0, initial), (10, initial), (20, at20[s]), (200, 0.3))
            out.append(_synthetic(method, 8, s, 0.3, curve=curve, initial=initial))
    return out


def test_compare_rows_at_step_20():
    narrow_row, keep_row = report.compare_rows(_compare((0.30, 0.25, 0.28), (0.32, 0.27, 0.29), (0.0, -0.02, 0.01)))
    np.testing.assert_allclose(narrow_row.values, [0.30, 0.27, 0.27], atol=1e-12)
    np.testing.assert_allclose(keep_row.values, [-0.02, -0.02, -0.01], atol=1e-12)
    assert narrow_row.verdict == keep_row.verdict == "reproduced"
    assert narrow_row.paper.value == pytest.approx(0.601 + 0.018) and keep_row.paper.value == pytest.approx(0.601 - 0.649)
    assert "wide 0.293" in keep_row.ours
    _, lost = report.compare_rows(_compare((0.0, 0.02, 0.01), (0.32, 0.27, 0.29), (0.0, -0.02, 0.01)))
    assert lost.verdict == "not reproduced"
    _, still = report.compare_rows(_compare((-0.05, -0.04, -0.05), (-0.05, -0.06, -0.04), (0.0, -0.02, 0.01)))
    assert still.verdict.startswith("inconclusive: wide Deep LoRA's progress by step 20")
    # Wide moved by less than the margin: a compressed model that did not move at all must not pass.
    _, small = report.compare_rows(_compare((-0.05, -0.05, -0.05), (0.01, 0.0, 0.02), (-0.05, -0.05, -0.05)))
    assert small.verdict.startswith("inconclusive: wide Deep LoRA's progress by step 20 (+0.060)")
    # A run without a step-20 score (the rank sweep's narrow run) is not part of the comparison.
    assert report.compare_rows([_synthetic(m, 8, 0, 0.3) for m in ("deep-lora-compressed", "deep-lora", "deep-lora-narrow")]) == []


def test_reruns_pair_the_copies_of_one_run_across_studies():
    """A run stored by two studies is compared copy against copy; one stored once is not a rerun."""
    a, other = _synthetic("deep-lora-narrow", 8, 0, 0.150), _synthetic("deep-lora-narrow", 8, 1, 0.2)
    close = dataclasses.replace(a, result=dataclasses.replace(a.result, value=0.1549), revision="b" * 40)
    far = dataclasses.replace(a, result=dataclasses.replace(a.result, value=0.170))
    (rerun,) = report.reruns({"compressed-vs-wide": [a, other], "rank-sweep": [close]})
    assert rerun.key == a.key and [c[0] for c in rerun.copies] == ["compressed-vs-wide", "rank-sweep"]
    assert abs(rerun.difference - 0.0049) < 1e-12 and rerun.agrees and "seed 0" in rerun.label
    (rerun,) = report.reruns({"x": [a], "y": [far], "z": [close]})
    assert abs(rerun.difference - 0.020) < 1e-12 and not rerun.agrees and len(rerun.copies) == 3
    assert report.reruns({"x": [a, other]}) == []


def _ranked(method, seed, ranks, *, value=0.5):
    """A 500-step n = 256 record of ``method`` whose adapted layers have the numerical ``ranks``."""
    record = _synthetic(method, 8, seed, value, steps=500)
    config = dataclasses.replace(record.config, samples=256)
    result = dataclasses.replace(record.result, numerical_ranks={f"layer{i}": x for i, x in enumerate(ranks)})
    return dataclasses.replace(record, key=studies.run_key(config, seed), config=config, result=result)


def test_numerical_rank_row_counts_updates_at_rank_0():
    """Per seed, the share of Deep LoRA's layers at rank 0 minus one half; vanilla's share at 8 in the note."""
    vanilla = [_ranked("lora", s, [8, 8, 8, 8]) for s in range(3)]
    mostly_zero = [_ranked("deep-lora", s, [0, 0, 0, 3]) for s in range(3)]
    rows = report.numerical_rank_rows(vanilla + mostly_zero, missing=True)
    compressed, wide = rows
    assert "compressed Deep LoRA's" in compressed.claim and wide.setting[3] == "deep-lora"
    assert compressed.verdict == report.NOT_RUN
    assert wide.values == (0.25, 0.25, 0.25) and wide.verdict == "reproduced"
    assert "Deep LoRA 0.75, vanilla LoRA 8.00" in wide.ours and "rank 8: 100%" in wide.ours
    few_zeros = [_ranked("deep-lora", s, [0, 2, 5, 8]) for s in range(3)]
    (wide,) = report.numerical_rank_rows(vanilla + few_zeros)
    assert wide.values == (-0.25,) * 3 and wide.verdict == "not reproduced"
    # A run that did not learn leaves its seed out; runs without stored ranks are not read.
    unlearned = [_ranked("deep-lora", 0, [0, 0, 0, 0], value=-0.5)] + mostly_zero[1:]
    (wide,) = report.numerical_rank_rows(vanilla + unlearned)
    assert wide.seeds == "2 of 3"
    assert report.numerical_rank_rows([_synthetic("lora", 8, 0, 0.5, steps=500)]) == []


def test_logged_rechecks_read_as_reruns():
    entry = {"key": "ab" * 8, "task": "stsb", "method": "lora", "rank": 8, "samples": 16, "steps": 500, "seed": 0,
             "stored": {"value": 0.2, "revision": "a" * 40, "device": "cpu (2 cores)"},
             "rerun": {"value": 0.2125, "revision": "b" * 40, "device": "cpu (2 cores)", "wall_time_s": 1.0}}
    (r,) = report.rechecked([entry])
    assert r.key == "ab" * 8 and [c[0] for c in r.copies] == ["stored record", "companion recheck"]
    assert abs(r.difference - 0.0125) < 1e-12 and not r.agrees and "500 steps seed 0" in r.label


def test_paper_rows_of_the_linear_chapters_read_the_stored_numbers(tmp_path):
    """Chapters 3 and 4 beside the paper, from a run folder (here the smoke baselines): steps from
    metrics.json, the speed-up from the trajectory CSV's wall times; a CSV left out says so."""
    import csv

    for name in ("03_compressed_trajectories", "04_matrix_completion"):
        run = tmp_path / "smoke" / name
        shutil.copytree(ROOT / "baselines" / "smoke" / name, run)
        (run / "provenance.json").write_text(json.dumps({"profile": "smoke", "device": "cpu (2 cores)",
                                                         "git_revision": "f" * 40}))
    rows = report.paper_comparison(tmp_path, "smoke", ["01_theorem", "03_compressed_trajectories", "04_matrix_completion"])
    assert {r.notebook for r in rows} == {"03_compressed_trajectories", "04_matrix_completion"}
    m3 = json.loads((tmp_path / "smoke" / "03_compressed_trajectories" / "metrics.json").read_text())
    steps = next(r for r in rows if r.notebook.startswith("03") and r.quantity.startswith("steps"))
    assert steps.ours == f"{m3['steps_original']:,} / {m3['steps_compressed']:,}" and "arXiv:2406.04112" in steps.paper.source
    with open(tmp_path / "smoke" / "03_compressed_trajectories" / "trajectories.csv") as f:
        wall = {}
        for row in csv.DictReader(f):
            if row["wall_time_s"] != "nan":
                wall[row["method"]] = max(wall.get(row["method"], 0.0), float(row["wall_time_s"]))
    speed = next(r for r in rows if r.notebook.startswith("03") and "speed-up" in r.quantity)
    assert speed.ours.startswith(f"{wall['original'] / wall['compressed-gamma0']:.1f}×")
    (tmp_path / "smoke" / "04_matrix_completion" / "completion_trajectories.csv").unlink()
    rows = report.paper_comparison(tmp_path, "smoke", ["04_matrix_completion"])
    assert next(r for r in rows if r.quantity.startswith("wall time")).ours == "not stored"
    sweep = next(r for r in rows if r.quantity.startswith("r̂ sweep"))
    assert sweep.paper.value.startswith("≈ 19,500") and sweep.ours.endswith("(mean over trials, per r̂)")


def test_cli_report_adds_the_linear_half_from_full_chapter_runs(capsys, tmp_path):
    """A folder with full-profile runs of chapters 1–4 at any depth (here the committed reference
    runs of chapters 1 and 2) gets the paper-beside-ours rows after the claims table."""
    stored = ROOT / "reports" / "reference" / "chapters" / "full"
    for name in ("01_theorem", "02_proof_verification"):
        shutil.copytree(stored / name, tmp_path / "mine" / "full" / name)
    shutil.copytree(FEWSHOT, tmp_path / "mine" / "studies")
    assert [p.name for p in report.stored_chapter_runs(tmp_path)] == ["01_theorem", "02_proof_verification"]
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "The linear half at the full profile, beside the paper:" in out
    m = json.loads((stored / "01_theorem" / "metrics.json").read_text())
    assert f"at least {m['min_count']} per layer at every step" in out
    assert main(["report", str(tmp_path), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert sum("quantity" in x for x in lines) == 5 and sum("claim" in x for x in lines) >= 4


def test_in_brief_counts_verdicts_and_sizes_each_decided_claim_against_the_paper():
    """The summary recomputes each decided row's mean Δ from its per-seed values and says what share
    of the paper's Δ it is (or that it has the opposite sign); undecided rows are only counted."""
    values = {("lora", 8): (0.50, 0.55, 0.45), ("lora", 64): (0.20, 0.30, 0.10),
              ("deep-lora-narrow", 8): (0.40, 0.42, 0.38), ("deep-lora-narrow", 64): (0.41, 0.40, 0.45)}
    row, = report.rank_rows([_synthetic(m, r, s, v[s]) for (m, r), v in values.items() for s in range(3)])
    mean = float(np.mean(row.values))  # (+0.02) − (−0.30) = +0.32 against the paper's +0.396
    flipped = dataclasses.replace(row, values=tuple(-v for v in row.values), verdict="not reproduced")
    pending = report.rank_rows([], missing=True)[0]
    text = report.in_brief([row, flipped, pending, dataclasses.replace(row, verdict="inconclusive")])
    lines = text.splitlines()
    assert lines[0] == "Of 4 claims: 1 reproduced, 1 not reproduced, 1 inconclusive, 1 not run yet."
    assert len(lines) == 3 and f"mean Δ {mean:+.3f} over 3 seeds where the paper has +0.396" in lines[1]
    assert f"(ours is {100 * mean / 0.396:.0f} % of it)" in lines[1] and "(the opposite sign)" in lines[2]
    assert report.in_brief([]) == "Of 0 claims: none."
    tripled = dataclasses.replace(row, values=tuple(3 * 0.396 for _ in row.values))
    assert "(ours is 3.0 times it)" in report.in_brief([tripled])


def test_in_brief_of_the_committed_records_has_a_line_per_decided_claim():
    rows = report.claims(studies.find_records(ROOT / "reports" / "reference"))
    text = report.in_brief(rows)
    decided = [r for r in rows if r.verdict in ("reproduced", "not reproduced")]
    assert decided and len(text.splitlines()) == 1 + len(decided)
    assert all(f"- {r.claim}: **{r.verdict}**" in text for r in decided)


def test_cli_report_shows_the_majority_floor_with_glue_data_and_refuses_a_broken_file(capsys, tmp_path, monkeypatch):
    """With GLUE data at $COMPANION_DATA_DIR a task's row carries the floor; an unreadable file is
    one line and exit 2, naming the variable to unset; without data the table is the records' alone."""
    glue_records = ROOT / "reports" / "reference" / "glue"
    shared = ROOT.parent / "shared" / "data" / "glue"
    if not (shared / "MRPC" / "dev.tsv").is_file():
        pytest.skip("no GLUE data beside the checkout")
    monkeypatch.setenv("COMPANION_DATA_DIR", str(shared))
    assert main(["report", str(glue_records)]) == 0
    assert "always the majority class: 0.684" in capsys.readouterr().out
    broken = tmp_path / "glue"
    shutil.copytree(shared / "MRPC", broken / "MRPC")
    (broken / "MRPC" / "dev.tsv").write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\nmaybe\t1\t2\ta\tb\n")
    monkeypatch.setenv("COMPANION_DATA_DIR", str(broken))
    assert main(["report", str(glue_records)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unset COMPANION_DATA_DIR" in err
    monkeypatch.delenv("COMPANION_DATA_DIR")
    assert main(["report", str(glue_records)]) == 0
    assert "majority class" not in capsys.readouterr().out


def test_glue_floors_are_taken_on_the_examples_the_runs_were_scored_on(monkeypatch):
    """RTE drops 33 of its 277 validation pairs (over 128 tokens): its floor is the majority share
    of the 244 kept (131 entailments), not of the split. Records that disagree on their examples,
    or a folder without data, give no floor."""
    shared = ROOT.parent / "shared" / "data" / "glue"
    if not (shared / "RTE" / "dev.tsv").is_file():
        pytest.skip("no GLUE data beside the checkout")
    records = studies.find_records(ROOT / "reports" / "reference" / "glue")
    mrpc = next(r for r in records if r.config.task == "mrpc")
    rte = dataclasses.replace(mrpc, config=dataclasses.replace(mrpc.config, task="rte"),
                              result=dataclasses.replace(mrpc.result, task="rte", n_validation=244))
    floors = report.glue_floors([mrpc, rte], shared)
    assert floors == {"mrpc": pytest.approx(279 / 408, abs=1e-15), "rte": pytest.approx(131 / 244, abs=1e-15)}
    wrong_count = dataclasses.replace(rte, result=dataclasses.replace(rte.result, n_validation=277))
    assert "rte" not in report.glue_floors([mrpc, wrong_count], shared)
    shorter = dataclasses.replace(rte, config=dataclasses.replace(rte.config, max_seq_length=64), seed=9)
    assert "rte" not in report.glue_floors([rte, shorter], shared)  # two settings: which examples?
    unknown = dataclasses.replace(rte, config=dataclasses.replace(rte.config, model="no-such-model"))
    assert report.glue_floors([unknown], shared) == {}  # its tokenizer is not here; nothing is downloaded
    monkeypatch.delenv("COMPANION_DATA_DIR", raising=False)
    assert report.glue_floors([mrpc, rte]) == {}
