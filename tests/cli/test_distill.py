"""`echoseg distill` end to end: a run: teacher trained on toy data, toy EchoNet videos, report, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from echoseg.cli import main

FAST = ["--blocks", "2", "--layers", "1", "--seq-len", "8", "--batch-size", "4", "--device", "cpu"]


def _run(args, capsys) -> Path:
    capsys.readouterr()
    rc = main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.endswith("\n") and len(cap.out.splitlines()) == 1
    return Path(cap.out.strip())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    assert main(["data", "toy", "camus", "--patients", "3", "--size", "48", "--out", str(root / "camus")]) == 0
    assert main(["prompts", "build", str(root / "camus"), "--out", str(root / "prompts")]) == 0
    assert main(["train", "--model", "unet", "--config", "tiny", "--input-size", "16", "--eval-size", "32",
                 "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--data", str(root / "prompts"),
                 "--out", str(root / "teacher")]) == 0
    assert main(["data", "toy", "echonet", "--videos", "6", "--frames", "20", "--size", "32",
                 "--out", str(root / "echo")]) == 0
    return root


def test_distill_end_to_end_with_eval_and_cache_reuse(setup, tmp_path, capsys):
    teacher = f"run:{setup / 'teacher'}"
    echo = setup / "echo"
    out = _run(["distill", "--teacher", teacher, "--data", str(echo), "--eval-data", str(echo), "--eval-split",
                "all", "--half-res", "--epochs", "2", *FAST, "--out", str(tmp_path / "kd")], capsys)
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["costs"]["student"]["parameters"] == 39_577
    assert summary["costs"]["teacher"]["parameters"] > 0 and summary["costs"]["student"]["gflops_per_frame"] > 0
    assert 0.05 <= summary["thresholds"]["student"] <= 0.95
    for model in ("student", "teacher"):
        ev = summary["eval"][model]
        assert ev["videos_evaluated"] == 6 and ev["aFD_ED_frames"] >= 0 and 0 <= ev["dice_mean_tracings"] <= 1
        table = pd.read_csv(out / "eval" / model / "per_video.csv")
        assert len(table) == 6 and {"ED_delay", "ES_delay", "Dice_ED", "Dice_ES", "Dice_mean"} <= set(table.columns)
    assert "| parameters | 39,577 |" in (out / "report.md").read_text()
    assert (out / "checkpoints" / "model.json").is_file() and len(out.joinpath("metrics.jsonl").read_text().split(
        "\n")) == 3
    spec = json.loads((out / "checkpoints" / "model.json").read_text())["spec"]
    assert spec["warmup"] == 16 and spec["horizon"] == 8  # warm start; spans of the training window (--seq-len)
    assert "a student needs ~100 or more to follow its teacher" in (out / "log.txt").read_text()  # 4 steps in all
    cached = Path(summary["pseudo_labels"]["train"])
    assert cached.parent.name == "pseudo" and echo not in cached.parents
    assert len(list((cached / "done").glob("*.json"))) == 6
    # a second run with the same teacher labels nothing new
    again = _run(["distill", "--teacher", teacher, "--data", str(echo), "--epochs", "1", "--skips", "--warmup", "0",
                  *FAST, "--out", str(tmp_path / "kd2")], capsys)
    log = (again / "log.txt").read_text()
    assert "5 of 5 video(s) cached, 0 to label" in log
    assert json.loads((again / "summary.json").read_text())["costs"]["student"]["parameters"] > 39_577
    assert json.loads((again / "checkpoints" / "model.json").read_text())["spec"]["warmup"] == 0  # cold start


def test_resume_continues_exactly(setup, tmp_path, capsys):
    args = ["distill", "--teacher", f"run:{setup / 'teacher'}", "--data", str(setup / "echo"), *FAST]
    full = _run([*args, "--epochs", "2", "--out", str(tmp_path / "full")], capsys)
    part = _run([*args, "--epochs", "1", "--out", str(tmp_path / "part")], capsys)
    assert _run(["distill", "--resume", str(part), "--epochs", "2"], capsys) == part

    def rows(run):
        return [{k: v for k, v in json.loads(x).items() if k != "time"}
                for x in (run / "metrics.jsonl").read_text().splitlines()]

    assert rows(part) == rows(full) and [r["epoch"] for r in rows(part)] == [1, 2]
    assert main(["distill", "--resume", str(part), "--lr", "0.1"]) == 2


def test_bad_inputs_exit_2_without_a_run(setup, tmp_path, capsys):
    echo = str(setup / "echo")
    cases = [
        (["--teacher", "sam:model.pt", "--data", echo], "--teacher"),
        (["--teacher", f"deeplabv3:{tmp_path / 'missing.pt'}", "--data", echo], "checkpoint file not found"),
        (["--teacher", f"run:{tmp_path}", "--data", echo], "not a training run"),
        (["--teacher", f"run:{setup / 'teacher'}", "--data", str(tmp_path)], "not an EchoNet-Dynamic folder"),
        (["--teacher", f"run:{setup / 'teacher'}", "--data", echo, "--blocks", "5"], "--blocks"),
        (["--teacher", f"run:{setup / 'teacher'}", "--data", echo, "--warmup", "-1"], "--warmup must be >= 0"),
        (["--data", echo], "--teacher is required"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["distill", *args, "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


def test_eval_afd_and_report_take_a_distilled_student(setup, tmp_path, capsys):
    echo = setup / "echo"
    kd = _run(["distill", "--teacher", f"run:{setup / 'teacher'}", "--data", str(echo), "--eval-data", str(echo),
               "--eval-split", "all", "--epochs", "1", *FAST, "--out", str(tmp_path / "kd")], capsys)
    threshold = json.loads((kd / "summary.json").read_text())["thresholds"]["student"]
    afd = _run(["eval", "afd", "--data", str(echo), "--run", str(kd), "--split", "all", "--device", "cpu",
                "--out", str(tmp_path / "afd")], capsys)
    summary = json.loads((afd / "summary.json").read_text())
    assert summary["videos_evaluated"] == 6 and summary["aFD_ED_frames"] >= 0
    assert summary["threshold"] == pytest.approx(threshold)  # the student's own threshold, not 0.5
    assert summary["teacher"]["kind"] == "distilled student"
    rep = _run(["report", str(kd), str(afd), "--out", str(tmp_path / "rep")], capsys)
    rows = json.loads((rep / "summary.json").read_text())["afd"]
    assert [r["segmenter"].split(" ")[0] for r in rows] == ["teacher", "student", "kd"]
    assert rows[1]["params"] == rows[2]["params"] == 39_577
