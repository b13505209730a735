"""Training samples from a prompts run: (image, structure, prompt) -> binary target, read from the sample cache.

Each manifest row is one (image, structure) sample; its binary target is ``mask == label``. Images and label maps
come from the preprocessed cache (``echoseg.core.data.cache``) at the model's input size, so no NIfTI is decoded
while training. Prompt selection (``--prompt``):

- ``pK`` / ``pK_b``: the fixed prompt column (variant A "... of the heart", variant B "... in the cardiac
  ultrasound"); ``p0`` is the same text for every structure;
- ``random`` (= ``random:p7``) or ``random:pK``: per sample and epoch, one of the two variants ``pK``/``pK_b``,
  drawn from a generator seeded by (seed, epoch, sample index), so a resumed run draws the same prompts.

Augmentation (``augment=True``) is echo-safe: small rotation and scale about the image centre (the sector apex
stays on top), brightness, contrast and gamma; never a horizontal flip (it would swap the chambers' sides).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from echoseg.core.data.manifest import STRUCTURE_LABELS


def _structure_index(df: pd.DataFrame) -> np.ndarray:
    """Structure label (1 LV, 2 MYO, 3 LA) of each row, from the ``structure`` name (else the ``label``)."""
    names = df["structure"].astype(str)
    known = names.map(STRUCTURE_LABELS)
    return np.where(known.notna(), known.fillna(0), df["label"]).astype(np.int64)


class SegDataset(Dataset):
    """Normalised images, binary targets, prompt texts and structure labels of one split."""

    def __init__(
        self,
        frame: pd.DataFrame,
        cache,
        mean: Sequence[float],
        std: Sequence[float],
        prompt_cols: Sequence[str],
        seed: int = 0,
        augment: bool = False,
        uses_text: bool = True,
    ) -> None:
        """Args:
            frame: manifest rows (image, label, structure, prompt columns).
            cache: a ``SampleCache`` holding every row's image at the model input size.
            mean, std: per-channel normalisation (images are grey, replicated to 3 channels).
            prompt_cols: one column (fixed prompt) or several (one drawn per sample and epoch).
            seed: base seed of prompt draws and augmentation.
            augment: apply echo-safe augmentation.
            uses_text: False for text-free models; then prompt columns may be absent (structure names used).
        """
        self.frame = frame.reset_index(drop=True)
        self.cache = cache
        self.rows = np.array([cache.row_of(p) for p in self.frame["image"].astype(str)], dtype=np.int64)
        self.labels = self.frame["label"].astype(np.int64).to_numpy()
        self.structures = _structure_index(self.frame)
        self.prompt_cols = list(prompt_cols)
        if uses_text or all(c in self.frame.columns for c in self.prompt_cols):
            # P0 is the empty prompt, which a CSV round trip turns into NaN.
            self.texts = [self.frame[c].fillna("").astype(str).tolist() for c in self.prompt_cols]
        else:
            self.texts = [self.frame["structure"].astype(str).tolist()]
        self.scale = (1.0 / (255.0 * np.asarray(std, np.float32))).reshape(3, 1, 1)
        self.shift = (np.asarray(mean, np.float32) / np.asarray(std, np.float32)).reshape(3, 1, 1)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose prompt draws and augmentations ``__getitem__`` returns."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.frame)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def prompt_index(self, index: int) -> int:
        """Which of ``prompt_cols`` sample ``index`` uses this epoch."""
        n = len(self.texts)
        return 0 if n == 1 else int(self._rng(index).integers(n))

    def __getitem__(self, index: int) -> dict:
        r = self.rows[index]
        image = np.asarray(self.cache.image(r))
        target = (np.asarray(self.cache.mask(r)) == self.labels[index]).astype(np.uint8)
        k = self.prompt_index(index)
        if self.augment:
            image, target = augment_pair(image, target, np.random.default_rng([self.seed, self.epoch, index, 1]))
        x = image.astype(np.float32)[None] * self.scale - self.shift  # (3, S, S) by broadcasting
        return {
            "image": torch.from_numpy(np.ascontiguousarray(x)),
            "target": torch.from_numpy(target.astype(np.float32)[None]),
            "structure": int(self.structures[index]),
            "text": self.texts[k][index],
            "index": index,
        }


def collate(items: list[dict]) -> dict:
    """Stack a list of samples into a batch (texts stay a list of strings)."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        "target": torch.stack([it["target"] for it in items]),
        "structure": torch.tensor([it["structure"] for it in items], dtype=torch.long),
        "text": [it["text"] for it in items],
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


def augment_pair(image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                 max_rotation: float = 10.0, scale: tuple[float, float] = (0.9, 1.1)) -> tuple[np.ndarray, np.ndarray]:
    """Echo-safe augmentation of a uint8 image and its binary target (no flips)."""
    s = image.shape[0]
    angle = float(rng.uniform(-max_rotation, max_rotation))
    zoom = float(rng.uniform(*scale))
    m = cv2.getRotationMatrix2D((s / 2.0, s / 2.0), angle, zoom)
    img = cv2.warpAffine(image, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    tgt = cv2.warpAffine(target, m, (s, s), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    f = img.astype(np.float32) / 255.0
    f = f * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.1, 0.1))  # contrast, brightness
    f = np.clip(f, 0.0, 1.0) ** float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))  # gamma
    return (f * 255.0 + 0.5).astype(np.uint8), tgt
