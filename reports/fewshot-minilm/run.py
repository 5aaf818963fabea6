"""Few-shot STS-B on the packaged MiniLM: vanilla LoRA against wide and compressed Deep LoRA,
with today's code and with the code before the fidelity fixes.

The paper's few-shot protocol (arXiv:2406.04112, few-shot STS-B; the authors' stsb_fewshot.py at
deep-lora-transformers@618c410): all-dense targets, rank 8, 500 steps, AdamW at 1e-4, batch 16, at
most 128 tokens, the whole validation split; compressed Deep LoRA with inner step 1e-2 and
γ = 0.01. The backbone is all-MiniLM-L6-v2 (a sentence-embedding model, not the paper's
bert-base-cased; today its head reads mean-pooled states, ``training.default_pooling``).

"Before" is the package at revision 3816342, the last one before the runs were made faithful
to the authors' code and able to learn: a N(0, 0.02²) head drawn per seed and reading MiniLM's
untrained pooler, LoRA's Gaussian factor on the input side, the compression gradient without
dropout, every batch padded to 128 tokens with dropout drawn for that shape. Its runs log every
step's loss so that their fit verdict is computed exactly as today's (``training.fit_verdict``).

Resumable: every finished run (one seed of one setting) is stored as soon as it ends, with its
config, the code revision and the ``RunResult``; recorded runs are skipped. Today's code runs as a
``companion.book.studies`` study whose records go to reports/reference/fewshot-stsb/, the
reference profile's few-shot study, of which this grid (3 seeds, n = 16 and 64) is a part
(``companion report reports`` judges them); the old code appends one JSON line per run to
records-before.jsonl.

    COMPANION_DATA_DIR=../shared/data/glue python reports/fewshot-minilm/run.py [--seeds 3]
    git worktree add /tmp/before 3816342
    COMPANION_DATA_DIR=../shared/data/glue python reports/fewshot-minilm/run.py --code /tmp/before
    python reports/fewshot-minilm/run.py --table
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Today's code: one companion.book.studies record per run, in the reference profile's few-shot
# study (these settings are a part of it: companion.book.reference, the same hashes).
RUNS = HERE.parent / "reference" / "fewshot-stsb"
BEFORE_RECORDS = HERE / "records-before.jsonl"
# Compressed Deep LoRA as the package built it until its outer factors followed the authors'
# orientation (the paper's recipe on the adapter's input side, the other factor
# re-orthonormalised): today's code otherwise, same settings and seeds; kept unjudged, moved out
# of the reference study so that its records are all of one recipe (book/reproducibility.md).
INPUT_SIDE_RECORDS = HERE / "records-compressed-input-side.jsonl"
BEFORE_REVISION = "3816342"
SAMPLES = (16, 64)
METHODS = ("lora", "deep-lora-compressed", "deep-lora")


def settings(samples=SAMPLES, methods=METHODS):
    """The grid, cheapest runs first: vanilla and compressed at every n, then the wide Deep LoRA
    (its 384-wide factors on all 38 layers make a step about 5x the others' on a CPU)."""
    cheap = [m for m in methods if m != "deep-lora"]
    order = [(n, m) for n in samples for m in cheap] + [(n, m) for n in samples for m in methods if m == "deep-lora"]
    from companion.adapt.adapters import AdapterConfig
    from companion.adapt.training import FinetuneConfig

    for n, method in order:
        compressed = method == "deep-lora-compressed"
        yield FinetuneConfig(task="stsb", adapter=AdapterConfig(method=method, rank=8, targets="all-dense"),
                             samples=n, steps=500, model="minilm", lr=1e-4, batch_size=16, max_seq_length=128,
                             inner_lr=1e-2 if compressed else None, gamma=0.01)


def key(config: FinetuneConfig, seed: int) -> str:
    """The record key: a hash of the setting and the seed."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True) + f"|{seed}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def revision(where: Path = HERE) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=where).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise SystemExit(f"{path}:{number} is not a whole JSON record (a run cut while writing?); "
                             "delete that line and rerun to redo the run") from None
    return out


def _verdict(record: dict) -> tuple[float, float, float, bool]:
    """(first, last, constant, fitted) of a record, the same way for both revisions: the old code
    logged every step and carried no verdict, so it is computed here with today's ``fit_verdict``
    and the constant predictor of the seed's few-shot labels (the draw is the same in both)."""
    from companion.adapt import glue, training

    r = record["result"]
    if "fitted" in r:
        return r["first_loss"], r["last_loss"], r["constant_loss"], r["fitted"]
    config = training.FinetuneConfig.from_dict(record["config"])
    labels = training._train_rows(config, training._prepare(config), r["seed"]).labels
    constant = training.constant_loss(glue.TASKS["stsb"], labels)
    first, last, fitted = training.fit_verdict([v for _, v in r["train_loss"]], constant)
    return first, last, constant, fitted


def _today() -> list[dict]:
    """Today's runs in the record-line form of records-before.jsonl (config and result dicts)."""
    from companion.book import studies

    return [{"config": dataclasses.asdict(r.config), "result": r.result.to_dict()}
            for r in studies.Store(RUNS).records()]


def _input_side() -> list[dict]:
    return [{"config": r["config"], "result": r["result"]} for r in _records(INPUT_SIDE_RECORDS)]


# (records, name of the code that made them), in table order.
_SOURCES = ((_today, "today"), (_input_side, "today, compressed on the input side"),
            (lambda: _records(BEFORE_RECORDS), f"before ({BEFORE_REVISION})"))


def table() -> str:
    """Both record files as one Markdown table: per setting and revision, the seeds, how many
    fitted, mean training loss first → last, and validation Pearson per seed (untrained → trained)."""
    import numpy as np

    rows = ["| n | method | code | seeds | fitted | train loss first → last (constant) | Pearson per seed (untrained → trained) | mean Pearson |",
            "|---|---|---|---|---|---|---|---|"]
    for recs_of, name in _SOURCES:
        groups: dict[tuple[int, str], list[dict]] = {}
        for rec in recs_of():
            groups.setdefault((rec["config"]["samples"], rec["result"]["method"]), []).append(rec)
        for (n, method), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]))):
            recs.sort(key=lambda rec: rec["result"]["seed"])
            verdicts = [_verdict(rec) for rec in recs]
            first, last, constant = (float(np.mean([v[i] for v in verdicts])) for i in range(3))
            pearson = [rec["result"]["value"] for rec in recs]
            per_seed = ", ".join(f"{rec['result']['initial_value']:.3f} → {rec['result']['value']:.3f}" for rec in recs)
            rows.append(f"| {n} | {method} | {name} | {len(recs)} | {sum(v[3] for v in verdicts)} of {len(recs)} "
                        f"| {first:.2f} → {last:.3f} ({constant:.2f}) | {per_seed} | {np.mean(pearson):.3f} |")
    return "\n".join(rows) + "\n\n" + delta_table()


def delta_table() -> str:
    """Paired Δ = Deep LoRA − vanilla LoRA per seed, over the seeds where both runs fitted, with the
    95 % paired-bootstrap interval and its verdict against the paper's sign
    (``companion.book.statistics.paired_bootstrap`` and ``verdict``, rules fixed before the runs)."""
    import numpy as np

    from companion.book import statistics
    from companion.book.chapters.ch06_fewshot import PAPER

    curve = PAPER["curve"]
    rows = ["| n | Deep LoRA | code | paired fitted seeds | Δ per seed | mean Δ | 95 % paired bootstrap | paper Δ (bert-base-cased) | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for recs_of, name in _SOURCES:
        runs = {}
        # The input-side compressed runs pair with today's vanilla runs (the same code but for
        # the compression, the same seeds).
        paired = recs_of() + ([r for r in _today() if r["result"]["method"] == "lora"] if recs_of is _input_side else [])
        for rec in paired:
            runs[(rec["config"]["samples"], rec["result"]["method"], rec["result"]["seed"])] = (
                rec["result"]["value"], _verdict(rec)[3])
        for n in SAMPLES:
            paper = curve["deep"][n].value - curve["lora"][n].value
            for deep in ("deep-lora-compressed", "deep-lora"):
                seeds = sorted(s for (nn, m, s) in runs if nn == n and m == deep and (n, "lora", s) in runs)
                if not seeds:
                    continue
                pairs = [s for s in seeds if runs[(n, deep, s)][1] and runs[(n, "lora", s)][1]]
                d = [runs[(n, deep, s)][0] - runs[(n, "lora", s)][0] for s in pairs]
                cells = ", ".join(f"{x:+.3f}" for x in d) or "—"
                if len(d) >= 2:
                    interval = statistics.paired_bootstrap(d)
                    judged = statistics.verdict(interval, paper)
                    ci = f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"
                else:
                    judged, ci = "too few fitted pairs (need 2)", "—"
                mean = f"{np.mean(d):+.3f}" if d else "—"
                rows.append(f"| {n} | {deep} | {name} | {len(pairs)} of {len(seeds)} | {cells} | {mean} | {ci} "
                            f"| {paper:+.3f} | {judged} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 … SEEDS-1 (default 3)")
    parser.add_argument("--only-seeds", default=None,
                        help="comma-separated seeds to run, in this order, in place of 0 … SEEDS-1")
    parser.add_argument("--samples", default=",".join(map(str, SAMPLES)),
                        help="comma-separated training-set sizes to run (default 16,64)")
    parser.add_argument("--code", type=Path, default=None,
                        help=f"a checkout of revision {BEFORE_REVISION} (git worktree add DIR {BEFORE_REVISION}): "
                             "run the old code, into records-before.jsonl")
    parser.add_argument("--table", action="store_true", help="print the records as a table and stop")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods to run (default all). Processes given disjoint runs "
                             "can share a machine: on 2 cores two of them finished about 1.2x the runs "
                             "per hour of one (an old-code run: 1337-1438 s beside another, 812-827 s alone)")
    args = parser.parse_args()
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if unknown := set(methods) - set(METHODS):
        parser.error(f"--methods: unknown {sorted(unknown)}; choose from {', '.join(METHODS)}")
    try:
        samples = tuple(int(n) for n in args.samples.split(","))
        seeds = (list(range(args.seeds)) if args.only_seeds is None
                 else [int(s) for s in args.only_seeds.split(",")])
    except ValueError:
        parser.error("--samples and --only-seeds take comma-separated integers, e.g. --samples 64 --only-seeds 2")
    if unknown := set(samples) - set(SAMPLES):
        parser.error(f"--samples: {sorted(unknown)} is not in this grid; choose from {SAMPLES}")
    if args.table:
        print(table())
        return
    log_every, rev = 10, revision()
    if args.code is not None:
        src = args.code.resolve() / "src"
        if not (src / "companion").is_dir():
            raise SystemExit(f"--code {args.code}: no src/companion there; make one with "
                             f"git worktree add {args.code} {BEFORE_REVISION}")
        rev = revision(args.code.resolve())
        if not BEFORE_REVISION.startswith(rev[:7]) and not rev.startswith(BEFORE_REVISION):
            raise SystemExit(f"--code {args.code} is at {rev}, not {BEFORE_REVISION}")
        sys.path.insert(0, str(src))
        records, log_every = BEFORE_RECORDS, 1  # every step's loss: the verdict is computed as today's
    import companion

    print(f"code: {Path(companion.__file__).parent} at {rev}", flush=True)
    if args.code is None:  # today's code: a resumable study, each run one record in RUNS
        from companion.book import studies

        studies.run_study([(config, seeds) for config in settings(samples, methods)], studies.Store(RUNS),
                          log_every=log_every)
        return
    from companion.adapt.training import fit

    def store(config, results, wall_time_s: float) -> None:
        with records.open("a") as f:
            for r in results:
                f.write(json.dumps({"key": key(config, r.seed), "revision": rev, "device": "cpu",
                                    "wall_time_s": wall_time_s,
                                    "config": dataclasses.asdict(config), "result": r.to_dict()}) + "\n")
                print(f"{config.method} n={config.samples} seed {r.seed}: loss {r.train_loss[0][1]:.2f}→"
                      f"{r.train_loss[-1][1]:.3f} r={r.initial_value:.3f}→{r.value:.3f}", flush=True)

    for config in settings(samples, methods):
        for seed in seeds:  # the old fit has no on_chunk: one call per seed
            # Read again before every run: another process (--methods, --samples, --only-seeds)
            # may have stored it meanwhile.
            if key(config, seed) in {rec["key"] for rec in _records(records)}:
                continue
            start = time.perf_counter()
            results = fit(config, [seed], log_every=log_every)
            store(config, results, time.perf_counter() - start)


if __name__ == "__main__":
    main()
