"""companion.adapt.batching: tokenisation (long examples dropped), few-shot draws, batches.

Real splits come from $COMPANION_DATA_DIR (CI) or ../shared/data/glue; the tokenizer is the
packaged all-MiniLM-L6-v2's.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from companion.adapt.batching import (
    Batch,
    batches,
    drop_long,
    encode,
    few_shot,
    few_shot_indices,
    take,
    to_arrays,
    tokenize,
    train_stream,
)
from companion.adapt.glue import Examples

from conftest import LOCAL, needs_glue  # fixtures glue_dir, splits, tokenizer: conftest.py


# --------------------------------------------------------------------------------------------
# Tokenisation (paper: examples longer than 128 tokens are dropped)
# --------------------------------------------------------------------------------------------


def test_tokenizer_must_not_truncate_or_pad(tokenizer):
    from tokenizers import Tokenizer

    ex = Examples(text_a=("a b",), text_b=None, labels=np.array([0]), task="sst2")
    raw = Tokenizer.from_str(tokenizer.to_str())
    raw.enable_truncation(max_length=128)
    with pytest.raises(ValueError, match=r"truncates .* call tokenizer.no_truncation\(\)"):
        encode(ex, raw)
    raw.no_truncation()
    raw.enable_padding(length=128)
    with pytest.raises(ValueError, match=r"pads .* call tokenizer.no_padding\(\)"):
        encode(ex, raw)


@needs_glue
@pytest.mark.parametrize("task", LOCAL)
def test_encode_matches_the_tokenizer(splits, tokenizer, task):
    ex = splits[task, "validation"].select(np.arange(20))
    got = [e.ids for e in encode(ex, tokenizer)]
    if ex.text_b is None:
        want = [tokenizer.encode(a).ids for a in ex.text_a]
    else:
        want = [tokenizer.encode(a, b).ids for a, b in zip(ex.text_a, ex.text_b)]
    assert got == want


@needs_glue
@pytest.mark.parametrize("task", LOCAL)
def test_drop_long_drops_exactly_the_long_ones(splits, tokenizer, task):
    ex = splits[task, "validation"]
    pairs = zip(ex.text_a, ex.text_b) if ex.text_b is not None else ((a,) for a in ex.text_a)
    lengths = np.array([len(tokenizer.encode(*p).ids) for p in pairs])  # one at a time
    kept, n_dropped = drop_long(ex, tokenizer, max_length=16)
    assert n_dropped == int(np.sum(lengths > 16)) > 0
    assert len(kept) == len(ex) - n_dropped
    keep = np.flatnonzero(lengths <= 16)
    assert kept.text_a == tuple(ex.text_a[i] for i in keep)  # original order
    np.testing.assert_array_equal(kept.labels, ex.labels[keep])
    same, none = drop_long(ex, tokenizer, max_length=512)
    assert none == 0 and same.text_a == ex.text_a


@needs_glue
def test_drop_long_at_the_paper_length(splits, tokenizer):
    # RTE validation: 33 of 277 pairs exceed 128 tokens with this (uncased WordPiece) vocab.
    kept, n_dropped = drop_long(splits["rte", "validation"], tokenizer)
    assert (len(kept), n_dropped) == (244, 33)
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        drop_long(kept, tokenizer, max_length=0)


# --------------------------------------------------------------------------------------------
# Few-shot subsets (paper: drawn with replacement with the run's seed)
# --------------------------------------------------------------------------------------------


def small(n: int = 10, task: str = "sst2") -> Examples:
    return Examples(
        text_a=tuple(f"text {i}" for i in range(n)), text_b=None,
        labels=np.arange(n) % 2, task=task,
    )


def test_few_shot_is_the_seeded_draw_with_replacement():
    ex = small(10)
    sub = few_shot(ex, 50, seed=3)  # n > N is allowed
    idx = np.random.default_rng(3).integers(0, 10, size=50)
    assert sub.text_a == tuple(f"text {i}" for i in idx)
    np.testing.assert_array_equal(sub.labels, idx % 2)
    assert len(set(sub.text_a)) < 50  # repeats: drawn with replacement
    again = few_shot(ex, 50, seed=3)
    assert again.text_a == sub.text_a  # deterministic per seed
    assert few_shot(ex, 50, seed=4).text_a != sub.text_a


@needs_glue
def test_few_shot_of_stsb(splits):
    train = splits["stsb", "train"]
    draws = [few_shot(train, 16, seed=s) for s in range(5)]
    assert all(len(d) == 16 and d.labels.dtype == np.float32 for d in draws)
    assert len({d.text_a for d in draws}) == 5  # the seeds give different subsets
    assert few_shot(train, 16, seed=0).text_a == draws[0].text_a


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_few_shot_size_must_be_positive(n):
    with pytest.raises(ValueError, match="few-shot size n must be an integer ≥ 1"):
        few_shot(small(), n, seed=0)


def test_few_shot_errors():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        few_shot(small(), 4, seed=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no examples"):
        few_shot(small().select([]), 4, seed=0)


# --------------------------------------------------------------------------------------------
# Arrays and batches
# --------------------------------------------------------------------------------------------


def test_to_arrays_of_a_known_pair(tokenizer):
    ex = Examples(
        text_a=("A man is playing a flute.", "A plane is taking off."),
        text_b=("A man plays the flute.", "An air plane is taking off."),
        labels=np.array([3.8, 5.0]), task="stsb",
    )
    arrays = to_arrays(ex, tokenizer, max_length=32)
    assert [a.shape for a in arrays] == [(2, 32), (2, 32), (2, 32), (2,), (2,)]
    assert [a.dtype for a in arrays] == [np.int32] * 3 + [np.float32] * 2
    # [CLS] a man is playing a flute . [SEP] a man plays the flute . [SEP]
    ids = [101, 1037, 2158, 2003, 2652, 1037, 8928, 1012, 102, 1037, 2158, 3248, 1996, 8928, 1012, 102]
    assert arrays.input_ids[0].tolist() == ids + [0] * 16  # [PAD] = 0
    assert arrays.token_type_ids[0].tolist() == [0] * 9 + [1] * 7 + [0] * 16
    assert arrays.attention_mask[0].tolist() == [1] * 16 + [0] * 16
    want = tokenizer.encode("A plane is taking off.", "An air plane is taking off.")
    n = len(want.ids)
    assert arrays.input_ids[1, :n].tolist() == want.ids and not arrays.input_ids[1, n:].any()
    assert arrays.token_type_ids[1, :n].tolist() == want.type_ids
    assert arrays.attention_mask[1].sum() == n
    assert (arrays.input_ids[:, 0] == 101).all()
    assert (arrays.input_ids == 102).sum(axis=1).tolist() == [2, 2]  # two [SEP] per pair
    np.testing.assert_array_equal(arrays.labels, np.array([3.8, 5.0], np.float32))
    np.testing.assert_array_equal(arrays.weight, [1.0, 1.0])


@needs_glue
def test_to_arrays_of_a_split(splits, tokenizer):
    kept, _ = drop_long(splits["cola", "validation"], tokenizer)
    arrays = to_arrays(kept, tokenizer)
    assert arrays.input_ids.shape == (1043, 128) and arrays.labels.dtype == np.int32
    np.testing.assert_array_equal(arrays.labels, kept.labels)
    assert not arrays.token_type_ids.any()  # single sentences
    lengths = arrays.attention_mask.sum(axis=1)
    assert lengths.tolist() == [len(e.ids) for e in encode(kept, tokenizer)]
    ends = arrays.input_ids[np.arange(1043), lengths - 1]
    assert (ends == 102).all()  # each encoding ends with [SEP]


@needs_glue
def test_to_arrays_refuses_long_examples(splits, tokenizer):
    message = r"33 of 277 'rte' examples are longer than max_length=128.*call drop_long first"
    with pytest.raises(ValueError, match=message):
        to_arrays(splits["rte", "validation"], tokenizer)


def test_to_arrays_needs_bert_special_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers

    no_pad = Tokenizer(models.WordLevel({"[UNK]": 0, "[CLS]": 1, "good": 2}, unk_token="[UNK]"))
    no_pad.pre_tokenizer = pre_tokenizers.Whitespace()
    ex = Examples(text_a=("good",), text_b=None, labels=np.array([1]), task="sst2")
    with pytest.raises(ValueError, match=r"no \[PAD\] token"):
        to_arrays(ex, no_pad, max_length=8)
    no_cls = Tokenizer(models.WordLevel({"[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "good": 3}, unk_token="[UNK]"))
    no_cls.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(ValueError, match=r"does not start encodings with \[CLS\]"):
        to_arrays(ex, no_cls, max_length=8)  # no post-processor adds [CLS]


def synthetic(n: int, t: int = 4) -> Batch:
    """n rows whose first token is the row's index, to track rows through batching."""
    ids = np.zeros((n, t), np.int32)
    ids[:, 0] = np.arange(n)
    return Batch(
        input_ids=ids,
        attention_mask=np.ones((n, t), np.int32),
        token_type_ids=np.zeros((n, t), np.int32),
        labels=np.arange(n, dtype=np.int32) % 3,
        weight=np.ones(n, np.float32),
    )


def rows(bs: list[Batch]) -> list[int]:
    """Row indices of the weight-1 rows, in order."""
    return [int(i) for b in bs for i, w in zip(b.input_ids[:, 0], b.weight) if w == 1.0]


def test_evaluation_batches_cover_each_example_once():
    arrays = synthetic(10)
    bs = list(batches(arrays, 4, shuffle=False, seed=None, drop_remainder=False))
    assert len(bs) == 3 and all(b.input_ids.shape == (4, 4) for b in bs)
    assert [b.weight.tolist() for b in bs] == [[1.0] * 4, [1.0] * 4, [1.0, 1.0, 0.0, 0.0]]
    assert rows(bs) == list(range(10))
    last = bs[-1]
    assert last.input_ids[:, 0].tolist() == [8, 9, 8, 8]  # padding repeats a real row...
    assert last.labels.tolist() == [8 % 3, 9 % 3, 8 % 3, 8 % 3]
    assert last.attention_mask[2:].all()  # ...so no padding row is fully masked
    assert float(sum(b.weight.sum() for b in bs)) == 10.0
    assert np.all(arrays.weight == 1.0)  # the input is untouched


def test_shuffled_batches_follow_the_seed():
    arrays = synthetic(10)
    order = np.random.default_rng(7).permutation(10).tolist()
    bs = list(batches(arrays, 4, shuffle=True, seed=7, drop_remainder=False))
    assert rows(bs) == order
    dropped = list(batches(arrays, 4, shuffle=True, seed=7, drop_remainder=True))
    assert len(dropped) == 2 and rows(dropped) == order[:8]
    assert all(b.weight.tolist() == [1.0] * 4 for b in dropped)
    other = rows(list(batches(arrays, 4, shuffle=True, seed=8, drop_remainder=False)))
    assert other != order and sorted(other) == list(range(10))


@needs_glue
@pytest.mark.parametrize(
    "task, batch_size, n_batches, last_real", [("mrpc", 16, 26, 8), ("stsb", 32, 47, 28)]
)
def test_validation_batches_of_a_split(splits, tokenizer, task, batch_size, n_batches, last_real):
    # MRPC dev 408 = 25·16 + 8; STS-B dev 1500 = 46·32 + 28 (none longer than 128 tokens).
    ex = splits[task, "validation"]
    arrays = to_arrays(ex, tokenizer)
    bs = list(batches(arrays, batch_size, shuffle=False, seed=None, drop_remainder=False))
    assert len(bs) == n_batches
    assert int(bs[-1].weight.sum()) == last_real and bs[-1].weight[last_real:].sum() == 0
    real = np.concatenate([b.weight for b in bs]) == 1.0
    np.testing.assert_array_equal(np.concatenate([b.input_ids for b in bs])[real], arrays.input_ids)
    np.testing.assert_array_equal(np.concatenate([b.labels for b in bs])[real], arrays.labels)


def test_batches_errors():
    arrays = synthetic(10)
    with pytest.raises(ValueError, match="shuffle=True needs a seed"):
        batches(arrays, 4, shuffle=True, seed=None, drop_remainder=False)  # raised eagerly
    with pytest.raises(ValueError, match="10 examples make no full batch of 16"):
        batches(arrays, 16, shuffle=False, seed=None, drop_remainder=True)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        batches(arrays, 0, shuffle=False, seed=None, drop_remainder=False)
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        batches(arrays._replace(labels=arrays.labels[:5]), 4, shuffle=False, seed=None, drop_remainder=False)
    with pytest.raises(ValueError, match="no examples to batch"):
        batches(synthetic(0), 4, shuffle=False, seed=None, drop_remainder=False)
    with pytest.raises(ValueError, match="expected a Batch"):
        batches(tuple(arrays), 4, shuffle=False, seed=None, drop_remainder=False)  # type: ignore[arg-type]


def test_train_stream_reshuffles_every_epoch():
    arrays = synthetic(10)
    stream = train_stream(arrays, 4, seed=5)
    epochs = [[next(stream) for _ in range(3)] for _ in range(4)]  # ceil(10/4) = 3 steps/epoch
    rng = np.random.default_rng(5)
    orders = [rng.permutation(10).tolist() for _ in range(4)]
    assert [rows(e) for e in epochs] == orders
    assert orders[0] != orders[1]
    assert all(e[-1].weight.tolist() == [1.0, 1.0, 0.0, 0.0] for e in epochs)
    replay = train_stream(arrays, 4, seed=5)
    assert rows([next(replay) for _ in range(12)]) == sum(orders, [])  # deterministic per seed
    other = train_stream(arrays, 4, seed=6)
    assert rows([next(other) for _ in range(3)]) != orders[0]


def test_train_stream_with_full_batches():
    # paper: 16 (or 64, 256, 1024) few-shot samples at batch 16: every batch is full.
    stream = train_stream(synthetic(32), 16, seed=0)
    bs = [next(stream) for _ in range(10)]  # five epochs
    assert all(b.weight.tolist() == [1.0] * 16 and b.input_ids.shape == (16, 4) for b in bs)
    for epoch in range(5):
        assert sorted(rows(bs[2 * epoch:2 * epoch + 2])) == list(range(32))


def test_train_stream_with_fewer_examples_than_a_batch():
    stream = train_stream(synthetic(3), 16, seed=0)
    b = next(stream)
    assert b.input_ids.shape == (16, 4) and b.weight.sum() == 3.0
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        train_stream(synthetic(3), 16, seed=-1)


def test_paper_length_is_the_default():
    # paper: max_seq_length 128
    for fn in (drop_long, to_arrays):
        assert inspect.signature(fn).parameters["max_length"].default == 128


# --------------------------------------------------------------------------------------------
# One pass: tokenize, and few-shot rows drawn from the padded arrays
# --------------------------------------------------------------------------------------------


@needs_glue
@pytest.mark.parametrize("task, max_length", [("stsb", 32), ("rte", 64), ("cola", 16)])
def test_tokenize_is_drop_long_then_to_arrays(splits, tokenizer, task, max_length):
    examples = splits[task, "validation"].select(np.arange(200))
    arrays, dropped = tokenize(examples, tokenizer, max_length)
    kept, dropped_too = drop_long(examples, tokenizer, max_length)
    assert dropped == dropped_too > 0
    for got, want in zip(arrays, to_arrays(kept, tokenizer, max_length)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype


@needs_glue
@pytest.mark.parametrize("n, seed", [(16, 0), (64, 3), (300, 1)])
def test_few_shot_rows_of_the_arrays_equal_the_few_shot_examples(splits, tokenizer, n, seed):
    """Drawing rows of the tokenised split gives the arrays of the drawn examples (fit tokenises once)."""
    kept, _ = drop_long(splits["stsb", "train"], tokenizer, 32)
    arrays, _ = tokenize(splits["stsb", "train"], tokenizer, 32)
    rows = take(arrays, few_shot_indices(len(kept), n, seed))
    for got, want in zip(rows, to_arrays(few_shot(kept, n, seed), tokenizer, 32)):
        np.testing.assert_array_equal(got, want)


def test_take_and_indices_errors():
    arrays = synthetic(5)
    assert take(arrays, np.array([4, 4, 0])).input_ids[:, 0].tolist() == [4, 4, 0]
    with pytest.raises(ValueError, match=r"integer positions in \[0, 5\)"):
        take(arrays, np.array([5]))
    with pytest.raises(ValueError, match="few-shot size n must be an integer ≥ 1"):
        few_shot_indices(5, 0, 0)
    with pytest.raises(ValueError, match="no examples"):
        few_shot_indices(0, 3, 0)


# --------------------------------------------------------------------------------------------
# Bucketed padding (trim, eval_batches)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_length, expected", [
    (128, (16, 32, 48, 64, 80, 96, 112, 128)),  # the paper's length: multiples of 16
    (32, (16, 32)),  # the smoke profile's
    (100, (16, 32, 48, 64, 80, 96, 100)),
    (512, (64, 128, 192, 256, 320, 384, 448, 512)),
    (8, (8,)),
])
def test_bucket_lengths(max_length, expected):
    from companion.adapt.batching import BUCKETS, bucket_length, bucket_lengths

    got = bucket_lengths(max_length)
    assert got == expected and len(got) <= BUCKETS + 1 and got[-1] == max_length
    assert bucket_length(1, got) == got[0] and bucket_length(max_length, got) == max_length
    with pytest.raises(ValueError, match="exceed the longest bucket"):
        bucket_length(max_length + 1, got)


def ragged(lengths: list[int], t: int = 12) -> Batch:
    """Rows of the given token counts padded to t; row i's tokens are i + 1."""
    n = len(lengths)
    mask = (np.arange(t)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    return Batch(input_ids=mask * (np.arange(n)[:, None] + 1), attention_mask=mask,
                 token_type_ids=mask.copy(), labels=np.arange(n, dtype=np.int32), weight=np.ones(n, np.float32))


def test_trim_cuts_only_padding_to_the_bucket():
    from companion.adapt.batching import trim

    b = ragged([3, 5, 2])
    t = trim(b, (4, 8, 12))
    assert t.input_ids.shape == (3, 8) and t.attention_mask.sum() == b.attention_mask.sum()
    np.testing.assert_array_equal(t.input_ids, b.input_ids[:, :8])
    assert t.labels is b.labels and t.weight is b.weight
    assert trim(b, (12,)) is b  # already at its bucket
    # Stacked batches (seeds, B, T): one length, the bucket of the longest row over all of them.
    stacked = Batch(*(np.stack(x) for x in zip(ragged([1, 2, 3]), ragged([2, 9, 1]))))
    assert trim(stacked, (4, 8, 12)).input_ids.shape == (2, 3, 12)
    assert trim(Batch(*(np.stack(x) for x in zip(ragged([1, 2]), ragged([3, 1])))), (4, 8, 12)).input_ids.shape == (2, 2, 4)


@needs_glue
def test_bucketed_train_batches_take_few_lengths(splits, tokenizer):
    """Over an STS-B epoch at 128 tokens, batches take at most len(bucket_lengths) padded lengths,
    far below 128 on average, and keep every token."""
    from companion.adapt.batching import bucket_lengths, trim

    arrays, _ = tokenize(splits["stsb", "train"], tokenizer)
    buckets = bucket_lengths(128)
    stream = train_stream(arrays, 16, seed=0)
    lengths = []
    for _ in range(200):
        full = next(stream)
        t = trim(full, buckets)
        assert t.attention_mask.sum() == full.attention_mask.sum() and t.input_ids.shape[0] == 16
        lengths.append(t.input_ids.shape[1])
    assert set(lengths) <= set(buckets) and 1 < len(set(lengths)) <= len(buckets)
    assert np.mean(lengths) < 96


def test_eval_batches_cover_each_example_once_in_length_order():
    from companion.adapt.batching import eval_batches

    lengths = [5, 1, 12, 3, 3, 7, 2]
    ev = eval_batches(ragged(lengths), 3, (4, 8, 12))
    assert [b.input_ids.shape for b in ev.batches] == [(3, 4), (3, 8), (3, 12)]
    assert [b.weight.tolist() for b in ev.batches][-1] == [1.0, 0.0, 0.0]
    real = np.concatenate([b.labels[b.weight > 0] for b in ev.batches])
    assert real.tolist() == ev.order.tolist() and sorted(real.tolist()) == list(range(7))
    assert [lengths[i] for i in ev.order] == sorted(lengths)
    np.testing.assert_array_equal(ev.restore(real), np.arange(7))  # back to the split's order
    two = np.stack([real, 10 * real])
    np.testing.assert_array_equal(ev.restore(two, axis=1), np.stack([np.arange(7), 10 * np.arange(7)]))
