"""P0–P7 templates: whole strings, missing attributes, and a regeneration of the paper's published files."""

from __future__ import annotations

import json
import re

import pytest

from echoseg.core.data.manifest import STRUCTURE_NAMES
from echoseg.core.prompts.templates import (
    Attributes,
    article,
    build_prompts,
    needed_attributes,
    normalise_age,
    normalise_quality,
    normalise_sex,
    number_words,
)

WORD_TO_AGE = {number_words(n): n for n in range(130)}
NAME_TO_STRUCTURE = {v: k for k, v in STRUCTURE_NAMES.items()}


def parse_record(rec: dict, with_quality: bool = True) -> Attributes:
    """The attributes a published record was made from (names, metadata and the shape word it states)."""
    view, phase = re.search(r"_(2CH|4CH)_(ED|ES)", rec["img_name"]).groups()
    p = rec["prompts"]
    structure = NAME_TO_STRUCTURE[p["p1"][0].removesuffix(" of the heart.")]
    age_words, sex = re.search(r" of an? ([a-z-]+)-year-old (male|female)", p["p5"][0]).groups()
    quality = re.search(r" with (good|medium|poor) image quality", p["p6"][0]).group(1) if with_quality else None
    shape = re.search(r" of (\w+) shape ", p["p7" if with_quality else "p6"][0]).group(1)
    return Attributes(structure, view, phase, sex, WORD_TO_AGE[age_words], quality, shape)


def test_number_words():
    cases = {0: "zero", 7: "seven", 13: "thirteen", 18: "eighteen", 20: "twenty", 41: "forty-one",
             73: "seventy-three", 88: "eighty-eight", 90: "ninety", 105: "one-hundred-five"}
    for n, words in cases.items():
        assert number_words(n) == words
    with pytest.raises(ValueError):
        number_words(-1)


def test_article_styles():
    assert article("eighty-eight") == "a"  # the published files' wording
    assert article("eighty-eight", "grammatical") == "an"
    assert article("eleven", "grammatical") == "an"
    assert article("seventy-three", "grammatical") == "a"
    assert article("one", "grammatical") == "a"


def test_normalisers():
    assert normalise_sex("M") == "male" and normalise_sex("f") == "female" and normalise_sex("X") is None
    assert normalise_sex(float("nan")) is None
    assert normalise_age("73") == 73 and normalise_age(73.0) == 73 and normalise_age(float("nan")) is None
    assert normalise_age(-3) is None and normalise_age("old") is None
    assert normalise_quality("Good") == "good" and normalise_quality("Excellent") is None


def test_camus_whole_strings():
    a = Attributes("LV", "2CH", "ED", "male", 73, "good", "oval")
    p = build_prompts(a)
    assert list(p) == [f"p{k}" for k in range(8)]
    assert p["p0"] == ""
    assert p["p1"] == ["Left ventricular cavity of the heart.", "Left ventricular cavity in the cardiac ultrasound."]
    assert p["p3"] == [
        "Left ventricular cavity in two-chamber view of the heart at end of the diastole cycle.",
        "Left ventricular cavity in two-chamber view in the cardiac ultrasound at end of the diastole cycle.",
    ]
    assert p["p7"] == [
        "Left ventricular cavity of oval shape in two-chamber view of the heart at end of the diastole cycle "
        "of a seventy-three-year-old male with good image quality.",
        "Left ventricular cavity of oval shape in two-chamber view in the cardiac ultrasound at end of the "
        "diastole cycle of a seventy-three-year-old male with good image quality.",
    ]
    b = build_prompts(Attributes("LA", "4CH", "ES", "female", 88, "poor", "triangle"))
    assert b["p4"][0] == "Left atrium cavity in four-chamber view of the heart at end of the systole cycle of a female."
    assert b["p6"][1] == ("Left atrium cavity in four-chamber view in the cardiac ultrasound at end of the systole "
                          "cycle of a eighty-eight-year-old female with poor image quality.")
    g = build_prompts(Attributes("MYO", "4CH", "ES", "female", 88, "poor", "square"), style="grammatical")
    assert g["p5"][0] == ("Myocardium in four-chamber view of the heart at end of the systole cycle of an "
                          "eighty-eight-year-old female.")
    for level in list(p)[1:]:
        assert all(s.endswith(".") for s in p[level] + b[level] + g[level])


def test_sdm_has_shape_p6_and_no_p7():
    p = build_prompts(Attributes("MYO", "2CH", "ED", "female", 56, None, "triangle"), with_quality=False)
    assert list(p) == [f"p{k}" for k in range(7)]
    assert p["p6"] == [
        "Myocardium of triangle shape in two-chamber view of the heart at end of the diastole cycle of a "
        "fifty-six-year-old female.",
        "Myocardium of triangle shape in two-chamber view in the cardiac ultrasound at end of the diastole cycle "
        "of a fifty-six-year-old female.",
    ]


@pytest.mark.parametrize(
    ("missing", "first_empty"),
    [({"sex": None}, 4), ({"age": None}, 5), ({"quality": None}, 6), ({"shape": None}, 7), ({"view": None}, 2)],
)
def test_missing_attribute_empties_exactly_the_levels_that_need_it(missing, first_empty):
    base = {"structure": "LV", "view": "2CH", "phase": "ES", "sex": "male", "age": 60, "quality": "medium",
            "shape": "circle"}
    p = build_prompts(Attributes(**{**base, **missing}))
    for k in range(1, 8):
        assert (p[f"p{k}"] == ["", ""]) == (k >= first_empty), k
        assert (next(iter(missing)) in needed_attributes(k)) == (k >= first_empty)


def test_bad_style_or_structure():
    with pytest.raises(ValueError):
        build_prompts(Attributes("LV"), style="poetic")
    with pytest.raises(ValueError):
        build_prompts(Attributes("RV"))


@pytest.mark.parametrize("task", ["camus/test.json", "camus/val.json", "sdm/test.json"])
def test_regenerates_every_published_record(task, reference):
    records = json.loads(reference("synthetic-boost", "tasks", task).read_text())
    with_quality = task.startswith("camus")
    assert len(records) == 600
    for rec in records:
        regenerated = build_prompts(parse_record(rec, with_quality), with_quality=with_quality)
        assert regenerated == rec["prompts"], rec["mask_name"]
