"""`echoseg synth ...`: mask-conditioned diffusion (train, generate), text-to-image generation and synthetic reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from echoseg.cli.options import (
    CacheDirOpt,
    ConfigOpt,
    DeviceOpt,
    NameOpt,
    OutOpt,
    PrecisionOpt,
    ReportToOpt,
    ResumeOpt,
    SeedOpt,
    SetOpt,
    emit_run_path,
    explicit_params,
    open_run,
    resolve,
    resumed,
)
from echoseg.core.config import config_name_or_file
from echoseg.core.errors import UserError
from echoseg.core.models import list_configs
from echoseg.core.runs import run_context

app = typer.Typer(
    help="Synthetic echo images and reports: train a label-map-conditioned diffusion model, generate SDM CAMUS data "
    "sets (perturbed label maps, optionally attribute-balanced) or text-to-image with a local diffusers pipeline; "
    "write entity-balanced, verified synthetic reports (SynCXR).\n\n"
    "Example: MODEL=$(echoseg synth train --data $CAMUS --config tiny --size 64 --steps 200)",
    no_args_is_help=True,
)

PRECISIONS = ("no", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# Options a resumed run may change (everything else must match the interrupted invocation).
TRAIN_RESUMABLE = ("steps", "device", "checkpoint_every", "sample_every", "report_to")
GENERATE_RESUMABLE = ("device", "batch_size")
# Options a resumed run neither checks nor records; any other explicit option must equal the run's own.
_BOOKKEEPING = ("resume", "out", "name", "config", "sets", "cache_dir")
_DIFFUSION_CONFIGS = " | ".join(list_configs("diffusion"))


def _common(cfg: dict[str, Any]) -> None:
    if cfg["precision"] not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {cfg['precision']!r}")
    if cfg["device"] not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {cfg['device']!r}")
    if cfg["device"] == "cuda" or cfg["precision"] == "fp16":
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {cfg['device']} --precision {cfg['precision']}: needs a CUDA GPU; none found")


def _resumed(ctx: typer.Context, resume: Path, allowed: tuple[str, ...], command: str) -> dict[str, Any]:
    """The run's own configuration; explicit options must match it unless they are in ``allowed``."""
    return resumed(ctx, resume, command, allowed, ignored=_BOOKKEEPING, same_ok=True)


def _at_least_one(cfg: dict[str, Any], *keys: str) -> None:
    """UserError naming the first of the options ``keys`` whose value is below 1."""
    for key in keys:
        if int(cfg[key]) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")


def _open(verb: str, cfg: dict[str, Any], out: Path | None, name: str | None, inputs: dict, resume: Path | None):
    """open_run (safe under `accelerate launch`: the main process creates the run, the others attach)."""
    return open_run("synth", verb, cfg, out=out, name=name, inputs=inputs, resume=resume)


@app.command("train")
def train(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Data or prompts run (or manifest.csv) of CAMUS or SDM CAMUS (image, label map) pairs.")] = None,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels (Echo from noise: 256).")] = 256,
    config: Annotated[str | None, typer.Option(
        "--config", help=f"Model config name ({_DIFFUSION_CONFIGS}), or a YAML/JSON file of option values.")] = None,
    model_config: Annotated[str, typer.Option(
        "--model-config", help=f"Model config name: {_DIFFUSION_CONFIGS}.")] = "tiny",
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps (default: the config's).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step and process.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="AdamW learning rate (default: the config's).")] = None,
    cond_dropout: Annotated[float, typer.Option(
        "--cond-dropout", help="Probability of replacing the label map by the all-zero null map (enables "
        "classifier-free guidance at generation).")] = 0.0,
    ema_decay: Annotated[float | None, typer.Option("--ema-decay", help="EMA decay (default: the config's).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(
        "--checkpoint-every", help="Steps between checkpoints (checkpoints/latest.pt).")] = None,
    sample_every: Annotated[int | None, typer.Option(
        "--sample-every", help="Steps between sample grids (0: only at the end).")] = None,
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
    """Train a diffusers UNet2DModel conditioned on one-hot SDM label maps (concatenated to the noisy image).

    CAMUS label maps become SDM sector maps (0 outside the cone, 1 LV, 2 cone background, 3 MYO, 4 LA); the cone
    is derived from the image. Writes checkpoints/latest.pt, samples/step-*.png, metrics.jsonl and the EMA model
    as a diffusers-style folder model/ (unet/, scheduler/, conditioning.json). Continue with --resume RUN
    (--steps may be raised then).

    Example: echoseg synth train --data runs/data-toy-camus/demo --config tiny --size 64 --steps 200
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.models.diffusion import get_config
    from echoseg.core.synth.train import SynthTrainConfig
    from echoseg.core.synth.train import train as run_training

    if resume is not None:
        cfg = _resumed(ctx, resume, TRAIN_RESUMABLE, "synth train")
    else:
        config_file, mc = config_name_or_file(config, model_config)
        cfg = resolve(ctx, config_file, sets, exclude=("model_config", "cache_dir"))
        cfg["model_config"] = mc
        if cfg.get("data") is None:
            raise UserError("--data is required (a data or prompts run directory, or a manifest.csv)")
        cfg["data"] = str(Path(cfg["data"]).resolve())
    _common(cfg)
    get_config(cfg["model_config"])
    tc = SynthTrainConfig.from_dict(cfg)
    tc.validate()
    from echoseg.core.data.manifest import read_manifest

    read_manifest(cfg["data"])
    run = _open("train", cfg, out, name, {"data": cfg["data"]}, resume)
    with run_context(run):
        run_training(run, cfg["data"], tc, cache_dir=cache_dir)
    emit_run_path(run.path)


@app.command("generate")
def generate(
    ctx: typer.Context,
    model: Annotated[Path | None, typer.Option(
        "--model", help="A `synth train` run (or its model/ folder): sample from perturbed label maps.")] = None,
    masks: Annotated[Path | None, typer.Option(
        "--masks", help="With --model: data run (or manifest.csv) whose train/val label maps are perturbed.")] = None,
    count: Annotated[int | None, typer.Option(
        "--count", help="Images to generate (default: every label map x --copies-per-mask).")] = None,
    copies_per_mask: Annotated[int, typer.Option(
        "--copies-per-mask", help="Perturbed copies per real label map (Echo from noise: 5).")] = 5,
    sampler: Annotated[str, typer.Option("--sampler", help="ddim | ddpm | dpm-solver.")] = "ddim",
    steps: Annotated[int, typer.Option("--steps", help="Denoising steps.")] = 50,
    guidance: Annotated[float | None, typer.Option(
        "--guidance", help="Classifier-free guidance scale (default 1 = none with --model; 4 with --pipeline).")]
    = None,
    balance: Annotated[str | None, typer.Option(
        "--balance", help="Comma-separated attributes to balance: view,phase,sex,age,quality (age in bins).")]
    = None,
    tau_max: Annotated[int | None, typer.Option(
        "--tau-max", help="With --balance: cap on the count of any one attribute value.")] = None,
    pipeline: Annotated[Path | None, typer.Option(
        "--pipeline", help="A local diffusers pipeline folder: text-to-image from --prompts instead.")] = None,
    prompts: Annotated[Path | None, typer.Option(
        "--prompts", help="With --pipeline: prompts file (.txt one a line, .csv with a prompt column, .json).")]
    = None,
    count_per_prompt: Annotated[int, typer.Option("--count-per-prompt", help="With --pipeline: images per prompt.")]
    = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per sampling batch and process.")] = 8,
    regenerate_bad: Annotated[Path | None, typer.Option(
        "--regenerate-bad", help="Known-bad exemplars (a folder of images or a run with manifest.csv): re-query a "
        "sample with a new seed while its cosine similarity to any of them exceeds --bad-sim (SynCXR).")] = None,
    bad_sim: Annotated[float, typer.Option(
        "--bad-sim", help="With --regenerate-bad: a sample passes when its similarity is <= this.")] = 0.5,
    max_tries: Annotated[int, typer.Option(
        "--max-tries", help="With --regenerate-bad: tries per sample in all; a sample that never passes is given up "
        "(left out, listed in regenerate.csv).")] = 3,
    encoder: Annotated[str | None, typer.Option(
        "--encoder", help="With --regenerate-bad: image embeddings pixels[:N] | open_clip:PATH | hf:PATH_OR_ID (as "
        "`curate --encoder`).")] = None,
    center: Annotated[bool, typer.Option(
        "--center/--no-center", help="With --regenerate-bad: centre embeddings on the first pass's mean (as "
        "curate).")] = True,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Where preprocessed caches go (default: $ECHOSEG_CACHE/samples, "
        "else ~/.cache/echoseg/samples).")] = None,
    precision: PrecisionOpt = "no",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    resume: ResumeOpt = None,
    out: OutOpt = None,
    name: NameOpt = None,
    sets: SetOpt = None,
) -> None:
    """Generate synthetic echo images: an SDM CAMUS data set (--model, --masks) or text-to-image (--pipeline).

    With --model: each real label map is perturbed (affine + elastic, kept in the cone) and an image is sampled
    for it; writes <VIEW>_<PHASE>/{images,annotations}/<split>/patientNNNN_<VIEW>_<PHASE>_<split>_<k>.png,
    plan.csv, manifest.csv (source attributes, perturbation, seed) and balance.json. With --pipeline: images/,
    prompts_manifest.csv and manifest.csv, an image-report corpus (`synth reports`' reports.csv as --prompts keeps
    report_id, split and entities; `pretrain --data RUN --text report` takes the run). Sample i uses seed --seed + i;
    --resume RUN skips what exists and gives the same images. Under `accelerate launch` (give --out) every process
    generates its share.

    With --regenerate-bad DIR every sample is embedded (--encoder) and compared with the known-bad images; while its
    cosine similarity exceeds --bad-sim it is generated again with a new seed, up to --max-tries tries. A kept sample
    never exceeds --bad-sim; one that never passes is given up: left out of the manifests, its attempts kept in
    rejected/ and listed in regenerate.csv (tries, seeds, similarities) and summary.json.

    Example: echoseg synth generate --model $MODEL --masks $CAMUS --copies-per-mask 5 --balance view,sex --tau-max 400
    """
    if resume is not None:
        cfg = _resumed(ctx, resume, GENERATE_RESUMABLE, "synth generate")
    else:
        cfg = resolve(ctx, None, sets, exclude=("cache_dir",))
        for key in ("model", "masks", "pipeline", "prompts", "regenerate_bad"):
            cfg[key] = str(Path(cfg[key]).resolve()) if cfg.get(key) else None
        needs = sorted({"bad_sim", "max_tries", "encoder", "center"} & explicit_params(ctx))
        if needs and not cfg.get("regenerate_bad"):
            raise UserError(f"--{needs[0].replace('_', '-')} needs --regenerate-bad DIR (the known-bad images)")
    _common(cfg)
    if cfg.get("guidance") is not None and float(cfg["guidance"]) < 0:
        raise UserError(f"--guidance must be >= 0 (1: no guidance), got {cfg['guidance']}")
    text_mode = cfg.get("pipeline") is not None
    if text_mode:
        if cfg.get("model") or cfg.get("masks") or cfg.get("balance"):
            raise UserError("--pipeline (text-to-image) cannot be combined with --model, --masks or --balance")
        if not cfg.get("prompts"):
            raise UserError("--pipeline needs --prompts FILE")
        _generate_text(cfg, out, name, resume)
    else:
        if not cfg.get("model") or not cfg.get("masks"):
            raise UserError("give --model SYNTH_RUN and --masks DATA_RUN (or --pipeline DIR and --prompts FILE)")
        if cfg.get("prompts"):
            raise UserError("--prompts needs --pipeline (text-to-image)")
        _generate_masks(cfg, out, name, resume, cache_dir)


def _generate_masks(cfg: dict, out: Path | None, name: str | None, resume: Path | None, cache_dir: Path | None) -> None:
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.data.manifest import read_manifest
    from echoseg.core.models.diffusion import resolve_model_dir
    from echoseg.core.synth.balance import BALANCE_ATTRIBUTES
    from echoseg.core.synth.generate import generate as run_generate
    from echoseg.core.synth.sample import SAMPLERS

    resolve_model_dir(cfg["model"])
    read_manifest(cfg["masks"])
    if cfg["sampler"] not in SAMPLERS:
        raise UserError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {cfg['sampler']!r}")
    balance = tuple(a.strip() for a in (cfg.get("balance") or "").split(",") if a.strip())
    bad = [a for a in balance if a not in BALANCE_ATTRIBUTES]
    if bad:
        raise UserError(f"--balance: unknown attribute(s) {', '.join(bad)} (choose from "
                        f"{', '.join(BALANCE_ATTRIBUTES)})")
    if cfg.get("tau_max") is not None and not balance:
        raise UserError("--tau-max needs --balance")
    _at_least_one(cfg, "steps", "batch_size", "copies_per_mask")
    guidance = 1.0 if cfg.get("guidance") is None else float(cfg["guidance"])
    gate = _gate(cfg)
    inputs = {"model": cfg["model"], "masks": cfg["masks"], "regenerate_bad": cfg.get("regenerate_bad")}
    run = _open("generate", cfg, out, name, inputs, resume)
    with run_context(run):
        run_generate(
            run, cfg["model"], cfg["masks"], count=cfg.get("count"), copies_per_mask=int(cfg["copies_per_mask"]),
            sampler=cfg["sampler"], steps=int(cfg["steps"]), guidance=guidance, balance=balance,
            tau_max=cfg.get("tau_max"), batch_size=int(cfg["batch_size"]), seed=int(cfg["seed"]),
            precision=cfg["precision"], device=cfg["device"], cache_dir=cache_dir, gate=gate,
            max_tries=int(cfg.get("max_tries") or 1),
        )
    emit_run_path(run.path)


def _generate_text(cfg: dict, out: Path | None, name: str | None, resume: Path | None) -> None:
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.synth.text2img import generate_from_prompts, read_prompts

    if not (Path(cfg["pipeline"]) / "model_index.json").is_file():
        raise UserError(f"--pipeline {cfg['pipeline']}: not a diffusers pipeline folder (no model_index.json)")
    from echoseg.core.io import read_json

    try:
        index = read_json(Path(cfg["pipeline"]) / "model_index.json")
    except (OSError, ValueError) as exc:
        raise UserError(f"--pipeline {cfg['pipeline']}: model_index.json is not valid JSON "
                        f"({str(exc).splitlines()[0][:160]})") from None
    if not isinstance(index, dict) or "_class_name" not in index:
        raise UserError(f"--pipeline {cfg['pipeline']}: model_index.json names no pipeline class (_class_name)")
    read_prompts(cfg["prompts"])
    _at_least_one(cfg, "steps", "batch_size", "count_per_prompt")
    guidance = 4.0 if cfg.get("guidance") is None else float(cfg["guidance"])
    gate = _gate(cfg)
    inputs = {"pipeline": cfg["pipeline"], "prompts": cfg["prompts"], "regenerate_bad": cfg.get("regenerate_bad")}
    run = _open("generate", cfg, out, name, inputs, resume)
    with run_context(run):
        generate_from_prompts(run, cfg["pipeline"], cfg["prompts"], count_per_prompt=int(cfg["count_per_prompt"]),
                              guidance=guidance, steps=int(cfg["steps"]), batch_size=int(cfg["batch_size"]),
                              seed=int(cfg["seed"]), precision=cfg["precision"], device=cfg["device"], gate=gate,
                              max_tries=int(cfg.get("max_tries") or 1))
    emit_run_path(run.path)


def _gate(cfg: dict):
    """The known-bad gate of --regenerate-bad (None without it), built before the run opens: a missing folder or
    an encoder that does not load exits 2 with nothing written."""
    if not cfg.get("regenerate_bad"):
        return None
    # deferred: the curate stage (encoders, similarity) loads only when the option is given
    from echoseg.core.curate.gate import BadImageGate

    _at_least_one(cfg, "max_tries")
    if not Path(cfg["regenerate_bad"]).exists():
        raise UserError(f"--regenerate-bad {cfg['regenerate_bad']}: not found")
    return BadImageGate(cfg["regenerate_bad"], cfg.get("encoder"), float(cfg["bad_sim"]),
                        center=bool(cfg.get("center", True)), device=cfg["device"])


_REPORTS_EPILOG = """The SynCXR-style chain, entities -> reports -> images -> curation -> pre-training corpus (bash):

  REPORTS=$(echoseg synth reports --entities $PROMPTS --writer llm:/models/Llama-3.1-8B-Instruct --count 20000)

  IMAGES=$(echoseg synth generate --pipeline /models/sd-echo --prompts $REPORTS/reports.csv)

then curate the images and pre-train on the image-report pairs (see README, Synthetic reports).

Toy data: echoseg synth reports --entities $PROMPTS --count 200 --tau-max 120
"""


@app.command("reports", epilog=_REPORTS_EPILOG)
def reports(
    ctx: typer.Context,
    entities: Annotated[Path | None, typer.Option(
        "--entities", help="A prompts (or data) run whose attribute values are the entities; with --ner a prompts "
        "run (its reports.csv) or a reports file (.csv with a report or text column, .txt one a line).")] = None,
    ner: Annotated[str | None, typer.Option(
        "--ner", help="A local token-classification model folder (e.g. RaTE-NER-Deberta): extract the entities from "
        "free-text reports instead; its entity groups are the categories.")] = None,
    writer: Annotated[str, typer.Option(
        "--writer", help="template (deterministic wordings, no model) or llm:PATH (a local transformers causal LM "
        "folder; its chat template if it has one).")] = "template",
    count: Annotated[int, typer.Option("--count", help="Entity sets to draw, one report each.")] = 1000,
    sampling: Annotated[str, typer.Option(
        "--sampling", help="balanced (uniform draws, an entity at --tau-max re-drawn; SynCXR) or natural (the real "
        "frequencies, uncapped: the paper's ablation).")] = "balanced",
    tau_max: Annotated[int | None, typer.Option(
        "--tau-max", help="Balanced: the most reports any one entity may appear in (default: the smallest cap that "
        "fills every category).")] = None,
    per_category: Annotated[int, typer.Option(
        "--per-category", help="Entities a report draws from each NER category (attribute categories: one).")] = 1,
    min_count: Annotated[int, typer.Option(
        "--min-count", help="Leave out entities named by fewer real reports than this.")] = 1,
    max_tries: Annotated[int, typer.Option(
        "--max-tries", help="Writes per report until its extracted entities equal the sampled ones; then dropped.")]
    = 5,
    splits: Annotated[str, typer.Option(
        "--splits", help="Real splits whose reports form the inventory (the test split stays unseen).")] = "train,val",
    val_fraction: Annotated[float, typer.Option(
        "--val-fraction", help="Share of the verified reports assigned to val (seeded); the rest train.")] = 0.1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Reports per generation / NER batch.")] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="LLM: tokens per report at most.")] = 160,
    temperature: Annotated[float, typer.Option(
        "--temperature", help="LLM sampling temperature (0: greedy, so a re-query repeats itself).")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", help="LLM nucleus sampling.")] = 0.95,
    config: ConfigOpt = None,
    precision: PrecisionOpt = "no",
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = None,
    name: NameOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write a synthetic report corpus from balanced entity sets, each report verified (SynCXR).

    1. Entity inventory: the attribute values of --entities (view, phase, sex, age band, quality, shape per
    structure), or with --ner the entities a token-classification model finds in its free-text reports.

    2. Entity sets: each report draws its entities category by category; a running frequency f(e) is kept and an
    entity with f(e) >= --tau-max is re-drawn while the rest of the set stays (--sampling natural: the real
    frequencies instead). Seeded.

    3. A writer per set, checked by extracting the entities again (word-boundary vocabulary matching, or the NER
    model); a mismatch is written again up to --max-tries, a report that never matches is dropped and counted.

    Writes entities.csv (entity, category, count, natural, sampled, kept), entities.png (the long tail),
    balance.png (before/after), reports.csv (report_id, split, text, prompt, entities, extracted, tries, seed, and
    the attribute columns), dropped.csv and summary.json (frequency tables real/natural/sampled/kept, max/min
    spread, verification statistics). reports.csv is the --prompts file of `synth generate --pipeline`.

    Example: echoseg synth reports --entities runs/prompts-build/camus --count 2000 --tau-max 600
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.synth.reports import SynthReportsConfig, prepare, run_reports

    cfg = resolve(ctx, config, sets)
    cfg["entities"] = str(Path(cfg["entities"]).resolve()) if cfg.get("entities") else ""
    if cfg.get("ner") and Path(cfg["ner"]).expanduser().exists():  # a local folder (not a hub id): record it absolute
        cfg["ner"] = str(Path(cfg["ner"]).expanduser().resolve())
    llm = str(cfg["writer"])[len("llm:"):].strip() if str(cfg["writer"]).startswith("llm:") else ""
    if llm and Path(llm).expanduser().exists():
        cfg["writer"] = "llm:" + str(Path(llm).expanduser().resolve())
    _common(cfg)
    rc = SynthReportsConfig.from_dict(cfg)
    inputs = prepare(rc)
    run = _open("reports", cfg, out, name, {"entities": cfg["entities"]}, None)
    with run_context(run):
        run_reports(rc, run, inputs)
    emit_run_path(run.path)
