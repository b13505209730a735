"""Run a teacher (or any frame-wise LV segmenter) over every frame of EchoNet videos.

Videos are decoded on a background thread while the model works on the previous one, so a GPU is not left
waiting on the AVI decoder. Per video the teacher gives LV probabilities ``(T, H, W)``; from them this module
derives area curves for aFD (pixels with probability above a threshold, 0.5 by default) and, optionally, writes
the probabilities as ``<save_dir>/<FileName>.npz`` (array ``masks``, uint8 ``round(255 * p)``) so that
``eval afd --masks`` and ``eval echoclip --masks`` can reuse them: their default threshold for uint8 masks,
127, keeps the pixels with ``p >= 0.5`` (``p > 0.5`` for the areas computed here: they differ only at exactly 0.5).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from echoseg.core.console import track
from echoseg.core.data.echonet import video_path
from echoseg.core.data.video import load_video
from echoseg.core.io import atomic_path
from echoseg.core.metrics.areas import AreaSignals, video_key

MASK_KEY = "masks"


def to_uint8(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 0..255 (``round(255 * p)``)."""
    return np.clip(np.rint(np.asarray(probabilities, np.float32) * 255.0), 0, 255).astype(np.uint8)


def save_mask_npz(path: str | Path, masks: np.ndarray) -> None:
    """Atomically write ``(T, H, W)`` masks as a compressed npz with one array named ``masks``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **{MASK_KEY: np.asarray(masks)})


def _load(data_root: Path, key: str) -> np.ndarray | None:

    path = video_path(data_root, key)
    return load_video(path) if path.is_file() else None


def iter_video_probabilities(
    teacher,
    data_root: str | Path,
    names: list[str],
    *,
    batch_size: int = 32,
    save_dir: str | Path | None = None,
    progress: bool = True,
) -> Iterator[tuple[str, np.ndarray | None, np.ndarray | None]]:
    """Yield ``(key, frames, probabilities)`` per video of ``names`` (``None, None`` when ``Videos/<key>.avi``
    is missing), in order. With ``save_dir``, each video's probabilities are written there as uint8 npz.

    Args:
        teacher: an object with ``predict(frames (T, H, W) uint8, batch_size) -> (T, H, W) float32``.
        data_root: EchoNet-Dynamic folder (``Videos/<FileName>.avi``).
        names: FileNames (with or without ``.avi``).
    """

    root = Path(data_root)
    keys = [video_key(n) for n in names]
    out_dir = Path(save_dir) if save_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not keys:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_load, root, keys[0])
        items = track(range(len(keys)), "predicting LV masks") if progress else range(len(keys))
        for i in items:
            frames = pending.result()
            if i + 1 < len(keys):
                pending = pool.submit(_load, root, keys[i + 1])
            if frames is None:
                yield keys[i], None, None
                continue
            probs = teacher.predict(frames, batch_size=batch_size)
            if out_dir is not None:
                save_mask_npz(out_dir / f"{keys[i]}.npz", to_uint8(probs))
            yield keys[i], frames, probs


def predict_videos(teacher, data_root: str | Path, names: list[str], **options: Any) -> dict[str, np.ndarray]:
    """``{key: (T, H, W) float32 LV probabilities}`` of the videos of ``names`` that exist (small sets only:
    everything stays in memory; use :func:`iter_video_probabilities` or :func:`model_areas` for a data set).

    ``options``: the keyword options of :func:`iter_video_probabilities` (``batch_size``, ``save_dir``, ``progress``).
    """
    return {k: p for k, _, p in iter_video_probabilities(teacher, data_root, names, **options) if p is not None}


def model_areas(
    teacher,
    data_root: str | Path,
    names: list[str],
    *,
    threshold: float = 0.5,
    batch_size: int = 32,
    save_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[AreaSignals, list[str]]:
    """Per-frame LV areas (pixels with probability > ``threshold``) of every video of ``names``.

    Returns:
        The area curves of the videos found, and the keys of those without a video file.
    """
    curves: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for key, _, probs in iter_video_probabilities(teacher, data_root, names, batch_size=batch_size,
                                                  save_dir=save_dir, progress=progress):
        if probs is None:
            missing.append(key)
        else:
            curves[key] = (probs > threshold).reshape(len(probs), -1).sum(axis=1).astype(np.float64)
    return AreaSignals.from_curves(curves), missing


def teacher_info(teacher, height: int | None = None, width: int | None = None) -> dict[str, Any]:
    """Teacher details for a summary: name, parameters, its ``info`` and, given a frame size, GFLOPs per frame."""
    out: dict[str, Any] = {"name": teacher.name, "parameters": int(teacher.num_parameters())}
    out.update(getattr(teacher, "info", {}) or {})
    if height and width:
        out["gflops_per_frame"] = float(teacher.gflops(int(height), int(width)))
        out["gflops_frame_size"] = [int(height), int(width)]
    return out
