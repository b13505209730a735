"""`echoseg prompts build` smoke tests: stdout discipline, artefacts, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from echoseg.cli import main
from echoseg.core.prompts.build import schema_problems


@pytest.fixture(scope="module")
def camus_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "camus"
    assert main(["data", "toy", "camus", "--patients", "4", "--size", "64", "--out", str(out)]) == 0
    return out


def test_build_from_a_data_run(camus_run, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "p"
    assert main(["prompts", "build", str(camus_run), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert cap.out == f"{out}\n"
    assert "Attributes per split" in cap.err
    for split in ("train", "val", "test"):
        assert schema_problems(json.loads((out / "prompts" / f"{split}.json").read_text())) == []
    m = pd.read_csv(out / "manifest.csv")
    assert len(m) == 4 * 4 * 3 and {"p0", "p7", "shape", "stem"} <= set(m.columns)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "camus" and summary["samples"] == 48 and summary["incomplete_samples"] == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["config"]["shape"] == "geometric"
    attrs = pd.read_csv(out / "attributes.csv")
    assert set(attrs["attribute"]) >= {"view", "phase", "sex", "age", "quality", "shape LV"}


def test_build_writes_image_reports(camus_run, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["prompts", "build", str(camus_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    m = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert "report" in m.columns and (m["report"] != "").all()
    assert m.groupby("image")["report"].nunique().eq(1).all()
    reports = pd.read_csv(out / "reports.csv", keep_default_na=False)
    assert list(reports.columns) == ["image", "patient", "split", "report"]
    assert len(reports) == m["image"].nunique() == 16 and set(reports["report"]) == set(m["report"])
    assert reports["report"].str.startswith("Apical ").all() and not reports["report"].str.contains("nan").any()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reports"] == 16


def test_grammatical_style_and_layout_folder(camus_run, tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["prompts", "build", str(camus_run / "database_nifti"), "--style", "grammatical",
                 "--dataset", "camus", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    m = pd.read_csv(out / "manifest.csv")
    assert m["p5"].str.contains(r" of an? [a-z-]+-year-old (?:male|female)\.$").all()
    assert not m["p5"].str.contains(r" of a (?:eight|eleven|eighteen|eighty)").any()


@pytest.mark.parametrize(("args", "needle"), [
    (["--shape", "magic"], "--shape"),
    (["--style", "poetic"], "--style"),
    (["--dataset", "echonet"], "--dataset"),
    (["--shape", "vqa"], "--vqa-model"),
    (["--splits", "/no/such/file.csv"], "--splits"),
])
def test_bad_options_exit_2_and_leave_nothing(camus_run, tmp_path, capsys, args, needle):
    out = tmp_path / "bad"
    assert main(["prompts", "build", str(camus_run), *args, "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and needle in cap.err and "\n" not in cap.err.strip()
    assert not out.exists()


def test_missing_vqa_weights_is_exit_2(camus_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "v"
    assert main(["prompts", "build", str(camus_run), "--shape", "vqa", "--vqa-model", "nobody/no-such-model-xyz",
                 "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "nobody/no-such-model-xyz" in cap.err and "--allow-download" in cap.err
    assert not out.exists()


def test_missing_metadata_warns_and_strict_refuses(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["data", "toy", "camus", "--patients", "3", "--size", "64", "--out", str(data)]) == 0
    (data / "database_nifti" / "patient0001" / "Info_2CH.cfg").unlink()
    (data / "manifest.csv").unlink()  # read the layout again, now without that cfg
    capsys.readouterr()
    assert main(["prompts", "build", str(data), "--out", str(tmp_path / "ok")]) == 0
    cap = capsys.readouterr()
    assert cap.out == f"{tmp_path / 'ok'}\n" and "6 sample(s) have empty prompts" in cap.err
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["missing_attributes"]["sex"] == 6 and summary["empty_prompts"]["p4"] == 6
    assert main(["prompts", "build", str(data), "--strict", "--out", str(tmp_path / "strict")]) == 2
    cap = capsys.readouterr()
    last = cap.err.strip().splitlines()[-1]
    assert cap.out == "" and last.startswith("error:") and "--strict" in last and "sex: 6" in last
    assert not (tmp_path / "strict").exists()


def test_help_documents_the_shape_rule(capsys):
    assert main(["prompts", "build", "--help"]) == 0
    text = capsys.readouterr().out
    assert "minimum enclosing triangle" in text and "Example" in text
    assert "reports.csv" in text and "report" in text


def test_sdm_camus_run(tmp_path, capsys):
    data = tmp_path / "sdm"
    assert main(["data", "toy", "sdm-camus", "--patients", "3", "--copies", "1", "--size", "64",
                 "--out", str(data)]) == 0
    capsys.readouterr()
    out = tmp_path / "p"
    assert main(["prompts", "build", str(data), "--dataset", "sdm-camus", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    recs = json.loads((out / "prompts" / "train.json").read_text())
    assert recs and schema_problems(recs, "sdm-camus") == []
    assert all(list(r["prompts"]) == [f"p{k}" for k in range(7)] for r in recs)
    assert all(" shape in " in r["prompts"]["p6"][0] and "quality" not in r["prompts"]["p6"][0] for r in recs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "sdm-camus" and summary["incomplete_samples"] == 0
    assert main(["prompts", "build", str(data), "--dataset", "camus", "--out", str(tmp_path / "x")]) == 2
    assert "--dataset camus" in capsys.readouterr().err


def test_a_manifest_with_no_rows_is_exit_2(camus_run, tmp_path, capsys):
    """A curation that kept nothing leaves a header-only manifest: a clear error, not a mislabelled data set."""
    empty = tmp_path / "curated"
    empty.mkdir()
    pd.read_csv(camus_run / "manifest.csv").head(0).to_csv(empty / "manifest.csv", index=False)
    out = tmp_path / "p"
    assert main(["prompts", "build", str(empty), "--dataset", "sdm-camus", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no samples" in err and "\n" not in err
    assert not out.exists()
