"""companion.book.chapters.ch02_proof: config per profile, summary, table, claims."""

import json

import numpy as np
import pytest

from companion.book import claims
from companion.book.chapters import ch02_proof as chapter
from conftest import ROOT

BASELINE = json.loads((ROOT / "baselines" / "smoke" / "02_proof_verification" / "metrics.json").read_text())


@pytest.mark.parametrize("profile,steps", [("smoke", 200), ("full", 2000)])
def test_config_per_profile(profile, steps):
    cases = chapter.config(profile).cases
    assert len(cases) == 4 and {c.steps for c in cases} == {steps}
    assert {c.depth for c in cases} >= {2, 3, 4, 5}
    assert any(len(set(c.init_scales)) > 1 for c in cases)  # unequal ε_l among the cases
    assert any(c.weight_decay > 0 for c in cases) and any(c.weight_decay == 0 for c in cases)


def test_config_overrides_apply_to_every_case():
    assert chapter.config("smoke", steps=None) == chapter.config("smoke")
    assert {c.steps for c in chapter.config("smoke", steps=20).cases} == {20}
    assert chapter.config("smoke", tolerance=1e-11).tolerance == 1e-11
    with pytest.raises(ValueError, match="unknown profile"):
        chapter.config("medium")
    with pytest.raises(ValueError, match="multiple of record_every"):
        chapter.config("full", steps=15)


@pytest.fixture(scope="module")
def result():
    return chapter.run(chapter.config("smoke", steps=20))


def test_summary_has_the_metrics_keys(result):
    m = chapter.summary(result)
    assert set(m) == set(BASELINE)
    assert m["cases"] == 4 and m["events_max_residual"] < 1e-13
    assert [m[f"case{i}_dim_s"] for i in range(1, 5)] == result.dims == result.required_counts
    np.testing.assert_array_equal(result.cases[0].steps, np.arange(21))


def test_table_is_markdown(result):
    text = chapter.table(result, "profile=smoke · device=cpu")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert rows[1].count("---") == 9 and len(rows) == 2 + 4
    assert result.labels[0] in rows[2]


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_claims_hold_on_the_baseline(profile):
    assert len(chapter.check_claims(BASELINE, profile)) == 3 * 4


@pytest.mark.parametrize("key,value,fragment", [
    ("case2_dim_s", 23, "case 2: dim S"),
    ("case3_max_residual_C", 2e-10, "case 3: events A–D"),
    ("case4_basis_orthonormality", 1e-11, "case 4: the proof's vectors"),
])
def test_claims_fail_past_their_margin(key, value, fragment):
    with pytest.raises(claims.ClaimsFailed, match=fragment):
        chapter.check_claims({**BASELINE, key: value}, "smoke")
