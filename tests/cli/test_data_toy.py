"""`echoseg data toy camus` and `echoseg data toy sdm-camus` end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from echoseg.cli import main
from echoseg.core.data.camus import read_camus
from echoseg.core.data.manifest import MANIFEST_COLUMNS, read_manifest
from echoseg.core.data.sdm_camus import read_sdm_camus


def test_toy_camus_nifti(tmp_path, capsys):
    out = tmp_path / "toy"
    rc = main(["data", "toy", "camus", "--out", str(out), "--patients", "3"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out == f"{out}\n"
    manifest = read_manifest(out)
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == MANIFEST_COLUMNS
    assert len(manifest) == 3 * 12 and (out / "database_nifti" / "patient0003").is_dir()
    assert (out / "database_split" / "subgroup_testing.txt").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "camus-nifti" and summary["images"] == 12
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    # the written data set reads back to the same manifest
    again = read_camus(out)
    assert list(again["sample_id"]) == list(manifest["sample_id"])


def test_toy_camus_mhd(tmp_path, capsys):
    out = tmp_path / "legacy"
    rc = main(["data", "toy", "camus", "--out", str(out), "--patients", "5", "--layout", "mhd", "--size", "48"])
    assert rc == 0, capsys.readouterr().err
    assert capsys.readouterr().out == f"{out}\n"
    manifest = pd.read_csv(out / "manifest.csv")
    assert (out / "training").is_dir() and (out / "testing").is_dir()
    assert manifest["patient"].str.startswith("testing-").any() and manifest["sample_id"].is_unique


@pytest.mark.parametrize("args", [["--layout", "dicom"], ["--patients", "0"], ["--size", "8"]])
def test_toy_camus_bad_option_is_exit_2_and_no_dir(tmp_path, capsys, args):
    out = tmp_path / "r"
    assert main(["data", "toy", "camus", "--out", str(out), *args]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.startswith("error:") and "\n" not in cap.err.strip()
    assert args[0] in cap.err
    assert not out.exists()


def test_toy_sdm_camus(tmp_path, capsys):
    out = tmp_path / "sdm"
    rc = main(["data", "toy", "sdm-camus", "--out", str(out), "--patients", "2", "--copies", "2", "--size", "48"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out == f"{out}\n"
    manifest = read_manifest(out)
    assert len(manifest) == 2 * 2 * 2 * 2 * 3
    assert set(manifest["label"]) == {1, 3, 4} and set(manifest["source"]) == {"synthetic"}
    assert (out / "2CH_ED" / "images" / "validation" / "patient0001_2CH_ED_validation_0.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "sdm-camus" and summary["images"] == 16
    again = read_sdm_camus(out)
    assert list(again["sample_id"]) == list(manifest["sample_id"])
    assert list(again["sex"]) == list(manifest["sex"])


def test_toy_sdm_camus_bad_copies(tmp_path, capsys):
    out = tmp_path / "sdm"
    assert main(["data", "toy", "sdm-camus", "--out", str(out), "--copies", "0"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "--copies" in cap.err and not out.exists()
