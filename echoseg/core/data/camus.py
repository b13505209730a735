"""CAMUS reader: the 2023 NIfTI release and the legacy 2019 MHD release, with Info_*.cfg metadata.

Layouts (``root`` may be the folder holding them, that folder's parent, or the patient-folder container itself):

- NIfTI: ``database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].nii.gz`` and ``Info_{2CH,4CH}.cfg``,
  split lists ``database_split/subgroup_{training,validation,testing}.txt`` (one patient name per line).
  ``*_half_sequence[_gt].nii.gz`` files are never taken as ED/ES images.
- MHD: ``training|testing/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].mhd`` (+ ``.raw``). Patient numbers
  restart in ``testing/``, so testing patients are named ``testing-patientNNNN`` in ``patient`` and ``sample_id``.

Orientation: the files are read with SimpleITK; ``GetArrayFromImage`` gives (H, W) (or (1, H, W), squeezed) with
row 0 the near field, i.e. the sector tip and LV apex at the top, which is how CAMUS images are displayed (the
CAMUS tutorial code reads them with SimpleITK and shows the arrays as they are; the SimpleITK spacing is
(width, height) order). No flip or transpose is applied; the toy writer stores arrays the same way.

Splits (as in Synthetic Boost): the official test patients are ``test`` (legacy ``testing/`` folder, or the
NIfTI release's ``subgroup_testing.txt``; without split lists the last 50 patients by name). Of the remaining
patients (sorted by name) the first 50 are ``val`` and the rest ``train``. Small data sets (fewer than 250
patients to split) use a fifth instead of 50 (at least 1, none when a single patient remains), so toy data keeps a
train split. ``val_patients`` sets the validation count; a ``splits`` CSV (columns patient,split) overrides both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from echoseg.core.data.imaging import check_pair
from echoseg.core.data.manifest import LABEL_SETS, SPLITS, STRUCTURES, Problem, finalize_manifest
from echoseg.core.errors import UserError

VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
CFG_REQUIRED = ("ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality")
QUALITIES = ("Good", "Medium", "Poor")
TESTING_PREFIX = "testing-"
_PATIENT_RE = re.compile(r"^patient\d+$")
_EXTS = {"camus-nifti": (".nii.gz", ".nii"), "camus-mhd": (".mhd", ".mha")}
_ATTR_KEYS = ("Sex", "Age", "ImageQuality")


# ----------------------------------------------------------------------------------------------- Info cfg
def _typed(value: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_info_cfg(path: str | Path) -> dict:
    """Parse an ``Info_{2CH,4CH}.cfg`` file (``key: value`` lines) into a dict; numbers become int/float.

    Raises:
        UserError: the file is missing, not text, or has a line that is not ``key: value`` or a repeated key.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{p}: file not found") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{p}: not a readable text file ({type(exc).__name__})") from None
    out: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key or " " in key:
            raise UserError(f"{p}: line {n} is not 'key: value': {line[:60]!r}")
        if key in out:
            raise UserError(f"{p}: line {n} repeats key {key!r}")
        out[key] = _typed(value)
    return out


def _norm_sex(value) -> str:
    s = str(value).strip().upper()[:1]
    return s if s in ("M", "F") else ""


def _norm_quality(value) -> str:
    s = str(value).strip().capitalize()
    return s if s in QUALITIES else ""


def _norm_age(value):
    try:
        f = float(value)
    except (TypeError, ValueError):
        return pd.NA
    return int(round(f)) if np.isfinite(f) else pd.NA


def cfg_problems(path: Path, info: dict) -> list[str]:
    """Reasons why a parsed Info cfg is incomplete or inconsistent (empty when it is fine)."""
    reasons = []
    missing = [k for k in CFG_REQUIRED if k not in info]
    if missing:
        reasons.append(f"missing key(s) {', '.join(missing)}")
    if "Sex" in info and not _norm_sex(info["Sex"]):
        reasons.append(f"Sex must be M or F, got {info['Sex']!r}")
    if "Age" in info and (isinstance(info["Age"], str) or pd.isna(_norm_age(info["Age"]))):
        reasons.append(f"Age must be a number, got {info['Age']!r}")
    if "ImageQuality" in info and not _norm_quality(info["ImageQuality"]):
        reasons.append(f"ImageQuality must be Good, Medium or Poor, got {info['ImageQuality']!r}")
    nb = info.get("NbFrame")
    if nb is not None:
        if not isinstance(nb, int) or nb < 1:
            reasons.append(f"NbFrame must be a positive integer, got {nb!r}")
        else:
            for key in ("ED", "ES"):
                v = info.get(key)
                if v is not None and (not isinstance(v, int) or not 1 <= v <= nb):
                    reasons.append(f"{key}={v!r} is outside 1..NbFrame={nb}")
    return reasons


# ----------------------------------------------------------------------------------------------- layout
def _has_patients(folder: Path, exts: tuple[str, ...]) -> bool:
    if not folder.is_dir():
        return False
    return any(next(folder.glob(f"patient*/patient*_[24]CH_E[DS]{ext}"), None) is not None for ext in exts)


def _locate(root: Path) -> tuple[str, list[tuple[str, Path]], Path | None] | None:
    """(dataset kind, [(group, patient-folder container)], split-list folder) or None."""

    def at(base: Path):
        if _has_patients(base / "database_nifti", _EXTS["camus-nifti"]):
            return "camus-nifti", [("", base / "database_nifti")], base / "database_split"
        groups = [(g, base / g) for g in ("training", "testing") if _has_patients(base / g, _EXTS["camus-mhd"])]
        return ("camus-mhd", groups, None) if groups else None

    if not root.is_dir():
        return None
    found = at(root)
    if found:
        return found
    if _has_patients(root, _EXTS["camus-nifti"]):
        return "camus-nifti", [("", root)], root.parent / "database_split"
    if _has_patients(root, _EXTS["camus-mhd"]):
        return "camus-mhd", [("testing" if root.name.lower() == "testing" else "training", root)], None
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = at(sub)
        if found:
            return found
    return None


def detect_camus(root: str | Path) -> str | None:
    """'camus-nifti' or 'camus-mhd' when ``root`` holds a CAMUS data set in that layout, else None."""
    found = _locate(Path(root))
    return found[0] if found else None


def _patients(kind: str, groups: list[tuple[str, Path]]) -> list[tuple[str, str, str, Path]]:
    """(patient id, file-name patient, group, folder) for every patient folder."""
    out = []
    for group, container in groups:
        for pdir in sorted(container.iterdir()):
            if pdir.is_dir() and _PATIENT_RE.match(pdir.name):
                pid = f"{TESTING_PREFIX}{pdir.name}" if kind == "camus-mhd" and group == "testing" else pdir.name
                out.append((pid, pdir.name, group, pdir))
    return out


def _find(pdir: Path, stem: str, exts: tuple[str, ...]) -> Path:
    for ext in exts:
        p = pdir / f"{stem}{ext}"
        if p.exists():
            return p
    return pdir / f"{stem}{exts[0]}"


# ----------------------------------------------------------------------------------------------- splits
def rule_count(n: int, full: int = 50, small_below: int = 250) -> int:
    """Patients put aside from ``n``: ``full`` (50), or a fifth (at least 1) for fewer than 250; 0 for n < 2."""
    if n < 2:
        return 0
    return min(full, n) if n >= small_below else max(1, n // 5)


def read_split_file(splits: str | Path | Mapping[str, str]) -> dict[str, str]:
    """Read a patient -> split mapping from a CSV with columns patient,split (values train/val/test)."""
    if isinstance(splits, Mapping):
        mapping, where = {str(k): str(v) for k, v in splits.items()}, "splits"
    else:
        p = Path(splits)
        if not p.is_file():
            raise UserError(f"{p}: splits file not found")
        try:
            df = pd.read_csv(p, dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise UserError(f"{p}: not a readable CSV ({str(exc).splitlines()[0]})") from None
        if not {"patient", "split"} <= set(df.columns):
            raise UserError(f"{p}: splits file needs columns patient,split (got {', '.join(map(str, df.columns))})")
        df = df.dropna(subset=["patient"])
        pairs = zip(df["patient"].str.strip(), df["split"].fillna("").str.strip(), strict=True)
        mapping, where = dict(pairs), str(p)
    bad = sorted({v for v in mapping.values() if v not in SPLITS})
    if bad:
        raise UserError(f"{where}: split values must be train, val or test, got {', '.join(map(repr, bad))}")
    return mapping


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()}


def assign_splits(
    patients: list[str], test: set[str], val_patients: int | None = None, override: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Patient -> split: ``test`` as given, then the first ``val_patients`` (rule_count) of the rest ``val``."""
    rest = sorted(p for p in patients if p not in test)
    n_val = rule_count(len(rest)) if val_patients is None else max(0, min(int(val_patients), len(rest)))
    out = {p: "test" for p in patients if p in test}
    out.update({p: ("val" if i < n_val else "train") for i, p in enumerate(rest)})
    if override:
        known = set(patients)
        if not known & set(override):
            raise UserError("splits file names none of the data set's patients (e.g. 'patient0001')")
        out.update({p: s for p, s in override.items() if p in known})
    return out


# ----------------------------------------------------------------------------------------------- reading
def read_camus(
    root: str | Path,
    splits: str | Path | Mapping[str, str] | None = None,
    include_half_sequence: bool = False,
    val_patients: int | None = None,
) -> pd.DataFrame:
    """Manifest of a CAMUS data set: one row per (ED/ES image, structure) whose image and mask files exist.

    Standard columns (docs/architecture.md, "Data contract") plus ``dataset`` ('camus-nifti' | 'camus-mhd'),
    ``stem`` (file stem such as ``patient0001_2CH_ED``) and ``info_<key>`` for every Info cfg key other than Sex,
    Age and ImageQuality (ED, ES, NbFrame, LVef, ...). A missing cfg leaves sex, age and quality empty. With
    ``include_half_sequence``, columns ``half_sequence``/``half_sequence_gt`` give the view's sequence files (empty
    when absent).

    Raises:
        UserError: ``root`` holds no CAMUS data set, an Info cfg is malformed, or the splits file is invalid.
    """
    return _manifest(Path(root), splits, include_half_sequence, val_patients, lenient=False)


def _cfg(path: Path, lenient: bool) -> dict:
    if not path.is_file():
        return {}
    try:
        return parse_info_cfg(path)
    except UserError:
        if lenient:
            return {}
        raise


def _manifest(
    root_p: Path,
    splits: str | Path | Mapping[str, str] | None,
    include_half_sequence: bool,
    val_patients: int | None,
    lenient: bool,
) -> pd.DataFrame:
    found = _locate(root_p)
    if found is None:
        raise UserError(f"{root_p}: no CAMUS data set found (expected database_nifti/patientNNNN/*.nii.gz "
                        "or training|testing/patientNNNN/*.mhd)")
    kind, groups, split_dir = found
    exts = _EXTS[kind]
    patients = _patients(kind, groups)
    if kind == "camus-mhd":
        test = {pid for pid, _, group, _ in patients if group == "testing"}
    else:
        listed = _read_list(split_dir / "subgroup_testing.txt") if split_dir else set()
        names = sorted(pid for pid, *_ in patients)
        test = listed & set(names) if listed else set(names[len(names) - rule_count(len(names)):])
    override = read_split_file(splits) if splits is not None else None
    split_of = assign_splits([pid for pid, *_ in patients], test, val_patients, override)

    rows = []
    for pid, name, _group, pdir in patients:
        for view in VIEWS:
            cfg_path = pdir / f"Info_{view}.cfg"
            info = _cfg(cfg_path, lenient)
            extra = {f"info_{k}": v for k, v in info.items() if k not in _ATTR_KEYS}
            if include_half_sequence:
                seq = _find(pdir, f"{name}_{view}_half_sequence", exts)
                seq_gt = _find(pdir, f"{name}_{view}_half_sequence_gt", exts)
                extra["half_sequence"] = str(seq.resolve()) if seq.exists() else ""
                extra["half_sequence_gt"] = str(seq_gt.resolve()) if seq_gt.exists() else ""
            for phase in PHASES:
                stem = f"{name}_{view}_{phase}"
                image, mask = _find(pdir, stem, exts), _find(pdir, f"{stem}_gt", exts)
                if not (image.is_file() and mask.is_file()):
                    continue
                for label, structure in STRUCTURES.items():
                    rows.append({
                        "sample_id": f"{pid}_{view}_{phase}_{structure}",
                        "image": str(image.resolve()), "mask": str(mask.resolve()),
                        "label": label, "structure": structure, "view": view, "phase": phase,
                        "patient": pid, "sex": _norm_sex(info.get("Sex", "")),
                        "age": _norm_age(info.get("Age")), "quality": _norm_quality(info.get("ImageQuality", "")),
                        "split": split_of[pid], "source": "real", "dataset": kind, "stem": stem, **extra,
                    })
    if not rows:
        raise UserError(f"{root_p}: CAMUS layout found but no ED/ES image with its _gt mask")
    df = finalize_manifest(rows)
    df["age"] = df["age"].astype("Int64")
    return df


# ----------------------------------------------------------------------------------------------- checking
# nifti_truncation and check_pair live with the readers (echoseg.core.data.imaging): the stages refuse what
# `data check` reports, with the same function.
def _reason(exc: UserError, path: Path) -> str:
    msg = str(exc)
    prefix = f"{path}: "
    msg = msg[len(prefix):] if msg.startswith(prefix) else msg
    return " ".join(msg.split())  # one line


def add_sizes(df: pd.DataFrame, shapes: dict[str, tuple[int, ...]]) -> pd.DataFrame:
    """Add ``height``/``width`` columns (image size in pixels) from a resolved-image-path -> shape map."""
    if df.empty:
        return df
    df = df.copy()
    df["height"] = [shapes.get(p, (pd.NA, pd.NA))[0] for p in df["image"]]
    df["width"] = [shapes.get(p, (pd.NA, pd.NA))[1] for p in df["image"]]
    return df


def check_camus(root: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Validate every CAMUS file; return (manifest of the usable samples, problems).

    Checks: ED/ES images and masks present and readable, same shape, labels in 0..3; ``Info_*.cfg`` present,
    well formed, with ED, ES, NbFrame, Sex, Age, ImageQuality and ED/ES within 1..NbFrame. Image or mask
    problems drop the image's samples; cfg problems are reported but keep the samples (attributes may be empty).
    """
    root_p = Path(root)
    found = _locate(root_p)
    if found is None:
        raise UserError(f"{root_p}: no CAMUS data set found")
    kind, groups, _ = found
    exts = _EXTS[kind]
    problems: list[Problem] = []
    bad_images: set[str] = set()
    shapes: dict[str, tuple[int, ...]] = {}
    for _pid, name, _group, pdir in _patients(kind, groups):
        for view in VIEWS:
            cfg_path = pdir / f"Info_{view}.cfg"
            if not cfg_path.is_file():
                problems.append(Problem(str(cfg_path), "missing Info cfg (sex, age and quality left empty)"))
            else:
                try:
                    reasons = cfg_problems(cfg_path, parse_info_cfg(cfg_path))
                except UserError as exc:
                    reasons = [_reason(exc, cfg_path)]
                problems.extend(Problem(str(cfg_path), r) for r in reasons)
            for phase in PHASES:
                stem = f"{name}_{view}_{phase}"
                image, mask = _find(pdir, stem, exts), _find(pdir, f"{stem}_gt", exts)
                pair, shape = check_pair(image, mask, LABEL_SETS["camus"])
                if pair:
                    problems.extend(pair)
                    bad_images.add(str(image.resolve()))
                elif shape is not None:
                    shapes[str(image.resolve())] = shape
    try:
        df = _manifest(root_p, None, False, None, lenient=True)
    except UserError:
        df = finalize_manifest([])
    if len(df):
        df = df[~df["image"].isin(bad_images)].reset_index(drop=True)
    return add_sizes(df, shapes), problems
