"""Report writers and the verification loop (SynCXR, step 3): write a report for each entity set, extract its
entities again, and re-query until they are exactly the sampled ones.

- ``template``: deterministic phrasings, no model. Attribute sets get one of four wordings (the first is the
  image-level report of ``prompts build``, :func:`echoseg.core.prompts.reports.image_report`); an age band becomes
  an age drawn in the band. A re-query uses the next wording. NER sets are listed per category.
- ``llm:PATH``: a local transformers causal LM (``AutoModelForCausalLM`` + ``AutoTokenizer``). The entity list goes
  into one user message rendered with the tokenizer's chat template; a tokenizer without a chat template gets the
  plain prompt ``<instruction>\\n\\nReport:``. Generation is batched (left padding) and sampled, seeded per batch and
  try from (``--seed``, try, first report of the batch), so a run is reproducible for a given ``--batch-size``.

Every report is checked by the extractor that built the inventory (:class:`~echoseg.core.synth.entities.
VocabularyMatcher` or the NER model): it is verified when the extracted set equals the sampled set. A mismatch is
written again, up to ``max_tries`` times in all; a report that never matches is dropped and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from echoseg.core.console import track
from echoseg.core.data.manifest import STRUCTURE_NAMES
from echoseg.core.errors import UserError, first_line
from echoseg.core.prompts.reports import ImageFacts, image_report
from echoseg.core.prompts.templates import PHASE_WORDS, VIEW_WORDS, article
from echoseg.core.synth.balance import age_bin
from echoseg.core.synth.entities import AGES, SHAPE_PREFIX, Entity, Extractor, load_error, model_source

_ADJECTIVE = {"circle": "circular", "triangle": "triangular", "rectangle": "rectangular"}
_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}
_CATEGORY_WORDS = {"phase": "cardiac phase", "quality": "image quality"}


class Writer(Protocol):
    """Writes one report per entity set; returns (text, seed) pairs in order."""

    name: str

    def write(self, ids: Sequence[int], sets: Sequence[Sequence[Entity]], attempt: int) -> list[tuple[str, int]]:
        """The reports of ``sets`` (report numbers ``ids``) at try ``attempt`` (1-based)."""
        ...


def grouped(entities: Sequence[Entity]) -> dict[str, list[str]]:
    """``{category: [values]}`` in the set's order."""
    out: dict[str, list[str]] = {}
    for c, v in entities:
        out.setdefault(c, []).append(v)
    return out


def describe(entity: Entity) -> str:
    """An entity in words, as an instruction lists it ("apical four-chamber view", "age 40 to 59 years")."""
    c, v = entity
    if c == "view" and v in VIEW_WORDS:
        return f"apical {VIEW_WORDS[v]}-chamber view"
    if c == "phase" and v in PHASE_WORDS:
        return f"end-{PHASE_WORDS[v]}"
    if c == "sex":
        return f"{v} patient"
    if c == "age":
        ages = [a for a in AGES if age_bin(a) == v]
        example = ages[len(ages) // 2]
        return f"patient aged {ages[0]} to {ages[-1]} years (give one age as a number, e.g. {example}-year-old)"
    if c == "quality":
        return f"{v} image quality"
    if c.startswith(SHAPE_PREFIX):
        name = STRUCTURE_NAMES.get(c[len(SHAPE_PREFIX):], c[len(SHAPE_PREFIX):]).lower()
        return f"{name} of {v} shape"
    return f"{c}: {v}"


def is_attribute_set(entities: Sequence[Entity]) -> bool:
    """Whether every entity is an attribute entity (view, phase, sex, age, quality, shape per structure)."""
    return all(c in ("view", "phase", "sex", "age", "quality") or c.startswith(SHAPE_PREFIX) for c, _ in entities)


def instruction(entities: Sequence[Entity]) -> str:
    """The LLM instruction: the entity list and the rule that nothing else may be named."""
    items = "\n".join(f"- {describe(e)}" for e in entities)
    cats = list(dict.fromkeys(_CATEGORY_WORDS.get(c, "shape" if c.startswith(SHAPE_PREFIX) else c)
                              for c, _ in entities))
    others = cats[0] if len(cats) == 1 else ", ".join(cats[:-1]) + " or " + cats[-1]
    kind = "echocardiography" if is_attribute_set(entities) else "radiology"
    return (f"Write a short {kind} report (two or three sentences) that mentions exactly the findings below, each "
            f"once, and no other {others}:\n{items}\nAnswer with the report only.")


# ----------------------------------------------------------------------------- template writer
def _age_in(band: str, rng: np.random.Generator) -> int:
    ages = [a for a in AGES if age_bin(a) == band]
    return int(rng.choice(ages))


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _attribute_report(e: dict[str, str], age: int | None, style: int) -> str:
    """One of four wordings of an attribute set (each category named once, shapes next to their structure)."""
    shapes = {c[len(SHAPE_PREFIX):]: v for c, v in e.items() if c.startswith(SHAPE_PREFIX)}
    view, phase, sex, quality = (e.get(k) for k in ("view", "phase", "sex", "quality"))
    if style == 0:
        return image_report(ImageFacts(view=view, phase=phase, sex=sex, age=age, quality=quality, shapes=shapes))
    names = {s: STRUCTURE_NAMES[s].lower() for s in STRUCTURE_NAMES if s in shapes}
    who = " ".join(w for w in (f"{age}-year-old" if age is not None else None, sex) if w)
    sentences = []
    if style == 1:
        if who:
            sentences.append(f"{who[:1].upper()}{who[1:]} patient.")
        scan = f"Apical {VIEW_WORDS[view]}-chamber view" if view else ("Recorded" if phase else "")
        scan += f" at end-{PHASE_WORDS[phase]}" if phase else ""
        if scan:
            sentences.append(scan + ".")
        if quality:
            sentences.append(f"Image quality is {quality}.")
        sentences += [f"{names[s][:1].upper()}{names[s][1:]}: {w}." for s, w in shapes.items() if s in names]
        return " ".join(sentences)
    if style == 2:
        head = "Echocardiogram" + (f", apical {VIEW_WORDS[view]}-chamber view" if view else "")
        head += f", end-{PHASE_WORDS[phase][:-1]}ic frame" if phase else ""
        if sex or age is not None:
            head += f", in a{' ' + sex if sex else ''} patient" + (f" aged {age}" if age is not None else "")
        sentences.append(head + ".")
        if quality:
            sentences.append(f"The image quality is {quality}.")
        if shapes:
            parts = [f"{article(_ADJECTIVE.get(w, w), 'grammatical')} {_ADJECTIVE.get(w, w)} {names[s]}"
                     for s, w in shapes.items() if s in names]
            sentences.append(f"It shows {_join(parts)}.")
        return " ".join(sentences)
    head = f"The apical {VIEW_WORDS[view]}-chamber view" if view else "The echocardiographic frame"
    head += f", taken at end-{PHASE_WORDS[phase]}," if phase else ""
    head += f" shows a {sex}" if sex else " shows a patient"
    head += f", {age} years old" if age is not None else ""
    sentences.append(head + (f", with {quality} image quality." if quality else "."))
    sentences += [f"The {names[s]} is {w}-shaped." for s, w in shapes.items() if s in names]
    return " ".join(sentences)


class TemplateWriter:
    """Deterministic reports: attribute sets in four wordings, NER sets listed per category."""

    name = "template"
    styles = 4

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def write(self, ids: Sequence[int], sets: Sequence[Sequence[Entity]], attempt: int) -> list[tuple[str, int]]:
        out = []
        for i, entities in zip(ids, sets, strict=True):
            seed = self.seed + int(i)
            rng = np.random.default_rng(seed)
            style = (int(rng.integers(self.styles)) + attempt - 1) % self.styles
            out.append((self.text(entities, rng, style), seed))
        return out

    @staticmethod
    def text(entities: Sequence[Entity], rng: np.random.Generator, style: int) -> str:
        """The report of one set in wording ``style``."""
        groups = grouped(entities)
        if is_attribute_set(entities):
            age = _age_in(groups["age"][0], rng) if "age" in groups else None
            return _attribute_report({c: v[0] for c, v in groups.items()}, age, style)
        if style % 2 == 0:
            return " ".join(f"{c.capitalize()}: {', '.join(v)}." for c, v in groups.items())
        return f"The study shows {_join([v for vals in groups.values() for v in vals])}."


# ----------------------------------------------------------------------------- LLM writer
def batch_seed(seed: int, attempt: int, first: int) -> int:
    """The torch seed of one generation batch: independent streams for (seed, try, first report)."""
    return int(np.random.SeedSequence([int(seed), int(attempt), int(first)]).generate_state(1)[0])


class LlmWriter:
    """Reports from a local causal LM, the entity list in the instruction (see the module docstring)."""

    def __init__(self, spec: str, *, device: str = "cpu", precision: str = "no", max_new_tokens: int = 160,
                 temperature: float = 0.7, top_p: float = 0.95, seed: int = 0) -> None:
        import torch  # deferred: heavy imports, loaded only when this path runs
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, local = model_source(spec, "--writer llm:")
        kwargs: dict = {"local_files_only": local}
        if device.startswith("cuda") and precision in _DTYPES:
            new = tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56)
            kwargs["dtype" if new else "torch_dtype"] = getattr(torch, _DTYPES[precision])
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs).to(device).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise load_error(spec, "--writer llm:", exc) from None
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise UserError(f"--writer llm:{spec}: the tokenizer has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        self.chat = bool(getattr(tok, "chat_template", None))
        self.name = f"llm:{spec}"
        self.device, self.seed = device, int(seed)
        self.settings = {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature),
                         "top_p": float(top_p)}

    def prompt(self, entities: Sequence[Entity]) -> str:
        """The model input for one set: the chat template's rendering of the instruction, else a plain prompt."""
        text = instruction(entities)
        if self.chat:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return f"{text}\n\nReport:"

    def write(self, ids: Sequence[int], sets: Sequence[Sequence[Entity]], attempt: int) -> list[tuple[str, int]]:
        import torch  # deferred: heavy import, loaded only when this path runs

        seed = batch_seed(self.seed, attempt, ids[0])
        torch.manual_seed(seed)
        enc = self.tokenizer([self.prompt(s) for s in sets], return_tensors="pt", padding=True,
                             add_special_tokens=not self.chat).to(self.device)
        sample = self.settings["temperature"] > 0
        extra = {"temperature": self.settings["temperature"], "top_p": self.settings["top_p"]} if sample else {}
        try:
            with torch.no_grad():
                out = self.model.generate(**enc, do_sample=sample, max_new_tokens=self.settings["max_new_tokens"],
                                          pad_token_id=self.tokenizer.pad_token_id, **extra)
        except (ValueError, IndexError) as exc:
            raise UserError(f"--writer {self.name}: generation failed ({first_line(exc, 160)})") from None
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [(" ".join(t.split()), seed) for t in texts]


# ----------------------------------------------------------------------------- verification loop
@dataclass
class WrittenReport:
    """A report's last text, the entities extracted from it, the tries it took and whether it matched."""

    text: str
    extracted: set[Entity]
    tries: int
    seed: int
    verified: bool


def write_verified(sets: Sequence[Sequence[Entity]], writer: Writer, extractor: Extractor, *, max_tries: int,
                   batch_size: int, on_try: Callable[[dict], None] | None = None) -> tuple[list[WrittenReport], dict]:
    """Write every set's report, re-querying mismatches up to ``max_tries`` in all; returns reports and statistics."""
    results: list[WrittenReport | None] = [None] * len(sets)
    pending = list(range(len(sets)))
    per_try = []
    for attempt in range(1, max_tries + 1):
        if not pending:
            break
        chunks = [pending[i:i + batch_size] for i in range(0, len(pending), batch_size)]
        failed = []
        for chunk in track(chunks, f"reports, try {attempt}"):
            written = writer.write(chunk, [sets[i] for i in chunk], attempt)
            found = extractor([t for t, _ in written])
            for i, (text, seed), ext in zip(chunk, written, found, strict=True):
                ok = set(ext) == set(sets[i])
                results[i] = WrittenReport(text, set(ext), attempt, seed, ok)
                if not ok:
                    failed.append(i)
        per_try.append({"try": attempt, "queried": len(pending), "verified": len(pending) - len(failed),
                        "mismatched": len(failed)})
        if on_try is not None:
            on_try(per_try[-1])
        pending = failed
    done = [r for r in results if r is not None]
    kept = [r for r in done if r.verified]
    missing = sum(len(set(sets[i]) - r.extracted) for i, r in enumerate(done) if not r.verified)
    extra = sum(len(r.extracted - set(sets[i])) for i, r in enumerate(done) if not r.verified)
    queries = sum(r.tries for r in done)
    stats = {"writer": writer.name, "max_tries": max_tries, "requested": len(sets), "verified": len(kept),
             "dropped": len(done) - len(kept), "verified_fraction": round(len(kept) / max(1, len(sets)), 4),
             "queries": queries, "requeries": queries - len(sets),
             "tries": {str(k): v for k, v in sorted(Counter(r.tries for r in kept).items())},
             "dropped_missing_entities": missing, "dropped_extra_entities": extra, "per_try": per_try}
    return done, stats
