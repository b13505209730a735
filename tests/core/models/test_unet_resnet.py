"""The U-Net on a ResNet encoder: shapes, encoder sources, freezing with BatchNorm in eval mode, offline rebuild."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock, ResNet

from echoseg.core.errors import UserError
from echoseg.core.io import write_json
from echoseg.core.models import build_model
from echoseg.core.models.unet import UNet
from echoseg.core.models.unet_resnet import IMAGENET_MEAN, UNetResNet, check_encoder
from echoseg.core.train.recipe import TrainConfig


def _tiny_resnet_state(seed: int, with_fc: bool = False) -> dict[str, torch.Tensor]:
    """A randomly initialised ResNet(BasicBlock, [1, 1, 1, 1]) state dict (torchvision keys) with non-trivial BN."""
    torch.manual_seed(seed)
    net = ResNet(BasicBlock, [1, 1, 1, 1])
    state = {k: v.clone() for k, v in net.state_dict().items() if with_fc or not k.startswith("fc.")}
    for k in state:
        if k.endswith(("running_mean", "running_var")):
            state[k] = torch.rand_like(state[k]) + 0.5  # unlike a fresh model's 0/1, so a load is visible
    return state


def _pretrain_run(folder, arch: str = "resnet_tiny", seed: int = 1):
    """The encoders/image/ folder a pretrain run exports (pretrain.outputs.export_encoders' layout)."""
    image = folder / "encoders" / "image"
    image.mkdir(parents=True)
    save_file(_tiny_resnet_state(seed), str(image / "model.safetensors"))
    write_json(image / "config.json", {"architecture": arch, "library": "torchvision", "input_size": 32,
                                       "mean": [0.4, 0.3, 0.2], "std": [0.2, 0.25, 0.3], "method": "gloria",
                                       "pretrain_run_id": "abc"})
    return folder


def _batch(n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(n, 3, size, size), torch.tensor([1, 3, 2, 1][:n])


def test_shapes_and_each_sample_gets_its_structure_map():
    model = build_model("unet", "tiny", encoder="random", input_size=64).eval()
    assert isinstance(model, UNetResNet) and model.architecture == "resnet_tiny" and not model.uses_text
    images, structures = _batch(3, 64)
    with torch.no_grad():
        out, every = model(images, None, structures), model.forward_all(images)
    assert out.shape == (3, 1, 64, 64) and every.shape == (3, 3, 64, 64)
    for i, s in enumerate(structures.tolist()):
        assert torch.equal(out[i, 0], every[i, s - 1])
    assert isinstance(build_model("unet", "tiny"), UNet)  # without --encoder: the plain U-Net
    with pytest.raises(UserError, match="multiple of 32"):
        build_model("unet", "tiny", encoder="random", input_size=48)


def test_freezing_keeps_encoder_batchnorm_in_eval_mode_and_its_statistics_fixed():
    model = build_model("unet", "tiny", encoder="random", input_size=32)
    encoder_bn = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    decoder_bn = [m for m in model.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.train()
    assert all(m.training for m in encoder_bn)  # not frozen: the encoder trains as usual
    n = model.freeze_encoders()
    assert n == len(list(model.encoder.parameters())) > 0
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters()) and model.head.weight.requires_grad
    model.train()  # what the training loop calls every epoch
    assert not any(m.training for m in encoder_bn) and all(m.training for m in decoder_bn)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    dec_before = decoder_bn[0].running_mean.clone()
    images, structures = _batch()
    model(images, None, structures).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert not torch.equal(dec_before, decoder_bn[0].running_mean)  # the decoder's BatchNorm still learns
    model.eval()
    model.train(True)
    assert not any(m.training for m in encoder_bn)


def test_vlp_source_loads_the_backbone_and_the_spec_rebuilds_without_the_run(tmp_path):
    run = _pretrain_run(tmp_path / "pt")
    model = build_model("unet", "tiny", encoder=f"vlp:{run}", input_size=32).eval()
    expected = _tiny_resnet_state(1)
    own = model.encoder.state_dict()
    assert set(own) == set(expected) and all(torch.equal(own[k], expected[k]) for k in expected)
    assert model.mean == (0.4, 0.3, 0.2) and model.std == (0.2, 0.25, 0.3)  # the run's normalisation
    spec = model.spec()
    assert "encoder" not in spec and spec["architecture"] == "resnet_tiny"
    assert spec["encoder_init"] == {"source": "vlp", "path": str(run.resolve()), "architecture": "resnet_tiny",
                                    "method": "gloria", "pretrain_run_id": "abc"}
    shutil.rmtree(run)
    rebuilt = build_model("unet", spec).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.spec() == spec and rebuilt.mean == model.mean
    images, structures = _batch()
    with torch.no_grad():
        assert torch.allclose(rebuilt(images, None, structures), model(images, None, structures))


def test_imagenet_and_random_sources(tmp_path):
    torch.save(_tiny_resnet_state(2, with_fc=True), tmp_path / "resnet.pth")
    model = build_model("unet", "tiny", encoder=f"imagenet:{tmp_path / 'resnet.pth'}", input_size=32)
    expected = _tiny_resnet_state(2)
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in expected.items())  # fc.* ignored
    assert model.mean == IMAGENET_MEAN and model.spec()["encoder_init"]["source"] == "imagenet"
    torch.manual_seed(5)
    a = build_model("unet", "tiny", encoder="random", input_size=32)
    assert a.spec()["encoder_init"] == {"source": "random", "architecture": "resnet_tiny"} and a.mean == (0.5, 0.5, 0.5)
    assert not torch.equal(a.encoder.conv1.weight, model.encoder.conv1.weight)
    bad = _tiny_resnet_state(2)
    bad["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not resnet_tiny weights .shape mismatch"):
        build_model("unet", "tiny", encoder=f"imagenet:{tmp_path / 'bad.pth'}", input_size=32)


@pytest.mark.parametrize(("value", "needle"), [
    ("vit", "not a ResNet"),
    ("missing", "not a finished pretrain run"),
    ("imagenet:/no/such.pth", "no such weights file"),
    ("resnet50", "expected vlp:PRETRAIN_RUN, imagenet:FILE or random"),
])
def test_bad_encoder_sources_are_one_line_user_errors(tmp_path, value, needle):
    if value == "vit":
        value = f"vlp:{_pretrain_run(tmp_path / 'vit', arch='vit_tiny')}"
    elif value == "missing":
        value = f"vlp:{tmp_path / 'nothing'}"
    with pytest.raises(UserError, match=needle) as err:
        check_encoder(value)
    assert "\n" not in str(err.value)


def test_train_config_checks_encoder_and_train_fraction():
    TrainConfig(model="unet", encoder="random", train_fraction=0.01).validate()
    for kwargs, needle in (({"model": "clipseg", "encoder": "random"}, "only the U-Net"),
                           ({"model": "unet", "encoder": "vlp:"}, "expected vlp"),
                           ({"model": "unet", "train_fraction": 0.0}, "--train-fraction"),
                           ({"model": "unet", "train_fraction": 1.5}, "--train-fraction")):
        with pytest.raises(UserError, match=needle):
            TrainConfig(**kwargs).validate()
