"""Offline by default: echoseg never reaches a model hub unless the user allows downloads.

The CLI calls :func:`apply_offline_default` before any Hugging Face library is imported (those read
``HF_HUB_OFFLINE`` once, at import). Downloads are allowed by ``--allow-download`` on the command line or
``ECHOSEG_ALLOW_DOWNLOAD=1`` in the environment; otherwise ``HF_HUB_OFFLINE=1`` (and ``TRANSFORMERS_OFFLINE=1``)
are set, so a hub id that is not in the local cache fails at once instead of retrying the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

ALLOW_FLAG = "--allow-download"
ALLOW_ENV = "ECHOSEG_ALLOW_DOWNLOAD"
_TRUE = ("1", "true", "yes", "on")


def downloads_allowed(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the command line or the environment allows downloads."""
    return ALLOW_FLAG in argv or environ.get(ALLOW_ENV, "").strip().lower() in _TRUE


def apply_offline_default(argv: Sequence[str]) -> bool:
    """Set the Hugging Face offline switches unless downloads are allowed; returns whether echoseg is offline."""
    if downloads_allowed(argv):
        return offline()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    return True


def offline() -> bool:
    """Whether Hugging Face downloads are switched off."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def not_cached(spec: str, what: str) -> str:
    """The one-line error for a hub id that is not in the local cache while offline."""
    return (f"{what} {spec}: not in the local Hugging Face cache and echoseg is offline; download it where there is "
            f"network (`huggingface-cli download {spec}`), pass a local folder, or allow downloads with "
            f"{ALLOW_FLAG} (or {ALLOW_ENV}=1)")
