"""`echoseg synth train` / `synth generate` end to end on toy CAMUS with the tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from echoseg.cli import main


def _run(argv: list[str], capsys) -> Path:
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.splitlines()
    assert len(lines) == 1 and cap.out == lines[0] + "\n"  # stdout is exactly the run path
    return Path(lines[0])


@pytest.fixture(scope="module")
def toy_camus(tmp_path_factory):
    from echoseg.core.data.manifest import write_manifest
    from echoseg.core.data.toy.camus import write_toy_camus

    root = tmp_path_factory.mktemp("camus")
    write_manifest(write_toy_camus(root, patients=4, size=32, seed=1), root / "manifest.csv")
    return root


def test_train_generate_resume_and_prompts(toy_camus, tmp_path, capsys):
    model = _run(["synth", "train", "--data", str(toy_camus), "--config", "tiny", "--size", "32", "--steps", "2",
                  "--batch-size", "2", "--device", "cpu", "--cond-dropout", "0.1", "--out", str(tmp_path / "m")],
                 capsys)
    record = json.loads((model / "run.json").read_text())
    assert record["status"] == "completed" and record["command"] == "synth train"
    assert (model / "model" / "conditioning.json").is_file()
    # Raising --steps on resume continues the same run.
    assert _run(["synth", "train", "--resume", str(model), "--steps", "3"], capsys) == model
    assert json.loads((model / "summary.json").read_text())["steps"] == 3

    argv = ["synth", "generate", "--model", str(model), "--masks", str(toy_camus), "--copies-per-mask", "1",
            "--steps", "2", "--batch-size", "4", "--guidance", "2", "--sampler", "dpm-solver", "--device", "cpu"]
    gen = _run([*argv, "--out", str(tmp_path / "g")], capsys)
    manifest = pd.read_csv(gen / "manifest.csv")
    assert manifest["image"].nunique() == 12 and (manifest["guidance"] == 2).all()  # 3 patients x 2 views x 2
    images = sorted(gen.rglob("images/*/*.png"))
    images[0].unlink()
    assert _run([*argv, "--resume", str(gen)], capsys) == gen  # the same command line, resumed
    assert images[0].is_file()

    checked = _run(["data", "check", str(gen), "--out", str(tmp_path / "c")], capsys)
    assert json.loads((checked / "run.json").read_text())["status"] == "completed"
    prompts = _run(["prompts", "build", str(gen), "--out", str(tmp_path / "p")], capsys)
    built = pd.read_csv(prompts / "manifest.csv")
    assert {f"p{k}" for k in range(7)} <= set(built.columns)
    assert (built["source"] == "synthetic").all()


def test_bad_inputs_exit_2_and_leave_nothing(toy_camus, tmp_path, capsys):
    out = tmp_path / "x"
    cases = [
        ["synth", "train", "--config", "huge", "--data", str(toy_camus)],
        ["synth", "train"],
        ["synth", "train", "--data", str(tmp_path)],
        ["synth", "train", "--data", str(toy_camus), "--cond-dropout", "1.5"],
        ["synth", "generate", "--masks", str(toy_camus)],
        ["synth", "generate", "--model", str(tmp_path), "--masks", str(toy_camus)],
        ["synth", "generate", "--pipeline", str(tmp_path), "--prompts", str(tmp_path / "p.txt")],
        ["synth", "generate", "--pipeline", str(tmp_path), "--model", str(tmp_path)],
    ]
    for argv in cases:
        assert main([*argv, "--out", str(out)]) == 2, argv
        cap = capsys.readouterr()
        assert cap.out == "" and cap.err.startswith("error:") and "\n" not in cap.err.strip(), (argv, cap.err)
        assert not out.exists()


def test_resume_refuses_changed_options(toy_camus, tmp_path, capsys):
    model = _run(["synth", "train", "--data", str(toy_camus), "--size", "32", "--steps", "1", "--batch-size", "2",
                  "--device", "cpu", "--out", str(tmp_path / "m")], capsys)
    assert main(["synth", "train", "--resume", str(model), "--lr", "0.5"]) == 2
    assert "--lr" in capsys.readouterr().err
    assert main(["synth", "generate", "--resume", str(model)]) == 2
    assert "synth train" in capsys.readouterr().err
