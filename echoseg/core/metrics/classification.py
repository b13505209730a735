"""Classification metrics with seeded bootstrap confidence intervals (zero-shot classification, linear probes).

Scores are (N, K) class scores (probabilities or similarities; only their order within a column matters for AUC)
and labels are class indices 0..K-1:

- AUC: ROC AUC of the positive class for two classes; one-vs-rest macro average over the classes present for more;
- F1: of the positive class (index 1) for two classes, macro F1 for more, on the arg-max prediction;
- accuracy: of the arg-max prediction.

Each comes with a percentile bootstrap 95 % CI over samples (``n_boot`` resamples, seeded); a resample in which
the metric is undefined (AUC with one class only) is redrawn as scikit-learn would refuse it, and the CI says how
many resamples it used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

Metric = Callable[[np.ndarray, np.ndarray], float]


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows normalised to sum 1 (softmax of the scores), as multi-class AUC needs."""
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC: binary on column 1, else one-vs-rest macro over the classes present (NaN if one class)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if scores.shape[1] == 2:
        return float(roc_auc_score(labels, scores[:, 1]))
    per_class = [roc_auc_score(labels == k, scores[:, k]) for k in present]
    return float(np.mean(per_class))


def f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """F1 of the arg-max prediction: the positive class for two classes, macro over the classes otherwise."""
    pred = np.asarray(scores).argmax(axis=1)
    k = np.asarray(scores).shape[1]
    if k == 2:
        return float(f1_score(labels, pred, pos_label=1, zero_division=0))
    return float(f1_score(labels, pred, labels=list(range(k)), average="macro", zero_division=0))


def accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Accuracy of the arg-max prediction."""
    return float(accuracy_score(labels, np.asarray(scores).argmax(axis=1)))


METRICS: dict[str, Metric] = {"auc": auc, "f1": f1, "accuracy": accuracy}


def _auc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Binary ROC AUC of each row of (m, n) boolean labels and scores (Mann-Whitney U with tied ranks averaged);
    NaN where a row has one class only."""
    ranks = rankdata(scores, axis=1)
    pos = labels.sum(axis=1)
    neg = labels.shape[1] - pos
    u = (ranks * labels).sum(axis=1) - pos * (pos + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)


def _f1_rows(labels: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """F1 of each row (positive class for k = 2, macro over the k classes otherwise; 0 where undefined)."""
    def one(c: int) -> np.ndarray:
        tp = ((pred == c) & (labels == c)).sum(axis=1)
        wrong = ((pred == c) != (labels == c)).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(2 * tp + wrong > 0, 2.0 * tp / (2 * tp + wrong), 0.0)

    return one(1) if k == 2 else np.mean([one(c) for c in range(k)], axis=0)


def bootstrap_values(labels: np.ndarray, scores: np.ndarray, n_boot: int = 1000,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Every metric on each of ``n_boot`` seeded resamples of the samples, vectorised over resamples (equal to
    :data:`METRICS` on each resample; a test checks)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    n, k = scores.shape
    idx = np.random.default_rng([seed, 4049]).integers(0, n, (n_boot, n))
    lab, sc = labels[idx], scores[idx]  # (m, n), (m, n, k)
    pred = sc.argmax(axis=2)
    if k == 2:
        auc_rows = _auc_rows(lab == 1, sc[:, :, 1])
    else:
        per_class = np.stack([_auc_rows(lab == c, sc[:, :, c]) for c in range(k)])  # NaN: class absent
        with np.errstate(invalid="ignore"):
            present = np.stack([(lab == c).any(axis=1) for c in range(k)])
            auc_rows = np.where(present.sum(0) >= 2, np.nanmean(np.where(present, per_class, np.nan), axis=0),
                                np.nan)
    return {"auc": auc_rows, "f1": _f1_rows(lab, pred, k), "accuracy": (pred == lab).mean(axis=1)}


def bootstrap_ci(metric: Metric, labels: np.ndarray, scores: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, int]:
    """Percentile bootstrap CI of ``metric`` over samples: ``(low, high, resamples used)``; NaN when none is
    defined. The metrics of :data:`METRICS` are computed vectorised (:func:`bootstrap_values`), others per
    resample."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    name = next((k for k, v in METRICS.items() if v is metric), None)
    if name is not None and n_boot > 0:
        values = bootstrap_values(labels, scores, n_boot, seed)[name]
        values = values[np.isfinite(values)]
    else:
        rng = np.random.default_rng([seed, 4049])
        n = len(labels)
        values = np.array([metric(labels[idx], scores[idx]) for idx in (rng.integers(0, n, n)
                                                                           for _ in range(n_boot))])
        values = values[np.isfinite(values)] if len(values) else values
    if len(values) == 0:
        return float("nan"), float("nan"), 0
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high), int(len(values))


def classification_summary(labels: Sequence[int], scores: np.ndarray, classes: Sequence[str], n_boot: int = 1000,
                           seed: int = 0) -> dict:
    """AUC, F1 and accuracy with bootstrap 95 % CIs, the sample count and the class counts."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != (len(labels), len(classes)):
        raise ValueError(f"scores must be (N, K) = ({len(labels)}, {len(classes)}), got {scores.shape}")
    out: dict = {"n": int(len(labels)), "classes": list(classes),
                 "class_counts": {c: int((labels == k).sum()) for k, c in enumerate(classes)}}
    for name, metric in METRICS.items():
        low, high, used = bootstrap_ci(metric, labels, scores, n_boot, seed)
        out[name] = {"value": metric(labels, scores), "ci_low": low, "ci_high": high, "bootstrap": used}
    return out


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax over classes of (N, K) scores (what ``per_sample.csv`` records as class probabilities)."""
    return _probabilities(np.asarray(scores, dtype=np.float64))
