"""`echoseg train`: train a VLSM (CLIPSeg, CRIS) or a U-Net (plain, or on a pre-trained ResNet encoder) on real,
synthetic or synthetic-then-real data, optionally on a fraction of the training patients."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import (
    CacheDirOpt,
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
from echoseg.core.config import config_name_or_file
from echoseg.core.errors import UserError
from echoseg.core.models import list_configs, list_models
from echoseg.core.runs import run_context

_EPILOG = """Strategies (bash):

  REAL=$(echoseg train --model clipseg --data $PROMPTS_REAL)

  SYN=$(echoseg train --model clipseg --train-data $PROMPTS_SYN --val-data $PROMPTS_SYN --test-data $PROMPTS_REAL)

  FT=$(echoseg train --model clipseg --data $PROMPTS_REAL --init-from $SYN)

Frozen pre-trained encoder, 10 % of the training patients (SynCXR):

  SEG=$(echoseg train --model unet --encoder vlp:$PRETRAIN_RUN --freeze-encoders --train-fraction 0.1 --data $PROMPTS)

Synthetic Boost's released recipe (explicit options win over it; examples/synthetic_boost.sh runs the whole grid):

  echoseg train --model cris --config rn50 --recipe sb-code --weights cris_r50_refcoco.pth --data $PROMPTS --prompt p4
"""


# Options a resumed run may change, in the order its error message lists them.
RESUMABLE = ("epochs", "device", "num_workers", "report_to")
_SEGMENTERS = list_models("segmentation")
_CONFIGS = "; ".join(f"{m}: {', '.join(list_configs(m))}" for m in _SEGMENTERS)


def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(
        "--model", help=f"{' | '.join(_SEGMENTERS)} (unet with --encoder: on a ResNet encoder).")] = "clipseg",
    config: Annotated[str | None, typer.Option(
        "--config", help=f"Model config name ({_CONFIGS}), or a YAML/JSON file of option values.")] = None,
    model_config: Annotated[str, typer.Option(
        "--model-config", help="Model config name (as for --config).")] = "tiny",
    weights: Annotated[str | None, typer.Option(
        "--weights", help="Pretrained weights: a local folder/file or a cached hub id "
        "(clipseg base default: CIDAS/clipseg-rd64-refined).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Prompts run (manifest.csv with p0..p7) for every split.")]
    = None,
    train_data: Annotated[Path | None, typer.Option("--train-data", help="Prompts run for the train split.")] = None,
    val_data: Annotated[Path | None, typer.Option("--val-data", help="Prompts run for the val split.")] = None,
    test_data: Annotated[Path | None, typer.Option("--test-data", help="Prompts run for the test split.")] = None,
    prompt: Annotated[str, typer.Option(
        "--prompt", help="p0..p7 (variant A), p1_b..p7_b (variant B), random (A/B of P7 per sample and epoch) "
        "or random:pK.")] = "p7",
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="A training run whose best weights start this one (fresh optimizer/schedule).")] = None,
    freeze_encoders: Annotated[bool, typer.Option(
        "--freeze-encoders/--no-freeze-encoders", help="Freeze the pre-trained encoders: CLIP's image and text "
        "encoders, or the U-Net's ResNet (--encoder; its BatchNorm statistics stay fixed too).")] = False,
    encoder: Annotated[str | None, typer.Option(
        "--encoder", help="U-Net only: build it on a ResNet encoder initialised from vlp:PRETRAIN_RUN (the run's "
        "pre-trained image encoder; a ResNet, with the run's mean/std), imagenet:FILE (a torchvision ResNet-50 "
        "state dict) or random.")] = None,
    train_fraction: Annotated[float, typer.Option(
        "--train-fraction", help="Train on a seeded subset of this fraction of the train split's patients "
        "(0 < F <= 1; nested across fractions for one --seed); recorded in run.json and summary.json.")] = 1.0,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum epochs (early stopping may end sooner).")] = 100,
    min_epochs: Annotated[int, typer.Option(
        "--min-epochs", help="Early stopping cannot end the run before this epoch (at most --epochs).")] = 0,
    recipe: Annotated[str | None, typer.Option(
        "--recipe", help="Synthetic Boost's recipe for clipseg/cris, filling every option not given (on the command "
        "line, in --config or by --set): sb-paper (the paper: CLIPSeg lr 2e-3, threshold 0.5, BCE weight 0.25) or "
        "sb-code (the released configs: CLIPSeg lr 2e-4, CRIS threshold 0.35, BCE weight 0.2; CRIS needs the "
        "RefCOCO CRIS checkpoint as --weights). Both: CRIS lr 2e-5, batch 128 (CLIPSeg) / 32 (CRIS), grad clip "
        "0.5, 10 to 1000 epochs, fp16 mixed precision on a GPU only (no on a CPU). Recorded in run.json.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per step and process.")] = 32,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default: the model's, 2e-3 for CLIPSeg).")]
    = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = 1e-3,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="Gradient-norm clipping (0: off).")] = 0.5,
    plateau_patience: Annotated[int, typer.Option("--plateau-patience", help="ReduceLROnPlateau patience.")] = 5,
    plateau_factor: Annotated[float, typer.Option("--plateau-factor", help="ReduceLROnPlateau factor.")] = 0.1,
    early_stop_patience: Annotated[int, typer.Option(
        "--early-stop-patience", help="Stop after this many epochs without a better val Dice.")] = 20,
    dice_weight: Annotated[float, typer.Option("--dice-weight", help="Weight of the soft Dice loss.")] = 1.0,
    bce_weight: Annotated[float, typer.Option("--bce-weight", help="Weight of the BCE loss.")] = 0.2,
    augment: Annotated[bool, typer.Option(
        "--augment/--no-augment", help="Echo-safe augmentation (rotation, scale, brightness, contrast, gamma).")]
    = False,
    threshold: Annotated[float, typer.Option("--threshold", help="Probability threshold of the masks.")] = 0.5,
    eval_size: Annotated[int, typer.Option("--eval-size", help="Side of the test masks scored.")] = 512,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", help="Override the model's input size (small values for quick tests).")] = None,
    num_workers: Annotated[int, typer.Option("--num-workers", help="DataLoader worker processes.")] = 0,
    cache_dir: CacheDirOpt = None,
    precision: PrecisionOpt = "no",
    report_to: ReportToOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    resume: ResumeOpt = None,
    out: OutOpt = None,
    name: NameOpt = None,
    sets: SetOpt = None,
) -> None:
    """Train a segmentation model and evaluate its best checkpoint on the test split.

    Writes checkpoints/ (best.*, last.*, model.json), metrics.jsonl, per_sample.csv, summary.json and
    predictions.png. Interrupted runs continue exactly with --resume RUN (--epochs may be raised then).

    Example: echoseg train --model clipseg --config base --data runs/prompts-build/camus --prompt p7
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.data.manifest import load_split, prompt_columns
    from echoseg.core.train.loop import train as run_training
    from echoseg.core.train.recipe import TrainConfig

    config_file, mc = config_name_or_file(config, model_config)
    if resume is not None:
        cfg = resumed(ctx, resume, "train", RESUMABLE, requires=("data", dict, "training"))
    else:
        cfg = resolve(ctx, config_file, sets, exclude=("data", "train_data", "val_data", "test_data", "model_config"))
        cfg["model_config"] = mc
        cfg["data"] = {k: (str(v) if v is not None else None) for k, v in
                       (("all", data), ("train", train_data), ("val", val_data), ("test", test_data))}
        cfg = _with_recipe(ctx, cfg, config_file, sets)
    sources = _split_sources(cfg["data"])
    tc = TrainConfig.from_dict(cfg)
    tc.validate()
    prompt_columns(tc.prompt)
    from echoseg.core.models import get_config

    get_config(tc.model, tc.model_config)
    if tc.init_from is not None:
        from echoseg.core.models.artefacts import find_checkpoint

        find_checkpoint(tc.init_from, "best", "--init-from")
    encoder_path = None
    if tc.encoder is not None and resume is None:
        from echoseg.core.models.unet_resnet import check_encoder

        encoder_path = check_encoder(tc.encoder).get("path")
    splits = {s: load_split(src, s, f"--{s}-data" if cfg["data"].get(s) else "--data") if src else None
              for s, src in sources.items()}
    run = open_run("train", None, cfg, out=out, name=name, resume=resume,
                   inputs={f"{s}_data": str(src) for s, src in sources.items() if src} | (
                       {"init_from": str(tc.init_from)} if tc.init_from else {}) | (
                       {"encoder": encoder_path} if encoder_path else {}))
    with run_context(run):
        if resume is None and tc.recipe:
            from echoseg.core.env import resolve_device
            from echoseg.core.train.recipes import describe

            run.log(describe(cfg, resolve_device(tc.device) == "cuda"))
        run_training(tc, run, splits["train"], splits["val"], splits["test"])
    emit_run_path(run.path)


def _with_recipe(ctx: typer.Context, cfg: dict, config_file: Path | None, sets: list[str] | None) -> dict:
    """``cfg`` with ``--recipe``'s values in every option the user did not set (command line, --config, --set)."""
    if not cfg.get("recipe"):
        return cfg
    from echoseg.cli.options import explicit_params
    from echoseg.core.config import load_config_file, parse_sets
    from echoseg.core.env import resolve_device
    from echoseg.core.train.recipes import apply_recipe

    given = explicit_params(ctx) | set(parse_sets(sets))
    if config_file is not None:
        given |= set(load_config_file(config_file))
    return apply_recipe(cfg, given, gpu=resolve_device(str(cfg.get("device", "auto"))) == "cuda")


def _split_sources(data: dict[str, str | None]) -> dict[str, str | None]:
    sources = {s: data.get(s) or data.get("all") for s in ("train", "val", "test")}
    for s in ("train", "val"):
        if not sources[s]:
            raise UserError(f"no data for the {s} split: give --data or --{s}-data")
    return sources


def register(app: typer.Typer) -> None:
    """Add the `echoseg train` command to the root app."""
    app.command("train", epilog=_EPILOG)(train)
