"""Benchmark: sampling throughput of the mask-conditioned diffusion model, DDIM-50 vs DDPM-1000.

"Echo from noise" sampled with the full 1000-step DDPM chain; DDIM with 50 steps draws from the same trained model
with 20x fewer UNet evaluations. This measures images per second of both samplers on the same randomly initialised
tiny model (``tiny`` config, ``size`` px, one batch of toy SDM label maps), on the GPU when there is one. Target:
DDIM-50 >= 15x DDPM-1000 (the ideal is 20x; per-step scheduler overhead takes the rest).

Fidelity (optional): ``run(segmenter=f)`` also generates DDIM images for the label maps and scores a segmenter on
them: ``f`` maps a uint8 (B, H, W) image batch to (B, H, W) CAMUS label maps (0 background, 1 LV, 2 MYO, 3 LA),
and the mean Dice per structure against the conditioning maps is reported. It needs a trained model (``model``,
a `synth train` run) to mean anything and is skipped when no segmenter is given.

Run: ``python bench/bench_synth.py`` (prints JSON) or ``python bench/run_all.py synth``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from echoseg.core.data.toy_heart import draw_heart, sample_anatomy, to_sdm_labels
from echoseg.core.synth.model import build_scheduler, build_unet, get_config, load_model
from echoseg.core.synth.perturb import camus_from_sdm
from echoseg.core.synth.sample import make_sampler, sample

NAME = "synth"
TARGET_RATIO = 15.0


def toy_label_maps(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` toy SDM sector label maps (alternating 2CH/4CH, ED/ES)."""
    rng = np.random.default_rng(seed)
    maps = []
    for i in range(n):
        anat = sample_anatomy(rng, ("2CH", "4CH")[i % 2])
        labels, cone, _ = draw_heart(size, anat, float((i // 2) % 2))
        maps.append(to_sdm_labels(labels, cone))
    return np.stack(maps)


def _throughput(unet, train_sched, labels, sampler: str, steps: int, device, dtype, repeats: int) -> float:
    """Images per second of one sampler (best of ``repeats`` timed runs after a warm-up)."""
    seeds = list(range(len(labels)))
    sample(unet, make_sampler(sampler, train_sched), labels, seeds, steps=2, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sample(unet, make_sampler(sampler, train_sched), labels, seeds, steps=steps, device=device, dtype=dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return len(labels) / best


def dice_per_structure(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean Dice over images of LV, MYO, LA (CAMUS labels)."""
    out = {}
    for label, name in ((1, "LV"), (2, "MYO"), (3, "LA")):
        p, t = pred == label, target == label
        inter = (p & t).sum(axis=(1, 2))
        denom = p.sum(axis=(1, 2)) + t.sum(axis=(1, 2))
        out[name] = float(np.mean(np.where(denom > 0, 2 * inter / np.maximum(denom, 1), 1.0)))
    return out


def run(
    size: int = 32,
    batch: int = 8,
    ddim_steps: int = 50,
    ddpm_steps: int = 1000,
    repeats: int = 2,
    model: str | Path | None = None,
    segmenter: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Run the benchmark and return ``{"name", "metrics", "target", "passed"}``."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # a steadier ratio on a shared CPU
    if model is not None:
        unet, train_sched, meta = load_model(model)
        size = int(meta["size"])
    else:
        torch.manual_seed(0)
        cfg = get_config("tiny")
        unet, train_sched = build_unet(cfg["unet"], size), build_scheduler(cfg["scheduler"])
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    unet = unet.to(device).eval()
    if dtype != torch.float32:
        unet = unet.to(dtype)
    labels = toy_label_maps(batch, size)
    ddim = _throughput(unet, train_sched, labels, "ddim", ddim_steps, device, dtype, repeats)
    ddpm = _throughput(unet, train_sched, labels, "ddpm", ddpm_steps, device, dtype, max(1, repeats - 1))
    ratio = ddim / ddpm
    metrics: dict[str, float | str] = {
        "device": device.type, "size": size, "batch": batch,
        f"ddim{ddim_steps}_images_per_s": round(ddim, 3), f"ddpm{ddpm_steps}_images_per_s": round(ddpm, 4),
        "ratio": round(ratio, 2),
    }
    if segmenter is not None:
        images = sample(unet, make_sampler("ddim", train_sched), labels, list(range(batch)), steps=ddim_steps,
                        device=device, dtype=dtype)
        pred = np.asarray(segmenter(images))
        for name, value in dice_per_structure(pred, camus_from_sdm(labels)).items():
            metrics[f"dice_{name}"] = round(value, 4)
    return {
        "name": NAME,
        "description": f"images/s of DDIM-{ddim_steps} vs DDPM-{ddpm_steps} on the same tiny conditional UNet",
        "metrics": metrics,
        "target": f"ddim{ddim_steps}_images_per_s >= {TARGET_RATIO:g}x ddpm{ddpm_steps}_images_per_s",
        "passed": bool(ratio >= TARGET_RATIO),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
