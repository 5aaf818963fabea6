"""companion.adapt.training: the fine-tuning loop (fit, finetune), its config, optimizer and results.

Runs use a 1-layer, 32-token MiniLM backbone (``num_layers=1, max_seq_length=32``) wherever the
full 6-layer one adds nothing, so the suite stays fast on a CPU.
"""

import dataclasses
import json
from dataclasses import asdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from companion.adapt import adapters, batching, bert, glue, training
from companion.adapt.adapters import AdapterConfig
from companion.adapt.lora import AdapterParam
from companion.adapt.training import FinetuneConfig, RunResult, finetune, fit
from conftest import needs_glue, tiny_stsb

try:
    glue.data_dir()
except FileNotFoundError as e:  # CI sets COMPANION_DATA_DIR (../shared/data/glue)
    pytest.skip(f"no GLUE folder: {e}", allow_module_level=True)

TINY = tiny_stsb()


def vary(config, **changes):
    """Replace fields of the config and of its adapter."""
    inner = {f.name for f in dataclasses.fields(AdapterConfig)}
    a = {k: changes.pop(k) for k in list(changes) if k in inner}
    config = dataclasses.replace(config, **changes)
    return dataclasses.replace(config, adapter=dataclasses.replace(config.adapter, **a)) if a else config


@pytest.mark.parametrize("changes,message", [
    (dict(task="glue"), "unknown task 'glue'"),
    (dict(samples=0), "samples must be a positive integer"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(batch_size=2.5), "batch_size must be a positive integer"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(lr=0.0), "learning rate must be > 0"),
    (dict(gamma=-1.0), "gamma must be ≥ 0"),
    (dict(inner_lr=0.0), "inner_lr must be > 0"),
    (dict(adapter="lora"), "adapter must be an AdapterConfig or None"),
])
def test_config_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **changes)


def test_config_defaults_and_json_round_trip():
    c = FinetuneConfig(task="stsb")
    assert (c.method, c.steps, c.lr, c.lr_end, c.batch_size, c.max_seq_length, c.gamma) == \
           ("lora", 500, 1e-4, None, 16, 128, 0.01)  # the paper's protocol
    assert c.adapter == AdapterConfig() and c.adapter.targets == "all-dense"
    assert dataclasses.replace(c, adapter=None).method == "full"
    for config in (TINY, dataclasses.replace(TINY, adapter=None)):
        assert FinetuneConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config
    assert set(training.METHODS) == {*adapters.METHODS, "full"}


@pytest.fixture(scope="module")
def two_seeds():
    """Seeds 3 and 5 of compressed Deep LoRA, vectorised and one at a time, with eval_at and observe."""
    config = vary(TINY, method="deep-lora-compressed", targets=["pooler"], inner_lr=1e-2, pooling="pooler")
    seen = []
    kwargs = dict(log_every=1, eval_at=(2,), observe_at=(0, 3), numerical_ranks=True)
    together = fit(config, [3, 5], observe=lambda step, seed, model: seen.append((step, seed)), **kwargs)
    alone = fit(config, [3, 5], parallel=1, observe=lambda *a: None, **kwargs)
    return together, alone, seen


def test_vectorised_seeds_equal_seeds_one_at_a_time(two_seeds):
    """jax.vmap over 2 seeds gives each seed the numbers of a program of its own (float rounding only)."""
    together, alone, _ = two_seeds
    for a, b in zip(together, alone):
        assert a.seed == b.seed and [s for s, _ in a.train_loss] == [0, 1, 2] and [s for s, _ in a.curve] == [0, 2, 3]
        np.testing.assert_allclose([v for _, v in a.train_loss], [v for _, v in b.train_loss], rtol=1e-5, atol=1e-5)
        # Pearson of nearly uncorrelated predictions (r ≈ 0.02 after 3 steps) magnifies the float32
        # rounding of the logits (~1e-7 relative) to ~3e-5.
        np.testing.assert_allclose([v for _, v in a.curve], [v for _, v in b.curve], rtol=0, atol=1e-4)
        assert a.value == pytest.approx(b.value, abs=1e-4) and a.initial_value == pytest.approx(b.initial_value, abs=1e-4)
        assert a.numerical_ranks == b.numerical_ranks and list(a.numerical_ranks) == ["pooler.dense"]
    assert together[0].train_loss != together[1].train_loss  # the seeds differ


def test_results_follow_the_seeds_and_observe_gets_seed_values(two_seeds):
    together, _, seen = two_seeds
    assert [r.seed for r in together] == [3, 5]
    assert seen == [(0, 3), (0, 5), (3, 3), (3, 5)]
    r = together[0]
    assert (r.task, r.method, r.metric, r.steps, r.n_train, r.n_validation) == \
           ("stsb", "deep-lora-compressed", "pearson", 3, 16, 48)
    assert r.trainable_params == (384 + 384) * 4 + 3 * 4 * 4 and r.adapted_layers == 1  # (m+n)r + 3r²
    assert r.metrics["pearson"] == r.value and set(r.metrics) == {"pearson", "spearman"}
    assert r.curve[0] == (0, r.initial_value) and r.curve[-1] == (3, r.value)
    assert r.dropped_train > 0 and r.dropped_validation > 0  # 32 tokens drop some STS-B pairs
    assert "first 1 encoder layer" in r.backbone and r.device == jax.devices()[0].platform
    # Recorded, never asserted beyond being measured:
    assert all(t >= 0 for t in (r.wall_time_s, r.build_time_s, r.compile_time_s, r.step_time_s))


def test_run_result_round_trips_through_json(two_seeds):
    r = two_seeds[0][0]
    d = r.to_dict()
    again = json.loads(json.dumps(d))
    assert again == d
    assert RunResult.from_dict(again) == r


def test_fit_prepares_once_for_all_seeds(monkeypatch):
    """Reading, tokenising and the checkpoint happen once per fit call, however many seeds."""
    calls = {"load_split": 0, "tokenize": 0, "pretrained_encoder": 0, "load_tokenizer": 0}

    def counting(module, name):
        original = getattr(module, name)

        def wrapped(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    counting(training.glue, "load_split")
    counting(training.batching, "tokenize")
    counting(training.bert, "pretrained_encoder")
    counting(training.bert, "load_tokenizer")
    runs = fit(TINY, [0, 1, 2], parallel=2)
    assert len(runs) == 3
    assert calls == {"load_split": 2, "tokenize": 2, "pretrained_encoder": 1, "load_tokenizer": 1}


def test_seeds_draw_their_own_few_shot_rows():
    """A seed's few-shot rows are batching.few_shot_indices(N, n, seed) of the kept train split."""
    data = training._prepare(TINY)
    rows = training._train_rows(TINY, data, 4)
    idx = batching.few_shot_indices(len(data.train.labels), 16, 4)
    np.testing.assert_array_equal(rows.input_ids, data.train.input_ids[idx])
    assert training._train_rows(dataclasses.replace(TINY, samples=None), data, 4) is data.train


def test_paired_seed_is_deterministic():
    config = dataclasses.replace(TINY, task="rte", seed=4)
    (a,), (b,) = fit(config), fit(config)
    assert a.train_loss == b.train_loss and a.value == b.value and a.metric == "accuracy"
    (c,) = fit(config, [5])
    assert c.train_loss != a.train_loss


@pytest.mark.parametrize("kwargs,message", [
    (dict(seeds=[1, 1]), "distinct seeds"),
    (dict(seeds=[-1]), "non-negative integers"),
    (dict(eval_at=(0,)), r"eval_at steps must be integers in 1…3"),
    (dict(observe_at=(4,)), r"observe_at steps must be integers in 0…3"),
    (dict(observe_at=(1,)), "needs an observe"),
    (dict(parallel=0), "parallel must be a positive integer"),
    (dict(log_every=0), "log_every must be a positive integer"),
])
def test_fit_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(TINY, **kwargs)


def test_head_frozen_unless_asked():
    encoder = bert.pretrained_encoder("minilm", num_layers=1)
    config = vary(TINY, task="mrpc")
    model, trainable, names = training.build_model(config, encoder, 0)
    assert trainable is AdapterParam and len(names) == 2
    model, trainable, _ = training.build_model(vary(config, train_head=True), encoder, 0)
    assert adapters.count_parameters(model, trainable) == adapters.count_parameters(model) + 384 * 2 + 2
    assert all(layer.adapter is None for _, layer in encoder.named_layers())  # the shared encoder stays bare
    (r,) = fit(vary(TINY, train_head=True))
    assert r.trainable_params == 2 * (384 + 384) * 4 + 384 + 1


def test_full_fine_tuning_trains_every_weight():
    (r,) = fit(dataclasses.replace(TINY, adapter=None, steps=2))
    encoder = bert.pretrained_encoder("minilm", num_layers=1)
    assert r.method == "full" and r.adapted_layers is None and r.numerical_ranks is None
    assert r.trainable_params == adapters.count_parameters(encoder, nnx.Param) + 384 + 1


def test_outer_factors_take_the_discrepant_step():
    """Compressed Deep LoRA: AdamW's first step moves inner entries by η and outer ones by γη."""
    config = vary(TINY, method="deep-lora-compressed", targets=["pooler"], inner_lr=1e-2, gamma=0.01,
                  pooling="pooler")
    model = bert.with_head(bert.pretrained_encoder("minilm", num_layers=1), 1)
    adapters.apply_adapters(model, config.adapter, jax.random.key(0),
                            {"pooler.dense": jax.random.normal(jax.random.key(1), (384, 384))})
    state = nnx.state(model, AdapterParam)
    grads = jax.tree.map(jnp.ones_like, state)
    tx = training.optimizer(config)
    updates, _ = tx.update(grads, tx.init(state), state)
    sizes = sorted({round(float(jnp.abs(x).max()), 6) for x in jax.tree.leaves(updates)})
    assert sizes == [pytest.approx(1e-4, rel=1e-3), pytest.approx(1e-2, rel=1e-3)]
    assert training.optimizer(config) is tx  # equal settings share compiled steps


def test_short_run_learns():
    """The smoke profile's setting fits its 16 training pairs (the fit verdict) and lifts validation
    Pearson above the untrained model's on 500 pairs (standard error < 0.045). Measured on this
    CPU: loss 8.2 → 0.39 (constant predictor 2.45), Pearson 0.012 → 0.14."""
    from companion.book.chapters import adaptation

    (r,) = fit(adaptation.base("smoke", samples=16, steps=60), log_every=4)
    assert r.fitted and r.last_loss < 0.2 * r.first_loss and r.n_validation == 500
    assert r.value > r.initial_value + 0.05 and r.learned


def test_finetune_run_directory_and_adapter_round_trip(tmp_path):
    config = vary(TINY, steps=4, method="deep-lora-narrow", targets="query-value")
    run_dir = tmp_path / "run"
    r = finetune(config, run_dir=run_dir, log_every=1)
    assert FinetuneConfig.from_dict(json.loads((run_dir / "config.json").read_text())) == config
    assert RunResult.from_dict(json.loads((run_dir / "results.json").read_text())) == r
    assert r.numerical_ranks is not None and len(r.train_loss) == 4
    # Reload: the saved adapters and head reproduce the trained model's evaluation.
    model = bert.with_head(bert.pretrained_encoder("minilm", num_layers=1), 1, head_seed=99, pooling="mean")
    loaded, names = adapters.load(model, run_dir / "adapter")
    assert loaded == config.adapter and len(names) == 2
    data = training._prepare(config)
    logits = np.asarray(model(*(jnp.asarray(a) for a in data.validation[:3])))
    from companion.adapt.metrics import pearson

    # One unbatched forward against fit's vectorised batches of 8: float32 rounding, magnified by a
    # Pearson near 0 after 4 steps.
    assert pearson(logits[:, 0], data.validation.labels) == pytest.approx(r.value, abs=1e-4)
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        finetune(config, run_dir=run_dir)


def test_backbone_notes():
    assert training.choose_backbone("minilm") == "minilm"
    assert "not the paper's bert-base-cased" in training.backbone_note("minilm")
    assert "the head reads the mean of the last hidden states" in training.backbone_note("minilm")
    assert "mean" not in training.backbone_note("minilm", pooling="pooler")
    assert training.backbone_note("bert-base-cased", 2) == "bert-base-cased (only its first 2 encoder layer(s) kept)"
    assert training.backbone_note("bert-base-cased") == "bert-base-cased"


def test_only_minilm_departs_from_the_papers_head_input():
    """bert-base-cased keeps the paper's pooler; the packaged MiniLM (never-trained pooler) reads
    mean-pooled states unless the config says otherwise; a bad name is refused."""
    assert FinetuneConfig(task="stsb", model="bert-base-cased").head_pooling == "pooler"
    assert FinetuneConfig(task="stsb", model="/some/bert-folder").head_pooling == "pooler"
    assert FinetuneConfig(task="stsb", model="minilm").head_pooling == "mean"
    assert FinetuneConfig(task="stsb", model="minilm", pooling="pooler").head_pooling == "pooler"
    with pytest.raises(ValueError, match="unknown pooling"):
        FinetuneConfig(task="stsb", pooling="cls")
    encoder = bert.pretrained_encoder("minilm", num_layers=1)
    assert training.build_model(TINY, encoder, 0)[0].pooling == "mean"
    assert training.build_model(dataclasses.replace(TINY, pooling="pooler"), encoder, 0)[0].pooling == "pooler"


def test_backbone_is_explicit_and_never_swapped(monkeypatch, tmp_path):
    """No "auto": a backbone that cannot be loaded raises with what to do, never falls back."""
    monkeypatch.delenv("COMPANION_ONLINE", raising=False)
    with pytest.raises(FileNotFoundError, match="bert-base-cased is not available offline.*model='minilm'"):
        training.choose_backbone("bert-base-cased", online=False)
    with pytest.raises(ValueError, match="'auto' is no longer accepted"):
        training.choose_backbone("auto")
    with pytest.raises(ValueError, match="name a backbone"):
        training.choose_backbone("")
    assert training.choose_backbone(str(bert.resolve("minilm"))) == str(bert.resolve("minilm"))  # a local folder
    with pytest.raises(FileNotFoundError, match="not available offline"):
        training.choose_backbone(str(tmp_path / "missing"))


def test_every_seed_shares_the_authors_head():
    """The head is Flax's default Dense init (LeCun normal, std ≈ 1/√h, bias 0) from one fixed key
    (618c410: one from_pretrained before the seed loop), so seeds start from the same head and,
    with vanilla LoRA's ΔW = 0, the same untrained validation score."""
    encoder = bert.pretrained_encoder("minilm", num_layers=1)
    (a, _, _), (b, _, _) = (training.build_model(TINY, encoder, s) for s in (0, 1))
    np.testing.assert_array_equal(a.classifier.kernel[...], b.classifier.kernel[...])
    runs = fit(dataclasses.replace(TINY, steps=1), [0, 1])
    assert runs[0].initial_value == pytest.approx(runs[1].initial_value, abs=1e-6)
    big = bert.with_head(encoder, 4000)  # enough entries to measure the spread
    k = np.asarray(big.classifier.kernel[...])
    assert k.std() == pytest.approx(1 / np.sqrt(384), rel=0.02) and abs(k.mean()) < 3e-3
    assert np.abs(k).max() <= 2 / np.sqrt(384) / 0.87962566 + 1e-6  # truncated at 2σ of the underlying normal
    assert float(jnp.abs(big.classifier.bias[...]).max()) == 0.0


def _outer(model):
    chain = dict(adapters.adapted_layers(model))["pooler.dense"].adapter
    return np.asarray(chain.factors[0][...]), np.asarray(chain.factors[-1][...])


def test_compression_gradient_takes_dropout():
    """618c410 takes the compression gradient with dropout on: the outer factors depend on the
    dropout key (two keys → different factors), stay orthonormal, and the default key is the seed's."""
    config = vary(TINY, method="deep-lora-compressed", targets=["pooler"], rank=4, pooling="pooler")
    encoder = bert.pretrained_encoder("minilm", num_layers=1)
    data = training._prepare(config)
    first = next(batching.train_stream(training._train_rows(config, data, 0), config.batch_size, 0))
    build = lambda key: training.build_model(config, encoder, 0, first, dropout_key=key)[0]  # noqa: E731
    (v1, u1), (v2, u2) = _outer(build(jax.random.key(1))), _outer(build(jax.random.key(2)))
    assert np.abs(v1 - v2).max() > 1e-2 and np.abs(u1 - u2).max() > 1e-2
    for f in (v1, u1, v2, u2):  # (r, side): orthonormal rows
        np.testing.assert_allclose(f @ f.T, np.eye(4), atol=1e-4)
    default = _outer(training.build_model(config, encoder, 0, first)[0])
    np.testing.assert_array_equal(default[0], _outer(build(training.compression_dropout_key(0)))[0])


def test_a_second_seed_compiles_nothing_new():
    """Runs of one structure share compiled steps: another seed is a cache hit, not a miss."""
    fit(TINY, [0])
    before = training._compiled_for.cache_info()
    fit(TINY, [1])
    after = training._compiled_for.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1


def test_tasks_with_one_loss_share_compiled_steps():
    """The steps read a task only through its loss: the two-class tasks share one jitted pair,
    the regression task (STS-B) gets its own."""
    graphdef, tx = object(), training.optimizer(TINY)
    shared = training._compiled(graphdef, glue.TASKS["mrpc"], tx)
    assert training._compiled(graphdef, glue.TASKS["rte"], tx) is shared
    assert training._compiled(graphdef, glue.TASKS["cola"], tx) is shared
    assert training._compiled(graphdef, glue.TASKS["stsb"], tx) is not shared


# ---- bucketed padding: the same numbers at a fraction of the tokens ---------------------------


def test_bucketed_batch_gives_the_fixed_length_logits():
    """Real STS-B pairs at their bucket (batching.trim) give the logits of the same pairs padded to
    128 tokens: padded positions are masked, so only float rounding differs (adapters included,
    the word-embedding table's among them)."""
    config = FinetuneConfig(task="stsb", adapter=AdapterConfig(method="deep-lora", targets="all-dense",
                                                               init_scale=0.3), num_layers=2)
    data = training._prepare(config)
    full = batching.take(data.validation, np.arange(8))
    short = batching.trim(full, batching.bucket_lengths(128))
    assert short.input_ids.shape[1] < 64 and short.attention_mask.sum() == full.attention_mask.sum()
    encoder = bert.pretrained_encoder("minilm", num_layers=2)
    model, _, names = training.build_model(config, encoder, 0)
    assert "embeddings.word_embeddings" in names
    logits = [np.asarray(model(*(jnp.asarray(a) for a in b[:3]))) for b in (full, short)]
    assert float(np.abs(logits[0]).max()) > 1e-2
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-5, atol=1e-5)


def test_eval_batch_size_changes_predictions_only_by_rounding():
    """Evaluation in length order at 5 or at 128 rows per batch scores the same."""
    config = vary(TINY, steps=2)
    (small,), (large,) = fit(config, eval_batch_size=5), fit(config, eval_batch_size=128)
    assert small.train_loss == large.train_loss  # training does not see the evaluation batches
    assert small.initial_value == pytest.approx(large.initial_value, abs=1e-5)
    assert small.value == pytest.approx(large.value, abs=1e-5)
    with pytest.raises(ValueError, match="eval_batch_size must be a positive integer"):
        fit(config, eval_batch_size=0)


@pytest.mark.parametrize("losses, constant, verdict", [
    ([9.0] * 20 + [1.0] * 20, 2.0, (9.0, 1.0, True)),  # fell below half of the start and of the mean's loss
    ([9.0] * 20 + [3.0] * 20, 2.0, (9.0, 3.0, False)),  # fell, but a constant predicts better
    ([0.7] * 40, 0.69, (0.7, 0.7, False)),  # never moved
    ([4.0, 1.0], 5.0, (4.0, 1.0, True)),  # a window of 1 step
    ([4.0, float("nan")], 5.0, (4.0, float("nan"), False)),
])
def test_fit_verdict(losses, constant, verdict):
    first, last, fitted = training.fit_verdict(losses, constant)
    assert (first, fitted) == (verdict[0], verdict[2])
    assert last == pytest.approx(verdict[1], nan_ok=True)
    assert training.loss_window(500) == 25 and training.loss_window(7) == 1
    with pytest.raises(ValueError, match="without steps"):
        training.fit_verdict([], 1.0)


def test_constant_loss_is_the_best_constant_prediction():
    stsb, rte = glue.TASKS["stsb"], glue.TASKS["rte"]
    y = np.array([0.0, 1.0, 2.0, 5.0])
    assert training.constant_loss(stsb, y) == pytest.approx(np.mean((y - y.mean()) ** 2))
    assert training.constant_loss(rte, np.array([0, 0, 0, 1])) == pytest.approx(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    assert training.constant_loss(rte, np.array([1, 1])) == 0.0


def test_results_carry_the_fit_verdict(two_seeds):
    for r in two_seeds[0]:
        losses = [v for _, v in r.train_loss]  # log_every=1: every step
        assert (r.first_loss, r.last_loss) == (losses[0], losses[-1])  # 3 steps: windows of one
        assert r.fitted == (r.last_loss <= training.FIT_RATIO * min(r.first_loss, r.constant_loss))
        assert r.constant_loss > 0.5  # STS-B labels spread over 0–5


def test_training_padding_does_not_change_a_run(monkeypatch):
    """Bucketed training batches give the losses and scores of batches padded to max_seq_length:
    dropout masks are indexed by position (bert.dropout), so padding changes only rounding."""
    config = vary(TINY, steps=4, method="deep-lora", targets="query-value", init_scale=0.1, max_seq_length=128)
    lengths, trim = [], batching.trim
    monkeypatch.setattr(batching, "trim", lambda b, buckets: lengths.append(trim(b, buckets).input_ids.shape[-1])
                        or trim(b, buckets))
    bucketed = fit(config, [0, 1], log_every=1)
    assert min(lengths) < 128  # some training batches were cut
    monkeypatch.setattr(batching, "trim", trim)
    monkeypatch.setattr(training, "TRAIN_BUCKETS", False)
    fixed = fit(config, [0, 1], log_every=1)
    for a, b in zip(bucketed, fixed):
        np.testing.assert_allclose([v for _, v in a.train_loss], [v for _, v in b.train_loss], rtol=1e-4, atol=1e-5)
        assert a.value == pytest.approx(b.value, abs=1e-3)


def test_dropout_stream_is_apart_from_every_adapter_key():
    """Training dropout starts from fold_in(key(seed), 1_000_007), not from a key that an adapted
    layer's factors also use (layer i draws from fold_in(key(seed), i))."""
    data = lambda k: np.asarray(jax.random.key_data(k))  # noqa: E731
    base = data(training.dropout_keys(3))
    assert all(not np.array_equal(base, data(jax.random.fold_in(jax.random.key(3), i))) for i in range(80))
    assert not np.array_equal(base, data(training.compression_dropout_key(3)))
    assert not np.array_equal(base, data(training.dropout_keys(4)))


# ---- embedding tables train only the rows training can look up --------------------------------


def test_trained_columns_are_the_tokens_positions_and_types_of_the_training_rows():
    data = training._prepare(TINY)
    rows = [training._train_rows(TINY, data, s) for s in (0, 1)]
    cols = training.trained_columns(TINY, rows)
    ids = np.concatenate([np.asarray(r.input_ids).ravel() for r in rows])
    np.testing.assert_array_equal(cols["embeddings.word_embeddings"], np.unique(ids))
    assert 0 in cols["embeddings.word_embeddings"] and len(cols["embeddings.word_embeddings"]) < 1000  # padding too
    np.testing.assert_array_equal(cols["embeddings.position_embeddings"], np.arange(TINY.max_seq_length))
    np.testing.assert_array_equal(cols["embeddings.token_type_embeddings"], [0, 1])


def test_restricted_embedding_rows_change_no_number(monkeypatch, tmp_path):
    """Wide Deep LoRA on the word-embedding table trains a (384, m) factor instead of (384, 30522)
    and gives the whole table's run: same losses, scores and ranks, and the saved adapter whole."""
    config = vary(TINY, method="deep-lora", targets=["word_embeddings", "position_embeddings", "layer.0.attention.self.query"],
                  steps=3, init_scale=0.3)
    runs = {}
    for flag in (False, True):
        monkeypatch.setattr(training, "RESTRICT_EMBEDDINGS", flag)
        runs[flag] = fit(config, [0, 1], log_every=1, numerical_ranks=True)
    for whole, part in zip(runs[False], runs[True]):
        np.testing.assert_allclose([v for _, v in part.train_loss], [v for _, v in whole.train_loss], rtol=1e-6)
        assert part.value == pytest.approx(whole.value, abs=1e-6) and part.numerical_ranks == whole.numerical_ranks
        assert part.trainable_params == whole.trainable_params  # the adapters' size, not the trained columns'
    result = finetune(vary(config, steps=2), tmp_path / "run")
    from safetensors.numpy import load_file
    saved = load_file(str(tmp_path / "run" / "adapter" / adapters.WEIGHTS_FILE))
    assert saved["embeddings.word_embeddings.adapter.0"].shape == (384, 30522) and result.steps == 2


def test_on_chunk_gets_each_program_as_it_ends():
    """A study stores each seed as soon as its program ends (parallel=1: one seed a program)."""
    seen = []
    results = fit(vary(TINY, steps=2), [0, 1], parallel=1, on_chunk=lambda done: seen.append([r.seed for r in done]))
    assert seen == [[0], [1]] and [r.seed for r in results] == [0, 1]


_RUN_AT_LEVEL = """
import json
from companion.adapt.training import fit
from conftest import needs_glue, tiny_stsb
(r,) = fit(tiny_stsb(), log_every=1)
print(json.dumps({"loss": r.train_loss, "value": r.value, "initial": r.initial_value}))
"""


@needs_glue
def test_fast_compile_level_changes_no_number():
    """The tests and some smoke notebooks compile at XLA's backend optimisation level 1
    (``notebooks.FAST_COMPILE``), other runs at the default 3: a run's every loss and score agree
    bit for bit at both, so a result does not depend on where it ran."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    def run(level: int) -> dict:
        env = {**os.environ, "XLA_FLAGS": f"--xla_backend_optimization_level={level}",
               "PYTHONPATH": str(Path(__file__).parent)}
        out = subprocess.run([sys.executable, "-c", _RUN_AT_LEVEL], env=env, capture_output=True, text=True,
                             check=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    fast, default = run(1), run(3)
    assert len(default["loss"]) == TINY.steps and fast == default
