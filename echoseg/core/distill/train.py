"""Student training from cached teacher pseudo-labels (EchoDFKD's data-free knowledge distillation).

Recipe: binary cross-entropy between the student's logits and the teacher's soft masks (probabilities, not
binarised); Adam at ``lr`` (1e-3); ``batch_size`` (32) videos per step, each contributing one random contiguous
window of ``seq_len`` (25) frames, every training video once per epoch; optionally at half resolution (2x2 average
pooling of frames and soft targets) while validation and inference run at full resolution. After every epoch the
validation videos are segmented at full resolution in one pass from the student's warm start, exactly as
``predict`` segments a video (``warmup`` reflected first frames; see :mod:`echoseg.core.models.convlstm`: from a
cold state the first frames come out under-segmented, which moved ED/ES estimates by a whole cardiac cycle on videos
that open on an ED or ES frame); training windows start cold, as in EchoDFKD. The validation loss (the same BCE) drives
early stopping (``patience`` 10 epochs) and the best-loss checkpoint is kept. Validation also picks the binarisation
threshold maximising the mean per-frame Dice against the binarised teacher (p >= 0.5) over a grid 0.05..0.95; the
threshold is stored in the weights (buffer ``threshold``) and in ``checkpoints/best.json``.

Budget: these defaults are EchoDFKD's, made for thousands of synthetic videos (hundreds of steps an epoch). On a
handful of videos an epoch is one or two steps, and a student that has taken a few dozen Adam steps still predicts
p ~ 0.4-0.6 almost everywhere: its area curve follows its recurrent start-up, not the heart (issue 18: 30 steps gave
val Dice 0.65 and an area curve uncorrelated with the teacher's). It needs on the order of :data:`MIN_STEPS` steps
(small batches of 2 windows and Adam at 3e-3 get there fastest on CPU; see ``bench/bench_distill.py``); a run planned
with fewer says so in its log.

The run directory holds ``checkpoints/`` in the training engine's layout (model.json, best/last.safetensors,
last.pt with optimizer, counters and RNG states). Windows and shuffling come from generators seeded by
(seed, epoch), so ``--resume`` repeats an uninterrupted run exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from echoseg.core.config import StageConfig, check_all
from echoseg.core.console import track
from echoseg.core.distill.pseudo import PseudoLabels
from echoseg.core.engine import checkpoint as ckpt
from echoseg.core.env import make_accelerator
from echoseg.core.models import artefacts, build_model
from echoseg.core.runs import Run

THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
TEACHER_CUT = 128  # uint8 teacher probability >= 128/255 ~ p >= 0.5: the teacher's binary mask
MIN_STEPS = 100  # optimizer steps below which a run's log warns that the student will not have learnt (see Budget)
Callback = Callable[[dict[str, Any]], None]


@dataclass
class DistillConfig(StageConfig):
    """Everything a distillation run depends on (recorded in run.json and checkpoints/model.json)."""

    teacher: str = ""
    data: str = ""
    val_data: str | None = None
    eval_data: str | None = None
    eval_split: str = "TEST"
    model_config: str = "base"
    blocks: int = 4
    layers: int = 1
    skips: bool = False
    warmup: int | None = None  # None: the model config's (16 in the named configs)
    seq_len: int = 25
    half_res: bool = False
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 10
    teacher_batch_size: int = 32
    precision: str = "no"
    device: str = "auto"
    seed: int = 0
    skip_bad: bool = False  # leave damaged videos out (listed in problems.csv) instead of stopping

    def validate(self) -> None:
        """Raise UserError on out-of-range values, naming the option."""
        checks = [
            (1 <= self.blocks <= 4, f"--blocks must be 1..4, got {self.blocks}"),
            (1 <= self.layers <= 4, f"--layers must be 1..4, got {self.layers}"),
            (self.warmup is None or self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}"),
            (self.seq_len >= 1, f"--seq-len must be >= 1, got {self.seq_len}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.patience >= 1, f"--patience must be >= 1, got {self.patience}"),
            (self.teacher_batch_size >= 1, f"--teacher-batch-size must be >= 1, got {self.teacher_batch_size}"),
            (self.precision in ("no", "fp16", "bf16"), f"--precision must be no, fp16 or bf16, got {self.precision!r}"),
        ]
        check_all(checks)


@dataclass
class VideoSet:
    """Videos of one split with their cached frames and teacher labels."""

    cache: PseudoLabels
    names: list[str]

    def lengths(self) -> list[int]:
        """Frame counts of the videos."""
        return [self.cache.num_frames(n) for n in self.names]


def frame_stats(videos: VideoSet, max_videos: int = 64) -> tuple[float, float]:
    """Grey-level mean and std (0..255) over the frames of up to ``max_videos`` training videos."""
    total, sq, n = 0.0, 0.0, 0
    for name in videos.names[:max_videos]:
        f = np.asarray(videos.cache.frames(name), dtype=np.float64)
        total += f.sum()
        sq += np.square(f).sum()
        n += f.size
    mean = total / max(n, 1)
    std = math.sqrt(max(sq / max(n, 1) - mean * mean, 0.0))
    return float(mean), float(std if std > 1e-3 else 1.0)


def epoch_plan(n_videos: int, lengths: Sequence[int], seq_len: int, batch_size: int, seed: int, epoch: int
               ) -> list[list[tuple[int, int]]]:
    """Batches of (video index, window start) for one epoch: a seeded permutation and random window starts."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n_videos)
    starts = [int(rng.integers(0, lengths[i] - seq_len + 1)) for i in order]
    pairs = list(zip(order.tolist(), starts, strict=True))
    return [pairs[k : k + batch_size] for k in range(0, len(pairs), batch_size)]


def load_batch(videos: VideoSet, items: Sequence[tuple[int, int]], seq_len: int, half_res: bool,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 frames (B, T, H, W) -> float frames and soft targets in [0, 1] (B, T, 1, H', W') on ``device``."""
    frames = np.stack([videos.cache.frames(videos.names[i])[s : s + seq_len] for i, s in items])
    labels = np.stack([videos.cache.labels(videos.names[i])[s : s + seq_len] for i, s in items])
    x = torch.from_numpy(frames).to(device).float().unsqueeze(2)
    y = torch.from_numpy(labels).to(device).float().unsqueeze(2) / 255.0
    if half_res:
        b, t = x.shape[:2]
        x = F.avg_pool2d(x.flatten(0, 1), 2).unflatten(0, (b, t))
        y = F.avg_pool2d(y.flatten(0, 1), 2).unflatten(0, (b, t))
    return x, y


def frame_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame Dice of boolean (T, H, W) masks; 1 where both are empty."""
    inter = (pred & target).flatten(1).sum(1).double()
    total = pred.flatten(1).sum(1).double() + target.flatten(1).sum(1).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


@torch.no_grad()
def validate(model, videos: VideoSet, device: torch.device, autocast, chunk: int = 64) -> dict[str, Any]:
    """Full-resolution causal pass over every validation video: BCE vs the teacher and Dice per threshold."""
    model.eval()
    thr = torch.tensor(THRESHOLDS, device=device, dtype=torch.float32)
    loss_sum, pixels = 0.0, 0
    dice_sum = torch.zeros(len(THRESHOLDS), dtype=torch.float64, device=device)
    frames_n = 0
    for name in videos.names:
        frames = videos.cache.frames(name, mmap=False)
        labels = videos.cache.labels(name, mmap=False)

        def window(a: int, b: int, frames=frames) -> torch.Tensor:
            return model.normalise(torch.from_numpy(frames[a:b]).to(device))[None]

        with autocast():  # warm start and spans of the student's horizon, as in ``predict``
            pieces = list(model.stream(window, len(frames), chunk))
        for s, stop, logits in pieces:
            y = torch.from_numpy(labels[s:stop]).to(device).float() / 255.0
            logits = logits[0, :, 0].float()
            loss_sum += float(F.binary_cross_entropy_with_logits(logits, y, reduction="sum"))
            pixels += y.numel()
            prob = torch.sigmoid(logits)
            teacher = torch.from_numpy(labels[s:stop]).to(device) >= TEACHER_CUT
            for k in range(len(THRESHOLDS)):
                dice_sum[k] += frame_dice(prob > thr[k], teacher).sum()
            frames_n += len(y)
    dice = (dice_sum / max(frames_n, 1)).cpu().numpy()
    # Best mean Dice; ties go to the threshold nearest 0.5.
    best = int(min(range(len(THRESHOLDS)), key=lambda k: (-round(float(dice[k]), 12), abs(THRESHOLDS[k] - 0.5))))
    return {"val_loss": loss_sum / max(pixels, 1), "val_dice": float(dice[best]),
            "threshold": float(THRESHOLDS[best]), "val_dice_at_0.5": float(dice[int(np.argmin(abs(THRESHOLDS - .5)))])}


def build_student(cfg: DistillConfig, mean: float, std: float, horizon: int | None = None):
    """The convlstm student of ``cfg`` normalising with the training frames' grey-level ``mean``/``std``; it
    segments videos in spans of ``horizon`` frames (default: ``cfg.seq_len``, the training window)."""
    extra = {} if cfg.warmup is None else {"warmup": cfg.warmup}
    return build_model("convlstm", cfg.model_config, blocks=cfg.blocks, layers=cfg.layers, skips=cfg.skips,
                       mean=mean, std=std, horizon=cfg.seq_len if horizon is None else horizon, **extra)


def train_student(cfg: DistillConfig, run: Run, train_set: VideoSet, val_set: VideoSet,
                  callbacks: Sequence[Callback] = (), progress: bool = True) -> dict[str, Any]:
    """Train (or continue) the student; return the training summary (best epoch, loss, Dice, threshold).

    The best weights end in ``checkpoints/best.safetensors`` with their threshold in the ``threshold`` buffer.
    """
    from accelerate.utils import set_seed  # deferred: heavy import, loaded only when this path runs


    cfg.validate()
    lengths = train_set.lengths()
    seq_len = min(cfg.seq_len, min(lengths))
    if seq_len < cfg.seq_len:
        run.log(f"--seq-len {cfg.seq_len} exceeds the shortest training video; using {seq_len} frames")
    accelerator = make_accelerator(cfg.precision, cfg.device, run)  # run: its --report-to trackers
    set_seed(cfg.seed)
    folder = run.path / artefacts.CKPT_DIR
    state = None if run.fresh else ckpt.load_training_state(folder)
    if state is not None:
        model, _ = artefacts.load_trained_model(run.path, "last", option="--resume")
    else:
        mean, std = frame_stats(train_set)
        model = build_student(cfg, mean, std, horizon=seq_len)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    book = {"epoch": 0, "best_loss": math.inf, "best_epoch": 0, "best_dice": None, "threshold": 0.5,
            "bad_epochs": 0, "elapsed": 0.0, "done": False, "stopped_early": False}
    ckpt.restore_book(run, folder, model, book, state, cfg.epochs, cfg.to_dict())
    if state is not None:
        run.log(f"resuming after epoch {book['epoch']} (best val loss {book['best_loss']:.5f} at {book['best_epoch']})")
    model, optimizer, raw = ckpt.prepare_and_restore(accelerator, model, optimizer, state)
    run.log(f"student convlstm B{cfg.blocks}L{cfg.layers}{' +skips' if cfg.skips else ''}: "
            f"{raw.num_parameters():,} parameters; {len(train_set.names)} train / {len(val_set.names)} val videos; "
            f"windows of {seq_len} frames{' at half resolution' if cfg.half_res else ''}")
    steps = cfg.epochs * -(-len(train_set.names) // cfg.batch_size)
    if steps < MIN_STEPS:
        run.log(f"note: at most {steps} optimizer steps ({cfg.epochs} epochs of {len(train_set.names)} videos in "
                f"batches of {cfg.batch_size}); a student needs ~{MIN_STEPS} or more to follow its teacher: raise "
                "--epochs or lower --batch-size")

    while not book["done"] and book["epoch"] < cfg.epochs:
        epoch = book["epoch"] + 1
        t0 = time.perf_counter()
        model.train()
        plan = epoch_plan(len(train_set.names), lengths, seq_len, cfg.batch_size, cfg.seed, epoch)
        sums = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        steps = track(plan, f"epoch {epoch}/{cfg.epochs}") if progress and accelerator.is_main_process else plan
        for items in steps:
            mine = items[accelerator.process_index :: accelerator.num_processes] or items[:1]
            x, y = load_batch(train_set, mine, seq_len, cfg.half_res, accelerator.device)
            with accelerator.autocast():
                logits = model(raw.normalise(x))
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            sums += torch.stack([loss.detach().double() * len(mine), torch.tensor(float(len(mine)),
                                                                                  device=sums.device).double()])
        if accelerator.num_processes > 1:
            sums = accelerator.reduce(sums, reduction="sum")
        val = validate(raw, val_set, accelerator.device, accelerator.autocast)
        seconds = time.perf_counter() - t0
        best = ({"best_loss": val["val_loss"], "best_dice": val["val_dice"], "threshold": val["threshold"]}
                if val["val_loss"] < book["best_loss"] else None)
        improved = ckpt.close_epoch(book, epoch, seconds, best, cfg.patience, cfg.epochs)
        row = {"epoch": epoch, "train_loss": float(sums[0] / sums[1].clamp(min=1)), **val, "time": seconds,
               "best": improved}
        run.log_metrics(row)
        if accelerator.is_main_process and run.writer:
            raw.threshold.fill_(val["threshold"])
            ckpt.save_epoch(folder, raw, book, val if improved else None, optimizer)
        accelerator.wait_for_everyone()
        run.log(f"epoch {epoch}: train bce {row['train_loss']:.5f}  val bce {val['val_loss']:.5f}  "
                f"val dice vs teacher {val['val_dice']:.4f} (threshold {val['threshold']:.2f})  {seconds:.1f}s"
                + ("  *best*" if improved else ""))
        for cb in callbacks:
            cb(row)
    if book["stopped_early"]:
        run.log(f"early stopping: no val loss improvement for {cfg.patience} epochs")
    return {"best_epoch": book["best_epoch"], "best_val_loss": book["best_loss"], "val_dice_vs_teacher":
            book["best_dice"], "threshold": book["threshold"], "epochs_run": book["epoch"],
            "stopped_early": book["stopped_early"], "train_time_s": book["elapsed"], "seq_len": seq_len,
            "train_videos": len(train_set.names), "val_videos": len(val_set.names)}
