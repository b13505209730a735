"""Curation figures: contact sheets of kept and rejected images and a histogram of every score."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from echoseg.core.data.cache import resize_image
from echoseg.core.data.imaging import load_image
from echoseg.core.errors import UserError
from echoseg.core.io import save_figure


def _plt():
    import matplotlib  # deferred: heavy import, loaded only when this path runs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    return plt


def _thumb(path: str, size: int) -> np.ndarray:
    try:
        with np.errstate(invalid="ignore"):  # images with NaN pixels are shown too
            return resize_image(load_image(path), size)
    except UserError:
        return np.zeros((size, size), np.uint8)


def contact_sheet(path: Path, images: Sequence[str], captions: Sequence[str], title: str,
                  limit: int = 48, thumb: int = 96, cols: int = 8) -> int:
    """A grid of up to ``limit`` thumbnails with captions; returns how many were drawn (unreadable: black)."""
    plt = _plt()
    n = min(len(images), limit)
    cols = max(1, min(cols, n)) if n else 1
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), list(images)[:n], list(captions)[:n], strict=False):
        ax.imshow(_thumb(image, thumb), cmap="gray", vmin=0, vmax=255)
        ax.set_title(caption, fontsize=5)
    suffix = f" (first {n} of {len(images)})" if len(images) > n else f" ({n})"
    fig.suptitle(title + suffix, fontsize=8)
    if n == 0:
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center")
    save_figure(path, fig)
    return n


def score_histogram(path: Path, values: np.ndarray, name: str, threshold: float | None = None,
                    keep_if: str = "", bins: int = 40) -> None:
    """Histogram of one score with its threshold (red line) when it has one."""
    plt = _plt()
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    if len(v):
        ax.hist(v, bins=bins, color="steelblue")
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="red", linestyle="--", label=f"keep if {keep_if} {threshold:g}")
        ax.legend(fontsize=7)
    ax.set_xlabel(name)
    ax.set_ylabel("images")
    ax.set_title(f"{name} (n={len(v)})", fontsize=9)
    save_figure(path, fig)


def score_stats(values: np.ndarray) -> dict[str, float | int | None]:
    """n, mean, min, quantiles (5, 25, 50, 75, 95, 99 %) and max of the finite values."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0}
    q = np.percentile(v, [5, 25, 50, 75, 95, 99])
    return {"n": int(len(v)), "mean": float(v.mean()), "min": float(v.min()), "p05": float(q[0]),
            "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]), "p95": float(q[4]), "p99": float(q[5]),
            "max": float(v.max())}


def write_figures(folder: Path, images: pd.DataFrame, rejected: pd.DataFrame, kept_keys: set[str],
                  thresholds: dict[str, tuple[float | None, str]], limit: int = 48) -> list[str]:
    """``kept.png``, ``rejected.png`` and ``hist_<score>.png`` for each score column of ``images``.

    Args:
        folder: where the figures go.
        images: one row per image with ``key``, ``image`` and score columns.
        rejected: the rejected.csv table (its first row per image gives the caption).
        kept_keys: keys of the kept images.
        thresholds: score column -> (threshold, keep_if).
    Returns:
        File names written.
    """
    folder = Path(folder)
    written = []
    kept = images[images["key"].isin(kept_keys)]
    contact_sheet(folder / "kept.png", kept["image"].tolist(), kept["key"].tolist(), "kept", limit)
    written.append("kept.png")
    first = rejected.drop_duplicates("image") if len(rejected) else rejected
    captions = [f"{r.sample}\n{r.filter}:{r.check} {r.score:.3g}" for r in first.itertuples(index=False)]
    contact_sheet(folder / "rejected.png", first["image"].tolist() if len(first) else [], captions, "rejected", limit)
    written.append("rejected.png")
    for col, (thr, keep_if) in thresholds.items():
        if col in images.columns:
            name = f"hist_{col}.png"
            score_histogram(folder / name, images[col].to_numpy(np.float64), col, thr, keep_if)
            written.append(name)
    return written
