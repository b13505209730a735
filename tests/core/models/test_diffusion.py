"""The conditional UNet: configs, conditioning, save/load and per-sample-seeded sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoseg.core.errors import UserError
from echoseg.core.models.diffusion import (
    build_scheduler,
    build_unet,
    conditioning_meta,
    get_config,
    load_model,
    model_input,
    one_hot,
    resolve_model_dir,
    save_model,
)
from echoseg.core.synth.sample import make_sampler, sample

SIZE = 16


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = get_config("tiny")
    return build_unet(cfg["unet"], SIZE).eval(), build_scheduler(cfg["scheduler"])


def _labels(n: int) -> np.ndarray:
    lab = np.zeros((n, SIZE, SIZE), np.uint8)
    lab[:, 2:14, 3:13] = 2
    lab[:, 4:9, 6:10] = 1
    lab[:, 9:12, 6:10] = 4
    lab[:, 3:10, 5] = 3
    return lab


def test_configs_and_input_channels(tiny):
    unet, _ = tiny
    assert unet.config.in_channels == 6 and unet.config.out_channels == 1
    assert len(get_config("base")["unet"]["block_out_channels"]) == 6
    with pytest.raises(UserError, match="--config"):
        get_config("huge")
    with pytest.raises(UserError, match="divisible"):
        build_unet(get_config("base")["unet"], 40)


def test_one_hot_and_null_condition():
    lab = torch.tensor(_labels(2)).long()
    cond = one_hot(lab, drop=torch.tensor([False, True]))
    assert cond.shape == (2, 5, SIZE, SIZE)
    assert torch.equal(cond[0].sum(0), torch.ones(SIZE, SIZE))
    assert torch.equal(cond[0].argmax(0), lab[0])
    assert cond[1].abs().sum() == 0  # dropped: the all-zero null map
    x = model_input(torch.zeros(2, 1, SIZE, SIZE), cond)
    assert x.shape == (2, 6, SIZE, SIZE)


def test_save_and_reload_give_the_same_model(tiny, tmp_path):
    unet, sched = tiny
    folder = save_model(tmp_path / "run" / "model", unet, sched, conditioning_meta("tiny", SIZE, 0.1))
    assert (folder / "unet" / "config.json").is_file() and (folder / "scheduler" / "scheduler_config.json").is_file()
    assert resolve_model_dir(tmp_path / "run") == folder
    unet2, sched2, meta = load_model(tmp_path / "run")
    assert meta["size"] == SIZE and meta["num_classes"] == 5 and meta["cond_dropout"] == 0.1
    assert sched2.config.num_train_timesteps == sched.config.num_train_timesteps
    x = torch.randn(1, 6, SIZE, SIZE)
    t = torch.tensor([10])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t).sample, unet2.eval()(x, t).sample)
    with pytest.raises(UserError, match="--model"):
        load_model(tmp_path)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpm-solver"])
def test_samples_depend_only_on_their_own_seed(tiny, sampler):
    unet, sched = tiny
    lab = _labels(3)
    together = sample(unet, make_sampler(sampler, sched), lab, [5, 6, 7], steps=4)
    alone = sample(unet, make_sampler(sampler, sched), lab[1:2], [6], steps=4)
    assert together.shape == (3, SIZE, SIZE) and together.dtype == np.uint8
    np.testing.assert_array_equal(together[1], alone[0])
    assert not np.array_equal(together[0], together[1])
    assert (together[:, lab[0] == 0] == 0).all()  # black outside the cone


def test_guidance_changes_the_sample(tiny):
    unet, sched = tiny
    lab = _labels(1)
    plain = sample(unet, make_sampler("ddim", sched), lab, [1], steps=3, guidance=1.0)
    guided = sample(unet, make_sampler("ddim", sched), lab, [1], steps=3, guidance=3.0)
    assert plain.shape == guided.shape and not np.array_equal(plain, guided)
    with pytest.raises(UserError, match="--sampler"):
        make_sampler("euler", sched)
