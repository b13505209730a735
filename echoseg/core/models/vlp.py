"""The vision-language pre-training model of `echoseg pretrain`: an image encoder, a text encoder and the heads of
ConVIRT, GLoRIA or MGCA.

Image encoders: ``resnet50`` (torchvision) or ``vit_base_patch16`` (timm), and ``resnet_tiny`` / ``vit_tiny`` for
CPU tests. A ResNet gives a global feature (``layer4``, average-pooled) and local features (``layer3``), as GLoRIA's
and MGCA's ``resnet_forward`` (inputs first resized to ``upsample``, 299 in the papers); a ViT gives its [CLS] token
and its patch tokens after the final norm (MGCA's ``vit_forward``). Text encoders: :mod:`.vlp_text`.

Heads, as the authors build them (the dimensions are config data in ``configs/vlp.json``):

- ConVIRT (Zhang et al. 2020): a one-hidden-layer MLP on each side (the image's pooled feature; the text's token
  states max-pooled), 512-d in the paper.
- GLoRIA (Huang et al. 2021, ``ImageEncoder``/``BertEncoder``): image ``global_embed`` Linear(feature, E) and
  ``local_embed`` 1x1 Conv (no bias) to E = the text width; text: the sum of the last 4 layers' word features (word
  pieces summed into words), the sentence feature their mean over positions; no text projection.
- MGCA (Wang et al. 2022, ``GlobalEmbedding``/``LocalEmbedding``): Linear/1x1-Conv -> BN -> ReLU -> Linear/1x1-Conv ->
  BN (no affine), 2048 hidden, 128-d, on both sides; the text's [CLS] state is the report feature and its word
  features the local ones; word weights are the last layer's [CLS] attention (summed over a word's pieces); for a
  ViT, patch weights are the last block's [CLS] attention; 500 prototypes (Linear, no bias). MGCA's two
  ``nn.MultiheadAttention`` layers, unused by its default ``use_local_atten=False``, are kept (frozen) so its
  released checkpoints load whole.

``forward(images, input_ids, attention_mask)`` returns every embedding a method's loss needs
(:class:`VLPOutput`); modules a method's forward does not use are frozen, so DDP sees no unused parameter.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from echoseg.core.errors import UserError, first_line
from echoseg.core.hub import offline
from echoseg.core.models import register
from echoseg.core.models.vlp_text import (
    TOKENIZER_DIR,
    TextEncoder,
    aggregate_words,
    build_bert,
    load_pretrained_bert,
    load_tokenizer,
    word_groups,
)
from echoseg.core.models.weights import read_state

METHODS = ("convirt", "gloria", "mgca")
IMAGE_ENCODERS = ("resnet50", "vit_base_patch16", "resnet_tiny", "vit_tiny")


@dataclass
class VLPOutput:
    """Embeddings of one batch (None where the method has no such output)."""

    img_global: torch.Tensor  # (B, D)
    txt_global: torch.Tensor  # (B, D)
    img_local: torch.Tensor | None = None  # GLoRIA (B, E, h, w); MGCA (B, P, D)
    txt_words: torch.Tensor | None = None  # GLoRIA (B, E, T) with [CLS] in column 0; MGCA (B, T-1, D)
    cap_lens: torch.Tensor | None = None  # GLoRIA (B,): words + [SEP]
    word_weights: torch.Tensor | None = None  # MGCA (B, T-1)
    pad_mask: torch.Tensor | None = None  # MGCA (B, T-1), True at padding words
    patch_weights: torch.Tensor | None = None  # MGCA with a ViT (B, P)
    img_proto: torch.Tensor | None = None  # MGCA prototype scores (B, K)
    txt_proto: torch.Tensor | None = None


# --- image encoders ------------------------------------------------------------------------------------------------


def _resnet(arch: str) -> tuple[nn.Module, int, int]:
    from torchvision.models import resnet50  # deferred: torchvision loads only when a model is built
    from torchvision.models.resnet import BasicBlock, ResNet

    net = resnet50(weights=None) if arch == "resnet50" else ResNet(BasicBlock, [1, 1, 1, 1])
    feature, interm = (2048, 1024) if arch == "resnet50" else (512, 256)
    net.fc = nn.Identity()  # the authors' backbones drop the classifier the same way
    return net, feature, interm


def _vit(arch: str, input_size: int) -> tuple[nn.Module, int, int]:
    from timm.models.vision_transformer import VisionTransformer  # deferred: timm is heavy

    if arch == "vit_base_patch16":
        net = VisionTransformer(img_size=input_size, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                num_classes=0)
    else:
        net = VisionTransformer(img_size=input_size, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    return net, net.embed_dim, net.embed_dim


class ImageEncoder(nn.Module):
    """Backbone -> (global feature (B, F), local features (B, F_l, h, w)), plus the method's image heads."""

    def __init__(self, arch: str, input_size: int, upsample: int | None) -> None:
        super().__init__()
        if arch not in IMAGE_ENCODERS:
            raise UserError(f"--image-encoder {arch!r}: unknown (known: {', '.join(IMAGE_ENCODERS)})")
        self.arch, self.input_size = arch, int(input_size)
        self.upsample = int(upsample) if upsample else None
        self.is_vit = arch.startswith("vit")
        if self.is_vit:
            self.backbone, self.feature_dim, self.local_dim = _vit(arch, self.input_size)
        else:
            self.backbone, self.feature_dim, self.local_dim = _resnet(arch)
        self.global_embed: nn.Module | None = None
        self.local_embed: nn.Module | None = None
        self._last_attn_input: torch.Tensor | None = None

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global (B, F) and local (B, F_l, h, w) features of normalised images (B, 3, H, W)."""
        if self.is_vit:
            tokens = self.backbone.forward_features(images)  # (B, 1 + P, F), final norm applied
            b, p, f = tokens.shape[0], tokens.shape[1] - 1, tokens.shape[2]
            side = int(round(p ** 0.5))
            return tokens[:, 0], tokens[:, 1:].transpose(1, 2).reshape(b, f, side, side)
        net = self.backbone
        x = images
        if self.upsample:
            x = F.interpolate(x, size=(self.upsample, self.upsample), mode="bilinear", align_corners=True)
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        local = net.layer3(net.layer2(net.layer1(x)))
        return torch.flatten(F.adaptive_avg_pool2d(net.layer4(local), 1), 1), local

    def cls_attention(self, images: torch.Tensor) -> torch.Tensor:
        """A ViT's last-block attention from [CLS] to the patches, averaged over heads (B, P)."""
        attn = self.backbone.blocks[-1].attn
        captured: list[torch.Tensor] = []
        handle = attn.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            self.backbone.forward_features(images)
        finally:
            handle.remove()
        return _attention_probs(attn, captured[0])[:, :, 0, 1:].mean(dim=1)


def _attention_probs(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention probabilities (B, heads, N, N) of a timm ``Attention`` for its input ``x``."""
    b, n, c = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


# --- heads -----------------------------------------------------------------------------------------------------------


class GlobalEmbedding(nn.Module):
    """MGCA's global head: Linear -> BN -> ReLU -> Linear -> BN (no affine)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                                  nn.Linear(hidden_dim, output_dim), nn.BatchNorm1d(output_dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class LocalEmbedding(nn.Module):
    """MGCA's local head on (B, N, C) token features: 1x1 Conv1d -> BN -> ReLU -> 1x1 Conv1d -> BN (no affine)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv1d(input_dim, hidden_dim, 1), nn.BatchNorm1d(hidden_dim),
                                  nn.ReLU(inplace=True), nn.Conv1d(hidden_dim, output_dim, 1),
                                  nn.BatchNorm1d(output_dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.transpose(1, 2)).transpose(1, 2)


def _mlp(input_dim: int, hidden_dim: int, output_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, output_dim))


# --- the model -------------------------------------------------------------------------------------------------------


class VLPModel(nn.Module):
    """Image encoder + text encoder + the heads of one method (see the module docstring)."""

    name = "vlp"

    def __init__(self, config: dict[str, Any], image: ImageEncoder, text: TextEncoder) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        self.method = str(config["method"])
        if self.method not in METHODS:
            raise UserError(f"--method {self.method!r}: unknown (known: {', '.join(METHODS)})")
        self.input_size = image.input_size
        self.mean = tuple(float(m) for m in config.get("mean", (0.5, 0.5, 0.5)))
        self.std = tuple(float(s) for s in config.get("std", (0.5, 0.5, 0.5)))
        self.image, self.text = image, text
        heads = config.get("heads", {}).get(self.method, {})
        h = text.hidden_size
        if self.method == "convirt":
            d, hid = int(heads.get("dim", 512)), int(heads.get("hidden", 2048))
            image.global_embed = _mlp(image.feature_dim, hid, d)
            text.global_embed = _mlp(h, hid, d)
            self.embed_dim = d
        elif self.method == "gloria":
            self.last_n_layers = int(heads.get("last_n_layers", 4))
            image.global_embed = nn.Linear(image.feature_dim, h)
            self.embed_dim = h
            image.local_embed = nn.Conv2d(image.local_dim, h, kernel_size=1, bias=False)
        else:
            d, hid = int(heads.get("dim", 128)), int(heads.get("hidden", 2048))
            image.global_embed = GlobalEmbedding(image.feature_dim, hid, d)
            image.local_embed = LocalEmbedding(image.local_dim, hid, d)
            text.global_embed = GlobalEmbedding(h, hid, d)
            text.local_embed = LocalEmbedding(h, hid, d)
            self.embed_dim = d
            self.prototype_layer = nn.Linear(d, int(heads.get("prototypes", 500)), bias=False)
            self.patch_local_atten_layer = nn.MultiheadAttention(d, 1, batch_first=True)
            self.word_local_atten_layer = nn.MultiheadAttention(d, 1, batch_first=True)
            for layer in (self.patch_local_atten_layer, self.word_local_atten_layer):
                layer.requires_grad_(False)
        pooler = getattr(text.bert, "pooler", None)
        if pooler is not None:  # GLoRIA's release keeps BERT's pooler; no method's forward uses it
            pooler.requires_grad_(False)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention masks of ``texts`` (fixed width)."""
        return self.text.tokenize(texts)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> VLPOutput:
        """Every embedding the method's loss needs, for normalised images and tokenized texts."""
        out = VLPOutput(**self.embed_images(images), **self.embed_texts(input_ids, attention_mask))
        if self.method == "mgca":
            out.img_proto = self.prototype_layer(out.img_global)
            out.txt_proto = self.prototype_layer(out.txt_global)
        return out

    def embed_images(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The image side of :class:`VLPOutput` (``img_global``, ``img_local``, ``patch_weights``)."""
        feat, local = self.image.features(images)
        glob = self.image.global_embed(feat)
        if self.method == "convirt":
            return {"img_global": glob}
        if self.method == "gloria":
            return {"img_global": glob, "img_local": self.image.local_embed(local)}
        patch_weights = None
        if self.image.is_vit:
            with torch.no_grad():
                patch_weights = self.image.cls_attention(images)
        patches = local.flatten(2).transpose(1, 2)  # (B, P, F_l)
        return {"img_global": F.normalize(glob, dim=-1),
                "img_local": F.normalize(self.image.local_embed(patches), dim=-1), "patch_weights": patch_weights}

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The text side of :class:`VLPOutput` (``txt_global`` and, for GLoRIA/MGCA, the word features)."""
        groups, n_words = word_groups(input_ids, attention_mask, self.text.continuation)
        if self.method == "convirt":
            states = self.text(input_ids, attention_mask).last_hidden_state
            masked = states.masked_fill(~attention_mask.bool()[:, :, None], float("-inf"))
            return {"txt_global": self.text.global_embed(masked.amax(dim=1))}  # ConVIRT max-pools the tokens
        if self.method == "gloria":
            out = self.text(input_ids, attention_mask, hidden_states=True)
            layers = out.hidden_states[-min(self.last_n_layers, len(out.hidden_states)):]
            words = torch.stack([aggregate_words(s, groups) for s in layers], dim=1)  # (B, L, T, H)
            sent = words.mean(dim=2).sum(dim=1)  # the authors' mean over all positions, then sum over layers
            return {"txt_global": sent, "txt_words": words.sum(dim=1).transpose(1, 2), "cap_lens": n_words - 1}
        out = self.text(input_ids, attention_mask, attentions=True)
        words = aggregate_words(out.last_hidden_state, groups)
        cls_attn = out.attentions[-1][:, :, 0, :].mean(dim=1)  # (B, T): [CLS] -> each token, mean over heads
        word_attn = aggregate_words(cls_attn[:, :, None], groups)[:, 1:, 0]
        pad = torch.arange(1, words.shape[1], device=words.device)[None, :] >= n_words[:, None]
        return {"txt_global": F.normalize(self.text.global_embed(words[:, 0]), dim=-1),
                "txt_words": F.normalize(self.text.local_embed(words[:, 1:]), dim=-1),
                "word_weights": word_attn.detach(), "pad_mask": pad}

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Global image embeddings (B, D) of normalised images, L2-normalised, in eval mode (retrieval, zero-shot)."""
        with _eval(self):
            return F.normalize(self.embed_images(images)["img_global"], dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Global text embeddings (B, D) of raw texts, L2-normalised, in eval mode."""
        device = next(self.parameters()).device
        tok = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        with _eval(self):
            return F.normalize(self.embed_texts(**tok)["txt_global"], dim=-1)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled feature (B, F) before any head, in eval mode (linear probing)."""
        with _eval(self):
            return self.image.features(images)[0]

    @torch.no_grad()
    def dense_similarity(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Cosine similarity (B_img, B_txt, h, w) of each text with each image location, in eval mode (grounding).

        The image side is the method's local embedding where it has one (GLoRIA's region embeddings, in the space of
        its text features; MGCA's patch embeddings, compared with the mean of the text's word embeddings), else the
        last feature map projected location by location through the global head (ConVIRT; ``layer4`` of a ResNet,
        the patch tokens of a ViT).
        """
        device = next(self.parameters()).device
        tok = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        with _eval(self):
            if self.method == "gloria":
                regions = self.embed_images(images)["img_local"]  # (B, E, h, w)
                text = self.embed_texts(**tok)["txt_global"]  # (T, E)
            elif self.method == "mgca":
                patches = self.embed_images(images)["img_local"]  # (B, P, D)
                side = int(round(patches.shape[1] ** 0.5))
                regions = patches.transpose(1, 2).reshape(patches.shape[0], -1, side, side)
                out = self.embed_texts(**tok)
                keep = (~out["pad_mask"]).float()[:, :, None]
                text = (out["txt_words"] * keep).sum(1) / keep.sum(1).clamp(min=1)
            else:
                regions = self._last_feature_map(images)
                b, f, h, w = regions.shape
                flat = regions.permute(0, 2, 3, 1).reshape(-1, f)
                regions = self.image.global_embed(flat).reshape(b, h, w, -1).permute(0, 3, 1, 2)
                text = self.embed_texts(**tok)["txt_global"]
            return torch.einsum("bdhw,td->bthw", F.normalize(regions, dim=1), F.normalize(text, dim=-1))

    def _last_feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's last feature map (B, F, h, w): ResNet ``layer4``, or the ViT patch tokens."""
        if self.image.is_vit:
            return self.image.features(images)[1]
        net = self.image.backbone
        x = images
        if self.image.upsample:
            x = F.interpolate(x, size=(self.image.upsample,) * 2, mode="bilinear", align_corners=True)
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def image_encoder_parameters(self):
        """Parameters of the image backbone (what a downstream segmenter reuses)."""
        return self.image.backbone.parameters()

    def spec(self) -> dict[str, Any]:
        """The architecture as JSON: rebuilds this model offline with the tokenizer of ``save_assets``."""
        spec = copy.deepcopy(self.config)
        spec.update(text_encoder=None, image_weights=None, text_config=_text_config(self.text.bert),
                    text_pooler=getattr(self.text.bert, "pooler", None) is not None,
                    vocab_size=int(self.text.bert.config.vocab_size))
        return spec

    def save_assets(self, folder: Path) -> None:
        """Write the tokenizer beside the weights (``<folder>/tokenizer``)."""
        self.text.tokenizer.save_pretrained(str(Path(folder) / TOKENIZER_DIR))

    def preprocess_info(self) -> dict[str, Any]:
        """Input size and normalisation."""
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}


@contextlib.contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block, the previous mode after it."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _text_config(bert: nn.Module) -> dict[str, Any]:
    keep = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "max_position_embeddings", "type_vocab_size", "hidden_act", "hidden_dropout_prob",
            "attention_probs_dropout_prob", "layer_norm_eps", "pad_token_id", "initializer_range")
    full = bert.config.to_dict()
    return {k: full[k] for k in keep if k in full}


def check_image_weights(spec: str) -> None:
    """Fail early on ``--image-weights`` that cannot load: ``imagenet`` while downloads are off, a missing path."""
    if spec == "imagenet":
        if offline():
            raise UserError("--image-weights imagenet: downloads are off; pass a local weights file (e.g. "
                            "torchvision's resnet50-11ad3fa6.pth or timm's vit_base_patch16_224 model.safetensors), "
                            "or allow downloads with --allow-download")
    elif not Path(spec).expanduser().exists():
        raise UserError(f"--image-weights {spec}: no such file or folder (expected imagenet or a local weights file)")


def load_image_weights(encoder: ImageEncoder, spec: str) -> int:
    """Load ImageNet (``imagenet``) or local weights into the image backbone; returns the tensors loaded.

    A local file is a torchvision/timm state dict (a classifier ``fc.*``/``head.*`` is ignored); every backbone
    tensor must be present with its shape.
    """
    check_image_weights(spec)
    if spec == "imagenet":
        state = _imagenet_state(encoder.arch)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) + sorted(path.glob("*.pth"))
            if not files:
                raise UserError(f"--image-weights {spec}: folder holds no .safetensors/.bin/.pth weights")
            path = files[0]
        state = read_state(path, "--image-weights")
    own = encoder.backbone.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head."))}
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        detail = f"missing {missing[:3]}" if missing else f"shape mismatch at {wrong[:3]}"
        raise UserError(f"--image-weights {spec}: not {encoder.arch} weights ({detail})")
    encoder.backbone.load_state_dict({k: state[k] for k in own}, strict=True)
    return len(own)


def _imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    try:
        if arch == "resnet50":
            from torchvision.models import ResNet50_Weights  # deferred: torchvision model zoo

            return ResNet50_Weights.IMAGENET1K_V2.get_state_dict(progress=False)
        if arch == "vit_base_patch16":
            import timm  # deferred: timm is heavy

            return timm.create_model("vit_base_patch16_224", pretrained=True, num_classes=0).state_dict()
    except Exception as exc:  # noqa: BLE001 - any download failure is the user's to fix
        raise UserError(f"--image-weights imagenet: download failed ({first_line(exc)})") from None
    raise UserError(f"--image-weights imagenet: no ImageNet weights for the tiny encoder {arch!r}")


@register("vlp")
def build(config: dict[str, Any], weights: str | None = None, assets: Path | None = None) -> VLPModel:
    """Build the pre-training model.

    ``config`` keys: ``method``, ``image_encoder``, ``input_size``, ``mean``, ``std``, ``upsample``, ``max_length``,
    ``heads`` (per method), and either ``text_encoder`` (a pretrained folder or cached hub id) or ``text_config``
    (a random BERT; its tokenizer is ``assets/tokenizer``, trained by the pretrain stage), optionally
    ``image_weights`` (``imagenet`` or a local file). ``weights`` is unused: a trained run's weights are loaded by
    :mod:`echoseg.core.models.artefacts`.
    """
    method = config.get("method")
    if method not in METHODS:
        raise UserError(f"--method {method!r}: unknown (known: {', '.join(METHODS)})")
    image = ImageEncoder(str(config.get("image_encoder", "resnet50")), int(config.get("input_size", 224)),
                         config.get("upsample"))
    eager = method == "mgca"  # MGCA weighs words by the last layer's attention, which only eager attention returns
    pooler = bool(config.get("text_pooler", method == "gloria"))
    if config.get("text_encoder"):
        bert, tokenizer = load_pretrained_bert(str(config["text_encoder"]), eager, pooler)
        layers = config.get("heads", {}).get(method, {}).get("text_layers")
        if layers and hasattr(bert, "encoder") and int(layers) < len(bert.encoder.layer):
            # MGCA's bert_config.json keeps the first 6 of Bio_ClinicalBERT's 12 layers
            bert.encoder.layer = bert.encoder.layer[: int(layers)]
            bert.config.num_hidden_layers = int(layers)
    else:
        if assets is None or not (Path(assets) / TOKENIZER_DIR).is_dir():
            raise UserError("a tiny text encoder needs its tokenizer (the run's checkpoints/tokenizer)")
        tokenizer = load_tokenizer(Path(assets) / TOKENIZER_DIR, "tokenizer")
        bert = build_bert(config.get("text_config", {}), len(tokenizer), eager, pooler)
    text = TextEncoder(bert, tokenizer, int(config.get("max_length", 112)))
    model = VLPModel(config, image, text)
    if config.get("image_weights"):
        load_image_weights(image, str(config["image_weights"]))
    return model
