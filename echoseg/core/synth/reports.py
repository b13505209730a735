"""`echoseg synth reports`: a synthetic report corpus from balanced entity sets, SynCXR's three steps.

1. Entity inventory of the real reports (:mod:`echoseg.core.synth.entities`): a run's attribute values, or a NER
   model's entities in free-text reports.
2. Entity sets per report (:mod:`echoseg.core.synth.report_sampling`): balanced with the frequency cap ``tau_max``,
   or the natural frequencies.
3. A writer per set, verified by extracting the entities again and re-queried on mismatch
   (:mod:`echoseg.core.synth.report_writers`).

Outputs in the run::

    entities.csv    entity, category, count (real reports naming it), natural, sampled, kept
    reports.csv     the verified reports: report_id, split, text, prompt (= text, the column `synth generate
                    --prompts` reads), entities and extracted (JSON {category: [values]}), tries, seed; attribute
                    inventories add view, phase, sex (M/F), age (the age the text names), age_band, quality and
                    shape_LV/shape_MYO/shape_LA
    dropped.csv     reports that never matched: report_id, text (last try), entities, extracted, tries, seed
    summary.json    inventory, sampling (tau_max, re-draws, reports short of a category), frequency tables real /
                    natural / sampled / kept with their max/min spread, verification statistics, split counts
    entities.png    the inventory's long tail (frequency by rank, log scale)
    balance.png     each entity's frequency under natural and under this run's sampling
    metrics.jsonl   one row per try (queried, verified, mismatched)

``natural`` is the counterfactual natural draw of the same size and seed, so one balanced run shows what balancing
changed. Splits: the verified reports in a seeded random order, the first ``round(val_fraction * n)`` (at least one
when there are two or more) ``val``, the rest ``train``; there is no test split (a synthetic corpus trains).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from echoseg.core.config import StageConfig, check_all
from echoseg.core.env import check_precision, resolve_device
from echoseg.core.errors import UserError
from echoseg.core.io import save_figure, write_csv
from echoseg.core.runs import Run
from echoseg.core.synth.entities import (
    SHAPE_PREFIX,
    Extractor,
    Inventory,
    NerExtractor,
    VocabularyMatcher,
    attribute_inventory,
    mentioned_age,
    ner_inventory,
    read_report_texts,
)
from echoseg.core.synth.report_sampling import SAMPLING, SampledSets, frequency_table, sample_sets, spread
from echoseg.core.synth.report_writers import LlmWriter, TemplateWriter, Writer, WrittenReport, grouped, write_verified

LLM_PREFIX = "llm:"
_LABELLED_ENTITIES = 80  # balance.png names each entity up to this many
_MANIFEST_VALUE = {"sex": {"female": "F", "male": "M"}, "quality": {"good": "Good", "medium": "Medium", "poor": "Poor"}}


@dataclass
class SynthReportsConfig(StageConfig):
    """Options of ``echoseg synth reports`` (names as on the command line)."""

    entities: str = ""
    ner: str | None = None
    writer: str = "template"
    count: int = 1000
    sampling: str = "balanced"
    tau_max: int | None = None
    per_category: int = 1
    min_count: int = 1
    max_tries: int = 5
    splits: str = "train,val"
    val_fraction: float = 0.1
    batch_size: int = 8
    max_new_tokens: int = 160
    temperature: float = 0.7
    top_p: float = 0.95
    device: str = "auto"
    precision: str = "no"
    seed: int = 0

    def validate(self) -> None:
        """Raise UserError naming the first option out of range."""
        checks = [(bool(self.entities), "--entities is required (a prompts or data run; with --ner also a reports "
                   "file)"),
                  (self.writer == "template" or (self.writer.startswith(LLM_PREFIX) and self.llm_path()),
                   f"--writer must be template or llm:PATH, got {self.writer!r}"),
                  (self.sampling in SAMPLING,
                   f"--sampling must be one of {', '.join(SAMPLING)}, got {self.sampling!r}"),
                  (self.tau_max is None or int(self.tau_max) >= 1, f"--tau-max must be >= 1, got {self.tau_max}"),
                  (self.sampling == "balanced" or self.tau_max is None,
                   "--tau-max caps --sampling balanced; natural sampling draws the real frequencies uncapped"),
                  (0.0 <= float(self.val_fraction) < 1.0, f"--val-fraction must be in [0, 1), got {self.val_fraction}"),
                  (bool(self.split_list()), f"--splits names no split: {self.splits!r}"),
                  (float(self.temperature) >= 0, f"--temperature must be >= 0, got {self.temperature}"),
                  (0.0 < float(self.top_p) <= 1.0, f"--top-p must be in (0, 1], got {self.top_p}")]
        for key in ("count", "per_category", "min_count", "max_tries", "batch_size", "max_new_tokens"):
            checks.append((int(getattr(self, key)) >= 1,
                           f"--{key.replace('_', '-')} must be >= 1, got {getattr(self, key)}"))
        check_all(checks)
        check_precision(self.precision)

    def split_list(self) -> list[str]:
        """The real splits whose reports form the inventory."""
        return [s.strip() for s in str(self.splits).split(",") if s.strip()]

    def llm_path(self) -> str | None:
        """PATH of ``--writer llm:PATH`` (None for the template writer)."""
        if not self.writer.startswith(LLM_PREFIX):
            return None
        return self.writer[len(LLM_PREFIX):].strip() or None


@dataclass
class ReportInputs:
    """What a run needs, prepared (and checked) before the run directory opens."""

    inventory: Inventory
    sampled: SampledSets
    natural: SampledSets
    extractor: Extractor
    writer: Writer
    extractor_name: str


def prepare(cfg: SynthReportsConfig) -> ReportInputs:
    """Validate ``cfg``, build the inventory, draw the entity sets and load the models (UserError on bad input)."""
    cfg.validate()
    device = resolve_device(cfg.device)
    splits = cfg.split_list()
    if cfg.ner:
        extractor: Extractor = NerExtractor(cfg.ner, device=device, batch_size=cfg.batch_size)
        texts = read_report_texts(cfg.entities, splits)
        inventory = ner_inventory(texts, extractor, batch_size=cfg.batch_size)
        name = f"ner:{cfg.ner}"
    else:
        inventory = attribute_inventory(cfg.entities, splits)
        shapes = {v for c, vals in inventory.counts.items() if c.startswith(SHAPE_PREFIX) for v in vals}
        extractor, name = VocabularyMatcher(shapes), "vocabulary"
    inventory = inventory.drop_rare(int(cfg.min_count))
    if not inventory.counts:
        raise UserError(f"--min-count {cfg.min_count}: no entity is named that often in the real reports")
    args = {"k": int(cfg.per_category), "seed": int(cfg.seed)}
    sampled = sample_sets(inventory, int(cfg.count), mode=cfg.sampling, tau_max=cfg.tau_max, **args)
    natural = sampled if cfg.sampling == "natural" else sample_sets(inventory, int(cfg.count), mode="natural", **args)
    path = cfg.llm_path()
    writer: Writer = TemplateWriter(cfg.seed) if path is None else LlmWriter(
        path, device=device, precision=cfg.precision, max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    return ReportInputs(inventory, sampled, natural, extractor, writer, name)


def _json(entities) -> str:
    return json.dumps(grouped(sorted(entities)), sort_keys=True)


def report_id(i: int) -> str:
    """The id of report ``i`` (0-based): syn000000, syn000001, ..."""
    return f"syn{i:06d}"


def assign_splits(n: int, val_fraction: float, seed: int) -> list[str]:
    """train/val for ``n`` reports (see the module docstring)."""
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    split = np.array(["train"] * n, dtype=object)
    split[order[:n_val]] = "val"
    return split.tolist()


def _attribute_columns(entities, text: str) -> dict:
    """The manifest-style attribute columns of a verified attribute report."""
    e = {c: v[0] for c, v in grouped(entities).items()}
    row = {k: _MANIFEST_VALUE.get(k, {}).get(e.get(k), e.get(k, "")) for k in ("view", "phase", "sex")}
    row["age"] = mentioned_age(text)
    row["age_band"] = e.get("age", "")
    row["quality"] = _MANIFEST_VALUE["quality"].get(e.get("quality"), e.get("quality", ""))
    row |= {c: v for c, v in e.items() if c.startswith(SHAPE_PREFIX)}
    return row


def report_tables(cfg: SynthReportsConfig, inputs: ReportInputs,
                  written: list[WrittenReport]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """reports.csv (verified, with splits) and dropped.csv."""
    sets = inputs.sampled.sets
    rows, dropped = [], []
    for i, r in enumerate(written):
        base = {"report_id": report_id(i), "text": r.text, "entities": _json(sets[i]),
                "extracted": _json(r.extracted), "tries": r.tries, "seed": r.seed}
        if not r.verified:
            dropped.append(base)
            continue
        row = {**base, "prompt": r.text}
        if inputs.inventory.kind == "attributes":
            row |= _attribute_columns(sets[i], r.text)
        rows.append(row)
    lead = ["report_id", "text", "prompt", "entities", "extracted", "tries", "seed"]
    extra = list(dict.fromkeys(c for r in rows for c in r if c not in lead))  # attribute columns, as first seen
    reports = pd.DataFrame(rows, columns=lead + extra)
    reports.insert(1, "split", assign_splits(len(reports), cfg.val_fraction, cfg.seed))
    drop_cols = ["report_id", "text", "entities", "extracted", "tries", "seed"]
    return reports, pd.DataFrame(dropped, columns=drop_cols)


def run_reports(cfg: SynthReportsConfig, run: Run, inputs: ReportInputs) -> dict:
    """Write the verified reports and their statistics into ``run``; returns the summary."""
    inv, sampled = inputs.inventory, inputs.sampled
    run.log(f"inventory ({inv.kind}): {sum(len(v) for v in inv.counts.values())} entities in "
            f"{len(inv.counts)} categories from {inv.reports} real reports")
    run.log(f"sampling {sampled.mode}: {len(sampled.sets)} entity sets, tau_max {sampled.tau_max}, "
            f"{sum(sampled.redraws)} capped entities re-drawn")
    written, verification = write_verified(sampled.sets, inputs.writer, inputs.extractor, max_tries=cfg.max_tries,
                                           batch_size=cfg.batch_size, on_try=run.log_metrics)
    verification["extractor"] = inputs.extractor_name
    reports, dropped = report_tables(cfg, inputs, written)
    kept = Counter(e for s, r in zip(sampled.sets, written, strict=True) if r.verified for e in s)
    tables = {"real": {c: dict(sorted(v.items())) for c, v in inv.counts.items()},
              "natural": frequency_table(inv, inputs.natural.frequencies()),
              "sampled": frequency_table(inv, sampled.frequencies()), "kept": frequency_table(inv, kept)}
    entities = inv.table()
    for key in ("natural", "sampled", "kept"):
        entities[key] = [tables[key][c][v] for c, v in zip(entities["category"], entities["entity"], strict=True)]
    write_csv(run.file("entities.csv"), entities)
    write_csv(run.file("reports.csv"), reports)
    write_csv(run.file("dropped.csv"), dropped)
    plot_long_tail(entities, run.file("entities.png"))
    plot_balance(entities, sampled, run.file("balance.png"))
    summary = {
        "inventory": {"kind": inv.kind, "source": str(Path(cfg.entities)), "ner": cfg.ner, "reports": inv.reports,
                      "entities": len(entities), "min_count": cfg.min_count,
                      "categories": {c: len(inv.counts[c]) for c in inv.categories}},
        "sampling": {"mode": sampled.mode, "count": len(sampled.sets), "tau_max": sampled.tau_max,
                     "tau_max_given": cfg.tau_max is not None, "per_category": sampled.per_category,
                     "redraws": int(sum(sampled.redraws)),
                     "reports_with_redraws": int(sum(r > 0 for r in sampled.redraws)), "short": sampled.short,
                     "seed": cfg.seed},
        "categories_represented": sorted({c for c, _ in sampled.frequencies()}) == sorted(inv.counts),
        "frequencies": tables,
        "spread": {k: spread(t) for k, t in tables.items()},
        "verification": verification,
        "reports": len(reports),
        "splits": {str(k): int(v) for k, v in reports["split"].value_counts().sort_index().items()},
    }
    run.write_summary(summary)
    run.log(f"{verification['verified']} of {verification['requested']} reports verified "
            f"({verification['requeries']} re-queries, {verification['dropped']} dropped); max/min frequency "
            f"{summary['spread']['sampled']['max_min_ratio']} ({sampled.mode}) vs "
            f"{summary['spread']['natural']['max_min_ratio']} (natural)")
    if sampled.short:
        run.log("warning: every value was at --tau-max for " + ", ".join(
            f"{c} in {n} report(s)" for c, n in sampled.short.items()) + ", which name fewer (or none) of them",
            style="yellow")
    if verification["dropped"]:
        run.log(f"warning: {verification['dropped']} report(s) never matched their entities in "
                f"{cfg.max_tries} tries; see dropped.csv", style="yellow")
    return summary


def plot_long_tail(entities: pd.DataFrame, path: Path) -> None:
    """entities.png: the real reports' entity frequency by rank, log scale."""
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    counts = entities["count"].sort_values(ascending=False).to_numpy()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(np.arange(1, len(counts) + 1), counts, marker="o", ms=3)
    ax.set_yscale("log")
    ax.set_xlabel("entity rank")
    ax.set_ylabel("real reports naming it")
    ax.set_title(f"Entity long tail ({len(counts)} entities)")
    save_figure(path, fig)


def plot_balance(entities: pd.DataFrame, sampled: SampledSets, path: Path) -> None:
    """balance.png: each entity's frequency in natural and in this run's sampling (entities by real count)."""
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    x = np.arange(len(entities))
    labelled = len(x) <= _LABELLED_ENTITIES
    fig, ax = plt.subplots(figsize=(max(7.0, 0.18 * len(x)) if labelled else 10.0, 3.8))
    ax.plot(x, np.maximum(entities["natural"], 0.5), marker="o", ms=3, label="natural")
    ax.plot(x, np.maximum(entities["sampled"], 0.5), marker="s", ms=3, label=f"this run ({sampled.mode})")
    if sampled.tau_max is not None:
        ax.axhline(sampled.tau_max, color="grey", ls="--", lw=1, label=f"tau_max {sampled.tau_max}")
    ax.set_yscale("log")
    if labelled:
        ax.set_xticks(x, [f"{c}={e}" for c, e in zip(entities["category"], entities["entity"], strict=True)],
                      rotation=90, fontsize=6)
    else:
        ax.set_xlabel("entities, most frequent in the real reports first")
    ax.set_ylabel("reports drawn (0 shown at 0.5)")
    ax.set_title("Entity frequencies before (natural) and after balancing")
    ax.legend(fontsize=7)
    save_figure(path, fig)
