"""Sector label maps for conditioning, and their random perturbation ("Echo from noise", Stojanovski et al. 2023).

Label convention (SDM CAMUS): 0 outside the ultrasound cone, 1 LV cavity, 2 background inside the cone, 3 MYO,
4 LA. CAMUS label maps (0 background, 1 LV, 2 MYO, 3 LA) carry no cone, so :func:`cone_from_image` derives it
from the grey image: pixels brighter than a small threshold, a morphological closing that fills the dark cavities
and speckle holes, the largest connected component, then its convex hull (an ultrasound sector is convex).

Perturbation (per real map, several copies): a random affine transform (rotation +-5 deg, translation up to 5 % of
the side, isotropic scale 0.8-1.05, shear +-5 deg) followed by an elastic deformation (random displacements on a
10x10 control grid, up to 30 px at 256 px, interpolated smoothly to every pixel). Labels are resampled with
nearest neighbour so no new values appear. The cone itself stays where the probe put it: only the structures
move, pixels of the cone they leave become background (2), and whatever moves outside the cone is cut (0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

OUTSIDE, LV, BACKGROUND, MYO, LA = 0, 1, 2, 3, 4
SDM_STRUCTURES: dict[int, str] = {LV: "LV", MYO: "MYO", LA: "LA"}
# CAMUS label -> SDM label inside the cone (0 background -> 2, 1 LV -> 1, 2 MYO -> 3, 3 LA -> 4).
_CAMUS_TO_SDM = np.array([BACKGROUND, LV, MYO, LA], np.uint8)


@dataclass(frozen=True)
class PerturbConfig:
    """Ranges of the random label-map perturbation (lengths in pixels at ``reference_size``)."""

    rotation_deg: float = 5.0
    translation: float = 0.05
    scale_min: float = 0.8
    scale_max: float = 1.05
    shear_deg: float = 5.0
    grid: int = 10
    max_displacement: float = 30.0
    reference_size: int = 256


@dataclass(frozen=True)
class PerturbParams:
    """One drawn perturbation; ``elastic_seed`` regenerates the control-point displacements."""

    rotation: float
    tx: float
    ty: float
    scale: float
    shear: float
    elastic_seed: int
    elastic_px: float
    grid: int

    def as_dict(self) -> dict:
        """The parameters as a flat dict (for manifests)."""
        return asdict(self)


# ------------------------------------------------------------------------------------------------ cones
def cone_from_image(image: np.ndarray, threshold: int = 4, close_frac: float = 0.04) -> np.ndarray:
    """Boolean mask of the ultrasound sector of a grey uint8 image (threshold, closing, largest part, hull)."""
    img = np.asarray(image)
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    h, w = img.shape
    fg = (cv2.medianBlur(np.ascontiguousarray(img, dtype=np.uint8), 3) > threshold).astype(np.uint8)
    k = max(3, int(round(close_frac * max(h, w))) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    fg = cv2.morphologyEx(cv2.copyMakeBorder(fg, k, k, k, k, cv2.BORDER_CONSTANT, value=0), cv2.MORPH_CLOSE, kernel)
    fg = fg[k:-k, k:-k]
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return np.zeros((h, w), bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    pts = cv2.findNonZero((comp == largest).astype(np.uint8))
    hull = cv2.convexHull(pts)
    out = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool)


def camus_to_sdm(labels: np.ndarray, cone: np.ndarray) -> np.ndarray:
    """CAMUS labels (0..3) + cone -> SDM sector labels (0 outside, 1 LV, 2 cone background, 3 MYO, 4 LA).

    Structures are always inside the cone (the cone is widened to hold them if the derived one misses a pixel).
    """
    lab = np.asarray(labels)
    if lab.max(initial=0) > 3:
        raise ValueError(f"CAMUS label map has label {int(lab.max())} (expected 0..3)")
    out = _CAMUS_TO_SDM[lab]
    out[~(np.asarray(cone, bool) | (lab > 0))] = OUTSIDE
    return out


def sdm_cone(sdm: np.ndarray) -> np.ndarray:
    """The cone of an SDM label map (every label but 0)."""
    return np.asarray(sdm) > OUTSIDE


def camus_from_sdm(sdm: np.ndarray) -> np.ndarray:
    """SDM sector labels -> CAMUS labels (0 background, 1 LV, 2 MYO, 3 LA)."""
    lut = np.array([0, 1, 0, 2, 3], np.uint8)
    return lut[np.clip(np.asarray(sdm), 0, 4)]


# ----------------------------------------------------------------------------------------- perturbation
def sample_params(rng: np.random.Generator, size: int, config: PerturbConfig | None = None) -> PerturbParams:
    """Draw one perturbation for a ``size`` x ``size`` map (translations in pixels, angles in degrees)."""
    c = config or PerturbConfig()
    t = c.translation * size
    return PerturbParams(
        rotation=float(rng.uniform(-c.rotation_deg, c.rotation_deg)),
        tx=float(rng.uniform(-t, t)),
        ty=float(rng.uniform(-t, t)),
        scale=float(rng.uniform(c.scale_min, c.scale_max)),
        shear=float(rng.uniform(-c.shear_deg, c.shear_deg)),
        elastic_seed=int(rng.integers(0, 2**31 - 1)),
        elastic_px=float(c.max_displacement * size / c.reference_size),
        grid=int(c.grid),
    )


def affine_matrix(p: PerturbParams, size: int) -> np.ndarray:
    """2x3 forward affine matrix about the image centre: rotate, shear (x), scale, then translate."""
    c = (size - 1) / 2.0
    a, s = np.radians(p.rotation), np.radians(p.shear)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    shear = np.array([[1.0, np.tan(s)], [0.0, 1.0]])
    lin = p.scale * rot @ shear
    offset = np.array([c, c]) + np.array([p.tx, p.ty]) - lin @ np.array([c, c])
    return np.hstack([lin, offset[:, None]]).astype(np.float64)


def elastic_field(p: PerturbParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense (dx, dy) displacement in pixels: uniform random control points, bicubic interpolation, clipped."""
    rng = np.random.default_rng(p.elastic_seed)
    ctrl = rng.uniform(-p.elastic_px, p.elastic_px, size=(2, p.grid, p.grid)).astype(np.float32)
    dx = cv2.resize(ctrl[0], (size, size), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(ctrl[1], (size, size), interpolation=cv2.INTER_CUBIC)
    lim = p.elastic_px
    return np.clip(dx, -lim, lim), np.clip(dy, -lim, lim)


def apply_params(sdm: np.ndarray, p: PerturbParams) -> np.ndarray:
    """Apply a perturbation to a square SDM label map; the cone stays fixed (see the module docstring)."""
    sdm = np.ascontiguousarray(sdm, dtype=np.uint8)
    if sdm.ndim != 2 or sdm.shape[0] != sdm.shape[1]:
        raise ValueError(f"expected a square 2-D label map, got shape {sdm.shape}")
    size = sdm.shape[0]
    cone = sdm_cone(sdm)
    heart = np.where(sdm == OUTSIDE, BACKGROUND, sdm).astype(np.uint8)
    # Backward mapping: output pixel x takes the label at A^-1 (x + d(x)), i.e. elastic then affine inverse.
    inv = cv2.invertAffineTransform(affine_matrix(p, size))
    dx, dy = elastic_field(p, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ex, ey = xx + dx, yy + dy
    map_x = (inv[0, 0] * ex + inv[0, 1] * ey + inv[0, 2]).astype(np.float32)
    map_y = (inv[1, 0] * ex + inv[1, 1] * ey + inv[1, 2]).astype(np.float32)
    moved = cv2.remap(heart, map_x, map_y, interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                      borderValue=BACKGROUND)
    moved[~cone] = OUTSIDE
    return moved


def perturb_label_map(
    sdm: np.ndarray, rng: np.random.Generator, config: PerturbConfig | None = None
) -> tuple[np.ndarray, PerturbParams]:
    """Draw a perturbation with ``rng`` and apply it; returns (perturbed map, parameters)."""
    p = sample_params(rng, int(np.asarray(sdm).shape[0]), config)
    return apply_params(sdm, p), p
