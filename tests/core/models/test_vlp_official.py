"""The published GLoRIA and MGCA checkpoints load through :mod:`echoseg.core.models.vlp_official`.

Each release is rebuilt here as a transcription of the authors' module nesting (attribute names as in
marshuang80/gloria ``gloria/models/{gloria_model,vision_model,text_model}.py`` and HKU-MedAI/MGCA
``mgca/models/mgca/mgca_module.py``, ``mgca/models/backbones/{encoder,med,vits}.py``), so the state-dict keys come
out of the structure. Its random weights are wrapped as the Lightning checkpoint the authors saved, loaded through
echoseg, and the embeddings compared with the transcription's own forward pass (the authors' pooling, projection,
normalisation and token aggregation).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter, OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from echoseg.core.errors import UserError
from echoseg.core.models.vlp_official import detect_release, load_official_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["no acute cardiopulmonary abnormality", "mild cardiomegaly with small bilateral pleural effusions",
         "the lungs are clear without focal consolidation pneumothorax or effusion"]
#: Bio_ClinicalBERT's shapes (BERT-base, cased vocabulary of 28996)
FULL = {"vocab": 28996, "hidden": 768, "layers": 12, "heads": 12, "inter": 3072}
#: the same layout at reduced BERT width, its vocabulary the test tokenizer's (so the model also rebuilds from its spec)
SMALL = {"vocab": 0, "hidden": 64, "layers": 2, "heads": 2, "inter": 128}


# --- shared pieces ---------------------------------------------------------------------------------------------------


def _resnet50() -> nn.Module:
    """``cnn_backbones.resnet_50`` of both repositories: torchvision ResNet-50 with ``fc`` replaced by an identity."""
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    net.fc = nn.Identity()
    return net


def _resnet_features(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' ``resnet_forward``: upsample to 299 (bilinear, corners aligned), layer3 = local, pooled layer4."""
    x = nn.Upsample(size=(299, 299), mode="bilinear", align_corners=True)(x)
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    local = net.layer3(net.layer2(net.layer1(x)))
    return nn.AdaptiveAvgPool2d((1, 1))(net.layer4(local)).view(x.shape[0], -1), local


def _aggregate(states: torch.Tensor, ids: torch.Tensor, idx2word: dict[int, str]) -> torch.Tensor:
    """``aggregate_tokens`` of both repositories on (B, L, T, H): pieces summed into words up to [SEP], zeros after."""
    out = torch.zeros_like(states)
    for b in range(ids.shape[0]):
        words: list[torch.Tensor] = []
        bank: list[torch.Tensor] = []
        for t in range(ids.shape[1]):
            token = idx2word[int(ids[b, t])]
            if token == "[SEP]":
                words += [torch.stack(bank).sum(0), states[b, :, t]]
                break
            if token.startswith("##"):
                bank.append(states[b, :, t])
            else:
                if bank:
                    words.append(torch.stack(bank).sum(0))
                bank = [states[b, :, t]]
        out[b, :, :len(words)] = torch.stack(words, dim=1)
    return out


def _perturb(module: nn.Module, seed: int) -> None:
    """Make every tensor distinctive: noise on the weights, random BatchNorm statistics and counters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))


def _text_folder(tmp_path, dims: dict[str, int]):
    """A small WordPiece tokenizer with a Bio_ClinicalBERT-like ``config.json`` beside it (no weights).

    Returns ``(folder, id -> token, dims)`` with a zero vocabulary size replaced by the tokenizer's.
    """
    from transformers import BertConfig

    from echoseg.core.models.vlp_text import train_wordpiece

    folder = tmp_path / "bio_clinicalbert"
    tok = train_wordpiece(sorted(TEXTS * 3), 90, folder)
    dims = dims | {"vocab": dims["vocab"] or len(tok)}
    BertConfig(vocab_size=dims["vocab"], hidden_size=dims["hidden"], num_hidden_layers=dims["layers"],
               num_attention_heads=dims["heads"], intermediate_size=dims["inter"]).save_pretrained(str(folder))
    return folder, {i: w for w, i in tok.get_vocab().items()}, dims


def _assert_rebuilds(model, folder) -> None:
    """The loaded model rebuilds from its spec and saved tokenizer (as a pretrain run's checkpoint does)."""
    from echoseg.core.models import build_model

    model.save_assets(folder)
    again = build_model("vlp", model.spec(), assets=folder)
    again.load_state_dict(model.state_dict(), strict=True)
    assert again.spec()["official"] == model.config["official"]


def _fingerprints(state: dict[str, torch.Tensor]) -> Counter:
    return Counter((tuple(v.shape), str(v.dtype), v.contiguous().numpy().tobytes()) for v in state.values())


def _assert_one_to_one(release: dict[str, torch.Tensor], model: nn.Module, dropped: re.Pattern,
                       derived: tuple[str, ...] = (), derived_from: tuple[str, ...] = ()) -> None:
    """Every release tensor (but the documented drops) sits in the model, and the model holds nothing else.

    ``derived``: model tensors computed from the release tensors ``derived_from`` (checked by the caller).
    """
    own = {k: v for k, v in model.state_dict().items() if k not in derived}
    kept = {k: v for k, v in release.items() if not dropped.search(k) and k not in derived_from}
    assert len(own) == len(kept)
    assert _fingerprints(own) == _fingerprints(kept)
    info = model.config["official"]
    assert info["loaded"] + info["position_ids"] + info["cross_attention"] == len(release)


def _tokens(model, texts=TEXTS):
    tok = model.tokenize(texts)
    return tok["input_ids"], tok["attention_mask"], torch.zeros_like(tok["input_ids"])


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# --- GLoRIA (marshuang80/gloria) -------------------------------------------------------------------------------------


class GloriaImageEncoder(nn.Module):
    """``vision_model.ImageEncoder`` (model_name resnet_50, embedding_dim = the text width)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.model = _resnet50()
        self.global_embedder = nn.Linear(2048, dim)
        self.local_embedder = nn.Conv2d(1024, dim, kernel_size=1, stride=1, padding=0, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(output_size=(1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        glob, local = _resnet_features(self.model, x)
        return self.global_embedder(glob), self.local_embedder(local)  # generate_embeddings


class GloriaBertEncoder(nn.Module):
    """``text_model.BertEncoder``: AutoModel (pooler included), last 4 layers, words summed, sentence = mean."""

    def __init__(self, dims: dict[str, int], idx2word: dict[int, str]) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(vocab_size=dims["vocab"], hidden_size=dims["hidden"], num_hidden_layers=dims["layers"],
                         num_attention_heads=dims["heads"], intermediate_size=dims["inter"])
        self.model = BertModel(cfg)
        emb = self.model.embeddings  # transformers < 4.31 (GLoRIA's) saved the position_ids buffer
        emb.register_buffer("position_ids", emb.position_ids.clone(), persistent=True)
        self.idx2word = idx2word

    def forward(self, ids, mask, token_type) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(ids, mask, token_type, output_hidden_states=True)
        layers = torch.stack(out.hidden_states[-4:]).permute(1, 0, 2, 3)  # (B, 4, T, H)
        layers = _aggregate(layers, ids, self.idx2word)
        sent = layers.mean(dim=2).sum(dim=1)  # aggregate_method "sum"; norm false, no emb_global/emb_local
        return layers.sum(dim=1).permute(0, 2, 1), sent


class GLoRIA(nn.Module):
    """``gloria_model.GLoRIA``."""

    def __init__(self, dims: dict[str, int], idx2word: dict[int, str]) -> None:
        super().__init__()
        self.text_encoder = GloriaBertEncoder(dims, idx2word)
        self.img_encoder = GloriaImageEncoder(dims["hidden"])


class GloriaPretrainModel(nn.Module):
    """``lightning.pretrain_model.PretrainModel`` (its tensors: ``self.gloria``)."""

    def __init__(self, dims: dict[str, int], idx2word: dict[int, str]) -> None:
        super().__init__()
        self.gloria = GLoRIA(dims, idx2word)


class DictConfig:
    """Stand-in for the OmegaConf config that GLoRIA's ``save_hyperparameters(cfg)`` pickles (not weights-only)."""

    def __init__(self, content: dict) -> None:
        self._content = content

    def __getstate__(self) -> dict:
        return {"_content": self._content, "_metadata": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class ModelCheckpoint:
    """Stand-in for the callback class that PL 1.1 used as the key of ``callbacks``."""


def _gloria_checkpoint(tmp_path, dims):
    folder, idx2word, dims = _text_folder(tmp_path, dims)
    torch.manual_seed(0)
    module = GloriaPretrainModel(dims, idx2word)
    _perturb(module, 1)
    state = module.state_dict()
    cfg = DictConfig({"model": {"vision": {"model_name": "resnet_50"}, "text": {
        "bert_type": "emilyalsentzer/Bio_ClinicalBERT", "last_n_layers": 4, "aggregate_method": "sum",
        "norm": False, "embedding_dim": 768, "agg_tokens": True}}, "data": {"text": {"word_num": 97}},
        "transforms": {"norm": "half", "random_crop": {"crop_size": 224}}})
    ckpt = {"epoch": 17, "global_step": 80000, "pytorch-lightning_version": "1.1.4",
            "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(1.5), "best_model_path": "x.ckpt"}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-5, "params": list(range(3))}]}],
            "lr_schedulers": [{"factor": 0.5, "patience": 5}], "state_dict": state,
            "hparams_name": "cfg", "hyper_parameters": cfg, "hparams_type": DictConfig}
    path = tmp_path / "chexpert_resnet50.ckpt"
    torch.save(ckpt, path)
    return module.eval(), state, path, folder, dims


def _check_gloria(tmp_path, dims) -> None:
    module, state, path, folder, dims = _gloria_checkpoint(tmp_path, dims)
    assert detect_release(state) == "gloria-resnet50"
    with pytest.warns(UserWarning, match="stubbed out"):
        model = load_official_checkpoint(path, text_encoder=str(folder))
    assert model.method == "gloria" and model.image.arch == "resnet50" and model.image.upsample == 299
    assert model.config["official"]["position_ids"] == 1 and model.config["official"]["cross_attention"] == 0
    assert model.mean == (0.5, 0.5, 0.5) and model.text.max_length == 97
    _assert_one_to_one(state, model, re.compile(r"\.position_ids$"))
    images = torch.randn(2, 3, 224, 224)
    ids, mask, token_type = _tokens(model)
    with torch.no_grad():
        img_g, img_l = module.gloria.img_encoder(images)
        words, sent = module.gloria.text_encoder(ids, mask, token_type)
        out = model(images, ids, mask)
    _close(out.img_global, img_g)
    _close(out.img_local, img_l)
    _close(out.txt_global, sent)
    _close(out.txt_words, words)
    _close(model.encode_images(images), F.normalize(img_g, dim=-1))
    if dims["vocab"] == len(model.text.tokenizer):
        _assert_rebuilds(model, tmp_path / "assets")


def test_gloria_release_small_bert(tmp_path) -> None:
    _check_gloria(tmp_path, SMALL)


@pytest.mark.slow
def test_gloria_release_full_size(tmp_path) -> None:
    _check_gloria(tmp_path, FULL)


# --- MGCA (HKU-MedAI/MGCA) -------------------------------------------------------------------------------------------


class GlobalEmbedding(nn.Module):
    """``encoder.GlobalEmbedding``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                                  nn.Linear(hidden_dim, output_dim), nn.BatchNorm1d(output_dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class LocalEmbedding(nn.Module):
    """``encoder.LocalEmbedding`` on (B, N, C)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv1d(input_dim, hidden_dim, kernel_size=1, stride=1, padding=0),
                                  nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                                  nn.Conv1d(hidden_dim, output_dim, kernel_size=1, stride=1, padding=0),
                                  nn.BatchNorm1d(output_dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.permute(0, 2, 1)).permute(0, 2, 1)


class PatchEmbed(nn.Module):
    """timm 0.4's ``PatchEmbed`` (its norm is an identity)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=16, stride=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VitAttention(nn.Module):
    """``vits.Attention`` (qkv with bias), keeping its attention map when asked (``register_hook``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.attention_map = None

    def forward(self, x: torch.Tensor, register_hook: bool = False) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        if register_hook:
            self.attention_map = attn
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class VitMlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VitBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VitAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = VitMlp(dim)

    def forward(self, x: torch.Tensor, register_hook: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), register_hook=register_hook)
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """``vits.VisionTransformer`` as ``create_vit("base", 224)`` builds it (BLIP's; no classifier head)."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 197, dim) * 0.02)
        self.blocks = nn.ModuleList([VitBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, register_blk: int = -1) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed[:, :x.shape[1] + 1]
        for i, blk in enumerate(self.blocks):
            x = blk(x, register_blk == i)
        return self.norm(x)


class MGCAImageEncoder(nn.Module):
    """``encoder.ImageEncoder`` (model_name ``resnet_50`` or ``vit_base``; output_dim = emb_dim 128)."""

    def __init__(self, vit: bool) -> None:
        super().__init__()
        self.model_name = "vit_base" if vit else "resnet_50"
        if vit:
            self.model = VisionTransformer()
            self.global_embed, self.local_embed = GlobalEmbedding(768, 2048, 128), LocalEmbedding(768, 2048, 128)
        else:
            self.model = _resnet50()
            self.pool = nn.AdaptiveAvgPool2d(output_size=(1, 1))
            self.global_embed, self.local_embed = GlobalEmbedding(2048, 2048, 128), LocalEmbedding(1024, 2048, 128)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "vit" in self.model_name:
            feat = self.model(x, register_blk=11)
            return feat[:, 0], feat[:, 1:]
        glob, local = _resnet_features(self.model, x)
        return glob, local.flatten(2).transpose(1, 2)  # rearrange "b c w h -> b (w h) c"


class MedSelfAttention(nn.Module):
    """``med.BertSelfAttention`` (``encoder_width`` keys/values when cross-attention)."""

    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        h = dims["hidden"]
        self.heads = dims["heads"]
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, h = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).permute(0, 2, 1, 3)

        scores = split(self.query(x)) @ split(self.key(x)).transpose(-1, -2) / math.sqrt(h // self.heads) + mask
        probs = scores.softmax(dim=-1)
        return (probs @ split(self.value(x))).permute(0, 2, 1, 3).reshape(b, t, h), probs


class MedResidual(nn.Module):
    """``med.BertSelfOutput`` / ``med.BertOutput``: dense, then LayerNorm of the residual sum."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(d_in, d_out), nn.LayerNorm(d_out, eps=1e-12)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class MedAttention(nn.Module):
    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        self.self = MedSelfAttention(dims)
        self.output = MedResidual(dims["hidden"], dims["hidden"])


class MedIntermediate(nn.Module):
    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        self.dense = nn.Linear(dims["hidden"], dims["inter"])


class MedLayer(nn.Module):
    """``med.BertLayer`` with ``add_cross_attention`` true (bert_config.json): a ``crossattention`` it never runs
    in ``mode="text"``."""

    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        self.attention = MedAttention(dims)
        self.crossattention = MedAttention(dims)
        self.intermediate = MedIntermediate(dims)
        self.output = MedResidual(dims["inter"], dims["hidden"])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx, probs = self.attention.self(x, mask)
        a = self.attention.output(ctx, x)
        return self.output(F.gelu(self.intermediate.dense(a)), a), probs


class MedEmbeddings(nn.Module):
    """``med.BertEmbeddings``: word + position (no token type), a saved ``position_ids`` buffer."""

    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(dims["vocab"], dims["hidden"], padding_idx=0)
        self.position_embeddings = nn.Embedding(512, dims["hidden"])
        self.LayerNorm = nn.LayerNorm(dims["hidden"], eps=1e-12)
        self.register_buffer("position_ids", torch.arange(512).expand((1, -1)))

    def forward(self, ids: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
        if position_ids is None:
            position_ids = self.position_ids[:, :ids.shape[1]]
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(position_ids))


class MedEncoder(nn.Module):
    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        self.layer = nn.ModuleList([MedLayer(dims) for _ in range(dims["layers"])])


class MedBertModel(nn.Module):
    """``med.BertModel(config, add_pooling_layer=False)``; ``forward(input_ids, attention_mask, position_ids)``."""

    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        self.embeddings = MedEmbeddings(dims)
        self.encoder = MedEncoder(dims)

    def forward(self, ids, attention_mask, position_ids=None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        x, attentions = self.embeddings(ids, position_ids), []
        for layer in self.encoder.layer:
            x, probs = layer(x, mask)
            attentions.append(probs)
        return x, attentions


class MGCABertEncoder(nn.Module):
    """``encoder.BertEncoder``: report feature = the [CLS] word, word features = the other words (last layer)."""

    def __init__(self, dims: dict[str, int], idx2word: dict[int, str]) -> None:
        super().__init__()
        self.model = MedBertModel(dims)
        self.global_embed = GlobalEmbedding(dims["hidden"], 2048, 128)
        self.local_embed = LocalEmbedding(dims["hidden"], 2048, 128)
        self.idx2word = idx2word

    def forward(self, ids, attn_mask, token_type) -> tuple[torch.Tensor, torch.Tensor]:
        states, _ = self.model(ids, attn_mask, token_type)  # as encoder.py: token_type lands on position_ids
        words = _aggregate(states[:, None], ids, self.idx2word)[:, 0]
        return words[:, 0], words[:, 1:]


class MGCA(nn.Module):
    """``mgca_module.MGCA`` (emb_dim 128, num_heads 1, 500 prototypes)."""

    def __init__(self, dims: dict[str, int], idx2word: dict[int, str], vit: bool) -> None:
        super().__init__()
        self.img_encoder_q = MGCAImageEncoder(vit)
        self.text_encoder_q = MGCABertEncoder(dims, idx2word)
        self.patch_local_atten_layer = nn.MultiheadAttention(128, 1, batch_first=True)
        self.word_local_atten_layer = nn.MultiheadAttention(128, 1, batch_first=True)
        self.prototype_layer = nn.Linear(128, 500, bias=False)

    def embed(self, images, ids, mask, token_type) -> dict[str, torch.Tensor]:
        """The embeddings of ``MGCA.forward`` (before its losses)."""
        img_feat, patch_feat = self.img_encoder_q(images)
        report_feat, word_feat = self.text_encoder_q(ids, mask, token_type)
        return {"img_local": F.normalize(self.img_encoder_q.local_embed(patch_feat), dim=-1),
                "img_global": F.normalize(self.img_encoder_q.global_embed(img_feat), dim=-1),
                "txt_words": F.normalize(self.text_encoder_q.local_embed(word_feat), dim=-1),
                "txt_global": F.normalize(self.text_encoder_q.global_embed(report_feat), dim=-1)}


def _mgca_checkpoint(tmp_path, dims, vit: bool):
    folder, idx2word, dims = _text_folder(tmp_path, dims)
    torch.manual_seed(0)
    module = MGCA(dims, idx2word, vit)
    _perturb(module, 2)
    state = module.state_dict()
    hparams = {"img_encoder": "vit_base" if vit else "resnet_50", "freeze_bert": False, "emb_dim": 128,
               "softmax_temperature": 0.07, "learning_rate": 2e-5, "num_prototypes": 500, "num_heads": 1,
               "use_local_atten": False, "gpus": 2, "strategy": "ddp", "max_epochs": 50, "batch_size": 72}
    ckpt = {"epoch": 12, "global_step": 52000, "pytorch-lightning_version": "1.5.10", "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"completed": 12}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min'}": {
                "best_model_score": torch.tensor(3.2), "best_k_models": {"a.ckpt": torch.tensor(3.2)}}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-5, "betas": (0.9, 0.999)}]}],
            "lr_schedulers": [{"first_cycle_steps": 10, "base_lrs": [2e-5]}],
            "hparams_name": "kwargs", "hyper_parameters": hparams}
    path = tmp_path / ("vit_base.ckpt" if vit else "resnet_50.ckpt")
    torch.save(ckpt, path)
    return module.eval(), state, path, folder, dims


def _check_mgca(tmp_path, dims, vit: bool) -> None:
    module, state, path, folder, dims = _mgca_checkpoint(tmp_path, dims, vit)
    release = "mgca-vit_base" if vit else "mgca-resnet50"
    assert detect_release(state) == release
    model = load_official_checkpoint(path, text_encoder=str(folder), image_encoder="vit_base_patch16" if vit else None)
    info = model.config["official"]
    assert info["release"] == release and info["reader"] == "weights_only"
    assert info["position_ids"] == 1 and info["cross_attention"] == 10 * dims["layers"]  # q, k, v, dense, LayerNorm
    assert model.text.bert.config.num_hidden_layers == dims["layers"] and model.text.max_length == 112
    assert model.image.upsample == (None if vit else 299)
    pos = "text.bert.embeddings.position_embeddings.weight"
    types = "text.bert.embeddings.token_type_embeddings.weight"
    release_pos_key = "text_encoder_q.model.embeddings.position_embeddings.weight"
    _assert_one_to_one(state, model, re.compile(r"\.position_ids$|\.crossattention\."), (pos, types),
                       (release_pos_key,))
    release_pos = state[release_pos_key]
    assert torch.equal(model.state_dict()[pos], release_pos[:1].expand_as(release_pos))  # MGCA's position 0
    assert not model.state_dict()[types].any()
    images = torch.randn(2, 3, 224, 224)
    ids, mask, token_type = _tokens(model)
    with torch.no_grad():
        ref = module.embed(images, ids, mask, token_type)
        out = model(images, ids, mask)
    for key, value in ref.items():
        _close(getattr(out, key), value)
    _close(out.img_proto, module.prototype_layer(ref["img_global"]))
    if vit:  # MGCA's patch weights: the last block's [CLS] attention, mean over heads
        _close(out.patch_weights, module.img_encoder_q.model.blocks[-1].attn.attention_map[:, :, 0, 1:].mean(1))
    if dims["vocab"] == len(model.text.tokenizer):
        _assert_rebuilds(model, tmp_path / "assets")


def test_mgca_resnet50_release_small_bert(tmp_path) -> None:
    _check_mgca(tmp_path, SMALL, vit=False)

@pytest.mark.slow

def test_mgca_vit_base_release_small_bert(tmp_path) -> None:
    _check_mgca(tmp_path, SMALL, vit=True)


@pytest.mark.slow
def test_mgca_resnet50_release_full_size(tmp_path) -> None:
    _check_mgca(tmp_path, FULL | {"layers": 6}, vit=False)  # MGCA's bert_config.json: 6 hidden layers


@pytest.mark.slow
def test_mgca_vit_base_release_full_size(tmp_path) -> None:
    _check_mgca(tmp_path, FULL | {"layers": 6}, vit=True)


# --- refusals --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mgca_small(tmp_path_factory):
    """A small-BERT MGCA ResNet-50 release: ``(state, folder)``."""
    _, state, _, folder, _ = _mgca_checkpoint(tmp_path_factory.mktemp("mgca"), SMALL, vit=False)
    return state, folder


def test_layout_that_is_not_one_to_one_is_refused(tmp_path, mgca_small) -> None:
    state, folder = mgca_small
    state = OrderedDict(state)
    state["text_encoder_q.extra_head.weight"] = torch.zeros(3)
    del state["img_encoder_q.local_embed.head.0.bias"]
    torch.save({"epoch": 1, "state_dict": state}, tmp_path / "edited.ckpt")
    with pytest.raises(UserError, match=r"unused text_encoder_q\.extra_head\.weight.*missing image\.local_embed"):
        load_official_checkpoint(tmp_path / "edited.ckpt", text_encoder=str(folder))


def test_foreign_or_corrupt_checkpoints_are_refused(tmp_path, mgca_small) -> None:
    state, folder = mgca_small
    foreign = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in _resnet50().state_dict().items()}}, foreign)
    with pytest.raises(UserError, match="not a GLoRIA or MGCA release"):
        load_official_checkpoint(foreign, text_encoder=str(folder))
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    with pytest.raises(UserError, match="not a readable torch checkpoint"):
        load_official_checkpoint(corrupt, text_encoder=str(folder))
    release = tmp_path / "resnet_50.ckpt"
    torch.save({"state_dict": state}, release)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(release.read_bytes()[:100_000])
    with pytest.raises(UserError, match="not a readable torch checkpoint"):
        load_official_checkpoint(truncated, text_encoder=str(folder))
    with pytest.raises(UserError, match="Bio_ClinicalBERT"):
        load_official_checkpoint(release)
    with pytest.raises(UserError, match="mgca-resnet50"):
        load_official_checkpoint(release, text_encoder=str(folder), image_encoder="vit_base_patch16")
    with pytest.raises(UserError, match="no such file"):
        load_official_checkpoint(tmp_path / "absent.ckpt", text_encoder=str(folder))


class _Payload:
    """A pickled object that would create a folder if a loader ever ran what the checkpoint names."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_pickled_code_in_a_checkpoint_never_runs(tmp_path, mgca_small) -> None:
    state, folder = mgca_small
    marker = tmp_path / "ran"
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": _Payload(marker)}}, tmp_path / "resnet_50.ckpt")
    with pytest.warns(UserWarning, match="mkdir"):
        model = load_official_checkpoint(tmp_path / "resnet_50.ckpt", text_encoder=str(folder))
    assert not marker.exists()
    assert model.config["official"]["release"] == "mgca-resnet50"


def test_a_release_initialises_pretraining_and_loads_for_evaluation(tmp_path) -> None:
    from echoseg.core.models.vlp_official import load_vlp
    from echoseg.core.pretrain.config import PretrainConfig
    from echoseg.core.pretrain.init import check_init_from, init_model

    _, state, path, folder, _ = _mgca_checkpoint(tmp_path, SMALL, vit=False)
    check_init_from(str(path), str(folder))
    with pytest.raises(UserError, match="needs --text-encoder"):
        check_init_from(str(path))
    model, note = init_model(PretrainConfig(method="mgca", init_from=str(path), text_encoder=str(folder)))
    assert model.training and "released checkpoint" in note
    assert torch.equal(model.prototype_layer.weight, state["prototype_layer.weight"])
    with pytest.raises(UserError, match="a mgca checkpoint, not gloria"):
        init_model(PretrainConfig(method="gloria", init_from=str(path), text_encoder=str(folder)))
    loaded, what = load_vlp(path, text_encoder=str(folder))
    assert not loaded.training and what.startswith("released checkpoint")
    with pytest.raises(UserError, match="not a training run"):
        load_vlp(tmp_path)
