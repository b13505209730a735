"""The manifest: one row per (image, structure) sample, shared by every stage (docs/architecture.md, "Data
contract"); its prompt columns (``p0``..``p7``, ``pK_b``) and the rows of one split."""

from __future__ import annotations

import re
from collections.abc import Sequence
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


# ----------------------------------------------------------------------------- prompt columns and splits
_FIXED = re.compile(r"^p[0-7](_b)?$")
_RANDOM = re.compile(r"^random(:p([0-7]))?$")


def prompt_columns(spec: str) -> list[str]:
    """The manifest column(s) a ``--prompt`` value draws from (one fixed column, or the two variants)."""
    spec = spec.strip()
    if _FIXED.match(spec):
        return [spec]
    m = _RANDOM.match(spec)
    if m:
        k = m.group(2) or "7"
        return [f"p{k}"] if k == "0" else [f"p{k}", f"p{k}_b"]
    raise UserError(f"--prompt {spec!r}: expected p0..p7, p1_b..p7_b, random or random:pK")


def is_random_prompt(spec: str) -> bool:
    """Whether a ``--prompt`` value draws a variant per sample and epoch."""
    return bool(_RANDOM.match(spec.strip()))


def check_prompt_columns(df: pd.DataFrame, columns: Sequence[str], source: str, needs_text: bool = True) -> None:
    """Raise UserError naming the manifest when a prompt column is missing (empty cells are the empty prompt)."""
    if not needs_text:
        return
    for col in columns:
        if col not in df.columns:
            raise UserError(f"{source}: manifest has no prompt column {col!r} (is it a `prompts build` run?)")


@dataclass
class SplitData:
    """The rows of one split and the run directory they come from (where its cache lives)."""

    frame: pd.DataFrame
    source: Path


def load_split(run_dir: str | Path, split: str, option: str = "--data") -> SplitData:
    """Read ``manifest.csv`` of a data/prompts run and keep the rows of ``split``."""
    path = Path(run_dir)
    if not path.exists():
        raise UserError(f"{option} {path}: not found")
    df = read_manifest(path)
    rows = df[df["split"].astype(str) == split].reset_index(drop=True)
    if rows.empty:
        found = ", ".join(sorted(df["split"].astype(str).unique()))
        raise UserError(f"{option} {path}: no rows with split {split!r} (splits there: {found})")
    return SplitData(rows, path if path.is_dir() else path.parent)
