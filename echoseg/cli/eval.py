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


def _references(data: Path, reference: str) -> tuple[dict[str, tuple[int, int]], str]:
    from echoseg.core.eval.areas import read_reference_csv, references_from_tracings

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
    split: Annotated[str, typer.Option(help="TRAIN, VAL, TEST or all (rows of FileList.csv to evaluate).")] = "TEST",
    threshold: Annotated[float | None, typer.Option(
        help="With --masks: a pixel counts when its value is above this. Default 127 for integer masks "
        "(uint8, AVI), 0.5 for float (probabilities) and boolean masks.")] = None,
    reference: Annotated[str, typer.Option(
        help="'tracings' (ED/ES = larger/smaller traced area in VolumeTracings.csv) or a CSV with header "
        "FileName,ED,ES.")] = "tracings",
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

    Writes per_video.csv, summary.json and area_curves.png.

    Example: echoseg eval afd --data toy/echonet --masks masks/ --split TEST --out runs/afd
    """
    from echoseg.core.data.echonet import read_filelist
    from echoseg.core.eval.afd_report import evaluate_afd, select_split, write_afd_report
    from echoseg.core.eval.areas import areas_from_masks, list_mask_videos, read_areas_csv

    cfg = resolve(ctx, config, sets)
    if (cfg["masks"] is None) == (cfg["areas"] is None):
        raise UserError("give exactly one of --masks DIR or --areas CSV")
    if cfg["areas"] is not None and cfg["threshold"] is not None:
        raise UserError("--threshold applies to --masks only (an areas CSV holds areas already)")
    require_dir(cfg["data"], "--data")
    filelist = select_split(read_filelist(cfg["data"]), cfg["split"])
    refs, ref_source = _references(Path(cfg["data"]), cfg["reference"])
    signals = None
    if cfg["areas"] is not None:
        signals = read_areas_csv(cfg["areas"])
    else:
        require_dir(cfg["masks"], "--masks")
    inputs = {"data": cfg["data"], "areas": cfg["areas"], "masks": cfg["masks"]}
    if cfg["reference"] != "tracings":
        inputs["reference"] = cfg["reference"]
    run = open_run("eval", "afd", cfg, out=out, name=name, inputs=inputs)
    with run_context(run):
        available = None
        if signals is None:
            signals, _ = areas_from_masks(cfg["masks"], list(filelist["FileName"]), cfg["threshold"])
            available = list_mask_videos(cfg["masks"])
        info = {"split": cfg["split"].upper(), "reference": ref_source}
        if cfg["areas"] is not None:
            info["areas_csv"] = str(Path(cfg["areas"]).resolve())
        else:
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
    masks: Annotated[Path, typer.Option(
        "--masks", help="Folder of per-video LV masks <FileName>.npz/.npy/.avi (pixels above 127 of 255, "
        "or 0.5 for probabilities).")],
    clip_model: Annotated[str, typer.Option(
        "--clip-model", help="open_clip model: hf-hub:org/name (from the local HF cache), a folder with "
        "open_clip_config.json + weights, or ARCH:/path/to/weights.pt.")],
    dilate: Annotated[int, typer.Option(
        help="Pixels to dilate the mask (elliptical kernel) before the LEFT VENTRICLE comparison.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Frames per forward pass.")] = 64,
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

    Writes per_video.csv and summary.json (mean score).

    Example: echoseg eval echoclip --data toy/echonet --masks masks/ --clip-model hf-hub:mkaichristensen/echo-clip
    """
    from echoseg.core.eval.echoclip import load_clip_model, score_videos
    from echoseg.core.io import write_csv

    cfg = resolve(ctx, config, sets)
    require_dir(cfg["data"], "--data")
    require_dir(Path(cfg["data"]) / "Videos", "--data Videos folder")
    require_dir(cfg["masks"], "--masks")
    if cfg["dilate"] < 0:
        raise UserError(f"--dilate must be >= 0, got {cfg['dilate']}")
    if cfg["batch_size"] < 1:
        raise UserError(f"--batch-size must be >= 1, got {cfg['batch_size']}")
    clip = load_clip_model(cfg["clip_model"], cfg["device"])
    run = open_run("eval", "echoclip", cfg, out=out, name=name, inputs={"data": cfg["data"], "masks": cfg["masks"]})
    with run_context(run):
        table, summary = score_videos(clip, cfg["data"], cfg["masks"], dilate=cfg["dilate"],
                                      batch_size=cfg["batch_size"])
        write_csv(run.file("per_video.csv"), table)
        run.write_summary(summary)
        run.log(f"CLIP mask score over {summary['videos_scored']} video(s): mean {summary['score_mean']:.4f}; "
                f"{summary['videos_without_video']} without video")
    emit_run_path(run.path)


def _register_seg() -> None:
    from echoseg.cli.eval_seg import seg

    app.command("seg")(seg)


_register_seg()
