"""Shared test set-up: offline hubs, no progress bars, a non-interactive matplotlib, the published reference files."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# toy-sized tensors gain nothing from intra-op threads; on 2 cores extra threads (also in the CLI subprocesses
# the tests start) only spin against each other. Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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


def reference_root(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the published reference files live: $ECHOSEG_REFERENCE, else ../shared/reference beside the clone."""
    return Path(environ.get("ECHOSEG_REFERENCE") or REPO.parent / "shared" / "reference")


def require_reference(path: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """``path`` if it exists; else skip the test, or fail it under CI=true (CI must have the files)."""
    if path.exists():
        return path
    reason = f"reference files not found: {path} (set ECHOSEG_REFERENCE to the folder that holds synthetic-boost/)"
    if environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires them", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def reference(pytestconfig) -> Callable[..., Path]:
    """``reference(*parts)``: a published reference file or folder, e.g. ``reference("synthetic-boost", "tasks")``.

    Skips the test when the reference folder or that path is missing, and fails it instead under CI=true.
    """
    root = pytestconfig.invocation_params.dir / reference_root()  # a relative $ECHOSEG_REFERENCE: from the call dir

    def get(*parts: str) -> Path:
        require_reference(root)
        return require_reference(root.joinpath(*parts))

    return get
