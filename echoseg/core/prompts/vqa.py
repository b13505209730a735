"""Shape words from a visual-question-answering model (transformers), as the Synthetic Boost authors did.

The model sees the image with a green box drawn around the structure and is asked
"What is the shape of the <structure> in the green box?". Its free-text answer is normalised to one of the
five shape words (circle, oval, triangle, square, rectangle); any other answer gives "" and is counted.

Any model ``AutoModelForVisualQuestionAnswering`` loads works: classifier heads (ViLT, answers from
``config.id2label``) and generative ones (BLIP, BLIP-2, answers decoded from ``generate``). Weights come from
a local folder (``save_pretrained`` layout) or a Hugging Face hub id already in the local cache; nothing is
downloaded when HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from echoseg.core.data.imaging import to_uint8
from echoseg.core.data.manifest import STRUCTURE_NAMES
from echoseg.core.errors import UserError
from echoseg.core.hub import ALLOW_FLAG, offline

GREEN = (0, 255, 0)
_SYNONYMS: dict[str, str] = {
    "circle": "circle", "circular": "circle", "round": "circle", "rounded": "circle", "disc": "circle",
    "disk": "circle", "sphere": "circle", "spherical": "circle",
    "oval": "oval", "ovoid": "oval", "ovular": "oval", "ellipse": "oval", "elliptical": "oval",
    "elliptic": "oval", "egg": "oval",
    "triangle": "triangle", "triangular": "triangle", "cone": "triangle", "conical": "triangle",
    "pyramid": "triangle", "wedge": "triangle",
    "square": "square", "squared": "square", "cube": "square",
    "rectangle": "rectangle", "rectangular": "rectangle",
}


def normalise_answer(answer: str | None) -> str:
    """Map a free-text answer onto circle/oval/triangle/square/rectangle; "" when it names none of them.

    Examples: "triangular" -> triangle, "Round." -> circle, "an elliptical shape" -> oval, "heart" -> "".
    """
    if not answer:
        return ""
    words = re.findall(r"[a-z]+", answer.lower())
    found = [_SYNONYMS[w] for w in words if w in _SYNONYMS]
    return found[0] if found else ""


def question(structure: str) -> str:
    """The question asked about a structure (manifest short name LV/MYO/LA or its full name)."""
    name = STRUCTURE_NAMES.get(structure, structure)
    return f"What is the shape of the {name.lower()} in the green box?"


def boxed_image(image: np.ndarray, mask: np.ndarray, margin: int = 4) -> np.ndarray:
    """An RGB uint8 copy of ``image`` with a green rectangle around the nonzero pixels of ``mask``.

    A grey image is converted to RGB; an empty mask gives the image without a box.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:

        img = to_uint8(img)
    rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img[..., :3].copy()
    m = np.asarray(mask)
    if m.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"mask shape {m.shape[:2]} differs from image shape {rgb.shape[:2]}")
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return rgb
    h, w = rgb.shape[:2]
    thickness = max(1, round(min(h, w) / 128))
    x0, y0 = max(0, int(xs.min()) - margin), max(0, int(ys.min()) - margin)
    x1, y1 = min(w - 1, int(xs.max()) + margin), min(h - 1, int(ys.max()) + margin)
    cv2.rectangle(rgb, (x0, y0), (x1, y1), GREEN, thickness)
    return rgb


class VQAShapes:
    """A loaded VQA model that answers the shape question for (image, mask, structure) triples."""

    def __init__(self, model: str | Path, device: str = "auto", batch_size: int = 8):
        """Load processor and model from a local folder or a cached hub id.

        Raises:
            UserError: no such folder and the hub id cannot be loaded (offline or not cached), or the folder
                does not hold a VQA model.
        """
        from transformers import (  # deferred: heavy import, loaded only when this path runs
            AutoModelForVisualQuestionAnswering,
            AutoProcessor,
        )
        from transformers.utils import logging as hf_logging  # deferred: heavy import, loaded only when this path runs

        hf_logging.disable_progress_bar()
        src = str(model)
        local = Path(src).expanduser()
        how = ("pass --vqa-model a local folder holding a transformers VQA model (config.json, weights and "
               "processor files, e.g. saved with save_pretrained), or a hub id such as dandelin/vilt-b32-finetuned-vqa "
               "or Salesforce/blip-vqa-base that is already in the Hugging Face cache (download it once with "
               "network access: huggingface-cli download <id>)")
        if local.exists() and not (local / "config.json").is_file():
            raise UserError(f"--vqa-model {src}: no config.json in that folder; {how}")
        try:
            self.processor = AutoProcessor.from_pretrained(str(local) if local.exists() else src)
            self.model = AutoModelForVisualQuestionAnswering.from_pretrained(str(local) if local.exists() else src)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            note = f" (offline: nothing is downloaded without {ALLOW_FLAG})" if offline() else ""
            raise UserError(f"--vqa-model {src}: cannot load a VQA model{note}: {first}; {how}") from None
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.generative = bool(type(self.model).can_generate())
        self.batch_size = max(1, int(batch_size))
        self.source = src

    def answer(self, images: list[np.ndarray], questions: list[str]) -> list[str]:
        """Raw text answers for RGB images and questions (processed in batches)."""

        answers: list[str] = []
        for start in range(0, len(images), self.batch_size):
            pil = [Image.fromarray(im) for im in images[start:start + self.batch_size]]
            qs = questions[start:start + self.batch_size]
            enc = self.processor(images=pil, text=qs, return_tensors="pt", padding=True)
            enc = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in enc.items()}
            with torch.no_grad():
                if self.generative:
                    ids = self.model.generate(**enc, max_new_tokens=10)
                    answers += [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
                else:
                    logits = self.model(**enc).logits
                    id2label = self.model.config.id2label
                    answers += [str(id2label[int(i)]) for i in logits.argmax(-1).tolist()]
        return answers

    def shapes(self, items: list[tuple[np.ndarray, np.ndarray, str]]) -> list[tuple[str, str]]:
        """(raw answer, shape word or "") for each (grey image, binary mask, structure) triple."""
        images = [boxed_image(img, mask) for img, mask, _ in items]
        raw = self.answer(images, [question(s) for _, _, s in items])
        return [(r, normalise_answer(r)) for r in raw]
