"""`echoseg eval ...`: segmentation metrics of a trained run, aFD of ED/ES detection, CLIP mask quality, and the
evaluation of pre-trained image-text encoders (zero-shot classification and grounding, linear probes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from echoseg.cli.options import (
    ConfigOpt,
    DeviceOpt,
    NameOpt,
    OutOpt,
    PrecisionOpt,
    SetOpt,
    emit_run_path,
    open_run,
    resolve,
)
from echoseg.core.runs import run_context

app = typer.Typer(help="Evaluate segmentations (Dice/IoU/HD95 of a trained run, aFD of ED/ES detection, CLIP mask "
                  "quality) and pre-trained image-text encoders (zero-shot classification and grounding, probes).",
                  no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option("--data", help="EchoNet-Dynamic folder (FileList.csv, VolumeTracings.csv, "
                                       "Videos/).")]


RunOpt = Annotated[Path | None, typer.Option(
    "--run", help="A segmentation run (echoseg train) or a distillation run (echoseg distill, its student): "
    "labels every frame.")]
TeacherOpt = Annotated[str | None, typer.Option(
    "--teacher", help="deeplabv3:CKPT (EchoNet-Dynamic DeepLabv3 checkpoint) or run:TRAIN_RUN: labels every frame.")]
MeanOpt = Annotated[list[str] | None, typer.Option(
    "--mean", help="deeplabv3 teacher input mean on 0..255 levels: once, or 3 times for R, G, B, or auto (the "
    "--data videos' own per-channel statistics). Default: EchoDFKD's constants, EchoNet-Dynamic's training-set "
    "statistics 32.09 32.59 33.38.")]
StdOpt = Annotated[list[str] | None, typer.Option(
    "--std", help="deeplabv3 teacher input std on 0..255 levels: once, or 3 times for R, G, B, or auto (as "
    "--mean). Default: EchoDFKD's constants, EchoNet-Dynamic's training-set statistics 50.13 50.49 51.35.")]
SaveMasksOpt = Annotated[bool, typer.Option(
    "--save-masks", help="With --run/--teacher: write the LV probabilities as masks/<FileName>.npz (uint8 0..255; "
    "reusable with --masks).")]
ModelBatchOpt = Annotated[int, typer.Option("--batch-size", help="Frames per forward pass.")]
SkipBadOpt = Annotated[bool, typer.Option(
    "--skip-bad", help="Leave out a damaged video or mask file (undecodable, or not FileList.csv's NumberOfFrames "
    "or size) and list it with its reason in problems.csv and summary.json, instead of stopping (exit 2).")]


def _evaluate(ctx: typer.Context, verb: str, config_type: Any, load: Callable[[Any], Any],
              stage: Callable[[Any, Any, Any], Any], *, out: Path | None, name: str | None, config: Path | None,
              sets: list[str] | None) -> None:
    """``eval <verb>``: resolve the options into ``config_type``, validate it, ``load`` its inputs (bad input stops
    here, before any run directory exists), then ``stage(config, run, inputs)`` in a new run."""
    cfg = resolve(ctx, config, sets)
    ec = config_type.from_dict(cfg)
    ec.validate()
    inputs = load(ec)
    run = open_run("eval", verb, cfg, out=out, name=name, inputs=ec.inputs())
    with run_context(run):
        stage(ec, run, inputs)
    emit_run_path(run.path)


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
    subsample: Annotated[int, typer.Option(
        "--subsample", help="Keep every K-th frame (0, K, 2K, ...; K >= 1): the area curve of --masks/--areas is "
        "subsampled, --run/--teacher label those frames only. Detected ED/ES frames map back to original frame "
        "indices, so aFD stays in original frames and ms (EchoDFKD's aFD versus sampling rate, Fig. 4). Recorded "
        "in summary.json; not with --save-masks.")] = 1,
    batch_size: ModelBatchOpt = 32,
    mean: MeanOpt = None,
    std: StdOpt = None,
    skip_bad: SkipBadOpt = False,
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

    --subsample K keeps every K-th frame (the reference maps to the nearest kept frame, the estimate back to K times
    its index): run it for K = 1, 2, 4, ... and `echoseg report` plots aFD against K (fig4_sampling.png).

    Example: echoseg eval afd --data toy/echonet --masks masks/ --split TEST --out runs/afd

    Example: echoseg eval afd --data EchoNet-Dynamic --teacher deeplabv3:deeplabv3_resnet50_random.pt --save-masks

    Example: echoseg eval afd --data toy/echonet --run runs/distill/b2l1 --split all --subsample 4
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.eval.afd import EvalAfdConfig, load_afd_inputs, run_afd

    _evaluate(ctx, "afd", EvalAfdConfig, load_afd_inputs, run_afd, out=out, name=name, config=config, sets=sets)


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
    skip_bad: SkipBadOpt = False,
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
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.eval.echoclip import EvalEchoclipConfig, load_echoclip_inputs, run_echoclip

    _evaluate(ctx, "echoclip", EvalEchoclipConfig, load_echoclip_inputs, run_echoclip, out=out, name=name,
              config=config, sets=sets)


@app.command("seg")
def seg(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="Prompts run (manifest.csv with prompt columns).")],
    run: Annotated[Path | None, typer.Option("--run", help="A training run (echoseg train).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Zero-shot instead of --run: a segmentation model (clipseg, cris) with --weights, "
        "evaluated as pre-trained, without training on echo.")] = None,
    model_config: Annotated[str | None, typer.Option(
        "--model-config", help="Zero-shot: the model's config (default base; cris: rn50 or rn101).")] = None,
    weights: Annotated[str | None, typer.Option(
        "--weights", help="Zero-shot: pre-trained weights, a local folder/file or a cached hub id (clipseg: "
        "CIDAS/clipseg-rd64-refined by default; cris: an original CRIS checkpoint).")] = None,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", help="Zero-shot: override the model config's input size.")] = None,
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
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Evaluate a trained run, or pre-trained weights zero-shot: per_sample.csv, summary.json and predictions.png
    in a new run directory.

    Example: echoseg eval seg --run runs/train/20240101-000000 --data runs/prompts-build/camus --prompt p4

    Example (zero-shot, Synthetic Boost Table 2): echoseg eval seg --model clipseg --weights CIDAS/clipseg-rd64-refined
    --data runs/prompts-build/camus --prompt p4
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.eval.seg import EvalSegConfig, load_seg_split, run_seg

    _evaluate(ctx, "seg", EvalSegConfig, load_seg_split, run_seg, out=out, name=name, config=config, sets=sets)


PretrainRunOpt = Annotated[str, typer.Option(
    "--run", help="A pretrain run (echoseg pretrain), or a released GLoRIA/MGCA .ckpt with --text-encoder.")]
PromptsDataOpt = Annotated[Path, typer.Option("--data", help="A prompts run (manifest.csv with the task's column).")]
TextEncoderOpt = Annotated[str | None, typer.Option(
    "--text-encoder", help="The Bio_ClinicalBERT folder a released .ckpt needs (tokenizer, config.json).")]
NBootOpt = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples of the 95% CIs (0: none).")]
CacheDirOpt = Annotated[Path | None, typer.Option("--cache-dir", help="Where preprocessed caches go.")]


@app.command("zeroshot")
def zeroshot(
    ctx: typer.Context,
    run: PretrainRunOpt,
    data: PromptsDataOpt,
    task: Annotated[str, typer.Option(
        "--task", help="view | phase | sex | quality | age | shape (classification), grounding, or a YAML task "
        "file (column + classes with values and prompts).")] = "view",
    split: Annotated[str, typer.Option("--split", help="The manifest split evaluated.")] = "test",
    structure: Annotated[str, typer.Option(
        "--structure", help="LV, MYO or LA: the structure a per-structure task (shape) reads and names.")] = "LV",
    prompt: Annotated[str | None, typer.Option(
        "--prompt", help="grounding: the manifest prompt column pK/pK_b as each structure's text (default: its "
        "name).")] = None,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best or last weights of a pretrain run.")]
    = "best",
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="grounding: the similarity threshold (default: the best mean Dice on the val split).")]
    = None,
    temperature: Annotated[float, typer.Option(
        "--temperature", help="classification: softmax temperature of the class probabilities.")] = 0.1,
    eval_size: Annotated[int, typer.Option(
        "--eval-size", help="grounding: side of the scored maps (bilinear) and masks (nearest).")] = 512,
    n_boot: NBootOpt = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 32,
    text_encoder: TextEncoderOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Zero-shot classification or grounding with a pre-trained image-text model (SynCXR's evaluation).

    Classification: cosine similarity of each image with the class prompts (several prompts per class averaged),
    softmax over the classes; AUC (one-vs-rest macro for more than two classes), F1 and accuracy with bootstrap
    95% CIs. Images without a label are left out and counted.

    Grounding (--task grounding): each structure's text against every image location, upsampled, thresholded and
    scored with Dice, IoU and HD95 against the masks, in eval seg's per_sample.csv schema.

    Writes per_sample.csv, summary.json and zeroshot.png (grounding.png). Compare runs with
    echoseg stats wilcoxon A B --metric prob_true (classification) or --metric dice (grounding).

    Example: echoseg eval zeroshot --run runs/pretrain/gloria --data runs/prompts-build/camus --task view
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.eval.zeroshot import EvalZeroshotConfig, load_zeroshot_inputs, run_zeroshot

    _evaluate(ctx, "zeroshot", EvalZeroshotConfig, load_zeroshot_inputs, run_zeroshot, out=out, name=name,
              config=config, sets=sets)


@app.command("probe")
def probe(
    ctx: typer.Context,
    run: PretrainRunOpt,
    data: PromptsDataOpt,
    task: Annotated[str, typer.Option(
        "--task", help="view, phase, sex, quality, age (<40, 40-59, 60-79, >=80) or shape (of --structure).")],
    fractions: Annotated[str, typer.Option(
        "--fractions", help="Training fractions in (0, 1], comma-separated; each draws whole patients, seeded and "
        "nested.")] = "0.01,0.1,1",
    structure: Annotated[str, typer.Option(
        "--structure", help="LV, MYO or LA: the structure whose row the shape task reads.")] = "LV",
    split: Annotated[str, typer.Option(
        "--split", help="Split to score: test or val (val also selects C, so it is optimistic).")] = "test",
    c: Annotated[float | None, typer.Option(
        "--c", help="LogisticRegression's C on standardised features (default: the lowest val log-loss in "
        "0.001..100).")] = None,
    max_iter: Annotated[int, typer.Option("--max-iter", help="LogisticRegression (lbfgs) iterations.")] = 1000,
    finetune: Annotated[bool, typer.Option(
        "--finetune/--no-finetune", help="Train the image backbone and a linear head (AdamW, early stopping) "
        "instead of a linear probe on frozen features.")] = False,
    epochs: Annotated[int, typer.Option("--epochs", help="--finetune: at most this many epochs.")] = 50,
    lr: Annotated[float, typer.Option("--lr", help="--finetune: AdamW learning rate.")] = 1e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="--finetune: AdamW weight decay.")] = 1e-6,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 32,
    early_stop_patience: Annotated[int, typer.Option(
        "--early-stop-patience", help="--finetune: stop after this many epochs without a lower val loss.")] = 10,
    n_boot: NBootOpt = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the patient subsets, fine-tuning and bootstrap.")] = 0,
    text_encoder: TextEncoderOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "no",
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Linear probe (or fine-tuning) of a pre-trained image encoder at several training fractions (SynCXR).

    Features of the frozen image backbone, a StandardScaler + LogisticRegression per fraction of the training
    patients (seeded, nested), scored on --split with AUC, F1 and accuracy and bootstrap 95% CIs.

    Writes per_sample.csv (one row per fraction and image), subsets.csv, summary.json and fractions.png.
    Compare two runs per fraction: echoseg stats wilcoxon A B --metric prob_true --key sample_id,fraction
    --group-by fraction

    Example: echoseg eval probe --run runs/pretrain/gloria --data runs/prompts-build/camus --task view
    --fractions 0.01,0.1,1
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.eval.probe import EvalProbeConfig, load_probe_inputs, run_probe

    _evaluate(ctx, "probe", EvalProbeConfig, load_probe_inputs, run_probe, out=out, name=name, config=config,
              sets=sets)


@app.command("ef")
def ef(
    ctx: typer.Context,
    data: DataOpt,
    masks: Annotated[Path | None, typer.Option(
        "--masks", help="Folder of per-video LV masks <FileName>.npz/.npy ((T, H, W) arrays, 0..255 or "
        "probabilities) or <FileName>.avi, every frame.")] = None,
    run_dir: RunOpt = None,
    teacher: TeacherOpt = None,
    split: Annotated[str, typer.Option(help="TRAIN, VAL, TEST or all (rows of FileList.csv to evaluate).")] = "TEST",
    volume: Annotated[str, typer.Option(
        help="disks: single-plane method of disks (Simpson), 20 disks across the long axis, as EchoNet-Dynamic's "
        "tracings; area-length: V = 8 A^2 / (3 pi L).")] = "disks",
    phase_source: Annotated[str, typer.Option(
        "--phase-source", help="detected: ED/ES frames from the LV area curve as eval afd (near the traced frames "
        "when there are some); tracings: the frames traced in VolumeTracings.csv (larger area = ED).")]
    = "detected",
    threshold: Annotated[float | None, typer.Option(
        help="A pixel is LV when its value is above this. With --masks: default 127 for integer masks (uint8, "
        "AVI), 0.5 for float (probabilities) and boolean masks; with --run/--teacher: a probability, default "
        "0.5.")] = None,
    save_masks: SaveMasksOpt = False,
    batch_size: ModelBatchOpt = 32,
    mean: MeanOpt = None,
    std: StdOpt = None,
    skip_bad: SkipBadOpt = False,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Ejection fraction from the LV masks at the ED and ES frames, against FileList.csv's EF.

    Per video: the ED and ES frames (--phase-source), then EDV and ESV from the masks of those two frames
    (--volume), EF = 100 (EDV - ESV) / EDV.

    The long axis is the mask's principal axis; its length is the mask's extent along it (apex to mitral plane).

    Volumes are in mL when FileList.csv gives the pixel size in cm (PhysicalDeltaY/X, written by data import-dicom
    from the ultrasound region calibration and by data toy echonet), else in cubic pixels; EF needs no calibration.

    Videos without a reference EF (DICOM imports) are scored alone and counted.

    Masks come from --masks, or a model run over every frame of every selected video: --run (an echoseg
    segmentation run) or --teacher (deeplabv3:CKPT or run:TRAIN_RUN); --save-masks keeps its masks.

    Writes per_video.csv, summary.json (MAE, RMSE, R2 = 1 - SS_res/SS_tot, Bland-Altman bias and limits of
    agreement of EF), bland_altman.png and scatter.png.

    Example: echoseg eval ef --data toy/echonet --masks toy/echonet/Masks --split all --out runs/ef

    Example: echoseg eval ef --data EchoNet-Dynamic --teacher deeplabv3:deeplabv3_resnet50_random.pt --volume
    area-length
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.eval.ef import EvalEfConfig, load_ef_inputs, run_ef

    _evaluate(ctx, "ef", EvalEfConfig, load_ef_inputs, run_ef, out=out, name=name, config=config, sets=sets)
