"""The model registry: names -> builders, with named configs kept as data (open_clip style).

Each model lives in one module ``echoseg.core.models.<name>`` that registers its builder::

    @register("clipseg")
    def build(config: dict, weights: str | None = None, assets: Path | None = None) -> nn.Module: ...

and one JSON file ``configs/<name>.json`` mapping config names (``tiny``, ``base``...) to dicts. The JSON files
are scanned at import time; the model module is imported only when the model is built, so importing the registry
is cheap and downloads nothing. Adding a model (CRIS) means adding ``cris.py`` and ``configs/cris.json``.

``config`` given to a builder is the named config dict (a copy), or a full dict from a trained run's
``model.json`` (``spec()``), so the same builder rebuilds a trained architecture offline.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from echoseg.core.errors import UserError

Builder = Callable[..., nn.Module]
CONFIG_DIR = Path(__file__).with_name("configs")
#: the task of each model that is not an image segmenter (a new model is a segmenter unless listed here)
TASKS = {"convlstm": "video-segmentation", "diffusion": "generation", "vlp": "pretraining"}
_BUILDERS: dict[str, Builder] = {}
_CONFIGS: dict[str, dict[str, dict[str, Any]]] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(config, weights=None, assets=None) -> nn.Module`` under ``name``."""

    def deco(builder: Builder) -> Builder:
        _BUILDERS[name] = builder
        return builder

    return deco


def _scan_configs() -> None:
    for path in sorted(CONFIG_DIR.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:  # a broken packaged file is a bug, not user input
            raise RuntimeError(f"{path}: invalid model config JSON ({exc})") from exc
        _CONFIGS[path.stem] = data


def add_config_file(path: str | Path) -> None:
    """Register named configs from an extra JSON file ``<model>.json`` (merged over the packaged ones)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{p}: cannot read model config JSON ({exc})") from None
    _CONFIGS.setdefault(p.stem, {}).update(data)


def list_models(task: str | None = None) -> list[str]:
    """Names of the models with a config file or a registered builder (with ``task``: those of that task).

    Tasks: ``segmentation`` (image segmenters that `echoseg train` trains; every model not listed in
    :data:`TASKS`), ``video-segmentation`` (the distillation student), ``generation`` (the diffusion model) and
    ``pretraining`` (the vision-language pre-training model of `echoseg pretrain`).
    """
    names = sorted(set(_CONFIGS) | set(_BUILDERS))
    return names if task is None else [n for n in names if TASKS.get(n, "segmentation") == task]


def list_configs(name: str) -> list[str]:
    """Config names of a model."""
    _check_name(name)
    return sorted(_CONFIGS.get(name, {}))


def get_config(name: str, config: str) -> dict[str, Any]:
    """A copy of the named config of a model."""
    _check_name(name)
    configs = _CONFIGS.get(name, {})
    if config not in configs:
        raise UserError(f"--config {config!r}: unknown config for model {name!r} (known: {', '.join(sorted(configs))})")
    return copy.deepcopy(configs[config])


def _check_name(name: str) -> None:
    if name not in list_models():
        raise UserError(f"--model {name!r}: unknown model (known: {', '.join(list_models())})")


def _builder(name: str) -> Builder:
    _check_name(name)
    if name not in _BUILDERS:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    if name not in _BUILDERS:
        raise UserError(f"--model {name!r}: no builder registered (module {__name__}.{name} missing)")
    return _BUILDERS[name]


def build_model(
    name: str,
    config: str | dict[str, Any] = "tiny",
    weights: str | Path | None = None,
    assets: Path | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (``clipseg``, ``unet``...).
        config: a config name from ``configs/<name>.json`` or a full config dict (e.g. a run's ``model.json``).
        weights: a local path or hub id of pretrained weights (resolved offline by ``models.weights``).
        assets: folder of extra files saved with a trained model (tokenizer).
        **overrides: top-level config keys to replace (e.g. ``input_size=16`` for tests).
    """
    cfg = get_config(name, config) if isinstance(config, str) else copy.deepcopy(config)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    model = _builder(name)(cfg, weights=None if weights is None else str(weights), assets=assets)
    if hasattr(model, "name"):
        model.name = name
    return model


_scan_configs()
