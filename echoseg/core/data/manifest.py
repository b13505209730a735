"""The manifest: one row per (image, structure) sample, shared by every stage (DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from echoseg.core.errors import UserError
from echoseg.core.io import write_csv

MANIFEST_COLUMNS = [
    "sample_id", "image", "mask", "label", "structure", "view", "phase",
    "patient", "sex", "age", "quality", "split", "source",
]
# CAMUS structure labels (and short names used in manifests).
STRUCTURES: dict[int, str] = {1: "LV", 2: "MYO", 3: "LA"}
STRUCTURE_LABELS: dict[str, int] = {v: k for k, v in STRUCTURES.items()}
STRUCTURE_NAMES: dict[str, str] = {
    "LV": "Left ventricular cavity",
    "MYO": "Myocardium",
    "LA": "Left atrium cavity",
}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Problem:
    """A file that cannot be used, and why (reported by `data check`)."""

    path: str
    reason: str


def empty_manifest() -> pd.DataFrame:
    """A manifest with the standard columns and no rows."""
    return pd.DataFrame(columns=MANIFEST_COLUMNS)


def finalize_manifest(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Order columns (standard ones first, extras after) and sort rows by sample_id."""
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    if df.empty:
        return empty_manifest()
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest rows lack columns: {missing}")
    extras = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return df[MANIFEST_COLUMNS + extras].sort_values("sample_id", kind="stable").reset_index(drop=True)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read ``manifest.csv`` (a file or a run directory holding one) and check its columns."""
    p = Path(path)
    if p.is_dir():
        p = p / "manifest.csv"
    if not p.is_file():
        raise UserError(f"{path}: no manifest.csv found")
    try:
        df = pd.read_csv(p, dtype={"sample_id": str, "patient": str, "sex": str, "quality": str, "split": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{p}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{p}: manifest lacks column(s) {', '.join(missing)}")
    if df["sample_id"].duplicated().any():
        dup = df.loc[df["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise UserError(f"{p}: duplicate sample_id {dup!r}")
    return df


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Atomically write a manifest (standard column order)."""
    write_csv(path, finalize_manifest(df))
