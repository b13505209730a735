"""`synth train`: DDPM training of the mask-conditioned UNet on (image, SDM label map) pairs through accelerate.

Data: a data or prompts run (or its manifest.csv) of CAMUS or SDM CAMUS samples. Images and label maps are read
once into the preprocessed cache at the training size; CAMUS label maps become SDM sector maps with the cone
derived from the image (:func:`echoseg.core.synth.perturb.cone_from_image`). The ``train`` split is used when the
manifest has one, else every image.

Run artefacts::

    checkpoints/latest.pt     step, UNet, EMA, optimiser and LR-schedule state (rewritten atomically)
    samples/step-NNNNNN.png   grid of (label map, EMA sample) pairs
    model/                    the EMA model, diffusers-style (see echoseg.core.models.diffusion)
    metrics.jsonl             step, loss, lr, elapsed_s (every ``log_every`` steps)
    log.txt                   a line of step, loss, lr and elapsed time every ``log_line_every`` steps (about 1%
                              of the steps, a multiple of ``log_every``), at every checkpoint and at the end

A progress bar over the steps shows on a terminal (off with ``--no-progress`` or when stderr is not a terminal).

Batches and noise come from generators seeded by (seed, step, process), so a resumed run continues the same
sequence it would have followed uninterrupted.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from echoseg.core.config import StageConfig, check_all
from echoseg.core.console import make_progress
from echoseg.core.data.cache import build_cache, default_cache_dir
from echoseg.core.data.imaging import check_label_maps
from echoseg.core.data.manifest import label_convention, mask_labels, read_manifest
from echoseg.core.engine import tracking
from echoseg.core.errors import UserError
from echoseg.core.io import atomic_path, write_png
from echoseg.core.models.diffusion import (
    build_scheduler,
    build_unet,
    conditioning_meta,
    get_config,
    images_to_tensor,
    model_input,
    one_hot,
    save_model,
)
from echoseg.core.runs import Run
from echoseg.core.synth.perturb import camus_to_sdm, cone_from_image
from echoseg.core.synth.sample import make_sampler, sample

PALETTE = np.array([[0, 0, 0], [220, 60, 60], [70, 70, 90], [240, 200, 60], [60, 140, 230]], np.uint8)
PAIR_ATTRIBUTES = ("sample_id", "view", "phase", "patient", "sex", "age", "quality", "split", "source")


# ------------------------------------------------------------------------------------------------- data
@dataclass
class Pairs:
    """Images and SDM label maps at one size, one row of ``table`` per image (attributes of the source)."""

    images: np.ndarray  # (N, S, S) uint8
    labels: np.ndarray  # (N, S, S) uint8 SDM labels
    table: pd.DataFrame  # image, mask and the attribute columns


def load_pairs(data: str | Path, size: int, cache_dir: Path | None = None, progress: bool = True) -> Pairs:
    """Read a data/prompts run (or manifest) into SDM-convention pairs at ``size`` x ``size``.

    Every image and label map is checked as `data check` does (complete, same size, labels of the manifest's
    encoding: 0..3 for CAMUS maps, 0..4 for SDM maps).

    Raises:
        UserError: no manifest, no images, or a missing, unreadable, truncated or inconsistent file (named).
    """
    p = Path(data)
    manifest = read_manifest(p)
    if manifest.empty:
        raise UserError(f"{p}: the manifest has no samples")
    convention = label_convention(manifest)
    table = manifest.drop_duplicates("image").reset_index(drop=True)
    cache_dir = cache_dir or default_cache_dir()
    cache = build_cache(table, size, cache_dir, progress=progress)
    rows = [cache.row_of(img) for img in table["image"]]
    images = np.ascontiguousarray(cache.images[rows])
    masks = np.ascontiguousarray(cache.masks[rows])
    allowed = dict(zip(manifest["mask"].astype(str), mask_labels(manifest), strict=True))
    paths = table["mask"].astype(str).tolist()
    check_label_maps(masks, paths, [allowed[m] for m in paths])
    if convention == "camus":
        labels = np.stack([camus_to_sdm(m, cone_from_image(im)) for im, m in zip(images, masks, strict=True)])
    else:
        labels = masks
    keep = [c for c in ("image", "mask", *PAIR_ATTRIBUTES) if c in table.columns]
    return Pairs(images=images, labels=labels.astype(np.uint8), table=table[keep].copy())


# ------------------------------------------------------------------------------------------------ config
@dataclass
class SynthTrainConfig(StageConfig):
    """Options of `synth train`; ``None`` fields take the named diffusion config's ``train`` defaults."""

    model_config: str = "tiny"
    size: int = 256
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    ema_decay: float | None = None
    warmup_steps: int | None = None
    checkpoint_every: int | None = None
    sample_every: int | None = None
    grid_count: int | None = None
    grid_steps: int | None = None
    cond_dropout: float = 0.0
    precision: str = "no"
    device: str = "auto"
    seed: int = 0
    log_every: int = 10

    def validate(self) -> None:
        """Raise UserError on out-of-range values, naming the option."""
        checks = [(16 <= int(self.size) <= 2048, f"--size must be in 16..2048, got {self.size}")]
        for key, low in (("steps", 1), ("batch_size", 1), ("checkpoint_every", 1), ("sample_every", 0)):
            value = getattr(self, key)
            checks.append((value is None or int(value) >= low,
                           f"--{key.replace('_', '-')} must be >= {low}, got {value}"))
        checks += [
            (self.lr is None or float(self.lr) > 0, f"--lr must be > 0, got {self.lr}"),
            (self.ema_decay is None or 0.0 <= float(self.ema_decay) < 1.0,
             f"--ema-decay must be in [0, 1), got {self.ema_decay}"),
            (0.0 <= float(self.cond_dropout) < 1.0, f"--cond-dropout must be in [0, 1), got {self.cond_dropout}"),
        ]
        check_all(checks)

    def resolved(self) -> SynthTrainConfig:
        """A copy with every ``None`` filled from the named config."""
        defaults = get_config(self.model_config)["train"]
        values = asdict(self)
        for key, value in defaults.items():
            if key in values and values[key] is None:
                values[key] = value
        return SynthTrainConfig(**values)


def label_colours(labels: np.ndarray) -> np.ndarray:
    """(H, W) SDM label map -> (H, W, 3) uint8 colours."""
    return PALETTE[np.clip(labels, 0, len(PALETTE) - 1)]


def pair_grid(labels: np.ndarray, images: np.ndarray) -> np.ndarray:
    """RGB grid, one row per pair: coloured label map | generated image."""
    rows = [np.concatenate([label_colours(lab), np.repeat(img[..., None], 3, 2)], 1)
            for lab, img in zip(labels, images, strict=True)]
    return np.concatenate(rows, 0)


# -------------------------------------------------------------------------------------------------- loop
def _accelerator(cfg: SynthTrainConfig, run: Run):
    """The loop's accelerator, with the trackers of ``run`` (``--report-to``) attached."""
    from accelerate import Accelerator  # deferred: heavy import, loaded only when this path runs

    trackers = tracking.accelerator_kwargs(run)
    try:
        accelerator = Accelerator(mixed_precision=cfg.precision, cpu=cfg.device == "cpu", **trackers)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"--precision {cfg.precision}: {str(exc).splitlines()[0]}") from None
    tracking.attach(run, accelerator)
    return accelerator


def _lr_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def _batch(pairs: Pairs, cfg: SynthTrainConfig, step: int, rank: int, device):
    """Deterministic (images, labels, noise, timesteps, drop) for ``step`` on process ``rank``."""
    rng = np.random.default_rng([cfg.seed, step, rank])
    idx = np.sort(rng.choice(len(pairs.images), size=cfg.batch_size, replace=len(pairs.images) < cfg.batch_size))
    gen = torch.Generator("cpu").manual_seed(int(rng.integers(2**62)))
    x0 = images_to_tensor(pairs.images[idx])
    noise = torch.randn(x0.shape, generator=gen)
    drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cond_dropout
    labels = torch.as_tensor(pairs.labels[idx]).long()
    return x0.to(device), labels.to(device), noise.to(device), drop.to(device), gen


def _duration(seconds: float) -> str:
    """``12.3s``, ``4m05s`` or ``2h03m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _save_checkpoint(path: Path, step: int, unet, ema, optimizer, lr_sched) -> None:
    with atomic_path(path) as tmp:
        torch.save({"step": step, "unet": unet.state_dict(), "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(), "lr_scheduler": lr_sched.state_dict()}, tmp)


@torch.no_grad()
def _grid(run: Run, step: int, unet, ema, scheduler, pairs: Pairs, cfg: SynthTrainConfig, device) -> Path:
    """Sample the grid label maps with the EMA weights and write ``samples/step-NNNNNN.png``."""

    idx = np.unique(np.linspace(0, len(pairs.labels) - 1, max(1, cfg.grid_count)).round().astype(int))
    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    unet.eval()
    try:
        labels = pairs.labels[idx]
        images = sample(unet, make_sampler("ddim", scheduler), labels, [cfg.seed + int(i) for i in idx],
                        steps=cfg.grid_steps, device=device)
    finally:
        ema.restore(unet.parameters())
        unet.train()
    path = run.file(f"samples/step-{step:06d}.png")
    write_png(path, pair_grid(labels, images))
    return path


def log_line_every(steps: int, log_every: int) -> int:
    """Steps between loss lines in log.txt: about 1% of ``steps``, a multiple of ``log_every`` (at least that)."""
    log_every = max(1, int(log_every))
    return log_every * max(1, round(steps / 100 / log_every))


def train(run: Run, data: str | Path, cfg: SynthTrainConfig, cache_dir: Path | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train (or, when ``run`` holds a checkpoint, continue training) and save the EMA model into ``run``.

    ``progress`` allows the step progress bar (shown only when progress bars are on: a terminal, no
    ``--no-progress``); log.txt gets loss lines either way.

    Returns:
        The summary (also written to summary.json).
    """
    from diffusers import UNet2DModel  # deferred: heavy import, loaded only when this path runs
    from diffusers.training_utils import EMAModel  # deferred: heavy import, loaded only when this path runs

    cfg = cfg.resolved()
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise UserError("--steps and --batch-size must be >= 1")
    if not 0.0 <= cfg.cond_dropout < 1.0:
        raise UserError(f"--cond-dropout must be in [0, 1), got {cfg.cond_dropout}")
    named = get_config(cfg.model_config)
    pairs = load_pairs(data, cfg.size, cache_dir, progress=progress)
    if "split" in pairs.table and (pairs.table["split"].astype(str) == "train").any():
        keep = (pairs.table["split"].astype(str) == "train").to_numpy()
        pairs = Pairs(pairs.images[keep], pairs.labels[keep], pairs.table[keep].reset_index(drop=True))
    run.log(f"training pairs: {len(pairs.images)} images at {cfg.size}x{cfg.size}")

    accelerator = _accelerator(cfg, run)
    device = accelerator.device
    torch.manual_seed(cfg.seed)
    unet = build_unet(named["unet"], cfg.size)
    scheduler = build_scheduler(named["scheduler"])
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=UNet2DModel, model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg.warmup_steps))
    ckpt_path = run.path / "checkpoints" / "latest.pt"
    start = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        start = int(state["step"])
        run.log(f"resuming from step {start}")
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema.to(device)
    raw = accelerator.unwrap_model(unet)
    n_params = sum(p.numel() for p in raw.parameters())
    run.log(f"UNet2DModel '{cfg.model_config}': {n_params / 1e6:.2f}M parameters, {cfg.steps} steps, device {device}")

    timesteps = scheduler.config.num_train_timesteps
    step, losses, window = start, [], []
    line_every = log_line_every(cfg.steps, cfg.log_every)
    t0 = time.perf_counter()
    bar = make_progress(show=progress and accelerator.is_main_process)
    try:
        unet.train()
        bar.start()
        task = bar.add_task("synth train", total=cfg.steps, completed=start)
        while step < cfg.steps:
            x0, labels, noise, drop, gen = _batch(pairs, cfg, step, accelerator.process_index, device)
            t = torch.randint(0, timesteps, (x0.shape[0],), generator=gen).to(device)
            noisy = scheduler.add_noise(x0, noise, t)
            with accelerator.autocast():
                pred = unet(model_input(noisy, one_hot(labels, drop)), t).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            lr_sched.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(raw.parameters())
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"loss became {value} at step {step}; lower --lr or use --precision bf16/no")
            losses.append(value)
            window.append(value)
            lr = lr_sched.get_last_lr()[0]
            elapsed = time.perf_counter() - t0
            if step % cfg.log_every == 0 or step == cfg.steps:
                run.log_metrics({"step": step, "loss": float(np.mean(losses)), "lr": lr,
                                 "elapsed_s": round(elapsed, 3)})
                bar.update(task, description=f"synth train (loss {np.mean(losses):.4f})")
                losses = []
            checkpoint = bool(cfg.checkpoint_every) and step % cfg.checkpoint_every == 0
            if step % line_every == 0 or checkpoint or step == cfg.steps:
                run.log(f"step {step}/{cfg.steps}: loss {np.mean(window):.4f}  lr {lr:.3g}  "
                        f"elapsed {_duration(elapsed)}{'  (checkpoint)' if checkpoint else ''}")
                window = []
            bar.advance(task)
            if accelerator.is_main_process and checkpoint:
                _save_checkpoint(ckpt_path, step, raw, ema, optimizer, lr_sched)
            if accelerator.is_main_process and cfg.sample_every and step % cfg.sample_every == 0:
                _grid(run, step, raw, ema, scheduler, pairs, cfg, device)
    except KeyboardInterrupt:
        if accelerator.is_main_process and step > start:
            _save_checkpoint(ckpt_path, step, raw, ema, optimizer, lr_sched)
        raise
    finally:
        bar.stop()
    accelerator.wait_for_everyone()
    summary: dict[str, Any] = {"steps": step, "config": cfg.model_config, "size": cfg.size, "images": len(pairs.images),
                               "parameters": int(n_params), "cond_dropout": cfg.cond_dropout}
    if accelerator.is_main_process:
        _save_checkpoint(ckpt_path, step, raw, ema, optimizer, lr_sched)
        grid = _grid(run, step, raw, ema, scheduler, pairs, cfg, device)
        ema.copy_to(raw.parameters())
        model_dir = save_model(run.file("model"), raw, scheduler,
                               conditioning_meta(cfg.model_config, cfg.size, cfg.cond_dropout))
        metrics = run.read_metrics()
        summary.update({"final_loss": metrics[-1]["loss"] if metrics else None, "model": str(model_dir),
                        "grid": str(grid)})
        run.write_summary(summary)
        run.log(f"model saved to {model_dir}")
    return summary
