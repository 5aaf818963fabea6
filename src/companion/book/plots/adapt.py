"""Figures of the Deep LoRA chapters 5–7 (BERT fine-tuning)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from companion.book.plots import stamp_figure as _stamp

VANILLA = "tab:orange"
DEEP = "tab:blue"
VARIANT_STYLE = {
    "wide": dict(color=DEEP, ls="-", label="wide Deep LoRA"),
    "compressed": dict(color="tab:green", ls="--", label="compressed Deep LoRA"),
    "random-narrow": dict(color="tab:red", ls="-.", label="random narrow Deep LoRA"),
}


def _short(name: str) -> str:
    """'encoder.layer.3.attention.self.query' → 'L3 query'."""
    parts = name.split(".")
    if parts[0] == "encoder":
        kind = {"attention.self.query": "query", "attention.self.key": "key", "attention.self.value": "value",
                "attention.output.dense": "attn-out", "intermediate.dense": "mlp-in",
                "output.dense": "mlp-out"}.get(".".join(parts[3:]), ".".join(parts[3:]))
        return f"L{parts[2]} {kind}"
    return name


def subspace_figure(steps, layers: Sequence[str], top_values, cosine, drawn, loss_steps, loss, stamp: str):
    """The paper's Figure 1 (arXiv:2406.04112 (v3), Fig. 1): the top singular values of every
    drawn ΔW at the end; the cosine of its top-r output-side singular subspace at step t with
    the final one; the training loss. As the authors do, only the layers whose cosine has passed
    the filter (``drawn``) are drawn.

    Args:
      steps: (R,) snapshot steps; layers: A names; top_values: (A, k); cosine: (R, A);
      drawn: (A,) bool; loss_steps, loss: (T,).
    """
    drawn = np.asarray(drawn, dtype=bool)
    keep = np.flatnonzero(drawn)
    A, k = top_values.shape
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    cmap = plt.get_cmap("plasma")
    for j, a in enumerate(keep):
        c = cmap(0.8 * j / max(len(keep) - 1, 1))
        axes[0].plot(np.arange(1, k + 1), np.maximum(top_values[a], 1e-30), color=c, lw=1, marker=".", ms=3)
        axes[1].plot(steps, cosine[:, a], color=c, lw=0.9, marker=".", ms=3, alpha=0.85)
    if len(keep):
        axes[1].plot(steps, np.median(cosine[:, keep], axis=1), color="k", lw=2, label="median over drawn layers")
        axes[1].legend(fontsize=7, loc="lower right")
    else:
        axes[1].text(0.5, 0.5, "no layer passed the filter", ha="center", transform=axes[1].transAxes)
    axes[1].set_xscale("symlog", linthresh=max(1, int(steps[1]) if len(steps) > 1 else 1))
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("step t")
    axes[1].set_ylabel("cosine with the final subspace")
    axes[1].set_title("top singular subspace (output side), largest principal cosine", fontsize=9)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("index i")
    axes[0].set_ylabel("σ_i(ΔW) at the end")
    axes[0].set_title(f"{len(keep)} of {A} adapted layers drawn (colour = layer order)", fontsize=9)
    axes[2].plot(loss_steps, loss, color=DEEP, lw=1)
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("training loss (batch)")
    axes[2].set_yscale("log")
    _stamp(fig, stamp)
    fig.tight_layout()
    cols: dict[str, list] = {"kind": [], "layer": [], "x": [], "y": []}

    def add(kind, layer, xs, ys):
        cols["kind"] += [kind] * len(xs)
        cols["layer"] += [layer] * len(xs)
        cols["x"] += list(map(float, xs))
        cols["y"] += list(map(float, ys))

    for a in keep:
        add("singular_value", layers[a], np.arange(1, k + 1), top_values[a])
        add("cosine", layers[a], steps, cosine[:, a])
    add("train_loss", "", loss_steps, loss)
    return fig, cols


def _paired_lines(ax, rows: Sequence[dict], key: str, paper: dict, deep_label: str, band: bool) -> dict:
    """Mean score over seeds against ``key`` per method (vanilla orange, deep blue), with a
    ±std/2 band (``band``) or ±std error bars, and the paper's means hollow. A point some of whose
    runs did not fit their training data (rows with ``fitted`` False) is crossed out in grey: it
    is drawn, so the figure matches the table, but it is no result. Returns the columns (with the
    fitted runs per point)."""
    cols: dict[str, list] = {"method": [], key: [], "mean": [], "std": [], "seeds": [], "fitted": []}
    crossed = False
    for method in dict.fromkeys(r["method"] for r in rows):
        colour, label = (VANILLA, "vanilla LoRA") if method == "lora" else (DEEP, deep_label)
        xs = sorted({r[key] for r in rows if r["method"] == method})
        picked = [[r for r in rows if r["method"] == method and r[key] == x] for x in xs]
        vals = [np.array([r["value"] for r in group]) for group in picked]
        fitted = [sum(bool(r.get("fitted", True)) for r in group) for group in picked]
        mean, std = np.array([v.mean() for v in vals]), np.array([v.std() for v in vals])
        if band:
            ax.plot(xs, mean, "o-", color=colour, label=f"{label} (ours)")
            ax.fill_between(xs, mean - std / 2, mean + std / 2, color=colour, alpha=0.2)
        else:
            ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, color=colour, label=f"{label} (ours)")
        bad = [i for i, (f, v) in enumerate(zip(fitted, vals)) if f < len(v)]
        if bad:
            ax.plot([xs[i] for i in bad], mean[bad], "x", color="0.35", ms=11, mew=2, zorder=5,
                    label=None if crossed else "not every run fitted: no result")
            crossed = True
        ref = paper.get("lora" if method == "lora" else "deep", {})
        if ref:
            px = sorted(ref)
            ax.plot(px, [ref[x] for x in px], "o--", mfc="none", color=colour, alpha=0.8,
                    label=f"{label} (paper, bert-base-cased)")
        for name, v in zip(cols, ([method] * len(xs), xs, mean, std, [len(v) for v in vals], fitted)):
            cols[name] += list(v)
    ticks = sorted(set(cols[key]) | {x for m in ("lora", "deep") for x in paper.get(m, {})})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_ylabel("validation Pearson (STS-B)")
    ax.legend(fontsize=7)
    return cols


def fewshot_curve(rows: Sequence[dict], paper: dict, stamp: str, deep_label: str = "Deep LoRA"):
    """Validation score against few-shot size (log x), mean over seeds with a ±std/2 band
    (the paper's colours: vanilla orange, deep blue); the paper's means as hollow markers.

    Args:
      rows: dicts with method ("lora" or a Deep LoRA kind), samples, seed, value.
      paper: {"lora" | "deep": {n: mean}} (empty when not comparable).
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.set_xscale("log")
    cols = _paired_lines(ax, rows, "samples", paper, deep_label, band=True)
    ax.set_xlabel("training examples n")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


def rank_histogram(ranks: dict, max_rank: int, stamp: str):
    """Numerical ranks (singular values > 1e-3) of every adapted ΔW (arXiv:2406.04112, numerical-rank histogram).

    Args:
      ranks: {method: [rank per adapted layer]}; max_rank: right end of the axis.
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    bins = np.arange(0, max_rank + 2) - 0.5
    cols: dict[str, list] = {"method": [], "rank": [], "layers": []}
    width = 0.4
    for i, (method, values) in enumerate(ranks.items()):
        colour, label = (VANILLA, "vanilla LoRA") if method == "lora" else (DEEP, "Deep LoRA")
        counts, _ = np.histogram(values, bins=bins)
        x = np.arange(0, max_rank + 1)
        ax.bar(x + (i - 0.5) * width, counts, width=width, color=colour, label=label)
        cols["method"] += [method] * len(x)
        cols["rank"] += list(x)
        cols["layers"] += list(counts)
    ax.set_xlabel("numerical rank of ΔW (σ > 1e-3)")
    ax.set_ylabel("adapted layers")
    ax.legend(fontsize=7)
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


def rank_robustness(rows: Sequence[dict], paper: dict, stamp: str):
    """Score against the adapter rank r: vanilla LoRA rank r vs narrow Deep LoRA of width r,
    mean ± std over seeds; the paper's means hollow (arXiv:2406.04112, rank robustness).

    Args:
      rows: dicts with method ("lora" | "deep-lora-narrow"), rank, seed, value.
      paper: {"lora" | "deep": {r: mean}} (empty when not comparable).
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.set_xscale("log", base=2)
    cols = _paired_lines(ax, rows, "rank", paper, "narrow Deep LoRA", band=False)
    ax.set_xlabel("rank / width r")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


def variant_curves(compare: dict, paper: dict, stamp: str):
    """Compressed vs wide vs random-narrow Deep LoRA: training loss and validation score over
    steps (arXiv:2406.04112, compressed Deep LoRA); the paper's scores at steps 20/40/80/200 hollow.

    Args:
      compare: {variant: {"curve": [(step, score)], "loss": [(step, loss)], "fitted": bool}}; a
        variant whose run did not fit its training data is labelled so (no result).
      paper: {variant: {step: score}} (empty when not comparable).
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    cols: dict[str, list] = {"variant": [], "kind": [], "step": [], "value": []}
    for name, run in compare.items():
        st = VARIANT_STYLE[name]
        unfit = "" if run.get("fitted", True) else ", did not fit: no result"
        ls, ys = zip(*run["loss"])
        a1.plot(ls, ys, color=st["color"], ls=st["ls"], lw=1, label=st["label"] + unfit)
        cs, vs = zip(*run["curve"])
        a2.plot(cs, vs, color=st["color"], ls=st["ls"], marker=".", label=f"{st['label']} (ours{unfit})")
        if name in paper:
            ps = sorted(paper[name])
            a2.plot(ps, [paper[name][s] for s in ps], "o", mfc="none", color=st["color"],
                    label=f"{st['label']} (paper)")
        for kind, xs, vals in (("train_loss", ls, ys), ("score", cs, vs)):
            cols["variant"] += [name] * len(xs)
            cols["kind"] += [kind] * len(xs)
            cols["step"] += list(xs)
            cols["value"] += list(map(float, vals))
    a1.set_yscale("log")
    a1.set_xlabel("step")
    a1.set_ylabel("training loss (batch)")
    a1.legend(fontsize=7)
    a2.set_xlabel("step")
    a2.set_ylabel("validation Pearson (STS-B)")
    a2.legend(fontsize=7)
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


def glue_deltas(deltas: dict, paper: dict, stamp: str):
    """Violin plot of the per-seed Δ = Deep LoRA − vanilla LoRA per task (arXiv:2406.04112's
    limited-data GLUE), with each task's mean and the paper's mean Δ as a red marker.

    Args:
      deltas: ``statistics.paired_deltas`` output; paper: {task: Δ} (may miss tasks).
    """
    tasks = list(deltas["per_task"])
    fig, ax = plt.subplots(figsize=(max(1.2 * len(tasks) + 2.5, 6.4), 3.6))  # the stamp line needs 6.4 in
    data_ = [deltas["per_task"][t]["deltas"] for t in tasks]
    pos = np.arange(1, len(tasks) + 1)
    if all(len(d) > 1 for d in data_):
        parts = ax.violinplot(data_, positions=pos, showextrema=False)
        for body in parts["bodies"]:
            body.set_facecolor(DEEP)
            body.set_alpha(0.35)
    cols: dict[str, list] = {"task": [], "seed": [], "delta": []}
    for p, t, d in zip(pos, tasks, data_):
        ax.scatter(np.full(len(d), p), d, s=10, color=DEEP, zorder=3)
        ax.plot([p - 0.2, p + 0.2], [np.mean(d)] * 2, color="k", lw=2)
        if t in paper:
            ax.plot(p, paper[t], "D", color="tab:red", ms=6, zorder=4)
        cols["task"] += [t] * len(d)
        cols["seed"] += list(range(len(d)))
        cols["delta"] += list(map(float, d))
    ax.plot([], [], "k-", lw=2, label="our mean Δ")
    if paper:
        ax.plot([], [], "D", color="tab:red", label="paper's mean Δ (bert-base-cased)")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(pos, [t.upper() for t in tasks])
    ax.set_ylabel("Δ = Deep LoRA − vanilla LoRA (per seed)")
    ax.legend(fontsize=7)
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols
