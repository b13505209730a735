"""The main job end to end: examples/pipeline.sh on toy data (slow: `make test-all`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pipeline_script_completes(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", ECHOSEG_CACHE=str(tmp_path / "cache"))
    root = tmp_path / "demo"
    proc = subprocess.run(["bash", str(REPO / "examples" / "pipeline.sh"), str(root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = Path(proc.stdout.strip().splitlines()[-1])
    assert report == root / "report"
    runs = list(root.glob("*/run.json"))
    assert len(runs) == 56  # 26 for segmentation, synthesis and distillation, 30 for pre-training
    assert all(json.loads(p.read_text())["status"] == "completed" for p in runs)
    summary = json.loads((report / "summary.json").read_text())
    strategies = {(r["model"], r["strategy"]) for r in summary["segmentation"]}
    assert strategies == {(m, s) for m in ("unet", "clipseg", "cris")
                          for s in ("real", "synthetic", "synth-PT:real-FT")}
    assert len(summary["paired_tests"]) == 8 and len(summary["afd"]) == 2
    table = summary["pretraining"]
    assert {(r["method"], r["data"]) for r in table} == {(m, d) for m in ("convirt", "gloria")
                                                         for d in ("real", "synthetic", "mix")}
    assert all({"zs_view_auc", "zs_phase_auc", "grounding_dice"} <= set(r) for r in table)
    assert (report / "figure.png").stat().st_size > 0 and (report / "summary.md").is_file()
    afd = {who: json.loads((root / f"afd-{who}" / "summary.json").read_text()) for who in ("teacher", "student")}
    for phase in ("ED", "ES"):  # issue 18: the distilled student detects ED/ES within 1 frame of its teacher
        assert afd["student"][f"aFD_{phase}_frames"] <= afd["teacher"][f"aFD_{phase}_frames"] + 1.0, afd
