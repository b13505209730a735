"""Layout detection and whole-data-set validation (`echoseg data check`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from echoseg.core.data.camus import check_camus, detect_camus, read_camus
from echoseg.core.data.echonet import check_echonet, detect_echonet
from echoseg.core.data.manifest import Problem, read_manifest
from echoseg.core.data.sdm_camus import check_sdm_camus, detect_sdm_camus, read_sdm_camus
from echoseg.core.errors import UserError

DATASETS = ("auto", "camus", "sdm-camus", "echonet")


def detect_layout(root: str | Path) -> str:
    """Name the layout of a data set folder: camus-nifti, camus-mhd, sdm-camus or echonet.

    Raises:
        UserError: the folder is missing or holds none of the supported layouts.
    """

    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: directory not found")
    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    if detect_echonet(root):
        return "echonet"
    camus = detect_camus(root)
    if camus:
        return camus
    if detect_sdm_camus(root):
        return "sdm-camus"
    raise UserError(
        f"{root}: no supported layout found (expected CAMUS database_nifti/ or training|testing/, "
        "SDM CAMUS PNGs, or EchoNet-Dynamic FileList.csv + Videos/)"
    )


def _resolve_layout(root: Path, dataset: str) -> str:
    if dataset not in DATASETS:
        raise UserError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    layout = detect_layout(root)
    if dataset != "auto" and not layout.startswith(dataset):
        raise UserError(f"{root}: --dataset {dataset} given but the folder holds a {layout} layout")
    return layout


@dataclass
class CheckReport:
    """What `data check` found: usable rows and unusable files."""

    root: Path
    layout: str
    table: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)

    @property
    def is_video(self) -> bool:
        return self.layout == "echonet"

    def counts(self) -> pd.DataFrame:
        """Counts of images (or videos) per split, view and phase."""
        t = self.table
        if t.empty:
            return pd.DataFrame(columns=["split", "count"])
        if self.is_video:
            return t.groupby("Split").size().rename("videos").reset_index().rename(columns={"Split": "split"})
        images = t.drop_duplicates("image")
        return images.groupby(["split", "view", "phase"]).size().rename("images").reset_index()

    def completeness(self) -> dict[str, float]:
        """Fraction of images (videos) with each metadata attribute present."""
        t = self.table
        if t.empty:
            return {}
        if self.is_video:
            cols = [c for c in ("EF", "ESV", "EDV", "FPS") if c in t.columns]
            out = {c: float(pd.to_numeric(t[c], errors="coerce").notna().mean()) for c in cols}
            if "traced" in t.columns:
                out["tracings"] = float(t["traced"].astype(bool).mean())
            return out
        images = t.drop_duplicates("image")
        return {c: float((images[c].notna() & (images[c].astype(str).str.strip() != "")).mean())
                for c in ("sex", "age", "quality") if c in images.columns}

    def sizes(self) -> dict[str, int]:
        """How many images (videos) have each HxW size, when the reader reported sizes."""
        t = self.table
        if self.is_video and {"FrameHeight", "FrameWidth"} <= set(t.columns):
            keys = t["FrameHeight"].astype(str) + "x" + t["FrameWidth"].astype(str)
            return keys.value_counts().to_dict()
        if {"height", "width"} <= set(t.columns):
            images = t.drop_duplicates("image")
            keys = images["height"].astype(str) + "x" + images["width"].astype(str)
            return keys.value_counts().to_dict()
        return {}

    def summary(self) -> dict[str, Any]:
        """Headline results for summary.json."""
        unit = "videos" if self.is_video else "images"
        n_units = len(self.table) if self.is_video else int(self.table["image"].nunique()) if len(self.table) else 0
        return {
            "root": str(self.root.resolve()),
            "layout": self.layout,
            unit: n_units,
            "samples": len(self.table),
            "problems": len(self.problems),
            "counts": self.counts().to_dict(orient="records"),
            "completeness": self.completeness(),
            "sizes": self.sizes(),
        }


def check_dataset(root: str | Path, dataset: str = "auto") -> CheckReport:
    """Validate every file of a data set folder (layout detected unless ``dataset`` names it)."""
    root = Path(root)
    layout = _resolve_layout(root, dataset)
    if layout == "echonet":

        table, problems = check_echonet(root)
    elif layout.startswith("camus"):

        table, problems = check_camus(root)
    else:

        table, problems = check_sdm_camus(root)
    return CheckReport(root=root, layout=layout, table=table, problems=list(problems))


def read_dataset(root: str | Path, dataset: str = "auto", **kwargs: Any) -> pd.DataFrame:
    """Read a CAMUS or SDM CAMUS data set (or a folder holding an echoseg manifest.csv) as a manifest."""

    root = Path(root)
    if (root / "manifest.csv").is_file() and dataset == "auto":
        return read_manifest(root)
    layout = _resolve_layout(root, dataset)
    if layout.startswith("camus"):

        return read_camus(root, **kwargs)
    if layout == "sdm-camus":

        return read_sdm_camus(root, **kwargs)
    raise UserError(f"{root}: {layout} holds videos, not (image, mask) samples")
