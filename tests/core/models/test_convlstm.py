"""The ConvLSTM student: published parameter counts, causality, chunked = one pass, registry round trip, and the
folded fast inference path equal to the reference forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoseg.core.errors import UserError
from echoseg.core.models import build_model, list_configs

PUBLISHED = {(1, 1): 5_701, (2, 1): 39_577, (3, 1): 174_721, (4, 1): 714_577, (4, 4): 3_361_657}


@pytest.mark.parametrize(("blocks", "layers"), sorted(PUBLISHED))
def test_parameter_counts_match_echodfkd(blocks, layers):
    model = build_model("convlstm", "base", blocks=blocks, layers=layers)
    assert model.num_parameters() == PUBLISHED[(blocks, layers)]


def test_skips_add_decoder_parameters_only_when_there_is_a_decoder():
    assert build_model("convlstm", "base", blocks=1, skips=True).num_parameters() == PUBLISHED[(1, 1)]
    plain = build_model("convlstm", "base", blocks=3).num_parameters()
    skips = build_model("convlstm", "base", blocks=3, skips=True).num_parameters()
    # decoder convs see concat(upsampled, skip): (24 * 9 * 12) + (48 * 9 * 24) extra weights
    assert skips - plain == 12 * 9 * 12 + 24 * 9 * 24


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("skips", [False, True])
def test_causal_output_at_t_ignores_later_frames(skips, fast):
    torch.manual_seed(0)
    model = build_model("convlstm", "tiny", blocks=2, skips=skips).eval()
    x = torch.randn(2, 6, 1, 24, 20)  # odd multiple: padding path too
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, 1, 24, 20) * 5
    with torch.no_grad():
        a, b = model(x, fast=fast), model(y, fast=fast)
    assert a.shape == (2, 6, 1, 24, 20)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    # and the past matters: changing frame 0 changes frame 3
    z = x.clone()
    z[:, 0] += 3
    with torch.no_grad():
        assert not torch.allclose(model(z, fast=fast)[:, 3], a[:, 3])


def _randomise(model, seed: int):
    """Random weights and non-trivial BatchNorm statistics (some negative scales: the BN-before-pool branch)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (2.0 / max(1, p[0].numel())) ** 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1.0)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
        for k, bn in enumerate(n for norms in model.enc_norms for n in norms):
            bn.weight.abs_()
            if k % 2:  # a negative scale: max-pool does not commute with this BatchNorm
                bn.weight[0] = -bn.weight[0]
    return model


@pytest.mark.parametrize("skips", [False, True])
@pytest.mark.parametrize(("blocks", "layers"), [(1, 1), (2, 1), (3, 1), (4, 1), (2, 2), (1, 3)])
def test_fast_inference_path_equals_reference(blocks, layers, skips):
    model = _randomise(build_model("convlstm", "tiny", blocks=blocks, layers=layers, skips=skips), blocks).eval()
    pool_first = [layer.pool_first for block in model._plan().layers for layer in block]
    assert pool_first[::2] == [True] * len(pool_first[::2]) and not any(pool_first[1::2])
    x = torch.randn(2, 5, 1, 19, 26, generator=torch.Generator().manual_seed(3))  # not a multiple: padding
    with torch.no_grad():
        ref, ref_state = model(x, return_state=True, fast=False)
        out, state = model(x, return_state=True)  # eval + no_grad: the fast path by default
        _, head = model(x[:, :2], return_state=True, fast=False)  # states interchange between the paths
        tail = model(x[:, 2:], head, fast=True)
    assert out.shape == ref.shape == (2, 5, 1, 19, 26) and ref.abs().max() > 0.1
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)  # float32 rounding (logits reach ~10)
    torch.testing.assert_close(tail, ref[:, 2:], atol=1e-5, rtol=1e-5)
    for (h, c), (rh, rc) in zip(state, ref_state, strict=True):
        torch.testing.assert_close(h, rh, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c, rc, atol=1e-5, rtol=1e-5)
    model.double()  # the same computation, re-associated: in float64 the paths agree to ~1e-14
    with torch.no_grad():
        torch.testing.assert_close(model(x.double()), model(x.double(), fast=False), atol=1e-10, rtol=0)


def test_fast_path_cache_follows_the_weights_and_leaves_the_state_dict_alone():
    model = build_model("convlstm", "tiny", blocks=2).eval()
    keys = list(model.state_dict())
    x = torch.randn(1, 3, 1, 16, 16)
    with torch.no_grad():
        before = model(x)
        other = _randomise(build_model("convlstm", "tiny", blocks=2), 7).state_dict()
        model.load_state_dict(other)  # in-place copies: the folded weights must be rebuilt
        torch.testing.assert_close(model(x), model(x, fast=False), atol=1e-5, rtol=0)
        assert not torch.allclose(model(x), before)
        model.enc_norms[0][0].running_var.mul_(4)
        torch.testing.assert_close(model(x), model(x, fast=False), atol=1e-5, rtol=0)
    assert list(model.state_dict()) == keys
    model.train()
    assert "_fast_plan" not in model.__dict__
    y = model(x.requires_grad_())  # training: the reference (autograd) path
    assert y.requires_grad
    with pytest.raises(ValueError, match="eval mode"):
        model(x, fast=True)


def test_chunked_predict_equals_one_pass_and_training_path_matches_inference():
    torch.manual_seed(1)
    model = build_model("convlstm", "tiny", blocks=2, layers=2, mean=40.0, std=50.0).eval()
    frames = np.random.default_rng(0).integers(0, 255, (11, 16, 16), dtype=np.uint8)
    whole = model.predict(frames, batch_size=100)
    chunked = model.predict(frames, batch_size=3)
    np.testing.assert_allclose(whole, chunked, atol=1e-5)
    assert whole.dtype == np.float32 and whole.shape == frames.shape and 0 <= whole.min() <= whole.max() <= 1
    x = model.normalise(torch.from_numpy(frames))[None, :, None]
    grad_path = model(x.requires_grad_(), model.warm_state(x.detach()))  # autograd recurrence, from predict's start
    np.testing.assert_allclose(torch.sigmoid(grad_path)[0, :, 0].detach().numpy(), whole, atol=1e-5)


def test_spec_round_trip_flops_and_bad_configs():
    model = build_model("convlstm", "tiny", blocks=3, layers=2, skips=True, mean=10.0, std=20.0)
    again = build_model("convlstm", model.spec())
    assert again.spec() == model.spec() and again.num_parameters() == model.num_parameters()
    assert 0 < build_model("convlstm", "tiny", blocks=1).gflops(32, 32) < model.gflops(32, 32)
    assert {"tiny", "base"} <= set(list_configs("convlstm"))
    with pytest.raises(UserError, match="--blocks"):
        build_model("convlstm", "tiny", blocks=5)
    with pytest.raises(UserError, match="--layers"):
        build_model("convlstm", "tiny", layers=0)
