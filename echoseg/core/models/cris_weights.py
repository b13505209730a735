"""CRIS weights: CLIP RN50/RN101 initialisation, original CRIS checkpoints and their conversion.

Accepted ``--weights`` for ``--model cris``:

- an OpenAI CLIP file (``RN50.pt``/``RN101.pt``, TorchScript archives) or an open_clip checkpoint
  (``.pt``/``.bin``/``.safetensors``, optionally ``{"state_dict": ...}`` with a ``module.`` prefix), or a hub id
  whose snapshot holds ``open_clip_model.safetensors``/``open_clip_pytorch_model.bin`` (e.g.
  ``timm/resnet50_clip.openai``): loaded into the backbone; the new attention-pool residual and the neck, decoder
  and projector keep their random initialisation;
- an original CRIS checkpoint (``{"state_dict": {"module.backbone...": ...}}``), mapped onto the whole model;
- a folder written by ``echoseg models convert-cris`` or a CRIS training run (``checkpoints/model.json`` +
  ``best.safetensors``).

Every load is strict: missing or unexpected keys raise :class:`UserError` listing a few of each.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echoseg.core.errors import UserError
from echoseg.core.models import build_model
from echoseg.core.models.artefacts import save_model_info, save_weights
from echoseg.core.models.weights import read_state as _read
from echoseg.core.models.weights import resolve_weights

ORIGINAL_PREFIX = "module."
PARTS = ("backbone.", "neck.", "decoder.", "proj.")
CLIP_KEYS = ("visual.", "transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection",
             "logit_scale")
# Entries of CLIP files that are not CRIS parameters (OpenAI archive metadata, a scripted causal mask).
CLIP_EXTRA = ("input_resolution", "context_length", "vocab_size", "attn_mask")
# Parameters CRIS adds to CLIP's backbone (random init when starting from CLIP weights).
CRIS_ONLY_BACKBONE = ("backbone.visual.attnpool.connect.",)
HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CKPT_DIR = "checkpoints"


# ------------------------------------------------------------------------------------------ key mapping
def from_original(state: dict[str, Any], what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Map an original CRIS state dict (``module.`` + backbone/neck/decoder/proj keys) to our key layout.

    Our modules keep the original parameter names below the four parts, so the mapping removes the
    DistributedDataParallel ``module.`` prefix and checks every key belongs to one of the parts.
    """
    out = {}
    for key, value in state.items():
        name = key[len(ORIGINAL_PREFIX):] if key.startswith(ORIGINAL_PREFIX) else key
        out[name] = value
    stray = [k for k in out if not k.startswith(PARTS)]
    if stray:
        raise UserError(f"{what}: not a CRIS checkpoint; keys outside backbone./neck./decoder./proj.: {_few(stray)}")
    return out


def to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`from_original`: our state dict in the original layout (``module.`` prefix)."""
    return {ORIGINAL_PREFIX + k: v for k, v in state.items()}


def _few(keys: Iterable[str], n: int = 4) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], what: str,
                allow_missing: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``model``; UserError on missing (not allowed), unexpected or mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
        raise UserError(f"{what}: does not fit this CRIS config; " + "; ".join(parts))
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
              if tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        raise UserError(f"{what}: {len(shapes)} tensor(s) of another shape (checkpoint vs model): {_few(shapes, 3)}; "
                        "RN50 weights need --config rn50, RN101 weights rn101")
    model.load_state_dict(state, strict=not allow_missing)


# ------------------------------------------------------------------------------------------ reading
def read_state(path: str | Path, what: str = "--weights") -> dict[str, torch.Tensor]:
    """The raw state dict of a weights file (TorchScript archive, safetensors or torch pickle); keys unchanged."""

    return _read(path, what, strip_module=False)


def kind_of(state: dict[str, torch.Tensor]) -> str:
    """``cris`` (original or ours), ``clip`` (OpenAI/open_clip CLIP) or ``unknown``."""
    keys = [k[len(ORIGINAL_PREFIX):] if k.startswith(ORIGINAL_PREFIX) else k for k in state]
    if any(k.startswith("neck.") for k in keys) and any(k.startswith("backbone.") for k in keys):
        return "cris"
    if "token_embedding.weight" in keys and any(k.startswith("visual.") for k in keys):
        return "clip"
    return "unknown"


# ------------------------------------------------------------------------------------------ loading
def load_clip_state(model: nn.Module, state: dict[str, torch.Tensor], what: str = "--weights") -> None:
    """Load CLIP RN50/RN101 weights into ``model.backbone`` (strict, except CRIS's new attention-pool residual)."""
    clean = {}
    for key, value in state.items():
        name = key[len(ORIGINAL_PREFIX):] if key.startswith(ORIGINAL_PREFIX) else key
        if name in CLIP_EXTRA:
            continue
        if name == "logit_scale":
            value = value.reshape(model.backbone.logit_scale.shape)
        clean["backbone." + name] = value
    load_strict(model, clean, f"{what} (CLIP weights)", allow_missing=CRIS_ONLY_BACKBONE + PARTS[1:])


def load_cris_state(model: nn.Module, state: dict[str, torch.Tensor], what: str = "--weights") -> None:
    """Load an original (``module.``-prefixed) or echoseg CRIS state dict into the whole model, strictly."""
    load_strict(model, from_original(state, what), what)


def _hub_or_folder(spec: str) -> Path:
    """A local file/folder, or the snapshot folder of a hub id holding open_clip weights."""

    return resolve_weights(spec, required=())


def load_weights(model: nn.Module, spec: str | Path, what: str = "--weights") -> str:
    """Load any accepted weights (module docstring) into a CRIS model; return the kind loaded."""
    path = _hub_or_folder(str(spec))
    if path.is_dir():
        ours = path / CKPT_DIR / "best.safetensors"
        if ours.is_file():
            load_cris_state(model, read_state(ours, what), f"{what} {ours}")
            return "cris"
        files = [path / f for f in HUB_FILES if (path / f).is_file()]
        if not files:
            raise UserError(f"{what} {spec}: folder holds neither {CKPT_DIR}/best.safetensors (a converted or "
                            f"trained CRIS) nor open_clip weights ({' or '.join(HUB_FILES)})")
        path = files[0]
    state = read_state(path, what)
    kind = kind_of(state)
    if kind == "cris":
        load_cris_state(model, state, f"{what} {path}")
    elif kind == "clip":
        load_clip_state(model, state, f"{what} {path}")
    else:
        raise UserError(f"{what} {path}: neither CLIP (visual./transformer. keys) nor CRIS "
                        f"(backbone./neck. keys) weights; first keys: {_few(list(state)[:4])}")
    return kind


# ------------------------------------------------------------------------------------------ conversion
def infer_config(state: dict[str, torch.Tensor], what: str = "checkpoint", option: str = "the config") -> str:
    """``rn50`` or ``rn101`` from an original CRIS state dict (layer3 depth of the visual ResNet).

    ``what`` names the checkpoint and ``option`` the way to name the config in error messages.
    """
    keys = from_original(state, what)
    blocks = {k.split(".")[3] for k in keys if k.startswith("backbone.visual.layer3.")}
    depth = {6: "rn50", 23: "rn101"}.get(len(blocks))
    if depth is None:
        raise UserError(f"{what}: a visual layer3 of {len(blocks)} blocks is neither RN50 (6) nor RN101 (23); "
                        f"give {option}")
    return depth


def model_from_original(state: dict[str, torch.Tensor], config: str | None = None,
                        overrides: dict[str, Any] | None = None, what: str = "checkpoint") -> nn.Module:
    """Build the CRIS model of an original checkpoint and load it strictly.

    Args:
        state: the checkpoint's state dict (``module.`` prefix or not).
        config: ``rn50``/``rn101``; inferred from the ResNet depth when None.
        overrides: top-level config values to replace (``word_len``, ``input_size``).
        what: the file or option named in error messages.
    """

    if kind_of(state) != "cris":
        raise UserError(f"{what}: not a CRIS checkpoint (no backbone./neck. keys)")
    model = build_model("cris", config or infer_config(state), **(overrides or {}))
    load_cris_state(model, state, what)
    return model


def write_converted(model: nn.Module, out: str | Path, source: str | Path) -> dict[str, Any]:
    """Write ``out/checkpoints/model.json`` (name + spec) and ``best.safetensors``, the layout that
    ``--weights``, ``--init-from`` and evaluation read; return a summary."""

    folder = Path(out) / CKPT_DIR
    save_model_info(folder, model, {"converted_from": str(Path(source).resolve())})
    save_weights(model, folder / "best.safetensors")
    return {"parameters": sum(p.numel() for p in model.parameters()), "tensors": len(model.state_dict()),
            "word_len": model.word_len, "input_size": model.input_size}


def convert_cris(checkpoint: str | Path, out: str | Path, config: str | None = None,
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Convert an original CRIS checkpoint into echoseg's checkpoint layout under ``out`` (a run directory)."""
    state = read_state(checkpoint, "checkpoint")
    name = config or infer_config(state, f"checkpoint {checkpoint}")
    model = model_from_original(state, name, overrides, f"checkpoint {checkpoint}")
    return {"config": name, **write_converted(model, out, checkpoint)}
