"""Per-frame left-ventricle areas (from mask files or an areas CSV) and ED/ES reference frames.

Mask files live in one folder, one file per video, named after the video (``<FileName>.npz``, ``.npy`` or
``.avi``; an ``.avi`` suffix of the FileName is ignored). Arrays are ``(T, H, W)``. The area of a frame is the
number of pixels above the threshold; the default threshold is 127 for integer masks (0..255, e.g. uint8 or
AVI), 0.5 for floating-point masks (probabilities) and for boolean masks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoseg.core.console import track
from echoseg.core.data.echonet import normalize_name as video_key  # FileName without ".avi": one convention
from echoseg.core.data.echonet import read_tracings, reference_frames
from echoseg.core.data.manifest import Problem
from echoseg.core.data.video import frame_count_problem, load_video
from echoseg.core.errors import UserError

MASK_SUFFIXES = (".npz", ".npy", ".avi")
AREA_COLUMNS = ("FileName", "Frame", "Area")
REFERENCE_COLUMNS = ("FileName", "ED", "ES")


@dataclass
class AreaSignals:
    """Area curves of many videos of possibly different lengths, stored flat.

    Attributes:
        names: video keys, one per video.
        values: all curves concatenated (float64).
        offsets: ``(videos + 1,)``; curve ``i`` is ``values[offsets[i]:offsets[i + 1]]``.
    """

    names: list[str]
    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_curves(cls, curves: dict[str, np.ndarray]) -> AreaSignals:
        """Build from ``{name: 1-D curve}``."""
        names = [video_key(k) for k in curves]
        arrays = [np.asarray(v, dtype=np.float64).reshape(-1) for v in curves.values()]
        lengths = np.array([a.size for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = np.concatenate(arrays) if arrays else np.zeros(0)
        return cls(names, values, offsets)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def lengths(self) -> np.ndarray:
        """Number of frames of each curve."""
        return np.diff(self.offsets)

    def curve(self, i: int) -> np.ndarray:
        """The area curve of video ``i``."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def index(self) -> dict[str, int]:
        """``{name: position}``."""
        return {n: i for i, n in enumerate(self.names)}

    def groups(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, matrix)`` for each set of videos of equal length (matrix is ``(len(indices), T)``)."""
        lengths = self.lengths
        for length in np.unique(lengths):
            idx = np.flatnonzero(lengths == length)
            yield idx, self.values[self.offsets[idx][:, None] + np.arange(length)]


# ----------------------------------------------------------------------------- areas CSV
def _header(path: Path) -> list[str]:
    try:
        return [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({str(exc).splitlines()[0] if str(exc) else 'empty'})") from None


def _read_columns(path: str | Path, option: str, columns: tuple[str, ...]) -> tuple[Path, pd.DataFrame]:
    """The ``columns`` of the CSV given to ``option`` (FileName as text); UserError naming the option when the file
    or a column is missing."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{option} {p}: file not found")
    cols = _header(p)
    missing = [c for c in columns if c not in cols]
    if missing:
        raise UserError(f"{option} {p}: missing column(s) {', '.join(missing)}; expected header {','.join(columns)}")
    return p, pd.read_csv(p, usecols=list(columns), dtype={"FileName": str}, skipinitialspace=True)


def read_areas_csv(path: str | Path) -> AreaSignals:
    """Read a CSV of ``FileName, Frame, Area`` rows (any order; frames of each video must be 0..n-1)."""
    p, df = _read_columns(path, "--areas", AREA_COLUMNS)
    frames = pd.to_numeric(df["Frame"], errors="coerce").to_numpy(np.float64)
    areas = pd.to_numeric(df["Area"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(frames) | (frames != np.round(frames)) | (frames < 0) | ~np.isfinite(areas) | (areas < 0)
    bad |= df["FileName"].isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f"--areas {p}: row {row + 2} has a bad FileName, Frame (integer >= 0) or Area (number >= 0)")
    raw_codes, raw_names = pd.factorize(df["FileName"])
    # Key the (few) distinct names, not the (many) rows: "x" and "x.avi" are the same video.
    key_codes, uniques = pd.factorize(np.array([video_key(n) for n in raw_names], dtype=object), sort=True)
    codes = key_codes[raw_codes]
    frames_i = frames.astype(np.int64)
    order = np.lexsort((frames_i, codes))
    codes_s, frames_s = codes[order], frames_i[order]
    counts = np.bincount(codes_s, minlength=len(uniques))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    expected = np.arange(len(order)) - offsets[codes_s]
    wrong = frames_s != expected
    if wrong.any():
        name = uniques[codes_s[int(np.flatnonzero(wrong)[0])]]
        raise UserError(f"--areas {p}: frames of {name} must be 0..n-1 with no gap or duplicate")
    return AreaSignals([str(u) for u in uniques], areas[order], offsets)


# ----------------------------------------------------------------------------- mask files
def default_threshold(dtype: np.dtype) -> float:
    """127 for integer masks (0..255), 0.5 for float (probabilities) and boolean masks."""
    return 127.0 if np.issubdtype(dtype, np.integer) else 0.5


def binarise(masks: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Boolean masks: values strictly above ``threshold`` (default from :func:`default_threshold`)."""
    m = np.asarray(masks)
    thr = default_threshold(m.dtype) if threshold is None else threshold
    if m.dtype == bool:
        m = m.astype(np.uint8)
    return m > thr


def mask_areas(masks: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Area (pixel count above the threshold) of each frame of a ``(T, H, W)`` mask stack."""
    return binarise(masks, threshold).reshape(len(masks), -1).sum(axis=1).astype(np.float64)


def find_mask_file(folder: str | Path, name: str) -> Path | None:
    """The mask file of video ``name`` in ``folder`` (``.npz``, ``.npy`` or ``.avi``), or None."""
    key = video_key(name)
    for suffix in MASK_SUFFIXES:
        p = Path(folder) / f"{key}{suffix}"
        if p.is_file():
            return p
    return None


def list_mask_videos(folder: str | Path) -> list[str]:
    """Keys of the videos that have a mask file in ``folder``."""
    return sorted({p.stem for p in Path(folder).iterdir() if p.suffix.lower() in MASK_SUFFIXES and p.is_file()})


def load_mask_video(path: str | Path) -> np.ndarray:
    """Load a ``(T, H, W)`` mask stack from ``.npz`` (key ``masks`` or its only array), ``.npy`` or ``.avi``."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".avi":

            arr = load_video(p)
        elif suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                if "masks" in keys:
                    arr = z["masks"]
                elif len(keys) == 1:
                    arr = z[keys[0]]
                else:
                    raise UserError(f"{p}: expected an array named 'masks' or a single array, found {keys}")
        else:
            raise UserError(f"{p}: unsupported mask file (use .npz, .npy or .avi)")
    except (OSError, ValueError) as exc:
        raise UserError(f"{p}: cannot read masks ({exc})") from None
    arr = np.asarray(arr)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise UserError(f"{p}: expected masks of shape (T, H, W), got {tuple(arr.shape)}")
    return arr


def areas_from_masks(
    folder: str | Path, names: list[str] | None = None, threshold: float | None = None, progress: bool = True,
    frames: Mapping[str, Any] | None = None, problems: list[Problem] | None = None,
) -> tuple[AreaSignals, list[str]]:
    """Area curves of the videos ``names`` (default: every mask file) from a folder of mask files.

    Args:
        frames: video key -> its declared NumberOfFrames (FileList.csv): a mask stack must hold as many frames
            (within ``FRAME_COUNT_TOLERANCE``), as `data check` requires of the video itself.
        problems: collect unreadable or mismatched mask files here and leave them out (``--skip-bad``); None:
            the first one is a UserError naming it.

    Returns:
        The curves of the videos that have a (usable) mask file, and the names that have none.
    """

    folder = Path(folder)
    keys = list_mask_videos(folder) if names is None else [video_key(n) for n in names]
    curves: dict[str, np.ndarray] = {}
    missing: list[str] = []
    items = track(keys, "mask areas") if progress else keys
    for key in items:
        path = find_mask_file(folder, key)
        if path is None:
            missing.append(key)
            continue
        try:
            masks = load_mask_video(path)
            short = frame_count_problem(len(masks), (frames or {}).get(key), verb="holds")
            if short:
                raise UserError(f"{path}: {short}")
        except UserError as exc:
            if problems is None:
                raise
            problems.append(Problem(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        curves[key] = mask_areas(masks, threshold)
    return AreaSignals.from_curves(curves), missing


# ----------------------------------------------------------------------------- reference frames
def read_reference_csv(path: str | Path) -> dict[str, tuple[int, int]]:
    """``{video key: (ED, ES)}`` from a CSV with columns FileName, ED, ES (both empty: no reference)."""
    p, df = _read_columns(path, "--reference", REFERENCE_COLUMNS)
    out: dict[str, tuple[int, int]] = {}
    ed = pd.to_numeric(df["ED"], errors="coerce")
    es = pd.to_numeric(df["ES"], errors="coerce")
    for i, (name, a, b, raw_a, raw_b) in enumerate(zip(df["FileName"], ed, es, df["ED"], df["ES"], strict=True)):
        if pd.isna(raw_a) and pd.isna(raw_b):
            continue
        if pd.isna(a) or pd.isna(b) or a != int(a) or b != int(b) or a < 0 or b < 0 or pd.isna(name):
            raise UserError(f"--reference {p}: row {i + 2}: ED and ES must both be integers >= 0 (or both empty)")
        out[video_key(name)] = (int(a), int(b))
    return out


def references_from_tracings(root: str | Path) -> dict[str, tuple[int, int]]:
    """``{video key: (ED, ES)}`` from EchoNet-Dynamic VolumeTracings.csv (ED = the larger traced area)."""

    out: dict[str, tuple[int, int]] = {}
    for name, tracing in read_tracings(root).items():
        ref = reference_frames(tracing)
        if ref is not None:
            out[video_key(name)] = (int(ref[0]), int(ref[1]))
    return out
