"""The manifest: one row per (image, structure) sample, shared by every stage (docs/architecture.md, "Data
contract"); its prompt columns (``p0``..``p7``, ``pK_b``) and the rows of one split."""

from __future__ import annotations

import os
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
# The label values a label map may hold, per encoding: CAMUS (0 background, 1 LV, 2 MYO, 3 LA) and SDM CAMUS sector
# maps (0 outside the sector, 1 LV, 2 background inside the sector, 3 MYO, 4 LA). Every reader checks them.
LABEL_SETS: dict[str, tuple[int, ...]] = {"camus": (0, 1, 2, 3), "sdm": (0, 1, 2, 3, 4)}
ANY_LABELS: tuple[int, ...] = tuple(sorted(set().union(*LABEL_SETS.values())))


@dataclass(frozen=True)
class Problem:
    """A file that cannot be used, and why (reported by `data check`, and by `--skip-bad` runs)."""

    path: str
    reason: str


PROBLEM_COLUMNS = ["path", "reason"]


def problems_frame(problems: Sequence[Problem]) -> pd.DataFrame:
    """The ``problems.csv`` table (path, reason) of a list of problems."""
    return pd.DataFrame([{"path": p.path, "reason": p.reason} for p in problems], columns=PROBLEM_COLUMNS)


def write_problems(path: str | Path, problems: Sequence[Problem]) -> None:
    """Atomically write ``problems.csv`` (columns path, reason; a header alone when there is none)."""
    write_csv(path, problems_frame(problems))


def skipped_summary(problems: Sequence[Problem], videos: int) -> dict:
    """The summary entries of a ``--skip-bad`` run: how many videos were left out, and every problem found (the
    file and why; a video may have several)."""
    return {"videos_skipped": int(videos), "skipped": [{"path": p.path, "reason": p.reason} for p in problems]}


def report_skipped(run, problems: Sequence[Problem], videos: int) -> dict:
    """Write ``problems.csv`` into a ``--skip-bad`` run (``run``: an echoseg Run), warn about each problem (stderr
    and log.txt), and return the summary entries of :func:`skipped_summary`."""
    if run.writer:
        write_problems(run.file("problems.csv"), problems)
    for p in problems:
        run.log(f"warning: skipped: {p.path}: {p.reason}", style="yellow")
    if videos:
        run.log(f"warning: {videos} damaged video(s) left out (--skip-bad), listed in "
                f"{Path(run.path) / 'problems.csv'}", style="yellow")
    return skipped_summary(problems, videos)


def label_convention(manifest: pd.DataFrame) -> str:
    """'camus' (0 bg, 1 LV, 2 MYO, 3 LA) or 'sdm' (0 out, 1 LV, 2 bg, 3 MYO, 4 LA), from the structure labels."""
    if "label_encoding" in manifest.columns:
        encodings = set(manifest["label_encoding"].dropna().astype(str))
        if len(encodings) == 1 and next(iter(encodings)) in LABEL_SETS:
            return next(iter(encodings))
    lab = dict(zip(manifest["structure"].astype(str), pd.to_numeric(manifest["label"], errors="coerce"), strict=True))
    if lab.get("MYO") == 3 or lab.get("LA") == 4:
        return "sdm"
    if lab.get("MYO") == 2 or lab.get("LA") == 3:
        return "camus"
    src = manifest["source"].astype(str).str.lower()
    return "sdm" if len(src) and (src == "synthetic").all() else "camus"


def mask_labels(manifest: pd.DataFrame) -> list[tuple[int, ...]]:
    """The label values each row's label map may hold: its ``label_encoding`` when the manifest has one (SDM CAMUS
    folders may differ), else the manifest's :func:`label_convention`."""
    default = LABEL_SETS[label_convention(manifest)] if len(manifest) else ANY_LABELS
    if "label_encoding" not in manifest.columns:
        return [default] * len(manifest)
    return [LABEL_SETS.get(str(e), default) for e in manifest["label_encoding"]]


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


# Columns holding file paths: written relative to the manifest's folder when the file lies inside it (a run's own
# files), absolute otherwise (an external data set); read back as absolute paths.
PATH_COLUMNS = ("image", "mask", "half_sequence", "half_sequence_gt")


def _is_path(value) -> bool:
    return isinstance(value, str) and value.strip() != ""


def absolute_paths(df: pd.DataFrame, base: str | Path) -> pd.DataFrame:
    """A copy of ``df`` whose relative path cells are joined to ``base`` (absolute, normalised)."""
    root = Path(os.path.abspath(base))
    out = df.copy()
    for col in (c for c in PATH_COLUMNS if c in out.columns):
        out[col] = [os.path.normpath(root / v) if _is_path(v) and not os.path.isabs(v) else v for v in out[col]]
    return out


def relative_paths(df: pd.DataFrame, base: str | Path) -> pd.DataFrame:
    """A copy of ``df`` whose path cells under ``base`` are relative to it (POSIX separators); others unchanged."""
    root = Path(base).resolve()
    out = df.copy()
    for col in (c for c in PATH_COLUMNS if c in out.columns):
        out[col] = [_relative(v, root) if _is_path(v) else v for v in out[col]]
    return out


def _relative(value: str, root: Path) -> str:
    try:
        return Path(value).resolve().relative_to(root).as_posix()
    except ValueError:  # outside the folder: an external data set keeps its absolute path
        return value


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read ``manifest.csv`` (a file or a run directory holding one) and check its columns.

    Path columns come back absolute: relative ones are taken from the manifest's own folder, so a copied or moved
    run reads its own files.
    """
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
    return absolute_paths(df, p.parent)


def write_manifest(df: pd.DataFrame, path: str | Path) -> None:
    """Atomically write a manifest (standard column order; paths inside its folder relative to it)."""
    write_csv(path, relative_paths(finalize_manifest(df), Path(path).parent))


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
