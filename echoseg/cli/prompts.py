"""`echoseg prompts ...`: Synthetic Boost P0–P7 language prompts from CAMUS / SDM CAMUS data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import ConfigOpt, DeviceOpt, NameOpt, OutOpt, SetOpt, emit_run_path, open_run, resolve
from echoseg.core.errors import UserError
from echoseg.core.runs import run_context

app = typer.Typer(
    help="Build language prompts (Synthetic Boost P0–P7) for segmentation data.\n\n"
    "Example: RUN=$(echoseg prompts build $(echoseg data toy camus --patients 10))",
    no_args_is_help=True,
)

_SHAPE_HELP = (
    "How the P7 shape word is found. geometric (default, deterministic, no weights): the structure's outer "
    "contour (the myocardium ring as the region it encloses) is measured on its convex hull with OpenCV — "
    "triangle if it fills >= 85 % of its minimum enclosing triangle (or approximates to 3 corners and fills "
    ">= 75 %); square/rectangle if it fills >= 90 % of its minimum-area rectangle (or 4 corners and >= 85 %), "
    "square when that rectangle's aspect ratio < 1.25; otherwise circle (aspect < 1.25, circularity >= 0.8) or "
    "oval. vqa: ask a transformers visual-question-answering model (--vqa-model) about the structure in a green box."
)


@app.command("build")
def build(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A data run directory or manifest.csv (preferred when present), "
                                         "or a CAMUS / SDM CAMUS folder in its published layout.")],
    out: OutOpt = None,
    name: NameOpt = None,
    dataset: Annotated[str, typer.Option(help="auto|camus|sdm-camus (auto: from the manifest or layout).")] = "auto",
    shape: Annotated[str, typer.Option(help=_SHAPE_HELP)] = "geometric",
    vqa_model: Annotated[str | None, typer.Option(help="With --shape vqa: a local transformers VQA model folder or "
                                                  "a cached hub id (e.g. dandelin/vilt-b32-finetuned-vqa).")] = None,
    style: Annotated[str, typer.Option(help="synthetic-boost (the published wording, 'a eighty-year-old') or "
                                       "grammatical ('an eighty-year-old').")] = "synthetic-boost",
    strict: Annotated[bool, typer.Option("--strict", help="Exit 2 instead of leaving prompts empty when a sample "
                                         "lacks metadata (sex, age, quality) or a shape.")] = False,
    splits: Annotated[Path | None, typer.Option(help="CSV with columns patient,split (train/val/test): the split "
                                                "of every patient it names, as the CAMUS reader takes it.")] = None,
    camus: Annotated[Path | None, typer.Option(help="SDM CAMUS only: a real CAMUS folder whose Info cfgs give sex "
                                               "and age when the SDM folder has no manifest.csv.")] = None,
    device: DeviceOpt = "auto",
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Build P0–P7 prompts: manifest.csv with p0..p7 + shape + report, prompts/{train,val,test}.json, reports.csv,
    attributes.csv.

    The JSON files follow the Synthetic Boost published schema (one record per image and structure, two
    variants per level), so they drop into that training code. Samples lacking metadata get empty prompts
    for the levels that need it (counted in summary.json); --strict makes that an error.

    Every image also gets a report, one text naming all it knows (view, phase, sex, age, image quality and each
    structure's shape word), e.g. "Apical four-chamber view at end-diastole of a 63-year-old female patient, good
    image quality. The left ventricular cavity has an oval shape, ...": the `report` column of manifest.csv (the
    same on each structure row of an image) and reports.csv (image, patient, split, report; one row per image),
    so a prompts run is a vision-language pre-training corpus. Unknown attributes are left out of the text (and
    image quality for SDM CAMUS, as in its prompts).

    Example: RUN=$(echoseg prompts build toy/camus --shape geometric --out runs/prompts)
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.prompts.build import DATASETS, SHAPE_METHODS, print_attribute_table, summary_of, write_outputs
    from echoseg.core.prompts.build import build as build_core
    from echoseg.core.prompts.templates import STYLES

    cfg = resolve(ctx, config, sets, exclude=("data",))
    for option, value, allowed in (("--dataset", cfg["dataset"], DATASETS), ("--shape", cfg["shape"], SHAPE_METHODS),
                                   ("--style", cfg["style"], STYLES), ("--device", cfg["device"],
                                                                       ("auto", "cpu", "cuda"))):
        if value not in allowed:
            raise UserError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    if not Path(data).exists():
        raise UserError(f"{data}: not found")
    if cfg["splits"] is not None and not Path(cfg["splits"]).is_file():
        raise UserError(f"--splits {cfg['splits']}: file not found")
    if cfg["camus"] is not None and not Path(cfg["camus"]).is_dir():
        raise UserError(f"--camus {cfg['camus']}: directory not found")
    if cfg["shape"] == "vqa" and not cfg["vqa_model"]:
        raise UserError("--shape vqa needs --vqa-model PATH_OR_ID (a local transformers VQA model folder or a "
                        "cached hub id)")
    run = open_run("prompts", "build", cfg, out=out, name=name, inputs={"data": str(data)})
    with run_context(run):
        result = build_core(data, dataset=cfg["dataset"], shape=cfg["shape"], vqa_model=cfg["vqa_model"],
                            style=cfg["style"], splits=cfg["splits"], camus_root=cfg["camus"],
                            device=cfg["device"], log=run.log)
        if result.incomplete:
            gaps = ", ".join(f"{k}: {v}" for k, v in result.missing.items() if v)
            msg = f"{result.incomplete} sample(s) have empty prompts (missing {gaps})"
            if cfg["strict"]:
                raise UserError(f"{data}: {msg}; --strict refuses incomplete prompts")
            run.log(f"warning: {msg}", style="yellow")
        table = write_outputs(result, run.path)
        print_attribute_table(table)
        summary = summary_of(result)
        run.write_summary(summary)
        run.log(f"prompts: {summary['samples']} samples ({summary['splits']}), shapes {summary['shapes']}, "
                f"{summary['reports']} image reports")
    emit_run_path(run.path)
