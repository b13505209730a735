"""Benchmark: training-style sample loading at 512x512, decoding each time vs. the memory-mapped cache.

Writes a CAMUS-like data set itself (``N`` gzip-compressed NIfTI images of 778x594 uint8 speckle in an imaging
sector, with LV/MYO/LA label maps), then measures samples/s in random order for

(a) ``load_image`` + ``load_mask`` + ``cv2.resize`` to 512x512 for every sample, and
(b) reading the same samples from the cache built by ``build_cache``,

both ending in the float image tensor and integer mask tensor that training consumes. Target: (b) >= 20x (a).
The cache is read warm (its pages in the OS page cache), which is the steady state of a training run whose cache
fits in memory; CAMUS at 512x512 is about 1 GB.

Run: ``python bench/bench_cache.py`` (prints JSON) or ``python bench/run_all.py cache``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch

from echoseg.core.data.cache import build_cache, resize_image, resize_mask
from echoseg.core.data.imaging import load_image, load_mask
from echoseg.core.data.manifest import MANIFEST_COLUMNS, STRUCTURES

NAME = "cache"
TARGET_RATIO = 20.0
CAMUS_SHAPE = (778, 594)  # rows, columns of a typical CAMUS frame


def _camus_like(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A speckled ultrasound sector with an apical-view-like label map (1 LV, 2 MYO, 3 LA)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    apex_x = w / 2 + rng.uniform(-10, 10)
    r = np.hypot(xx - apex_x, yy)
    theta = np.arctan2(xx - apex_x, yy)
    sector = (r < h * 0.98) & (np.abs(theta) < np.deg2rad(37))
    speckle = rng.rayleigh(1.0, size=shape).astype(np.float32)
    speckle = cv2.GaussianBlur(speckle, (0, 0), sigmaX=0.7, sigmaY=1.2)
    tissue = 25 + 75 * speckle * (1 - r / (1.3 * h))
    label = np.zeros(shape, np.uint8)
    cx, cy = int(apex_x + rng.uniform(-15, 15)), int(h * rng.uniform(0.38, 0.44))
    ax, ay = int(w * rng.uniform(0.12, 0.15)), int(h * rng.uniform(0.25, 0.3))
    cv2.ellipse(label, (cx, cy), (ax + 18, ay + 18), 0, 0, 360, 2, -1)
    cv2.ellipse(label, (cx, cy), (ax, ay), 0, 0, 360, 1, -1)
    cv2.ellipse(label, (cx, int(cy + ay + h * 0.13)), (int(ax * 0.9), int(h * 0.1)), 0, 0, 360, 3, -1)
    tissue[label == 1] *= 0.25  # blood pools are dark
    tissue[label == 3] *= 0.25
    tissue[label == 2] *= 1.6
    image = np.where(sector, np.clip(tissue, 0, 255), 0).astype(np.uint8)
    return image, np.where(sector, label, 0).astype(np.uint8)


def write_dataset(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """Write ``n`` image/label-map pairs as ``.nii.gz`` and return a manifest (three structure rows each)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        image, label = _camus_like(rng, CAMUS_SHAPE)
        paths = []
        for arr, suffix in ((image, ""), (label, "_gt")):
            itk = sitk.GetImageFromArray(arr)
            itk.SetSpacing((0.154, 0.154))
            p = folder / f"patient{k:04d}_2CH_ED{suffix}.nii.gz"
            sitk.WriteImage(itk, str(p), useCompression=True)
            paths.append(str(p))
        for label_id, name in STRUCTURES.items():
            rows.append({"sample_id": f"patient{k:04d}_2CH_ED_{name}", "image": paths[0], "mask": paths[1],
                         "label": label_id, "structure": name, "view": "2CH", "phase": "ED",
                         "patient": f"patient{k:04d}", "sex": "F", "age": 60, "quality": "good",
                         "split": "train", "source": "real"})
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """What a training data set returns: a float image in [0, 1] and a long label map (both copies)."""
    img = torch.from_numpy(np.array(image, dtype=np.float32)).div_(255.0)
    msk = torch.from_numpy(np.array(mask, dtype=np.int64))
    return img, msk


def _rate(fn, order: np.ndarray, min_seconds: float) -> float:
    """Samples/s of ``fn(i)`` over ``order``, repeated until ``min_seconds`` have passed."""
    done, start = 0, time.perf_counter()
    while True:
        for i in order:
            fn(int(i))
        done += len(order)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def run(n_images: int = 200, size: int = 512, seed: int = 0) -> dict:
    """Run the benchmark and return ``{"name", "metrics", "target", "passed"}``."""
    rng = np.random.default_rng(seed)
    torch.set_num_threads(1)  # one loader worker's view
    with tempfile.TemporaryDirectory(prefix="echoseg-bench-cache-") as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        manifest = write_dataset(root / "data", n_images, seed)
        pairs = manifest.drop_duplicates("image")[["image", "mask"]].to_numpy()

        t0 = time.perf_counter()
        cache = build_cache(manifest, size, root / "cache", progress=False)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        reused = build_cache(manifest, size, root / "cache", progress=False)
        reuse_s = time.perf_counter() - t0
        assert reused.path == cache.path
        rows = np.array([cache.row_of(img) for img, _ in pairs])

        def decode(i: int) -> None:
            img_path, mask_path = pairs[i]
            _to_tensors(resize_image(load_image(img_path), size), resize_mask(load_mask(mask_path), size))

        def cached(i: int) -> None:
            r = rows[i]
            _to_tensors(cache.image(r), cache.mask(r))

        order = rng.permutation(len(pairs))
        decode(int(order[0]))  # warm imports and the file system cache for both paths alike
        cached(int(order[0]))
        decode_rate = _rate(decode, order, min_seconds=0.0)
        cache_rate = _rate(cached, order, min_seconds=2.0)
        cache_mb = sum(f.stat().st_size for f in cache.path.iterdir()) / 2**20
        data_mb = sum(f.stat().st_size for f in (root / "data").iterdir()) / 2**20

    ratio = cache_rate / decode_rate
    metrics = {
        "images": len(pairs),
        "source_shape": f"{CAMUS_SHAPE[0]}x{CAMUS_SHAPE[1]} .nii.gz",
        "size": size,
        "decode_samples_per_s": round(decode_rate, 1),
        "cache_samples_per_s": round(cache_rate, 1),
        "speedup": round(ratio, 1),
        "build_s": round(build_s, 2),
        "build_epochs_equivalent": round(build_s * decode_rate / len(pairs), 2),
        "reuse_s": round(reuse_s, 4),
        "cache_mb": round(cache_mb, 1),
        "source_mb": round(data_mb, 1),
    }
    return {
        "name": NAME,
        "description": "training-style loading of CAMUS-like samples at 512x512: decode+resize vs. mmap cache",
        "metrics": metrics,
        "target": f"cache_samples_per_s >= {TARGET_RATIO:g}x decode_samples_per_s",
        "passed": bool(ratio >= TARGET_RATIO),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
