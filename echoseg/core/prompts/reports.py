"""Image-level reports: one clinical-style text per image naming every attribute the prompts build knows.

A prompts run is also a vision-language pre-training corpus: ``manifest.csv`` gets a ``report`` column (the same text
on every structure row of an image) and ``reports.csv`` one row per image (image, patient, split, report). The words
are the prompt templates' (:mod:`echoseg.core.prompts.templates`: view and phase words, structure names, shape
words, the a/an rule), always in the grammatical style, since no published file fixes a report's wording::

    Apical four-chamber view at end-diastole of a 63-year-old female patient, good image quality. The left
    ventricular cavity has an oval shape, the myocardium a circle shape and the left atrium cavity a triangle shape.

An unknown attribute is left out of the text (never "nan"): without sex "of a 63-year-old patient", without age "of
a female patient", without view "Echocardiogram at end-diastole ...", a structure without a shape word is not named.
As in the prompts, SDM CAMUS images (synthetic) have no image quality: ``with_quality=False`` leaves it out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from echoseg.core.data.manifest import STRUCTURE_LABELS, STRUCTURE_NAMES
from echoseg.core.prompts.templates import (
    PHASE_WORDS,
    VIEW_WORDS,
    article,
    normalise_age,
    normalise_phase,
    normalise_quality,
    normalise_sex,
    normalise_view,
    number_words,
)

REPORT_COLUMNS = ["image", "patient", "split", "report"]
_STYLE = "grammatical"  # "an 80-year-old", "an oval shape": reports reproduce no published wording


@dataclass(frozen=True)
class ImageFacts:
    """One image's attributes as template codes (``None`` where unknown) and its structures' shape words."""

    view: str | None = None  # 2CH / 4CH / 3CH
    phase: str | None = None  # ED / ES
    sex: str | None = None  # male / female
    age: int | None = None
    quality: str | None = None  # good / medium / poor
    shapes: Mapping[str, str] = field(default_factory=dict)  # structure (LV, MYO, LA) -> shape word


def _first(values: Iterable[object], normalise) -> object:
    """The first value ``normalise`` recognises (the structure rows of one image carry the same metadata)."""
    for v in values:
        n = normalise(v)
        if n is not None:
            return n
    return None


def facts_of(rows: list[Mapping], shape_key: str = "shape", with_quality: bool = True) -> ImageFacts:
    """The facts of one image from its manifest rows (one per structure); unknown values become None.

    ``with_quality=False`` (SDM CAMUS: a synthetic image has no image quality of its own) leaves quality unknown.
    """
    shapes: dict[str, str] = {}
    for r in rows:
        word = r.get(shape_key)
        structure = str(r.get("structure"))
        if isinstance(word, str) and word.strip() and structure in STRUCTURE_NAMES:
            shapes.setdefault(structure, word.strip())
    return ImageFacts(
        view=_first((r.get("view") for r in rows), normalise_view),
        phase=_first((r.get("phase") for r in rows), normalise_phase),
        sex=_first((r.get("sex") for r in rows), normalise_sex),
        age=_first((r.get("age") for r in rows), normalise_age),
        quality=_first((r.get("quality") for r in rows), normalise_quality) if with_quality else None,
        shapes=shapes,
    )


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _patient(f: ImageFacts) -> str:
    """ "of a 63-year-old female patient", "of an 80-year-old patient", "of a male patient" or ""."""
    if f.age is None and f.sex is None:
        return ""
    words = []
    if f.age is not None:
        words.append(f"{f.age}-year-old")
    if f.sex is not None:
        words.append(f.sex)
    # the article of the spoken number: "an 80-year-old", "an 11-year-old", "a 63-year-old"
    spoken = number_words(f.age) if f.age is not None else f.sex
    return f" of {article(spoken, _STYLE)} {' '.join(words)} patient"


def _shapes(f: ImageFacts) -> str:
    """ "The left ventricular cavity has an oval shape, the myocardium a circle shape and ..." or ""."""
    known = sorted(f.shapes.items(), key=lambda kv: STRUCTURE_LABELS.get(kv[0], 9))
    parts = [(_lower_first(STRUCTURE_NAMES[s]), f"{article(w, _STYLE)} {w} shape") for s, w in known]
    if not parts:
        return ""
    clauses = [f"the {parts[0][0]} has {parts[0][1]}"] + [f"the {name} {shape}" for name, shape in parts[1:]]
    text = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return text[:1].upper() + text[1:] + "."


def image_report(f: ImageFacts) -> str:
    """The report of one image: deterministic, and naming exactly the attributes ``f`` knows."""
    text = f"Apical {VIEW_WORDS[f.view]}-chamber view" if f.view else "Echocardiogram"
    if f.phase:
        text += f" at end-{PHASE_WORDS[f.phase]}"
    text += _patient(f)
    if f.quality:
        text += f", {f.quality} image quality"
    text += "."
    shapes = _shapes(f)
    return f"{text} {shapes}" if shapes else text


def image_reports(df: pd.DataFrame, shape_key: str = "shape", with_quality: bool = True) -> list[str]:
    """The report of every row's image (the same text on each structure row of an image), in row order.

    ``with_quality``: False for SDM CAMUS, whose prompts have no image quality either.
    """
    groups: dict[str, list[int]] = {}
    records = df.to_dict("records")
    for i, r in enumerate(records):
        groups.setdefault(str(r["image"]), []).append(i)
    out = [""] * len(records)
    for idx in groups.values():
        text = image_report(facts_of([records[i] for i in idx], shape_key, with_quality))
        for i in idx:
            out[i] = text
    return out


def report_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per image, sorted by image: image, patient, split, report (``df`` holds a ``report`` column)."""
    images = df.drop_duplicates("image").sort_values("image", key=lambda c: c.astype(str), kind="stable")
    return pd.DataFrame({
        "image": images["image"].astype(str).to_numpy(),
        "patient": images["patient"].to_numpy() if "patient" in images else "",
        "split": images["split"].to_numpy() if "split" in images else "",
        "report": images["report"].to_numpy(),
    }, columns=REPORT_COLUMNS)
