"""Image-level reports: one text per image, the same on its structure rows, naming exactly what is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from echoseg.core.prompts.build import attributes_of, build, make_prompts, write_outputs
from echoseg.core.prompts.reports import ImageFacts, facts_of, image_report, image_reports, report_table
from echoseg.core.prompts.templates import build_prompts


def row(structure="LV", view="4CH", phase="ED", sex="F", age=63, quality="Good", patient="patient0001",
        split="test"):
    stem = f"{patient}_{view}_{phase}"
    return {"sample_id": f"{stem}_{structure}", "image": f"/d/{patient}/{stem}.nii.gz",
            "mask": f"/d/{patient}/{stem}_gt.nii.gz", "label": {"LV": 1, "MYO": 2, "LA": 3}[structure],
            "structure": structure, "view": view, "phase": phase, "patient": patient, "sex": sex, "age": age,
            "quality": quality, "split": split, "source": "real", "stem": stem}


def image_rows(**kw):
    return [row(s, **kw) for s in ("LV", "MYO", "LA")]


def test_full_report_names_every_attribute():
    df = pd.DataFrame(image_rows())
    res = make_prompts(df, ["oval", "circle", "triangle"], "camus")
    assert set(res.manifest["report"]) == {
        "Apical four-chamber view at end-diastole of a 63-year-old female patient, good image quality. "
        "The left ventricular cavity has an oval shape, the myocardium a circle shape and the left atrium cavity "
        "a triangle shape."}


def test_one_text_per_image_identical_across_its_structure_rows():
    rows = (image_rows() + image_rows(phase="ES", quality="Poor") + image_rows(view="2CH", patient="patient0002",
                                                                                sex="M", age=80, split="train"))
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)  # rows in any order
    shapes = ["oval", "circle", "triangle", "square", "rectangle"] * 2
    res = make_prompts(df, shapes[: len(df)], "camus")
    m = res.manifest
    assert m.groupby("image")["report"].nunique().eq(1).all()
    assert m["report"].nunique() == m["image"].nunique() == 3
    table = report_table(m)
    assert list(table.columns) == ["image", "patient", "split", "report"]
    assert len(table) == 3 and table["image"].is_unique and list(table["image"]) == sorted(table["image"])
    by_image = dict(zip(m["image"], m["report"], strict=True))
    assert all(by_image[i] == r for i, r in zip(table["image"], table["report"], strict=True))
    p2 = table[table["patient"] == "patient0002"].iloc[0]
    assert p2["split"] == "train" and p2["report"].startswith(
        "Apical two-chamber view at end-diastole of an 80-year-old male patient, good image quality. ")


@pytest.mark.parametrize(("facts", "expected"), [
    (ImageFacts(view="2CH", phase="ES", age=8, quality="poor"),
     "Apical two-chamber view at end-systole of an 8-year-old patient, poor image quality."),
    (ImageFacts(view="4CH", sex="male", shapes={"LA": "oval"}),
     "Apical four-chamber view of a male patient. The left atrium cavity has an oval shape."),
    (ImageFacts(phase="ED", shapes={"MYO": "square", "LV": "circle"}),
     "Echocardiogram at end-diastole. The left ventricular cavity has a circle shape and the myocardium a square "
     "shape."),
    (ImageFacts(), "Echocardiogram."),
])
def test_unknown_attributes_are_left_out(facts, expected):
    assert image_report(facts) == expected


def test_known_attributes_appear_and_missing_ones_never_as_nan():
    rows = image_rows(sex=np.nan, age=np.nan, quality="") + image_rows(phase="ES", view=None)
    df = pd.DataFrame(rows)
    res = make_prompts(df, ["oval", "", "circle", "oval", "oval", "oval"], "camus")
    reports = report_table(res.manifest)["report"].tolist()
    assert reports == [
        "Apical four-chamber view at end-diastole. The left ventricular cavity has an oval shape and the left "
        "atrium cavity a circle shape.",
        "Echocardiogram at end-systole of a 63-year-old female patient, good image quality. The left ventricular "
        "cavity has an oval shape, the myocardium an oval shape and the left atrium cavity an oval shape.",
    ]
    for text in reports:
        assert "nan" not in text.lower() and "none" not in text.lower() and "  " not in text


def test_sdm_camus_reports_have_no_image_quality():
    df = pd.DataFrame(image_rows(quality="Poor"))
    res = make_prompts(df, ["oval", "oval", "oval"], "sdm-camus")
    text = res.manifest["report"].iloc[0]
    assert "quality" not in text and "63-year-old female patient." in text
    assert facts_of(df.to_dict("records"), with_quality=False).quality is None


def test_reports_are_deterministic_and_leave_the_prompts_alone():
    df = pd.DataFrame(image_rows() + image_rows(phase="ES"))
    shapes = ["oval", "circle", "triangle", "rectangle", "square", "oval"]
    a, b = make_prompts(df, shapes, "camus"), make_prompts(df.copy(), list(shapes), "camus")
    assert a.manifest["report"].tolist() == b.manifest["report"].tolist() == image_reports(a.manifest)
    prompt_cols = [c for c in a.manifest.columns if c.startswith("p") and c[1:2].isdigit()]
    assert "report" not in prompt_cols and len(prompt_cols) == 15
    first = a.manifest.iloc[0]
    assert first["p7"] == build_prompts(attributes_of(first, first["shape"]))["p7"][0]
    assert all("report" not in rec for recs in a.records.values() for rec in recs)


def test_toy_camus_run_writes_reports_csv(tmp_path):
    from echoseg.core.data.toy.camus import write_toy_camus

    write_toy_camus(tmp_path / "data", patients=3, size=64, layout="nifti", seed=0)
    res = build(tmp_path / "data", progress=False)
    write_outputs(res, tmp_path / "out")
    m = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str, keep_default_na=False)
    reports = pd.read_csv(tmp_path / "out" / "reports.csv", dtype=str, keep_default_na=False)
    assert list(reports.columns) == ["image", "patient", "split", "report"]
    assert len(reports) == m["image"].nunique() == 12 and reports["image"].is_unique
    assert m.groupby("image")["report"].nunique().eq(1).all()
    assert dict(zip(reports["image"], reports["report"], strict=True)) == dict(
        zip(m["image"], m["report"], strict=True))
    for r in m.to_dict("records"):
        text = r["report"]
        view = {"2CH": "two", "4CH": "four"}[r["view"]]
        phase = {"ED": "diastole", "ES": "systole"}[r["phase"]]
        sex = {"M": "male", "F": "female"}[r["sex"]]
        assert text.startswith(f"Apical {view}-chamber view at end-{phase} of a")
        assert f"{r['age']}-year-old {sex} patient, {r['quality'].lower()} image quality." in text
        assert f" {r['shape']} shape" in text
