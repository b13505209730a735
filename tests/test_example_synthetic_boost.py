"""Synthetic Boost's grid end to end: examples/synthetic_boost.sh in QUICK=1 mode on toy data (slow: `make
test-all`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_synthetic_boost_grid_completes(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", ECHOSEG_CACHE=str(tmp_path / "cache"), QUICK="1", RECIPE="sb-code")
    root = tmp_path / "sb"
    proc = subprocess.run(["bash", str(REPO / "examples" / "synthetic_boost.sh"), str(root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = Path(proc.stdout.strip().splitlines()[-1])
    assert report == root / "report"
    runs = list(root.glob("*/run.json"))
    # 2 data, 2 prompts, 4 zero-shot, 2 models x 2 prompts x 2 encoder settings x (3 train + 1 stats), 1 report
    assert len(runs) == 2 + 2 + 4 + 32 + 1
    assert all(json.loads(p.read_text())["status"] == "completed" for p in runs)

    cris = json.loads((root / "train-cris-p7-unfrozen-real" / "run.json").read_text())["config"]
    assert cris["recipe"] == "sb-code" and cris["threshold"] == 0.35 and cris["min_epochs"] == 10
    assert cris["weights"].endswith("cris_refcoco.pth") and cris["precision"] == "no"  # CPU: no fp16
    assert cris["epochs"] == 1 and "epochs" not in cris["recipe_values"]  # the script's option wins

    summary = json.loads((report / "summary.json").read_text())
    t2, t3 = summary["sb_table2"], summary["sb_table3"]
    # zero-shot in Table 2 only; no synthetic P7 (SDM CAMUS has no image quality); models x prompts otherwise
    assert {(r["model"], r["strategy"], r["prompt"]) for r in t2} == {
        (m, s, p) for m in ("clipseg", "cris") for s in ("zero-shot", "synthetic", "real", "synth-PT:real-FT")
        for p in ("p0", "p7") if (s, p) != ("synthetic", "p7")}
    assert len(t3) == len(t2) - 4 and not any(r["strategy"] == "zero-shot" for r in t3)
    assert all(r["dice_std"] is not None and r["runs"] == 1 for r in t2 + t3)
    fig2 = summary["sb_fig2"]
    assert len(fig2) == 2 * 2 * 3  # models x encoder settings x (2 comparisons at P0, 1 at P7)
    assert all(r["ci_low"] <= r["mean_diff"] <= r["ci_high"] for r in fig2)
    assert len(summary["sb_fig3"]) == len(t3)
    md = (report / "summary.md").read_text()
    for title in ("Synthetic Boost Table 2", "Synthetic Boost Table 3", "Synthetic Boost Fig. 2",
                  "Synthetic Boost Fig. 3"):
        assert title in md
    for name in ("fig2_paired.png", "fig3_frozen.png", "figure.png"):
        assert (report / name).stat().st_size > 0
