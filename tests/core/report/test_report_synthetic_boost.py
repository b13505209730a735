"""Synthetic Boost's Tables 2 and 3 and Figs. 2 and 3 in `echoseg report`, on small fixture grids of runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echoseg.cli import main
from echoseg.core.report.summary import collect, markdown
from echoseg.core.report.synthetic_boost import display
from echoseg.core.runs import Run, run_context


def _run(path: Path, command: str, config: dict, summary: dict) -> Path:
    group, _, verb = command.partition(" ")
    run = Run.create(group, verb or None, out=path, config=config)
    with run_context(run):
        run.write_summary(summary)
    return path


def _dice(mean: float, std: float, n: int = 40) -> dict:
    return {"overall": {"dice_mean": mean, "dice_std": std, "n": n, "hd95_mean": 3.0},
            "per_structure": {s: {"dice_mean": mean} for s in ("LV", "MYO", "LA")}}


def _train(tmp: Path, model: str, prompt: str, frozen: bool, strategy: str, mean: float, std: float = 0.05,
           seed: int = 0) -> Path:
    name = f"{model}-{prompt}-{'frozen' if frozen else 'unfrozen'}"
    init = tmp / f"{name}-synthetic" if strategy == "ptft" else None
    source = "synthetic" if strategy == "synthetic" else "real"
    cfg = {"model": model, "prompt": prompt, "freeze_encoders": frozen, "seed": seed,
           "init_from": str(init) if init else None}
    summary = {"data": {"train": {"source": [source]}}, "best_epoch": 2, "test": _dice(mean, std)}
    return _run(tmp / f"{name}-{strategy}{f'-s{seed}' if seed else ''}", "train", cfg, summary)


def _stats(tmp: Path, base: Path, other: Path, diff: float) -> Path:
    pairing = [{"a": base.name, "b": other.name, "path_a": str(base / "per_sample.csv"),
                "path_b": str(other / "per_sample.csv")}]
    results = [{"a": base.name, "b": other.name, "group": "all", "n": 40, "mean_diff": diff, "ci_low": diff - 0.01,
                "ci_high": diff + 0.01, "rank_biserial": 0.3, "p_value": 0.01, "p_adjusted": 0.02}]
    return _run(tmp / f"stats-{other.name}", "stats wilcoxon", {}, {"metric": "dice", "pairing": pairing,
                                                                    "results": results})


@pytest.fixture
def grid(tmp_path) -> list[Path]:
    """CLIPSeg and CRIS x P0, P7 x real / synthetic / synth-PT:real-FT x frozen / unfrozen, zero-shot, tests."""
    runs = []
    for model, bonus in (("clipseg", 0.0), ("cris", 0.02)):
        for prompt, base in (("p0", 0.45), ("p7", 0.88)):
            for frozen in (False, True):
                shift = -0.01 if frozen else 0.0
                real = _train(tmp_path, model, prompt, frozen, "real", base + bonus + shift)
                syn = _train(tmp_path, model, prompt, frozen, "synthetic", base + bonus + shift - 0.04)
                ptft = _train(tmp_path, model, prompt, frozen, "ptft", base + bonus + shift + 0.005)
                runs += [real, syn, ptft, _stats(tmp_path, real, ptft, 0.005), _stats(tmp_path, real, syn, -0.04)]
            zs = {"zero_shot": True, "model": model, "prompt": prompt, "test": _dice(0.01 + bonus, 0.02)}
            runs.append(_run(tmp_path / f"zs-{model}-{prompt}", "eval seg", {"model": model, "prompt": prompt}, zs))
    return runs


def test_tables_and_figures_from_a_grid(grid):
    tables = collect(grid)
    t2, t3 = tables["sb_table2"], tables["sb_table3"]
    assert set(t2["strategy"]) == {"zero-shot", "synthetic", "real", "synth-PT:real-FT"}
    assert "zero-shot" not in set(t3["strategy"]) and len(t3) == 2 * 2 * 3 and len(t2) == 2 * 2 * 4
    cell = t2[(t2["model"] == "cris") & (t2["strategy"] == "real") & (t2["prompt"] == "p7")].iloc[0]
    assert cell["dice_mean"] == pytest.approx(0.90) and cell["dice_std"] == pytest.approx(0.05)
    assert cell["n"] == 40 and cell["runs"] == 1
    assert t3[(t3["model"] == "clipseg") & (t3["strategy"] == "synthetic") & (t3["prompt"] == "p0")
              ].iloc[0]["dice_mean"] == pytest.approx(0.40)
    assert list(t2["strategy"][:2]) == ["zero-shot", "zero-shot"]  # the paper's order: zero-shot first
    fig2 = tables["sb_fig2"]
    assert len(fig2) == 2 * 2 * 2 * 2  # models x prompts x encoder settings x comparisons
    assert set(fig2["comparison"]) == {"synth-PT:real-FT - real", "synthetic - real"}
    one = fig2[(fig2["model"] == "cris") & (fig2["prompt"] == "p0") & fig2["frozen"]
               & (fig2["comparison"] == "synthetic - real")].iloc[0]
    assert one["mean_diff"] == pytest.approx(-0.04) and one["p_adj"] == pytest.approx(0.02)
    fig3 = tables["sb_fig3"]
    assert len(fig3) == 2 * 2 * 3 and fig3["dice_diff"].to_numpy() == pytest.approx(-0.01)

    wide = display("sb_table2", t2)
    assert list(wide.columns) == ["strategy", "model", "P0", "P7"]
    assert wide.iloc[0].tolist() == ["zero-shot", "clipseg", "1.00 ± 2.00", "1.00 ± 2.00"]
    md = markdown(tables)
    assert "Synthetic Boost Table 2" in md and "Synthetic Boost Table 3" in md
    assert "| real | cris | 47.00 ± 5.00 | 90.00 ± 5.00 |" in md
    assert "| synth-PT:real-FT | cris | 46.50 ± 5.00 | 89.50 ± 5.00 |" in md  # frozen: 0.01 lower


def test_several_runs_per_cell_give_mean_and_std_over_runs(tmp_path):
    runs = [_train(tmp_path, "clipseg", p, False, "real", m, seed=s) for p in ("p1", "p2")
            for s, m in ((1, 0.80), (2, 0.90))]
    t2 = collect(runs)["sb_table2"]
    assert list(t2["prompt"]) == ["p1", "p2"] and (t2["runs"] == 2).all()
    assert t2["dice_mean"].to_numpy() == pytest.approx(0.85)
    assert t2["dice_std"].to_numpy() == pytest.approx(0.0707107, rel=1e-5)
    assert "sb_table3" not in collect(runs) and "sb_fig3" not in collect(runs)


def test_no_grid_no_synthetic_boost_tables(tmp_path):
    runs = [_train(tmp_path, "clipseg", "p4", False, s, 0.8) for s in ("real", "synthetic")]
    runs.append(_train(tmp_path, "unet", "p7", True, "real", 0.8))  # a U-Net is no VLSM
    tables = collect(runs)
    assert not any(k.startswith("sb_") for k in tables)
    assert "Synthetic Boost Table 3" not in markdown(tables)


def test_cli_report_writes_figures_and_json(grid, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", *map(str, grid), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    for name in ("fig2_paired.png", "fig3_frozen.png", "figure.png"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["sb_table2"]) == 16 and len(summary["sb_table3"]) == 12
    assert {r["comparison"] for r in summary["sb_fig2"]} == {"synth-PT:real-FT - real", "synthetic - real"}
    md = (out / "summary.md").read_text()
    assert "![fig2_paired](fig2_paired.png)" in md and "![fig3_frozen](fig3_frozen.png)" in md
