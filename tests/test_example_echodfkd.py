"""EchoDFKD's experiments end to end: examples/echodfkd.sh in QUICK=1 mode on toy data (slow: `make test-all`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_echodfkd_script_completes(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", ECHOSEG_CACHE=str(tmp_path / "cache"), QUICK="1")
    for name in ("TEACHER", "DATA", "EVAL_DATA", "EVAL_SPLIT", "SIZES", "KS", "EPOCHS", "DISTILL_ARGS"):
        env.pop(name, None)  # the script's defaults, whatever the caller's shell holds
    root = tmp_path / "echodfkd"
    proc = subprocess.run(["bash", str(REPO / "examples" / "echodfkd.sh"), str(root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = Path(proc.stdout.strip().splitlines()[-1])
    assert report == root / "report"
    runs = list(root.glob("*/run.json"))
    assert all(json.loads(p.read_text())["status"] == "completed" for p in runs)
    assert len(list(root.glob("distill-*/run.json"))) == 3 and len(list(root.glob("afd-*/run.json"))) == 6
    summary = json.loads((report / "summary.json").read_text())
    assert len({r["params"] for r in summary["scaling"]}) == 3
    assert {r["line"] for r in summary["scaling_fit"]} == {"-log(aFD_ED + aFD_ES)", "log(1 - mIoU)"}
    assert all(r["n"] >= 2 for r in summary["scaling_fit"] if r["line"] == "log(1 - mIoU)")
    sampling = summary["sampling"]
    assert sorted({r["subsample"] for r in sampling}) == [1, 2, 4] and len({r["segmenter"] for r in sampling}) == 2
    for k in (1, 2, 4):
        run = json.loads((root / f"afd-student-k{k}" / "summary.json").read_text())
        assert run["subsample"] == k and run["videos_evaluated"] > 0
    md = (report / "summary.md").read_text()
    for figure in ("fig6_scaling.png", "fig4_sampling.png"):
        assert (report / figure).stat().st_size > 0 and f"]({figure})" in md
