"""Dice, IoU and HD95 against hand-computed and brute-force values; empty-mask conventions; summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from echoseg.core.metrics.seg import dice_iou, hd95, segmentation_metrics, surface
from echoseg.core.train.evaluate import summarize


def _square(n, y0, x0, side):
    m = np.zeros((n, n), bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


def test_dice_iou_by_hand():
    a = _square(20, 0, 0, 4)  # 16 px
    b = _square(20, 0, 2, 4)  # overlap 8 px
    d, i = dice_iou(a, b)
    assert d == pytest.approx(2 * 8 / 32)
    assert i == pytest.approx(8 / 24)


def test_hd95_points_and_identity():
    a = np.zeros((32, 32), bool)
    b = np.zeros((32, 32), bool)
    a[10, 10] = True
    b[13, 14] = True
    assert hd95(a, b) == pytest.approx(5.0)
    sq = _square(32, 5, 5, 10)
    assert hd95(sq, sq) == 0.0


def _brute_hd95(a, b):
    pa, pb = np.argwhere(surface(a)), np.argwhere(surface(b))
    d = cdist(pa, pb)
    return max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95))


def test_hd95_matches_brute_force():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:48, :48]
    for _ in range(5):
        a = np.hypot(yy - rng.uniform(15, 30), xx - rng.uniform(15, 30)) < rng.uniform(5, 12)
        b = np.hypot(yy - rng.uniform(15, 30), xx - rng.uniform(15, 30)) < rng.uniform(5, 12)
        assert hd95(a, b) == pytest.approx(_brute_hd95(a, b), rel=1e-9)


def test_empty_conventions():
    empty = np.zeros((16, 16), bool)
    full = _square(16, 2, 2, 5)
    assert segmentation_metrics(empty, empty) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0}
    m = segmentation_metrics(empty, full)
    assert m["dice"] == 0.0 and m["iou"] == 0.0 and math.isnan(m["hd95"])
    assert math.isnan(segmentation_metrics(full, empty)["hd95"])


def test_summarize_means_stds_and_undefined_hd95():
    df = pd.DataFrame({
        "sample_id": ["a", "b", "c", "d"], "image": ["i1", "i2", "i3", "i4"],
        "structure": ["LV", "LV", "MYO", "MYO"], "prompt": ["p7"] * 4,
        "dice": [0.8, 0.6, 0.5, 0.0], "iou": [0.7, 0.5, 0.4, 0.0], "hd95": [2.0, 4.0, 6.0, np.nan],
    })
    s = summarize(df)
    assert s["overall"]["n"] == 4
    assert s["overall"]["dice_mean"] == pytest.approx(0.475)
    assert s["overall"]["hd95_mean"] == pytest.approx(4.0)
    assert s["overall"]["hd95_undefined"] == 1
    assert s["per_structure"]["LV"]["dice_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert s["per_structure"]["MYO"]["hd95_std"] is None  # one defined value
    assert set(s["per_prompt"]) == {"p7"}
