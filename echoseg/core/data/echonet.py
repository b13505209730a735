"""EchoNet-Dynamic in its published layout: ``FileList.csv``, ``VolumeTracings.csv``, ``Videos/*.avi``.

Conventions used throughout echoseg:

- ``FileName`` is normalised **without** the ``.avi`` extension (the published FileList has none, the published
  VolumeTracings has it; both spellings are accepted in both files). The video is ``Videos/<FileName>.avi``.
- ``Split`` is upper-cased (TRAIN, VAL, TEST).
- Tracing coordinates are pixels of the video itself (112x112 in EchoNet-Dynamic); frames are 0-based.
- For each traced frame the first row is the long axis; the other rows are the disks (X1, Y1) - (X2, Y2). The
  LV polygon runs through X1/Y1 of rows 2.. then X2/Y2 of rows 2.. reversed (as EchoNet-Dynamic's own code).
- ED and ES of the traced frames are decided by traced area (larger = ED), never by row order.
- Optional FileList.csv columns ``PhysicalDeltaY`` and ``PhysicalDeltaX`` give a video's pixel size in cm per
  pixel of its frames (DICOM's ultrasound-region calibration, as ``data import-dicom`` writes it, rescaled to the
  written frames; the toy data sets write theirs); empty when unknown. EchoNet-Dynamic itself has none.
- A video must decode to its ``NumberOfFrames`` within ``FRAME_COUNT_TOLERANCE`` (1) frame (some encoders drop or
  duplicate a trailing frame) and to its ``FrameHeight`` x ``FrameWidth``; its traced frames must lie inside it.
  ``check_echonet`` (``data check``) lists every video that does not; the stages read videos with the same checks
  (:func:`load_listed_video`, :func:`screen_videos`) and stop at the first bad one, naming it, or with
  ``--skip-bad`` leave it out and list it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from echoseg.core.console import track
from echoseg.core.data.manifest import Problem
from echoseg.core.data.video import frame_count_problem, load_video
from echoseg.core.errors import UserError

FILELIST_COLUMNS = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"]
REQUIRED_FILELIST_COLUMNS = ("FileName", "Split")
NUMERIC_COLUMNS = ("EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames")
TRACING_COLUMNS = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
SPACING_COLUMNS = ["PhysicalDeltaY", "PhysicalDeltaX"]  # optional: cm per pixel of the frames (dy, dx)
SPLIT_NAMES = ("TRAIN", "VAL", "TEST")
STATS_VIDEOS = 128  # videos EchoNet-Dynamic's get_mean_and_std samples by default


def normalize_name(name: str) -> str:
    """A FileName without surrounding blanks and without a trailing ``.avi`` (any case)."""
    name = str(name).strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def video_path(root: str | Path, name: str) -> Path:
    """Path of a video in the layout: ``<root>/Videos/<name>.avi``."""
    return Path(root) / "Videos" / f"{normalize_name(name)}.avi"


def detect_echonet(root: str | Path) -> bool:
    """Whether ``root`` holds an EchoNet-Dynamic layout (``FileList.csv`` and a ``Videos/`` folder)."""
    root = Path(root)
    return (root / "FileList.csv").is_file() and (root / "Videos").is_dir()


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        # utf-8-sig drops a byte-order mark; the C parser accepts LF and CRLF line ends.
        df = pd.read_csv(path, encoding="utf-8-sig", skipinitialspace=True, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def read_filelist(root: str | Path) -> pd.DataFrame:
    """Read ``FileList.csv`` with normalised FileName (no ``.avi``) and upper-case Split.

    FileName and Split are required; other EchoNet columns missing from the file are added as NaN
    (``check_echonet`` reports them). Numeric columns are parsed as numbers (unparseable values become NaN).

    Raises:
        UserError: the file is missing or unreadable, lacks a required column, or repeats a FileName.
    """
    path = Path(root) / "FileList.csv"
    df = _read_csv(path, dtype={"FileName": str, "Split": str})
    for col in REQUIRED_FILELIST_COLUMNS:
        if col not in df.columns:
            raise UserError(f"{path}: missing column {col!r} (columns are {', '.join(df.columns)})")
    df = df.dropna(subset=["FileName"]).copy()
    df["FileName"] = df["FileName"].map(normalize_name)
    df["Split"] = df["Split"].fillna("").astype(str).str.strip().str.upper()
    for col in NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    for col in SPACING_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    dup = df["FileName"].duplicated()
    if dup.any():
        raise UserError(f"{path}: FileName {df.loc[dup, 'FileName'].iloc[0]!r} listed more than once")
    extras = [c for c in df.columns if c not in FILELIST_COLUMNS]
    return df[FILELIST_COLUMNS + extras].reset_index(drop=True)


def read_tracings(root: str | Path) -> dict[str, dict[int, np.ndarray]]:
    """Read ``VolumeTracings.csv``: per video (normalised FileName), per frame, its (N, 4) X1, Y1, X2, Y2 rows.

    Rows keep their file order within a frame. A missing file means no tracings (empty dict).

    Raises:
        UserError: the file is unreadable, its columns are not exactly FileName, X1, Y1, X2, Y2, Frame, or a
            coordinate or frame is not a number.
    """
    path = Path(root) / "VolumeTracings.csv"
    if not path.is_file():
        return {}
    df = _read_csv(path, dtype={"FileName": str})
    if list(df.columns) != TRACING_COLUMNS:
        raise UserError(f"{path}: columns must be exactly {', '.join(TRACING_COLUMNS)}, got {', '.join(df.columns)}")
    if df.empty:
        return {}
    coords = df[["X1", "Y1", "X2", "Y2", "Frame"]].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1) | df["FileName"].isna()
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # 1-based, after the header
        raise UserError(f"{path}: line {line} has an empty or non-numeric value")
    frames = coords["Frame"].to_numpy()
    if not np.all(frames == np.round(frames)):
        raise UserError(f"{path}: Frame values must be integers")
    names = df["FileName"].map(normalize_name).to_numpy()
    xy = coords[["X1", "Y1", "X2", "Y2"]].to_numpy(dtype=np.float64)
    out: dict[str, dict[int, np.ndarray]] = {}
    keys = pd.DataFrame({"n": names, "f": frames.astype(np.int64)})
    for (name, frame), idx in keys.groupby(["n", "f"], sort=False).indices.items():
        out.setdefault(name, {})[int(frame)] = xy[np.sort(idx)]
    return out


def pixel_spacing_cm(row: Mapping) -> tuple[float, float] | None:
    """(dy, dx) in cm per pixel from a FileList.csv row's PhysicalDeltaY/X, or None when either is missing, empty,
    or not a positive number."""
    values = [pd.to_numeric(row.get(c), errors="coerce") if c in row else np.nan for c in SPACING_COLUMNS]
    if all(pd.notna(v) and np.isfinite(v) and v > 0 for v in values):
        return float(values[0]), float(values[1])
    return None


def tracing_polygon(rows: np.ndarray) -> np.ndarray:
    """The LV polygon of one traced frame: X1/Y1 of rows 2.. then X2/Y2 of rows 2.. reversed.

    Args:
        rows: (N, 4) X1, Y1, X2, Y2 rows, the first being the long axis.

    Returns:
        (2 * (N - 1), 2) float array of (x, y) vertices.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 4 or rows.shape[0] < 3:
        raise ValueError(f"a tracing needs >= 3 rows of X1, Y1, X2, Y2 (long axis + 2 disks), got {rows.shape}")
    disks = rows[1:]
    return np.concatenate([disks[:, 0:2], disks[::-1, 2:4]], axis=0)


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a simple polygon (shoelace formula), in squared coordinate units."""
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def tracing_area(rows: np.ndarray) -> float:
    """Area in pixels of the polygon of one traced frame."""
    return polygon_area(tracing_polygon(rows))


def tracing_volume(rows: np.ndarray, cm_per_pixel: float = 1.0) -> float:
    """LV volume of one traced frame by the single-plane method of disks (Simpson's rule).

    V = sum_i pi * (d_i / 2)^2 * L / n, with d_i the length of disk row i, L the long-axis length (row 1) and n
    the number of disks. In mL (cm^3) when ``cm_per_pixel`` is the pixel size in cm.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 4 or rows.shape[0] < 2:
        raise ValueError(f"a tracing needs a long axis and >= 1 disk row, got {rows.shape}")
    lengths = np.hypot(rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1]) * cm_per_pixel
    axis, diameters = lengths[0], lengths[1:]
    return float(np.sum(math.pi * (diameters / 2.0) ** 2) * axis / len(diameters))


def tracing_mask(rows: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise the LV polygon of one traced frame into a (height, width) uint8 mask of 0/1."""
    poly = tracing_polygon(rows)
    mask = np.zeros((int(height), int(width)), np.uint8)
    shift = 4  # sub-pixel vertices: cv2 takes fixed-point coordinates with 4 fractional bits
    pts = np.round(poly * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    return mask


def reference_frames(tracings_for_video: dict[int, np.ndarray]) -> tuple[int, int] | None:
    """(ED, ES) frame indices of one video's traced frames: largest traced area = ED, smallest = ES.

    Returns None when fewer than two frames carry a usable (>= 3 rows) tracing. Ties go to the lower frame.
    """
    areas = {}
    for frame, rows in tracings_for_video.items():
        try:
            areas[int(frame)] = tracing_area(rows)
        except ValueError:
            continue
    if len(areas) < 2:
        return None
    order = sorted(areas, key=lambda f: (-areas[f], f))
    ed = order[0]
    es = min((f for f in areas if f != ed), key=lambda f: (areas[f], f))
    return ed, es


def read_echonet(root: str | Path, split: str = "all") -> pd.DataFrame:
    """One row per video: FileName, path, the FileList columns, ed_frame, es_frame (NaN when untraced), traced.

    Args:
        root: the data set folder (``FileList.csv``, ``VolumeTracings.csv``, ``Videos/``).
        split: ``all`` or a split name (case-insensitive: train, val, test, ...).

    Videos are not decoded here (``check_echonet`` does that).
    """
    root = Path(root)
    filelist = read_filelist(root)
    tracings = read_tracings(root)
    refs = {name: reference_frames(t) for name, t in tracings.items()}
    df = filelist.copy()
    df.insert(1, "path", [str(video_path(root, n).resolve()) for n in df["FileName"]])
    pairs = [refs.get(n) for n in df["FileName"]]
    df["ed_frame"] = [float(p[0]) if p else np.nan for p in pairs]
    df["es_frame"] = [float(p[1]) if p else np.nan for p in pairs]
    df["traced"] = df["ed_frame"].notna()
    if split.lower() != "all":
        df = df[df["Split"] == split.strip().upper()]
        if df.empty:
            found = ", ".join(sorted(filelist["Split"].unique()))
            raise UserError(f"{root / 'FileList.csv'}: no video in split {split!r} (splits: {found})")
    return df.reset_index(drop=True)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel (R, G, B) mean and std of video pixels on 0..255 levels, and what they were computed on."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    split: str
    videos: int
    frames: int
    seed: int

    def to_dict(self) -> dict:
        """JSON-serialisable form (for run records)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def echonet_channel_stats(root: str | Path, split: str | None = "TRAIN", max_videos: int | None = STATS_VIDEOS,
                          seed: int = 0) -> ChannelStats:
    """Per-channel mean and std of an EchoNet-Dynamic folder's videos on 0..255 levels.

    As EchoNet-Dynamic's ``echonet.utils.get_mean_and_std(echonet.datasets.Echo(split="train"))``: a random
    sample of ``max_videos`` videos (all of them when there are no more; drawn without replacement, seeded by
    ``seed``), read as R, G, B (``echonet.utils.loadvideo``), each channel's mean and population std
    (``sqrt(E[x^2] - E[x]^2)``) over every pixel of the sample. One difference: EchoNet-Dynamic's dataset hands
    ``get_mean_and_std`` one random 16-frame clip (every 2nd frame) per sampled video; here every frame of each
    sampled video counts, so the result does not depend on clip draws. Sums are exact (per-level histograms).

    Args:
        root: the data set folder.
        split: the FileList split to sample (``TRAIN`` as EchoNet-Dynamic, ``all``, ...); None: TRAIN when the
            FileList lists TRAIN videos, else every video.
        max_videos: sample size (None: every video of the split).
        seed: seed of the sample.

    Raises:
        UserError: an unreadable folder, an empty split, or a video that does not decode.
    """
    if max_videos is not None and max_videos < 1:
        raise UserError(f"max_videos must be >= 1 or None, got {max_videos}")
    if split is None:
        listed = read_filelist(root)["Split"]
        split = "TRAIN" if (listed == "TRAIN").any() else "all"
    table = read_echonet(root, split)
    if table.empty:
        raise UserError(f"{Path(root) / 'FileList.csv'}: no video listed")
    index = np.arange(len(table))
    if max_videos is not None and len(table) > max_videos:
        index = np.sort(np.random.default_rng(seed).choice(len(table), max_videos, replace=False))
    hist = np.zeros((3, 256), np.int64)
    frames = 0
    for path in track([table["path"].iloc[i] for i in index], "video statistics"):
        video = load_video(path, rgb=True)
        frames += len(video)
        for c in range(3):
            hist[c] += np.bincount(video[..., c].ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64)
    n = hist.sum(axis=1).astype(np.float64)
    mean = hist @ levels / n
    std = np.sqrt(np.einsum("cl,cl->c", hist, (levels[None, :] - mean[:, None]) ** 2) / n)
    return ChannelStats(mean=tuple(float(m) for m in mean), std=tuple(float(v) for v in std),  # type: ignore[arg-type]
                        split=split.upper() if split.lower() != "all" else "all", videos=len(index),
                        frames=frames, seed=seed)


def _declared(row: Mapping, column: str) -> int | None:
    value = pd.to_numeric(row.get(column), errors="coerce") if column in row else np.nan
    return int(value) if pd.notna(value) else None


def listed_shape_problem(row: Mapping, shape: tuple[int, ...]) -> str | None:
    """Why a video of ``shape`` (T, H, W[, C]) does not match its FileList.csv row (None when it does)."""
    t, h, w = (int(v) for v in shape[:3])
    short = frame_count_problem(t, _declared(row, "NumberOfFrames"))
    if short:
        return short
    for col, got in (("FrameHeight", h), ("FrameWidth", w)):
        declared = _declared(row, col)
        if declared is not None and declared != got:
            return f"frames are {h}x{w}, FileList.csv declares {col}={declared}"
    return None


def load_listed_video(row: Mapping, rgb: bool = False) -> np.ndarray:
    """Decode the video of a :func:`read_echonet` row (``path`` and the FileList.csv columns) and check it against
    the row: NumberOfFrames (within ``FRAME_COUNT_TOLERANCE``), FrameHeight and FrameWidth.

    Raises:
        UserError: the video is missing or undecodable, or does not match its row; the message names the file.
    """
    frames = load_video(row["path"], rgb=rgb, expected_frames=_declared(row, "NumberOfFrames"))
    reason = listed_shape_problem(row, frames.shape)
    if reason:
        raise UserError(f"{row['path']}: {reason}")
    return frames


def tracing_problems(root: str | Path, name: str, frames: dict[int, np.ndarray], count: int | None) -> list[Problem]:
    """Problems of one video's tracings: a traced frame with fewer than 3 rows, or outside the video's ``count``
    frames (not checked when ``count`` is None)."""
    where = str(Path(root) / "VolumeTracings.csv")
    out = []
    for frame, rows in frames.items():
        if len(rows) < 3:
            out.append(Problem(where, f"{name} frame {frame}: only {len(rows)} row(s)"))
        elif count is not None and not 0 <= frame < count:
            out.append(Problem(where, f"{name} frame {frame} outside the video's {count} frames"))
    return out


def video_problems(row: Mapping, traced: dict[int, np.ndarray] | None = None, root: str | Path | None = None,
                   shape: tuple[int, ...] | None = None) -> tuple[int | None, list[Problem]]:
    """(decoded frame count, problems) of one video of a :func:`read_echonet` row: what ``data check`` reports and
    :func:`screen_videos` refuses.

    Args:
        row: the video's row (``path``, ``FileName`` and the FileList.csv columns).
        traced: its tracings (frame -> rows), checked against the decoded frame count.
        root: the data set folder (names VolumeTracings.csv in tracing problems; default: ``path``'s grandparent).
        shape: the video's (T, H, W) when it was decoded before (e.g. cached): checked without decoding again.
    """
    folder = Path(root) if root is not None else Path(row["path"]).parent.parent
    video: list[Problem] = []
    if shape is None:
        try:
            shape = load_listed_video(row).shape
        except UserError as exc:
            msg = str(exc)
            prefix = f"{row['path']}: "
            video.append(Problem(str(row["path"]), msg[len(prefix):] if msg.startswith(prefix) else msg))
    else:
        reason = listed_shape_problem(row, shape)
        if reason:
            video.append(Problem(str(row["path"]), reason))
    count = int(shape[0]) if shape is not None and not video else None
    return count, video + tracing_problems(folder, str(row["FileName"]), traced or {}, count)


def screen_videos(table: pd.DataFrame, *, skip_bad: bool = False, tracings: dict | None = None,
                  root: str | Path | None = None, shapes: Mapping[str, tuple[int, ...]] | None = None,
                  missing_ok: bool = True, progress: bool = True, label: str = "checking videos"
                  ) -> tuple[pd.DataFrame, list[Problem]]:
    """Check the videos of ``table`` (rows of :func:`read_echonet`) as ``data check`` does, before a stage uses
    them: each must decode, match its FileList.csv row and hold its traced frames.

    Args:
        table: the rows to check.
        skip_bad: leave bad videos out (and return their problems) instead of stopping at the first.
        tracings: :func:`read_tracings` of the folder (None: tracings are not checked).
        root: the data set folder (for messages).
        shapes: FileName -> (T, H, W) of videos decoded before (e.g. a pseudo-label cache): not decoded again.
        missing_ok: a missing video file is not a problem here (the caller lists it); else it is one.

    Returns:
        The rows of the usable videos and the problems of the others (empty unless ``skip_bad``).

    Raises:
        UserError: without ``skip_bad``, the first problem, naming the file.
    """
    problems: list[Problem] = []
    bad: set[str] = set()
    rows = [r for _, r in table.iterrows()
            if not missing_ok or Path(r["path"]).is_file() or str(r["FileName"]) in (shapes or {})]
    for row in track(rows, label) if progress and rows else rows:
        name = str(row["FileName"])
        _, found = video_problems(row, (tracings or {}).get(name), root, (shapes or {}).get(name))
        if found and not skip_bad:
            raise UserError(f"{found[0].path}: {found[0].reason} (--skip-bad leaves damaged videos out)")
        if found:
            problems.extend(found)
            bad.add(name)
    return table[~table["FileName"].astype(str).isin(bad)].reset_index(drop=True), problems


def check_echonet(root: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Validate an EchoNet-Dynamic folder: headers, every video, every tracing.

    Every video is decoded and must match its declared size and frame count (within FRAME_COUNT_TOLERANCE);
    tracings must name listed videos and frames inside them and have >= 3 rows.

    Returns:
        The ``read_echonet`` table restricted to videos without problems, and the problems found.
    """

    root = Path(root)
    problems: list[Problem] = []
    filelist_path, tracings_path = root / "FileList.csv", root / "VolumeTracings.csv"
    try:
        table = read_echonet(root)
    except UserError as exc:
        msg = str(exc)
        where = str(tracings_path) if msg.startswith(str(tracings_path)) else str(filelist_path)
        reason = msg[len(where) + 2:] if msg.startswith(where + ": ") else msg
        empty = pd.DataFrame(columns=["FileName", "path", *FILELIST_COLUMNS[1:], "ed_frame", "es_frame", "traced"])
        return empty, [Problem(where, reason)]
    header = pd.read_csv(filelist_path, nrows=0, encoding="utf-8-sig").columns.str.strip()
    missing = [c for c in FILELIST_COLUMNS if c not in header]
    if missing:
        problems.append(Problem(str(filelist_path), f"missing column(s) {', '.join(missing)}"))
    if not tracings_path.is_file():
        problems.append(Problem(str(tracings_path), "file not found (no video is traced)"))
    bad: set[str] = set()
    tracings = read_tracings(root)
    video_found: list[Problem] = []
    traced_found: list[Problem] = []
    for _, row in track(list(table.iterrows()), "checking videos"):
        _, found = video_problems(row, tracings.get(row["FileName"]), root)
        if found:
            bad.add(row["FileName"])
        video_found += [p for p in found if p.path == row["path"]]
        traced_found += [p for p in found if p.path != row["path"]]
    listed = set(table["FileName"])
    unlisted = [Problem(str(tracings_path), f"tracings for {name!r}, which FileList.csv does not list")
                for name in tracings if name not in listed]
    problems += video_found + unlisted + traced_found
    return table[~table["FileName"].isin(bad)].reset_index(drop=True), problems
