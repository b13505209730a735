"""`echoseg train` and `eval seg` from the command line: the real -> synthetic -> pt-ft chain, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer

from echoseg.cli import main

FAST = ["--config", "tiny", "--input-size", "16", "--eval-size", "32", "--epochs", "1", "--batch-size", "8",
        "--device", "cpu"]


def _fast(model: str) -> list[str]:
    """FAST for ``model``: CRIS needs an input size that is a multiple of 32."""
    return [*FAST[:3], "32", *FAST[4:]] if model == "cris" else FAST


def _run(args, capsys) -> Path:
    capsys.readouterr()
    rc = main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.splitlines()
    assert len(lines) == 1 and cap.out.endswith("\n")
    return Path(lines[0])


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    assert main(["data", "toy", "camus", "--patients", "3", "--size", "48", "--out", str(root / "camus")]) == 0
    assert main(["prompts", "build", str(root / "camus"), "--out", str(root / "real")]) == 0
    assert main(["data", "toy", "sdm-camus", "--patients", "2", "--copies", "1", "--size", "48",
                 "--out", str(root / "sdm")]) == 0
    assert main(["prompts", "build", str(root / "sdm"), "--out", str(root / "syn")]) == 0
    return root / "real", root / "syn"


@pytest.mark.parametrize("model", ["clipseg", "cris"])
def test_real_synthetic_ptft_chain(prompts, tmp_path, capsys, model):
    real, syn = prompts
    fast = _fast(model)
    r = _run(["train", "--model", model, *fast, "--data", str(real), "--prompt", "p1", "--out",
              str(tmp_path / "real")], capsys)
    s = _run(["train", "--model", model, *fast, "--train-data", str(syn), "--val-data", str(syn),
              "--test-data", str(real), "--prompt", "p1", "--precision", "bf16", "--augment",
              "--out", str(tmp_path / "syn")], capsys)
    f = _run(["train", "--model", model, *fast, "--data", str(real), "--init-from", str(s), "--prompt", "p1",
              "--freeze-encoders", "--lr", "1e-3", "--seed", "3", "--out", str(tmp_path / "ft")], capsys)
    for run in (r, s, f):
        assert json.loads((run / "run.json").read_text())["status"] == "completed"
        per = pd.read_csv(run / "per_sample.csv")
        assert len(per) == 12 and (per["prompt"] == "p1").all()
    summary = json.loads((s / "summary.json").read_text())
    assert summary["data"]["train"]["source"] == ["synthetic"] and summary["data"]["test"]["source"] == ["real"]
    cfg = json.loads((f / "run.json").read_text())["config"]
    assert cfg["init_from"] == str(s) and cfg["freeze_encoders"] and cfg["model_config"] == "tiny"


def test_unet_random_prompt_and_resume_more_epochs(prompts, tmp_path, capsys):
    real, _ = prompts
    out = _run(["train", "--model", "unet", *FAST, "--data", str(real), "--prompt", "random", "--out",
                str(tmp_path / "u")], capsys)
    assert len(pd.read_csv(out / "per_sample.csv")) == 24  # 12 samples x 2 prompt variants
    again = _run(["train", "--resume", str(out), "--epochs", "2"], capsys)
    assert again == out
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in rows] == [1, 2]
    assert main(["train", "--resume", str(out), "--lr", "0.1"]) == 2


def test_eval_seg_on_other_data_and_prompt(prompts, tmp_path, capsys):
    from echoseg.cli.eval import seg

    real, _ = prompts
    trained = _run(["train", "--model", "clipseg", *FAST, "--data", str(real), "--prompt", "p2", "--out",
                    str(tmp_path / "t")], capsys)
    app = typer.Typer()
    app.command("seg")(seg)
    app.command("noop")(lambda: None)
    capsys.readouterr()
    app(["seg", "--run", str(trained), "--data", str(real), "--split", "val", "--prompt", "p3_b", "--save-masks",
         "--eval-size", "32", "--out", str(tmp_path / "e")], standalone_mode=False)
    assert capsys.readouterr().out == f"{tmp_path / 'e'}\n"
    per = pd.read_csv(tmp_path / "e" / "per_sample.csv")
    assert len(per) == 12 and (per["prompt"] == "p3_b").all()
    assert len(list((tmp_path / "e" / "masks").glob("*.png"))) == 12
    s = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert s["train_run"] == str(trained.resolve()) and s["overall"]["n"] == 12


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "cris2"], "--model"),
    (["--prompt", "p9"], "--prompt"),
    (["--epochs", "0"], "--epochs"),
    (["--init-from", "/no/such/run"], "--init-from"),
    (["--data", "/no/such/dir"], "--data"),
])
def test_bad_input_exits_2_and_leaves_nothing(prompts, tmp_path, capsys, args, needle):
    real, _ = prompts
    base = ["train", *FAST, "--out", str(tmp_path / "bad")]
    if "--data" not in args:
        base += ["--data", str(real)]
    assert main([*base, *args]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
