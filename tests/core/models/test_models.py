"""Registry, CLIPSeg (tiny, offline tokenizer), U-Net baseline, freezing and weight resolution."""

from __future__ import annotations

import json

import pytest
import torch

from echoseg.core.errors import UserError
from echoseg.core.models import build_model, get_config, list_configs, list_models
from echoseg.core.models.tokenizer import offline_clip_tokenizer
from echoseg.core.models.weights import load_state_dict_file, resolve_weights


def test_registry_lists_models_and_configs():
    assert {"clipseg", "unet"} <= set(list_models())
    assert {"tiny", "base"} <= set(list_configs("clipseg"))
    assert get_config("clipseg", "base")["input_size"] == 352
    assert get_config("clipseg", "base")["lr"] == pytest.approx(2e-3)
    with pytest.raises(UserError, match="--model 'nope'"):
        build_model("nope")
    with pytest.raises(UserError, match="unknown config"):
        build_model("unet", "huge")


def test_offline_tokenizer_tokenizes_any_prompt():
    tok = offline_clip_tokenizer()
    ids = tok("Left ventricular cavity of the heart.")["input_ids"]
    toks = tok.convert_ids_to_tokens(ids)
    assert toks[0] == "<|startoftext|>" and toks[-1] == "<|endoftext|>"
    assert "ventricular</w>" in toks and "heart</w>" in toks  # prompt words are whole tokens
    odd = "Zyxwv ünïcode ✓ 123"
    assert tok.decode(tok(odd)["input_ids"], skip_special_tokens=True).replace(" ", "") == odd.lower().replace(" ", "")
    long = tok(" ".join(["myocardium"] * 200), truncation=True, max_length=77)["input_ids"]
    assert len(long) == 77


def test_clipseg_tiny_forward_and_text_dependence():
    torch.manual_seed(0)
    m = build_model("clipseg", "tiny", input_size=16).eval()
    assert m.input_size == 16 and m.uses_text
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a = m(x, ["Left ventricular cavity of the heart.", "Myocardium of the heart."], torch.tensor([1, 2]))
        b = m(x, ["Left atrium cavity of the heart.", "Myocardium of the heart."], torch.tensor([1, 2]))
        one = m(x[:1], [""], torch.tensor([1]))
    assert a.shape == (2, 1, 16, 16) and one.shape == (1, 1, 16, 16)
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_clipseg_spec_and_saved_pretrained_folder_rebuild(tmp_path):
    torch.manual_seed(0)
    m = build_model("clipseg", "tiny", input_size=16).eval()
    x = torch.randn(1, 3, 16, 16)
    m.save_assets(tmp_path / "assets")
    rebuilt = build_model("clipseg", m.spec(), assets=tmp_path / "assets").eval()
    rebuilt.load_state_dict(m.state_dict())
    # a Hugging Face folder (as CIDAS/clipseg-rd64-refined) loads through --weights
    m.hf.save_pretrained(tmp_path / "hf")
    m.tokenizer.save_pretrained(tmp_path / "hf")
    loaded = build_model("clipseg", "tiny", weights=tmp_path / "hf", input_size=16).eval()
    with torch.no_grad():
        ref = m(x, ["Myocardium."])
        assert torch.allclose(rebuilt(x, ["Myocardium."]), ref)
        assert torch.allclose(loaded(x, ["Myocardium."]), ref, atol=1e-5)


def test_clipseg_normalisation_from_transformers_v5_processor_config(tmp_path):
    # transformers v5 saves a CLIPSegProcessor as processor_config.json (mean/std under "image_processor")
    # and writes no preprocessor_config.json; v4 wrote the latter with mean/std at the top level
    m = build_model("clipseg", "tiny", input_size=16)
    m.hf.save_pretrained(tmp_path / "v5")
    m.tokenizer.save_pretrained(tmp_path / "v5")
    (tmp_path / "v5" / "processor_config.json").write_text(json.dumps({
        "image_processor": {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6],
                            "image_processor_type": "ViTImageProcessor"},
        "processor_class": "CLIPSegProcessor"}))
    assert not (tmp_path / "v5" / "preprocessor_config.json").exists()
    loaded = build_model("clipseg", "tiny", weights=tmp_path / "v5", input_size=16)
    assert loaded.mean == pytest.approx((0.1, 0.2, 0.3)) and loaded.std == pytest.approx((0.4, 0.5, 0.6))
    # the v4 file still works
    m.hf.save_pretrained(tmp_path / "v4")
    m.tokenizer.save_pretrained(tmp_path / "v4")
    (tmp_path / "v4" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.7, 0.7, 0.7], "image_std": [0.2, 0.2, 0.2]}))
    loaded = build_model("clipseg", "tiny", weights=tmp_path / "v4", input_size=16)
    assert loaded.mean == pytest.approx((0.7,) * 3) and loaded.std == pytest.approx((0.2,) * 3)


def test_freeze_encoders_gives_no_gradient_to_clip():
    m = build_model("clipseg", "tiny", input_size=16)
    assert m.freeze_encoders() > 0
    out = m(torch.randn(2, 3, 16, 16), ["Myocardium.", "Left atrium cavity."], torch.tensor([2, 3]))
    out.sum().backward()
    assert all(p.grad is None for p in m.hf.clip.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.hf.decoder.parameters())


def test_unet_selects_structure_channel(tmp_path):
    torch.manual_seed(0)
    m = build_model("unet", "tiny", input_size=16).eval()
    x = torch.randn(3, 3, 16, 16)
    s = torch.tensor([1, 3, 2])
    with torch.no_grad():
        out, full = m(x, None, s), m.forward_all(x)
    assert out.shape == (3, 1, 16, 16) and full.shape == (3, 3, 16, 16)
    for i, label in enumerate(s.tolist()):
        assert torch.equal(out[i, 0], full[i, label - 1])
    assert list(m.encoder_parameters()) == [] and m.freeze_encoders() == 0
    torch.save(m.state_dict(), tmp_path / "w.pt")
    again = build_model("unet", "tiny", input_size=16, weights=tmp_path / "w.pt").eval()
    with torch.no_grad():
        assert torch.equal(again(x, None, s), out)
    with pytest.raises(UserError, match="divisible"):
        build_model("unet", "tiny", input_size=18)


def test_weights_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(UserError, match="HF_HUB_OFFLINE=1") as err:
        resolve_weights("someone/not-cached-model")
    assert "someone/not-cached-model" in str(err.value)
    with pytest.raises(UserError, match="lacks config.json"):
        resolve_weights(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        resolve_weights(tmp_path / "missing" / "deeper" / "x")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights"):
        load_state_dict_file(tmp_path / "bad.pt")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        build_model("clipseg", "base")  # the paper's weights are not cached here
