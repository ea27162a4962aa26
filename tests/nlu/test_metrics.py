"""GLUE metrics against values computed by hand (the arithmetic is in each comment)."""

from __future__ import annotations

import math

import pytest

from linchain.nlu.metrics import (
    accuracy,
    compute_metrics,
    f1_binary,
    f1_macro,
    matthews_corrcoef,
    pearson,
    spearman,
)

# labels 1 1 1 0 0 0 1 0 ; preds 1 0 1 0 1 0 1 0  -> TP=3 FN=1 FP=1 TN=3
LABELS = [1, 1, 1, 0, 0, 0, 1, 0]
PREDS = [1, 0, 1, 0, 1, 0, 1, 0]


def test_binary_by_hand():
    assert accuracy(PREDS, LABELS) == 6 / 8
    assert f1_binary(PREDS, LABELS) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # 0.75
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (9 - 1) / sqrt(4*4*4*4) = 0.5
    assert matthews_corrcoef(PREDS, LABELS) == pytest.approx(0.5)


def test_matthews_edge_cases():
    assert matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0  # one predicted class: undefined -> 0
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    # three classes, all right -> 1
    assert matthews_corrcoef([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)


def test_multiclass_matthews_by_hand():
    # labels 0 0 1 1 2 2 ; preds 0 1 1 1 2 0: c = 4 correct, s = 6,
    # true counts t = (2, 2, 2), predicted counts p = (2, 3, 1)
    # (c*s - sum p*t) / sqrt((s^2 - sum p^2)(s^2 - sum t^2)) = (24 - 12) / sqrt((36 - 14)(36 - 12))
    expected = 12 / math.sqrt(22 * 24)
    assert matthews_corrcoef([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]) == pytest.approx(expected)


def test_macro_f1_by_hand():
    # class 0: TP1 FP1 FN1 -> 0.5; class 1: TP2 FP1 FN0 -> 0.8; class 2: TP1 FP0 FN1 -> 2/3
    assert f1_macro([0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_correlations_by_hand():
    x, y = [1, 2, 3, 4], [2, 4, 5, 9]
    # x - mean = (-1.5 -0.5 0.5 1.5), y - mean = (-3 -1 0 4): sum xy = 4.5+0.5+0+6 = 11,
    # sum x^2 = 5, sum y^2 = 26 -> 11 / sqrt(130)
    assert pearson(x, y) == pytest.approx(11 / math.sqrt(130))
    assert spearman(x, y) == pytest.approx(1.0)  # monotone
    # ties: y ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): centred (-1.5 0 0 1.5) . (-1.5 -.5 .5 1.5) = 4.5,
    # norms 4.5 and 5 -> 4.5 / sqrt(22.5)
    assert spearman([1, 2, 3, 4], [1, 7, 7, 9]) == pytest.approx(4.5 / math.sqrt(22.5))


def test_glue_task_metric_sets():
    assert set(compute_metrics("cola", PREDS, LABELS)) == {"matthews"}
    assert compute_metrics("mrpc", PREDS, LABELS) == pytest.approx({"accuracy": 0.75, "f1": 0.75})
    assert set(compute_metrics("stsb", [0.1, 0.5, 0.9], [0, 1, 2])) == {"pearson", "spearman"}
    assert set(compute_metrics("bbc", [0, 1, 2], [0, 1, 1])) == {"accuracy", "f1", "matthews"}
    # a 5-class task whose rows happen to hold two classes still gets macro-F1, not class-1 F1
    # class 0: TP1 FN1 -> 2/3; class 1: TP1 FP1 -> 2/3
    assert compute_metrics("bbc", [0, 1, 1], [0, 1, 0], num_labels=5)["f1"] == pytest.approx(2 / 3)
    assert compute_metrics("bbc", [0, 0, 0], [0, 0, 0], num_labels=5)["f1"] == 1.0
