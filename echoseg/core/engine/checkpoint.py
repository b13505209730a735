"""The resume state of a training run, written atomically into ``<run>/checkpoints/``::

    last.pt             optimizer, scheduler, epoch, best-so-far, early-stop counter, elapsed time and the
                        python/numpy/torch(/cuda) RNG states: what ``--resume`` needs to continue exactly

The weights and ``model.json`` beside it are model artefacts (:mod:`echoseg.core.models.artefacts`).

The epoch loops of ``train`` and ``distill`` share the bookkeeping around it: a ``book`` dict (``epoch``,
``best_epoch``, ``bad_epochs``, ``elapsed``, ``done``, ``stopped_early`` and each loop's best-so-far fields) started
or restored by :func:`restore_book`, the optimizer (and scheduler) state and RNG states put back by
:func:`prepare_and_restore`, each epoch recorded by :func:`close_epoch` (early stopping included) and saved by
:func:`save_epoch`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echoseg.core.io import atomic_path, write_json
from echoseg.core.models.artefacts import save_model_info, save_weights


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


def prepare_and_restore(accelerator, model, optimizer, state: dict[str, Any] | None, scheduler=None):
    """Put a resumed run's optimizer (and scheduler) state back, prepare ``model`` and ``optimizer`` with
    ``accelerator``, then restore the RNG states; returns ``(model, optimizer, unwrapped model)``."""
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    model, optimizer = accelerator.prepare(model, optimizer)
    if state is not None:
        set_rng_state(state["rng"])
    return model, optimizer, accelerator.unwrap_model(model)


def close_epoch(book: dict[str, Any], epoch: int, seconds: float, best: dict[str, Any] | None, patience: int,
                epochs: int, min_epochs: int = 0) -> bool:
    """Record finished ``epoch`` in ``book`` and return whether it improved.

    ``best`` holds the best-so-far fields an improving epoch sets (None: it did not improve); an improvement also
    sets ``best_epoch``, resets ``bad_epochs`` and, when the book keeps it, sets ``time_to_best`` to the elapsed
    time. ``patience`` epochs in a row without improvement stop the run early, though not before epoch
    ``min_epochs``; epoch ``epochs`` ends it.
    """
    book["elapsed"] += seconds
    book["epoch"] = epoch
    if best is not None:
        book.update(best, best_epoch=epoch, bad_epochs=0)
        if "time_to_best" in book:
            book["time_to_best"] = book["elapsed"]
    else:
        book["bad_epochs"] += 1
    if book["bad_epochs"] >= patience and epoch >= min_epochs:
        book.update(done=True, stopped_early=True)
    if epoch >= epochs:
        book["done"] = True
    return best is not None


def save_epoch(folder: Path, raw, book: dict[str, Any], best_json: dict[str, Any] | None, optimizer,
               scheduler=None) -> None:
    """Write the checkpoint of the epoch ``book`` has just recorded: when it improved (``best_json``: its metrics),
    ``best.safetensors`` and ``best.json`` (``{"epoch", **best_json}``); always ``last.safetensors`` and ``last.pt``
    (optimizer, scheduler, book, RNG states). Only the writing process calls it."""
    if best_json is not None:
        save_weights(raw, folder / "best.safetensors")
        write_json(folder / "best.json", {"epoch": book["epoch"], **best_json})
    save_weights(raw, folder / "last.safetensors")
    state = {"optimizer": optimizer.state_dict()}
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    save_training_state(folder, {**state, "book": dict(book), "rng": rng_state()})
