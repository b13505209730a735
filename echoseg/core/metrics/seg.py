"""Segmentation metrics on binary masks: Dice, IoU and the 95th-percentile Hausdorff distance (HD95).

Empty-mask conventions (documented in ``per_sample.csv`` summaries):

- both prediction and ground truth empty: Dice = IoU = 1, HD95 = 0 (a correct "nothing here");
- exactly one empty: Dice = IoU = 0, HD95 = NaN (a surface distance is undefined); NaN HD95 values are left out
  of means and counted in the summary as ``hd95_undefined``.

HD95 follows MONAI's definition: surfaces are the mask pixels removed by one 3x3 (8-connected) erosion; the
directed distances from each surface pixel of one mask to the nearest surface pixel of the other come from
``scipy.ndimage.distance_transform_edt``; HD95 is the larger of the two directed 95th percentiles, in pixels.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

_STRUCT = np.ones((3, 3), bool)


def dice_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two binary masks (1.0 each when both are empty)."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    inter = np.logical_and(p, g).sum()
    total = p.sum() + g.sum()
    if total == 0:
        return 1.0, 1.0
    union = total - inter
    return float(2.0 * inter / total), float(inter / union)


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary mask (the mask minus its 8-connected erosion; border pixels count)."""
    m = np.asarray(mask, bool)
    eroded = ndimage.binary_erosion(m, structure=_STRUCT, border_value=0)
    return m & ~eroded


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: float = 1.0) -> float:
    """95th-percentile symmetric Hausdorff distance in pixels (times ``spacing``); see the module notes."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return math.nan
    sp, sg = surface(p), surface(g)
    dist_to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return float(max(np.percentile(dist_to_g[sp], 95), np.percentile(dist_to_p[sg], 95)))


def segmentation_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """``{"dice", "iou", "hd95"}`` of a binary prediction against a binary ground truth."""
    d, i = dice_iou(pred, gt)
    return {"dice": d, "iou": i, "hd95": hd95(pred, gt)}
