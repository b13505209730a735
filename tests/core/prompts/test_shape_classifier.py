"""Geometric shape words on drawn shapes: several sizes and rotations of each of the five shapes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from echoseg.core.prompts.shape import SHAPES, classify_labels, classify_shape, decide, shape_features

N = 256


def _canvas() -> np.ndarray:
    return np.zeros((N, N), np.uint8)


def circle(r: int) -> np.ndarray:
    m = _canvas()
    cv2.circle(m, (N // 2, N // 2), r, 1, -1)
    return m


def ellipse(a: int, b: int, angle: float) -> np.ndarray:
    m = _canvas()
    cv2.ellipse(m, (N // 2, N // 2), (a, b), angle, 0, 360, 1, -1)
    return m


def polygon(points: np.ndarray) -> np.ndarray:
    m = _canvas()
    cv2.fillPoly(m, [np.round(points).astype(np.int32)], 1)
    return m


def rectangle(w: float, h: float, angle: float) -> np.ndarray:
    return polygon(cv2.boxPoints(((N / 2, N / 2), (w, h), angle)))


def triangle(size: float, angle: float, scalene: bool) -> np.ndarray:
    if scalene:
        base = np.array([[0.0, -1.2], [0.5, 0.6], [-0.7, 0.6]])
    else:
        base = np.array([[0.0, -1.0], [np.cos(np.pi / 6), 0.5], [-np.cos(np.pi / 6), 0.5]])
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return polygon(base * size @ rot.T + N / 2)


CASES = (
    [("circle", circle(r)) for r in (6, 10, 20, 50, 100)]
    + [("oval", ellipse(a, b, ang)) for a, b in ((20, 12), (60, 30), (100, 40), (15, 8)) for ang in (0, 30, 77)]
    + [("square", rectangle(2 * s, 2 * s, ang)) for s in (8, 15, 40, 90) for ang in (0, 20, 45, 70)]
    + [("rectangle", rectangle(w, h, ang)) for w, h in ((30, 15), (120, 60), (160, 40), (20, 12))
       for ang in (0, 20, 45, 70)]
    + [("triangle", triangle(s, ang, sc)) for s in (10, 20, 50, 100) for ang in (0, 33, 90, 180)
       for sc in (False, True)]
)


@pytest.mark.parametrize(("expected", "mask"), CASES, ids=[f"{e}-{i}" for i, (e, _) in enumerate(CASES)])
def test_drawn_shapes(expected, mask):
    assert classify_shape(mask) == expected


def test_every_word_is_covered_and_valid():
    assert {e for e, _ in CASES} == set(SHAPES)


def test_ring_is_classified_by_its_outer_contour():
    ring = circle(60)
    cv2.circle(ring, (N // 2, N // 2), 45, 0, -1)
    assert classify_shape(ring) == "circle"
    oval_ring = ellipse(90, 50, 90)
    cv2.ellipse(oval_ring, (N // 2, N // 2), (75, 38), 90, 0, 360, 0, -1)
    oval_ring[N // 2 + 40:, :] = 0  # an open horseshoe, like the myocardium at the mitral valve
    assert classify_shape(oval_ring) == "oval"
    f = shape_features(oval_ring)
    assert f.solidity < 0.6  # concave, yet measured on the hull


def test_largest_component_and_noise():
    m = rectangle(100, 40, 10)
    m[5:8, 5:8] = 1  # a speck elsewhere must not matter
    assert classify_shape(m) == "rectangle"
    rng = np.random.default_rng(0)
    noisy = ellipse(70, 35, 15)
    edge = cv2.morphologyEx(noisy, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
    noisy[edge & (rng.random(noisy.shape) < 0.5)] ^= 1
    assert classify_shape(noisy) == "oval"


def test_empty_and_tiny_masks_have_no_shape():
    assert classify_shape(_canvas()) == ""
    tiny = _canvas()
    tiny[3, 3] = 1
    assert classify_shape(tiny) == ""
    assert shape_features(_canvas()) is None


def test_features_are_sane():
    f = shape_features(circle(50))
    assert f.circularity > 0.95 and f.aspect < 1.05 and f.solidity > 0.97
    assert abs(f.rect_fill - np.pi / 4) < 0.03 and f.tri_fill < 0.65
    assert decide(f) == "circle"
    sq = shape_features(rectangle(80, 80, 30))
    assert sq.rect_fill > 0.95 and sq.vertices == 4


def test_classify_labels_reads_each_label():
    lm = _canvas()
    lm[20:60, 20:60] = 1
    lm[150:170, 20:120] = 2
    lm[circle(20).astype(bool)] = 3
    assert classify_labels(lm, [1, 2, 3, 4]) == {1: "square", 2: "rectangle", 3: "circle", 4: ""}


def test_rejects_non_2d():
    with pytest.raises(ValueError):
        classify_shape(np.zeros((4, 4, 3), np.uint8))
