"""open_clip models (EchoCLIP is an open_clip ConvNeXt): loading from a local folder, the Hugging Face cache or an
architecture plus weights file, and L2-normalised image and text embeddings.

:func:`load_clip_model` accepts ``hf-hub:org/name`` (resolved from the local Hugging Face cache when offline), a local
folder holding ``open_clip_config.json`` and weights, or ``ARCH:/path/to/weights.pt`` with a known open_clip
architecture. Used by curation (zero-shot echo check, embeddings) and by ``eval echoclip`` (mask quality).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image
from safetensors import SafetensorError

from echoseg.core.env import resolve_device
from echoseg.core.errors import UserError, first_line

# what torch.load / safetensors / open_clip raise on a corrupt or foreign weights file (a zero-filled
# .safetensors file raises SafetensorError, which derives from Exception only)
_LOAD_ERRORS = (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError)
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
NEEDED = "open_clip_config.json and open_clip_model.safetensors (or open_clip_pytorch_model.bin)"


@dataclass
class ClipModel:
    """An open_clip model ready for inference, with its image transform and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    spec: str


def _find_weights(folder: Path) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in WEIGHT_SUFFIXES and p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise UserError(f"--clip-model {folder}: no weights found; the folder needs {NEEDED}")
    raise UserError(f"--clip-model {folder}: several weight files ({', '.join(p.name for p in found)}); "
                    f"keep one or name it {WEIGHT_NAMES[0]}")


def _transform_kwargs(preprocess_cfg: dict[str, Any]) -> dict[str, Any]:
    keys = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation",
            "resize_mode": "image_resize_mode"}
    return {arg: tuple(v) if isinstance(v, list) else v for k, arg in keys.items() if (v := preprocess_cfg.get(k))}


def _load_folder(folder: Path, device: str) -> tuple[Any, Any, Any]:
    cfg_path = folder / "open_clip_config.json"
    if not cfg_path.is_file():
        raise UserError(f"--clip-model {folder}: no open_clip_config.json; the folder needs {NEEDED}")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        model_cfg = cfg["model_cfg"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{cfg_path}: not an open_clip config (expected a JSON object with 'model_cfg')") from None
    weights = _find_weights(folder)
    digest = hashlib.sha1(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:12]
    name = f"echoseg-local-{digest}"
    # open_clip builds models from registered config files; register this one under a content-derived name.
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{name}.json").write_text(json.dumps(model_cfg), encoding="utf-8")
        open_clip.add_model_config(tmp)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=str(weights), device=device, **_transform_kwargs(cfg.get("preprocess_cfg") or {})
            )
            tokenizer = open_clip.get_tokenizer(name)
        except _LOAD_ERRORS as exc:
            raise UserError(f"--clip-model {folder}: cannot load {weights.name} ({first_line(exc)})") from None
    return model, preprocess, tokenizer


def _load_hub(spec: str, device: str) -> tuple[Any, Any, Any]:
    repo = spec.split(":", 1)[1]
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(spec, device=device)
        tokenizer = open_clip.get_tokenizer(spec)
    except Exception as exc:  # noqa: BLE001 - hub/cache errors come in many types
        raise UserError(
            f"--clip-model {spec}: cannot load it from the local Hugging Face cache ({type(exc).__name__}); it needs "
            f"{NEEDED} of {repo}: run `huggingface-cli download {repo}` where there is network, or pass a local folder"
        ) from None
    return model, preprocess, tokenizer


def _load_arch(spec: str, device: str) -> tuple[Any, Any, Any]:
    arch, _, path = spec.partition(":")
    if arch not in open_clip.list_models():
        raise UserError(f"--clip-model {spec}: expected hf-hub:org/name, a folder with {NEEDED}, "
                        f"or ARCH:/path/to/weights.pt with a known open_clip ARCH (not {arch!r})")
    weights = Path(path)
    if not weights.is_file():
        raise UserError(f"--clip-model {spec}: weights file not found: {weights} (needed: the {arch} checkpoint)")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(weights), device=device)
        tokenizer = open_clip.get_tokenizer(arch)
    except _LOAD_ERRORS as exc:
        raise UserError(f"--clip-model {spec}: cannot load {weights} ({first_line(exc)})") from None
    return model, preprocess, tokenizer


def load_clip_model(spec: str, device: str = "auto") -> ClipModel:
    """Load an open_clip model from ``hf-hub:org/name``, a local folder, or ``ARCH:/path/to/weights``."""
    dev = resolve_device(device)
    if spec.startswith("hf-hub:"):
        model, preprocess, tokenizer = _load_hub(spec, dev)
    elif Path(spec).is_dir():
        model, preprocess, tokenizer = _load_folder(Path(spec), dev)
    elif ":" in spec:
        model, preprocess, tokenizer = _load_arch(spec, dev)
    else:
        what = "a file" if Path(spec).is_file() else "not found"
        raise UserError(f"--clip-model {spec}: {what}; give hf-hub:org/name, a folder with {NEEDED}, "
                        "or ARCH:/path/to/weights.pt")
    model.eval()
    return ClipModel(model, preprocess, tokenizer, dev, spec)


def encode_texts(clip: ClipModel, texts: Sequence[str]):
    """L2-normalised text embeddings ``(len(texts), D)``."""
    with torch.no_grad():
        emb = clip.model.encode_text(clip.tokenizer(list(texts)).to(clip.device)).float()
    return torch.nn.functional.normalize(emb, dim=-1)


def encode_images(clip: ClipModel, frames: np.ndarray, batch_size: int = 64):
    """L2-normalised image embeddings of uint8 RGB ``(T, H, W, 3)`` frames, in batches."""
    out = []
    with torch.no_grad():
        for i in range(0, len(frames), batch_size):
            batch = torch.stack([clip.preprocess(Image.fromarray(f)) for f in frames[i : i + batch_size]])
            emb = clip.model.encode_image(batch.to(clip.device)).float()
            out.append(torch.nn.functional.normalize(emb, dim=-1))
    return torch.cat(out)
