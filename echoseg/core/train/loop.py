"""The training loop: accelerate for devices, mixed precision and DDP; exact resume; best-Dice test evaluation.

One epoch: a permutation seeded by (seed, epoch), sharded across processes; AdamW steps on Dice + BCE with
gradient clipping; validation loss and Dice (at the input size, threshold 0.5) reduced across processes;
ReduceLROnPlateau on the validation loss; the best validation Dice kept in ``checkpoints/best.*``; the full state
in ``checkpoints/last.*`` after every epoch; early stopping on validation Dice. After training, the best weights
are evaluated on the test split (``per_sample.csv``, ``summary.json``, ``predictions.png``).

``--resume`` reloads ``last.*`` (weights, optimizer, scheduler, counters, RNG states) and continues at the next
epoch; prompt draws, augmentation and shuffling depend only on (seed, epoch, index), so a resumed run repeats
an uninterrupted one. A resumed run rebuilds its model from its own ``checkpoints/model.json``, so the sources of
its first weights (``--weights``, ``--encoder``'s pretrain run) are not needed again. ``--train-fraction`` draws its
patients from (seed, fraction) alone, so a resumed run trains on the same subset. Only the main process writes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from echoseg.core.console import track
from echoseg.core.data.manifest import SplitData, check_prompt_columns, prompt_columns
from echoseg.core.data.subset import patient_fraction, subset_record
from echoseg.core.engine import checkpoint as ckpt
from echoseg.core.engine.batches import epoch_batches, sum_reduce
from echoseg.core.env import make_accelerator
from echoseg.core.errors import UserError
from echoseg.core.io import read_json
from echoseg.core.models import artefacts, build_model, get_config
from echoseg.core.runs import Run
from echoseg.core.train.dataset import SegDataset, collate
from echoseg.core.train.evaluate import cache_for, evaluate_into_run
from echoseg.core.train.losses import DiceBCELoss, hard_dice
from echoseg.core.train.recipe import TrainConfig, make_loss, make_optimizer, make_scheduler

Callback = Callable[[dict[str, Any]], None]


def init_from_run(model, run_dir: str | Path) -> dict[str, Any]:
    """Load the best weights of another training run into ``model`` (same model and architecture)."""
    path = artefacts.find_checkpoint(run_dir, "best", "--init-from")
    info = read_json(path.parent / "model.json")
    if info.get("name") != model.name:
        raise UserError(f"--init-from {run_dir}: that run trained {info.get('name')!r}, not {model.name!r}")
    theirs, ours = info.get("spec", {}).get("architecture"), model.spec().get("architecture")
    if theirs != ours:  # the plain U-Net and the ResNet U-Net share the name unet
        raise UserError(f"--init-from {run_dir}: that run's encoder is {theirs or 'none (plain U-Net)'}, this one's "
                        f"{ours or 'none (plain U-Net)'}; give the same --encoder architecture")
    try:
        artefacts.load_weights(model, path)
    except RuntimeError as exc:
        raise UserError(f"--init-from {run_dir}: weights do not fit this --config ({str(exc)[:160]})") from None
    return info


@torch.no_grad()
def validate(model, ds: SegDataset, loss_fn: DiceBCELoss, accelerator, cfg: TrainConfig) -> tuple[float, float]:
    """Validation loss and mean Dice (threshold ``cfg.threshold`` at the input size), over all processes."""
    model.eval()
    batches = epoch_batches(len(ds), cfg.batch_size, cfg.seed, 0, False, accelerator.process_index,
                            accelerator.num_processes)
    loss_sum, dice_sum, n = 0.0, 0.0, 0
    for idx in batches:
        batch = collate([ds[i] for i in idx])
        images, target = batch["image"].to(accelerator.device), batch["target"].to(accelerator.device)
        with accelerator.autocast():
            logits = model(images, batch["text"], batch["structure"].to(accelerator.device))
        loss_sum += float(loss_fn.per_sample(logits, target).sum())
        dice_sum += float(hard_dice(logits, target, cfg.threshold).sum())
        n += len(idx)
    loss_sum, dice_sum, n = sum_reduce(accelerator, [loss_sum, dice_sum, n])
    return loss_sum / max(n, 1), dice_sum / max(n, 1)


def train_step(model, batch: dict, loss_fn: DiceBCELoss, optimizer, accelerator, trainable: list,
               grad_clip: float) -> torch.Tensor:
    """One optimisation step; returns batch-size-weighted [loss, dice term, bce term, batch size] on the device."""
    images = batch["image"].to(accelerator.device, non_blocking=True)
    target = batch["target"].to(accelerator.device, non_blocking=True)
    with accelerator.autocast():
        logits = model(images, batch["text"], batch["structure"].to(accelerator.device))
    parts = loss_fn.parts(logits, target)
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(parts.total)
    if grad_clip > 0:
        accelerator.clip_grad_norm_(trainable, grad_clip)
    optimizer.step()
    b = float(images.shape[0])
    return torch.stack([parts.total.detach() * b, parts.dice.detach() * b, parts.bce.detach() * b,
                        torch.full((), b, device=parts.total.device)])


def train_subset(cfg: TrainConfig, split: SplitData) -> tuple[SplitData, dict[str, Any]]:
    """The ``--train-fraction`` subset of the train split (seeded by the run's seed) and its record."""
    frame = patient_fraction(split.frame, cfg.train_fraction, cfg.seed)
    return dataclasses.replace(split, frame=frame), subset_record(split.frame, frame, cfg.train_fraction, cfg.seed)


def _sources(split: SplitData | None) -> dict[str, Any] | None:
    if split is None:
        return None
    src = sorted(split.frame["source"].astype(str).unique()) if "source" in split.frame else []
    return {"data": str(split.source), "samples": len(split.frame), "source": src}


def train(
    cfg: TrainConfig,
    run: Run,
    train_split: SplitData,
    val_split: SplitData,
    test_split: SplitData | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or, for a resumed run, continue) and evaluate the best model on ``test_split``.

    Args:
        cfg: the recipe and options.
        run: the run directory (``run.fresh`` False means resume from ``checkpoints/last.*``).
        train_split, val_split, test_split: rows and source runs of each split.
        callbacks: called after every epoch (once its checkpoint is saved) with the metrics row; raising
            KeyboardInterrupt there stops the run as Ctrl-C would.
    Returns:
        The summary written to ``summary.json``.
    """
    cfg.validate()
    cols = prompt_columns(cfg.prompt)
    accelerator = make_accelerator(cfg.precision, cfg.device, run)  # run: its --report-to trackers
    set_seed(cfg.seed)
    folder = run.path / artefacts.CKPT_DIR
    state = None if run.fresh else ckpt.load_training_state(folder)
    if state is not None:  # continue the model the run saved, without its first weights' sources
        info = artefacts.read_model_info(folder, "--resume", run.path)
        model = build_model(info["name"], info["spec"], assets=folder)
    else:
        model = build_model(cfg.model, cfg.model_config, weights=cfg.weights, input_size=cfg.input_size,
                            encoder=cfg.encoder)
    encoder_init = getattr(model, "encoder_init", None)
    if cfg.encoder is not None:
        run.log(f"encoder: {encoder_init}")
    train_split, subset = train_subset(cfg, train_split)
    if cfg.train_fraction < 1:
        run.log(f"--train-fraction {cfg.train_fraction}: {subset['patients']} of {subset['of_patients']} patients, "
                f"{subset['rows']} of {subset['of_rows']} samples (seed {cfg.seed})")
    for name, split in (("train", train_split), ("val", val_split), ("test", test_split)):
        if split is not None:
            check_prompt_columns(split.frame, cols, f"--{name}-data {split.source}", model.uses_text)
    if cfg.init_from and run.fresh:
        init_from_run(model, cfg.init_from)
        run.log(f"initialised from {cfg.init_from} (best weights; new optimizer and schedule)")
    if cfg.freeze_encoders:
        n = model.freeze_encoders()
        if n == 0:
            hint = " (give --encoder for the U-Net on a ResNet encoder)" if cfg.model == "unet" else ""
            raise UserError(f"--freeze-encoders: model {cfg.model!r} has no pretrained encoders to freeze{hint}")
        run.log(f"froze {n} encoder parameter tensors")
    lr = cfg.lr if cfg.lr is not None else float(get_config(cfg.model, cfg.model_config).get("lr", 1e-3))
    optimizer = make_optimizer(model, lr, cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg)
    loss_fn = make_loss(cfg)

    size = model.input_size
    train_ds = SegDataset(train_split.frame, cache_for(train_split, size, cfg, accelerator, progress), model.mean,
                          model.std, cols, cfg.seed, cfg.augment, model.uses_text)
    val_ds = SegDataset(val_split.frame, cache_for(val_split, size, cfg, accelerator, progress), model.mean,
                        model.std, cols[:1], cfg.seed, False, model.uses_text)

    book = {"epoch": 0, "best_dice": -math.inf, "best_epoch": 0, "bad_epochs": 0, "elapsed": 0.0,
            "time_to_best": None, "done": False, "stopped_early": False}
    ckpt.restore_book(run, folder, model, book, state, cfg.epochs, cfg.to_dict())
    if state is not None:
        artefacts.load_weights(model, folder / "last.safetensors")
        run.log(f"resuming after epoch {book['epoch']} (best val dice {book['best_dice']:.4f} at {book['best_epoch']})")
    model, optimizer, raw = ckpt.prepare_and_restore(accelerator, model, optimizer, state, scheduler)
    trainable = [p for p in model.parameters() if p.requires_grad]

    while not book["done"] and book["epoch"] < cfg.epochs:
        epoch = book["epoch"] + 1
        t0 = time.perf_counter()
        model.train()
        train_ds.set_epoch(epoch)
        batches = epoch_batches(len(train_ds), cfg.batch_size, cfg.seed, epoch, True, accelerator.process_index,
                                accelerator.num_processes)
        loader = DataLoader(train_ds, batch_sampler=batches, collate_fn=collate, num_workers=cfg.num_workers,
                            pin_memory=accelerator.device.type == "cuda")
        sums = torch.zeros(4, dtype=torch.float32, device=accelerator.device)  # on device: no per-step sync
        it = track(loader, f"epoch {epoch}/{cfg.epochs}", total=len(batches)) if (
            progress and accelerator.is_main_process) else loader
        for batch in it:
            sums += train_step(model, batch, loss_fn, optimizer, accelerator, trainable, cfg.grad_clip)
        total, dice_l, bce_l, n = sum_reduce(accelerator, sums.tolist())
        val_loss, val_dice = validate(raw, val_ds, loss_fn, accelerator, cfg)  # unwrapped: no DDP collectives
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step(val_loss)
        seconds = time.perf_counter() - t0
        best = {"best_dice": val_dice} if val_dice > book["best_dice"] else None
        improved = ckpt.close_epoch(book, epoch, seconds, best, cfg.early_stop_patience, cfg.epochs,
                                    min_epochs=cfg.min_epochs)
        row = {"epoch": epoch, "train_loss": total / n, "train_dice_loss": dice_l / n, "train_bce": bce_l / n,
               "val_loss": val_loss, "val_dice": val_dice, "lr": lr_now, "time": seconds, "best": improved}
        run.log_metrics(row)
        if accelerator.is_main_process and run.writer:
            ckpt.save_epoch(folder, raw, book, {"val_dice": val_dice, "val_loss": val_loss} if improved else None,
                            optimizer, scheduler)
        accelerator.wait_for_everyone()
        run.log(f"epoch {epoch}: train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
                f"val dice {val_dice:.4f}  lr {lr_now:.2e}  {seconds:.1f}s" + ("  *best*" if improved else ""))
        for cb in callbacks:
            cb(row)
    if book["stopped_early"]:
        run.log(f"early stopping: no val dice improvement for {cfg.early_stop_patience} epochs")

    summary: dict[str, Any] = {
        "model": cfg.model, "model_config": cfg.model_config, "prompt": cfg.prompt,
        "freeze_encoders": cfg.freeze_encoders, "init_from": cfg.init_from, "encoder": encoder_init,
        "data": {"train": {**_sources(train_split), "subset": subset}, "val": _sources(val_split),
                 "test": _sources(test_split)},
        "best_epoch": book["best_epoch"], "best_val_dice": book["best_dice"], "time_to_best_s": book["time_to_best"],
        "epochs_run": book["epoch"], "stopped_early": book["stopped_early"], "train_time_s": book["elapsed"],
    }
    if test_split is not None:
        # Every process: the test caches are built collectively; the main process then scores the whole split
        # while the others wait at a barrier inside (see evaluate_into_run). Non-main processes get None.
        artefacts.load_weights(raw, folder / "best.safetensors")
        summary["test"] = evaluate_into_run(raw, test_split, cols, cfg, accelerator, run, progress=progress)
    run.write_summary(summary)
    accelerator.wait_for_everyone()
    return summary
