"""``echoseg eval afd``: ED/ES frame detection from LV area curves (EchoDFKD), scored as aFD against references.

Areas come from mask files (``masks``), an areas CSV (``areas``), or a model run over every frame of every selected
video (``run_dir``: an echoseg segmentation or distillation run; ``teacher``: a teacher spec). The detection and
the aFD table are :mod:`echoseg.core.metrics.afd` and :mod:`echoseg.core.metrics.afd_report`.

``subsample`` K keeps every K-th frame (0, K, 2K, ...), EchoDFKD's aFD-versus-sampling-rate analysis: the area
curves of masks and areas CSVs are subsampled, and a model labels the subsampled video (a temporal student such as
the ConvLSTM sees the lower frame rate). Detected ED/ES frames map back to original frame indices, so aFD stays in
original frames and milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from echoseg.core.data.echonet import read_filelist, read_tracings
from echoseg.core.data.manifest import Problem, report_skipped
from echoseg.core.errors import UserError, require_dir
from echoseg.core.eval.predict import model_areas
from echoseg.core.eval.sources import VideoEvalConfig, load_frame_model, screen, teacher_summary
from echoseg.core.metrics.afd_report import evaluate_afd, select_split, write_afd_report
from echoseg.core.metrics.areas import (
    AreaSignals,
    areas_from_masks,
    list_mask_videos,
    read_areas_csv,
    read_reference_csv,
    references_from_tracings,
    video_key,
)
from echoseg.core.models.teachers import Teacher
from echoseg.core.runs import Run

DEFAULT_THRESHOLD = "default: 127 for integer masks (0..255), 0.5 for float and boolean masks"
MODEL_SOURCES = ("run_dir", "teacher")


@dataclass
class EvalAfdConfig(VideoEvalConfig):
    """Options of `eval afd` (recorded in run.json); exactly one of masks, areas, run_dir, teacher is set."""

    SOURCES: ClassVar[tuple[str, ...]] = ("masks", "areas", "run_dir", "teacher")

    areas: str | None = None
    threshold: float | None = None
    reference: str = "tracings"
    save_masks: bool = False
    subsample: int = 1

    def checks(self) -> list[tuple[bool, str]]:
        """The option combinations and ranges :meth:`validate` checks, then the shared ones."""
        source = self.source
        model_driven = source in MODEL_SOURCES
        return [
            (source != "areas" or self.threshold is None,
             "--threshold applies to --masks, --run and --teacher only (an areas CSV holds areas already)"),
            (model_driven or not self.save_masks, "--save-masks applies to --run and --teacher only"),
            (self.subsample >= 1, f"--subsample must be an integer >= 1 (every K-th frame), got {self.subsample}"),
            (self.subsample == 1 or not self.save_masks,
             "--save-masks needs every frame (--subsample 1): the masks folder must hold each video's NumberOfFrames"),
            (not model_driven or self.threshold is None or 0 < self.threshold < 1,
             f"--threshold must be a probability in (0, 1) with --run/--teacher, got {self.threshold}"),
            *super().checks(),
        ]

    def inputs(self) -> dict[str, Any]:
        """The inputs recorded in run.json."""
        out = super().inputs() | {"areas": self.areas}
        if self.reference != "tracings":
            out["reference"] = self.reference
        return out


@dataclass
class AfdInputs:
    """What an `eval afd` run reads, loaded (and so checked) before the run directory exists."""

    filelist: pd.DataFrame  # the selected rows, less the videos left out by --skip-bad
    references: dict[str, tuple[int, int]]
    reference_source: str
    areas: AreaSignals | None = None  # from an areas CSV, or from the masks folder (read and checked here)
    model: Teacher | None = None  # with run_dir or teacher
    skipped: list[str] = field(default_factory=list)  # video keys left out by --skip-bad
    problems: list[Problem] = field(default_factory=list)  # why


class EveryKth:
    """A frame model that labels every ``k``-th frame of a video only (``predict`` as the wrapped model's)."""

    def __init__(self, model: Teacher, k: int) -> None:
        self.model, self.k = model, int(k)

    def predict(self, frames: Any, batch_size: int = 32) -> Any:
        """LV probabilities of frames 0, k, 2k, ... of ``frames`` ``(T, H, W)``."""
        return self.model.predict(frames[:: self.k], batch_size=batch_size)


def subsample_signals(signals: AreaSignals, k: int) -> AreaSignals:
    """Every ``k``-th point (0, k, 2k, ...) of each area curve."""
    if k == 1:
        return signals
    return AreaSignals.from_curves({name: signals.curve(i)[::k] for i, name in enumerate(signals.names)})


def references(data: str | Path, reference: str) -> tuple[dict[str, tuple[int, int]], str]:
    """The reference (ED, ES) frames per video and a description of where they come from."""
    if reference == "tracings":
        return references_from_tracings(data), "VolumeTracings.csv (larger traced area = ED)"
    return read_reference_csv(reference), str(Path(reference).resolve())


def load_afd_inputs(cfg: EvalAfdConfig) -> AfdInputs:
    """Read the file list, the references and the areas CSV or the mask files, load the model, and check every
    video (or mask file) the run will use as `data check` does: it decodes to its FileList.csv NumberOfFrames
    (within 1) and size, and holds its traced frames.

    Raises:
        UserError: a missing or unreadable input, naming its option; a masks folder without a mask file for the
            selected videos; a damaged video or mask file, naming it (unless ``cfg.skip_bad``: then it is left out
            and listed).
    """
    source = cfg.source
    require_dir(cfg.data, "--data")
    filelist = select_split(read_filelist(cfg.data), cfg.split)
    refs, ref_source = references(cfg.data, cfg.reference)
    areas = None
    if source == "areas":
        areas = read_areas_csv(cfg.areas)
    elif source == "masks":
        require_dir(cfg.masks, "--masks")
        found = set(list_mask_videos(cfg.masks))
        if not found:
            raise UserError(f"--masks {cfg.masks}: no mask file (<FileName>.npz, .npy or .avi) in the folder")
        if len(filelist) and not found & {video_key(n) for n in filelist["FileName"]}:
            raise UserError(f"--masks {cfg.masks}: none of the {len(filelist)} {cfg.split.upper()} video(s) of "
                            "FileList.csv has a mask file there (use --split, or another folder)")
    model = load_frame_model(cfg)
    problems: list[Problem] = []
    skipped: list[str] = []
    if source == "masks":
        keys = [video_key(n) for n in filelist["FileName"]]
        areas, _ = areas_from_masks(cfg.masks, keys, cfg.threshold,
                                    frames=dict(zip(keys, filelist["NumberOfFrames"], strict=True)),
                                    problems=problems if cfg.skip_bad else None)
        skipped = sorted({video_key(Path(p.path).stem) for p in problems})
    elif source != "areas":
        tracings = read_tracings(cfg.data) if cfg.reference == "tracings" else None
        usable, problems = screen(cfg, filelist, tracings=tracings)
        skipped = sorted(set(filelist["FileName"].map(video_key)) - {video_key(n) for n in usable})
    if skipped:
        filelist = filelist[~filelist["FileName"].map(video_key).isin(skipped)].reset_index(drop=True)
    return AfdInputs(filelist, refs, ref_source, areas, model, skipped, problems)


def run_afd(cfg: EvalAfdConfig, run: Run, inputs: AfdInputs | None = None) -> dict[str, Any]:
    """Evaluate ED/ES detection into ``run``: per_video.csv, summary.json, area_curves.png (masks/ with
    ``save_masks``).

    Args:
        inputs: from :func:`load_afd_inputs` (loaded here when None; the CLI loads them before opening the run,
            so that bad input leaves no run directory).
    Returns:
        The summary.
    """
    if inputs is None:
        cfg.validate()
        inputs = load_afd_inputs(cfg)
    source, filelist = cfg.source, inputs.filelist
    signals, available, k = inputs.areas, None, cfg.subsample
    info: dict[str, Any] = {"split": cfg.split.upper(), "reference": inputs.reference_source, "subsample": k}
    if cfg.skip_bad:
        info.update(report_skipped(run, inputs.problems, len(inputs.skipped)))
    if source == "masks":  # the areas were read (and the mask files checked) with the inputs
        available = [v for v in list_mask_videos(cfg.masks) if v not in set(inputs.skipped)]
        info["masks_dir"] = str(Path(cfg.masks).resolve())
        info["threshold"] = cfg.threshold if cfg.threshold is not None else DEFAULT_THRESHOLD
    elif source == "areas":
        info["areas_csv"] = str(Path(cfg.areas).resolve())
    else:
        model = inputs.model
        thr = model.threshold if cfg.threshold is None else cfg.threshold
        run.log(f"labelling {len(filelist)} video(s) with {model.name} on {model.device}")
        signals, _ = model_areas(EveryKth(model, k) if k > 1 else model, cfg.data, list(filelist["FileName"]),
                                 threshold=thr, batch_size=cfg.batch_size,
                                 save_dir=run.file("masks") if cfg.save_masks else None)
        info.update(teacher=teacher_summary(model, filelist), threshold=thr,
                    areas_from="pixels with LV probability > threshold, every frame" if k == 1
                    else f"pixels with LV probability > threshold, every {k}-th frame (the model sees those only)")
        if cfg.save_masks:
            info["masks_dir"] = str(run.file("masks").resolve())
    if source in ("masks", "areas"):
        signals = subsample_signals(signals, k)
    table, summary = evaluate_afd(signals, filelist, inputs.references, available=available, info=info, stride=k)
    write_afd_report(run, table, summary, signals, stride=k)
    every = f" (every {k}-th frame)" if k > 1 else ""
    run.log(f"aFD over {summary['videos_evaluated']} video(s){every}: ED {summary['aFD_ED_frames']:.2f} frames "
            f"({summary['aFD_ED_ms']:.1f} ms), ES {summary['aFD_ES_frames']:.2f} frames "
            f"({summary['aFD_ES_ms']:.1f} ms); {summary['videos_without_reference']} without reference, "
            f"{summary['videos_without_areas']} without areas")
    return summary
