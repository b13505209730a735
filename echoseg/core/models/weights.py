"""Resolving ``--weights``: a local file or folder, or a Hugging Face hub id, offline-first with clear errors.

Nothing is downloaded at import time. A hub id is looked up in the local Hugging Face cache first; it is
downloaded only when downloads are allowed (``--allow-download``, see :mod:`echoseg.core.hub`) and the id is
not cached.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file

from echoseg.core.errors import UserError
from echoseg.core.hub import offline

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def resolve_weights(spec: str | Path, required: Sequence[str] = ("config.json",), what: str = "--weights") -> Path:
    """Return a local folder (or file) holding the weights named by ``spec``.

    Args:
        spec: a local folder/file, or a hub id such as ``CIDAS/clipseg-rd64-refined``.
        required: files a folder must contain.
        what: the option name used in error messages.

    Raises:
        UserError: the path lacks a required file, or the hub id is neither cached nor downloadable.
    """
    p = Path(spec).expanduser()
    if p.exists():
        if p.is_dir():
            missing = [f for f in required if not (p / f).is_file()]
            if missing:
                raise UserError(f"{what} {p}: folder lacks {', '.join(missing)} (expected a Hugging Face model folder)")
        return p
    text = str(spec)
    if not _HUB_ID.match(text):
        raise UserError(f"{what} {text}: no such file or folder, and not a hub id of the form owner/name")
    return _from_hub(text, required, what)


def _from_hub(repo_id: str, required: Sequence[str], what: str) -> Path:
    from huggingface_hub import snapshot_download  # deferred: heavy import, loaded only when this path runs
    from huggingface_hub.errors import (  # deferred: heavy import, loaded only when this path runs
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    hint = (
        f"download it where there is internet (`hf download {repo_id} --local-dir DIR`, or "
        f"`huggingface-cli download {repo_id}` into the HF cache) and pass {what} DIR"
    )
    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        if offline():
            raise UserError(
                f"{what} {repo_id}: not in the local Hugging Face cache and downloads are off "
                f"(HF_HUB_OFFLINE=1); {hint}"
            ) from None
        try:
            path = Path(snapshot_download(repo_id))
        except RepositoryNotFoundError:
            raise UserError(f"{what} {repo_id}: no such repository on the Hugging Face hub") from None
        except (HfHubHTTPError, OSError, LocalEntryNotFoundError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{what} {repo_id}: download failed ({first}); {hint}") from None
    missing = [f for f in required if not (path / f).is_file()]
    if missing:
        raise UserError(f"{what} {repo_id}: cached snapshot {path} lacks {', '.join(missing)}; {hint}")
    return path


def _is_torchscript(path: Path) -> bool:

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or n.startswith("constants.pkl") for n in zf.namelist())


def read_state(spec: str | Path, what: str = "--weights", strip_module: bool = True) -> dict:
    """Read the tensors of a weights file: safetensors, a torch pickle or a TorchScript archive (OpenAI CLIP).

    A torch pickle may hold the state dict itself or a dict with a ``state_dict``/``model`` entry (training
    checkpoints). With ``strip_module`` the ``module.`` prefix that ``nn.DataParallel`` adds is removed.

    Raises:
        UserError: the file is missing, unreadable or holds no tensors.
    """

    p = Path(spec).expanduser()
    if not p.is_file():
        raise UserError(f"{what} {p}: expected a weights file (.safetensors, .pt, .pth or .bin)")
    try:
        if _is_torchscript(p):
            state = dict(torch.jit.load(str(p), map_location="cpu").state_dict())
        elif p.suffix == ".safetensors":

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad input file
        raise UserError(f"{what} {p}: cannot read weights ({type(exc).__name__}: {str(exc)[:160]})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise UserError(f"{what} {p}: file does not hold a state dict")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise UserError(f"{what} {p}: file holds no tensors")
    if strip_module:
        state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    return state


def load_state_dict_file(spec: str | Path, what: str = "--weights") -> dict:
    """Read a state dict from a weights file with ``module.`` prefixes removed (see :func:`read_state`)."""
    return read_state(spec, what, strip_module=True)
