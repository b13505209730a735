"""Reading ultrasound DICOM cines with pydicom and importing them as an EchoNet-Dynamic-layout data set.

Handles single- and multi-frame files in MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422 (and the JPEG 2000
YBR_ICT/RCT) and PALETTE COLOR, compressed or not, as far as the installed pixel-data decoders allow; a missing
decoder is a UserError naming the packages to install. Colour is converted to grey with ITU-R BT.601 luma
weights; images stored with more than 8 bits are min-max scaled to uint8 over the whole clip (one scale for all
frames, so brightness does not flicker); MONOCHROME1 is inverted.

Frame rate (the first present, > 0): FrameTime (0018,1063, ms per frame), FrameTimeVector (0018,1065, ms between
each frame and the previous one, the first value 0: the mean increment is used), CineRate (0018,0040, frames per
second), then RecommendedDisplayFrameRate (0008,2144, a display rate: warned about). Pixel spacing (dy, dx) in mm:
PixelSpacing, else the first SequenceOfUltrasoundRegions (0018,6011) item whose PhysicalUnitsX/YDirection are cm
(with ``--crop region``: that region's PhysicalDeltaY/X). An import rescales it to the written frames (padding
keeps it, resizing scales it) and writes it in cm to FileList.csv's PhysicalDeltaY/X (mm in dicom_sources.csv).

Import (``import_dicom``) takes Modality US only unless ``any_modality``; refuses BurnedInAnnotation YES unless the
frames are cropped to the ultrasound region or ``allow_burned_in``; keeps the aspect ratio (pads to a square
before resizing, or crops to the first ultrasound region); and writes no patient data and no source path into the
data set: a source file is identified by the sha256 of its absolute path, and a file name holding the patient's
name, id or birth date is replaced by that hash.
"""

from __future__ import annotations

import hashlib
import os
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
from echoseg.core.data.echonet import FILELIST_COLUMNS, SPACING_COLUMNS, TRACING_COLUMNS
from echoseg.core.data.imaging import to_uint8
from echoseg.core.data.video import write_video
from echoseg.core.errors import UserError, first_line
from echoseg.core.io import write_csv
from echoseg.core.paths import check_native_path

DEFAULT_FPS = 50.0  # EchoNet-Dynamic's most common frame rate
CROPS = ("none", "region")
FPS_SOURCES = ("FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate", "default")
SOURCES_FILE = "dicom_sources.csv"
_CM = 3  # DICOM PhysicalUnits code for centimetres
# PhysicalUnitsX/YDirection (0018,6024/6026), PS3.3 C.8.5.5.1.15
UNITS = {0: "none", 1: "percent", 2: "dB", 3: "cm", 4: "seconds", 5: "hertz", 6: "dB/seconds", 7: "cm/sec",
         8: "cm2", 9: "cm2/sec", 10: "cm3", 11: "cm3/sec", 12: "degrees"}
REGION_SLACK = 2  # pixels a region may overshoot the frame (encoders write Columns for the last column index)
_IRREGULAR = 0.10  # FrameTimeVector increments spread wider than this (relative) are warned about
_METADATA_KEYS = ("Modality", "Manufacturer", "ManufacturerModelName", "BitsStored", "SamplesPerPixel",
                  "Rows", "Columns", "NumberOfFrames", "SOPClassUID", "BurnedInAnnotation")


@dataclass
class UltrasoundRegion:
    """One item of SequenceOfUltrasoundRegions: a rectangle (inclusive pixel bounds) and its physical scale."""

    x0: int
    y0: int
    x1: int
    y1: int
    delta_x: float | None  # PhysicalDeltaX, in units_x per pixel
    delta_y: float | None
    units_x: str  # a name from UNITS ("cm", ...) or "code N"
    units_y: str

    def spacing_mm(self) -> tuple[float, float] | None:
        """(dy, dx) in mm when both directions are in cm, else None."""
        if self.units_x == "cm" and self.units_y == "cm" and self.delta_x and self.delta_y:
            return self.delta_y * 10.0, self.delta_x * 10.0
        return None


@dataclass
class DicomClip:
    """One DICOM image or cine as grey frames."""

    frames: np.ndarray  # (T, H, W) uint8
    fps: float | None
    spacing: tuple[float, float] | None  # (dy, dx) in mm
    photometric: str
    source: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    fps_source: str | None = None  # which attribute gave fps (FPS_SOURCES), None when none did
    region: UltrasoundRegion | None = None  # the first SequenceOfUltrasoundRegions item


def _positive_float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def frame_time_vector(ds) -> list[float]:
    """The positive increments (ms) of FrameTimeVector: the first value (0, the first frame's) is dropped."""
    raw = _values(ds.get("FrameTimeVector"))
    increments = [_positive_float(v) for v in raw[1:]] if len(raw) > 1 else [_positive_float(v) for v in raw]
    return [v for v in increments if v is not None]


def frame_rate(ds) -> tuple[float | None, str | None]:
    """(frames per second, the attribute it came from) or (None, None) when the file records no frame rate.

    Order: FrameTime (ms), FrameTimeVector (mean increment, ms), CineRate, RecommendedDisplayFrameRate.
    """
    frame_time = _positive_float(ds.get("FrameTime"))
    if frame_time is not None:
        return 1000.0 / frame_time, "FrameTime"
    increments = frame_time_vector(ds)
    if increments:
        return 1000.0 / float(np.mean(increments)), "FrameTimeVector"
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        fps = _positive_float(ds.get(key))
        if fps is not None:
            return fps, key
    return None, None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def ultrasound_region(ds) -> UltrasoundRegion | None:
    """The first SequenceOfUltrasoundRegions item, or None when there is none or its bounds are missing."""
    regions = ds.get("SequenceOfUltrasoundRegions") or []
    if not regions:
        return None
    r = regions[0]
    bounds = [_int(r.get(k)) for k in ("RegionLocationMinX0", "RegionLocationMinY0", "RegionLocationMaxX1",
                                       "RegionLocationMaxY1")]
    if any(b is None for b in bounds):
        return None
    x0, y0, x1, y1 = bounds

    def units(key: str) -> str:
        code = _int(r.get(key))
        return UNITS.get(code, f"code {code}") if code is not None else ""

    return UltrasoundRegion(x0, y0, x1, y1, _positive_float(r.get("PhysicalDeltaX")),
                            _positive_float(r.get("PhysicalDeltaY")), units("PhysicalUnitsXDirection"),
                            units("PhysicalUnitsYDirection"))


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


def crop_box(region: UltrasoundRegion, height: int, width: int, where: str | Path) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), inclusive, of ``region`` within a ``height`` x ``width`` frame.

    A region that overshoots the frame by up to REGION_SLACK pixels is clipped to it (encoders write the
    column count for the last column index); one further outside, or empty, is a UserError naming ``where``.
    """
    x0, y0, x1, y1 = region.x0, region.y0, region.x1, region.y1
    shown = f"x {x0}..{x1}, y {y0}..{y1}"
    if x1 < x0 or y1 < y0 or x0 < 0 or y0 < 0:
        raise UserError(f"{where}: --crop region: the ultrasound region ({shown}) is empty")
    if x0 >= width or y0 >= height or x1 >= width + REGION_SLACK or y1 >= height + REGION_SLACK:
        raise UserError(f"{where}: --crop region: the ultrasound region ({shown}) lies outside the "
                        f"{width}x{height} frames")
    return x0, y0, min(x1, width - 1), min(y1, height - 1)


def modality(ds) -> str:
    """The file's Modality (upper case; "" when absent)."""
    return str(ds.get("Modality", "") or "").strip().upper()


def burned_in(ds) -> bool:
    """Whether the file declares BurnedInAnnotation YES (text such as the patient's name in the pixels)."""
    return str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"


def _read_dataset(path: Path):
    path = Path(check_native_path(path, "DICOM file"))
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
            the packages that would decode it), or a path that is not UTF-8.
    """

    path = Path(check_native_path(path, "DICOM file"))
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
    increments = frame_time_vector(ds)
    if increments:
        metadata["FrameTimeVectorSpread"] = (max(increments) - min(increments)) / float(np.mean(increments))
    fps, fps_source = frame_rate(ds)
    return DicomClip(frames=frames, fps=fps, spacing=pixel_spacing(ds), photometric=photometric, source=path,
                     metadata=metadata, fps_source=fps_source, region=ultrasound_region(ds))


def _plain(value: Any) -> Any:
    if isinstance(value, (int, float, str)):
        return value
    try:
        return int(value) if float(value) == int(value) else float(value)
    except (TypeError, ValueError):
        return str(value)


def source_hash(path: str | Path) -> str:
    """sha256 (hex) of a source file's absolute path: how an import names its sources without showing them."""
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()


def patient_values(ds) -> list[str]:
    """PatientName (whole and its components of 3+ characters), PatientID and PatientBirthDate values of a file."""
    values = []
    for key in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs"):
        for v in _values(ds.get(key)):
            text = str(v).strip()
            if not text:
                continue
            values.append(text)
            if key == "PatientName":
                values.extend(p for p in re.split(r"[\^=\s,]+", text) if len(p) >= 3)
    return [v for v in dict.fromkeys(values) if len(v) >= 3]


def _holds_any(text: str, values: list[str]) -> bool:
    def norm(s: str) -> str:
        return re.sub(r"[^0-9a-z]+", "", s.lower())

    squashed = norm(text)
    return any(v.lower() in text.lower() or (norm(v) and norm(v) in squashed) for v in values)


def _clip_name(path: Path, taken: set[str], phi: list[str] | tuple[str, ...] = ()) -> str:
    """The file name without ``.dcm`` (made safe and unique), or ``dicom_<hash>`` when it holds patient data."""
    stem = path.name[:-4] if path.name.lower().endswith(".dcm") else path.name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "clip"
    if _holds_any(stem, list(phi)) or _holds_any(base, list(phi)):
        base = f"dicom_{source_hash(path)[:12]}"
    name, k = base, 2
    while name.lower() in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name.lower())
    return name


def _console_log(message: str) -> None:

    console.print(message, markup=False, highlight=False)


@dataclass
class _Admitted:
    path: Path
    phi: list[str]
    box: tuple[int, int, int, int] | None  # crop box when cropping to the region


def admit(path: str | Path, *, crop: str = "none", any_modality: bool = False,
          allow_burned_in: bool = False) -> tuple[Any, tuple[int, int, int, int] | None]:
    """Read a file's header and check it may be imported; returns (dataset, crop box or None).

    Raises:
        UserError naming the file: not DICOM, no image, Modality not US (without ``any_modality``), no usable
            ultrasound region for ``crop="region"``, or BurnedInAnnotation YES without ``crop="region"`` or
            ``allow_burned_in``.
    """
    path = Path(path)
    ds = _read_dataset(path)
    if "PixelData" not in ds:
        raise UserError(f"{path}: DICOM file holds no image (no pixel data)")
    found = modality(ds)
    if found != "US" and not any_modality:
        raise UserError(f"{path}: Modality is {found or 'missing'}, not US (ultrasound); "
                        "give --any-modality to import it anyway")
    box = None
    if crop == "region":
        region = ultrasound_region(ds)
        if region is None:
            raise UserError(f"{path}: --crop region, but the file has no SequenceOfUltrasoundRegions (0018,6011) "
                            "item with RegionLocationMinX0/MinY0/MaxX1/MaxY1")
        box = crop_box(region, int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), path)
    elif burned_in(ds) and not allow_burned_in:
        raise UserError(f"{path}: BurnedInAnnotation is YES (text such as the patient's name may be in the "
                        "pixels); give --crop region to keep only the ultrasound region, or --allow-burned-in")
    return ds, box


def _square(frames: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Pad (T, H, W) frames with black to a centred square; returns (frames, pad_top, pad_left)."""
    _, h, w = frames.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    if side == h == w:
        return frames, 0, 0
    return np.pad(frames, ((0, 0), (top, side - h - top), (left, side - w - left))), top, left


def import_dicom(files: list[Path], root: Path, size: int = 112, split: str = "TEST",
                 log: Callable[[str], None] | None = None, *, crop: str = "none", any_modality: bool = False,
                 allow_burned_in: bool = False) -> pd.DataFrame:
    """Convert DICOM cines into an EchoNet-Dynamic layout at ``root``.

    Writes ``Videos/<name>.avi`` (grey), ``FileList.csv`` (EF/ESV/EDV empty; FPS from the file, else
    DEFAULT_FPS with a warning; PhysicalDeltaY/X: the pixel size of the written frames in cm, empty when the file
    records none, so that `eval ef` gives volumes in mL), a header-only ``VolumeTracings.csv`` and
    ``dicom_sources.csv`` (per clip: the sha256 of the source's absolute path, original size, modality,
    photometric interpretation, fps and the attribute it came from, crop box, padding, the first ultrasound
    region's PhysicalDeltaX/Y and units, pixel spacing in mm of the written frames). Frames keep their aspect
    ratio: with ``size`` they are padded with black to a centred square, then resized to size x size (area
    interpolation when shrinking); ``crop="region"`` first cuts them to the first SequenceOfUltrasoundRegions
    rectangle. Every file is checked (see ``admit``) before any video is written, so one bad file among many
    leaves nothing behind; those errors name the file as given. No source path and no patient name, id or birth
    date is written (a later error names the clip).

    Args:
        files: DICOM files; names are their file names without ``.dcm`` (made unique), or ``dicom_<hash>`` for a
            file name holding the patient's name, id or birth date.
        root: output folder (a run directory).
        size: output frame height and width; 0 keeps the (cropped) original size, unpadded.
        split: the Split written for every clip (upper-cased).
        log: where warnings go (default: the console).
        crop: ``none`` (whole frame) or ``region`` (the first ultrasound region only).
        any_modality: import files whose Modality is not US (CT, MR, ...).
        allow_burned_in: import BurnedInAnnotation YES files uncropped.

    Returns:
        The FileList rows written.
    """

    log = log or _console_log
    if size < 0:
        raise UserError(f"size must be >= 0, got {size}")
    if crop not in CROPS:
        raise UserError(f"--crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if not files:
        raise UserError("no DICOM file given")
    admitted = []
    for f in files:  # fail fast on bad input before the slow part
        ds, box = admit(f, crop=crop, any_modality=any_modality, allow_burned_in=allow_burned_in)
        admitted.append(_Admitted(Path(f), patient_values(ds), box))
        del ds
    root = Path(root)
    split = split.strip().upper()
    taken: set[str] = set()
    rows, sources = [], []
    for i, item in enumerate(track(admitted, "importing DICOM")):
        name = _clip_name(item.path, taken, item.phi)
        try:
            clip = read_dicom(item.path)
        except UserError as exc:  # after the first video the run keeps its log: name the clip, not the path
            raise UserError(str(exc).replace(str(item.path), f"file {i + 1} ({name})")) from None
        frames = clip.frames
        t, h, w = frames.shape
        spacing = clip.spacing
        box = item.box
        if box is not None:
            x0, y0, x1, y1 = box
            frames = frames[:, y0:y1 + 1, x0:x1 + 1]
            spacing = clip.region.spacing_mm() if clip.region is not None else None
        pad_top = pad_left = 0
        if size:
            frames, pad_top, pad_left = _square(frames)
            side = frames.shape[1]
            if side != size:
                interp = cv2.INTER_AREA if size < side else cv2.INTER_CUBIC
                frames = np.stack([cv2.resize(fr, (size, size), interpolation=interp) for fr in frames])
                if spacing is not None:
                    spacing = (spacing[0] * side / size, spacing[1] * side / size)
        fps, fps_source = clip.fps, clip.fps_source
        if fps is None:
            fps, fps_source = DEFAULT_FPS, "default"
            log(f"warning: {name}: no FrameTime, FrameTimeVector, CineRate or RecommendedDisplayFrameRate; "
                f"using FPS={DEFAULT_FPS:g}")
        elif fps_source == "RecommendedDisplayFrameRate":
            log(f"warning: {name}: frame rate {fps:g} from RecommendedDisplayFrameRate, a display rate that may "
                "differ from the acquisition rate (no FrameTime, FrameTimeVector or CineRate)")
        spread = clip.metadata.get("FrameTimeVectorSpread")
        if fps_source == "FrameTimeVector" and spread is not None and spread > _IRREGULAR:
            log(f"warning: {name}: FrameTimeVector increments vary by {spread:.0%}; the video uses their mean "
                f"({fps:.4g} fps)")
        write_video(root / "Videos" / f"{name}.avi", frames, fps)
        out_h, out_w = frames.shape[1:]
        cm = (spacing[0] / 10.0, spacing[1] / 10.0) if spacing else (np.nan, np.nan)
        rows.append([name, np.nan, np.nan, np.nan, out_h, out_w, fps, t, split, *cm])
        region = clip.region
        sources.append({
            "FileName": name, "source_sha256": source_hash(item.path), "original_height": h, "original_width": w,
            "modality": clip.metadata.get("Modality", ""), "photometric": clip.photometric,
            "burned_in_annotation": clip.metadata.get("BurnedInAnnotation", ""),
            "fps": fps, "fps_source": fps_source, "fps_from_file": fps_source != "default",
            "crop": crop,
            "crop_x0": box[0] if box else np.nan, "crop_y0": box[1] if box else np.nan,
            "crop_x1": box[2] if box else np.nan, "crop_y1": box[3] if box else np.nan,
            "pad_top": pad_top, "pad_left": pad_left,
            "region_delta_x": region.delta_x if region else np.nan,
            "region_delta_y": region.delta_y if region else np.nan,
            "region_units_x": region.units_x if region else "",
            "region_units_y": region.units_y if region else "",
            "spacing_y_mm": spacing[0] if spacing else np.nan,
            "spacing_x_mm": spacing[1] if spacing else np.nan,
        })
    filelist = pd.DataFrame(rows, columns=FILELIST_COLUMNS + SPACING_COLUMNS)
    write_csv(root / "FileList.csv", filelist)
    write_csv(root / "VolumeTracings.csv", pd.DataFrame(columns=TRACING_COLUMNS))
    write_csv(root / SOURCES_FILE, pd.DataFrame(sources))
    return filelist


def import_summary(root: str | Path) -> dict[str, Any]:
    """Headline numbers of an import at ``root``: videos, frames, frame-rate sources (attribute: clips), crop,
    modalities (modality: clips)."""
    filelist = pd.read_csv(Path(root) / "FileList.csv")
    sources = pd.read_csv(Path(root) / SOURCES_FILE, keep_default_na=False)
    return {
        "dataset": "echonet",
        "videos": len(filelist),
        "frames": int(filelist["NumberOfFrames"].sum()),
        "fps_sources": {str(k): int(v) for k, v in sources["fps_source"].value_counts().items()},
        "crop": str(sources["crop"].iloc[0]) if len(sources) else "none",
        "modalities": {str(k): int(v) for k, v in sources["modality"].value_counts().items()},
        "videos_with_pixel_spacing": int(filelist.reindex(columns=SPACING_COLUMNS).notna().all(axis=1).sum()),
    }
