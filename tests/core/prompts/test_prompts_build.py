"""The whole build: manifests in, prompts + Synthetic-Boost JSON + attribute counts out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from echoseg.core.data.manifest import MANIFEST_COLUMNS, STRUCTURE_NAMES, write_manifest
from echoseg.core.errors import UserError
from echoseg.core.prompts.build import (
    attribute_table,
    build,
    json_names,
    load_dataset,
    make_prompts,
    schema_problems,
    summary_of,
    write_outputs,
)
from echoseg.core.prompts.templates import SHAPES, Attributes, build_prompts, number_words

WORD_TO_AGE = {number_words(n): n for n in range(130)}


def row(structure="LV", view="2CH", phase="ED", sex="M", age=73, quality="Good", split="test", patient="patient0001",
        label=None, source="real", image=None):
    stem = f"{patient}_{view}_{phase}"
    return {"sample_id": f"{stem}_{structure}", "image": image or f"/d/{patient}/{stem}.nii.gz",
            "mask": f"/d/{patient}/{stem}_gt.nii.gz", "label": label or {"LV": 1, "MYO": 2, "LA": 3}[structure],
            "structure": structure, "view": view, "phase": phase, "patient": patient, "sex": sex, "age": age,
            "quality": quality, "split": split, "source": source, "stem": stem}


def test_make_prompts_whole_strings_and_json_records():
    df = pd.DataFrame([row("LV"), row("MYO", phase="ES", sex="F", age=88, quality="Poor", split="train"),
                       row("LA", view="4CH")])
    res = make_prompts(df, ["oval", "triangle", "circle"], "camus")
    m = res.manifest
    assert list(m["p7"]) == [
        "Left ventricular cavity of oval shape in two-chamber view of the heart at end of the diastole cycle of a "
        "seventy-three-year-old male with good image quality.",
        "Myocardium of triangle shape in two-chamber view of the heart at end of the systole cycle of a "
        "eighty-eight-year-old female with poor image quality.",
        "Left atrium cavity of circle shape in four-chamber view of the heart at end of the diastole cycle of a "
        "seventy-three-year-old male with good image quality.",
    ]
    assert list(m["shape"]) == ["oval", "triangle", "circle"]
    test = res.records["test"]
    assert [(r["img_name"], r["mask_name"]) for r in test] == [
        ("patient0001_2CH_ED.png", "mask_1/patient0001_2CH_ED_gt.png"),
        ("patient0001_4CH_ED.png", "mask_3/patient0001_4CH_ED_gt.png")]
    assert test[0]["prompts"]["p2"] == ["Left ventricular cavity in two-chamber view of the heart.",
                                        "Left ventricular cavity in two-chamber view in the cardiac ultrasound."]
    assert res.records["val"] == [] and len(res.records["train"]) == 1
    assert all(schema_problems(r) == [] for r in res.records.values())
    assert res.incomplete == 0 and sum(res.missing.values()) == 0


def test_grammatical_style():
    res = make_prompts(pd.DataFrame([row(age=81)]), ["oval"], "camus", style="grammatical")
    assert "of an eighty-one-year-old male" in res.manifest.loc[0, "p5"]


def test_missing_metadata_is_counted_never_fatal():
    df = pd.DataFrame([row(sex=None, age=None, quality=None), row("MYO", age=float("nan")),
                       row("LA", quality="Excellent")])
    res = make_prompts(df, ["oval", "", "circle"], "camus")
    assert res.missing == {"view": 0, "phase": 0, "sex": 1, "age": 2, "quality": 2, "shape": 1}
    assert res.empty == {"p1": 0, "p2": 0, "p3": 0, "p4": 1, "p5": 2, "p6": 3, "p7": 3}
    assert res.incomplete == 3 and res.shape_unknown == 1
    m = res.manifest
    assert m.loc[0, "p3"].endswith("diastole cycle.") and m.loc[0, "p4"] == ""
    assert m.loc[1, "p4"].endswith("of a male.") and m.loc[1, "p5"] == ""
    assert m.loc[2, "p5"] != "" and m.loc[2, "p6"] == ""
    assert schema_problems(res.records["test"]) == []
    s = summary_of(res)
    assert s["incomplete_samples"] == 3 and s["missing_attributes"]["age"] == 2


def test_sdm_names_and_levels():
    r = row("MYO", sex="F", age=56, quality=None, label=3, source="synthetic", split="test",
            image="/sdm/testing/images/patient0001_2CH_ED_testing.png")
    res = make_prompts(pd.DataFrame([r]), ["triangle"], "sdm-camus")
    rec = res.records["test"][0]
    assert rec["img_name"] == "patient0001_2CH_ED_testing.png"
    assert rec["mask_name"] == "mask_2/testing/patient0001_2CH_ED_testing.png"  # CAMUS label, not the SDM one
    assert list(rec["prompts"]) == [f"p{k}" for k in range(7)]
    assert rec["prompts"]["p6"][0] == ("Myocardium of triangle shape in two-chamber view of the heart at end of the "
                                       "diastole cycle of a fifty-six-year-old female.")
    assert res.manifest.loc[0, "p7"] == "" and "quality" not in res.missing
    assert schema_problems(res.records["test"], "sdm-camus") == []
    assert schema_problems(res.records["test"], "camus") != []


def test_json_names_camus_without_stem_column():
    r = row()
    r.pop("stem")
    assert json_names(r, "camus") == ("patient0001_2CH_ED.png", "mask_1/patient0001_2CH_ED_gt.png")


def test_attribute_table_counts_images_and_samples():
    rows = [row(s, view=v, split=sp, patient=p, sex=sx, age=a)
            for p, sp, sx, a in (("patient0001", "train", "M", 73), ("patient0002", "test", "F", None))
            for v in ("2CH", "4CH") for s in ("LV", "MYO", "LA")]
    res = make_prompts(pd.DataFrame(rows), ["oval", "circle", "triangle"] * 4, "camus")
    t = attribute_table(res.manifest)
    assert list(t.columns) == ["attribute", "value", "unit", "train", "test", "all"]
    get = {(a, v): (tr, te) for a, v, tr, te in t[["attribute", "value", "train", "test"]].itertuples(index=False)}
    assert get[("view", "2CH")] == (1, 1) and get[("sex", "female")] == (0, 2)
    assert get[("age", "70-79")] == (2, 0) and get[("age", "unknown")] == (0, 2)
    assert get[("shape MYO", "circle")] == (2, 2) and get[("quality", "good")] == (2, 2)


def _check_files(out: Path, res, kind: str = "camus") -> None:
    """JSON files validate, and every record equals the templates applied to its manifest row."""
    m = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert set(MANIFEST_COLUMNS) <= set(m.columns) and {f"p{k}" for k in range(8)} | {"shape"} <= set(m.columns)
    assert (out / "attributes.csv").is_file()
    by_name = {}
    for split in ("train", "val", "test"):
        recs = json.loads((out / "prompts" / f"{split}.json").read_text())
        assert schema_problems(recs, kind) == []
        by_name.update({(split, r["img_name"], r["mask_name"]): r for r in recs})
    assert len(by_name) == len(m)
    for r in m.to_dict("records"):
        img, mask = json_names(r, kind)
        rec = by_name[(r["split"], img, mask)]
        a = Attributes(r["structure"], r["view"], r["phase"], {"M": "male", "F": "female"}.get(r["sex"]),
                       int(r["age"]) if r["age"] else None, (r["quality"] or "").lower() or None, r["shape"] or None)
        assert rec["prompts"] == build_prompts(a, with_quality=kind == "camus")
        assert r["p1"] == rec["prompts"]["p1"][0] and r["p5"] == rec["prompts"]["p5"][0]
        assert r["shape"] in SHAPES


@pytest.mark.parametrize("layout", ["nifti", "mhd"])
def test_toy_camus_end_to_end(tmp_path, layout):
    from echoseg.core.data.toy.camus import write_toy_camus

    manifest = write_toy_camus(tmp_path / "data", patients=4, size=64, layout=layout, seed=1)
    res = build(tmp_path / "data", progress=False)
    assert res.kind == "camus" and len(res.manifest) == len(manifest) and res.incomplete == 0
    write_outputs(res, tmp_path / "out")
    _check_files(tmp_path / "out", res)
    # the same data through a manifest.csv (a data run directory) gives the same prompts
    write_manifest(manifest, tmp_path / "data" / "manifest.csv")
    again = build(tmp_path / "data" / "manifest.csv", progress=False)
    cols = ["sample_id", "shape"] + [f"p{k}" for k in range(8)]
    pd.testing.assert_frame_equal(again.manifest[cols].sort_values("sample_id").reset_index(drop=True),
                                  res.manifest[cols].sort_values("sample_id").reset_index(drop=True))


def test_missing_cfg_leaves_prompts_empty(tmp_path):
    from echoseg.core.data.toy.camus import write_toy_camus

    write_toy_camus(tmp_path, patients=3, size=64, layout="nifti", seed=2)
    (tmp_path / "database_nifti" / "patient0002" / "Info_4CH.cfg").unlink()
    res = build(tmp_path, progress=False)
    assert res.missing["sex"] == res.missing["age"] == res.missing["quality"] == 6  # 2 images x 3 structures
    lacking = res.manifest[res.manifest["p4"] == ""]
    assert set(lacking["patient"]) == {"patient0002"} and set(lacking["view"]) == {"4CH"}
    assert (lacking["p3"] != "").all()


def test_splits_file_on_a_manifest(tmp_path):
    from echoseg.core.data.toy.camus import write_toy_camus

    manifest = write_toy_camus(tmp_path, patients=3, size=64, layout="nifti", seed=0)
    write_manifest(manifest, tmp_path / "manifest.csv")
    (tmp_path / "splits.csv").write_text("patient,split\npatient0001,val\npatient0002,val\npatient0003,val\n")
    df, kind = load_dataset(tmp_path, splits=tmp_path / "splits.csv")
    assert kind == "camus" and set(df["split"]) == {"val"}
    (tmp_path / "bad.csv").write_text("patient,split\nnobody,val\n")
    with pytest.raises(UserError, match="none of the data set's patients"):
        load_dataset(tmp_path, splits=tmp_path / "bad.csv")


def test_bad_inputs(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError):
        load_dataset(tmp_path / "empty")
    with pytest.raises(UserError, match="--dataset"):
        load_dataset(tmp_path, dataset="echonet")
    with pytest.raises(UserError, match="--vqa-model"):
        build(tmp_path, shape="vqa")


def _published_metadata(records: list[dict]) -> dict[tuple[str, str], dict]:
    """(patient, view) -> Sex/Age/ImageQuality as stated by the published prompts."""
    meta = {}
    for rec in records:
        patient, view = re.match(r"(patient\d+)_(2CH|4CH)_", rec["img_name"]).groups()
        p5, p6 = rec["prompts"]["p5"][0], rec["prompts"]["p6"][0]
        words, sex = re.search(r" of an? ([a-z-]+)-year-old (male|female)", p5).groups()
        quality = re.search(r" with (good|medium|poor) image quality", p6).group(1)
        meta[(patient, view)] = {"Sex": sex[0].upper() if sex == "male" else "F", "Age": WORD_TO_AGE[words],
                                 "ImageQuality": quality.capitalize()}
    return meta


def test_published_patients_are_reproduced_end_to_end(tmp_path, reference):
    """A CAMUS-layout set whose patients match the published test.json gives its p0–p6 exactly (p7 but the shape)."""
    published = json.loads(reference("synthetic-boost", "tasks", "camus", "test.json").read_text())
    from echoseg.core.data.toy.camus import write_toy_camus

    meta = _published_metadata(published)
    write_toy_camus(tmp_path, patients=3, size=64, layout="nifti", seed=3)
    for (patient, view), info in meta.items():
        cfg = tmp_path / "database_nifti" / patient / f"Info_{view}.cfg"
        if cfg.is_file():
            text = cfg.read_text()
            for key, value in info.items():
                text = re.sub(rf"^{key}: .*$", f"{key}: {value}", text, flags=re.M)
            cfg.write_text(text)
    res = build(tmp_path, progress=False)
    ours = {(r["img_name"], r["mask_name"]): r["prompts"] for recs in res.records.values() for r in recs}
    expected = [r for r in published if r["img_name"][:11] in {"patient0001", "patient0002", "patient0003"}]
    assert len(expected) == len(ours) == 36
    shape_word = re.compile(r" of \w+ shape ")
    for rec in expected:
        mine = ours[(rec["img_name"], rec["mask_name"])]
        for level in (f"p{k}" for k in range(7)):
            assert mine[level] == rec["prompts"][level], (rec["mask_name"], level)
        assert [shape_word.sub(" of _ shape ", s) for s in mine["p7"]] == \
               [shape_word.sub(" of _ shape ", s) for s in rec["prompts"]["p7"]]
    names = {STRUCTURE_NAMES[s] for s in ("LV", "MYO", "LA")}
    assert {rec["prompts"]["p1"][0].removesuffix(" of the heart.") for rec in expected} == names


def test_toy_sdm_end_to_end(tmp_path):
    from echoseg.core.data.toy.sdm import write_toy_sdm_camus

    manifest = write_toy_sdm_camus(tmp_path / "sdm", patients=3, copies=2, size=64, seed=0)
    res = build(tmp_path / "sdm", progress=False)
    assert res.kind == "sdm-camus" and len(res.manifest) == len(manifest) and res.incomplete == 0
    write_outputs(res, tmp_path / "out")
    _check_files(tmp_path / "out", res, kind="sdm-camus")
    val = json.loads((tmp_path / "out" / "prompts" / "val.json").read_text())
    assert val[0]["img_name"] == "patient0001_2CH_ED_validation_0.png"
    assert val[0]["mask_name"] == "mask_1/validation/patient0001_2CH_ED_validation_0.png"
    assert {r["mask_name"][:6] for r in val} == {"mask_1", "mask_2", "mask_3"}  # CAMUS labels, not 1/3/4
    # without attributes the sex/age prompts are empty; a CAMUS folder given as camus_root fills them
    (tmp_path / "sdm" / "manifest.csv").unlink()
    bare = build(tmp_path / "sdm", progress=False)
    assert bare.missing["sex"] == len(manifest) and bare.empty["p4"] == len(manifest) and bare.empty["p3"] == 0
    from echoseg.core.data.toy.camus import write_toy_camus

    write_toy_camus(tmp_path / "camus", patients=3, size=64, layout="nifti", seed=0)
    filled = build(tmp_path / "sdm", camus_root=tmp_path / "camus", progress=False)
    assert filled.incomplete == 0


def _draw_camus_labels(size: int, seed: int):
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    lm = np.zeros((size, size), np.uint8)
    cx = size // 2 + int(rng.integers(-3, 4))
    cv2.ellipse(lm, (cx, size // 2), (size // 6 + 3, size // 3 + 3), 0, 0, 360, 2, -1)
    cv2.ellipse(lm, (cx, size // 2), (size // 6, size // 3), 0, 0, 360, 1, -1)
    cv2.circle(lm, (cx, size // 2 + size // 3 + size // 8), size // 9, 3, -1)
    return lm, rng.integers(0, 255, (size, size), dtype=np.uint8)


def test_published_sdm_names_and_prompts_are_reproduced(tmp_path, reference):
    """SDM CAMUS testing files named as in the paper's tasks/sdm/test.json give its p0–p5 and p6 but the shape."""
    published = json.loads(reference("synthetic-boost", "tasks", "sdm", "test.json").read_text())
    from echoseg.core.io import write_png

    expected = [r for r in published if r["img_name"][:11] in {"patient0001", "patient0002"}]
    attrs = []
    for i, name in enumerate(sorted({r["img_name"] for r in expected})):
        view, phase = re.search(r"_(2CH|4CH)_(ED|ES)_", name).groups()
        lm, img = _draw_camus_labels(64, i)
        write_png(tmp_path / f"{view}_{phase}" / "images" / "testing" / name, img)
        write_png(tmp_path / f"{view}_{phase}" / "annotations" / "testing" / name, lm)
        p5 = next(r for r in expected if r["img_name"] == name)["prompts"]["p5"][0]
        words, sex = re.search(r" of an? ([a-z-]+)-year-old (male|female)", p5).groups()
        attrs.append({"image": name, "sex": sex[0].upper(), "age": WORD_TO_AGE[words]})
    pd.DataFrame(attrs).to_csv(tmp_path / "manifest.csv", index=False)  # attributes only, as synth generate
    res = build(tmp_path, progress=False)
    assert res.kind == "sdm-camus"
    ours = {(r["img_name"], r["mask_name"]): r["prompts"] for r in res.records["test"]}
    assert len(ours) == len(expected) == 24
    shape_word = re.compile(r" of \w+ shape ")
    for rec in expected:
        mine = ours[(rec["img_name"], rec["mask_name"])]
        assert {k: mine[k] for k in list(mine)[:6]} == {k: rec["prompts"][k] for k in list(mine)[:6]}
        masked = [shape_word.sub(" _ ", s) for s in rec["prompts"]["p6"]]
        assert [shape_word.sub(" _ ", s) for s in mine["p6"]] == masked


def test_manifest_carries_both_variants_for_random_prompts():
    df = pd.DataFrame([row("LV"), row("LA", view="4CH", phase="ES")])
    res = make_prompts(df, ["oval", "circle"], "camus")
    m = res.manifest
    recs = {r["mask_name"]: r["prompts"] for r in res.records["test"]}
    for _, r in m.iterrows():
        prompts = recs[json_names(r.to_dict(), "camus")[1]]
        for k in range(1, 8):
            assert r[f"p{k}"] == prompts[f"p{k}"][0]
            assert r[f"p{k}_b"] == prompts[f"p{k}"][1]
    assert m.loc[0, "p1_b"] == "Left ventricular cavity in the cardiac ultrasound."
    sdm = make_prompts(pd.DataFrame([row("LV", source="synthetic")]), ["oval"], "sdm-camus").manifest
    assert sdm.loc[0, "p7_b"] == "" and sdm.loc[0, "p6_b"].startswith("Left ventricular cavity of oval shape in")
