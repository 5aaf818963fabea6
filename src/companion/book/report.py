"""The reproduction report: the paper's claims judged from stored study records.

Reads the records of ``companion.book.studies`` (one JSON file per finished run, any folder
depth) and gives one row per claim of the paper's Deep LoRA half: the paper's number and where it
is from, ours with the seeds, backbone and device that made it, and a verdict from the rule fixed
before any run was looked at (``statistics.paired_bootstrap`` and ``statistics.verdict``). A
comparison uses only runs that learned (``learned``: fitted their training data and ended above the
untrained score); a claim whose pairs did not all learn says how many did. A claim without records keeps its row, marked as not run,
so the table shows what is missing as plainly as what was found.

Judged from paired records (same seed, same setting but the method):
- few-shot STS-B, Δ = Deep LoRA − vanilla LoRA at n = 16, 64, 256 (arXiv:2406.04112, few-shot
  STS-B), for compressed and for wide Deep LoRA;
- limited-data GLUE, Δ per task at 1024 examples and overall (arXiv:2406.04112, limited-data GLUE).
Listed, judged once records exist: rank robustness, numerical ranks, compressed against wide early
progress. ``chapter_claims`` adds the claims each chapter checked on its own run (chapters 1–4
and, at the full profile, 5–7) from that run's ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from companion.book import statistics
from companion.book.chapters import ch07_glue as glue_chapter
from companion.book.chapters.ch06_fewshot import PAPER as FEWSHOT_PAPER
from companion.book.claims import PaperValue
from companion.book.studies import Record, find_records

VANILLA = "lora"
DEEP = ("deep-lora-compressed", "deep-lora")


@dataclass(frozen=True)
class ClaimRow:
    """One claim as judged from the records.

    Attributes:
      claim: what the paper says, in a few words.
      paper: the paper's value and its source.
      ours: our number, e.g. "Δ −0.107, 95 % [−0.134, −0.080]".
      seeds: paired seeds used (pairs whose two runs learned) and how many there were, e.g. "3 of 3".
      backbone: the backbone(s) of the runs (``RunResult.backbone``).
      device: where they ran.
      verdict: "reproduced", "not reproduced", "inconclusive", or why there is none.
      values: the per-seed numbers behind ``ours`` (for tests and figures).
      interval: their 95 % paired-bootstrap interval (None with fewer than 2).
      setting: (task, samples, Deep LoRA method) of the compared runs (the overall GLUE row: ("glue",
        1024, "deep-lora")); () for a claim without records.
    """

    claim: str
    paper: PaperValue
    ours: str
    seeds: str
    backbone: str
    device: str
    verdict: str
    values: tuple[float, ...] = ()
    interval: tuple[float, float] | None = None  # the 95 % paired-bootstrap interval behind the verdict
    setting: tuple = ()  # what the row compares, e.g. ("stsb", 16, "deep-lora-compressed"); () if pending


def _pair_key(record: Record) -> tuple:
    """What two runs must share to be a pair (everything but the method and its own settings)."""
    c = record.config
    return (c.task, c.samples, c.steps, c.model, c.num_layers, c.max_seq_length, c.batch_size, c.lr,
            c.adapter.targets, c.adapter.rank, c.eval_examples, record.seed)


NOT_RUN = "not run yet: no records"


def _not_run(claim: str, paper: PaperValue, verdict: str = NOT_RUN) -> ClaimRow:
    return ClaimRow(claim=claim, paper=paper, ours="—", seeds="0", backbone="—", device="—", verdict=verdict)


def _pairs(records: Sequence[Record], task: str, samples: int, deep: str) -> list[tuple[Record, Record]]:
    """(vanilla, deep) records of one seed and one setting, ordered by seed."""
    chosen = [r for r in records if r.config.task == task and r.config.samples == samples]
    vanilla = {_pair_key(r): r for r in chosen if r.config.method == VANILLA}
    pairs = [(vanilla[_pair_key(r)], r) for r in chosen if r.config.method == deep and _pair_key(r) in vanilla]
    return sorted(pairs, key=lambda p: p[1].seed)


def learned(record: Record) -> bool:
    """A run is a result only if it learned: it fitted its training data (``RunResult.fitted``) and
    its validation score ended above the untrained model's (``initial_value``)."""
    return bool(record.result.fitted) and record.result.value > record.result.initial_value


def devices(names: Iterable[str]) -> str:
    """The distinct devices of some records, for a table cell: "cpu (cpu)", the label an early
    revision wrote for a plain CPU, reads as "cpu" (the records themselves are left as stored)."""
    return "; ".join(sorted({"cpu" if name == "cpu (cpu)" else name for name in names}))


def _judged(claim: str, paper: PaperValue, pairs: Sequence[tuple[Record, Record]], setting: tuple = ()) -> ClaimRow:
    """A claim row from paired runs: Δ over the seeds whose two runs learned, its interval, verdict."""
    fitted = [(v, d) for v, d in pairs if learned(v) and learned(d)]
    deltas = tuple(d.result.value - v.result.value for v, d in fitted)
    interval = None
    if len(deltas) >= 2:
        low, high = interval = statistics.paired_bootstrap(deltas)
        ours = f"Δ {np.mean(deltas):+.3f}, 95 % [{low:+.3f}, {high:+.3f}]"
        judged = statistics.verdict((low, high), float(paper.value))
    else:
        ours = f"Δ {deltas[0]:+.3f}" if deltas else "no pair that learned"
        judged = "inconclusive: fewer than 2 pairs that learned"
    runs = [r for p in pairs for r in p]
    return ClaimRow(claim=claim, paper=paper, ours=ours, seeds=f"{len(fitted)} of {len(pairs)}",
                    backbone="; ".join(sorted({r.result.backbone for r in runs})),
                    device=devices(r.device for r in runs), verdict=judged, values=deltas,
                    interval=interval, setting=setting)


def fewshot_rows(records: Sequence[Record], *, missing: bool = False) -> list[ClaimRow]:
    """Few-shot STS-B: for each n of the paper and each Deep LoRA variant, the paired Δ over seeds
    whose two runs both fitted, its 95 % paired-bootstrap interval and verdict.

    Args:
      records: study records; only STS-B ones with a sample count are read.
      missing: also give a "not run yet" row for each (n, variant) without paired records.

    Returns:
      Rows ordered by n, compressed before wide.
    """
    curve = FEWSHOT_PAPER["curve"]
    rows = []
    for n in sorted(curve["lora"]):
        paper_delta = curve["deep"][n].value - curve["lora"][n].value
        paper = PaperValue(round(paper_delta, 3), curve["deep"][n].source)
        for deep in DEEP:
            # The paper's few-shot Deep LoRA is the wide one (arXiv:2406.04112: width min(m, n)); its
            # compressed form is meant to keep the wide one's results, so it is judged on the same Δ.
            claim = (f"few-shot STS-B n = {n}: wide Deep LoRA above vanilla LoRA" if deep == "deep-lora" else
                     f"few-shot STS-B n = {n}: compressed Deep LoRA above vanilla LoRA (the paper's Δ is "
                     "wide Deep LoRA's, which compression is meant to keep)")
            pairs = _pairs(records, "stsb", n, deep)
            if pairs:
                rows.append(_judged(claim, paper, pairs, ("stsb", n, deep)))
            elif missing:
                rows.append(_not_run(claim, paper))
    return rows


GLUE_SAMPLES = 1024  # arXiv:2406.04112, limited-data GLUE: 1024 examples per task


def glue_rows(records: Sequence[Record], *, missing: bool = False,
              offline_tasks: Sequence[str] | None = None) -> list[ClaimRow]:
    """Limited-data GLUE: per task the paired Δ = wide Deep LoRA − vanilla LoRA at 1024 examples,
    then the overall Δ (per seed the mean of the tasks' Δ, over the tasks every seed has).

    Args:
      records: study records; only those with 1024 examples are read.
      missing: also give rows for tasks without records; a task outside ``offline_tasks`` says
        that it cannot be run offline instead of "not run yet".
      offline_tasks: the tasks whose data exists here (default: every task).
    """
    offline = set(glue_chapter.PAPER if offline_tasks is None else offline_tasks)
    rows, per_task = [], {}
    for task, paper in glue_chapter.PAPER.items():
        claim = f"limited-data GLUE {task.upper()}: Deep LoRA above vanilla LoRA"
        pairs = _pairs(records, task, GLUE_SAMPLES, "deep-lora")
        if pairs:
            rows.append(_judged(claim, paper, pairs, (task, GLUE_SAMPLES, "deep-lora")))
            per_task[task] = {d.seed: (v, d) for v, d in pairs}
        elif missing:
            rows.append(_not_run(claim, paper, NOT_RUN if task in offline else
                                 "cannot be compared here: no offline data for this task"))
    if per_task:
        seeds = sorted(set.intersection(*(set(p) for p in per_task.values())))
        # One pseudo-pair per seed: the mean over tasks of that seed's scores (fitted only when every
        # task's two runs fitted), so Δ is the per-seed mean of the tasks' Δ.
        overall = [(_mean_record([per_task[t][s][0] for t in per_task]), _mean_record([per_task[t][s][1] for t in per_task]))
                   for s in seeds]
        row = _judged(f"limited-data GLUE overall ({len(per_task)} of {len(glue_chapter.PAPER)} tasks): "
                      "Deep LoRA above vanilla LoRA", glue_chapter.PAPER_OVERALL, overall, ("glue", GLUE_SAMPLES, "deep-lora"))
        rows.append(row)
    elif missing:
        rows.append(_not_run("limited-data GLUE overall: Deep LoRA above vanilla LoRA", glue_chapter.PAPER_OVERALL))
    return rows


def _mean_record(runs: Sequence[Record]) -> Record:
    """A record whose score is the mean of ``runs``' and which fitted when all of them did."""
    first = runs[0]
    result = dataclasses.replace(first.result, value=float(np.mean([r.result.value for r in runs])),
                                 fitted=all(r.result.fitted for r in runs))
    return dataclasses.replace(first, result=result)


# Claims of the paper's Deep LoRA half that no study of this companion has recorded yet; each keeps
# its row (with the paper's number) so the report shows it as missing.
PENDING = (
    ("rank robustness: vanilla LoRA loses score from r = 8 to r = 64, narrow Deep LoRA does not",
     PaperValue(f"{FEWSHOT_PAPER['ranks']['lora'][64].value - FEWSHOT_PAPER['ranks']['lora'][8].value:+.3f} vs "
                f"{FEWSHOT_PAPER['ranks']['deep'][64].value - FEWSHOT_PAPER['ranks']['deep'][8].value:+.3f}",
                FEWSHOT_PAPER["ranks"]["lora"][8].source)),
    ("numerical ranks: most Deep LoRA updates have rank 0, vanilla LoRA's fill rank 8",
     FEWSHOT_PAPER["numerical_rank"]["deep"]),
    ("compressed Deep LoRA keeps the wide model's early progress (step 20), random narrow does not",
     PaperValue(f"{FEWSHOT_PAPER['compare']['compressed'][20].value:.3f} vs wide "
                f"{FEWSHOT_PAPER['compare']['wide'][20].value:.3f}, random narrow "
                f"{FEWSHOT_PAPER['compare']['random-narrow'][20].value:.3f}",
                FEWSHOT_PAPER["compare"]["wide"][20].source)),
)


def claims(records: Sequence[Record], *, missing: bool = False,
           offline_tasks: Sequence[str] | None = None) -> list[ClaimRow]:
    """Every claim the records can judge: few-shot STS-B, then limited-data GLUE; with
    ``missing``, also a row for every claim without records (``PENDING`` among them)."""
    rows = fewshot_rows(records, missing=missing) + glue_rows(records, missing=missing, offline_tasks=offline_tasks)
    if missing:
        rows += [_not_run(claim, paper) for claim, paper in PENDING]
    return rows


@dataclass(frozen=True)
class ChapterClaim:
    """One claim a chapter checked on its own run (``check_claims`` of its module on its metrics).

    Attributes:
      notebook: the chapter's notebook, e.g. "01_theorem".
      statement: the claim with its margin; detail: the numbers compared.
      holds: whether it held on that run.
      profile, device, revision: where the run came from (its provenance.json).
    """

    notebook: str
    statement: str
    detail: str
    holds: bool
    profile: str
    device: str
    revision: str


def chapter_claims(results_dir: str | Path, profile: str, notebooks: Sequence[str]) -> tuple[list[ChapterClaim], list[str]]:
    """The claims each chapter checked on its last run at ``profile``.

    Args:
      results_dir: the chapters' results root (``<results_dir>/<profile>/<notebook>/``).
      profile: "smoke" or "full".
      notebooks: the chapters to read, e.g. ``notebooks.NOTEBOOKS`` without this report.

    Returns:
      (claims, notebooks without a finished run there). A chapter whose run did not finish (a
      failed claim stops its notebook before metrics.json is written) is among the latter.
    """
    import importlib
    import json

    from companion.book import claims as claims_module
    from companion.book.chapters import CHAPTERS

    out, absent = [], []
    for name in notebooks:
        folder = Path(results_dir) / profile / name
        if not (folder / "metrics.json").exists() or not (folder / "provenance.json").exists():
            absent.append(name)
            continue
        metrics = json.loads((folder / "metrics.json").read_text())
        provenance = json.loads((folder / "provenance.json").read_text())
        chapter = importlib.import_module(f"companion.book.chapters.{CHAPTERS[name]}")
        try:
            checked = chapter.check_claims(metrics, profile)
        except claims_module.ClaimsFailed as failed:
            checked = [claims_module.Claim(str(failed).splitlines()[0], False, "")]
        out += [ChapterClaim(name, c.statement, c.detail, c.holds, provenance["profile"], provenance["device"],
                             provenance["git_revision"]) for c in checked]
    return out, absent


def markdown(rows: Sequence[ClaimRow]) -> str:
    """The claims table in Markdown (MyST renders it as a table)."""
    if not rows:
        return "No claim can be judged from these records (no paired runs found)."
    out = ["| claim | paper | source | ours | pairs that learned | backbone | device | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.claim} | {r.paper.text()} | {r.paper.source} | {r.ours} | {r.seeds} | {r.backbone} "
                   f"| {r.device} | {r.verdict} |")
    return "\n".join(out)


def report(folder: str | Path, *, missing: bool = False) -> str:
    """The claims table of every record under ``folder`` (``companion report DIR``); with
    ``missing``, claims without records too.

    Raises:
      FileNotFoundError: ``folder`` is not a folder.
      RecordError: a record under it cannot be trusted.
    """
    return markdown(claims(find_records(folder), missing=missing))


__all__ = ["ChapterClaim", "ClaimRow", "PENDING", "chapter_claims", "claims", "fewshot_rows", "glue_rows", "learned", "markdown", "report"]
