"""LV volumes from one mask: the method of disks and area-length pinned on ellipses (analytic prolate spheroids)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoseg.core.metrics.volumes import N_DISKS, ejection_fraction, long_axis, lv_volume, to_cm

A, B = 38.3, 15.7  # semi-axes (pixels): long, short
CENTRE = (55.4, 60.2)  # (x, y), off the pixel grid


def ellipse(a: float = A, b: float = B, angle: float = 0.0, centre=CENTRE, shape=(120, 112),
            spacing=(1.0, 1.0)) -> np.ndarray:
    """A (H, W) uint8 mask of the pixels whose centre (x = col * dx, y = row * dy) lies inside the ellipse with
    long semi-axis ``a`` at ``angle`` radians from the x axis."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    x, y = cols * spacing[1] - centre[0], rows * spacing[0] - centre[1]
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1).astype(np.uint8)


def spheroid(a: float = A, b: float = B) -> float:
    """Volume of the prolate spheroid the ellipse sweeps about its long axis: 4/3 pi a b^2."""
    return 4.0 / 3.0 * math.pi * a * b * b


def midpoint_disks(a: float = A, b: float = B, n: int = N_DISKS) -> float:
    """The method of disks on the exact ellipse: slices of h = 2a/n, diameters 2b sqrt(1 - (s_i/a)^2) at the slice
    centres s_i = -a + (i + 1/2) h. The midpoint rule on the quadratic pi b^2 (1 - s^2/a^2) overshoots its
    integral 4/3 pi a b^2 by (2a) h^2 (pi b^2 2/a^2) / 24, so the sum is 4/3 pi a b^2 (1 + 1 / (2 n^2))."""
    h = 2 * a / n
    s = -a + (np.arange(n) + 0.5) * h
    direct = float(np.sum(math.pi * b * b * (1 - (s / a) ** 2)) * h)
    assert direct == pytest.approx(spheroid(a, b) * (1 + 1 / (2 * n * n)), rel=1e-12)
    return direct


def test_method_of_disks_on_an_ellipse_matches_the_midpoint_disk_sum():
    vol = lv_volume(ellipse(), "disks")
    assert vol.unit == "px3" and len(vol.diameters) == N_DISKS
    assert vol.length == pytest.approx(2 * A, abs=1.0)  # each pixelised tip: within half a pixel
    h = vol.length / N_DISKS
    s = -vol.length / 2 + (np.arange(N_DISKS) + 0.5) * h
    expected = 2 * B * np.sqrt(1 - (s / A) ** 2)
    np.testing.assert_allclose(vol.diameters, expected, atol=1.0)  # each chord within a pixel
    assert vol.volume == pytest.approx(midpoint_disks(), rel=0.015)
    assert vol.area == pytest.approx(math.pi * A * B, rel=0.01)


def test_more_disks_converge_to_the_spheroid():
    big_a, big_b = 2.5 * A, 2.5 * B
    mask = ellipse(big_a, big_b, centre=(150.3, 140.6), shape=(290, 300))
    few, many = (lv_volume(mask, "disks", disks=n).volume for n in (4, 200))
    assert few == pytest.approx(midpoint_disks(big_a, big_b, 4), rel=0.01)  # 1 + 1/32 above the spheroid
    assert few > many and many == pytest.approx(spheroid(big_a, big_b), rel=0.005)


def test_area_length_on_an_ellipse_is_the_spheroid():
    vol = lv_volume(ellipse(), "area-length")
    # the formula itself, on the measured area and length
    assert vol.volume == pytest.approx(8 * vol.area**2 / (3 * math.pi * vol.length), rel=1e-12)
    # exact for an ellipse: A = pi a b, L = 2a give 8 (pi a b)^2 / (3 pi 2a) = 4/3 pi a b^2
    assert 8 * (math.pi * A * B) ** 2 / (3 * math.pi * 2 * A) == pytest.approx(spheroid(), rel=1e-12)
    assert vol.volume == pytest.approx(spheroid(), rel=0.02) and vol.diameters == ()


@pytest.mark.parametrize("angle", [0.35, math.pi / 4, 1.2, 2.6])
def test_a_rotated_ellipse_has_the_same_axis_and_volumes(angle):
    mask = ellipse(angle=angle)
    axis = long_axis(mask)
    assert abs(float(np.dot(axis.direction, [math.cos(angle), math.sin(angle)]))) == pytest.approx(1, abs=2e-3)
    assert axis.length == pytest.approx(2 * A, abs=0.8)
    assert np.linalg.norm(axis.centroid - CENTRE) < 0.1
    assert lv_volume(mask, "disks").volume == pytest.approx(midpoint_disks(), rel=0.015)
    assert lv_volume(mask, "area-length").volume == pytest.approx(spheroid(), rel=0.02)


def test_anisotropic_pixels_give_millilitres():
    dy, dx = 0.04, 0.1  # cm per pixel: rows finer than columns
    a, b = 3.1, 1.3  # cm
    mask = ellipse(a, b, angle=0.5, centre=(5.03, 4.51), shape=(230, 100), spacing=(dy, dx))
    vol = lv_volume(mask, "disks", spacing=(dy, dx))
    assert vol.unit == "mL" and vol.length == pytest.approx(2 * a, rel=0.01)
    assert vol.volume == pytest.approx(midpoint_disks(a, b), rel=0.02)
    in_mm = lv_volume(mask, "disks", spacing=(10 * dy, 10 * dx), unit="mm")
    assert in_mm.volume == pytest.approx(vol.volume, rel=1e-9)
    assert lv_volume(mask, "area-length", spacing=(dy, dx)).volume == pytest.approx(spheroid(a, b), rel=0.02)


def test_only_the_largest_component_counts_and_tiny_masks_are_empty():
    mask = ellipse()
    alone = lv_volume(mask, "disks").volume
    mask[2:6, 2:6] = 1  # a speck in a corner would stretch the axis if it counted
    assert lv_volume(mask, "disks").volume == pytest.approx(alone, rel=1e-12)
    empty = lv_volume(np.zeros((20, 20), np.uint8), "disks")
    assert empty.volume == 0 and empty.length == 0 and long_axis(np.zeros((20, 20))) is None
    assert math.isnan(ejection_fraction(empty.volume, 0.0))


def test_ejection_fraction_and_bad_arguments():
    assert ejection_fraction(120.0, 48.0) == pytest.approx(60.0)
    assert math.isnan(ejection_fraction(float("nan"), 10.0))
    assert to_cm((1.5, 2.0), "mm") == pytest.approx((0.15, 0.2)) and to_cm(None) is None
    with pytest.raises(ValueError, match="volume method"):
        lv_volume(ellipse(), "simpson")
    with pytest.raises(ValueError, match="positive"):
        lv_volume(ellipse(), spacing=(0.0, 0.1))
    with pytest.raises(ValueError, match="2-D"):
        lv_volume(np.zeros((2, 5, 5)))
