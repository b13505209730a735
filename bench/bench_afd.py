"""Benchmark: aFD for 10,000 videos of 200 frames from an areas CSV, end to end (CSV read + algorithm).

Target: under 5 s on one core. Also reports the speed-up of the vectorised algorithm over a per-video loop.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from echoseg.core.metrics.afd import estimate_frame  # noqa: E402
from echoseg.core.metrics.afd_report import afd_summary, afd_table  # noqa: E402
from echoseg.core.metrics.areas import read_areas_csv  # noqa: E402

VIDEOS, FRAMES, TARGET_S, LOOP_SAMPLE = 10_000, 200, 5.0, 1_000


def _write_areas(path: Path, rng: np.random.Generator) -> dict[str, tuple[int, int]]:
    """Noisy beating LV area curves (random period and phase) as a FileName,Frame,Area CSV; returns (ED, ES)."""
    t = np.arange(FRAMES)
    period = rng.integers(30, 60, VIDEOS)
    phase = rng.integers(0, 60, VIDEOS)
    curves = 1500 + 500 * np.cos(2 * np.pi * (t[None] - phase[:, None]) / period[:, None])
    curves += rng.normal(0, 20, curves.shape)
    names = np.array([f"0X{i:014X}" for i in range(VIDEOS)])
    pd.DataFrame({"FileName": np.repeat(names, FRAMES), "Frame": np.tile(t, VIDEOS),
                  "Area": np.round(curves).astype(np.int64).ravel()}).to_csv(path, index=False)
    ed = phase + period  # a maximum inside the clip
    es = ed + period // 2
    return {str(n): (int(a), int(b)) for n, a, b in zip(names, ed, es, strict=True)}


def run() -> dict:
    """Time CSV read + ED/ES detection for 10,000 x 200 frames; compare with a per-video loop."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "areas.csv"
        refs = _write_areas(path, rng)
        t0 = time.perf_counter()
        signals = read_areas_csv(path)
        t1 = time.perf_counter()
        table = afd_table(signals, refs)
        summary = afd_summary(table)
        t2 = time.perf_counter()
    sample = range(LOOP_SAMPLE)
    t3 = time.perf_counter()
    for i in sample:
        ref = refs[signals.names[i]]
        estimate_frame(signals.curve(i), "ED", ref[0])
        estimate_frame(signals.curve(i), "ES", ref[1])
    loop_per_video = (time.perf_counter() - t3) / LOOP_SAMPLE
    vec_per_video = (t2 - t1) / VIDEOS
    total = t2 - t0
    metrics = {
        "videos": VIDEOS,
        "frames": FRAMES,
        "end_to_end_s": round(total, 3),
        "csv_read_s": round(t1 - t0, 3),
        "algorithm_s": round(t2 - t1, 3),
        "videos_per_s": round(VIDEOS / total, 1),
        "loop_algorithm_per_video_ms": round(loop_per_video * 1000, 4),
        "vectorised_algorithm_per_video_ms": round(vec_per_video * 1000, 4),
        "speedup_vectorised_vs_loop": round(loop_per_video / vec_per_video, 1),
        "aFD_ED_frames": round(summary["aFD_ED_frames"], 3),
        "aFD_ES_frames": round(summary["aFD_ES_frames"], 3),
    }
    return {"name": "afd",
            "description": "aFD from a 10,000 x 200-frame areas CSV: read + vectorised ED/ES detection; "
                           "vectorised vs. per-video loop",
            "metrics": metrics, "target": f"end_to_end_s < {TARGET_S:g} on one core",
            "passed": bool(total < TARGET_S)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
