"""``echoseg eval seg``: score a training run's checkpoint on a data split, in a run directory of its own.

The scoring itself is the training stage's test evaluation (:mod:`echoseg.core.train.evaluate`), so a trained run's
``per_sample.csv`` and an ``eval seg`` run's are the same table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from echoseg.core.data.manifest import check_prompt_columns, prompt_columns
from echoseg.core.env import make_accelerator
from echoseg.core.models.artefacts import load_segmenter
from echoseg.core.train.evaluate import evaluate_into_run
from echoseg.core.train.recipe import TrainConfig


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
    result.update(train_run=str(Path(train_run).resolve()), checkpoint=which, model=info.get("name"),
                  data={"data": str(split.source), "samples": len(split.frame)})
    return result
