"""Where the LV masks of `eval afd` and `eval echoclip` come from: files, or a model labelling every frame.

A model is an echoseg run (``--run``: a training run, or a distillation run whose student labels) or a teacher spec
(``--teacher deeplabv3:CKPT`` or ``run:TRAIN_RUN``), loaded by :func:`echoseg.core.models.teachers.load_teacher`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pandas as pd

from echoseg.core.config import StageConfig, check_all
from echoseg.core.data.echonet import screen_videos, video_path
from echoseg.core.data.manifest import Problem
from echoseg.core.errors import UserError, require_dir
from echoseg.core.eval.predict import teacher_info
from echoseg.core.models.teachers import AUTO, Teacher, load_teacher
from echoseg.core.prompts.templates import lv_frame_prompt

# Config fields whose option is not ``--<field>``.
OPTION_OF = {"run_dir": "--run"}


def option_of(field: str) -> str:
    """The command-line option of a config field (``run_dir`` -> ``--run``, ``masks`` -> ``--masks``)."""
    return OPTION_OF.get(field, "--" + field.replace("_", "-"))


def pick_source(cfg: Any, fields: tuple[str, ...]) -> str:
    """The one field among ``fields`` that ``cfg`` sets (not None); UserError naming the options otherwise."""
    given = [f for f in fields if getattr(cfg, f) is not None]
    if len(given) != 1:
        listed = " | ".join(option_of(f) for f in fields)
        got = ", ".join(option_of(f) for f in given) or "none"
        raise UserError(f"give exactly one of {listed} (got {got})")
    return given[0]


@dataclass
class VideoEvalConfig(StageConfig):
    """What `eval afd` and `eval echoclip` share: EchoNet-Dynamic videos (``data``), the split, and where the LV
    masks come from (exactly one of ``SOURCES``: a masks folder, ``run_dir`` or ``teacher``), with the labelling
    model's batch size, deeplabv3 input normalisation and device. Every video used is checked as `data check`
    does (:func:`screen`); ``skip_bad`` leaves a damaged one out and lists it instead of stopping."""

    SOURCES: ClassVar[tuple[str, ...]] = ("masks", "run_dir", "teacher")

    data: str = ""
    masks: str | None = None
    run_dir: str | None = None
    teacher: str | None = None
    split: str = "TEST"
    batch_size: int = 32
    mean: list[str] | None = None  # numbers or ["auto"] (see _normalisation)
    std: list[str] | None = None
    device: str = "auto"
    skip_bad: bool = False

    @property
    def source(self) -> str:
        """The field that gives the masks, one of ``SOURCES`` (UserError unless exactly one is set)."""
        return pick_source(self, self.SOURCES)

    def checks(self) -> list[tuple[bool, str]]:
        """The range checks of :meth:`validate`, as ``(ok, message)`` pairs; a subclass puts its own first."""
        return [(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")]

    def validate(self) -> None:
        """Raise UserError on options that do not go together or are out of range, naming the option."""
        _ = self.source
        check_all(self.checks())

    def inputs(self) -> dict[str, Any]:
        """The inputs recorded in run.json."""
        return {"data": self.data, "masks": self.masks, "run": self.run_dir}


def screen(cfg: VideoEvalConfig, filelist: pd.DataFrame, names: list[str] | None = None,
           tracings: dict | None = None) -> tuple[list[str], list[Problem]]:
    """Check the videos a command will read (``names``, default every row of ``filelist``) as `data check` does:
    they decode to their FileList.csv NumberOfFrames and size and hold their traced frames.

    Returns:
        The names of the usable videos (missing files are kept: the command lists them) and, with
        ``cfg.skip_bad``, the problems of the others.

    Raises:
        UserError: without ``cfg.skip_bad``, the first damaged video, named.
    """
    names = list(filelist["FileName"].astype(str)) if names is None else [str(n) for n in names]
    listed = filelist.assign(FileName=filelist["FileName"].astype(str)).drop_duplicates("FileName")
    table = pd.DataFrame({"FileName": names}).merge(listed, on="FileName", how="left")
    table.insert(1, "path", [str(video_path(cfg.data, n)) for n in table["FileName"]])
    usable, problems = screen_videos(table, skip_bad=cfg.skip_bad, tracings=tracings, root=cfg.data)
    return list(usable["FileName"]), problems


def _normalisation(values: Any, option: str) -> str | list[float] | None:
    """``--mean``/``--std`` values: None, ``"auto"``, or numbers (one, or one per channel)."""
    if not values:
        return None
    items = [values] if isinstance(values, (str, int, float)) else list(values)
    if [str(v).strip().lower() for v in items] == [AUTO]:
        return AUTO
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        raise UserError(f"{option} {' '.join(map(str, items))}: expected numbers (once or 3 times) or auto") from None


def load_frame_model(cfg: VideoEvalConfig) -> Teacher | None:
    """Load the model named by ``cfg.run_dir`` (--run) or ``cfg.teacher`` (--teacher), None when neither is set.

    ``cfg`` also gives ``device`` and the deeplabv3 input normalisation ``mean``/``std`` (validated here: they
    apply to a deeplabv3 teacher only).
    """
    mean, std = _normalisation(cfg.mean, "--mean"), _normalisation(cfg.std, "--std")
    if cfg.run_dir is not None:
        if mean is not None or std is not None:
            raise UserError("--mean/--std apply to a deeplabv3 --teacher only (a run uses its model's own)")
        require_dir(cfg.run_dir, "--run")
        return load_teacher(f"run:{cfg.run_dir}", cfg.device, option="--run", prompt_for=lv_frame_prompt)
    if cfg.teacher is not None:
        if not str(cfg.teacher).startswith("deeplabv3:") and (mean is not None or std is not None):
            raise UserError("--mean/--std apply to a deeplabv3 --teacher only (a run uses its model's own)")
        return load_teacher(cfg.teacher, cfg.device, mean=mean, std=std, prompt_for=lv_frame_prompt,
                            data=cfg.data)
    if mean is not None or std is not None:
        raise UserError("--mean/--std apply to a deeplabv3 --teacher only")
    return None


def teacher_summary(teacher: Teacher, filelist) -> dict[str, Any]:
    """The model's details for a summary, with its GFLOPs per frame at the first video's frame size."""
    h = w = None
    if len(filelist):
        fh, fw = filelist["FrameHeight"].iloc[0], filelist["FrameWidth"].iloc[0]
        if fh == fh and fw == fw and fh > 0 and fw > 0:  # not NaN
            h, w = int(fh), int(fw)
    return teacher_info(teacher, h, w)
