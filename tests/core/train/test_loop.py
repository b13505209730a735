"""The training loop: artefacts, exact resume, frozen encoders, --init-from and early stopping (tiny, 16 px)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from echoseg.core.data.manifest import load_split
from echoseg.core.models.artefacts import load_trained_model
from echoseg.core.runs import Run, run_context
from echoseg.core.train.loop import train
from echoseg.core.train.recipe import TrainConfig


def _cfg(**kw) -> TrainConfig:
    base = dict(model="clipseg", model_config="tiny", input_size=16, epochs=2, batch_size=4, eval_size=32,
                device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _train(cfg, out, data, test=True, callbacks=(), resume=False, val=None):
    run = Run.resume(out, "train") if resume else Run.create("train", None, out=out, config=cfg.to_dict())
    with run_context(run):
        train(cfg, run, load_split(data, "train"), load_split(val or data, "val"),
              load_split(data, "test") if test else None, callbacks=callbacks, progress=False)
    return run.path


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_every_artefact(prompts_run, tmp_path):
    out = _train(_cfg(prompt="random", augment=True), tmp_path / "run", prompts_run)
    ck = out / "checkpoints"
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.pt", "model.json", "tokenizer"):
        assert (ck / name).exists(), name
    rows = _metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_dice", "lr", "time"} <= set(rows[0])
    per = pd.read_csv(out / "per_sample.csv")
    assert list(per.columns[:7]) == ["sample_id", "image", "structure", "prompt", "dice", "iou", "hd95"]
    assert len(per) == 9 * 2 and set(per["prompt"]) == {"p7", "p7_b"}  # random: both variants evaluated
    s = json.loads((out / "summary.json").read_text())
    assert s["best_epoch"] in (1, 2) and s["time_to_best_s"] > 0
    assert set(s["test"]["per_structure"]) == {"LV", "MYO", "LA"}
    assert s["test"]["overall"]["n"] == 18 and (out / "predictions.png").stat().st_size > 1000
    model, info = load_trained_model(out)
    assert info["name"] == "clipseg" and model.input_size == 16


def test_resume_after_interrupt_matches_uninterrupted_run(prompts_run, tmp_path):
    cfg = _cfg(epochs=2, prompt="random", augment=True)
    full = _train(cfg, tmp_path / "full", prompts_run, test=False)

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(cfg, tmp_path / "cut", prompts_run, test=False, callbacks=[stop_after_first])
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "interrupted"
    assert len(_metrics(tmp_path / "cut")) == 1
    cut = _train(cfg, tmp_path / "cut", prompts_run, test=False, resume=True)
    a, b = _metrics(full), _metrics(cut)
    assert [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "val_dice", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["epoch"], key)
    wa, wb = load_file(full / "checkpoints/last.safetensors"), load_file(cut / "checkpoints/last.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert json.loads((cut / "run.json").read_text())["status"] == "completed"


def test_init_from_and_frozen_encoders(prompts_run, synth_run, tmp_path):
    pre = _train(_cfg(epochs=1), tmp_path / "pre", synth_run, test=False)
    ft = _train(_cfg(epochs=1, init_from=str(pre), freeze_encoders=True), tmp_path / "ft", prompts_run)
    a, b = load_file(pre / "checkpoints/best.safetensors"), load_file(ft / "checkpoints/last.safetensors")
    clip = [k for k in a if k.startswith("hf.clip.")]
    decoder = [k for k in a if k.startswith("hf.decoder.") and a[k].is_floating_point()]
    assert clip and all(torch.equal(a[k], b[k]) for k in clip)  # frozen: unchanged from the init run
    assert any(not torch.equal(a[k], b[k]) for k in decoder)  # the decoder trained
    s = json.loads((ft / "summary.json").read_text())
    assert s["init_from"] == str(pre) and s["data"]["train"]["source"] == ["real"]


def test_early_stopping_and_unet(prompts_run, tmp_path):
    out = _train(_cfg(model="unet", epochs=6, lr=1e-12, early_stop_patience=2), tmp_path / "u", prompts_run)
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped_early"] and s["epochs_run"] == 3 and s["best_epoch"] == 1
    per = pd.read_csv(out / "per_sample.csv")
    assert len(per) == 9 and per["dice"].between(0, 1).all()
