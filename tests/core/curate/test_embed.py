"""Encoders (segmenter hook, pixels, open_clip, transformers) and the zero-shot filter, with tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from echoseg.core.curate import CurateConfig, curate
from echoseg.core.curate.embed import PixelEncoder, SegmenterEncoder, embed_files, make_encoder
from echoseg.core.errors import UserError
from echoseg.core.io import write_png
from echoseg.core.models import build_model, get_config
from echoseg.core.runs import Run, run_context

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_folder(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("clip")
    (root / "configs").mkdir()
    (root / "configs" / "echoseg-curate-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(root / "configs")
    torch.manual_seed(0)
    model = open_clip.create_model("echoseg-curate-tiny-clip")
    folder = root / "model"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = root / f"i{i}.png"
        write_png(p, rng.integers(0, 255, (40, 40)).astype(np.uint8))
        paths.append(str(p))
    return paths


def test_segmenter_hooks_and_pixels(images):
    unet = build_model("unet", get_config("unet", "tiny"))
    emb = embed_files(SegmenterEncoder(unet), images, batch_size=2, progress=False)
    assert emb.shape == (5, 8 * 2**2) and np.isfinite(emb).all()
    clipseg = build_model("clipseg", get_config("clipseg", "tiny"))
    emb = embed_files(make_encoder("segmenter", clipseg, "cpu"), images, batch_size=4, progress=False)
    assert emb.shape[0] == 5 and emb.shape[1] == clipseg.hf.config.vision_config.hidden_size
    px = embed_files(PixelEncoder(8), images[:2], progress=False)
    assert px.shape == (2, 64) and px.max() <= 1.0
    assert make_encoder("pixels:16").name == "pixels:16"


def test_make_encoder_errors():
    with pytest.raises(UserError, match="--segmenter"):
        make_encoder("segmenter", None)
    with pytest.raises(UserError, match="expected segmenter"):
        make_encoder("dino")
    with pytest.raises(UserError, match="pixels:N"):
        make_encoder("pixels:x")
    with pytest.raises(UserError, match="--encoder open_clip:"):
        make_encoder("open_clip:/nonexistent/folder", device="cpu")
    with pytest.raises(UserError, match="--encoder hf:"):
        make_encoder("hf:/nonexistent/folder", device="cpu")
    with pytest.raises(UserError, match="no image-encoder hook"):
        SegmenterEncoder(torch.nn.Linear(2, 2))


def test_hf_dinov2_folder(tmp_path, images):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, image_size=28, patch_size=14))
    model.save_pretrained(tmp_path / "dino")
    BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(
        tmp_path / "dino")
    enc = make_encoder(f"hf:{tmp_path / 'dino'}", device="cpu")
    emb = embed_files(enc, images, batch_size=3, progress=False)
    assert emb.shape == (5, 32) and np.isfinite(emb).all()


def test_open_clip_encoder_and_zero_shot_filter(planted, tiny_clip_folder, tmp_path):
    cfg = CurateConfig(synth=str(planted.synth), real=str(planted.real), encoder=f"open_clip:{tiny_clip_folder}",
                       clip_model=str(tiny_clip_folder), clip_min=1.0, device="cpu")
    run = Run.create("curate", None, out=tmp_path / "z", config={})
    with run_context(run):
        summary = curate(cfg, run, progress=False)
    scores = pd.read_csv(run.path / "scores.csv")
    p = scores["echo_prob"].dropna()
    assert len(p) == summary["input"]["images"] - 3  # images failing sanity are not scored further
    assert ((p > 0) & (p < 1)).all()
    rejected = pd.read_csv(run.path / "rejected.csv", keep_default_na=False)
    # a probability below 1 everywhere: --clip-min 1.0 rejects every scored image by zero-shot quality
    assert set(rejected.loc[rejected["filter"] == "zero_shot", "image"]) == set(scores.loc[p.index, "image"])
    assert summary["filters"]["zero_shot"]["enabled"] and summary["encoder"].startswith("open_clip:")
    assert (run.path / "figures" / "hist_echo_prob.png").is_file()
    assert summary["kept"]["images"] == 0
