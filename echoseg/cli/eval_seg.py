"""`echoseg eval seg`: evaluate a trained segmentation run on any data, split and prompt (registered by cli/eval)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import DeviceOpt, NameOpt, OutOpt, PrecisionOpt, emit_run_path, open_run
from echoseg.core.errors import UserError, require_dir
from echoseg.core.runs import run_context


def seg(
    run_dir: Annotated[Path, typer.Option("--run", help="A training run (echoseg train).")],
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
) -> None:
    """Evaluate a trained run: per_sample.csv, summary.json and predictions.png in a new run directory.

    Example: echoseg eval seg --run runs/train/20240101-000000 --data runs/prompts-build/camus --prompt p4
    """
    from echoseg.core.data.manifest import load_split, prompt_columns
    from echoseg.core.eval.seg import evaluate_trained_run
    from echoseg.core.models.artefacts import find_checkpoint

    require_dir(run_dir, "--run")
    if checkpoint not in ("best", "last"):
        raise UserError(f"--checkpoint must be best or last, got {checkpoint!r}")
    find_checkpoint(run_dir, checkpoint)
    if prompt is not None:
        prompt_columns(prompt)
    rows = load_split(data, split, "--data")
    cfg = {"run": str(run_dir), "data": str(data), "split": split, "prompt": prompt, "checkpoint": checkpoint,
           "threshold": threshold, "eval_size": eval_size, "batch_size": batch_size, "save_masks": save_masks,
           "cache_dir": str(cache_dir) if cache_dir else None, "device": device, "precision": precision}
    run = open_run("eval", "seg", cfg, out=out, name=name, inputs={"run": run_dir, "data": data})
    with run_context(run):
        summary = evaluate_trained_run(
            run_dir, rows, run, prompt=prompt, which=checkpoint, threshold=threshold, eval_size=eval_size,
            batch_size=batch_size, device=device, precision=precision,
            cache_dir=str(cache_dir) if cache_dir else None, save_masks=save_masks,
        )
        run.write_summary(summary)
    emit_run_path(run.path)
