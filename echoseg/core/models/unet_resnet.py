"""The U-Net on a torchvision ResNet encoder: SynCXR's frozen-encoder segmentation protocol
(`echoseg train --model unet --encoder vlp:PRETRAIN_RUN|imagenet:FILE|random [--freeze-encoders]`).

Encoder: a torchvision ResNet (``resnet50``, or ``resnet_tiny`` = ``ResNet(BasicBlock, [1, 1, 1, 1])`` for tests),
the same modules and state-dict keys as the image backbone of `echoseg pretrain`. Skip features at strides 2
(``conv1``/``bn1``/``relu``), 4 (``layer1``, after the max-pool), 8, 16 and 32 (``layer4``), as the usual ResNet
U-Net (segmentation_models_pytorch's ``Unet``). Decoder: five blocks, each upsampling x2 (nearest), concatenating
the skip of that resolution (none in the last, at the input size) and applying two 3x3 conv + BatchNorm + ReLU; a
3x3 head gives one logit map per structure and each sample gets its structure's map, as :mod:`.unet` does.

Encoder sources (the config key ``encoder``, read only when the model is first built):

- ``vlp:RUN``: a pretrain run's ``encoders/image/`` (weights; architecture, mean and std from its ``config.json``);
  a ViT run is refused;
- ``imagenet:FILE``: a torchvision ResNet state dict (``resnet50-11ad3fa6.pth``; ``fc.*`` ignored), ImageNet mean/std;
- ``random``: random initialisation (the config's architecture, mean and std).

``spec()`` names the architecture and keeps the source as provenance (``encoder_init``) only: a trained run rebuilds
this model with a random encoder and loads its own checkpoint, so the pretrain run is not needed afterwards.

Frozen BatchNorm: freezing stops gradients, but a BatchNorm layer in train mode still replaces its running mean and
variance with those of each batch. A frozen encoder would then drift away from the statistics it was pre-trained
(and, under SynCXR's protocol, evaluated) with, and normalise with noisy statistics of small segmentation batches.
So while frozen the encoder stays in eval mode whatever ``train()`` is called with (the decoder still trains).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from echoseg.core.errors import UserError, first_line
from echoseg.core.io import read_json
from echoseg.core.models.base import SegModel
from echoseg.core.models.weights import read_state

#: output channels of conv1, layer1, layer2, layer3 and layer4 of each supported ResNet
ENCODER_CHANNELS = {"resnet50": (64, 256, 512, 1024, 2048), "resnet_tiny": (64, 64, 128, 256, 512)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 32
_SOURCES = "vlp:PRETRAIN_RUN, imagenet:FILE or random"


def resnet_backbone(architecture: str) -> nn.Module:
    """A randomly initialised torchvision ResNet without its classifier (``fc`` is an identity)."""
    from torchvision.models import resnet50  # deferred: torchvision loads only when a model is built
    from torchvision.models.resnet import BasicBlock, ResNet

    if architecture not in ENCODER_CHANNELS:
        raise UserError(f"unet encoder {architecture!r}: not a supported ResNet ({', '.join(ENCODER_CHANNELS)})")
    net = resnet50(weights=None) if architecture == "resnet50" else ResNet(BasicBlock, [1, 1, 1, 1])
    net.fc = nn.Identity()
    return net


def structure_map(all_logits: torch.Tensor, structures: torch.Tensor | None, num_structures: int) -> torch.Tensor:
    """Each sample's map (B, 1, H, W) of ``all_logits`` (B, num_structures, H, W); structures are labels 1..N."""
    if structures is None:
        raise ValueError("unet needs the structure label of each sample")
    idx = (structures.to(all_logits.device).long() - 1).clamp(0, num_structures - 1)
    return all_logits.gather(1, idx.view(-1, 1, 1, 1).expand(-1, 1, *all_logits.shape[-2:]))


# --- encoder sources -------------------------------------------------------------------------------------------------


def parse_encoder(spec: str) -> tuple[str, Path | None]:
    """``(kind, path)`` of an ``--encoder`` value: ``vlp``/``imagenet`` with a path, or ``random`` without."""
    text = str(spec).strip()
    if text == "random":
        return "random", None
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("vlp", "imagenet") or not rest:
        raise UserError(f"--encoder {spec!r}: expected {_SOURCES}")
    return kind, Path(rest).expanduser()


def check_encoder(spec: str) -> dict[str, Any]:
    """Check an ``--encoder`` source without reading its tensors; return what the model records of it.

    Returns:
        ``source`` (vlp, imagenet, random), and for a file or run its absolute ``path``; for a pretrain run also
        its ``architecture``, ``method``, ``pretrain_run_id``, ``mean`` and ``std``.
    Raises:
        UserError: a malformed value, a missing file, a folder that is not a finished pretrain run, or a pretrain
            run whose image encoder is not a ResNet.
    """
    kind, path = parse_encoder(spec)
    if kind == "random" or path is None:
        return {"source": "random"}
    if kind == "imagenet":
        if not path.is_file():
            raise UserError(f"--encoder {spec}: no such weights file (expected a torchvision ResNet-50 state dict, "
                            "e.g. resnet50-11ad3fa6.pth)")
        return {"source": "imagenet", "path": str(path.resolve())}
    folder = path / "encoders" / "image"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise UserError(f"--encoder {spec}: not a finished pretrain run (no encoders/image/config.json and "
                        "model.safetensors)")
    try:
        info = read_json(folder / "config.json")
    except (OSError, ValueError) as exc:
        raise UserError(f"--encoder {spec}: encoders/image/config.json is not valid JSON ({first_line(exc)})") from None
    arch = info.get("architecture") if isinstance(info, dict) else None
    if arch not in ENCODER_CHANNELS:
        raise UserError(f"--encoder {spec}: its image encoder is {arch!r}, not a ResNet; the U-Net needs a "
                        f"pretrain run with {' or '.join(ENCODER_CHANNELS)}")
    return {"source": "vlp", "path": str(path.resolve()), "architecture": arch, "method": info.get("method"),
            "pretrain_run_id": info.get("pretrain_run_id"), "mean": list(info.get("mean", (0.5, 0.5, 0.5))),
            "std": list(info.get("std", (0.5, 0.5, 0.5)))}


def _imagenet_architecture(state: dict[str, torch.Tensor]) -> str:
    """``resnet50`` for a state dict with bottleneck blocks, else ``resnet_tiny`` (the shapes are checked later)."""
    return "resnet50" if "layer1.0.conv3.weight" in state else "resnet_tiny"


# --- the model -------------------------------------------------------------------------------------------------------


class _DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip (if any), two 3x3 conv + BatchNorm + ReLU."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin + cskip, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if skip is None:
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


class UNetResNet(SegModel):
    """U-Net on a ResNet encoder returning the logit map of each sample's structure, (B, 1, H, W)."""

    uses_text = False

    def __init__(
        self,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        architecture: str = "resnet50",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        num_structures: int = 3,
        encoder_init: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(input_size, mean, std)
        if self.input_size % STRIDE:
            raise UserError(f"unet with --encoder: input_size {self.input_size} must be a multiple of {STRIDE}")
        if len(decoder_channels) != 5:
            raise UserError(f"unet resnet.decoder_channels: 5 widths needed, got {list(decoder_channels)}")
        self.architecture, self.num_structures = str(architecture), int(num_structures)
        self.decoder_channels = [int(c) for c in decoder_channels]
        self.encoder_init = dict(encoder_init or {"source": "random"})
        self.encoder = resnet_backbone(self.architecture)
        enc = ENCODER_CHANNELS[self.architecture]
        ins = [enc[4], *self.decoder_channels[:-1]]
        skips = [enc[3], enc[2], enc[1], enc[0], 0]
        self.decoder = nn.ModuleList(
            [_DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, self.decoder_channels, strict=True)])
        self.head = nn.Conv2d(self.decoder_channels[-1], self.num_structures, 3, padding=1)
        self.encoder_frozen = False

    def encoder_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five encoder features, strides 2, 4, 8, 16, 32."""
        e = self.encoder
        x0 = e.relu(e.bn1(e.conv1(images)))
        x1 = e.layer1(e.maxpool(x0))
        x2 = e.layer2(x1)
        x3 = e.layer3(x2)
        return [x0, x1, x2, x3, e.layer4(x3)]

    def forward_all(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for every structure, (B, num_structures, H, W)."""
        feats = self.encoder_features(images)
        x = feats.pop()
        for block in self.decoder:
            x = block(x, feats.pop() if feats else None)
        return self.head(x)

    def forward(self, images: torch.Tensor, texts: Sequence[str] | None = None,
                structures: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, 1, H, W) of each sample's structure (labels 1..num_structures)."""
        return structure_map(self.forward_all(images), structures, self.num_structures)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """The ResNet encoder's parameters (the decoder and head stay trainable)."""
        return self.encoder.parameters()

    def freeze_encoders(self) -> int:
        """Freeze the encoder and keep it in eval mode from now on (see the module notes on BatchNorm)."""
        n = super().freeze_encoders()
        self.encoder_frozen = True
        self.encoder.eval()
        return n

    def train(self, mode: bool = True) -> UNetResNet:
        """Set train/eval mode; a frozen encoder stays in eval mode (its BatchNorm statistics stay fixed)."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def load_encoder(self, state: dict[str, torch.Tensor], what: str) -> int:
        """Load a torchvision ResNet state dict into the encoder (``fc.*`` ignored); returns the tensors loaded."""
        own = self.encoder.state_dict()
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own]
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if missing or extra or wrong:
            detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                      else f"shape mismatch at {wrong[:3]}")
            raise UserError(f"{what}: not {self.architecture} weights ({detail})")
        self.encoder.load_state_dict(state, strict=True)
        return len(own)

    def spec(self) -> dict[str, Any]:
        """The architecture as a config dict (``encoder_init`` is provenance; rebuilding never reads it)."""
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "architecture": self.architecture, "decoder_channels": list(self.decoder_channels),
                "num_structures": self.num_structures, "encoder_init": dict(self.encoder_init)}


def build_resnet_unet(config: dict[str, Any]) -> UNetResNet:
    """Build the ResNet U-Net from a unet config (its ``resnet`` section) or a trained run's spec.

    With ``config["encoder"]`` (an ``--encoder`` value) the encoder is initialised from that source, whose
    architecture (and, for a pretrain run or ImageNet weights, mean and std) replace the config's.
    """
    resnet = {**config.get("resnet", {}), **{k: config[k] for k in ("architecture", "decoder_channels")
                                             if k in config}}
    arch = str(resnet.get("architecture", "resnet50"))
    mean, std = config.get("mean", (0.5, 0.5, 0.5)), config.get("std", (0.5, 0.5, 0.5))
    provenance = config.get("encoder_init")
    state: dict[str, torch.Tensor] | None = None
    source = config.get("encoder")
    if source:
        what = f"--encoder {source}"
        init = check_encoder(str(source))
        provenance = {k: v for k, v in init.items() if k not in ("mean", "std")}
        if init["source"] == "vlp":
            arch, mean, std = init["architecture"], init["mean"], init["std"]
            try:
                state = load_file(str(Path(init["path"]) / "encoders" / "image" / "model.safetensors"))
            except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for every corruption
                raise UserError(f"{what}: encoders/image/model.safetensors is not readable ({first_line(exc)})") \
                    from None
        elif init["source"] == "imagenet":
            state = read_state(init["path"], what)
            arch, mean, std = _imagenet_architecture(state), IMAGENET_MEAN, IMAGENET_STD
        provenance["architecture"] = arch
    model = UNetResNet(
        input_size=int(config.get("input_size", 352)), mean=mean, std=std, architecture=arch,
        decoder_channels=resnet.get("decoder_channels", (256, 128, 64, 32, 16)),
        num_structures=int(config.get("num_structures", 3)), encoder_init=provenance,
    )
    if state is not None:
        model.load_encoder(state, f"--encoder {source}")
    return model
