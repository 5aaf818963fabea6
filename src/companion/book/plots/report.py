"""Figures of the reproduction report (chapter 8), drawn from stored study records."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from companion.adapt.metrics import NAMES as METRIC_NAMES
from companion.book.plots import stamp_figure as _stamp
from companion.book.plots.adapt import DEEP, VANILLA, VARIANT_STYLE, glue_deltas, rank_robustness

# Vanilla orange and wide Deep LoRA blue as in the paper's few-shot plot; compressed green, as
# chapter 6 draws it.
METHOD_STYLE = {
    "lora": dict(color=VANILLA, label="vanilla LoRA"),
    "deep-lora-compressed": dict(color="tab:green", label="compressed Deep LoRA"),
    "deep-lora": dict(color=DEEP, label="wide Deep LoRA"),
}


def fewshot_records(runs: Sequence[dict], deltas: Sequence[dict], paper: dict, paper_delta: dict, stamp: str):
    """Few-shot STS-B from the records: validation Pearson per run against n (left) and the paired
    Δ = Deep LoRA − vanilla LoRA per seed with its 95 % paired-bootstrap interval (right), the
    paper's values hollow / as stars (arXiv:2406.04112, few-shot STS-B).

    Args:
      runs: one dict per record: method, samples, seed, value, fitted.
      deltas: one dict per (variant, n) judged: method, samples, values (per-seed Δ), mean, low, high.
      paper: {"lora" | "deep": {n: mean}} (the paper's means; bert-base-cased).
      paper_delta: {n: the paper's Δ}.
      stamp: the profile-and-device line.

    Returns:
      (figure, columns): columns hold every run drawn (kind "run") and every Δ (kind "delta").
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    cols: dict[str, list] = {"kind": [], "method": [], "samples": [], "seed": [], "value": [], "fitted": [],
                             "low": [], "high": []}
    methods = [m for m in METHOD_STYLE if any(r["method"] == m for r in runs)]
    offsets = {m: (i - (len(methods) - 1) / 2) * 0.06 for i, m in enumerate(methods)}
    for method in methods:
        style = METHOD_STYLE[method]
        mine = [r for r in runs if r["method"] == method]
        xs = sorted({r["samples"] for r in mine})
        for r in mine:
            x = r["samples"] * 10 ** offsets[method]
            left.plot(x, r["value"], "o" if r["fitted"] else "x", color=style["color"], ms=4, alpha=0.7)
        means = [np.mean([r["value"] for r in mine if r["samples"] == x and r["fitted"]] or [np.nan]) for x in xs]
        left.plot(xs, means, "-", color=style["color"], label=f"{style['label']} (ours, mean of fitted runs)")
        for r in mine:
            for name, value in zip(cols, ("run", method, r["samples"], r["seed"], r["value"], r["fitted"], "", "")):
                cols[name].append(value)
    for key, method in (("lora", "lora"), ("deep", "deep-lora")):
        ref = paper.get(key, {})
        if ref:
            px = sorted(ref)
            left.plot(px, [ref[x] for x in px], "o--", mfc="none", color=METHOD_STYLE[method]["color"], alpha=0.8,
                      label=f"{METHOD_STYLE[method]['label']} (paper, bert-base-cased)")
    left.set_xscale("log")
    ticks = sorted({r["samples"] for r in runs} | set(paper.get("lora", {})))
    left.set_xticks(ticks, [str(t) for t in ticks])
    left.minorticks_off()
    left.set_xlabel("training examples n")
    left.set_ylabel("validation Pearson (STS-B)")
    left.legend(fontsize=6.5)
    left.set_title("every run (× = did not fit)", fontsize=9)

    right.axhline(0.0, color="0.5", lw=0.8)
    for d in deltas:
        style = METHOD_STYLE[d["method"]]
        x = d["samples"] * 10 ** offsets.get(d["method"], 0.0)
        right.plot([x] * len(d["values"]), d["values"], "o", color=style["color"], ms=4, alpha=0.6)
        if d["low"] is not None:
            right.errorbar([x], [d["mean"]], yerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt="s",
                           color=style["color"], capsize=4, label=f"{style['label']} − vanilla (ours, 95 %)")
        for name, value in zip(cols, ("delta", d["method"], d["samples"], "", d["mean"], True,
                                      "" if d["low"] is None else d["low"], "" if d["high"] is None else d["high"])):
            cols[name].append(value)
    if paper_delta:
        px = sorted(paper_delta)
        right.plot(px, [paper_delta[x] for x in px], "*", color="k", ms=10, label="wide Deep LoRA − vanilla (paper)")
    right.set_xscale("log")
    right.set_xticks(ticks, [str(t) for t in ticks])
    right.minorticks_off()
    right.set_xlabel("training examples n")
    right.set_ylabel("paired Δ Pearson")
    right.set_title("Deep LoRA − vanilla LoRA, paired by seed", fontsize=9)
    handles, labels = right.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    right.legend(unique.values(), unique.keys(), fontsize=6.5)
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


# Record methods of the compressed-vs-wide comparison, as chapter 6 names its variants.
COMPARE_VARIANT = {"deep-lora": "wide", "deep-lora-compressed": "compressed", "deep-lora-narrow": "random-narrow"}


def compare_records(runs: Sequence[dict], paper: dict, stamp: str):
    """Compressed vs wide vs random-narrow Deep LoRA from the records: training loss (mean over
    seeds) and validation Pearson over steps (each seed thin, the mean bold), the paper's scores at
    steps 20, 40, 80, 200 hollow (arXiv:2406.04112, compressed Deep LoRA; one seed, bert-base-cased).

    Args:
      runs: one dict per record: method, seed, curve [(step, score)], loss [(step, loss)], learned.
      paper: {variant: {step: score}} with chapter 6's variant names.
      stamp: the profile-and-device line.

    Returns:
      (figure, columns): every point drawn, per run (kind "score" or "train_loss").
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    cols: dict[str, list] = {"method": [], "seed": [], "kind": [], "step": [], "value": []}
    for method, variant in COMPARE_VARIANT.items():
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        st = VARIANT_STYLE[variant]
        unlearned = sum(not r["learned"] for r in mine)
        note = f", {unlearned} did not learn" if unlearned else ""
        steps = [s for s, _ in mine[0]["curve"]]
        scores = np.array([[v for _, v in r["curve"]] for r in mine])
        loss_steps = [s for s, _ in mine[0]["loss"]]
        losses = np.array([[v for _, v in r["loss"]] for r in mine])
        for row in scores:
            a2.plot(steps, row, color=st["color"], ls=st["ls"], lw=0.6, alpha=0.5)
        a2.plot(steps, scores.mean(axis=0), color=st["color"], ls=st["ls"], lw=2,
                label=f"{st['label']} (ours, mean of {len(mine)} seeds{note})")
        a1.plot(loss_steps, losses.mean(axis=0), color=st["color"], ls=st["ls"], lw=1,
                label=st["label"])
        if variant in paper:
            ps = sorted(paper[variant])
            a2.plot(ps, [paper[variant][s] for s in ps], "o", mfc="none", color=st["color"],
                    label=f"{st['label']} (paper, seed 0)")
        for r in mine:
            for kind, xs, vals in (("score", [s for s, _ in r["curve"]], [v for _, v in r["curve"]]),
                                   ("train_loss", [s for s, _ in r["loss"]], [v for _, v in r["loss"]])):
                cols["method"] += [method] * len(vals)
                cols["seed"] += [r["seed"]] * len(vals)
                cols["kind"] += [kind] * len(vals)
                cols["step"] += list(xs)
                cols["value"] += [float(v) for v in vals]
    if not runs:
        a2.text(0.5, 0.5, "no compressed-vs-wide records yet", ha="center", va="center", transform=a2.transAxes)
    a1.set_yscale("log")
    a1.set_xlabel("step")
    a1.set_ylabel("training loss (batch, mean over seeds)")
    a2.set_xlabel("step")
    a2.set_ylabel("validation Pearson (STS-B)")
    for ax in (a1, a2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5)
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


# Markers of the fit check: one per study, so that every stored run appears once, by the study
# that made it (colour: the method, as in the other figures).
STUDY_MARKER = {"fewshot-stsb": "o", "rank-sweep": "s", "compressed-vs-wide": "^", "glue": "D"}
NARROW_STYLE = dict(color=VARIANT_STYLE["random-narrow"]["color"], label="narrow Deep LoRA")


def fit_check(runs: Sequence[dict], ratio: float, stamp: str):
    """Did each run fit its training data? Last against first training loss of every stored run
    (log–log; STS-B's squared error and GLUE's cross-entropy on one axis), with the line
    last = ``ratio`` × first below which a run counts as fitted (it must also beat the constant
    prediction's loss, which the record's ``fitted`` holds). Colour: the method; marker: the study
    (``STUDY_MARKER``; another study's runs are drawn as points); a cross: a run that did not fit,
    which every comparison leaves out (this project's rule, ``training.fit_verdict``).

    Args:
      runs: one dict per record: study (its folder's name), method, rank (the adapter's), task,
        samples, seed, first_loss, last_loss, fitted.
      ratio: ``training.FIT_RATIO``.

    Returns:
      (figure, columns): the columns hold every run drawn, in the order of ``runs``.
    """
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    names = ("study", "method", "rank", "task", "samples", "seed", "first_loss", "last_loss", "fitted")
    cols: dict[str, list] = {name: [r[name] for r in runs] for name in names}
    styles = {**METHOD_STYLE, "deep-lora-narrow": NARROW_STYLE}
    for r in runs:
        style = styles.get(r["method"], dict(color="0.4"))
        marker = STUDY_MARKER.get(r["study"], ".") if r["fitted"] else "x"
        ax.plot(r["first_loss"], r["last_loss"], marker, color=style["color"], ms=5, alpha=0.8,
                mfc="none" if r["fitted"] else None)
    handles = []
    for method in [m for m in styles if any(r["method"] == m for r in runs)]:
        handles.append(plt.Line2D([], [], ls="", marker="o", color=styles[method]["color"], label=styles[method]["label"]))
    for study in [s for s in STUDY_MARKER if any(r["study"] == s for r in runs)]:
        n = sum(r["study"] == study for r in runs)
        handles.append(plt.Line2D([], [], ls="", marker=STUDY_MARKER[study], mfc="none", color="0.3",
                                  label=f"{study} ({n} run{'' if n == 1 else 's'})"))
    unfitted = sum(not r["fitted"] for r in runs)
    if unfitted:
        handles.append(plt.Line2D([], [], ls="", marker="x", color="0.3", label=f"did not fit ({unfitted})"))
    firsts = [r["first_loss"] for r in runs]
    if firsts:
        span = np.array([min(firsts) / 2, max(firsts) * 2])
        handles += ax.plot(span, span, color="0.6", lw=0.8, label="last = first")
        handles += ax.plot(span, ratio * span, color="0.3", ls=":", lw=1, label=f"last = {ratio:g} × first")
    else:
        ax.text(0.5, 0.5, "no stored runs yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("first training loss (mean of the first steps)")
    ax.set_ylabel("last training loss")
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


def rank_sweep_records(runs: Sequence[dict], paper: dict, stamp: str):
    """The rank sweep from the records: validation Pearson against r for vanilla LoRA of rank r and
    narrow Deep LoRA of width r (mean ± std over seeds, ``adapt.rank_robustness``), the paper's
    means hollow (arXiv:2406.04112, rank robustness; 5 seeds, bert-base-cased).

    Args:
      runs: one dict per run: method ("lora" | "deep-lora-narrow"), rank, seed, value, fitted.
      paper: {"lora" | "deep": {r: mean}}.

    Returns:
      (figure, columns) as ``adapt.rank_robustness``; an empty figure that says so without runs.
    """
    if runs:
        return rank_robustness(runs, paper, stamp)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.text(0.5, 0.5, "no rank-sweep records yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("rank / width r")
    ax.set_ylabel("validation Pearson (STS-B)")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, {"method": [], "rank": [], "mean": [], "std": [], "seeds": [], "fitted": []}


def numerical_rank_records(ranks: dict, seeds: dict, max_rank: int, stamp: str):
    """Numerical ranks of every adapted ΔW from the records (the authors' rule, ``adapters.
    numerical_ranks``), each method's share of adapted layers at each rank, pooled over its seeds.
    The paper's histogram (arXiv:2406.04112, numerical-rank histogram; n = 256, seed 0,
    bert-base-cased) has vanilla LoRA's every update at rank 8, drawn as a hollow marker; its Deep
    LoRA updates are mostly at 0 and spread over 1–8, which the caption says in words.

    Args:
      ranks: {method: [rank of each adapted layer, over every seed]}; seeds: {method: seed count}.
      max_rank: right end of the axis (the adapter rank).

    Returns:
      (figure, columns): method, rank, layers, share.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    cols: dict[str, list] = {"method": [], "rank": [], "layers": [], "share": []}
    x = np.arange(0, max_rank + 1)
    drawn = [m for m in METHOD_STYLE if ranks.get(m)]
    width = 0.8 / max(len(drawn), 1)
    for i, method in enumerate(drawn):
        values = np.asarray(ranks[method])
        counts = np.array([(values == r).sum() for r in x])
        share = counts / len(values)
        st = METHOD_STYLE[method]
        ax.bar(x + (i - (len(drawn) - 1) / 2) * width, share, width=width, color=st["color"],
               label=f"{st['label']} (ours, {seeds.get(method, 0)} seeds, {len(values)} updates)")
        cols["method"] += [method] * len(x)
        cols["rank"] += list(x)
        cols["layers"] += [int(c) for c in counts]
        cols["share"] += [float(s) for s in share]
    if drawn:
        ax.plot([max_rank], [1.0], "o", mfc="none", ms=9, color=VANILLA, label="vanilla LoRA (paper: every update)")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no records with numerical ranks yet (n = 256)", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xticks(x)
    ax.set_xlabel("numerical rank of ΔW")
    ax.set_ylabel("share of adapted layers")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


def glue_records(per_task: dict, paper: dict, stamp: str):
    """Limited-data GLUE from the records: per task the per-seed Δ = wide Deep LoRA − vanilla LoRA
    (``adapt.glue_deltas``), the paper's mean Δ as a red diamond (arXiv:2406.04112, limited-data
    GLUE; 10 seeds, bert-base-cased).

    Args:
      per_task: {task: [Δ of each seed whose two runs learned]} (the judged GLUE rows' values).
      paper: {task: Δ}; only the tasks drawn are marked.

    Returns:
      (figure, columns) as ``adapt.glue_deltas``; an empty figure that says so without a pair.
    """
    if per_task:
        deltas = {"per_task": {t: {"deltas": list(v)} for t, v in per_task.items()}}
        return glue_deltas(deltas, {t: paper[t] for t in per_task if t in paper}, stamp)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.text(0.5, 0.75, "no GLUE pair yet: a seed is drawn once its vanilla LoRA\nand Deep LoRA runs are both stored and learned",
            ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set_xticks([])
    ax.set_ylim(-0.1, 0.1)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_ylabel("Δ = Deep LoRA − vanilla LoRA (per seed)")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, {"task": [], "seed": [], "delta": []}


def glue_scores(runs: Sequence[dict], floors: dict, stamp: str):
    """Limited-data GLUE from the records, as scores rather than Δ: per task each seed's validation
    score of vanilla LoRA and wide Deep LoRA (a line joins one seed's two runs; hollow: the run did
    not learn), beside the untrained model's mean score and the score of always answering the
    scored validation examples' majority class (``report.glue_floors``). arXiv:2406.04112
    (limited-data GLUE) reports Δ only; this figure shows whether the scores behind a Δ cleared the
    floor a constant answer sets.

    Args:
      runs: one dict per record: task, method ("lora" | "deep-lora"), seed, metric, value,
        initial_value, learned.
      floors: {task: majority-class score}; tasks without one (STS-B, or no data here) get no line.

    Returns:
      (figure, columns) with columns task, method, seed, value, learned; an empty figure that says so
      without runs.
    """
    cols: dict[str, list] = {"task": [], "method": [], "seed": [], "value": [], "learned": []}
    tasks = sorted({r["task"] for r in runs})
    if not tasks:
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
        ax.text(0.5, 0.5, "no GLUE records yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        _stamp(fig, stamp)
        fig.tight_layout()
        return fig, cols
    methods = ("lora", "deep-lora")
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(2.4 * len(tasks), 6.4), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [r for r in runs if r["task"] == task and r["method"] in methods]
        by_seed: dict[int, dict[str, dict]] = {}
        for r in mine:
            by_seed.setdefault(r["seed"], {})[r["method"]] = r
        for seed, pair in sorted(by_seed.items()):
            if len(pair) == 2:
                ax.plot([0, 1], [pair["lora"]["value"], pair["deep-lora"]["value"]], color="0.75", lw=0.8, zorder=1)
        for x, method in enumerate(methods):
            style = METHOD_STYLE[method]
            for r in sorted((r for r in mine if r["method"] == method), key=lambda r: r["seed"]):
                ax.scatter(x, r["value"], s=22, zorder=3, color=style["color"] if r["learned"] else "none",
                           edgecolors=style["color"])
                for key, value in (("task", task), ("method", method), ("seed", r["seed"]),
                                   ("value", float(r["value"])), ("learned", bool(r["learned"]))):
                    cols[key].append(value)
        ax.axhline(float(np.mean([r["initial_value"] for r in mine])), color="0.4", ls="--", lw=0.9,
                   label="untrained (mean)")
        if task in floors:
            ax.axhline(floors[task], color="tab:red", ls=":", lw=1.2, label="always the majority class")
        ax.set_xticks([0, 1], ["vanilla\nLoRA", "wide\nDeep LoRA"])
        ax.set_xlim(-0.5, 1.5)
        ax.set_title(task.upper(), fontsize=10)
        ax.set_ylabel(f"validation {METRIC_NAMES.get(mine[0]['metric'], mine[0]['metric'])}" if mine else "")
    handles, labels = [], []
    for ax in axes[0]:  # one legend for the figure, each line once
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if not all(cols["learned"]):
        handles.append(plt.Line2D([], [], marker="o", ls="", mfc="none", mec="0.3"))
        labels.append("did not learn")
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.03), ncol=len(labels), fontsize=7,
               frameon=False)
    _stamp(fig, stamp)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig, cols
