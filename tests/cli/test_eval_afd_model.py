"""`eval afd` and `eval echoclip` with model-driven masks (--run, --teacher) and with the toy's true masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from echoseg.cli import main
from echoseg.core.data.toy.echonet import toy_lv_masks, write_toy_echonet

FAST = ["--config", "tiny", "--input-size", "16", "--eval-size", "32", "--epochs", "1", "--batch-size", "8",
        "--device", "cpu"]


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Toy EchoNet videos and a tiny unet run trained by the engine on toy CAMUS."""
    root = tmp_path_factory.mktemp("afd-model")
    write_toy_echonet(root / "echonet", videos=4, frames=24, size=48, seed=3)
    assert main(["data", "toy", "camus", "--patients", "3", "--size", "48", "--out", str(root / "camus")]) == 0
    assert main(["prompts", "build", str(root / "camus"), "--out", str(root / "real")]) == 0
    assert main(["train", "--model", "unet", *FAST, "--data", str(root / "real"), "--prompt", "p1",
                 "--out", str(root / "unet")]) == 0
    return {"data": root / "echonet", "run": root / "unet"}


def test_afd_with_a_trained_run_end_to_end(setup, tmp_path, capsys):
    out = tmp_path / "afd"
    rc, stdout, err = run_cli(capsys, ["eval", "afd", "--data", str(setup["data"]), "--run", str(setup["run"]),
                                       "--split", "all", "--save-masks", "--batch-size", "7", "--device", "cpu",
                                       "--out", str(out)])
    assert rc == 0, err
    assert stdout == f"{out}\n"
    names = sorted(pd.read_csv(setup["data"] / "FileList.csv")["FileName"])
    table = pd.read_csv(out / "per_video.csv")
    assert table["FileName"].tolist() == names and (table["Reference"] == "yes").all()
    assert (table["NumberOfFrames"] == 24).all()
    summary = json.loads((out / "summary.json").read_text())
    for key in ("aFD_ED_frames", "aFD_ES_frames", "aFD_ED_ms", "aFD_ES_ms"):
        assert isinstance(summary[key], float) and np.isfinite(summary[key])
    assert summary["videos_evaluated"] == 4 and summary["threshold"] == 0.5
    assert summary["teacher"]["model"] == "unet" and summary["teacher"]["parameters"] > 0
    assert summary["teacher"]["gflops_per_frame"] > 0
    assert sorted(p.stem for p in (out / "masks").glob("*.npz")) == names
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    # The saved masks reproduce the same evaluation through --masks.
    again = tmp_path / "again"
    rc, _, err = run_cli(capsys, ["eval", "afd", "--data", str(setup["data"]), "--masks", str(out / "masks"),
                                  "--split", "all", "--out", str(again)])
    assert rc == 0, err
    pd.testing.assert_frame_equal(pd.read_csv(again / "per_video.csv"), table)


def test_toy_true_masks_give_zero_afd(setup, tmp_path, capsys):
    masks = tmp_path / "truth"
    masks.mkdir()
    for name in pd.read_csv(setup["data"] / "FileList.csv")["FileName"]:
        np.savez_compressed(masks / f"{name}.npz", masks=toy_lv_masks(setup["data"], name) * np.uint8(255))
    out = tmp_path / "afd"
    rc, _, err = run_cli(capsys, ["eval", "afd", "--data", str(setup["data"]), "--masks", str(masks),
                                  "--split", "all", "--out", str(out)])
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos_evaluated"] == 4
    assert summary["aFD_ED_frames"] == 0 and summary["aFD_ES_frames"] == 0


def test_afd_with_a_deeplabv3_teacher(setup, tmp_path, capsys):
    from echoseg.core.models.teachers import build_deeplabv3

    torch.manual_seed(0)
    state = {"module." + k: v for k, v in build_deeplabv3().state_dict().items()}
    torch.save({"epoch": 0, "state_dict": state}, tmp_path / "deeplab.pt")
    out = tmp_path / "afd"
    rc, stdout, err = run_cli(capsys, ["eval", "afd", "--data", str(setup["data"]), "--split", "test",
                                       "--teacher", f"deeplabv3:{tmp_path / 'deeplab.pt'}", "--mean", "30",
                                       "--std", "50", "--device", "cpu", "--out", str(out)])
    assert rc == 0, err
    assert stdout == f"{out}\n"
    summary = json.loads((out / "summary.json").read_text())
    test_names = pd.read_csv(setup["data"] / "FileList.csv").query("Split == 'TEST'")["FileName"].tolist()
    assert pd.read_csv(out / "per_video.csv")["FileName"].tolist() == sorted(test_names)
    assert summary["teacher"]["kind"] == "deeplabv3" and summary["teacher"]["mean"] == [30.0] * 3
    assert not (out / "masks").exists()

    auto = tmp_path / "afd-auto"
    rc, stdout, err = run_cli(capsys, ["eval", "afd", "--data", str(setup["data"]), "--split", "test",
                                       "--teacher", f"deeplabv3:{tmp_path / 'deeplab.pt'}", "--mean", "auto",
                                       "--std", "auto", "--device", "cpu", "--out", str(auto)])
    assert rc == 0, err
    from echoseg.core.data.echonet import echonet_channel_stats

    stats = echonet_channel_stats(setup["data"])
    teacher = json.loads((auto / "summary.json").read_text())["teacher"]
    assert teacher["mean"] == pytest.approx(list(stats.mean)) and teacher["std"] == pytest.approx(list(stats.std))


@pytest.mark.parametrize(("extra", "needle"), [
    (["--run", "RUN", "--teacher", "run:RUN"], "exactly one of"),
    (["--teacher", "resnet:x.pt"], "deeplabv3:CKPT"),
    (["--teacher", "deeplabv3:/no/such.pt"], "not found"),
    (["--run", "/no/such/run"], "--run"),
    (["--run", "RUN", "--threshold", "127"], "--threshold"),
    (["--run", "RUN", "--mean", "30"], "--mean"),
    (["--run", "RUN", "--mean", "auto"], "--mean"),
    (["--teacher", "deeplabv3:/no/such.pt", "--mean", "dark"], "--mean dark"),
    (["--masks", "DATA", "--save-masks"], "--save-masks"),
])
def test_model_usage_errors_exit_2_and_leave_nothing(setup, tmp_path, capsys, extra, needle):
    args = [a.replace("RUN", str(setup["run"])).replace("DATA", str(setup["data"])) for a in extra]
    out = tmp_path / "bad"
    rc, stdout, stderr = run_cli(capsys, ["eval", "afd", "--data", str(setup["data"]), *args, "--out", str(out)])
    assert rc == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and needle in stderr
    assert not out.exists()


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_echoclip_with_a_teacher(setup, tmp_path, capsys):
    import open_clip

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "echoseg-test-afd-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "configs")
    torch.manual_seed(0)
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    torch.save(open_clip.create_model("echoseg-test-afd-clip").state_dict(), folder / "open_clip_pytorch_model.bin")
    out = tmp_path / "clip-run"
    rc, stdout, err = run_cli(capsys, ["eval", "echoclip", "--data", str(setup["data"]), "--teacher",
                                       f"run:{setup['run']}", "--clip-model", str(folder), "--split", "all",
                                       "--device", "cpu", "--batch-size", "16", "--out", str(out)])
    assert rc == 0, err
    assert stdout == f"{out}\n"
    table = pd.read_csv(out / "per_video.csv")
    assert len(table) == 4 and (table["FramesScored"] == 24).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos_scored"] == 4 and np.isfinite(summary["score_mean"])
    assert summary["teacher"]["model"] == "unet" and len(list((out / "masks").glob("*.npz"))) == 4
    rc, stdout, stderr = run_cli(capsys, ["eval", "echoclip", "--data", str(setup["data"]), "--clip-model",
                                          str(folder), "--out", str(tmp_path / "none")])
    assert rc == 2 and stdout == "" and "exactly one of --masks | --run | --teacher" in stderr
