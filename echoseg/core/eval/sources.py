"""Where the LV masks of `eval afd` and `eval echoclip` come from: files, or a model labelling every frame.

A model is an echoseg run (``--run``: a training run, or a distillation run whose student labels) or a teacher spec
(``--teacher deeplabv3:CKPT`` or ``run:TRAIN_RUN``), loaded by :func:`echoseg.core.models.teachers.load_teacher`.
"""

from __future__ import annotations

from typing import Any

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


def load_frame_model(cfg: Any) -> Teacher | None:
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
                            data=getattr(cfg, "data", None))
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
