"""The pseudo-label cache: a teacher's soft LV masks for every frame of every video, written once, reused.

Layout (one folder per teacher and data set)::

    <cache>/<key>/cache.json            teacher spec, checkpoint identity, data folder (written when created)
    <cache>/<key>/frames/<name>.npy     (T, H, W) uint8 grey frames of the video (decoded once, memory-mapped)
    <cache>/<key>/labels/<name>.npy     (T, H, W) uint8 teacher probabilities, round(255 * p)
    <cache>/<key>/done/<name>.json      written last: the video's size and mtime, frames, shape

``key`` hashes the teacher spec, the content (sha256) of its weights (plus ``model.json`` of a ``run:`` teacher)
and the resolved data folder, so another teacher, retrained weights or another data set get a new folder. A video
counts as done only when its ``done/<name>.json`` exists and records the sha256 of the video file as it is now;
every file is written atomically, so an interrupted labelling resumes at the first unfinished video and a changed
or repaired video is relabelled.

Where: ``$ECHOSEG_CACHE/pseudo/<key>/`` (``~/.cache/echoseg/pseudo`` without the variable), never inside the data
folder, so read-only data works and a failed run leaves nothing there. Frames are stored beside the labels so
training reads random windows by memory-mapping instead of decoding AVI files at every step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echoseg.core.console import track
from echoseg.core.data.echonet import normalize_name, video_path
from echoseg.core.data.hashing import cache_root, file_digest
from echoseg.core.data.video import load_video
from echoseg.core.io import atomic_path, read_json, write_json
from echoseg.core.models.teachers import TeacherSpec

PSEUDO_FORMAT = 2


def _file_identity(path: Path) -> dict[str, Any]:
    return {"path": str(path.resolve()), "sha256": file_digest(path)}


def teacher_identity(spec: str) -> dict[str, Any]:
    """What identifies a teacher's weights: spec plus path and content hash of the checkpoint file(s)."""
    parsed = TeacherSpec.parse(spec)
    ident: dict[str, Any] = {"spec": str(spec)}
    for f in parsed.weight_files():
        if f.is_file():
            ident["checkpoint" if parsed.kind == "deeplabv3" else f.name] = _file_identity(f)
    return ident


def cache_key(spec: str, data: str | Path, extra: dict[str, Any] | None = None) -> str:
    """Hex key of (teacher identity, resolved data folder, format, extra options)."""
    payload = {"teacher": teacher_identity(spec), "data": str(Path(data).resolve()), "format": PSEUDO_FORMAT,
               "extra": extra or {}}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"{TeacherSpec.parse(spec).kind}-{digest}"


def cache_folder(spec: str, data: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """``$ECHOSEG_CACHE/pseudo/<key>`` (see the module docstring)."""
    return cache_root() / "pseudo" / cache_key(spec, data, extra)


class PseudoLabels:
    """The cached frames and teacher labels of the videos of one data folder."""

    def __init__(self, folder: str | Path, data: str | Path) -> None:
        self.folder = Path(folder)
        self.data = Path(data)

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        key = normalize_name(name)
        return (self.folder / "frames" / f"{key}.npy", self.folder / "labels" / f"{key}.npy",
                self.folder / "done" / f"{key}.json")

    def is_done(self, name: str) -> bool:
        """Whether ``name`` is labelled and its video file is unchanged since."""
        frames, labels, done = self._paths(name)
        if not (done.is_file() and frames.is_file() and labels.is_file()):
            return False
        try:
            record = read_json(done)
        except ValueError:
            return False
        src = video_path(self.data, name)
        if not src.is_file():
            return True  # the cache still holds the frames; nothing to compare against
        return record.get("video_sha256") == file_digest(src)

    def frames(self, name: str, mmap: bool = True) -> np.ndarray:
        """(T, H, W) uint8 frames (memory-mapped by default)."""
        return np.load(self._paths(name)[0], mmap_mode="r" if mmap else None)

    def labels(self, name: str, mmap: bool = True) -> np.ndarray:
        """(T, H, W) uint8 teacher probabilities x 255 (memory-mapped by default)."""
        return np.load(self._paths(name)[1], mmap_mode="r" if mmap else None)

    def num_frames(self, name: str) -> int:
        """Number of frames of a cached video."""
        return int(read_json(self._paths(name)[2])["frames"])

    def write(self, name: str, frames: np.ndarray, probs: np.ndarray) -> None:
        """Atomically store a video's frames and probabilities; the ``done`` record goes last."""
        if probs.shape != frames.shape:
            raise ValueError(f"{name}: teacher output {probs.shape} does not match frames {frames.shape}")
        fpath, lpath, done = self._paths(name)
        labels = np.clip(np.round(np.asarray(probs, np.float32) * 255.0), 0, 255).astype(np.uint8)
        for path, arr in ((fpath, frames), (lpath, labels)):
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr, dtype=np.uint8))
        src = video_path(self.data, name)
        write_json(done, {"video": str(src.resolve()), "video_sha256": file_digest(src),
                          "frames": int(frames.shape[0]), "height": int(frames.shape[1]),
                          "width": int(frames.shape[2])})


def build_pseudo_labels(
    teacher,
    spec: str,
    data: str | Path,
    names: Sequence[str],
    *,
    batch_size: int = 32,
    folder: str | Path | None = None,
    progress: bool = True,
    log=None,
    shard: tuple[int, int] = (0, 1),
) -> PseudoLabels:
    """Label every frame of ``names`` (videos of ``data``) with ``teacher``, skipping videos already cached.

    Args:
        teacher: an object with ``predict(frames (T, H, W) uint8, batch_size) -> (T, H, W) float32``.
        spec: the teacher spec (part of the cache key).
        data: the EchoNet-layout folder holding ``Videos/<name>.avi``.
        names: FileNames to label.
        batch_size: frames per teacher forward pass.
        folder: the cache folder (default :func:`cache_folder`).
        progress: show a progress bar.
        log: a callable taking one message (e.g. ``run.log``).
        shard: (index, count) under a multi-process launch: this process labels the uncached videos among
            ``names[index::count]``; the caller waits for the other processes before reading the cache.
    """

    folder = Path(folder) if folder is not None else cache_folder(spec, data)
    cache = PseudoLabels(folder, data)
    index, count = shard
    if index == 0 and not (folder / "cache.json").is_file():
        write_json(folder / "cache.json", {"format": PSEUDO_FORMAT, "teacher": teacher_identity(spec),
                                           "data": str(Path(data).resolve())})
    todo = [n for n in names if not cache.is_done(n)]
    if log is not None:
        log(f"pseudo-labels in {folder}: {len(names) - len(todo)} of {len(names)} video(s) cached, "
            f"{len(todo)} to label")
    # Shard the full list, not ``todo``: another process may already have finished a video when this one looks.
    pending = set(todo)
    mine = [n for n in list(names)[index::count] if n in pending]
    items = track(mine, "teacher labelling") if progress else mine
    for name in items:
        frames = load_video(video_path(data, name))
        probs = teacher.predict(frames, batch_size=batch_size)
        cache.write(name, frames, probs)
    return cache
