"""The resume state of a training run, written atomically into ``<run>/checkpoints/``::

    last.pt             optimizer, scheduler, epoch, best-so-far, early-stop counter, elapsed time and the
                        python/numpy/torch(/cuda) RNG states: what ``--resume`` needs to continue exactly

The weights and ``model.json`` beside it are model artefacts (:mod:`echoseg.core.models.artefacts`).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echoseg.core.io import atomic_path
from echoseg.core.models.artefacts import save_model_info


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
