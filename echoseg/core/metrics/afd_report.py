"""aFD evaluation of a data set: per-video table, summary and a figure of area curves.

Artefacts written into the run directory:

- ``per_video.csv``: FileName, Split, FPS, NumberOfFrames (frames of the area curve: with a ``stride`` K, the
  frames kept, 0, K, 2K, ...), Reference
  (``yes``/``no``), ED_ref, ED_est, ED_delay, ED_delay_ms, and the same for ES. Videos without a reference
  have estimates only (the global minimum of the signed signal) and empty ref/delay columns.
- ``summary.json``: aFD_ED / aFD_ES in frames and in milliseconds (per-video ``delay_ms = delay / FPS * 1000``),
  the number of videos evaluated, and the videos without a reference, without areas, or absent from
  the selected rows of FileList.csv, each counted and listed (none is silently dropped).
- ``area_curves.png``: area curves with reference (solid) and estimated (dashed) ED/ES frames for a sample.

With ``stride`` K the curves hold every K-th frame (EchoDFKD's sampling-rate analysis): the reference frame is
mapped to the nearest kept frame (``round(ref / K)``, halves up) to choose the run, the estimate is mapped back to
the original frame index (``K * estimate``), and delays, aFD and the plots are in original frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoseg.core.errors import UserError
from echoseg.core.io import save_figure, write_csv
from echoseg.core.metrics.afd import NO_REFERENCE, afd, detect
from echoseg.core.metrics.areas import AreaSignals, video_key

SPLITS = ("TRAIN", "VAL", "TEST", "ALL")
TABLE_COLUMNS = [
    "FileName", "Split", "FPS", "NumberOfFrames", "Reference",
    "ED_ref", "ED_est", "ED_delay", "ED_delay_ms", "ES_ref", "ES_est", "ES_delay", "ES_delay_ms",
]


def select_split(filelist: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of FileList.csv in ``split`` (TRAIN, VAL, TEST, or all), case-insensitive."""
    s = split.upper()
    if s not in SPLITS:
        raise UserError(f"--split must be TRAIN, VAL, TEST or all, got {split!r}")
    if s == "ALL":
        return filelist.reset_index(drop=True)
    return filelist[filelist["Split"].astype(str).str.upper() == s].reset_index(drop=True)


def afd_table(
    areas: AreaSignals,
    references: dict[str, tuple[int, int]],
    fps: dict[str, float] | None = None,
    splits: dict[str, str] | None = None,
    stride: int = 1,
) -> pd.DataFrame:
    """Run the ED/ES detection on every curve (vectorised per curve length) and tabulate the delays.

    ``stride``: point ``i`` of each curve is original frame ``i * stride`` (see the module docstring).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    n = len(areas)
    ed_ref = np.full(n, NO_REFERENCE, np.int64)
    es_ref = np.full(n, NO_REFERENCE, np.int64)
    for i, name in enumerate(areas.names):
        ref = references.get(name)
        if ref is not None:
            ed_ref[i], es_ref[i] = ref
    ed_est = np.zeros(n, np.int64)
    es_est = np.zeros(n, np.int64)
    has_ref = ed_ref >= 0
    # the reference on the kept frames (nearest, halves up): it only chooses the run of marked frames
    ed_kept = np.where(has_ref, (ed_ref + stride // 2) // stride, NO_REFERENCE)
    es_kept = np.where(has_ref, (es_ref + stride // 2) // stride, NO_REFERENCE)
    for idx, matrix in areas.groups():
        ed_est[idx], es_est[idx] = detect(matrix, ed_kept[idx], es_kept[idx])
    ed_est *= stride
    es_est *= stride
    fps_arr = np.array([(fps or {}).get(name, np.nan) for name in areas.names], dtype=np.float64)
    fps_ok = np.where(fps_arr > 0, fps_arr, np.nan)
    table = pd.DataFrame({
        "FileName": areas.names,
        "Split": [(splits or {}).get(name, "") for name in areas.names],
        "FPS": fps_arr,
        "NumberOfFrames": areas.lengths,
        "Reference": np.where(has_ref, "yes", "no"),
    })
    for phase, ref, est in (("ED", ed_ref, ed_est), ("ES", es_ref, es_est)):
        delay = np.where(has_ref, est - ref, np.nan)
        table[f"{phase}_ref"] = pd.arrays.IntegerArray(ref.copy(), ~has_ref)
        table[f"{phase}_est"] = est
        table[f"{phase}_delay"] = pd.arrays.IntegerArray(est - ref, ~has_ref)
        table[f"{phase}_delay_ms"] = delay / fps_ok * 1000.0
    return table.sort_values("FileName", kind="stable").reset_index(drop=True)[TABLE_COLUMNS]


def afd_summary(
    table: pd.DataFrame,
    *,
    without_areas: list[str] = (),
    not_in_filelist: list[str] = (),
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Headline numbers: aFD per phase in frames and ms, and every video left out of aFD, counted and listed."""
    ref = table["Reference"] == "yes"
    evaluated = table[ref]
    summary: dict[str, Any] = {}
    for phase in ("ED", "ES"):
        summary[f"aFD_{phase}_frames"] = afd(evaluated[f"{phase}_delay"].astype("float64").to_numpy())
        summary[f"aFD_{phase}_ms"] = afd(evaluated[f"{phase}_delay_ms"].to_numpy(np.float64))
    no_fps = evaluated.loc[~(evaluated["FPS"] > 0), "FileName"].tolist()
    summary.update({
        "videos_evaluated": int(ref.sum()),
        "videos_without_reference": int((~ref).sum()),
        "without_reference": table.loc[~ref, "FileName"].tolist(),
        "without_reference_estimate": "global minimum of the signed area signal (not in aFD)",
        "videos_without_areas": len(without_areas),
        "without_areas": list(without_areas),
        "videos_not_in_filelist": len(not_in_filelist),
        "not_in_filelist": list(not_in_filelist),
        "videos_without_fps": len(no_fps),
        "without_fps": no_fps,
    })
    summary.update(info or {})
    return summary


def evaluate_afd(
    areas: AreaSignals,
    filelist: pd.DataFrame,
    references: dict[str, tuple[int, int]],
    available: list[str] | None = None,
    info: dict[str, Any] | None = None,
    stride: int = 1,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """aFD over the videos of ``filelist`` (already split-filtered) that have an area curve.

    Videos of the file list without a curve, and videos with areas (``available``, default the curves' names)
    absent from the file list, are counted and listed in the summary, not evaluated. ``info`` items are added
    to the summary. ``stride``: the curves hold every ``stride``-th frame (see :func:`afd_table`).
    """
    keys = [video_key(n) for n in filelist["FileName"]]
    fps = dict(zip(keys, pd.to_numeric(filelist["FPS"], errors="coerce"), strict=True))
    splits = dict(zip(keys, filelist["Split"].astype(str), strict=True))
    have = set(areas.names)
    wanted = set(keys)
    without_areas = sorted(k for k in wanted if k not in have)
    not_in_filelist = sorted(k for k in (have if available is None else available) if k not in wanted)
    keep = [i for i, n in enumerate(areas.names) if n in wanted]
    subset = areas if len(keep) == len(areas) else _subset(areas, keep)
    table = afd_table(subset, references, fps, splits, stride=stride)
    summary = afd_summary(table, without_areas=without_areas, not_in_filelist=not_in_filelist, info=info)
    return table, summary


def _subset(areas: AreaSignals, keep: list[int]) -> AreaSignals:
    return AreaSignals.from_curves({areas.names[i]: areas.curve(i) for i in keep})


def sample_videos(table: pd.DataFrame, n: int = 8) -> list[str]:
    """Up to ``n`` videos to plot: the worst half by |ED delay| + |ES delay|, then others spread by name."""
    if len(table) <= n:
        return table["FileName"].tolist()
    err = table["ED_delay"].astype("float64").abs() + table["ES_delay"].astype("float64").abs()
    worst = table.loc[err.fillna(-1).sort_values(ascending=False, kind="stable").index[: n // 2], "FileName"].tolist()
    rest = [f for f in table["FileName"] if f not in set(worst)]
    picks = np.linspace(0, len(rest) - 1, n - len(worst)).round().astype(int)
    return worst + [rest[i] for i in dict.fromkeys(picks)]


def plot_area_curves(path: str | Path, table: pd.DataFrame, areas: AreaSignals, names: list[str],
                     stride: int = 1) -> None:
    """Save a grid of area curves with reference (solid) and estimated (dashed) ED (red) and ES (blue) frames
    (``stride``: point ``i`` of a curve is frame ``i * stride``)."""
    import matplotlib  # deferred: heavy import, loaded only when this path runs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs


    rows = table.set_index("FileName")
    where = areas.index()
    cols = min(4, max(1, len(names)))
    nrows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        row = rows.loc[name]
        curve = areas.curve(where[name])
        ax.plot(np.arange(len(curve)) * stride, curve, color="0.2", lw=1, marker="." if stride > 1 else None)
        for phase, color in (("ED", "tab:red"), ("ES", "tab:blue")):
            if row["Reference"] == "yes":
                ax.axvline(int(row[f"{phase}_ref"]), color=color, lw=1.2, label=f"{phase} ref")
            ax.axvline(int(row[f"{phase}_est"]), color=color, lw=1.2, ls="--", label=f"{phase} est")
        title = name if row["Reference"] == "yes" else f"{name} (no reference)"
        if row["Reference"] == "yes":
            title += f"\nED {int(row['ED_delay']):+d}, ES {int(row['ES_delay']):+d} frames"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("frame", fontsize=7)
        ax.set_ylabel("LV area (px)", fontsize=7)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6, loc="upper right")
    save_figure(path, fig)


def write_afd_report(run, table: pd.DataFrame, summary: dict[str, Any], areas: AreaSignals, plot: int = 8,
                     stride: int = 1) -> None:
    """Write per_video.csv, summary.json and area_curves.png into ``run`` (an echoseg Run)."""

    write_csv(run.file("per_video.csv"), table)
    if len(table):
        plot_area_curves(run.file("area_curves.png"), table, areas, sample_videos(table, plot), stride=stride)
    run.write_summary(summary)
