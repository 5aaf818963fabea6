"""The reference profile: the paper's Deep LoRA protocol and step counts on the offline backbone,
with as many seeds as a 2-core CPU can run across sessions, stored run by run under
``reports/reference/`` (``companion reproduce --profile reference``).

It sits between the smoke profile (toy size, a check of the code) and the full one (the paper's
backbone and seed counts, on a GPU). Every setting is the full profile's (chapters 6 and 7 at
``config("full")``: arXiv:2406.04112's protocol as the authors' scripts at
deep-lora-transformers@618c410 run it) with two changes, both named in every record: the
backbone is the packaged all-MiniLM-L6-v2, and the seeds are fewer —

- ``fewshot-stsb``: STS-B at n = 16, 64, 256, 500 steps, vanilla LoRA, compressed and wide Deep
  LoRA, 5 seeds (paper: 20); n = 256 also stores the numerical ranks of every update;
- ``rank-sweep``: vanilla LoRA of rank r against narrow Deep LoRA of width r, r = 8…64, n = 16,
  200 steps, 3 seeds (paper: 5);
- ``compressed-vs-wide``: compressed, wide and random-narrow Deep LoRA at n = 16, 200 steps,
  validation every 10 steps, 3 seeds (paper: 1);
- ``glue``: each offline GLUE task at 1024 examples, 1000 steps (SST-2: 600), vanilla LoRA and
  wide Deep LoRA, 3 seeds (paper: 10).

A study is resumable (``companion.book.studies``): each finished run is one JSON record, a rerun
skips what is recorded and redoes only a run that was cut, and says which.

The linear half needs no backbone, so its reference is the chapters' own full profile wherever a
CPU can run it (``CHAPTERS``): each notebook is executed at ``full`` (forced, on the CPU) and its
metrics, figure CSVs, configuration and provenance are kept under ``chapters/full/<notebook>/``
(not the PNGs, nor a CSV over 1 MB, listed in omitted.json: reports hold small JSON and CSV files). A chapter is one run: it is done when
its provenance.json is there, and a cut one is run again whole.
"""

from __future__ import annotations

import dataclasses
import statistics as stats
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from companion.adapt.training import FinetuneConfig
from companion.book import studies
from companion.book.chapters import adaptation, ch06_fewshot, ch07_glue

MODEL = "minilm"  # the offline backbone (a sentence-embedding model; every record names it)
SEEDS = {"fewshot-stsb": 5,  # the studies, by name (plan order), and their seeds
         "rank-sweep": 3, "compressed-vs-wide": 3, "glue": 3}
FOLDER = Path("reports") / "reference"
# Chapters whose full profile runs on a 2-core CPU (chapter 3's d = 1000 factorization and
# chapter 4's d = 1000 completion with its r̂ sweep take hours, so they are separate steps).
CHAPTERS = ("01_theorem", "02_proof_verification", "03_compressed_trajectories", "04_matrix_completion")
CHAPTERS_FOLDER = "chapters"  # under the reference folder: chapters/full/<notebook>/
# A chapter that declares a ``pieces_dir`` parameter (chapter 4) keeps each finished sweep and depth
# run under chapters/pieces/<notebook>/ while it runs, so a cut run resumes from them; they are
# removed once the chapter is stored (its CSVs hold the same rows).
PIECES_FOLDER = "pieces"
# A chapter run that fails (a check that does not hold, a cell cut by its timeout) leaves its JSON
# and CSV outputs so far and the error's last lines under chapters/failed/<notebook>/: hours of a
# CPU are not thrown away, and the failure can be read.
FAILED_FOLDER = "failed"
KEPT = ("*.json", "*.csv")  # what a chapter run leaves in the reports (no PNGs)
# A figure CSV larger than this stays out of the reports (chapter 1's full singular values are
# 18 MB); omitted.json lists each one left out with its size, and the run's metrics keep its numbers.
MAX_CSV_BYTES = 1_000_000


@dataclass(frozen=True)
class Part:
    """Settings of one study that share how they are run (``training.fit``'s keyword arguments)."""

    settings: tuple[tuple[FinetuneConfig, tuple[int, ...]], ...]
    fit_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """One study of the reference profile: a folder of records and the runs that fill it."""

    name: str  # folder under reports/reference/
    purpose: str  # the paper's claim it serves
    parts: tuple[Part, ...]

    @property
    def runs(self) -> list[tuple[FinetuneConfig, int]]:
        return [(c, s) for p in self.parts for c, seeds in p.settings for s in seeds]


def _seeds(name: str, seeds: dict[str, int] | None) -> tuple[int, ...]:
    return tuple(range((seeds or SEEDS)[name]))


def plan(model: str = MODEL, seeds: dict[str, int] | None = None, glue_tasks: Sequence[str] | None = None) -> list[Study]:
    """The reference profile's studies, cheapest per run first.

    Args:
      model: the backbone (default: the packaged MiniLM).
      seeds: seeds per study name (default ``SEEDS``).
      glue_tasks: the GLUE tasks to run (default: those with data here, ``ch07_glue.tasks_to_run``).

    Returns:
      Studies whose settings are chapters 6 and 7's full-profile ones on ``model``.
    """
    six = ch06_fewshot.config("full", model=model)
    base = six.base
    compressed = dict(method="deep-lora-compressed", inner_lr=six.compressed_inner_lr, gamma=six.gamma)
    methods = (dict(method="lora"), compressed, dict(method=six.deep_method))
    fs = _seeds("fewshot-stsb", seeds)
    few = Study("fewshot-stsb", "few-shot STS-B: Δ = Deep LoRA − vanilla LoRA at n = 16, 64, 256; numerical ranks", (
        Part(tuple((adaptation.vary(base, samples=n, **m), fs) for n in six.samples if n != max(six.samples)
                   for m in methods)),
        Part(tuple((adaptation.vary(base, samples=max(six.samples), **m), fs) for m in methods),
             {"numerical_ranks": True}),
    ))
    rs = _seeds("rank-sweep", seeds)
    ranks = Study("rank-sweep", "rank robustness: vanilla LoRA against narrow Deep LoRA, r = 8…64", (
        Part(tuple((adaptation.vary(base, method=m, rank=r, steps=six.rank_steps, samples=six.rank_samples), rs)
                   for r in six.ranks for m in ("lora", "deep-lora-narrow"))),))
    evals = tuple(range(six.compare_eval_every, six.compare_steps, six.compare_eval_every))
    cs = _seeds("compressed-vs-wide", seeds)
    compare = Study("compressed-vs-wide", "compressed Deep LoRA keeps the wide model's early progress", (
        Part(tuple((adaptation.vary(base, steps=six.compare_steps, samples=six.compare_samples, **m), cs)
                   for m in (compressed, dict(method="deep-lora"), dict(method="deep-lora-narrow"))),
             {"log_every": 1, "eval_at": evals}),))
    seven = ch07_glue.config("full", model=model)
    tasks = list(glue_tasks) if glue_tasks is not None else ch07_glue.tasks_to_run(seven)[0]
    gs = _seeds("glue", seeds)
    glue = Study("glue", "limited-data GLUE: Δ per task at 1024 examples and overall", (
        Part(tuple((adaptation.vary(seven.base, task=t, method=m, steps=seven.steps_for(t), samples=seven.samples), gs)
                   for t in tasks for m in ("lora", seven.deep_method))),))
    return [few, ranks, compare, glue]


def status(study: Study, root: str | Path) -> studies.StudyStatus:
    """Recorded and missing runs of ``study`` under ``root`` (checking every record it reads)."""
    store = studies.Store(Path(root) / study.name)
    parts = [studies.status(p.settings, store) for p in study.parts]
    return studies.StudyStatus(total=sum(p.total for p in parts), recorded=sum(p.recorded for p in parts),
                               other_revisions=sum(p.other_revisions for p in parts),
                               partials=len(store.partials()), cut=tuple(store.cut_runs()))


def estimate_hours(study: Study, root: str | Path) -> tuple[float, int]:
    """How long the study's missing runs would take here, from the recorded runs' wall times.

    Per missing run: the median time per step of the recorded runs (any study under ``root``) of
    the same method and task, times its steps.

    Returns:
      (hours for the missing runs that can be timed so, missing runs of a method and task with no
      recorded run yet).
    """
    recorded = studies.find_records(root) if Path(root).is_dir() else []
    per_step: dict[tuple[str, str], list[float]] = {}
    for r in recorded:
        per_step.setdefault((r.config.method, r.config.task), []).append(r.wall_time_s / r.config.steps)
    store = studies.Store(Path(root) / study.name)
    seconds, untimed = 0.0, 0
    for config, seed in study.runs:
        if store.load(config, seed) is not None:
            continue
        times = per_step.get((config.method, config.task))
        if times:
            seconds += stats.median(times) * config.steps
        else:
            untimed += 1
    return seconds / 3600, untimed


def describe(studies_: Sequence[Study], root: str | Path) -> str:
    """One line per study: runs recorded and left, and the estimated time left."""
    lines = []
    for s in studies_:
        st = status(s, root)
        hours, untimed = estimate_hours(s, root)
        left = f"≈ {hours:.1f} h here" + (f" + {untimed} run(s) of a method not yet timed here" if untimed else "")
        cut = f"; started and not finished (running elsewhere now, or cut: redone first): {', '.join(st.cut)}" if st.cut else ""
        lines.append(f"{s.name}: {st.recorded} of {st.total} runs recorded, time left {left}{cut} — {s.purpose}")
    return "\n".join(lines)


def run(root: str | Path, names: Sequence[str] | None = None, *, progress: bool = True,
        say: Callable[[str], None] = print, **plan_kwargs: Any) -> dict[str, studies.StudyStatus]:
    """Run or resume the reference studies (all, or those named), storing each run as it ends.

    Args:
      root: the reference folder (``reports/reference``).
      names: study names to run (default: every one, in ``plan`` order).
      plan_kwargs: passed to ``plan`` (model, seeds, glue_tasks).

    Returns:
      {study name: its status after the run}.

    Raises:
      ValueError: an unknown study name (the message lists them).
      studies.RecordError: a stored record cannot be trusted (nothing is run then).
    """
    unknown = [n for n in names or () if n not in SEEDS]
    if unknown:
        raise ValueError(f"unknown reference study {unknown}; choose from {', '.join(SEEDS)}")
    chosen = plan(**plan_kwargs)
    out = {}
    for s in chosen:
        if names and s.name not in names:
            continue
        store = studies.Store(Path(root) / s.name)
        for part in s.parts:
            studies.run_study(part.settings, store, progress=progress, say=say, **part.fit_kwargs)
        out[s.name] = status(s, root)
    return out


# The whole profile in the order ``companion reproduce --profile reference`` runs it: the two
# chapters of minutes first, then the Deep LoRA studies, then the two chapters of hours.
ORDER = ("01_theorem", "02_proof_verification", *SEEDS, "03_compressed_trajectories", "04_matrix_completion")


def chapter_status(root: str | Path, notebook: str) -> str:
    """One line: whether the chapter's full run is stored, with its device and wall time."""
    import json

    if not chapter_done(root, notebook):
        text = f"{notebook}: not run yet (the chapter's full profile, forced on this machine)"
        pieces = Path(root) / CHAPTERS_FOLDER / PIECES_FOLDER / notebook
        if notebook == "04_matrix_completion":
            from companion.book.chapters import ch04_completion

            names = ch04_completion.piece_names(ch04_completion.config("full"))
            stored = sum((pieces / f"{n}.json").is_file() for n in names)
            text += f"; {stored} of its {len(names)} sweep and depth runs stored (a run resumes from them)"
        return text
    prov = json.loads((Path(root) / CHAPTERS_FOLDER / "full" / notebook / "provenance.json").read_text())
    return f"{notebook}: stored ({prov['wall_time_s']:.0f} s on {prov['device']}, revision {prov['git_revision'][:7]})"


def chapter_done(root: str | Path, notebook: str) -> bool:
    """Whether the chapter's full-profile run is stored (its provenance.json is written last)."""
    return (Path(root) / CHAPTERS_FOLDER / "full" / notebook / "provenance.json").is_file()


def run_chapters(root: str | Path, notebooks: Sequence[str] = CHAPTERS, *, repository: str | Path | None = None,
                 say: Callable[[str], None] = print, timeout_s: int | None = None) -> list[str]:
    """Execute the chapters not yet stored at the full profile on this machine (forced if there is no
    GPU) and keep their JSON and CSV outputs under ``root/chapters/full/<notebook>/``.

    Args:
      root: the reference folder.
      notebooks: chapters to run (default ``CHAPTERS``); stored ones are skipped.
      repository: the checkout holding notebooks/ (default: found from the working directory).
      timeout_s: per-cell limit (default: the full profile's).

    Returns:
      The chapters run now.

    Raises:
      ValueError: a notebook outside ``CHAPTERS``.
      papermill.PapermillExecutionError: a chapter failed (its claims did not hold, say); nothing of
        it is stored.
    """
    import json
    import shutil
    import tempfile

    from companion.book import notebooks as runner

    unknown = [n for n in notebooks if n not in CHAPTERS]
    if unknown:
        raise ValueError(f"no reference run for {unknown}; the chapters run at full are {', '.join(CHAPTERS)}")
    done = []
    for name in notebooks:
        if chapter_done(root, name):
            continue
        target = Path(root) / CHAPTERS_FOLDER / "full" / name
        if target.exists():
            say(f"chapter {name}: a cut run is there (no provenance.json); running it again")
            shutil.rmtree(target)
        say(f"chapter {name}: running the full profile")
        extra = {}
        pieces = Path(root).resolve() / CHAPTERS_FOLDER / PIECES_FOLDER / name
        if "pieces_dir" in runner.check_parameters(runner.repository_root(repository) / "notebooks" / f"{name}.ipynb"):
            extra["pieces_dir"] = str(pieces)
            if pieces.is_dir():
                say(f"chapter {name}: resuming from {len(list(pieces.glob('*.json')))} stored pieces in {pieces}")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                run = runner.execute(name, "full", root=repository, results_dir=tmp, executed_dir=tmp, force=True,
                                     timeout_s=timeout_s, extra=extra)
            except Exception as e:  # a failed check or a cut cell: keep what the run had written, then stop
                failed = Path(root) / CHAPTERS_FOLDER / FAILED_FOLDER / name
                if failed.exists():
                    shutil.rmtree(failed)
                failed.mkdir(parents=True)
                for pattern in KEPT:
                    for f in (Path(tmp) / "full" / name).glob(pattern):
                        if f.stat().st_size <= MAX_CSV_BYTES:
                            shutil.copy2(f, failed / f.name)
                (failed / "error.txt").write_text("\n".join(str(e).strip().splitlines()[-40:]) + "\n")
                say(f"chapter {name}: failed; its outputs so far and the error are in {failed}")
                raise
            staging = target.with_name(name + ".partial")
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
            omitted = {}
            for pattern in KEPT:
                for f in run.results.glob(pattern):
                    if f.suffix == ".csv" and f.stat().st_size > MAX_CSV_BYTES:
                        omitted[f.name] = f.stat().st_size
                    elif f.name != "provenance.json":
                        shutil.copy2(f, staging / f.name)
            if omitted:
                (staging / "omitted.json").write_text(json.dumps({"max_csv_bytes": MAX_CSV_BYTES, "left_out": omitted},
                                                                 indent=1) + "\n")
            shutil.copy2(run.results / "provenance.json", staging / "provenance.json")
            staging.rename(target)
        if extra and pieces.is_dir():
            shutil.rmtree(pieces)
        say(f"chapter {name}: stored in {target} ({run.wall_time_s:.0f} s)")
        done.append(name)
    return done


__all__ = ["CHAPTERS", "ORDER", "chapter_done", "chapter_status", "run_chapters", "FOLDER", "MODEL", "Part", "SEEDS", "Study", "describe", "estimate_hours", "plan", "run", "status"]
