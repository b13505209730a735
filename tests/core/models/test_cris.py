"""CRIS: block shapes, parameter count, weight mapping, freezing and the padding mask."""

from __future__ import annotations

import pytest
import torch

from echoseg.core.errors import UserError
from echoseg.core.models import build_model
from echoseg.core.models.cris import build_clip, clip_tokenizer, padding_mask
from echoseg.core.models.cris_weights import (
    convert_cris,
    from_original,
    load_weights,
    read_state,
    to_original,
)

PROMPTS = ["left ventricle", "myocardium of the heart in a two chamber view at end diastole, poor quality image"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("cris", "tiny").eval()


@pytest.fixture(scope="module")
def rn50():
    torch.manual_seed(0)
    return build_model("cris", "rn50").eval()


def test_tiny_block_shapes(tiny):
    x = torch.randn(2, 3, 64, 64)
    tokens = tiny.tokenize(PROMPTS)
    assert tokens.shape == (2, 17)
    with torch.no_grad():
        c3, c4, c5 = tiny.backbone.encode_image(x)
        assert (c3.shape, c4.shape, c5.shape) == ((2, 64, 8, 8), (2, 128, 4, 4), (2, 64, 2, 2))
        words, state = tiny.backbone.encode_text(tokens)
        assert words.shape == (2, 17, 32) and state.shape == (2, 64)
        fq = tiny.neck((c3, c4, c5), state)
        assert fq.shape == (2, 32, 4, 4)
        fq = tiny.decoder(fq, words, padding_mask(tokens))
        assert fq.shape == (2, 32, 4, 4)
        assert tiny.proj(fq, state).shape == (2, 1, 16, 16)
        assert tiny.predict_tokens(x, tokens).shape == (2, 1, 16, 16)
        out = tiny(x, PROMPTS)
        assert out.shape == (2, 1, 64, 64) and torch.isfinite(out).all()
        # another input size (multiple of 32): the attention pool's position grid is resized
        assert tiny(torch.randn(1, 3, 96, 128), PROMPTS[:1]).shape == (1, 1, 96, 128)


def test_rn50_block_shapes_at_416(rn50):
    x = torch.randn(1, 3, 416, 416)
    tokens = rn50.tokenize(["left ventricle"])
    assert tokens.shape == (1, 77)
    with torch.no_grad():
        c3, c4, c5 = rn50.backbone.encode_image(x)
        assert (c3.shape, c4.shape, c5.shape) == ((1, 512, 52, 52), (1, 1024, 26, 26), (1, 1024, 13, 13))
        words, state = rn50.backbone.encode_text(tokens)
        assert words.shape == (1, 77, 512) and state.shape == (1, 1024)
        fq = rn50.neck((c3, c4, c5), state)
        assert fq.shape == (1, 512, 26, 26)
        fq = rn50.decoder(fq, words, padding_mask(tokens))
        assert fq.shape == (1, 512, 26, 26)
        low = rn50.proj(fq, state)
        assert low.shape == (1, 1, 104, 104)
        full = torch.nn.functional.interpolate(low, size=(416, 416), mode="bilinear", align_corners=False)
        assert full.shape == (1, 1, 416, 416) and torch.isfinite(full).all()
    assert rn50.proj.txt.out_features == 256 * 9 + 1 and rn50.proj.txt.in_features == 1024
    assert len(rn50.decoder.layers) == 3 and rn50.decoder.layers[0].self_attn.num_heads == 8


def test_rn50_parameter_count(rn50):
    import open_clip

    count = sum(p.numel() for p in rn50.parameters())
    assert count == 146_849_122  # documented in echoseg.core.models.cris
    clip_count = sum(p.numel() for p in open_clip.create_model("RN50", pretrained=None).parameters())
    connect = sum(p.numel() for p in rn50.backbone.visual.attnpool.connect.parameters())
    assert sum(p.numel() for p in rn50.backbone.parameters()) == clip_count + connect
    assert connect == 2048 * 1024 + 2 * 1024
    assert rn50.preprocess_info()["input_size"] == 416


def test_rn101_config_dims():
    from echoseg.core.models import get_config

    cfg = get_config("cris", "rn101")
    assert cfg["word_dim"] == 512 and cfg["fpn_in"] == [512, 1024, 512] and cfg["clip_model"] == "RN101"


def test_inconsistent_config_is_user_error():
    with pytest.raises(UserError, match="vis_dim"):
        build_model("cris", "tiny", vis_dim=48)
    with pytest.raises(UserError, match="input_size"):
        build_model("cris", "tiny", input_size=70)


def test_tokenizer_offline_and_truncation():
    tok = clip_tokenizer(8)
    ids = tok(["left ventricle", "a very long prompt that cannot fit in eight tokens at all"])
    assert ids.shape == (2, 8)
    assert ids[0, 0] == tok.sot_token_id and tok.eot_token_id in ids[0].tolist()
    assert ids[0, -1] == 0  # padded with zeros after the end-of-text token
    assert ids[1, -1] == tok.eot_token_id  # truncated prompts keep EOT last


def test_padding_mask_marks_only_positions_after_eot(tiny):
    tokens = tiny.tokenize(["left ventricle"])
    mask = padding_mask(tokens)
    eot = int(tokens.argmax())
    assert not mask[0, : eot + 1].any() and mask[0, eot + 1 :].all()


def test_tokens_after_eot_do_not_change_output(tiny):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    tokens = tiny.tokenize(["left ventricle"])
    eot = int(tokens.argmax())
    noisy = tokens.clone()
    noisy[0, eot + 1 :] = torch.randint(1, 40000, (tokens.shape[1] - eot - 1,))
    with torch.no_grad():
        assert torch.allclose(tiny(x, tokens), tiny(x, noisy), atol=1e-5)
        # the check has teeth: without the mask the decoder attends to the changed positions
        words, state = tiny.backbone.encode_text(tokens)
        words_noisy, _ = tiny.backbone.encode_text(noisy)
        fq = tiny.neck(tiny.backbone.encode_image(x), state)
        unmasked = tiny.decoder(fq, words, None), tiny.decoder(fq, words_noisy, None)
        assert not torch.allclose(*unmasked, atol=1e-5)


def _grads(model) -> tuple[set[str], set[str]]:
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(torch.randn(2, 3, 64, 64), PROMPTS)
    out.mean().backward()
    named = dict(model.named_parameters())
    with_grad = {n for n, p in named.items() if p.grad is not None}
    return with_grad, set(named) - with_grad


def test_unfrozen_backbone_gets_gradients():
    torch.manual_seed(0)
    model = build_model("cris", "tiny")
    with_grad, without = _grads(model)
    assert without == {"backbone.logit_scale"}  # CLIP's temperature is unused by CRIS (and not trainable)
    assert any(n.startswith("backbone.visual.") for n in with_grad)
    assert any(n.startswith("backbone.transformer.") for n in with_grad)


def test_frozen_backbone_gets_no_gradients_and_keeps_bn_stats():
    torch.manual_seed(0)
    model = build_model("cris", "tiny")
    frozen = model.freeze_encoders()
    assert frozen == sum(1 for _ in model.backbone.parameters())
    before = model.backbone.visual.bn1.running_mean.clone()
    with_grad, without = _grads(model)
    assert without == {n for n, _ in model.backbone.named_parameters(prefix="backbone")}
    assert with_grad and all(n.startswith(("neck.", "decoder.", "proj.")) for n in with_grad)
    assert torch.equal(before, model.backbone.visual.bn1.running_mean)  # backbone BN stays in eval mode
    assert model.neck.training and not model.backbone.training


def test_single_sample_training_step():
    model = build_model("cris", "tiny").train()
    out = model(torch.randn(1, 3, 64, 64), ["left atrium"])
    out.mean().backward()
    assert out.shape == (1, 1, 64, 64)


def _original_checkpoint(model, path):
    torch.save({"epoch": 3, "best_iou": 0.5, "state_dict": to_original(model.state_dict())}, path)


def test_original_checkpoint_round_trip(tmp_path, tiny):
    path = tmp_path / "cris_original.pth"
    _original_checkpoint(tiny, path)
    raw = read_state(path)
    assert all(k.startswith("module.") for k in raw)
    assert {k.split(".")[1] for k in raw} == {"backbone", "neck", "decoder", "proj"}
    assert set(from_original(raw)) == set(tiny.state_dict())
    torch.manual_seed(123)
    other = build_model("cris", "tiny").eval()
    assert load_weights(other, path) == "cris"  # strict: no missing, no unexpected keys
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(tiny(x, ["left ventricle"]), other(x, ["left ventricle"]))


def test_converted_folder_rebuilds_offline(tmp_path, tiny):
    from echoseg.core.models.artefacts import load_trained_model

    path = tmp_path / "cris_original.pth"
    _original_checkpoint(tiny, path)
    summary = convert_cris(path, tmp_path / "run", config="tiny")
    assert summary["config"] == "tiny" and summary["word_len"] == 17
    model, info = load_trained_model(tmp_path / "run")
    assert info["name"] == "cris" and info["spec"]["fpn_out"] == [16, 32, 64]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(tiny(x, ["left ventricle"]), model.eval()(x, ["left ventricle"]), atol=1e-5)
    fresh = build_model("cris", "tiny")
    assert load_weights(fresh, tmp_path / "run") == "cris"


def test_strict_check_lists_missing_and_unexpected(tmp_path, tiny):
    state = to_original(tiny.state_dict())
    del state["module.neck.f1_v_proj.0.weight"]
    state["module.decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(UserError) as err:
        load_weights(build_model("cris", "tiny"), path)
    msg = str(err.value)
    assert "1 missing key(s): neck.f1_v_proj.0.weight" in msg and "1 unexpected key(s): decoder.extra.weight" in msg
    with pytest.raises(UserError, match="outside backbone"):
        from_original({"module.head.weight": torch.zeros(1)})


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, but OpenAI's files use it
def test_clip_weights_load_into_backbone(tmp_path):
    torch.manual_seed(5)
    clip = build_clip(build_model("cris", "tiny").spec()).eval()
    plain = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), plain)
    scripted = tmp_path / "clip_openai_jit.pt"  # OpenAI's release format is a TorchScript archive
    torch.jit.script(clip).save(str(scripted))
    clip_state = clip.state_dict()
    for path in (plain, scripted):
        model = build_model("cris", "tiny")
        connect = model.backbone.visual.attnpool.connect[0].weight.clone()
        assert load_weights(model, path) == "clip"
        own = model.state_dict()
        for k, v in clip_state.items():
            assert torch.equal(own["backbone." + k], v), k
        assert torch.equal(connect, model.backbone.visual.attnpool.connect[0].weight)


def test_wrong_clip_architecture_is_user_error(tmp_path):
    cfg = build_model("cris", "tiny").spec()
    cfg["clip_cfg"]["text_cfg"]["width"] = 48
    path = tmp_path / "other_clip.pt"
    torch.save(build_clip(cfg).state_dict(), path)
    with pytest.raises(UserError, match="another shape"):
        load_weights(build_model("cris", "tiny"), path)
    junk = tmp_path / "junk.pt"
    torch.save({"fc.weight": torch.zeros(2)}, junk)
    with pytest.raises(UserError, match="neither CLIP"):
        load_weights(build_model("cris", "tiny"), junk)
