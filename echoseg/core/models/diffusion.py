"""The mask-conditioned diffusion model: a diffusers ``UNet2DModel`` fed the noisy image and the label map.

Conditioning: the SDM label map (0 outside the cone, 1 LV, 2 cone background, 3 MYO, 4 LA) is one-hot encoded
into 5 channels and concatenated to the 1-channel noisy image, so the UNet sees 6 input channels and predicts the
1-channel noise (epsilon). The "null" condition used for classifier-free guidance is the all-zero map (no class
set anywhere), which no real label map produces.

A trained model is a diffusers-style folder::

    model/unet/                  config.json + diffusion_pytorch_model.safetensors (UNet2DModel.save_pretrained)
    model/scheduler/             scheduler_config.json (DDPMScheduler.save_pretrained)
    model/conditioning.json      echoseg's conditioning metadata (label set, channels, size, null condition)

Architectures are named configs kept as data in the model registry, ``configs/diffusion.json`` (``tiny``,
``base``): each holds the ``unet`` and ``scheduler`` architecture and the ``train`` defaults of ``synth train``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from echoseg.core import models
from echoseg.core.errors import UserError
from echoseg.core.io import read_json, write_json

NUM_CLASSES = 5  # SDM CAMUS label maps: 0 outside the cone, 1 LV, 2 cone background, 3 MYO, 4 LA
META_FILE = "conditioning.json"
META_FORMAT = 1
IMAGE_CHANNELS = 1
LABEL_NAMES = {0: "outside cone", 1: "LV", 2: "cone background", 3: "MYO", 4: "LA"}


def get_config(name: str) -> dict[str, Any]:
    """A copy of the registry's named diffusion config (``tiny`` or ``base``).

    Raises:
        UserError: unknown name.
    """
    return models.get_config("diffusion", name)


def build_unet(unet_cfg: dict[str, Any], size: int) -> torch.nn.Module:
    """A randomly initialised conditional ``UNet2DModel`` for ``size`` x ``size`` images."""
    from diffusers import UNet2DModel  # deferred: heavy import, loaded only when this path runs

    levels = len(unet_cfg["block_out_channels"])
    if size % (2 ** (levels - 1)):
        raise UserError(f"--size {size} must be divisible by {2 ** (levels - 1)} for this config ({levels} levels)")
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in unet_cfg.items()}
    return UNet2DModel(sample_size=size, in_channels=IMAGE_CHANNELS + NUM_CLASSES, out_channels=IMAGE_CHANNELS,
                       **kwargs)


def build_scheduler(sched_cfg: dict[str, Any]):
    """The training ``DDPMScheduler`` (epsilon prediction)."""
    from diffusers import DDPMScheduler  # deferred: heavy import, loaded only when this path runs

    return DDPMScheduler(prediction_type="epsilon", clip_sample=True, **sched_cfg)


def one_hot(labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, W) integer label maps -> (B, 5, H, W) float one-hot; rows where ``drop`` is True become all zero."""
    lab = labels.long().clamp_(0, NUM_CLASSES - 1)
    cond = torch.nn.functional.one_hot(lab, NUM_CLASSES).permute(0, 3, 1, 2).float()
    if drop is not None:
        cond = cond * (~drop).float().view(-1, 1, 1, 1)
    return cond


def model_input(noisy: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """Concatenate the noisy image (B, 1, H, W) and the condition (B, 5, H, W) along channels."""
    return torch.cat([noisy, cond.to(noisy.dtype)], dim=1)


def images_to_tensor(images) -> torch.Tensor:
    """uint8 (B, H, W) array -> float (B, 1, H, W) in [-1, 1]."""
    t = torch.as_tensor(images).float()
    return (t / 127.5 - 1.0).unsqueeze(1)


def tensor_to_images(x: torch.Tensor):
    """Float (B, 1, H, W) in [-1, 1] -> uint8 (B, H, W) numpy array."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x[:, 0].cpu().numpy()


def conditioning_meta(config_name: str, size: int, cond_dropout: float) -> dict[str, Any]:
    """The metadata saved beside the weights (what the condition channels mean)."""
    return {
        "format": META_FORMAT,
        "kind": "echoseg-mask-conditioned-ddpm",
        "conditioning": "one-hot label map concatenated to the noisy image (channels: image, then labels 0..4)",
        "image_channels": IMAGE_CHANNELS,
        "num_classes": NUM_CLASSES,
        "labels": LABEL_NAMES,
        "label_convention": "sdm-camus",
        "null_condition": "zeros",
        "cond_dropout": float(cond_dropout),
        "prediction_type": "epsilon",
        "image_range": [-1.0, 1.0],
        "size": int(size),
        "config": config_name,
    }


def save_model(folder: str | Path, unet: torch.nn.Module, scheduler, meta: dict[str, Any]) -> Path:
    """Write the diffusers-style model folder (see the module docstring); returns its path."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    unet.save_pretrained(tmp / "unet")
    scheduler.save_pretrained(tmp / "scheduler")
    write_json(tmp / META_FILE, meta)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def resolve_model_dir(path: str | Path) -> Path:
    """The model folder of a synth-train run (``<run>/model``) or a model folder itself.

    Raises:
        UserError: neither holds ``conditioning.json`` and ``unet/``.
    """
    p = Path(path)
    for cand in (p / "model", p):
        if (cand / META_FILE).is_file() and (cand / "unet").is_dir():
            return cand
    raise UserError(f"--model {p}: not a synth train run or model folder (no model/{META_FILE} with unet/)")


def load_model(path: str | Path) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Load (unet, training scheduler, conditioning metadata) from a run or model folder, offline."""
    from diffusers import DDPMScheduler, UNet2DModel  # deferred: heavy import, loaded only when this path runs

    folder = resolve_model_dir(path)
    meta = read_json(folder / META_FILE)
    if meta.get("format") != META_FORMAT or int(meta.get("num_classes", -1)) != NUM_CLASSES:
        raise UserError(f"{folder / META_FILE}: unsupported conditioning metadata (format {meta.get('format')!r})")
    try:
        unet = UNet2DModel.from_pretrained(folder / "unet", local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}: cannot load the model ({str(exc).splitlines()[0]})") from None
    return unet, scheduler, meta


@models.register("diffusion")
def build(config: dict[str, Any], weights: str | None = None, assets: Path | None = None) -> torch.nn.Module:
    """The registry builder: a random conditional UNet of ``config`` (``size`` defaults to 64); ``weights`` may
    name a synth-train run or model folder, whose UNet is loaded instead."""
    if weights is not None:
        return load_model(weights)[0]
    return build_unet(config["unet"], int(config.get("size", 64)))
