"""`echoseg data check`: layout detection, the report files, and each kind of bad file -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from echoseg.cli import main


def _toy(kind: str, out: Path, *args: str) -> Path:
    assert main(["data", "toy", kind, "--out", str(out), *args]) == 0
    return out


@pytest.fixture(scope="module")
def camus(tmp_path_factory) -> Path:
    return _toy("camus", tmp_path_factory.mktemp("d") / "camus", "--patients", "3", "--size", "64")


@pytest.fixture(scope="module")
def echonet(tmp_path_factory) -> Path:
    return _toy("echonet", tmp_path_factory.mktemp("d") / "echonet", "--videos", "3", "--frames", "20")


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _check(root: Path, out: Path, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["data", "check", str(root), "--out", str(out)])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_clean_sets_pass(camus, echonet, tmp_path, capsys):
    for root, layout, listing in ((camus, "camus-nifti", "manifest.csv"), (echonet, "echonet", "videos.csv")):
        out = tmp_path / layout
        rc, stdout, err = _check(root, out, capsys)
        assert rc == 0, err
        assert stdout == f"{out}\n"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["layout"] == layout and summary["problems"] == 0
        assert (out / listing).is_file() and (out / "problems.csv").is_file()
        assert json.loads((out / "run.json").read_text())["status"] == "completed"
    assert json.loads((tmp_path / "camus-nifti" / "summary.json").read_text())["images"] == 12


def _nifti(root: Path, name: str) -> Path:
    return next(root.glob(f"database_nifti/*/{name}"))


@pytest.mark.parametrize("defect", ["truncated", "mask_shape", "no_age"])
def test_camus_defects(camus, tmp_path, capsys, defect):
    root = _copy(camus, tmp_path / "bad")
    if defect == "truncated":
        path = _nifti(root, "patient0001_2CH_ED.nii.gz")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        needle = "patient0001_2CH_ED.nii.gz"
    elif defect == "mask_shape":
        import numpy as np
        import SimpleITK as sitk

        path = _nifti(root, "patient0002_4CH_ES_gt.nii.gz")
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((10, 12), np.uint8)), str(path))
        needle = "patient0002_4CH_ES"
    else:
        path = next(root.glob("database_nifti/patient0003/Info_2CH.cfg"))
        path.write_text("\n".join(ln for ln in path.read_text().splitlines() if not ln.startswith("Age")) + "\n")
        needle = "Age"
    out = tmp_path / "report"
    rc, stdout, err = _check(root, out, capsys)
    assert rc == 2 and stdout == ""
    problems = pd.read_csv(out / "problems.csv")
    assert len(problems) >= 1
    text = " ".join(problems["path"].astype(str) + " " + problems["reason"].astype(str))
    assert needle in text
    assert "\n" not in "".join(problems["reason"].astype(str))
    assert err.strip().splitlines()[-1].startswith("error:")
    assert json.loads((out / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("defect", ["no_split", "bad_avi"])
def test_echonet_defects(echonet, tmp_path, capsys, defect):
    root = _copy(echonet, tmp_path / "bad")
    if defect == "no_split":
        fl = pd.read_csv(root / "FileList.csv").drop(columns=["Split"])
        fl.to_csv(root / "FileList.csv", index=False)
        needle = "Split"
    else:
        avi = sorted((root / "Videos").glob("*.avi"))[0]
        avi.write_bytes(b"RIFF\x00\x00garbage" * 10)
        needle = avi.stem
    out = tmp_path / "report"
    rc, stdout, err = _check(root, out, capsys)
    assert rc == 2 and stdout == ""
    problems = pd.read_csv(out / "problems.csv")
    assert needle in " ".join(problems["path"].astype(str) + " " + problems["reason"].astype(str))


def test_unknown_layout_and_missing_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, stdout, err = _check(tmp_path / "empty", tmp_path / "r1", capsys)
    assert rc == 2 and "no supported layout" in err and not (tmp_path / "r1").exists()
    rc, stdout, err = _check(tmp_path / "missing", tmp_path / "r2", capsys)
    assert rc == 2 and "not found" in err and not (tmp_path / "r2").exists()


def test_dataset_mismatch(camus, tmp_path, capsys):
    capsys.readouterr()
    rc = main(["data", "check", str(camus), "--dataset", "echonet", "--out", str(tmp_path / "r")])
    assert rc == 2 and "camus-nifti" in capsys.readouterr().err
