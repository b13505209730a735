"""The Synthetic Boost P0–P7 prompt templates (Adhikari et al. 2023), in their two published variants.

Each level adds one attribute to the previous one; variant A describes the structure "... of the heart",
variant B "... in the cardiac ultrasound". For the left ventricular cavity of a 2CH ED image::

    P0  ""
    P1  Left ventricular cavity of the heart.
    P2  Left ventricular cavity in two-chamber view of the heart.
    P3  ... at end of the diastole cycle.
    P4  ... of a male.
    P5  ... of a seventy-three-year-old male.
    P6  ... with good image quality.
    P7  Left ventricular cavity of oval shape in two-chamber view ... with good image quality.

SDM CAMUS (synthetic images) has no image quality: its P6 is the shape prompt without the quality clause and
there is no P7. A prompt whose attributes are unknown for a sample is the empty string.

Styles: ``synthetic-boost`` reproduces the published files exactly, including "a eighty-eight-year-old";
``grammatical`` writes "an" before a vowel sound ("an eighty-eight-year-old").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from echoseg.core.data.manifest import STRUCTURE_NAMES, is_random_prompt, prompt_columns

STYLES = ("synthetic-boost", "grammatical")
LEVELS_CAMUS = tuple(f"p{k}" for k in range(8))
LEVELS_SDM = tuple(f"p{k}" for k in range(7))
SHAPES = ("circle", "oval", "triangle", "square", "rectangle")
QUALITIES = ("good", "medium", "poor")
# Variant A and B: how the structure is located (the published files' two phrasings).
CONTEXTS = ("of the heart", "in the cardiac ultrasound")
VIEW_WORDS = {"2CH": "two", "4CH": "four", "3CH": "three"}
PHASE_WORDS = {"ED": "diastole", "ES": "systole"}

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """An integer 0..999 in hyphenated English words: 73 -> "seventy-three", 105 -> "one-hundred-five"."""
    if not 0 <= n < 1000:
        raise ValueError(f"number out of range 0..999: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]}-hundred" + (f"-{number_words(rest)}" if rest else "")


def article(word: str, style: str = "synthetic-boost") -> str:
    """The indefinite article before ``word``: always "a" in the published style, "a"/"an" by sound otherwise."""
    if style == "synthetic-boost":
        return "a"
    w = word.lower()
    if w.startswith(("one", "uni", "use", "eu")):  # vowel letter, consonant sound
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


@dataclass(frozen=True)
class Attributes:
    """One sample's attributes as template words; ``None`` where unknown."""

    structure: str  # manifest short name: LV, MYO, LA
    view: str | None = None  # 2CH / 4CH
    phase: str | None = None  # ED / ES
    sex: str | None = None  # male / female
    age: int | None = None
    quality: str | None = None  # good / medium / poor
    shape: str | None = None  # any shape word (normally one of SHAPES)


def normalise_sex(value: object) -> str | None:
    """"M"/"male" -> "male", "F"/"female" -> "female", anything else -> None."""
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    return {"m": "male", "male": "male", "f": "female", "female": "female"}.get(v)


def normalise_age(value: object) -> int | None:
    """An integer age in 0..129, or None for missing/invalid values (NaN, negative, text)."""
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or f < 0 or f >= 130:
        return None
    return int(round(f))


def normalise_quality(value: object) -> str | None:
    """"Good"/"Medium"/"Poor" (any case) -> lower-case word; anything else -> None."""
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    return v if v in QUALITIES else None


def normalise_view(value: object) -> str | None:
    """Canonical view code ("2CH", "4CH", "3CH") or None."""
    if not isinstance(value, str):
        return None
    v = value.strip().upper()
    return v if v in VIEW_WORDS else None


def normalise_phase(value: object) -> str | None:
    """Canonical phase code ("ED", "ES") or None."""
    if not isinstance(value, str):
        return None
    v = value.strip().upper()
    return v if v in PHASE_WORDS else None


def _one(a: Attributes, context: str, level: int, style: str, with_quality: bool) -> str:
    """One variant of one prompt level (level >= 1); "" when an attribute it needs is unknown."""
    name = STRUCTURE_NAMES[a.structure]
    shape_level = 7 if with_quality else 6
    if level >= shape_level:
        if not a.shape:
            return ""
        name = f"{name} of {a.shape} shape"
    if level == 1:
        return f"{name} {context}."
    if a.view is None:
        return ""
    text = f"{name} in {VIEW_WORDS[a.view]}-chamber view {context}"
    if level >= 3:
        if a.phase is None:
            return ""
        text += f" at end of the {PHASE_WORDS[a.phase]} cycle"
    if level >= 4:
        if a.sex is None:
            return ""
        if level == 4:
            text += f" of a {a.sex}"
        else:
            if a.age is None:
                return ""
            age = number_words(a.age)
            text += f" of {article(age, style)} {age}-year-old {a.sex}"
    if level >= 6 and with_quality:
        if a.quality is None:
            return ""
        text += f" with {a.quality} image quality"
    return text + "."


def build_prompts(a: Attributes, *, style: str = "synthetic-boost", with_quality: bool = True) -> dict:
    """All prompt levels of one sample in the published JSON form: {"p0": "", "p1": [A, B], ...}.

    Args:
        a: the sample's attributes.
        style: ``synthetic-boost`` (published wording) or ``grammatical``.
        with_quality: True for CAMUS (P0–P7); False for SDM CAMUS (P0–P6, P6 being the shape prompt).
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    if a.structure not in STRUCTURE_NAMES:
        raise ValueError(f"unknown structure {a.structure!r}")
    levels = LEVELS_CAMUS if with_quality else LEVELS_SDM
    out: dict = {"p0": ""}
    for k in range(1, len(levels)):
        out[f"p{k}"] = [_one(a, ctx, k, style, with_quality) for ctx in CONTEXTS]
    return out


def needed_attributes(level: int, with_quality: bool = True) -> tuple[str, ...]:
    """The attributes prompt level ``level`` needs besides the structure (each level adds one)."""
    order = ("view", "phase", "sex", "age") + (("quality", "shape") if with_quality else ("shape",))
    if not 0 <= level <= len(order) + 1:
        raise ValueError(f"no prompt level p{level}")
    return order[: max(0, level - 1)]


def lv_frame_prompt(train_prompt: str) -> str:
    """The LV prompt a run trained with ``--prompt train_prompt`` gets on an apical four-chamber video frame.

    A frame carries no phase, sex, age, quality or shape, so levels above P2 fall back to P2; P0 is empty; a fixed
    ``pK_b`` prompt uses variant B, every other prompt variant A (see :mod:`echoseg.core.models.teachers`).
    """
    cols = prompt_columns(train_prompt)
    col = cols[0]
    variant = 1 if (col.endswith("_b") and not is_random_prompt(train_prompt)) else 0
    level = min(int(col[1]), 2)
    if level == 0:
        return ""
    return build_prompts(Attributes(structure="LV", view="4CH"))[f"p{level}"][variant]
