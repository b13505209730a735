"""Environment facts recorded in run.json, and device resolution."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        import torch

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
    import torch

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
