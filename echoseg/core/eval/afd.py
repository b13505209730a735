"""``echoseg eval afd``: ED/ES frame detection from LV area curves (EchoDFKD), scored as aFD against references.

Areas come from mask files (``masks``), an areas CSV (``areas``), or a model run over every frame of every selected
video (``run_dir``: an echoseg segmentation or distillation run; ``teacher``: a teacher spec). The detection and
the aFD table are :mod:`echoseg.core.metrics.afd` and :mod:`echoseg.core.metrics.afd_report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from echoseg.core.config import StageConfig, check_all
from echoseg.core.data.echonet import read_filelist
from echoseg.core.errors import require_dir
from echoseg.core.eval.predict import model_areas
from echoseg.core.eval.sources import load_frame_model, pick_source, teacher_summary
from echoseg.core.metrics.afd_report import evaluate_afd, select_split, write_afd_report
from echoseg.core.metrics.areas import (
    AreaSignals,
    areas_from_masks,
    list_mask_videos,
    read_areas_csv,
    read_reference_csv,
    references_from_tracings,
)
from echoseg.core.models.teachers import Teacher
from echoseg.core.runs import Run

DEFAULT_THRESHOLD = "default: 127 for integer masks (0..255), 0.5 for float and boolean masks"
SOURCES = ("masks", "areas", "run_dir", "teacher")
MODEL_SOURCES = ("run_dir", "teacher")


@dataclass
class EvalAfdConfig(StageConfig):
    """Options of `eval afd` (recorded in run.json); exactly one of masks, areas, run_dir, teacher is set."""

    data: str = ""
    masks: str | None = None
    areas: str | None = None
    run_dir: str | None = None
    teacher: str | None = None
    split: str = "TEST"
    threshold: float | None = None
    reference: str = "tracings"
    save_masks: bool = False
    batch_size: int = 32
    mean: list[str] | None = None  # numbers or ["auto"] (see eval.sources)
    std: list[str] | None = None
    device: str = "auto"

    @property
    def source(self) -> str:
        """The field that gives the areas: masks, areas, run_dir or teacher (UserError unless exactly one)."""
        return pick_source(self, SOURCES)

    def validate(self) -> None:
        """Raise UserError on options that do not go together or are out of range, naming the option."""
        source = self.source
        model_driven = source in MODEL_SOURCES
        check_all([
            (source != "areas" or self.threshold is None,
             "--threshold applies to --masks, --run and --teacher only (an areas CSV holds areas already)"),
            (model_driven or not self.save_masks, "--save-masks applies to --run and --teacher only"),
            (not model_driven or self.threshold is None or 0 < self.threshold < 1,
             f"--threshold must be a probability in (0, 1) with --run/--teacher, got {self.threshold}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
        ])

    def inputs(self) -> dict[str, Any]:
        """The inputs recorded in run.json."""
        out = {"data": self.data, "areas": self.areas, "masks": self.masks, "run": self.run_dir}
        if self.reference != "tracings":
            out["reference"] = self.reference
        return out


@dataclass
class AfdInputs:
    """What an `eval afd` run reads, loaded (and so checked) before the run directory exists."""

    filelist: pd.DataFrame
    references: dict[str, tuple[int, int]]
    reference_source: str
    areas: AreaSignals | None = None  # from an areas CSV
    model: Teacher | None = None  # with run_dir or teacher


def references(data: str | Path, reference: str) -> tuple[dict[str, tuple[int, int]], str]:
    """The reference (ED, ES) frames per video and a description of where they come from."""
    if reference == "tracings":
        return references_from_tracings(data), "VolumeTracings.csv (larger traced area = ED)"
    return read_reference_csv(reference), str(Path(reference).resolve())


def load_afd_inputs(cfg: EvalAfdConfig) -> AfdInputs:
    """Read the file list, the references and the areas CSV, check the masks folder and load the model.

    Raises:
        UserError: a missing or unreadable input, naming its option.
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
    model = load_frame_model(cfg)
    return AfdInputs(filelist, refs, ref_source, areas, model)


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
    signals, available = inputs.areas, None
    info: dict[str, Any] = {"split": cfg.split.upper(), "reference": inputs.reference_source}
    if source == "masks":
        signals, _ = areas_from_masks(cfg.masks, list(filelist["FileName"]), cfg.threshold)
        available = list_mask_videos(cfg.masks)
        info["masks_dir"] = str(Path(cfg.masks).resolve())
        info["threshold"] = cfg.threshold if cfg.threshold is not None else DEFAULT_THRESHOLD
    elif source == "areas":
        info["areas_csv"] = str(Path(cfg.areas).resolve())
    else:
        model = inputs.model
        thr = model.threshold if cfg.threshold is None else cfg.threshold
        run.log(f"labelling {len(filelist)} video(s) with {model.name} on {model.device}")
        signals, _ = model_areas(model, cfg.data, list(filelist["FileName"]), threshold=thr,
                                 batch_size=cfg.batch_size, save_dir=run.file("masks") if cfg.save_masks else None)
        info.update(teacher=teacher_summary(model, filelist), threshold=thr,
                    areas_from="pixels with LV probability > threshold, every frame")
        if cfg.save_masks:
            info["masks_dir"] = str(run.file("masks").resolve())
    table, summary = evaluate_afd(signals, filelist, inputs.references, available=available, info=info)
    write_afd_report(run, table, summary, signals)
    run.log(f"aFD over {summary['videos_evaluated']} video(s): ED {summary['aFD_ED_frames']:.2f} frames "
            f"({summary['aFD_ED_ms']:.1f} ms), ES {summary['aFD_ES_frames']:.2f} frames "
            f"({summary['aFD_ES_ms']:.1f} ms); {summary['videos_without_reference']} without reference, "
            f"{summary['videos_without_areas']} without areas")
    return summary
