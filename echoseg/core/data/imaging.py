"""Loading 2-D images and label maps from NIfTI, MHD and PNG files as uint8 arrays, with the checks of `data check`.

Every reader here validates what it reads, so every stage gets the checks `echoseg data check` reports: a NIfTI
file must hold every voxel its header declares (SimpleITK would silently read a truncated ``.nii.gz`` with zeros),
a label map must hold only the labels of its encoding (:data:`~echoseg.core.data.manifest.LABEL_SETS`), and an
image and its label map must have the same size (:func:`load_pair`). `data check` lists the same findings with
:func:`check_pair`; the stages stop at the first one with a UserError naming the file (exit 2).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image, UnidentifiedImageError

from echoseg.core.data.manifest import ANY_LABELS, Problem
from echoseg.core.errors import UserError
from echoseg.core.paths import check_native_path

ITK_SUFFIXES = (".nii", ".nii.gz", ".mhd", ".mha", ".nrrd")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def nifti_truncation(path: Path) -> str | None:
    """Why a NIfTI file is truncated or corrupt (None when complete, or when ``path`` is not NIfTI).

    SimpleITK silently reads a truncated ``.nii.gz`` (missing voxels become zeros), so the check decompresses the
    whole stream and compares its length with the header's ``vox_offset`` + voxel bytes.
    """

    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return None
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                head = f.read(540)
                total = len(head)
                while chunk := f.read(1 << 20):
                    total += len(chunk)
        else:
            with open(path, "rb") as f:
                head = f.read(540)
            total = path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        return f"corrupt or truncated file ({type(exc).__name__}: {exc})"
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(f"{endian}i", head[:4])[0] == 348:
            dims = struct.unpack(f"{endian}8h", head[40:56])
            bitpix = struct.unpack(f"{endian}h", head[72:74])[0]
            offset = int(struct.unpack(f"{endian}f", head[108:112])[0])
            break
        if len(head) >= 540 and struct.unpack(f"{endian}i", head[:4])[0] == 540:
            bitpix = struct.unpack(f"{endian}h", head[14:16])[0]
            dims = struct.unpack(f"{endian}8q", head[16:80])
            offset = struct.unpack(f"{endian}q", head[168:176])[0]
            break
    else:
        return "not a NIfTI file (bad header)"
    n = int(np.prod([max(int(d), 1) for d in dims[1:1 + max(0, min(int(dims[0]), 7))]]))
    expected = max(offset, 348) + n * max(int(bitpix), 8) // 8
    if total < expected:
        return f"truncated: {total} bytes of data, header needs {expected}"
    return None


def read_array(path: str | Path) -> np.ndarray:
    """Read a 2-D array (H, W) from NIfTI/MHD (SimpleITK) or a raster image (grey levels).

    Images stored as 3-D volumes with a single slice are squeezed to 2-D. A NIfTI file must be complete
    (:func:`nifti_truncation`).

    Raises:
        UserError: the file is missing, unreadable or not a single 2-D image, or its path is not UTF-8.
    """
    p = Path(check_native_path(path, "image"))  # before SimpleITK, which aborts on a non-UTF-8 path
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    suffix = _suffix(p)
    if suffix in ITK_SUFFIXES:
        broken = nifti_truncation(p)
        if broken:
            raise UserError(f"{p}: {broken}")
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
    """Load a grey image as uint8 (H, W); a missing, unreadable or truncated file is a UserError naming it."""
    return to_uint8(read_array(path))


def _labels_text(labels: Collection[int]) -> str:
    values = sorted({int(v) for v in labels})
    if values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values))


def label_problem(mask: np.ndarray, labels: Collection[int] | None = ANY_LABELS) -> str | None:
    """Why a label map cannot be used with the label set ``labels`` (None when every value is in it).

    ``labels`` None allows any integer 0..255. The reason lists (up to five of) the values outside the set.
    """
    allowed = range(256) if labels is None else labels
    values = np.unique(np.asarray(mask))
    bad = [v for v in values.tolist() if v not in allowed]  # 1.0 is in {1}; 1.5 and NaN are in no set
    if not bad:
        return None
    shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
    return f"labels outside {_labels_text(allowed)}: {shown}"


def load_mask(path: str | Path, labels: Collection[int] | None = ANY_LABELS) -> np.ndarray:
    """Load an integer label map as uint8 (H, W) whose values all lie in ``labels``.

    Args:
        path: the label map file.
        labels: the values it may hold (default: any label of the data contract, 0..4; a CAMUS map: 0..3, see
            :data:`~echoseg.core.data.manifest.LABEL_SETS`); None: any integer 0..255.

    Raises:
        UserError: the file is missing, unreadable or truncated, or holds a value outside ``labels``.
    """
    arr = read_array(path)
    problem = label_problem(arr, labels)
    if problem:
        raise UserError(f"{path}: {problem}")
    return arr.astype(np.uint8)


def _reason(exc: UserError, path: Path) -> str:
    msg = str(exc)
    prefix = f"{path}: "
    msg = msg[len(prefix):] if msg.startswith(prefix) else msg
    return " ".join(msg.split())  # one line


def _read_pair(image: Path, mask: Path, labels: Collection[int] | None) -> tuple[list[Problem], dict[str, np.ndarray]]:
    problems: list[Problem] = []
    arrays: dict[str, np.ndarray] = {}
    for kind, p in (("image", image), ("mask", mask)):
        if not p.is_file():
            problems.append(Problem(str(p), f"missing {kind} file"))
            continue
        try:
            arrays[kind] = read_array(p)
        except UserError as exc:
            problems.append(Problem(str(p), f"unreadable {kind}: {_reason(exc, p)}"))
    if len(arrays) == 2:
        img, msk = arrays["image"], arrays["mask"]
        if img.shape != msk.shape:
            problems.append(Problem(str(mask), f"mask shape {msk.shape} does not match image shape {img.shape}"))
        bad_labels = label_problem(msk, labels)
        if bad_labels:
            problems.append(Problem(str(mask), bad_labels))
    return problems, arrays


def check_pair(image: str | Path, mask: str | Path, labels: Collection[int] | None = ANY_LABELS
               ) -> tuple[list[Problem], tuple[int, ...] | None]:
    """(problems, image shape) of one image and its label map: what `data check` reports and the readers refuse.

    Problems: a missing, unreadable or truncated file; a label map of another size than its image; labels outside
    ``labels``.
    """
    problems, arrays = _read_pair(Path(image), Path(mask), labels)
    return problems, (tuple(arrays["image"].shape) if "image" in arrays else None)


def load_pair(image: str | Path, mask: str | Path, labels: Collection[int] | None = ANY_LABELS
              ) -> tuple[np.ndarray, np.ndarray]:
    """Load an image (uint8) and its label map (uint8) after the checks of :func:`check_pair`.

    Raises:
        UserError: the first problem :func:`check_pair` finds, naming its file.
    """
    problems, arrays = _read_pair(Path(image), Path(mask), labels)
    if problems:
        raise UserError(f"{problems[0].path}: {problems[0].reason}")
    return to_uint8(arrays["image"]), arrays["mask"].astype(np.uint8)


def check_label_maps(masks: np.ndarray, paths: Sequence[str], labels: Sequence[Collection[int]]) -> None:
    """Check already decoded label maps (e.g. a sample cache's ``(N, S, S)`` stack) against each one's label set.

    Raises:
        UserError: naming the file of the first map with a value outside its set.
    """
    highest = np.array([max(s) for s in labels], np.int64)
    for start in range(0, len(masks), 256):  # in chunks: ``masks`` may be a large memory map
        chunk = np.asarray(masks[start:start + 256])
        over = np.flatnonzero(chunk.reshape(len(chunk), -1).max(axis=1) > highest[start:start + len(chunk)])
        if len(over):
            i = start + int(over[0])
            raise UserError(f"{paths[i]}: {label_problem(masks[i], labels[i])}")
