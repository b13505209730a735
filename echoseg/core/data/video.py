"""Reading and writing grey-level AVI videos with OpenCV (EchoNet-Dynamic layout: ``Videos/*.avi``).

Videos are written losslessly with the FFV1 codec in an AVI container (OpenCV's FFmpeg backend writes and
reads it back bit-exact); when that backend cannot open an FFV1 writer, Motion-JPEG (built into OpenCV, lossy
but always available) is used instead. Frames are read as (T, H, W) uint8 grey levels; colour videos (the
published EchoNet-Dynamic AVIs are 3-channel) are converted with OpenCV's BGR-to-grey weights, which leave
grey content (equal channels) unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Quieten FFmpeg's own stderr chatter on damaged files; our errors say what went wrong.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2  # noqa: E402

from echoseg.core.errors import UserError  # noqa: E402
from echoseg.core.io import atomic_path  # noqa: E402
from echoseg.core.paths import check_native_path  # noqa: E402

CODECS = ("FFV1", "MJPG")  # preferred first: lossless, then always available
# Decoded frame counts may differ from the declared NumberOfFrames by this much: some encoders drop or duplicate a
# trailing frame. Larger differences mean a damaged or truncated video.
FRAME_COUNT_TOLERANCE = 1


def frame_count_problem(count: int, declared, verb: str = "decodes",
                        tolerance: int = FRAME_COUNT_TOLERANCE) -> str | None:
    """Why ``count`` frames do not match the declared ``NumberOfFrames`` (None when they do, within ``tolerance``,
    or when nothing is declared)."""
    try:
        expected = float(declared)
    except (TypeError, ValueError):
        return None
    if expected != expected:  # NaN: FileList.csv declares no count
        return None
    if abs(int(count) - int(expected)) > tolerance:
        return f"{verb} {int(count)} frames, FileList.csv declares NumberOfFrames={int(expected)}"
    return None


def _to_grey(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[..., 0]
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2 or frame.shape[2] == 1:
        return np.repeat(frame.reshape(frame.shape[0], frame.shape[1], 1), 3, axis=2)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def load_video(path: str | Path, rgb: bool = False, expected_frames: int | float | None = None) -> np.ndarray:
    """Read every frame of a video as grey levels (or, with ``rgb``, as R, G, B levels).

    Args:
        path: an AVI (or any container/codec OpenCV's FFmpeg backend decodes).
        rgb: keep three channels in R, G, B order, as EchoNet-Dynamic's ``echonet.utils.loadvideo`` reads them
            (OpenCV's BGR frames converted to RGB; a one-channel video is repeated into three).
        expected_frames: the frame count the video must decode to, within ``FRAME_COUNT_TOLERANCE`` (e.g.
            FileList.csv's NumberOfFrames); None or NaN: any count.

    Returns:
        (T, H, W) uint8 array, or (T, H, W, 3) with ``rgb``.

    Raises:
        UserError: the file is missing, cannot be opened, yields no frame or another count than
            ``expected_frames``, or its path is not UTF-8.
    """
    p = Path(check_native_path(path, "video"))  # before OpenCV, which crashes on a non-UTF-8 path
    if not p.is_file():
        raise UserError(f"{p}: video not found")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise UserError(f"{p}: cannot open video (not a video file, damaged, or an unsupported codec)")
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            frames.append(_to_rgb(frame) if rgb else _to_grey(frame))
    finally:
        cap.release()
    if not frames:
        raise UserError(f"{p}: video holds no decodable frame (damaged or empty)")
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise UserError(f"{p}: frames differ in size {sorted(shapes)}")
    short = frame_count_problem(len(frames), expected_frames)
    if short:
        raise UserError(f"{p}: {short}")
    return np.stack(frames).astype(np.uint8, copy=False)


def video_fps(path: str | Path) -> float | None:
    """The frame rate recorded in a video's container, or None when it records none."""
    cap = cv2.VideoCapture(check_native_path(path, "video"))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if fps > 0 else None


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> str:
    """Atomically write grey frames as an AVI (temporary file in the same folder, then renamed).

    Args:
        path: destination, normally ``.../Videos/<name>.avi``.
        frames: (T, H, W) uint8 grey frames.
        fps: frame rate stored in the container (> 0).

    Returns:
        The FourCC of the codec used (``FFV1`` when available, else ``MJPG``).
    """
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be (T, H, W) with T >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    # before OpenCV, which crashes on a non-UTF-8 path; absolute, as the temporary file OpenCV opens is
    check_native_path(os.path.abspath(path), "video")
    _, height, width = frames.shape
    with atomic_path(path) as tmp:  # tmp ends in .avi, so OpenCV picks the AVI container
        for fourcc in CODECS:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height),
                                     isColor=False)
            if writer.isOpened():
                break
            writer.release()
        else:
            raise OSError(f"OpenCV cannot write AVI video with any of {', '.join(CODECS)} to {path}")
        try:
            for frame in frames:
                writer.write(np.ascontiguousarray(frame))
        finally:
            writer.release()
    return fourcc
