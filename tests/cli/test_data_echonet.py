"""`echoseg data toy echonet` and `echoseg data import-dicom`."""

from __future__ import annotations

import json

import pytest

from echoseg.cli import main
from echoseg.core.data.echonet import read_echonet


def _dicom(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available")
    return path


def test_toy_echonet(tmp_path, capsys):
    out = tmp_path / "toy"
    rc = main(["data", "toy", "echonet", "--videos", "3", "--frames", "20", "--size", "48", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out == f"{out}\n"
    df = read_echonet(out)
    assert len(df) == 3 and df["traced"].all() and df["NumberOfFrames"].eq(20).all()
    assert (out / "toy_truth.csv").is_file() and len(list((out / "Masks").glob("*.npz"))) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 3 and sum(summary["splits"].values()) == 3
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


def test_toy_echonet_bad_frames_is_exit_2(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["data", "toy", "echonet", "--frames", "4", "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "--frames" in cap.err and not out.exists()


def test_import_dicom(tmp_path, capsys):
    out = tmp_path / "imp"
    rc = main(["data", "import-dicom", _dicom("examples_ybr_color.dcm"), _dicom("OBXXXX1A_2frame.dcm"),
               "--size", "32", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out == f"{out}\n"
    df = read_echonet(out)
    assert list(df["Split"]) == ["TEST", "TEST"] and df["FrameHeight"].eq(32).all()
    assert "FPS=50" in cap.err  # the palette file has no frame rate
    assert json.loads((out / "summary.json").read_text())["frames"] == 32


def test_import_dicom_missing_file_is_exit_2_no_run(tmp_path, capsys):
    out = tmp_path / "imp"
    rc = main(["data", "import-dicom", str(tmp_path / "nope.dcm"), "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == ""
    assert "nope.dcm" in cap.err and "\n" not in cap.err.strip()
    assert not out.exists()


def test_import_non_dicom_is_exit_2_no_run(tmp_path, capsys):
    text = tmp_path / "a.dcm"
    text.write_text("plain text, not DICOM")
    out = tmp_path / "imp"
    rc = main(["data", "import-dicom", str(text), "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == "" and "a.dcm: not a DICOM file" in cap.err
    assert not out.exists()
