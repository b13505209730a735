"""Reading ultrasound DICOM cines with pydicom and importing them as an EchoNet-Dynamic-layout data set.

Handles single- and multi-frame files in MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422 (and the JPEG 2000
YBR_ICT/RCT) and PALETTE COLOR, compressed or not, as far as the installed pixel-data decoders allow; a missing
decoder is a UserError naming the packages to install. Colour is converted to grey with ITU-R BT.601 luma
weights; images stored with more than 8 bits are min-max scaled to uint8 over the whole clip (one scale for all
frames, so brightness does not flicker); MONOCHROME1 is inverted.

Frame rate: FrameTime (ms per frame), then CineRate, then RecommendedDisplayFrameRate. Pixel spacing (dy, dx)
in mm: PixelSpacing, else the first SequenceOfUltrasoundRegions item whose PhysicalUnitsX/YDirection are cm (3).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, iter_pixels

from echoseg.core.console import console, track
from echoseg.core.data.echonet import FILELIST_COLUMNS, TRACING_COLUMNS
from echoseg.core.data.imaging import to_uint8
from echoseg.core.data.video import write_video
from echoseg.core.errors import UserError, first_line
from echoseg.core.io import write_csv

DEFAULT_FPS = 50.0  # EchoNet-Dynamic's most common frame rate
_CM = 3  # DICOM PhysicalUnits code for centimetres
_METADATA_KEYS = ("Modality", "Manufacturer", "ManufacturerModelName", "BitsStored", "SamplesPerPixel",
                  "Rows", "Columns", "NumberOfFrames", "SOPClassUID")


@dataclass
class DicomClip:
    """One DICOM image or cine as grey frames."""

    frames: np.ndarray  # (T, H, W) uint8
    fps: float | None
    spacing: tuple[float, float] | None  # (dy, dx) in mm
    photometric: str
    source: Path
    metadata: dict[str, Any] = field(default_factory=dict)


def _positive_float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def frame_rate(ds) -> float | None:
    """Frames per second from FrameTime (ms), CineRate or RecommendedDisplayFrameRate; None if absent."""
    frame_time = _positive_float(ds.get("FrameTime"))
    if frame_time is not None:
        return 1000.0 / frame_time
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        fps = _positive_float(ds.get(key))
        if fps is not None:
            return fps
    return None


def pixel_spacing(ds) -> tuple[float, float] | None:
    """(dy, dx) in mm from PixelSpacing or SequenceOfUltrasoundRegions (PhysicalDeltaY/X in cm); None if absent."""
    spacing = ds.get("PixelSpacing")
    if spacing is not None and len(spacing) == 2:
        dy, dx = _positive_float(spacing[0]), _positive_float(spacing[1])
        if dy and dx:
            return dy, dx
    for region in ds.get("SequenceOfUltrasoundRegions") or []:
        if region.get("PhysicalUnitsXDirection") == _CM and region.get("PhysicalUnitsYDirection") == _CM:
            dy, dx = _positive_float(region.get("PhysicalDeltaY")), _positive_float(region.get("PhysicalDeltaX"))
            if dy and dx:
                return dy * 10.0, dx * 10.0
    return None


def _read_dataset(path: Path):

    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
        if "PixelData" not in ds and any("End of file" in str(w.message) for w in caught):
            raise UserError(f"{path}: DICOM file is truncated (its pixel data ends early)")
        return ds
    except UserError:
        raise
    except InvalidDicomError:
        pass  # maybe a DICOM file without the 128-byte preamble: accept it only if it holds an image
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise UserError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {first_line(exc)})") from None
    try:
        ds = pydicom.dcmread(path, force=True)
        if "PixelData" in ds and "Rows" in ds and "Columns" in ds:
            return ds
    except Exception:  # noqa: BLE001 - forced reading of a non-DICOM file fails in arbitrary ways
        pass
    raise UserError(f"{path}: not a DICOM file")


def _decoder_error(path: Path, ds, exc: BaseException) -> UserError:
    """A one-line UserError for a pixel-data decoding failure, naming packages to install when that is the cause."""
    text = str(exc)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    syntax_name = getattr(syntax, "name", str(syntax))
    if "missing dependencies" in text or "no pixel data decoders" in text.lower():
        needs = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
        hint = "; ".join(needs) if needs else "pylibjpeg + pylibjpeg-libjpeg, or python-gdcm"
        return UserError(f"{path}: cannot decode {syntax_name} pixel data: no decoder installed "
                         f"(install one of: {hint})")
    return UserError(f"{path}: cannot decode {syntax_name} pixel data ({type(exc).__name__}: {first_line(exc)})")


def _grey(frame: np.ndarray, ds, photometric: str) -> np.ndarray:
    """One decoded frame (already RGB for colour data) to a 2-D grey array of the same dtype family."""
    if photometric == "PALETTE COLOR":

        frame = apply_color_lut(frame, ds)
    if frame.ndim == 3 and frame.shape[-1] == 3:
        if frame.dtype not in (np.uint8, np.uint16):
            frame = frame.astype(np.float32)
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if frame.ndim == 3 and frame.shape[-1] == 1:
        return frame[..., 0]
    return frame


def read_dicom(path: str | Path) -> DicomClip:
    """Read a single- or multi-frame DICOM image as grey uint8 frames with its frame rate and pixel spacing.

    Raises:
        UserError: not a DICOM file, no pixel data, or pixel data that cannot be decoded (a missing decoder names
            the packages that would decode it).
    """

    path = Path(path)
    ds = _read_dataset(path)
    if "PixelData" not in ds:
        raise UserError(f"{path}: DICOM file holds no image (no pixel data)")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    greys = []
    try:
        # as_rgb (the default) converts YBR_* to RGB; frames are decoded one at a time to bound memory.
        for frame in iter_pixels(ds):
            greys.append(_grey(np.asarray(frame), ds, photometric))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise RuntimeError, ValueError, OSError, ...
        raise _decoder_error(path, ds, exc) from None
    if not greys:
        raise UserError(f"{path}: DICOM pixel data holds no frame")
    if greys[0].ndim != 2:
        raise UserError(f"{path}: unsupported pixel layout (frame shape {greys[0].shape})")
    frames = to_uint8(np.stack(greys))
    if photometric == "MONOCHROME1":
        frames = 255 - frames
    metadata = {k: _plain(ds.get(k)) for k in _METADATA_KEYS if k in ds}
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None:
        metadata["TransferSyntax"] = getattr(syntax, "name", str(syntax))
    return DicomClip(frames=frames, fps=frame_rate(ds), spacing=pixel_spacing(ds), photometric=photometric,
                     source=path, metadata=metadata)


def _plain(value: Any) -> Any:
    if isinstance(value, (int, float, str)):
        return value
    try:
        return int(value) if float(value) == int(value) else float(value)
    except (TypeError, ValueError):
        return str(value)


def _clip_name(path: Path, taken: set[str]) -> str:
    stem = path.name[:-4] if path.name.lower().endswith(".dcm") else path.name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "clip"
    name, k = base, 2
    while name.lower() in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name.lower())
    return name


def _console_log(message: str) -> None:

    console.print(message, markup=False, highlight=False)


def import_dicom(files: list[Path], root: Path, size: int = 112, split: str = "TEST",
                 log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Convert DICOM cines into an EchoNet-Dynamic layout at ``root``.

    Writes ``Videos/<name>.avi`` (grey; resized to size x size with area interpolation unless ``size`` is 0),
    ``FileList.csv`` (EF/ESV/EDV empty; FPS from the file, else DEFAULT_FPS with a warning), a header-only
    ``VolumeTracings.csv`` and ``dicom_sources.csv`` (name, source file, original size, photometric
    interpretation, fps source, pixel spacing in mm after resizing). Every file is checked to be a DICOM image
    before any video is written, so a non-DICOM file among many leaves nothing behind.

    Args:
        files: DICOM files; names are their file names without ``.dcm`` (made unique).
        root: output folder (a run directory).
        size: output frame height and width; 0 keeps the original size.
        split: the Split written for every clip (upper-cased).
        log: where warnings go (default: the console).

    Returns:
        The FileList rows written.
    """

    log = log or _console_log
    if size < 0:
        raise UserError(f"size must be >= 0, got {size}")
    if not files:
        raise UserError("no DICOM file given")
    for f in files:  # fail fast on bad input before the slow part
        ds = _read_dataset(Path(f))
        if "PixelData" not in ds:
            raise UserError(f"{f}: DICOM file holds no image (no pixel data)")
        del ds
    root = Path(root)
    split = split.strip().upper()
    taken: set[str] = set()
    rows, sources = [], []
    for f in track(files, "importing DICOM"):
        clip = read_dicom(f)
        name = _clip_name(Path(f), taken)
        frames = clip.frames
        t, h, w = frames.shape
        spacing = clip.spacing
        if size and (h, w) != (size, size):
            interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
            frames = np.stack([cv2.resize(fr, (size, size), interpolation=interp) for fr in frames])
            if spacing is not None:
                spacing = (spacing[0] * h / size, spacing[1] * w / size)
        fps = clip.fps
        if fps is None:
            fps = DEFAULT_FPS
            log(f"warning: {f}: no FrameTime, CineRate or RecommendedDisplayFrameRate; using FPS={DEFAULT_FPS:g}")
        write_video(root / "Videos" / f"{name}.avi", frames, fps)
        out_h, out_w = frames.shape[1:]
        rows.append([name, np.nan, np.nan, np.nan, out_h, out_w, fps, t, split])
        sources.append({"FileName": name, "source": str(Path(f).resolve()), "original_height": h,
                        "original_width": w, "photometric": clip.photometric,
                        "fps_from_file": clip.fps is not None,
                        "spacing_y_mm": spacing[0] if spacing else np.nan,
                        "spacing_x_mm": spacing[1] if spacing else np.nan})
    filelist = pd.DataFrame(rows, columns=FILELIST_COLUMNS)
    write_csv(root / "FileList.csv", filelist)
    write_csv(root / "VolumeTracings.csv", pd.DataFrame(columns=TRACING_COLUMNS))
    write_csv(root / "dicom_sources.csv", pd.DataFrame(sources))
    return filelist
