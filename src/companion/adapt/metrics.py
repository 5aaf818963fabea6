"""GLUE evaluation metrics in plain numpy.

arXiv:2406.04112 (Deep LoRA experiments) scores CoLA by Matthews correlation, STS-B by Pearson correlation and every other
task by accuracy; MRPC and QQP also report F1 and STS-B also Spearman, as GLUE does. Each
function takes two 1-D arrays of shape (N,) and returns a Python float. Binary metrics
(``f1``, ``matthews_corrcoef``) treat class 1 as the positive class and reject any other value.

The definitions and edge cases follow scikit-learn / scipy (the libraries behind the usual
GLUE evaluation scripts), so the numbers are comparable, without depending on either.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "METRICS",
    "NAMES",
    "accuracy",
    "compute",
    "f1",
    "matthews_corrcoef",
    "pearson",
    "spearman",
]


def _pair(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Both arguments as 1-D arrays of the same non-zero length, or a ValueError."""
    a = np.asarray(a)
    b = np.asarray(b)
    for name, arr in zip(names, (a, b)):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D of shape (N,), got shape {arr.shape}")
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same length, "
            f"got {a.shape[0]} and {b.shape[0]}"
        )
    if a.shape[0] == 0:
        raise ValueError(
            f"{names[0]} and {names[1]} are empty; a metric needs at least one example"
        )
    return a, b


def _binary(pred: np.ndarray, label: np.ndarray) -> tuple[int, int, int, int]:
    """Confusion counts (tp, fp, fn, tn) of two {0, 1} arrays, as Python ints (no overflow)."""
    pred, label = _pair(pred, label, ("pred", "label"))
    for name, arr in (("pred", pred), ("label", label)):
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            raise ValueError(
                f"{name} must hold binary classes 0/1 (1 = positive); found {arr[bad][0].item()!r} "
                f"at index {int(np.flatnonzero(bad)[0])}"
            )
    p = pred == 1
    t = label == 1
    tp = int(np.sum(p & t))
    fp = int(np.sum(p & ~t))
    fn = int(np.sum(~p & t))
    tn = int(np.sum(~p & ~t))
    return tp, fp, fn, tn


def accuracy(pred: np.ndarray, label: np.ndarray) -> float:
    """Fraction of exact matches (the paper's main metric of all tasks but CoLA and STS-B).

    Args:
        pred: (N,) predicted class indices.
        label: (N,) true class indices.

    Returns:
        mean(pred == label) in [0, 1].
    """
    pred, label = _pair(pred, label, ("pred", "label"))
    return float(np.mean(pred == label))


def f1(pred: np.ndarray, label: np.ndarray) -> float:
    """Binary F1 of the positive class 1 (GLUE's second metric for MRPC and QQP).

    F1 = 2 TP / (2 TP + FP + FN). When there are no positives in either array the ratio is
    0/0; like scikit-learn's default (``zero_division``), that case returns 0.0.

    Args:
        pred: (N,) predicted classes in {0, 1}.
        label: (N,) true classes in {0, 1}.

    Returns:
        F1 in [0, 1].
    """
    tp, fp, fn, _ = _binary(pred, label)
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def matthews_corrcoef(pred: np.ndarray, label: np.ndarray) -> float:
    """Binary Matthews correlation (the paper's metric of CoLA).

    MCC = (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)). When a row or column of the
    confusion matrix is empty (e.g. a constant predictor) the denominator is 0 and, like
    scikit-learn, the result is 0.0.

    Args:
        pred: (N,) predicted classes in {0, 1}.
        label: (N,) true classes in {0, 1}.

    Returns:
        MCC in [−1, 1].
    """
    tp, fp, fn, tn = _binary(pred, label)
    denom = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if denom == 0:
        return 0.0  # scikit-learn's convention for an undefined correlation
    return (tp * tn - fp * fn) / math.sqrt(denom)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (the paper's metric of STS-B).

    Computed in float64 on centred data. A constant input has no defined correlation; the
    result is then NaN (as in scipy), never a made-up number.

    Args:
        x: (N,) predictions (N ≥ 2).
        y: (N,) targets.

    Returns:
        r in [−1, 1], or NaN if x or y is constant.
    """
    x, y = _pair(x, y, ("x", "y"))
    if x.shape[0] < 2:
        raise ValueError(f"pearson needs at least 2 examples, got {x.shape[0]}")
    x = x.astype(np.float64) - np.mean(x, dtype=np.float64)
    y = y.astype(np.float64) - np.mean(y, dtype=np.float64)
    norm = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    if norm == 0.0:
        return float("nan")
    # Clip the last ulp of rounding so |r| never exceeds 1.
    return float(np.clip(np.dot(x, y) / norm, -1.0, 1.0))


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """(N,) 1-based ranks of a, ties sharing the mean of the ranks they span."""
    order = np.argsort(a, kind="stable")
    sorted_a = a[order]
    # Start index of each run of equal values in the sorted array.
    starts = np.flatnonzero(np.concatenate(([True], sorted_a[1:] != sorted_a[:-1])))
    ends = np.concatenate((starts[1:], [a.shape[0]]))  # exclusive
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 … ends
    ranks = np.empty(a.shape[0], dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of the average ranks (ties share their mean rank).

    Args:
        x: (N,) predictions (N ≥ 2).
        y: (N,) targets.

    Returns:
        ρ in [−1, 1], or NaN if x or y is constant.
    """
    x, y = _pair(x, y, ("x", "y"))
    if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
        raise ValueError("x contains NaN; ranks are undefined")
    if np.issubdtype(y.dtype, np.floating) and np.isnan(y).any():
        raise ValueError("y contains NaN; ranks are undefined")
    return pearson(_average_ranks(x), _average_ranks(y))


# Name → function, the names used by ``GlueTask.metrics`` in ``companion.adapt.glue``.
# How a sentence or an axis names each metric (the keys of METRICS are lower-case identifiers).
NAMES: Mapping[str, str] = {"accuracy": "accuracy", "f1": "F1", "matthews": "Matthews correlation",
                            "pearson": "Pearson correlation", "spearman": "Spearman correlation"}

METRICS: Mapping[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(
    metric_names: Sequence[str], predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Evaluate several metrics on the same predictions.

    Args:
        metric_names: names from ``METRICS`` (e.g. a task's ``GlueTask.metrics``).
        predictions: (N,) class indices, or scores for a regression task.
        labels: (N,) targets.

    Returns:
        {name: value} in the order given.
    """
    if isinstance(metric_names, str):
        raise ValueError(
            f"metric_names must be a sequence of names, got the string {metric_names!r}; "
            f"write ({metric_names!r},)"
        )
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    return {name: METRICS[name](predictions, labels) for name in metric_names}
