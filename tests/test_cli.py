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
