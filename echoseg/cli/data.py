"""`echoseg data ...`: toy data sets, checks and DICOM import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import ConfigOpt, NameOpt, OutOpt, SeedOpt, SetOpt, emit_run_path, open_run, resolve
from echoseg.cli.options import argv as command_argv
from echoseg.core.errors import UserError
from echoseg.core.runs import run_context

app = typer.Typer(help="Read, check, import and generate data sets.", no_args_is_help=True)
toy_app = typer.Typer(
    help="Write toy data sets in the real published layouts (for demos and CI).", no_args_is_help=True
)
app.add_typer(toy_app, name="toy")


def _positive(value: int, option: str, low: int = 1, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in {low}..{high}"
        raise UserError(f"{option} must be {rng}, got {value}")


@toy_app.command("camus")
def toy_camus(
    ctx: typer.Context,
    out: OutOpt = None,
    name: NameOpt = None,
    patients: Annotated[int, typer.Option(help="Number of patients (2CH+4CH, ED+ES each).")] = 10,
    size: Annotated[int, typer.Option(help="Image height and width in pixels.")] = 256,
    layout: Annotated[str, typer.Option(help="nifti (CAMUS 2023 release) or mhd (legacy 2019 release).")] = "nifti",
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write a toy CAMUS data set (NIfTI or legacy MHD layout) with Info_*.cfg metadata.

    Example: echoseg data toy camus --patients 10 --layout nifti --out toy/camus
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.data.manifest import write_manifest
    from echoseg.core.data.toy.camus import write_toy_camus

    cfg = resolve(ctx, config, sets)
    _positive(cfg["patients"], "--patients")
    _positive(cfg["size"], "--size", 32, 2048)
    if cfg["layout"] not in ("nifti", "mhd"):
        raise UserError(f"--layout must be nifti or mhd, got {cfg['layout']!r}")
    run = open_run("data", "toy-camus", cfg, out=out, name=name)
    with run_context(run):
        manifest = write_toy_camus(run.path, patients=cfg["patients"], size=cfg["size"],
                                   layout=cfg["layout"], seed=cfg["seed"])
        write_manifest(manifest, run.file("manifest.csv"))
        run.write_summary({"dataset": f"camus-{cfg['layout']}", "patients": cfg["patients"],
                           "samples": len(manifest), "images": int(manifest["image"].nunique())})
        run.log(f"toy CAMUS ({cfg['layout']}): {cfg['patients']} patients, {manifest['image'].nunique()} images")
    emit_run_path(run.path)


@toy_app.command("sdm-camus")
def toy_sdm_camus(
    ctx: typer.Context,
    out: OutOpt = None,
    name: NameOpt = None,
    patients: Annotated[int, typer.Option(help="Number of source patients.")] = 5,
    copies: Annotated[int, typer.Option(help="Synthetic images per (patient, view, phase).")] = 2,
    size: Annotated[int, typer.Option(help="Image height and width in pixels.")] = 256,
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write a toy SDM CAMUS data set (synthetic PNG images with sector label maps).

    Example: echoseg data toy sdm-camus --patients 5 --copies 2 --out toy/sdm
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.data.manifest import write_manifest
    from echoseg.core.data.toy.sdm import write_toy_sdm_camus

    cfg = resolve(ctx, config, sets)
    _positive(cfg["patients"], "--patients")
    _positive(cfg["copies"], "--copies")
    _positive(cfg["size"], "--size", 32, 2048)
    run = open_run("data", "toy-sdm-camus", cfg, out=out, name=name)
    with run_context(run):
        manifest = write_toy_sdm_camus(run.path, patients=cfg["patients"], copies=cfg["copies"],
                                       size=cfg["size"], seed=cfg["seed"])
        write_manifest(manifest, run.file("manifest.csv"))
        run.write_summary({"dataset": "sdm-camus", "patients": cfg["patients"], "samples": len(manifest),
                           "images": int(manifest["image"].nunique())})
        run.log(f"toy SDM CAMUS: {manifest['image'].nunique()} images")
    emit_run_path(run.path)


@toy_app.command("echonet")
def toy_echonet(
    ctx: typer.Context,
    out: OutOpt = None,
    name: NameOpt = None,
    videos: Annotated[int, typer.Option(help="Number of videos.")] = 8,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 64,
    size: Annotated[int, typer.Option(help="Frame height and width (EchoNet-Dynamic uses 112).")] = 112,
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write a toy EchoNet-Dynamic data set (FileList.csv, VolumeTracings.csv, Videos/*.avi).

    Example: echoseg data toy echonet --videos 8 --frames 64 --out toy/echonet
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.data.toy.echonet import write_toy_echonet

    cfg = resolve(ctx, config, sets)
    _positive(cfg["videos"], "--videos")
    _positive(cfg["frames"], "--frames", 16)
    _positive(cfg["size"], "--size", 32, 1024)
    run = open_run("data", "toy-echonet", cfg, out=out, name=name)
    with run_context(run):
        filelist = write_toy_echonet(run.path, videos=cfg["videos"], frames=cfg["frames"],
                                     size=cfg["size"], seed=cfg["seed"])
        run.write_summary({"dataset": "echonet", "videos": len(filelist),
                           "splits": filelist["Split"].value_counts().to_dict()})
        run.log(f"toy EchoNet-Dynamic: {len(filelist)} videos of {cfg['frames']} frames")
    emit_run_path(run.path)


@app.command("import-dicom")
def import_dicom(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="DICOM files (single- or multi-frame ultrasound).")],
    out: OutOpt = None,
    name: NameOpt = None,
    size: Annotated[int, typer.Option(help="Output frame size in pixels: frames are padded to a centred square, "
                                      "then resized (0 keeps the original size, unpadded).")] = 112,
    split: Annotated[str, typer.Option(help="Split written to FileList.csv for every clip.")] = "TEST",
    crop: Annotated[str, typer.Option(help="none: the whole frame; region: only the first "
                                      "SequenceOfUltrasoundRegions rectangle (drops text burned in around "
                                      "it; its PhysicalDeltaX/Y give the pixel spacing).")] = "none",
    any_modality: Annotated[bool, typer.Option("--any-modality", help="Also import files whose Modality is not "
                                               "US (CT, MR, ...); by default they are refused.")] = False,
    allow_burned_in: Annotated[bool, typer.Option("--allow-burned-in", help="Import BurnedInAnnotation=YES files "
                                                  "uncropped (patient text in the pixels is kept); by default "
                                                  "they need --crop region.")] = False,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Import DICOM cines as an EchoNet-Dynamic-layout data set (grey AVI + FileList.csv).

    Frame rate from FrameTime, FrameTimeVector or CineRate (dicom_sources.csv and summary.json say which). The
    pixel size (PixelSpacing or the ultrasound region's PhysicalDeltaX/Y), rescaled to the written frames, goes to
    FileList.csv's PhysicalDeltaY/X in cm (eval ef's volumes in mL; empty when the file has none). Only
    Modality US unless --any-modality; BurnedInAnnotation=YES is refused unless --crop region or
    --allow-burned-in. No source path and no patient name, id or birth date is written: dicom_sources.csv
    identifies each source by the sha256 of its absolute path.

    Example: echoseg data import-dicom clip1.dcm clip2.dcm --crop region --out imported
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.data.dicom import CROPS, import_summary, source_hash
    from echoseg.core.data.dicom import import_dicom as _import
    from echoseg.core.paths import check_native_path

    cfg = resolve(ctx, config, sets, exclude=("files",))
    for f in files:
        check_native_path(f, "DICOM file")
        if not Path(f).is_file():
            raise UserError(f"{f}: file not found")
    if cfg["size"] < 0:
        raise UserError(f"--size must be >= 0, got {cfg['size']}")
    if str(cfg["split"]).upper() not in ("TRAIN", "VAL", "TEST"):
        raise UserError(f"--split must be TRAIN, VAL or TEST, got {cfg['split']!r}")
    if cfg["crop"] not in CROPS:
        raise UserError(f"--crop must be one of {', '.join(CROPS)}, got {cfg['crop']!r}")
    # run.json keeps the command line with its source paths replaced by the sha256 that dicom_sources.csv lists
    typed, given = command_argv(), {Path(f) for f in files}
    start = typed.index("import-dicom") + 1 if "import-dicom" in typed else 1
    redacted = typed[:start] + [f"sha256:{source_hash(a)}" if Path(a) in given else a for a in typed[start:]]
    run = open_run("data", "import-dicom", cfg, out=out, name=name, command_line=redacted)
    with run_context(run):
        filelist = _import([Path(f) for f in files], run.path, size=cfg["size"], split=cfg["split"], log=run.log,
                           crop=cfg["crop"], any_modality=cfg["any_modality"],
                           allow_burned_in=cfg["allow_burned_in"])
        run.write_summary(import_summary(run.path))
        run.log(f"imported {len(filelist)} DICOM clip(s)")
    emit_run_path(run.path)


@app.command("check")
def check(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="Data set folder (CAMUS, SDM CAMUS or EchoNet-Dynamic layout).")],
    dataset: Annotated[str, typer.Option(help="auto|camus|sdm-camus|echonet.")] = "auto",
    out: OutOpt = None,
    name: NameOpt = None,
) -> None:
    """Detect the layout, validate every file and summarise the data set.

    Writes manifest.csv (CAMUS, SDM CAMUS) or videos.csv (EchoNet) of the usable samples, problems.csv and
    summary.json. Exits 2 when any file is unusable, after listing each with its reason.

    Example: echoseg data check /data/CAMUS_public
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.cli.tables import print_check_report
    from echoseg.core.data.check import check_dataset
    from echoseg.core.data.manifest import write_manifest
    from echoseg.core.io import write_csv

    report = check_dataset(root, dataset)
    cfg = resolve(ctx, exclude=("root",))
    cfg["root"] = str(Path(root).resolve())
    run = open_run("data", "check", cfg, out=out, name=name, inputs={"root": root})
    with run_context(run):
        if report.is_video:
            write_csv(run.file("videos.csv"), report.table)
        else:
            write_manifest(report.table, run.file("manifest.csv"))
        import pandas as pd

        problems = pd.DataFrame([{"path": p.path, "reason": p.reason} for p in report.problems],
                                columns=["path", "reason"])
        write_csv(run.file("problems.csv"), problems)
        run.write_summary(report.summary())
        print_check_report(report)
        for p in report.problems:
            run.log(f"bad file: {p.path}: {p.reason}")
        if report.problems:
            raise UserError(f"{len(report.problems)} unusable file(s) in {root} (listed above; "
                            f"also in {run.path / 'problems.csv'})")
    emit_run_path(run.path)
