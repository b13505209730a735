"""The distillation report: cost of student and teacher, agreement on validation, and — on real videos with
tracings — aFD of ED/ES detection and Dice against the human tracings, side by side.

Per model ``m`` in (student, teacher) an evaluation on ``--eval-data`` writes:

- ``eval/<m>/per_video.csv``: the ``eval afd`` columns (FileName, Split, FPS, NumberOfFrames, Reference, ED_ref,
  ED_est, ED_delay, ED_delay_ms, ES_...) plus ``Dice_ED``, ``Dice_ES`` (Dice of the binarised mask against the
  rasterised tracing, :func:`echoseg.core.data.echonet.tracing_mask`, on the traced ED/ES frames) and ``Dice_mean``
  (over every traced frame), and the same for IoU (``IoU_ED``, ``IoU_ES``, ``IoU_mean``: EchoDFKD's mIoU, the IoU
  of the binarised mask against the human tracing, averaged over the traced frames);
- ``eval/<m>/area_curves.png``: area curves with reference and estimated ED/ES frames.

Areas come from :func:`echoseg.core.metrics.areas.mask_areas` on the binarised masks (student: its validation
threshold; teacher: 0.5) and aFD from :func:`echoseg.core.metrics.afd_report.evaluate_afd`, i.e. exactly what
``echoseg eval afd`` computes. The run's ``summary.json`` gathers everything; ``report.md`` and the console show a
table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from echoseg.core.console import console, track
from echoseg.core.data.echonet import read_filelist, read_tracings, reference_frames, tracing_mask
from echoseg.core.io import write_csv, write_text
from echoseg.core.metrics.afd_report import evaluate_afd, plot_area_curves, sample_videos, select_split
from echoseg.core.metrics.areas import AreaSignals, mask_areas

Predictor = Callable[[str, np.ndarray], np.ndarray]


def model_costs(student, teacher, height: int, width: int) -> dict[str, Any]:
    """Parameters and GFLOPs per frame of both models at ``height`` x ``width``, and their ratios."""
    s_par, t_par = student.num_parameters(), teacher.num_parameters()
    s_fl, t_fl = student.gflops(height, width), teacher.gflops(height, width)
    return {"frame_size": [int(height), int(width)],
            "student": {"parameters": int(s_par), "gflops_per_frame": s_fl},
            "teacher": {"parameters": int(t_par), "gflops_per_frame": t_fl},
            "parameter_ratio": t_par / max(s_par, 1), "gflops_ratio": t_fl / s_fl if s_fl > 0 else None}


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def _iou(pred: np.ndarray, truth: np.ndarray) -> float:
    union = int(np.logical_or(pred, truth).sum())
    return 1.0 if union == 0 else int(np.logical_and(pred, truth).sum()) / union


def evaluate_model(predict: Predictor, threshold: float, data: str | Path, filelist: pd.DataFrame,
                   frames_of: Callable[[str], np.ndarray], label: str, progress: bool = True
                   ) -> tuple[pd.DataFrame, dict[str, Any], AreaSignals]:
    """aFD and Dice against tracings of one model over the videos of ``filelist`` (already split-filtered).

    Args:
        predict: ``(FileName, frames) -> (T, H, W)`` probabilities.
        threshold: a pixel is LV when its probability is above this.
        data: the EchoNet folder (its VolumeTracings.csv gives the references and the tracings).
        filelist: rows to evaluate.
        frames_of: ``FileName -> (T, H, W) uint8`` frames.
        label: name used in the progress bar.
    """
    tracings = read_tracings(data)
    refs: dict[str, tuple[int, int]] = {}
    curves: dict[str, np.ndarray] = {}
    dice_rows = []
    names = list(filelist["FileName"])
    for name in track(names, f"evaluating {label}") if progress else names:
        frames = frames_of(name)
        probs = predict(name, frames)
        curves[name] = mask_areas(probs, threshold)
        traced = tracings.get(name, {})
        ref = reference_frames(traced) if traced else None
        if ref is not None:
            refs[name] = (int(ref[0]), int(ref[1]))
        scores, ious = {}, {}
        for frame, rows in traced.items():
            if 0 <= frame < len(probs) and len(rows) >= 3:
                pred, truth = probs[frame] > threshold, tracing_mask(rows, *probs.shape[1:]).astype(bool)
                scores[frame], ious[frame] = _dice(pred, truth), _iou(pred, truth)
        row = {"FileName": name}
        for metric, values in (("Dice", scores), ("IoU", ious)):
            row[f"{metric}_ED"] = values.get(ref[0], np.nan) if ref else np.nan
            row[f"{metric}_ES"] = values.get(ref[1], np.nan) if ref else np.nan
            row[f"{metric}_mean"] = float(np.mean(list(values.values()))) if values else np.nan
        dice_rows.append(row)
    signals = AreaSignals.from_curves(curves)
    table, summary = evaluate_afd(signals, filelist, refs, info={"threshold": threshold})
    overlap = [f"{m}_{p}" for m in ("Dice", "IoU") for p in ("ED", "ES", "mean")]
    table = table.merge(pd.DataFrame(dice_rows, columns=["FileName", *overlap]), on="FileName", how="left")
    for col in overlap:
        vals = table[col].to_numpy(np.float64)
        summary[f"{col.lower()}_tracings"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    summary["videos_with_tracings"] = int(np.isfinite(table["Dice_mean"].to_numpy(np.float64)).sum())
    return table, summary, signals


def evaluate_pair(run, student, student_threshold: float, teacher_labels, data: str | Path, split: str,
                  batch_size: int = 32, progress: bool = True, names: list[str] | None = None) -> dict[str, Any]:
    """Evaluate student and teacher on ``data`` (split ``split``) and write ``eval/<model>/`` into ``run``.

    ``teacher_labels`` is the :class:`~echoseg.core.distill.pseudo.PseudoLabels` cache of the teacher on ``data``
    (its frames are reused for the student). ``names``: only these videos of the split (e.g. without those
    ``--skip-bad`` left out).
    """
    filelist = select_split(read_filelist(data), split)
    if names is not None:
        filelist = filelist[filelist["FileName"].isin(set(names))].reset_index(drop=True)
    out: dict[str, Any] = {"data": str(Path(data).resolve()), "split": split.upper(), "videos": len(filelist)}
    models = {
        "student": (lambda n, f: student.predict(f, batch_size=batch_size), float(student_threshold)),
        "teacher": (lambda n, f: teacher_labels.labels(n, mmap=False).astype(np.float32) / 255.0, 0.5),
    }
    for label, (predict, threshold) in models.items():
        table, summary, signals = evaluate_model(predict, threshold, data, filelist,
                                                 lambda n: teacher_labels.frames(n, mmap=False), label, progress)
        if run.writer:
            write_csv(run.file(f"eval/{label}/per_video.csv"), table)
            if len(table):
                plot_area_curves(run.file(f"eval/{label}/area_curves.png"), table, signals, sample_videos(table))
        out[label] = summary
    return out


# (title, key path into summary.json with "{m}" standing for student/teacher, format)
ROWS = [
    ("parameters", ("costs", "{m}", "parameters"), "{:,}"),
    ("GFLOPs / frame", ("costs", "{m}", "gflops_per_frame"), "{:.3f}"),
    ("threshold", ("thresholds", "{m}"), "{:.2f}"),
    ("val Dice vs teacher", ("validation", "{m}_dice_vs_teacher"), "{:.4f}"),
    ("aFD ED (frames)", ("eval", "{m}", "aFD_ED_frames"), "{:.2f}"),
    ("aFD ES (frames)", ("eval", "{m}", "aFD_ES_frames"), "{:.2f}"),
    ("aFD ED (ms)", ("eval", "{m}", "aFD_ED_ms"), "{:.1f}"),
    ("aFD ES (ms)", ("eval", "{m}", "aFD_ES_ms"), "{:.1f}"),
    ("Dice vs tracings ED", ("eval", "{m}", "dice_ed_tracings"), "{:.4f}"),
    ("Dice vs tracings ES", ("eval", "{m}", "dice_es_tracings"), "{:.4f}"),
    ("Dice vs tracings (all traced)", ("eval", "{m}", "dice_mean_tracings"), "{:.4f}"),
    ("mIoU vs tracings (all traced)", ("eval", "{m}", "iou_mean_tracings"), "{:.4f}"),
]


def _lookup(summary: dict[str, Any], path: tuple[str, ...], model: str) -> Any:
    value: Any = summary
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key.replace("{m}", model))
    return value


def report_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, student, teacher) strings for every metric present in ``summary``."""
    rows = []
    for title, path, fmt in ROWS:
        cells = []
        for m in ("student", "teacher"):
            value = _lookup(summary, path, m)
            ok = isinstance(value, (int, float)) and np.isfinite(value)
            cells.append(fmt.format(value) if ok else "—")
        if any(c != "—" for c in cells):
            rows.append((title, *cells))
    return rows


def write_report(run, summary: dict[str, Any]) -> str:
    """Write ``report.md`` (a markdown table), print a rich table on the console, return the markdown."""

    rows = report_rows(summary)
    lines = ["| metric | student | teacher |", "|---|---:|---:|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    title = f"# Distillation: {summary['student']['name']} from {summary['teacher']['name']}\n\n"
    md = title + "\n".join(lines) + "\n"
    if not run.writer:  # a non-main process of a multi-process launch: the main one writes and prints
        return md
    write_text(run.file("report.md"), md)
    table = Table(title="distillation: student vs teacher")
    for col, justify in (("metric", "left"), ("student", "right"), ("teacher", "right")):
        table.add_column(col, justify=justify)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return md
