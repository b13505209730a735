"""A toy EchoNet-Dynamic data set: beating left ventricles in an ultrasound-like sector, with known truth.

Layout written at ``root`` (the published EchoNet-Dynamic one, plus truth for tests and later stages)::

    FileList.csv          FileName (no .avi), EF, ESV, EDV, FrameHeight, FrameWidth, FPS, NumberOfFrames, Split,
                          then PhysicalDeltaY, PhysicalDeltaX (the pixel size in cm, as a DICOM import writes)
    VolumeTracings.csv    FileName (with .avi), X1, Y1, X2, Y2, Frame: one ED and one ES frame per video, each a
                          long-axis row then 20 disk rows (X1, Y1 one wall, X2, Y2 the other)
    Videos/<name>.avi     grey frames (lossless FFV1 when OpenCV can write it)
    Masks/<name>.npz      array ``lv``: (T, H, W) uint8 true LV cavity masks (0/1), read with ``toy_lv_masks``
    toy_truth.csv         FileName, Frame, Area (true LV pixels), is_ed, is_es for every frame

The LV cavity is a convex truncated ellipse (apex up, flat mitral plane at the base) scaled about its apex by
lambda(t): 1 at end-diastole, ``lambda_es`` at end-systole, over several cardiac cycles (cusped extremes, so the
true ED/ES frames are strict area extremes). Volumes: single-plane method of disks on the written tracings
(``echonet.tracing_volume``) with a pixel size of ``0.16 * 112 / size`` cm, so EDV, ESV and
EF = 100 * (EDV - ESV) / EDV in FileList.csv are exactly those recomputed from VolumeTracings.csv, and EF is
``100 * (1 - lambda_es^3)`` (every length scales with lambda). The tracing and the drawn cavity are one shape:
the tracing's 20 chords are the cavity's widths at the centres of 20 equal slices of its long axis, and a pixel
is cavity when its centre lies inside that shape, so the method of disks on the true masks
(:mod:`echoseg.core.metrics.volumes`) gives FileList.csv's EF within pixel noise (at 112 px: 0.4 points on average,
under 2 at worst).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from echoseg.core.data.echonet import (
    FILELIST_COLUMNS,
    SPACING_COLUMNS,
    TRACING_COLUMNS,
    normalize_name,
    tracing_volume,
)
from echoseg.core.data.video import write_video
from echoseg.core.errors import UserError
from echoseg.core.io import atomic_path, write_csv

TOY_FPS = 30.0
N_DISKS = 20


def toy_cm_per_pixel(size: int) -> float:
    """Pixel size (cm) of a toy video of ``size`` pixels: 0.16 cm at EchoNet's 112 px (an ~18 cm deep sector)."""
    return 0.16 * 112.0 / size


def _contraction(phase: np.ndarray, period: int, systole: int) -> np.ndarray:
    """Contraction c in [0, 1] (0 at ED, 1 at ES) for phases 0..period-1 frames after ED."""
    phase = np.asarray(phase, dtype=np.float64)
    u = np.clip(phase / systole, 0.0, 1.0)
    ejection = 0.5 * (u + np.sin(np.pi * u / 2))  # fast start, non-zero slope at both ends
    v = np.clip((phase - systole) / (period - systole), 0.0, 1.0)
    rapid = 0.75 * np.sin(np.pi / 2 * np.minimum(v / 0.5, 1.0))  # rapid filling, then diastasis
    atrial = 0.25 * np.clip((v - 0.7) / 0.3, 0.0, 1.0)  # atrial kick up to ED
    return np.where(phase <= systole, ejection, 1.0 - rapid - atrial)


class _Heart:
    """Geometry of one toy LV: apex, axis direction, ED long-axis length and half-width."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.size = size
        self.apex = np.array([size * (0.52 + rng.uniform(-0.04, 0.04)), size * (0.13 + rng.uniform(-0.02, 0.02))])
        angle = rng.uniform(-0.22, 0.05)  # tilt of the long axis from vertical (radians)
        self.axis = np.array([math.sin(angle), math.cos(angle)])  # apex -> base, pointing down
        self.normal = np.array([math.cos(angle), -math.sin(angle)])
        self.length = size * 0.50 * rng.uniform(0.9, 1.08)
        self.half_width = size * 0.13 * rng.uniform(0.88, 1.12)
        self.wall = max(2.0, size * 0.055 * rng.uniform(0.85, 1.15))

    @staticmethod
    def profile(u: np.ndarray) -> np.ndarray:
        """Half-width (fraction of the maximum) at fraction u of the long axis: ellipse cut at its 5/6 point."""
        c = 0.6
        return np.sqrt(np.clip(1.0 - ((u - c) / c) ** 2, 0.0, None))

    def _points(self, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centre = self.apex + s[:, None] * self.axis
        return centre + w[:, None] * self.normal, centre - w[:, None] * self.normal

    def cavity(self, scale: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Boolean map of the pixels whose centre lies inside the cavity at a given scale (1 = ED).

        Pixel (row r, column c) is centred on (x, y) = (c, r), as in the tracings. Centre inclusion neither grows
        nor shrinks the shape (a polygon fill that keeps every pixel its outline touches grows it by about half a
        pixel all round), so the mask's method-of-disks volume is that of the tracings, within pixel noise.
        """
        dx, dy = xs - self.apex[0], ys - self.apex[1]
        u = (dx * self.axis[0] + dy * self.axis[1]) / (self.length * scale)
        across = np.abs(dx * self.normal[0] + dy * self.normal[1])
        return (u >= 0) & (u <= 1) & (across <= self.profile(u) * self.half_width * scale)

    def tracing(self, scale: float) -> np.ndarray:
        """EchoNet-style tracing rows (X1, Y1, X2, Y2): the long axis, then N_DISKS disks apex to base."""
        length = self.length * scale
        base = self.apex + length * self.axis
        u = (np.arange(N_DISKS) + 0.5) / N_DISKS
        side_a, side_b = self._points(u * length, self.profile(u) * self.half_width * scale)
        axis_row = np.concatenate([self.apex, base])[None]
        return np.concatenate([axis_row, np.concatenate([side_a, side_b], axis=1)])

    def base_side(self, scale: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Boolean map of pixels beyond the mitral plane (below the LV base)."""
        base = self.apex + self.length * scale * self.axis
        return (xs - base[0]) * self.axis[0] + (ys - base[1]) * self.axis[1] > 0


def _ellipse(size: int, centre: np.ndarray, axes: tuple[float, float], angle_deg: float) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (int(round(centre[0])), int(round(centre[1]))),
                (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))), angle_deg, 0, 360, 1, -1)
    return mask


def _render(heart: _Heart, scales: np.ndarray, contraction: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W) uint8 and true LV masks (T, H, W) uint8 for the given per-frame scales."""
    size = heart.size
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    origin = np.array([size / 2.0, -0.02 * size])
    radius = np.hypot(xs - origin[0], ys - origin[1])
    theta = np.arctan2(xs - origin[0], ys - origin[1])
    sector = (np.abs(theta) < math.radians(38)) & (radius < 1.02 * size)
    depth_gain = (1.0 - 0.35 * radius / (1.02 * size)).astype(np.float32)
    tilt = math.degrees(math.atan2(heart.axis[0], heart.axis[1]))
    base = heart.apex + heart.length * heart.axis
    atrium = _ellipse(size, base + 0.17 * size * heart.axis, (0.12 * size, 0.15 * size), -tilt).astype(bool)
    rv_centre = heart.apex + 0.45 * heart.length * heart.axis - (heart.half_width + 2.2 * heart.wall) * heart.normal
    right_ventricle = _ellipse(size, rv_centre, (0.07 * size, 0.24 * size), -tilt).astype(bool)

    n = len(scales)
    frames = np.empty((n, size, size), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    speckle = rng.rayleigh(1.0 / math.sqrt(math.pi / 2), size=(n, size, size)).astype(np.float32)  # mean 1
    for t, (scale, c) in enumerate(zip(scales, contraction, strict=True)):
        cavity = heart.cavity(scale, ys, xs).astype(np.uint8)
        r = max(1, int(round(heart.wall * (1.0 + 0.35 * c))))  # the wall thickens in systole
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        wall = (cv2.dilate(cavity, kernel) > 0) & ~cavity.astype(bool) & ~heart.base_side(scale, ys, xs)
        tissue = np.full((size, size), 0.32, np.float32)
        tissue[atrium | right_ventricle] = 0.07
        tissue[wall] = 0.85
        tissue[cavity.astype(bool)] = 0.06
        img = cv2.GaussianBlur(tissue * speckle[t], (0, 0), 0.8) * depth_gain
        img[~sector] = 0.0
        frames[t] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        masks[t] = cavity
    return frames, masks


def _splits(n: int, rng: np.random.Generator) -> list[str]:
    """TRAIN/VAL/TEST labels: ~1/8 each for VAL and TEST (at least one each from 3 videos), the rest TRAIN."""
    n_val = n_test = max(1, round(n / 8)) if n >= 3 else 0
    if n == 2:
        n_test = 1
    labels = ["VAL"] * n_val + ["TEST"] * n_test + ["TRAIN"] * (n - n_val - n_test)
    return [labels[i] for i in rng.permutation(n)]


def write_toy_echonet(root: str | Path, videos: int = 8, frames: int = 64, size: int = 112,
                      seed: int = 0) -> pd.DataFrame:
    """Write a toy EchoNet-Dynamic data set at ``root`` (see the module docstring for the layout).

    Args:
        root: folder to write into (e.g. a run directory).
        videos: number of videos.
        frames: frames per video (>= 16 so that a full ED -> ES systole fits).
        size: frame height and width in pixels.
        seed: random seed; the same seed gives the same files.

    Returns:
        The FileList rows written (FileName without .avi).
    """
    if videos < 1 or frames < 16 or size < 32:
        raise UserError(f"toy EchoNet needs videos >= 1, frames >= 16, size >= 32 (got {videos}, {frames}, {size})")
    root = Path(root)
    master = np.random.default_rng(seed)
    splits = _splits(videos, master)
    cm = toy_cm_per_pixel(size)
    rows, tracings, truth = [], [], []
    names: set[str] = set()
    for i in range(videos):
        rng = np.random.default_rng([seed, i])
        name = "0X" + "".join(f"{b:02X}" for b in rng.integers(0, 256, 8))
        while name in names:  # vanishingly rare; keep names unique
            name = "0X" + "".join(f"{b:02X}" for b in rng.integers(0, 256, 8))
        names.add(name)
        heart = _Heart(rng, size)
        period = int(min(rng.integers(18, 29), max(8, frames // 2)))
        systole = max(2, int(round(0.38 * period)))
        first_ed = int(rng.integers(0, period))
        ef_target = rng.uniform(0.25, 0.70)
        scale_es = (1.0 - ef_target) ** (1.0 / 3.0)  # method-of-disks volume scales with scale^3
        phase = (np.arange(frames) - first_ed) % period
        contraction = _contraction(phase, period, systole)
        scales = 1.0 - contraction * (1.0 - scale_es)
        video, masks = _render(heart, scales, contraction, rng)
        write_video(root / "Videos" / f"{name}.avi", video, TOY_FPS)
        with atomic_path(root / "Masks" / f"{name}.npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, lv=masks)

        ed_frame, es_frame = first_ed, first_ed + systole
        ed_rows, es_rows = heart.tracing(scales[ed_frame]), heart.tracing(scales[es_frame])
        edv, esv = tracing_volume(ed_rows, cm), tracing_volume(es_rows, cm)
        for frame, trace in ((ed_frame, ed_rows), (es_frame, es_rows)):
            tracings += [[f"{name}.avi", *map(float, r), frame] for r in trace]
        areas = masks.reshape(frames, -1).sum(axis=1)
        truth += [[name, t, int(areas[t]), bool(phase[t] == 0), bool(phase[t] == systole)] for t in range(frames)]
        rows.append([name, 100.0 * (edv - esv) / edv, esv, edv, size, size, TOY_FPS, frames, splits[i], cm, cm])

    filelist = pd.DataFrame(rows, columns=FILELIST_COLUMNS + SPACING_COLUMNS)
    write_csv(root / "FileList.csv", filelist)
    write_csv(root / "VolumeTracings.csv", pd.DataFrame(tracings, columns=TRACING_COLUMNS))
    write_csv(root / "toy_truth.csv", pd.DataFrame(truth, columns=["FileName", "Frame", "Area", "is_ed", "is_es"]))
    return filelist


def toy_lv_masks(root: str | Path, filename: str) -> np.ndarray:
    """True per-frame LV cavity masks of a toy video: (T, H, W) uint8 of 0/1 from ``Masks/<name>.npz``.

    Raises:
        UserError: no mask file for that video (not a toy EchoNet folder, or an unknown FileName).
    """
    path = Path(root) / "Masks" / f"{normalize_name(filename)}.npz"
    if not path.is_file():
        raise UserError(f"{path}: no toy LV masks (is {root} a toy EchoNet data set?)")
    with np.load(path) as data:
        return np.asarray(data["lv"], dtype=np.uint8)
