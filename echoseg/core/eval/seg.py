"""``echoseg eval seg``: score a training run's checkpoint, or pre-trained weights without any training (zero-shot
VLSMs, Synthetic Boost's Table 2 zero-shot row), on a data split, in a run directory of its own.

The scoring itself is the training stage's test evaluation (:mod:`echoseg.core.train.evaluate`), so a trained run's
``per_sample.csv`` and an ``eval seg`` run's are the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echoseg.core.config import StageConfig, check_all
from echoseg.core.data.manifest import SplitData, check_prompt_columns, load_split, prompt_columns
from echoseg.core.env import make_accelerator
from echoseg.core.errors import require_dir
from echoseg.core.models import build_model, get_config, list_models
from echoseg.core.models.artefacts import find_checkpoint, load_segmenter
from echoseg.core.models.weights import resolve_weights
from echoseg.core.runs import Run
from echoseg.core.train.evaluate import evaluate_into_run
from echoseg.core.train.recipe import TrainConfig

CHECKPOINTS = ("best", "last")


@dataclass
class EvalSegConfig(StageConfig):
    """Options of `eval seg` (recorded in run.json); unset (None) values take the training run's."""

    run: str = ""  # the training run (--run); or, for zero-shot evaluation, model + weights
    model: str | None = None  # zero-shot: a segmentation model of the registry (clipseg, cris)
    model_config: str | None = None  # zero-shot: its config (default base)
    weights: str | None = None  # zero-shot: pre-trained weights (a local folder/file or a cached hub id)
    input_size: int | None = None  # zero-shot: override the config's input size
    data: str = ""  # a prompts run
    split: str = "test"
    prompt: str | None = None
    checkpoint: str = "best"
    threshold: float | None = None
    eval_size: int | None = None
    batch_size: int | None = None
    save_masks: bool = False
    cache_dir: str | None = None
    device: str = "auto"
    precision: str = "no"

    def validate(self) -> None:
        """Raise UserError on out-of-range values, naming the option (the rest is checked against the run's own
        configuration when it is loaded)."""
        segmenters = list_models("segmentation")
        check_all([
            (self.checkpoint in CHECKPOINTS,
             f"--checkpoint must be {' or '.join(CHECKPOINTS)}, got {self.checkpoint!r}"),
            (bool(self.run) != bool(self.model), "give --run (a training run) or --model with --weights (zero-shot "
             "evaluation of pre-trained weights), not both"),
            (self.model is None or self.model in segmenters,
             f"--model {self.model!r}: not a segmentation model (known: {', '.join(segmenters)})"),
            (self.model is not None or (self.weights is None and self.model_config is None),
             "--weights and --model-config go with --model (zero-shot evaluation)"),
        ])
        if self.prompt is not None:
            prompt_columns(self.prompt)

    def inputs(self) -> dict[str, Any]:
        """The inputs recorded in run.json."""
        source = {"run": self.run} if self.run else ({"weights": self.weights} if self.weights and Path(
            self.weights).exists() else {})
        return {**source, "data": self.data}


def load_seg_split(cfg: EvalSegConfig) -> SplitData:
    """Check the training run and its checkpoint, and read the split to score.

    Raises:
        UserError: a missing run, checkpoint or split, naming its option.
    """
    if cfg.run:
        require_dir(cfg.run, "--run")
        find_checkpoint(cfg.run, cfg.checkpoint)
    else:
        get_config(str(cfg.model), cfg.model_config or "base")
        if cfg.weights and not Path(cfg.weights).expanduser().exists():
            resolve_weights(cfg.weights, required=(), what="--weights")  # a hub id: cached, or a one-line error
    return load_split(cfg.data, cfg.split, "--data")


def run_seg(cfg: EvalSegConfig, run: Run, split: SplitData | None = None) -> dict[str, Any]:
    """``echoseg eval seg``: score the training run's checkpoint into ``run`` (per_sample.csv, summary.json,
    predictions.png, masks/ with ``save_masks``).

    Args:
        split: from :func:`load_seg_split` (loaded here when None; the CLI loads it before opening the run, so
            that bad input leaves no run directory).
    Returns:
        The summary (empty on a non-main process of a multi-process launch).
    """
    if split is None:
        cfg.validate()
        split = load_seg_split(cfg)
    options = dict(prompt=cfg.prompt, threshold=cfg.threshold, eval_size=cfg.eval_size, batch_size=cfg.batch_size,
                   device=cfg.device, precision=cfg.precision, cache_dir=cfg.cache_dir, save_masks=cfg.save_masks)
    if cfg.run:
        summary = evaluate_trained_run(cfg.run, split, run, which=cfg.checkpoint, **options)
    else:
        summary = evaluate_weights(str(cfg.model), cfg.model_config or "base", cfg.weights, split, run,
                                   input_size=cfg.input_size, **options)
    run.write_summary(summary)
    return summary


def evaluate_trained_run(
    train_run: str | Path,
    split,
    run,
    *,
    prompt: str | None = None,
    which: str = "best",
    threshold: float | None = None,
    eval_size: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "no",
    cache_dir: str | None = None,
    save_masks: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """``echoseg eval seg``: evaluate a training run's checkpoint on ``split`` (a ``SplitData``) into ``run``.

    Unset options take the training run's values (prompt, threshold, eval size, batch size).
    """
    model, info = load_segmenter(train_run, which)
    cfg = TrainConfig.from_dict(info.get("train_config", {}))
    result = _score(model, cfg, split, run, prompt, threshold, eval_size, batch_size, device, precision, cache_dir,
                    save_masks, progress)
    if result:
        result.update(train_run=str(Path(train_run).resolve()), checkpoint=which, model=info.get("name"))
    return result


def evaluate_weights(model_name: str, model_config: str, weights: str | None, split, run, *,
                     input_size: int | None = None, prompt: str | None = None, threshold: float | None = None,
                     eval_size: int | None = None, batch_size: int | None = None, device: str = "auto",
                     precision: str = "no", cache_dir: str | None = None, save_masks: bool = False,
                     progress: bool = True) -> dict[str, Any]:
    """Zero-shot: score pre-trained ``weights`` of a registry segmenter, untrained on echo, on ``split`` (the
    training recipe's evaluation defaults: prompt p7, threshold 0.5, 512 px)."""
    model = build_model(model_name, model_config, weights=weights, input_size=input_size)
    cfg = TrainConfig(model=model_name, model_config=model_config, weights=weights, input_size=input_size)
    result = _score(model, cfg, split, run, prompt, threshold, eval_size, batch_size, device, precision, cache_dir,
                    save_masks, progress)
    if result:
        result.update(zero_shot=True, weights=weights, model=model_name, model_config=model_config)
    return result


def _score(model, cfg: TrainConfig, split, run, prompt, threshold, eval_size, batch_size, device, precision,
           cache_dir, save_masks, progress) -> dict[str, Any]:
    """Evaluate ``model`` with ``cfg`` (a training config) updated by the options that are set."""
    cfg.prompt = prompt or cfg.prompt
    cfg.threshold = cfg.threshold if threshold is None else threshold
    cfg.eval_size = cfg.eval_size if eval_size is None else eval_size
    cfg.batch_size = cfg.batch_size if batch_size is None else batch_size
    cfg.device, cfg.precision, cfg.cache_dir = device, precision, cache_dir
    cfg.validate()
    cols = prompt_columns(cfg.prompt)
    check_prompt_columns(split.frame, cols, f"--data {split.source}", model.uses_text)
    accelerator = make_accelerator(cfg.precision, cfg.device)
    model.to(accelerator.device)
    result = evaluate_into_run(model, split, cols, cfg, accelerator, run, save_masks=save_masks, progress=progress)
    if result is None:  # a non-main process of a multi-process launch: the main one wrote the run
        return {}
    result.update(data={"data": str(split.source), "samples": len(split.frame)})
    return result
