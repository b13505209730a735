"""Classification metrics pinned against scikit-learn on hand-made scores, and their bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from echoseg.core.metrics.classification import auc, bootstrap_ci, classification_summary, f1, probabilities

BINARY_Y = np.array([0, 0, 1, 1, 1, 0, 1, 0])
BINARY_S = np.array([[0.9, 0.1], [0.6, 0.4], [0.35, 0.65], [0.2, 0.8], [0.7, 0.3], [0.45, 0.55], [0.1, 0.9],
                     [0.8, 0.2]])
MULTI_Y = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0])
MULTI_S = probabilities(np.array([[2.0, 0.5, 0.1], [0.2, 1.5, 0.3], [0.1, 0.4, 2.2], [0.3, 1.2, 1.0],
                                  [0.4, 0.9, 0.2], [1.1, 1.3, 0.1], [0.2, 0.1, 1.9], [0.5, 0.6, 0.7],
                                  [1.7, 0.2, 0.9]]))


def test_binary_metrics_equal_scikit_learn():
    assert auc(BINARY_Y, BINARY_S) == pytest.approx(roc_auc_score(BINARY_Y, BINARY_S[:, 1]))
    assert auc(BINARY_Y, BINARY_S) == pytest.approx(14 / 16)  # 14 of the 16 (pos, neg) pairs ranked right
    assert f1(BINARY_Y, BINARY_S) == pytest.approx(f1_score(BINARY_Y, BINARY_S.argmax(1)))
    s = classification_summary(BINARY_Y, BINARY_S, ["neg", "pos"], n_boot=200)
    assert s["accuracy"]["value"] == pytest.approx(accuracy_score(BINARY_Y, BINARY_S.argmax(1))) == 0.75
    assert s["class_counts"] == {"neg": 4, "pos": 4} and s["n"] == 8


def test_multiclass_auc_is_one_vs_rest_macro_and_f1_macro():
    want = roc_auc_score(MULTI_Y, MULTI_S, multi_class="ovr", average="macro")
    assert auc(MULTI_Y, MULTI_S) == pytest.approx(want)
    assert f1(MULTI_Y, MULTI_S) == pytest.approx(f1_score(MULTI_Y, MULTI_S.argmax(1), average="macro"))


def test_bootstrap_ci_is_seeded_and_brackets_the_value():
    a = bootstrap_ci(auc, BINARY_Y, BINARY_S, n_boot=300, seed=1)
    assert a == bootstrap_ci(auc, BINARY_Y, BINARY_S, n_boot=300, seed=1)
    assert a[0] <= auc(BINARY_Y, BINARY_S) <= a[1] and 0 < a[2] <= 300
    assert np.isnan(auc(np.zeros(4, int), np.random.rand(4, 2)))
    assert bootstrap_ci(auc, np.zeros(4, int), np.random.rand(4, 2), n_boot=20)[2] == 0


@pytest.mark.parametrize(("labels", "scores"), [(BINARY_Y, BINARY_S), (MULTI_Y, MULTI_S)])
def test_vectorised_bootstrap_equals_the_metrics_on_each_resample(labels, scores):
    from echoseg.core.metrics.classification import METRICS, bootstrap_values

    values = bootstrap_values(labels, scores, n_boot=60, seed=5)
    idx = np.random.default_rng([5, 4049]).integers(0, len(labels), (60, len(labels)))
    for name, metric in METRICS.items():
        want = np.array([metric(labels[i], scores[i]) for i in idx])
        np.testing.assert_allclose(values[name], want, atol=1e-12, equal_nan=True)
