"""`echoseg pretrain` from the command line: one stdout line, run.json, resume policy and one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echoseg.cli import main

TINY = ["--config", "tiny", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pt")
    assert main(["data", "toy", "camus", "--patients", "6", "--size", "48", "--out", str(root / "camus")]) == 0
    assert main(["prompts", "build", str(root / "camus"), "--out", str(root / "real")]) == 0
    return root


def _run(args, capsys) -> Path:
    capsys.readouterr()
    rc = main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.splitlines()
    assert len(lines) == 1
    return Path(lines[0])


def test_pretrain_run_records_its_config_and_resumes_with_more_epochs(prompts, tmp_path, capsys):
    out = _run(["pretrain", "--method", "gloria", *TINY, "--data", str(prompts / "real"), "--set", "loss.temp1=3",
                "--text", "p3", "--out", str(tmp_path / "g")], capsys)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["command"] == "pretrain"
    cfg = record["config"]
    assert cfg["method"] == "gloria" and cfg["model_config"] == "tiny" and cfg["text"] == "p3"
    assert cfg["loss"] == {"temp1": 3} and cfg["data"] == [str(prompts / "real")]
    assert json.loads((out / "summary.json").read_text())["loss_settings"]["temp1"] == 3.0
    assert _run(["pretrain", "--resume", str(out), "--epochs", "2"], capsys) == out
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert main(["pretrain", "--resume", str(out), "--method", "mgca"]) == 2


@pytest.mark.parametrize(("args", "message"), [
    ([], "no data"),
    (["--method", "clip"], "--method 'clip'"),
    (["--text", "p9"], "no column 'p9'"),
    (["--set", "loss.tau=0.2"], "not a convirt loss setting"),
    (["--image-encoder", "resnet18"], "--image-encoder 'resnet18'"),
    (["--batch-size", "1"], "--batch-size must be >= 2"),
    (["--config", "huge"], "unknown config"),
    (["--init-from", "nowhere"], "--init-from nowhere"),
    (["--text-encoder", "/no/such/bert"], "--text-encoder"),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(prompts, tmp_path, capsys, args, message):
    data = [] if not args else ["--data", str(prompts / "real")]
    capsys.readouterr()
    rc = main(["pretrain", *TINY, *data, *args, "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


@pytest.mark.parametrize(("weights", "message"), [("imagenet", "downloads are off"), ("/no/weights.pth", "no such")])
def test_image_weights_need_a_download_or_a_local_file(prompts, tmp_path, capsys, weights, message):
    rc = main(["pretrain", *TINY, "--image-weights", weights, "--data", str(prompts / "real"),
               "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and not (tmp_path / "x").exists()


def test_data_that_is_not_a_prompts_run(prompts, tmp_path, capsys):
    rc = main(["pretrain", *TINY, "--data", str(prompts / "camus"), "--out", str(tmp_path / "y")])
    err = capsys.readouterr().err
    assert rc == 2 and "no column 'report'" in err


def test_a_pretrain_run_is_not_a_segmenter(prompts, tmp_path, capsys):
    out = _run(["pretrain", *TINY, "--data", str(prompts / "real"), "--out", str(tmp_path / "c")], capsys)
    assert main(["eval", "seg", "--run", str(out), "--data", str(prompts / "real")]) == 2
    assert "a pretraining run" in capsys.readouterr().err
    assert main(["train", "--model", "vlp", "--config", "tiny", "--data", str(prompts / "real")]) == 2
    assert "not a segmentation model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pretrained(prompts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre") / "gloria"
    assert main(["pretrain", "--method", "gloria", *TINY, "--data", str(prompts / "real"), "--text", "p3",
                 "--out", str(out)]) == 0
    return out


def test_eval_zeroshot_and_probe_commands(prompts, pretrained, tmp_path, capsys):
    data = str(prompts / "real")
    cls = _run(["eval", "zeroshot", "--run", str(pretrained), "--data", data, "--task", "view", "--n-boot", "50",
                "--device", "cpu", "--out", str(tmp_path / "zs")], capsys)
    s = json.loads((cls / "summary.json").read_text())
    assert s["task"] == "view" and {"value", "ci_low", "ci_high"} <= set(s["auc"])
    grounding = _run(["eval", "zeroshot", "--run", str(pretrained), "--data", data, "--task", "grounding",
                      "--eval-size", "32", "--device", "cpu", "--out", str(tmp_path / "gr")], capsys)
    assert (grounding / "per_sample.csv").read_text().startswith("sample_id,image,structure,prompt,dice,iou,hd95")
    probe = _run(["eval", "probe", "--run", str(pretrained), "--data", data, "--task", "phase", "--fractions",
                  "0.5,1", "--n-boot", "50", "--device", "cpu", "--out", str(tmp_path / "pr")], capsys)
    assert [f["fraction"] for f in json.loads((probe / "summary.json").read_text())["fractions"]] == [0.5, 1.0]
    report = _run(["report", str(pretrained), str(cls), str(grounding), str(probe), "--out", str(tmp_path / "r")],
                  capsys)
    row = json.loads((report / "summary.json").read_text())["pretraining"][0]
    assert row["method"] == "gloria" and row["data"] == "real" and row["zs_view_auc"] == s["auc"]["value"]
    assert {"grounding_dice", "lp_phase_0.5_auc", "lp_phase_1_auc"} <= set(row)
    assert "SynCXR" in (report / "summary.md").read_text()
    assert main(["eval", "zeroshot", "--run", str(pretrained), "--data", data, "--task", "colour"]) == 2
    assert main(["eval", "probe", "--run", str(pretrained), "--data", data, "--task", "view",
                 "--fractions", "0,1"]) == 2
    assert "Traceback" not in capsys.readouterr().err
