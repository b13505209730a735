"""Trained-model artefacts: the ``checkpoints/`` folder of a training or distillation run.

```
<run>/checkpoints/model.json        model name + architecture spec (rebuilds the model offline) + train config
<run>/checkpoints/tokenizer/        the tokenizer of a text model (beside the weights)
<run>/checkpoints/best.safetensors  weights with the best validation score;  best.json: its epoch and scores
<run>/checkpoints/last.safetensors  weights after the latest finished epoch (the resume state is train's)
```

Every stage that consumes a trained run (curate, distill, eval, teachers) loads it through this module, so a
run's weights are found, checked and rebuilt one way (see docs/architecture.md, "Model artefacts").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from echoseg.core.errors import UserError, first_line
from echoseg.core.io import atomic_path, read_json, write_json
from echoseg.core.models import TASKS, build_model

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


def read_model_info(folder: Path, option: str, run_dir: str | Path) -> dict[str, Any]:
    """``model.json`` of a checkpoint folder, with a clear error when it is not a model description."""
    try:
        info = read_json(folder / "model.json")
    except (OSError, ValueError) as exc:
        raise UserError(f"{option} {run_dir}: {CKPT_DIR}/model.json is not valid JSON ({first_line(exc)})") from None
    if not isinstance(info, dict) or "name" not in info or "spec" not in info:
        raise UserError(f"{option} {run_dir}: {CKPT_DIR}/model.json has no model name and spec")
    return info


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
                        f"({first_line(exc)})") from None
    return path


def load_trained_model(run_dir: str | Path, which: str = "best", option: str = "--run"):
    """Rebuild a trained model from its run directory (offline) and load its ``which`` weights.

    Returns:
        ``(model, info)`` where ``info`` is the run's ``model.json``.
    """
    path = find_checkpoint(run_dir, which, option)
    info = read_model_info(path.parent, option, run_dir)
    model = build_model(info["name"], info["spec"], assets=path.parent)
    try:
        load_weights(model, path)
    except RuntimeError as exc:
        raise UserError(f"{option} {run_dir}: weights do not match model.json ({str(exc)[:200]})") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt safetensors body
        raise UserError(f"{option} {run_dir}: {path.name} is not readable ({first_line(exc)})") from None
    return model, info


def load_student(run_dir: str | Path, which: str = "best", option: str = "--run"):
    """The trained ConvLSTM student of a distill run (weights and threshold), in eval mode."""
    model, info = load_trained_model(run_dir, which, option=option)
    if info.get("name") != "convlstm":
        raise UserError(f"{option} {run_dir}: not a distillation run (model {info.get('name')!r})")
    return model.eval(), info


def load_segmenter(run_dir: str | Path, which: str = "best", option: str = "--run"):
    """The trained segmentation model of a ``train`` run, with a clear error for a distillation run."""
    model, info = load_trained_model(run_dir, which, option=option)
    if info.get("name") == "convlstm":
        raise UserError(f"{option} {run_dir}: a distillation run (ConvLSTM student), not a segmentation training "
                        "run; use eval afd or eval echoclip for it")
    if TASKS.get(str(info.get("name")), "segmentation") != "segmentation":
        raise UserError(f"{option} {run_dir}: a {TASKS[info['name']]} run (model {info['name']!r}), not a "
                        "segmentation training run")
    return model, info
