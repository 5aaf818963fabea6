"""Figures of the reproduction report on fixed synthetic records: the saved columns are the numbers
drawn, an empty study draws a figure that says so, and every figure carries its stamp."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from companion.book.plots import report as plotting  # noqa: E402


def _texts(fig):
    return [t.get_text() for f in [fig] for t in f.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]


def test_numerical_rank_shares_pool_the_seeds():
    ranks = {"lora": [8, 8, 8, 7], "deep-lora": [0, 0, 0, 5]}
    fig, cols = plotting.numerical_rank_records(ranks, {"lora": 2, "deep-lora": 2}, 8, "stamp-x")
    got = {(m, r): (n, s) for m, r, n, s in zip(cols["method"], cols["rank"], cols["layers"], cols["share"])}
    assert got[("lora", 8)] == (3, 0.75) and got[("lora", 7)] == (1, 0.25) and got[("lora", 0)] == (0, 0.0)
    assert got[("deep-lora", 0)] == (3, 0.75) and got[("deep-lora", 5)] == (1, 0.25)
    assert len(cols["rank"]) == 2 * 9 and "stamp-x" in _texts(fig)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("wide Deep LoRA (ours, 2 seeds, 4 updates)" in t for t in labels)
    plt.close(fig)


def test_empty_studies_draw_a_figure_that_says_so():
    fig, cols = plotting.numerical_rank_records({}, {}, 8, "stamp-y")
    assert cols["rank"] == [] and any("no records with numerical ranks yet" in t for t in _texts(fig))
    plt.close(fig)
    fig, cols = plotting.rank_sweep_records([], {"lora": {8: 0.5}, "deep": {8: 0.6}}, "stamp-z")
    assert cols["rank"] == [] and any("no rank-sweep records yet" in t for t in _texts(fig))
    plt.close(fig)


def test_rank_sweep_means_over_seeds_with_the_paper_ticks():
    runs = [dict(method=m, rank=8, seed=s, value=v, fitted=True)
            for m, vals in (("lora", (0.1, 0.3)), ("deep-lora-narrow", (0.2, 0.2))) for s, v in enumerate(vals)]
    paper = {"lora": {8: 0.539, 64: 0.175}, "deep": {8: 0.635, 64: 0.667}}
    fig, cols = plotting.rank_sweep_records(runs, paper, "stamp-w")
    assert cols["mean"] == pytest.approx([0.2, 0.2]) and cols["seeds"] == [2, 2]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["8", "64"]
    plt.close(fig)


def test_glue_records_draw_each_seed_and_only_the_drawn_tasks_paper():
    fig, cols = plotting.glue_records({"rte": [0.01, 0.03], "cola": [0.1, -0.02]}, {"rte": 0.029, "cola": 0.09, "qqp": 0.005}, "s")
    assert cols["task"] == ["rte", "rte", "cola", "cola"] and cols["delta"] == [0.01, 0.03, 0.1, -0.02]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["RTE", "COLA"]
    plt.close(fig)
    fig, cols = plotting.glue_records({}, {"rte": 0.029}, "s")
    assert cols["delta"] == [] and any("no GLUE pair yet" in t for t in _texts(fig))
    plt.close(fig)


def test_fit_check_marks_each_study_and_crosses_a_run_that_did_not_fit():
    runs = [dict(study="fewshot-stsb", method="lora", rank=8, task="stsb", samples=16, seed=0, first_loss=4.0, last_loss=0.1, fitted=True),
            dict(study="glue", method="deep-lora", rank=8, task="cola", samples=1024, seed=1, first_loss=0.7, last_loss=0.6, fitted=False)]
    fig, cols = plotting.fit_check(runs, 0.5, "stamp-f")
    assert cols["study"] == ["fewshot-stsb", "glue"] and cols["last_loss"] == [0.1, 0.6] and cols["fitted"] == [True, False]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "fewshot-stsb (1 run)" in labels and "glue (1 run)" in labels and "did not fit (1)" in labels
    assert "wide Deep LoRA" in labels and "last = 0.5 × first" in labels and "stamp-f" in _texts(fig)
    markers = [line.get_marker() for line in fig.axes[0].lines[:2]]
    assert markers == ["o", "x"]
    plt.close(fig)
    fig, cols = plotting.fit_check([], 0.5, "stamp-g")
    assert cols["study"] == [] and any("no stored runs yet" in t for t in _texts(fig))
    plt.close(fig)


def test_glue_scores_draw_each_run_the_untrained_mean_and_the_floor():
    runs = [dict(task="mrpc", method="lora", seed=0, metric="accuracy", value=0.70, initial_value=0.48, learned=True),
            dict(task="mrpc", method="deep-lora", seed=0, metric="accuracy", value=0.67, initial_value=0.50, learned=True),
            dict(task="cola", method="lora", seed=0, metric="matthews", value=0.001, initial_value=0.002, learned=False)]
    fig, cols = plotting.glue_scores(runs, {"mrpc": 0.684}, "stamp-s")
    assert cols["task"] == ["cola", "mrpc", "mrpc"] and cols["value"] == [0.001, 0.70, 0.67]
    assert cols["learned"] == [False, True, True]
    cola, mrpc = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["COLA", "MRPC"]
    levels = sorted(line.get_ydata()[0] for line in mrpc.lines if len(set(line.get_ydata())) == 1)
    assert levels == pytest.approx([0.49, 0.684])  # the untrained mean and the floor
    assert not any(line.get_linestyle() == ":" for line in cola.lines)  # no floor given for CoLA
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["untrained (mean)", "always the majority class", "did not learn"]
    assert "Matthews" in cola.get_ylabel() and "stamp-s" in _texts(fig)
    plt.close(fig)
    fig, cols = plotting.glue_scores([], {}, "stamp-t")
    assert cols["task"] == [] and any("no GLUE records yet" in t for t in _texts(fig))
    plt.close(fig)
