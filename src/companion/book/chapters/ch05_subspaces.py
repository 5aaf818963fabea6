"""Chapter 5: invariant subspaces in BERT fine-tuning, the paper's Figure 1.

BERT fine-tuned on the full STS-B training split with wide Deep LoRA (W = W̄ + W_3 W_2 W_1, every
factor ε-scaled orthogonal at full width) on every attention and MLP matrix (arXiv:2406.04112
(v3), Fig. 1; the authors' scripts/intro.py at deep-lora-transformers@618c410). For every
adapted matrix: the top-10 singular values of ΔW at the end, and how closely the top-8
output-side singular subspace of ΔW(t) agrees with the final one over training (the largest
principal cosine, drawn for the layers that have aligned by step 30, as the authors do), beside
the training loss.
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
    snapshots: tuple[int, ...]  # steps at which every ΔW is decomposed (the authors' save_step_points)
    filter_step: int  # only layers whose cosine at this step exceeds filter_cosine are drawn (authors: 30)
    filter_cosine: float = 0.5  # the authors' threshold (40 of BERT-base's 72 layers pass it)
    top_values: int = 10  # singular values shown per ΔW (paper: top 10)
    subspace_rank: int = 8  # dimension of the compared singular subspaces (paper: top 8)


def config(profile: str, *, steps: int | None = None, online: bool = False, model: str | None = None) -> Config:
    """The chapter's settings for a profile; ``steps`` overrides the number of steps (snapshots
    past it are dropped, the last step is always one); ``model`` the profile's backbone."""
    check_profile_name(profile)
    # Figure 1 adapts attention+MLP with wide depth-3 Deep LoRA on the full training split; the
    # authors' intro_plots.ipynb (618c410) saves ΔW at steps 0, 1, 10, 20, 30, 100, 500, 1000,
    # 1500, 2000, decays the step 1e-4 → 1e-5 (decay_ratio 0.1) and draws the layers whose
    # cosine at step 30 (index 4) exceeds 0.5.
    if profile == "smoke":
        # Smoke: 64 training pairs instead of the full split, so that 60 steps fit them.
        run = adaptation.base(profile, targets="attention-mlp", method="deep-lora", online=online, model=model,
                              steps=adaptation.SMOKE_STEPS, lr_end=1e-4, samples=64)
        cfg = Config(run=run, snapshots=(0, 1, 2, 5, 10, 20, 30, 40, 50, 60), filter_step=10)
    else:
        run = adaptation.base(profile, targets="attention-mlp", method="deep-lora", online=online, model=model,
                              steps=2000, lr_end=1e-5)
        cfg = Config(run=run, snapshots=(0, 1, 10, 20, 30, 100, 500, 1000, 1500, 2000), filter_step=30)
    if steps is not None:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(run, steps=steps),
                                  snapshots=tuple(sorted({t for t in cfg.snapshots if t < steps} | {steps})),
                                  filter_step=min(cfg.filter_step, steps))
    return cfg


@dataclass(frozen=True)
class Result:
    """Everything the chapter plots, for the A adapted layers at the R snapshots.

    Attributes:
      steps: (R,) snapshot steps (0 = before training, the last = the final step).
      layers: the A adapted layer names.
      top_values: (A, k) the top-k singular values of every ΔW at the end.
      cosine: (R, A) the largest principal cosine between the top-r output-side singular
        subspace of ΔW(t) and that of the final ΔW (the authors' "cosine angle", side="right" of
        their (in, out) kernel = the output side of ΔW in the (out, in) layout used here).
      drawn: (A,) the layers whose cosine at ``filter_step`` exceeds ``filter_cosine``.
      loss_steps, loss: the training loss at every logged step.
      run: the fine-tuning run (scores, counts, backbone).
      wall_time_s: seconds for the run and its snapshots.
    """

    config: Config
    steps: np.ndarray
    layers: tuple[str, ...]
    top_values: np.ndarray
    cosine: np.ndarray
    drawn: np.ndarray
    loss_steps: np.ndarray
    loss: np.ndarray
    run: RunResult
    wall_time_s: float


def run(cfg: Config) -> Result:
    """Fine-tune with wide Deep LoRA and follow the output-side singular subspace of every ΔW.

    At every snapshot each adapted layer's ΔW (out, in) is decomposed in float64 and its top
    ``subspace_rank`` left singular vectors kept; afterwards each snapshot is compared with the
    final one (``spectra.largest_principal_cosine``).
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

    record = sorted(set(cfg.snapshots) | {run_cfg.steps})
    (result,) = training.fit(run_cfg, [run_cfg.seed], log_every=max(1, run_cfg.steps // 300),
                             observe_at=record, observe=observe)
    final = snaps[run_cfg.steps]
    cosine = np.array([[spectra.largest_principal_cosine(a[0], b[0]) for a, b in zip(snaps[t], final)]
                       for t in record])
    loss = np.array(result.train_loss, dtype=np.float64)
    return Result(config=cfg, steps=np.array(record), layers=tuple(names),
                  top_values=np.array([s for _, _, s in final]), cosine=cosine,
                  drawn=cosine[record.index(cfg.filter_step)] > cfg.filter_cosine,
                  loss_steps=loss[:, 0].astype(int), loss=loss[:, 1], run=result,
                  wall_time_s=time.perf_counter() - start)


def summary(result: Result) -> dict[str, float | int]:
    """The flat metrics of metrics.json."""
    r, k, cfg = result.run, result.config.subspace_rank, result.config
    at_filter = result.cosine[list(result.steps).index(cfg.filter_step)]
    tail = np.median(result.top_values[:, k] / np.maximum(result.top_values[:, 0], 1e-30))
    window = max(1, len(result.loss) // 10)
    return dict(
        pearson=r.value, pearson_initial=r.initial_value, n_validation=r.n_validation, n_train=r.n_train,
        steps=cfg.run.steps, adapted_layers=len(result.layers), trainable_params=r.trainable_params,
        filter_step=cfg.filter_step, layers_drawn=int(result.drawn.sum()),
        fraction_drawn=float(result.drawn.mean()),
        median_cos_at_start=float(np.median(result.cosine[0])),
        median_cos_at_filter_step=float(np.median(at_filter)),
        median_sigma_after_top_over_top=float(tail),
        loss_first_tenth=float(np.mean(result.loss[:window])), loss_last_tenth=float(np.mean(result.loss[-window:])),
        first_loss=r.first_loss, last_loss=r.last_loss, constant_loss=r.constant_loss, fitted=int(r.fitted),
        run_time_s=result.wall_time_s,
    )


FIGURE = "arXiv:2406.04112 (v3), Fig. 1 (bert-base-cased, full STS-B, 2000 steps, lr 1e-4 → 1e-5)"
PAPER = {
    "pearson": PaperValue(0.888, FIGURE + "; the authors' logs of scripts/intro.py"),
    "drawn": PaperValue("40 of 72", FIGURE + "; the authors' intro_plots.ipynb at 618c410 (filter: cosine at step 30 > 0.5)"),
    "spectrum": PaperValue("a few large singular values per ΔW", FIGURE),
    "loss": PaperValue("decreases", FIGURE),
}


def table(result: Result, stamp: str) -> str:
    """The paper-vs-ours Markdown table."""
    m, r, c, cfg = summary(result), result.run, result.config.run, result.config
    return adaptation.smoke_note(stamp) + f"""
| | paper ({FIGURE}) | this run ({stamp}) |
|---|---|---|
| backbone | bert-base-cased | {r.backbone} |
| validation Pearson at the end | ≈ {PAPER['pearson'].text()} | {r.value:.3f} on {r.n_validation} pairs after {c.steps} steps (lr {c.lr:g} → {c.lr_end:g}) |
| layers whose top-{cfg.subspace_rank} output-side subspace has cosine > {cfg.filter_cosine} with the final one at step {cfg.filter_step} | {PAPER['drawn'].text()} | {m['layers_drawn']} of {m['adapted_layers']} (median cosine {m['median_cos_at_start']:.2f} at step 0, {m['median_cos_at_filter_step']:.2f} at step {cfg.filter_step}) |
| spectrum of ΔW | {PAPER['spectrum'].text()} | median σ_{cfg.subspace_rank + 1}/σ_1 over {len(result.layers)} matrices: {m['median_sigma_after_top_over_top']:.1e} |
| training loss, first → last tenth | {PAPER['loss'].text()} | {m['loss_first_tenth']:.3f} → {m['loss_last_tenth']:.3f} |
| fitted its training data (last loss ≤ half its first and the constant prediction's {r.constant_loss:.2f}) | — | {'yes' if r.fitted else 'no'} ({r.first_loss:.3f} → {r.last_loss:.3f}) |
"""


def check_claims(metrics: dict, profile: str) -> list[claims.Claim]:
    """Figure 1's claims (full profile) and what must hold in every run."""
    claims.require(metrics, "median_cos_at_start", "median_cos_at_filter_step", "fraction_drawn",
                   "loss_first_tenth", "loss_last_tenth", "pearson", "pearson_initial", "filter_step", "fitted")
    start, early = metrics["median_cos_at_start"], metrics["median_cos_at_filter_step"]
    first, last = metrics["loss_first_tenth"], metrics["loss_last_tenth"]
    step = int(metrics["filter_step"])
    out = [
        claims.claim("every number is finite", all(np.isfinite(v) for v in metrics.values())),
        claims.claim(f"the top-8 subspaces move towards their final position early (median cosine at step {step} "
                     "≥ at step 0 + 0.2)", early >= start + 0.2, f"{start:.3f} → {early:.3f}"),
        claims.claim("the training loss falls (last tenth below the first)", last < first, f"{first:.3f} → {last:.3f}"),
        claims.claim("the run fitted its training data (last loss ≤ half its first and the constant predictor's)",
                     bool(metrics["fitted"]), f"{metrics.get('first_loss', float('nan')):.3f} → "
                     f"{metrics.get('last_loss', float('nan')):.3f}"),
        claims.claim("validation Pearson rises above the untrained model's (+0.05)",
                     metrics["pearson"] >= metrics["pearson_initial"] + 0.05,
                     f"{metrics['pearson_initial']:.3f} → {metrics['pearson']:.3f}"),
    ]
    if profile == "full":
        out += [
            claims.claim(f"most layers' subspaces have aligned by step {step} (paper: 40 of 72 with cosine > 0.5; "
                         "here ≥ 40 %)", metrics["fraction_drawn"] >= 0.4, f"{metrics['fraction_drawn']:.0%}"),
            claims.claim("the training loss falls to below half its start", last < 0.5 * first,
                         f"{first:.3f} → {last:.3f}"),
            claims.claim("the final validation Pearson is near the paper's 0.888 (≥ 0.8)", metrics["pearson"] >= 0.8,
                         f"{metrics['pearson']:.3f}"),
        ]
    return claims.verify(out)
