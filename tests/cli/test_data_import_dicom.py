"""`echoseg data import-dicom`: frame-rate sources, --crop region, modality and burned-in refusals, no PHI in the run
(variants of pydicom's real cardiac cine, edited with pydicom)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dicom_variants import testdata as _testdata
from dicom_variants import variant

from echoseg.cli import main


def _variant(path, **kwargs) -> str:
    """The edited cine's path as a command-line argument."""
    return str(variant(path, **kwargs))


def _run(args, capsys):
    rc = main(["data", "import-dicom", *args])
    return rc, capsys.readouterr()


def test_frame_rate_source_in_sources_and_summary(tmp_path, capsys):
    ftv = _variant(tmp_path / "ftv.dcm", drop=("FrameTime",), FrameTimeVector=["0"] + ["57.97"] * 29)
    rate = _variant(tmp_path / "rate.dcm", drop=("FrameTime",), CineRate=25)
    out = tmp_path / "imp"
    rc, cap = _run([ftv, rate, _testdata("examples_ybr_color.dcm"), "--size", "32", "--out", str(out)], capsys)
    assert rc == 0, cap.err
    fl = pd.read_csv(out / "FileList.csv")
    assert fl["FPS"].tolist() == pytest.approx([17.25, 25.0, 30.0], rel=1e-3)  # not 50: aFD in ms is right
    assert pd.read_csv(out / "dicom_sources.csv")["fps_source"].tolist() == ["FrameTimeVector", "CineRate",
                                                                           "FrameTime"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fps_sources"] == {"FrameTimeVector": 1, "CineRate": 1, "FrameTime": 1}
    assert summary["videos"] == 3 and summary["frames"] == 90 and summary["crop"] == "none"


def test_burned_in_annotation_is_refused_unless_cropped_or_allowed(tmp_path, capsys):
    burned = _variant(tmp_path / "burned.dcm", burn=True, region=(40, 20, 279, 219), BurnedInAnnotation="YES")
    out = tmp_path / "imp"
    rc, cap = _run([burned, "--out", str(out)], capsys)
    assert rc == 2 and cap.out == "" and not out.exists()
    assert f"{burned}: BurnedInAnnotation is YES" in cap.err and len(cap.err.strip().splitlines()) == 1
    rc, cap = _run([burned, "--crop", "region", "--size", "60", "--out", str(out)], capsys)
    assert rc == 0, cap.err
    sources = pd.read_csv(out / "dicom_sources.csv")
    assert sources.loc[0, "crop_y0"] == 20 and sources.loc[0, "region_units_y"] == "cm"
    assert json.loads((out / "summary.json").read_text())["crop"] == "region"
    rc, cap = _run([burned, "--allow-burned-in", "--size", "32", "--out", str(tmp_path / "allowed")], capsys)
    assert rc == 0, cap.err
    rc, cap = _run([burned, "--crop", "corner", "--out", str(tmp_path / "bad")], capsys)
    assert rc == 2 and "--crop must be one of none, region" in cap.err


def test_ct_and_mr_are_refused_unless_any_modality(tmp_path, capsys):
    ct, mr = _testdata("CT_small.dcm"), _testdata("MR_small.dcm")
    rc, cap = _run([_testdata("examples_ybr_color.dcm"), ct, "--out", str(tmp_path / "a")], capsys)
    assert rc == 2 and f"{ct}: Modality is CT, not US" in cap.err and not (tmp_path / "a").exists()
    rc, cap = _run([ct, mr, "--any-modality", "--size", "32", "--out", str(tmp_path / "b")], capsys)
    assert rc == 0, cap.err
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["modalities"] == {"CT": 1, "MR": 1}


def test_no_patient_data_and_no_source_path_anywhere_in_the_run(tmp_path, capsys):
    src = tmp_path / "phi-src"
    src.mkdir()
    phi = {"PatientName": "Zyxwvut^Qorstuv", "PatientID": "PID987654321", "PatientBirthDate": "19230417"}
    named = _variant(src / "Zyxwvut_PID987654321_19230417.dcm", drop=("FrameTime",),
                     FrameTimeVector=["0"] + ["57.97"] * 29, **phi)
    plain = _variant(src / "clip7.dcm", **phi)
    out = tmp_path / "run"
    rc, cap = _run([named, plain, "--size", "32", "--out", str(out)], capsys)
    assert rc == 0, cap.err
    names = pd.read_csv(out / "FileList.csv")["FileName"].tolist()
    assert names[0].startswith("dicom_") and names[1] == "clip7"
    record = json.loads((out / "run.json").read_text())
    assert [a for a in record["argv"] if a.startswith("sha256:")] == [
        f"sha256:{h}" for h in pd.read_csv(out / "dicom_sources.csv")["source_sha256"]]
    needles = [*phi.values(), "Zyxwvut", "Qorstuv", str(src), "phi-src", named, plain]
    for f in out.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not [n for n in needles if n.encode() in data], f
