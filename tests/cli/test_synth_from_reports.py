"""The SynCXR chain from the command line: entities -> reports -> images -> curation -> pre-training corpus.

`synth reports` (template writer) feeds `synth generate --pipeline` (a tiny random Stable Diffusion built offline);
the run's manifest.csv is an image-report corpus that `pretrain --text report` and `curate` take directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import skewed_prompts_run
from synth_fixtures import build_tiny_sd

from echoseg.cli import main
from echoseg.core.data.imaging import load_image, load_mask
from echoseg.core.data.manifest import read_manifest
from echoseg.core.io import write_png


def _ok(argv: list[str], capsys) -> Path:
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.splitlines()
    assert len(lines) == 1 and cap.out == lines[0] + "\n"
    return Path(lines[0])


def _refused(argv: list[str], capsys, expected: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    entities = skewed_prompts_run(root / "prompts")
    assert main(["synth", "reports", "--entities", str(entities), "--count", "10", "--val-fraction", "0.3",
                 "--out", str(root / "reports")]) == 0
    build_tiny_sd(root / "sd")
    return root


def test_images_from_reports_form_a_pretraining_corpus(chain, tmp_path, capsys):
    reports = pd.read_csv(chain / "reports" / "reports.csv", dtype=str, keep_default_na=False)
    run = _ok(["synth", "generate", "--pipeline", str(chain / "sd"), "--prompts", str(chain / "reports" /
               "reports.csv"), "--steps", "2", "--batch-size", "5", "--device", "cpu", "--out", str(tmp_path / "g")],
              capsys)
    corpus = read_manifest(run)
    assert len(corpus) == len(reports) and (corpus["source"] == "synthetic").all()
    assert corpus["sample_id"].tolist() == [f"{r}_0" for r in reports["report_id"]]
    assert corpus["patient"].tolist() == reports["report_id"].tolist()
    for col in ("split", "entities", "view", "sex", "quality", "shape_LV"):
        assert corpus[col].astype(str).tolist() == reports[col].tolist(), col
    assert corpus["report"].tolist() == reports["text"].tolist()
    assert (corpus["prompt_seed"].astype(str) == reports["seed"]).all()  # the report's seed, kept apart
    assert set(corpus["split"]) == {"train", "val"} and (corpus["structure"] == "none").all()
    first = corpus.iloc[0]
    assert not load_mask(first["mask"]).any() and load_mask(first["mask"]).shape == load_image(first["image"]).shape
    raw = pd.read_csv(run / "manifest.csv")
    assert not any(Path(p).is_absolute() for p in (*raw["image"], *raw["mask"]))

    pre = _ok(["pretrain", "--config", "tiny", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
               "--data", str(run), "--out", str(tmp_path / "pre")], capsys)
    record = json.loads((pre / "run.json").read_text())
    assert record["status"] == "completed" and record["config"]["text"] == "report"
    data = json.loads((pre / "summary.json").read_text())["data"]
    assert data["train"]["pairs"] + data["val"]["pairs"] == len(reports)

    cur = _ok(["curate", str(run), "--encoder", "pixels", "--out", str(tmp_path / "cur")], capsys)
    summary = json.loads((cur / "summary.json").read_text())
    assert summary["kept"]["images"] + summary["rejected"]["images"] == len(reports)
    assert "mask_empty" not in set(pd.read_csv(cur / "rejected.csv")["check"])  # no structure annotated: no check
    _refused(["prompts", "build", str(run), "--out", str(tmp_path / "p")], capsys, "text-to-image run")
    assert not (tmp_path / "p").exists()


def test_regenerate_bad_from_the_command_line(chain, tmp_path, capsys):
    prompts = chain / "reports" / "reports.csv"
    base = ["synth", "generate", "--pipeline", str(chain / "sd"), "--prompts", str(prompts), "--steps", "2",
            "--batch-size", "5", "--device", "cpu"]
    plain = _ok([*base, "--out", str(tmp_path / "plain")], capsys)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("prompt00000_000.png", "prompt00004_000.png"):
        shutil.copyfile(plain / "images" / name, bad / name)
    gated = [*base, "--regenerate-bad", str(bad), "--bad-sim", "0.5", "--max-tries", "3", "--encoder", "pixels:8"]
    run = _ok([*gated, "--out", str(tmp_path / "g")], capsys)
    summary = json.loads((run / "summary.json").read_text())["regenerate"]
    assert summary["checked"] == 10 and summary["regenerated"] + summary["given_up"] >= 2
    records = pd.read_csv(run / "regenerate.csv")
    requeried = records[records["tries"] > 1]
    assert {"prompt00000_000", "prompt00004_000"} <= set(requeried["key"])
    kept = records[~records["given_up"]]
    assert (kept["bad_sim"] <= 0.5).all() and np.all([json.loads(s)[-1] <= 0.5 for s in kept["sims"]])
    corpus = read_manifest(run)
    assert set(corpus["stem"]) == set(kept["key"]) and (corpus["bad_sim"] <= 0.5).all()
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["regenerate_bad"] == str(bad) and "regenerate_bad" in record["inputs"]
    # the same command resumed changes nothing; a different threshold is refused
    assert _ok([*gated, "--resume", str(run)], capsys) == run
    assert pd.read_csv(run / "regenerate.csv").equals(records)
    _refused([*base, "--regenerate-bad", str(bad), "--bad-sim", "0.9", "--max-tries", "3", "--encoder", "pixels:8",
              "--resume", str(run)], capsys, "--bad-sim 0.9 differs")


@pytest.mark.parametrize(("extra", "expected"), [
    (["--encoder", "pixels"], "--encoder needs --regenerate-bad"),
    (["--bad-sim", "0.2"], "--bad-sim needs --regenerate-bad"),
    (["--regenerate-bad", "BAD"], "needs --encoder"),
    (["--regenerate-bad", "BAD", "--encoder", "segmenter"], "--encoder 'segmenter'"),
    (["--regenerate-bad", "MISSING", "--encoder", "pixels"], "not found"),
    (["--regenerate-bad", "BAD", "--encoder", "pixels", "--max-tries", "0"], "--max-tries must be >= 1"),
    (["--regenerate-bad", "BAD", "--encoder", "pixels", "--bad-sim", "1.5"], "--bad-sim"),
])
def test_bad_regenerate_options_exit_2_and_leave_nothing(chain, tmp_path, capsys, extra, expected):
    bad = tmp_path / "bad"
    bad.mkdir()
    write_png(bad / "x.png", np.full((16, 16), 128, np.uint8))
    extra = [str(bad) if e == "BAD" else str(tmp_path / "missing") if e == "MISSING" else e for e in extra]
    _refused(["synth", "generate", "--pipeline", str(chain / "sd"), "--prompts", str(chain / "reports" /
              "reports.csv"), "--device", "cpu", *extra, "--out", str(tmp_path / "g")], capsys, expected)
    assert not (tmp_path / "g").exists()
