"""``echoseg eval probe --finetune``: the pre-trained image backbone and a linear head trained end to end on one
training subset, the recipe of the papers' fine-tuning evaluations (SynCXR follows MGCA's ``SSLFineTuner``).

- Model: a copy of the pre-trained backbone (its pooled feature, as ``VLPModel.image_features``; the pre-training
  heads are dropped) and ``Linear(feature_dim, classes)``; every parameter trains.
- Optimisation: AdamW, lr 1e-4, betas (0.9, 0.999), weight decay 1e-6 (MGCA's fine-tuner, which SynCXR uses; GLoRIA
  fine-tunes with Adam and weight decay 1e-6), cross-entropy, no augmentation, no schedule.
- Epochs: per-process batches of a permutation seeded by (seed, epoch) (the shared epoch engine), the validation
  cross-entropy after every epoch; ``early_stop_patience`` epochs without improvement stop training, and the weights
  of the lowest validation loss (kept in memory) are scored. Through accelerate (devices, mixed precision, DDP).
- No checkpoints and no resume: a fraction retrains in seconds to minutes, so an interrupted run is simply rerun.
"""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echoseg.core.console import track
from echoseg.core.engine.batches import epoch_batches, sum_reduce
from echoseg.core.engine.checkpoint import close_epoch
from echoseg.core.models.vlp import ImageEncoder, VLPModel
from echoseg.core.pretrain.data import PairImages
from echoseg.core.runs import Run

if TYPE_CHECKING:
    from echoseg.core.eval.probe import EvalProbeConfig


class Classifier(nn.Module):
    """A pre-trained image backbone (pooled feature) and a linear head."""

    def __init__(self, encoder: ImageEncoder, classes: int) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder)
        self.encoder.global_embed = None  # the pre-training heads take no part (and would idle under DDP)
        self.encoder.local_embed = None
        self.encoder.requires_grad_(True)
        self.head = nn.Linear(self.encoder.feature_dim, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, K) of normalised images."""
        return self.head(self.encoder.features(images)[0])


def _batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This process's training batches; a last batch of one image joins the one before (batch norm needs two)."""
    batches = epoch_batches(n, batch_size, seed, epoch, True, rank, world)
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())
    return batches


@torch.no_grad()
def _logits(raw: Classifier, images: PairImages, rows: np.ndarray, batch_size: int, accelerator) -> torch.Tensor:
    """Logits (len(rows), K) in eval mode, float32 on the CPU."""
    raw.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        with accelerator.autocast():
            out.append(raw(images.batch(rows[i:i + batch_size]).to(accelerator.device)).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def _val_loss(raw: Classifier, images: PairImages, labels: np.ndarray, rows: np.ndarray, batch_size: int,
              accelerator) -> float:
    """Mean validation cross-entropy; each process takes every N-th batch, so it equals one process's."""
    raw.eval()
    chunks = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    total = 0.0
    for idx in chunks[accelerator.process_index::accelerator.num_processes]:
        with accelerator.autocast():
            logits = raw(images.batch(idx).to(accelerator.device)).float()
        total += float(F.cross_entropy(logits, torch.tensor(labels[idx], device=logits.device), reduction="sum"))
    return sum_reduce(accelerator, [total])[0] / max(len(rows), 1)


def finetune_fraction(cfg: EvalProbeConfig, model: VLPModel, images: PairImages, labels: np.ndarray,
                      train: np.ndarray, val: np.ndarray, test: np.ndarray, k: int, accelerator, run: Run,
                      fraction: float, progress: bool = True) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Fine-tune on the images at ``train`` (early stopping on ``val``) and return the softmax probabilities
    (len(test), k) of the best-on-val weights on the images at ``test`` (None on a non-main process) and the
    training record (epochs run, best epoch, its val loss, early stop). Every epoch goes to metrics.jsonl."""
    from accelerate.utils import set_seed  # deferred: accelerate loads with the stage, not the CLI

    set_seed(cfg.seed)
    clf = Classifier(model.image, k)
    optimizer = torch.optim.AdamW(clf.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    clf, optimizer = accelerator.prepare(clf, optimizer)
    raw = accelerator.unwrap_model(clf)
    book = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "bad_epochs": 0, "elapsed": 0.0,
            "done": False, "stopped_early": False}
    best_state = {n: t.detach().cpu().clone() for n, t in raw.state_dict().items()}
    rank, world = accelerator.process_index, accelerator.num_processes
    y = torch.tensor(np.asarray(labels), dtype=torch.long)
    while not book["done"]:
        epoch = book["epoch"] + 1
        t0 = time.perf_counter()
        clf.train()
        batches = _batches(len(train), cfg.batch_size, cfg.seed, epoch, rank, world)
        it = track(batches, f"fraction {fraction:g} epoch {epoch}") if (progress and accelerator.is_main_process) \
            else batches
        sums = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        for idx in it:
            rows = train[idx]
            with accelerator.autocast():
                loss = F.cross_entropy(clf(images.batch(rows).to(accelerator.device)).float(),
                                       y[rows].to(accelerator.device))
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            sums += torch.tensor([float(loss.detach()) * len(rows), len(rows)], dtype=torch.float64, device=sums.device)
        loss_sum, count = sum_reduce(accelerator, sums.tolist())
        val_loss = _val_loss(raw, images, labels, val, cfg.batch_size, accelerator)
        improved = close_epoch(book, epoch, time.perf_counter() - t0,
                               {"best_val_loss": val_loss} if val_loss < book["best_val_loss"] else None,
                               cfg.early_stop_patience, cfg.epochs)
        if improved:
            best_state = {n: t.detach().cpu().clone() for n, t in raw.state_dict().items()}
        run.log_metrics({"fraction": fraction, "epoch": epoch, "train_loss": loss_sum / max(count, 1.0),
                         "val_loss": val_loss, "improved": improved})
    raw.load_state_dict(best_state)
    info = {"epochs_run": book["epoch"], "best_epoch": book["best_epoch"], "best_val_loss": book["best_val_loss"],
            "stopped_early": book["stopped_early"]}
    probs = None
    if accelerator.is_main_process:  # the others wait at the caller's barrier
        probs = torch.softmax(_logits(raw, images, test, cfg.batch_size, accelerator), dim=1).double().numpy()
    accelerator.free_memory()
    return probs, info
