"""Environment facts recorded in run.json, device resolution and the ``accelerate.Accelerator`` every training and
generation loop runs under."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from echoseg import __version__
from echoseg.core.errors import UserError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("no", "fp16", "bf16")


def git_commit() -> str | None:
    """The git commit of the echoseg source tree, if it is a git checkout."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment() -> dict[str, Any]:
    """Versions and devices of this process."""
    info: dict[str, Any] = {
        "echoseg": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    try:
        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        info["devices"] = (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available()
            else ["cpu"]
        )
    except ImportError:  # pragma: no cover - torch is a hard dependency
        info["torch"] = None
    return info


def resolve_device(device: str) -> str:
    """Map ``auto|cpu|cuda`` to a concrete device string; ``cuda`` without a GPU is a user error."""
    if device not in DEVICES:
        raise UserError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available on this machine")
    return device


def check_precision(precision: str) -> str:
    """Validate a ``--precision`` value."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def make_accelerator(precision: str = "no", device: str = "auto"):
    """An ``accelerate.Accelerator`` for ``device`` (auto|cpu|cuda) and ``precision`` (no|fp16|bf16)."""
    # deferred: accelerate pulls in torch.distributed and friends; import it where a loop starts, not with the CLI
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    dev = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        # A second run in the same process (tests, notebooks) may change precision: accelerate keeps a singleton.
        AcceleratorState._reset_state(True)
    # CLIPSeg's CLIP has parameters the segmentation path never uses (logit_scale); DDP must tolerate them.
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    return Accelerator(mixed_precision=precision, cpu=dev == "cpu", kwargs_handlers=handlers)
