"""The experiments of chapters 5–7 (companion.book.experiments, Deep LoRA part) and the engine
features they use: curves, snapshots, compile reuse, truncated backbones, paired differences."""

import dataclasses

import numpy as np
import pytest

from companion.adapt import bert, glue as data, finetune
from companion.book import configs, experiments


# ---- pure helpers (no data needed) ----------------------------------------------------------


def _basis(rng, n, k):
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


@pytest.mark.parametrize("theta", [0.0, 0.3, 1.0, np.pi / 2])
def test_subspace_cosine_of_known_angles(theta):
    """Two planes in R^5 sharing e1 and at angle θ in the second direction: cosines (1, cos θ)."""
    a = np.eye(5)[:, :2]
    b = np.stack([np.eye(5)[0], np.cos(theta) * np.eye(5)[1] + np.sin(theta) * np.eye(5)[2]], axis=1)
    assert experiments.subspace_cosine(a, b) == pytest.approx((1 + np.cos(theta)) / 2, abs=1e-12)


def test_subspace_cosine_ignores_the_basis_and_errors_on_shapes():
    rng = np.random.default_rng(0)
    a = _basis(rng, 40, 8)
    rot = _basis(rng, 8, 8)  # another orthonormal basis of the same subspace
    assert experiments.subspace_cosine(a, a @ rot) == pytest.approx(1.0, abs=1e-12)
    other = _basis(rng, 40, 8)
    other -= a @ (a.T @ other)  # orthogonal to span(a)
    other, _ = np.linalg.qr(other)
    assert experiments.subspace_cosine(a, other) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="equal shape"):
        experiments.subspace_cosine(a, a[:, :4])


def test_paired_deltas_by_hand():
    rows = []
    values = {("rte", "lora"): [0.50, 0.60, 0.55], ("rte", "deep-lora"): [0.56, 0.61, 0.55],
              ("cola", "lora"): [0.10, 0.20], ("cola", "deep-lora"): [0.30, 0.25]}
    for (task, method), vals in values.items():
        rows += [dict(task=task, method=method, seed=s, value=v) for s, v in enumerate(vals)]
    d = experiments.paired_deltas(rows, "deep-lora")
    rte, cola = np.array([0.06, 0.01, 0.0]), np.array([0.20, 0.05])
    assert d["per_task"]["rte"]["deltas"] == pytest.approx(rte.tolist())
    assert d["per_task"]["rte"]["mean"] == pytest.approx(rte.mean())
    assert d["per_task"]["cola"]["std"] == pytest.approx(cola.std(ddof=1))
    assert d["overall_mean"] == pytest.approx(np.concatenate([rte, cola]).mean())
    pooled = np.sqrt((2 * rte.var(ddof=1) + 1 * cola.var(ddof=1)) / 3)
    assert d["pooled_std"] == pytest.approx(pooled)
    with pytest.raises(ValueError, match="need pairs|Δ needs pairs"):
        experiments.paired_deltas(rows[:-1], "deep-lora")


@pytest.mark.parametrize("make", [configs.SubspaceConfig.for_profile, configs.FewShotConfig.for_profile,
                                  configs.GlueLimitedConfig.for_profile])
def test_deep_lora_configs_full_profile_is_the_paper(make):
    """The full profile uses PAPER.md §4's protocol; smoke only shrinks sizes."""
    full, smoke = make("full"), make("smoke")
    assert full.setting.lr == 1e-4 and full.setting.batch_size == 16 and full.setting.max_seq_length == 128
    assert full.setting.num_layers is None and full.setting.eval_examples is None and full.setting.model == "auto"
    assert smoke.setting.model == "minilm" and smoke.setting.num_layers == 2
    assert make("smoke", online=True).setting.online is True
    with pytest.raises(ValueError, match="unknown profile"):
        make("medium")


def test_paper_sizes_in_full_profile():
    f = configs.FewShotConfig.for_profile("full")
    assert f.samples == (16, 64, 256) and f.seeds == 20 and f.steps == 500 and f.setting.targets == "all-dense"
    assert f.ranks == (8, 16, 32, 64) and f.rank_seeds == 5 and f.rank_steps == 200
    assert f.compressed_inner_lr == 1e-2 and f.gamma == 0.01
    g = configs.GlueLimitedConfig.for_profile("full")
    assert g.samples == 1024 and g.seeds == 10 and g.steps_for("sst2") == 600 and g.steps_for("rte") == 1000
    s = configs.SubspaceConfig.for_profile("full")
    assert s.steps == 2000 and s.lr_end == 1e-5 and s.setting.targets == "attention-mlp" and s.subspace_rank == 8


def test_auto_backbone_offline_is_the_packaged_minilm(capsys, monkeypatch):
    monkeypatch.delenv("COMPANION_ONLINE", raising=False)
    assert finetune.choose_backbone("auto", online=False) == "minilm"
    assert "using the packaged all-MiniLM-L6-v2" in capsys.readouterr().out
    assert finetune.choose_backbone("minilm") == "minilm"
    assert "first 2 encoder layer" in finetune.backbone_note("minilm", 2)


# ---- truncated backbone ---------------------------------------------------------------------


def test_truncated_backbone_keeps_the_first_layers():
    full = bert.from_pretrained("minilm")
    cut = bert.from_pretrained("minilm", num_layers=2)
    assert len(cut.layers) == 2 and cut.config.num_hidden_layers == 2
    full_layers, cut_layers = dict(full.named_layers()), dict(cut.named_layers())
    assert set(cut_layers) == {n for n in full_layers if not n.startswith(tuple(f"encoder.layer.{i}." for i in range(2, 6)))}
    for name, layer in cut_layers.items():
        w = "embedding" if isinstance(layer, bert.Embed) else "kernel"
        np.testing.assert_array_equal(getattr(layer, w)[...], getattr(full_layers[name], w)[...])
    for bad in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match="num_layers must be an integer in 1…6"):
            bert.from_pretrained("minilm", num_layers=bad)


# ---- the engine on real data ------------------------------------------------------------------

def _have_glue() -> bool:
    try:
        return bool(data.available_tasks())
    except FileNotFoundError:
        return False


needs_glue = pytest.mark.skipif(not _have_glue(), reason="no GLUE folder (set COMPANION_DATA_DIR)")


@needs_glue
def test_curves_snapshots_and_compile_reuse():
    """eval_at adds validation scores, the last equals the final score; observe sees the listed
    steps; a second run of the same structure (another seed) compiles nothing new."""
    cfg = finetune.FinetuneConfig(task="stsb", method="deep-lora", samples=16, steps=4, targets="query-value",
                                  eval_examples=32, num_layers=1, max_seq_length=32)
    seen = []
    out = finetune.finetune_seeds(cfg, [0], log_every=1, eval_at=(2,), observe_at=(0, 4),
                                  observe=lambda t, i, m: seen.append((t, i, type(m).__name__)))
    run = out["runs"][0]
    assert [s for s, _ in run["curve"]] == [0, 2, 4]
    assert run["curve"][0][1] == pytest.approx(run["initial_value"]) and run["curve"][-1][1] == pytest.approx(run["value"])
    assert seen == [(0, 0, "BertForSequenceClassification"), (4, 0, "BertForSequenceClassification")]
    before = finetune._compiled.cache_info()
    finetune.finetune_seeds(cfg, [1], log_every=1)
    after = finetune._compiled.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1
    with pytest.raises(ValueError, match="eval_at steps must be integers in 1…4"):
        finetune.finetune_seeds(cfg, [0], eval_at=(5,))
    with pytest.raises(ValueError, match="observe_at needs an observe"):
        finetune.finetune_seeds(cfg, [0], observe_at=(1,))


@needs_glue
def test_seeds_in_chunks_match_one_program():
    """Chunks of seeds (the memory bound of the full profile) give each seed its own numbers."""
    cfg = finetune.FinetuneConfig(task="stsb", method="lora", samples=16, steps=2, targets="query-value",
                                  eval_examples=32, num_layers=1, max_seq_length=32)
    together = experiments.seeds_in_chunks(cfg, [0, 1], None, log_every=1)
    apart = experiments.seeds_in_chunks(cfg, [0, 1], 1, log_every=1)
    assert [r["seed"] for r in apart] == [0, 1]
    for a, b in zip(together, apart):
        np.testing.assert_allclose([v for _, v in a["train_loss"]], [v for _, v in b["train_loss"]], rtol=1e-5)
        assert a["value"] == pytest.approx(b["value"], abs=1e-4)  # float32 programs of other batch sizes
    with pytest.raises(ValueError, match="parallel_seeds must be a positive integer"):
        experiments.seeds_in_chunks(cfg, [0], 0)


@needs_glue
def test_glue_study_refuses_unknown_or_absent_tasks(tmp_path):
    cfg = configs.GlueLimitedConfig.for_profile("smoke")
    with pytest.raises(ValueError, match="unknown task"):
        experiments.run_glue_limited(dataclasses.replace(cfg, tasks=("squad",)))
    (tmp_path / "RTE").mkdir()
    empty = dataclasses.replace(cfg, setting=dataclasses.replace(cfg.setting, data_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="no GLUE data for \\['rte'\\]"):
        experiments.run_glue_limited(dataclasses.replace(empty, tasks=("rte",)))
    with pytest.raises(FileNotFoundError, match="no GLUE task has data"):
        experiments.run_glue_limited(empty)
