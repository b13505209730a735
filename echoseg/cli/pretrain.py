"""`echoseg pretrain`: vision-language pre-training (ConVIRT, GLoRIA, MGCA) on real, synthetic or mixed pairs."""

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
from echoseg.core.config import config_name_or_file, parse_sets
from echoseg.core.errors import UserError
from echoseg.core.models import list_configs
from echoseg.core.runs import run_context

_EPILOG = """Real, synthetic and mixed pairs (bash):

  BERT=~/models/Bio_ClinicalBERT

  REAL=$(echoseg pretrain --method gloria --data $PROMPTS_REAL --text-encoder $BERT)

  SYN=$(echoseg pretrain --method gloria --data $PROMPTS_SYN --text-encoder $BERT)

  MIX=$(echoseg pretrain --method gloria --data $PROMPTS_REAL --data $PROMPTS_SYN --text-encoder $BERT)

CPU smoke test: echoseg pretrain --method mgca --config tiny --data $PROMPTS --epochs 2 --batch-size 8
"""

# Options a resumed run may change, in the order its error message lists them.
RESUMABLE = ("epochs", "device", "report_to")
_CONFIGS = ", ".join(list_configs("vlp"))


def pretrain(
    ctx: typer.Context,
    method: Annotated[str, typer.Option("--method", help="convirt | gloria | mgca.")] = "convirt",
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="A prompts run (manifest.csv); repeat for several (real + synthetic = mix). Its train rows "
        "train, its val rows validate.")] = None,
    text: Annotated[str, typer.Option(
        "--text", help="The text of each image: report (the image-level report), pK/pK_b (the structure prompts "
        "joined) or any manifest column.")] = "report",
    config: Annotated[str | None, typer.Option(
        "--config", help=f"Model config ({_CONFIGS}), or a YAML/JSON file of option values.")] = None,
    model_config: Annotated[str, typer.Option("--model-config", help="Model config name (as for --config).")]
    = "resnet50",
    image_encoder: Annotated[str | None, typer.Option(
        "--image-encoder", help="resnet50 (torchvision) | vit_base_patch16 (timm) | resnet_tiny | vit_tiny "
        "(default: the config's).")] = None,
    image_weights: Annotated[str | None, typer.Option(
        "--image-weights", help="imagenet (needs --allow-download) or a local torchvision/timm weights file.")]
    = None,
    text_encoder: Annotated[str | None, typer.Option(
        "--text-encoder", help="A local Hugging Face BERT-family folder or cached hub id (Bio_ClinicalBERT...; "
        "default: the config's; tiny configs train their own WordPiece vocabulary).")] = None,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", help="Start from a pretrain run's best weights or a released GLoRIA/MGCA .ckpt file.")]
    = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Maximum epochs (early stopping may end sooner).")] = 50,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Pairs per step and process (negatives come from every process).")] = 48,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate (default: the config's).")] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = 0.05,
    warmup_fraction: Annotated[float, typer.Option(
        "--warmup-fraction", help="Share of the steps with a linear warm-up before the cosine decay.")] = 0.4,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="Gradient-norm clipping (0: off).")] = 0.0,
    early_stop_patience: Annotated[int, typer.Option(
        "--early-stop-patience", help="Stop after this many epochs without a lower validation loss.")] = 5,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", help="Override the config's image size (small values for quick tests).")] = None,
    attention_pairs: Annotated[int, typer.Option(
        "--attention-pairs", help="Validation pairs drawn in attention_maps.png (GLoRIA, MGCA).")] = 4,
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
    """Pre-train an image and a text encoder on image-text pairs (ConVIRT, GLoRIA or MGCA).

    Writes checkpoints/ (best.*, last.*, model.json, tokenizer/), encoders/ (image/, text/ as a save_pretrained
    folder, heads.safetensors), metrics.jsonl (every loss term, validation recall@1/5), retrieval.json, loss.png,
    attention_maps.png (GLoRIA, MGCA) and summary.json. Loss settings: --set loss.temp1=4 (see README).
    Interrupted runs continue exactly with --resume RUN (--epochs may be raised then).

    Example: echoseg pretrain --method gloria --data runs/prompts-build/camus --text-encoder ~/Bio_ClinicalBERT
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.pretrain.config import PretrainConfig
    from echoseg.core.pretrain.data import load_pairs
    from echoseg.core.pretrain.init import check_init_from
    from echoseg.core.pretrain.loop import pretrain as run_pretraining
    from echoseg.core.pretrain.objectives import hyperparameters

    config_file, mc = config_name_or_file(config, model_config)
    if resume is not None:
        cfg = resumed(ctx, resume, "pretrain", RESUMABLE, requires=("data", list, "pre-training"))
    else:
        cfg = resolve(ctx, config_file, _loss_sets(sets), exclude=("data", "model_config"))
        cfg["model_config"] = mc
        cfg["data"] = [str(d) for d in data or []]
        cfg["loss"] = _loss_settings(sets)
    pc = PretrainConfig.from_dict(cfg)
    pc.validate()
    hyperparameters(pc.method, pc.loss)
    pc.check_inputs()
    if not cfg["data"]:
        raise UserError("no data: give --data RUN (a prompts run; repeat it to mix real and synthetic pairs)")
    if pc.init_from:
        check_init_from(pc.init_from, pc.text_encoder)
    train_pairs = load_pairs(cfg["data"], "train", pc.text)
    val_pairs = load_pairs(cfg["data"], "val", pc.text)
    inputs = {f"data_{i}": d for i, d in enumerate(cfg["data"])} | ({"init_from": pc.init_from} if pc.init_from else {})
    run = open_run("pretrain", None, cfg, out=out, name=name, resume=resume, inputs=inputs)
    with run_context(run):
        run_pretraining(pc, run, train_pairs, val_pairs)
    emit_run_path(run.path)


def _loss_sets(sets: list[str] | None) -> list[str]:
    """``--set`` items other than ``loss.*`` (those are the method's loss settings)."""
    return [s for s in sets or [] if not s.strip().startswith("loss.")]


def _loss_settings(sets: list[str] | None) -> dict:
    """The ``--set loss.NAME=VALUE`` items as ``{NAME: VALUE}``."""
    items = [s for s in sets or [] if s.strip().startswith("loss.")]
    return {k[len("loss."):]: v for k, v in parse_sets(items).items()}


def register(app: typer.Typer) -> None:
    """Add the `echoseg pretrain` command to the root app."""
    app.command("pretrain", epilog=_EPILOG)(pretrain)
