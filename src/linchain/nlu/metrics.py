"""GLUE metrics in plain numpy: accuracy, F1, Matthews correlation, Pearson and Spearman.

Written here (a few lines each) so the NLU path needs neither scikit-learn nor scipy.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

__all__ = [
    "GLUE_METRICS",
    "accuracy",
    "compute_metrics",
    "f1_binary",
    "f1_macro",
    "matthews_corrcoef",
    "pearson",
    "spearman",
]

#: The metrics GLUE reports per task (the first one is the task's headline metric).
GLUE_METRICS: Dict[str, tuple] = {
    "cola": ("matthews",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "qqp": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    return float((preds == labels).mean()) if len(labels) else 0.0


def f1_binary(preds: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC/QQP F1); 0 when there are no true positives."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    tp = float(((preds == positive) & (labels == positive)).sum())
    fp = float(((preds == positive) & (labels != positive)).sum())
    fn = float(((preds != positive) & (labels == positive)).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_macro(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    classes = np.union1d(np.asarray(preds), np.asarray(labels))
    return float(np.mean([f1_binary(preds, labels, positive=c) for c in classes])) if len(classes) else 0.0


def matthews_corrcoef(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K); 0 when undefined.

    From the confusion matrix C: (c*s - sum_k p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)),
    c = trace, s = total, p_k / t_k = predicted / true counts of class k; for two classes this is
    (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    """
    preds, labels = np.asarray(preds), np.asarray(labels)
    classes = np.union1d(preds, labels)
    index = {c: i for i, c in enumerate(classes)}
    conf = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for p, t in zip(preds, labels):
        conf[index[t], index[p]] += 1
    t_k, p_k = conf.sum(1), conf.sum(0)
    c, s = np.trace(conf), conf.sum()
    denom = np.sqrt((s * s - (p_k**2).sum()) * (s * s - (t_k**2).sum()))
    return float((c * s - (p_k * t_k).sum()) / denom) if denom else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc**2).sum() * (yc**2).sum())
    return float((xc * yc).sum() / denom) if denom else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as scipy.stats.rankdata's default)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2  # mean of ranks start+1 .. end
            start = end
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the tie-averaged ranks."""
    return pearson(_ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64)))


def compute_metrics(task: str, preds: Sequence, labels: Sequence, num_labels: Optional[int] = None) -> Dict[str, float]:
    """The metrics of GLUE task ``task``; any other task gets accuracy, F1 and Matthews, where F1
    is that of class 1 for a binary task (``num_labels == 2``) and macro-F1 otherwise.
    ``preds`` are class ids, or scores for a regression task (stsb)."""
    names = GLUE_METRICS.get(task.lower().replace("-", ""))
    if names is None:
        observed = len(np.union1d(np.asarray(preds), np.asarray(labels)))
        binary = num_labels == 2 if num_labels is not None else observed <= 2
        return {
            "accuracy": accuracy(preds, labels),
            "f1": f1_binary(preds, labels) if binary else f1_macro(preds, labels),
            "matthews": matthews_corrcoef(preds, labels),
        }
    funcs = {
        "accuracy": accuracy,
        "f1": f1_binary,
        "matthews": matthews_corrcoef,
        "pearson": pearson,
        "spearman": spearman,
    }
    return {name: funcs[name](preds, labels) for name in names}
