"""`echoseg train --recipe sb-paper|sb-code`: Synthetic Boost's paper and released-config values, options the user
gives win over them, the recipe is recorded in run.json, and early stopping waits for --min-epochs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echoseg.cli import main
from echoseg.core.engine.checkpoint import close_epoch
from echoseg.core.errors import UserError
from echoseg.core.train.recipes import apply_recipe, recipe_values


def test_paper_and_code_values_differ_where_the_sources_do():
    paper, code = recipe_values("sb-paper", "clipseg"), recipe_values("sb-code", "clipseg")
    assert (paper["lr"], code["lr"]) == (2e-3, 2e-4)
    assert (paper["bce_weight"], code["bce_weight"]) == (0.25, 0.2)
    cris_paper, cris_code = recipe_values("sb-paper", "cris"), recipe_values("sb-code", "cris")
    assert (cris_paper["threshold"], cris_code["threshold"]) == (0.5, 0.35)
    for values in (paper, code, recipe_values("sb-code", "cris")):
        assert (values["grad_clip"], values["min_epochs"], values["epochs"], values["precision"]) == (
            0.5, 10, 1000, "fp16")
    assert recipe_values("sb-paper", "cris")["lr"] == recipe_values("sb-code", "cris")["lr"] == 2e-5


def test_given_options_win_and_precision_needs_a_gpu():
    cfg = {"recipe": "sb-code", "model": "clipseg", "lr": 5e-4, "threshold": 0.5, "precision": "no", "epochs": 3}
    out = apply_recipe(cfg, {"lr", "epochs"}, gpu=False)
    assert (out["lr"], out["epochs"], out["precision"], out["bce_weight"]) == (5e-4, 3, "no", 0.2)
    assert "lr" not in out["recipe_values"] and out["recipe_values"]["min_epochs"] == 10
    assert apply_recipe(cfg, set(), gpu=True)["precision"] == "fp16"
    assert apply_recipe({"model": "clipseg", "lr": None}, set(), gpu=True) == {"model": "clipseg", "lr": None}


def test_refusals():
    with pytest.raises(UserError, match="RefCOCO CRIS checkpoint"):
        apply_recipe({"recipe": "sb-code", "model": "cris", "weights": None}, set(), gpu=False)
    assert apply_recipe({"recipe": "sb-code", "model": "cris", "weights": None, "init_from": "runs/syn"}, set(),
                        gpu=False)["threshold"] == 0.35  # fine-tuning from a run that started from the checkpoint
    with pytest.raises(UserError, match="not --model unet"):
        recipe_values("sb-paper", "unet")
    with pytest.raises(UserError, match="unknown"):
        recipe_values("sb-best", "cris")


def test_min_epochs_hold_early_stopping_back():
    book = {"epoch": 0, "elapsed": 0.0, "bad_epochs": 0, "done": False, "stopped_early": False}
    for epoch in range(1, 4):
        close_epoch(book, epoch, 1.0, None, patience=1, epochs=10, min_epochs=3)
        assert book["stopped_early"] == (epoch == 3)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("recipe")
    assert main(["data", "toy", "camus", "--patients", "3", "--size", "32", "--out", str(root / "camus")]) == 0
    assert main(["prompts", "build", str(root / "camus"), "--out", str(root / "real")]) == 0
    return root / "real"


FAST = ["--model", "clipseg", "--config", "tiny", "--input-size", "32", "--eval-size", "32", "--epochs", "1",
        "--device", "cpu", "--prompt", "p1"]


def test_cli_records_the_recipe_and_explicit_options_win(prompts, tmp_path, capsys):
    options = tmp_path / "opts.yaml"
    options.write_text("bce_weight: 0.5\n")
    out = tmp_path / "run"
    assert main(["train", *FAST, "--data", str(prompts), "--recipe", "sb-paper", "--lr", "1e-3",
                 "--config", str(options), "--set", "batch_size=8", "--out", str(out)]) == 0, capsys.readouterr().err
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert cfg["recipe"] == "sb-paper" and cfg["model_config"] == "tiny"
    assert (cfg["lr"], cfg["bce_weight"], cfg["batch_size"], cfg["epochs"]) == (1e-3, 0.5, 8, 1)  # given: kept
    assert (cfg["threshold"], cfg["grad_clip"], cfg["min_epochs"], cfg["precision"]) == (0.5, 0.5, 10, "no")
    assert set(cfg["recipe_values"]) >= {"threshold", "min_epochs", "precision"}
    assert not set(cfg["recipe_values"]) & {"lr", "bce_weight", "batch_size", "epochs"}
    assert "recipe sb-paper:" in (out / "log.txt").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 1  # --epochs 1 ends the run even though the recipe's minimum is 10


@pytest.mark.parametrize(("args", "needle"), [
    (["--model", "cris", "--recipe", "sb-code"], "RefCOCO CRIS checkpoint"),
    (["--model", "unet", "--recipe", "sb-paper"], "not --model unet"),
    (["--recipe", "paper"], "unknown"),
])
def test_bad_recipes_exit_2_with_nothing_written(prompts, tmp_path, capsys, args, needle):
    capsys.readouterr()
    assert main(["train", *FAST, *args, "--data", str(prompts), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()
