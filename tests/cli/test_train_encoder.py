"""`echoseg train --model unet --encoder ...` and `--train-fraction` end to end on toy data (SynCXR's protocol)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from echoseg.cli import main

FAST = ["--model", "unet", "--config", "tiny", "--input-size", "32", "--eval-size", "32", "--epochs", "1",
        "--batch-size", "8", "--device", "cpu"]


def _run(args: list[str], capsys) -> Path:
    capsys.readouterr()
    rc = main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return Path(cap.out.splitlines()[-1])


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Path, Path]:
    """A prompts run of 4 toy patients and a tiny ConVIRT pretrain run (resnet_tiny) on it."""
    root = tmp_path_factory.mktemp("enc")
    assert main(["data", "toy", "camus", "--patients", "4", "--size", "48", "--out", str(root / "camus")]) == 0
    assert main(["prompts", "build", str(root / "camus"), "--out", str(root / "prompts")]) == 0
    assert main(["pretrain", "--method", "convirt", "--config", "tiny", "--data", str(root / "prompts"),
                 "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--out", str(root / "pt")]) == 0
    return root / "prompts", root / "pt"


def _encoder(path: Path) -> dict:
    return {k[len("encoder."):]: v for k, v in load_file(str(path)).items() if k.startswith("encoder.")}


def test_frozen_pretrained_encoder_on_half_the_patients_resume_eval_and_init_from(toy, tmp_path, capsys):
    prompts, pretrain = toy
    pt = tmp_path / "pt"
    shutil.copytree(pretrain, pt)  # removed below: later steps must not need it
    out = _run(["train", *FAST, "--encoder", f"vlp:{pt}", "--freeze-encoders", "--train-fraction", "0.5",
                "--data", str(prompts), "--out", str(tmp_path / "seg")], capsys)
    assert len(pd.read_csv(out / "per_sample.csv")) == 12  # the whole test split
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["encoder"] == f"vlp:{pt}" and record["config"]["train_fraction"] == 0.5
    pretrain_id = json.loads((pt / "run.json").read_text())["run_id"]
    assert record["inputs"]["encoder"]["path"] == str(pt.resolve())
    assert record["inputs"]["encoder"]["run_id"] == pretrain_id
    summary = json.loads((out / "summary.json").read_text())
    assert summary["encoder"]["source"] == "vlp" and summary["encoder"]["pretrain_run_id"] == pretrain_id
    subset = summary["data"]["train"]["subset"]
    assert subset["fraction"] == 0.5 and subset["patients"] == 1 and subset["of_patients"] == 2
    assert summary["data"]["train"]["samples"] == subset["rows"] < subset["of_rows"]
    backbone = load_file(str(pt / "encoders" / "image" / "model.safetensors"))
    trained = _encoder(out / "checkpoints" / "best.safetensors")
    assert set(trained) == set(backbone)  # weights, BatchNorm statistics and counters: all unchanged
    assert all((trained[k] == backbone[k]).all() for k in backbone)

    shutil.rmtree(pt)
    assert _run(["train", "--resume", str(out), "--epochs", "2"], capsys) == out
    again = json.loads((out / "summary.json").read_text())
    assert again["epochs_run"] == 2 and again["data"]["train"]["subset"] == subset
    last = _encoder(out / "checkpoints" / "last.safetensors")
    assert all((last[k] == backbone[k]).all() for k in backbone)

    ev = _run(["eval", "seg", "--run", str(out), "--data", str(prompts), "--eval-size", "32",
               "--out", str(tmp_path / "eval")], capsys)
    assert len(pd.read_csv(ev / "per_sample.csv")) == 12
    ft = _run(["train", *FAST, "--encoder", "random", "--data", str(prompts), "--init-from", str(out),
               "--out", str(tmp_path / "ft")], capsys)
    assert json.loads((ft / "run.json").read_text())["status"] == "completed"
    assert json.loads((ft / "summary.json").read_text())["data"]["train"]["subset"]["fraction"] == 1.0
    assert main(["train", *FAST, "--data", str(prompts), "--init-from", str(out), "--out",
                 str(tmp_path / "plain")]) == 2  # a plain U-Net cannot start from the ResNet U-Net
    assert "resnet_tiny" in capsys.readouterr().err and not (tmp_path / "plain").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "clipseg", "--encoder", "random"], "--encoder: only the U-Net"),
    (["--encoder", "vlp:/no/such/run"], "not a finished pretrain run"),
    (["--encoder", "vit"], "not a ResNet"),
    (["--encoder", "resnet50"], "expected vlp:PRETRAIN_RUN"),
    (["--train-fraction", "0"], "--train-fraction must be in (0, 1]"),
])
def test_bad_encoder_or_fraction_exits_2_and_writes_nothing(toy, tmp_path, capsys, args, needle):
    prompts, pretrain = toy
    if "vit" in args:  # a pretrain run whose image encoder is a ViT
        vit = tmp_path / "vit"
        shutil.copytree(pretrain / "encoders", vit / "encoders")
        info = json.loads((vit / "encoders" / "image" / "config.json").read_text())
        (vit / "encoders" / "image" / "config.json").write_text(json.dumps({**info, "architecture": "vit_tiny"}))
        args = ["--encoder", f"vlp:{vit}"]
    capsys.readouterr()
    assert main(["train", *FAST, *args, "--data", str(prompts), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
