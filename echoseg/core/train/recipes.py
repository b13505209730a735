"""Named training recipes: Synthetic Boost as its paper describes it (``sb-paper``) and as its released configs set
it (``sb-code``).

Both recipes share AdamW (weight decay 1e-3), ReduceLROnPlateau (factor 0.1, patience 5), gradient-norm clipping at
0.5, 16-bit mixed precision, at least 10 and at most 1000 epochs, and the paper's batch sizes (128 for CLIPSeg, 32
for CRIS). Where the paper and the released configs disagree:

- CLIPSeg learning rate: 2e-3 in the paper, 2e-4 in the released config (CRIS: 2e-5 in both);
- CRIS mask threshold: 0.5 in the paper, 0.35 in the released config (CLIPSeg: 0.5 in both);
- BCE weight (Dice weight 1): 0.25 in the paper, 0.2 in the released configs;
- CRIS start: the released config loads the RefCOCO CRIS checkpoint, so ``sb-code`` requires it as ``--weights``
  (unless ``--init-from`` starts the run from another run); ``sb-paper`` takes any accepted CRIS/CLIP weights.

A recipe fills only the options the user left alone: defaults < recipe < ``--config`` file < explicit options <
``--set``. 16-bit mixed precision (``fp16``) is applied only when the run trains on a GPU; on a CPU the recipe
leaves ``--precision no`` (float16 autocast on a CPU is slow and not what the recipe measures).
"""

from __future__ import annotations

from typing import Any

from echoseg.core.errors import UserError

RECIPES = ("sb-paper", "sb-code")
RECIPE_MODELS = ("clipseg", "cris")

# Shared by both recipes (the paper and the released trainer config agree on these).
_COMMON: dict[str, Any] = {
    "weight_decay": 1e-3, "plateau_factor": 0.1, "plateau_patience": 5, "grad_clip": 0.5, "precision": "fp16",
    "min_epochs": 10, "epochs": 1000, "dice_weight": 1.0,
}
_BATCH = {"clipseg": 128, "cris": 32}
_VALUES: dict[str, dict[str, dict[str, Any]]] = {
    "sb-paper": {
        "clipseg": {"lr": 2e-3, "threshold": 0.5, "bce_weight": 0.25},
        "cris": {"lr": 2e-5, "threshold": 0.5, "bce_weight": 0.25},
    },
    "sb-code": {
        "clipseg": {"lr": 2e-4, "threshold": 0.5, "bce_weight": 0.2},
        "cris": {"lr": 2e-5, "threshold": 0.35, "bce_weight": 0.2},
    },
}
REFCOCO_HINT = ("the released CRIS config starts from the RefCOCO CRIS checkpoint: give it with --weights "
                "(e.g. cris_r50_refcoco.pth, or a folder from `echoseg models convert-cris`)")


def recipe_values(recipe: str, model: str) -> dict[str, Any]:
    """Every option value ``recipe`` sets for ``model`` (before the GPU-only precision rule).

    Raises:
        UserError: an unknown recipe, or a model the recipe does not describe.
    """
    if recipe not in RECIPES:
        raise UserError(f"--recipe {recipe!r}: unknown (known: {', '.join(RECIPES)})")
    if model not in RECIPE_MODELS:
        raise UserError(f"--recipe {recipe}: describes {' and '.join(RECIPE_MODELS)} training, not --model {model}")
    return {**_COMMON, "batch_size": _BATCH[model], **_VALUES[recipe][model]}


def apply_recipe(cfg: dict[str, Any], given: set[str], gpu: bool) -> dict[str, Any]:
    """``cfg`` with ``cfg["recipe"]``'s values filled into every option not in ``given``.

    Args:
        cfg: the resolved configuration of `echoseg train` (``recipe`` None: returned unchanged).
        given: options the user set (command line, ``--config`` file or ``--set``); they keep their values.
        gpu: whether the run trains on a GPU (16-bit mixed precision applies only then).
    Returns:
        A new dict with the recipe's values and ``recipe_values`` (what the recipe set, recorded in run.json).
    Raises:
        UserError: unknown recipe or model, or ``sb-code`` CRIS without ``--weights`` (and without
            ``--init-from``, whose run already started from the checkpoint).
    """
    recipe = cfg.get("recipe")
    if recipe is None:
        return dict(cfg)
    values = recipe_values(recipe, str(cfg.get("model")))
    if not gpu:
        values["precision"] = "no"
    if recipe == "sb-code" and cfg.get("model") == "cris" and not cfg.get("weights") and not cfg.get("init_from"):
        raise UserError(f"--recipe sb-code --model cris: {REFCOCO_HINT}")
    applied = {k: v for k, v in values.items() if k not in given}
    return {**cfg, **applied, "recipe_values": applied}


def describe(cfg: dict[str, Any], gpu: bool) -> str | None:
    """One log line naming the recipe and the values it set (None without a recipe)."""
    applied = cfg.get("recipe_values")
    if not cfg.get("recipe") or applied is None:
        return None
    shown = ", ".join(f"{k} {v}" for k, v in applied.items())
    note = "" if gpu or "precision" not in applied else " (16-bit mixed precision applies on a GPU only)"
    return f"recipe {cfg['recipe']}: {shown or 'nothing (every value was given)'}{note}"
