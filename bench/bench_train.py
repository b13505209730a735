"""Benchmark of `echoseg train`'s engine on CPU (or GPU when present), as ratios within one run.

- step overhead: one echoseg training step (``loop.train_step`` through accelerate) vs a bare PyTorch step on the
  same model, batch and optimizer (forward, Dice+BCE, zero_grad, backward, clip, AdamW); target ratio <= 1.05;
- loader throughput: samples/s of the cache-backed ``SegDataset`` + DataLoader vs samples/s the training step
  consumes; target >= 10x;
- peak RAM (max RSS) of the process.

``python bench/bench_train.py`` prints JSON. The quality target (test Dice on toy CAMUS) is bench/bench_quality.py.
"""

from __future__ import annotations

import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def _toy_frame(root: Path, n_images: int, size: int) -> pd.DataFrame:
    from echoseg.core.io import write_png

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for k in range(n_images):
        mask = np.zeros((size, size), np.uint8)
        d = np.hypot(yy - size * 0.4, xx - size * rng.uniform(0.4, 0.6))
        mask[d < size * 0.25] = 2
        mask[d < size * 0.18] = 1
        mask[np.hypot(yy - size * 0.8, xx - size / 2) < size * 0.12] = 3
        img = np.clip(np.array([0, 200, 90, 30])[mask] + rng.normal(0, 12, mask.shape), 0, 255).astype(np.uint8)
        ip, mp = root / f"i{k}.png", root / f"i{k}_gt.png"
        write_png(ip, img)
        write_png(mp, mask)
        for label, name in ((1, "LV"), (2, "MYO"), (3, "LA")):
            rows.append({"sample_id": f"i{k}_{name}", "image": str(ip), "mask": str(mp), "label": label,
                         "structure": name, "p7": f"{name} of the heart.", "split": "train", "source": "real"})
    return pd.DataFrame(rows)


def _bare_step(model, batch, loss_fn, optimizer, params, clip):
    logits = model(batch["image"], batch["text"], batch["structure"])
    loss = loss_fn(logits, batch["target"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    return loss.detach()


def run(input_size: int = 64, batch_size: int = 8, steps: int = 40) -> dict:
    """Step-overhead ratio, loader/step throughput ratio and peak RAM."""
    from torch.utils.data import DataLoader

    from echoseg.core.data.cache import build_cache
    from echoseg.core.engine.batches import epoch_batches
    from echoseg.core.env import make_accelerator
    from echoseg.core.models import build_model
    from echoseg.core.train.dataset import SegDataset, collate
    from echoseg.core.train.loop import train_step
    from echoseg.core.train.losses import DiceBCELoss

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        frame = _toy_frame(Path(tmp), 32, 128)
        cache = build_cache(frame, input_size, Path(tmp) / "cache", progress=False)
        ds = SegDataset(frame, cache, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), ["p7"])
        batch = collate([ds[i] for i in range(batch_size)])

        accelerator = make_accelerator("no", "auto")
        model = build_model("clipseg", "tiny", input_size=input_size).to(accelerator.device)
        params = [p for p in model.parameters() if p.requires_grad]
        loss_fn = DiceBCELoss()
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-3)
        wrapped, wopt = accelerator.prepare(model, opt)
        dev_batch = {k: (v.to(accelerator.device) if torch.is_tensor(v) else v) for k, v in batch.items()}

        def sync():
            if accelerator.device.type == "cuda":
                torch.cuda.synchronize()

        ours, bare = [], []
        for i in range(steps + 3):  # interleaved, first 3 rounds are warm-up
            t = time.perf_counter()
            train_step(wrapped, batch, loss_fn, wopt, accelerator, params, 0.5)
            sync()
            a = time.perf_counter() - t
            t = time.perf_counter()
            _bare_step(model, dev_batch, loss_fn, opt, params, 0.5)
            sync()
            b = time.perf_counter() - t
            if i >= 3:
                ours.append(a)
                bare.append(b)
        step_s = statistics.median(ours)
        # Paired per-round ratios: robust to load from other processes drifting over the run.
        overhead = statistics.median(a / b for a, b in zip(ours, bare, strict=True))
        best_ratio = min(ours) / min(bare)

        loader = DataLoader(ds, batch_sampler=epoch_batches(len(ds), batch_size, 0, 1, True), collate_fn=collate)
        t = time.perf_counter()
        n = sum(len(b["text"]) for b in loader)
        load_rate = n / (time.perf_counter() - t)
        step_rate = batch_size / step_s
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    metrics = {"step_overhead_ratio": overhead, "step_overhead_ratio_min_times": best_ratio,
               "loader_samples_per_s": load_rate, "step_samples_per_s": step_rate,
               "loader_vs_step_ratio": load_rate / step_rate, "peak_rss_mb": peak_mb,
               "device": str(accelerator.device), "input_size": input_size, "batch_size": batch_size}
    target = {"step_overhead_ratio": "<= 1.05", "loader_vs_step_ratio": ">= 10"}
    passed = overhead <= 1.05 and load_rate / step_rate >= 10
    return {"name": "train", "metrics": metrics, "target": target, "passed": passed}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
