"""`echoseg eval ...`: segmentation metrics of a trained run, aFD of ED/ES detection, CLIP mask quality."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from echoseg.cli.options import (
    ConfigOpt,
    DeviceOpt,
    NameOpt,
    OutOpt,
    PrecisionOpt,
    SetOpt,
    emit_run_path,
    open_run,
    resolve,
)
from echoseg.core.runs import run_context

app = typer.Typer(help="Evaluate segmentations: Dice/IoU/HD95 of a trained run, aFD of ED/ES detection, "
                  "CLIP mask quality.",
                  no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option("--data", help="EchoNet-Dynamic folder (FileList.csv, VolumeTracings.csv, "
                                       "Videos/).")]


RunOpt = Annotated[Path | None, typer.Option(
    "--run", help="A segmentation run (echoseg train) or a distillation run (echoseg distill, its student): "
    "labels every frame.")]
TeacherOpt = Annotated[str | None, typer.Option(
    "--teacher", help="deeplabv3:CKPT (EchoNet-Dynamic DeepLabv3 checkpoint) or run:TRAIN_RUN: labels every frame.")]
MeanOpt = Annotated[list[str] | None, typer.Option(
    "--mean", help="deeplabv3 teacher input mean on 0..255 levels: once, or 3 times for R, G, B, or auto (the "
    "--data videos' own per-channel statistics). Default: EchoDFKD's constants, EchoNet-Dynamic's training-set "
    "statistics 32.09 32.59 33.38.")]
StdOpt = Annotated[list[str] | None, typer.Option(
    "--std", help="deeplabv3 teacher input std on 0..255 levels: once, or 3 times for R, G, B, or auto (as "
    "--mean). Default: EchoDFKD's constants, EchoNet-Dynamic's training-set statistics 50.13 50.49 51.35.")]
SaveMasksOpt = Annotated[bool, typer.Option(
    "--save-masks", help="With --run/--teacher: write the LV probabilities as masks/<FileName>.npz (uint8 0..255; "
    "reusable with --masks).")]
ModelBatchOpt = Annotated[int, typer.Option("--batch-size", help="Frames per forward pass.")]
SkipBadOpt = Annotated[bool, typer.Option(
    "--skip-bad", help="Leave out a damaged video or mask file (undecodable, or not FileList.csv's NumberOfFrames "
    "or size) and list it with its reason in problems.csv and summary.json, instead of stopping (exit 2).")]


def _evaluate(ctx: typer.Context, verb: str, config_type: Any, load: Callable[[Any], Any],
              stage: Callable[[Any, Any, Any], Any], *, out: Path | None, name: str | None, config: Path | None,
              sets: list[str] | None) -> None:
    """``eval <verb>``: resolve the options into ``config_type``, validate it, ``load`` its inputs (bad input stops
    here, before any run directory exists), then ``stage(config, run, inputs)`` in a new run."""
    cfg = resolve(ctx, config, sets)
    ec = config_type.from_dict(cfg)
    ec.validate()
    inputs = load(ec)
    run = open_run("eval", verb, cfg, out=out, name=name, inputs=ec.inputs())
    with run_context(run):
        stage(ec, run, inputs)
    emit_run_path(run.path)


@app.command("afd")
def afd(
    ctx: typer.Context,
    data: DataOpt,
    masks: Annotated[Path | None, typer.Option(
        "--masks", help="Folder of per-video LV masks <FileName>.npz/.npy ((T, H, W) arrays, 0..255 or "
        "probabilities) or <FileName>.avi.")] = None,
    areas: Annotated[Path | None, typer.Option(
        "--areas", help="CSV of per-frame LV areas with header FileName,Frame,Area (frames 0..n-1).")] = None,
    run_dir: RunOpt = None,
    teacher: TeacherOpt = None,
    split: Annotated[str, typer.Option(help="TRAIN, VAL, TEST or all (rows of FileList.csv to evaluate).")] = "TEST",
    threshold: Annotated[float | None, typer.Option(
        help="A pixel counts when its value is above this. With --masks: default 127 for integer masks "
        "(uint8, AVI), 0.5 for float (probabilities) and boolean masks; with --run/--teacher: a probability, "
        "default 0.5.")] = None,
    reference: Annotated[str, typer.Option(
        help="'tracings' (ED/ES = larger/smaller traced area in VolumeTracings.csv) or a CSV with header "
        "FileName,ED,ES.")] = "tracings",
    save_masks: SaveMasksOpt = False,
    batch_size: ModelBatchOpt = 32,
    mean: MeanOpt = None,
    std: StdOpt = None,
    skip_bad: SkipBadOpt = False,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """ED/ES frame detection from LV area curves (EchoDFKD), scored as aFD against reference frames.

    Per video: standardise the area curve (ED: negate it), take the runs of frames below its median,

    keep the run nearest the reference frame; its minimum is the estimate.

    aFD = mean |estimate - reference| in frames and in ms (delay / FPS * 1000).

    Videos without a reference (e.g. DICOM imports) get the global minimum, are listed apart and are not in aFD.

    Areas come from --masks, --areas, or a model run over every frame of every selected video: --run (an
    echoseg segmentation run) or --teacher (deeplabv3:CKPT or run:TRAIN_RUN); --save-masks keeps its masks.

    Writes per_video.csv, summary.json and area_curves.png (and masks/ with --save-masks).

    Example: echoseg eval afd --data toy/echonet --masks masks/ --split TEST --out runs/afd

    Example: echoseg eval afd --data EchoNet-Dynamic --teacher deeplabv3:deeplabv3_resnet50_random.pt --save-masks
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.eval.afd import EvalAfdConfig, load_afd_inputs, run_afd

    _evaluate(ctx, "afd", EvalAfdConfig, load_afd_inputs, run_afd, out=out, name=name, config=config, sets=sets)


@app.command("echoclip")
def echoclip(
    ctx: typer.Context,
    data: DataOpt,
    clip_model: Annotated[str, typer.Option(
        "--clip-model", help="open_clip model: hf-hub:org/name (from the local HF cache), a folder with "
        "open_clip_config.json + weights, or ARCH:/path/to/weights.pt.")],
    masks: Annotated[Path | None, typer.Option(
        "--masks", help="Folder of per-video LV masks <FileName>.npz/.npy/.avi (pixels above 127 of 255, "
        "or 0.5 for probabilities).")] = None,
    run_dir: RunOpt = None,
    teacher: TeacherOpt = None,
    split: Annotated[str, typer.Option(
        help="TRAIN, VAL, TEST or all: the FileList.csv rows to label with --run/--teacher, or to score with "
        "--masks (all with --masks: every mask file).")] = "all",
    dilate: Annotated[int, typer.Option(
        help="Pixels to dilate the mask (elliptical kernel) before the LEFT VENTRICLE comparison.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Frames per forward pass.")] = 64,
    mean: MeanOpt = None,
    std: StdOpt = None,
    skip_bad: SkipBadOpt = False,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Annotation-free mask-quality score with an open_clip model such as EchoCLIP (EchoDFKD).

    Frame score: sim(WALL) + sim(NOTHING) of the frame with the mask blacked out, minus sim(LEFT VENTRICLE)

    of the frame with the mask dilated by --dilate px blacked out. Video score: mean over frames (higher: better).

    The published code computed the dilation but never applied it; echoseg applies it (--dilate 0: as published).

    Masks come from --masks or from a model run over every frame of the --split videos: --run (an echoseg
    segmentation run) or --teacher (deeplabv3:CKPT or run:TRAIN_RUN); its masks are kept in masks/.

    Writes per_video.csv and summary.json (mean score).

    Example: echoseg eval echoclip --data toy/echonet --masks masks/ --clip-model hf-hub:mkaichristensen/echo-clip
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.eval.echoclip import EvalEchoclipConfig, load_echoclip_inputs, run_echoclip

    _evaluate(ctx, "echoclip", EvalEchoclipConfig, load_echoclip_inputs, run_echoclip, out=out, name=name,
              config=config, sets=sets)


@app.command("seg")
def seg(
    ctx: typer.Context,
    run: Annotated[Path, typer.Option("--run", help="A training run (echoseg train).")],
    data: Annotated[Path, typer.Option("--data", help="Prompts run (manifest.csv with prompt columns).")],
    split: Annotated[str, typer.Option("--split", help="Split to evaluate: train|val|test.")] = "test",
    prompt: Annotated[str | None, typer.Option(
        "--prompt", help="p0..p7, p1_b..p7_b, random[:pK] (both variants); default: the training prompt.")] = None,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best or last.")] = "best",
    threshold: Annotated[float | None, typer.Option("--threshold", help="Mask threshold (default: the run's).")]
    = None,
    eval_size: Annotated[int | None, typer.Option("--eval-size", help="Side of the scored masks (default 512).")]
    = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Samples per forward pass.")] = None,
    save_masks: Annotated[bool, typer.Option("--save-masks", help="Write predicted masks to masks/*.png.")] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Where preprocessed caches go.")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "no",
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Evaluate a trained run: per_sample.csv, summary.json and predictions.png in a new run directory.

    Example: echoseg eval seg --run runs/train/20240101-000000 --data runs/prompts-build/camus --prompt p4
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.eval.seg import EvalSegConfig, load_seg_split, run_seg

    _evaluate(ctx, "seg", EvalSegConfig, load_seg_split, run_seg, out=out, name=name, config=config, sets=sets)
