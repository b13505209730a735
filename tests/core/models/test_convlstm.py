"""The ConvLSTM student: published parameter counts, causality, chunked = one pass, registry round trip."""

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


@pytest.mark.parametrize("skips", [False, True])
def test_causal_output_at_t_ignores_later_frames(skips):
    torch.manual_seed(0)
    model = build_model("convlstm", "tiny", blocks=2, skips=skips).eval()
    x = torch.randn(2, 6, 1, 24, 20)  # odd multiple: padding path too
    y = x.clone()
    y[:, 4:] = torch.randn(2, 2, 1, 24, 20) * 5
    with torch.no_grad():
        a, b = model(x), model(y)
    assert a.shape == (2, 6, 1, 24, 20)
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    # and the past matters: changing frame 0 changes frame 3
    z = x.clone()
    z[:, 0] += 3
    with torch.no_grad():
        assert not torch.allclose(model(z)[:, 3], a[:, 3])


def test_chunked_predict_equals_one_pass_and_training_path_matches_inference():
    torch.manual_seed(1)
    model = build_model("convlstm", "tiny", blocks=2, layers=2, mean=40.0, std=50.0).eval()
    frames = np.random.default_rng(0).integers(0, 255, (11, 16, 16), dtype=np.uint8)
    whole = model.predict(frames, batch_size=100)
    chunked = model.predict(frames, batch_size=3)
    np.testing.assert_allclose(whole, chunked, atol=1e-5)
    assert whole.dtype == np.float32 and whole.shape == frames.shape and 0 <= whole.min() <= whole.max() <= 1
    x = model.normalise(torch.from_numpy(frames))[None, :, None]
    grad_path = model(x.requires_grad_())  # autograd (out-of-place) recurrence
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
