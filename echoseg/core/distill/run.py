"""``echoseg distill`` as one plain function: label, train, evaluate and report (see :mod:`echoseg.core.distill`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from echoseg.core.data.echonet import detect_echonet, read_filelist
from echoseg.core.distill.pseudo import build_pseudo_labels, cache_folder
from echoseg.core.distill.report import evaluate_pair, model_costs, write_report
from echoseg.core.distill.train import DistillConfig, VideoSet, train_student
from echoseg.core.env import barrier, process_shard, resolve_device
from echoseg.core.errors import UserError
from echoseg.core.models.artefacts import load_student
from echoseg.core.models.teachers import TeacherSpec, load_teacher
from echoseg.core.prompts.templates import lv_frame_prompt


def select_rows(data: str | Path, split: str | None, option: str, fallback_all: bool = False) -> list[str]:
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


def distill(cfg: DistillConfig, run, progress: bool = True, callbacks=()) -> dict[str, Any]:
    """Label, train, evaluate and report (see the package docstring); returns the summary written.

    Args:
        cfg: a :class:`~echoseg.core.distill.train.DistillConfig`.
        run: the run directory (a resumed run continues training from ``checkpoints/last.*``).
        progress: show progress bars.
        callbacks: called with the metrics row after every epoch.
    """
    cfg.validate()
    spec = TeacherSpec.parse(cfg.teacher)
    spec.check()
    train_names, val_names = select_videos(cfg.data, cfg.val_data)
    eval_names = select_rows(cfg.eval_data, cfg.eval_split, "--eval-data") if cfg.eval_data else []
    teacher = load_teacher(spec, cfg.device, prompt_for=lv_frame_prompt)
    run.log(f"teacher {teacher.name}: {teacher.num_parameters():,} parameters on {teacher.device}")

    shard = process_shard()
    cpu = resolve_device(cfg.device) == "cpu"

    def labels(data: str, names: list[str]):
        # Every process labels its share of the videos, then waits for the others (a no-op in a plain run).
        cache = build_pseudo_labels(teacher, cfg.teacher, data, names, batch_size=cfg.teacher_batch_size,
                                    folder=cache_folder(cfg.teacher, data), progress=progress and shard[0] == 0,
                                    log=run.log, shard=shard)
        barrier(cpu)
        return cache

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
        eval_cache = labels(cfg.eval_data, eval_names)  # every process (the labelling is shared)
        summary["pseudo_labels"]["eval"] = str(eval_cache.folder)
        if run.writer:  # the main process scores alone; nothing below waits for the others
            with torch.no_grad():
                summary["eval"] = evaluate_pair(run, student, threshold, eval_cache, cfg.eval_data,
                                                cfg.eval_split, progress=progress)
    run.write_summary(summary)
    write_report(run, summary)
    return summary
