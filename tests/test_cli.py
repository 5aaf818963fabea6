"""The command line: `companion theorem` JSON and its one-line errors (exit status 2)."""

import json
import subprocess
import sys

import pytest

from companion.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


BASE = ["theorem", "--width", "20", "--rank", "3", "--depth", "3", "--scale", "0.5",
        "--lr", "0.1", "--weight-decay", "0.001", "--steps", "50", "--json"]


def test_theorem_json(capsys):
    code, out, err = run_cli(capsys, *BASE)
    assert code == 0, err
    data = json.loads(out)
    assert data["required_count"] == 14
    assert data["min_count"] == 14 and data["holds"] is True
    assert data["max_rel_dev"] < 1e-12
    assert data["events_max_residual"] < 1e-10
    assert data["settings"] == {"width": 20, "rank": 3, "depth": 3, "scales": [0.5] * 3, "lr": 0.1,
                                "weight_decay": 0.001, "steps": 50, "seed": 0, "rtol": 1e-8}


def test_theorem_unequal_scales(capsys):
    args = BASE[:-1] + ["--scales", "0.4,0.6,0.9", "--seed", "5", "--json"]
    code, out, _ = run_cli(capsys, *args)
    data = json.loads(out)
    assert code == 0 and data["settings"]["scales"] == [0.4, 0.6, 0.9] and data["min_count"] == 14


def _replace(flag, value):
    args = list(BASE)
    args[args.index(flag) + 1] = value
    return args


@pytest.mark.parametrize(
    "args,message",
    [
        (_replace("--width", "6"), "d > 2r*"),
        (_replace("--depth", "1"), "depth must be ≥ 2"),
        (_replace("--scale", "0"), "every scale ε_l must be > 0"),
        (_replace("--scale", "-0.5"), "every scale ε_l must be > 0"),
        (_replace("--width", "20.5"), "invalid int value"),
        (_replace("--rank", "two"), "invalid int value"),
        (_replace("--lr", "80"), "diverged"),
        (_replace("--lr", "0"), "step size must be > 0"),
        (BASE[:-1] + ["--scales", "0.5,0.5", "--json"], "one scale per layer"),
        ([a for a in BASE if a not in ("--scale", "0.5")], "give --scale"),
    ],
)
def test_theorem_bad_settings_one_line_exit_2(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert "Traceback" not in err


def test_console_script_exit_status():
    """The installed entry point behaves like main(): exit 2, one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "companion.cli", *_replace("--width", "6")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1


def test_compress_json(capsys):
    code, out, err = run_cli(capsys, "compress", "--width", "40", "--rank", "3", "--depth", "3", "--scale",
                             "0.5", "--lr", "0.1", "--steps", "200", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["max_rel_err_vs_exact"] < 1e-9 and 0.999 < data["max_gap_over_bound"] <= 1 + 1e-12
    assert data["settings"]["gamma"] == 0.0


def test_complete_json(capsys):
    code, out, err = run_cli(capsys, "complete", "--width", "60", "--rank", "3", "--depth", "3", "--fraction",
                             "0.35", "--method", "compressed", "--lr", "150", "--steps", "40000", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["converged"] is True and data["train_loss"] < 1e-10 and data["recovery_error"] < 1e-7
    assert set(data) >= {"recovery_error", "train_loss", "steps", "wall_time_s", "converged"}
    assert data["settings"]["rank_estimate"] == 3 and data["settings"]["gamma"] == 0.01


COMPLETE = ["complete", "--width", "60", "--rank", "3", "--depth", "3", "--fraction", "0.35", "--method",
            "compressed", "--steps", "100", "--json"]


@pytest.mark.parametrize(
    "args,message",
    [
        (COMPLETE + ["--rank-estimate", "2"], "r̂ = 2 must be ≥ r* = 3"),
        (COMPLETE + ["--rank-estimate", "30"], "need 2r̂ < d"),
        ([a if a != "0.35" else "1.5" for a in COMPLETE], "p must be in (0, 1]"),
        ([a if a != "0.35" else "0" for a in COMPLETE], "p must be in (0, 1]"),
        ([a if a != "0.35" else "0.02" for a in COMPLETE], "cannot determine a rank-3"),
        (COMPLETE + ["--lr", "1e9"], "diverged"),
        ([a if a != "compressed" else "sparse" for a in COMPLETE], "invalid choice"),
        (["compress", "--width", "6", "--rank", "3", "--depth", "3", "--scale", "0.5", "--lr", "0.1",
          "--steps", "10", "--json"], "d > 2r*"),
        (["compress", "--width", "40", "--rank", "3", "--depth", "3", "--scale", "0.5", "--lr", "0.1",
          "--steps", "10", "--rank-estimate", "2", "--json"], "rank estimate 2 must satisfy"),
    ],
)
def test_compress_complete_errors(capsys, args, message):
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


# ---------------------------------------------------------------------------------------------
# `companion finetune` (companion.adapt.training.finetune): documented JSON keys, one-line errors.

FINETUNE_KEYS = {"task", "method", "metric", "value", "metrics", "initial_value", "steps", "seed", "trainable_params",
                 "adapted_layers", "wall_time_s", "step_time_s", "compile_time_s", "n_train", "dropped_train",
                 "n_validation", "dropped_validation", "backbone", "device", "fitted", "first_train_loss",
                 "last_train_loss", "last_over_first", "constant_prediction_loss"}
TINY_ARGS = ["--num-layers", "1", "--max-seq-length", "32", "--batch-size", "8", "--eval-examples", "32", "--json"]


def _needs_glue():
    from companion.adapt import glue

    try:
        glue.data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"no GLUE folder: {e}")


def test_finetune_defaults_and_choices_come_from_the_dataclasses():
    import dataclasses

    from companion.adapt import adapters, glue, training
    from companion.cli import _build_parser

    args = _build_parser().parse_args(["finetune", "--task", "stsb"])
    run = {f.name: f.default for f in dataclasses.fields(training.FinetuneConfig)}
    adapter = {f.name: f.default for f in dataclasses.fields(adapters.AdapterConfig)}
    for name in ("samples", "steps", "seed", "model", "num_layers", "lr", "lr_end", "gamma", "inner_lr",
                 "batch_size", "max_seq_length", "eval_examples", "data_dir"):
        assert getattr(args, name) == run[name], name
    for name in ("method", "rank", "depth", "init_scale", "targets", "alpha"):
        assert getattr(args, name) == adapter[name], name
    actions = {a.dest: a for a in _build_parser()._subparsers._group_actions[0].choices["finetune"]._actions}
    assert tuple(actions["method"].choices) == training.METHODS and tuple(actions["task"].choices) == tuple(glue.TASKS)


def test_cli_finetune_json(capsys):
    _needs_glue()
    code, out, err = run_cli(capsys, "finetune", "--task", "cola", "--method", "lora", "--samples", "16", "--steps", "2",
                             "--seed", "1", "--rank", "4", "--targets", "query-value", *TINY_ARGS)
    assert code == 0, err
    r = json.loads(out)
    assert set(r) == FINETUNE_KEYS
    assert r["task"] == "cola" and r["method"] == "lora" and r["metric"] == "matthews" and r["steps"] == 2
    assert r["trainable_params"] == 2 * 4 * (384 + 384) and r["adapted_layers"] == 2 and r["seed"] == 1


def test_cli_full_fine_tuning(capsys):
    _needs_glue()
    code, out, err = run_cli(capsys, "finetune", "--task", "stsb", "--method", "full", "--samples", "8", "--steps", "1",
                             *TINY_ARGS)
    assert code == 0, err
    r = json.loads(out)
    assert r["method"] == "full" and r["adapted_layers"] is None and r["trainable_params"] > 10_000_000


@pytest.mark.parametrize("args,message", [
    (["--task", "glue"], "invalid choice: 'glue'"),
    (["--task", "qnli"], "no GLUE data for 'qnli'"),
    (["--task", "stsb", "--targets", "nothing"], "no layer matches targets"),
    (["--task", "stsb", "--model", "bert-base-cased"], "COMPANION_ONLINE=1"),
    (["--task", "stsb", "--method", "deep-lora-compressed", "--rank", "7"], "rank 7 must be even"),
    (["--task", "stsb", "--method", "full", "--train-head"], "--train-head applies to adapters"),
    (["--task", "stsb", "--samples", "0"], "samples must be a positive integer"),
    (["--task", "stsb", "--targets", "pooler"], "select only the pooler"),
])
def test_cli_finetune_errors(capsys, monkeypatch, args, message):
    _needs_glue()
    monkeypatch.delenv("COMPANION_ONLINE", raising=False)
    code, out, err = run_cli(capsys, "finetune", *args, "--steps", "1", "--json")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err


def test_cli_compressed_deep_lora_with_numerical_ranks(capsys):
    _needs_glue()
    code, out, err = run_cli(capsys, "finetune", "--task", "stsb", "--method", "deep-lora-compressed", "--samples", "8",
                             "--steps", "2", "--rank", "4", "--targets", "pooler", "--pooling", "pooler",
                             "--inner-lr", "1e-2", "--numerical-ranks", *TINY_ARGS)
    assert code == 0, err
    r = json.loads(out)
    assert r["trainable_params"] == (384 + 384) * 4 + 3 * 4 * 4  # (m+n)r + 3r² per layer
    assert set(r["numerical_ranks"]) == {"pooler.dense"} and 0 <= r["numerical_ranks"]["pooler.dense"] <= 4


def test_cli_finetune_run_dir(capsys, tmp_path):
    _needs_glue()
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "finetune", "--task", "stsb", "--samples", "8", "--steps", "1",
                             "--targets", "query-value", "--run-dir", str(run_dir), *TINY_ARGS)
    assert code == 0, err
    assert {p.name for p in run_dir.iterdir()} == {"config.json", "results.json", "adapter"}
    assert json.loads((run_dir / "results.json").read_text())["value"] == json.loads(out)["value"]
    code, _, err = run_cli(capsys, "finetune", "--task", "stsb", "--steps", "1", "--run-dir", str(run_dir), "--json")
    assert code == 2 and "already exists and is not empty" in err


def test_reproduce_without_the_book_extra_says_what_to_install(capsys, monkeypatch):
    """No papermill: one line naming the extra, exit status 2, nothing executed."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "papermill" else real(name, *a))
    assert main(["reproduce", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "papermill not installed" in err and "pip install 'companion[book]'" in err
