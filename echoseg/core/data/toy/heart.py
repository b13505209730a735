"""Drawing of toy apical echocardiograms: the sector, cavities, myocardium and speckle.

Shared by the toy CAMUS and toy SDM CAMUS writers. Everything is vectorised (OpenCV polygon filling, numpy
noise); no per-pixel Python loops. Arrays follow the CAMUS display convention: row 0 is the near field, the
sector tip (probe, next to the LV apex) at the top centre, the atria towards the bottom (far field).

The drawing works in "heart coordinates": ``u`` runs along the long axis from the LV apex towards the base and the
atria, ``v`` across it (positive = screen right); lengths are fractions of the sector radius ``R``.

- LV cavity: a bullet (elliptic apical cap, slightly narrowing body) closed by the mitral plane at ``u = L``.
- Myocardium: the epicardial bullet minus the cavity, cut at the same mitral plane, so it is a ring open at the
  base (wall ~ 6-10 % of the LV length).
- LA: an ellipse below the mitral plane (towards the far field).
- 4CH only: right ventricle and right atrium on the screen's left, drawn in the image but not labelled.
- ES: shorter, narrower LV with a thicker wall (the base moves towards the apex); larger LA.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import cv2
import numpy as np

VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
QUALITIES = ("Good", "Medium", "Poor")
# CAMUS label values in the label maps drawn here.
BG, LV, MYO, LA = 0, 1, 2, 3
# Rendering per image quality: (contrast, near-field haze, extra additive noise, speckle blur in px at 256).
_QUALITY = {"Good": (1.0, 0.03, 0.02, 0.6), "Medium": (0.8, 0.10, 0.05, 0.8), "Poor": (0.6, 0.18, 0.09, 1.0)}
_SHIFT = 4  # fixed-point bits for cv2.fillPoly (sub-pixel polygon vertices)


@dataclass(frozen=True)
class Anatomy:
    """Shape of one patient's heart in one view (lengths are fractions of the sector radius)."""

    view: str
    depth: float  # sector radius / image height
    half_angle: float  # sector half opening, degrees
    tilt: float  # long-axis rotation from vertical, degrees (positive turns the base to the screen left)
    lateral: float  # apex offset from the sector centre line (fraction of R, positive = screen right)
    apex_depth: float  # LV apex distance from the sector tip
    lv_length: float  # ED LV cavity long axis
    lv_width: float  # ED LV cavity half width / long axis
    wall: float  # ED myocardial wall thickness / LV long axis
    la_length: float  # ED LA long axis
    la_width: float  # LA half width / LA long axis
    es_length: float  # ES / ED LV long-axis ratio
    es_width: float  # ES / ED LV width ratio


def sample_anatomy(rng: np.random.Generator, view: str) -> Anatomy:
    """Draw a plausible, patient-specific anatomy for ``view`` ('2CH' or '4CH')."""
    four = view == "4CH"
    return Anatomy(
        view=view,
        depth=float(rng.uniform(0.88, 0.95)),
        half_angle=float(rng.uniform(33.0, 40.0)),
        tilt=float(rng.uniform(-8.0, 8.0)),
        lateral=float(rng.uniform(0.03, 0.08) if four else rng.uniform(-0.03, 0.03)),
        apex_depth=float(rng.uniform(0.15, 0.20)),
        lv_length=float(rng.uniform(0.42, 0.50)),
        lv_width=float(rng.uniform(0.26, 0.34) if four else rng.uniform(0.28, 0.36)),
        wall=float(rng.uniform(0.06, 0.09)),
        la_length=float(rng.uniform(0.17, 0.22)),
        la_width=float(rng.uniform(0.55, 0.75)),
        es_length=float(rng.uniform(0.84, 0.92)),
        es_width=float(rng.uniform(0.72, 0.82)),
    )


def perturb_anatomy(anat: Anatomy, rng: np.random.Generator, strength: float = 1.0) -> Anatomy:
    """A slightly deformed copy (as the SDM CAMUS label-map augmentation does: small rotation, scale, shift)."""
    s = strength
    return replace(
        anat,
        tilt=anat.tilt + float(rng.uniform(-4, 4)) * s,
        lateral=anat.lateral + float(rng.uniform(-0.02, 0.02)) * s,
        lv_length=anat.lv_length * float(1 + rng.uniform(-0.06, 0.04) * s),
        lv_width=anat.lv_width * float(1 + rng.uniform(-0.06, 0.06) * s),
        la_length=anat.la_length * float(1 + rng.uniform(-0.08, 0.08) * s),
        la_width=anat.la_width * float(1 + rng.uniform(-0.08, 0.08) * s),
    )


def sample_patient(rng: np.random.Generator) -> dict:
    """Patient attributes as in CAMUS Info cfg files: Sex, Age, ImageQuality."""
    return {
        "Sex": str(rng.choice(["M", "F"])),
        "Age": int(rng.integers(20, 91)),
        "ImageQuality": str(rng.choice(QUALITIES, p=[0.35, 0.45, 0.20])),
    }


@functools.lru_cache(maxsize=8)
def _polar(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the sector tip (pixels) and angle from the vertical (degrees) for every pixel."""
    tip_x, tip_y = (size - 1) / 2.0, 0.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(xx - tip_x, yy - tip_y)
    theta = np.degrees(np.arctan2(xx - tip_x, yy - tip_y))
    r.setflags(write=False)
    theta.setflags(write=False)
    return r, theta


def sector_mask(size: int, anat: Anatomy) -> np.ndarray:
    """Boolean cone (fan) of the ultrasound sector."""
    r, theta = _polar(size)
    return (r <= anat.depth * size) & (np.abs(theta) <= anat.half_angle)


def _bullet(length: float, half_width: float, start: float = 0.0, n: int = 48) -> np.ndarray:
    """Closed bullet outline in (u, v): elliptic cap from ``start`` and a body narrowing ~12 % to ``length``."""
    cap = 0.55 * (length - start)
    u = start + (length - start) * (1 - np.cos(np.linspace(0, np.pi / 2, n))) ** 1.0
    t = np.clip((u - start) / cap, 0, 1)
    w_cap = half_width * np.sqrt(1 - (1 - t) ** 2)
    body = np.clip((u - start - cap) / max(length - start - cap, 1e-6), 0, 1)
    w = np.where(u - start < cap, w_cap, half_width * (1 - 0.12 * body**2))
    left = np.stack([u, -w], 1)
    right = np.stack([u[::-1], w[::-1]], 1)
    return np.concatenate([left, right])


def _ellipse(center_u: float, center_v: float, half_u: float, half_v: float, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([center_u + half_u * np.cos(t), center_v + half_v * np.sin(t)], 1)


class _Frame:
    """Maps heart coordinates (fractions of R) to pixel coordinates."""

    def __init__(self, size: int, anat: Anatomy):
        self.size = size
        self.radius = anat.depth * size
        tip = np.array([(size - 1) / 2.0, 0.0])
        a = np.radians(anat.tilt)
        self.axis = np.array([-np.sin(a), np.cos(a)])  # unit vector apex -> base, in (x, y)
        self.perp = np.array([self.axis[1], -self.axis[0]])  # screen-right when the axis points down
        self.apex = tip + self.radius * np.array([anat.lateral, anat.apex_depth])

    def pixels(self, uv: np.ndarray, dv: float = 0.0) -> np.ndarray:
        uv = np.asarray(uv, np.float64)
        pts = self.apex + self.radius * (uv[:, :1] * self.axis + (uv[:, 1:] + dv) * self.perp)
        return np.round(pts * (1 << _SHIFT)).astype(np.int32)

    def fill(self, canvas: np.ndarray, uv: np.ndarray, value: int, dv: float = 0.0) -> None:
        cv2.fillPoly(canvas, [self.pixels(uv, dv)], int(value), lineType=cv2.LINE_8, shift=_SHIFT)


def _shapes(anat: Anatomy, s: float) -> dict[str, np.ndarray]:
    """Outlines (heart coordinates) at cardiac phase ``s`` (0 = ED, 1 = ES)."""
    length = anat.lv_length * (1 + s * (anat.es_length - 1))
    half_w = anat.lv_length * anat.lv_width * (1 + s * (anat.es_width - 1))
    wall = anat.lv_length * anat.wall * (1 + 0.3 * s)
    la_len = anat.la_length * (1 + 0.15 * s)
    la_half = la_len * anat.la_width
    out = {
        "lv": _bullet(length, half_w),
        "epi": _bullet(length, half_w + wall, start=-wall),
        "la": _ellipse(length + la_len / 2 - 0.01, 0.0, la_len / 2 + 0.01, la_half),
    }
    if anat.view == "4CH":
        # Right heart on the screen's left: shorter RV behind the septum, RA below it.
        sep = half_w + wall + 0.03
        rv_w = 0.65 * half_w
        dv = -(sep + rv_w)
        rv_start = 0.25 * length
        out["rv"] = _bullet(length, rv_w, start=rv_start) + [0, dv]
        out["rv_wall"] = _bullet(length, rv_w + 0.6 * wall, start=rv_start - 0.6 * wall) + [0, dv]
        out["ra"] = _ellipse(length + 0.9 * la_len / 2, dv - 0.02, 0.9 * la_len / 2, 0.9 * la_half)
    return out


def draw_heart(size: int, anat: Anatomy, s: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the heart at phase ``s`` (0 = ED, 1 = ES; values in between for a sequence).

    Returns:
        labels: uint8 CAMUS label map (0 background, 1 LV, 2 MYO, 3 LA), clipped to the sector.
        cone: bool sector mask.
        right: uint8 map of the unlabelled right heart (1 cavity, 2 wall; zeros in 2CH).
    """
    frame = _Frame(size, anat)
    shapes = _shapes(anat, s)
    labels = np.zeros((size, size), np.uint8)
    frame.fill(labels, shapes["la"], LA)
    frame.fill(labels, shapes["epi"], MYO)
    frame.fill(labels, shapes["lv"], LV)
    right = np.zeros((size, size), np.uint8)
    if "rv" in shapes:
        frame.fill(right, shapes["rv_wall"], 2)
        frame.fill(right, shapes["rv"], 1)
        frame.fill(right, shapes["ra"], 1)
        right[labels > 0] = 0
    cone = sector_mask(size, anat)
    labels[~cone] = 0
    right[~cone] = 0
    return labels, cone, right


def to_sdm_labels(labels: np.ndarray, cone: np.ndarray) -> np.ndarray:
    """CAMUS labels -> SDM CAMUS sector labels (0 outside the cone, 1 LV, 2 cone background, 3 MYO, 4 LA)."""
    lut = np.array([2, 1, 3, 4], np.uint8)
    out = lut[np.clip(labels, 0, 3)]
    out[~cone] = 0
    return out


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return a
    return cv2.GaussianBlur(a, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def render_echo(
    labels: np.ndarray, cone: np.ndarray, right: np.ndarray, rng: np.random.Generator, quality: str = "Good"
) -> np.ndarray:
    """Render a grey uint8 echo image from a CAMUS label map (dark cavities, bright walls, speckle)."""
    size = labels.shape[0]
    scale = size / 256.0
    contrast, haze, additive, speckle_blur = _QUALITY.get(quality, _QUALITY["Medium"])
    tissue = np.full(labels.shape, 0.42, np.float32)
    tissue[labels == MYO] = 0.85
    tissue[right == 2] = 0.72
    tissue[(labels == LV) | (labels == LA) | (right == 1)] = 0.05
    # Low-frequency texture, blurred tissue boundaries, contrast loss with poorer quality.
    # Smooth noise drawn on a coarse grid and upsampled (a wide Gaussian blur costs 5x more).
    coarse = max(4, size // 8)
    texture = cv2.resize(_blur(rng.standard_normal((coarse, coarse), dtype=np.float32), 1.25),
                         labels.shape[::-1], interpolation=cv2.INTER_CUBIC)
    texture /= max(float(texture.std()), 1e-6)
    tissue = _blur(tissue, 1.2 * scale) * (1 + 0.18 * texture)
    tissue = tissue.mean() + contrast * (tissue - tissue.mean())
    r, _ = _polar(size)
    radius = max(float(r[cone].max()) if cone.any() else size, 1.0)
    depth = r / radius
    tissue = tissue * np.exp(-0.7 * depth) * 1.35 + haze * np.exp(-depth / 0.3)
    # Multiplicative Rayleigh speckle (unit mean), slightly correlated, plus additive noise.
    speck = rng.rayleigh(1.0, labels.shape).astype(np.float32)
    speck = _blur(speck, speckle_blur * scale)
    speck /= max(float(speck.mean()), 1e-6)
    img = tissue * speck + additive * rng.standard_normal(labels.shape, dtype=np.float32)
    img = np.clip(img, 0, 1) * cone
    return (img * 255 + 0.5).astype(np.uint8)


def draw_echo(
    size: int, anat: Anatomy, rng: np.random.Generator, s: float = 0.0, quality: str = "Good"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, CAMUS label map and cone for one frame (see ``draw_heart`` and ``render_echo``)."""
    labels, cone, right = draw_heart(size, anat, s)
    return render_echo(labels, cone, right, rng, quality), labels, cone


def lv_volume_ml(labels: np.ndarray, spacing_mm: float) -> float:
    """LV volume by the single-plane area-length method, V = 8 A^2 / (3 pi L), in millilitres."""
    ys, xs = np.nonzero(labels == LV)
    if len(ys) < 3:
        return 0.0
    area = len(ys) * spacing_mm**2
    pts = np.stack([xs, ys], 1).astype(np.float32)
    (_, _), (w, h), _ = cv2.minAreaRect(pts)
    length = max(w, h) * spacing_mm
    return float(8 * area**2 / (3 * np.pi * max(length, 1e-6)) / 1000.0)
