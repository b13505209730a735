"""Segmentation evaluation: predict a split, resize to ``eval_size`` (512), threshold, and score each sample.

Writes (into the run directory): ``per_sample.csv`` (one row per image x structure x prompt: sample_id, image,
structure, prompt, dice, iou, hd95 and extras), the summary dict (mean and std per structure, per prompt and
overall; see :func:`summarize`) and ``predictions.png`` (a few test images with ground-truth and predicted
contours). Predictions are logits at the model's input size, bilinearly resized to ``eval_size`` x ``eval_size``,
then ``sigmoid > threshold``; ground truth is the label map at ``eval_size`` (nearest-neighbour resize in the
cache). Metric conventions for empty masks are in :mod:`echoseg.core.eval.metrics`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from echoseg.core.console import track
from echoseg.core.eval.metrics import segmentation_metrics
from echoseg.core.io import save_figure, write_png
from echoseg.core.train.dataset import SegDataset, collate, epoch_batches

PER_SAMPLE_COLUMNS = ["sample_id", "image", "structure", "prompt", "dice", "iou", "hd95"]
EXTRA_COLUMNS = ["prompt_text", "label", "patient", "view", "phase", "source", "pred_pixels", "gt_pixels"]
METRICS = ("dice", "iou", "hd95")


@torch.no_grad()
def predict_and_score(
    model,
    frame: pd.DataFrame,
    image_cache,
    gt_cache,
    prompt_cols: Sequence[str],
    *,
    eval_size: int = 512,
    threshold: float = 0.5,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    masks_dir: Path | None = None,
    n_examples: int = 6,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Score every (sample, prompt) of ``frame``.

    Args:
        model: a SegModel (eval mode is set here).
        frame: manifest rows of the split.
        image_cache: cache at the model input size (network inputs).
        gt_cache: cache at ``eval_size`` (ground-truth label maps and display images).
        prompt_cols: prompt columns to evaluate (each gives one row per sample).
        autocast: a factory of the mixed-precision context (e.g. ``accelerator.autocast``).
        masks_dir: if given, predicted masks are written there as ``<sample_id>_<prompt>.png`` (0/255).
    Returns:
        The per-sample table and up to ``n_examples`` examples for :func:`save_prediction_figure`.
    """
    model.eval()
    texts_present = all(c in frame.columns for c in prompt_cols)
    rows: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    gt_rows = np.array([gt_cache.row_of(p) for p in frame["image"].astype(str)], dtype=np.int64)
    labels = frame["label"].astype(np.int64).to_numpy()
    for col in prompt_cols:
        ds = SegDataset(frame, image_cache, model.mean, model.std, [col], uses_text=model.uses_text)
        prompt_name = col if texts_present else "none"
        batches = epoch_batches(len(ds), batch_size, 0, 0, shuffle=False)
        it = track(batches, f"evaluating ({prompt_name})") if progress else batches
        for idx in it:
            batch = collate([ds[i] for i in idx])
            images = batch["image"].to(device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                logits = model(images, batch["text"], batch["structure"].to(device))
            up = F.interpolate(logits.float(), size=(eval_size, eval_size), mode="bilinear", align_corners=False)
            preds = (torch.sigmoid(up[:, 0]) > threshold).cpu().numpy()
            for j, i in enumerate(idx):
                r = frame.iloc[i]
                gt = np.asarray(gt_cache.mask(gt_rows[i])) == labels[i]
                m = segmentation_metrics(preds[j], gt)
                rows.append({
                    "sample_id": r["sample_id"], "image": r["image"], "structure": r["structure"],
                    "prompt": prompt_name, **m, "prompt_text": batch["text"][j], "label": int(labels[i]),
                    **{k: r.get(k) for k in ("patient", "view", "phase", "source")},
                    "pred_pixels": int(preds[j].sum()), "gt_pixels": int(gt.sum()),
                })
                if masks_dir is not None:
                    write_png(Path(masks_dir) / f"{r['sample_id']}_{prompt_name}.png", preds[j].astype(np.uint8) * 255)
                if len(examples) < n_examples and col == prompt_cols[0]:
                    examples.append({"image": np.asarray(gt_cache.image(gt_rows[i])), "gt": gt, "pred": preds[j],
                                     "title": f"{r['sample_id']} {r['structure']} dice={m['dice']:.3f}"})
    df = pd.DataFrame(rows, columns=PER_SAMPLE_COLUMNS + EXTRA_COLUMNS)
    return df, examples


def _stats(df: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(df)}
    for m in METRICS:
        values = df[m].astype(float)
        out[f"{m}_mean"] = float(values.mean()) if values.notna().any() else None
        out[f"{m}_std"] = float(values.std(ddof=1)) if values.notna().sum() > 1 else None
    out["hd95_undefined"] = int(df["hd95"].isna().sum())
    return out


def summarize(per_sample: pd.DataFrame) -> dict[str, Any]:
    """Mean and sample std (ddof=1) of dice/iou/hd95 overall, per structure and per prompt.

    NaN HD95 values (exactly one mask empty) are left out of HD95 means and counted as ``hd95_undefined``.
    """
    return {
        "overall": _stats(per_sample),
        "per_structure": {s: _stats(g) for s, g in per_sample.groupby("structure", sort=True)},
        "per_prompt": {p: _stats(g) for p, g in per_sample.groupby("prompt", sort=True)},
        "conventions": {
            "eval_size": "predictions resized to eval_size x eval_size before thresholding",
            "empty": "both empty: dice=iou=1, hd95=0; one empty: dice=iou=0, hd95=NaN (excluded from means)",
            "hd95_units": "pixels at eval_size",
            "std": "sample standard deviation (ddof=1)",
        },
    }


def save_prediction_figure(path: Path, examples: list[dict[str, Any]]) -> None:
    """A grid of images with ground-truth (green) and predicted (red) contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(examples))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, ex in zip(axes.ravel(), examples, strict=False):
        ax.imshow(ex["image"], cmap="gray", vmin=0, vmax=255)
        for mask, color in ((ex["gt"], "lime"), (ex["pred"], "red")):
            if mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.0)
        ax.set_title(ex["title"], fontsize=8)
    fig.suptitle("ground truth (green) vs prediction (red)", fontsize=9)
    save_figure(path, fig)


def evaluate_trained_run(
    train_run: str | Path,
    split,
    run,
    *,
    prompt: str | None = None,
    which: str = "best",
    threshold: float | None = None,
    eval_size: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "no",
    cache_dir: str | None = None,
    save_masks: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """``echoseg eval seg``: evaluate a training run's checkpoint on ``split`` (a ``SplitData``) into ``run``.

    Unset options take the training run's values (prompt, threshold, eval size, batch size).
    """
    from echoseg.core.train.checkpoint import load_trained_model
    from echoseg.core.train.dataset import check_prompt_columns, prompt_columns
    from echoseg.core.train.loop import evaluate_into_run, make_accelerator
    from echoseg.core.train.recipe import TrainConfig

    model, info = load_trained_model(train_run, which)
    cfg = TrainConfig.from_dict(info.get("train_config", {}))
    cfg.prompt = prompt or cfg.prompt
    cfg.threshold = cfg.threshold if threshold is None else threshold
    cfg.eval_size = cfg.eval_size if eval_size is None else eval_size
    cfg.batch_size = cfg.batch_size if batch_size is None else batch_size
    cfg.device, cfg.precision, cfg.cache_dir = device, precision, cache_dir
    cfg.validate()
    cols = prompt_columns(cfg.prompt)
    check_prompt_columns(split.frame, cols, f"--data {split.source}", model.uses_text)
    accelerator = make_accelerator(cfg.precision, cfg.device)
    model.to(accelerator.device)
    result = evaluate_into_run(model, split, cols, cfg, accelerator, run, save_masks=save_masks, progress=progress)
    result.update(train_run=str(Path(train_run).resolve()), checkpoint=which, model=info.get("name"),
                  data={"data": str(split.source), "samples": len(split.frame)})
    return result
