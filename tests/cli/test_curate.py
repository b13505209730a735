"""`echoseg curate` from the command line, with a real (tiny, briefly trained) U-Net segmenter."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from echoseg.cli import main


def _ok(args, capsys) -> Path:
    capsys.readouterr()
    rc = main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.splitlines()
    assert len(lines) == 1 and cap.out.endswith("\n")
    return Path(lines[0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-curate")
    assert main(["data", "toy", "sdm-camus", "--patients", "2", "--copies", "1", "--size", "32",
                 "--out", str(root / "syn")]) == 0
    assert main(["data", "toy", "sdm-camus", "--patients", "1", "--copies", "1", "--size", "32", "--seed", "1",
                 "--out", str(root / "real")]) == 0
    assert main(["data", "toy", "camus", "--patients", "2", "--size", "32", "--out", str(root / "camus")]) == 0
    assert main(["train", "--model", "unet", "--config", "tiny", "--input-size", "16", "--eval-size", "32",
                 "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--train-data", str(root / "syn"),
                 "--val-data", str(root / "syn"), "--test-data", str(root / "camus"), "--out", str(root / "seg")]) == 0
    return root


def test_curate_with_trained_segmenter(runs, tmp_path, capsys):
    bad = runs / "real" / "2CH_ED"  # an SDM CAMUS folder as the known-bad set
    out = _ok(["curate", str(runs / "syn"), "--segmenter", str(runs / "seg"), "--min-dice", "0",
               "--bad", str(bad), "--bad-sim", "0.9", "--real", str(runs / "real"), "--balance", "view,phase",
               "--tau-max", "2", "--device", "cpu", "--out", str(tmp_path / "c")], capsys)
    assert out == tmp_path / "c"
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["command"] == "curate"
    assert record["config"]["balance"] == ["view", "phase"] and "real" in record["inputs"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"] == {"images": 8, "samples": 24}
    assert summary["kept"]["images"] + summary["rejected"]["images"] == 8
    for name in ("sanity", "agreement", "bad", "dup", "balance"):
        assert summary["filters"][name]["enabled"], name
    assert summary["encoder"] == "segmenter:unet" and summary["bad_references"] == 1
    assert summary["scores"]["dice_min"]["n"] == 8
    kept = pd.read_csv(out / "manifest.csv")
    assert list(kept.columns) == list(pd.read_csv(runs / "syn" / "manifest.csv").columns)
    assert len(kept) == 3 * summary["kept"]["images"]
    rejected = pd.read_csv(out / "rejected.csv")
    assert {"sample", "filter", "score", "threshold"} <= set(rejected.columns)
    assert (out / "figures" / "kept.png").is_file() and (out / "figures" / "hist_dice_min.png").is_file()
    # the curated run feeds `prompts build` like any data run
    assert 1 <= summary["kept"]["images"] <= 4  # caps of 2 per view and per phase allow at most 4 images
    prompts = _ok(["prompts", "build", str(out), "--out", str(tmp_path / "p")], capsys)
    assert len(pd.read_csv(prompts / "manifest.csv")) == len(kept)


def test_curate_bad_input(runs, tmp_path, capsys):
    syn = str(runs / "syn")
    cases = [
        ([str(tmp_path / "missing")], "not found"),
        ([syn, "--balance", "view"], "--tau-max"),
        ([syn, "--real", str(runs / "real")], "--segmenter"),
        ([syn, "--segmenter", str(runs / "syn")], "--segmenter"),
        ([syn, "--encoder", "pixels", "--bad", str(tmp_path / "nope")], "--bad"),
        ([syn, "--min-dice", "2"], "--min-dice"),
        ([syn, "--skip", "agreement,nope"], "--skip"),
    ]
    for args, needle in cases:
        capsys.readouterr()
        assert main(["curate", *args, "--out", str(tmp_path / "x")]) == 2, args
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (args, err)
        assert not (tmp_path / "x").exists()


def test_curate_pixels_only_skip_and_help(runs, tmp_path, capsys):
    out = _ok(["curate", str(runs / "syn"), "--encoder", "pixels", "--real", str(runs / "real"), "--skip",
               "sanity", "--device", "cpu", "--out", str(tmp_path / "p")], capsys)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["filters"]["sanity"]["enabled"] is False and summary["filters"]["dup"]["enabled"]
    assert summary["kept"]["images"] == 8  # different patients are no near-copies in pixel space
    assert main(["curate", "--help"]) == 0
    assert "SYNTH_RUN" in capsys.readouterr().out.upper()
