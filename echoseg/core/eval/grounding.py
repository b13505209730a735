"""Zero-shot grounding (``echoseg eval zeroshot --task grounding``): a structure's text located in the image.

For each (image, structure) row of the split: the cosine-similarity map between the structure's text embedding and
the image's dense features (:meth:`~echoseg.core.models.vlp.VLPModel.dense_similarity`: GLoRIA's region embeddings,
MGCA's patch embeddings, ConVIRT's last feature map through its global head), bilinearly resized to ``eval_size``,
thresholded (``similarity > threshold``) and scored against the structure's mask at ``eval_size`` with Dice, IoU
and HD95 (:mod:`echoseg.core.metrics.seg`), exactly as ``eval seg`` scores a segmentation.

The text is the structure's name in echoseg's prompt words ("Left ventricular cavity", "Myocardium", "Left atrium
cavity"; prompt ``name``) or, with ``--prompt pK``, the row's manifest prompt. The threshold is chosen per
structure on the val split: the value of a 51-point grid spanning that structure's val similarities that maximises
the mean Dice (``--threshold`` sets one value for every structure instead).

Writes ``per_sample.csv`` in the table of ``eval seg`` (``sample_id, image, structure, prompt, dice, iou, hd95``,
``prompt_text`` ... plus ``threshold``), so ``stats wilcoxon`` pairs it with another grounding or ``eval seg`` run,
``summary.json`` (means per structure and prompt, the thresholds and how they were chosen) and ``grounding.png``
(a few images with each structure's similarity map, ground truth (green) and thresholded map (red)).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from echoseg.core.data.manifest import STRUCTURE_LABELS, STRUCTURE_NAMES, prompt_columns
from echoseg.core.errors import UserError
from echoseg.core.eval.zeroshot_tasks import image_batch, split_cache
from echoseg.core.io import save_figure, write_csv
from echoseg.core.metrics.seg import segmentation_metrics
from echoseg.core.models.vlp import VLPModel
from echoseg.core.train.evaluate import EXTRA_COLUMNS, PER_SAMPLE_COLUMNS, summarize

if TYPE_CHECKING:
    from echoseg.core.eval.zeroshot import EvalZeroshotConfig, ZeroshotInputs
    from echoseg.core.runs import Run

NAME_PROMPT = "name"  # the prompt column value when the text is the structure's name
GRID_POINTS = 51
N_EXAMPLES = 4


def prompt_column(prompt: str) -> str:
    """The one manifest column ``--prompt`` names for grounding (p1..p7 or p1_b..p7_b).

    Raises:
        UserError: p0 (no text), ``random`` prompts, or not a prompt column.
    """
    cols = prompt_columns(prompt)
    if len(cols) != 1 or cols[0] == "p0" or prompt.strip() != cols[0]:
        raise UserError(f"--prompt {prompt!r}: grounding takes one fixed prompt column with text, p1..p7 or "
                        "p1_b..p7_b")
    return cols[0]


def grounding_rows(frame: pd.DataFrame, prompt: str | None, option: str) -> tuple[pd.DataFrame, dict]:
    """The structure rows of ``frame`` with their text (``prompt``, ``prompt_text``); rows without text (an empty
    prompt) are left out and counted.

    Raises:
        UserError: the prompt column is missing, or no row is left.
    """
    rows = frame[frame["structure"].astype(str).isin(list(STRUCTURE_LABELS))].copy()
    if prompt is None:
        rows["prompt"] = NAME_PROMPT
        rows["prompt_text"] = rows["structure"].astype(str).map(STRUCTURE_NAMES)
    else:
        col = prompt_column(prompt)
        if col not in rows.columns:
            raise UserError(f"{option}: manifest has no prompt column {col!r} (is it a `prompts build` run?)")
        rows["prompt"] = col
        rows["prompt_text"] = rows[col].fillna("").astype(str).str.strip()
    empty = rows["prompt_text"] == ""
    kept = rows[~empty].reset_index(drop=True)
    if kept.empty:
        raise UserError(f"{option}: no structure row (LV, MYO, LA) with a text to ground")
    return kept, {"no_text": int(empty.sum())}


# ----------------------------------------------------------------------------- similarity maps
@torch.no_grad()
def similarity_maps(model: VLPModel, rows: pd.DataFrame, cache, batch_size: int, device: torch.device) -> torch.Tensor:
    """(N_rows, h, w) cosine maps at the model's feature resolution, each row's text against its image."""
    images = list(dict.fromkeys(rows["image"].astype(str)))
    by_image: dict[str, list[int]] = {}
    for i, img in enumerate(rows["image"].astype(str)):
        by_image.setdefault(img, []).append(i)
    texts = rows["prompt_text"].tolist()
    maps: list[torch.Tensor | None] = [None] * len(rows)
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        members = [i for img in chunk for i in by_image[img]]
        unique = list(dict.fromkeys(texts[i] for i in members))
        batch = image_batch(cache, np.array([cache.row_of(p) for p in chunk]), model.mean, model.std).to(device)
        sims = model.dense_similarity(batch, unique).float().cpu()  # (B_img, B_txt, h, w)
        for b, img in enumerate(chunk):
            for i in by_image[img]:
                maps[i] = sims[b, unique.index(texts[i])]
    return torch.stack(maps)  # type: ignore[arg-type]


def upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w) maps bilinearly resized to (N, size, size), as ``eval seg`` resizes logits."""
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def _masks(rows: pd.DataFrame, gt_cache) -> torch.Tensor:
    labels = rows["label"].astype(np.int64).to_numpy()
    stack = np.stack([np.asarray(gt_cache.mask(gt_cache.row_of(p))) for p in rows["image"].astype(str)])
    return torch.from_numpy(stack == labels[:, None, None])


def dice_curve(maps: torch.Tensor, rows: pd.DataFrame, gt_cache, thresholds: np.ndarray, size: int,
               chunk: int = 16) -> np.ndarray:
    """Dice (len(thresholds), N) of ``maps`` (N, h, w) resized to ``size`` and thresholded, against the masks of
    ``rows`` at ``size`` (both empty: 1); masks are read ``chunk`` rows at a time."""
    out = np.zeros((len(thresholds), len(maps)))
    for s in range(0, len(maps), chunk):
        up, g = upsample(maps[s:s + chunk], size), _masks(rows.iloc[s:s + chunk], gt_cache)
        g_sum = g.sum(dim=(1, 2)).double()
        for t, thr in enumerate(thresholds):
            pred = up > float(thr)
            inter = (pred & g).sum(dim=(1, 2)).double()
            total = pred.sum(dim=(1, 2)).double() + g_sum
            out[t, s:s + chunk] = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
    return out


def choose_thresholds(maps: torch.Tensor, rows: pd.DataFrame, gt_cache, size: int) -> dict[str, dict]:
    """Per structure: the threshold of a ``GRID_POINTS`` grid over its similarity range maximising the mean Dice
    (the lowest such threshold on a tie)."""
    out: dict[str, dict] = {}
    for structure in STRUCTURE_LABELS:
        idx = np.flatnonzero(rows["structure"].astype(str).to_numpy() == structure)
        if not len(idx):
            continue
        sub = maps[idx]
        grid = np.linspace(float(sub.min()), float(sub.max()), GRID_POINTS)
        mean = dice_curve(sub, rows.iloc[idx], gt_cache, grid, size).mean(axis=1)
        best = int(np.argmax(mean))
        out[structure] = {"threshold": float(grid[best]), "val_dice": float(mean[best]), "val_rows": int(len(idx)),
                          "grid": [float(grid[0]), float(grid[-1]), GRID_POINTS]}
    return out


# ----------------------------------------------------------------------------- scoring
def score_rows(maps: torch.Tensor, rows: pd.DataFrame, gt_cache, thresholds: dict[str, float], size: int,
               n_examples: int = N_EXAMPLES) -> tuple[pd.DataFrame, dict[str, dict]]:
    """The ``per_sample.csv`` of ``eval seg`` for grounding, and the first images' maps for the figure."""
    records: list[dict[str, Any]] = []
    examples: dict[str, dict] = {}
    for s in range(0, len(rows), 16):
        part = rows.iloc[s:s + 16]
        up, gt = upsample(maps[s:s + 16], size).numpy(), _masks(part, gt_cache).numpy()
        for j, (_, r) in enumerate(part.iterrows()):
            thr = thresholds[str(r["structure"])]
            pred = up[j] > thr
            m = segmentation_metrics(pred, gt[j])
            records.append({
                "sample_id": r["sample_id"], "image": r["image"], "structure": r["structure"], "prompt": r["prompt"],
                **m, "prompt_text": r["prompt_text"], "label": int(r["label"]),
                **{k: r.get(k) for k in ("patient", "view", "phase", "source")},
                "pred_pixels": int(pred.sum()), "gt_pixels": int(gt[j].sum()), "threshold": thr,
            })
            image = str(r["image"])
            if image in examples or len(examples) < n_examples:
                ex = examples.setdefault(image, {"image": np.asarray(gt_cache.image(gt_cache.row_of(image))),
                                                 "maps": {}})
                ex["maps"][str(r["structure"])] = (up[j], gt[j], pred, m["dice"])
    return pd.DataFrame(records, columns=[*PER_SAMPLE_COLUMNS, *EXTRA_COLUMNS, "threshold"]), examples


def run_grounding(cfg: EvalZeroshotConfig, run: Run, inputs: ZeroshotInputs, device: torch.device) -> dict[str, Any]:
    """Ground every structure row of the split into ``run``; returns the summary (without the model fields)."""
    model, rows, val = inputs.model, inputs.rows, inputs.val_rows
    size = cfg.eval_size
    search: dict[str, dict] = {}
    if cfg.threshold is None:
        val_maps = similarity_maps(model, val, split_cache(val, model.input_size, cfg.cache_dir), cfg.batch_size,
                                   device)
        search = choose_thresholds(val_maps, val, split_cache(val, size, cfg.cache_dir), size)
        thresholds = {s: v["threshold"] for s, v in search.items()}
        if cfg.split == "val":
            run.log("warning: the threshold is chosen on the split it is scored on (val)", style="yellow")
    else:
        thresholds = {s: float(cfg.threshold) for s in STRUCTURE_LABELS}
    maps = similarity_maps(model, rows, split_cache(rows, model.input_size, cfg.cache_dir), cfg.batch_size, device)
    gt_cache = split_cache(rows, size, cfg.cache_dir)
    per_sample, examples = score_rows(maps, rows, gt_cache, thresholds, size)
    write_csv(run.file("per_sample.csv"), per_sample)
    save_grounding_figure(run.file("grounding.png"), examples)
    summary = summarize(per_sample)
    summary.update(
        task="grounding", prompt=cfg.prompt or NAME_PROMPT, eval_size=size, thresholds=thresholds,
        threshold_source="--threshold" if cfg.threshold is not None else "val split (max mean Dice)",
        threshold_search=search, skipped=inputs.skipped,
    )
    summary["conventions"]["similarity"] = ("cosine similarity of the text embedding with each location of the "
                                            "dense image features; bilinear to eval_size, then > threshold")
    o = summary["overall"]
    hd = "n/a" if o["hd95_mean"] is None else f"{o['hd95_mean']:.2f} px"
    run.log(f"zero-shot grounding: dice {o['dice_mean']:.4f}  iou {o['iou_mean']:.4f}  hd95 {hd}  (n={o['n']})")
    return summary


def save_grounding_figure(path: Path, examples: dict[str, dict]) -> None:
    """Rows of images; per structure its similarity map over the image, ground truth (green), prediction (red)."""
    import matplotlib  # deferred: plotting is only needed once per run

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    structures = list(STRUCTURE_LABELS)
    n = max(1, len(examples))
    fig, axes = plt.subplots(n, 1 + len(structures), figsize=(2.6 * (1 + len(structures)), 2.7 * n), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for row, ex in zip(axes, examples.values(), strict=False):
        row[0].imshow(ex["image"], cmap="gray", vmin=0, vmax=255)
        row[0].set_title("image", fontsize=8)
        for ax, structure in zip(row[1:], structures, strict=True):
            if structure not in ex["maps"]:
                continue
            sim, gt, pred, dice = ex["maps"][structure]
            ax.imshow(ex["image"], cmap="gray", vmin=0, vmax=255)
            ax.imshow(sim, cmap="jet", alpha=0.45)
            for mask, color in ((gt, "lime"), (pred, "red")):
                if mask.any() and not mask.all():
                    ax.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=1.0)
            ax.set_title(f"{structure} dice={dice:.3f}", fontsize=8)
    fig.suptitle("similarity map; ground truth (green), thresholded map (red)", fontsize=9)
    save_figure(path, fig)
