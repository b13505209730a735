"""``echoseg eval zeroshot``: zero-shot classification and grounding with a pre-trained image-text model.

Classification (``--task view|phase|sex|quality|age|shape|FILE``; tasks in :mod:`.zeroshot_tasks`): one row per
image of the split. Each class's prompts are embedded, averaged and L2-normalised; an image's score for a class is
the cosine similarity of its global embedding with the class embedding, and its class probabilities the softmax of
those similarities divided by ``temperature``. With two classes this is SynCXR's positive-vs-negative prompt
comparison (the second class is the positive one); with more, a softmax over the class prompts. AUC (one-vs-rest
macro for more than two classes), F1 (of the positive class; macro for more) and accuracy of the arg-max come with
seeded percentile-bootstrap 95 % CIs (:mod:`echoseg.core.metrics.classification`). Images whose value is missing or
in no class are left out and counted.

Grounding (``--task grounding``): :mod:`.grounding`.

Writes ``per_sample.csv`` (classification: ``sample_id`` (the image), image, task, label, predicted, correct,
prob_true, ``prob_<class>``, ``sim_<class>``...; ``stats wilcoxon --metric prob_true`` or ``--metric correct``
pairs two runs image by image), ``summary.json`` and ``zeroshot.png`` (confusion matrix and the true class's
probability per class).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from echoseg.core.config import StageConfig, check_all
from echoseg.core.data.manifest import STRUCTURE_LABELS, load_split
from echoseg.core.env import DEVICES, resolve_device
from echoseg.core.errors import UserError
from echoseg.core.eval import grounding
from echoseg.core.eval.zeroshot_tasks import (
    GROUNDING,
    ZeroshotTask,
    image_batch,
    image_labels,
    is_task_file,
    load_task,
    split_cache,
)
from echoseg.core.io import save_figure, write_csv
from echoseg.core.metrics.classification import classification_summary
from echoseg.core.models.vlp import VLPModel
from echoseg.core.models.vlp_official import load_vlp
from echoseg.core.runs import Run

CHECKPOINTS = ("best", "last")
CI_LEVEL = 0.95


@dataclass
class EvalZeroshotConfig(StageConfig):
    """Options of `eval zeroshot` (recorded in run.json)."""

    run: str = ""  # a pretrain run, or a released GLoRIA/MGCA .ckpt (then text_encoder is needed)
    data: str = ""  # a prompts run (its manifest.csv)
    task: str = "view"  # view|phase|sex|quality|age|shape (classification), grounding, or a YAML task file
    split: str = "test"  # the manifest split evaluated
    structure: str = "LV"  # LV|MYO|LA: the structure a per-structure task (shape) reads and names in its prompts
    prompt: str | None = None  # grounding: manifest prompt column pK/pK_b as each structure's text (default: name)
    checkpoint: str = "best"  # best|last weights of a pretrain run (a released .ckpt has one)
    threshold: float | None = None  # grounding: cosine-similarity threshold (default: chosen on the val split)
    temperature: float = 0.1  # classification: softmax temperature of the class probabilities
    eval_size: int = 512  # grounding: maps (bilinear) and masks (nearest) resized to this square size
    n_boot: int = 1000  # bootstrap resamples of the 95% CIs (0: no CI)
    seed: int = 0  # seed of the bootstrap
    batch_size: int = 32  # images per forward pass
    cache_dir: str | None = None  # sample cache folder (default $ECHOSEG_CACHE)
    device: str = "auto"  # auto|cpu|cuda
    text_encoder: str | None = None  # a released .ckpt's text encoder: local Bio_ClinicalBERT folder

    def validate(self) -> None:
        """Raise UserError on out-of-range values, naming the option (the task, run and data are checked when
        loaded)."""
        grounding_task = self.task == GROUNDING
        check_all([
            (bool(str(self.run).strip()), "--run is required (a pretrain run or a released .ckpt)"),
            (bool(str(self.data).strip()), "--data is required (a prompts run)"),
            (bool(str(self.task).strip()), "--task is required"),
            (self.structure in STRUCTURE_LABELS,
             f"--structure must be one of {', '.join(STRUCTURE_LABELS)}, got {self.structure!r}"),
            (self.checkpoint in CHECKPOINTS, f"--checkpoint must be {' or '.join(CHECKPOINTS)}, "
             f"got {self.checkpoint!r}"),
            (self.temperature > 0, f"--temperature must be > 0, got {self.temperature}"),
            (self.eval_size >= 8, f"--eval-size must be >= 8, got {self.eval_size}"),
            (self.n_boot >= 0, f"--n-boot must be >= 0, got {self.n_boot}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}"),
            (grounding_task or self.prompt is None, "--prompt applies to --task grounding only"),
            (grounding_task or self.threshold is None, "--threshold applies to --task grounding only"),
        ])
        if self.prompt is not None:
            grounding.prompt_column(self.prompt)

    def inputs(self) -> dict[str, Any]:
        """The inputs recorded in run.json (a task file too)."""
        out: dict[str, Any] = {"run": self.run, "data": self.data}
        if self.task != GROUNDING and is_task_file(self.task):
            out["task"] = self.task
        return out


@dataclass
class ZeroshotInputs:
    """What :func:`run_zeroshot` needs, read and checked before the run directory exists."""

    model: VLPModel  # in eval mode, on the CPU
    description: str  # the pretrain run or release it came from
    frame: pd.DataFrame  # the split's manifest rows
    task: ZeroshotTask | None = None  # classification: the task; None for grounding
    images: pd.DataFrame | None = None  # classification: one row per kept image with its class index (label)
    skipped: dict = field(default_factory=dict)  # images (classification) or rows (grounding) left out, by reason
    rows: pd.DataFrame | None = None  # grounding: the structure rows scored, with their text
    val_rows: pd.DataFrame | None = None  # grounding without --threshold: the val rows the threshold is chosen on


def load_model(cfg: EvalZeroshotConfig) -> tuple[VLPModel, str]:
    """The image-text model of ``--run``: a pretrain run's ``checkpoint`` weights or a released ``.ckpt``.

    Raises:
        UserError: not found, or not a pretrain run / release.
    """
    path = Path(cfg.run)
    if not path.exists():
        raise UserError(f"--run {path}: not found")
    return load_vlp(path, cfg.text_encoder, "--run", cfg.checkpoint)


def load_zeroshot_inputs(cfg: EvalZeroshotConfig) -> ZeroshotInputs:
    """Check the task, the data and the run, and read what :func:`run_zeroshot` needs (no run directory exists yet).

    Raises:
        UserError: an unknown or malformed task, a missing manifest column or split, no image with a known class,
            or a run that is not a pretrain run (one line naming the option).
    """
    cfg.validate()
    resolve_device(cfg.device)  # --device cuda without a GPU: refused here, before the run exists
    task = None if cfg.task == GROUNDING else load_task(cfg.task)
    split = load_split(cfg.data, cfg.split, "--data")
    option = f"--data {cfg.data}"
    if task is None:
        rows, skipped = grounding.grounding_rows(split.frame, cfg.prompt, option)
        val_rows = None
        if cfg.threshold is None:
            try:
                val = load_split(cfg.data, "val", "--data")
            except UserError as exc:
                raise UserError(f"{exc}; give --threshold, or data with a val split to choose it on") from None
            val_rows, _ = grounding.grounding_rows(val.frame, cfg.prompt, option)
            missing = sorted(set(rows["structure"].astype(str)) - set(val_rows["structure"].astype(str)))
            if missing:
                raise UserError(f"{option}: the val split has no {', '.join(missing)} row with a text to choose a "
                                "threshold on; give --threshold")
        model, description = load_model(cfg)
        return ZeroshotInputs(model, description, split.frame, skipped=skipped, rows=rows, val_rows=val_rows)
    images, skipped = image_labels(split.frame, task, cfg.structure, option)
    if images.empty:
        raise UserError(f"{option}: no {cfg.split!r} image has a {task.column!r} value in the classes of task "
                        f"{task.name!r} ({', '.join(task.class_names)}); left out: {skipped['missing']} missing, "
                        f"{skipped['unmapped']} in no class")
    model, description = load_model(cfg)
    return ZeroshotInputs(model, description, split.frame, task=task, images=images, skipped=skipped)


def run_zeroshot(cfg: EvalZeroshotConfig, run: Run, inputs: ZeroshotInputs | None = None) -> dict[str, Any]:
    """``echoseg eval zeroshot``: classify (or ground) the split into ``run`` (per_sample.csv, summary.json, a PNG).

    Args:
        inputs: from :func:`load_zeroshot_inputs` (loaded here when None; the CLI loads them before opening the
            run, so that bad input leaves no run directory).
    Returns:
        The summary (empty on a non-main process of a multi-process launch, which leaves the work to the main one).
    """
    if inputs is None:
        inputs = load_zeroshot_inputs(cfg)
    if not run.writer:
        return {}
    device = torch.device(resolve_device(cfg.device))
    model = inputs.model.to(device).eval()
    source = {"run": str(cfg.run), "method": model.method, "description": inputs.description,
              "checkpoint": cfg.checkpoint if Path(cfg.run).is_dir() else None}
    common = {"split": cfg.split, "data": str(cfg.data), "model": source}
    if inputs.task is None:
        summary = grounding.run_grounding(cfg, run, inputs, device)
    else:
        summary = _classification(cfg, run, inputs, model, device)
    summary.update(common)
    run.write_summary(summary)
    return summary


# ----------------------------------------------------------------------------- classification
@torch.no_grad()
def class_embeddings(model: VLPModel, prompts: dict[str, list[str]]) -> torch.Tensor:
    """(K, D) class embeddings: each class's prompt embeddings averaged, then L2-normalised."""
    return F.normalize(torch.stack([model.encode_texts(list(p)).float().mean(dim=0) for p in prompts.values()]),
                       dim=-1)


@torch.no_grad()
def image_embeddings(model: VLPModel, cache, rows: np.ndarray, batch_size: int, device: torch.device) -> torch.Tensor:
    """(N, D) L2-normalised global embeddings of the cache ``rows``, in batches."""
    out = [model.encode_images(image_batch(cache, rows[i:i + batch_size], model.mean, model.std).to(device)).float()
           for i in range(0, len(rows), batch_size)]
    return torch.cat(out).cpu()


def classify(image_emb: torch.Tensor, class_emb: torch.Tensor, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities (N, K) and class probabilities (softmax of similarity / ``temperature``)."""
    sims = image_emb.double() @ class_emb.double().cpu().T
    return sims.numpy(), torch.softmax(sims / temperature, dim=1).numpy()


def per_sample_table(images: pd.DataFrame, task: ZeroshotTask, sims: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """The classification ``per_sample.csv``: one row per image (see the module docstring)."""
    names = task.class_names
    labels = images["label"].to_numpy()
    pred = probs.argmax(axis=1)
    table = pd.DataFrame({
        "sample_id": images["sample_id"].to_numpy(), "image": images["image"].to_numpy(), "task": task.name,
        "label": [names[k] for k in labels], "predicted": [names[k] for k in pred],
        "correct": (pred == labels).astype(int), "prob_true": probs[np.arange(len(labels)), labels],
    })
    for k, name in enumerate(names):
        table[f"prob_{name}"] = probs[:, k]
    for k, name in enumerate(names):
        table[f"sim_{name}"] = sims[:, k]
    table["value"] = images["value"].to_numpy()
    for col in ("patient", "view", "phase", "source"):
        if col in images.columns:
            table[col] = images[col].to_numpy()
    return table


def _classification(cfg: EvalZeroshotConfig, run: Run, inputs: ZeroshotInputs, model: VLPModel,
                    device: torch.device) -> dict[str, Any]:
    task, images = inputs.task, inputs.images
    cache = split_cache(inputs.frame, model.input_size, cfg.cache_dir)
    rows = np.array([cache.row_of(p) for p in images["image"]], dtype=np.int64)
    prompts = task.prompts(cfg.structure)
    sims, probs = classify(image_embeddings(model, cache, rows, cfg.batch_size, device),
                           class_embeddings(model, prompts), cfg.temperature)
    table = per_sample_table(images, task, sims, probs)
    write_csv(run.file("per_sample.csv"), table)
    metrics = classification_summary(images["label"].to_numpy(), probs, task.class_names, cfg.n_boot, cfg.seed)
    save_confusion_figure(run.file("zeroshot.png"), table, task)
    summary: dict[str, Any] = {
        "task": task.name, "description": task.description, "task_source": task.source, "column": task.column,
        "structure": cfg.structure if task.per_structure else None, "classes": task.class_names,
        "positive": task.class_names[1] if len(task.classes) == 2 else None, "prompts": prompts,
        "temperature": cfg.temperature, **metrics, "skipped": inputs.skipped,
        "bootstrap": {"n_boot": cfg.n_boot, "seed": cfg.seed, "level": CI_LEVEL},
        "conventions": {
            "score": "cosine similarity of the image embedding with each class embedding (mean of its prompts' "
                     "embeddings, L2-normalised)",
            "probability": f"softmax over classes of similarity / temperature ({cfg.temperature:g})",
            "auc": "of the positive (second) class for two classes; one-vs-rest macro over the classes present "
                   "otherwise",
            "f1": "of the positive class for two classes, macro otherwise; on the arg-max prediction",
            "ci": f"percentile bootstrap over images, {cfg.n_boot} resamples, seed {cfg.seed}",
        },
    }
    auc = metrics["auc"]
    left = inputs.skipped["missing"] + inputs.skipped["unmapped"]
    run.log(f"zero-shot {task.name}: AUC {auc['value']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]  "
            f"F1 {metrics['f1']['value']:.3f}  accuracy {metrics['accuracy']['value']:.3f}  "
            f"(n={metrics['n']}, left out {left})")
    return summary


def save_confusion_figure(path: Path, table: pd.DataFrame, task: ZeroshotTask) -> None:
    """The confusion matrix (counts) and, per true class, a histogram of the true class's probability."""
    import matplotlib  # deferred: plotting is only needed once per run

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    names = task.class_names
    index = {n: k for k, n in enumerate(names)}
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    for t, p in zip(table["label"], table["predicted"], strict=True):
        counts[index[t], index[p]] += 1
    fig, (left, right) = plt.subplots(1, 2, figsize=(4.0 + 1.2 * len(names), 3.6))
    left.imshow(counts, cmap="Blues")
    for (i, j), c in np.ndenumerate(counts):
        left.text(j, i, str(c), ha="center", va="center", fontsize=8,
                  color="white" if c > counts.max() / 2 else "black")
    left.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
    left.set_yticks(range(len(names)), names, fontsize=7)
    left.set_xlabel("predicted")
    left.set_ylabel("true")
    left.set_title(f"zero-shot {task.name}", fontsize=9)
    bins = np.linspace(0.0, 1.0, 21)
    for name in names:
        values = table.loc[table["label"] == name, "prob_true"]
        if len(values):
            right.hist(values, bins=bins, alpha=0.5, label=f"{name} (n={len(values)})")
    right.set_xlabel("probability of the true class")
    right.set_ylabel("images")
    right.legend(fontsize=7)
    save_figure(path, fig)
