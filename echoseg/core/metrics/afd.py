"""ED/ES frame detection from left-ventricle area curves, scored as aFD (EchoDFKD, Petit et al. 2024).

For one video and one phase the algorithm is:

1. ``area[t]`` = number of mask pixels of frame ``t`` above the threshold (see :mod:`echoseg.core.metrics.areas`);
2. standardise the area signal (minus its mean, over its std; a constant signal becomes all zeros);
3. the *signed* signal is the standardised one for ES and its negation for ED, so that the frame sought
   (smallest area for ES, largest for ED) is always a minimum;
4. mark the frames strictly below the median of the signed signal (if there are none, those ``<=`` it);
5. split the marked frames into maximal runs of consecutive frames;
6. a run's distance to the reference frame is ``min(|start - ref|, |end - ref|)``; keep the run with the
   strictly smallest distance (the first one on ties);
7. the estimate is the frame of the minimum signed value inside that run (first occurrence on ties).

Without a reference frame (e.g. DICOM imports, which have no tracings) there is no run to choose, so the
estimate is the global minimum of the signed signal (first occurrence); such videos are reported apart and
never enter aFD. ``delay = estimate - ref``; aFD is the mean ``|delay|`` over videos.

Everything works on a ``(videos, frames)`` matrix, so videos of equal length are processed in one go.
"""

from __future__ import annotations

import numpy as np

PHASES = ("ED", "ES")
NO_REFERENCE = -1


def standardise(areas: np.ndarray) -> np.ndarray:
    """Row-wise (x - mean) / std of a ``(videos, frames)`` or ``(frames,)`` array; constant rows become zeros."""
    a = np.asarray(areas, dtype=np.float64)
    centred = a - a.mean(axis=-1, keepdims=True)
    std = a.std(axis=-1, keepdims=True)
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, centred / safe, 0.0)


def signed_signal(areas: np.ndarray, phase: str) -> np.ndarray:
    """The standardised area signal for ES, its negation for ED (the sought frame is a minimum)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be ED or ES, got {phase!r}")
    z = standardise(areas)
    return -z if phase == "ED" else z


def marked_frames(signal: np.ndarray) -> np.ndarray:
    """Boolean mask of frames strictly below the row median (rows with none: frames ``<=`` the median)."""
    s = np.atleast_2d(np.asarray(signal, dtype=np.float64))
    med = np.median(s, axis=1, keepdims=True)
    marked = s < med
    empty = ~marked.any(axis=1)
    if empty.any():
        marked[empty] = s[empty] <= med[empty]
    return marked


def _run_bounds(marked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every frame, the first and last frame of the run of marked frames that contains it.

    Values at unmarked frames are meaningless (callers mask them out).
    """
    n, t = marked.shape
    idx = np.broadcast_to(np.arange(t), (n, t))
    prev = np.zeros_like(marked)
    prev[:, 1:] = marked[:, :-1]
    nxt = np.zeros_like(marked)
    nxt[:, :-1] = marked[:, 1:]
    starts = np.where(marked & ~prev, idx, 0)
    start_of = np.maximum.accumulate(starts, axis=1)
    ends = np.where(marked & ~nxt, idx, t - 1)
    end_of = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]
    return start_of, end_of


def estimate_frames(signal: np.ndarray, refs: np.ndarray | None = None) -> np.ndarray:
    """Estimate the phase frame of each row of a signed signal (steps 4 to 7 of the algorithm).

    Args:
        signal: ``(videos, frames)`` signed signal (see :func:`signed_signal`).
        refs: ``(videos,)`` reference frames; ``NO_REFERENCE`` (-1) or ``None`` where there is none, which gives
            the global minimum of the row.
    Returns:
        ``(videos,)`` int64 estimated frames.
    """
    s = np.atleast_2d(np.asarray(signal, dtype=np.float64))
    n, t = s.shape
    if t == 0:
        raise ValueError("cannot estimate a frame from an empty signal")
    refs = np.full(n, NO_REFERENCE, np.int64) if refs is None else np.asarray(refs, dtype=np.int64).reshape(n)
    marked = marked_frames(s)
    start_of, end_of = _run_bounds(marked)
    dist = np.minimum(np.abs(start_of - refs[:, None]), np.abs(end_of - refs[:, None]))
    # Lexicographic (distance, start) key: the strictly closest run wins, the earliest one on ties.
    span = t + 1
    big = np.iinfo(np.int64).max
    key = np.where(marked, dist * span + start_of, big)
    best = np.argmin(key, axis=1)
    rows = np.arange(n)
    chosen_start = start_of[rows, best]
    in_run = marked & (start_of == chosen_start[:, None])
    estimate = np.argmin(np.where(in_run, s, np.inf), axis=1)
    no_ref = refs < 0
    if no_ref.any():
        estimate[no_ref] = np.argmin(s[no_ref], axis=1)
    return estimate.astype(np.int64)


def estimate_phase(areas: np.ndarray, phase: str, refs: np.ndarray | None = None) -> np.ndarray:
    """Estimate ED or ES frames from raw area curves ``(videos, frames)`` (steps 2 to 7)."""
    return estimate_frames(signed_signal(np.atleast_2d(areas), phase), refs)


def estimate_frame(areas: np.ndarray, phase: str, ref: int | None = None) -> int:
    """Estimate the ED or ES frame of one video from its 1-D area curve; ``ref=None`` means no reference."""
    r = np.array([NO_REFERENCE if ref is None else int(ref)])
    return int(estimate_phase(np.asarray(areas)[None, :], phase, r)[0])


def detect(areas: np.ndarray, ed_refs: np.ndarray | None, es_refs: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """ED and ES estimates for a ``(videos, frames)`` matrix of area curves of equal length."""
    a = np.atleast_2d(np.asarray(areas, dtype=np.float64))
    z = standardise(a)
    return estimate_frames(-z, ed_refs), estimate_frames(z, es_refs)


def afd(delays: np.ndarray) -> float:
    """Mean absolute delay (aFD) over the finite delays; NaN when there is none."""
    d = np.asarray(delays, dtype=np.float64)
    d = d[np.isfinite(d)]
    return float(np.abs(d).mean()) if d.size else float("nan")
