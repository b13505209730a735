"""`echoseg eval ...`: segmentation metrics of a trained run, aFD of ED/ES detection, CLIP mask quality."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import ConfigOpt, DeviceOpt, NameOpt, OutOpt, SetOpt, emit_run_path, open_run, resolve
from echoseg.core.errors import UserError, require_dir
from echoseg.core.runs import run_context

app = typer.Typer(help="Evaluate segmentations: Dice/IoU/HD95 of a trained run, aFD of ED/ES detection, "
                  "CLIP mask quality.",
                  no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option("--data", help="EchoNet-Dynamic folder (FileList.csv, VolumeTracings.csv, "
                                       "Videos/).")]


DEFAULT_THRESHOLD = "default: 127 for integer masks (0..255), 0.5 for float and boolean masks"

RunOpt = Annotated[Path | None, typer.Option(
    "--run", help="A segmentation run (echoseg train) or a distillation run (echoseg distill, its student): "
    "labels every frame.")]
TeacherOpt = Annotated[str | None, typer.Option(
    "--teacher", help="deeplabv3:CKPT (EchoNet-Dynamic DeepLabv3 checkpoint) or run:TRAIN_RUN: labels every frame.")]
MeanOpt = Annotated[list[float] | None, typer.Option(
    "--mean", help="deeplabv3 teacher input mean on 0..255 levels: once, or 3 times for R, G, B (default: "
    "EchoNet-Dynamic's 32.09 32.59 33.38).")]
StdOpt = Annotated[list[float] | None, typer.Option(
    "--std", help="deeplabv3 teacher input std on 0..255 levels: once, or 3 times for R, G, B (default: "
    "EchoNet-Dynamic's 50.13 50.49 51.35).")]
SaveMasksOpt = Annotated[bool, typer.Option(
    "--save-masks", help="With --run/--teacher: write the LV probabilities as masks/<FileName>.npz (uint8 0..255; "
    "reusable with --masks).")]
ModelBatchOpt = Annotated[int, typer.Option("--batch-size", help="Frames per forward pass.")]


def _sources(cfg: dict, names: tuple[str, ...]) -> str:
    """The one input among ``names`` (config keys) that is given; UserError naming the options otherwise."""
    opt = {"run_dir": "--run"}
    given = [n for n in names if cfg.get(n) is not None]
    if len(given) != 1:
        listed = " | ".join(opt.get(n, f"--{n}") for n in names)
        got = ", ".join(opt.get(n, f"--{n}") for n in given) or "none"
        raise UserError(f"give exactly one of {listed} (got {got})")
    return given[0]


def _load_model_teacher(cfg: dict):
    """Load the teacher named by --run or --teacher (None when neither is given); validates --mean/--std."""
    from echoseg.core.models.teachers import load_teacher
    from echoseg.core.prompts.templates import lv_frame_prompt

    mean, std = cfg.get("mean") or None, cfg.get("std") or None
    if cfg.get("run_dir") is not None:
        if mean is not None or std is not None:
            raise UserError("--mean/--std apply to a deeplabv3 --teacher only (a run uses its model's own)")
        require_dir(cfg["run_dir"], "--run")
        return load_teacher(f"run:{cfg['run_dir']}", cfg["device"], option="--run", prompt_for=lv_frame_prompt)
    if cfg.get("teacher") is not None:
        if not str(cfg["teacher"]).startswith("deeplabv3:") and (mean is not None or std is not None):
            raise UserError("--mean/--std apply to a deeplabv3 --teacher only (a run uses its model's own)")
        return load_teacher(cfg["teacher"], cfg["device"], mean=mean, std=std, prompt_for=lv_frame_prompt)
    if mean is not None or std is not None:
        raise UserError("--mean/--std apply to a deeplabv3 --teacher only")
    return None


def _teacher_summary(teacher, filelist) -> dict:
    from echoseg.core.eval.predict import teacher_info

    h = w = None
    if len(filelist):
        fh, fw = filelist["FrameHeight"].iloc[0], filelist["FrameWidth"].iloc[0]
        if fh == fh and fw == fw and fh > 0 and fw > 0:  # not NaN
            h, w = int(fh), int(fw)
    return teacher_info(teacher, h, w)


def _references(data: Path, reference: str) -> tuple[dict[str, tuple[int, int]], str]:
    from echoseg.core.metrics.areas import read_reference_csv, references_from_tracings

    if reference == "tracings":
        return references_from_tracings(data), "VolumeTracings.csv (larger traced area = ED)"
    return read_reference_csv(reference), str(Path(reference).resolve())


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
    from echoseg.core.data.echonet import read_filelist
    from echoseg.core.metrics.afd_report import evaluate_afd, select_split, write_afd_report
    from echoseg.core.metrics.areas import areas_from_masks, list_mask_videos, read_areas_csv

    cfg = resolve(ctx, config, sets)
    source = _sources(cfg, ("masks", "areas", "run_dir", "teacher"))
    if source == "areas" and cfg["threshold"] is not None:
        raise UserError("--threshold applies to --masks, --run and --teacher only (an areas CSV holds areas already)")
    model_driven = source in ("run_dir", "teacher")
    if cfg["save_masks"] and not model_driven:
        raise UserError("--save-masks applies to --run and --teacher only")
    if model_driven and cfg["threshold"] is not None and not 0 < cfg["threshold"] < 1:
        raise UserError(f"--threshold must be a probability in (0, 1) with --run/--teacher, got {cfg['threshold']}")
    if cfg["batch_size"] < 1:
        raise UserError(f"--batch-size must be >= 1, got {cfg['batch_size']}")
    require_dir(cfg["data"], "--data")
    filelist = select_split(read_filelist(cfg["data"]), cfg["split"])
    refs, ref_source = _references(Path(cfg["data"]), cfg["reference"])
    signals = None
    if source == "areas":
        signals = read_areas_csv(cfg["areas"])
    elif source == "masks":
        require_dir(cfg["masks"], "--masks")
    model = _load_model_teacher(cfg)
    inputs = {"data": cfg["data"], "areas": cfg["areas"], "masks": cfg["masks"], "run": cfg["run_dir"]}
    if cfg["reference"] != "tracings":
        inputs["reference"] = cfg["reference"]
    run = open_run("eval", "afd", cfg, out=out, name=name, inputs=inputs)
    with run_context(run):
        available = None
        info = {"split": cfg["split"].upper(), "reference": ref_source}
        if source == "masks":
            signals, _ = areas_from_masks(cfg["masks"], list(filelist["FileName"]), cfg["threshold"])
            available = list_mask_videos(cfg["masks"])
        elif model_driven:
            from echoseg.core.eval.predict import model_areas

            thr = model.threshold if cfg["threshold"] is None else cfg["threshold"]
            run.log(f"labelling {len(filelist)} video(s) with {model.name} on {model.device}")
            signals, _ = model_areas(model, cfg["data"], list(filelist["FileName"]), threshold=thr,
                                     batch_size=cfg["batch_size"],
                                     save_dir=run.file("masks") if cfg["save_masks"] else None)
            info.update(teacher=_teacher_summary(model, filelist), threshold=thr,
                        areas_from="pixels with LV probability > threshold, every frame")
            if cfg["save_masks"]:
                info["masks_dir"] = str(run.file("masks").resolve())
        if source == "areas":
            info["areas_csv"] = str(Path(cfg["areas"]).resolve())
        elif source == "masks":
            info["masks_dir"] = str(Path(cfg["masks"]).resolve())
            info["threshold"] = cfg["threshold"] if cfg["threshold"] is not None else DEFAULT_THRESHOLD
        table, summary = evaluate_afd(signals, filelist, refs, available=available, info=info)
        write_afd_report(run, table, summary, signals)
        run.log(f"aFD over {summary['videos_evaluated']} video(s): ED {summary['aFD_ED_frames']:.2f} frames "
                f"({summary['aFD_ED_ms']:.1f} ms), ES {summary['aFD_ES_frames']:.2f} frames "
                f"({summary['aFD_ES_ms']:.1f} ms); {summary['videos_without_reference']} without reference, "
                f"{summary['videos_without_areas']} without areas")
    emit_run_path(run.path)


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
    from echoseg.core.eval.echoclip import score_videos
    from echoseg.core.models.openclip import load_clip_model
    from echoseg.core.io import write_csv

    cfg = resolve(ctx, config, sets)
    source = _sources(cfg, ("masks", "run_dir", "teacher"))
    require_dir(cfg["data"], "--data")
    require_dir(Path(cfg["data"]) / "Videos", "--data Videos folder")
    if source == "masks":
        require_dir(cfg["masks"], "--masks")
    if cfg["dilate"] < 0:
        raise UserError(f"--dilate must be >= 0, got {cfg['dilate']}")
    if cfg["batch_size"] < 1:
        raise UserError(f"--batch-size must be >= 1, got {cfg['batch_size']}")
    names = None
    filelist = None
    if source != "masks" or cfg["split"].upper() != "ALL":
        from echoseg.core.data.echonet import read_filelist
        from echoseg.core.metrics.afd_report import select_split

        filelist = select_split(read_filelist(cfg["data"]), cfg["split"])
        names = list(filelist["FileName"])
    model = _load_model_teacher(cfg)
    clip = load_clip_model(cfg["clip_model"], cfg["device"])
    run = open_run("eval", "echoclip", cfg, out=out, name=name,
                   inputs={"data": cfg["data"], "masks": cfg["masks"], "run": cfg["run_dir"]})
    with run_context(run):
        masks_dir = cfg["masks"]
        extra = {}
        if model is not None:
            from echoseg.core.eval.predict import iter_video_probabilities

            masks_dir = run.file("masks")
            run.log(f"labelling {len(names)} video(s) with {model.name} on {model.device}")
            for _ in iter_video_probabilities(model, cfg["data"], names, batch_size=cfg["batch_size"],
                                              save_dir=masks_dir):
                pass
            extra = {"teacher": _teacher_summary(model, filelist), "masks_dir": str(masks_dir.resolve()),
                     "masks": "LV probabilities as uint8 round(255 p); scored pixels: above 127 (p >= 0.5)"}
        table, summary = score_videos(clip, cfg["data"], masks_dir, names=names, dilate=cfg["dilate"],
                                      batch_size=cfg["batch_size"])
        summary.update(extra)
        write_csv(run.file("per_video.csv"), table)
        run.write_summary(summary)
        run.log(f"CLIP mask score over {summary['videos_scored']} video(s): mean {summary['score_mean']:.4f}; "
                f"{summary['videos_without_video']} without video")
    emit_run_path(run.path)


def _register_seg() -> None:
    from echoseg.cli.eval_seg import seg

    app.command("seg")(seg)


_register_seg()
