"""Tests for the CLIP mask-quality score, with a tiny randomly initialised open_clip model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from echoseg.cli import main
from echoseg.core.data.video import write_video
from echoseg.core.errors import UserError
from echoseg.core.eval.echoclip import PROMPTS, blackout, dilate_masks, frame_scores, score_videos
from echoseg.core.models.openclip import encode_images, encode_texts, load_clip_model

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
ARCH = "echoseg-test-tiny-clip"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> dict[str, Path]:
    """A random tiny open_clip model saved as a folder (config + weights) and as ARCH:/weights.pt."""
    import open_clip

    root = tmp_path_factory.mktemp("clip")
    (root / "configs").mkdir()
    (root / "configs" / f"{ARCH}.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(root / "configs")
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH)
    folder = root / "model"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": PREPROCESS}))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    torch.save(model.state_dict(), root / "weights.pt")
    return {"folder": folder, "weights": root / "weights.pt", "root": root}


def test_folder_and_arch_specs_load_the_same_weights(tiny_clip):
    a = load_clip_model(str(tiny_clip["folder"]), "cpu")
    b = load_clip_model(f"{ARCH}:{tiny_clip['weights']}", "cpu")
    assert not a.model.training
    assert torch.allclose(encode_texts(a, PROMPTS), encode_texts(b, PROMPTS))
    norms = encode_texts(a, PROMPTS).norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    sd_saved = torch.load(tiny_clip["weights"], weights_only=True)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, sd_saved[key]), key


def test_loader_errors(tiny_clip, tmp_path):
    with pytest.raises(UserError, match="open_clip_config.json"):
        load_clip_model("hf-hub:nobody-here/no-such-model", "cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    with pytest.raises(UserError, match="no weights"):
        load_clip_model(str(empty), "cpu")
    with pytest.raises(UserError, match="weights file not found"):
        load_clip_model(f"{ARCH}:{tmp_path / 'missing.pt'}", "cpu")
    with pytest.raises(UserError, match="ARCH"):
        load_clip_model(f"not-an-arch:{tiny_clip['weights']}", "cpu")
    with pytest.raises(UserError, match="not found"):
        load_clip_model(str(tmp_path / "nothing"), "cpu")


def test_dilation_blackout_and_score_formula(tiny_clip):
    m = np.zeros((1, 21, 21), bool)
    m[0, 10, 10] = True
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    assert dilate_masks(m, 3).sum() == kernel.sum()
    assert np.array_equal(dilate_masks(m, 0), m)
    frames = np.full((1, 21, 21), 200, np.uint8)
    assert blackout(frames, m)[0, 10, 10] == 0 and blackout(frames, m).sum() == frames.sum() - 200

    clip = load_clip_model(str(tiny_clip["folder"]), "cpu")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    masks = np.zeros((3, 48, 48), np.uint8)
    masks[:, 16:32, 16:32] = 255
    text = encode_texts(clip, PROMPTS)
    s0 = frame_scores(clip, frames, masks, dilate=0, batch_size=2, text=text)
    s5 = frame_scores(clip, frames, masks, dilate=5, batch_size=2, text=text)
    assert np.allclose(s0["score"], s0["wall"] + s0["nothing"] - s0["left_ventricle"])
    assert np.allclose(s0["wall"], s5["wall"]) and np.allclose(s0["nothing"], s5["nothing"])
    assert not np.allclose(s0["left_ventricle"], s5["left_ventricle"])  # the dilation is applied
    rgb = np.repeat(blackout(frames, masks > 127)[..., None], 3, axis=-1)
    expected_wall = (encode_images(clip, rgb) @ text.T)[:, 0].numpy()
    assert np.allclose(s0["wall"], expected_wall, atol=1e-5)


def _echonet_with_masks(root: Path) -> Path:
    (root / "Videos").mkdir(parents=True)
    rng = np.random.default_rng(1)
    masks = root / "masks"
    masks.mkdir()
    for name, t in (("v1", 4), ("v2", 3)):
        write_video(root / "Videos" / f"{name}.avi", rng.integers(0, 256, (t, 40, 40), dtype=np.uint8), fps=30)
        m = np.zeros((t, 40, 40), np.uint8)
        m[:, 10:30, 12:28] = 255
        np.savez_compressed(masks / f"{name}.npz", masks=m)
    np.save(masks / "orphan.npy", np.zeros((2, 40, 40), np.float32))
    pd.DataFrame({"FileName": ["v1", "v2"], "FPS": 30.0, "NumberOfFrames": [4, 3], "Split": "TEST"}).to_csv(
        root / "FileList.csv", index=False)
    return masks


def test_score_videos_table_and_summary(tiny_clip, tmp_path):
    masks = _echonet_with_masks(tmp_path / "echonet")
    clip = load_clip_model(str(tiny_clip["folder"]), "cpu")
    table, summary = score_videos(clip, tmp_path / "echonet", masks, dilate=2, batch_size=3, progress=False)
    assert table["FileName"].tolist() == ["v1", "v2"] and table["FramesScored"].tolist() == [4, 3]
    assert np.allclose(table["score"], table["sim_wall"] + table["sim_nothing"] - table["sim_left_ventricle"])
    assert summary["score_mean"] == pytest.approx(table["score"].mean())
    assert summary["without_video"] == ["orphan"] and summary["dilation_applied"] is True


def test_cli_echoclip(tiny_clip, tmp_path, capsys):
    masks = _echonet_with_masks(tmp_path / "echonet")
    out = tmp_path / "run"
    rc = main(["eval", "echoclip", "--data", str(tmp_path / "echonet"), "--masks", str(masks),
               "--clip-model", str(tiny_clip["folder"]), "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0 and captured.out == f"{out}\n"
    assert len(pd.read_csv(out / "per_video.csv")) == 2
    assert json.loads((out / "summary.json").read_text())["videos_scored"] == 2
    rc = main(["eval", "echoclip", "--data", str(tmp_path / "echonet"), "--masks", str(masks),
               "--clip-model", "hf-hub:nobody-here/no-such-model", "--out", str(tmp_path / "run2")])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert not (tmp_path / "run2").exists()
