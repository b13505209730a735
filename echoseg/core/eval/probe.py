"""``echoseg eval probe``: linear probes (and fine-tuning) of a pre-trained image encoder on image-level tasks, at
seeded patient-level fractions of the training split (the 1 % / 10 % / 100 % curves of SynCXR).

A task (:data:`TASKS`) names a manifest column and its classes; every image of the data run gets one label (images
whose label is missing or not one of the classes are left out and counted). Training images come from the
``train`` split (a nested, seeded patient-level subset per fraction, :func:`~echoseg.core.data.subset.
patient_fraction`), model selection uses ``val``, and ``--split`` (default ``test``) is scored.

- Linear probe (default): the encoder's pooled backbone features (``VLPModel.image_features``, eval mode, no
  gradient, computed once for every image), standardised on the training subset, then scikit-learn's
  ``LogisticRegression`` (lbfgs, L2; multinomial for more than two classes). ``C`` is chosen on the validation
  images from :data:`C_GRID` by their log-loss (ties: the smaller C), unless ``--c`` fixes it.
- ``--finetune``: the backbone and a linear head trained end to end (:mod:`echoseg.core.eval.probe_finetune`).

A fraction whose training subset holds a single class cannot train a classifier: it is recorded as not scorable,
with the reason, and the other fractions go on. Outputs: ``per_sample.csv`` (one row per (fraction, test image):
``fraction, sample_id, image, patient, label, predicted, prob_<class>..., prob_true, correct``; ``stats wilcoxon``
compares two runs with ``--key sample_id,fraction --group-by fraction --metric prob_true`` or ``correct``),
``subsets.csv`` (the training patients of every fraction), ``summary.json``, ``fractions.png`` and run.json
``subsets``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from echoseg.core.config import StageConfig, check_all
from echoseg.core.console import track
from echoseg.core.data.cache import build_cache, default_cache_dir
from echoseg.core.data.manifest import SPLITS, STRUCTURE_LABELS, read_manifest
from echoseg.core.data.subset import patient_fraction, subset_record
from echoseg.core.env import DEVICES, PRECISIONS, make_accelerator
from echoseg.core.errors import UserError
from echoseg.core.eval.probe_finetune import finetune_fraction
from echoseg.core.eval.zeroshot_tasks import image_ids
from echoseg.core.io import save_figure, write_csv
from echoseg.core.metrics.classification import classification_summary
from echoseg.core.models.vlp import VLPModel
from echoseg.core.models.vlp_official import load_vlp
from echoseg.core.pretrain.data import PairData, PairImages, cache_frame
from echoseg.core.prompts.shape import SHAPES
from echoseg.core.prompts.templates import (
    normalise_age,
    normalise_phase,
    normalise_quality,
    normalise_sex,
    normalise_view,
)
from echoseg.core.runs import Run


# --- tasks ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """An image-level classification task: the manifest column that labels an image and its classes (in the order
    of the score columns)."""

    column: str
    classes: tuple[str, ...]
    per_structure: bool = False  # read on the row of the chosen structure (``--structure``) of each image
    bins: tuple[float, ...] = ()  # a numeric column: class k holds values in [bins[k-1], bins[k])


#: task -> column and classes (the class names and order, and the age bands, of `eval zeroshot`'s built-in tasks)
TASKS: dict[str, Task] = {
    "view": Task("view", ("2CH", "4CH")),
    "phase": Task("phase", ("ED", "ES")),
    "sex": Task("sex", ("female", "male")),
    "quality": Task("quality", ("good", "medium", "poor")),
    "age": Task("age", ("<40", "40-59", "60-79", ">=80"), bins=(40, 60, 80)),
    "shape": Task("shape", SHAPES, per_structure=True),
}
#: how a column's raw value is read (the prompt templates' readers); other columns: lower-case words
_READERS = {"view": normalise_view, "phase": normalise_phase, "sex": normalise_sex, "quality": normalise_quality}


def _word(value: object) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def class_index(task: Task, value: object) -> int | None:
    """The class index of a raw manifest value, or None when it is missing or not one of the task's classes."""
    if task.bins:
        age = normalise_age(value)
        return None if age is None else int(np.searchsorted(task.bins, age, side="right"))
    code = _READERS.get(task.column, _word)(value)
    return task.classes.index(code) if code in task.classes else None


def image_labels(manifest: pd.DataFrame, task_name: str, structure: str = "LV", option: str = "--data"
                 ) -> tuple[pd.DataFrame, dict]:
    """One row per labelled image of a manifest (``image, mask, patient, split, source, sample_id, label``; ``label``
    the class index), and the number of images left out per split (no known label).

    ``sample_id`` identifies the image as `eval zeroshot` does (:func:`~echoseg.core.eval.zeroshot_tasks.
    image_ids`: the rows' ``sample_id`` without the structure suffix), so their per-sample tables pair. A
    per-structure task reads the row of ``structure``.

    Raises:
        UserError: the manifest is empty or lacks the task's column.
    """
    task = TASKS[task_name]
    if task.column not in manifest.columns:
        raise UserError(f"{option}: manifest has no {task.column!r} column (needed by --task {task_name}; "
                        "`echoseg prompts build` writes it)")
    if manifest.empty:
        raise UserError(f"{option}: manifest has no rows")
    images = manifest.groupby("image", sort=False).first()  # the image-level columns (the same on every row)
    rows = manifest[manifest["structure"].astype(str) == structure] if task.per_structure else manifest
    labels = rows[task.column].map(lambda v: class_index(task, v)).astype(float)
    images["label"] = labels.groupby(rows["image"].to_numpy()).first().reindex(images.index)
    images = images.reset_index()
    images["sample_id"] = image_ids(manifest).reindex(images["image"].astype(str)).to_numpy()
    images["split"] = images["split"].astype(str)
    known = images["label"].notna()
    left_out = {s: int((~known & (images["split"] == s)).sum()) for s in SPLITS}
    cols = ["image", "mask", "patient", "split", "source", "sample_id", "label"]
    out = images.loc[known, cols].reset_index(drop=True)
    out["label"] = out["label"].astype(np.int64)
    out["patient"] = out["patient"].astype(str)
    return out, left_out


# --- configuration ---------------------------------------------------------------------------------------------------
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
TEST_SPLITS = ("test", "val")


def parse_fractions(value: str | Sequence[float]) -> list[float]:
    """``"0.01,0.1,1"`` (or a list, or ``"[0.01, 0.1, 1]"``) -> sorted distinct fractions in (0, 1].

    Raises:
        UserError: a value that is not a number or is outside (0, 1].
    """
    items = list(value) if isinstance(value, (list, tuple)) else re.split(r"[,\s]+", str(value).strip(" []()"))
    items = [v for v in items if str(v).strip()]
    try:
        fractions = [float(v) for v in items]
    except (TypeError, ValueError):
        raise UserError(f"--fractions: expected numbers separated by commas (e.g. 0.01,0.1,1), got {value!r}") from None
    if not fractions:
        raise UserError("--fractions: give at least one fraction (e.g. 0.01,0.1,1)")
    bad = [f for f in fractions if not (0 < f <= 1) or math.isnan(f)]
    if bad:
        raise UserError(f"--fractions must be in (0, 1], got {bad[0]:g}")
    return sorted(set(fractions))


@dataclass
class EvalProbeConfig(StageConfig):
    """Options of `eval probe` (recorded in run.json)."""

    run: str = ""  # a pretrain run, or a released GLoRIA/MGCA .ckpt (with text_encoder)
    data: str = ""  # a prompts run (manifest.csv with the task's column)
    task: str = ""  # one of TASKS
    structure: str = "LV"  # the structure whose row a per-structure task (shape) reads
    fractions: str | list[float] = "0.01,0.1,1"
    split: str = "test"
    seed: int = 0
    n_boot: int = 1000
    c: float | None = None  # LogisticRegression's C; None: chosen on val from C_GRID
    max_iter: int = 1000
    finetune: bool = False
    epochs: int = 50
    lr: float = 1e-4
    weight_decay: float = 1e-6
    batch_size: int = 32
    early_stop_patience: int = 10
    device: str = "auto"
    precision: str = "no"
    cache_dir: str | None = None
    text_encoder: str | None = None

    def validate(self) -> None:
        """Raise UserError on out-of-range values, naming the option."""
        check_all([
            (self.task in TASKS, f"--task must be one of {', '.join(TASKS)}, got {self.task!r}"),
            (self.structure in STRUCTURE_LABELS,
             f"--structure must be one of {', '.join(STRUCTURE_LABELS)}, got {self.structure!r}"),
            (self.split in TEST_SPLITS, f"--split must be {' or '.join(TEST_SPLITS)}, got {self.split!r}"),
            (self.n_boot >= 0, f"--n-boot must be >= 0, got {self.n_boot}"),
            (self.c is None or self.c > 0, f"--c must be > 0, got {self.c}"),
            (self.max_iter >= 1, f"--max-iter must be >= 1, got {self.max_iter}"),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2, got {self.batch_size}"),
            (self.early_stop_patience >= 1, f"--early-stop-patience must be >= 1, got {self.early_stop_patience}"),
            (self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got "
             f"{self.precision!r}"),
        ])
        parse_fractions(self.fractions)

    def inputs(self) -> dict[str, Any]:
        """The inputs recorded in run.json."""
        return {"run": self.run, "data": self.data, "text_encoder": self.text_encoder}

    @property
    def fraction_list(self) -> list[float]:
        """The fractions, parsed and sorted."""
        return parse_fractions(self.fractions)


# --- inputs ----------------------------------------------------------------------------------------------------------
@dataclass
class ProbeInputs:
    """What an `eval probe` run reads, loaded (and so checked) before the run directory exists."""

    model: VLPModel
    description: str
    images: pd.DataFrame  # one row per labelled image of the train, val and scored splits
    left_out: dict[str, int] = field(default_factory=dict)  # per split: images without a known label

    def rows(self, split: str) -> np.ndarray:
        """Positions in ``images`` of ``split``'s images."""
        return np.flatnonzero(self.images["split"].to_numpy() == split)


def load_probe_inputs(cfg: EvalProbeConfig) -> ProbeInputs:
    """Load the pre-trained model and read the labelled images of the train, val and scored splits.

    Raises:
        UserError: a missing or wrong input, naming its option: not a pretrain run, no manifest, no task column,
            no labelled training images, no validation images where C or early stopping needs them, an empty
            scored split.
    """
    data = Path(cfg.data)
    if not data.exists():
        raise UserError(f"--data {data}: not found")
    if data.is_dir() and not (data / "manifest.csv").is_file():
        raise UserError(f"--data {data}: no manifest.csv (expected a prompts run)")
    images, left_out = image_labels(read_manifest(data), cfg.task, cfg.structure, f"--data {data}")
    needs_val = cfg.finetune or cfg.c is None
    for split, needed, why in (("train", True, "to fit on"), (cfg.split, True, "to score"),
                               ("val", needs_val, "to choose C on (or fix --c)" if not cfg.finetune
                                else "for early stopping")):
        if needed and not (images["split"] == split).any():
            raise UserError(f"--data {data}: no {split!r} image with a known {cfg.task} label {why} "
                            f"({left_out.get(split, 0)} without one)")
    keep = images["split"].isin({"train", "val", cfg.split})
    model, description = load_vlp(cfg.run, text_encoder=cfg.text_encoder, option="--run")
    return ProbeInputs(model, description, images[keep].reset_index(drop=True), left_out)


# --- linear probe ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def image_features(model: VLPModel, images: PairImages, n: int, batch_size: int, accelerator,
                   progress: bool = False) -> np.ndarray:
    """Pooled backbone features (n, F) of the first ``n`` images, in batches, in eval mode (as float64)."""
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    out = []
    for idx in track(batches, "features") if progress else batches:
        with accelerator.autocast():
            out.append(model.image_features(images.batch(idx).to(accelerator.device)).float().cpu())
    return torch.cat(out).double().numpy() if out else np.zeros((0, model.image.feature_dim))


def class_probabilities(pipe, x: np.ndarray, k: int) -> np.ndarray:
    """(N, k) probabilities of a fitted classifier, zero for the classes its training data lacked."""
    probs = np.zeros((len(x), k))
    probs[:, pipe.classes_] = pipe.predict_proba(x)
    return probs


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, seed: int) -> tuple[Any, bool]:
    """Standardise + LogisticRegression fitted on ``(x, y)``; returns the pipeline and whether lbfgs converged."""
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipe.fit(x, y)
    return pipe, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def linear_probe(cfg: EvalProbeConfig, features: np.ndarray, labels: np.ndarray, train: np.ndarray,
                 val: np.ndarray, test: np.ndarray, k: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit on the rows ``train`` (C fixed or chosen on ``val`` by log-loss) and return the (len(test), k)
    probabilities of the rows ``test`` and what was chosen."""
    grid = (cfg.c,) if cfg.c is not None else C_GRID
    best, scores = None, {}
    for c in grid:
        pipe, converged = fit_logistic(features[train], labels[train], c, cfg.max_iter, cfg.seed)
        loss = None
        if cfg.c is None:
            loss = float(log_loss(labels[val], class_probabilities(pipe, features[val], k), labels=list(range(k))))
            scores[f"{c:g}"] = loss
        if best is None or (loss is not None and loss < best[0]):
            best = (loss, c, pipe, converged)
    _, c, pipe, converged = best
    info = {"C": c, "converged": converged}
    if scores:
        info["C_selection"] = {"criterion": "validation log-loss (ties: smaller C)", "val_log_loss": scores}
    return class_probabilities(pipe, features[test], k), info


# --- the run ---------------------------------------------------------------------------------------------------------
def _subsets(cfg: EvalProbeConfig, inputs: ProbeInputs) -> list[tuple[float, np.ndarray, dict]]:
    """Per fraction: the positions of its training images in ``inputs.images`` and its subset record."""
    train = inputs.images.iloc[inputs.rows("train")].assign(_row=inputs.rows("train"))
    out = []
    for f in cfg.fraction_list:
        sub = patient_fraction(train, f, cfg.seed, option="--fractions")
        out.append((f, sub["_row"].to_numpy(), subset_record(train, sub, f, cfg.seed)))
    return out


def _unscorable(labels: np.ndarray, classes: Sequence[str]) -> str | None:
    present = np.unique(labels)
    if len(present) >= 2:
        return None
    named = classes[int(present[0])] if len(present) else "none"
    return f"the training subset holds a single class ({named}): no classifier can be fitted"


def per_sample_rows(fraction: float, frame: pd.DataFrame, labels: np.ndarray, probs: np.ndarray,
                    classes: Sequence[str]) -> pd.DataFrame:
    """``per_sample.csv`` rows of one fraction: label, prediction, class probabilities, probability of the truth."""
    pred = probs.argmax(axis=1)
    table = pd.DataFrame({"fraction": fraction, "sample_id": frame["sample_id"].to_numpy(),
                          "image": frame["image"].to_numpy(), "patient": frame["patient"].to_numpy(),
                          "label": [classes[i] for i in labels], "predicted": [classes[i] for i in pred]})
    for j, name in enumerate(classes):
        table[f"prob_{name}"] = probs[:, j]
    table["prob_true"] = probs[np.arange(len(labels)), labels]
    table["correct"] = (pred == labels).astype(int)
    return table


def run_probe(cfg: EvalProbeConfig, run: Run, inputs: ProbeInputs | None = None, progress: bool = True
              ) -> dict[str, Any]:
    """``echoseg eval probe``: probe (or fine-tune) the pre-trained encoder at every fraction into ``run``.

    Args:
        inputs: from :func:`load_probe_inputs` (loaded here when None; the CLI loads them before opening the run,
            so that bad input leaves no run directory).
    Returns:
        The summary (empty on a non-main process of a multi-process launch).
    """
    from accelerate.utils import set_seed  # deferred: accelerate loads with the stage, not the CLI

    if inputs is None:
        cfg.validate()
        inputs = load_probe_inputs(cfg)
    task = TASKS[cfg.task]
    k, classes = len(task.classes), list(task.classes)
    accelerator = make_accelerator(cfg.precision, cfg.device)
    set_seed(cfg.seed)
    model = inputs.model.to(accelerator.device)
    frame = inputs.images
    pairs = PairData(frame, [Path(cfg.data)])
    with accelerator.main_process_first():
        cache = build_cache(cache_frame(pairs), model.input_size, Path(cfg.cache_dir or default_cache_dir()),
                            progress=progress and accelerator.is_main_process)
    images = PairImages(pairs, cache, model.mean, model.std)
    labels = frame["label"].to_numpy()
    val, test = inputs.rows("val"), inputs.rows(cfg.split)
    subsets = _subsets(cfg, inputs)
    mode = "finetune" if cfg.finetune else "linear"
    run.log(f"{mode} probe of {inputs.description} on {cfg.task} ({', '.join(classes)}): {len(subsets)} "
            f"fraction(s), {len(val)} val and {len(test)} {cfg.split} images")
    features = None
    if not cfg.finetune and accelerator.is_main_process:
        features = image_features(model, images, len(frame), cfg.batch_size, accelerator, progress)
    results, tables = [], []
    for f, train, record in subsets:
        entry: dict[str, Any] = {**record, "n_train": len(train), "train_class_counts": _counts(labels[train],
                                                                                                classes)}
        reason = _unscorable(labels[train], classes)
        if reason is not None:
            entry.update(scorable=False, reason=reason)
            run.log(f"warning: fraction {f:g}: {reason}", style="yellow")
            results.append(entry)
            continue
        if cfg.finetune:
            probs, info = finetune_fraction(cfg, model, images, labels, train, val, test, k, accelerator, run, f,
                                            progress)
        elif accelerator.is_main_process:
            probs, info = linear_probe(cfg, features, labels, train, val, test, k)
        else:
            probs, info = None, {}
        if accelerator.is_main_process:
            metrics = classification_summary(labels[test], probs, classes, cfg.n_boot, cfg.seed)
            entry.update(scorable=True, **info, **metrics)
            tables.append(per_sample_rows(f, frame.iloc[test], labels[test], probs, classes))
            run.log(_line(f, entry))
        results.append(entry)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return {}
    summary = _summary(cfg, inputs, mode, classes, results, len(val), len(test))
    _write_outputs(run, cfg, frame, subsets, tables, summary)
    return summary


def _counts(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    return {c: int((labels == j).sum()) for j, c in enumerate(classes)}


def _line(f: float, e: dict[str, Any]) -> str:
    def m(name: str) -> str:
        v = e[name]
        return f"{name} {v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"

    chosen = f"C {e['C']:g}" if "C" in e else f"best epoch {e.get('best_epoch')}"
    return (f"fraction {f:g}: {e['patients']}/{e['of_patients']} patients, {e['n_train']} images; {m('auc')}, "
            f"{m('accuracy')}, {m('f1')}; {chosen}")


def _summary(cfg: EvalProbeConfig, inputs: ProbeInputs, mode: str, classes: list[str], results: list[dict],
             n_val: int, n_test: int) -> dict[str, Any]:
    images = inputs.images
    if mode == "linear":
        method = {"features": "pooled backbone features (eval mode)", "standardised": True,
                  "classifier": "LogisticRegression (lbfgs, L2, multinomial for > 2 classes)", "max_iter": cfg.max_iter,
                  "C": cfg.c if cfg.c is not None else {"chosen_on": "val", "grid": list(C_GRID)}}
    else:
        method = {"trained": "image backbone + linear head", "optimizer": "AdamW", "lr": cfg.lr,
                  "weight_decay": cfg.weight_decay, "max_epochs": cfg.epochs, "batch_size": cfg.batch_size,
                  "early_stop_patience": cfg.early_stop_patience, "early_stopping_on": "val cross-entropy"}
    return {
        "task": cfg.task, "column": TASKS[cfg.task].column,
        "structure": cfg.structure if TASKS[cfg.task].per_structure else None, "classes": classes, "mode": mode,
        mode: method,
        "pretrain": inputs.description, "run": str(Path(cfg.run).resolve()), "data": str(Path(cfg.data).resolve()),
        "feature_dim": int(inputs.model.image.feature_dim), "split": cfg.split, "seed": cfg.seed, "n_boot": cfg.n_boot,
        "images": {"train": int((images["split"] == "train").sum()), "val": n_val, cfg.split: n_test},
        "left_out": {**inputs.left_out, "reason": "no known label"},
        "fractions": results,
        **({"note": "--split val: the images that chose C / stopped training are also scored (optimistic)"}
           if cfg.split == "val" else {}),
    }


def _write_outputs(run: Run, cfg: EvalProbeConfig, frame: pd.DataFrame, subsets: list, tables: list[pd.DataFrame],
                   summary: dict[str, Any]) -> None:
    """per_sample.csv, subsets.csv, summary.json, fractions.png and the run.json subset records."""
    classes = summary["classes"]
    columns = ["fraction", "sample_id", "image", "patient", "label", "predicted",
               *[f"prob_{c}" for c in classes], "prob_true", "correct"]
    write_csv(run.file("per_sample.csv"), pd.concat(tables, ignore_index=True) if tables
              else pd.DataFrame(columns=columns))
    used = [pd.DataFrame({"fraction": f, "patient": frame["patient"].iloc[rows].to_numpy()})
            .value_counts(sort=False).rename("images").reset_index() for f, rows, _ in subsets]
    write_csv(run.file("subsets.csv"), pd.concat(used, ignore_index=True))
    run.update(subsets=[{**record, "file": "subsets.csv"} for _, _, record in subsets])
    run.write_summary(summary)
    plot_fractions(run.file("fractions.png"), summary)


def plot_fractions(path: Path, summary: dict[str, Any]) -> None:
    """AUC and accuracy (95 % CI bars) against the training fraction, on a log x-axis."""
    import matplotlib  # deferred: plotting is only needed once per run

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    fig, ax = plt.subplots(figsize=(4.4, 3.2))
    rows = [r for r in summary["fractions"] if r.get("scorable")]
    for name, marker in (("auc", "o-"), ("accuracy", "s--")):
        xs = [r["fraction"] for r in rows]
        ys = np.array([r[name]["value"] for r in rows], dtype=float)
        lo = np.array([r[name]["ci_low"] for r in rows], dtype=float)
        hi = np.array([r[name]["ci_high"] for r in rows], dtype=float)
        err = np.nan_to_num(np.vstack([ys - lo, hi - ys]), nan=0.0)
        ax.errorbar(xs, ys, yerr=err, fmt=marker, capsize=3, ms=4, label="AUC" if name == "auc" else name)
    ax.set_xscale("log")
    ticks = [r["fraction"] for r in summary["fractions"]]
    ax.set_xticks(ticks, [f"{100 * t:g}%" for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training patients (fraction)")
    ax.set_title(f"{summary['mode']} probe: {summary['task']}", fontsize=9)
    if not rows:
        ax.text(0.5, 0.5, "no fraction was scorable", ha="center", transform=ax.transAxes)
    ax.legend(fontsize=7)
    save_figure(path, fig)
