"""``echoseg eval ef``: ejection fraction from LV masks at the ED and ES frames, against FileList.csv's EF.

Per video: the LV masks of every frame (mask files, or a model labelling every frame: :mod:`.sources`) give an
area curve; the ED and ES frames are detected on it as `eval afd` does (``phase_source="detected"``: the run of
large/small-area frames nearest the traced frame, or the global extreme without tracings) or taken from
VolumeTracings.csv (``"tracings"``: larger traced area = ED). The masks at those two frames give EDV and ESV by
the single-plane method of disks (20 disks) or area-length (:mod:`echoseg.core.metrics.volumes`), in mL when
FileList.csv gives the pixel size (PhysicalDeltaY/X, cm; DICOM imports and the toy data sets write it), else in
cubic pixels; EF = 100 (EDV - ESV) / EDV needs no calibration.

Artefacts: ``per_video.csv``, ``summary.json`` (MAE, RMSE, R^2, Bland-Altman bias and limits of agreement of EF
against FileList.csv's EF), ``bland_altman.png`` and ``scatter.png`` (when some video has a reference EF). Videos
without a reference EF (DICOM imports) are scored alone and counted; none is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoseg.core.data.echonet import SPACING_COLUMNS, pixel_spacing_cm, read_filelist, read_tracings
from echoseg.core.data.manifest import Problem, report_skipped
from echoseg.core.errors import UserError, require_dir
from echoseg.core.eval.predict import iter_video_probabilities
from echoseg.core.eval.sources import VideoEvalConfig, load_frame_model, screen, teacher_summary
from echoseg.core.io import save_figure, write_csv
from echoseg.core.metrics.afd import NO_REFERENCE, detect
from echoseg.core.metrics.afd_report import select_split
from echoseg.core.metrics.areas import (
    AreaSignals,
    areas_from_masks,
    binarise,
    find_mask_file,
    list_mask_videos,
    load_mask_video,
    references_from_tracings,
    video_key,
)
from echoseg.core.metrics.volumes import N_DISKS, VOLUME_METHODS, ejection_fraction, lv_volume
from echoseg.core.models.teachers import Teacher
from echoseg.core.runs import Run

PHASE_SOURCES = ("detected", "tracings")
MODEL_SOURCES = ("run_dir", "teacher")
TABLE_COLUMNS = ["FileName", "Split", "Frames", "ED_frame", "ES_frame", "ED_traced", "ES_traced", "Unit",
                 "EDV", "ESV", "EF", "EF_ref", "EDV_ref", "ESV_ref", "EF_error"]
DEFAULT_THRESHOLD = "default: 127 for integer masks of 0..255, 0.5 for 0/1 integer, float and boolean masks"
R2_DEFINITION = "1 - SS_res / SS_tot: the share of the reference EF's variance the estimate explains (r2_score)"


@dataclass
class EvalEfConfig(VideoEvalConfig):
    """Options of `eval ef` (recorded in run.json); exactly one of masks, run_dir, teacher is set."""

    volume: str = "disks"
    phase_source: str = "detected"
    threshold: float | None = None
    save_masks: bool = False

    def checks(self) -> list[tuple[bool, str]]:
        """The option values and combinations :meth:`validate` checks, then the shared ones."""
        model_driven = self.source in MODEL_SOURCES
        return [
            (self.volume in VOLUME_METHODS, f"--volume must be one of {', '.join(VOLUME_METHODS)}, got "
             f"{self.volume!r}"),
            (self.phase_source in PHASE_SOURCES, f"--phase-source must be one of {', '.join(PHASE_SOURCES)}, got "
             f"{self.phase_source!r}"),
            (model_driven or not self.save_masks, "--save-masks applies to --run and --teacher only"),
            (not model_driven or self.threshold is None or 0 < self.threshold < 1,
             f"--threshold must be a probability in (0, 1) with --run/--teacher, got {self.threshold}"),
            *super().checks(),
        ]


@dataclass
class EfInputs:
    """What an `eval ef` run reads, loaded (and so checked) before the run directory exists."""

    filelist: pd.DataFrame  # the selected rows, less the videos left out by --skip-bad
    traced: dict[str, tuple[int, int]]  # VolumeTracings.csv's (ED, ES) frames per video key
    spacing: dict[str, tuple[float, float] | None]  # (dy, dx) cm per pixel of the video frames, per video key
    areas: AreaSignals | None = None  # with masks: the area curves (the mask files were read and checked)
    model: Teacher | None = None  # with run_dir or teacher
    skipped: list[str] = field(default_factory=list)  # video keys left out by --skip-bad
    problems: list[Problem] = field(default_factory=list)  # why


def _spacings(filelist: pd.DataFrame, data: str | Path) -> dict[str, tuple[float, float] | None]:
    """Per video key, FileList.csv's pixel size in cm (None when not given); UserError on a bad given value."""
    out = {}
    for _, row in filelist.iterrows():
        given = [c for c in SPACING_COLUMNS if c in row and pd.notna(row[c])]
        spacing = pixel_spacing_cm(row)
        if given and spacing is None:
            raise UserError(f"{Path(data) / 'FileList.csv'}: {row['FileName']}: PhysicalDeltaY and PhysicalDeltaX "
                            "must both be positive numbers (cm per pixel) or both empty")
        out[video_key(row["FileName"])] = spacing
    return out


def load_ef_inputs(cfg: EvalEfConfig) -> EfInputs:
    """Read the file list, its pixel sizes and the tracings, read and check the mask files or load the model, and
    check every video a model will label as `data check` does.

    Raises:
        UserError: a missing or unreadable input, naming its option; an empty split; ``--phase-source tracings``
            with no traced video; a masks folder without a mask file for the selected videos; a damaged video or
            mask file, naming it (unless ``cfg.skip_bad``: then it is left out and listed).
    """
    source = cfg.source
    require_dir(cfg.data, "--data")
    filelist = select_split(read_filelist(cfg.data), cfg.split)
    if filelist.empty:
        raise UserError(f"--split {cfg.split}: FileList.csv in {cfg.data} lists no video in that split")
    spacing = _spacings(filelist, cfg.data)
    traced = references_from_tracings(cfg.data)
    keys = [video_key(n) for n in filelist["FileName"]]
    if cfg.phase_source == "tracings" and not set(keys) & set(traced):
        raise UserError(f"--phase-source tracings: VolumeTracings.csv in {cfg.data} traces none of the "
                        f"{len(keys)} selected video(s) (use --phase-source detected)")
    areas, problems, skipped = None, [], []
    if source == "masks":
        require_dir(cfg.masks, "--masks")
        if not set(keys) & set(list_mask_videos(cfg.masks)):
            raise UserError(f"--masks {cfg.masks}: none of the {len(keys)} {cfg.split.upper()} video(s) of "
                            "FileList.csv has a mask file (<FileName>.npz, .npy or .avi) there")
        areas, _ = areas_from_masks(cfg.masks, keys, cfg.threshold,
                                    frames=dict(zip(keys, filelist["NumberOfFrames"], strict=True)),
                                    problems=problems if cfg.skip_bad else None)
        skipped = sorted({video_key(Path(p.path).stem) for p in problems})
    model = load_frame_model(cfg)
    if model is not None:
        usable, problems = screen(cfg, filelist, tracings=read_tracings(cfg.data))
        skipped = sorted(set(keys) - {video_key(n) for n in usable})
    if skipped:
        filelist = filelist[~filelist["FileName"].map(video_key).isin(skipped)].reset_index(drop=True)
    return EfInputs(filelist, traced, spacing, areas, model, skipped, problems)


def phase_frames(areas: np.ndarray, traced: tuple[int, int] | None, phase_source: str) -> tuple[int, int] | None:
    """(ED, ES) frames of one video: detected on its area curve (near the traced frames when there are some, as
    `eval afd`), or the traced frames themselves (None for an untraced video)."""
    if phase_source == "tracings":
        return traced
    ed_ref, es_ref = traced if traced is not None else (NO_REFERENCE, NO_REFERENCE)
    ed, es = detect(np.asarray(areas, np.float64)[None, :], np.array([ed_ref]), np.array([es_ref]))
    return int(ed[0]), int(es[0])


def mask_threshold(masks: np.ndarray, threshold: float | None) -> float | None:
    """The threshold for one video's mask file: ``threshold`` when given; else 0.5 for integer 0/1 label masks
    (such as the toy data sets' ``Masks/``), else None (``binarise``'s default: 127 for other integer masks, 0.5
    for float and boolean ones)."""
    if threshold is not None:
        return threshold
    if np.issubdtype(masks.dtype, np.integer) and masks.size and int(masks.max()) <= 1:
        return 0.5
    return None


def _frame_spacing(spacing: tuple[float, float] | None, row: pd.Series, shape: tuple[int, ...]
                   ) -> tuple[float, float] | None:
    """The video's pixel size rescaled to masks of ``shape`` (T, H, W) drawn at another size than its frames."""
    if spacing is None:
        return None
    height, width = row.get("FrameHeight"), row.get("FrameWidth")
    sy = height / shape[1] if pd.notna(height) and height > 0 else 1.0
    sx = width / shape[2] if pd.notna(width) and width > 0 else 1.0
    return spacing[0] * sy, spacing[1] * sx


class _Scorer:
    """Turns each video's masks into a per_video.csv row, and remembers the videos it could not score."""

    def __init__(self, cfg: EvalEfConfig, inputs: EfInputs):
        self.cfg, self.inputs = cfg, inputs
        self.rows: list[dict[str, Any]] = []
        self.without_phases: list[str] = []
        self.empty: list[str] = []

    def add(self, row: pd.Series, masks: np.ndarray) -> None:
        """Score one video from its boolean (T, H, W) LV masks."""
        key = video_key(row["FileName"])
        traced = self.inputs.traced.get(key)
        frames = phase_frames(masks.reshape(len(masks), -1).sum(axis=1), traced, self.cfg.phase_source)
        if frames is None or not all(0 <= f < len(masks) for f in frames):
            self.without_phases.append(key)
            return
        spacing = _frame_spacing(self.inputs.spacing.get(key), row, masks.shape)
        ed, es = (lv_volume(masks[f], self.cfg.volume, spacing=spacing) for f in frames)
        ef = ejection_fraction(ed.volume, es.volume)
        if not np.isfinite(ef):
            self.empty.append(key)
        ref = {c: float(pd.to_numeric(row.get(c), errors="coerce")) for c in ("EF", "EDV", "ESV")}
        self.rows.append({
            "FileName": key, "Split": row["Split"], "Frames": len(masks), "ED_frame": frames[0],
            "ES_frame": frames[1], "ED_traced": traced[0] if traced else None,
            "ES_traced": traced[1] if traced else None, "Unit": ed.unit, "EDV": ed.volume, "ESV": es.volume,
            "EF": ef, "EF_ref": ref["EF"], "EDV_ref": ref["EDV"], "ESV_ref": ref["ESV"], "EF_error": ef - ref["EF"],
        })

    def table(self) -> pd.DataFrame:
        """The per-video table, sorted by FileName (traced frames as nullable integers)."""
        table = pd.DataFrame(self.rows, columns=TABLE_COLUMNS)
        for col in ("ED_traced", "ES_traced"):
            table[col] = pd.to_numeric(table[col]).astype("Int64")
        return table.sort_values("FileName", kind="stable").reset_index(drop=True)


def agreement(estimate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R^2 (``1 - SS_res / SS_tot``), Pearson r, and the Bland-Altman bias (mean of estimate minus
    reference), SD of the differences (ddof 1) and 95% limits of agreement (bias -/+ 1.96 SD); NaN where
    undefined (R^2 and r need 2 videos and a varying reference, the SD 2 videos)."""
    est, ref = np.asarray(estimate, np.float64), np.asarray(reference, np.float64)
    nan = float("nan")
    if est.size == 0:
        return {k: nan for k in ("MAE", "RMSE", "R2", "pearson_r", "bias", "sd_diff", "loa_lower", "loa_upper")}
    diff = est - ref
    ss_tot = float(np.sum((ref - ref.mean()) ** 2))
    sd = float(diff.std(ddof=1)) if diff.size > 1 else nan
    varying = diff.size > 1 and ss_tot > 0 and float(np.std(est)) > 0
    bias = float(diff.mean())
    return {
        "MAE": float(np.abs(diff).mean()), "RMSE": float(np.sqrt(np.mean(diff**2))),
        "R2": 1.0 - float(np.sum(diff**2)) / ss_tot if diff.size > 1 and ss_tot > 0 else nan,
        "pearson_r": float(np.corrcoef(est, ref)[0, 1]) if varying else nan,
        "bias": bias, "sd_diff": sd, "loa_lower": bias - 1.96 * sd, "loa_upper": bias + 1.96 * sd,
    }


def ef_summary(table: pd.DataFrame, scorer: _Scorer, info: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers: EF agreement over the videos with a reference EF, EDV/ESV errors in mL where both are
    in mL, and every video not scored or not compared, counted and listed."""
    scored = table[np.isfinite(table["EF"].to_numpy(np.float64))]
    compared = scored[np.isfinite(scored["EF_ref"].to_numpy(np.float64))]
    stats = agreement(compared["EF"].to_numpy(), compared["EF_ref"].to_numpy())
    summary: dict[str, Any] = {f"EF_{k}": v for k, v in stats.items()}
    summary.update({"EF_R2_definition": R2_DEFINITION, "EF_limits_of_agreement": "bias -/+ 1.96 SD of differences",
                    "videos_compared": len(compared), "videos_scored": len(scored)})
    in_ml = compared[(compared["Unit"] == "mL")]
    for phase in ("EDV", "ESV"):
        both = in_ml[np.isfinite(in_ml[f"{phase}_ref"].to_numpy(np.float64))]
        err = (both[phase] - both[f"{phase}_ref"]).to_numpy(np.float64)
        summary[f"{phase}_MAE_mL"] = float(np.abs(err).mean()) if err.size else float("nan")
        summary[f"{phase}_bias_mL"] = float(err.mean()) if err.size else float("nan")
    no_ref = scored.loc[~np.isfinite(scored["EF_ref"].to_numpy(np.float64)), "FileName"].tolist()
    units = scored["Unit"].value_counts()
    summary.update({
        "volume_units": {str(k): int(v) for k, v in units.items()},
        "videos_without_reference_ef": len(no_ref), "without_reference_ef": no_ref,
        "videos_without_phase_frames": len(scorer.without_phases), "without_phase_frames": scorer.without_phases,
        "videos_empty_mask": len(scorer.empty), "empty_mask": scorer.empty,
    })
    summary.update(info)
    return summary


def plot_agreement(run: Run, table: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    """Write bland_altman.png and scatter.png for the videos with a reference EF; returns the files written."""
    compared = table[np.isfinite(table["EF"].to_numpy(np.float64)) & np.isfinite(table["EF_ref"].to_numpy(np.float64))]
    if compared.empty:
        return []
    import matplotlib  # deferred: heavy import, loaded only when this path runs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    est, ref = compared["EF"].to_numpy(np.float64), compared["EF_ref"].to_numpy(np.float64)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter((est + ref) / 2, est - ref, s=14, color="tab:blue", alpha=0.8)
    for key, style in (("EF_bias", "-"), ("EF_loa_lower", "--"), ("EF_loa_upper", "--")):
        value = summary[key]
        if np.isfinite(value):  # the limits need 2 videos
            ax.axhline(value, color="tab:red", ls=style, lw=1)
            ax.annotate(f"{value:+.1f}", (1.0, value), xycoords=("axes fraction", "data"), fontsize=7,
                        ha="right", va="bottom", color="tab:red")
    ax.set_xlabel("mean of estimated and reference EF (%)")
    ax.set_ylabel("estimated - reference EF (%)")
    ax.set_title(f"Bland-Altman, n = {len(compared)}", fontsize=9)
    save_figure(run.file("bland_altman.png"), fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    lo, hi = float(min(est.min(), ref.min())) - 5, float(max(est.max(), ref.max())) + 5
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--")
    ax.scatter(ref, est, s=14, color="tab:blue", alpha=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("reference EF (%), FileList.csv")
    ax.set_ylabel("estimated EF (%)")
    ax.set_title(f"n = {len(compared)}, MAE {summary['EF_MAE']:.1f}, R2 {summary['EF_R2']:.3f}", fontsize=9)
    save_figure(run.file("scatter.png"), fig)
    return ["bland_altman.png", "scatter.png"]


def _score_masks(cfg: EvalEfConfig, inputs: EfInputs, scorer: _Scorer) -> tuple[list[str], dict[str, Any]]:
    """Score the videos from the mask files; returns the keys without a mask file and the summary entries."""
    have = set(inputs.areas.names)
    missing = []
    for _, row in inputs.filelist.iterrows():
        key = video_key(row["FileName"])
        if key not in have:
            missing.append(key)
            continue
        masks = load_mask_video(find_mask_file(cfg.masks, key))
        scorer.add(row, binarise(masks, mask_threshold(masks, cfg.threshold)))
    listed = set(inputs.filelist["FileName"].map(video_key)) | set(inputs.skipped)
    others = sorted(k for k in list_mask_videos(cfg.masks) if k not in listed)
    info = {"masks_dir": str(Path(cfg.masks).resolve()),
            "threshold": cfg.threshold if cfg.threshold is not None else DEFAULT_THRESHOLD,
            "mask_files_not_in_split": len(others), "not_in_split": others}
    return missing, info


def _score_model(cfg: EvalEfConfig, run: Run, inputs: EfInputs, scorer: _Scorer) -> tuple[list[str], dict[str, Any]]:
    """Label every frame of every video with the model and score it; returns the keys without a video file."""
    model, filelist = inputs.model, inputs.filelist
    thr = model.threshold if cfg.threshold is None else cfg.threshold
    rows = {video_key(row["FileName"]): row for _, row in filelist.iterrows()}
    run.log(f"labelling {len(filelist)} video(s) with {model.name} on {model.device}")
    missing = []
    save_dir = run.file("masks") if cfg.save_masks else None
    for key, _, probs in iter_video_probabilities(model, cfg.data, list(filelist["FileName"]),
                                                  batch_size=cfg.batch_size, save_dir=save_dir):
        if probs is None:
            missing.append(key)
        else:
            scorer.add(rows[key], probs > thr)
    info = {"teacher": teacher_summary(model, filelist), "threshold": thr,
            "masks_from": "pixels with LV probability > threshold, every frame"}
    if save_dir is not None:
        info["masks_dir"] = str(save_dir.resolve())
    return missing, info


def run_ef(cfg: EvalEfConfig, run: Run, inputs: EfInputs | None = None) -> dict[str, Any]:
    """Estimate EF per video into ``run``: per_video.csv, summary.json, bland_altman.png and scatter.png (masks/
    with ``save_masks``).

    Args:
        inputs: from :func:`load_ef_inputs` (loaded here when None; the CLI loads them before opening the run, so
            that bad input leaves no run directory).
    Returns:
        The summary.
    """
    if inputs is None:
        cfg.validate()
        inputs = load_ef_inputs(cfg)
    scorer = _Scorer(cfg, inputs)
    if cfg.source == "masks":
        missing, info = _score_masks(cfg, inputs, scorer)
    else:
        missing, info = _score_model(cfg, run, inputs, scorer)
    info.update({"split": cfg.split.upper(), "volume_method": cfg.volume, "phase_source": cfg.phase_source,
                 "videos_without_masks": len(missing), "without_masks": missing})
    if cfg.volume == "disks":
        info["disks"] = N_DISKS
    if cfg.skip_bad:
        info.update(report_skipped(run, inputs.problems, len(inputs.skipped)))
    table = scorer.table()
    summary = ef_summary(table, scorer, info)
    write_csv(run.file("per_video.csv"), table)
    summary["figures"] = plot_agreement(run, table, summary)
    run.write_summary(summary)
    run.log(f"EF over {summary['videos_compared']} video(s) with a reference: MAE {summary['EF_MAE']:.2f}, "
            f"RMSE {summary['EF_RMSE']:.2f}, R2 {summary['EF_R2']:.3f}, bias {summary['EF_bias']:+.2f} points; "
            f"{summary['videos_without_reference_ef']} without reference EF, {len(missing)} without masks")
    return summary
