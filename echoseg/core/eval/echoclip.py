"""Annotation-free mask-quality score with a CLIP model (EchoDFKD, Petit et al. 2024).

For each frame and its left-ventricle mask (pixels above 127 of 255, or 0.5 for probabilities):

- black out the pixels under the mask; similarity of that image to "WALL" and to "NOTHING";
- black out the mask dilated by ``dilate`` pixels (cv2.dilate, elliptical kernel of size ``2 * dilate + 1``);
  similarity of that image to "LEFT VENTRICLE";
- frame score = sim(WALL) + sim(NOTHING) - sim(LEFT VENTRICLE), with L2-normalised image and text embeddings
  and a plain dot product. A video's score is the mean over its frames; higher means the mask covers the
  cavity better.

The published code computed the dilated mask but never applied it; echoseg applies it.

Models are open_clip models (EchoCLIP is an open_clip ConvNeXt). :func:`load_clip_model` accepts
``hf-hub:org/name`` (resolved from the local Hugging Face cache when offline), a local folder holding
``open_clip_config.json`` and weights, or ``ARCH:/path/to/weights.pt`` with a known open_clip architecture.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoseg.core.errors import UserError
from echoseg.core.eval.areas import binarise

# what torch.load / open_clip raise on a corrupt or foreign weights file
_LOAD_ERRORS = (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError)

PROMPTS = ("WALL", "NOTHING", "LEFT VENTRICLE")
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


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
    import open_clip

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
            raise UserError(f"--clip-model {folder}: cannot load {weights.name} ({_first_line(exc)})") from None
    return model, preprocess, tokenizer


def _load_hub(spec: str, device: str) -> tuple[Any, Any, Any]:
    import open_clip

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
    import open_clip

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
        raise UserError(f"--clip-model {spec}: cannot load {weights} ({_first_line(exc)})") from None
    return model, preprocess, tokenizer


def load_clip_model(spec: str, device: str = "auto") -> ClipModel:
    """Load an open_clip model from ``hf-hub:org/name``, a local folder, or ``ARCH:/path/to/weights``."""
    from echoseg.core.env import resolve_device

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


# ----------------------------------------------------------------------------- scoring
def dilate_masks(masks: np.ndarray, px: int) -> np.ndarray:
    """Dilate boolean ``(T, H, W)`` masks by ``px`` pixels with an elliptical kernel (``px = 0``: unchanged)."""
    if px <= 0:
        return masks.copy()
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in masks])


def blackout(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Copy of ``(T, H, W[, C])`` frames with the pixels under boolean ``(T, H, W)`` masks set to 0."""
    out = frames.copy()
    out[masks] = 0
    return out


def _rgb(frames: np.ndarray) -> np.ndarray:
    f = np.asarray(frames)
    if f.ndim == 3:
        f = np.repeat(f[..., None], 3, axis=-1)
    elif f.shape[-1] == 1:
        f = np.repeat(f, 3, axis=-1)
    if f.dtype != np.uint8:
        f = np.clip(f, 0, 255).astype(np.uint8)
    return f


def _fit_masks(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if masks.shape[1:] == shape:
        return masks
    import cv2

    return np.stack([cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
                     for m in masks])


def encode_texts(clip: ClipModel, texts: tuple[str, ...] = PROMPTS):
    """L2-normalised text embeddings ``(len(texts), D)``."""
    import torch

    with torch.no_grad():
        emb = clip.model.encode_text(clip.tokenizer(list(texts)).to(clip.device)).float()
    return torch.nn.functional.normalize(emb, dim=-1)


def encode_images(clip: ClipModel, frames: np.ndarray, batch_size: int = 64):
    """L2-normalised image embeddings of uint8 RGB ``(T, H, W, 3)`` frames, in batches."""
    import torch
    from PIL import Image

    out = []
    with torch.no_grad():
        for i in range(0, len(frames), batch_size):
            batch = torch.stack([clip.preprocess(Image.fromarray(f)) for f in frames[i : i + batch_size]])
            emb = clip.model.encode_image(batch.to(clip.device)).float()
            out.append(torch.nn.functional.normalize(emb, dim=-1))
    return torch.cat(out)


def frame_scores(
    clip: ClipModel, frames: np.ndarray, masks: np.ndarray, dilate: int = 5, batch_size: int = 64, text=None
) -> dict[str, np.ndarray]:
    """Per-frame similarities and scores for one video.

    Args:
        frames: ``(T, H, W)`` or ``(T, H, W, 3)`` uint8 frames.
        masks: ``(T, H', W')`` masks (0..255, probabilities or boolean); resized (nearest) to the frames if needed.
        dilate: dilation in pixels before the LEFT VENTRICLE comparison.
        text: precomputed :func:`encode_texts` output (computed when None).
    Returns:
        ``{"wall", "nothing", "left_ventricle", "score"}``, each ``(T,)``.
    """
    rgb = _rgb(frames)
    m = _fit_masks(binarise(masks), rgb.shape[1:3])
    text = encode_texts(clip) if text is None else text
    sim_under = (encode_images(clip, blackout(rgb, m), batch_size) @ text.T).cpu().numpy()
    sim_dilated = (encode_images(clip, blackout(rgb, dilate_masks(m, dilate)), batch_size) @ text.T).cpu().numpy()
    wall, nothing, lv = sim_under[:, 0], sim_under[:, 1], sim_dilated[:, 2]
    return {"wall": wall, "nothing": nothing, "left_ventricle": lv, "score": wall + nothing - lv}


def score_videos(
    clip: ClipModel,
    data_root: str | Path,
    masks_dir: str | Path,
    names: list[str] | None = None,
    dilate: int = 5,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Score the masks of every video of ``masks_dir`` (or ``names``) against ``data_root/Videos/<name>.avi``.

    When a video and its masks differ in frame count, the first ``min`` frames are scored (both counts are in
    the table). Returns the per-video table and the summary (mean score; videos without video or mask listed).
    """
    import pandas as pd

    from echoseg.core.console import track
    from echoseg.core.data.echonet import video_path
    from echoseg.core.data.video import load_video
    from echoseg.core.eval.areas import find_mask_file, list_mask_videos, load_mask_video, video_key

    keys = list_mask_videos(masks_dir) if names is None else [video_key(n) for n in names]
    text = encode_texts(clip)
    rows, without_video, without_masks = [], [], []
    for key in track(keys, "CLIP mask score") if progress else keys:
        mask_path = find_mask_file(masks_dir, key)
        path = video_path(data_root, key)
        if mask_path is None:
            without_masks.append(key)
            continue
        if not path.is_file():
            without_video.append(key)
            continue
        frames, masks = load_video(path), load_mask_video(mask_path)
        n = min(len(frames), len(masks))
        s = frame_scores(clip, frames[:n], masks[:n], dilate=dilate, batch_size=batch_size, text=text)
        rows.append({"FileName": key, "VideoFrames": len(frames), "MaskFrames": len(masks), "FramesScored": n,
                     "sim_wall": float(s["wall"].mean()), "sim_nothing": float(s["nothing"].mean()),
                     "sim_left_ventricle": float(s["left_ventricle"].mean()), "score": float(s["score"].mean())})
    columns = ["FileName", "VideoFrames", "MaskFrames", "FramesScored", "sim_wall", "sim_nothing",
               "sim_left_ventricle", "score"]
    table = pd.DataFrame(rows, columns=columns)
    summary = {
        "score_mean": float(table["score"].mean()) if len(table) else float("nan"),
        "videos_scored": len(table),
        "frames_scored": int(table["FramesScored"].sum()) if len(table) else 0,
        "videos_frame_count_mismatch": int((table["VideoFrames"] != table["MaskFrames"]).sum()) if len(table) else 0,
        "videos_without_video": len(without_video),
        "without_video": without_video,
        "videos_without_masks": len(without_masks),
        "without_masks": without_masks,
        "clip_model": clip.spec,
        "prompts": list(PROMPTS),
        "dilate_px": dilate,
        "dilation_applied": True,
        "score": "mean over frames of sim(WALL) + sim(NOTHING) - sim(LEFT VENTRICLE)",
    }
    return table, summary
