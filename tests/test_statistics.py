"""companion.book.statistics: paired differences by hand."""

import numpy as np
import pytest

from companion.book import statistics


def test_paired_deltas_by_hand():
    rows = []
    values = {("rte", "lora"): [0.50, 0.60, 0.55], ("rte", "deep-lora"): [0.56, 0.61, 0.55],
              ("cola", "lora"): [0.10, 0.20], ("cola", "deep-lora"): [0.30, 0.25]}
    for (task, method), vals in values.items():
        rows += [dict(task=task, method=method, seed=s, value=v) for s, v in enumerate(vals)]
    d = statistics.paired_deltas(rows, "deep-lora")
    rte, cola = np.array([0.06, 0.01, 0.0]), np.array([0.20, 0.05])
    assert d["per_task"]["rte"]["deltas"] == pytest.approx(rte.tolist())
    assert d["per_task"]["rte"]["mean"] == pytest.approx(rte.mean())
    assert d["per_task"]["cola"]["std"] == pytest.approx(cola.std(ddof=1))
    assert d["overall_mean"] == pytest.approx(np.concatenate([rte, cola]).mean())
    assert d["pooled_std"] == pytest.approx(np.sqrt((2 * rte.var(ddof=1) + 1 * cola.var(ddof=1)) / 3))
    with pytest.raises(ValueError, match="Δ needs pairs"):
        statistics.paired_deltas(rows[:-1], "deep-lora")


def test_paired_bootstrap_by_hand():
    """Two seeds: resample means are d1, d2 or their mean, so the 95 % interval is [min, max];
    one constant Δ gives a point; the interval is deterministic and holds the mean."""
    assert statistics.paired_bootstrap([0.1, 0.3]) == pytest.approx((0.1, 0.3))
    assert statistics.paired_bootstrap([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2))
    d = np.random.default_rng(1).normal(0.05, 0.1, size=10)
    low, high = statistics.paired_bootstrap(d)
    assert (low, high) == statistics.paired_bootstrap(d)
    assert low < d.mean() < high
    # about ±1.96 standard errors for 10 normal draws (bootstrap SE uses ddof 0: a bit narrower)
    se = d.std(ddof=0) / np.sqrt(d.size)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)


@pytest.mark.parametrize("deltas, message", [([0.1], "at least 2"), ([0.1, float("nan")], "finite")])
def test_paired_bootstrap_refuses(deltas, message):
    with pytest.raises(ValueError, match=message):
        statistics.paired_bootstrap(deltas)


@pytest.mark.parametrize("interval, paper, expected", [
    ((0.01, 0.2), 0.069, "reproduced"), ((-0.2, -0.01), 0.069, "not reproduced"),
    ((-0.05, 0.1), 0.069, "inconclusive"), ((-0.2, 0.0), 0.069, "not reproduced"),
    ((-0.2, -0.01), -0.03, "reproduced"), ((0.01, 0.2), -0.03, "not reproduced")])
def test_verdict_follows_the_paper_sign(interval, paper, expected):
    assert statistics.verdict(interval, paper) == expected
