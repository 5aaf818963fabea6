"""companion.book.chapters.ch01_theorem: config per profile, summary, table, claims."""

import json

import pytest

from companion.book import claims
from companion.book.chapters import ch01_theorem as chapter
from conftest import ROOT

BASELINE = json.loads((ROOT / "baselines" / "smoke" / "01_theorem" / "metrics.json").read_text())


@pytest.mark.parametrize("profile,size,weight_decay", [("smoke", (30, 3, 3), 0.0), ("full", (300, 5, 4), 1e-3)])
def test_config_per_profile(profile, size, weight_decay):
    s = chapter.config(profile).setting
    assert (s.width, s.target_rank, s.depth) == size and s.weight_decay == weight_decay
    assert chapter.config(profile).rtol == 1e-8


def test_config_overrides():
    assert chapter.config("smoke", steps=None, width=None) == chapter.config("smoke")
    c = chapter.config("smoke", steps=30, width=12, rtol=1e-9)
    assert (c.setting.steps, c.setting.width, c.rtol) == (30, 12, 1e-9)
    with pytest.raises(ValueError, match="unknown profile"):
        chapter.config("fast")
    with pytest.raises(ValueError, match="unknown setting"):
        chapter.config("smoke", stepz=3)
    with pytest.raises(ValueError, match="d > 2r"):
        chapter.config("smoke", width=6)


@pytest.fixture(scope="module")
def result():
    return chapter.run(chapter.config("smoke", steps=40, width=14))


def test_summary_has_the_metrics_keys(result):
    m = chapter.summary(result)
    depth = result.config.setting.depth
    assert set(m) == set(BASELINE) and depth == 3  # same depth as smoke: same keys
    assert m["required_count"] == 14 - 6 == m["min_count"] == m["dim_s"]
    assert all(isinstance(v, (int, float)) for v in m.values())


def test_table_is_markdown(result):
    text = chapter.table(result, "profile=smoke · device=cpu")
    rows = [line for line in text.strip().splitlines() if line.startswith("|")]
    assert rows[1] == "|---|---|---|" and len(rows) == 6
    assert "profile=smoke · device=cpu" in rows[0] and "arXiv:2406.04112" in text


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_claims_hold_on_the_baseline(profile):
    assert all(c.holds for c in chapter.check_claims(BASELINE, profile))


@pytest.mark.parametrize("key,value,fragment", [
    ("min_count", 23, "at least d − 2r*"),
    ("max_count_after_step0", 25, "exactly d − 2r*"),
    ("max_rel_dev", 2e-10, "relative deviation"),
    ("max_angle_rho_block_deg", 2e-8, "no ρ-block singular vector moves"),
    ("min_final_angle_learning_deg", 0.5, "learning vectors moves"),
    ("events_max_residual", 1e-9, "events A–D"),
])
def test_claims_fail_past_their_margin(key, value, fragment):
    with pytest.raises(claims.ClaimsFailed, match=fragment):
        chapter.check_claims({**BASELINE, key: value}, "smoke")


def test_claims_refuse_missing_metrics():
    with pytest.raises(KeyError, match="max_rel_dev"):
        chapter.check_claims({k: v for k, v in BASELINE.items() if k != "max_rel_dev"}, "smoke")
