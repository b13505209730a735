"""Shared test set-up: offline hubs, no progress bars, a non-interactive matplotlib."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path_factory):
    """Keep default run directories and caches out of the repository."""
    from echoseg.core.console import set_progress

    home = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(home)
    monkeypatch.setenv("ECHOSEG_CACHE", str(home / "cache"))
    set_progress(False)
    yield
    set_progress(None)
