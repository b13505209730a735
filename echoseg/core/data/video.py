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

CODECS = ("FFV1", "MJPG")  # preferred first: lossless, then always available


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


def load_video(path: str | Path, rgb: bool = False) -> np.ndarray:
    """Read every frame of a video as grey levels (or, with ``rgb``, as R, G, B levels).

    Args:
        path: an AVI (or any container/codec OpenCV's FFmpeg backend decodes).
        rgb: keep three channels in R, G, B order, as EchoNet-Dynamic's ``echonet.utils.loadvideo`` reads them
            (OpenCV's BGR frames converted to RGB; a one-channel video is repeated into three).

    Returns:
        (T, H, W) uint8 array, or (T, H, W, 3) with ``rgb``.

    Raises:
        UserError: the file is missing, cannot be opened, or yields no frame.
    """
    p = Path(path)
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
    return np.stack(frames).astype(np.uint8, copy=False)


def video_fps(path: str | Path) -> float | None:
    """The frame rate recorded in a video's container, or None when it records none."""
    cap = cv2.VideoCapture(str(path))
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
