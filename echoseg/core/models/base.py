"""The segmentation-model interface the training engine relies on.

Every segmentation model (CLIPSeg, the U-Net baseline, CRIS later) is an ``nn.Module`` that

- maps ``forward(images, texts, structures) -> logits`` of shape (B, 1, H, W) at the input size, where ``images``
  is a (B, 3, H, W) float tensor already normalised with :attr:`mean`/:attr:`std`, ``texts`` the prompt of each
  sample and ``structures`` a (B,) long tensor of structure labels (1 LV, 2 MYO, 3 LA); a model uses what it needs;
- states its preprocessing (:attr:`input_size`, :attr:`mean`, :attr:`std`);
- lists the parameters ``--freeze-encoders`` freezes (:meth:`encoder_parameters`);
- describes itself as JSON (:meth:`spec`) and writes any extra files it needs (a tokenizer) with
  :meth:`save_assets`, so a trained run can be rebuilt offline from its own folder.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


class SegModel(nn.Module):
    """Base class of text-promptable (or text-free) binary segmentation models."""

    #: registry name, set by the builder
    name: str = ""
    #: whether the prompt text changes the output
    uses_text: bool = True

    def __init__(self, input_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def forward(self, images: torch.Tensor, texts: Sequence[str], structures: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, H, W) for normalised images (B, 3, H, W)."""
        raise NotImplementedError

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the pretrained encoders (frozen by ``--freeze-encoders``); none by default."""
        return iter(())

    def freeze_encoders(self) -> int:
        """Stop gradients into the encoders; return how many parameter tensors were frozen."""
        n = 0
        for p in self.encoder_parameters():
            p.requires_grad_(False)
            n += 1
        return n

    def spec(self) -> dict[str, Any]:
        """JSON-serialisable architecture description; ``build_from_spec`` rebuilds the model from it."""
        raise NotImplementedError

    def save_assets(self, folder: Path) -> None:
        """Write files besides the weights needed to rebuild the model (e.g. a tokenizer); none by default."""

    def preprocess_info(self) -> dict[str, Any]:
        """Input size and normalisation, for logs and run records."""
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}
