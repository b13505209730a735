"""The training recipe (Synthetic Boost defaults, all overridable) and its optimizer/scheduler/loss builders.

Defaults: loss 1.0 x soft Dice + 0.2 x BCE; AdamW (weight decay 1e-3) at the model config's ``lr`` (2e-3 for
CLIPSeg); ReduceLROnPlateau (factor 0.1, patience 5) on the validation loss; gradient-norm clipping at 0.5; early
stopping when the validation Dice has not improved for 20 epochs; the best-validation-Dice checkpoint is kept and
evaluated on the test split at 512x512 with threshold 0.5.

``encoder`` (U-Net only) puts the U-Net on a ResNet encoder from a pretrain run, ImageNet weights or random
initialisation (:mod:`echoseg.core.models.unet_resnet`); ``train_fraction`` trains on a seeded patient-level subset of
the train split (:mod:`echoseg.core.data.subset`), the 1 % / 10 % / 100 % curves of SynCXR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from echoseg.core.config import StageConfig, check_all
from echoseg.core.errors import UserError
from echoseg.core.models import list_models
from echoseg.core.models.unet_resnet import parse_encoder
from echoseg.core.train.losses import DiceBCELoss
from echoseg.core.train.recipes import RECIPES


@dataclass
class TrainConfig(StageConfig):
    """Everything a training run depends on (recorded in run.json and checkpoints/model.json)."""

    model: str = "clipseg"
    model_config: str = "tiny"
    weights: str | None = None
    input_size: int | None = None  # overrides the model config (small values for tests)
    prompt: str = "p7"
    freeze_encoders: bool = False
    encoder: str | None = None  # U-Net only: vlp:PRETRAIN_RUN, imagenet:FILE or random
    train_fraction: float = 1.0  # seeded patient-level subset of the train split
    epochs: int = 100
    min_epochs: int = 0  # early stopping cannot end a run before epoch min(min_epochs, epochs)
    batch_size: int = 32
    lr: float | None = None  # None: the model config's lr
    weight_decay: float = 1e-3
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    grad_clip: float = 0.5
    early_stop_patience: int = 20
    dice_weight: float = 1.0
    bce_weight: float = 0.2
    threshold: float = 0.5
    eval_size: int = 512
    augment: bool = False
    precision: str = "no"
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    init_from: str | None = None
    cache_dir: str | None = None
    recipe: str | None = None  # a named recipe (echoseg.core.train.recipes) that filled the options left alone
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise UserError on out-of-range values, naming the option."""
        segmenters = list_models("segmentation")
        checks = [
            (self.model in segmenters, f"--model {self.model!r}: not a segmentation model (known: "
             f"{', '.join(segmenters)})"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (0 < self.plateau_factor < 1, f"plateau_factor must be in (0, 1), got {self.plateau_factor}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0 (0 disables), got {self.grad_clip}"),
            (self.early_stop_patience >= 1, f"early_stop_patience must be >= 1, got {self.early_stop_patience}"),
            (0 < self.threshold < 1, f"--threshold must be in (0, 1), got {self.threshold}"),
            (self.eval_size >= 8, f"eval_size must be >= 8, got {self.eval_size}"),
            (self.input_size is None or self.input_size >= 8, f"input_size must be >= 8, got {self.input_size}"),
            (self.precision in ("no", "fp16", "bf16"), f"--precision must be no, fp16 or bf16, got {self.precision!r}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.encoder is None or self.model == "unet", f"--encoder: only the U-Net takes a ResNet encoder "
             f"(--model unet), not --model {self.model!r}"),
            (0 < self.train_fraction <= 1, f"--train-fraction must be in (0, 1], got {self.train_fraction}"),
            (self.min_epochs >= 0, f"--min-epochs must be >= 0, got {self.min_epochs}"),
            (self.recipe in (None, *RECIPES), f"--recipe must be one of {', '.join(RECIPES)}, got {self.recipe!r}"),
        ]
        check_all(checks)
        if self.encoder is not None:
            parse_encoder(self.encoder)


def make_loss(cfg: TrainConfig) -> DiceBCELoss:
    """The Dice + BCE loss with the recipe's weights."""
    return DiceBCELoss(cfg.dice_weight, cfg.bce_weight)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only (frozen encoders get no optimizer state)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("no trainable parameters (every parameter is frozen)")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """ReduceLROnPlateau on the validation loss."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
