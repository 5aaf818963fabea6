"""companion.adapt.finetune and `companion finetune`: the paper's protocol on the packaged MiniLM."""

import json

import numpy as np
import pytest

from companion.adapt import bert, glue as data, lora
from companion.cli import main
from companion.adapt.finetune import FinetuneConfig, build_model, finetune, optimizer

try:
    data.data_dir()
except FileNotFoundError as e:  # CI sets COMPANION_DATA_DIR (../shared/data/glue)
    pytest.skip(f"no GLUE folder: {e}", allow_module_level=True)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """A short STS-B few-shot LoRA run, written to a run directory."""
    run_dir = tmp_path_factory.mktemp("runs") / "stsb"
    cfg = FinetuneConfig(task="stsb", samples=64, steps=24, seed=0, targets="all-dense", eval_examples=256)
    return cfg, run_dir, finetune(cfg, run_dir=run_dir, log_every=4)


def test_short_stsb_finetune_learns(short_run):
    """Training loss falls and validation Pearson beats the untrained model's on a fixed subset."""
    _, _, r = short_run
    first, last = r["train_loss"][0][1], r["train_loss"][-1][1]
    assert last < 0.5 * first
    assert r["metric"] == "pearson" and r["n_validation"] == 256
    assert r["value"] > r["initial_value"] + 0.15
    assert r["trainable_params"] == 592_336 and r["adapted_layers"] == 39  # adapters only, head frozen
    assert "sentence-embedding" in r["backbone"]


def test_run_directory_and_adapter_round_trip(short_run):
    cfg, run_dir, r = short_run
    assert json.loads((run_dir / "config.json").read_text())["task"] == "stsb"
    assert json.loads((run_dir / "results.json").read_text())["value"] == pytest.approx(r["value"])
    # Reload: the saved adapter and head reproduce the trained model's evaluation exactly.
    model = bert.from_pretrained("minilm", 1, seed=99)
    lora.load(model, run_dir / "adapter")
    from companion.adapt.finetune import Trainer, evaluate, prepare

    tok = bert.load_tokenizer("minilm")
    prepared = prepare(cfg, tok)
    trainer = Trainer(model, data.TASKS["stsb"], optimizer(cfg), lora.Adapter)
    again = evaluate(trainer, prepared["validation"], prepared["validation_labels"], 16)
    assert again["pearson"] == pytest.approx(r["value"], abs=1e-5)
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        finetune(cfg, run_dir=run_dir)


def test_paired_seed_is_deterministic():
    cfg = FinetuneConfig(task="rte", samples=16, steps=3, seed=4, targets="query-value", eval_examples=32)
    a, b = finetune(cfg), finetune(cfg)
    assert a["train_loss"] == b["train_loss"] and a["value"] == b["value"]
    c = finetune(FinetuneConfig(task="rte", samples=16, steps=3, seed=5, targets="query-value", eval_examples=32))
    assert c["train_loss"] != a["train_loss"]


def test_head_frozen_unless_asked():
    task = data.TASKS["mrpc"]
    _, filt, cfg = build_model(FinetuneConfig(task="mrpc", targets="query-value"), task)
    assert filt is lora.Adapter and cfg.train_head is False
    model, filt, _ = build_model(FinetuneConfig(task="mrpc", targets="query-value", train_head=True), task)
    assert lora.count_parameters(model, filt) == lora.count_parameters(model) + 384 * 2 + 2


def test_config_errors():
    with pytest.raises(ValueError, match="unknown task 'glue'"):
        FinetuneConfig(task="glue")
    with pytest.raises(ValueError, match="samples must be a positive integer"):
        FinetuneConfig(task="stsb", samples=0)
    with pytest.raises(ValueError, match="unknown method 'deep'"):
        FinetuneConfig(task="stsb", method="deep")


def test_cli_finetune_json(capsys):
    code = main(["finetune", "--task", "cola", "--method", "lora", "--samples", "16", "--steps", "2",
                 "--seed", "1", "--rank", "4", "--targets", "query-value", "--eval-examples", "32", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    r = json.loads(out.out)
    assert r["task"] == "cola" and r["metric"] == "matthews" and r["steps"] == 2
    assert r["trainable_params"] == 12 * 4 * (384 + 384)
    assert set(r) >= {"task", "metric", "value", "steps", "trainable_params", "wall_time_s", "step_time_s"}


@pytest.mark.parametrize("args,message", [
    (["--task", "glue"], "unknown task 'glue'"),
    (["--task", "qnli"], "no GLUE data for 'qnli'"),
    (["--task", "stsb", "--targets", "nothing"], "no layer matches targets"),
    (["--task", "stsb", "--model", "bert-base-cased"], "COMPANION_ONLINE=1"),
])
def test_cli_finetune_errors(capsys, monkeypatch, args, message):
    monkeypatch.delenv("COMPANION_ONLINE", raising=False)
    code = main(["finetune", *args, "--steps", "1", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_cli_compressed_deep_lora_with_numerical_ranks(capsys):
    code = main(["finetune", "--task", "stsb", "--method", "deep-lora-compressed", "--samples", "16", "--steps", "2",
                 "--rank", "4", "--targets", "query-value", "--inner-lr", "1e-2", "--eval-examples", "32",
                 "--numerical-ranks", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    r = json.loads(out.out)
    assert r["trainable_params"] == 12 * ((384 + 384) * 4 + 3 * 4 * 4)  # (m+n)r + 3r² per layer
    ranks = r["numerical_ranks"]
    assert len(ranks) == 12 and all(isinstance(v, int) and 0 <= v <= 4 for v in ranks.values())


def test_cli_odd_rank_for_compressed_is_an_error(capsys):
    code = main(["finetune", "--task", "stsb", "--method", "deep-lora-compressed", "--rank", "7", "--steps", "1",
                 "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "rank 7 must be even" in err and len(err.strip().splitlines()) == 1


def test_seeds_in_parallel_match_sequential_runs():
    """jax.vmap over seeds gives each seed the numbers of its own sequential run."""
    from companion.adapt.finetune import finetune_seeds

    cfg = FinetuneConfig(task="stsb", samples=16, steps=3, targets="query-value", eval_examples=48)
    together = finetune_seeds(cfg, [0, 1], log_every=1)
    for i, seed in enumerate((0, 1)):
        alone = finetune(FinetuneConfig(task="stsb", samples=16, steps=3, targets="query-value",
                                        eval_examples=48, seed=seed), log_every=1)
        run = together["runs"][i]
        np.testing.assert_allclose([v for _, v in run["train_loss"]], [v for _, v in alone["train_loss"]],
                                   rtol=1e-5, atol=1e-5)
        assert run["value"] == pytest.approx(alone["value"], abs=1e-5)
        assert run["initial_value"] == pytest.approx(alone["initial_value"], abs=1e-5)
    with pytest.raises(ValueError, match="distinct seeds"):
        finetune_seeds(cfg, [1, 1])
