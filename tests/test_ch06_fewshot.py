"""Chapter 6 (few-shot STS-B): settings per profile, the claims on reviewed numbers, the table."""

import json

import pytest

from companion.book import claims
from companion.book.chapters import ch06_fewshot as ch
from conftest import ROOT

SMOKE = json.loads((ROOT / "baselines" / "smoke" / ch.NOTEBOOK / "metrics.json").read_text())
# What the paper reports (arXiv:2406.04112, the authors' logs), as our metric names.
FULL = {"delta_smallest_n_mean": 0.069, "mean_rank_vanilla": 8.0, "mean_rank_deep": 1.5,
        "rank8_vanilla_mean": 0.539, "rank64_vanilla_mean": 0.175, "rank8_deep_narrow_mean": 0.635,
        "rank64_deep_narrow_mean": 0.667, "compressed_step40": 0.736, "wide_step40": 0.745,
        "random_narrow_step40": 0.032, "runs": 192, "runs_fitted": 192, "curve_runs": 120, "curve_fitted": 120,
        **{f"{m}_n{n}_{k}": v for m, means in (("vanilla", (0.529, 0.735, 0.814)), ("deep", (0.598, 0.751, 0.828)))
           for n, mean in zip((16, 64, 256), means) for k, v in (("mean", mean), ("initial", 0.0))}}


def test_full_profile_is_the_papers_protocol():
    c = ch.config("full")
    assert c.samples == (16, 64, 256) and c.seeds == 20 and c.base.steps == 500
    assert c.base.adapter.targets == "all-dense" and c.base.adapter.rank == 8 and c.base.lr == 1e-4
    assert c.ranks == (8, 16, 32, 64) and c.rank_seeds == 5 and c.rank_steps == 200 and c.rank_samples == 16
    assert c.compressed_inner_lr == 1e-2 and c.gamma == 0.01 and c.compare_steps == 200
    assert ch.config("smoke", seeds=3).seeds == 3
    assert c.base.model == "bert-base-cased" and ch.config("smoke").base.model == "minilm"
    assert ch.config("full", model="minilm").base.model == "minilm"


@pytest.mark.parametrize("profile,metrics", [("smoke", SMOKE), ("full", FULL)])
def test_claims_hold_on_good_numbers(profile, metrics):
    assert all(c.holds for c in ch.check_claims(metrics, profile))


@pytest.mark.parametrize("profile,change,fails", [
    ("smoke", {"mean_rank_vanilla": 7.5}, "fill their rank 8"),
    ("smoke", {"mean_rank_deep": 6.5}, "low numerical rank"),
    ("full", {"delta_smallest_n_mean": -0.02}, "at least as good as vanilla"),
    ("full", {"rank64_vanilla_mean": 0.5}, "vanilla LoRA degrades"),
    ("full", {"rank64_deep_narrow_mean": 0.5}, "does not degrade"),
    ("full", {"random_narrow_step40": 0.7}, "faster than random narrow"),
    ("full", {"compressed_step40": 0.6, "random_narrow_step40": 0.0}, "early progress"),
    ("smoke", {"curve_fitted": 0}, "every run of the few-shot curve fitted"),
    ("full", {"runs_fitted": 191}, "every run fitted its training data"),
    ("full", {"deep_n16_initial": 0.6, "deep_n64_initial": 0.75, "deep_n256_initial": 0.83}, "rises above"),
])
def test_claims_fail_past_their_margins(profile, change, fails):
    good = SMOKE if profile == "smoke" else FULL
    with pytest.raises(claims.ClaimsFailed, match=fails):
        ch.check_claims({**good, **change}, profile)


def test_paper_means_for_the_plots():
    assert ch.paper_means("curve")["deep"][16] == 0.598
    assert ch.paper_means("compare")["random-narrow"][40] == 0.032
    assert ch.PAPER["delta_n16"].value == pytest.approx(0.598 - 0.529)
