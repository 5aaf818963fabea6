"""Figures of the deep-linear chapters 1–4 (theorem, proof, compression, completion)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from companion.book.plots import stamp_figure as _stamp

LEARNING = "tab:blue"
RHO = "tab:orange"
EVENT_COLOURS = {"A": "tab:blue", "B": "tab:orange", "C": "tab:green", "D": "tab:red"}


def singular_values(steps, sv, rho, in_rho, stamp: str):
    """σ_i(W_l(t)) over t per layer, ρ_l(t) from recursion (1) dashed (arXiv:2406.04112,
    the invariant-subspace theorem; the theorem figure of the authors' ICML 2024 talk).

    Args:
      steps: (R,); sv: (R, L, d); rho: (R, L); in_rho: (L, d) bool, the ρ block at the end.
    """
    R, L, d = sv.shape
    fig, axes = plt.subplots(1, L, figsize=(3.6 * L, 3.2), sharey=True, squeeze=False)
    for l, ax in enumerate(axes[0]):
        for i in range(d):
            ax.plot(steps, sv[:, l, i], color=RHO if in_rho[l, i] else LEARNING, lw=1.0,
                    alpha=0.6 if in_rho[l, i] else 0.9)
        ax.plot(steps, rho[:, l], "k--", lw=1.2, label="ρ_l(t), recursion (1)")
        ax.set_title(f"layer {l + 1}")
        ax.set_xlabel("step t")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("singular values of $W_l(t)$")
    axes[0][0].plot([], [], color=LEARNING, label="2r* learning directions")
    axes[0][0].plot([], [], color=RHO, label="d − 2r* values in the ρ block")
    axes[0][0].legend(fontsize=7, loc="lower left")
    _stamp(fig, stamp)
    fig.tight_layout()
    t, layer, idx = np.meshgrid(steps, np.arange(1, L + 1), np.arange(1, d + 1), indexing="ij")
    columns = {
        "step": t.ravel(), "layer": layer.ravel(), "index": idx.ravel(),
        "singular_value": sv.ravel(),
        "rho_recursion": np.broadcast_to(rho[:, :, None], sv.shape).ravel(),
        "in_rho_block": np.broadcast_to(in_rho[None], sv.shape).astype(int).ravel(),
    }
    return fig, columns


def singular_vector_angles(steps, angles, in_rho, layer: int, stamp: str):
    """Angles of the right singular vectors of W_l(t) to their initial positions.

    Left: degrees, linear. Right: the ρ block's angles on a log scale (float64 round-off).

    Args:
      steps: (R,); angles: (R, d) radians for one layer; in_rho: (d,) bool; layer: 1-based.
    """
    deg = np.degrees(angles)
    d = deg.shape[1]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for i in range(d):
        colour = RHO if in_rho[i] else LEARNING
        a1.plot(steps, deg[:, i], color=colour, lw=1.0)
        if in_rho[i]:
            a2.plot(steps[1:], np.maximum(deg[1:, i], 1e-18), color=RHO, lw=0.8)
    a1.set_xlabel("step t")
    a1.set_ylabel("angle to initial vector (degrees)")
    a1.set_title(f"layer {layer}: {int((~in_rho).sum())} vectors move, {int(in_rho.sum())} do not")
    a1.plot([], [], color=LEARNING, label="learning block")
    a1.plot([], [], color=RHO, label="ρ block")
    a1.legend(fontsize=7)
    a2.set_yscale("log")
    a2.set_xlabel("step t")
    a2.set_ylabel("ρ block: angle to S (degrees)")
    a2.set_title("ρ block on a log scale")
    _stamp(fig, stamp)
    fig.tight_layout()
    t, idx = np.meshgrid(steps, np.arange(1, d + 1), indexing="ij")
    columns = {
        "step": t.ravel(), "layer": np.full(t.size, layer), "index": idx.ravel(),
        "angle_deg": deg.ravel(),
        "in_rho_block": np.broadcast_to(in_rho[None], deg.shape).astype(int).ravel(),
    }
    return fig, columns


def rho_comparison(steps, rho, measured, rel_dev, stamp: str):
    """ρ_l(t) from recursion (1) against the measured ρ-block singular values, and their gap.

    Args:
      steps: (R,); rho: (R, L) recursion; measured: (R, L) mean of the d − 2r* singular values
        closest to ρ_l(t); rel_dev: (R, L) largest relative deviation among them.
    """
    R, L = rho.shape
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for l in range(L):
        c = f"C{l}"
        a1.plot(steps, rho[:, l], color=c, lw=1.5, label=f"layer {l + 1}: recursion (1)")
        a1.plot(steps[:: max(1, R // 25)], measured[:: max(1, R // 25), l], "o", color=c,
                ms=3, mfc="none", label=f"layer {l + 1}: measured")
        a2.plot(steps, np.maximum(rel_dev[:, l], 1e-18), color=c, lw=1.0, label=f"layer {l + 1}")
    a1.set_xlabel("step t")
    a1.set_ylabel("ρ_l(t)")
    a1.legend(fontsize=6, ncol=2)
    a2.set_yscale("log")
    a2.axhline(np.finfo(np.float64).eps, color="0.5", ls=":", lw=1, label="float64 eps")
    a2.set_xlabel("step t")
    a2.set_ylabel("max relative deviation from ρ_l(t)")
    a2.legend(fontsize=6)
    _stamp(fig, stamp)
    fig.tight_layout()
    t, layer = np.meshgrid(steps, np.arange(1, L + 1), indexing="ij")
    columns = {
        "step": t.ravel(), "layer": layer.ravel(), "rho_recursion": rho.ravel(),
        "rho_measured": measured.ravel(), "max_rel_deviation": rel_dev.ravel(),
    }
    return fig, columns


def rho_counts(steps, counts, required: int, stamp: str):
    """Per layer, how many singular values equal ρ_l(t), against the theorem's d − 2r*.

    Args:
      steps: (R,); counts: (R, L) integers; required: d − 2r*; stamp: the figure's stamp.
    """
    R, L = counts.shape
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for l in range(L):
        ax.step(steps, counts[:, l] + 0.08 * l, where="post", lw=1.2, label=f"layer {l + 1}")
    ax.axhline(required, color="k", ls="--", lw=1, label=f"d − 2r* = {required}")
    ax.set_xlabel("step t")
    ax.set_ylabel("# singular values = ρ_l(t)")
    ax.set_ylim(required - 2, counts.max() + 2)
    ax.legend(fontsize=7)
    _stamp(fig, stamp)
    fig.tight_layout()
    t, layer = np.meshgrid(steps, np.arange(1, L + 1), indexing="ij")
    return fig, {"step": t.ravel(), "layer": layer.ravel(), "count": counts.ravel()}


def event_residuals(runs_steps: Sequence[np.ndarray], runs_events: Sequence[np.ndarray],
                    labels: Sequence[str], tolerance: float, stamp: str):
    """Residuals of the proof's events A–D over t (max over layers), one panel per setting.

    Args:
      runs_steps: per setting (R,); runs_events: per setting (R, 4, L); labels: per setting.
    """
    n = len(labels)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), sharey=True, squeeze=False)
    cols: dict[str, list] = {"case": [], "step": [], "event": [], "max_residual_over_layers": []}
    for c, (ax, steps, ev, label) in enumerate(zip(axes[0], runs_steps, runs_events, labels)):
        worst = ev.max(axis=2)  # (R, 4)
        for e, name in enumerate("ABCD"):
            y = np.maximum(worst[:, e], 1e-20)
            ax.plot(steps, y, color=EVENT_COLOURS[name], lw=1.0, label=f"event {name}")
            cols["case"] += [c + 1] * len(steps)
            cols["step"] += list(steps)
            cols["event"] += [name] * len(steps)
            cols["max_residual_over_layers"] += list(worst[:, e])
        ax.axhline(tolerance, color="k", ls="--", lw=1, label=f"tolerance {tolerance:.0e}")
        ax.axhline(np.finfo(np.float64).eps, color="0.5", ls=":", lw=1, label="float64 eps")
        ax.set_yscale("log")
        ax.set_ylim(1e-19, 1e-8)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("step t")
    axes[0][0].set_ylabel("relative residual")
    axes[0][0].legend(fontsize=6, loc="lower right")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


def subspace_dimensions(labels: Sequence[str], dims: Sequence[int], required: Sequence[int],
                        stamp: str):
    """dim S from the proof's construction against the bound d − 2r*, per setting.

    Args:
      labels, dims, required: one entry per setting (label, dim S, d − 2r*); stamp: the stamp.
    """
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.bar(x - 0.2, dims, 0.4, label="dim S (constructed)", color=LEARNING)
    ax.bar(x + 0.2, required, 0.4, label="d − 2r* (theorem's bound)", color=RHO)
    ax.set_xticks(x, [f"case {i + 1}" for i in x])
    ax.set_ylabel("dimension")
    ax.legend(fontsize=7)
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, {"case": list(x + 1), "setting": list(labels), "dim_S": list(dims),
                 "required": list(required)}


# Chapters 3–4: compressed trajectories and deep matrix completion (arXiv:2406.04112, deep matrix
# factorization and completion experiments (authors' notebooks)).
METHOD_STYLE = {
    "original": dict(color="tab:blue", ls="-", label="original"),
    "compressed": dict(color="tab:orange", ls="--", label="compressed (γ)"),
    "compressed-gamma0": dict(color="tab:green", ls=":", label="compressed (γ = 0)"),
    "narrow": dict(color="tab:red", ls="-.", label="random narrow"),
}


def _style(method: str, label: str | None = None) -> dict:
    s = dict(METHOD_STYLE[method])
    if label:
        s["label"] = label
    return s


def trajectory_panels(runs: dict, pcs: dict, quantity: str, ylabel: str, stamp: str,
                      labels: dict | None = None):
    """Three panels as in the paper's trajectory figures
    (arXiv:2406.04112, deep matrix factorization and completion experiments): principal components of the
    end-to-end trajectories, ``quantity`` against iterations, and against wall time.

    Args:
      runs: {method: CompletionRun}; pcs: {method: (R, 2)} projections; quantity:
        "train_loss" or "recovery_error"; labels: optional legend labels per method.
    """
    labels = labels or {}
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(13, 3.6))
    # Long format: "pc" rows hold (PC 1, PC 2); "record" rows hold (step, quantity) and the
    # wall-clock seconds at that step in the *_s column (not compared with baselines).
    cols: dict[str, list] = {"method": [], "kind": [], "x": [], "y": [], "wall_time_s": []}

    def add(method, kind, xs, ys, seconds):
        cols["method"] += [method] * len(xs)
        cols["kind"] += [kind] * len(xs)
        cols["x"] += list(map(float, xs))
        cols["y"] += list(map(float, ys))
        cols["wall_time_s"] += list(map(float, seconds))

    for method, run in runs.items():
        st = _style(method, labels.get(method))
        pc = pcs[method]
        a0.plot(pc[:, 0], pc[:, 1], marker="o", ms=2.5, lw=1.2, **st)
        add(method, "pc", pc[:, 0], pc[:, 1], [float("nan")] * len(pc))
        values = getattr(run, quantity)
        y = np.maximum(values, 1e-300)
        # Steps cost the same throughout a run, so time at step t is t × (measured time per step).
        seconds = run.steps * run.time_per_step_s
        a1.plot(run.steps, y, lw=1.5, **st)
        a2.plot(seconds, y, lw=1.5, **st)
        add(method, "record", run.steps, values, seconds)
    a0.set_xlabel("PC 1 (of the original run)")
    a0.set_ylabel("PC 2")
    a0.set_title("end-to-end trajectories")
    for ax, xl in ((a1, "iteration"), (a2, "wall time (s, compilation excluded)")):
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel(ylabel)
    a0.legend(fontsize=7)
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


def gap_against_theory(steps, gap, exact, bound: float, distance, stamp: str):
    """‖f(Θ(t)) − f_C(t)‖_F against √(d − 2r*)∏ρ_l(t) and the bound's √((d − 2r̂)∏ε_l²)
    (the gap bound, Prop. 2 of the authors' ICML 2024 talk), with the distance to the target
    ‖f − Φ‖_F for scale.

    Args:
      steps, gap, exact, distance: (G,) each (``compression.GapTrack``); bound: the bound on gap²;
      stamp: the figure's stamp.
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    a1.plot(steps, distance, color="0.5", lw=1.2, label="distance to target ‖f − Φ‖_F")
    a1.plot(steps, gap, color="tab:blue", lw=2, label="measured gap ‖f − f_C‖_F")
    a1.plot(steps, exact, "k--", lw=1.2, label="√(d − 2r*) ∏ ρ_l(t)")
    a1.axhline(np.sqrt(bound), color="tab:red", ls=":", lw=1.2, label="bound √((d − 2r̂) ∏ ε_l²)")
    a1.set_yscale("log")
    a1.set_xlabel("iteration")
    a1.set_ylabel("gap")
    a1.legend(fontsize=7)
    rel = np.abs(gap - exact) / exact
    a2.plot(steps, np.maximum(rel, 1e-18), color="tab:blue", lw=1)
    a2.set_yscale("log")
    a2.set_xlabel("iteration")
    a2.set_ylabel("|gap − √(d−2r*)∏ρ| / √(d−2r*)∏ρ")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, {"step": list(steps), "gap": list(gap), "exact": list(exact),
                 "distance_to_target": list(distance),
                 "bound_sqrt": [float(np.sqrt(bound))] * len(steps), "relative_error": list(rel)}


def rank_sweep(rows: list, paper: dict, stamp: str):
    """Steps and wall time to tolerance against r̂: compressed vs random narrow, mean ± std
    over trials (arXiv:2406.04112, deep matrix completion experiments, rank-estimate sweep).

    Args:
      rows: one dict per (r̂, trial, method) with steps, wall_time_s and converged.
      paper: method → (low, high) steps read off the paper's figure, shaded ({} for none).
      stamp: the figure's stamp.
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    cols: dict[str, list] = {"method": [], "rank_estimate": [], "steps_mean": [], "steps_std": [],
                             "time_mean_s": [], "time_std_s": [], "trials": [], "converged": []}
    for method in ("compressed", "narrow"):
        r_hats = sorted({r["rank_estimate"] for r in rows})
        stats = []
        for rh in r_hats:
            sel = [r for r in rows if r["method"] == method and r["rank_estimate"] == rh]
            s = np.array([r["steps"] for r in sel], float)
            t = np.array([r["wall_time_s"] for r in sel], float)
            stats.append((s.mean(), s.std(), t.mean(), t.std(), len(sel), sum(r["converged"] for r in sel)))
        s_mean, s_std, t_mean, t_std, n, conv = map(np.array, zip(*stats))
        st = _style(method)
        a1.errorbar(r_hats, s_mean, yerr=s_std, marker="o", capsize=3, **st)
        a2.errorbar(r_hats, t_mean, yerr=t_std, marker="o", capsize=3, **st)
        if method in paper:
            lo, hi = paper[method]
            a1.axhspan(lo, hi, color=st["color"], alpha=0.12, label=f"paper, {st['label']} (d=1000)")
        for k, v in zip(cols, ([method] * len(r_hats), r_hats, s_mean, s_std, t_mean, t_std, n, conv)):
            cols[k] += list(v)
    a1.set_xlabel("rank estimate r̂")
    a1.set_ylabel("steps to tolerance")
    a1.legend(fontsize=7)
    a2.set_xlabel("rank estimate r̂")
    a2.set_ylabel("wall time to tolerance (s)")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols


def depth_study(rows: list, stamp: str):
    """Depth 2 vs 3 over hidden widths: final recovery error and steps
    (arXiv:2406.04112, deep matrix completion experiments, depth study).

    Args:
      rows: one dict per (depth, hidden) with recovery_error, steps and converged.
      stamp: the figure's stamp.
    """
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    cols: dict[str, list] = {"depth": [], "hidden": [], "recovery_error": [], "steps": [], "converged": []}
    for depth, colour in ((3, "tab:blue"), (2, "tab:orange")):
        sel = sorted((r for r in rows if r["depth"] == depth), key=lambda r: r["hidden"])
        h = [r["hidden"] for r in sel]
        a1.plot(h, [r["recovery_error"] for r in sel], "o-", color=colour, label=f"depth {depth}")
        a2.plot(h, [r["steps"] for r in sel], "o-", color=colour, label=f"depth {depth}")
        for r in sel:
            for k in cols:
                cols[k].append(r[k])
    a1.set_yscale("log")
    a1.set_xlabel("hidden width")
    a1.set_ylabel("final recovery error")
    a1.legend(fontsize=7)
    a2.set_xlabel("hidden width")
    a2.set_ylabel("steps (budget if not converged)")
    _stamp(fig, stamp)
    fig.tight_layout()
    return fig, cols
