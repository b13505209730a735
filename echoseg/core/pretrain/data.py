"""Image-text pairs for pre-training, from one or more prompts runs (real, synthetic or both: "mix").

A pair is one image and one text (``--text``):

- ``report`` (default): the image-level report ``prompts build`` writes (the same on every structure row);
- ``pK`` / ``pK_b``: the image's structure prompts joined into one text, in the order LV, MYO, LA
  ("left ventricle of the heart. myocardium of the heart. left atrium of the heart.");
- any other manifest column: its value when it is one per image, else its distinct values joined the same way.

Images come from the sample cache at the model's input size (decoded once, shared with `train`), grey replicated to
three channels and normalised with the model's mean/std. Each pair keeps its ``source`` (real / synthetic) and the run
it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from echoseg.core.data.manifest import STRUCTURE_LABELS, read_manifest
from echoseg.core.errors import UserError

PAIR_COLUMNS = ["image", "mask", "patient", "split", "source", "run", "text"]


@dataclass
class PairData:
    """The pairs of one split (one row per image) and the runs they come from."""

    frame: pd.DataFrame
    runs: list[Path]

    def __len__(self) -> int:
        return len(self.frame)

    def summary(self) -> dict:
        """Counts for run records: pairs, by source, and the input runs."""
        by_source = self.frame["source"].value_counts().sort_index()
        return {"pairs": len(self.frame), "source": {str(k): int(v) for k, v in by_source.items()},
                "runs": [str(r) for r in self.runs]}


def _join(values: Sequence[str]) -> str:
    parts = [v.strip().rstrip(".") for v in dict.fromkeys(values) if v and v.strip()]
    return ". ".join(parts) + ("." if parts else "")


def image_texts(frame: pd.DataFrame, text: str, option: str) -> pd.DataFrame:
    """One row per image of a manifest with its pre-training text (see the module docstring)."""
    if text not in frame.columns:
        hint = " (prompts runs made before the report column existed: rebuild with `echoseg prompts build`)" if (
            text == "report") else ""
        raise UserError(f"{option}: manifest has no column {text!r} for --text{hint}")
    df = frame.copy()
    df["_order"] = df["structure"].astype(str).map(STRUCTURE_LABELS).fillna(99) if "structure" in df else 0
    df = df.sort_values(["image", "_order"], kind="stable")
    values = df[text].fillna("").astype(str)
    texts = values.groupby(df["image"], sort=False).agg(lambda v: _join(list(v)))
    first = df.groupby("image", sort=False).first()
    out = pd.DataFrame({
        "image": texts.index.astype(str),
        "mask": first["mask"].astype(str).to_numpy(),
        "patient": first["patient"].astype(str).to_numpy() if "patient" in first else texts.index.astype(str),
        "split": first["split"].astype(str).to_numpy(),
        "source": first["source"].fillna("real").astype(str).str.lower().to_numpy() if "source" in first else "real",
        "text": texts.to_numpy(),
    })
    empty = out["text"].str.strip() == ""
    if empty.all():
        raise UserError(f"{option}: column {text!r} is empty for every image")
    return out[~empty].reset_index(drop=True)


def load_pairs(runs: Sequence[str | Path], split: str, text: str) -> PairData:
    """The ``split`` pairs of every run in ``runs`` (``--data``), concatenated in the order given.

    Raises:
        UserError: a run is missing or has no manifest, the text column is absent, or no run has ``split`` rows.
    """
    frames, used = [], []
    for run in runs:
        path = Path(run)
        option = f"--data {path}"
        if not path.exists():
            raise UserError(f"{option}: not found")
        df = read_manifest(path)
        pairs = image_texts(df, text, option)
        pairs = pairs[pairs["split"] == split]
        if pairs.empty:
            continue
        pairs.insert(5, "run", str(path))
        frames.append(pairs)
        used.append(path)
    if not frames:
        raise UserError(f"--data {', '.join(str(r) for r in runs)}: no {split!r} rows")
    frame = pd.concat(frames, ignore_index=True)[PAIR_COLUMNS]
    return PairData(frame, used)


def cache_frame(pairs: PairData) -> pd.DataFrame:
    """The rows the sample cache needs (image and mask paths)."""
    return pairs.frame[["image", "mask"]]


class PairImages:
    """Normalised (3, S, S) image tensors of a split's pairs, read from the sample cache."""

    def __init__(self, pairs: PairData, cache, mean: Sequence[float], std: Sequence[float]) -> None:
        self.rows = np.array([cache.row_of(p) for p in pairs.frame["image"]], dtype=np.int64)
        self.cache = cache
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def batch(self, idx: Sequence[int]) -> torch.Tensor:
        """Images of the pairs at ``idx`` as one (B, 3, S, S) float tensor."""
        grey = torch.from_numpy(np.stack([self.cache.image(int(self.rows[i])) for i in idx])).float() / 255.0
        return (grey[:, None].expand(-1, 3, -1, -1) - self.mean) / self.std
