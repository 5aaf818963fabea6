"""companion.book.studies: resumable studies, one JSON record per finished run."""

import dataclasses
import json

import pytest

from companion.book import studies
from conftest import needs_glue, tiny_stsb

pytestmark = needs_glue
TINY = dataclasses.replace(tiny_stsb(), steps=2)
OTHER = dataclasses.replace(TINY, lr=2e-3)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A real two-setting study (2 + 1 seeds) in a fresh folder, and what it said."""
    store = studies.Store(tmp_path_factory.mktemp("study"))
    said = []
    records = studies.run_study([(TINY, [0, 1]), (OTHER, [0])], store, progress=False, say=said.append)
    return store, records, said


@pytest.fixture()
def fake_fit(monkeypatch, real):
    """studies.fit replaced by one that returns the real records' results (fast); counts calls."""
    template = real[1][0][0].result
    calls = []

    def fit(config, seeds, parallel=None, on_chunk=None, **kwargs):
        calls.append((config.lr, list(seeds)))
        out = []
        for s in seeds:
            r = dataclasses.replace(template, seed=s)
            on_chunk([r])
            out.append(r)
        return out

    monkeypatch.setattr(studies, "fit", fit)
    return calls


def test_every_run_is_one_record_with_its_provenance(real):
    store, records, said = real
    assert [[r.seed for r in rs] for rs in records] == [[0, 1], [0]]
    files = sorted(p.name for p in store.folder.iterdir())
    assert files == sorted(f"{studies.run_key(c, s)}.json" for c, s in ((TINY, 0), (TINY, 1), (OTHER, 0)))
    raw = json.loads(store.path(studies.run_key(TINY, 1)).read_text())
    assert raw["seed"] == 1 and raw["config"]["lr"] == 1e-3 and raw["result"]["seed"] == 1
    assert raw["revision"] and raw["device"].startswith("cpu") and raw["wall_time_s"] > 0
    assert said == [f"study {store.folder}: 0 of 3 runs recorded, 3 to run",
                    f"study {store.folder}: 3 of 3 runs recorded, 0 to run"]
    assert records[0][0].result.train_loss != records[0][1].result.train_loss  # the seeds' own runs


def test_run_key_follows_every_field_and_the_seed():
    keys = {studies.run_key(TINY, 0), studies.run_key(TINY, 1), studies.run_key(OTHER, 0),
            studies.run_key(dataclasses.replace(TINY, adapter=dataclasses.replace(TINY.adapter, rank=8)), 0)}
    assert len(keys) == 4 and studies.run_key(TINY, 0) == studies.run_key(dataclasses.replace(TINY), 0)


def test_a_finished_study_runs_nothing_again(real, fake_fit):
    store, records, _ = real
    said = []
    again = studies.run_study([(TINY, [0, 1]), (OTHER, [0])], store, progress=False, say=said.append)
    assert fake_fit == [] and said[0].endswith("3 of 3 runs recorded, 0 to run")
    assert [[r.result for r in rs] for rs in again] == [[r.result for r in rs] for rs in records]


def test_an_interrupted_study_redoes_only_the_run_that_was_cut_and_says_so(tmp_path, fake_fit, monkeypatch):
    store = studies.Store(tmp_path)
    real_save = store.save
    saved = []

    def save_then_stop(*args, **kwargs):
        if saved:  # the second run is cut before its record is stored
            raise KeyboardInterrupt
        saved.append(real_save(*args, **kwargs))

    monkeypatch.setattr(store, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        studies.run_study([(TINY, [0, 1, 2])], store, progress=False, say=lambda s: None)
    monkeypatch.setattr(store, "save", real_save)
    said = []
    studies.run_study([(TINY, [0, 1, 2])], store, progress=False, say=said.append)
    assert fake_fit == [(1e-3, [0, 1, 2]), (1e-3, [1, 2])]  # seed 0 kept; seed 1 (cut) and 2 redone
    assert said[0].endswith("1 of 3 runs recorded, 2 to run; cut last time and redone now: stsb lora n=16 seed 1")
    assert said[1].endswith("3 of 3 runs recorded, 0 to run") and not list(tmp_path.glob("*.running"))


def test_half_written_and_mismatched_records_are_refused(tmp_path, fake_fit):
    store = studies.Store(tmp_path)
    studies.run_study([(TINY, [0])], store, progress=False, say=lambda s: None)
    path = store.path(studies.run_key(TINY, 0))
    whole = path.read_text()
    path.write_text(whole[: len(whole) // 2])
    with pytest.raises(studies.RecordError, match="not a whole JSON record .* delete it to run that run again"):
        studies.run_study([(TINY, [0])], store, progress=False, say=lambda s: None)
    edited = json.loads(whole)
    edited["config"]["lr"] = 5e-4  # a record whose content is not the run its name says
    path.write_text(json.dumps(edited))
    with pytest.raises(studies.RecordError, match="does not hold the run its name says"):
        studies.status([(TINY, [0])], store)
    assert len(fake_fit) == 1  # nothing ran on a record it could not trust
    path.write_text(whole)
    (tmp_path / (path.name + ".partial")).write_text("{")  # a write that was cut
    said = []
    studies.run_study([(TINY, [0])], store, progress=False, say=said.append)
    assert "removed 1 record(s) cut while being written" in said[0] and not store.partials()


def test_records_of_another_revision_are_reused_and_counted(real, monkeypatch):
    store, _, _ = real
    st = studies.status([(TINY, [0, 1]), (OTHER, [0])], store, revision="another")
    assert (st.total, st.recorded, st.left, st.other_revisions) == (3, 3, 0, 3)
    assert "3 recorded by another code revision, reused" in st.describe()


def test_recheck_reruns_a_record_from_its_file_alone(real, tmp_path):
    """The rerun of a stored run gives its score again (same CPU: exactly); a record whose stored
    score was changed is caught, and the command line says so with exit status 1."""
    from companion.cli import main

    store, records, _ = real
    path = store.path(records[0][1].key)
    checked = studies.recheck(path)
    assert checked.agrees and checked.difference < 1e-6 and checked.rerun.seed == 1
    tampered = tmp_path / path.name
    raw = json.loads(path.read_text())
    raw["result"]["value"] += 0.05
    tampered.write_text(json.dumps(raw))
    again = studies.recheck(tampered)
    assert not again.agrees and abs(again.difference - 0.05) < 1e-6 and "OUTSIDE 0.01" in again.describe()
    assert main(["recheck", str(tampered)]) == 1
    assert main(["recheck", str(tampered), "--tolerance", "0.1"]) == 0


def test_a_recheck_is_logged_and_read_back(real, tmp_path):
    """``--log`` appends one JSON line per recheck with both scores and revisions; a log named like a
    record is refused before anything is trained, and a cut line is refused when read."""
    from companion.cli import main

    store, records, _ = real
    path = store.path(records[0][1].key)
    log = tmp_path / "reference" / studies.RECHECK_LOG
    assert main(["recheck", str(path), "--log", str(log)]) == 0
    assert main(["recheck", str(path), "--log", str(log)]) == 0
    first, second = studies.read_rechecks(log)
    assert first["key"] == path.stem and first["agrees"] and first["difference"] < 1e-6
    assert first["stored"]["value"] == records[0][1].result.value and first["rerun"]["revision"] != ""
    assert second["seed"] == first["seed"] and studies.read_rechecks(tmp_path / "none.jsonl") == []
    assert main(["recheck", str(path), "--log", str(tmp_path / "0123456789abcdef.json")]) == 2
    log.write_text(log.read_text() + '{"key": "cut\n')
    with pytest.raises(studies.RecordError, match="line 3"):
        studies.read_rechecks(log)
