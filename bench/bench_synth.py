"""Benchmark: DDIM-50 vs DDPM-1000 sampling of the mask-conditioned diffusion model — speed and fidelity.

"Echo from noise" sampled with the full 1000-step DDPM chain; DDIM with 50 steps draws from the same trained model
with 20x fewer UNet evaluations. This benchmark builds, in a temporary folder and through the ``echoseg`` CLI:

1. a toy CAMUS data set and its prompts (``echoseg data toy camus``, ``echoseg prompts build``);
2. a tiny synth model trained on it (``echoseg synth train --config tiny --size 32``);
3. a tiny U-Net segmenter trained on the real toy images (``echoseg train --model unet --config tiny``).

It then samples one image per label map with DDIM-50 and with DDPM-1000 (same maps, same seeds), timing both
(warm; DDIM best of ``repeats``, DDPM one run: its thousand steps already average out the load of a shared
machine). Two sets of maps, sampled together: ``n_maps`` real train/val maps perturbed as ``synth generate`` does
(default :class:`PerturbConfig`), and up to ``n_maps`` real *test* maps as they are (unseen by both models).
Fidelity: the segmenter runs on the generated images and the mean Dice per structure (LV, MYO, LA; SDM labels
1/3/4) between its prediction and the conditioning map is reported per sampler and map set, beside the ceiling:
the segmenter's Dice on the real test images of those same test maps (and the test Dice its own training run
reported). Target: DDIM-50 >= 15x DDPM-1000 images/s (ideal 20x; the scheduler's per-step overhead takes the
rest); fidelity is reported, not gated.

On a CPU everything runs on one thread (steadier timings on a shared machine, and faster than two contended ones).

Run: ``python bench/bench_synth.py`` (prints JSON) or ``python bench/run_all.py synth``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _toy import timed, toy_prompts, train_segmenter, train_synth, unet_segmenter  # noqa: E402

from echoseg.core.io import read_json  # noqa: E402
from echoseg.core.metrics.seg import dice_iou  # noqa: E402
from echoseg.core.models.diffusion import load_model  # noqa: E402
from echoseg.core.synth.generate import source_pool  # noqa: E402
from echoseg.core.synth.perturb import camus_from_sdm, perturb_label_map  # noqa: E402
from echoseg.core.synth.sample import make_sampler, sample  # noqa: E402
from echoseg.core.synth.train import load_pairs  # noqa: E402

NAME = "synth"
TARGET_RATIO = 15.0
STRUCTURES = {1: "LV", 2: "MYO", 3: "LA"}  # CAMUS labels (SDM 1/3/4 via camus_from_sdm)


def dice_per_structure(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean Dice over images of LV, MYO and LA between two (B, H, W) CAMUS label-map batches (empty-empty: 1)."""
    return {name: float(np.mean([dice_iou(p == label, t == label)[0] for p, t in zip(pred, target, strict=True)]))
            for label, name in STRUCTURES.items()}


def perturbed_maps(pool_labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` perturbed copies of SDM label maps picked evenly from ``pool_labels`` (map ``i`` uses seed + i)."""
    picks = np.linspace(0, len(pool_labels) - 1, n).round().astype(int)
    return np.stack([perturb_label_map(pool_labels[j], np.random.default_rng(seed + i))[0]
                     for i, j in enumerate(picks)])


def _timed_sample(unet, train_sched, labels, seeds, sampler: str, steps: int, device, dtype,
                  repeats: int) -> tuple[np.ndarray, float]:
    """(images, best wall seconds over ``repeats`` runs) of one sampler; sampling is deterministic per seed."""
    best, images = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        images = sample(unet, make_sampler(sampler, train_sched), labels, seeds, steps=steps, device=device,
                        dtype=dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return images, best


def _seg_run_dice(run_dir: Path) -> float:
    """Mean test Dice that the segmenter's own training run reported (summary.json)."""
    return float(read_json(run_dir / "summary.json")["test"]["overall"]["dice_mean"])


def run(
    size: int = 32,
    n_maps: int = 16,
    ddim_steps: int = 50,
    ddpm_steps: int = 1000,
    repeats: int = 3,
    patients: int = 20,
    synth_steps: int = 2000,
    synth_batch: int = 4,
    synth_lr: float = 2e-3,
    seg_epochs: int = 40,
    data: str | Path | None = None,
    model: str | Path | None = None,
    segmenter: str | Path | None = None,
) -> dict:
    """Run the benchmark and return ``{"name", "metrics", "target", "passed"}``.

    ``data`` (a prompts run), ``model`` (a ``synth train`` run) and ``segmenter`` (an ``echoseg train`` run)
    reuse existing runs instead of building them; the source label maps then come from ``data``.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    dev = "auto" if device.type == "cuda" else "cpu"
    metrics: dict[str, float | str] = {"device": device.type, "size": size, "maps": n_maps}
    with tempfile.TemporaryDirectory(prefix="echoseg-bench-synth-") as tmp:
        root = Path(tmp)
        if data is None:
            data, metrics["toy_data_s"] = timed(lambda: toy_prompts(root, patients, 2 * size))
            metrics["toy_patients"] = patients
        if model is None:
            model, metrics["synth_train_s"] = timed(
                lambda: train_synth(root, Path(data), size, synth_steps, synth_batch, synth_lr, dev))
            metrics["synth_train_steps"] = synth_steps
        if segmenter is None:
            segmenter, metrics["segmenter_train_s"] = timed(
                lambda: train_segmenter(root, Path(data), size, seg_epochs, dev))
        fidelity, speed = _measure(Path(data), Path(model), Path(segmenter), size, n_maps, ddim_steps, ddpm_steps,
                                   repeats, device)
    metrics.update(speed)
    metrics.update(fidelity)
    ratio = float(speed["ratio"])
    return {
        "name": NAME,
        "description": f"images/s and fidelity (Dice of a toy-trained U-Net on the generated images vs. their "
                       f"conditioning maps) of DDIM-{ddim_steps} vs DDPM-{ddpm_steps} on the same trained tiny model",
        "metrics": metrics,
        "target": f"ddim{ddim_steps}_images_per_s >= {TARGET_RATIO:g}x ddpm{ddpm_steps}_images_per_s "
                  "(fidelity reported, not gated)",
        "passed": bool(ratio >= TARGET_RATIO),
    }


def _measure(data: Path, model: Path, seg_run: Path, size: int, n_maps: int, ddim_steps: int, ddpm_steps: int,
             repeats: int, device: torch.device) -> tuple[dict, dict]:
    """(fidelity metrics, speed metrics) of both samplers on the perturbed and the test label maps."""
    unet, train_sched, meta = load_model(model)
    if int(meta["size"]) != size:
        raise ValueError(f"model {model} is {meta['size']} px, the benchmark runs at {size} px")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    unet = unet.to(device).eval()
    if dtype != torch.float32:
        unet = unet.to(dtype)
    pairs = load_pairs(data, size, progress=False)
    sets = {"perturbed": perturbed_maps(pairs.labels[source_pool(pairs.table).index.to_numpy()], n_maps)}
    if "split" in pairs.table:
        test = np.flatnonzero(pairs.table["split"].astype(str).to_numpy() == "test")[:n_maps]
        if len(test):
            sets["test"] = pairs.labels[test]
    labels = np.concatenate(list(sets.values()))
    seeds = list(range(len(labels)))
    for name in ("ddim", "ddpm"):  # warm-up
        sample(unet, make_sampler(name, train_sched), labels[:2], seeds[:2], steps=2, device=device, dtype=dtype)
    ddim_img, ddim_s = _timed_sample(unet, train_sched, labels, seeds, "ddim", ddim_steps, device, dtype, repeats)
    ddpm_img, ddpm_s = _timed_sample(unet, train_sched, labels, seeds, "ddpm", ddpm_steps, device, dtype, 1)
    speed = {"images": len(labels), f"ddim{ddim_steps}_images_per_s": round(len(labels) / ddim_s, 3),
             f"ddpm{ddpm_steps}_images_per_s": round(len(labels) / ddpm_s, 4), "ratio": round(ddpm_s / ddim_s, 2)}

    segment: Callable[[np.ndarray], np.ndarray] = unet_segmenter(seg_run, device)
    target = camus_from_sdm(labels)
    bounds = np.cumsum([0, *(len(v) for v in sets.values())])
    rows: dict[str, dict[str, float]] = {}
    for sampler, images in ((f"ddim{ddim_steps}", ddim_img), (f"ddpm{ddpm_steps}", ddpm_img)):
        pred = segment(images)
        for (key, _), a, b in zip(sets.items(), bounds[:-1], bounds[1:], strict=True):
            rows[f"{sampler}_{key}_maps"] = dice_per_structure(pred[a:b], target[a:b])
    if "test" in sets:
        # The ceiling: the same segmenter on the real images of the test maps.
        rows["real_test_images"] = dice_per_structure(segment(pairs.images[test]), camus_from_sdm(sets["test"]))
    fidelity: dict[str, float | str] = {}
    for key, per in rows.items():
        for name, value in per.items():
            fidelity[f"dice_{name}_{key}"] = round(value, 4)
        fidelity[f"dice_mean_{key}"] = round(float(np.mean(list(per.values()))), 4)
    fidelity["segmenter_run_test_dice"] = round(_seg_run_dice(seg_run), 4)
    fidelity["note"] = _note(fidelity, f"ddim{ddim_steps}", f"ddpm{ddpm_steps}", list(sets))
    return fidelity, speed


def _note(fidelity: dict, ddim: str, ddpm: str, sets: list[str]) -> str:
    """One line comparing the samplers' mean Dice on each map set, and the real-image ceiling."""
    parts = []
    for key in sets:
        a, b = fidelity[f"dice_mean_{ddim}_{key}_maps"], fidelity[f"dice_mean_{ddpm}_{key}_maps"]
        parts.append(f"{key} maps: {ddim.upper()} {a:.3f} vs {ddpm.upper()} {b:.3f} "
                     f"({'DDIM' if a >= b else 'DDPM'} +{abs(a - b):.3f})")
    if "dice_mean_real_test_images" in fidelity:
        parts.append(f"real test images (ceiling) {fidelity['dice_mean_real_test_images']:.3f}")
    return "mean Dice, " + "; ".join(parts)


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
