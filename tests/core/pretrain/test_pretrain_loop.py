"""The pre-training loop on toy CAMUS pairs (tiny configs, CPU): artefacts, exact resume, mix, init, learning."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from echoseg.core.models.artefacts import load_trained_model
from echoseg.core.pretrain.config import PretrainConfig
from echoseg.core.pretrain.data import load_pairs
from echoseg.core.pretrain.loop import pretrain
from echoseg.core.pretrain.objectives import TERMS
from echoseg.core.runs import Run, run_context


def _cfg(**kw) -> PretrainConfig:
    base = dict(method="convirt", model_config="tiny", epochs=1, batch_size=8, device="cpu", seed=0,
                attention_pairs=2)
    base.update(kw)
    return PretrainConfig(**base)


def _run(cfg, out, data, callbacks=(), resume=False):
    data = data if isinstance(data, list) else [data]
    run = Run.resume(out, "pretrain") if resume else Run.create("pretrain", None, out=out, config=cfg.to_dict())
    with run_context(run):
        pretrain(cfg, run, load_pairs(data, "train", cfg.text), load_pairs(data, "val", cfg.text),
                 callbacks=callbacks, progress=False)
    return run.path


def _metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("method", "config"), [
    ("convirt", "tiny"), pytest.param("gloria", "tiny", marks=pytest.mark.slow),
    pytest.param("mgca", "tiny", marks=pytest.mark.slow), ("mgca", "tiny-vit")])
def test_each_method_writes_every_artefact(pairs_run, tmp_path, method, config):
    out = _run(_cfg(method=method, model_config=config), tmp_path / "run", pairs_run)
    ck = out / "checkpoints"
    for name in ("best.safetensors", "last.safetensors", "last.pt", "model.json", "tokenizer"):
        assert (ck / name).exists(), name
    row = _metrics(out)[0]
    assert {f"train_{t}" for t in TERMS[method]} | {f"val_{t}" for t in TERMS[method]} <= set(row)
    assert {"i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "lr"} <= set(row)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in row.items() if k.startswith(("train_", "val_")))
    # encoders/: a save_pretrained text folder, the image backbone, the heads
    text = AutoModel.from_pretrained(out / "encoders" / "text", add_pooling_layer=method == "gloria")
    tok = AutoTokenizer.from_pretrained(out / "encoders" / "text")
    assert text.config.hidden_size == 32 and len(tok("apical four-chamber view")["input_ids"]) > 2
    image = load_file(out / "encoders" / "image" / "model.safetensors")
    cfg = json.loads((out / "encoders" / "image" / "config.json").read_text())
    assert cfg["method"] == method and cfg["library"] == ("timm" if "vit" in config else "torchvision")
    assert ("conv1.weight" in image) != ("cls_token" in image)
    heads = load_file(out / "encoders" / "heads.safetensors")
    assert "image.global_embed.0.weight" in heads or "image.global_embed.weight" in heads or any(
        k.startswith("image.global_embed.head") for k in heads)
    retrieval = json.loads((out / "retrieval.json").read_text())
    assert retrieval["pairs"] == 12 and 0 <= retrieval["i2t_r1"] <= 1
    assert (out / "loss.png").stat().st_size > 1000
    assert (out / "attention_maps.png").exists() == (method != "convirt")
    model, info = load_trained_model(out)
    assert info["name"] == "vlp" and model.method == method
    assert model.encode_texts(["apical two-chamber view"]).shape == (1, model.embed_dim)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["train"]["pairs"] == 52 and summary["data"]["train"]["source"] == {"real": 52}

@pytest.mark.slow

def test_resume_after_interrupt_matches_uninterrupted_run(pairs_run, tmp_path):
    cfg = _cfg(method="mgca", epochs=3, batch_size=16)  # prototypes frozen in epoch 1, BN heads, Sinkhorn
    prototypes = []

    def keep(row):
        weights = load_file(tmp_path / "full" / "checkpoints" / "last.safetensors")
        prototypes.append(weights["prototype_layer.weight"])

    full = _run(cfg, tmp_path / "full", pairs_run, callbacks=[keep])
    # MGCA freezes the prototypes in epoch 1 (only re-normalised) and updates them afterwards
    assert torch.allclose(prototypes[0].norm(dim=1), torch.ones(prototypes[0].shape[0]), atol=1e-5)
    assert not torch.allclose(prototypes[0], prototypes[1])

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(cfg, tmp_path / "cut", pairs_run, callbacks=[stop_after_first])
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "interrupted"
    cut = _run(cfg, tmp_path / "cut", pairs_run, resume=True)
    a, b = _metrics(full), _metrics(cut)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "train_proto", "val_loss", "val_token", "i2t_r1", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-9), (ra["epoch"], key)
    wa, wb = load_file(full / "checkpoints/last.safetensors"), load_file(cut / "checkpoints/last.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)

@pytest.mark.slow

def test_mix_of_real_and_synthetic_pairs_keeps_sources(pairs_run, synthetic_pairs_run, tmp_path):
    out = _run(_cfg(method="gloria", text="p3"), tmp_path / "mix", [pairs_run, synthetic_pairs_run])
    s = json.loads((out / "summary.json").read_text())
    assert s["data"]["train"]["source"] == {"real": 52, "synthetic": 20}
    assert s["text"] == "p3" and len(s["data"]["train"]["runs"]) == 2

@pytest.mark.slow

def test_init_from_a_pretrain_run(pairs_run, tmp_path):
    pre = _run(_cfg(method="convirt"), tmp_path / "pre", pairs_run)
    ft = _run(_cfg(method="convirt", init_from=str(pre), lr=1e-12, warmup_fraction=0.0), tmp_path / "ft", pairs_run)
    a, b = load_file(pre / "checkpoints/best.safetensors"), load_file(ft / "checkpoints/last.safetensors")
    learned = [k for k in a if "running_" not in k and "num_batches" not in k]  # BN statistics still move
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in learned)  # lr ~ 0: the init weights survive
    assert json.loads((ft / "summary.json").read_text())["init_from"] == str(pre)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["convirt", "gloria", "mgca"])
def test_validation_recall_rises_above_chance(pairs_run, tmp_path, method):
    """View and phase are visible in the toy images and named in ``p3``: retrieval beats a random ranking."""
    out = _run(_cfg(method=method, text="p3", epochs=20, batch_size=16, early_stop_patience=20), tmp_path / "r",
               pairs_run)
    r = json.loads((out / "retrieval.json").read_text())
    assert r["chance_r1"] == pytest.approx(0.25)  # 4 distinct texts (2 views x 2 phases), 3 images each
    assert (r["i2t_r1"] + r["t2i_r1"]) / 2 > r["chance_r1"] + 0.15, r
