"""An offline CLIP tokenizer for randomly initialised CLIPSeg models (``tiny``/``base`` without ``--weights``).

It is a real byte-level BPE ``CLIPTokenizer`` (same normaliser, pre-tokeniser, ``</w>`` end-of-word suffix and
special tokens as OpenAI's): its vocabulary holds the 256 byte symbols and their end-of-word forms, so any text
tokenizes, plus merges that spell the prompt vocabulary (structures, views, phases, numbers, qualities, shapes)
as whole-word tokens. Pretrained models use the tokenizer shipped with their weights instead.
"""

from __future__ import annotations

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words of the P0..P7 prompt templates (both variants) and CAMUS metadata; anything else falls back to bytes.
PROMPT_WORDS = """
a an the of in and with at is its heart cardiac ultrasound echocardiography image view chamber
left right ventricular ventricle cavity myocardium atrium structure
two three four apical diastole systole end diastolic systolic phase
male female man woman year old patient aged age sex
good medium poor quality shape circle oval triangle square rectangle located
zero one five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen
twenty thirty forty fifty sixty seventy eighty ninety hundred top bottom middle center image
""".split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode symbols."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes), strict=True))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-level BPE training on ``words`` until each word is one token.

    Merges are learned greedily (most frequent adjacent pair first, ties broken by first occurrence), so applying
    them in rank order, as BPE encoding does, rebuilds every training word as a single token.
    """
    b2u = bytes_to_unicode()
    segs = []
    for word in dict.fromkeys(w.lower() for w in words):
        pieces = [b2u[b] for b in word.encode("utf-8")]
        pieces[-1] += "</w>"
        segs.append(pieces)
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for pieces in segs:
            for pair in zip(pieces, pieces[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = max(counts, key=lambda p: counts[p])  # dicts keep insertion order: ties -> first seen
        merges.append(best)
        for k, pieces in enumerate(segs):
            out, i = [], 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                    out.append(pieces[i] + pieces[i + 1])
                    i += 2
                else:
                    out.append(pieces[i])
                    i += 1
            segs[k] = out


def build_vocab(words: list[str] | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges: bytes, end-of-word bytes, the learned merges' tokens, then BOS/EOS."""
    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab[s] = len(vocab)
    merges = learn_merges(words if words is not None else PROMPT_WORDS)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def offline_clip_tokenizer(words: list[str] | None = None) -> CLIPTokenizer:
    """A CLIPTokenizer built without any download (model_max_length 77)."""
    vocab, merges = build_vocab(words)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
