"""Geometric shape words for P7: circle, oval, triangle, square or rectangle, from a binary mask (OpenCV).

The rule (deterministic, no weights):

1. Take the outer contour of the largest connected component and fill it. The myocardium is a ring (or an
   open horseshoe) around the cavity: it is classified by its outer contour, i.e. as the filled shape the
   ring encloses, never by the hole.
2. Measure it on its convex hull H (so small boundary noise and concavities do not change the answer):
   - ``solidity``    area(shape) / area(H)  (convexity; 1 for convex shapes),
   - ``circularity`` 4*pi*area(H) / perimeter(H)^2  (1 circle, 0.79 square, 0.60 equilateral triangle),
   - ``vertices``    corners of the polygon approximation of H (cv2.approxPolyDP, tolerance 4 % of its perimeter),
   - ``aspect``      long / short side of the minimum-area rectangle (cv2.minAreaRect),
   - ``rect_fill``   area(H) / area(minimum-area rectangle)  (1 rectangle, 0.79 ellipse, 0.5 triangle),
   - ``tri_fill``    area(H) / area(minimum enclosing triangle)  (1 triangle, 0.60 ellipse, 0.5 rectangle).
3. Decide, in this order:
   - **triangle** if tri_fill >= 0.85, or the polygon has 3 vertices and tri_fill >= 0.75;
   - **square / rectangle** if rect_fill >= 0.9, or the polygon has 4 vertices and rect_fill >= 0.85 —
     square when aspect < 1.25, else rectangle;
   - otherwise the shape is smooth: **circle** when aspect < 1.25 and circularity >= 0.8, else **oval**.
Because every measure but ``solidity`` is taken on the hull, concavities never change the answer: an open
myocardium horseshoe is classified as the region it closes off. ``solidity`` is reported (``shape_features``)
for diagnostics only. An empty mask (or one under 3 pixels) has no shape: the empty string.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SHAPES = ("circle", "oval", "triangle", "square", "rectangle")
ASPECT_SQUARE = 1.25
TRI_FILL, TRI_FILL_POLY = 0.85, 0.75
RECT_FILL, RECT_FILL_POLY = 0.9, 0.85
MIN_CIRCULARITY = 0.8
POLY_TOLERANCE = 0.04


@dataclass(frozen=True)
class ShapeFeatures:
    """The measurements the rule uses (see the module docstring)."""

    area: float
    solidity: float
    circularity: float
    vertices: int
    aspect: float
    rect_fill: float
    tri_fill: float


def outer_contour(mask: np.ndarray) -> np.ndarray | None:
    """The outer contour (N, 1, 2) of the largest connected region of a binary mask, or None if empty."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {m.shape}")
    if not m.any():
        return None
    if m.max() != 1:
        m = (m > 0).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    return max(contours, key=cv2.contourArea)


def shape_features(mask: np.ndarray) -> ShapeFeatures | None:
    """Measure a binary mask's outer shape; None for an empty mask or one too small to measure (< 3 px)."""
    contour = outer_contour(mask)
    if contour is None:
        return None
    # Pixel-centre contours lose half a pixel all round; measure on the pixel-corner outline instead.
    pts = contour.reshape(-1, 2).astype(np.float32)
    offsets = np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)], np.float32)
    corners = (pts[:, None, :] + offsets[None]).reshape(-1, 2)
    hull = cv2.convexHull(corners)
    hull_area = float(cv2.contourArea(hull))
    if hull_area < 3.0:
        return None
    area = float(cv2.contourArea(contour)) + 0.5 * float(cv2.arcLength(contour, True)) + 1.0
    perimeter = float(cv2.arcLength(hull, True))
    (_, _), (w, h), _ = cv2.minAreaRect(hull)
    long_side, short_side = max(w, h), max(min(w, h), 1e-6)
    _, triangle = cv2.minEnclosingTriangle(hull)
    tri_area = float(cv2.contourArea(triangle)) if triangle is not None else 0.0
    approx = cv2.approxPolyDP(hull, POLY_TOLERANCE * perimeter, True)
    return ShapeFeatures(
        area=area,
        solidity=min(1.0, area / hull_area),
        circularity=4.0 * math.pi * hull_area / max(perimeter, 1e-6) ** 2,
        vertices=int(len(approx)),
        aspect=long_side / short_side,
        rect_fill=hull_area / max(w * h, 1e-6),
        tri_fill=hull_area / tri_area if tri_area > 0 else 0.0,
    )


def decide(f: ShapeFeatures) -> str:
    """Apply the rule of the module docstring to measured features."""
    if (f.tri_fill >= TRI_FILL or (f.vertices == 3 and f.tri_fill >= TRI_FILL_POLY)):
        return "triangle"
    if (f.rect_fill >= RECT_FILL or (f.vertices == 4 and f.rect_fill >= RECT_FILL_POLY)):
        return "square" if f.aspect < ASPECT_SQUARE else "rectangle"
    if f.aspect < ASPECT_SQUARE and f.circularity >= MIN_CIRCULARITY:
        return "circle"
    return "oval"


def classify_shape(mask: np.ndarray) -> str:
    """The shape word of a binary mask (nonzero = structure): one of SHAPES, or "" for an empty mask."""
    f = shape_features(mask)
    return "" if f is None else decide(f)


def classify_labels(label_map: np.ndarray, labels: list[int] | tuple[int, ...]) -> dict[int, str]:
    """Shape words of several labels of one label map (each label's region classified on its own)."""
    lm = np.asarray(label_map)
    return {int(k): classify_shape(lm == k) for k in labels}
