"""CAMUS reader: both layouts, storage variants, splits, Info cfg parsing and file checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from echoseg.core.data.camus import (
    check_camus,
    detect_camus,
    parse_info_cfg,
    read_camus,
    read_split_file,
    rule_count,
)
from echoseg.core.data.imaging import load_image, load_mask
from echoseg.core.data.manifest import MANIFEST_COLUMNS
from echoseg.core.data.toy.camus import write_toy_camus
from echoseg.core.errors import UserError


@pytest.fixture(scope="module")
def nifti_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("camus_nifti")
    write_toy_camus(root, patients=6, size=64, layout="nifti", seed=3)
    return root


@pytest.fixture(scope="module")
def mhd_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("camus_mhd")
    write_toy_camus(root, patients=6, size=64, layout="mhd", seed=4)
    return root


@pytest.fixture
def nifti_copy(nifti_root, tmp_path) -> Path:
    dst = tmp_path / "camus"
    shutil.copytree(nifti_root, dst)
    return dst


def _stored_dims(path: str) -> int:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader.GetDimension()


# ----------------------------------------------------------------------------------------------- layouts
def test_read_nifti_rows_and_columns(nifti_root):
    df = read_camus(nifti_root)
    assert list(df.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert len(df) == 6 * 2 * 2 * 3 and df["sample_id"].is_unique
    assert set(zip(df["label"], df["structure"], strict=True)) == {(1, "LV"), (2, "MYO"), (3, "LA")}
    row = df[df["sample_id"] == "patient0001_2CH_ED_LV"].iloc[0]
    assert row["stem"] == "patient0001_2CH_ED" and row["view"] == "2CH" and row["phase"] == "ED"
    assert row["image"].endswith("patient0001_2CH_ED.nii.gz") and Path(row["image"]).is_absolute()
    assert row["mask"].endswith("patient0001_2CH_ED_gt.nii.gz")
    assert set(df["dataset"]) == {"camus-nifti"} and set(df["source"]) == {"real"}
    assert set(df["sex"]) <= {"M", "F"} and set(df["quality"]) <= {"Good", "Medium", "Poor"}
    assert df["age"].dtype == "Int64" and df["age"].between(18, 100).all()
    # Info cfg keys other than the attributes are kept as info_<key>
    assert {"info_ED", "info_ES", "info_NbFrame", "info_LVef", "info_FrameRate"} <= set(df.columns)
    assert (df["info_ES"] <= df["info_NbFrame"]).all()
    # the half-sequence files exist but are never taken as ED/ES images
    assert any(Path(row["image"]).parent.glob("*_half_sequence.nii.gz"))
    assert not df["image"].str.contains("half_sequence").any()


def test_half_sequence_columns_on_request(nifti_root):
    df = read_camus(nifti_root, include_half_sequence=True)
    assert df["half_sequence"].str.endswith("_half_sequence.nii.gz").all()
    assert df["half_sequence_gt"].str.endswith("_half_sequence_gt.nii.gz").all()
    row = df.iloc[0]
    seq = sitk.GetArrayFromImage(sitk.ReadImage(row["half_sequence"]))
    assert seq.ndim == 3 and seq.shape[0] == int(row["info_NbFrame"])
    assert not df["image"].str.contains("half_sequence").any()


def test_nifti_2d_and_mhd_single_slice_3d(nifti_root, mhd_root):
    nifti = read_camus(nifti_root).iloc[0]
    mhd = read_camus(mhd_root).iloc[0]
    assert _stored_dims(nifti["image"]) == 2 and _stored_dims(mhd["image"]) == 3
    assert mhd["image"].endswith(".mhd") and Path(mhd["image"]).with_suffix(".raw").is_file()
    for row in (nifti, mhd):
        img, mask = load_image(row["image"]), load_mask(row["mask"])
        assert img.shape == mask.shape == (64, 64) and img.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1, 2, 3}


@pytest.mark.parametrize(("layout", "ndim"), [("nifti", 3), ("mhd", 2)])
def test_other_storage_dims_read_the_same(tmp_path, layout, ndim):
    write_toy_camus(tmp_path, patients=1, size=48, layout=layout, seed=1, ndim=ndim, half_sequence=False)
    df = read_camus(tmp_path)
    assert len(df) == 12 and _stored_dims(df["image"].iloc[0]) == ndim
    assert load_mask(df["mask"].iloc[0]).shape == (48, 48)


def test_orientation_apex_at_top(nifti_root):
    df = read_camus(nifti_root).drop_duplicates("image")
    for _, row in df.iterrows():
        img, mask = load_image(row["image"]), load_mask(row["mask"])
        lv_rows = np.nonzero(mask == 1)[0]
        la_rows = np.nonzero(mask == 3)[0]
        assert lv_rows.mean() < la_rows.mean()  # LA below the LV (far field)
        # sector tip at the top centre: the first rows are narrow, the cone widens downwards
        cone = img > 0
        assert cone[:4].sum() < cone[28:32].sum()
        assert lv_rows.min() < img.shape[0] // 2


def test_detect(nifti_root, mhd_root, tmp_path):
    assert detect_camus(nifti_root) == "camus-nifti"
    assert detect_camus(nifti_root / "database_nifti") == "camus-nifti"
    assert detect_camus(mhd_root) == "camus-mhd"
    assert detect_camus(tmp_path) is None
    nested = tmp_path / "download"
    nested.mkdir()
    (nested / "CAMUS_public").symlink_to(nifti_root, target_is_directory=True)
    assert detect_camus(nested) == "camus-nifti"
    with pytest.raises(UserError, match="no CAMUS data set"):
        read_camus(tmp_path / "nothing")


# ----------------------------------------------------------------------------------------------- splits
def test_rule_count():
    assert rule_count(450) == 50 and rule_count(250) == 50
    assert rule_count(249) == 49 and rule_count(20) == 4 and rule_count(3) == 1
    assert rule_count(1) == 0


def test_nifti_split_lists_and_first_n_rule(nifti_root):
    df = read_camus(nifti_root)
    split = df.drop_duplicates("patient").set_index("patient")["split"]
    listed = (nifti_root / "database_split" / "subgroup_testing.txt").read_text().split()
    assert sorted(split[split == "test"].index) == sorted(listed)
    rest = sorted(p for p in split.index if p not in listed)
    assert split[rest[0]] == "val" and (split[rest[1:]] == "train").all()  # 5 remaining -> a fifth is val
    two = read_camus(nifti_root, val_patients=2).drop_duplicates("patient").set_index("patient")["split"]
    assert list(two[rest]) == ["val", "val", "train", "train", "train"]


def test_nifti_without_split_lists_uses_last_patients(nifti_copy):
    shutil.rmtree(nifti_copy / "database_split")
    split = read_camus(nifti_copy).drop_duplicates("patient").set_index("patient")["split"]
    assert split["patient0006"] == "test" and (split == "test").sum() == 1
    assert split["patient0001"] == "val" and (split == "train").sum() == 4


def test_legacy_testing_folder_and_name_clash(mhd_root):
    df = read_camus(mhd_root)
    assert df["sample_id"].is_unique
    test = df[df["split"] == "test"]
    assert len(test) and test["patient"].str.startswith("testing-patient").all()
    assert test["image"].str.contains("/testing/").all()
    assert not df.loc[df["split"] != "test", "image"].str.contains("/testing/").any()
    # patient0001 exists in training/ and testing/: kept apart
    a = df[df["sample_id"] == "patient0001_2CH_ED_LV"].iloc[0]
    b = df[df["sample_id"] == "testing-patient0001_2CH_ED_LV"].iloc[0]
    assert a["image"] != b["image"] and a["patient"] != b["patient"] and a["stem"] == b["stem"]
    assert set(df.loc[df["split"] != "test", "split"]) == {"train", "val"}


def test_splits_file_override(mhd_root, tmp_path):
    f = tmp_path / "splits.csv"
    pd.DataFrame({"patient": ["patient0002", "testing-patient0001"], "split": ["test", "train"]}).to_csv(f, index=False)
    split = read_camus(mhd_root, splits=f).drop_duplicates("patient").set_index("patient")["split"]
    assert split["patient0002"] == "test" and split["testing-patient0001"] == "train"
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,split\npatient0001,training\n")
    with pytest.raises(UserError, match="train, val or test"):
        read_camus(mhd_root, splits=bad)
    cols = tmp_path / "cols.csv"
    cols.write_text("name,fold\npatient0001,train\n")
    with pytest.raises(UserError, match="patient,split"):
        read_split_file(cols)
    other = tmp_path / "other.csv"
    other.write_text("patient,split\npatient9999,train\n")
    with pytest.raises(UserError, match="none of the data set's patients"):
        read_camus(mhd_root, splits=other)


# ----------------------------------------------------------------------------------------------- Info cfg
def test_parse_info_cfg_keeps_extra_keys(tmp_path):
    p = tmp_path / "Info_2CH.cfg"
    p.write_text("ED: 1\nES: 13\nNbFrame: 13\nSex: F\nAge: 64\nImageQuality: Good\nLVef: 55.5\nComment: x y\n\n")
    info = parse_info_cfg(p)
    assert info == {"ED": 1, "ES": 13, "NbFrame": 13, "Sex": "F", "Age": 64, "ImageQuality": "Good",
                    "LVef": 55.5, "Comment": "x y"}


@pytest.mark.parametrize("text", ["ED: 1\nthis line has no colon\n", "ED: 1\nED: 2\n", ": 3\n"])
def test_parse_info_cfg_malformed(tmp_path, text):
    p = tmp_path / "Info_4CH.cfg"
    p.write_text(text)
    with pytest.raises(UserError, match="Info_4CH.cfg"):
        parse_info_cfg(p)


def test_missing_cfg_gives_empty_attributes(nifti_copy):
    (nifti_copy / "database_nifti" / "patient0002" / "Info_4CH.cfg").unlink()
    df = read_camus(nifti_copy)
    rows = df[(df["patient"] == "patient0002") & (df["view"] == "4CH")]
    assert len(rows) == 6
    assert (rows["sex"] == "").all() and rows["age"].isna().all() and (rows["quality"] == "").all()
    other = df[(df["patient"] == "patient0002") & (df["view"] == "2CH")]
    assert other["age"].notna().all()


def test_malformed_cfg_is_a_user_error_naming_the_file(nifti_copy):
    cfg = nifti_copy / "database_nifti" / "patient0003" / "Info_2CH.cfg"
    cfg.write_text("ED 1\n")
    with pytest.raises(UserError, match=r"patient0003/Info_2CH\.cfg: line 1"):
        read_camus(nifti_copy)


# ----------------------------------------------------------------------------------------------- check
def test_check_clean_data(nifti_root):
    df, problems = check_camus(nifti_root)
    assert problems == []
    assert len(df) == len(read_camus(nifti_root))
    assert (df["height"] == 64).all() and (df["width"] == 64).all()


def test_check_catches_broken_files(nifti_copy):
    pdir = nifti_copy / "database_nifti"
    truncated = pdir / "patient0001" / "patient0001_2CH_ED.nii.gz"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    wrong = pdir / "patient0002" / "patient0002_4CH_ES_gt.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((32, 40), np.uint8)), str(wrong))
    cfg = pdir / "patient0003" / "Info_2CH.cfg"
    cfg.write_text("".join(ln + "\n" for ln in cfg.read_text().splitlines() if not ln.startswith("Age")))

    df, problems = check_camus(nifti_copy)
    by_path = {p.path: p.reason for p in problems}
    assert len(problems) == 3, problems
    assert "truncated" in by_path[str(truncated)] and "image" in by_path[str(truncated)]
    assert "does not match image shape" in by_path[str(wrong)]
    assert by_path[str(cfg)] == "missing key(s) Age"
    assert all("\n" not in p.reason for p in problems)
    # broken images are dropped, the cfg problem keeps its samples
    assert len(df) == 6 * 12 - 2 * 3
    assert str(truncated.resolve()) not in set(df["image"])
    assert "patient0003_2CH_ED_LV" in set(df["sample_id"])


def test_check_labels_and_cfg_ranges(nifti_copy):
    pdir = nifti_copy / "database_nifti" / "patient0004"
    mask = pdir / "patient0004_2CH_ES_gt.nii.gz"
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
    arr[0, 0] = 7
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(mask))
    (pdir / "Info_4CH.cfg").write_text("ED: 1\nES: 40\nNbFrame: 12\nSex: X\nAge: 50\nImageQuality: Good\n")
    (pdir / "Info_2CH.cfg").unlink()
    _, problems = check_camus(nifti_copy)
    reasons = sorted(p.reason for p in problems)
    assert any(r == "labels outside 0..3: 7" for r in reasons)
    assert "ES=40 is outside 1..NbFrame=12" in reasons and "Sex must be M or F, got 'X'" in reasons
    assert any(r.startswith("missing Info cfg") for r in reasons)
