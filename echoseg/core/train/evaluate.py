"""Segmentation scoring of a split, the test evaluation of ``train`` and what ``eval seg`` runs: predict, resize to
``eval_size`` (512), threshold, and score each sample.

Writes (into the run directory): ``per_sample.csv`` (one row per image x structure x prompt: sample_id, image,
structure, prompt, dice, iou, hd95 and extras), the summary dict (mean and std per structure, per prompt and
overall; see :func:`summarize`) and ``predictions.png`` (a few test images with ground-truth and predicted
contours). Predictions are logits at the model's input size, bilinearly resized to ``eval_size`` x ``eval_size``,
then ``sigmoid > threshold``; ground truth is the label map at ``eval_size`` (nearest-neighbour resize in the
cache). Metric conventions for empty masks are in :mod:`echoseg.core.metrics.seg`.
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
from echoseg.core.data.cache import build_cache, default_cache_dir
from echoseg.core.data.imaging import check_label_maps
from echoseg.core.data.manifest import ANY_LABELS, SplitData, mask_labels
from echoseg.core.engine.batches import epoch_batches
from echoseg.core.io import save_figure, write_csv, write_png
from echoseg.core.metrics.seg import segmentation_metrics
from echoseg.core.runs import Run
from echoseg.core.train.dataset import SegDataset, collate
from echoseg.core.train.recipe import TrainConfig

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
    import matplotlib  # deferred: plotting is only needed once per run

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

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


def cache_for(split: SplitData, size: int, cfg: TrainConfig, accelerator, progress: bool = True):
    """The sample cache of a split at ``size`` (built once; the main process first)."""
    folder = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    with accelerator.main_process_first():
        cache = build_cache(split.frame, size, folder, progress=progress and accelerator.is_main_process)
    # The cache read every file with the checks of `data check`; the label maps also hold only their encoding's
    # labels (0..3 for CAMUS maps), also when the cache was built before that check existed.
    allowed = dict(zip(split.frame["mask"].astype(str), mask_labels(split.frame), strict=True))
    paths = cache.index["mask"].astype(str).tolist()
    check_label_maps(cache.masks, paths, [allowed.get(m, ANY_LABELS) for m in paths])
    return cache


def evaluate_into_run(model, split: SplitData, prompt_cols: Sequence[str], cfg: TrainConfig, accelerator, run: Run,
                      save_masks: bool = False, progress: bool = True) -> dict[str, Any] | None:
    """Evaluate ``model`` on a whole split; write ``per_sample.csv`` and ``predictions.png``; return the summary.

    Call it on every process: the caches are built collectively (main process first), then the main process
    scores the whole split alone, so a multi-process run scores the same samples as a single process, and the
    other processes wait at a barrier every process reaches. Non-main processes return None.
    """
    image_cache = cache_for(split, model.input_size, cfg, accelerator, progress)
    gt_cache = cache_for(split, cfg.eval_size, cfg, accelerator, progress)
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return None
    per_sample, examples = predict_and_score(
        model, split.frame, image_cache, gt_cache, prompt_cols, eval_size=cfg.eval_size, threshold=cfg.threshold,
        batch_size=cfg.batch_size, device=accelerator.device, autocast=accelerator.autocast,
        masks_dir=run.file("masks") if save_masks and run.writer else None, progress=progress,
    )
    if run.writer:
        write_csv(run.file("per_sample.csv"), per_sample)
        save_prediction_figure(run.file("predictions.png"), examples)
    result = summarize(per_sample)
    result.update(threshold=cfg.threshold, eval_size=cfg.eval_size, prompts=list(prompt_cols))
    o = result["overall"]
    hd = "n/a" if o["hd95_mean"] is None else f"{o['hd95_mean']:.2f} px"
    run.log(f"test: dice {o['dice_mean']:.4f}  iou {o['iou_mean']:.4f}  hd95 {hd}  (n={o['n']})")
    accelerator.wait_for_everyone()
    return result
