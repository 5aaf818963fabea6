"""Chapter 5 (Figure 1): settings per profile and the claims, checked on reviewed numbers."""

import json

import pytest

from companion.book import claims
from companion.book.chapters import ch05_subspaces as ch
from conftest import ROOT

SMOKE = json.loads((ROOT / "baselines" / "smoke" / ch.NOTEBOOK / "metrics.json").read_text())
# A run that shows what Figure 1 shows (the paper: alignment early, Pearson ≈ 0.888).
FULL = {**SMOKE, "median_cos_at_start": 0.3, "median_cos_at_filter_step": 0.7, "fraction_drawn": 40 / 72,
        "filter_step": 30, "loss_first_tenth": 4.0, "loss_last_tenth": 0.4, "pearson": 0.87}


def test_full_profile_is_the_papers_run():
    run = ch.config("full").run
    assert (run.steps, run.lr, run.lr_end, run.batch_size, run.max_seq_length) == (2000, 1e-4, 1e-5, 16, 128)
    assert run.adapter.method == "deep-lora" and run.adapter.targets == "attention-mlp" and run.samples is None
    assert run.model == "bert-base-cased" and run.num_layers is None and run.eval_examples is None
    assert ch.config("smoke").run.model == "minilm" and ch.config("full", model="minilm").run.model == "minilm"
    full = ch.config("full")
    assert full.subspace_rank == 8 and full.top_values == 10 and full.filter_step == 30 and full.filter_cosine == 0.5
    assert full.snapshots == (0, 1, 10, 20, 30, 100, 500, 1000, 1500, 2000)  # the authors' save_step_points
    smoke = ch.config("smoke", steps=12, online=True)
    assert smoke.run.steps == 12 and smoke.run.online and smoke.run.num_layers == 2
    assert smoke.snapshots == (0, 1, 2, 5, 10, 12) and smoke.filter_step == 10
    with pytest.raises(ValueError, match="unknown profile"):
        ch.config("medium")


@pytest.mark.parametrize("profile,metrics", [("smoke", SMOKE), ("full", FULL)])
def test_claims_hold_on_good_numbers(profile, metrics):
    assert all(c.holds for c in ch.check_claims(metrics, profile))


@pytest.mark.parametrize("profile,change,fails", [
    ("smoke", {"median_cos_at_filter_step": 0.2, "median_cos_at_start": 0.1}, "move towards their final position"),
    ("smoke", {"loss_last_tenth": 8.0}, "loss falls"),
    ("full", {"fraction_drawn": 0.3}, "most layers' subspaces have aligned"),
    ("full", {"loss_last_tenth": 2.5}, "below half"),
    ("full", {"pearson": 0.6}, "near the paper's 0.888"),
    ("smoke", {"pearson": float("nan")}, "finite"),
    ("smoke", {"fitted": 0}, "fitted its training data"),
    ("full", {"fitted": 0}, "fitted its training data"),
    ("smoke", {"pearson": 0.0, "pearson_initial": 0.0}, "rises above the untrained"),
])
def test_claims_fail_past_their_margins(profile, change, fails):
    good = SMOKE if profile == "smoke" else FULL
    with pytest.raises(claims.ClaimsFailed, match=fails):
        ch.check_claims({**good, **change}, profile)


def test_claims_refuse_missing_metrics():
    with pytest.raises(KeyError, match="pearson"):
        ch.check_claims({k: v for k, v in SMOKE.items() if k != "pearson"}, "smoke")


def test_paper_numbers_name_their_source():
    assert ch.PAPER["pearson"].value == 0.888
    assert all("arXiv:2406.04112" in p.source for p in ch.PAPER.values())
