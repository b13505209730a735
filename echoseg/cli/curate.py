"""`echoseg curate`: keep only the synthetic samples worth training on (a single command, like `echoseg train`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import ConfigOpt, DeviceOpt, NameOpt, OutOpt, SeedOpt, SetOpt, emit_run_path, open_run, resolve
from echoseg.core.errors import UserError
from echoseg.core.runs import run_context

_EPILOG = """Example (bash):

  SYN=$(echoseg synth generate --model $MODEL --masks $CAMUS --count 2000)

  CUR=$(echoseg curate $SYN --segmenter $UNET --bad bad/ --real $CAMUS --balance view,phase --tau-max 600)

  PROMPTS=$(echoseg prompts build $CUR)

MLLM check of a text-to-image run (a local LLaVA-like folder), then pre-training on what it keeps:

  CUR=$(echoseg curate $IMAGES --encoder pixels --mllm /models/llava-1.5-7b-hf --mllm-keep '^\\W*yes')

  echoseg pretrain --data $CUR --text report
"""


def _names(values: list[str] | None) -> list[str]:
    """Repeated and/or comma-separated option values as one list."""
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def curate(
    ctx: typer.Context,
    synth_run: Annotated[Path, typer.Argument(
        help="Synthetic run (or folder) with manifest.csv, e.g. from `echoseg synth generate`.", show_default=False)],
    segmenter: Annotated[Path | None, typer.Option(
        "--segmenter", help="Training run whose model scores image-mask agreement (and gives the default "
        "encoder).")] = None,
    min_dice: Annotated[float, typer.Option("--min-dice", help="Keep when the segmenter's Dice >= this.")] = 0.7,
    aggregate: Annotated[str, typer.Option(
        "--aggregate", help="Agreement over an image's structures: min|mean (per image) or structure (per "
        "row).")] = "min",
    bad: Annotated[Path | None, typer.Option(
        "--bad", help="Known-bad exemplars: a run with manifest.csv or a folder of images.")] = None,
    bad_sim: Annotated[float, typer.Option(
        "--bad-sim", help="Drop a sample whose cosine similarity to any bad exemplar exceeds this.")] = 0.5,
    real: Annotated[Path | None, typer.Option(
        "--real", help="Real data run (manifest.csv): drop near-copies of its images.")] = None,
    dup_sim: Annotated[float, typer.Option(
        "--dup-sim", help="Drop a sample whose nearest real image has cosine similarity above this.")] = 0.95,
    encoder: Annotated[str, typer.Option(
        "--encoder", help="Image embeddings: segmenter | pixels[:N] | open_clip:PATH | hf:PATH_OR_ID (e.g. a "
        "DINOv2 folder).")] = "segmenter",
    center: Annotated[bool, typer.Option(
        "--center/--no-center", help="Centre embeddings on the synthetic set's mean before the cosine.")] = True,
    clip_model: Annotated[str | None, typer.Option(
        "--clip-model", help="CLIP model for the zero-shot quality filter (open_clip folder, hf-hub:org/name or "
        "ARCH:/weights.pt).")] = None,
    clip_min: Annotated[float, typer.Option(
        "--clip-min", help='Keep when P("an echocardiography image" vs noise/blank) >= this.')] = 0.5,
    mllm: Annotated[str | None, typer.Option(
        "--mllm", help="A local image-text-to-text model folder (transformers, e.g. LLaVA, Qwen2-VL) that answers "
        "--mllm-question about every image (SynCXR's MLLM check).")] = None,
    mllm_question: Annotated[str, typer.Option(
        "--mllm-question", help="The question asked per image (in the processor's chat template).")]
    = "Is this a realistic echocardiography image? Answer yes or no.",
    mllm_keep: Annotated[str, typer.Option(
        "--mllm-keep", help="Keep an image when its answer matches this regular expression (case-insensitive).")]
    = r"^\W*yes",
    mllm_max_new_tokens: Annotated[int, typer.Option(
        "--mllm-max-new-tokens", help="Tokens per answer at most (greedy).")] = 8,
    balance: Annotated[list[str] | None, typer.Option(
        "--balance", help="Attributes to cap after filtering, comma-separated (view,phase,sex,age,quality).")]
    = None,
    tau_max: Annotated[int | None, typer.Option("--tau-max", help="Cap on the images per attribute value.")] = None,
    size: Annotated[str, typer.Option(
        "--size", help="Expected image size: auto (the run's most common), any, N or HxW.")] = "auto",
    min_std: Annotated[float, typer.Option("--min-std", help="Sanity: minimum grey-level std (blank images).")]
    = 1.0,
    max_saturated: Annotated[float, typer.Option(
        "--max-saturated", help="Sanity: maximum fraction of pixels at 255.")] = 0.1,
    skip: Annotated[list[str] | None, typer.Option(
        "--skip", help="Filters to switch off: sanity, agreement, bad, dup, zero_shot, mllm, balance "
        "(comma-separated or repeated).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 32,
    sheet_limit: Annotated[int, typer.Option("--sheet-limit", help="Thumbnails per contact sheet.")] = 48,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Filter a synthetic run: sanity, image-mask agreement, similarity to known-bad samples, near-copies of real
    images, zero-shot CLIP quality, an MLLM's answer to a quality question, attribute caps.

    Writes manifest.csv (kept rows, same schema: `prompts build` and `train` take the run), rejected.csv
    (sample, filter, check, score, threshold), scores.csv, summary.json and figures/ (contact sheets of kept and
    rejected images, a histogram of every score). With --mllm every answer lands in scores.csv (mllm_answer) and a
    rejected image's in rejected.csv (filter mllm, detail). The input run is never modified.

    Example: echoseg curate runs/synth-generate/x --segmenter runs/train/unet --real runs/data-toy-camus/y
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.curate.run import CurateConfig
    from echoseg.core.curate.run import curate as curate_core
    from echoseg.core.models.artefacts import find_checkpoint

    cfg = resolve(ctx, config, sets)
    for key in ("balance", "skip"):
        cfg[key] = _names(cfg.get(key) if isinstance(cfg.get(key), list) else [cfg[key]] if cfg.get(key) else [])
    for key in ("segmenter", "bad", "real"):
        cfg[key] = str(cfg[key]) if cfg.get(key) is not None else None
    cfg["synth"] = str(synth_run)
    cc = CurateConfig.from_dict(cfg)
    cc.validate()
    if not synth_run.exists():
        raise UserError(f"SYNTH_RUN {synth_run}: not found")
    if not (synth_run / "manifest.csv" if synth_run.is_dir() else synth_run).is_file():
        raise UserError(f"SYNTH_RUN {synth_run}: no manifest.csv (expected a synthetic run or data run)")
    if cc.balance and cc.enabled("balance"):
        from echoseg.core.data.manifest import read_manifest

        columns = set(read_manifest(synth_run).columns)
        missing = [a for a in cc.balance if a not in columns]
        if missing:
            raise UserError(f"--balance: {', '.join(missing)} not a column of {synth_run}'s manifest.csv "
                            "(e.g. view, phase, sex, age, quality)")
    if cc.segmenter is not None:
        find_checkpoint(cc.segmenter, "best", "--segmenter")
    for option, value in (("--bad", cc.bad), ("--real", cc.real)):
        if value is not None and not Path(value).exists():
            raise UserError(f"{option} {value}: not found")
    if cc.real is not None and Path(cc.real).is_dir() and not (Path(cc.real) / "manifest.csv").is_file():
        raise UserError(f"--real {cc.real}: no manifest.csv (expected a data run)")
    if cc.mllm is not None:
        from echoseg.core.curate.mllm import check_mllm

        if Path(cc.mllm).expanduser().exists():
            cc.mllm = cfg["mllm"] = str(Path(cc.mllm).expanduser().resolve())
        check_mllm(cc.mllm)
    if cc.sheet_limit < 1:
        raise UserError(f"--sheet-limit must be >= 1, got {cc.sheet_limit}")
    inputs = {"synth": str(synth_run), "segmenter": cc.segmenter, "bad": cc.bad, "real": cc.real}
    run = open_run("curate", None, cfg, out=out, name=name, inputs=inputs)
    with run_context(run):
        curate_core(cc, run)
    emit_run_path(run.path)


def register(app: typer.Typer) -> None:
    """Add the `echoseg curate` command to the root app."""
    app.command("curate", epilog=_EPILOG)(curate)
