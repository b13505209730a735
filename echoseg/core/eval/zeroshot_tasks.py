"""What `eval zeroshot` classifies: tasks (a manifest column, its classes and their prompts) and the images of a split.

The built-in tasks live as data in ``zeroshot_prompts.yaml`` beside this module (its header documents the schema); a
``--task FILE`` holds one task in the same form, e.g.::

    name: lv_roundness          # optional (default: the file name)
    column: shape               # the manifest column holding the class
    per_structure: true         # optional: read it on the rows of --structure (default: one value per image)
    classes:                    # two or more; with two, the second is the positive class
      round:
        values: [circle, oval]  # manifest values of the class (case-insensitive; default: the class name)
        prompts: ["{Structure} of oval shape.", "{Structure} of circle shape."]
      angular:
        values: [triangle, square, rectangle]
        prompts: ["{Structure} of triangle shape."]

A class may give ``range: [low, high]`` (low <= value < high, ``null`` for an open end) instead of ``values``, or be
a bare list of prompts (its values: the class name).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from echoseg.core.data.cache import SampleCache, build_cache, default_cache_dir
from echoseg.core.data.imaging import check_label_maps
from echoseg.core.data.manifest import ANY_LABELS, STRUCTURE_NAMES, mask_labels
from echoseg.core.errors import UserError, first_line

GROUNDING = "grounding"
TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")
_TASK_KEYS = {"name", "description", "column", "per_structure", "classes"}
_CLASS_KEYS = {"values", "range", "prompts"}


@dataclass(frozen=True)
class ClassSpec:
    """One class of a task: the manifest values (or numeric interval) it covers and its prompts."""

    name: str
    prompts: tuple[str, ...]
    values: tuple[str, ...] = ()  # normalised with :func:`value_key`
    low: float | None = None  # with ``range``: low <= value < high
    high: float | None = None
    is_range: bool = False

    def covers(self, key: str) -> bool:
        """Whether a normalised manifest value belongs to this class."""
        if not self.is_range:
            return key in self.values
        try:
            v = float(key)
        except ValueError:
            return False
        return (self.low is None or v >= self.low) and (self.high is None or v < self.high)


@dataclass(frozen=True)
class ZeroshotTask:
    """A zero-shot classification task: a manifest column and its classes (in order; index 1 is the positive one
    of a binary task)."""

    name: str
    column: str
    classes: tuple[ClassSpec, ...]
    per_structure: bool = False
    description: str = ""
    source: str = "built-in"  # "built-in" or the --task file

    @property
    def class_names(self) -> list[str]:
        """The class names, in order."""
        return [c.name for c in self.classes]

    def prompts(self, structure: str) -> dict[str, list[str]]:
        """Each class's prompts with ``{structure}``/``{Structure}`` filled in for ``structure``."""
        name = STRUCTURE_NAMES[structure]
        fill = {"structure": name[:1].lower() + name[1:], "Structure": name}
        return {c.name: [p.format(**fill) for p in c.prompts] for c in self.classes}

    def classify(self, key: str | None) -> int | None:
        """The class index of a normalised manifest value (None: unknown or in no class)."""
        if key is None:
            return None
        for k, c in enumerate(self.classes):
            if c.covers(key):
                return k
        return None


def value_key(value: Any) -> str | None:
    """A manifest or YAML value normalised for matching: None when missing, numbers as ``%g``, text lower-case."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, np.number)):
        return None if math.isnan(float(value)) else f"{float(value):g}"
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return text.lower()
    return None if math.isnan(number) else f"{number:g}"


# ----------------------------------------------------------------------------- reading tasks
def builtin_specs() -> dict[str, dict]:
    """The built-in task specifications (``zeroshot_prompts.yaml``), by task name."""
    text = resources.files("echoseg.core.eval").joinpath("zeroshot_prompts.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def task_names() -> list[str]:
    """The names ``--task`` accepts besides a file: the built-in classification tasks and ``grounding``."""
    return [*builtin_specs(), GROUNDING]


def is_task_file(task: str) -> bool:
    """Whether ``--task`` names a file (a YAML/JSON suffix, or an existing path) rather than a built-in task."""
    return Path(task).suffix.lower() in TASK_FILE_SUFFIXES or Path(task).exists()


def load_task(task: str) -> ZeroshotTask:
    """A built-in task by name, or the task of a YAML/JSON file.

    Raises:
        UserError: an unknown name, an unreadable file, or a specification that breaks the schema (one line,
            naming the file and the key).
    """
    specs = builtin_specs()
    if task in specs:
        return parse_task(specs[task], task, "built-in")
    if not is_task_file(task):
        raise UserError(f"--task {task!r}: unknown (known: {', '.join(task_names())}, or a YAML task file)")
    path = Path(task)
    if not path.is_file():
        raise UserError(f"--task {path}: file not found")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"--task {path}: not a text file (not valid UTF-8)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"--task {path}: not valid YAML ({first_line(exc)})") from None
    return parse_task(spec, path.stem, str(path))


def parse_task(spec: Any, default_name: str, source: str) -> ZeroshotTask:
    """Check one task specification (the schema of the module docstring) and build the task."""
    where = f"--task {source}" if source != "built-in" else f"built-in task {default_name!r}"
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected a mapping with 'column' and 'classes'")
    unknown = sorted(set(map(str, spec)) - _TASK_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_TASK_KEYS))})")
    column = spec.get("column")
    if not isinstance(column, str) or not column.strip():
        raise UserError(f"{where}: 'column' must name a manifest column")
    per_structure = spec.get("per_structure", False)
    if not isinstance(per_structure, bool):
        raise UserError(f"{where}: 'per_structure' must be true or false")
    classes = spec.get("classes")
    if not isinstance(classes, dict) or len(classes) < 2:
        raise UserError(f"{where}: 'classes' must map two or more class names to their prompts")
    parsed = tuple(_parse_class(str(name), value, where) for name, value in classes.items())
    _check_disjoint(parsed, where)
    name = spec.get("name", default_name)
    return ZeroshotTask(name=str(name), column=column.strip(), classes=parsed, per_structure=per_structure,
                        description=str(spec.get("description") or ""), source=source)


def _parse_class(name: str, spec: Any, where: str) -> ClassSpec:
    at = f"{where}: class {name!r}"
    if isinstance(spec, list):
        spec = {"prompts": spec}
    if not isinstance(spec, dict):
        raise UserError(f"{at}: expected a list of prompts or a mapping with 'prompts'")
    unknown = sorted(set(map(str, spec)) - _CLASS_KEYS)
    if unknown:
        raise UserError(f"{at}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_CLASS_KEYS))})")
    prompts = spec.get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise UserError(f"{at}: 'prompts' must be a non-empty list of non-empty texts")
    for p in prompts:
        try:
            p.format(structure="x", Structure="X")
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(f"{at}: prompt {p!r} may only use {{structure}} and {{Structure}} ({first_line(exc)})"
                            ) from None
    if "range" in spec and "values" in spec:
        raise UserError(f"{at}: give 'values' or 'range', not both")
    if "range" in spec:
        low, high = _parse_range(spec["range"], at)
        return ClassSpec(name, tuple(prompts), low=low, high=high, is_range=True)
    values = spec.get("values", [name])
    if not isinstance(values, list) or not values:
        raise UserError(f"{at}: 'values' must be a non-empty list of manifest values")
    keys = [value_key(v) for v in values]
    if any(k is None for k in keys):
        raise UserError(f"{at}: 'values' holds an empty value")
    return ClassSpec(name, tuple(prompts), values=tuple(k for k in keys if k is not None))


def _parse_range(value: Any, at: str) -> tuple[float | None, float | None]:
    ok = isinstance(value, list) and len(value) == 2 and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)) for v in value)
    if not ok or value == [None, None]:
        raise UserError(f"{at}: 'range' must be [low, high] numbers (null for an open end), got {value!r}")
    low, high = (None if v is None else float(v) for v in value)
    if low is not None and high is not None and low >= high:
        raise UserError(f"{at}: 'range' low {low:g} must be below high {high:g}")
    return low, high


def _check_disjoint(classes: tuple[ClassSpec, ...], where: str) -> None:
    names = [c.name for c in classes]
    if len(set(names)) < len(names):
        raise UserError(f"{where}: class names repeat")
    seen: dict[str, str] = {}
    for c in classes:
        for v in c.values:
            if v in seen:
                raise UserError(f"{where}: value {v!r} is in both class {seen[v]!r} and class {c.name!r}")
            seen[v] = c.name
    ranges = sorted((c for c in classes if c.is_range), key=lambda c: -math.inf if c.low is None else c.low)
    for a, b in zip(ranges, ranges[1:], strict=False):
        if a.high is None or b.low is None or b.low < a.high:
            raise UserError(f"{where}: the ranges of class {a.name!r} and class {b.name!r} overlap")


# ----------------------------------------------------------------------------- the images of a split
def _stem(sample_id: str, structure: str) -> str:
    suffix = f"_{structure}"
    return sample_id[: -len(suffix)] if sample_id.endswith(suffix) else sample_id


def image_ids(frame: pd.DataFrame) -> pd.Series:
    """An id per image (indexed by image path): the rows' shared ``sample_id`` without its ``_<structure>``
    suffix (``patient0001_2CH_ED``), else the image path."""
    stems = pd.Series([_stem(s, t) for s, t in zip(frame["sample_id"].astype(str), frame["structure"].astype(str),
                                                   strict=True)], index=frame.index)
    per_image = stems.groupby(frame["image"].astype(str), sort=False).agg(
        lambda v: v.iloc[0] if v.nunique() == 1 else None)
    if per_image.isna().any() or per_image.duplicated().any():
        return pd.Series(per_image.index, index=per_image.index)
    return per_image


def image_labels(frame: pd.DataFrame, task: ZeroshotTask, structure: str, option: str) -> tuple[pd.DataFrame, dict]:
    """One row per image of ``frame`` with its class: ``sample_id, image, value, label`` (label: the class index;
    plus patient, view, phase, source), leaving out images whose value is missing (also: no ``structure`` row for a
    per-structure task) or in no class, and the counts of those left out.

    Raises:
        UserError: the column is absent, or an image's rows disagree on an image-level column.
    """
    if task.column not in frame.columns:
        raise UserError(f"{option}: manifest has no column {task.column!r} (task {task.name!r})")
    images = frame.assign(_image=frame["image"].astype(str)).drop_duplicates("_image").set_index("_image")
    rows = frame[frame["structure"].astype(str) == structure] if task.per_structure else frame
    keys = rows[task.column].map(value_key)
    found = keys.groupby(rows["image"].astype(str), sort=False).agg(lambda v: sorted(set(v.dropna())))
    values = [found.get(image, []) for image in images.index]
    clash = next((i for i, v in enumerate(values) if len(v) > 1), None)
    if clash is not None:
        raise UserError(f"{option}: image {images.index[clash]} has several {task.column!r} values "
                        f"({', '.join(values[clash])}); a per-structure column needs 'per_structure: true'")
    out = pd.DataFrame({"sample_id": image_ids(frame).reindex(images.index).to_numpy(), "image": images.index,
                        "value": [v[0] if v else None for v in values]})
    for col in ("patient", "view", "phase", "source"):
        if col in images.columns:
            out[col] = images[col].to_numpy()
    labels = pd.Series([task.classify(v) for v in out["value"]], dtype="object")
    missing = out["value"].isna()
    unmapped = ~missing & labels.isna()
    counts = out.loc[unmapped, "value"].value_counts()
    skipped = {"missing": int(missing.sum()), "unmapped": int(unmapped.sum()),
               "unmapped_values": {str(k): int(v) for k, v in counts.items()}}
    keep = ~(missing | unmapped)
    kept = out[keep].reset_index(drop=True)
    kept["label"] = labels[keep].astype(np.int64).to_numpy()
    return kept, skipped


def split_cache(frame: pd.DataFrame, size: int, cache_dir: str | Path | None) -> SampleCache:
    """The sample cache of the manifest rows ``frame`` (their images and label maps) at ``size``, built once; the
    label maps are checked against their encoding, as ``train`` and ``eval seg`` check them."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    cache = build_cache(frame[["image", "mask"]], size, folder)
    allowed = dict(zip(frame["mask"].astype(str), mask_labels(frame), strict=True))
    paths = cache.index["mask"].astype(str).tolist()
    check_label_maps(cache.masks, paths, [allowed.get(m, ANY_LABELS) for m in paths])
    return cache


def image_batch(cache: SampleCache, rows: np.ndarray, mean, std) -> torch.Tensor:
    """Cache rows as normalised (B, 3, S, S) images (grey replicated to three channels), as pre-training saw them."""
    grey = torch.from_numpy(np.stack([np.asarray(cache.image(int(r))) for r in rows])).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (grey[:, None].expand(-1, 3, -1, -1) - m) / s
