"""Chapter 8, the reproduction report: claims judged from the committed records and the chapters' runs."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from companion.book import claims, report, statistics, studies
from companion.book.chapters import ch01_theorem, ch08_report as chapter
from conftest import ROOT

REPORTS = ROOT / "reports"


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return chapter.run(chapter.config("smoke", reports_dir=str(REPORTS), results_dir=str(tmp_path_factory.mktemp("none"))))


def test_every_record_is_read_and_every_claim_has_a_row(result):
    files = [p for p in REPORTS.rglob("*.json") if studies._RECORD_NAME.match(p.name)]
    assert len(result.records) == len(files) > 0
    assert sum(s["runs"] for s in result.studies) == len(files)
    claimed = [r.claim for r in result.rows]
    # Few-shot at the paper's three n for both variants, rank robustness, the two compressed-vs-wide rows,
    # numerical ranks for both variants, GLUE's eight tasks and overall.
    assert len(claimed) == 3 * 2 + 1 + 2 + 2 + 8 + 1 + len(report.PENDING) == len(set(claimed))
    m = chapter.summary(result)
    assert m["claims"] == len(claimed) and m["chapters_absent"] == 7 and m["chapter_claims"] == 0
    assert m["records_fitted"] == sum(r.result.fitted for r in result.records)


def test_fewshot_mean_recomputed_from_the_files(result):
    """The vanilla LoRA n = 64 runs drawn in the figure are the stored values, seed by seed."""
    raw = {}
    for path in REPORTS.rglob("*.json"):
        data = json.loads(path.read_text())
        if data.get("config", {}).get("adapter", {}).get("method") == "lora" and data["config"]["samples"] == 64 \
                and data["config"]["steps"] == 500:
            raw[data["seed"]] = data["result"]["value"]
    drawn = {r["seed"]: r["value"] for r in result.fewshot_runs if r["method"] == "lora" and r["samples"] == 64}
    assert drawn == raw and len(raw) >= 3
    # Only few-shot Δs are drawn there (the rank sweep and the comparison are other claims).
    assert {d["method"] for d in result.fewshot_deltas} <= set(report.DEEP)
    assert {r["samples"] for r in result.fewshot_runs} <= {16, 64, 256} and len(result.compare_runs) in (0, 9)
    delta = next(d for d in result.fewshot_deltas if d["method"] == "deep-lora-compressed" and d["samples"] == 16)
    assert (delta["low"], delta["high"]) == statistics.paired_bootstrap(delta["values"])
    assert delta["low"] <= delta["mean"] <= delta["high"]


def test_table_says_what_is_missing_and_what_cannot_be_compared(result):
    text = chapter.table(result, "profile=smoke · device=cpu")
    assert "| claim | paper | ours | pairs that learned | verdict |" in text
    assert text.count(report.NOT_RUN) == sum(r.verdict == report.NOT_RUN for r in result.rows)
    offline = result.offline_tasks
    if offline is not None and "mnli" not in offline:
        assert "MNLI: Deep LoRA above vanilla LoRA | 0.011 | — | 0 | **cannot be compared here" in text
    assert "sentence-embedding model" in text
    assert "no chapter run read" in text


def test_glue_rows_pair_by_seed_and_average_tasks_per_seed(tmp_path):
    """Synthetic GLUE records (the few-shot ones relabelled): Δ per task, then per seed the mean
    over tasks, judged by the same rule."""
    source = [r for r in report.fewshot_records(studies.find_records(REPORTS)) if r.config.samples == 16
              and r.config.method in ("lora", "deep-lora-compressed")]
    made = []
    for task, shift in (("rte", 0.0), ("cola", 0.5)):
        for r in source:
            method = "deep-lora" if r.config.method != "lora" else "lora"
            cfg = dataclasses.replace(r.config, task=task, samples=1024,
                                      adapter=dataclasses.replace(r.config.adapter, method=method))
            bump = shift if method == "deep-lora" else 0.0
            made.append(dataclasses.replace(r, config=cfg, result=dataclasses.replace(r.result, value=r.result.value + bump)))
    rows = {row.claim.split(":")[0]: row for row in report.glue_rows(made)}
    rte, cola = rows["limited-data GLUE RTE"], rows["limited-data GLUE COLA"]
    np.testing.assert_allclose(np.array(cola.values), np.array(rte.values) + 0.5)
    overall = rows["limited-data GLUE overall (2 of 8 tasks)"]
    np.testing.assert_allclose(overall.values, (np.array(rte.values) + np.array(cola.values)) / 2)
    assert overall.verdict == statistics.verdict(statistics.paired_bootstrap(overall.values), 0.028)
    with_missing = report.glue_rows(made, missing=True, offline_tasks=["cola", "rte", "mrpc"])
    verdicts = {row.claim.split(":")[0]: row.verdict for row in with_missing}
    assert verdicts["limited-data GLUE MRPC"] == report.NOT_RUN
    assert verdicts["limited-data GLUE QQP"].startswith("cannot be compared here")


def test_chapter_claims_read_from_a_finished_run(tmp_path):
    """A chapter run (metrics + provenance) gives its own checks; one without provenance is absent."""
    run = tmp_path / "smoke" / "01_theorem"
    run.mkdir(parents=True)
    shutil.copy(ROOT / "baselines" / "smoke" / "01_theorem" / "metrics.json", run / "metrics.json")
    (run / "provenance.json").write_text(json.dumps({"profile": "smoke", "device": "cpu (2 cores)", "git_revision": "abc"}))
    (tmp_path / "smoke" / "02_proof_verification").mkdir()
    stopped = tmp_path / "smoke" / "03_compressed_trajectories"  # metrics but no provenance: stopped
    stopped.mkdir()
    (stopped / "metrics.json").write_text(json.dumps({"gap": 1.0}))
    rows, absent = report.chapter_claims(tmp_path, "smoke", ["01_theorem", "02_proof_verification",
                                                              "03_compressed_trajectories"])
    expected = ch01_theorem.check_claims(json.loads((run / "metrics.json").read_text()), "smoke")
    assert [r.statement for r in rows] == [c.statement for c in expected] and all(r.holds for r in rows)
    assert absent == ["02_proof_verification", "03_compressed_trajectories"]
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["max_rel_dev"] = 1.0  # the recursion broken: the chapter's check fails, and the report says so
    (run / "metrics.json").write_text(json.dumps(metrics))
    rows, _ = report.chapter_claims(tmp_path, "smoke", ["01_theorem"])
    assert len(rows) == 1 and not rows[0].holds and "1 of 6 claims do not hold" in rows[0].statement


def test_integrity_checks_fail_on_a_broken_summary(result):
    m = chapter.summary(result)
    assert all(c.holds for c in chapter.check_claims(m, "smoke"))
    key = next(k for k in m if k.endswith("_low"))
    with pytest.raises(claims.ClaimsFailed, match="interval contains its mean"):
        chapter.check_claims({**m, key: m[key.replace("_low", "_delta_mean")] + 1.0}, "smoke")
    with pytest.raises(claims.ClaimsFailed, match="found study records"):
        chapter.check_claims({**m, "records": 0}, "smoke")


def test_no_records_is_an_error_that_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder of study records"):
        chapter.run(chapter.config("smoke", reports_dir=str(tmp_path / "absent")))


def test_runs_trained_twice_are_in_the_table_and_the_checks(result):
    """Every run stored by two studies has a row, and the check counts them (the committed copies agree)."""
    text = chapter.table(result, "profile=smoke · device=cpu")
    m = chapter.summary(result)
    assert m["reruns"] == len(result.reruns) and "**Runs trained twice.**" in text
    for r in result.reruns:
        assert r.label in text and len(r.copies) >= 2
    check = next(c for c in chapter.check_claims(m, "smoke") if "trained twice" in c.statement)
    assert check.holds == (m["reruns_agreeing"] == m["reruns"])


def test_rank_sweep_runs_are_the_files_each_run_once(result):
    """The rank-sweep figure draws every stored 200-step n = 16 run of vanilla or narrow Deep LoRA once,
    with its stored score, though narrow r = 8 runs are stored by two studies."""
    raw = {}
    for path in REPORTS.rglob("*.json"):
        data = json.loads(path.read_text())
        c = data.get("config", {})
        if c.get("steps") == 200 and c.get("samples") == 16 and c["adapter"]["method"] in ("lora", "deep-lora-narrow"):
            raw[(c["adapter"]["method"], c["adapter"]["rank"], data["seed"])] = data["result"]["value"]
    drawn = {(r["method"], r["rank"], r["seed"]): r["value"] for r in result.rank_runs}
    assert drawn == raw and len(drawn) == len(result.rank_runs) >= 6
    assert set(result.numerical_ranks) == set(result.rank_seeds)


def test_glue_figure_reads_the_judged_task_rows(result):
    """The GLUE figure draws each judged task row's per-seed Δ (none before the GLUE study lands)."""
    drawn = chapter.glue_deltas(result)
    judged = {r.setting[0]: list(r.values) for r in result.rows if r.setting and r.setting[0] in chapter.paper_glue()
              and r.setting[1] == 1024}  # not the few-shot STS-B rows (n = 16, 64, 256)
    assert drawn == judged and set(chapter.paper_glue()) == {"cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb"}
    fake = dataclasses.replace(result, rows=[report.ClaimRow("x", result.rows[0].paper, "", "2 of 2", "", "", "reproduced",
                                                              (0.1, 0.2), (0.1, 0.2), ("rte", 1024, "deep-lora"))])
    assert chapter.glue_deltas(fake) == {"rte": [0.1, 0.2]}


def test_fit_check_draws_every_record_once_with_its_own_losses(result):
    """The fit figure covers every stored run of every study (not only the few-shot curve's), each
    with the losses and verdict in its file."""
    raw = {}
    for path in REPORTS.rglob("*.json"):
        if studies._RECORD_NAME.match(path.name):
            data = json.loads(path.read_text())
            raw[(path.parent.name, data["config"]["adapter"]["method"], data["config"]["adapter"]["rank"], data["config"]["task"],
                 data["config"]["samples"], data["seed"])] = (data["result"]["first_loss"],
                                                              data["result"]["last_loss"], bool(data["result"]["fitted"]))
    drawn = {(r["study"], r["method"], r["rank"], r["task"], r["samples"], r["seed"]): (r["first_loss"], r["last_loss"], r["fitted"])
             for r in result.fit_runs}
    assert drawn == raw and len(result.fit_runs) == len(result.records)


def test_glue_scores_are_the_files_with_the_majority_floor(result):
    """The GLUE score figure draws every 1024-example GLUE record's stored score once; its floor is
    the validation split's majority share where the data is here (MRPC: 279 of 408 pairs)."""
    raw = {}
    for path in (REPORTS / "reference" / "glue").glob("*.json"):
        if studies._RECORD_NAME.match(path.name):
            data = json.loads(path.read_text())
            raw[(data["config"]["task"], data["config"]["adapter"]["method"], data["seed"])] = data["result"]["value"]
    drawn = {(r["task"], r["method"], r["seed"]): r["value"] for r in result.glue_runs}
    assert drawn == raw and len(result.glue_runs) == len(raw) > 0
    if result.offline_tasks is not None and any(task == "mrpc" for task, _, _ in drawn):
        assert result.glue_floors["mrpc"] == pytest.approx(279 / 408, abs=1e-15)
        row = next(r for r in result.rows if r.claim.startswith("limited-data GLUE MRPC"))
        assert "always the majority class: 0.684" in row.ours


def test_glue_rows_show_each_methods_mean_over_learned_pairs_and_the_floor():
    """The note beside a GLUE Δ: both methods' mean score over the pairs that learned, recomputed
    from the files; the floor only when given, and it never changes the verdict."""
    records = [r for r in studies.find_records(REPORTS / "reference" / "glue") if r.config.task == "cola"]
    bare = next(r for r in report.glue_rows(records) if r.claim.startswith("limited-data GLUE COLA"))
    floored = next(r for r in report.glue_rows(records, floors={"cola": 0.0})
                   if r.claim.startswith("limited-data GLUE COLA"))
    by = {(r.config.method, r.seed): r for r in records}
    seeds = [s for (m, s) in by if m == "deep-lora" and ("lora", s) in by
             and report.learned(by[("lora", s)]) and report.learned(by[("deep-lora", s)])]
    lora = np.mean([by[("lora", s)].result.value for s in seeds])
    deep = np.mean([by[("deep-lora", s)].result.value for s in seeds])
    assert f"(mean Matthews correlation: vanilla LoRA {lora:.3f}, Deep LoRA {deep:.3f})" in bare.ours
    assert floored.ours == bare.ours.replace(")", "; always the majority class: 0.000)")
    assert floored.verdict == bare.verdict and floored.values == bare.values
