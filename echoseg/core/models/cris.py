"""CRIS: CLIP-driven referring image segmentation (Wang et al., CVPR 2022) on a CLIP ResNet backbone.

Blocks (shapes for the ``rn50`` config at 416x416, B images, L = ``word_len`` tokens):

- backbone (:class:`CLIPBackbone`): open_clip's ModifiedResNet gives layer2 (B, 512, 52, 52), layer3
  (B, 1024, 26, 26) and layer4 through a spatial attention pool (:class:`SpatialAttentionPool`: CLIP's
  AttentionPool2d weights applied to every location, position embedding resized bicubically, plus a residual
  1x1 conv + BN, then ReLU) (B, 1024, 13, 13); CLIP's causal text transformer gives word features (B, L, 512)
  and the sentence embedding at the end-of-text token (B, 1024).
- neck (:class:`TextGatedFPN`): the sentence embedding gates the 1/32 map, which is fused top-down with the
  1/16 and 1/8 maps, aggregated and passed through a CoordConv: (B, 512, 26, 26).
- decoder (:class:`VisionLanguageDecoder`): 3 pre-norm layers of self-attention over the 676 visual tokens,
  cross-attention to the word features (padding after the end-of-text token masked) and an FFN of 2048, 8 heads,
  sine position encodings, dropout 0.1.
- proj (:class:`Projector`): x4 upsampling to (B, 256, 104, 104) and a 3x3 convolution whose weights and bias
  come from the sentence embedding (``Linear(word_dim, 256*9+1)``): (B, 1, 104, 104), upsampled to the input
  size by :meth:`CRIS.forward`.

Parameter count (random init, computed from the architecture, asserted in tests/core/models/test_cris.py):
``rn50`` has 146,849,122 parameters: CLIP RN50 102,007,137 (open_clip's count) + the attention-pool residual
2,099,200 + neck 24,142,336 + decoder 12,631,552 + projector 5,968,897; ``rn101`` has 161,251,682. Neither
the CRIS paper (arXiv 2111.15174) nor the authors' README states a parameter count to compare with.

Parameter names follow the original implementation's checkpoint layout (``backbone.``/``neck.``/``decoder.``/
``proj.`` and the names below them), so the authors' checkpoints load after removing the ``module.`` prefix
(see :mod:`echoseg.core.models.cris_weights`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from echoseg.core.errors import UserError
from echoseg.core.models import register
from echoseg.core.models.base import SegModel
from echoseg.core.models.cris_weights import load_weights

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, padding: int = 0) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU (indices 0/1/2 as in the original checkpoints)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, 1, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


# ----------------------------------------------------------------------------------------------- backbone
class SpatialAttentionPool(nn.Module):
    """CLIP's attention pool kept spatial: every location attends to all others; no pooled token.

    Reuses the ``positional_embedding`` and q/k/v/c projections of an open_clip ``AttentionPool2d`` and adds the
    residual ``connect`` branch (1x1 conv + BN from the ResNet width to the output width).
    """

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.positional_embedding = pool.positional_embedding
        self.k_proj, self.q_proj, self.v_proj, self.c_proj = pool.k_proj, pool.q_proj, pool.v_proj, pool.c_proj
        self.num_heads = int(pool.num_heads)
        width, out = self.q_proj.in_features, self.c_proj.out_features
        self.grid = round(math.sqrt(self.positional_embedding.shape[0] - 1))
        self.connect = nn.Sequential(nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))

    def _positions(self, h: int, w: int) -> torch.Tensor:
        """The grid position embeddings (without the pooled token's) resized to (h*w, C)."""
        grid = self.positional_embedding[1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        if (h, w) != (self.grid, self.grid):
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, width, H, W) -> (B, out, H, W)."""
        b, c, h, w = x.shape
        residual = self.connect(x)
        tokens = x.flatten(2).transpose(1, 2) + self._positions(h, w).to(x.dtype)  # B, HW, C

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, h * w, self.num_heads, -1).transpose(1, 2)

        q, k, v = heads(self.q_proj(tokens)), heads(self.k_proj(tokens)), heads(self.v_proj(tokens))
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        out = self.c_proj(att).transpose(1, 2).reshape(b, -1, h, w)
        return F.relu(out + residual)


class CLIPBackbone(nn.Module):
    """CLIP's visual ResNet (three feature levels) and text transformer (word features + sentence embedding).

    Holds the towers of an open_clip ``CLIP`` under the original CLIP parameter names.
    """

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        if not hasattr(clip.visual, "layer4"):
            raise UserError("CRIS needs a CLIP ResNet (ModifiedResNet) image tower, not a ViT")
        self.visual = clip.visual
        self.visual.attnpool = SpatialAttentionPool(clip.visual.attnpool)
        self.transformer = clip.transformer
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        # unused by CRIS; kept so CLIP and CRIS checkpoints load strictly, and frozen so DDP sees no unused grad
        self.logit_scale = clip.logit_scale
        self.logit_scale.requires_grad_(False)

    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Feature maps at 1/8 (layer2), 1/16 (layer3) and 1/32 (attention-pooled layer4)."""
        v = self.visual
        x = images.to(v.conv1.weight.dtype)
        x = v.act1(v.bn1(v.conv1(x)))
        x = v.act2(v.bn2(v.conv2(x)))
        x = v.avgpool(v.act3(v.bn3(v.conv3(x))))
        c3 = v.layer2(v.layer1(x))
        c4 = v.layer3(c3)
        return c3, c4, v.attnpool(v.layer4(c4))

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Word features (B, L, width) after ``ln_final`` and the projected end-of-text embedding (B, embed)."""
        length = tokens.shape[1]
        if length > self.positional_embedding.shape[0]:
            raise UserError(f"word_len {length} exceeds CLIP's context length {self.positional_embedding.shape[0]}")
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        causal = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        x = self.ln_final(self.transformer(x, attn_mask=causal))
        state = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection
        return x, state


# ----------------------------------------------------------------------------------------------- neck
class CoordConv(nn.Module):
    """Conv-BN-ReLU over the input with two extra channels holding x and y in [-1, 1]."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin + 2, cout, kernel, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([grid_x, grid_y]).unsqueeze(0).expand(b, -1, -1, -1)
        return self.conv1(torch.cat([x, coords], dim=1))


class TextGatedFPN(nn.Module):
    """Fuse the 1/8, 1/16 and 1/32 maps with the sentence embedding into one 1/16 map of ``cout[1]`` channels."""

    def __init__(self, cin: Sequence[int], cout: Sequence[int]) -> None:
        super().__init__()
        c3, c4, c5 = cin
        o3, o4, o5 = cout
        self.txt_proj = nn.Sequential(nn.Linear(c5, o5, bias=False), nn.BatchNorm1d(o5), nn.ReLU(True))
        self.f1_v_proj = conv_bn_relu(c5, o5, 1, 0)
        self.norm_layer = nn.Sequential(nn.BatchNorm2d(o5), nn.ReLU(True))
        self.f2_v_proj = conv_bn_relu(c4, o4, 3, 1)
        self.f2_cat = conv_bn_relu(o5 + o4, o4, 1, 0)
        self.f3_v_proj = conv_bn_relu(c3, o3, 3, 1)
        self.f3_cat = conv_bn_relu(o3 + o4, o4, 1, 0)
        self.f4_proj5 = conv_bn_relu(o5, o4, 3, 1)
        self.f4_proj4 = conv_bn_relu(o4, o4, 3, 1)
        self.f4_proj3 = conv_bn_relu(o4, o4, 3, 1)
        self.aggr = conv_bn_relu(3 * o4, o4, 1, 0)
        self.coordconv = nn.Sequential(CoordConv(o4, o4, 3, 1), conv_bn_relu(o4, o4, 3, 1))

    def _gate(self, state: torch.Tensor) -> torch.Tensor:
        if self.training and state.shape[0] == 1:
            # BatchNorm1d cannot estimate batch statistics from one sample: use its running statistics then
            linear, bn, act = self.txt_proj
            y = F.batch_norm(linear(state), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            return act(y)
        return self.txt_proj(state)

    def forward(self, feats: Sequence[torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        v3, v4, v5 = feats
        f5 = self.norm_layer(self.f1_v_proj(v5) * self._gate(state)[:, :, None, None])
        size4 = v4.shape[-2:]
        f4 = self.f2_cat(torch.cat([self.f2_v_proj(v4), F.interpolate(f5, size=size4, mode="bilinear")], dim=1))
        f3 = F.avg_pool2d(self.f3_v_proj(v3), 2, 2)
        f3 = self.f3_cat(torch.cat([f3, f4], dim=1))
        q5 = F.interpolate(self.f4_proj5(f5), size=size4, mode="bilinear")
        fq = self.aggr(torch.cat([self.f4_proj3(f3), self.f4_proj4(f4), q5], dim=1))
        return self.coordconv(fq)


# ----------------------------------------------------------------------------------------------- decoder
@functools.lru_cache(maxsize=32)
def sine_1d(dim: int, length: int) -> torch.Tensor:
    """(length, dim) sinusoidal encodings: sin on even channels, cos on odd ones."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


@functools.lru_cache(maxsize=32)
def sine_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """(height*width, dim) encodings: the first half of the channels encodes x, the second half y."""
    if dim % 4:
        raise UserError(f"vis_dim must be a multiple of 4 for 2D sine encodings, got {dim}")
    half = dim // 2
    px, py = sine_1d(half, width), sine_1d(half, height)  # (W, half), (H, half)
    pe = torch.cat([px[None, :, :].expand(height, -1, -1), py[:, None, :].expand(-1, width, -1)], dim=-1)
    return pe.reshape(height * width, dim)


class DecoderLayer(nn.Module):
    """Pre-norm block: visual self-attention, cross-attention to words, FFN (each output normalised)."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(dim)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn), nn.ReLU(True), nn.Dropout(dropout), nn.LayerNorm(ffn), nn.Linear(ffn, dim)
        )
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2, self.dropout3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(
        self, vis: torch.Tensor, txt: torch.Tensor, vis_pos: torch.Tensor, txt_pos: torch.Tensor,
        pad_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        h = self.norm1(vis)
        q = h + vis_pos
        vis = vis + self.dropout1(self.self_attn_norm(self.self_attn(q, q, h, need_weights=False)[0]))
        h = self.norm2(vis)
        h = self.multihead_attn(h + vis_pos, txt + txt_pos, txt, key_padding_mask=pad_mask, need_weights=False)[0]
        vis = vis + self.dropout2(self.cross_attn_norm(h))
        return vis + self.dropout3(self.ffn(self.norm3(vis)))


class VisionLanguageDecoder(nn.Module):
    """A stack of :class:`DecoderLayer` over the flattened visual map, then a final LayerNorm."""

    def __init__(self, layers: int, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, vis: torch.Tensor, txt: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, C, H, W) visual map, (B, L, C) words, (B, L) True at padding -> (B, C, H, W)."""
        b, c, h, w = vis.shape
        vis_pos = sine_2d(c, h, w).to(vis.device, vis.dtype)
        txt_pos = sine_1d(txt.shape[-1], txt.shape[1]).to(txt.device, txt.dtype)
        x = vis.flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = layer(x, txt, vis_pos, txt_pos, pad_mask)
        return self.norm(x).transpose(1, 2).reshape(b, c, h, w)


# ----------------------------------------------------------------------------------------------- projector
class Projector(nn.Module):
    """x4 upsampling of the decoder map and a per-sample 3x3 convolution generated from the sentence."""

    def __init__(self, word_dim: int, in_dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.kernel = kernel
        self.vis = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear"),
            conv_bn_relu(2 * in_dim, 2 * in_dim, 3, 1),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            conv_bn_relu(2 * in_dim, in_dim, 3, 1),
            nn.Conv2d(in_dim, in_dim, 1),
        )
        self.txt = nn.Linear(word_dim, in_dim * kernel * kernel + 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """(B, 2*in_dim, h, w), (B, word_dim) -> (B, 1, 4h, 4w)."""
        x = self.vis(x)
        b, c, h, w = x.shape
        params = self.txt(state)
        weight = params[:, :-1].reshape(b, c, self.kernel, self.kernel)
        # one group per sample: a (1, B*C, H, W) input convolved with B kernels of C channels
        out = F.conv2d(x.reshape(1, b * c, h, w), weight, params[:, -1], padding=self.kernel // 2, groups=b)
        return out.reshape(b, 1, h, w)


# ----------------------------------------------------------------------------------------------- model
@functools.lru_cache(maxsize=4)
def clip_tokenizer(word_len: int):
    """open_clip's SimpleTokenizer (BPE vocabulary shipped in the package, works offline)."""
    from open_clip.tokenizer import SimpleTokenizer  # deferred: heavy import, loaded only when this path runs

    return SimpleTokenizer(context_length=word_len)


def padding_mask(tokens: torch.Tensor) -> torch.Tensor:
    """True at positions after each row's end-of-text token (the highest id in CLIP's vocabulary)."""
    eot = tokens.argmax(dim=-1, keepdim=True)
    return torch.arange(tokens.shape[1], device=tokens.device)[None, :] > eot


def clip_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """The open_clip model config of a CRIS config: a named open_clip config or an inline dict."""
    import open_clip  # deferred: heavy import, loaded only when this path runs

    if config.get("clip_cfg"):
        return dict(config["clip_cfg"])
    name = config.get("clip_model")
    cfg = open_clip.get_model_config(name) if name else None
    if cfg is None:
        raise UserError(f"model config: clip_model {name!r} is not an open_clip model config (e.g. RN50, RN101)")
    return cfg


def build_clip(config: dict[str, Any]) -> nn.Module:
    """A randomly initialised open_clip CLIP for the config (QuickGELU as in OpenAI's weights if asked)."""
    from open_clip.model import CLIP  # deferred: heavy import, loaded only when this path runs

    cfg = clip_model_config(config)
    cfg["quick_gelu"] = bool(config.get("quick_gelu", cfg.get("quick_gelu", False)))
    cfg.pop("custom_text", None)
    return CLIP(**cfg)


class CRIS(SegModel):
    """The full CRIS model behind the segmentation-model interface (see ``base.SegModel``)."""

    uses_text = True

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config["input_size"], config.get("mean", CLIP_MEAN), config.get("std", CLIP_STD))
        self.config = dict(config)
        self.word_len = int(config.get("word_len", 77))
        clip = build_clip(config)
        _check_dims(config, clip)
        self.backbone = CLIPBackbone(clip)
        self.neck = TextGatedFPN(config["fpn_in"], config["fpn_out"])
        self.decoder = VisionLanguageDecoder(
            config["num_layers"], config["vis_dim"], config["num_heads"], config["dim_ffn"], config["dropout"]
        )
        self.proj = Projector(config["word_dim"], config["vis_dim"] // 2, 3)
        self._frozen = False

    def tokenize(self, texts: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, word_len) token ids: SOT, BPE tokens, EOT, zeros; longer prompts are cut (EOT kept last)."""
        return clip_tokenizer(self.word_len)(list(texts)).to(device)

    def predict_tokens(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at 1/4 of the input size, (B, 1, H/4, W/4), from normalised images and token ids."""
        c3, c4, c5 = self.backbone.encode_image(images)
        words, state = self.backbone.encode_text(tokens)
        fq = self.neck((c3, c4, c5), state)
        fq = self.decoder(fq, words, padding_mask(tokens))
        return self.proj(fq, state)

    def forward(
        self, images: torch.Tensor, texts: Sequence[str] | torch.Tensor, structures: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, 1, H, W) at the input size; ``texts`` are prompts or token ids; ``structures`` unused."""
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts, images.device)
        logits = self.predict_tokens(images, tokens)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """CLIP's image and text towers, including the spatial attention pool."""
        return self.backbone.parameters()

    def freeze_encoders(self) -> int:
        """Freeze the backbone and keep its BatchNorm statistics fixed (eval mode) while training."""
        self._frozen = True
        self.backbone.eval()
        return super().freeze_encoders()

    def train(self, mode: bool = True) -> CRIS:
        super().train(mode)
        if self._frozen:
            self.backbone.eval()
        return self

    def spec(self) -> dict[str, Any]:
        """The full config dict without ``default_weights``; ``build(spec)`` rebuilds this architecture."""
        return {k: v for k, v in self.config.items() if k != "default_weights"}

    def save_assets(self, folder: Path) -> None:
        """Nothing to save: the tokenizer's vocabulary ships with open_clip."""


def _check_dims(config: dict[str, Any], clip: nn.Module) -> None:
    """Raise UserError when the CRIS dimensions do not fit the CLIP towers."""
    embed = clip.text_projection.shape[1]
    text_width = clip.text_projection.shape[0]
    c5 = clip.visual.attnpool.c_proj.out_features
    width = clip.visual.layer1[0].conv1.in_channels
    expected = {"word_dim": embed, "vis_dim": text_width}
    for key, value in expected.items():
        if config[key] != value:
            raise UserError(f"model config: {key} must be {value} for this CLIP backbone, got {config[key]}")
    fpn_in = [width * 8, width * 16, c5]
    if list(config["fpn_in"]) != fpn_in:
        raise UserError(f"model config: fpn_in must be {fpn_in} for this CLIP backbone, got {config['fpn_in']}")
    if config["fpn_out"][1] != config["vis_dim"]:
        raise UserError(f"model config: fpn_out[1] must equal vis_dim {config['vis_dim']}, got {config['fpn_out']}")
    if config["input_size"] % 32:
        raise UserError(f"input_size (--input-size) must be a multiple of 32 for CRIS, got {config['input_size']}")


@register("cris")
def build(config: dict[str, Any], weights: str | None = None, assets: Path | None = None) -> CRIS:
    """Build CRIS from a config dict; ``weights`` is a CLIP RN50/RN101 file, an original CRIS checkpoint, a
    converted folder (``echoseg models convert-cris``) or a hub id of open_clip CLIP weights."""
    cfg = dict(config)
    model = CRIS(cfg)
    weights = weights or cfg.get("default_weights")
    if weights:

        load_weights(model, weights)
    return model
