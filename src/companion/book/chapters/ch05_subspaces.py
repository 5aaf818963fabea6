"""Chapter 5: invariant subspaces in BERT fine-tuning, the paper's Figure 1.

BERT fine-tuned on the full STS-B training split with wide Deep LoRA (W = W̄ + W_3 W_2 W_1, every
factor ε-scaled orthogonal at full width) on every attention and MLP matrix (arXiv:2406.04112
(v3), Fig. 1; the authors' scripts/intro.py at deep-lora-transformers@618c410). For every
adapted matrix: the top-10 singular values of ΔW at the end, and how closely the top-8 left and
right singular subspaces of ΔW(t) agree with the final ones over training, beside the loss.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from companion.adapt import adapters, spectra, training
from companion.adapt.training import FinetuneConfig, RunResult
from companion.book import claims
from companion.book.chapters import adaptation
from companion.book.claims import PaperValue
from companion.book.profiles import check_profile_name

NOTEBOOK = "05_invariant_subspaces_bert"
PRECISION = "float32"  # how tightly smoke runs reproduce across machines (book.regression.tolerance)


@dataclass(frozen=True)
class Config:
    """Chapter 5's settings."""

    run: FinetuneConfig  # the one fine-tuning run (paper: full STS-B, wide Deep LoRA, attention+MLP)
    record_every: int  # steps between snapshots of every ΔW's singular subspaces
    top_values: int = 10  # singular values shown per ΔW (paper: top 10)
    subspace_rank: int = 8  # dimension of the compared singular subspaces (paper: top 8)


def config(profile: str, *, steps: int | None = None, online: bool = False) -> Config:
    """The chapter's settings for a profile; ``steps`` overrides the number of steps."""
    check_profile_name(profile)
    # Figure 1 adapts attention+MLP with wide depth-3 Deep LoRA on the full training split.
    if profile == "smoke":
        run = adaptation.base(profile, targets="attention-mlp", method="deep-lora", online=online,
                              steps=60, lr_end=1e-4)
        record_every = 5
    else:  # paper: 2000 steps, lr 1e-4 decayed linearly to 1e-5
        run = adaptation.base(profile, targets="attention-mlp", method="deep-lora", online=online,
                              steps=2000, lr_end=1e-5)
        record_every = 50
    if steps is not None:
        run = dataclasses.replace(run, steps=steps)
    return Config(run=run, record_every=record_every)


@dataclass(frozen=True)
class Result:
    """Everything the chapter plots, for the A adapted layers at R snapshots.

    Attributes:
      steps: (R,) snapshot steps (0 = before training, the last = the final step).
      layers: the A adapted layer names.
      top_values: (A, k) the top-k singular values of every ΔW at the end.
      cos_left, cos_right: (R, A) mean cosine of the principal angles between the top-r left
        (output-side) / right (input-side) singular subspace of ΔW(t) and that of the final ΔW.
      loss_steps, loss: the training loss at every logged step.
      run: the fine-tuning run (scores, counts, backbone).
      wall_time_s: seconds for the run and its snapshots.
    """

    config: Config
    steps: np.ndarray
    layers: tuple[str, ...]
    top_values: np.ndarray
    cos_left: np.ndarray
    cos_right: np.ndarray
    loss_steps: np.ndarray
    loss: np.ndarray
    run: RunResult
    wall_time_s: float


def run(cfg: Config) -> Result:
    """Fine-tune with wide Deep LoRA and follow the singular subspaces of every ΔW.

    At every ``record_every`` steps each adapted layer's ΔW (paper layout (out, in)) is
    decomposed in float64 and its top ``subspace_rank`` singular vectors kept; afterwards each
    snapshot is compared with the final one (``spectra.subspace_cosine``).
    """
    start = time.perf_counter()
    run_cfg = dataclasses.replace(cfg.run, model=training.choose_backbone(cfg.run.model, cfg.run.online))
    snaps: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    names: list[str] = []

    def observe(step, _seed, model):
        layers = adapters.adapted_layers(model)
        names[:] = [n for n, _ in layers]
        snaps[step] = [spectra.top_singular_bases(np.asarray(layer.adapter.delta()).T, cfg.subspace_rank,
                                                  cfg.top_values) for _, layer in layers]

    record = sorted(set(range(0, run_cfg.steps + 1, cfg.record_every)) | {run_cfg.steps})
    (result,) = training.fit(run_cfg, [run_cfg.seed], log_every=max(1, run_cfg.steps // 300),
                             observe_at=record, observe=observe)
    final = snaps[run_cfg.steps]
    cos = [np.array([[spectra.subspace_cosine(a[side], b[side]) for a, b in zip(snaps[t], final)]
                     for t in record]) for side in (0, 1)]
    loss = np.array(result.train_loss, dtype=np.float64)
    return Result(config=cfg, steps=np.array(record), layers=tuple(names),
                  top_values=np.array([s for _, _, s in final]), cos_left=cos[0], cos_right=cos[1],
                  loss_steps=loss[:, 0].astype(int), loss=loss[:, 1], run=result,
                  wall_time_s=time.perf_counter() - start)


def _quarter(result: Result) -> int:
    """Index of the snapshot a quarter of the way through training."""
    return int(np.searchsorted(result.steps, result.config.run.steps // 4))


def summary(result: Result) -> dict[str, float | int]:
    """The flat metrics of metrics.json."""
    r, q, k = result.run, _quarter(result), result.config.subspace_rank
    tail = np.median(result.top_values[:, k] / np.maximum(result.top_values[:, 0], 1e-30))
    window = max(1, len(result.loss) // 10)
    return dict(
        pearson=r.value, pearson_initial=r.initial_value, n_validation=r.n_validation, n_train=r.n_train,
        steps=result.config.run.steps, adapted_layers=len(result.layers), trainable_params=r.trainable_params,
        median_cos_left_at_start=float(np.median(result.cos_left[0])),
        median_cos_right_at_start=float(np.median(result.cos_right[0])),
        median_cos_left_at_quarter=float(np.median(result.cos_left[q])),
        median_cos_right_at_quarter=float(np.median(result.cos_right[q])),
        median_sigma_after_top_over_top=float(tail),
        loss_first_tenth=float(np.mean(result.loss[:window])), loss_last_tenth=float(np.mean(result.loss[-window:])),
        run_time_s=result.wall_time_s,
    )


FIGURE = "arXiv:2406.04112 (v3), Fig. 1 (bert-base-cased, full STS-B, 2000 steps, lr 1e-4 → 1e-5)"
PAPER = {
    "pearson": PaperValue(0.888, FIGURE + "; the authors' logs of scripts/intro.py"),
    "subspaces": PaperValue("align early in training", FIGURE),
    "spectrum": PaperValue("a few large singular values per ΔW", FIGURE),
    "loss": PaperValue("decreases", FIGURE),
}


def table(result: Result, stamp: str) -> str:
    """The paper-vs-ours Markdown table."""
    m, r, c = summary(result), result.run, result.config.run
    at = result.steps[_quarter(result)]
    return f"""
| | paper ({FIGURE}) | this run ({stamp}) |
|---|---|---|
| backbone | bert-base-cased | {r.backbone} |
| validation Pearson at the end | ≈ {PAPER['pearson'].text()} | {r.value:.3f} on {r.n_validation} pairs after {c.steps} steps (lr {c.lr:g} → {c.lr_end:g}) |
| top-{result.config.subspace_rank} singular subspaces vs the final ones | {PAPER['subspaces'].text()} | median cosine at step {at}: left {m['median_cos_left_at_quarter']:.3f}, right {m['median_cos_right_at_quarter']:.3f} |
| spectrum of ΔW | {PAPER['spectrum'].text()} | median σ_{result.config.subspace_rank + 1}/σ_1 over {len(result.layers)} matrices: {m['median_sigma_after_top_over_top']:.1e} |
| training loss, first → last tenth | {PAPER['loss'].text()} | {m['loss_first_tenth']:.3f} → {m['loss_last_tenth']:.3f} |
"""


def check_claims(metrics: dict, profile: str) -> list[claims.Claim]:
    """Figure 1's claims (full profile) and what must hold in every run."""
    claims.require(metrics, "median_cos_left_at_quarter", "median_cos_right_at_quarter", "loss_first_tenth",
                   "loss_last_tenth", "pearson", "median_cos_left_at_start", "median_cos_right_at_start")
    cl, cr = metrics["median_cos_left_at_quarter"], metrics["median_cos_right_at_quarter"]
    first, last = metrics["loss_first_tenth"], metrics["loss_last_tenth"]
    out = [
        claims.claim("every number is finite", all(np.isfinite(v) for v in metrics.values())),
        claims.claim("the top-8 subspaces move towards their final position early (median cosine at a quarter "
                     "of training ≥ at the start + 0.2, both sides)",
                     min(cl - metrics["median_cos_left_at_start"], cr - metrics["median_cos_right_at_start"]) >= 0.2,
                     f"left {metrics['median_cos_left_at_start']:.3f} → {cl:.3f}, "
                     f"right {metrics['median_cos_right_at_start']:.3f} → {cr:.3f}"),
        claims.claim("the training loss falls (last tenth below the first)", last < first, f"{first:.3f} → {last:.3f}"),
    ]
    if profile == "full":
        out += [
            claims.claim("the top-8 subspaces align with the final ones by a quarter of training (median cosine ≥ 0.8)",
                         cl >= 0.8 and cr >= 0.8, f"left {cl:.3f}, right {cr:.3f}"),
            claims.claim("the training loss falls to below half its start", last < 0.5 * first,
                         f"{first:.3f} → {last:.3f}"),
            claims.claim("the final validation Pearson is near the paper's 0.888 (≥ 0.8)", metrics["pearson"] >= 0.8,
                         f"{metrics['pearson']:.3f}"),
        ]
    return claims.verify(out)
