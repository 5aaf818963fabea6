"""Few-shot STS-B on the packaged MiniLM: vanilla LoRA against wide and compressed Deep LoRA.

The paper's few-shot protocol (arXiv:2406.04112, few-shot STS-B; the authors' stsb_fewshot.py at
deep-lora-transformers@618c410): all-dense targets, rank 8, 500 steps, AdamW at 1e-4, batch 16, at
most 128 tokens, the whole validation split; compressed Deep LoRA with inner step 1e-2 and
γ = 0.01. The backbone is all-MiniLM-L6-v2 (a sentence-embedding model, not the paper's
bert-base-cased; its head reads mean-pooled states, ``training.default_pooling``).

Resumable: every finished setting appends one JSON line per seed to records.jsonl (its config,
the package revision, the ``RunResult``); a setting whose seeds are all recorded is skipped.

    COMPANION_DATA_DIR=../shared/data/glue python reports/fewshot-minilm/run.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import time
from pathlib import Path

from companion.adapt.adapters import AdapterConfig
from companion.adapt.training import FinetuneConfig, fit

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records.jsonl"
SAMPLES = (16, 64)
METHODS = ("lora", "deep-lora-compressed", "deep-lora")


def settings(samples=SAMPLES, methods=METHODS):
    """The grid, smallest sample size first (the paper's headline n = 16)."""
    for n in samples:
        for method in methods:
            compressed = method == "deep-lora-compressed"
            yield FinetuneConfig(task="stsb", adapter=AdapterConfig(method=method, rank=8, targets="all-dense"),
                                 samples=n, steps=500, model="minilm", lr=1e-4, batch_size=16, max_seq_length=128,
                                 inner_lr=1e-2 if compressed else None, gamma=0.01)


def key(config: FinetuneConfig, seed: int) -> str:
    """The record key: a hash of the setting and the seed."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True) + f"|{seed}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    done = {json.loads(line)["key"] for line in RECORDS.read_text().splitlines()} if RECORDS.exists() else set()
    seeds = list(range(args.seeds))
    for config in settings():
        todo = [s for s in seeds if key(config, s) not in done]
        if not todo:
            continue
        start = time.perf_counter()
        results = fit(config, todo, log_every=10)
        with RECORDS.open("a") as f:
            for r in results:
                f.write(json.dumps({"key": key(config, r.seed), "revision": revision(),
                                    "config": dataclasses.asdict(config), "result": r.to_dict()}) + "\n")
        print(f"{config.method} n={config.samples}: seeds {todo} in {time.perf_counter() - start:.0f} s; "
              + ", ".join(f"{r.first_loss:.2f}→{r.last_loss:.3f} {'fitted' if r.fitted else 'NOT fitted'} "
                          f"r={r.value:.3f}" for r in results), flush=True)


if __name__ == "__main__":
    main()
