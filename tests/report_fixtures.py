"""Fixtures of the synthetic-report tests: a prompts-like run with long-tailed attributes, and tiny random text
models built offline (a causal LM with a chat template, a NER token classifier with RaTE-NER's labels).

The tokenizers are trained by the `tokenizers` library on a few texts, so nothing is downloaded; the weights are
random, so the models' outputs exercise code paths, not quality.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

RATE_LABELS = ["B-ABNORMALITY", "I-ABNORMALITY", "B-NON-ABNORMALITY", "I-NON-ABNORMALITY", "B-DISEASE", "I-DISEASE",
               "B-NON-DISEASE", "I-NON-DISEASE", "B-ANATOMY", "I-ANATOMY", "O"]  # RaTE-NER's label2idx order
CHAT_TEMPLATE = ("{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
                 "{% if add_generation_prompt %}<s> assistant :{% endif %}")


def skewed_prompts_run(folder: Path, images: int = 48) -> Path:
    """A prompts-like run (manifest.csv with shape and report columns, reports.csv) whose attributes have a long
    tail: mostly female, mostly 60-79, mostly good quality, one rare shape per structure. No image files."""
    import pandas as pd

    from echoseg.core.prompts.reports import image_reports, report_table

    sexes = "FFFMFFFFFMFF"  # per patient, repeating: a long tail in every attribute
    ages = [66, 70, 72, 45, 68, 75, 61, 85, 64, 33, 77, 52]
    qualities = ["Good"] * 8 + ["Medium"] * 3 + ["Poor"]
    rows = []
    for i in range(images):
        p = i // 4
        patient = f"patient{p:04d}"
        view, phase = ("2CH", "4CH")[i % 2], ("ED", "ES")[(i // 2) % 2]
        sex, age, quality = sexes[p % 12], ages[p % 12], qualities[(p * 5) % 12]
        split = "test" if p % 6 == 5 else ("val" if p % 6 == 4 else "train")
        shapes = {"LV": "oval" if i % 12 else "triangle", "MYO": "circle" if i % 16 else "square",
                  "LA": ("oval", "rectangle", "oval")[i % 3]}
        image = folder / f"{patient}_{view}_{phase}.nii.gz"
        for label, structure in ((1, "LV"), (2, "MYO"), (3, "LA")):
            rows.append({"sample_id": f"{image.stem}_{structure}", "image": str(image), "mask": str(image),
                         "label": label, "structure": structure, "view": view, "phase": phase, "patient": patient,
                         "sex": sex, "age": age, "quality": quality, "split": split, "source": "real",
                         "shape": shapes[structure]})
    df = pd.DataFrame(rows)
    df["report"] = image_reports(df, with_quality=True)
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "manifest.csv", index=False)
    report_table(df).to_csv(folder / "reports.csv", index=False)
    return folder


def tiny_causal_lm(folder: Path, texts: Iterable[str], chat: bool = True, seed: int = 0) -> Path:
    """A one-layer GPT-2 with a word-level tokenizer of ``texts`` (and a chat template unless ``chat`` is False)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.train_from_iterator(list(texts) + ["user assistant :"],
                            trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=512, vocab_size=len(fast),
                        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


def tiny_token_classifier(folder: Path, texts: Iterable[str], labels: list[str] = RATE_LABELS, seed: int = 0) -> Path:
    """A one-layer BERT token classifier with ``labels`` (RaTE-NER's by default) and a WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    from echoseg.core.models.vlp_text import train_wordpiece

    tok = train_wordpiece(texts, 400, folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, id2label=dict(enumerate(labels)),
                        label2id={label: i for i, label in enumerate(labels)})
    BertForTokenClassification(config).save_pretrained(str(folder))
    return folder
