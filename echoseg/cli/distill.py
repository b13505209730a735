"""`echoseg distill`: data-free knowledge distillation of an LV teacher into a causal ConvLSTM student (EchoDFKD)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import (
    ConfigOpt,
    DeviceOpt,
    NameOpt,
    OutOpt,
    PrecisionOpt,
    ReportToOpt,
    ResumeOpt,
    SeedOpt,
    SetOpt,
    emit_run_path,
    open_run,
    resolve,
    resumed,
)
from echoseg.core.distill.run import distill as run_distill
from echoseg.core.distill.run import distill_inputs
from echoseg.core.distill.train import DistillConfig
from echoseg.core.errors import UserError
from echoseg.core.metrics.afd_report import SPLITS
from echoseg.core.models.teachers import TeacherSpec
from echoseg.core.runs import run_context

_EPILOG = """Chain (bash):

  SYN=$(echoseg data toy echonet --videos 40)

  KD=$(echoseg distill --teacher deeplabv3:deeplabv3_resnet50_random.pt --data $SYN --eval-data $ECHONET --half-res)
"""
# Options a resumed run may change, in the order its error message lists them.
RESUMABLE = ("epochs", "device", "report_to")


def distill(
    ctx: typer.Context,
    teacher: Annotated[str | None, typer.Option(
        "--teacher", help="deeplabv3:CKPT (EchoNet-Dynamic DeepLabv3 checkpoint) or run:TRAIN_RUN (an echoseg "
        "training run).")] = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="EchoNet-layout folder of (synthetic) videos: TRAIN rows train, VAL rows validate.")] = None,
    val_data: Annotated[Path | None, typer.Option(
        "--val-data", help="Another EchoNet-layout folder for validation (its VAL rows, or all without a VAL "
        "split).")] = None,
    eval_data: Annotated[Path | None, typer.Option(
        "--eval-data", help="Real EchoNet-Dynamic videos with VolumeTracings.csv: aFD and Dice vs tracings of "
        "student and teacher.")] = None,
    eval_split: Annotated[str, typer.Option(
        "--eval-split", help="Rows of --eval-data to evaluate: TRAIN, VAL, TEST or all.")] = "TEST",
    blocks: Annotated[int, typer.Option("--blocks", help="Encoder blocks (1..4); block i has 12*2^i filters.")] = 4,
    layers: Annotated[int, typer.Option("--layers", help="ConvLSTM layers per block (1..4).")] = 1,
    skips: Annotated[bool, typer.Option(
        "--skips/--no-skips", help="U-Net skip connections (not in the published student).")] = False,
    warmup: Annotated[int | None, typer.Option(
        "--warmup", help="Frames played backwards to warm the ConvLSTM state before each video at validation and "
        "inference (default: the model config's, 16; 0: strictly causal cold start). Frame t then depends on frames "
        "0..max(t, warmup).")] = None,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Frames of the random window per video and step.")] = 25,
    half_res: Annotated[bool, typer.Option(
        "--half-res/--full-res", help="Train at half resolution (inference stays at full resolution).")] = False,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum epochs (early stopping may end sooner).")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Videos per step.")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 1e-3,
    patience: Annotated[int, typer.Option(
        "--patience", help="Stop after this many epochs without a lower validation loss.")] = 10,
    teacher_batch_size: Annotated[int, typer.Option(
        "--teacher-batch-size", help="Frames per teacher forward pass while pseudo-labelling.")] = 32,
    skip_bad: Annotated[bool, typer.Option(
        "--skip-bad", help="Leave out a damaged video (undecodable, or not FileList.csv's NumberOfFrames or size; "
        "--eval-data: also traced frames outside it) and list it in problems.csv and summary.json, instead of "
        "stopping (exit 2).")] = False,
    precision: PrecisionOpt = "no",
    report_to: ReportToOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    resume: ResumeOpt = None,
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Distil a teacher into a small causal ConvLSTM student from pseudo-labels on (synthetic) videos.

    The teacher labels every frame once (cached as uint8 in $ECHOSEG_CACHE/pseudo/<key>/, reused by later runs
    with the same teacher); the student learns them with BCE on random windows, early stopping on validation loss,
    and a binarisation threshold picked on validation.

    Writes checkpoints/ (best.*, last.*, model.json), metrics.jsonl, summary.json, report.md and, with --eval-data,
    eval/student/ and eval/teacher/ (per_video.csv, area_curves.png). Continue a stopped run with --resume RUN.

    Example: echoseg distill --teacher run:runs/train/unet --data toy/echonet --blocks 2 --epochs 5
    """
    if resume is not None:
        cfg = resumed(ctx, resume, "distill", RESUMABLE, requires=("teacher", str, "distillation"))
    else:
        cfg = resolve(ctx, config, sets)
        for key in ("data", "val_data", "eval_data"):
            cfg[key] = str(cfg[key]) if cfg[key] is not None else None
    if not cfg.get("teacher"):
        raise UserError("--teacher is required (deeplabv3:CKPT or run:TRAIN_RUN)")
    if not cfg.get("data"):
        raise UserError("--data is required (an EchoNet-layout folder of videos)")
    if str(cfg["eval_split"]).upper() not in SPLITS:
        raise UserError(f"--eval-split must be TRAIN, VAL, TEST or all, got {cfg['eval_split']!r}")
    dc = DistillConfig.from_dict(cfg)
    dc.validate()
    TeacherSpec.parse(dc.teacher).check()
    videos = distill_inputs(dc)  # selected and checked as `data check` does, before the run exists
    inputs = {"data": dc.data, "val_data": dc.val_data, "eval_data": dc.eval_data,
              "teacher": dc.teacher.partition(":")[2]}
    run = open_run("distill", None, cfg, out=out, name=name, resume=resume, inputs=inputs)
    with run_context(run):
        run_distill(dc, run, inputs=videos)
    emit_run_path(run.path)


def register(app: typer.Typer) -> None:
    """Add the `echoseg distill` command to the root app."""
    app.command("distill", epilog=_EPILOG)(distill)
