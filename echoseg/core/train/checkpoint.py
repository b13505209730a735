"""Checkpoints of a training run, written atomically into ``<run>/checkpoints/``::

    model.json          model name + architecture spec (rebuilds the model offline) + train config
    tokenizer/          the tokenizer of a text model (beside the weights)
    best.safetensors    weights with the best validation Dice;  best.json: its epoch and scores
    last.safetensors    weights after the latest finished epoch
    last.pt             optimizer, scheduler, epoch, best-so-far, early-stop counter, elapsed time and the
                        python/numpy/torch(/cuda) RNG states: what ``--resume`` needs to continue exactly
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from echoseg.core.errors import UserError
from echoseg.core.io import atomic_path, read_json, write_json
from echoseg.core.models import build_model

CKPT_DIR = "checkpoints"


def _state_for_file(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors sharing storage; contiguous clones are independent and cheap to write.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Atomically write a model's state dict as safetensors."""
    with atomic_path(path) as tmp:
        save_file(_state_for_file(model), str(tmp))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model`` (strict)."""
    model.load_state_dict(load_file(str(path)), strict=True)


def save_model_info(folder: Path, model, train_config: dict[str, Any]) -> None:
    """Write ``model.json`` and the model's assets (tokenizer) into the checkpoint folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_assets(folder)
    write_json(folder / "model.json", {"name": model.name, "spec": model.spec(), "train_config": train_config})


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(folder: Path, state: dict[str, Any]) -> None:
    """Atomically write ``last.pt`` (the training state beside ``last.safetensors``)."""
    with atomic_path(folder / "last.pt") as tmp:
        torch.save(state, tmp)


def load_training_state(folder: Path) -> dict[str, Any] | None:
    """The state in ``last.pt``, or None when the run has not finished an epoch yet."""
    p = folder / "last.pt"
    if not p.is_file():
        return None
    # Our own file (numpy RNG state needs full unpickling).
    return torch.load(p, map_location="cpu", weights_only=False)


def restore_book(run, folder: Path, model, book: dict[str, Any], state: dict[str, Any] | None, epochs: int,
                 train_config: dict[str, Any]) -> None:
    """Start or continue a run's bookkeeping: with a saved ``state``, update ``book`` from it (a larger ``epochs``
    reopens a finished run) and drop metrics rows after its epoch; without, write ``model.json`` for a new run."""
    if state is not None:
        book.update(state["book"])
        if book["done"] and not book["stopped_early"] and book["epoch"] < epochs:
            book["done"] = False
        run.trim_metrics(book["epoch"])
    elif run.writer:
        save_model_info(folder, model, train_config)
        if not run.fresh:
            run.trim_metrics(0)


def find_checkpoint(run_dir: str | Path, which: str = "best", option: str = "--run") -> Path:
    """The ``<which>.safetensors`` file of a training run, with a clear error when absent."""
    folder = Path(run_dir) / CKPT_DIR
    if not (folder / "model.json").is_file():
        raise UserError(f"{option} {run_dir}: not a training run (no {CKPT_DIR}/model.json)")
    path = folder / f"{which}.safetensors"
    if not path.is_file():
        raise UserError(f"{option} {run_dir}: no {CKPT_DIR}/{which}.safetensors (did the run finish an epoch?)")
    read_model_info(folder, option, run_dir)
    try:  # reads the header only: a truncated or foreign file fails here, before any run directory exists
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for every corruption
        raise UserError(f"{option} {run_dir}: {CKPT_DIR}/{which}.safetensors is not readable "
                        f"({_first_line(exc)})") from None
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def read_model_info(folder: Path, option: str, run_dir: str | Path) -> dict[str, Any]:
    """``model.json`` of a checkpoint folder, with a clear error when it is not a model description."""
    try:
        info = read_json(folder / "model.json")
    except (OSError, ValueError) as exc:
        raise UserError(f"{option} {run_dir}: {CKPT_DIR}/model.json is not valid JSON ({_first_line(exc)})") from None
    if not isinstance(info, dict) or "name" not in info or "spec" not in info:
        raise UserError(f"{option} {run_dir}: {CKPT_DIR}/model.json has no model name and spec")
    return info


def load_trained_model(run_dir: str | Path, which: str = "best", option: str = "--run"):
    """Rebuild a trained model from its run directory (offline) and load its ``which`` weights."""
    path = find_checkpoint(run_dir, which, option)
    info = read_model_info(path.parent, option, run_dir)
    model = build_model(info["name"], info["spec"], assets=path.parent)
    try:
        load_weights(model, path)
    except RuntimeError as exc:
        raise UserError(f"{option} {run_dir}: weights do not match model.json ({str(exc)[:200]})") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt safetensors body
        raise UserError(f"{option} {run_dir}: {path.name} is not readable ({_first_line(exc)})") from None
    return model, info
