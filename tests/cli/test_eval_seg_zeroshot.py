"""`eval seg --model ... --weights ...`: pre-trained VLSM weights scored zero-shot, like a trained run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from echoseg.cli import main
from echoseg.core.models import build_model
from echoseg.core.models.cris_weights import to_original

EVAL = ["--eval-size", "32", "--input-size", "32", "--prompt", "p2", "--device", "cpu"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zs")
    assert main(["data", "toy", "camus", "--patients", "3", "--size", "48", "--out", str(root / "camus")]) == 0
    assert main(["prompts", "build", str(root / "camus"), "--out", str(root / "real")]) == 0
    return root / "real"


def _run(args, capsys) -> Path:
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    return Path(capsys.readouterr().out.strip())


def test_clipseg_folder_and_original_cris_checkpoint_score_like_trained_runs(prompts, tmp_path, capsys):
    torch.manual_seed(0)
    clipseg = build_model("clipseg", "tiny", input_size=32)
    clipseg.hf.save_pretrained(tmp_path / "clipseg")  # the layout of CIDAS/clipseg-rd64-refined
    clipseg.tokenizer.save_pretrained(tmp_path / "clipseg")
    cris = build_model("cris", "tiny")
    torch.save({"epoch": 1, "state_dict": to_original(cris.state_dict())}, tmp_path / "cris.pth")  # CRIS release
    runs = []
    for model, weights in (("clipseg", tmp_path / "clipseg"), ("cris", tmp_path / "cris.pth")):
        out = _run(["eval", "seg", "--model", model, "--model-config", "tiny", "--weights", str(weights),
                    "--data", str(prompts), *EVAL, "--out", str(tmp_path / f"eval-{model}")], capsys)
        per = pd.read_csv(out / "per_sample.csv")
        assert list(per.columns[:7]) == ["sample_id", "image", "structure", "prompt", "dice", "iou", "hd95"]
        assert (per["prompt"] == "p2").all() and len(per) > 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["zero_shot"] and summary["model"] == model and summary["weights"] == str(weights)
        runs.append(out)
    report = _run(["report", *map(str, runs), "--out", str(tmp_path / "rep")], capsys)
    rows = json.loads((report / "summary.json").read_text())["segmentation"]
    assert {(r["model"], r["strategy"]) for r in rows} == {("clipseg", "zero-shot"), ("cris", "zero-shot")}


@pytest.mark.parametrize(("args", "needle"), [
    ([], "give --run"),
    (["--model", "unet2", "--weights", "x"], "not a segmentation model"),
    (["--model", "clipseg", "--weights", "/no/such/folder"], "--weights"),
    (["--model", "clipseg", "--run", "somewhere"], "not both"),
    (["--weights", "x", "--run", "somewhere"], "go with --model"),
])
def test_bad_zero_shot_options_exit_2_with_nothing_written(prompts, tmp_path, capsys, args, needle):
    capsys.readouterr()
    assert main(["eval", "seg", "--data", str(prompts), *args, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert not (tmp_path / "bad").exists()
