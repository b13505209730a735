"""Teachers: EchoNet-Dynamic DeepLabv3 checkpoints (random weights in the release format) and echoseg runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from echoseg.cli import main
from echoseg.core.data.echonet import echonet_channel_stats
from echoseg.core.data.toy.echonet import write_toy_echonet
from echoseg.core.errors import UserError
from echoseg.core.models.teachers import (
    ECHODFKD_MEAN,
    ECHODFKD_STD,
    ECHONET_MEAN,
    ECHONET_STD,
    build_deeplabv3,
    load_teacher,
)
from echoseg.core.prompts.templates import lv_frame_prompt

DEEPLAB_PARAMETERS = 39_633_729  # torchvision deeplabv3_resnet50, no aux head, 1 output channel


@pytest.fixture(scope="module")
def deeplab(tmp_path_factory) -> dict:
    """A randomly initialised DeepLabv3 saved as EchoNet-Dynamic saves it (DataParallel keys, epoch, optimiser)."""
    torch.manual_seed(0)
    module = build_deeplabv3().eval()
    root = tmp_path_factory.mktemp("deeplab")
    optim = torch.optim.SGD(module.parameters(), lr=1e-5, momentum=0.9)
    state = {"module." + k: v for k, v in module.state_dict().items()}
    torch.save({"epoch": 12, "state_dict": state, "best_loss": 0.25, "loss": 0.25, "opt_dict": optim.state_dict(),
                "scheduler_dict": torch.optim.lr_scheduler.StepLR(optim, 15).state_dict()}, root / "best.pt")
    return {"module": module, "path": root / "best.pt", "root": root, "state": state}


def _reference(module, frames: np.ndarray, mean, std) -> np.ndarray:
    x = torch.from_numpy(frames).float()[:, None].repeat(1, 3, 1, 1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return torch.sigmoid(module(x)["out"][:, 0]).numpy()


def test_deeplabv3_echonet_checkpoint(deeplab):
    teacher = load_teacher(f"deeplabv3:{deeplab['path']}", "cpu")
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32), dtype=np.uint8)
    probs = teacher.predict(frames, batch_size=1)
    assert probs.shape == (2, 32, 32) and probs.dtype == np.float32
    assert probs.min() >= 0 and probs.max() <= 1
    np.testing.assert_allclose(probs, _reference(deeplab["module"], frames, ECHONET_MEAN, ECHONET_STD), atol=1e-5)
    assert teacher.num_parameters() == DEEPLAB_PARAMETERS
    assert isinstance(teacher.module, torch.nn.Module) and not teacher.module.training
    assert teacher.name.startswith("deeplabv3:") and teacher.info["mean"] == list(ECHONET_MEAN)
    assert 0.5 < teacher.gflops(32, 32) < 5  # ~16 GFLOPs at 112x112, about quadratic in the side
    custom = load_teacher(f"deeplabv3:{deeplab['path']}", "cpu", mean=40.0, std=[60.0])
    np.testing.assert_allclose(custom.predict(frames), _reference(deeplab["module"], frames, [40.0] * 3, [60.0] * 3),
                               atol=1e-5)


def test_deeplabv3_normalisation_auto_uses_the_data_statistics(deeplab, tmp_path):
    assert (ECHONET_MEAN, ECHONET_STD) == (ECHODFKD_MEAN, ECHODFKD_STD)  # the default, under its former name too
    default = load_teacher(f"deeplabv3:{deeplab['path']}", "cpu")
    assert default.info["normalisation_source"] == {"mean": "EchoDFKD's constants", "std": "EchoDFKD's constants"}
    write_toy_echonet(tmp_path / "toy", videos=3, frames=16, size=32)
    stats = echonet_channel_stats(tmp_path / "toy", split=None)
    teacher = load_teacher(f"deeplabv3:{deeplab['path']}", "cpu", mean="auto", std=["auto"], data=tmp_path / "toy")
    assert teacher.mean == pytest.approx(stats.mean) and teacher.std == pytest.approx(stats.std)
    assert teacher.info["normalisation_source"]["mean"]["videos"] == stats.videos
    frames = np.random.default_rng(1).integers(0, 256, (2, 32, 32), dtype=np.uint8)
    np.testing.assert_allclose(teacher.predict(frames), _reference(deeplab["module"], frames, stats.mean, stats.std),
                               atol=1e-5)
    half = load_teacher(f"deeplabv3:{deeplab['path']}", "cpu", mean="auto", data=tmp_path / "toy")
    assert half.mean == pytest.approx(stats.mean) and half.std == pytest.approx(ECHODFKD_STD)
    assert half.info["normalisation_source"]["std"] == "EchoDFKD's constants"
    with pytest.raises(UserError, match="needs the data folder"):
        load_teacher(f"deeplabv3:{deeplab['path']}", "cpu", mean="auto", std="auto")
    with pytest.raises(UserError, match="checkpoint file not found"):
        load_teacher(f"deeplabv3:{tmp_path / 'none.pt'}", "cpu", mean="auto", data=tmp_path / "toy")


def test_bare_state_dict_and_aux_head_load(deeplab):
    bare = {k[len("module."):]: v for k, v in deeplab["state"].items()}
    bare["aux_classifier.4.weight"] = torch.zeros(21, 256, 1, 1)  # a pretrained-style aux head is ignored
    torch.save(bare, deeplab["root"] / "bare.pt")
    teacher = load_teacher(f"deeplabv3:{deeplab['root'] / 'bare.pt'}", "cpu")
    assert teacher.info["ignored_keys"] == ["aux_classifier.4.weight"]
    frames = np.full((1, 32, 32), 90, np.uint8)
    np.testing.assert_allclose(teacher.predict(frames), _reference(deeplab["module"], frames, ECHONET_MEAN,
                                                                   ECHONET_STD), atol=1e-5)


def test_wrong_checkpoints_are_user_errors(deeplab, tmp_path):
    torch.save({"state_dict": {"module." + k: v for k, v in torch.nn.Conv2d(3, 1, 1).state_dict().items()}},
               tmp_path / "conv.pt")
    with pytest.raises(UserError, match=r"missing keys \d+ .*unexpected keys 2 \(bias, weight\)"):
        load_teacher(f"deeplabv3:{tmp_path / 'conv.pt'}", "cpu")
    partial = {k: v for k, v in deeplab["state"].items() if "classifier.4" not in k}
    torch.save({"state_dict": partial}, tmp_path / "partial.pt")
    with pytest.raises(UserError, match=r"missing keys 2 \(classifier.4.bias, classifier.4.weight\)"):
        load_teacher(f"deeplabv3:{tmp_path / 'partial.pt'}", "cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_teacher(f"deeplabv3:{tmp_path / 'junk.pt'}", "cpu")
    with pytest.raises(UserError, match="not found"):
        load_teacher(f"deeplabv3:{tmp_path / 'none.pt'}", "cpu")
    for spec in ("resnet:x.pt", "deeplabv3", str(deeplab["path"]), "run:"):
        with pytest.raises(UserError, match="deeplabv3:CKPT .* or run:RUN"):
            load_teacher(spec, "cpu")
    with pytest.raises(UserError, match="std must be > 0"):
        load_teacher(f"deeplabv3:{deeplab['path']}", "cpu", std=0.0)


@pytest.mark.parametrize(("prompt", "text"), [
    ("p0", ""),
    ("p1", "Left ventricular cavity of the heart."),
    ("p1_b", "Left ventricular cavity in the cardiac ultrasound."),
    ("p2", "Left ventricular cavity in four-chamber view of the heart."),
    ("p7", "Left ventricular cavity in four-chamber view of the heart."),
    ("p4_b", "Left ventricular cavity in four-chamber view in the cardiac ultrasound."),
    ("random", "Left ventricular cavity in four-chamber view of the heart."),
    ("random:p1", "Left ventricular cavity of the heart."),
])
def test_lv_frame_prompt(prompt, text):
    assert lv_frame_prompt(prompt) == text


FAST = ["--config", "tiny", "--input-size", "16", "--eval-size", "32", "--epochs", "1", "--batch-size", "8",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Tiny unet and clipseg runs trained by the engine on toy CAMUS."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["data", "toy", "camus", "--patients", "3", "--size", "48", "--out", str(root / "camus")]) == 0
    assert main(["prompts", "build", str(root / "camus"), "--out", str(root / "real")]) == 0
    runs = {}
    for model, prompt in (("unet", "p1"), ("clipseg", "p4_b")):
        runs[model] = root / model
        assert main(["train", "--model", model, *FAST, "--data", str(root / "real"), "--prompt", prompt,
                     "--out", str(runs[model])]) == 0
    return runs


def test_run_teachers(trained):
    from echoseg.core.data.cache import resize_image
    from echoseg.core.models.artefacts import load_trained_model

    frames = np.random.default_rng(1).integers(0, 256, (5, 40, 30), dtype=np.uint8)
    for kind, text in (("unet", None), ("clipseg", "Left ventricular cavity in four-chamber view in the cardiac "
                                                   "ultrasound.")):
        teacher = load_teacher(f"run:{trained[kind]}", "cpu", prompt_for=lv_frame_prompt)
        assert teacher.info["prompt_text"] == text and teacher.info["model"] == kind
        probs = teacher.predict(frames, batch_size=2)
        assert probs.shape == (5, 40, 30) and probs.dtype == np.float32 and 0 <= probs.min() <= probs.max() <= 1
        model, _ = load_trained_model(trained[kind])
        model.eval()
        x = np.stack([resize_image(f, model.input_size) for f in frames]).astype(np.float32) / 255
        x = torch.from_numpy(x)[:, None].repeat(1, 3, 1, 1)
        x = (x - torch.tensor(model.mean).view(1, 3, 1, 1)) / torch.tensor(model.std).view(1, 3, 1, 1)
        with torch.no_grad():
            logits = model(x, [text or ""] * 5, torch.ones(5, dtype=torch.long))
        expected = torch.sigmoid(F.interpolate(logits, size=(40, 30), mode="bilinear", align_corners=False))[:, 0]
        np.testing.assert_allclose(probs, expected.numpy(), atol=1e-5)
        assert teacher.num_parameters() == sum(p.numel() for p in model.parameters())
        assert teacher.gflops(40, 30) > 0


def test_run_teacher_errors(trained, tmp_path):
    with pytest.raises(UserError, match="not a training run"):
        load_teacher(f"run:{tmp_path}", "cpu")
    with pytest.raises(UserError, match="run directory not found"):
        load_teacher(f"run:{tmp_path / 'nope'}", "cpu")
    with pytest.raises(UserError, match="deeplabv3 teachers only"):
        load_teacher(f"run:{trained['unet']}", "cpu", mean=30.0)
    with pytest.raises(UserError, match="deeplabv3 teachers only"):
        load_teacher(f"run:{trained['unet']}", "cpu", mean="auto", data=tmp_path)
