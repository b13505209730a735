"""Data-free knowledge distillation (EchoDFKD, Petit et al. 2024): a teacher labels (synthetic) echo videos, a small
causal ConvLSTM student learns from its soft masks.

Stages: :mod:`.pseudo` (the teacher's pseudo-label cache), :mod:`.train` (student training), :mod:`.report`
(costs, agreement, aFD and Dice on real videos). :func:`distill` runs them in order into one run directory; it is
what ``echoseg distill`` calls.

Videos used: the TRAIN rows of ``--data`` train the student; validation uses the VAL rows of ``--val-data`` (all
its rows when it has no VAL split) or, without it, the VAL rows of ``--data``. ``--eval-data`` rows of
``eval_split`` (TEST by default, or ``all``) are evaluated against their tracings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from echoseg.core.errors import UserError

TEACHER_KINDS = ("deeplabv3", "run")


def check_teacher_spec(spec: str) -> None:
    """Raise UserError unless ``spec`` is ``deeplabv3:CKPT`` (an existing file) or ``run:TRAIN_RUN`` (a folder)."""
    kind, sep, target = str(spec).partition(":")
    if not sep or kind not in TEACHER_KINDS or not target:
        raise UserError(f"--teacher {spec!r}: expected deeplabv3:CKPT (an EchoNet-Dynamic DeepLabv3 checkpoint) or "
                        "run:TRAIN_RUN (an echoseg training run)")
    p = Path(target)
    if kind == "deeplabv3" and not p.is_file():
        raise UserError(f"--teacher {spec}: checkpoint file not found: {p}")
    if kind == "run":
        from echoseg.core.train.checkpoint import find_checkpoint

        find_checkpoint(p, "best", "--teacher run:")  # a training run with a readable best checkpoint


def select_rows(data: str | Path, split: str | None, option: str, fallback_all: bool = False) -> list[str]:
    from echoseg.core.data.echonet import detect_echonet, read_filelist

    if not detect_echonet(data):
        raise UserError(f"{option} {data}: not an EchoNet-Dynamic folder (needs FileList.csv and Videos/)")
    fl: pd.DataFrame = read_filelist(data)
    if split is None or split.upper() == "ALL":
        names = list(fl["FileName"])
    else:
        names = list(fl.loc[fl["Split"] == split.upper(), "FileName"])
        if not names and fallback_all:
            names = list(fl["FileName"])
    if not names:
        raise UserError(f"{option} {data}: no video in split {split} (FileList.csv splits: "
                        f"{', '.join(sorted(set(fl['Split']))) or 'none'})")
    return names


def select_videos(data: str | Path, val_data: str | Path | None = None) -> tuple[list[str], list[str]]:
    """FileNames of the training videos (TRAIN of ``data``) and of the validation videos (see the module doc)."""
    train = select_rows(data, "TRAIN", "--data")
    if val_data is None:
        val = select_rows(data, "VAL", "--data (for validation; or give --val-data)")
    else:
        val = select_rows(val_data, "VAL", "--val-data", fallback_all=True)
    return train, val


def distill(cfg, run, progress: bool = True, callbacks=()) -> dict[str, Any]:
    """Label, train, evaluate and report (see the package docstring); returns the summary written.

    Args:
        cfg: a :class:`~echoseg.core.distill.train.DistillConfig`.
        run: the run directory (a resumed run continues training from ``checkpoints/last.*``).
        progress: show progress bars.
        callbacks: called with the metrics row after every epoch.
    """
    import torch

    from echoseg.core.distill.pseudo import build_pseudo_labels, cache_folder
    from echoseg.core.distill.report import evaluate_pair, model_costs, write_report
    from echoseg.core.distill.train import VideoSet, load_student, train_student
    from echoseg.core.env import resolve_device
    from echoseg.core.models.teachers import load_teacher

    cfg.validate()
    check_teacher_spec(cfg.teacher)
    train_names, val_names = select_videos(cfg.data, cfg.val_data)
    eval_names = select_rows(cfg.eval_data, cfg.eval_split, "--eval-data") if cfg.eval_data else []
    teacher = load_teacher(cfg.teacher, cfg.device)
    run.log(f"teacher {teacher.name}: {teacher.num_parameters():,} parameters on {teacher.device}")

    def labels(data: str, names: list[str]):
        return build_pseudo_labels(teacher, cfg.teacher, data, names, batch_size=cfg.teacher_batch_size,
                                   folder=cache_folder(cfg.teacher, data), progress=progress, log=run.log)

    same = cfg.val_data is None or Path(cfg.val_data).resolve() == Path(cfg.data).resolve()
    main_cache = labels(cfg.data, train_names + (val_names if same else []))
    val_cache = main_cache if same else labels(cfg.val_data, val_names)
    train_set, val_set = VideoSet(main_cache, train_names), VideoSet(val_cache, val_names)
    training = train_student(cfg, run, train_set, val_set, callbacks=callbacks, progress=progress)

    student, _ = load_student(run.path, "best")
    student.to(resolve_device(cfg.device))
    threshold = float(student.threshold)
    h, w = (int(v) for v in val_cache.frames(val_names[0]).shape[1:])
    costs = model_costs(student, teacher, h, w)
    summary: dict[str, Any] = {
        "teacher": {"spec": cfg.teacher, "name": teacher.name, "info": getattr(teacher, "info", {})},
        "student": {"name": f"convlstm B{cfg.blocks}L{cfg.layers}" + (" +skips" if cfg.skips else ""),
                    "spec": student.spec(), "checkpoint": str(run.path / "checkpoints" / "best.safetensors")},
        "costs": costs,
        "thresholds": {"student": threshold, "teacher": 0.5},
        "validation": {"student_dice_vs_teacher": training["val_dice_vs_teacher"],
                       "student_bce_vs_teacher": training["best_val_loss"]},
        "training": training,
        "pseudo_labels": {"train": str(main_cache.folder), "val": str(val_cache.folder)},
    }
    if cfg.eval_data:
        eval_cache = labels(cfg.eval_data, eval_names)
        with torch.no_grad():
            summary["eval"] = evaluate_pair(run, student, threshold, eval_cache, cfg.eval_data, cfg.eval_split,
                                            progress=progress)
        summary["pseudo_labels"]["eval"] = str(eval_cache.folder)
    run.write_summary(summary)
    write_report(run, summary)
    return summary
