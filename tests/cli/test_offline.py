"""Offline by default: a hub id that is not cached fails at once with exit 2, unless downloads are allowed."""

from __future__ import annotations

import os
import subprocess
import sys

from echoseg.core import hub


def test_offline_unless_allowed(monkeypatch):
    monkeypatch.delenv(hub.ALLOW_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.apply_offline_default(["prompts", "build"]) is True
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hub.offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.apply_offline_default(["--allow-download", "prompts", "build"]) is False
    monkeypatch.setenv(hub.ALLOW_ENV, "1")
    assert hub.downloads_allowed([]) and hub.apply_offline_default([]) is False
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def _env_without_offline() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", hub.ALLOW_ENV)}
    env["HF_HOME"] = os.environ.get("HF_HOME", "/nonexistent-echoseg-hf-home")
    return env


def test_uncached_hub_id_is_exit_2_at_once_without_hf_hub_offline(tmp_path):
    env = _env_without_offline()
    toy = tmp_path / "toy"
    cmd = [sys.executable, "-m", "echoseg"]
    made = subprocess.run([*cmd, "data", "toy", "camus", "--patients", "2", "--size", "32", "--out", str(toy)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    proc = subprocess.run([*cmd, "prompts", "build", str(toy), "--shape", "vqa", "--vqa-model", "nobody/nothing",
                           "--out", str(tmp_path / "p")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nobody/nothing" in errors[0] and "--allow-download" in errors[0]
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "p").exists()


_ENCODER = """
import sys
from echoseg.core.hub import apply_offline_default
apply_offline_default([])
from echoseg.core.curate.embed import HFEncoder
from echoseg.core.errors import UserError
try:
    HFEncoder("nobody/nothing", device="cpu")
except UserError as exc:
    print(exc)
    sys.exit(2)
"""


def test_curate_hf_encoder_fails_at_once_offline():
    proc = subprocess.run([sys.executable, "-c", _ENCODER], env=_env_without_offline(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--encoder hf:nobody/nothing" in proc.stdout
    assert "Retrying" not in proc.stderr
