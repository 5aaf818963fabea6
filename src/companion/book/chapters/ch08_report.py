"""Chapter 8: the reproduction report — every claim of the paper (arXiv:2406.04112 and its
precursor on invariant subspaces of deep linear networks), one row each, judged from what is
stored: the study records under ``reports/`` for the Deep LoRA half (committed, made at real
scale: the paper's protocol and step counts), and each chapter's own run of this profile for the
claims it checks (``results/<profile>/<notebook>/``).

Nothing is trained here: the chapter reads JSON, so it runs in seconds and CI renders it on every
change. Its numbers are the records' numbers (tests recompute them from the files); it has no
smoke baseline of its own, since committing a new record changes it by design (``BASELINE``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from companion.book import claims, reference, report
from companion.book.chapters import ch06_fewshot, ch07_glue
from companion.book.profiles import check_profile_name
from companion.book.studies import RECHECK_LOG, RECHECK_TOLERANCE, Record, read_rechecks, records_by_folder

NOTEBOOK = "08_reproduction_report"
PRECISION = "float64"  # arithmetic on stored numbers only
BASELINE = False  # no baselines/smoke copy: its numbers are the committed records' (see the module docstring)
# The chapters whose own claims the report gathers (every notebook before this one).
CHAPTER_NOTEBOOKS = ("01_theorem", "02_proof_verification", "03_compressed_trajectories", "04_matrix_completion",
                     "05_invariant_subspaces_bert", "06_fewshot_stsb", "07_glue_limited_data")
LANGUAGE = ("05_invariant_subspaces_bert", "06_fewshot_stsb", "07_glue_limited_data")
PAPER = {"fewshot": ch06_fewshot.PAPER["curve"], "claims": "every row of the claims table carries its own"}


@dataclass(frozen=True)
class Config:
    """Where the report reads from."""

    profile: str  # which chapter runs to read: results_dir/profile/<notebook>/
    reports_dir: str  # the study records (any depth), e.g. "../reports"
    results_dir: str  # the chapters' results root


def config(profile: str, *, reports_dir: str = "../reports", results_dir: str = "results") -> Config:
    """The report's sources; ``profile`` only picks which chapter runs are read."""
    return Config(profile=check_profile_name(profile), reports_dir=str(reports_dir), results_dir=str(results_dir))


@dataclass(frozen=True)
class Result:
    """What the report found.

    Attributes:
      records: every study record under ``reports_dir``.
      studies: one dict per folder of records: folder, runs, fitted, backbones, devices,
        revisions, hours (the runs' summed wall time).
      rows: the claims table (``report.claims`` with the missing claims).
      chapter_rows: the claims each chapter checked on its run; absent_chapters: chapters
        without a finished run at this profile.
      reference_rows: the claims chapters 1–4 checked on their full-profile runs stored under
        ``reports_dir/reference/chapters/full/`` (the reference profile); reference_absent: those
        not stored yet; reference_paper: the paper's numbers beside those runs' (``report.paper_comparison``).
      fewshot_runs, fewshot_deltas: the few-shot figure's numbers (``plots.report.fewshot_records``).
      fit_runs: every study record's fit (``plots.report.fit_check``), one dict each: study (the
        name of its folder), method, rank, task, samples, seed, first_loss, last_loss, fitted.
      offline_tasks: GLUE tasks with data here (None: no data folder set).
      compare_runs: the compressed-vs-wide records (``report.compare_records``), one dict each:
        method, seed, curve [(step, Pearson)], loss [(step, training loss)], learned.
      rank_runs: the rank sweep's runs (``report.rank_records``), one dict each: method, rank, seed,
        value, initial_value, fitted, learned.
      numerical_ranks: {method: [numerical rank of every adapted layer, pooled over seeds]} of the
        few-shot runs at n = 256 (``report.numerical_rank_records``); rank_seeds: {method: seeds}.
      reruns: the runs stored by two studies, trained twice (``report.reruns``), then the rechecks
        logged by ``companion recheck --log`` in any ``rechecks.jsonl`` under ``reports_dir``.
      glue_runs: the limited-data GLUE records (1024 examples), one dict each: task, method, seed,
        metric, value, initial_value, learned (``plots.report.glue_scores``).
      glue_floors: {task: score of always answering the majority class of the validation examples
        the runs were scored on} for the classification tasks with records and data here
        (``report.glue_floors``).
    """

    config: Config
    records: list[Record]
    studies: list[dict]
    rows: list[report.ClaimRow]
    chapter_rows: list[report.ChapterClaim]
    absent_chapters: list[str]
    reference_rows: list[report.ChapterClaim]
    reference_absent: list[str]
    reference_paper: list[report.PaperRow]
    fewshot_runs: list[dict]
    fewshot_deltas: list[dict]
    fit_runs: list[dict]
    offline_tasks: list[str] | None
    compare_runs: list[dict]
    rank_runs: list[dict]
    numerical_ranks: dict[str, list[int]]
    rank_seeds: dict[str, int]
    reruns: list[report.Rerun]
    glue_runs: list[dict]
    glue_floors: dict[str, float]
    wall_time_s: float


def _offline_tasks() -> list[str] | None:
    from companion.adapt import glue

    try:
        return glue.available_tasks()
    except FileNotFoundError:  # no data folder set: every task counts as not run yet
        return None


def _studies(by_folder: dict[str, list[Record]]) -> list[dict]:
    out = []
    for folder, runs in by_folder.items():
        out.append({"folder": folder, "runs": len(runs), "fitted": sum(r.result.fitted for r in runs),
                    "backbones": sorted({r.result.backbone for r in runs}),
                    "devices": sorted({_device(r.device) for r in runs}),
                    "revisions": sorted({_revision(r.revision) for r in runs}),
                    "hours": sum(r.wall_time_s for r in runs) / 3600})
    return out


def run(cfg: Config) -> Result:
    """Read every record and chapter run, and judge the claims.

    Raises:
      studies.RecordError: a record under ``reports_dir`` cannot be trusted (the message says which).
      FileNotFoundError: ``reports_dir`` is not a folder.
    """
    start = time.perf_counter()
    by_folder = records_by_folder(cfg.reports_dir)
    records = [r for runs in by_folder.values() for r in runs]
    offline = _offline_tasks()
    glue_stored = sorted((r for r in records if r.config.task in ch07_glue.PAPER and r.config.samples == report.GLUE_SAMPLES),
                         key=lambda r: (r.config.task, r.config.method, r.seed))
    floors = report.glue_floors(glue_stored) if offline is not None else {}
    rows = report.claims(records, missing=True, offline_tasks=offline, floors=floors)
    chapter_rows, absent = report.chapter_claims(cfg.results_dir, cfg.profile, CHAPTER_NOTEBOOKS)
    stored = Path(cfg.reports_dir) / "reference" / reference.CHAPTERS_FOLDER
    reference_rows, reference_absent = report.chapter_claims(stored, "full", reference.CHAPTERS)
    reference_paper = report.paper_comparison(stored, "full", reference.CHAPTERS)
    stsb = report.fewshot_records(records)  # the 500-step curve's runs, not the 200-step studies
    runs = [{"method": r.config.method, "samples": r.config.samples, "seed": r.seed, "value": r.result.value,
             "fitted": bool(r.result.fitted), "first_loss": r.result.first_loss, "last_loss": r.result.last_loss}
            for r in sorted(stsb, key=lambda r: (r.config.method, r.config.samples, r.seed))]
    deltas = []
    for row in rows:  # the judged few-shot rows, with the interval their verdict used
        if not row.setting or row.setting[0] != "stsb" or row.setting[2] not in report.DEEP:
            continue  # not a few-shot Δ (GLUE, the rank sweep, the compressed-vs-wide comparison)
        _, n, method = row.setting
        values = list(row.values)
        low, high = row.interval or (None, None)
        deltas.append({"method": method, "samples": n, "values": values,
                       "mean": float(np.mean(values)) if values else float("nan"), "low": low, "high": high,
                       "verdict": row.verdict})
    fits = [{"study": Path(folder).name, "method": r.config.method, "rank": r.config.adapter.rank,
             "task": r.config.task, "samples": r.config.samples, "seed": r.seed, "first_loss": r.result.first_loss,
             "last_loss": r.result.last_loss, "fitted": bool(r.result.fitted)}
            for folder, stored in by_folder.items()
            for r in sorted(stored, key=lambda r: (r.config.task, r.config.method, r.config.adapter.rank,
                                                      r.config.samples or 0, r.seed))]
    compare = [{"method": r.config.method, "seed": r.seed, "curve": [list(p) for p in r.result.curve],
                "loss": [list(p) for p in r.result.train_loss], "learned": report.learned(r)}
               for r in sorted(report.compare_records(records), key=lambda r: (r.config.method, r.seed))]
    ranked = [{"method": r.config.method, "rank": r.config.adapter.rank, "seed": r.seed, "value": r.result.value,
               "initial_value": r.result.initial_value, "fitted": bool(r.result.fitted), "learned": report.learned(r)}
              for r in report.rank_records(records)]
    with_ranks = report.numerical_rank_records(records)
    rechecks = [x for log in sorted(Path(cfg.reports_dir).rglob(RECHECK_LOG)) for x in report.rechecked(read_rechecks(log))]
    numerical: dict[str, list[int]] = {}
    for r in sorted(with_ranks, key=lambda r: (r.config.method, r.seed)):
        numerical.setdefault(r.config.method, []).extend(int(x) for x in r.result.numerical_ranks.values())
    return Result(cfg, records, _studies(by_folder), rows, chapter_rows, absent, reference_rows, reference_absent,
                  reference_paper,
                  runs, deltas, fits, offline, compare, ranked, numerical, dict(Counter(r.config.method for r in with_ranks)),
                  report.reruns(by_folder) + rechecks,
                  [{"task": r.config.task, "method": r.config.method, "seed": r.seed, "metric": r.result.metric,
                    "value": r.result.value, "initial_value": r.result.initial_value, "learned": report.learned(r)}
                   for r in glue_stored], floors, time.perf_counter() - start)


def summary(result: Result) -> dict[str, float]:
    """Flat metrics: counts of records and verdicts, and every judged few-shot Δ (mean, interval,
    pairs) under ``fewshot_<variant>_n<n>_*``."""
    verdicts = Counter(r.verdict for r in result.rows)
    m: dict[str, float] = {
        "records": len(result.records), "records_fitted": sum(r.result.fitted for r in result.records),
        "claims": len(result.rows), "claims_judged": sum(r.seeds != "0" for r in result.rows),
        "reproduced": verdicts["reproduced"], "not_reproduced": verdicts["not reproduced"],
        "inconclusive": sum(v for k, v in verdicts.items() if k.startswith("inconclusive")),
        "chapter_claims": len(result.chapter_rows), "chapter_claims_holding": sum(c.holds for c in result.chapter_rows),
        "chapters_absent": len(result.absent_chapters),
        "reference_chapter_claims": len(result.reference_rows),
        "reference_chapter_claims_holding": sum(c.holds for c in result.reference_rows),
        "reference_chapters_stored": len(reference.CHAPTERS) - len(result.reference_absent),
        "study_hours": sum(s["hours"] for s in result.studies),
        "reruns": len(result.reruns), "reruns_agreeing": sum(r.agrees for r in result.reruns),
        "rerun_max_difference": max((r.difference for r in result.reruns), default=0.0),
    }
    for d in result.fewshot_deltas:
        key = f"fewshot_{'compressed' if d['method'] == 'deep-lora-compressed' else 'wide'}_n{d['samples']}"
        m[f"{key}_delta_mean"] = d["mean"]
        m[f"{key}_pairs"] = len(d["values"])
        if d["low"] is not None:
            m[f"{key}_low"], m[f"{key}_high"] = d["low"], d["high"]
    return m


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _revision(revision: str) -> str:
    """A commit as the table shows it: 7 hex digits, "+dirty" kept."""
    commit, _, dirty = revision.partition("+")
    return commit[:7] + (f"+{dirty}" if dirty else "")


def _device(device: str) -> str:
    """'cpu (cpu)' (a platform and a device kind that say the same) as 'cpu'."""
    name, _, kind = device.partition(" (")
    return name if kind.rstrip(")") == name else device


def paper_fewshot() -> tuple[dict, dict]:
    """The paper's few-shot means {"lora" | "deep": {n: mean}} and its Δ {n: deep − lora}."""
    means = ch06_fewshot.paper_means("curve")
    return means, {n: means["deep"][n] - means["lora"][n] for n in means["lora"]}


def glue_deltas(result: Result) -> dict[str, list[float]]:
    """Per GLUE task with a judged row, the per-seed Δ = wide Deep LoRA − vanilla LoRA behind it."""
    return {r.setting[0]: list(r.values) for r in result.rows
            if r.setting and r.setting[0] in ch07_glue.PAPER and r.setting[1:] == (report.GLUE_SAMPLES, "deep-lora")}


def paper_glue() -> dict[str, float]:
    """The paper's mean Δ per GLUE task (arXiv:2406.04112, limited-data GLUE; bert-base-cased, 10 seeds)."""
    return {t: float(p.value) for t, p in ch07_glue.PAPER.items()}


def paper_ranks() -> dict:
    """The paper's rank-sweep means {"lora" | "deep": {r: Pearson}} (5 seeds, bert-base-cased)."""
    return ch06_fewshot.paper_means("ranks")


def paper_compare() -> dict:
    """The paper's compressed-vs-wide scores {variant: {step: Pearson}} (seed 0, bert-base-cased)."""
    return ch06_fewshot.paper_means("compare")


def table(result: Result, stamp: str) -> str:
    """The claims table and the chapters' own checks, in Markdown."""
    backbones = sorted({b for s in result.studies for b in s["backbones"]})
    devices = sorted({d for s in result.studies for d in s["devices"]})
    lines = ["| claim | paper | ours | pairs that learned | verdict |", "|---|---|---|---|---|"]
    for r in result.rows:
        lines.append(f"| {_cell(r.claim)} | {_cell(r.paper.text())} | {_cell(r.ours)} | {r.seeds} | **{r.verdict}** |")
    sources = sorted({r.paper.source for r in result.rows})
    study_lines = "\n".join(
        f"| `{s['folder']}` | {s['runs']} ({s['fitted']} fitted) | {', '.join(s['devices'])} | "
        f"{', '.join(s['revisions'])} | {s['hours']:.1f} h |" for s in result.studies) or "| — | 0 | — | — | — |"
    chapter_lines = []
    for c in result.chapter_rows:
        if c.notebook in LANGUAGE and c.profile == "smoke":
            verdict = "code check only (smoke size: not a result)"
        else:
            verdict = ("holds" if c.holds else "does not hold") + f" ({c.profile} profile)"
        chapter_lines.append(f"| {c.notebook} | {_cell(c.statement)} | {_cell(c.detail)} | {verdict} |")
    if not chapter_lines:
        chapter_lines.append("| — | no chapter run read | — | — |")
    paper_lines = [f"| {p.notebook} | {_cell(p.quantity)} | {_cell(p.paper.text())} ({_cell(p.paper.source)}) | "
                   f"{_cell(p.ours)} ({_device(p.device)}) |" for p in result.reference_paper] \
        or ["| — | no chapter stored yet | — | — |"]
    reference_lines = [f"| {c.notebook} | {_cell(c.statement)} | {_cell(c.detail)} | "
                       f"{'holds' if c.holds else 'does not hold'} (full profile, {_device(c.device)}) |"
                       for c in result.reference_rows] or ["| — | no chapter stored yet | — | — |"]
    reference_absent = (f"\n\nNot stored yet (`companion reproduce --profile reference` runs them): "
                        + ", ".join(result.reference_absent) + "." if result.reference_absent else "")
    rerun_lines = [f"| {_cell(r.label)} | " + "; ".join(f"`{f}` {_revision(v)}: {x:.4f}" for f, v, _, x in r.copies)
                   + f" | {'0 (the same float)' if r.difference == 0 else f'{r.difference:.4f}'} | "
                   + f"{'within' if r.agrees else '**outside**'} {RECHECK_TOLERANCE:g} |"
                   for r in result.reruns] or ["| — | no run is stored twice yet | — | — |"]
    absent = (f"\n\nNo finished run at the {result.config.profile} profile under `{result.config.results_dir}` for: "
              + ", ".join(result.absent_chapters) + "." if result.absent_chapters else "")
    return f"""**Where the Deep LoRA numbers come from** ({len(result.records)} records under `{result.config.reports_dir}`):

| study | runs | device | code revisions | run time |
|---|---|---|---|---|
{study_lines}

**Backbone of every record:** {'; '.join(backbones) or '—'}. Devices: {', '.join(devices) or '—'}.

| claim | paper | ours | pairs that learned | verdict |
|---|---|---|---|---|
""" + "\n".join(lines[2:]) + f"""

Verdicts follow one rule, fixed before any run was looked at: the 95 % paired-bootstrap interval
of the mean Δ over seeds (10 000 resamples) lies wholly on the paper's side of 0 — reproduced —,
wholly on the other side — not reproduced —, or straddles 0 — inconclusive. Only seeds whose two
runs both learned enter a Δ: each fitted its training data and ended above the untrained score.

Paper sources: {'; '.join(sources)}.

**Runs trained twice.** Two studies share some settings (the rank sweep's narrow Deep LoRA at
r = 8 is the comparison's random-narrow run), so those runs were trained from scratch twice, in
separate processes and often at separate code revisions; `companion recheck --log` trains any one
record again and logs both scores. Each pair should agree to within {RECHECK_TOLERANCE:g}.

| run | validation score of each copy (study, revision) | largest difference | agreement |
|---|---|---|---|
""" + "\n".join(rerun_lines) + f"""

**The linear half at the paper's scale** (the reference profile: chapters 1–4 at their full settings, run on a
CPU and stored under `{result.config.reports_dir}/reference/chapters/full/`). The paper's numbers beside ours
(its wall times are a GPU's; ours a CPU's, so only the ratio is compared):

| chapter | quantity | paper (source) | ours (device) |
|---|---|---|---|
""" + "\n".join(paper_lines) + f"""

The claims each stored chapter checked on its run, with their margins:

| chapter | claim | numbers | verdict |
|---|---|---|---|
""" + "\n".join(reference_lines) + reference_absent + f"""

**The chapters' own checks** ({stamp}): the claims each chapter verified on its run, with their margins.

| chapter | claim | numbers | verdict |
|---|---|---|---|
""" + "\n".join(chapter_lines) + absent + "\n"


def figure_stamp(result: Result, stamp: str) -> str:
    """The line a report figure carries: where its records were made, then where the page was
    rendered (``stamp``); the records' numbers do not depend on the page's profile."""
    devices = sorted({d for s in result.studies for d in s["devices"]})
    return (f"{len(result.records)} records under {result.config.reports_dir} (made on {', '.join(devices) or '—'}) "
            f"· page rendered at {stamp}")


def check_claims(metrics: Mapping[str, float], profile: str) -> list[claims.Claim]:
    """The report's own integrity (the paper's claims are judged in the table, where "not
    reproduced" is an answer, not a failure): records were found and all judged rows counted,
    every few-shot interval contains its mean, every chapter check read held, and every run
    stored by two studies has the same score in both (``report.reruns``).

    Raises:
      claims.ClaimsFailed: one of these does not hold.
    """
    check_profile_name(profile)
    m = metrics
    claims.require(m, "records", "claims", "claims_judged", "reproduced", "not_reproduced", "inconclusive",
                   "chapter_claims", "chapter_claims_holding", "reference_chapter_claims",
                   "reference_chapter_claims_holding")
    intervals = sorted({k.rsplit("_", 1)[0] for k in m if k.startswith("fewshot_") and k.endswith("_low")})
    return claims.verify([
        claims.claim("the report found study records", m["records"] > 0, f"{m['records']} records"),
        claims.claim("every judged claim has a verdict", m["reproduced"] + m["not_reproduced"] + m["inconclusive"]
                     == m["claims_judged"], f"{m['claims_judged']} judged"),
        claims.claim("every few-shot interval contains its mean Δ",
                     all(m[f"{k}_low"] <= m[f"{k}_delta_mean"] <= m[f"{k}_high"] for k in intervals),
                     f"{len(intervals)} intervals"),
        claims.claim("every chapter check read from a finished run held",
                     m["chapter_claims_holding"] == m["chapter_claims"], f"{m['chapter_claims']} checks"),
        claims.claim("every stored full-profile chapter check held",
                     m["reference_chapter_claims_holding"] == m["reference_chapter_claims"],
                     f"{m['reference_chapter_claims']} checks"),
        claims.claim(f"every run trained twice gives the same score to within {RECHECK_TOLERANCE:g}",
                     m.get("reruns_agreeing", 0) == m.get("reruns", 0),
                     f"runs trained twice: {int(m.get('reruns', 0))}, largest difference {m.get('rerun_max_difference', 0.0):.4f}"),
    ])
