"""The authors' published GLoRIA and MGCA checkpoints as :class:`~echoseg.core.models.vlp.VLPModel` (evaluation or
initialisation of `echoseg pretrain`).

Releases (PyTorch Lightning ``.ckpt`` files: a dict whose ``state_dict`` holds the LightningModule's tensors):

- ``gloria-resnet50``: GLoRIA's ``chexpert_resnet50.ckpt`` (PL 1.1; ``hyper_parameters`` is an OmegaConf config).
  Keys ``gloria.img_encoder.model.*`` (torchvision ResNet-50, ``fc`` = Identity), ``gloria.img_encoder.
  global_embedder.*`` (Linear 2048 -> 768), ``gloria.img_encoder.local_embedder.weight`` (1x1 Conv 1024 -> 768, no
  bias), ``gloria.text_encoder.model.*`` (Hugging Face BertModel of Bio_ClinicalBERT with its pooler, 12 layers).
- ``mgca-resnet50`` / ``mgca-vit_base``: MGCA's ``resnet_50.ckpt`` / ``vit_base.ckpt`` (PL 1.5). Keys
  ``img_encoder_q.model.*`` (ResNet-50 as above, or BLIP's ViT-B/16: the timm layout without a head),
  ``img_encoder_q.{global,local}_embed.head.*``, ``text_encoder_q.model.*`` (BLIP's ``med.BertModel``: 6 layers,
  no pooler, no ``token_type_embeddings``), ``text_encoder_q.{global,local}_embed.head.*``, ``prototype_layer.*``
  and the two ``*_local_atten_layer.*`` MultiheadAttention layers.

Every release tensor is mapped onto one model tensor, except these, dropped on purpose:

- ``*.embeddings.position_ids``: the index buffer that transformers < 4.31 and BLIP saved (checked to be an arange).
- MGCA's ``text_encoder_q.model.encoder.layer.N.crossattention.*``: ``bert_config.json`` sets ``add_cross_attention``
  but MGCA runs BERT with ``mode="text"``, which skips cross-attention, so these tensors never touch an embedding
  (nor receive a gradient: they are the random initialisation).

MGCA's text forward is reproduced exactly with two derived tensors: BLIP's embeddings have no token-type term, so
``token_type_embeddings`` is zero; and MGCA calls ``BertModel(ids, mask, token_type_ids)``, whose third argument is
``position_ids`` (HKU-MedAI/MGCA#13), so every token uses position 0: every row of ``position_embeddings`` is set
to the release's row 0.

The text encoder's tokenizer (Bio_ClinicalBERT, as both papers use) comes from a local folder; BERT's shapes come
from the checkpoint and its other settings (heads, layer-norm eps) from that folder's ``config.json``.
"""

from __future__ import annotations

import pickle
import re
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from echoseg.core.errors import UserError, first_line
from echoseg.core.models.artefacts import load_trained_model
from echoseg.core.models.vlp import ImageEncoder, VLPModel
from echoseg.core.models.vlp_text import TextEncoder, build_bert, load_tokenizer
from echoseg.core.models.weights import resolve_weights

RELEASES = ("gloria-resnet50", "mgca-resnet50", "mgca-vit_base")
#: release -> (method, image encoder, text max_length): GLoRIA's ``word_num`` 97, MGCA's ``max_words`` 112
_SPECS = {"gloria-resnet50": ("gloria", "resnet50", 97), "mgca-resnet50": ("mgca", "resnet50", 112),
          "mgca-vit_base": ("mgca", "vit_base_patch16", 112)}
#: release key prefix -> model key prefix, per method
_PREFIXES = {
    "gloria": {"gloria.img_encoder.model.": "image.backbone.", "gloria.img_encoder.global_embedder.":
               "image.global_embed.", "gloria.img_encoder.local_embedder.": "image.local_embed.",
               "gloria.text_encoder.model.": "text.bert."},
    "mgca": {"img_encoder_q.model.": "image.backbone.", "img_encoder_q.global_embed.": "image.global_embed.",
             "img_encoder_q.local_embed.": "image.local_embed.", "text_encoder_q.model.": "text.bert.",
             "text_encoder_q.global_embed.": "text.global_embed.", "text_encoder_q.local_embed.": "text.local_embed.",
             "prototype_layer.": "prototype_layer.", "patch_local_atten_layer.": "patch_local_atten_layer.",
             "word_local_atten_layer.": "word_local_atten_layer."},
}
_TEXT = {"gloria": "gloria.text_encoder.model.", "mgca": "text_encoder_q.model."}
_IMAGE = {"gloria": "gloria.img_encoder.model.", "mgca": "img_encoder_q.model."}
_POSITION_IDS = re.compile(r"\.embeddings\.position_ids$")
_CROSS_ATTENTION = re.compile(r"^text_encoder_q\.model\.encoder\.layer\.\d+\.crossattention\.")
#: the authors' image transforms (both papers): resize the long side to 256 and zero-pad to a square, centre-crop
#: 224 (random crop in training), normalise with mean = std = 0.5; the ResNet forward upsamples to 299 first.
PREPROCESS = {"resize": 256, "pad": "zero, to a square, aspect kept", "crop": 224, "mean": [0.5] * 3,
              "std": [0.5] * 3}


# --- reading ---------------------------------------------------------------------------------------------------------


class _Opaque(dict):
    """Inert stand-in for a class a checkpoint names but echoseg never imports (hyper-parameters, callbacks)."""

    __hash__ = object.__hash__

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def append(self, item: Any) -> None:
        self.setdefault("items", []).append(item)

    def extend(self, items: Any) -> None:
        self.setdefault("items", []).extend(items)


def _opaque_pickle_module() -> types.ModuleType:
    """A pickle module resolving torch's weights-only allowlist and nothing else: other globals become inert stubs."""
    from torch._weights_only_unpickler import _get_allowed_globals  # deferred: private, used on the fallback only

    allowed, stubs = _get_allowed_globals(), {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            return stubs.setdefault(full, type(name, (_Opaque,), {"__module__": "echoseg.opaque"}))

    mod = types.ModuleType("echoseg_opaque_pickle")
    mod.Unpickler = Unpickler
    mod.load = lambda f, **kwargs: Unpickler(f, **kwargs).load()
    mod.stubs = stubs
    return mod


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of a Lightning ``.ckpt`` (its ``state_dict``, or a bare state dict) and how they were read.

    ``torch.load(weights_only=True)`` is tried first. The releases also pickle Python objects (GLoRIA's OmegaConf
    hyper-parameters, Lightning callback classes), which it refuses; they are then read with a pickle module that
    resolves torch's own weights-only allowlist and replaces every other class or function by an inert stand-in,
    so nothing from the file is imported or run.

    Raises:
        UserError: the file is missing or not a torch checkpoint holding tensors.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{p}: no such file (expected GLoRIA's or MGCA's released .ckpt)")
    info: dict[str, Any] = {"reader": "weights_only"}
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        module = _opaque_pickle_module()
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=False, pickle_module=module)
        except Exception as again:  # noqa: BLE001 - any decoding failure is a bad input file
            raise UserError(f"{p}: not a readable torch checkpoint ({first_line(again)})") from None
        names = sorted(module.stubs)
        info["reader"] = f"inert stand-ins for {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
        warnings.warn(f"{p.name}: weights-only loading refused the checkpoint's pickled objects ({info['reader']}); "
                      "read its tensors with those objects stubbed out, nothing was imported or run", stacklevel=2)
    except Exception as exc:  # noqa: BLE001 - a truncated zip, a text file...
        raise UserError(f"{p}: not a readable torch checkpoint ({first_line(exc)})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, Mapping):
        raise UserError(f"{p}: holds no state dict (expected a Lightning .ckpt)")
    state = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise UserError(f"{p}: holds no tensors")
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if isinstance(ckpt.get(key), int | str):
            info[key] = ckpt[key]
    return state, info


# --- detecting and mapping -------------------------------------------------------------------------------------------


def _is_resnet50(state: Mapping[str, torch.Tensor], p: str) -> bool:
    depth = [sum(f"{p}layer{n}.{i}.conv3.weight" in state for i in range(40)) for n in range(1, 5)]
    return depth == [3, 4, 6, 3] and f"{p}fc.weight" not in state


def _is_vit_base16(state: Mapping[str, torch.Tensor], p: str) -> bool:
    proj, pos = state.get(f"{p}patch_embed.proj.weight"), state.get(f"{p}pos_embed")
    blocks = sum(f"{p}blocks.{i}.attn.qkv.weight" in state for i in range(40))
    return (proj is not None and pos is not None and tuple(proj.shape) == (768, 3, 16, 16)
            and tuple(pos.shape) == (1, 197, 768) and blocks == 12)


def detect_release(state: Mapping[str, Any]) -> str:
    """Which release a checkpoint (or its ``state_dict``) is: one of :data:`RELEASES`.

    Raises:
        UserError: the keys are not those of a GLoRIA or MGCA release.
    """
    if isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    for method in ("gloria", "mgca"):
        img, txt = _IMAGE[method], _TEXT[method]
        if not any(k.startswith(img) for k in state) or f"{txt}embeddings.word_embeddings.weight" not in state:
            continue
        if method == "mgca" and "prototype_layer.weight" not in state:
            continue
        if _is_resnet50(state, img):
            return f"{method}-resnet50"
        if method == "mgca" and _is_vit_base16(state, img):
            return "mgca-vit_base"
        raise UserError(f"a {method.upper()} checkpoint whose image encoder is neither ResNet-50 nor ViT-B/16 "
                        "(only the published resnet50/vit_base releases are supported)")
    sample = ", ".join(list(state)[:3])
    raise UserError(f"not a GLoRIA or MGCA release checkpoint (keys such as {sample}; expected gloria.img_encoder.* "
                    "or img_encoder_q.*/text_encoder_q.*)")


def _text_config(state: Mapping[str, torch.Tensor], p: str, folder: Path) -> dict[str, Any]:
    """BERT's shapes from the checkpoint; heads, eps and activation from the text encoder's ``config.json``."""
    vocab, hidden = state[f"{p}embeddings.word_embeddings.weight"].shape
    try:
        ref = AutoConfig.from_pretrained(str(folder)).to_dict()
    except (OSError, ValueError) as exc:
        raise UserError(f"--text-encoder {folder}: unreadable config.json ({first_line(exc)})") from None
    if int(ref.get("hidden_size", hidden)) != hidden:
        raise UserError(f"--text-encoder {folder}: hidden size {ref['hidden_size']}, the checkpoint's BERT has "
                        f"{hidden} (pass the Bio_ClinicalBERT folder)")
    types_ = state.get(f"{p}embeddings.token_type_embeddings.weight")
    layers = [int(m.group(1)) for k in state if (m := re.match(re.escape(p) + r"encoder\.layer\.(\d+)\.", k))]
    try:
        cfg = {"model_type": "bert", "hidden_size": int(hidden), "num_hidden_layers": 1 + max(layers, default=-1),
               "num_attention_heads": int(ref.get("num_attention_heads", max(1, hidden // 64))),
               "intermediate_size": int(state[f"{p}encoder.layer.0.intermediate.dense.weight"].shape[0]),
               "max_position_embeddings": int(state[f"{p}embeddings.position_embeddings.weight"].shape[0]),
               "type_vocab_size": int(types_.shape[0]) if types_ is not None else int(ref.get("type_vocab_size", 2))}
    except KeyError as exc:
        raise UserError(f"checkpoint's text encoder lacks {exc.args[0]}") from None
    for key in ("hidden_act", "layer_norm_eps", "hidden_dropout_prob", "attention_probs_dropout_prob", "pad_token_id"):
        if key in ref:
            cfg[key] = ref[key]
    return cfg | {"vocab_size": int(vocab)}


def _map_state(model: VLPModel, state: Mapping[str, torch.Tensor], method: str) -> tuple[dict, dict[str, int]]:
    """The model's state dict from the release's: one-to-one, with the documented drops and derived tensors."""
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused, dropped = [], {"position_ids": 0, "cross_attention": 0}
    for key, value in state.items():
        if _POSITION_IDS.search(key):
            if not torch.equal(value.reshape(-1).long(), torch.arange(value.numel())):
                unused.append(key)  # a position_ids buffer that is not the identity would change the forward
            dropped["position_ids"] += 1
            continue
        if method == "mgca" and _CROSS_ATTENTION.match(key):
            dropped["cross_attention"] += 1
            continue
        prefix = next((pre for pre in _PREFIXES[method] if key.startswith(pre)), None)
        target = None if prefix is None else _PREFIXES[method][prefix] + key[len(prefix):]
        if target not in own or target in mapped or tuple(own[target].shape) != tuple(value.shape):
            unused.append(key)
            continue
        mapped[target] = value
    if method == "mgca":
        types_key, pos_key = "text.bert.embeddings.token_type_embeddings.weight", \
            "text.bert.embeddings.position_embeddings.weight"
        mapped[types_key] = torch.zeros_like(own[types_key])  # BLIP's embeddings have no token-type term
        if pos_key in mapped:  # MGCA feeds position id 0 to every token (see the module docstring)
            mapped[pos_key] = mapped[pos_key][:1].expand_as(mapped[pos_key]).clone()
    missing = [k for k in own if k not in mapped]
    if unused or missing:
        detail = "; ".join(f"{what} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                           for what, keys in (("unused", unused), ("missing", missing)) if keys)
        raise UserError(f"checkpoint does not map one-to-one onto the {method} model ({detail})")
    return mapped, dropped | {"loaded": len(state) - sum(dropped.values())}


def load_official_checkpoint(path: str | Path, text_encoder: str | None = None,
                             image_encoder: str | None = None) -> VLPModel:
    """Build the :class:`VLPModel` of a published GLoRIA or MGCA checkpoint and load every one of its tensors.

    Args:
        path: the release ``.ckpt`` (``chexpert_resnet50.ckpt``, ``resnet_50.ckpt`` or ``vit_base.ckpt``).
        text_encoder: a local Hugging Face folder (or cached hub id) of Bio_ClinicalBERT: its tokenizer and
            ``config.json`` are used, its weights are not (the checkpoint holds the fine-tuned BERT).
        image_encoder: optional expected image encoder (``resnet50`` or ``vit_base_patch16``), checked against the
            release.

    Returns:
        The model in eval mode; ``model.config["official"]`` records the release, the authors' preprocessing and
        how many tensors were loaded or dropped.

    Raises:
        UserError: no text encoder, an unreadable or foreign checkpoint, or a layout that does not map one-to-one.
    """
    if not text_encoder:
        raise UserError("--text-encoder: required to use a GLoRIA/MGCA checkpoint (its tokenizer); pass the "
                        "Bio_ClinicalBERT folder (emilyalsentzer/Bio_ClinicalBERT)")
    state, info = read_checkpoint(path)
    release = detect_release(state)
    method, arch, max_length = _SPECS[release]
    if image_encoder and image_encoder != arch:
        raise UserError(f"--image-encoder {image_encoder}: {Path(path).name} is {release} (image encoder {arch})")
    folder = resolve_weights(text_encoder, required=("config.json",), what="--text-encoder")
    tokenizer = load_tokenizer(folder, "--text-encoder")
    text_cfg = _text_config(state, _TEXT[method], folder)
    vocab = text_cfg.pop("vocab_size")
    if len(tokenizer) > vocab:
        raise UserError(f"--text-encoder {text_encoder}: tokenizer of {len(tokenizer)} tokens, the checkpoint's BERT "
                        f"has {vocab} (pass the Bio_ClinicalBERT folder)")
    pooler = f"{_TEXT[method]}pooler.dense.weight" in state
    if method == "gloria":
        heads: dict[str, Any] = {"last_n_layers": 4}
    else:
        protos = state["prototype_layer.weight"]
        first = state.get("img_encoder_q.global_embed.head.0.weight")  # absent: reported as missing below
        heads = {"dim": int(protos.shape[1]), "prototypes": int(protos.shape[0]),
                 "hidden": int(first.shape[0]) if first is not None else 2048}
    upsample = 299 if arch == "resnet50" else None
    config = {"method": method, "image_encoder": arch, "input_size": PREPROCESS["crop"], "upsample": upsample,
              "mean": PREPROCESS["mean"], "std": PREPROCESS["std"], "max_length": max_length,
              "text_config": text_cfg, "text_pooler": pooler, "vocab_size": vocab, "heads": {method: heads}}
    bert = build_bert(text_cfg, vocab, eager=method == "mgca", pooler=pooler)
    model = VLPModel(config, ImageEncoder(arch, PREPROCESS["crop"], upsample),
                     TextEncoder(bert, tokenizer, max_length))
    mapped, counts = _map_state(model, state, method)
    model.load_state_dict(mapped, strict=True)
    model.config["official"] = {"release": release, "file": Path(path).name, **info, **counts,
                                "preprocess": {**PREPROCESS, "upsample": upsample}}
    return model.eval()


def load_vlp(spec: str | Path, text_encoder: str | None = None, option: str = "--run",
             which: str = "best") -> tuple[VLPModel, str]:
    """A pre-trained image-text model for evaluation: a `pretrain` run (its ``which`` weights, best or last) or a
    released ``.ckpt``.

    Returns:
        ``(model in eval mode, description)``; the description names the run or the release.
    """
    p = Path(spec)
    if p.is_file():
        return load_official_checkpoint(p, text_encoder=text_encoder).eval(), f"released checkpoint {p}"
    model, info = load_trained_model(p, which, option)
    if info.get("name") != "vlp":
        raise UserError(f"{option} {p}: not a pretrain run (model {info.get('name')!r})")
    return model.eval(), f"pretrain run {p}" + ("" if which == "best" else f" ({which} weights)")
