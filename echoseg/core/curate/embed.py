"""Image encoders for curation and batched embedding of image files.

``--encoder`` choices:

- ``segmenter`` (default): the image encoder of the ``--segmenter`` run's model. For the U-Net, its bottleneck
  feature map (the deepest encoder block) averaged over space; for CLIPSeg, the CLIP vision transformer's pooled
  output. Images get the segmenter's own preprocessing (resize to its input size, its mean/std).
- ``open_clip:SPEC``: an open_clip image tower; SPEC is what ``--clip-model`` takes (a folder with
  ``open_clip_config.json`` and weights, ``hf-hub:org/name`` from the local cache, or ``ARCH:/path/weights.pt``).
- ``pixels`` (or ``pixels:N``): the image itself, area-resized to N x N (default 32) grey levels. Needs no
  weights; pixel-space distance is the criterion memorisation studies of diffusion models use for near-copies of
  training images (Carlini et al. 2023), so it suits ``--real``; it sees no semantics, so prefer a learned encoder
  for ``--bad``.
- ``hf:PATH_OR_ID``: a transformers vision model with its image processor, e.g. a DINOv2 folder; the embedding
  is ``get_image_features`` for CLIP-like models, else ``pooler_output``, else the first (CLS) token.

Every encoder maps a list of grey uint8 images (H, W) to a float32 array (N, D).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from echoseg.core.console import track
from echoseg.core.data.cache import resize_image
from echoseg.core.data.imaging import load_image
from echoseg.core.env import resolve_device
from echoseg.core.errors import UserError
from echoseg.core.hub import offline
from echoseg.core.models.openclip import encode_images, load_clip_model


class Encoder(Protocol):
    """Anything that embeds grey uint8 images."""

    name: str

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32 embeddings of grey uint8 (H, W) images."""
        ...


def model_inputs(images: Sequence[np.ndarray], model, device: torch.device | str = "cpu") -> torch.Tensor:
    """Grey uint8 images -> the (B, 3, S, S) normalised float tensor a SegModel takes (as in training)."""
    size = int(model.input_size)
    arr = np.stack([resize_image(np.asarray(im, np.uint8), size) for im in images]).astype(np.float32) / 255.0
    x = torch.from_numpy(arr)[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous().to(device)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(image, np.uint8)[..., None], 3, axis=-1)


class SegmenterEncoder:
    """Pooled image-encoder features of a SegModel (U-Net bottleneck or CLIPSeg vision pooled output)."""

    def __init__(self, model, device: str = "cpu") -> None:
        kind = _segmenter_kind(model)
        if kind is None:
            raise UserError(f"--encoder segmenter: no image-encoder hook for model {getattr(model, 'name', '?')!r} "
                            "(supported: unet, clipseg); give --encoder open_clip:PATH or hf:PATH")
        self.model, self.kind, self.device = model, kind, device
        self.name = f"segmenter:{kind}"

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Pooled features (N, D)."""
        self.model.eval()
        x = model_inputs(images, self.model, self.device)
        if self.kind == "unet":
            for i, block in enumerate(self.model.down):
                x = block(x if i == 0 else self.model.pool(x))
            feats = x.mean(dim=(2, 3))
        else:
            feats = self.model.hf.clip.vision_model(pixel_values=x).pooler_output
        return feats.float().cpu().numpy()


def _segmenter_kind(model) -> str | None:
    if hasattr(model, "down") and hasattr(model, "pool"):
        return "unet"
    hf = getattr(model, "hf", None)
    if hf is not None and hasattr(getattr(hf, "clip", None), "vision_model"):
        return "clipseg"
    return None


class PixelEncoder:
    """Area-resized grey thumbnails as vectors (see the module notes)."""

    def __init__(self, size: int = 32) -> None:
        if size < 2:
            raise UserError(f"--encoder pixels:{size}: the thumbnail side must be >= 2")
        self.size = int(size)
        self.name = f"pixels:{self.size}"

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, size*size) grey levels in 0..1."""
        return np.stack([resize_image(np.asarray(im, np.uint8), self.size).reshape(-1) for im in images]
                        ).astype(np.float32) / 255.0


class OpenClipEncoder:
    """Image embeddings of an open_clip model (see ``echoseg.core.eval.echoclip.load_clip_model``)."""

    def __init__(self, spec: str, device: str = "auto", clip=None) -> None:

        if clip is None:
            try:
                clip = load_clip_model(spec, device)
            except UserError as exc:
                raise UserError(str(exc).replace("--clip-model ", "--encoder open_clip:", 1)) from None
        self.clip = clip
        self.name = f"open_clip:{spec}"

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Normalised image embeddings (N, D)."""

        return encode_images(self.clip, [_to_rgb(im) for im in images], batch_size=len(images)).cpu().numpy()


class HFEncoder:
    """A transformers vision model (DINO family, ViT, CLIP...) with its image processor."""

    def __init__(self, path_or_id: str, device: str = "auto") -> None:
        from transformers import (  # deferred: heavy import, loaded only when this path runs
            AutoImageProcessor,
            AutoModel,
        )

        self.device = resolve_device(device)
        local = Path(path_or_id).is_dir() or offline()
        try:
            self.processor = AutoImageProcessor.from_pretrained(path_or_id, local_files_only=local)
            self.model = AutoModel.from_pretrained(path_or_id, local_files_only=local).to(self.device).eval()
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--encoder hf:{path_or_id}: cannot load a vision model and image processor ({first}); "
                            "give a local folder with config.json, weights and preprocessor_config.json "
                            "(or the processor_config.json transformers v5 writes)") from None
        self.name = f"hf:{path_or_id}"

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings (N, D): image features, pooled output or CLS token."""
        inputs = self.processor(images=[_to_rgb(im) for im in images], return_tensors="pt")
        pixels = inputs["pixel_values"].to(self.device)
        if hasattr(self.model, "get_image_features"):
            feats = self.model.get_image_features(pixel_values=pixels)
            feats = getattr(feats, "pooler_output", feats)
        else:
            out = self.model(pixel_values=pixels)
            pooled = getattr(out, "pooler_output", None)
            feats = pooled if pooled is not None else out.last_hidden_state[:, 0]
        if feats.ndim > 2:  # convolutional backbones pool to (B, C, 1, 1)
            feats = feats.flatten(2).mean(-1)
        return feats.float().cpu().numpy()


def make_encoder(spec: str, segmenter=None, device: str = "auto") -> Encoder:
    """The encoder named by ``--encoder`` (see the module notes)."""

    if spec == "segmenter":
        if segmenter is None:
            raise UserError("--encoder segmenter needs --segmenter TRAIN_RUN; or give --encoder open_clip:PATH "
                            "or --encoder hf:PATH")
        return SegmenterEncoder(segmenter, resolve_device(device))
    kind, _, target = spec.partition(":")
    if kind == "pixels":
        if target and not target.isdigit():
            raise UserError(f"--encoder {spec!r}: expected pixels or pixels:N (thumbnail side)")
        return PixelEncoder(int(target) if target else 32)
    if kind == "open_clip" and target:
        return OpenClipEncoder(target, device)
    if kind == "hf" and target:
        return HFEncoder(target, device)
    raise UserError(f"--encoder {spec!r}: expected segmenter, pixels[:N], open_clip:PATH or hf:PATH_OR_ID")


def embed_files(
    encoder: Encoder, paths: Sequence[str | Path], batch_size: int = 32, progress: bool = True,
    description: str = "embedding",
) -> np.ndarray:
    """Embeddings (N, D) float32 of image files, read and encoded ``batch_size`` at a time.

    Raises:
        UserError: a file cannot be read as a 2-D image.
    """
    paths = [str(p) for p in paths]
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    out = []
    for batch in track(batches, description) if progress else batches:
        out.append(np.asarray(encoder.embed([load_image(p) for p in batch]), np.float32))
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(out)
