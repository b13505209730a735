"""`echoseg models convert-cris`."""

from __future__ import annotations

import json

import torch

from echoseg.cli import main
from echoseg.core.models import build_model
from echoseg.core.models.cris_weights import to_original


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("cris", "tiny").eval()
    path = tmp_path / "cris_tiny.pth"
    torch.save({"epoch": 1, "state_dict": to_original(model.state_dict())}, path)
    return model, path


def test_convert_cris_writes_a_loadable_run(tmp_path, capsys):
    from echoseg.core.models.artefacts import load_trained_model

    model, ckpt = _checkpoint(tmp_path)
    out = tmp_path / "converted"
    rc = main(["models", "convert-cris", str(ckpt), "--arch", "tiny", "--input-size", "64", "--word-len", "12",
               "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out == f"{out}\n"
    assert (out / "checkpoints" / "best.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == "tiny" and summary["word_len"] == 12
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    loaded, info = load_trained_model(out)
    assert info["spec"]["word_len"] == 12 and info["spec"]["input_size"] == 64
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x, ["left ventricle"]), loaded.eval()(x, ["left ventricle"]), atol=1e-5)


def test_convert_cris_rejects_clip_weights_before_writing(tmp_path, capsys):
    from echoseg.core.models.cris import build_clip

    clip_file = tmp_path / "RN_tiny.pt"
    torch.save(build_clip(build_model("cris", "tiny").spec()).state_dict(), clip_file)
    out = tmp_path / "r"
    assert main(["models", "convert-cris", str(clip_file), "--arch", "tiny", "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "not a CRIS checkpoint" in cap.err and "\n" not in cap.err.strip()
    assert not out.exists()


def test_convert_cris_bad_inputs(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path)
    assert main(["models", "convert-cris", str(tmp_path / "none.pth")]) == 2
    assert "CHECKPOINT not found" in capsys.readouterr().err
    assert main(["models", "convert-cris", str(ckpt), "--arch", "vit"]) == 2
    assert "--arch" in capsys.readouterr().err
    # auto detection knows RN50/RN101 only; the tiny ResNet is neither
    assert main(["models", "convert-cris", str(ckpt), "--out", str(tmp_path / "x")]) == 2
    assert "neither RN50" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
