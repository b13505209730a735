"""The text side of the pre-training model (:mod:`echoseg.core.models.vlp`): a BERT-family encoder and its tokenizer.

- A pretrained encoder is any local Hugging Face folder or cached hub id that ``AutoModel`` loads (Bio_ClinicalBERT
  as GLoRIA and MGCA use, PubMedBERT...), with the tokenizer saved beside it.
- A tiny encoder (CPU tests, toy data) is a small random ``BertModel`` whose WordPiece vocabulary is built from the
  run's own texts with the ``tokenizers`` library (:func:`train_wordpiece`), so nothing is downloaded.

Word pieces are summed into words as GLoRIA's and MGCA's ``aggregate_tokens`` do (a token starting with ``##``
continues the previous word; [CLS] and [SEP] are words of their own; positions after [SEP] are zero), here with one
scatter-add for the whole batch instead of a loop over captions and tokens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from echoseg.core.errors import UserError, first_line
from echoseg.core.models.weights import resolve_weights

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_DIR = "tokenizer"


def train_wordpiece(texts: Iterable[str], vocab_size: int, folder: Path) -> BertTokenizerFast:
    """Build a lower-case WordPiece vocabulary from ``texts`` and save a BERT tokenizer into ``folder``.

    The texts are normalised and split into words by the ``tokenizers`` library's BERT normaliser and
    pre-tokeniser; the vocabulary is the special tokens, every character seen (alone and as a ``##`` continuation,
    so any word of the corpus tokenizes), then whole words by frequency (ties alphabetical) up to ``vocab_size``.
    The same texts give the same vocabulary on every process and every run (the library's own trainer breaks
    merge ties differently from run to run, which would make seeded runs differ).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # deferred

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        if isinstance(text, str) and text.strip():
            counts.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    if not counts:
        raise UserError("no texts to build the tiny text encoder's WordPiece vocabulary from")
    chars = sorted({c for w in counts for c in w})
    vocab = list(SPECIAL_TOKENS) + chars + [f"##{c}" for c in chars]
    seen = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = splitter
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=True, unk_token="[UNK]", pad_token="[PAD]",
                             cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return load_tokenizer(folder, "tokenizer")


def load_tokenizer(folder: str | Path, what: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``folder`` (a text-encoder folder or a run's ``checkpoints/tokenizer``)."""
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {folder}: no usable tokenizer ({first_line(exc)})") from None


def build_bert(text_cfg: dict[str, Any], vocab_size: int, eager: bool, pooler: bool) -> nn.Module:
    """A randomly initialised BERT-family encoder from a config dict (``model_type`` defaults to ``bert``)."""
    cfg = dict(text_cfg)
    model_type = cfg.pop("model_type", "bert")
    cfg["vocab_size"] = int(vocab_size)
    config = AutoConfig.for_model(model_type, **cfg)
    kwargs = {"attn_implementation": "eager"} if eager else {}
    return AutoModel.from_config(config, add_pooling_layer=pooler, **kwargs)


def load_pretrained_bert(spec: str, eager: bool, pooler: bool) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A pretrained encoder and its tokenizer from a local folder or a cached hub id (``--text-encoder``)."""
    folder = resolve_weights(spec, required=("config.json",), what="--text-encoder")
    kwargs = {"attn_implementation": "eager"} if eager else {}
    try:
        model = AutoModel.from_pretrained(str(folder), add_pooling_layer=pooler, **kwargs)
    except TypeError:  # an encoder without a pooler argument
        model = AutoModel.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"--text-encoder {spec}: cannot load a transformers model ({first_line(exc)})") from None
    return model, load_tokenizer(folder, "--text-encoder")


def continuation_mask(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """(vocab,) bool: True for word pieces that continue a word (``##...``)."""
    vocab = tokenizer.get_vocab()
    mask = torch.zeros(max(vocab.values()) + 1, dtype=torch.bool)
    for token, idx in vocab.items():
        if token.startswith("##"):
            mask[idx] = True
    return mask


def word_groups(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                continuation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's word index and each caption's number of words ([CLS] and [SEP] included).

    Returns:
        ``(groups, n_words)``: (B, T) long word index of every token (padding tokens get index T, a discard slot)
        and (B,) long word counts.
    """
    valid = attention_mask.bool()
    starts = valid & ~continuation.to(input_ids.device)[input_ids]
    starts[:, 0] = valid[:, 0]  # [CLS] always opens a word
    groups = starts.long().cumsum(dim=1) - 1
    t = input_ids.shape[1]
    groups = torch.where(valid, groups.clamp(min=0), torch.full_like(groups, t))
    return groups, starts.sum(dim=1)


def aggregate_words(features: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Sum token features into word features: (B, T, H) -> (B, T, H), words first, zeros after the last word."""
    b, t, h = features.shape
    out = features.new_zeros(b, t + 1, h)
    out.scatter_add_(1, groups[:, :, None].expand(b, t, h), features)
    return out[:, :t]


class TextEncoder(nn.Module):
    """A BERT-family encoder with its tokenizer; returns hidden states and word groups for the heads."""

    def __init__(self, bert: nn.Module, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        super().__init__()
        self.bert = bert
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.register_buffer("continuation", continuation_mask(tokenizer), persistent=False)

    @property
    def hidden_size(self) -> int:
        """Width of the encoder's token states."""
        return int(self.bert.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and mask padded to ``max_length`` (a fixed width, so processes can gather word features)."""
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, hidden_states: bool = False,
                attentions: bool = False) -> Any:
        """The encoder's outputs (``last_hidden_state``, optionally all ``hidden_states`` and ``attentions``)."""
        return self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=hidden_states,
                         output_attentions=attentions, return_dict=True)
