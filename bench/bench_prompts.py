"""Benchmark: P0–P7 prompts for 2,000 images x 3 structures with geometric shape words, on one core.

Label maps (512x512, drawn by the toy heart model: LV, MYO ring, LA) are generated in memory before timing; the
timed part is what ``prompts build`` does per sample once a mask is loaded: classify the structure's shape
(``classify_shape`` on ``label_map == k``) and build every prompt level plus the JSON records (``make_prompts``).
Target: under 10 s. Separately, the end-to-end ``build`` (file reading included) is timed on a small toy CAMUS
set written to a temporary folder and reported per sample, with the in-memory per-sample cost for comparison.

Run: ``python bench/bench_prompts.py`` (prints JSON) or ``python bench/run_all.py prompts``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from echoseg.core.data.manifest import STRUCTURES  # noqa: E402
from echoseg.core.data.toy.heart import VIEWS, draw_heart, perturb_anatomy, sample_anatomy  # noqa: E402
from echoseg.core.prompts.build import build, make_prompts  # noqa: E402
from echoseg.core.prompts.shape import classify_shape  # noqa: E402

IMAGES, SIZE, DISTINCT, TARGET_S, FILE_PATIENTS = 2_000, 512, 250, 10.0, 25


def _label_maps(rng: np.random.Generator) -> list[np.ndarray]:
    """``DISTINCT`` different toy-heart label maps (views, phases and anatomy varied); reused cyclically."""
    maps = []
    for i in range(DISTINCT):
        anat = perturb_anatomy(sample_anatomy(rng, VIEWS[i % 2]), rng)
        maps.append(draw_heart(SIZE, anat, float(rng.uniform(0, 1)))[0])
    return maps


def _manifest(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for i in range(IMAGES):
        patient = f"patient{i // 4 + 1:04d}"
        view, phase = ("2CH", "4CH")[i % 2], ("ED", "ES")[(i // 2) % 2]
        stem = f"{patient}_{view}_{phase}"
        sex, age, quality = rng.choice(["M", "F"]), int(rng.integers(18, 95)), rng.choice(["Good", "Medium", "Poor"])
        split = ("train", "val", "test")[(i // 4) % 3]
        for label, structure in STRUCTURES.items():
            rows.append({"sample_id": f"{stem}_{structure}", "image": f"/mem/{stem}.nii.gz",
                         "mask": f"/mem/{stem}_gt.nii.gz", "label": label, "structure": structure, "view": view,
                         "phase": phase, "patient": patient, "sex": sex, "age": age, "quality": quality,
                         "split": split, "source": "real", "stem": stem})
    return pd.DataFrame(rows)


def run() -> dict:
    """Time shape classification + templating for 6,000 samples, and the file-based build for comparison."""
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    maps = _label_maps(rng)
    df = _manifest(rng)
    t0 = time.perf_counter()
    shapes = []
    for i in range(IMAGES):
        lm = maps[i % DISTINCT]
        shapes += [classify_shape(lm == k) for k in STRUCTURES]
    t1 = time.perf_counter()
    result = make_prompts(df, shapes, "camus")
    t2 = time.perf_counter()
    total = t2 - t0
    samples = len(df)
    metrics = {
        "images": IMAGES,
        "samples": samples,
        "mask_size_px": SIZE,
        "classify_s": round(t1 - t0, 3),
        "templates_s": round(t2 - t1, 3),
        "total_s": round(total, 3),
        "samples_per_s": round(samples / total, 1),
        "incomplete_samples": result.incomplete,
        **{f"share_{k}": round(v / samples, 3) for k, v in pd.Series(shapes).value_counts().items()},
    }
    with tempfile.TemporaryDirectory(prefix="echoseg-bench-prompts-") as tmp:
        from echoseg.core.data.toy.camus import write_toy_camus

        write_toy_camus(tmp, patients=FILE_PATIENTS, size=SIZE, layout="nifti", seed=0, half_sequence=False)
        t3 = time.perf_counter()
        built = build(Path(tmp), progress=False)
        t4 = time.perf_counter()
    n_file = len(built.manifest)
    metrics.update({
        "files_samples": n_file,
        "files_build_s": round(t4 - t3, 3),
        "files_read_s": round(built.timings["read_s"], 3),
        "files_shapes_s": round(built.timings["shapes_s"], 3),
        "files_per_sample_ms": round((t4 - t3) / n_file * 1000, 3),
        "memory_per_sample_ms": round(total / samples * 1000, 3),
        "files_vs_memory_per_sample": round((t4 - t3) / n_file / (total / samples), 2),
    })
    return {"name": "prompts",
            "description": "geometric shapes + P0–P7 prompts for 2,000 images x 3 structures (masks in memory); "
                           "end-to-end build on toy CAMUS NIfTI files per sample for comparison",
            "metrics": metrics, "target": f"total_s < {TARGET_S:g} on one core",
            "passed": bool(total < TARGET_S)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
