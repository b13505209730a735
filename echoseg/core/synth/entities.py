"""Entity inventories of real reports and the extractors that find entities in a report (SynCXR, step 1).

An entity is a ``(category, value)`` pair. Two inventories:

- **attributes** (default): the attribute values of a data or prompts run, one entity set per image: ``view``
  (2CH/4CH), ``phase`` (ED/ES), ``sex`` (female/male), ``age`` (the bands of
  :func:`echoseg.core.synth.balance.age_bin`), ``quality`` (good/medium/poor) and ``shape_LV``/``shape_MYO``/
  ``shape_LA`` (a prompts run's shape words). Each category holds one value per report. Reports are checked by
  :class:`VocabularyMatcher`.
- **ner** (``--ner PATH``): entities that a local token-classification model (RaTE-NER's labels B-ABNORMALITY,
  I-ANATOMY...) finds in free-text reports; its entity groups, lower-cased, are the categories (abnormality,
  non-abnormality, disease, non-disease, anatomy) and a report may hold several entities of each. Reports are
  checked by the same model (:class:`NerExtractor`).

An inventory counts, for every entity, the real reports that name it (``entities.csv``: entity, category, count).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from echoseg.core.console import track
from echoseg.core.data.manifest import STRUCTURE_NAMES, read_manifest
from echoseg.core.errors import UserError, first_line
from echoseg.core.hub import not_cached, offline
from echoseg.core.prompts.reports import facts_of
from echoseg.core.prompts.templates import PHASE_WORDS, QUALITIES, SHAPES, VIEW_WORDS, number_words
from echoseg.core.synth.balance import age_bin

Entity = tuple[str, str]  # (category, value)
Extractor = Callable[[Sequence[str]], list[set[Entity]]]
SHAPE_PREFIX = "shape_"
SEXES = ("female", "male")
AGES = range(18, 96)  # the ages a template or an instruction gives for an age band
ATTRIBUTE_ORDER = ("view", "phase", "sex", "age", "quality", *(SHAPE_PREFIX + s for s in STRUCTURE_NAMES))


@dataclass
class Inventory:
    """Entity counts per category over the real reports, and which categories hold several entities a report."""

    counts: dict[str, dict[str, int]]  # category -> {value: reports naming it}
    kind: str  # "attributes" | "ner"
    reports: int
    multi: set[str] = field(default_factory=set)

    @property
    def categories(self) -> list[str]:
        """The categories, attribute order first, then the others alphabetically."""
        rank = {c: i for i, c in enumerate(ATTRIBUTE_ORDER)}
        return sorted(self.counts, key=lambda c: (rank.get(c, len(rank)), c))

    def entities(self) -> list[Entity]:
        """Every entity, by category order then value."""
        return [(c, v) for c in self.categories for v in sorted(self.counts[c])]

    def table(self) -> pd.DataFrame:
        """entities.csv: entity, category, count; most frequent first (ties by category, then entity)."""
        rows = [{"entity": v, "category": c, "count": int(n)}
                for c in self.categories for v, n in self.counts[c].items()]
        df = pd.DataFrame(rows, columns=["entity", "category", "count"])
        return df.sort_values(["count", "category", "entity"], ascending=[False, True, True],
                              kind="stable").reset_index(drop=True)

    def drop_rare(self, min_count: int) -> Inventory:
        """A copy without the entities named by fewer than ``min_count`` reports (and without emptied categories)."""
        kept = {c: {v: n for v, n in vals.items() if n >= min_count} for c, vals in self.counts.items()}
        return Inventory({c: v for c, v in kept.items() if v}, self.kind, self.reports, set(self.multi))


def count_entities(sets: Iterable[Iterable[Entity]], kind: str, multi: Iterable[str] = ()) -> Inventory:
    """The inventory of a list of per-report entity sets (each entity counted once per report)."""
    counts: dict[str, Counter] = {}
    n = 0
    for entities in sets:
        n += 1
        for cat, value in set(entities):
            counts.setdefault(cat, Counter())[value] += 1
    return Inventory({c: dict(v) for c, v in counts.items()}, kind, n, set(multi))


# ----------------------------------------------------------------------------- attribute inventory
def image_entities(rows: list[dict]) -> set[Entity]:
    """The attribute entities of one image from its manifest rows (one per structure); unknown values left out."""
    facts = facts_of(rows)
    out: set[Entity] = set()
    for cat, value in (("view", facts.view), ("phase", facts.phase), ("sex", facts.sex), ("quality", facts.quality)):
        if value is not None:
            out.add((cat, str(value)))
    if facts.age is not None:
        out.add(("age", age_bin(facts.age)))
    out |= {(SHAPE_PREFIX + s, w.lower()) for s, w in facts.shapes.items()}
    return out


def attribute_inventory(run: str | Path, splits: Sequence[str]) -> Inventory:
    """The attribute inventory of a data or prompts run's ``splits`` rows (one entity set per image)."""
    p = Path(run)
    if not p.exists():
        raise UserError(f"--entities {p}: not found")
    if p.is_dir() and not (p / "manifest.csv").is_file():
        raise UserError(f"--entities {p}: not a prompts or data run (no manifest.csv)")
    df = read_manifest(p)
    df = df[df["split"].astype(str).isin(splits)] if "split" in df else df
    if df.empty:
        raise UserError(f"--entities {p}: no rows in split(s) {', '.join(splits)}")
    groups = df.groupby(df["image"].astype(str), sort=True)
    inv = count_entities((image_entities(g.to_dict("records")) for _, g in groups), "attributes")
    if not inv.counts:
        raise UserError(f"--entities {p}: no attribute values (view, phase, sex, age, quality, shape) to sample")
    return Inventory(inv.counts, "attributes", inv.reports)


# ----------------------------------------------------------------------------- the vocabulary matcher
def _words(alternatives: Iterable[str]) -> str:
    """A regex alternation of ``alternatives``, longest first."""
    return "|".join(sorted((re.escape(a) for a in alternatives), key=len, reverse=True))


_NUMBERS = {number_words(n): n for n in range(130)}
_AGE = rf"(\d{{1,3}}|{_words(_NUMBERS)})"
_AGE_PATTERNS = (rf"\b{_AGE}[- ]years?[- ]old\b", rf"\baged {_AGE}\b", rf"\bage(?: of|:)? {_AGE}\b")
_STRUCTURES = {"LV": ("left ventricular cavity", "left ventricle", "left ventricular", "lv"),
               "MYO": ("myocardium", "myocardial", "myo"),
               "LA": ("left atrium cavity", "left atrial cavity", "left atrium", "left atrial", "la")}
_SHAPE_WORDS = {"circular": "circle", "round": "circle", "ovoid": "oval", "elliptical": "oval",
                "triangular": "triangle", "rectangular": "rectangle"}


def _patterns(shapes: Iterable[str]) -> list[tuple[str, str, Callable[[re.Match], str]]]:
    """(regex, kind, value of a match): kind is a category, ``structure`` or ``shape`` (paired per sentence)."""
    const = lambda v: lambda m: v  # noqa: E731 - a value that does not depend on the match
    out = [(rf"\b(?:{word}|{n})[- ]?chamber\b|\b{code}\b|\ba{n}c\b", "view", const(code))
           for code, word in VIEW_WORDS.items() for n in [code[0]]]
    out += [(rf"\b(?:end[- ](?:of[- ](?:the[- ])?)?)?{word[:-1]}(?:e|ic)\b", "phase", const(code))
            for code, word in PHASE_WORDS.items()]
    out += [(r"\b(?:female|woman)\b", "sex", const("female")), (r"\b(?:male|man)\b", "sex", const("male"))]
    age = lambda m: age_bin(_NUMBERS.get(m.group(1).lower(), m.group(1)))  # noqa: E731
    out += [(rx, "age", age) for rx in _AGE_PATTERNS]
    q = _words(QUALITIES)
    out += [(rf"\b({q})[- ](?:image[- ])?quality\b", "quality", lambda m: m.group(1).lower()),
            (rf"\bquality(?: is| was|:)? ({q})\b", "quality", lambda m: m.group(1).lower())]
    out += [(rf"\b(?:{_words(forms)})\b", "structure", const(s)) for s, forms in _STRUCTURES.items()]
    words = {w.lower(): w.lower() for w in shapes} | _SHAPE_WORDS
    out += [(rf"\b({_words(words)})\b", "shape", lambda m: words[m.group(1).lower()])]
    return out


def mentioned_age(text: str) -> int | None:
    """The first age in years that ``text`` names ("63-year-old", "aged sixty-three"), or None."""
    hits = [m for rx in _AGE_PATTERNS for m in re.finditer(rx, text, re.I)]
    if not hits:
        return None
    word = min(hits, key=lambda m: m.start()).group(1).lower()
    return _NUMBERS[word] if word in _NUMBERS else int(word)


class VocabularyMatcher:
    """Exact, word-boundary matching of each category's vocabulary (case-insensitive, longest match first).

    Views ("four-chamber", "4CH", "A4C"), phases ("end-diastole", "end-systolic"), sex ("female", "woman"), ages
    ("63-year-old", "sixty-three-year-old", "aged 63", mapped to their band), image quality ("good image quality",
    "quality is poor") and shapes: a shape word ("oval", "triangular") belongs to the structure named nearest to
    it in the same sentence (the preceding one on a tie), giving ``shape_LV``/``shape_MYO``/``shape_LA``. Negation
    is not understood: "not a four-chamber view" names the four-chamber view.
    """

    def __init__(self, shapes: Iterable[str] = ()) -> None:
        self.patterns = [(re.compile(rx, re.I), kind, fn) for rx, kind, fn in _patterns({*SHAPES, *shapes})]

    def extract_one(self, text: str) -> set[Entity]:
        """The entities named in ``text``."""
        found = [(m.start(), m.end(), kind, fn(m)) for rx, kind, fn in self.patterns for m in rx.finditer(text)]
        found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
        kept, end = [], -1
        for f in found:  # longest match first at each position; overlapping shorter matches dropped
            if f[0] >= end:
                kept.append(f)
                end = f[1]
        out = {(kind, value) for _, _, kind, value in kept if kind not in ("structure", "shape")}
        bounds = [m.end() for m in re.finditer(r"[.;!?\n]+(?:\s|$)", text)]
        for s_start, s_end, kind, value in kept:
            if kind != "shape":
                continue
            sentence = sum(b <= s_start for b in bounds)
            near = [(max(st - s_end, s_start - en), st > s_start, v) for st, en, k, v in kept
                    if k == "structure" and sum(b <= st for b in bounds) == sentence]
            if near:
                out.add((SHAPE_PREFIX + min(near)[2], value))
        return out

    def __call__(self, texts: Sequence[str]) -> list[set[Entity]]:
        return [self.extract_one(t) for t in texts]


# ----------------------------------------------------------------------------- NER
def _shown(spec: str, option: str) -> str:
    """How an error names the model: ``--ner PATH`` or ``--writer llm:PATH``."""
    return f"{option}{'' if option.endswith(':') else ' '}{spec}"


def model_source(spec: str, option: str) -> tuple[str, bool]:
    """(what from_pretrained loads, local_files_only) for a local model folder or a cached hub id.

    ``option`` names it in errors (``--ner`` or ``--writer llm:``).

    Raises:
        UserError: a path that does not exist or holds no ``config.json``.
    """
    p = Path(spec).expanduser()
    looks_like_id = spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not p.exists()
    if looks_like_id:
        return spec, offline()
    if not p.is_dir():
        raise UserError(f"{_shown(spec, option)}: model folder not found")
    if not (p / "config.json").is_file():
        raise UserError(f"{_shown(spec, option)}: not a transformers model folder (no config.json)")
    return str(p), True


def load_error(spec: str, option: str, exc: Exception) -> UserError:
    """The one-line error for a model that from_pretrained could not load."""
    if isinstance(exc, OSError) and offline() and not Path(spec).exists():
        return UserError(not_cached(spec, option.rstrip(":").split()[0]))
    return UserError(f"{_shown(spec, option)}: cannot load ({first_line(exc, 160)})")


def normalise_entity(text: str) -> str:
    """An entity's text as compared: lower case, single spaces, no surrounding punctuation."""
    return re.sub(r"\s+", " ", text.lower()).strip(" \t\n.,;:!?()[]{}\"'-")


class NerExtractor:
    """Entities from a local token-classification model: ``(entity group lower-cased, normalised text)``."""

    def __init__(self, spec: str, device: str = "cpu", batch_size: int = 16) -> None:
        # deferred: heavy import, loaded only when this path runs
        from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

        source, local = model_source(spec, "--ner")
        try:
            model = AutoModelForTokenClassification.from_pretrained(source, local_files_only=local)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        except (OSError, ValueError, KeyError) as exc:
            raise load_error(spec, "--ner", exc) from None
        self.pipe = pipeline("token-classification", model=model, tokenizer=tokenizer,
                             aggregation_strategy="simple", device=device)
        self.batch_size = batch_size
        self.labels = sorted({str(v) for v in model.config.id2label.values()})

    def __call__(self, texts: Sequence[str]) -> list[set[Entity]]:
        if not texts:
            return []
        results = self.pipe(list(texts), batch_size=self.batch_size)
        out = []
        for spans in results:
            ents = {(str(s["entity_group"]).lower(), normalise_entity(str(s["word"]))) for s in spans}
            out.append({(c, v) for c, v in ents if v})
        return out


def ner_inventory(texts: Sequence[str], extractor: Extractor, batch_size: int = 16) -> Inventory:
    """The inventory of free-text reports by a NER extractor (every category may hold several entities)."""
    chunks = [list(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    sets = [s for chunk in track(chunks, "entities (NER)") for s in extractor(chunk)]
    inv = count_entities(sets, "ner")
    if not inv.counts:
        raise UserError("--ner: the model found no entities in the reports")
    return Inventory(inv.counts, "ner", inv.reports, multi=set(inv.counts))


def read_report_texts(path: str | Path, splits: Sequence[str]) -> list[str]:
    """Free-text reports: a prompts run's reports.csv, a CSV with a report (or text) column, or a .txt file.

    Rows of a run or CSV with a ``split`` column are kept when their split is in ``splits``.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"--entities {p}: not found")
    if p.is_dir():
        p = p / "reports.csv"
        if not p.is_file():
            raise UserError(f"--entities {path}: not a prompts run (no reports.csv)")
    try:
        if p.suffix.lower() == ".csv":
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
            column = next((c for c in ("report", "text") if c in df.columns), None)
            if column is None:
                raise UserError(f"--entities {p}: no 'report' or 'text' column")
            if "split" in df.columns:
                df = df[df["split"].isin(splits)]
            texts = df[column].tolist()
        else:
            texts = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"--entities {p}: unreadable ({first_line(exc, 160)})") from None
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise UserError(f"--entities {p}: no reports (in split(s) {', '.join(splits)})")
    return texts
