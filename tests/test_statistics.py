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
