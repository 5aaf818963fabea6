"""companion.book.chapters.ch04_completion: config per profile, summary, table, claims."""

import json

import pytest

from companion.book import claims
from companion.book.chapters import ch04_completion as chapter
from conftest import ROOT

BASELINE = json.loads((ROOT / "baselines" / "smoke" / "04_matrix_completion" / "metrics.json").read_text())


def expected_keys(c: chapter.Config) -> set:
    """The metrics a config produces: fixed keys, one per r̂ of the sweep, two per depth study run."""
    fixed = {"steps_original", "steps_compressed", "steps_compressed_gamma0", "recovery_original",
             "recovery_compressed", "recovery_compressed_gamma0", "converged_compressed_gamma0", "sweep_trials",
             "sweep_mean_steps_compressed", "sweep_mean_steps_narrow"}
    return (fixed | {f"sweep_steps_compressed_rhat{r}" for r in c.sweep_rank_estimates}
            | {f"depth{L}_hidden{h}_{q}" for L, _ in c.depth_lr for h in c.depth_hidden for q in ("recovery", "steps")})


@pytest.mark.parametrize("profile,width,target_rank,fraction,trials", [("smoke", 100, 4, 0.3, 2), ("full", 1000, 5, 0.2, 5)])
def test_config_per_profile(profile, width, target_rank, fraction, trials):
    c = chapter.config(profile)
    assert (c.width, c.target_rank, c.fraction, c.sweep_trials, c.gamma) == (width, target_rank, fraction, trials, 0.01)
    assert min(c.sweep_rank_estimates) == target_rank and 2 * max(c.sweep_rank_estimates) < width
    assert chapter.paper_ranges(profile) == ({} if profile == "smoke" else chapter.SWEEP_RANGES)


def test_smoke_config_gives_the_baseline_keys():
    assert expected_keys(chapter.config("smoke")) == set(BASELINE)


def test_config_overrides():
    assert chapter.config("smoke", sweep_trials=None) == chapter.config("smoke")
    assert chapter.config("full", sweep_trials=1).sweep_trials == 1
    with pytest.raises(ValueError, match="unknown profile"):
        chapter.config("tiny")


TINY = dict(width=30, target_rank=2, fraction=0.5, lr=30.0, budget=2000, sweep_rank_estimates=(2, 3),
            sweep_trials=1, sweep_budget=1000, depth_width=20, depth_target_rank=2, depth_fraction=0.5,
            depth_hidden=(4, 8), depth_lr=((3, 10.0), (2, 5.0)), depth_budget=1000)


@pytest.fixture(scope="module")
def result():
    return chapter.run(chapter.config("smoke", **TINY))


def test_summary_has_the_metrics_keys(result):
    m = chapter.summary(result)
    assert set(m) == expected_keys(result.config)
    assert m["sweep_trials"] == 1 and len(result.sweep) == 2 * 2 and len(result.depth) == 2 * 2
    assert set(result.pcs) == set(chapter.TRAJECTORY_METHODS)


def test_table_is_markdown(result):
    text = chapter.table(result, "profile=smoke · device=cpu")
    rows = [line for line in text.strip().splitlines() if line.startswith("|")]
    assert rows[1] == "|---|---|---|" and len(rows) == 7 and "widths [4, 8]" in text


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_claims_hold_on_the_baseline(profile):
    assert len(chapter.check_claims(BASELINE, profile)) == 9


@pytest.mark.parametrize("change,fragment", [
    (dict(steps_original=30_000), "converge within"),
    (dict(steps_compressed=int(1.5 * 7394) + 1), "1.5 × the original's steps"),
    (dict(converged_compressed_gamma0=1), "γ = 0 stalls"),
    (dict(recovery_compressed_gamma0=2.3e-5), "γ = 0 stalls"),
    (dict(sweep_mean_steps_narrow=8000.0), "fewer steps than random narrow"),
    (dict(sweep_steps_compressed_rhat8=11_200.0), "do not depend on r̂"),
    (dict(depth3_hidden25_steps=30_000), "depth 3 converges"),
    (dict(depth3_hidden50_steps=13_000), "wider depth-3"),
    (dict(depth2_hidden50_recovery=1e-7), "depth 2 errs more"),
    (dict(depth3_hidden25_recovery=3e-6), "better than depth 2"),
])
def test_claims_fail_past_their_margin(change, fragment):
    with pytest.raises(claims.ClaimsFailed, match=fragment):
        chapter.check_claims({**BASELINE, **change}, "smoke")


def test_a_run_resumed_from_pieces_has_the_whole_runs_rows(result, tmp_path):
    """Each sweep and depth run is kept as a piece; a second run reads them all and its rows are the
    first run's (wall times included, as measured then); pieces of other settings are refused."""
    from companion.book.pieces import PieceError

    cfg = chapter.config("smoke", **TINY)
    first = chapter.run(cfg, tmp_path)
    assert "0 read, 8 computed" in first.pieces
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == sorted(chapter.piece_names(cfg))
    assert len(chapter.piece_names(chapter.config("full"))) == 5 * 6 * 2 + 2 * 10
    assert [{k: v for k, v in r.items() if k != "wall_time_s"} for r in first.sweep] == \
        [{k: v for k, v in r.items() if k != "wall_time_s"} for r in result.sweep] and first.depth == [
            {k: v for k, v in r.items()} for r in result.depth]
    again = chapter.run(cfg, tmp_path)
    assert "8 read, 0 computed" in again.pieces and again.sweep == first.sweep and again.depth == first.depth
    assert chapter.summary(again) == chapter.summary(first)
    with pytest.raises(PieceError, match="sweep_budget differ"):
        chapter.run(chapter.config("smoke", **{**TINY, "sweep_budget": 999}), tmp_path)
