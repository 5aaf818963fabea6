"""Train-step time and peak memory of LoRA fine-tuning: ours (JAX, Flax NNX) against
PyTorch + PEFT on the same machine, model, batch and targets.

Each configuration runs in its own Python process, so its peak resident memory
(``ru_maxrss``) is its own: ``python -m companion.bench.lora one FRAMEWORK SETUP`` prints one
JSON line; ``run()`` starts them all and collects the lines.

Setups: LoRA r = 8 on query-value and on all-dense (the 39 matrices of MiniLM with min side ≥
384), and full fine-tuning for reference. ``jax_profile()`` splits our step's time by kind of
operation (``companion.bench.profile``); ``run()`` prints it for each LoRA setup beside the ratios. ``run_deep()`` (``companion bench deep-lora``) times
compressed Deep LoRA (r = 8, compression included in its build time) against vanilla LoRA on the
same targets, ours only. Model: the packaged all-MiniLM-L6-v2 with a new
1-output head (STS-B-like regression), batch 16, sequence 128, AdamW, dropout on. Inputs are
random token ids (step time does not depend on the text). The PEFT LoRA uses lora_alpha = r
(scale 1, the paper's unscaled LoRA) and no LoRA dropout.

``run_embedding()`` (``companion bench embedding``) times the all-dense step with the adapted
embedding tables trained on the rows the training rows look up against the whole tables.

``run_padding()`` (``companion bench padding``) uses real few-shot STS-B data instead: (a) one
train step with the batch padded to its bucket (``batching.trim``) against the same batch at 128
tokens, and (b) a whole few-shot run (``training.fit``) against the same run in PyTorch + PEFT
with transformers' dynamic padding (``DataCollatorWithPadding``), wall time end to end.
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


def _jax_program(setup: str):
    """The jitted train step of one setup, its state and its call: (step_fn, step, state, build_s)."""
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
    state = {"params": params, "opt": opt_state, "t": 0, "frozen": frozen, "batch": device_batch, "key": key}

    def step():
        state["params"], state["opt"], loss = step_fn(state["params"], state["opt"], (frozen,), device_batch,
                                                      jax.random.fold_in(key, state["t"]))
        state["t"] += 1
        jax.block_until_ready(loss)

    return step_fn, step, state, build_s


def jax_one(setup: str, warmup: int = 2, repeats: int = 10) -> dict:
    import jax
    import numpy as np

    _, step, state, build_s = _jax_program(setup)
    times = _time_steps(step, warmup, repeats)
    n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state["params"])))
    return {"framework": "jax", "setup": setup, "step_time_s": statistics.median(times),
            "step_times_s": times, "trainable_params": n_params, "peak_rss_mb": _peak_rss_mb(),
            "build_and_compression_s": build_s if setup.startswith("deep-lora-compressed") else None}


def jax_profile(setup: str = "lora-query-value", steps: int = 3) -> dict:
    """Our step's time by kind of operation (``companion.bench.profile``): what the JAX side of
    the ratio is made of, e.g. how much is dense products (bound by the machine's FLOP rate) and
    how much dropout's random bits."""
    import jax

    from companion.bench import profile

    step_fn, step, state, _ = _jax_program(setup)
    args = (state["params"], state["opt"], (state["frozen"],), state["batch"], jax.random.fold_in(state["key"], 0))
    out = profile.profile(step_fn, *args, steps=steps, step=step)
    return {"setup": setup, **out}


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
    """Every (framework, setup) in its own process; ratios jax / peft per setup; and the profile of
    each of our LoRA steps by kind of operation (``jax_profile``, in its own process too)."""
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
            "target": "step_time_jax_over_peft <= 1 for the LoRA setups",
            "jax_profiles": {setup: _subprocess("profile", setup) for setup in setups if setup.startswith("lora-")}
            if "jax" in frameworks else None}


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


# ---------------------------------------------------------------------------------------------
# Bucketed padding (``companion bench padding``): real few-shot STS-B data, all-dense LoRA r = 8.

RUN_STEPS = 500  # paper: 500 steps of few-shot STS-B


def _stsb_config(steps: int = RUN_STEPS):
    from companion.adapt.adapters import AdapterConfig
    from companion.adapt.training import FinetuneConfig

    # pooling="pooler": the head of transformers' BertForSequenceClassification, which the PEFT run uses.
    return FinetuneConfig(task="stsb", adapter=AdapterConfig(method="lora", rank=RANK, targets="all-dense"),
                          samples=16, steps=steps, model="minilm", pooling="pooler", lr=1e-4, batch_size=BATCH,
                          max_seq_length=SEQ)


def padding_step(repeats: int = 10, warmup: int = 2) -> dict:
    """One few-shot STS-B train step (n = 16, seed 0, batch 16, all-dense LoRA r = 8, MiniLM 6 layers)
    with the batch padded to its bucket (``batching.trim``) against the same batch at 128 tokens."""
    import jax
    import numpy as np
    from flax import nnx

    from companion.adapt import batching, bert, glue, training

    cfg = _stsb_config()
    tokenizer = bert.load_tokenizer("minilm")
    train, _ = batching.tokenize(glue.load_split("stsb", "train"), tokenizer, SEQ)
    rows = batching.take(train, batching.few_shot_indices(len(train.labels), cfg.samples, cfg.seed))
    full = next(batching.train_stream(rows, BATCH, cfg.seed))
    bucketed = batching.trim(full, batching.bucket_lengths(SEQ))
    encoder = bert.pretrained_encoder("minilm")
    model, trainable, _ = training.build_model(cfg, encoder, 0, full)
    tx = training.optimizer(cfg)
    graphdef, params, frozen = nnx.split(model, trainable, ...)
    train_step, _ = training.step_functions(graphdef, glue.TASKS["stsb"], tx)
    step_fn = jax.jit(train_step, donate_argnums=(0, 1))
    state = {"params": params, "opt": tx.init(params), "t": 0}
    key = jax.random.key(0)
    out = {"setting": "few-shot STS-B n=16 seed 0, batch 16, all-dense LoRA r=8, MiniLM 6 layers, AdamW, dropout on",
           "longest_row": int(np.asarray(full.attention_mask).sum(1).max()),
           "bucket": int(bucketed.input_ids.shape[1])}
    for name, batch in (("fixed_128", full), ("bucketed", bucketed)):
        device_batch = training._device(batch)

        def step():
            state["params"], state["opt"], loss = step_fn(state["params"], state["opt"], (frozen,), device_batch,
                                                          jax.random.fold_in(key, state["t"]))
            state["t"] += 1
            jax.block_until_ready(loss)

        out[f"step_time_{name}_s"] = statistics.median(_time_steps(step, warmup, repeats))
    out["step_time_bucketed_over_fixed"] = out["step_time_bucketed_s"] / out["step_time_fixed_128_s"]
    out["target"] = 0.4
    return out


def jax_run(steps: int = RUN_STEPS) -> dict:
    """A whole few-shot STS-B run in ours (``training.fit``, one seed): data, checkpoint, compilation,
    the evaluations before and after training on the 1500 validation pairs included."""
    from companion.adapt.training import fit

    t0 = time.perf_counter()
    (r,) = fit(_stsb_config(steps))
    return {"framework": "jax", "steps": steps, "wall_time_s": time.perf_counter() - t0, "fitted": r.fitted,
            "first_loss": r.first_loss, "last_loss": r.last_loss,
            "step_time_s": r.step_time_s, "compile_time_s": r.compile_time_s, "pearson": r.value,
            "initial_pearson": r.initial_value, "peak_rss_mb": _peak_rss_mb()}


def peft_run(steps: int = RUN_STEPS) -> dict:
    """The same run in PyTorch + PEFT with transformers' dynamic padding (``DataCollatorWithPadding``):
    the same kept examples, few-shot rows and epoch orders (seed 0), LoRA r = 8 on the same 39 layers
    (lora_alpha = r, no LoRA dropout), AdamW (0.9, 0.999, 1e-6, no decay), lr 1e-4, MSE on logit 0,
    evaluation before and after training in batches of 128."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding

    from companion.adapt import batching, bert, glue, metrics

    t0 = time.perf_counter()
    torch.manual_seed(0)
    folder = str(bert.resolve("minilm"))
    tok = AutoTokenizer.from_pretrained(folder)
    collate = DataCollatorWithPadding(tok)

    def encode(split):
        ex = glue.load_split("stsb", split)
        enc = tok(list(ex.text_a), list(ex.text_b), truncation=False)
        rows = [{k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask")} for i in range(len(ex))]
        keep = [i for i, r in enumerate(rows) if len(r["input_ids"]) <= SEQ]  # paper: longer ones dropped
        return [rows[i] for i in keep], np.asarray(ex.labels, np.float32)[keep]

    train, train_labels = encode("train")
    val, val_labels = encode("validation")
    draw = batching.few_shot_indices(len(train), 16, 0)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=1)
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=RANK, lora_dropout=0.0,
                                             target_modules=PEFT_TARGETS["lora-all-dense"]))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)

    def evaluate():
        model.eval()
        preds = []
        with torch.no_grad():
            for i in range(0, len(val), 128):
                preds.append(model(**collate(val[i:i + 128])).logits[:, 0].numpy())
        model.train()
        return metrics.compute(["pearson"], np.concatenate(preds), val_labels)["pearson"]

    initial = evaluate()
    rng, order, times = np.random.default_rng(0), [], []
    for _ in range(steps):
        if len(order) == 0:
            order = list(rng.permutation(len(draw)))
        idx, order = [int(draw[j]) for j in order[:BATCH]], order[BATCH:]
        s0 = time.perf_counter()
        batch = collate([train[i] for i in idx])
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(**batch).logits[:, 0] - torch.from_numpy(train_labels[idx])) ** 2)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - s0)
    final = evaluate()
    return {"framework": "pytorch+peft", "steps": steps, "wall_time_s": time.perf_counter() - t0,
            "step_time_s": statistics.median(times[1:] or times), "pearson": final, "initial_pearson": initial,
            "peak_rss_mb": _peak_rss_mb(), "torch_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# Embedding rows (``companion bench embedding``): the word-embedding adapter trained on the rows
# training looks up (``training.RESTRICT_EMBEDDINGS``) against the whole (k, 30522) factor.


def embedding_step(method: str = "deep-lora", repeats: int = 10, warmup: int = 2, rounds: int = 3) -> dict:
    """One few-shot STS-B step (n = 16, seed 0, bucketed batch of 16, all-dense targets, MiniLM 6
    layers) with the adapted embedding tables restricted to the rows the training rows look up
    (``adapters.restrict_embeddings``) against the same step on the whole tables. Both programs are
    built in this process and timed in alternating rounds (paired); their losses are compared too."""
    import jax
    import numpy as np
    from flax import nnx

    from companion.adapt import adapters, batching, bert, glue, lora, training
    from companion.adapt.adapters import AdapterConfig
    from companion.adapt.training import FinetuneConfig

    compressed = method == "deep-lora-compressed"
    cfg = FinetuneConfig(task="stsb", adapter=AdapterConfig(method=method, rank=RANK, targets="all-dense"),
                         samples=16, steps=RUN_STEPS, model="minilm", lr=1e-4, batch_size=BATCH, max_seq_length=SEQ,
                         inner_lr=1e-2 if compressed else None)
    data = training._prepare(cfg)
    rows = training._train_rows(cfg, data, 0)
    buckets = batching.bucket_lengths(SEQ)
    batch = batching.trim(next(batching.train_stream(rows, BATCH, 0)), buckets)
    encoder = bert.pretrained_encoder("minilm")
    columns = training.trained_columns(cfg, [rows])
    tx = training.optimizer(cfg)
    key = jax.random.key(0)
    programs = {}
    for name in ("whole", "restricted"):
        model, trainable, names = training.build_model(cfg, encoder, 0, batch)
        if name == "restricted":
            adapters.restrict_embeddings(model, {n: c for n, c in columns.items() if n in names})
        graphdef, params, rest = nnx.split(model, trainable, ...)
        train_step, _ = training.step_functions(graphdef, glue.TASKS["stsb"], tx)
        state = {"params": params, "opt": tx.init(params), "t": 0, "losses": []}
        word = dict(adapters.adapted_layers(model))["embeddings.word_embeddings"].adapter
        programs[name] = (jax.jit(train_step, donate_argnums=(0, 1)), state, rest,
                          tuple(word.factors[0][...].shape),
                          int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state["opt"]))))
    device_batch = training._device(batch)
    times = {name: [] for name in programs}

    def step(name):
        fn, state, rest, _, _ = programs[name]
        state["params"], state["opt"], loss = fn(state["params"], state["opt"], (rest,), device_batch,
                                                 jax.random.fold_in(key, state["t"]))
        state["t"] += 1
        state["losses"].append(float(loss))

    for _ in range(rounds):  # alternating rounds: both programs see the same machine load
        for name in programs:
            times[name] += _time_steps(lambda: step(name), warmup, repeats)
            warmup = 0 if name == "restricted" else warmup
    out = {"setting": f"few-shot STS-B n=16 seed 0, one batch of 16 at its bucket ({batch.input_ids.shape[1]} tokens), "
                      f"all-dense {method} r={RANK}, MiniLM 6 layers, AdamW",
           "method": method, "batch_tokens": int(np.asarray(batch.attention_mask).sum()),
           "training_vocabulary": int(columns["embeddings.word_embeddings"].size),
           "vocabulary": int(encoder.config.vocab_size)}
    for name, (_, state, _, shape, opt_bytes) in programs.items():
        out[f"word_factor_{name}"] = list(shape)
        out[f"optimizer_state_mb_{name}"] = opt_bytes / 2**20
        out[f"step_time_{name}_s"] = statistics.median(times[name])
    a, b = programs["whole"][1]["losses"], programs["restricted"][1]["losses"]
    out["largest_loss_difference"] = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    out["step_time_restricted_over_whole"] = out["step_time_restricted_s"] / out["step_time_whole_s"]
    return out


def run_embedding(repeats: int = 10) -> dict:
    """``embedding_step`` for wide Deep LoRA (a 384 × 30522 word-embedding factor) and vanilla LoRA
    (8 × 30522), each in its own process."""
    import os

    return {"cpu_cores": os.cpu_count(),
            "results": [_subprocess("embedding-step", m, str(repeats)) for m in ("deep-lora", "lora")]}


def _subprocess(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "companion.bench.lora", *args], capture_output=True, text=True)
    if proc.returncode:
        return {"args": list(args), "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_padding(steps: int = RUN_STEPS, repeats: int = 10) -> dict:
    """Bucketed padding, each part in its own process: (a) one few-shot STS-B step bucketed against
    fixed 128 tokens (target ≤ 0.4); (b) a whole ``steps``-step run in ours against PyTorch + PEFT
    with dynamic padding (wall time, all included)."""
    import os

    step = _subprocess("padding-step", str(repeats))
    mine, theirs = _subprocess("run", "jax", str(steps)), _subprocess("run", "pytorch+peft", str(steps))
    ratio = (mine["wall_time_s"] / theirs["wall_time_s"]) if "error" not in mine and "error" not in theirs else None
    return {"cpu_cores": os.cpu_count(), "step": step, "runs": [mine, theirs],
            "run_wall_time_jax_over_peft": ratio,
            "run_setting": f"few-shot STS-B n=16 seed 0, {steps} steps, batch 16, all-dense LoRA r=8, lr 1e-4, "
                           "max 128 tokens, MiniLM 6 layers, evaluation on the 1500 validation pairs before and after"}


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "deep":
        print(json.dumps(run_deep(), indent=2))
    elif len(sys.argv) >= 2 and sys.argv[1] == "padding-step":
        print(json.dumps(padding_step(repeats=int(sys.argv[2]) if len(sys.argv) > 2 else 10)))
    elif len(sys.argv) >= 3 and sys.argv[1] == "embedding-step":
        print(json.dumps(embedding_step(sys.argv[2], repeats=int(sys.argv[3]) if len(sys.argv) > 3 else 10)))
    elif len(sys.argv) >= 3 and sys.argv[1] == "run":
        steps = int(sys.argv[3]) if len(sys.argv) > 3 else RUN_STEPS
        print(json.dumps((jax_run if sys.argv[2] == "jax" else peft_run)(steps)))
    elif len(sys.argv) >= 3 and sys.argv[1] == "profile":
        print(json.dumps(jax_profile(sys.argv[2])))
    elif len(sys.argv) >= 2 and sys.argv[1] == "padding":
        print(json.dumps(run_padding(), indent=2))
    elif len(sys.argv) >= 4 and sys.argv[1] == "one":
        fw, setup = sys.argv[2], sys.argv[3]
        repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 10
        fn = jax_one if fw == "jax" else peft_one
        print(json.dumps(fn(setup, repeats=repeats)))
    else:
        print(json.dumps(run(), indent=2))
