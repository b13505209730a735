"""The pre-training loop: accelerate (devices, mixed precision, DDP), the shared epoch engine, exact resume.

One epoch: this process's batches of a permutation seeded by (seed, epoch) (``engine.batches``); per step the model
embeds the batch, the method's objective gathers negatives from every process (``objectives``), AdamW steps and the
warm-up + cosine schedule advances. MGCA's prototypes are re-normalised before each step and get no update during
the first ``freeze_prototypes_epochs`` epochs. Validation runs fixed batches of the validation pairs (each process
takes every N-th batch, so the losses equal a single process's) and image<->text retrieval over the whole split.
The lowest validation loss is kept in ``checkpoints/best.*``, the full state in ``checkpoints/last.*`` after every
epoch; ``--resume`` continues exactly (weights, optimizer, schedule, counters, RNG states).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed

from echoseg.core.console import track
from echoseg.core.data.cache import build_cache, default_cache_dir
from echoseg.core.engine import checkpoint as ckpt
from echoseg.core.engine.batches import epoch_batches, sum_reduce
from echoseg.core.env import make_accelerator
from echoseg.core.models import artefacts, build_model
from echoseg.core.models.vlp_text import TOKENIZER_DIR, train_wordpiece
from echoseg.core.pretrain import losses as L
from echoseg.core.pretrain import outputs
from echoseg.core.pretrain.config import PretrainConfig
from echoseg.core.pretrain.data import PairData, PairImages, cache_frame
from echoseg.core.pretrain.init import init_model
from echoseg.core.pretrain.objectives import TERMS, Collective, hyperparameters, objective
from echoseg.core.pretrain.retrieval import chance_recall, retrieval_recall
from echoseg.core.runs import Run

Callback = Callable[[dict[str, Any]], None]


class Split:
    """One split's pairs on this process: normalised images from the cache and pre-tokenized texts."""

    def __init__(self, pairs: PairData, model, cfg: PretrainConfig, accelerator, progress: bool) -> None:
        self.pairs = pairs
        folder = default_cache_dir() if not cfg.cache_dir else cfg.cache_dir
        with accelerator.main_process_first():
            cache = build_cache(cache_frame(pairs), model.input_size, folder,
                                progress=progress and accelerator.is_main_process)
        self.images = PairImages(pairs, cache, model.mean, model.std)
        self.texts = pairs.frame["text"].tolist()
        tok = model.tokenize(self.texts)
        self.input_ids, self.attention_mask = tok["input_ids"], tok["attention_mask"]

    def __len__(self) -> int:
        return len(self.texts)

    def batch(self, idx: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, token ids and attention masks of the pairs at ``idx``, on ``device``."""
        ids = torch.as_tensor(list(idx))
        return (self.images.batch(idx).to(device, non_blocking=True), self.input_ids[ids].to(device),
                self.attention_mask[ids].to(device))


def _schedule(optimizer, cfg: PretrainConfig, steps_per_epoch: int):
    from transformers import get_cosine_schedule_with_warmup  # deferred: transformers is heavy

    total = max(1, cfg.epochs * steps_per_epoch)
    return get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_fraction * total), total)


def _prepare_tokenizer(cfg: PretrainConfig, run: Run, train_pairs: PairData, accelerator) -> Any:
    """For a tiny (random) text encoder: train its WordPiece vocabulary on the training texts (main process, once);
    returns the assets folder the model is built with (None for a pretrained encoder)."""
    mc = cfg.model_dict()
    if mc.get("text_encoder") or cfg.init_from:
        return None
    folder = run.path / artefacts.CKPT_DIR
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (folder / TOKENIZER_DIR).is_dir():
            train_wordpiece(sorted(set(train_pairs.frame["text"])), int(mc.get("vocab_size", 1000)),
                            folder / TOKENIZER_DIR)
    return folder


def train_step(model, raw, split: Split, idx: Sequence[int], cfg: PretrainConfig, hp: dict, coll: Collective,
               optimizer, scheduler, accelerator, freeze_prototypes: bool) -> torch.Tensor:
    """One optimisation step; returns the batch's loss terms (detached, in ``TERMS`` order) on the device."""
    images, ids, mask = split.batch(idx, accelerator.device)
    if cfg.method == "mgca":
        L.normalize_prototypes_(raw.prototype_layer.weight)
    with accelerator.autocast():
        out = model(images, ids, mask)
        loss, terms = objective(out, cfg.method, hp, coll)
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    if freeze_prototypes:
        raw.prototype_layer.weight.grad = None
    if cfg.grad_clip > 0:
        accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return torch.stack([terms[t].float() for t in TERMS[cfg.method]])


@torch.no_grad()
def validate(raw, split: Split, cfg: PretrainConfig, hp: dict, accelerator) -> dict[str, float]:
    """Validation loss terms (fixed batches, the same as one process's) and retrieval recall@1/5."""
    raw.eval()
    if cfg.method == "mgca":
        L.normalize_prototypes_(raw.prototype_layer.weight)
    n, names = len(split), TERMS[cfg.method]
    batches = [list(range(i, min(i + cfg.batch_size, n))) for i in range(0, n, cfg.batch_size)]
    sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=accelerator.device)
    img = torch.zeros(n, raw.embed_dim, dtype=torch.float32, device=accelerator.device)
    txt = torch.zeros_like(img)
    for idx in batches[accelerator.process_index::accelerator.num_processes]:
        images, ids, mask = split.batch(idx, accelerator.device)
        with accelerator.autocast():
            out = raw(images, ids, mask)
            _, terms = objective(out, cfg.method, hp, Collective())
        b = len(idx)
        sums += torch.tensor([float(terms[t]) * b for t in names] + [b], dtype=torch.float64, device=sums.device)
        img[idx] = F.normalize(out.img_global.float(), dim=-1)
        txt[idx] = F.normalize(out.txt_global.float(), dim=-1)
    totals = sum_reduce(accelerator, sums.tolist())
    if accelerator.num_processes > 1:
        img, txt = accelerator.reduce(img, reduction="sum"), accelerator.reduce(txt, reduction="sum")
    count = max(totals[-1], 1.0)
    row = {f"val_{t}": totals[i] / count for i, t in enumerate(names)}
    row.update(retrieval_recall(img.cpu(), txt.cpu(), split.texts))
    raw.train()
    return row


def pretrain(cfg: PretrainConfig, run: Run, train_pairs: PairData, val_pairs: PairData,
             callbacks: Sequence[Callback] = (), progress: bool = True) -> dict[str, Any]:
    """Pre-train (or, for a resumed run, continue) and write the run's encoders and summaries.

    Args:
        cfg: the recipe and options.
        run: the run directory (``run.fresh`` False: resume from ``checkpoints/last.*``).
        train_pairs, val_pairs: the pairs of each split.
        callbacks: called after every epoch (once its checkpoint is saved) with the metrics row; raising
            KeyboardInterrupt there stops the run as Ctrl-C would.
    Returns:
        The summary written to ``summary.json``.
    """
    cfg.validate()
    hp = hyperparameters(cfg.method, cfg.loss)
    accelerator = make_accelerator(cfg.precision, cfg.device, run)  # run: its --report-to trackers
    set_seed(cfg.seed)
    folder = run.path / artefacts.CKPT_DIR
    assets = _prepare_tokenizer(cfg, run, train_pairs, accelerator)
    if cfg.init_from and run.fresh:
        model, note = init_model(cfg)
        run.log(note)
    else:
        model = build_model("vlp", cfg.model_dict(), assets=assets or (None if run.fresh else folder))
    train_split = Split(train_pairs, model, cfg, accelerator, progress)
    val_split = Split(val_pairs, model, cfg, accelerator, progress)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate(),
                                  betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    world, rank = accelerator.num_processes, accelerator.process_index
    steps_per_epoch = len(epoch_batches(len(train_split), cfg.batch_size, cfg.seed, 1, True, rank, world))
    scheduler = _schedule(optimizer, cfg, steps_per_epoch)

    state = None if run.fresh else ckpt.load_training_state(folder)
    book = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "bad_epochs": 0, "elapsed": 0.0,
            "time_to_best": None, "done": False, "stopped_early": False}
    ckpt.restore_book(run, folder, model, book, state, cfg.epochs, cfg.to_dict())
    if state is not None:
        artefacts.load_weights(model, folder / "last.safetensors")
        run.log(f"resuming after epoch {book['epoch']} (best val loss {book['best_val_loss']:.4f} at "
                f"{book['best_epoch']})")
    model, optimizer, raw = ckpt.prepare_and_restore(accelerator, model, optimizer, state, scheduler)
    coll = Collective(world)
    names = TERMS[cfg.method]

    while not book["done"] and book["epoch"] < cfg.epochs:
        epoch = book["epoch"] + 1
        t0 = time.perf_counter()
        model.train()
        batches = epoch_batches(len(train_split), cfg.batch_size, cfg.seed, epoch, True, rank, world)
        frozen = cfg.method == "mgca" and epoch <= int(hp["freeze_prototypes_epochs"])
        sums = torch.zeros(len(names), dtype=torch.float32, device=accelerator.device)
        it = track(batches, f"epoch {epoch}/{cfg.epochs}") if (progress and accelerator.is_main_process) else batches
        for idx in it:
            sums += train_step(model, raw, train_split, idx, cfg, hp, coll, optimizer, scheduler, accelerator,
                               frozen)
        train_means = [v / (len(batches) * world) for v in sum_reduce(accelerator, sums.tolist())]
        lr_now = optimizer.param_groups[0]["lr"]
        val = validate(raw, val_split, cfg, hp, accelerator)
        seconds = time.perf_counter() - t0
        improved = ckpt.close_epoch(book, epoch, seconds, {"best_val_loss": val["val_loss"]} if (
            val["val_loss"] < book["best_val_loss"]) else None, cfg.early_stop_patience, cfg.epochs)
        row = {"epoch": epoch, **{f"train_{t}": v for t, v in zip(names, train_means, strict=True)}, **val,
               "lr": lr_now, "time": seconds, "best": improved}
        run.log_metrics(row)
        if accelerator.is_main_process and run.writer:
            ckpt.save_epoch(folder, raw, book, {"val_loss": val["val_loss"], "i2t_r1": val["i2t_r1"]} if improved
                            else None, optimizer, scheduler)
        accelerator.wait_for_everyone()
        run.log(f"epoch {epoch}: train loss {row['train_loss']:.4f}  val loss {val['val_loss']:.4f}  "
                f"i2t R@1 {val['i2t_r1']:.3f}  t2i R@1 {val['t2i_r1']:.3f}  lr {lr_now:.2e}  {seconds:.1f}s"
                + ("  *best*" if improved else ""))
        for cb in callbacks:
            cb(row)
    if book["stopped_early"]:
        run.log(f"early stopping: no val loss improvement for {cfg.early_stop_patience} epochs")

    artefacts.load_weights(raw, folder / "best.safetensors")
    best = validate(raw, val_split, cfg, hp, accelerator)
    chance = {f"chance_r{k}": chance_recall(val_split.texts, k) for k in (1, 5)}
    summary: dict[str, Any] = {
        "method": cfg.method, "model_config": cfg.model_config, "image_encoder": raw.image.arch,
        "text_encoder": cfg.model_dict().get("text_encoder") or "tiny (WordPiece trained on the run's texts)",
        "text": cfg.text, "init_from": cfg.init_from,
        "data": {"train": train_pairs.summary(), "val": val_pairs.summary()},
        "best_epoch": book["best_epoch"], "best_val_loss": book["best_val_loss"], "epochs_run": book["epoch"],
        "stopped_early": book["stopped_early"], "train_time_s": book["elapsed"],
        "retrieval": {**{k: v for k, v in best.items() if "_r" in k}, **chance, "pairs": len(val_split)},
        "loss_settings": hp,
    }
    if accelerator.is_main_process and run.writer:
        outputs.write_outputs(run, raw, val_split, cfg, hp, summary)
    run.write_summary(summary)
    accelerator.wait_for_everyone()
    return summary
