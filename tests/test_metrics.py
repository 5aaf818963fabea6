"""companion.adapt.metrics against values worked out by hand (the GLUE metrics of arXiv:2406.04112)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from companion.adapt import metrics
from companion.adapt.metrics import accuracy, compute, f1, matthews_corrcoef, pearson, spearman


def from_counts(tp: int, fp: int, fn: int, tn: int) -> tuple[np.ndarray, np.ndarray]:
    """(pred, label) with exactly that 2×2 confusion matrix."""
    pred = np.array([1] * tp + [1] * fp + [0] * fn + [0] * tn)
    label = np.array([1] * tp + [0] * fp + [1] * fn + [0] * tn)
    return pred, label


# pred/label of eight examples: TP = 3 (idx 0, 4, 6), FP = 1 (idx 1), FN = 2 (idx 3, 7),
# TN = 2 (idx 2, 5).
PRED = np.array([1, 1, 0, 0, 1, 0, 1, 0])
LABEL = np.array([1, 0, 0, 1, 1, 0, 1, 1])


def test_worked_example_counts():
    assert from_counts(3, 1, 2, 2)[0].sum() == 4
    tp = int(np.sum((PRED == 1) & (LABEL == 1)))
    fp = int(np.sum((PRED == 1) & (LABEL == 0)))
    fn = int(np.sum((PRED == 0) & (LABEL == 1)))
    tn = int(np.sum((PRED == 0) & (LABEL == 0)))
    assert (tp, fp, fn, tn) == (3, 1, 2, 2)


def test_accuracy_by_hand():
    assert accuracy(PRED, LABEL) == 5 / 8
    assert accuracy(np.array([2, 0, 1]), np.array([2, 1, 1])) == pytest.approx(2 / 3)  # 3 classes


@pytest.mark.parametrize(
    "pred, label, expected",
    [
        (PRED, LABEL, 2 / 3),  # 2·3 / (2·3 + 1 + 2) = 6/9
        (*from_counts(5, 2, 1, 4), 10 / 13),  # 10 / (10 + 2 + 1)
        (np.array([1, 1, 0]), np.array([1, 1, 0]), 1.0),
        (np.array([0, 1, 0]), np.array([1, 0, 0]), 0.0),  # TP = 0 but FP, FN > 0
        (np.array([0, 0, 0]), np.array([0, 0, 0]), 0.0),  # 0/0: scikit-learn's zero_division
    ],
)
def test_f1_by_hand(pred, label, expected):
    assert f1(pred, label) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    "counts, expected",
    [
        ((3, 1, 2, 2), 1 / math.sqrt(15)),  # (3·2 − 1·2) / sqrt(4·5·3·4) = 4 / sqrt(240)
        ((5, 2, 1, 4), 18 / math.sqrt(1260)),  # (5·4 − 2·1) / sqrt(7·6·6·5)
        ((4, 0, 0, 6), 1.0),
        ((0, 3, 5, 0), -1.0),
        ((6, 4, 0, 0), 0.0),  # constant prediction 1: TN + FN = 0, denominator 0
        ((0, 0, 3, 7), 0.0),  # constant prediction 0
        ((0, 0, 0, 5), 0.0),  # a single class in labels and predictions
    ],
)
def test_matthews_by_hand(counts, expected):
    pred, label = from_counts(*counts)
    assert matthews_corrcoef(pred, label) == pytest.approx(expected, abs=1e-15)


def test_matthews_worked_example_value():
    assert matthews_corrcoef(PRED, LABEL) == pytest.approx(0.2581988897471611, abs=1e-15)


def test_matthews_large_counts_do_not_overflow():
    # The denominator's product (~2.5e19) overflows int64; Python ints keep it exact.
    n = 40_000
    pred, label = from_counts(n, n, n, 2 * n)
    assert matthews_corrcoef(pred, label) == pytest.approx(
        (2 * n * n - n * n) / math.sqrt((2 * n) * (2 * n) * (3 * n) * (3 * n))
    )


@pytest.mark.parametrize(
    "x, y, expected",
    [
        ([1, 2, 3], [1, 2, 4], math.sqrt(27 / 28)),  # cov 3, var_x 2, var_y 14/3
        ([1, 2, 3, 4], [2, 4, 6, 8], 1.0),
        ([1, 2, 3, 4], [8, 6, 4, 2], -1.0),
        ([1, 2, 3, 4], [1, -1, -1, 1], 0.0),
    ],
)
def test_pearson_by_hand(x, y, expected):
    assert pearson(np.array(x), np.array(y)) == pytest.approx(expected, abs=1e-15)


def test_pearson_is_affine_invariant_and_accepts_float32():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.5 * x + rng.normal(size=50)
    r = pearson(x, y)
    assert pearson(3.0 * x + 7.0, y) == pytest.approx(r, abs=1e-12)
    assert pearson(-x, y) == pytest.approx(-r, abs=1e-12)
    assert isinstance(r, float)
    # float32 inputs (model outputs) are accumulated in float64: only input rounding remains.
    assert pearson(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(r, abs=1e-6)


def test_pearson_of_a_constant_is_nan():
    assert math.isnan(pearson(np.array([2.0, 2.0, 2.0]), np.array([1.0, 2.0, 3.0])))


@pytest.mark.parametrize(
    "a, ranks",
    [
        ([10, 20, 20, 5, 20], [2, 4, 4, 1, 4]),  # three-way tie at ranks 3, 4, 5 → 4
        ([1.0, 1.0], [1.5, 1.5]),
        ([3, 1, 2], [3, 1, 2]),
    ],
)
def test_average_ranks(a, ranks):
    np.testing.assert_array_equal(metrics._average_ranks(np.array(a)), ranks)


@pytest.mark.parametrize(
    "x, y, expected",
    [
        # ranks x = (1, 2.5, 2.5, 4), y = (1, 3, 2, 4): cov 4.5, var 4.5 and 5 → 3/sqrt(10)
        ([1, 2, 2, 3], [1, 3, 2, 4], 3 / math.sqrt(10)),
        # ranks x = (1.5, 1.5, 3.5, 3.5), y = (1, 2, 3, 4): cov 4, var 4 and 5 → 2/sqrt(5)
        ([1, 1, 2, 2], [1, 2, 3, 4], 2 / math.sqrt(5)),
        ([1, 2, 3, 4], [1, 8, 27, 64], 1.0),  # monotone, not linear
        ([1, 2, 3, 4], [10, 5, 1, 0.5], -1.0),
    ],
)
def test_spearman_by_hand(x, y, expected):
    assert spearman(np.array(x), np.array(y)) == pytest.approx(expected, abs=1e-15)


def test_against_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats", reason="scipy cross-check only")
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, size=200).astype(np.float64)  # many ties
    y = x + rng.normal(size=200)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


@pytest.mark.parametrize("fn", [accuracy, f1, matthews_corrcoef, pearson, spearman])
def test_shape_errors(fn):
    with pytest.raises(ValueError, match="same length"):
        fn(np.array([1, 0, 1]), np.array([1, 0]))
    with pytest.raises(ValueError, match=r"1-D"):
        fn(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        fn(np.array([]), np.array([]))


@pytest.mark.parametrize("fn", [f1, matthews_corrcoef])
def test_binary_metrics_reject_other_classes(fn):
    with pytest.raises(ValueError, match=r"binary classes 0/1.*found 2 at index 1"):
        fn(np.array([1, 2, 0]), np.array([1, 1, 0]))


def test_correlations_need_two_points_and_no_nan():
    with pytest.raises(ValueError, match="at least 2"):
        pearson(np.array([1.0]), np.array([2.0]))
    with pytest.raises(ValueError, match="NaN"):
        spearman(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def test_compute_in_given_order():
    out = compute(("f1", "accuracy", "matthews"), PRED, LABEL)
    assert list(out) == ["f1", "accuracy", "matthews"]
    assert out == {
        "f1": pytest.approx(2 / 3),
        "accuracy": 5 / 8,
        "matthews": pytest.approx(1 / math.sqrt(15)),
    }
    scores = compute(["pearson", "spearman"], np.array([1, 2, 3]), np.array([1, 2, 4]))
    assert scores == {"pearson": pytest.approx(math.sqrt(27 / 28)), "spearman": pytest.approx(1.0)}


def test_compute_errors():
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['mcc'\]; choose from accuracy"):
        compute(("accuracy", "mcc"), PRED, LABEL)
    with pytest.raises(ValueError, match=r"write \('accuracy',\)"):
        compute("accuracy", PRED, LABEL)


def test_every_metric_has_a_name_for_sentences_and_axes():
    from companion.adapt.metrics import METRICS, NAMES

    assert set(NAMES) == set(METRICS) and NAMES["matthews"] == "Matthews correlation"
