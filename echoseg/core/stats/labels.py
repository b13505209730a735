"""Readable labels of runs and what their data came from, read from their run.json (for stats and report tables).

A run's label is its name: the ``_<name>`` of a default run directory (``runs/train/<UTC time>_<name>``, from
``--name``) or the directory's own name when ``--out`` chose it. A default directory without a name (only the time
stamp) is described from its run.json config instead: model, prompt (for text-prompted models) and training
strategy, e.g. ``clipseg p7 real`` or ``unet synthetic->real``. Labels of several runs are made unique.

A run's lineage follows the run directories it read (run.json ``inputs``, ``init_from``, ``run:`` teachers) to
tell whether toy data (``echoseg data toy ...``) or tiny model configs are behind its numbers.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from echoseg.core.io import read_json

STAMP = re.compile(r"^\d{8}-\d{6}(?:-\d+)?(?:_(?P<name>.+))?$")
#: registered models whose output ignores the prompt (their class sets ``uses_text = False``)
TEXT_FREE_MODELS = frozenset({"unet"})
TINY_CONFIG = "tiny"
MAX_LINEAGE_RUNS = 200


def run_dir_of(path: str | Path) -> Path | None:
    """The run directory behind ``path`` (the directory, or the folder of a file in it, even one since removed),
    or None if not a run."""
    p = Path(path)
    candidate = p if p.is_dir() else p.parent
    return candidate if (candidate / "run.json").is_file() else None


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when the file is missing, unreadable or not an object."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _record(run: Path) -> dict[str, Any]:
    return _json_object(run / "run.json")


def _summary(run: Path) -> dict[str, Any]:
    return _json_object(run / "summary.json")


def run_name(run: str | Path) -> str | None:
    """The name part of a run directory: ``x`` of ``<UTC time>_x``, the folder name of an ``--out`` directory."""
    leaf = Path(run).name
    match = STAMP.match(leaf)
    if match:
        return match.group("name")
    return leaf or None


def _train_sources(summary: dict[str, Any]) -> set[str]:
    return set(((summary.get("data") or {}).get("train") or {}).get("source") or [])


def training_strategy(summary: dict[str, Any], config: dict[str, Any]) -> str:
    """real, synthetic, mixed or synth-PT:real-FT (any ``X-PT:Y-FT``), from the training data sources and init;
    zero-shot for pre-trained weights evaluated without training (``eval seg --model --weights``)."""
    if summary.get("zero_shot"):
        return "zero-shot"
    sources = _train_sources(summary)
    if config.get("init_from"):
        init = Path(config["init_from"])
        init_sources = _train_sources(_summary(init))
        first = "synth" if "synthetic" in init_sources else "real"
        second = "synth" if "synthetic" in sources else "real"
        return f"{first}-PT:{second}-FT"
    return "synthetic" if sources == {"synthetic"} else "real" if sources <= {"real"} else "mixed"


def _short_strategy(strategy: str) -> str:
    """``synth-PT:real-FT`` -> ``synthetic->real``."""
    match = re.fullmatch(r"(\w+)-PT:(\w+)-FT", strategy)
    if not match:
        return strategy
    return "->".join("synthetic" if s == "synth" else s for s in match.groups())


def describe_run(run: str | Path) -> str | None:
    """``model [prompt] strategy`` of a training (or eval seg) run from its run.json, else its command; None if
    the folder holds no readable run.json."""
    run = Path(run)
    rec = _record(run)
    if not rec:
        return None
    config = rec.get("config") or {}
    summary = _summary(run)
    command = str(rec.get("command") or "")
    if command == "eval seg" and config.get("run"):  # an evaluation: describe the run it evaluated
        inner = describe_run(config["run"])
        return f"{inner} (eval)" if inner else "eval seg"
    model = config.get("model") or summary.get("model")
    if not model:
        return command or None
    parts = [str(model)]
    prompt = config.get("prompt") or summary.get("prompt")
    if prompt and str(model) not in TEXT_FREE_MODELS:
        parts.append(str(prompt))
    if command == "train":
        parts.append(_short_strategy(training_strategy(summary, config)))
    return " ".join(parts)


def short_labels(paths: list[str | Path]) -> list[str]:
    """Distinguishing labels for paths: the parts that differ, without the leading and trailing parts all share.

    ``real/cris/p0/metrics.csv`` and ``synth/cris/p0/metrics.csv`` become ``real`` and ``synth``.
    """
    parts = [Path(p).resolve().parts for p in paths]
    if len(parts) < 2 or len(set(parts)) < len(parts):
        return [Path(p).name or str(p) for p in paths] if len(parts) < 2 else [str(p) for p in paths]
    shortest = min(len(p) for p in parts)
    head = 0
    while head < shortest - 1 and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while tail < shortest - head - 1 and len({p[len(p) - 1 - tail] for p in parts}) == 1:
        tail += 1
    labels = ["/".join(p[head:len(p) - tail]) for p in parts]
    if any(not label for label in labels) or len(set(labels)) < len(labels):
        return ["/".join(p[head:]) for p in parts]
    return labels


def run_labels(paths: list[str | Path], fallback: list[str] | None = None) -> list[str]:
    """Unique labels of ``paths`` (run directories or files in them): each run's name, else its description,
    else ``fallback[i]`` (default: :func:`short_labels`). Repeated labels get the fallback appended in
    parentheses, then a number."""
    fallback = fallback or short_labels(paths)
    labels = []
    for path, other in zip(paths, fallback, strict=True):
        run = run_dir_of(path)
        labels.append((run_name(run) or describe_run(run) if run is not None else None) or other)
    counts = Counter(labels)
    labels = [f"{label} ({other})" if counts[label] > 1 and label != other else label
              for label, other in zip(labels, fallback, strict=True)]
    counts, seen = Counter(labels), Counter()
    unique = []
    for label in labels:
        seen[label] += 1
        unique.append(label if counts[label] == 1 else f"{label} #{seen[label]}")
    return unique


def looks_like_stamp(label: str) -> bool:
    """Whether ``label`` is a bare run time stamp (``20240101-120000``), as unnamed runs were once labelled."""
    return bool(re.fullmatch(r"\d{8}-\d{6}(?:-\d+)?", str(label)))


def _linked_runs(rec: dict[str, Any]) -> list[Path]:
    """Run directories a run read: its inputs, ``init_from``, ``run`` and ``run:`` teacher of its config."""
    found: list[Path] = []

    def add(value: Any) -> None:
        if isinstance(value, dict):
            value = value.get("path")
        if isinstance(value, str) and value:
            value = value[4:] if value.startswith("run:") else value
            run = run_dir_of(value) if Path(value).exists() else None  # not a model name such as "unet"
            if run is not None:
                found.append(run)

    for value in (rec.get("inputs") or {}).values():
        for item in value if isinstance(value, list) else [value]:
            add(item)
    config = rec.get("config") or {}
    for key in ("init_from", "run", "run_dir", "teacher", "model", "segmenter"):
        add(config.get(key))
    return found


def lineage(runs: list[str | Path]) -> dict[str, list[str]]:
    """What is behind ``runs``: ``toy_data`` (the ``data toy`` runs reached) and ``tiny_models`` (runs with a
    ``tiny`` model config), following every run directory each run read."""
    toy, tiny = [], []
    todo = [r for r in (run_dir_of(p) for p in runs) if r is not None]
    seen: set[Path] = set()
    while todo and len(seen) < MAX_LINEAGE_RUNS:
        run = todo.pop().resolve()
        if run in seen:
            continue
        seen.add(run)
        rec = _record(run)
        command = str(rec.get("command") or "")
        config = rec.get("config") or {}
        if command.startswith("data toy"):
            toy.append(str(run))
        if TINY_CONFIG in (config.get("model_config"), config.get("config") if command == "synth train" else None):
            tiny.append(str(run))
        todo.extend(_linked_runs(rec))
    return {"toy_data": sorted(toy), "tiny_models": sorted(tiny)}


def lineage_note(info: dict[str, list[str]]) -> str | None:
    """One line saying that toy data and/or tiny models are behind the numbers (None when neither is)."""
    parts = []
    if info.get("toy_data"):
        parts.append("toy data (echoseg data toy)")
    if info.get("tiny_models"):
        parts.append("tiny models (model config tiny)")
    if not parts:
        return None
    return f"Note: made on {' with '.join(parts)}; the numbers check the pipeline, not the methods."
