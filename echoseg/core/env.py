"""Environment facts recorded in run.json, device resolution and the ``accelerate.Accelerator`` every training and
generation loop runs under."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from echoseg import __version__
from echoseg.core.engine import tracking
from echoseg.core.errors import UserError

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from echoseg.core.runs import Run

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("no", "fp16", "bf16")


# Distributions whose versions a run records when the command imported them (see library_versions).
LIBRARIES = {
    "numpy": "numpy", "pandas": "pandas", "scipy": "scipy", "statsmodels": "statsmodels", "torch": "torch",
    "torchvision": "torchvision", "transformers": "transformers", "tokenizers": "tokenizers",
    "diffusers": "diffusers", "open_clip": "open_clip_torch", "timm": "timm", "accelerate": "accelerate",
    "safetensors": "safetensors", "huggingface_hub": "huggingface_hub", "SimpleITK": "SimpleITK",
    "pydicom": "pydicom", "cv2": "opencv-python-headless", "PIL": "pillow", "sklearn": "scikit-learn",
    "matplotlib": "matplotlib", "typer": "typer", "rich": "rich",
}


def _git(*args: str) -> subprocess.CompletedProcess | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    """The git commit of the echoseg source tree, if it is a git checkout."""
    out = _git("rev-parse", "HEAD")
    return out.stdout.strip() or None if out is not None and out.returncode == 0 else None


def git_dirty() -> bool | None:
    """Whether the echoseg checkout has uncommitted changes to tracked files (None outside a checkout)."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return bool(out.stdout.strip()) if out is not None and out.returncode == 0 else None


def library_versions() -> dict[str, str]:
    """Versions of the libraries this process has imported (what the command used), by distribution name."""
    found = {}
    for module, dist in LIBRARIES.items():
        if module in sys.modules:
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                found[dist] = str(getattr(sys.modules[module], "__version__", "unknown"))
    return dict(sorted(found.items()))


def environment() -> dict[str, Any]:
    """Versions and devices of this process."""
    info: dict[str, Any] = {
        "echoseg": __version__,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
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


def world_size() -> int:
    """Processes of this job: WORLD_SIZE as torchrun / `accelerate launch` set it (1 for a plain run)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def process_shard() -> tuple[int, int]:
    """(global rank, world size) of this process: (0, 1) for a plain run."""
    if world_size() <= 1:
        return 0, 1
    return int(os.environ.get("RANK", "0") or 0), world_size()


def barrier(cpu: bool = False) -> None:
    """Wait until every process of a multi-process launch gets here (nothing to do in a plain run).

    Every process must call it at the same point: code that one process runs alone (writing files, scoring) goes
    before or after it, never around it.
    """
    if world_size() <= 1:
        return
    # deferred: accelerate pulls in torch.distributed; the process group is the one open_run / the loop set up
    from accelerate import PartialState

    PartialState(cpu=cpu).wait_for_everyone()


def _launcher_argv() -> list[str] | None:
    """The command line of the parent process (the launcher), where /proc tells it."""
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _option_int(argv: list[str], *names: str) -> int | None:
    """The integer value of the first of ``names`` in ``argv`` (``--opt N`` or ``--opt=N``), else None."""
    for i, arg in enumerate(argv):
        for name in names:
            value = argv[i + 1] if arg == name and i + 1 < len(argv) else (
                arg.split("=", 1)[1] if arg.startswith(name + "=") else None)
            if value is not None:
                try:
                    return int(value)
                except ValueError:
                    return None
    return None


def launch_mismatch(environ: dict[str, str] | None = None, launcher_argv: list[str] | None = None) -> str | None:
    """Why this lone process is not the multi-process job the user asked for, or None.

    `accelerate launch --num_processes N` (N > 1, or --num_machines > 1) without --multi_gpu (or with --cpu) runs
    accelerate's *simple* launcher: one process, with MASTER_ADDR/MASTER_PORT and the ACCELERATE_* variables set
    but no WORLD_SIZE/RANK. That is the signature looked for here; a plain ``echoseg ...`` (no ACCELERATE_*
    variables) or a torchrun / multi-GPU launch (WORLD_SIZE set) never matches. Where the launcher's command line
    can be read (``/proc``) and names --num_processes <= 1 and --num_machines <= 1, MASTER_* came from the user's
    own environment and nothing is reported.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env or "ACCELERATE_MIXED_PRECISION" not in env:
        return None
    if not (env.get("MASTER_ADDR") or env.get("MASTER_PORT")):
        return None
    argv = _launcher_argv() if launcher_argv is None and environ is None else launcher_argv
    processes = machines = None
    if argv:  # the simple launcher is this process's parent
        processes = _option_int(argv, "--num_processes", "--num-processes")
        machines = _option_int(argv, "--num_machines", "--num-machines")
        named = [v for v in (processes, machines) if v is not None]
        if named and max(named) <= 1:
            return None
    n = str(processes) if processes and processes > 1 else "N"
    asked = f"{n} processes" if n != "N" else "several processes"
    return (f"accelerate launch was asked for {asked} but started only this one (without --multi_gpu, or with "
            f"--cpu, it runs a single process): use `accelerate launch --multi_gpu --num_processes {n}` (also on "
            f"CPU, with --device cpu) or `torchrun --nproc_per_node {n}`")


def make_accelerator(precision: str = "no", device: str = "auto", run: Run | None = None):
    """An ``accelerate.Accelerator`` for ``device`` (auto|cpu|cuda) and ``precision`` (no|fp16|bf16).

    With ``run``, the trackers its configuration names (``--report-to``) are attached: its metrics rows go to them
    (see ``echoseg.core.engine.tracking``).
    """
    # deferred: accelerate pulls in torch.distributed and friends; import it where a loop starts, not with the CLI
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    dev = resolve_device(device)
    if world_size() <= 1:
        # A second run in the same process (tests, notebooks) may change precision: accelerate keeps a singleton.
        AcceleratorState._reset_state(True)
    # CLIPSeg's CLIP has parameters the segmentation path never uses (logit_scale); DDP must tolerate them.
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    accelerator = Accelerator(mixed_precision=precision, cpu=dev == "cpu", kwargs_handlers=handlers,
                              **tracking.accelerator_kwargs(run))
    tracking.attach(run, accelerator)
    return accelerator
