"""``echoseg distill`` as one plain function: label, train, evaluate and report (see :mod:`echoseg.core.distill`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from echoseg.core.data.echonet import detect_echonet, read_echonet, read_filelist, read_tracings, screen_videos
from echoseg.core.data.manifest import Problem, report_skipped
from echoseg.core.distill.pseudo import PseudoLabels, build_pseudo_labels, cache_folder
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


@dataclass
class DistillInputs:
    """The videos a distillation reads, selected and checked before the run directory exists."""

    train: list[str]
    val: list[str]
    eval: list[str]
    problems: list[Problem] = field(default_factory=list)  # of the videos left out by --skip-bad
    skipped: int = 0  # how many videos were left out


def _screen(cfg: DistillConfig, data: str, names: list[str], eval_names: set[str], progress: bool
            ) -> tuple[set[str], list[Problem]]:
    """(names of the damaged videos among ``names`` of folder ``data``, their problems): every video must decode to
    its FileList.csv NumberOfFrames and size (videos already in the teacher's pseudo-label cache are checked from
    the cached frames, without decoding again), and the evaluation videos must hold their traced frames."""
    table = read_echonet(data)
    table = table[table["FileName"].isin(set(names))]
    cache = PseudoLabels(cache_folder(cfg.teacher, data), data)
    shapes = {n: tuple(cache.frames(n).shape) for n in table["FileName"] if cache.is_done(n)}
    tracings = {n: t for n, t in read_tracings(data).items() if n in eval_names} if eval_names else None
    usable, problems = screen_videos(table, skip_bad=cfg.skip_bad, tracings=tracings, root=data, shapes=shapes,
                                     missing_ok=False, progress=progress)
    return set(table["FileName"]) - set(usable["FileName"]), problems


def distill_inputs(cfg: DistillConfig, progress: bool = True) -> DistillInputs:
    """Select the training (TRAIN of ``data``), validation and evaluation videos and check each as `data check` does.

    Raises:
        UserError: a folder or split without videos; a damaged video, naming it (with ``cfg.skip_bad`` it is left
            out and listed instead, unless no training, validation or evaluation video is left).
    """
    train, val = select_videos(cfg.data, cfg.val_data)
    evaluated = select_rows(cfg.eval_data, cfg.eval_split, "--eval-data") if cfg.eval_data else []
    groups: dict[Path, tuple[str, list[str], set[str]]] = {}  # resolved folder -> (folder, names, eval names)
    for data, names, is_eval in ((cfg.data, train + (val if cfg.val_data is None else []), False),
                                 (cfg.val_data, val, False), (cfg.eval_data, evaluated, True)):
        if data is None:
            continue
        folder, listed, ev = groups.setdefault(Path(data).resolve(), (str(data), [], set()))
        listed.extend(n for n in names if n not in set(listed))
        ev.update(names if is_eval else ())
    bad: dict[Path, set[str]] = {}
    problems: list[Problem] = []
    for key, (data, names, ev) in groups.items():
        bad[key], found = _screen(cfg, data, names, ev, progress)
        problems += found

    def usable(data: str | None, names: list[str], option: str, what: str) -> list[str]:
        left = [n for n in names if n not in bad.get(Path(data).resolve(), set())] if data else names
        if names and not left:
            raise UserError(f"{option} {data}: no usable {what} video left: all {len(names)} are damaged "
                            f"(listed with --skip-bad in problems.csv; see `echoseg data check {data}`)")
        return left

    return DistillInputs(usable(cfg.data, train, "--data", "TRAIN"),
                         usable(cfg.val_data or cfg.data, val, "--val-data" if cfg.val_data else "--data", "VAL"),
                         usable(cfg.eval_data, evaluated, "--eval-data", cfg.eval_split.upper()),
                         problems, sum(len(b) for b in bad.values()))


def distill(cfg: DistillConfig, run, progress: bool = True, callbacks=(), inputs: DistillInputs | None = None
            ) -> dict[str, Any]:
    """Label, train, evaluate and report (see the package docstring); returns the summary written.

    Args:
        cfg: a :class:`~echoseg.core.distill.train.DistillConfig`.
        run: the run directory (a resumed run continues training from ``checkpoints/last.*``).
        progress: show progress bars.
        callbacks: called with the metrics row after every epoch.
        inputs: from :func:`distill_inputs` (selected and checked here when None; the CLI checks them before
            opening the run, so that bad input leaves no run directory).
    """
    cfg.validate()
    spec = TeacherSpec.parse(cfg.teacher)
    spec.check()
    inputs = inputs if inputs is not None else distill_inputs(cfg, progress)
    train_names, val_names, eval_names = inputs.train, inputs.val, inputs.eval
    skipped = report_skipped(run, inputs.problems, inputs.skipped) if cfg.skip_bad else {}
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
    # the evaluation videos are labelled (and so read) before training: a problem there stops the run before it
    eval_cache = labels(cfg.eval_data, eval_names) if cfg.eval_data else None  # every process (shared labelling)
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
    summary.update(skipped)
    if eval_cache is not None:
        summary["pseudo_labels"]["eval"] = str(eval_cache.folder)
        if run.writer:  # the main process scores alone; nothing below waits for the others
            with torch.no_grad():
                summary["eval"] = evaluate_pair(run, student, threshold, eval_cache, cfg.eval_data,
                                                cfg.eval_split, progress=progress, names=eval_names)
    run.write_summary(summary)
    write_report(run, summary)
    return summary
