"""The layering contract (.importlinter, docs/architecture.md) names every part of echoseg.core and is enforced."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ["report", "stats", "eval", "distill", "train", "pretrain", "curate", "synth", "prompts"]


def _layers() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".importlinter")
    return [line.strip() for line in cfg["importlinter:contract:stages"]["layers"].strip().splitlines()]


def test_contract_lists_every_stage_in_research_loop_order_and_the_whole_floor():
    layers = _layers()
    assert layers[: len(STAGES)] == STAGES
    floor = {name.strip() for name in layers[-1].split(":")}
    core = REPO / "echoseg" / "core"
    parts = {p.stem for p in core.glob("*.py") if p.stem != "__init__"} | {
        p.name for p in core.iterdir() if (p / "__init__.py").is_file()}
    assert parts == set(STAGES) | floor


def _lint(config: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return subprocess.run([exe, "--no-cache", "--config", str(config)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_contract_holds_and_dropping_a_layer_breaks_it(tmp_path):
    assert _lint(REPO / ".importlinter").returncode == 0
    text = (REPO / ".importlinter").read_text()
    broken = tmp_path / "contract.ini"
    broken.write_text(text.replace("\n    eval\n", "\n", 1))
    result = _lint(broken)
    assert result.returncode != 0 and "echoseg.core.eval" in result.stdout
