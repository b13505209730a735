"""CLIPSeg (Lüddecke & Ecker 2022) through transformers' ``CLIPSegForImageSegmentation``.

Configs (``configs/clipseg.json``): ``tiny`` is a small random model for CPU tests with the offline tokenizer;
``base`` is the paper's ViT-B/16 model at 352x352, loaded from ``--weights`` (default
``CIDAS/clipseg-rd64-refined``, a local folder or the local Hugging Face cache), with the tokenizer and the
normalisation shipped beside the weights.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer

from echoseg.core.errors import UserError
from echoseg.core.io import read_json
from echoseg.core.models import register
from echoseg.core.models.base import SegModel
from echoseg.core.models.tokenizer import BOS, EOS, offline_clip_tokenizer
from echoseg.core.models.weights import resolve_weights


class CLIPSeg(SegModel):
    """CLIPSeg wrapper: tokenizes the prompts and returns (B, 1, H, W) logits at the input size."""

    uses_text = True

    def __init__(
        self,
        hf_model: CLIPSegForImageSegmentation,
        tokenizer: CLIPTokenizer,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        max_text_length: int = 77,
    ) -> None:
        super().__init__(input_size, mean, std)
        self.hf = hf_model
        self.tokenizer = tokenizer
        self.max_text_length = int(max_text_length)

    def tokenize(self, texts: Sequence[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded to the longest prompt, truncated to ``max_text_length``."""
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def forward(
        self, images: torch.Tensor, texts: Sequence[str], structures: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, 1, H, W); ``structures`` is unused (the prompt carries the structure).

        The steps of ``CLIPSegForImageSegmentation.forward`` (CLIP image activations at ``extract_layers``, the
        projected text embedding, the decoder), without its ``torch.no_grad()`` around the CLIP encoders: that
        would keep them frozen whatever ``--freeze-encoders`` says. Frozen encoders record no graph either way.
        """
        tokens = self.tokenize(texts, images.device)
        clip = self.hf.clip
        vision = clip.vision_model(pixel_values=images, output_hidden_states=True, return_dict=True,
                                   **self._interpolate)
        activations = [vision.hidden_states[i + 1] for i in self.hf.extract_layers]
        text = clip.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                               return_dict=True)
        logits = self.hf.decoder(activations, clip.text_projection(text.pooler_output)).logits
        return logits.reshape(images.shape[0], 1, *logits.shape[-2:])

    @property
    def _interpolate(self) -> dict[str, bool]:
        """``interpolate_pos_encoding=True`` (other input sizes than the config's) where transformers has it."""
        params = inspect.signature(self.hf.clip.vision_model.forward).parameters
        return {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in params else {}

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """CLIP's image and text encoders and their projections (the decoder stays trainable)."""
        return self.hf.clip.parameters()

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this architecture offline (with the saved tokenizer)."""
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "max_text_length": self.max_text_length,
            "hf_config": self.hf.config.to_dict(),
        }

    def save_assets(self, folder: Path) -> None:
        """Save the tokenizer to ``folder/tokenizer``."""
        self.tokenizer.save_pretrained(str(Path(folder) / "tokenizer"))


def _random_config(overrides: dict[str, Any], tokenizer: CLIPTokenizer) -> CLIPSegConfig:
    """A CLIPSegConfig with the text embedding sized and special ids set for ``tokenizer``."""
    hf = {k: v for k, v in overrides.items() if k not in ("text_config", "vision_config")}
    text = dict(overrides.get("text_config", {}))
    text.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS),
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPSegConfig(text_config=text, vision_config=dict(overrides.get("vision_config", {})), **hf)


def _load_pretrained(path: Path, cfg: dict[str, Any], what: str) -> tuple[CLIPSegForImageSegmentation, CLIPTokenizer]:
    try:
        model = CLIPSegForImageSegmentation.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{what} {path}: not a loadable CLIPSeg checkpoint ({first})") from None
    if not ((path / "vocab.json").is_file() and (path / "merges.txt").is_file()) and not (
        path / "tokenizer.json"
    ).is_file():
        raise UserError(f"{what} {path}: no tokenizer files (vocab.json + merges.txt, or tokenizer.json) there")
    tokenizer = CLIPTokenizer.from_pretrained(str(path))
    mean, std = pretrained_normalisation(path)
    cfg["mean"] = mean if mean is not None else cfg["mean"]
    cfg["std"] = std if std is not None else cfg["std"]
    return model, tokenizer


def pretrained_normalisation(path: Path) -> tuple[list[float] | None, list[float] | None]:
    """Image mean/std of a Hugging Face CLIPSeg folder, or None where the folder does not say.

    transformers v4 writes ``preprocessor_config.json`` (image_mean/image_std at the top level); v5 writes
    ``processor_config.json`` with them inside an ``image_processor`` sub-dict. Both are read, the former first.
    """
    mean = std = None
    for name in ("preprocessor_config.json", "processor_config.json"):
        file = Path(path) / name
        if not file.is_file():
            continue
        info = read_json(file)
        for section in (info, info.get("image_processor")):
            if isinstance(section, dict):
                mean = section.get("image_mean") if mean is None else mean
                std = section.get("image_std") if std is None else std
    return mean, std


@register("clipseg")
def build(config: dict[str, Any], weights: str | None = None, assets: Path | None = None) -> CLIPSeg:
    """Build CLIPSeg from a config dict, optionally loading pretrained weights (local folder or hub id)."""
    cfg = dict(config)
    weights = weights or cfg.get("default_weights")
    if weights:
        path = resolve_weights(weights, required=("config.json",))
        hf_model, tokenizer = _load_pretrained(path, cfg, "--weights")
    else:
        tok_dir = Path(assets) / "tokenizer" if assets is not None else None
        tokenizer = (
            CLIPTokenizer.from_pretrained(str(tok_dir)) if tok_dir is not None and tok_dir.is_dir()
            else offline_clip_tokenizer()
        )
        if "hf_config" in cfg:
            hf_config = CLIPSegConfig.from_dict(cfg["hf_config"])
        else:
            hf_config = _random_config(cfg.get("hf", {}), tokenizer)
        hf_model = CLIPSegForImageSegmentation(hf_config)
    return CLIPSeg(
        hf_model,
        tokenizer,
        input_size=int(cfg.get("input_size", 352)),
        mean=cfg.get("mean", (0.485, 0.456, 0.406)),
        std=cfg.get("std", (0.229, 0.224, 0.225)),
        max_text_length=int(cfg.get("max_text_length", 77)),
    )
