"""SDM CAMUS reader: the "Echo from noise" synthetic echocardiograms (PNG images with sector label maps).

Published layout (Stojanovski et al. 2023, github.com/david-stojanovski/echo_from_noise, data_preparation/):
``<VIEW>_<PHASE>/images/{training,validation,testing}/<name>.png`` with the label map of the same name in
``<VIEW>_<PHASE>/annotations/...`` (also ``all_views/`` and the augmentation stage's ``sector_annotations/``;
the diffusion model's raw output uses ``samples/`` + ``labels/``). A plain ``images/`` + ``labels/`` pair of
folders (optionally with split sub-folders) is read too. The label folder is looked up in the order
``sector_annotations``, ``labels``, ``annotations``, ``masks`` beside the image folder.

Names: ``patientNNNN_{2CH,4CH}_{ED,ES}[_{training|validation|testing}][_{k}].png`` (Synthetic Boost's
``patient0001_2CH_ED_testing.png`` has no copy index).

Label maps are "sector" maps: 0 outside the cone, 1 LV, 2 background inside the cone, 3 MYO, 4 LA. The published
``testing/`` folders hold the real CAMUS test images with plain CAMUS labels (0 background, 1 LV, 2 MYO, 3 LA);
the encoding is therefore detected per label folder from its first file (a value 4, or label 2 covering most of
the labelled area, means sector labels) and recorded in the ``label_encoding`` column; ``label`` is always the
structure's value in its own mask file. Those testing images are ``source`` real, all others synthetic; as in the
legacy CAMUS numbering, their patients are named ``testing-patientNNNN``.

Attributes (sex, age, quality) come from a ``manifest.csv`` in the data set root (matched by image file name;
``synth generate`` writes one), else from the source patient's Info cfg when ``camus_root`` is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echoseg.core.data.camus import TESTING_PREFIX, add_sizes, read_camus, read_split_file
from echoseg.core.data.imaging import check_pair, load_mask
from echoseg.core.data.manifest import LABEL_SETS, SPLITS, Problem, finalize_manifest
from echoseg.core.errors import UserError

SDM_LABELS: dict[str, int] = {"LV": 1, "MYO": 3, "LA": 4}
SDM_OUTSIDE = 0
SDM_CONE = 2
CAMUS_LABELS: dict[str, int] = {"LV": 1, "MYO": 2, "LA": 3}
IMAGE_DIRS = ("images", "samples")
LABEL_DIRS = ("sector_annotations", "labels", "annotations", "masks")
SPLIT_WORDS = {"training": "train", "train": "train", "validation": "val", "val": "val",
               "testing": "test", "test": "test"}
NAME_RE = re.compile(
    r"^(?P<patient>patient\d+)_(?P<view>[24]CH)_(?P<phase>E[DS])"
    r"(?:_(?P<split>training|validation|testing|train|val|test))?(?:_(?P<copy>\d+))?\.png$"
)
NAME_HINT = "patientNNNN_{2CH|4CH}_{ED|ES}[_{training|validation|testing}][_k].png"


@dataclass
class _Item:
    image: Path
    mask: Path | None
    match: re.Match | None
    folder_split: str | None


def _scan(root: Path, first_only: bool = False) -> list[_Item]:
    """Every PNG under an image folder, paired with its label map (None when missing)."""
    items = []
    for path in sorted(root.rglob("*.png")):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel):
            continue
        idx = [i for i, part in enumerate(rel[:-1]) if part.lower() in IMAGE_DIRS]
        if not idx:
            continue
        i = idx[-1]
        base, sub = root.joinpath(*rel[:i]), rel[i + 1:]
        mask = next((base / d / Path(*sub) for d in LABEL_DIRS if (base / d / Path(*sub)).is_file()), None)
        folder_split = next((SPLIT_WORDS[p.lower()] for p in reversed(sub[:-1]) if p.lower() in SPLIT_WORDS), None)
        item = _Item(path, mask, NAME_RE.match(path.name), folder_split)
        if first_only and item.match and item.mask:
            return [item]
        items.append(item)
    return items


def detect_sdm_camus(root: str | Path) -> bool:
    """True when ``root`` holds SDM CAMUS-named PNG images with label maps in a supported layout."""
    root = Path(root)
    return root.is_dir() and bool(_scan(root, first_only=True))


def detect_encoding(mask: np.ndarray) -> str:
    """'sdm' for sector label maps (0 outside, 2 cone, 1/3/4 structures), 'camus' for plain CAMUS label maps."""
    if mask.max() >= 4:
        return "sdm"
    labelled = np.count_nonzero(mask)
    return "sdm" if labelled and np.count_nonzero(mask == SDM_CONE) > 0.5 * labelled else "camus"


def _folder_encodings(items: list[_Item], votes: int = 3) -> dict[Path, str]:
    """Label encoding per label folder: majority of its first few readable, non-empty, in-range label maps."""

    seen: dict[Path, list[str]] = {}
    for it in items:
        if it.mask is None or len(seen.setdefault(it.mask.parent, [])) >= votes:
            continue
        try:
            mask = load_mask(it.mask)
        except UserError:
            continue
        if mask.any() and mask.max() <= 4:
            seen[it.mask.parent].append(detect_encoding(mask))
    return {folder: max(sorted(set(v)), key=v.count) for folder, v in seen.items() if v}


def _manifest_attrs(root: Path) -> dict[str, dict]:
    """Image file name -> attributes from ``root/manifest.csv`` (empty when there is none)."""
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    try:
        df = pd.read_csv(path, dtype={"sex": str, "quality": str, "split": str, "patient": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if "image" not in df.columns:
        raise UserError(f"{path}: manifest lacks column 'image'")
    keep = [c for c in ("sex", "age", "quality", "split") if c in df.columns]
    df = df.drop_duplicates("image")
    names = df["image"].astype(str).map(lambda s: Path(s).name)
    records = df[keep].to_dict("records")
    return dict(zip(names, records, strict=True))


def _camus_attrs(camus_root: str | Path) -> dict[tuple[str, str], dict]:
    """(patient, view) -> attributes from a CAMUS data set's Info cfg files."""

    df = read_camus(camus_root).drop_duplicates(["patient", "view"])
    return {(r.patient, r.view): {"sex": r.sex, "age": r.age, "quality": r.quality} for r in df.itertuples()}


def _clean(value, kind: str):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return pd.NA if kind == "age" else ""
    if kind == "age":
        try:
            return int(round(float(value)))
        except (TypeError, ValueError):
            return pd.NA
    return str(value)


def _manifest(
    root: Path, items: list[_Item], camus_root, splits, encodings: dict[Path, str]
) -> pd.DataFrame:
    from_manifest = _manifest_attrs(root)
    from_camus = _camus_attrs(camus_root) if camus_root is not None else {}
    override = read_split_file(splits) if splits is not None else {}
    rows, seen = [], set()
    for it in items:
        if it.match is None or it.mask is None:
            continue
        g = it.match.groupdict()
        stem = it.image.name[:-4]
        if stem in seen:  # the published set repeats every file under all_views/
            continue
        seen.add(stem)
        token = SPLIT_WORDS.get(g["split"] or "", None)
        pid = f"{TESTING_PREFIX}{g['patient']}" if token == "test" else g["patient"]
        attrs = from_manifest.get(it.image.name) or from_camus.get((pid, g["view"])) \
            or from_camus.get((g["patient"], g["view"])) or {}
        split = override.get(pid) or (attrs.get("split") if attrs.get("split") in SPLITS else None) \
            or token or it.folder_split or "train"
        encoding = encodings.get(it.mask.parent, "sdm")
        labels = SDM_LABELS if encoding == "sdm" else CAMUS_LABELS
        for structure, label in labels.items():
            rows.append({
                "sample_id": f"{stem}_{structure}", "image": str(it.image.resolve()), "mask": str(it.mask.resolve()),
                "label": label, "structure": structure, "view": g["view"], "phase": g["phase"], "patient": pid,
                "sex": _clean(attrs.get("sex"), "sex"), "age": _clean(attrs.get("age"), "age"),
                "quality": _clean(attrs.get("quality"), "quality"), "split": split,
                "source": "real" if g["split"] == "testing" else "synthetic", "dataset": "sdm-camus",
                "stem": stem, "copy": int(g["copy"]) if g["copy"] is not None else pd.NA,
                "label_encoding": encoding,
            })
    if override and rows and not {r["patient"] for r in rows} & set(override):
        raise UserError("splits file names none of the data set's patients (e.g. 'patient0001')")
    df = finalize_manifest(rows)
    if len(df):
        df["age"] = df["age"].astype("Int64")
        df["copy"] = df["copy"].astype("Int64")
    return df


def read_sdm_camus(
    root: str | Path,
    camus_root: str | Path | None = None,
    splits: str | Path | Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Manifest of an SDM CAMUS data set: one row per (image with a label map, structure).

    Extra columns: ``dataset`` ('sdm-camus'), ``stem``, ``copy`` (the ``_k`` index), ``label_encoding``.
    Split: ``splits`` CSV (patient,split) > the root manifest's split > the name's split word > a split folder
    name > train.

    Raises:
        UserError: no SDM CAMUS images found, or an invalid manifest/splits file.
    """
    root_p = Path(root)
    if not root_p.is_dir():
        raise UserError(f"{root_p}: directory not found")
    items = _scan(root_p)
    df = _manifest(root_p, items, camus_root, splits, _folder_encodings(items))
    if df.empty:
        raise UserError(f"{root_p}: no SDM CAMUS images found (expected images/**/{NAME_HINT} with label maps "
                        f"in {', '.join(LABEL_DIRS)}/)")
    return df


def check_sdm_camus(root: str | Path) -> tuple[pd.DataFrame, list[Problem]]:
    """Validate every SDM CAMUS image; return (manifest of the usable samples, problems).

    Checks: file names, a label map beside each image, both readable, same shape, labels within the folder's
    encoding (0..4 for sector maps, 0..3 for CAMUS maps).
    """
    root_p = Path(root)
    if not root_p.is_dir():
        raise UserError(f"{root_p}: directory not found")
    items = _scan(root_p)
    encodings = _folder_encodings(items)
    problems: list[Problem] = []
    good: list[_Item] = []
    shapes: dict[str, tuple[int, ...]] = {}
    for it in items:
        if it.match is None:
            problems.append(Problem(str(it.image), f"name does not match {NAME_HINT}"))
            continue
        if it.mask is None:
            problems.append(Problem(str(it.image), "no label map of the same name in a "
                                    f"{'/, '.join(LABEL_DIRS)}/ folder beside the image folder"))
            continue
        pair, shape = check_pair(it.image, it.mask, LABEL_SETS[encodings.get(it.mask.parent, "sdm")])
        problems.extend(pair)
        if not pair:
            good.append(it)
            shapes[str(it.image.resolve())] = shape
    return add_sizes(_manifest(root_p, good, None, None, encodings), shapes), problems
