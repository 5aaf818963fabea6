"""Plotting functions of chapters 5–7 on fixed synthetic data: the saved columns are exactly
the numbers drawn (means, stds, counts), and every figure carries its stamp."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from companion.book.plots import adapt as plotting  # noqa: E402
from companion.book import statistics


def _texts(fig):
    return [t.get_text() for t in fig.texts]


def test_fewshot_curve_columns_are_means_and_stds_over_seeds():
    rows = [dict(method=m, samples=n, seed=s, value=v)
            for m, base in (("lora", 0.5), ("deep-lora", 0.6)) for n in (16, 64)
            for s, v in enumerate(base + np.array([0.0, 0.1, 0.2]) * (n / 16))]
    fig, cols = plotting.fewshot_curve(rows, {"lora": {16: 0.529}}, "profile=test")
    assert cols["method"] == ["lora", "lora", "deep-lora", "deep-lora"] and cols["samples"] == [16, 64, 16, 64]
    np.testing.assert_allclose(cols["mean"], [0.6, 0.9, 0.7, 1.0])
    np.testing.assert_allclose(cols["std"], [np.std([0, .1, .2]), np.std([0, .4, .8]), np.std([0, .1, .2]),
                                             np.std([0, .4, .8])])
    assert cols["seeds"] == [3, 3, 3, 3] and "profile=test" in _texts(fig)


def test_points_with_runs_that_did_not_fit_are_crossed_out_and_counted():
    rows = [dict(method=m, rank=r, seed=s, value=0.1 * s, fitted=not (m == "deep-lora-narrow" and r == 32 and s == 0))
            for m in ("lora", "deep-lora-narrow") for r in (8, 32) for s in range(2)]
    fig, cols = plotting.rank_robustness(rows, {}, "s")
    assert cols["fitted"] == [2, 2, 2, 1] and cols["seeds"] == [2, 2, 2, 2]
    ax = fig.axes[0]
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [32]
    assert "not every run fitted: no result" in [t.get_text() for t in ax.get_legend().get_texts()]
    _, clean = plotting.rank_robustness([dict(r, fitted=True) for r in rows], {}, "s")
    assert clean["fitted"] == [2, 2, 2, 2]


def test_rank_histogram_counts_every_layer():
    fig, cols = plotting.rank_histogram({"lora": [8, 8, 8], "deep-lora": [0, 0, 3]}, 8, "s")
    counts = {(m, r): c for m, r, c in zip(cols["method"], cols["rank"], cols["layers"])}
    assert counts[("lora", 8)] == 3 and counts[("deep-lora", 0)] == 2 and counts[("deep-lora", 3)] == 1
    assert sum(cols["layers"]) == 6


def test_glue_deltas_and_subspace_figure_keep_every_number():
    rows = [dict(task=t, method=m, seed=s, value=v) for t in ("rte", "cola") for s in range(3)
            for m, v in (("lora", 0.5 + s / 10), ("deep-lora", 0.52 + s / 10))]
    d = statistics.paired_deltas(rows, "deep-lora")
    fig, cols = plotting.glue_deltas(d, {"rte": 0.029}, "s")
    assert cols["task"] == ["rte"] * 3 + ["cola"] * 3
    np.testing.assert_allclose(cols["delta"], [0.02] * 6, atol=1e-12)
    steps, sv = np.array([0, 5, 10]), np.array([[3.0, 1e-3], [2.0, 1e-4]])
    cos = np.array([[0.1, 0.2], [0.9, 0.8], [1.0, 1.0]])
    fig, cols = plotting.subspace_figure(steps, ["a", "b"], sv, cos, [True, False], np.arange(4), np.ones(4), "s")
    assert cols["kind"].count("singular_value") == 2 and cols["kind"].count("cosine") == 3  # layer b filtered out
    assert set(cols["layer"]) == {"a", ""}
    assert cols["kind"].count("train_loss") == 4


def test_variant_curves_draw_each_variant():
    compare = {v: {"curve": [(0, 0.0), (10, 0.5)], "loss": [(0, 2.0), (1, 1.0)]}
               for v in ("wide", "compressed", "random-narrow")}
    fig, cols = plotting.variant_curves(compare, {"wide": {20: 0.649}}, "s")
    assert sorted(set(cols["variant"])) == ["compressed", "random-narrow", "wide"]
    assert len(cols["step"]) == 12
    with pytest.raises(KeyError):
        plotting.variant_curves({"unknown": compare["wide"]}, {}, "s")
    compare["compressed"]["fitted"] = False
    fig, _ = plotting.variant_curves(compare, {}, "s")
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert [x for x in labels if "did not fit" in x] == ["compressed Deep LoRA (ours, did not fit: no result)"]
