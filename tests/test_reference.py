"""companion.book.reference: the reference profile's studies (the paper's protocol on MiniLM)."""

import dataclasses
import json
from pathlib import Path

import pytest

from companion.book import reference, studies
from companion.book.chapters import adaptation, ch06_fewshot, ch07_glue
from companion.cli import main
from conftest import ROOT, needs_glue, tiny_stsb

pytestmark = needs_glue
STORE = ROOT / "reports" / "reference"


@pytest.fixture(scope="module")
def plan():
    return {s.name: s for s in reference.plan()}


def test_the_plan_is_the_full_profile_on_minilm_with_fewer_seeds(plan):
    assert list(plan) == list(reference.SEEDS)
    six, seven = ch06_fewshot.config("full", model="minilm"), ch07_glue.config("full", model="minilm")
    few = plan["fewshot-stsb"]
    # 3 sizes × (vanilla, compressed, wide) × 5 seeds, every one on the chapter's full-profile base.
    assert len(few.runs) == 3 * 3 * 5 and {c.samples for c, _ in few.runs} == {16, 64, 256}
    for c, _ in few.runs:
        changes = dict(samples=c.samples, method=c.method, inner_lr=c.inner_lr, gamma=c.gamma)
        assert c == adaptation.vary(six.base, **changes) and c.model == "minilm" and c.steps == 500
    assert [p.fit_kwargs for p in few.parts] == [{}, {"numerical_ranks": True}]
    assert {c.samples for c, _ in few.parts[1].settings} == {256}
    compressed = [c for c, _ in few.runs if c.method == "deep-lora-compressed"]
    assert all(c.inner_lr == 1e-2 and c.gamma == 0.01 for c in compressed)
    sweep = plan["rank-sweep"]
    assert {(c.method, c.adapter.rank, c.steps, c.samples) for c, _ in sweep.runs} == {
        (m, r, 200, 16) for r in (8, 16, 32, 64) for m in ("lora", "deep-lora-narrow")}
    assert {s for _, s in sweep.runs} == {0, 1, 2}
    compare = plan["compressed-vs-wide"]
    assert compare.parts[0].fit_kwargs["eval_at"][:2] == (10, 20) and len(compare.runs) == 9
    glue = plan["glue"]
    tasks = ch07_glue.tasks_to_run(seven)[0]
    assert {c.task for c, _ in glue.runs} == set(tasks) and all(c.samples == 1024 for c, _ in glue.runs)
    assert {c.steps for c, _ in glue.runs if c.task == "sst2"} == {600}
    assert {c.steps for c, _ in glue.runs if c.task != "sst2"} == {1000}


def test_the_committed_fewshot_records_are_runs_of_the_plan(plan):
    """Every committed few-shot record is one of the study's runs (same setting hash), so a rerun
    of the reference profile reuses it instead of running it again."""
    records = studies.find_records(STORE / "fewshot-stsb")
    keys = {studies.run_key(c, s) for c, s in plan["fewshot-stsb"].runs}
    assert records and all(r.key in keys for r in records)
    status = reference.status(plan["fewshot-stsb"], STORE)
    assert status.recorded == len(records) and status.total == 45
    hours, untimed = reference.estimate_hours(plan["fewshot-stsb"], STORE)
    assert untimed <= status.left and (hours > 0 or untimed == status.left)  # no time left once the study is whole


def test_plan_from_the_command_line(capsys):
    assert main(["reproduce", "--profile", "reference", "--plan"]) == 0
    out = capsys.readouterr().out
    for name in reference.SEEDS:
        assert f"\n{name}: " in "\n" + out
    assert "fewshot-stsb: " in out and " of 45 runs recorded" in out
    assert main(["reproduce", "--profile", "reference", "--studies", "nope"]) == 2
    assert "unknown reference study ['nope']" in capsys.readouterr().err
    assert main(["reproduce", "--profile", "smoke", "--plan"]) == 2
    assert "apply to the reference profile only" in capsys.readouterr().err


def test_an_interrupted_reference_run_redoes_only_the_cut_run_and_says_so(tmp_path, monkeypatch):
    """A tiny two-part study in place of the real plan: the run is stopped after one record, and the
    rerun names the cut run, redoes it and runs the rest."""
    tiny = dataclasses.replace(tiny_stsb(), steps=2)
    study = reference.Study("tiny", "a test", (reference.Part(((tiny, (0, 1)),)),
                                               reference.Part(((dataclasses.replace(tiny, lr=2e-3), (0,)),))))
    monkeypatch.setattr(reference, "plan", lambda **kwargs: [study])
    real_save, calls = studies.Store.save, []

    def save_once(self, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(studies.Store, "save", save_once)
    with pytest.raises(KeyboardInterrupt):
        reference.run(tmp_path, progress=False, say=lambda s: None)
    monkeypatch.setattr(studies.Store, "save", real_save)
    said = []
    out = reference.run(tmp_path, progress=False, say=said.append)
    assert "1 of 2 runs recorded, 1 to run; cut last time and redone now: stsb lora n=16 seed 1" in said[0]
    assert out["tiny"].recorded == out["tiny"].total == 3
    assert len(list((tmp_path / "tiny").glob("*.json"))) == 3
    with pytest.raises(ValueError, match="unknown reference study"):
        reference.run(tmp_path, ["nope"])


def test_linear_chapters_are_stored_as_json_and_csv_once(tmp_path, monkeypatch):
    """run_chapters keeps a chapter's JSON and CSV outputs (no PNG), marks it done by its provenance,
    skips it next time, and refuses a chapter that has no full-profile reference run."""
    from companion.book import notebooks as runner

    calls = []

    def fake_execute(name, profile, *, root=None, results_dir=None, executed_dir=None, force=False, timeout_s=None,
                     extra=None):
        calls.append((name, profile, force))
        assert not extra  # chapter 1 declares no pieces_dir
        out = tmp_path / "run" / name
        out.mkdir(parents=True)
        (out / "metrics.json").write_text("{}")
        (out / "trajectory.csv").write_text("a\n1\n")
        (out / "trajectory.png").write_bytes(b"png")
        (out / "huge.csv").write_text("x\n" + "1\n" * (reference.MAX_CSV_BYTES // 2 + 1))
        (out / "provenance.json").write_text(json.dumps({"wall_time_s": 3.0, "device": "cpu (2 cores)",
                                                         "git_revision": "abcdef0123"}))
        return runner.Execution(name, out / "x.ipynb", out, 3.0)

    monkeypatch.setattr(runner, "execute", fake_execute)
    root = tmp_path / "reference"
    said = []
    assert reference.run_chapters(root, ["01_theorem"], say=said.append) == ["01_theorem"]
    stored = root / "chapters" / "full" / "01_theorem"
    assert sorted(p.name for p in stored.iterdir()) == ["metrics.json", "omitted.json", "provenance.json",
                                                        "trajectory.csv"]
    assert list(json.loads((stored / "omitted.json").read_text())["left_out"]) == ["huge.csv"]
    assert calls == [("01_theorem", "full", True)] and reference.chapter_done(root, "01_theorem")
    assert reference.chapter_status(root, "01_theorem") == "01_theorem: stored (3 s on cpu (2 cores), revision abcdef0)"
    assert reference.run_chapters(root, ["01_theorem"]) == [] and len(calls) == 1
    with pytest.raises(ValueError, match="no reference run for"):
        reference.run_chapters(root, ["06_fewshot_stsb"])


def test_chapter_4_resumes_from_its_pieces_and_drops_them_once_stored(tmp_path, monkeypatch):
    """Chapter 4 gets a pieces folder under the reference folder; a run cut after one piece leaves it
    there, the next run says it resumes from it, and the stored chapter no longer needs it."""
    from companion.book import notebooks as runner

    seen = []

    def fake_execute(name, profile, *, root=None, results_dir=None, executed_dir=None, force=False, timeout_s=None,
                     extra=None):
        pieces = Path(extra["pieces_dir"])
        seen.append(sorted(p.name for p in pieces.glob("*.json")) if pieces.is_dir() else [])
        pieces.mkdir(parents=True, exist_ok=True)
        (pieces / "sweep-rhat5-trial0-compressed.json").write_text("{}")
        if len(seen) == 1:
            (Path(results_dir) / "full" / name).mkdir(parents=True)
            (Path(results_dir) / "full" / name / "rank_sweep.csv").write_text("a\n1\n")
            (Path(results_dir) / "full" / name / "metrics.json").write_text('{"steps": 3}\n')
            raise RuntimeError("cut\n[FAILS] a check (1.0001)")
        out = tmp_path / "run" / name
        out.mkdir(parents=True)
        (out / "provenance.json").write_text(json.dumps({"wall_time_s": 3.0, "device": "cpu", "git_revision": "ab"}))
        return runner.Execution(name, out / "x.ipynb", out, 3.0)

    monkeypatch.setattr(runner, "execute", fake_execute)
    root = tmp_path / "reference"
    with pytest.raises(RuntimeError, match="cut"):
        reference.run_chapters(root, ["04_matrix_completion"])
    pieces = root / "chapters" / "pieces" / "04_matrix_completion"
    failed = root / "chapters" / "failed" / "04_matrix_completion"
    assert (failed / "rank_sweep.csv").read_text() == "a\n1\n" and "[FAILS] a check" in (failed / "error.txt").read_text()
    assert json.loads((failed / "metrics.json").read_text()) == {"steps": 3}  # what it measured before the check
    assert not reference.chapter_done(root, "04_matrix_completion")
    assert reference.chapter_status(root, "04_matrix_completion").endswith(
        "; 1 of its 80 sweep and depth runs stored (a run resumes from them)")
    said = []
    assert reference.run_chapters(root, ["04_matrix_completion"], say=said.append) == ["04_matrix_completion"]
    assert seen == [[], ["sweep-rhat5-trial0-compressed.json"]] and not pieces.exists()
    assert any("resuming from 1 stored pieces" in line for line in said)
    assert reference.chapter_done(root, "04_matrix_completion")
