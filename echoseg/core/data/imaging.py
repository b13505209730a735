"""Loading 2-D images and label maps from NIfTI, MHD and PNG files as uint8 arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, UnidentifiedImageError

from echoseg.core.errors import UserError

ITK_SUFFIXES = (".nii", ".nii.gz", ".mhd", ".mha", ".nrrd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_array(path: str | Path) -> np.ndarray:
    """Read a 2-D array (H, W) from NIfTI/MHD (SimpleITK) or a raster image (grey levels).

    Images stored as 3-D volumes with a single slice are squeezed to 2-D.

    Raises:
        UserError: the file is missing, unreadable or not a single 2-D image.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    suffix = _suffix(p)
    if suffix in ITK_SUFFIXES:

        try:
            arr = sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
        except RuntimeError as exc:
            msg = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "unreadable")
            raise UserError(f"{p}: cannot read image ({msg[:160]})") from None
    elif suffix in RASTER_SUFFIXES:

        try:
            with Image.open(p) as im:
                im.load()
                arr = np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16", "P") else im)
        except (OSError, UnidentifiedImageError, SyntaxError) as exc:
            raise UserError(f"{p}: cannot read image ({exc})") from None
    else:
        raise UserError(f"{p}: unsupported image format {suffix!r}")
    arr = np.asarray(arr)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise UserError(f"{p}: expected a single 2-D image, got shape {tuple(arr.shape)}")
    return arr


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map an image to uint8: kept as is when already 0..255 integers, else min-max scaled."""
    if arr.dtype == np.uint8:
        return arr
    a = arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer) and a.min() >= 0 and a.max() <= 255:
        return a.astype(np.uint8)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip((a - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def load_image(path: str | Path) -> np.ndarray:
    """Load a grey image as uint8 (H, W)."""
    return to_uint8(read_array(path))


def load_mask(path: str | Path) -> np.ndarray:
    """Load an integer label map as uint8 (H, W); labels must be 0..255 integers."""
    arr = read_array(path)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise UserError(f"{path}: label map has non-integer values")
    if arr.min() < 0 or arr.max() > 255:
        raise UserError(f"{path}: label values outside 0..255")
    return arr.astype(np.uint8)
