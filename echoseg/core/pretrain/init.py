"""``--init-from``: start pre-training from another pre-training run or from a released GLoRIA/MGCA checkpoint.

- a pretrain run directory: its best weights and its architecture (``checkpoints/model.json``; the run's own
  ``--config`` does not apply), same method;
- a released ``.ckpt`` file (GLoRIA ``chexpert_resnet50.ckpt``, MGCA ``resnet_50.ckpt`` / ``vit_base.ckpt``): the
  release's architecture with every tensor loaded (:mod:`echoseg.core.models.vlp_official`); its tokenizer comes from
  ``--text-encoder`` (the Bio_ClinicalBERT folder the release was trained with).

The optimizer and schedule start fresh.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from echoseg.core.errors import UserError
from echoseg.core.models import artefacts
from echoseg.core.models.vlp_official import load_official_checkpoint, load_vlp
from echoseg.core.models.weights import resolve_weights
from echoseg.core.pretrain.config import PretrainConfig


def check_init_from(spec: str, text_encoder: str | None = None) -> None:
    """Fail early (before a run directory exists) on an ``--init-from`` that is neither a pretrain run nor a
    released checkpoint with its ``--text-encoder`` folder."""
    p = Path(spec)
    if not p.is_file():
        artefacts.find_checkpoint(p, "best", "--init-from")
        return
    if not text_encoder:
        raise UserError(f"--init-from {p}: a released checkpoint needs --text-encoder, the Bio_ClinicalBERT folder "
                        "(tokenizer and config.json) it was trained with")
    resolve_weights(text_encoder, required=("config.json",), what="--text-encoder")


def init_model(cfg: PretrainConfig) -> tuple[Any, str]:
    """The model ``cfg.init_from`` starts from, and a log line saying what was loaded."""
    p = Path(str(cfg.init_from))
    if p.is_file():
        model = load_official_checkpoint(p, text_encoder=cfg.text_encoder)
        if model.method != cfg.method:
            raise UserError(f"--init-from {p}: a {model.method} checkpoint, not {cfg.method}; use --method "
                            f"{model.method}")
        return model.train(), f"initialised from the released checkpoint {p} ({model.method}, {model.image.arch})"
    model, _ = load_vlp(p, option="--init-from")
    if model.method != cfg.method:
        raise UserError(f"--init-from {p}: that run pre-trained {model.method}, not {cfg.method}")
    return model.train(), f"initialised from {p} (best weights, its architecture; new optimizer and schedule)"
