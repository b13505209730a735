"""Toy runs for the benchmarks: a toy CAMUS data set, its prompts, a trained synth model and a trained segmenter.

Everything goes through the ``echoseg`` CLI in-process (``echoseg.cli.main``), exactly as a user would run it;
the run paths the commands print on stdout are sent to stderr so a benchmark's own stdout stays its JSON.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def echoseg(*args: str) -> Path:
    """Run one ``echoseg`` command in-process; returns its run directory.

    Raises:
        RuntimeError: the command exited with a non-zero code.
    """
    from echoseg.cli import main

    argv = sys.argv[:]  # main() rewrites sys.argv; callers (bench/run_all.py's runner) still read theirs
    try:
        with contextlib.redirect_stdout(sys.stderr):
            rc = main([str(a) for a in args])
    finally:
        sys.argv = argv
    if rc != 0:
        raise RuntimeError(f"echoseg {' '.join(map(str, args))} exited with code {rc}")
    out = list(args)
    return Path(out[out.index("--out") + 1])


def timed(fn: Callable[[], Path]) -> tuple[Path, float]:
    """Call ``fn`` and return (its result, wall seconds rounded to 0.1 s)."""
    t0 = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - t0, 1)


def toy_prompts(root: Path, patients: int, size: int, seed: int = 0) -> Path:
    """``echoseg data toy camus`` then ``echoseg prompts build``: a prompts run with train/val/test splits."""
    camus = echoseg("data", "toy", "camus", "--patients", patients, "--size", size, "--seed", seed,
                    "--out", root / "camus")
    return echoseg("prompts", "build", camus, "--out", root / "prompts")


def train_synth(root: Path, data: Path, size: int, steps: int, batch_size: int, lr: float, device: str) -> Path:
    """``echoseg synth train --config tiny``: the mask-conditioned diffusion model."""
    return echoseg("synth", "train", "--data", data, "--config", "tiny", "--size", size, "--steps", steps,
                   "--batch-size", batch_size, "--lr", lr, "--device", device, "--out", root / "synth")


def train_segmenter(root: Path, data: Path, size: int, epochs: int, device: str) -> Path:
    """``echoseg train --model unet --config tiny`` on the real toy data, scored at ``size`` px."""
    return echoseg("train", "--model", "unet", "--config", "tiny", "--input-size", size, "--eval-size", size,
                   "--epochs", epochs, "--batch-size", 8, "--early-stop-patience", epochs, "--prompt", "p0",
                   "--device", device, "--data", data, "--out", root / "segmenter")


def unet_segmenter(run_dir: str | Path, device: torch.device | str = "cpu",
                   threshold: float = 0.5) -> Callable[[np.ndarray], np.ndarray]:
    """A CAMUS label-map predictor from an ``echoseg train`` run (its best checkpoint).

    The returned function maps uint8 (B, H, W) grey images to (B, H, W) CAMUS label maps (0 background, 1 LV,
    2 MYO, 3 LA): images are resized to the model's input size and normalised as in training, each structure's
    logits are upsampled back to (H, W), and a pixel takes the structure of highest probability when that
    probability exceeds ``threshold`` (else background).
    """
    import torch.nn.functional as F

    from echoseg.core.data.cache import resize_image
    from echoseg.core.models.artefacts import load_trained_model

    model, _ = load_trained_model(run_dir, "best", option="segmenter")
    model = model.to(device).eval()
    mean = torch.tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1)
    names = {1: "LV", 2: "MYO", 3: "LA"}

    @torch.no_grad()
    def predict(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.uint8)
        b, h, w = images.shape
        x = np.stack([resize_image(im, model.input_size) for im in images]).astype(np.float32) / 255.0
        x = ((torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1) - mean) / std).to(device)
        probs = []
        for label, name in names.items():
            logits = model(x, [name] * b, torch.full((b,), label, dtype=torch.long))
            up = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
            probs.append(torch.sigmoid(up[:, 0]).cpu())
        p = torch.stack(probs, 1)  # (B, 3, H, W)
        best, arg = p.max(dim=1)
        return torch.where(best > threshold, arg + 1, 0).numpy().astype(np.uint8)

    return predict
