"""SDM CAMUS reader: layouts, label mapping, attributes, splits and checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echoseg.core.data.camus import read_camus
from echoseg.core.data.imaging import load_mask
from echoseg.core.data.sdm_camus import (
    SDM_CONE,
    SDM_LABELS,
    SDM_OUTSIDE,
    check_sdm_camus,
    detect_sdm_camus,
    read_sdm_camus,
)
from echoseg.core.data.toy.camus import write_toy_camus
from echoseg.core.data.toy.heart import draw_echo, sample_anatomy, to_sdm_labels
from echoseg.core.data.toy.sdm import write_toy_sdm_camus
from echoseg.core.errors import UserError
from echoseg.core.io import write_png


@pytest.fixture(scope="module")
def sdm_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sdm")
    write_toy_sdm_camus(root, patients=3, copies=2, size=48, seed=0)
    return root


@pytest.fixture
def sdm_copy(sdm_root, tmp_path) -> Path:
    dst = tmp_path / "sdm"
    shutil.copytree(sdm_root, dst)
    return dst


def _pair(size: int = 48, seed: int = 0, view: str = "2CH"):
    rng = np.random.default_rng(seed)
    img, labels, cone = draw_echo(size, sample_anatomy(rng, view), rng)
    return img, labels, cone


def test_constants():
    assert SDM_LABELS == {"LV": 1, "MYO": 3, "LA": 4} and SDM_OUTSIDE == 0 and SDM_CONE == 2


def test_read_toy_sdm_label_mapping_and_manifest_attributes(sdm_root):
    df = read_sdm_camus(sdm_root)
    assert len(df) == 3 * 2 * 2 * 2 * 3 and df["sample_id"].is_unique
    assert set(zip(df["structure"], df["label"], strict=True)) == {("LV", 1), ("MYO", 3), ("LA", 4)}
    assert set(df["source"]) == {"synthetic"} and set(df["dataset"]) == {"sdm-camus"}
    assert set(df["label_encoding"]) == {"sdm"} and set(df["copy"]) == {0, 1}
    assert set(df["split"]) == {"train", "val"}
    row = df[df["sample_id"] == "patient0001_4CH_ES_validation_1_MYO"].iloc[0]
    assert row["patient"] == "patient0001" and row["view"] == "4CH" and row["phase"] == "ES"
    assert row["mask"].endswith("4CH_ES/annotations/validation/patient0001_4CH_ES_validation_1.png")
    # attributes come from the data set's manifest.csv
    written = pd.read_csv(sdm_root / "manifest.csv").drop_duplicates("image")
    assert not any(Path(p).is_absolute() for p in written["image"])  # the toy writes paths relative to itself
    written = written.set_index(written["image"].map(lambda p: str(sdm_root / p)))
    for _, r in df.drop_duplicates("image").iterrows():
        assert (r["sex"], int(r["age"]), r["quality"]) == tuple(written.loc[r["image"], ["sex", "age", "quality"]])
    # every structure is present in its own mask under its label value
    for _, r in df.head(6).iterrows():
        assert (load_mask(r["mask"]) == r["label"]).sum() > 0


def test_attributes_from_camus_root(sdm_copy, tmp_path):
    (sdm_copy / "manifest.csv").unlink()
    bare = read_sdm_camus(sdm_copy)
    assert (bare["sex"] == "").all() and bare["age"].isna().all()
    camus = tmp_path / "camus"
    write_toy_camus(camus, patients=3, size=48, layout="nifti", seed=5, half_sequence=False)
    df = read_sdm_camus(sdm_copy, camus_root=camus)
    ref = read_camus(camus).drop_duplicates(["patient", "view"]).set_index(["patient", "view"])
    for _, r in df.drop_duplicates("image").iterrows():
        exp = ref.loc[(r["patient"], r["view"])]
        assert (r["sex"], r["age"], r["quality"]) == (exp["sex"], exp["age"], exp["quality"])


def test_plain_images_labels_layout_with_synthetic_boost_names(tmp_path):
    img, labels, cone = _pair()
    for name in ("patient0001_2CH_ED_testing.png", "patient0002_2CH_ED_0.png"):
        write_png(tmp_path / "images" / name, img)
        write_png(tmp_path / "labels" / name, to_sdm_labels(labels, cone))
    assert detect_sdm_camus(tmp_path)
    df = read_sdm_camus(tmp_path)
    test = df[df["stem"] == "patient0001_2CH_ED_testing"]
    assert set(test["patient"]) == {"testing-patient0001"} and set(test["split"]) == {"test"}
    other = df[df["stem"] == "patient0002_2CH_ED_0"]
    assert set(other["split"]) == {"train"} and set(other["copy"]) == {0}
    assert set(df["label"]) == {1, 3, 4}


def test_camus_encoded_testing_folder(tmp_path):
    """The published testing/ folders hold real CAMUS images with plain CAMUS labels (1 LV, 2 MYO, 3 LA)."""
    img, labels, cone = _pair(seed=2)
    base = tmp_path / "2CH_ED"
    write_png(base / "images" / "testing" / "patient0001_2CH_ED_testing.png", img)
    write_png(base / "annotations" / "testing" / "patient0001_2CH_ED_testing.png", labels)
    write_png(base / "images" / "training" / "patient0060_2CH_ED_training_3.png", img)
    write_png(base / "annotations" / "training" / "patient0060_2CH_ED_training_3.png", to_sdm_labels(labels, cone))
    df = read_sdm_camus(tmp_path).set_index("sample_id")
    assert df.loc["patient0001_2CH_ED_testing_MYO", "label"] == 2
    assert df.loc["patient0001_2CH_ED_testing_LA", "label_encoding"] == "camus"
    assert df.loc["patient0001_2CH_ED_testing_LV", "source"] == "real"
    assert df.loc["patient0060_2CH_ED_training_3_MYO", "label"] == 3
    assert df.loc["patient0060_2CH_ED_training_3_MYO", "source"] == "synthetic"
    for sid, row in df.iterrows():
        assert (load_mask(row["mask"]) == row["label"]).sum() > 0, sid


def test_splits_override(sdm_root, tmp_path):
    f = tmp_path / "splits.csv"
    f.write_text("patient,split\npatient0002,test\n")
    df = read_sdm_camus(sdm_root, splits=f)
    assert set(df.loc[df["patient"] == "patient0002", "split"]) == {"test"}
    assert set(df.loc[df["patient"] == "patient0001", "split"]) == {"val"}
    f.write_text("patient,split\npatient0099,test\n")
    with pytest.raises(UserError, match="none of the data set's patients"):
        read_sdm_camus(sdm_root, splits=f)


def test_detect_and_empty(sdm_root, tmp_path):
    assert detect_sdm_camus(sdm_root)
    assert not detect_sdm_camus(tmp_path)
    cam = tmp_path / "camus"
    write_toy_camus(cam, patients=1, size=48, layout="mhd", seed=0)
    assert not detect_sdm_camus(cam)
    with pytest.raises(UserError, match="no SDM CAMUS images"):
        read_sdm_camus(tmp_path)


def test_check_sdm_camus(sdm_copy):
    df, problems = check_sdm_camus(sdm_copy)
    assert problems == [] and len(df) == 72 and (df["height"] == 48).all()
    images = sdm_copy / "2CH_ED" / "images" / "training"
    annotations = sdm_copy / "2CH_ED" / "annotations" / "training"
    (annotations / "patient0002_2CH_ED_training_0.png").unlink()
    write_png(annotations / "patient0002_2CH_ED_training_1.png", np.zeros((20, 20), np.uint8))
    shutil.copy(images / "patient0003_2CH_ED_training_0.png", images / "scan_0003.png")
    bad = np.full((48, 48), 9, np.uint8)
    write_png(annotations / "patient0003_2CH_ED_training_0.png", bad)
    df, problems = check_sdm_camus(sdm_copy)
    reasons = {Path(p.path).name: p.reason for p in problems}
    assert len(problems) == 4, problems
    assert reasons["patient0002_2CH_ED_training_0.png"].startswith("no label map")
    assert "does not match image shape" in reasons["patient0002_2CH_ED_training_1.png"]
    assert reasons["scan_0003.png"].startswith("name does not match")
    assert reasons["patient0003_2CH_ED_training_0.png"] == "labels outside 0..4: 9"
    assert len(df) == 72 - 3 * 3
