"""The reproduction report: the paper's claims judged from stored study records.

Reads the records of ``companion.book.studies`` (one JSON file per finished run, any folder
depth) and gives one row per claim it can judge: the paper's number and where it is from, ours
with the seeds, backbone and device that made it, and a verdict from the rule fixed before any
run was looked at (``statistics.paired_bootstrap`` and ``statistics.verdict``). A comparison uses
only runs that fitted their training data (``RunResult.fitted``); a claim whose pairs did not all
fit says how many did.

Claims judged so far: the few-shot STS-B gap Δ = Deep LoRA − vanilla LoRA at each n the paper
reports (arXiv:2406.04112, few-shot STS-B: n = 16, 64, 256), for compressed and for wide Deep LoRA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from companion.book import statistics
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
      seeds: paired seeds used (fitted pairs) and how many there were, e.g. "3 of 3".
      backbone: the backbone(s) of the runs (``RunResult.backbone``).
      device: where they ran.
      verdict: "reproduced", "not reproduced", "inconclusive", or why there is none.
      values: the per-seed numbers behind ``ours`` (for tests and figures).
    """

    claim: str
    paper: PaperValue
    ours: str
    seeds: str
    backbone: str
    device: str
    verdict: str
    values: tuple[float, ...] = ()


def _pair_key(record: Record) -> tuple:
    """What two runs must share to be a pair (everything but the method and its own settings)."""
    c = record.config
    return (c.task, c.samples, c.steps, c.model, c.num_layers, c.max_seq_length, c.batch_size, c.lr,
            c.adapter.targets, c.adapter.rank, c.eval_examples, record.seed)


def fewshot_rows(records: Sequence[Record]) -> list[ClaimRow]:
    """Few-shot STS-B: for each n of the paper and each Deep LoRA variant with records, the paired
    Δ over seeds whose two runs both fitted, its 95 % paired-bootstrap interval and verdict.

    Args:
      records: study records; those not on STS-B with a sample count are ignored.

    Returns:
      Rows ordered by n, compressed before wide.
    """
    stsb = [r for r in records if r.config.task == "stsb" and r.config.samples is not None]
    vanilla = {_pair_key(r): r for r in stsb if r.config.method == VANILLA}
    curve = FEWSHOT_PAPER["curve"]
    rows = []
    for n in sorted(curve["lora"]):
        for deep in DEEP:
            pairs = [(vanilla[_pair_key(r)], r) for r in stsb
                     if r.config.samples == n and r.config.method == deep and _pair_key(r) in vanilla]
            if not pairs:
                continue
            pairs.sort(key=lambda p: p[1].seed)
            fitted = [(v, d) for v, d in pairs if v.result.fitted and d.result.fitted]
            deltas = tuple(d.result.value - v.result.value for v, d in fitted)
            paper_delta = curve["deep"][n].value - curve["lora"][n].value
            paper = PaperValue(round(paper_delta, 3), curve["deep"][n].source)
            if len(deltas) >= 2:
                low, high = statistics.paired_bootstrap(deltas)
                ours = f"Δ {np.mean(deltas):+.3f}, 95 % [{low:+.3f}, {high:+.3f}]"
                judged = statistics.verdict((low, high), paper_delta)
            else:
                ours = f"Δ {deltas[0]:+.3f}" if deltas else "no fitted pair"
                judged = "inconclusive: fewer than 2 fitted pairs"
            runs = [r for p in pairs for r in p]
            # The paper's few-shot Deep LoRA is the wide one (arXiv:2406.04112: width min(m, n)); its
            # compressed form is meant to keep the wide one's results, so it is judged on the same Δ.
            claim = (f"few-shot STS-B n = {n}: wide Deep LoRA above vanilla LoRA" if deep == "deep-lora" else
                     f"few-shot STS-B n = {n}: compressed Deep LoRA above vanilla LoRA (the paper's Δ is "
                     "wide Deep LoRA's, which compression is meant to keep)")
            rows.append(ClaimRow(
                claim=claim,
                paper=paper, ours=ours, seeds=f"{len(fitted)} of {len(pairs)}",
                backbone="; ".join(sorted({r.result.backbone for r in runs})),
                device="; ".join(sorted({r.device for r in runs})), verdict=judged, values=deltas))
    return rows


def claims(records: Sequence[Record]) -> list[ClaimRow]:
    """Every claim the records can judge (today: ``fewshot_rows``)."""
    return fewshot_rows(records)


def markdown(rows: Sequence[ClaimRow]) -> str:
    """The claims table in Markdown (MyST renders it as a table)."""
    if not rows:
        return "No claim can be judged from these records (no paired runs found)."
    out = ["| claim | paper | source | ours | fitted pairs | backbone | device | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.claim} | {r.paper.text()} | {r.paper.source} | {r.ours} | {r.seeds} | {r.backbone} "
                   f"| {r.device} | {r.verdict} |")
    return "\n".join(out)


def report(folder: str | Path) -> str:
    """The claims table of every record under ``folder`` (``companion report DIR``).

    Raises:
      FileNotFoundError: ``folder`` is not a folder.
      RecordError: a record under it cannot be trusted.
    """
    return markdown(claims(find_records(folder)))


__all__ = ["ClaimRow", "claims", "fewshot_rows", "markdown", "report"]
