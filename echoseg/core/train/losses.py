"""The training loss: weighted soft Dice + binary cross-entropy, computed from logits.

``loss = dice_weight * soft_dice + bce_weight * bce`` (paper defaults 1.0 and 0.2). Both terms are computed in
float32 from the logits: BCE through ``binary_cross_entropy_with_logits`` (log-sum-exp stable, no sigmoid
round trip) and Dice from ``sigmoid(logits)``. Unlike the authors' MONAI ``DiceCELoss`` with one output channel,
where the cross-entropy term silently became zero, the BCE term here is always present.

Soft Dice per sample ``b``: ``1 - (2 sum(p t) + smooth_nr) / (sum(p) + sum(t) + smooth_dr)`` over pixels, then
averaged over the batch (MONAI's smoothing defaults, 1e-5 each, so an empty target with an empty prediction
costs ~0). BCE is the mean over all pixels of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth_nr: float = 1e-5,
                   smooth_dr: float = 1e-5) -> torch.Tensor:
    """Per-sample soft Dice loss (B,) from logits (B, 1, H, W) and a binary target of the same shape."""
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    inter = (p * t).sum(1)
    denom = p.sum(1) + t.sum(1)
    return 1.0 - (2.0 * inter + smooth_nr) / (denom + smooth_dr)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample binary cross-entropy (B,), the mean over each sample's pixels."""
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return per_pixel.flatten(1).mean(1)


@dataclass
class LossParts:
    """The total loss and its (unweighted) terms, each averaged over the batch."""

    total: torch.Tensor
    dice: torch.Tensor
    bce: torch.Tensor


class DiceBCELoss(nn.Module):
    """``dice_weight`` x soft Dice + ``bce_weight`` x BCE, from logits."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 0.2, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5) -> None:
        super().__init__()
        self.dice_weight, self.bce_weight = float(dice_weight), float(bce_weight)
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)

    def per_sample(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted loss of each sample (B,)."""
        return (self.dice_weight * soft_dice_loss(logits, target, self.smooth_nr, self.smooth_dr)
                + self.bce_weight * bce_loss(logits, target))

    def parts(self, logits: torch.Tensor, target: torch.Tensor) -> LossParts:
        """Total and terms, averaged over the batch."""
        dice = soft_dice_loss(logits, target, self.smooth_nr, self.smooth_dr).mean()
        bce = bce_loss(logits, target).mean()
        return LossParts(self.dice_weight * dice + self.bce_weight * bce, dice, bce)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The batch-mean weighted loss."""
        return self.parts(logits, target).total


def hard_dice(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-sample Dice (B,) of ``sigmoid(logits) > threshold`` against a binary target; 1 when both are empty."""
    pred = (torch.sigmoid(logits.float()) > threshold).flatten(1).float()
    t = (target > 0.5).flatten(1).float()
    inter = (pred * t).sum(1)
    denom = pred.sum(1) + t.sum(1)
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))
