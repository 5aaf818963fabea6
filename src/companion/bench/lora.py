"""Train-step time and peak memory of LoRA fine-tuning: ours (JAX, Flax NNX) against
PyTorch + PEFT on the same machine, model, batch and targets.

Each configuration runs in its own Python process, so its peak resident memory
(``ru_maxrss``) is its own: ``python -m companion.bench.lora one FRAMEWORK SETUP`` prints one
JSON line; ``run()`` starts them all and collects the lines.

Setups: LoRA r = 8 on query-value and on all-dense (the 39 matrices of MiniLM with min side ≥
384), and full fine-tuning for reference. ``run_deep()`` (``companion bench deep-lora``) times
compressed Deep LoRA (r = 8, compression included in its build time) against vanilla LoRA on the
same targets, ours only. Model: the packaged all-MiniLM-L6-v2 with a new
1-output head (STS-B-like regression), batch 16, sequence 128, AdamW, dropout on. Inputs are
random token ids (step time does not depend on the text). The PEFT LoRA uses lora_alpha = r
(scale 1, the paper's unscaled LoRA) and no LoRA dropout.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

SETUPS = ("lora-query-value", "lora-all-dense", "full")
# Compressed Deep LoRA (r = 8) against vanilla LoRA (r = 8), same targets: the paper expects them to cost
# about the same (arXiv:2406.04112, compression from the first gradient).
DEEP_SETUPS = ("deep-lora-compressed-query-value", "deep-lora-compressed-all-dense")
BATCH, SEQ, RANK = 16, 128, 8
PEFT_TARGETS = {
    "lora-query-value": ["query", "value"],
    # Same 39 layers as companion.adapt.adapters' all-dense on MiniLM: every dense layer but the head,
    # the word and the position embeddings.
    "lora-all-dense": ["query", "key", "value", "dense", "word_embeddings", "position_embeddings"],
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _time_steps(step, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def jax_one(setup: str, warmup: int = 2, repeats: int = 10) -> dict:
    import jax
    import numpy as np
    from flax import nnx

    from companion.adapt import bert, training
    from companion.adapt.adapters import AdapterConfig
    from companion.adapt.batching import Batch
    from companion.adapt.glue import TASKS

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (BATCH, SEQ)).astype(np.int32)
    batch = Batch(ids, np.ones_like(ids), np.zeros_like(ids), rng.uniform(0, 5, BATCH).astype(np.float32),
                  np.ones(BATCH, np.float32))
    if setup == "full":
        cfg = training.FinetuneConfig(task="stsb", adapter=None)
    else:
        method = "deep-lora-compressed" if setup.startswith("deep-lora-compressed") else "lora"
        targets = "query-value" if setup.endswith("query-value") else "all-dense"
        cfg = training.FinetuneConfig(task="stsb", adapter=AdapterConfig(method=method, rank=RANK, targets=targets))
    encoder = bert.pretrained_encoder("minilm")
    t0 = time.perf_counter()
    model, trainable, _ = training.build_model(cfg, encoder, 0, batch)  # compression included
    build_s = time.perf_counter() - t0
    tx = training.optimizer(cfg)
    graphdef, params, frozen = nnx.split(model, trainable, ...)
    opt_state = tx.init(params)
    train_step, _ = training.step_functions(graphdef, TASKS["stsb"], tx)
    step_fn = jax.jit(train_step, donate_argnums=(0, 1))
    device_batch = Batch(*(jax.numpy.asarray(x) for x in batch))
    key = jax.random.key(0)
    state = {"params": params, "opt": opt_state, "t": 0}

    def step():
        state["params"], state["opt"], loss = step_fn(state["params"], state["opt"], (frozen,), device_batch,
                                                      jax.random.fold_in(key, state["t"]))
        state["t"] += 1
        jax.block_until_ready(loss)

    times = _time_steps(step, warmup, repeats)
    n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state["params"])))
    return {"framework": "jax", "setup": setup, "step_time_s": statistics.median(times),
            "step_times_s": times, "trainable_params": n_params, "peak_rss_mb": _peak_rss_mb(),
            "build_and_compression_s": build_s if setup.startswith("deep-lora-compressed") else None}


def peft_one(setup: str, warmup: int = 2, repeats: int = 10) -> dict:
    import torch
    from transformers import BertForSequenceClassification

    from companion.adapt import bert

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(str(bert.resolve("minilm")), num_labels=1)
    if setup != "full":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=RANK, lora_dropout=0.0,
                                                 target_modules=PEFT_TARGETS[setup]))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (BATCH, SEQ), generator=g)
    mask = torch.ones_like(ids)
    labels = torch.rand(BATCH, generator=g) * 5

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.mean((logits[:, 0] - labels) ** 2)
        loss.backward()
        opt.step()

    times = _time_steps(step, warmup, repeats)
    return {"framework": "pytorch+peft", "setup": setup, "step_time_s": statistics.median(times),
            "step_times_s": times, "trainable_params": sum(p.numel() for p in params),
            "peak_rss_mb": _peak_rss_mb(), "torch_threads": torch.get_num_threads()}


def run(frameworks=("jax", "pytorch+peft"), setups=SETUPS, repeats: int = 10) -> dict:
    """Every (framework, setup) in its own process; ratios jax / peft per setup."""
    rows = []
    for setup in setups:
        for fw in frameworks:
            proc = subprocess.run([sys.executable, "-m", "companion.bench.lora", "one", fw, setup, str(repeats)],
                                  capture_output=True, text=True)
            if proc.returncode:
                rows.append({"framework": fw, "setup": setup, "error": proc.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ratios = {}
    for setup in setups:
        mine = [r for r in rows if r["setup"] == setup and r["framework"] == "jax" and "error" not in r]
        theirs = [r for r in rows if r["setup"] == setup and r["framework"] == "pytorch+peft" and "error" not in r]
        if mine and theirs:
            ratios[setup] = {"step_time_jax_over_peft": mine[0]["step_time_s"] / theirs[0]["step_time_s"],
                             "peak_rss_jax_over_peft": mine[0]["peak_rss_mb"] / theirs[0]["peak_rss_mb"]}
    import os

    return {"batch": BATCH, "sequence": SEQ, "rank": RANK, "model": "all-MiniLM-L6-v2 (packaged)",
            "cpu_cores": os.cpu_count(), "results": rows, "ratios": ratios,
            "target": "step_time_jax_over_peft <= 1 for the LoRA setups"}


def run_seeds(seeds: int = 4, steps: int = 6, task: str = "stsb") -> dict:
    """Seeds in parallel: one vectorised step for ``seeds`` seeds against ``seeds`` steps of one seed.

    Real data (COMPANION_DATA_DIR), LoRA r = 8 on query-value, 16 samples per seed, batch 16.
    """
    from companion.adapt.adapters import AdapterConfig
    from companion.adapt.training import FinetuneConfig, fit

    cfg = FinetuneConfig(task=task, adapter=AdapterConfig(targets="query-value"), samples=16, steps=steps,
                         eval_examples=16)
    together = fit(cfg, list(range(seeds)))[0].step_time_s
    alone = fit(cfg)[0].step_time_s
    sequential = seeds * alone
    return {"seeds": seeds, "vmapped_step_s": together, "one_seed_step_s": alone,
            "sequential_step_s": sequential, "speedup": sequential / together}


def run_deep(repeats: int = 10) -> dict:
    """Compressed Deep LoRA vs vanilla LoRA (r = 8, same targets), ours only; target ratio ≤ 1.10."""
    rows = []
    for setup in ("lora-query-value", DEEP_SETUPS[0], "lora-all-dense", DEEP_SETUPS[1]):
        proc = subprocess.run([sys.executable, "-m", "companion.bench.lora", "one", "jax", setup, str(repeats)],
                              capture_output=True, text=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else
                    {"setup": setup, "error": proc.stderr.strip().splitlines()[-1]})
    by = {r["setup"]: r for r in rows}
    ratios = {t: by[f"deep-lora-compressed-{t}"]["step_time_s"] / by[f"lora-{t}"]["step_time_s"]
              for t in ("query-value", "all-dense")
              if "error" not in by[f"deep-lora-compressed-{t}"] and "error" not in by[f"lora-{t}"]}
    return {"batch": BATCH, "sequence": SEQ, "rank": RANK, "results": rows,
            "step_time_compressed_over_lora": ratios, "target": 1.10}


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "deep":
        print(json.dumps(run_deep(), indent=2))
    elif len(sys.argv) >= 4 and sys.argv[1] == "one":
        fw, setup = sys.argv[2], sys.argv[3]
        repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 10
        fn = jax_one if fw == "jax" else peft_one
        print(json.dumps(fn(setup, repeats=repeats)))
    else:
        print(json.dumps(run(), indent=2))
