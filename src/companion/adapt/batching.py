"""Tokenisation and batching of GLUE examples for BERT.

The pipeline is ``glue.load_split`` → ``drop_long`` → ``few_shot`` (optional) → ``to_arrays``
→ ``batches`` / ``train_stream``; ``tokenize`` does ``drop_long`` and ``to_arrays`` in one pass
over the tokenizer, and ``take`` draws rows of the padded arrays (``few_shot_indices``), so a
split is tokenised once however many seeds draw from it.

arXiv:2406.04112, Deep LoRA experiments (few-shot STS-B, limited-data GLUE): sequences of at
most 128 tokens, longer train and validation examples dropped (never truncated), few-shot
subsets drawn with replacement with the run's seed, which also fixes the batch order.

- Tokenisation uses a ``tokenizers.Tokenizer`` with truncation and padding switched off, and
  ``to_arrays`` pads everything to exactly ``max_length``, once per split.
- Batches are fixed-size; rows that only pad a last partial batch carry weight 0.
- ``trim`` then cuts a batch's token axis to the bucket of its longest row (``bucket_lengths``:
  at most ``BUCKETS`` + 1 lengths up to ``max_length``), so a step costs what its tokens cost while
  jitted steps compile once per bucket, not once per batch. Padded positions are masked, so
  outputs change only by float rounding (dropout draws depend on the padded shape, though).
- ``eval_batches`` visits a split sorted by length (fewer padded tokens), in larger batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import numpy as np

from companion.adapt.glue import Examples, is_int

if TYPE_CHECKING:  # the tokenizer is passed in by the caller; only its type is needed here
    from tokenizers import Encoding, Tokenizer

__all__ = [
    "MAX_LENGTH",
    "BUCKETS",
    "Batch",
    "EvalBatches",
    "batches",
    "bucket_length",
    "bucket_lengths",
    "drop_long",
    "encode",
    "eval_batches",
    "few_shot",
    "few_shot_indices",
    "take",
    "to_arrays",
    "tokenize",
    "train_stream",
    "trim",
]

MAX_LENGTH = 128  # paper: max_seq_length 128, longer train and validation examples dropped
BUCKETS = 8  # padded lengths per max_length (trim); each is one compiled program per step function
MIN_BUCKET = 16  # shortest padded length and the spacing of buckets up to 8·16 = 128 tokens


def _check_tokenizer(tokenizer: Tokenizer) -> None:
    """The protocol needs the raw lengths: no truncation, no padding inside the tokenizer."""
    if tokenizer.truncation is not None:
        raise ValueError(
            f"the tokenizer truncates ({tokenizer.truncation}); call tokenizer.no_truncation() "
            "first: long examples are dropped (drop_long), never truncated"
        )
    if tokenizer.padding is not None:
        raise ValueError(
            f"the tokenizer pads ({tokenizer.padding}); call tokenizer.no_padding() first: "
            "to_arrays pads to max_length itself"
        )


def _special_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(
            f"the tokenizer has no {token} token; use a BERT WordPiece tokenizer.json "
            "(the model's own tokenizer)"
        )
    return int(token_id)


def _check_max_length(max_length: int) -> None:
    if not is_int(max_length) or max_length < 1:
        raise ValueError(f"max_length must be a positive integer, got {max_length!r}")


def encode(examples: Examples, tokenizer: Tokenizer) -> list[Encoding]:
    """Tokenise every example with the model's special tokens ([CLS] a [SEP] (b [SEP])).

    Args:
        examples: N examples; pairs are encoded as pairs (token_type_ids 0 then 1).
        tokenizer: a ``tokenizers.Tokenizer`` with truncation and padding switched off.

    Returns:
        (N,) encodings of unpadded, untruncated length.
    """
    _check_tokenizer(tokenizer)
    if examples.text_b is None:
        inputs: list[Any] = list(examples.text_a)
    else:
        inputs = list(zip(examples.text_a, examples.text_b))
    return tokenizer.encode_batch(inputs)


def drop_long(
    examples: Examples, tokenizer: Tokenizer, max_length: int = MAX_LENGTH
) -> tuple[Examples, int]:
    """Drop the examples whose encoding (special tokens included) exceeds ``max_length``.

    paper: train and validation examples longer than 128 tokens are dropped, not truncated.

    Args:
        examples: N examples.
        tokenizer: as for ``encode``.
        max_length: longest kept encoding, in tokens.

    Returns:
        (the kept examples in their original order, number dropped).
    """
    _check_max_length(max_length)
    lengths = np.array([len(e.ids) for e in encode(examples, tokenizer)], dtype=np.int64)
    keep = np.flatnonzero(lengths <= max_length)
    return examples.select(keep), len(examples) - keep.size


def few_shot_indices(size: int, n: int, seed: int) -> np.ndarray:
    """Positions of a few-shot draw: ``n`` indices uniform in [0, size), with replacement.

    paper: few-shot samples drawn with replacement, using the run's seed, so n may exceed the
    split's size and an example may appear more than once.

    Args:
        size: N ≥ 1, the number of examples drawn from.
        n: number of draws, ≥ 1.
        seed: the run's seed (``np.random.default_rng(seed)``).

    Returns:
        (n,) int64 positions, in draw order.
    """
    if not is_int(n) or n < 1:
        raise ValueError(f"few-shot size n must be an integer ≥ 1, got {n!r}")
    _check_seed(seed)
    if size == 0:
        raise ValueError("cannot draw a few-shot subset: no examples")
    return np.random.default_rng(seed).integers(0, size, size=int(n))


def few_shot(examples: Examples, n: int, seed: int) -> Examples:
    """A few-shot training set: ``n`` examples drawn uniformly with replacement
    (``few_shot_indices``).

    Args:
        examples: N ≥ 1 examples to draw from.
        n: number of draws, ≥ 1.
        seed: the run's seed.

    Returns:
        n examples, in draw order.
    """
    if len(examples) == 0:
        raise ValueError(f"cannot draw a few-shot subset of {examples.task!r}: no examples")
    return examples.select(few_shot_indices(len(examples), n, seed))


def _check_seed(seed: Any) -> None:
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


# --------------------------------------------------------------------------------------------
# Arrays and batches
# --------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    """Fixed-shape model inputs: B rows of T tokens (T = max_length)."""

    input_ids: np.ndarray  # (B, T) int32; [PAD] after the encoding
    attention_mask: np.ndarray  # (B, T) int32; 1 on tokens, 0 on padding
    token_type_ids: np.ndarray  # (B, T) int32; 0 for [CLS] a [SEP], 1 for b [SEP], 0 on padding
    labels: np.ndarray  # (B,) int32 class indices, or float32 scores (STS-B)
    weight: np.ndarray  # (B,) float32; 1 for real examples, 0 for rows padding a partial batch


def to_arrays(examples: Examples, tokenizer: Tokenizer, max_length: int = MAX_LENGTH) -> Batch:
    """Encode all examples and pad them to exactly ``max_length`` tokens.

    One fixed T for every batch means a jitted step compiles once (paper: max_seq_length 128).

    Args:
        examples: N examples, none longer than ``max_length`` tokens (see ``drop_long``).
        tokenizer: as for ``encode``; must define [CLS] and [PAD].
        max_length: T.

    Returns:
        A ``Batch`` of N rows, all with weight 1.

    Raises:
        ValueError: an example is longer than ``max_length`` (call ``drop_long`` first).
    """
    _check_max_length(max_length)
    return _pad(examples, encode(examples, tokenizer), tokenizer, max_length)


def _pad(examples: Examples, encodings: list[Encoding], tokenizer: Tokenizer, max_length: int) -> Batch:
    """The encodings of ``examples`` padded to (N, max_length); refuses a longer one."""
    pad_id = _special_id(tokenizer, "[PAD]")
    cls_id = _special_id(tokenizer, "[CLS]")
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    too_long = np.flatnonzero(lengths > max_length)
    if too_long.size:
        raise ValueError(
            f"{too_long.size} of {len(examples)} {examples.task!r} examples are longer than "
            f"max_length={max_length} tokens (first at index {too_long[0]}, "
            f"{lengths[too_long[0]]} tokens); call drop_long first"
        )
    n = len(examples)
    input_ids = np.full((n, max_length), pad_id, dtype=np.int32)
    attention_mask = np.zeros((n, max_length), dtype=np.int32)
    token_type_ids = np.zeros((n, max_length), dtype=np.int32)
    for i, e in enumerate(encodings):
        length = len(e.ids)
        input_ids[i, :length] = e.ids
        attention_mask[i, :length] = e.attention_mask
        token_type_ids[i, :length] = e.type_ids
    if n and not np.all(input_ids[:, 0] == cls_id):
        raise ValueError(
            "the tokenizer does not start encodings with [CLS]; load the model's own "
            "tokenizer.json (its post-processor adds [CLS] and [SEP])"
        )
    label_dtype = np.float32 if examples.spec.is_regression else np.int32
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        labels=examples.labels.astype(label_dtype),
        weight=np.ones(n, dtype=np.float32),
    )


def tokenize(examples: Examples, tokenizer: Tokenizer, max_length: int = MAX_LENGTH) -> tuple[Batch, int]:
    """``drop_long`` then ``to_arrays`` with one pass of the tokenizer.

    Args:
        examples: N examples.
        tokenizer: as for ``encode``; must define [CLS] and [PAD].
        max_length: T, the longest kept encoding.

    Returns:
        (a ``Batch`` of the K ≤ N examples of at most T tokens, in their original order, padded
        to (K, T); N − K, the number dropped). Equal to ``to_arrays(drop_long(...)[0], ...)``.
    """
    _check_max_length(max_length)
    encodings = encode(examples, tokenizer)
    keep = np.flatnonzero(np.array([len(e.ids) for e in encodings], dtype=np.int64) <= max_length)
    kept = examples.select(keep)
    return _pad(kept, [encodings[i] for i in keep], tokenizer, max_length), len(examples) - keep.size


def take(arrays: Batch, indices: np.ndarray) -> Batch:
    """The rows ``indices`` of ``arrays`` (repeats allowed), e.g. a ``few_shot_indices`` draw.

    Args:
        arrays: N rows from ``to_arrays`` / ``tokenize``.
        indices: (K,) integer positions in [0, N).

    Returns:
        A ``Batch`` of K rows.
    """
    n = _num_rows(arrays)
    idx = np.asarray(indices)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or (idx.size and (idx.min() < 0 or idx.max() >= n)):
        raise ValueError(f"indices must be a 1-D array of integer positions in [0, {n})")
    return Batch(*(np.asarray(a)[idx] for a in arrays))


def _num_rows(arrays: Batch) -> int:
    """N, after checking that the five arrays agree on it."""
    if not isinstance(arrays, Batch):
        raise ValueError(f"expected a Batch (from to_arrays), got {type(arrays).__name__}")
    ids = np.asarray(arrays.input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must have shape (N, T), got {ids.shape}")
    expected = {
        "attention_mask": ids.shape,
        "token_type_ids": ids.shape,
        "labels": ids.shape[:1],
        "weight": ids.shape[:1],
    }
    for name, shape in expected.items():
        got = np.shape(getattr(arrays, name))
        if got != shape:
            raise ValueError(f"{name} must have shape {shape}, got {got}")
    if ids.shape[0] == 0:
        raise ValueError("no examples to batch (did drop_long drop them all?)")
    return ids.shape[0]


def _check_batch_size(batch_size: int) -> None:
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _take(
    arrays: Batch, order: np.ndarray, batch_size: int, drop_remainder: bool
) -> Iterator[Batch]:
    """Consecutive batches of ``order``; a short last one is padded with weight-0 rows."""
    n = order.shape[0]
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        real = idx.shape[0]
        if real < batch_size:
            if drop_remainder:
                return
            # Padding rows repeat the batch's first example: valid inputs (no all-masked
            # attention row), excluded from losses and metrics by their weight 0.
            idx = np.concatenate([idx, np.full(batch_size - real, idx[0])])
        batch = Batch(*(np.asarray(a)[idx] for a in arrays))
        if real < batch_size:
            weight = batch.weight.copy()
            weight[real:] = 0.0
            batch = batch._replace(weight=weight)
        yield batch


def batches(
    arrays: Batch,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | None,
    drop_remainder: bool,
) -> Iterator[Batch]:
    """One pass over the examples in fixed-size batches.

    For evaluation use ``shuffle=False, drop_remainder=False``: every example appears exactly
    once with weight 1, and the last partial batch is filled with weight-0 rows (paper: score
    on the full validation split).

    Args:
        arrays: N rows from ``to_arrays``.
        batch_size: B.
        shuffle: visit the rows in the order ``np.random.default_rng(seed).permutation(N)``.
        seed: required when ``shuffle``; unused otherwise.
        drop_remainder: skip a last partial batch instead of padding it.

    Returns:
        An iterator of ``Batch`` with B rows each.
    """
    n = _num_rows(arrays)
    _check_batch_size(batch_size)
    if shuffle:
        if seed is None:
            raise ValueError("shuffle=True needs a seed (the run's seed fixes shuffling)")
        _check_seed(seed)
        order = np.random.default_rng(seed).permutation(n)
    else:
        order = np.arange(n)
    if drop_remainder and n < batch_size:
        raise ValueError(
            f"{n} examples make no full batch of {batch_size}; use drop_remainder=False "
            "or a smaller batch_size"
        )
    return _take(arrays, order, int(batch_size), drop_remainder)


def train_stream(arrays: Batch, batch_size: int, seed: int) -> Iterator[Batch]:
    """Endless training batches, epoch after epoch, each epoch in a fresh random order.

    paper: the run's seed fixes shuffling; epoch orders are successive permutations from one
    ``np.random.default_rng(seed)``. Like a data loader that keeps the last partial batch, an
    epoch of N examples gives ceil(N / B) steps and its last batch is padded with weight-0 rows
    (use a weighted mean loss); with N a multiple of B (e.g. 16, 64, 256, 1024 samples at
    batch 16) every batch is full.

    Args:
        arrays: N rows from ``to_arrays``.
        batch_size: B.
        seed: the run's seed.

    Returns:
        An infinite iterator of ``Batch`` with B rows each.
    """
    n = _num_rows(arrays)
    _check_batch_size(batch_size)
    _check_seed(seed)

    def stream() -> Iterator[Batch]:
        rng = np.random.default_rng(seed)
        while True:
            yield from _take(arrays, rng.permutation(n), int(batch_size), drop_remainder=False)

    return stream()


# --------------------------------------------------------------------------------------------
# Bucketed padding
# --------------------------------------------------------------------------------------------


def bucket_lengths(max_length: int = MAX_LENGTH, count: int = BUCKETS) -> tuple[int, ...]:
    """The padded lengths a batch may take: evenly spaced, the last one ``max_length``.

    The spacing is ceil(max_length / count) rounded up to a multiple of 8, and at least
    ``MIN_BUCKET``: (16, 32, …, 112, 128) at the paper's 128 tokens, (16, 32) at 32, (64, …, 512)
    at 512. Spacing, not powers of two: a few-shot STS-B batch of 16 pairs is longest at ~62 tokens
    (median), which powers of two would pad to 128 half the time.

    Args:
        max_length: T, the longest sequence (``to_arrays``).
        count: most buckets (≥ 1); the result has at most ``count`` + 1 lengths.

    Returns:
        Increasing lengths, the last ``max_length``.
    """
    _check_max_length(max_length)
    if not is_int(count) or count < 1:
        raise ValueError(f"the bucket count must be a positive integer, got {count!r}")
    step = max(MIN_BUCKET, -(-max_length // count))
    step = -(-step // 8) * 8
    return tuple(range(step, max_length, step)) + (max_length,)


def bucket_length(length: int, buckets: tuple[int, ...]) -> int:
    """The shortest bucket ≥ ``length`` (tokens of a batch's longest row)."""
    for b in buckets:
        if b >= length:
            return b
    raise ValueError(f"{length} tokens exceed the longest bucket {buckets[-1]}")


def _lengths(mask: np.ndarray) -> np.ndarray:
    """Tokens per row: the position after the last unmasked one (..., T) → (...)."""
    mask = np.asarray(mask) > 0
    t = mask.shape[-1]
    return np.where(mask.any(-1), t - np.argmax(mask[..., ::-1], axis=-1), 0)


def trim(batch: Batch, buckets: tuple[int, ...]) -> Batch:
    """``batch`` with its token axis cut to the bucket of its longest row.

    Works on stacked batches too (leading axes, e.g. (seeds, B, T)): the bucket is the longest
    row over all of them, since vectorised seeds need one shape. Only padding is cut: the
    positions dropped are masked in every row.

    Args:
        batch: token arrays (..., T) with T ≥ the longest row (``to_arrays``, ``batches``).
        buckets: from ``bucket_lengths``.

    Returns:
        The same rows, token arrays (..., L) with L = ``bucket_length(longest row, buckets)``
        (at most T: a batch is never padded further).
    """
    ids = np.asarray(batch.input_ids)
    length = min(bucket_length(int(_lengths(batch.attention_mask).max(initial=0)), buckets), ids.shape[-1])
    if length == ids.shape[-1]:
        return batch
    cut = lambda a: np.asarray(a)[..., :length]  # noqa: E731
    return batch._replace(input_ids=cut(batch.input_ids), attention_mask=cut(batch.attention_mask),
                          token_type_ids=cut(batch.token_type_ids))


class EvalBatches(NamedTuple):
    """A split in length order, in trimmed batches, and the way back to the split's order."""

    batches: list[Batch]  # each trimmed (``trim``); rows padding the last batch have weight 0
    order: np.ndarray  # (N,) the split's row of each real row, in batch order

    def restore(self, values: np.ndarray, axis: int = 0) -> np.ndarray:
        """Per-row values in batch order (real rows only, along ``axis``) → the split's order."""
        out = np.empty_like(values)
        index = [slice(None)] * values.ndim
        index[axis] = self.order
        out[tuple(index)] = values
        return out


def eval_batches(arrays: Batch, batch_size: int, buckets: tuple[int, ...]) -> EvalBatches:
    """Evaluation batches that pad little: the rows sorted by length, each batch trimmed.

    Every example appears once with weight 1 (paper: score on the full validation split); the
    order only groups similar lengths, and ``EvalBatches.restore`` undoes it.

    Args:
        arrays: N rows from ``to_arrays``.
        batch_size: B (larger than training's: no gradients are kept).
        buckets: from ``bucket_lengths``.

    Returns:
        ``EvalBatches`` of ceil(N / B) batches of B rows.
    """
    _num_rows(arrays)  # refuses arrays that disagree on N
    _check_batch_size(batch_size)
    order = np.argsort(_lengths(arrays.attention_mask), kind="stable")
    return EvalBatches([trim(b, buckets) for b in _take(arrays, order, int(batch_size), False)], order)
