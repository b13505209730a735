"""Loss values against hand-computed ones, including the BCE term of a single output channel."""

from __future__ import annotations

import math

import pytest
import torch

from echoseg.core.train.losses import DiceBCELoss, bce_loss, hard_dice, soft_dice_loss


def _two_pixels():
    # sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75; target (1, 0)
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    target = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    return logits, target


def test_soft_dice_by_hand():
    logits, target = _two_pixels()
    # intersection 0.5, sum(p) 1.25, sum(t) 1
    expected = 1 - (2 * 0.5 + 1e-5) / (2.25 + 1e-5)
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_bce_by_hand_single_channel():
    logits, target = _two_pixels()
    expected = (math.log(2.0) + math.log(4.0)) / 2  # -ln 0.5 and -ln(1 - 0.75)
    assert bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_total_is_weighted_sum_and_bce_is_not_dropped():
    logits, target = _two_pixels()
    loss = DiceBCELoss()  # 1.0 x Dice + 0.2 x BCE
    parts = loss.parts(logits, target)
    dice = 1 - (2 * 0.5 + 1e-5) / (2.25 + 1e-5)
    bce = 1.5 * math.log(2.0)
    assert parts.bce.item() == pytest.approx(bce, rel=1e-6)
    assert parts.bce.item() > 0.5  # the single-channel cross-entropy term is present
    assert parts.total.item() == pytest.approx(dice + 0.2 * bce, rel=1e-6)
    assert loss(logits, target).item() == pytest.approx(dice + 0.2 * bce, rel=1e-6)
    only_bce = DiceBCELoss(dice_weight=0.0, bce_weight=1.0)
    assert only_bce(logits, target).item() == pytest.approx(bce, rel=1e-6)


def test_batch_mean_and_per_sample():
    logits, target = _two_pixels()
    other_logits = torch.full((1, 1, 1, 2), -30.0)
    other_target = torch.zeros(1, 1, 1, 2)
    batch_logits, batch_target = torch.cat([logits, other_logits]), torch.cat([target, other_target])
    loss = DiceBCELoss()
    per = loss.per_sample(batch_logits, batch_target)
    assert per.shape == (2,)
    # empty target, confident empty prediction: Dice ~ 0 (smoothing), BCE ~ 0
    assert per[1].item() == pytest.approx(0.0, abs=1e-4)
    assert loss(batch_logits, batch_target).item() == pytest.approx(per.mean().item(), rel=1e-6)


def test_numerically_stable_for_extreme_logits():
    logits = torch.tensor([100.0, -100.0]).view(1, 1, 1, 2)
    target = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    parts = DiceBCELoss().parts(logits.requires_grad_(), target)
    assert parts.bce.item() == pytest.approx(100.0, rel=1e-5)  # log-sum-exp: no inf/nan
    parts.total.backward()
    assert torch.isfinite(logits.grad).all()


def test_half_precision_logits_are_computed_in_float32():
    logits, target = _two_pixels()
    assert DiceBCELoss()(logits.half(), target).dtype == torch.float32


def test_hard_dice():
    logits = torch.tensor([[5.0, 5.0, -5.0, -5.0], [-5.0] * 4]).view(2, 1, 1, 4)
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0] * 4]).view(2, 1, 1, 4)
    d = hard_dice(logits, target)
    assert d[0].item() == pytest.approx(2 * 1 / 3)
    assert d[1].item() == 1.0  # both empty
