"""Which smallest departure from the paper lets MiniLM learn with Figure 1's attention+MLP targets?

all-MiniLM-L6-v2 is a sentence-embedding model trained with mean pooling; its pooler was never
trained (weight std ≈ 0.009, spectral norm ≈ 0.35). The paper's head reads tanh(pooler(h_CLS))
and stays frozen (arXiv:2406.04112; the authors' models.py at deep-lora-transformers@618c410).
Four head inputs, on the same seeds, few-shot STS-B n = 16, the paper's optimiser (AdamW 1e-4,
batch 16, ≤ 128 tokens), 200 steps, the first 400 validation pairs:

- paper: attention+MLP adapters, the head reads the frozen pooler;
- pooler-adapted: the pooler gets an adapter too (as the paper's all-dense set does);
- head-trained: the head trains (PEFT's modules_to_save);
- mean-pooled: the head reads the mean of the last hidden states (MiniLM's own pooling).

Resumable: each finished (variant, method) appends its seeds to records.jsonl.

    COMPANION_DATA_DIR=../shared/data/glue python reports/minilm-head/run.py
"""

from __future__ import annotations

import json
from pathlib import Path

from companion.adapt.adapters import AdapterConfig
from companion.adapt.training import FinetuneConfig, fit
from companion.book.chapters.adaptation import vary

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records.jsonl"
ATTENTION_MLP = (r"encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|"
                 r"intermediate\.dense|output\.dense)$")
VARIANTS = {
    "paper": dict(targets="attention-mlp", pooling="pooler"),
    "pooler-adapted": dict(targets=(ATTENTION_MLP, r"^pooler\.dense$"), pooling="pooler"),
    "head-trained": dict(targets="attention-mlp", train_head=True, pooling="pooler"),
    "mean-pooled": dict(targets="attention-mlp", pooling="mean"),
}
BASE = FinetuneConfig(task="stsb", adapter=AdapterConfig(method="lora", rank=8), model="minilm", samples=16,
                      steps=200, lr=1e-4, batch_size=16, max_seq_length=128, eval_examples=400)
SEEDS = (0, 1)


def table() -> str:
    """The records as a Markdown table. Losses from the logged ones (every 10 steps), the same way
    for every record: first = the step-0 batch, last = the mean of the last five logged batches;
    fitted = last ≤ half of both first and the constant predictor's loss (``training.fit_verdict``)."""
    import numpy as np

    from companion.adapt import training

    rows = ["| head input | method | seed | loss first → last (constant) | fitted | Pearson at 0 / 50 / 100 / 200 |",
            "|---|---|---|---|---|---|"]
    for rec in map(json.loads, RECORDS.read_text().splitlines()):
        r = rec["result"]
        losses = [v for _, v in r["train_loss"]]
        first, last = losses[0], float(np.mean(losses[-5:]))
        constant = r.get("constant_loss")
        if constant is None:  # records written before results carried it: the seed's few-shot labels
            constant = _constant(rec["seed"])
        fitted = last <= training.FIT_RATIO * min(first, constant)
        curve = " / ".join(f"{v:.3f}" for _, v in r["curve"])
        rows.append(f"| {rec['variant']} | {rec['method']} | {rec['seed']} | {first:.2f} → {last:.3f} ({constant:.2f}) "
                    f"| {'yes' if fitted else 'no'} | {curve} |")
    return "\n".join(rows)


def _constant(seed: int) -> float:
    from companion.adapt import glue, training

    config = vary(BASE, seed=seed)
    data = training._prepare(config)
    return training.constant_loss(glue.TASKS["stsb"], training._train_rows(config, data, seed).labels)


def main() -> None:
    import sys

    if sys.argv[1:] == ["--table"]:
        print(table())
        return
    done = set()
    if RECORDS.exists():
        done = {(r["variant"], r["method"]) for r in map(json.loads, RECORDS.read_text().splitlines())}
    for method in ("lora", "deep-lora"):
        for name, changes in VARIANTS.items():
            if (name, method) in done:
                continue
            results = fit(vary(BASE, method=method, **changes), list(SEEDS), log_every=10, eval_at=(50, 100))
            with RECORDS.open("a") as f:
                for r in results:
                    f.write(json.dumps(dict(variant=name, method=method, seed=r.seed, result=r.to_dict())) + "\n")
            print(name, method, [(round(r.train_loss[-1][1], 3), round(r.value, 3)) for r in results], flush=True)


if __name__ == "__main__":
    main()
