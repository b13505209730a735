"""`prompts build`: a manifest in; P0–P7 prompts, Synthetic-Boost JSON files and attribute counts out.

Outputs (written by :func:`write_outputs` into a run directory)::

    manifest.csv             the input manifest + p0..p7 (variant A) + p1_b..p7_b (variant B) + shape
                             (+ shape_answer with --shape vqa) + report (the image's report, on each of its rows)
    reports.csv              one row per image: image, patient, split, report (:mod:`echoseg.core.prompts.reports`)
    prompts/{train,val,test}.json   one record per (image, structure), the published schema:
                             {"img_name", "mask_name", "prompts": {"p0": "", "p1": [A, B], ..., "p7": [A, B]}}
    attributes.csv           attribute distribution per split (view, phase, sex, age bins, quality, shape)

File names in the JSON follow the published files: CAMUS ``<stem>.png`` and ``mask_<k>/<stem>_gt.png``;
SDM CAMUS ``<name>.png`` and ``mask_<k>/<split folder>/<name>.png``, k being the CAMUS label (1 LV, 2 MYO,
3 LA) whatever label the structure has in the mask file.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from echoseg.core.console import console as default_console
from echoseg.core.console import track
from echoseg.core.data.camus import detect_camus, read_camus, read_split_file
from echoseg.core.data.imaging import load_pair
from echoseg.core.data.manifest import (
    MANIFEST_COLUMNS,
    SPLITS,
    STRUCTURE_LABELS,
    absolute_paths,
    mask_labels,
    read_manifest,
    relative_paths,
    write_manifest,
)
from echoseg.core.data.sdm_camus import detect_sdm_camus, read_sdm_camus
from echoseg.core.errors import UserError
from echoseg.core.io import write_csv, write_json
from echoseg.core.prompts.reports import image_reports, report_table
from echoseg.core.prompts.shape import classify_shape
from echoseg.core.prompts.templates import (
    Attributes,
    build_prompts,
    normalise_age,
    normalise_phase,
    normalise_quality,
    normalise_sex,
    normalise_view,
)
from echoseg.core.prompts.vqa import VQAShapes

DATASETS = ("auto", "camus", "sdm-camus")
SHAPE_METHODS = ("geometric", "vqa")
AGE_BINS = (0, 30, 40, 50, 60, 70, 80, 200)
_SUFFIXES = (".nii.gz", ".nii", ".mhd", ".mha", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class PromptSet:
    """The result of building prompts for a manifest."""

    kind: str  # camus | sdm-camus
    manifest: pd.DataFrame  # input columns + p0..p7 + p1_b..p7_b + shape + report
    records: dict[str, list[dict]]  # split -> JSON records
    missing: dict[str, int]  # attribute -> samples lacking it
    empty: dict[str, int]  # prompt level -> samples whose (variant A) prompt is empty
    shape_unknown: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def incomplete(self) -> int:
        """Samples with at least one empty prompt (P0 aside)."""
        last = 6 if self.kind == "sdm-camus" else 7
        levels = [c for c in self.manifest.columns if re.fullmatch(rf"p[1-{last}]", c)]
        if not levels or self.manifest.empty:
            return 0
        return int((self.manifest[levels].fillna("") == "").any(axis=1).sum())


# --------------------------------------------------------------------------- loading
def load_dataset(data: str | Path, dataset: str = "auto", splits: str | Path | None = None,
                 camus_root: str | Path | None = None) -> tuple[pd.DataFrame, str]:
    """Read the samples of DATA: a manifest.csv (or a folder holding one, preferred) or a CAMUS/SDM layout.

    Returns:
        (manifest with absolute image/mask paths, kind ``camus`` or ``sdm-camus``).
    Raises:
        UserError: DATA is missing, holds no supported layout, or contradicts ``dataset``.
    """
    if dataset not in DATASETS:
        raise UserError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    p = Path(data)
    if not p.exists():
        raise UserError(f"{p}: not found")
    manifest_file = p if p.is_file() else p / "manifest.csv"
    if manifest_file.is_file() and (p.is_file() or _is_full_manifest(manifest_file)):
        df = read_manifest(manifest_file)
        if df.empty:
            raise UserError(f"{manifest_file}: holds no samples (e.g. a curation run that kept nothing)")
        unannotated = sorted(set(df["structure"].astype(str)) - set(STRUCTURE_LABELS))
        if unannotated:
            raise UserError(f"{manifest_file}: structure {unannotated[0]!r} is not LV, MYO or LA: prompts need "
                            "annotated label maps (a text-to-image run has none; it is already an image-report "
                            "corpus for `echoseg pretrain --data RUN --text report`)")
        kind = _kind_of_manifest(df)
        if dataset != "auto" and dataset != kind:
            raise UserError(f"{manifest_file}: --dataset {dataset} given but the manifest holds {kind} samples")
        if splits is not None:
            df = _apply_splits(df, splits)
        return df, kind
    if p.is_file():
        raise UserError(f"{p}: expected a manifest.csv or a data set folder")
    kind = _detect_kind(p)
    if dataset != "auto" and dataset != kind:
        raise UserError(f"{p}: --dataset {dataset} given but the folder holds a {kind} layout")
    if kind == "camus":
        df = read_camus(p, splits=splits)
    else:
        df = read_sdm_camus(p, camus_root=camus_root, splits=splits)
    if df.empty:
        raise UserError(f"{p}: no usable samples found")
    return absolute_paths(df, p), kind


def _is_full_manifest(path: Path) -> bool:
    """Whether a CSV has every manifest column (an attributes-only manifest.csv beside SDM images has not)."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return False
    return all(c in header for c in MANIFEST_COLUMNS)


def _apply_splits(df: pd.DataFrame, splits: str | Path) -> pd.DataFrame:
    """Reassign the split of every patient a splits CSV (patient,split) names, as the CAMUS reader does."""

    mapping = read_split_file(splits)
    patients = df["patient"].astype(str)
    if not patients.isin(mapping).any():
        raise UserError(f"{splits}: splits file names none of the data set's patients (e.g. {patients.iloc[0]!r})")
    df = df.copy()
    df["split"] = [mapping.get(p, s) for p, s in zip(patients, df["split"], strict=True)]
    return df


def _detect_kind(root: Path) -> str:
    """'camus' or 'sdm-camus' for a data set folder (UserError when it holds neither)."""

    if not root.is_dir():
        raise UserError(f"{root}: not a directory")
    if detect_camus(root):
        return "camus"

    if detect_sdm_camus(root):
        return "sdm-camus"
    if (root / "manifest.csv").is_file():
        raise UserError(f"{root / 'manifest.csv'}: not a readable manifest (unreadable CSV or missing columns "
                        f"{', '.join(MANIFEST_COLUMNS)}) and no CAMUS or SDM CAMUS layout beside it")
    raise UserError(f"{root}: no manifest.csv and no CAMUS or SDM CAMUS layout found (expected database_nifti/, "
                    "training|testing/ or SDM CAMUS PNGs)")


def _kind_of_manifest(df: pd.DataFrame) -> str:
    """SDM CAMUS or CAMUS: the readers' ``dataset`` column, else SDM labels (4) or all-synthetic sources."""
    if "dataset" in df.columns and df["dataset"].notna().any():
        names = set(df["dataset"].dropna().astype(str))
        if names and all(n.startswith("sdm") for n in names):
            return "sdm-camus"
        if names and all(n.startswith("camus") for n in names):
            return "camus"
    labels = pd.to_numeric(df["label"], errors="coerce")
    if (labels == 4).any():
        return "sdm-camus"
    src = df["source"].astype(str).str.lower()
    return "sdm-camus" if len(df) and (src == "synthetic").all() else "camus"


# --------------------------------------------------------------------------- names
def _strip_suffix(name: str) -> str:
    low = name.lower()
    for s in _SUFFIXES:
        if low.endswith(s):
            return name[: -len(s)]
    return name


def sample_stem(row: pd.Series | dict) -> str:
    """The image stem (``patient0001_2CH_ED``): the manifest's ``stem`` column, else the image file name."""
    stem = row.get("stem") if hasattr(row, "get") else None
    if isinstance(stem, str) and stem:
        return stem
    return _strip_suffix(Path(str(row["image"])).name)


def json_names(row: pd.Series | dict, kind: str) -> tuple[str, str]:
    """(img_name, mask_name) of a sample as in the published JSON files."""
    k = STRUCTURE_LABELS[str(row["structure"])]
    if kind == "sdm-camus":
        image = Path(str(row["image"]))
        name = _strip_suffix(image.name)
        folder = _split_folder(row)
        return f"{name}.png", f"mask_{k}/{folder}/{name}.png"
    stem = sample_stem(row)
    return f"{stem}.png", f"mask_{k}/{stem}_gt.png"


_SPLIT_FOLDERS = {"training": "training", "train": "training", "validation": "validation", "val": "validation",
                  "testing": "testing", "test": "testing"}


def _split_folder(row: pd.Series | dict) -> str:
    """SDM CAMUS split folder (training/validation/testing): the image's parent folder when it is one, else the
    split word in the file name, else the manifest split."""
    image = Path(str(row["image"]))
    if image.parent.name.lower() in _SPLIT_FOLDERS:
        return image.parent.name
    m = re.search(r"_(training|validation|testing)(?:_\d+)?$", _strip_suffix(image.name))
    if m:
        return m.group(1)
    return _SPLIT_FOLDERS.get(str(row.get("split", "")).lower(), "training")


# --------------------------------------------------------------------------- shapes
def shapes_geometric(df: pd.DataFrame, progress: bool = True) -> list[str]:
    """Geometric shape word of every sample (each image and label map read once and checked as `data check` does,
    all its labels classified)."""

    out = [""] * len(df)
    groups = df.groupby(["image", "mask"], sort=False).indices
    items = track(groups.items(), "shapes", total=len(groups)) if progress else groups.items()
    labels = df["label"].to_numpy()
    allowed = mask_labels(df)
    for (image_path, mask_path), idx in items:
        _, label_map = load_pair(image_path, mask_path, allowed[idx[0]])
        for i in idx:
            out[i] = classify_shape(label_map == int(labels[i]))
    return out


def shapes_vqa(df: pd.DataFrame, model, progress: bool = True) -> tuple[list[str], list[str]]:
    """(shape words, raw answers) from a :class:`~echoseg.core.prompts.vqa.VQAShapes` model."""

    words, raw = [""] * len(df), [""] * len(df)
    batch: list[tuple[int, tuple]] = []

    def flush() -> None:
        for (i, _), (answer, word) in zip(batch, model.shapes([b for _, b in batch]), strict=True):
            raw[i], words[i] = answer, word
        batch.clear()

    rows = list(df[["image", "mask", "label", "structure"]].itertuples(index=False))
    it = track(range(len(rows)), "VQA shapes") if progress else range(len(rows))
    current: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    allowed = mask_labels(df)
    for i in it:
        r = rows[i]
        key = f"{r.image}\0{r.mask}"
        if key not in current:
            current.clear()  # rows are grouped by image: keep only the current pair in memory
            current[key] = load_pair(r.image, r.mask, allowed[i])
        image, label_map = current[key]
        batch.append((i, (image, label_map == int(r.label), str(r.structure))))
        if len(batch) >= model.batch_size:
            flush()
    if batch:
        flush()
    return words, raw


# --------------------------------------------------------------------------- prompts
def attributes_of(row: pd.Series | dict, shape: str | None) -> Attributes:
    """Template attributes of one manifest row (unknown values become None)."""
    return Attributes(
        structure=str(row["structure"]),
        view=normalise_view(row.get("view")),
        phase=normalise_phase(row.get("phase")),
        sex=normalise_sex(row.get("sex")),
        age=normalise_age(row.get("age")),
        quality=normalise_quality(row.get("quality")),
        shape=shape or None,
    )


def make_prompts(df: pd.DataFrame, shapes: list[str], kind: str, style: str = "synthetic-boost") -> PromptSet:
    """Prompts for every sample; missing attributes leave the prompts that need them empty (and are counted)."""
    with_quality = kind != "sdm-camus"
    levels = [f"p{k}" for k in range(8 if with_quality else 7)]
    df = df.reset_index(drop=True).copy()
    df["shape"] = list(shapes)
    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    first: dict[str, list[str]] = {lv: [] for lv in levels}
    second: dict[str, list[str]] = {lv: [] for lv in levels[1:]}
    missing = {a: 0 for a in (("view", "phase", "sex", "age", "quality", "shape") if with_quality
                               else ("view", "phase", "sex", "age", "shape"))}
    for rec in df.to_dict("records"):
        a = attributes_of(rec, rec["shape"])
        for name in missing:
            if getattr(a, name) is None:
                missing[name] += 1
        prompts = build_prompts(a, style=style, with_quality=with_quality)
        for lv in levels:
            first[lv].append(prompts[lv] if lv == "p0" else prompts[lv][0])
            if lv != "p0":
                second[lv].append(prompts[lv][1])
        img_name, mask_name = json_names(rec, kind)
        split = str(rec.get("split", "")) if isinstance(rec.get("split"), str) else "train"
        records.setdefault(split, []).append({"img_name": img_name, "mask_name": mask_name, "prompts": prompts})
    for lv in levels:
        df[lv] = first[lv]
    if not with_quality:
        df["p7"] = ""
    # Variant B ("... in the cardiac ultrasound ...") for training with --prompt random.
    for lv in levels[1:]:
        df[f"{lv}_b"] = second[lv]
    if not with_quality:
        df["p7_b"] = ""
    # One text per image naming every known attribute and structure shape: a vision-language pre-training corpus.
    df["report"] = image_reports(df, with_quality=with_quality)
    for split in records:
        records[split].sort(key=lambda r: (r["img_name"], r["mask_name"]))
    empty = {lv: int((df[lv] == "").sum()) for lv in levels[1:]}
    return PromptSet(kind=kind, manifest=df, records=records, missing=missing, empty=empty,
                     shape_unknown=int((df["shape"] == "").sum()))


# --------------------------------------------------------------------------- attributes
def _age_bin(age: int | None) -> str:
    if age is None:
        return "unknown"
    for lo, hi in zip(AGE_BINS[:-1], AGE_BINS[1:], strict=True):
        if lo <= age < hi:
            return f"<{hi}" if lo == 0 else (f"{lo}+" if hi == AGE_BINS[-1] else f"{lo}-{hi - 1}")
    return "unknown"


def attribute_table(df: pd.DataFrame) -> pd.DataFrame:
    """Counts per split of view, phase, sex, age bin, quality (images) and shape per structure (samples).

    Columns: attribute, value, unit, one column per split, all.
    """
    images = df.drop_duplicates("image")
    image_attrs = pd.DataFrame({
        "split": images["split"].astype(str),
        "view": [normalise_view(v) or "unknown" for v in images["view"]],
        "phase": [normalise_phase(v) or "unknown" for v in images["phase"]],
        "sex": [normalise_sex(v) or "unknown" for v in images["sex"]],
        "age": [_age_bin(normalise_age(v)) for v in images["age"]],
        "quality": [normalise_quality(v) or "unknown" for v in images["quality"]],
    })
    splits = [s for s in SPLITS if s in set(df["split"].astype(str))]
    splits += sorted(set(df["split"].astype(str)) - set(splits))
    rows = []

    def count(frame: pd.DataFrame, attribute: str, column: str, unit: str) -> None:
        values = frame[column].astype(str)
        for value in sorted(values.unique(), key=_value_order):
            row = {"attribute": attribute, "value": value, "unit": unit}
            for s in splits:
                row[s] = int(((frame["split"].astype(str) == s) & (values == value)).sum())
            row["all"] = int((values == value).sum())
            rows.append(row)

    for col in ("view", "phase", "sex", "age", "quality"):
        count(image_attrs, col, col, "images")
    shapes = df.assign(shape=df["shape"].fillna("").replace("", "unknown"))
    for structure in sorted(shapes["structure"].astype(str).unique(), key=lambda s: STRUCTURE_LABELS.get(s, 9)):
        count(shapes[shapes["structure"].astype(str) == structure], f"shape {structure}", "shape", "samples")
    return pd.DataFrame(rows, columns=["attribute", "value", "unit", *splits, "all"])


def _value_order(v: str) -> tuple:
    order = ["2CH", "4CH", "ED", "ES", "male", "female", "good", "medium", "poor",
             "circle", "oval", "triangle", "square", "rectangle"]
    order += [_age_bin(lo) for lo in AGE_BINS[:-1]]
    if v in order:
        return (0, order.index(v), v)
    return (2, 0, v) if v == "unknown" else (1, 0, v)


def print_attribute_table(table: pd.DataFrame, console=None) -> None:
    """Show the attribute table with rich (on the stderr console)."""


    t = Table(title="Attributes per split")
    for col in table.columns:
        t.add_column(col, justify="right" if col not in ("attribute", "value", "unit") else "left")
    last = None
    for row in table.itertuples(index=False):
        attr = row[0] if row[0] != last else ""
        last = row[0]
        t.add_row(attr, *[str(v) for v in row[1:]])
    (console or default_console).print(t)


# --------------------------------------------------------------------------- the whole build
def build(data: str | Path, *, dataset: str = "auto", shape: str = "geometric", vqa_model: str | None = None,
          style: str = "synthetic-boost", splits: str | Path | None = None, camus_root: str | Path | None = None,
          device: str = "auto", progress: bool = True, log: Callable[[str], None] | None = None) -> PromptSet:
    """Read DATA, classify shapes and build every prompt (nothing written; see :func:`write_outputs`)."""
    log = log or (lambda _msg: None)
    if shape not in SHAPE_METHODS:
        raise UserError(f"--shape must be one of {', '.join(SHAPE_METHODS)}, got {shape!r}")
    if shape == "vqa" and not vqa_model:
        raise UserError("--shape vqa needs --vqa-model PATH_OR_ID (a local transformers VQA model folder or a "
                        "cached hub id, e.g. dandelin/vilt-b32-finetuned-vqa)")
    t0 = time.perf_counter()
    df, kind = load_dataset(data, dataset, splits=splits, camus_root=camus_root)
    df = df.sort_values(["image", "structure"], key=_structure_key, kind="stable").reset_index(drop=True)
    log(f"{kind}: {df['image'].nunique()} images, {len(df)} samples")
    t1 = time.perf_counter()
    raw = None
    if shape == "geometric":
        shapes = shapes_geometric(df, progress=progress)
    else:

        model = VQAShapes(vqa_model, device=device)
        log(f"VQA model {vqa_model} on {model.device}")
        shapes, raw = shapes_vqa(df, model, progress=progress)
    t2 = time.perf_counter()
    result = make_prompts(df, shapes, kind, style=style)
    if raw is not None:
        result.manifest["shape_answer"] = raw
    t3 = time.perf_counter()
    result.timings = {"read_s": t1 - t0, "shapes_s": t2 - t1, "prompts_s": t3 - t2}
    return result


def _structure_key(col: pd.Series) -> pd.Series:
    return col.map(lambda s: STRUCTURE_LABELS.get(s, 9)) if col.name == "structure" else col


def write_outputs(result: PromptSet, out: str | Path) -> pd.DataFrame:
    """Write manifest.csv, prompts/<split>.json, reports.csv and attributes.csv into ``out``; return the attribute
    table."""

    out = Path(out)
    write_manifest(result.manifest, out / "manifest.csv")
    write_csv(out / "reports.csv", relative_paths(report_table(result.manifest), out))
    for split, recs in result.records.items():
        write_json(out / "prompts" / f"{split}.json", recs)
    table = attribute_table(result.manifest)
    write_csv(out / "attributes.csv", table)
    return table


def summary_of(result: PromptSet) -> dict:
    """The headline numbers of a build (summary.json)."""
    df = result.manifest
    return {
        "dataset": result.kind,
        "images": int(df["image"].nunique()),
        "samples": int(len(df)),
        "splits": {s: len(r) for s, r in result.records.items()},
        "levels": [c for c in (f"p{k}" for k in range(8)) if c != "p7" or result.kind != "sdm-camus"],
        "missing_attributes": result.missing,
        "empty_prompts": result.empty,
        "incomplete_samples": result.incomplete,
        "reports": int(df["image"].nunique()),  # reports.csv rows: one report per image
        "shape_unknown": result.shape_unknown,
        "shapes": df["shape"].replace("", "unknown").value_counts().to_dict(),
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
    }


def schema_problems(records: object, kind: str = "camus") -> list[str]:
    """Deviations of a loaded prompts JSON from the published schema ([] when it conforms).

    Schema: a list of {"img_name": str ending .png, "mask_name": "mask_<1|2|3>/....png", "prompts": {"p0": str,
    "p1".."p7": [str, str]}} (SDM CAMUS: p0..p6); every non-empty prompt ends with a period.
    """
    levels = [f"p{k}" for k in range(7 if kind == "sdm-camus" else 8)]
    if not isinstance(records, list):
        return ["top level is not a list"]
    problems: list[str] = []
    for i, rec in enumerate(records):
        where = f"record {i}"
        if not isinstance(rec, dict) or set(rec) != {"img_name", "mask_name", "prompts"}:
            problems.append(f"{where}: keys must be img_name, mask_name, prompts")
            continue
        if not (isinstance(rec["img_name"], str) and rec["img_name"].endswith(".png")):
            problems.append(f"{where}: img_name is not a .png name")
        if not (isinstance(rec["mask_name"], str) and re.fullmatch(r"mask_[123]/.+\.png", rec["mask_name"])):
            problems.append(f"{where}: mask_name is not mask_<k>/....png")
        prompts = rec["prompts"]
        if not isinstance(prompts, dict) or list(prompts) != levels:
            problems.append(f"{where}: prompts must hold exactly {', '.join(levels)}")
            continue
        if prompts["p0"] != "":
            problems.append(f"{where}: p0 must be the empty string")
        for lv in levels[1:]:
            v = prompts[lv]
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(s, str) for s in v)):
                problems.append(f"{where}: {lv} must be a list of two strings")
            elif any(s and not s.endswith(".") for s in v):
                problems.append(f"{where}: {lv} prompt does not end with a period")
    return problems
