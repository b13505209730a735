"""A tiny prompts-run-like data set (PNG images, label maps, manifest with P0..P7 in both variants)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echoseg.core.data.manifest import STRUCTURE_NAMES, STRUCTURES, write_manifest
from echoseg.core.io import write_png


def make_prompts_run(root: Path, images: dict[str, int], size: int = 32, seed: int = 0,
                     source: str = "real") -> Path:
    """Write ``images[split]`` toy images per split (3 structures each) and a manifest; return the run dir."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    k = 0
    for split, count in images.items():
        for _ in range(count):
            cy, cx = size * 0.4 + rng.uniform(-2, 2), size * 0.5 + rng.uniform(-2, 2)
            r = size * rng.uniform(0.15, 0.2)
            d = np.hypot(yy - cy, xx - cx)
            mask = np.zeros((size, size), np.uint8)
            mask[d < r * 1.5] = 2
            mask[d < r] = 1
            mask[np.hypot(yy - size * 0.8, xx - cx) < r * 0.8] = 3
            img = np.array([0, 200, 90, 30], np.float32)[mask] + rng.normal(0, 12, mask.shape)
            img = np.clip(img, 0, 255).astype(np.uint8)
            ip, mp = root / f"img{k:03d}.png", root / f"img{k:03d}_gt.png"
            write_png(ip, img)
            write_png(mp, mask)
            view, phase = ("2CH", "ED") if k % 2 else ("4CH", "ES")
            for label, short in STRUCTURES.items():
                name = STRUCTURE_NAMES[short]
                row = {"sample_id": f"img{k:03d}_{short}", "image": str(ip), "mask": str(mp), "label": label,
                       "structure": short, "view": view, "phase": phase, "patient": f"patient{k:03d}",
                       "sex": "M", "age": 60, "quality": "good", "split": split, "source": source, "p0": ""}
                for lv in range(1, 8):
                    extra = " in two-chamber view" * (lv >= 2) + " with good image quality" * (lv >= 6)
                    row[f"p{lv}"] = f"{name}{extra} of the heart."
                    row[f"p{lv}_b"] = f"{name}{extra} in the cardiac ultrasound."
                rows.append(row)
            k += 1
    write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    return root


@pytest.fixture(scope="session")
def prompts_run(tmp_path_factory) -> Path:
    """6 train, 3 val, 3 test images (18/9/9 samples) at 32x32."""
    return make_prompts_run(tmp_path_factory.mktemp("prompts") / "real", {"train": 6, "val": 3, "test": 3})


@pytest.fixture(scope="session")
def synth_run(tmp_path_factory) -> Path:
    """A 'synthetic' data set with train/val splits only."""
    return make_prompts_run(tmp_path_factory.mktemp("prompts") / "synth", {"train": 6, "val": 3}, seed=1,
                            source="synthetic")
