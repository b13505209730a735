"""A text-free U-Net baseline (Ronneberger et al. 2015) with one binary output per structure.

Output choice: the network predicts ``num_structures`` logit maps (LV, MYO, LA) and returns the map of each
sample's structure (label 1..num_structures), so a U-Net sample is the same (image, structure) -> binary mask pair
as a CLIPSeg sample and the same per-sample loss and metrics apply. The prompt text is ignored.
Blocks: two 3x3 conv + GroupNorm + ReLU; max-pool down, transposed-conv up, skip concatenation.

``unet`` is also the registry name of the U-Net on a pre-trained ResNet encoder (:mod:`.unet_resnet`): a config
given an ``encoder`` source (``--encoder``), or a trained run's spec naming an ``architecture``, builds that variant
(its defaults are the ``resnet`` section of each config). One name keeps run.json, model.json, run labels and
reports on the user's spelling, ``--model unet --encoder ...``; the spec tells the two architectures apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echoseg.core.errors import UserError
from echoseg.core.models import register
from echoseg.core.models.base import SegModel
from echoseg.core.models.unet_resnet import build_resnet_unet, structure_map
from echoseg.core.models.weights import load_state_dict_file


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


class UNet(SegModel):
    """U-Net returning the logit map of each sample's structure, (B, 1, H, W)."""

    uses_text = False

    def __init__(
        self,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        channels: int = 32,
        depth: int = 4,
        num_structures: int = 3,
    ) -> None:
        super().__init__(input_size, mean, std)
        if input_size % (2**depth):
            raise UserError(f"unet: input_size {input_size} must be divisible by 2**depth = {2**depth}")
        self.channels, self.depth, self.num_structures = int(channels), int(depth), int(num_structures)
        widths = [channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(3, widths[0])] + [_block(widths[i], widths[i + 1]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))]
        )
        self.dec = nn.ModuleList([_block(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_structures, 1)

    def forward_all(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for every structure, (B, num_structures, H, W)."""
        skips = []
        x = images
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)

    def forward(self, images: torch.Tensor, texts: Sequence[str] | None = None,
                structures: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, 1, H, W) of each sample's structure (labels 1..num_structures)."""
        return structure_map(self.forward_all(images), structures, self.num_structures)

    def spec(self) -> dict[str, Any]:
        """The architecture as a config dict."""
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "channels": self.channels, "depth": self.depth, "num_structures": self.num_structures}


@register("unet")
def build(config: dict[str, Any], weights: str | None = None, assets: Path | None = None) -> SegModel:
    """Build the U-Net (the ResNet variant with an ``encoder`` source or an ``architecture``, see the module notes);
    ``weights`` may be a state-dict file (.pt/.safetensors) of the whole model, same architecture."""
    if config.get("encoder") or config.get("architecture"):
        model: SegModel = build_resnet_unet(config)
    else:
        model = UNet(
            input_size=int(config.get("input_size", 352)),
            mean=config.get("mean", (0.5, 0.5, 0.5)),
            std=config.get("std", (0.5, 0.5, 0.5)),
            channels=int(config.get("channels", 32)),
            depth=int(config.get("depth", 4)),
            num_structures=int(config.get("num_structures", 3)),
        )
    if weights:
        try:
            model.load_state_dict(load_state_dict_file(weights, "--weights"))
        except RuntimeError as exc:
            raise UserError(f"--weights {weights}: does not match the unet config ({str(exc)[:200]})") from None
    return model
