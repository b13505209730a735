"""`echoseg models ...`: model weights utilities (checkpoint conversion)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import ConfigOpt, NameOpt, OutOpt, SetOpt, emit_run_path, open_run, resolve
from echoseg.core.errors import UserError, require_file
from echoseg.core.models import list_configs
from echoseg.core.runs import run_context

app = typer.Typer(help="Model weights: convert published checkpoints into echoseg's format.", no_args_is_help=True)


@app.command("convert-cris")
def convert_cris(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(
        metavar="CHECKPOINT", help="Original CRIS checkpoint (.pth with a 'state_dict').")],
    out: OutOpt = None,
    name: NameOpt = None,
    arch: Annotated[
        str, typer.Option("--arch", help=f"auto | {' | '.join(list_configs('cris'))} (auto: RN50 or RN101 from the "
                          "ResNet depth).")
    ] = "auto",
    word_len: Annotated[int, typer.Option(help="Prompt length in tokens (authors' RefCOCO models: 17; max 77).")] = 17,
    input_size: Annotated[int, typer.Option(help="Input size in pixels, a multiple of 32 (authors: 416).")] = 416,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Convert an original CRIS checkpoint (DerrickWang005/CRIS.pytorch) into an echoseg run directory.

    Writes checkpoints/model.json and checkpoints/best.safetensors, usable as --weights or --init-from.

    Example: echoseg models convert-cris cris_r50_refcoco.pth --out weights/cris-r50
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.models.cris_weights import infer_config, model_from_original, read_state, write_converted

    cfg = resolve(ctx, config, sets, exclude=("checkpoint",))
    if cfg["arch"] != "auto" and cfg["arch"] not in list_configs("cris"):
        raise UserError(f"--arch must be auto or one of {', '.join(list_configs('cris'))}, got {cfg['arch']!r}")
    if not 1 <= cfg["word_len"] <= 77:
        raise UserError(f"--word-len must be in 1..77, got {cfg['word_len']}")
    if cfg["input_size"] < 32 or cfg["input_size"] % 32:
        raise UserError(f"--input-size must be a positive multiple of 32, got {cfg['input_size']}")
    require_file(checkpoint, "CHECKPOINT")
    state = read_state(checkpoint, "CHECKPOINT")
    arch = infer_config(state, f"CHECKPOINT {checkpoint}", "--arch") if cfg["arch"] == "auto" else cfg["arch"]
    # build and strictly load before the run directory exists: a mismatch leaves nothing behind
    model = model_from_original(state, arch, {"word_len": cfg["word_len"], "input_size": cfg["input_size"]},
                                f"CHECKPOINT {checkpoint}")
    cfg["checkpoint"] = str(Path(checkpoint).resolve())
    run = open_run("models", "convert-cris", cfg, out=out, name=name, inputs={"checkpoint": checkpoint})
    with run_context(run):
        summary = {"config": arch, **write_converted(model, run.path, checkpoint)}
        run.write_summary(summary)
        run.log(f"converted CRIS {summary['config']} ({summary['parameters']:,} parameters) "
                f"-> {run.path / 'checkpoints'}")
    emit_run_path(run.path)
