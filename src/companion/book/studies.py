"""Resumable studies: many fine-tuning runs, each stored the moment it ends.

A study is a list of (setting, seeds). Each finished run — one seed of one setting — is one small
JSON file in the study's folder, named by ``run_key``, a hash of the setting's every field and the
seed. It holds the setting, the seed, the ``RunResult``, the code revision that made it, the
device and the wall time. ``run_study`` skips every run whose record is there, so a study of
several hours runs piece by piece and can be stopped at any point: what was cut is the one run in
progress, which is redone. Records are written to a temporary file and renamed into place, so a
record is whole or absent. One that cannot be read, or whose content is not the run its name
says, is refused with a message that names the file and what to do; it is never reused.

Records of another code revision are reused (a study spans commits) and counted separately in
``StudyStatus``, so a report can say which revisions produced its numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from companion.adapt.training import FinetuneConfig, RunResult, fit
from companion.book.results import git_revision

RECORD_FORMAT = 1  # the layout of a record file (bumped when its fields change)
SUFFIX = ".json"
_PARTIAL = ".partial"  # a record being written; renamed to <key>.json once whole
_RUNNING = ".running"  # marks the run in progress; removed when its record is stored


class RecordError(ValueError):
    """A record file that cannot be trusted: half-written, unreadable, or another run's."""


def run_key(config: FinetuneConfig, seed: int) -> str:
    """The record name of one run: 16 hex digits of the SHA-256 of the setting's fields (sorted
    JSON of ``dataclasses.asdict``, the adapter's included) and the seed."""
    text = json.dumps({"config": dataclasses.asdict(config), "seed": int(seed)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Record:
    """One finished run as stored: the setting, the seed, the result and where it came from."""

    key: str  # run_key(config, seed): the file's name
    config: FinetuneConfig
    seed: int
    result: RunResult
    revision: str  # git commit of the code (``+dirty`` with uncommitted changes), or "unknown"
    device: str  # JAX platform and device kind
    wall_time_s: float  # the run's program, from its first build to its last evaluation

    def to_dict(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "key": self.key, "config": dataclasses.asdict(self.config),
                "seed": self.seed, "revision": self.revision, "device": self.device,
                "wall_time_s": self.wall_time_s, "result": self.result.to_dict()}


class Store:
    """The records of one study, one file per run in ``folder`` (created on first write)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def load(self, config: FinetuneConfig, seed: int) -> Record | None:
        """The record of this run, or None when it has not finished yet.

        Raises:
          RecordError: the file is there but half-written, unreadable, or holds another run.
        """
        key = run_key(config, seed)
        path = self.path(key)
        if not path.exists():
            return None
        record = self._read(path)
        if dataclasses.asdict(record.config) != dataclasses.asdict(config) or record.seed != int(seed):
            raise RecordError(f"{path} is named for this run but holds another setting or seed "
                              f"(seed {record.seed}); move it away or delete it to run this one again")
        return record

    def save(self, config: FinetuneConfig, result: RunResult, revision: str, device: str,
             wall_time_s: float) -> Record:
        """Store one finished run (atomically: a temporary file renamed into place)."""
        record = Record(key=run_key(config, result.seed), config=config, seed=int(result.seed), result=result,
                        revision=revision, device=device, wall_time_s=float(wall_time_s))
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(record.key)
        partial = path.with_name(path.name + _PARTIAL)
        partial.write_text(json.dumps(record.to_dict(), indent=1) + "\n")
        os.replace(partial, path)
        return record

    def records(self) -> list[Record]:
        """Every record in the folder, sorted by name, each checked against its own name.

        Raises:
          RecordError: a record is unreadable or is not the run its name says.
        """
        if not self.folder.is_dir():
            return []
        return [self._read(p) for p in sorted(self.folder.glob(f"*{SUFFIX}"))]

    def partials(self) -> list[Path]:
        """Records cut while being written (left by an interrupted ``save``)."""
        return sorted(self.folder.glob(f"*{SUFFIX}{_PARTIAL}")) if self.folder.is_dir() else []

    def mark_running(self, config: FinetuneConfig, seed: int) -> None:
        """Note that this run has started (``cut_runs`` finds the note if it never finishes)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        note = {"method": config.method, "task": config.task, "samples": config.samples, "seed": int(seed)}
        (self.folder / f"{run_key(config, seed)}{_RUNNING}").write_text(json.dumps(note) + "\n")

    def cut_runs(self) -> list[str]:
        """The runs that started and never stored a record (an interrupted study), described."""
        if not self.folder.is_dir():
            return []
        out = []
        for note in sorted(self.folder.glob(f"*{_RUNNING}")):
            key = note.name[: -len(_RUNNING)]
            if self.path(key).exists():
                continue
            try:
                d = json.loads(note.read_text())
                out.append(f"{d['task']} {d['method']} n={d['samples']} seed {d['seed']}")
            except (json.JSONDecodeError, KeyError, TypeError):
                out.append(key)
        return out

    def clear_running(self) -> None:
        for note in self.folder.glob(f"*{_RUNNING}") if self.folder.is_dir() else ():
            note.unlink()

    def _read(self, path: Path) -> Record:
        redo = "delete it to run that run again"
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RecordError(f"{path} is not a whole JSON record (cut while being written?); {redo}") from None
        if not isinstance(raw, dict) or raw.get("format") != RECORD_FORMAT:
            raise RecordError(f"{path} is not a study record of format {RECORD_FORMAT}; {redo}")
        try:
            config = FinetuneConfig.from_dict(raw["config"])
            record = Record(key=raw["key"], config=config, seed=int(raw["seed"]),
                            result=RunResult.from_dict(raw["result"]), revision=str(raw["revision"]),
                            device=str(raw["device"]), wall_time_s=float(raw["wall_time_s"]))
        except (KeyError, TypeError, ValueError) as e:
            raise RecordError(f"{path} is missing or has a bad field ({e}); {redo}") from None
        if record.key != path.stem or run_key(config, record.seed) != record.key \
                or record.result.seed != record.seed:
            raise RecordError(f"{path} does not hold the run its name says (its setting and seed hash to "
                              f"{run_key(config, record.seed)}); {redo}")
        return record


@dataclass(frozen=True)
class StudyStatus:
    """Where a study stands: runs recorded (of this revision and of others) and runs left."""

    total: int
    recorded: int
    other_revisions: int  # recorded runs made by another code revision than this one
    partials: int  # records cut while being written, removed before resuming
    cut: tuple[str, ...] = ()  # runs an interrupted study started and never finished: redone

    @property
    def left(self) -> int:
        return self.total - self.recorded

    def describe(self) -> str:
        text = f"{self.recorded} of {self.total} runs recorded, {self.left} to run"
        if self.other_revisions:
            text += f" ({self.other_revisions} recorded by another code revision, reused)"
        if self.partials:
            text += f"; removed {self.partials} record(s) cut while being written: that run is redone"
        if self.cut:
            text += "; cut last time and redone now: " + ", ".join(self.cut)
        return text


Settings = Sequence[tuple[FinetuneConfig, Sequence[int]]]


def status(settings: Settings, store: Store, revision: str | None = None) -> StudyStatus:
    """Count the recorded and missing runs of ``settings`` (checking every record it reads)."""
    revision = git_revision() if revision is None else revision
    runs = [(c, int(s)) for c, seeds in settings for s in seeds]
    found = [store.load(c, s) for c, s in runs]
    recorded = [r for r in found if r is not None]
    return StudyStatus(total=len(runs), recorded=len(recorded),
                       other_revisions=sum(r.revision != revision for r in recorded),
                       partials=len(store.partials()))


def run_study(settings: Settings, store: Store, *, progress: bool = True,
              say: Callable[[str], None] = print, **fit_kwargs) -> list[list[Record]]:
    """Run every missing run of ``settings``, one seed per program, storing each as it ends.

    Args:
      settings: (setting, seeds) pairs; a setting's seeds share its prepared data and checkpoint.
      store: where the records are.
      progress: a tqdm bar over runs (done, left, estimated time left).
      say: where the one-line status goes before and after (default: print).
      fit_kwargs: passed to ``training.fit`` (log_every, eval_at, numerical_ranks, …).

    Returns:
      The records, per setting in the order of its seeds (old and new alike).

    Raises:
      RecordError: a record of the study cannot be trusted (nothing is run then).
    """
    from tqdm.auto import tqdm

    revision = git_revision()
    cut = store.partials()
    for p in cut:
        p.unlink()  # never read: a record is only trusted once renamed into place
    before = dataclasses.replace(status(settings, store, revision), partials=len(cut), cut=tuple(store.cut_runs()))
    store.clear_running()
    say(f"study {store.folder}: " + before.describe())
    bar = tqdm(total=before.total, initial=before.recorded, unit="run", desc="study", disable=not progress)
    try:
        for config, seeds in settings:
            todo = [int(s) for s in seeds if store.load(config, s) is None]
            if not todo:
                continue
            start = [time.perf_counter()]

            def stored(results: list[RunResult], config=config, todo=todo) -> None:
                for r in results:
                    store.save(config, r, revision, _device(), time.perf_counter() - start[0])
                    store.clear_running()
                    bar.update(1)
                following = [s for s in todo if store.load(config, s) is None]
                if following:
                    store.mark_running(config, following[0])
                start[0] = time.perf_counter()

            store.mark_running(config, todo[0])
            fit(config, todo, parallel=1, on_chunk=stored, **fit_kwargs)
    finally:
        bar.close()
    out = [[store.load(c, s) for s in seeds] for c, seeds in settings]
    say(f"study {store.folder}: " + status(settings, store, revision).describe())
    return out


_RECORD_NAME = re.compile(r"^[0-9a-f]{16}\.json$")


def find_records(root: str | Path) -> list[Record]:
    """Every study record under ``root`` (any depth), checked as ``Store`` checks its own.

    Only files named like records (``run_key`` + .json) are read, so a results folder may hold
    other JSON files (a notebook's metrics.json) beside its studies.

    Raises:
      FileNotFoundError: ``root`` is not a folder.
      RecordError: a record cannot be trusted.
    """
    return [r for records in records_by_folder(root).values() for r in records]


def records_by_folder(root: str | Path) -> dict[str, list[Record]]:
    """``find_records`` grouped by the folder (one study's store) each record is in, relative to
    ``root`` ("." for records directly in it), folders in sorted order.

    Raises:
      FileNotFoundError: ``root`` is not a folder.
      RecordError: a record cannot be trusted.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of study records")
    out: dict[str, list[Record]] = {}
    for path in sorted(root.rglob("*.json")):
        if _RECORD_NAME.match(path.name):
            out.setdefault(path.parent.relative_to(root).as_posix(), []).append(Store(path.parent)._read(path))
    return out


RECHECK_TOLERANCE = 0.01  # a rerun's score within this of the stored one (validation metric units)


@dataclass(frozen=True)
class Recheck:
    """A stored run run again: its stored and new scores and whether they agree."""

    record: Record
    rerun: RunResult
    tolerance: float
    revision: str = "unknown"  # the code that ran it again (``git_revision``)
    device: str = "unknown"
    wall_time_s: float = float("nan")

    @property
    def difference(self) -> float:
        return abs(self.rerun.value - self.record.result.value)

    @property
    def agrees(self) -> bool:
        return bool(self.difference <= self.tolerance)

    def to_dict(self) -> dict[str, Any]:
        """One line of a recheck log (``append_recheck``): the run, both scores and where each was made."""
        r = self.record
        return {"key": r.key, "task": r.config.task, "method": r.config.method, "rank": r.config.adapter.rank,
                "samples": r.config.samples, "steps": r.config.steps, "seed": r.seed, "metric": r.result.metric,
                "stored": {"value": r.result.value, "revision": r.revision, "device": r.device},
                "rerun": {"value": self.rerun.value, "revision": self.revision, "device": self.device,
                          "wall_time_s": self.wall_time_s},
                "difference": self.difference, "tolerance": self.tolerance, "agrees": self.agrees}

    def describe(self) -> str:
        r = self.record
        return (f"{r.config.task} {r.config.method} n={r.config.samples} seed {r.seed} ({r.key}, made at "
                f"{r.revision[:7]} on {r.device}): stored {r.result.metric} {r.result.value:.4f}, rerun "
                f"{self.rerun.value:.4f} at {self.revision[:7]} on {self.device}, |difference| {self.difference:.4f} "
                + ("within" if self.agrees else "OUTSIDE") + f" {self.tolerance:g}")


def recheck(path: str | Path, tolerance: float = RECHECK_TOLERANCE, **fit_kwargs) -> Recheck:
    """Run one stored run again from its record alone (its setting and seed) and compare the scores.

    Args:
      path: a record file (``<key>.json``).
      tolerance: the largest |difference| of the validation score that counts as the same result.
      fit_kwargs: passed to ``training.fit`` (e.g. log_every); they do not change the score.

    Raises:
      RecordError: the record cannot be trusted. FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a record file")
    record = Store(path.parent)._read(path)
    start = time.perf_counter()
    (rerun,) = fit(record.config, [record.seed], parallel=1, **fit_kwargs)
    return Recheck(record, rerun, tolerance, git_revision(), _device(), time.perf_counter() - start)


RECHECK_LOG = "rechecks.jsonl"  # beside the studies (reports/reference/): one line per recheck


def append_recheck(checked: Recheck, log: str | Path) -> Path:
    """Add one recheck to a log of JSON lines (created if missing), so a report can show it.

    The name must not look like a record's (``<16 hex digits>.json``), or study readers would take it
    for one; a ``.jsonl`` file never does.

    Raises:
      ValueError: ``log`` is named like a record.
    """
    log = Path(log)
    if _RECORD_NAME.match(log.name):
        raise ValueError(f"{log} is named like a study record; give the log another name, e.g. {RECHECK_LOG}")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(json.dumps(checked.to_dict()) + "\n")
    return log


def read_rechecks(log: str | Path) -> list[dict]:
    """The rechecks of a log (``append_recheck``), oldest first; [] when there is no log.

    Raises:
      RecordError: a line is not a whole recheck (the message names the line).
    """
    log = Path(log)
    if not log.is_file():
        return []
    out = []
    for i, line in enumerate(log.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            float(d["stored"]["value"]), float(d["rerun"]["value"]), str(d["key"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RecordError(f"{log} line {i} is not a whole recheck; delete that line to go on") from None
        out.append(d)
    return out


def _device() -> str:
    """Where a run ran, as every chapter names it ("cpu (2 cores)", "gpu: NVIDIA H200")."""
    from companion.book.profiles import device_description

    return device_description()


__all__ = ["RECHECK_LOG", "RECHECK_TOLERANCE", "Recheck", "append_recheck", "read_rechecks", "Record", "RecordError", "Store", "StudyStatus", "find_records", "recheck", "records_by_folder", "run_key", "run_study", "status"]
