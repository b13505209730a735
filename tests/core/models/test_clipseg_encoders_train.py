"""CLIPSeg's CLIP encoders learn unless frozen: transformers' forward runs them under torch.no_grad(), so echoseg
runs its steps itself (issue 18: Synthetic Boost's frozen vs unfrozen encoders)."""

from __future__ import annotations

import torch

from echoseg.core.models import build_model

TEXTS = ["Left ventricular cavity of the heart.", "Myocardium of the heart.", ""]


def test_same_logits_as_transformers_forward():
    torch.manual_seed(0)
    m = build_model("clipseg", "tiny", input_size=32).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours = m(x, TEXTS)
        theirs = m.hf(pixel_values=x, **m.tokenize(TEXTS)).logits.reshape(3, 1, 32, 32)
    assert torch.allclose(ours, theirs, atol=1e-6)


def _clip_grads(frozen: bool) -> tuple[int, int]:
    torch.manual_seed(0)
    m = build_model("clipseg", "tiny", input_size=32).train()
    if frozen:
        assert m.freeze_encoders() > 0
    m(torch.randn(2, 3, 32, 32), TEXTS[:2]).square().mean().backward()
    clip = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in m.hf.clip.text_model.parameters()]
    decoder = [p.grad is not None for p in m.hf.decoder.parameters()]
    return sum(clip), sum(decoder)


def test_unfrozen_encoders_get_gradients_and_frozen_ones_do_not():
    text_unfrozen, decoder_unfrozen = _clip_grads(frozen=False)
    text_frozen, decoder_frozen = _clip_grads(frozen=True)
    assert text_unfrozen > 0 and text_frozen == 0
    assert decoder_unfrozen == decoder_frozen > 0
