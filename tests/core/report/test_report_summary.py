"""`echoseg report`: runs of each kind land in the right table; bad runs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from echoseg.cli import main
from echoseg.core.errors import UserError
from echoseg.core.report.summary import collect, format_cell, markdown, provenance, strategy_of
from echoseg.core.runs import Run, run_context


def _run(path: Path, command: str, config: dict, summary: dict, status: str = "completed") -> Path:
    group, _, verb = command.partition(" ")
    run = Run.create(group, verb or None, out=path, config=config)
    with run_context(run):
        run.write_summary(summary)
    if status != "completed":
        run.finish(status)
    return path


def _train(tmp: Path, name: str, source: str, init_from: Path | None = None, lv: float = 0.9) -> Path:
    per = {"LV": {"dice_mean": lv}, "MYO": {"dice_mean": 0.7}, "LA": {"dice_mean": 0.8}}
    summary = {"data": {"train": {"source": [source]}}, "best_epoch": 3, "time_to_best_s": 1.5,
               "test": {"overall": {"dice_mean": (lv + 1.5) / 3, "hd95_mean": 4.0}, "per_structure": per}}
    cfg = {"model": "unet", "prompt": "p4", "init_from": str(init_from) if init_from else None}
    return _run(tmp / name, "train", cfg, summary)


def test_strategies_and_tables(tmp_path):
    real = _train(tmp_path, "real", "real")
    synth = _train(tmp_path, "synth", "synthetic", lv=0.5)
    ptft = _train(tmp_path, "ptft", "real", init_from=synth, lv=0.95)
    stats = _run(tmp_path / "stats", "stats wilcoxon", {}, {"results": [
        {"a": "real", "b": "ptft", "group": "structure=LV", "n": 10, "mean_diff": 0.05, "ci_low": 0.01,
         "ci_high": 0.09, "rank_biserial": 0.6, "p_value": 0.01, "p_adjusted": 0.02}]})
    afd = _run(tmp_path / "afd", "eval afd", {"masks": "preds"},
               {"aFD_ED_frames": 1.5, "aFD_ES_frames": 2.0, "aFD_ED_ms": 30.0, "aFD_ES_ms": 40.0,
                "videos_evaluated": 4})
    tables = collect([real, synth, ptft, stats, afd])
    seg = tables["segmentation"]
    assert list(seg["strategy"]) == ["real", "synthetic", "synth-PT:real-FT"]
    assert seg.loc[2, "dice_LV"] == pytest.approx(0.95)
    assert tables["paired_tests"].loc[0, "p_adj"] == pytest.approx(0.02)
    assert tables["afd"].loc[0, "aFD_ES_ms"] == pytest.approx(40.0)
    md = markdown(tables)
    assert "| unet | synth-PT:real-FT | p4 |" in md and "aFD" in md


def test_strategy_of_without_init():
    assert strategy_of({"data": {"train": {"source": ["synthetic"]}}}, {}) == "synthetic"
    assert strategy_of({"data": {"train": {"source": ["real", "synthetic"]}}}, {}) == "mixed"


def test_refuses_unfinished_and_unknown_runs(tmp_path):
    failed = _run(tmp_path / "f", "train", {}, {}, status="failed")
    with pytest.raises(UserError, match="not completed"):
        collect([failed])
    other = _run(tmp_path / "o", "data toy-camus", {}, {})
    with pytest.raises(UserError, match="nothing to report"):
        collect([other])
    with pytest.raises(UserError, match="no run.json"):
        collect([tmp_path])


def test_cli_writes_summary_files(tmp_path, capsys):
    real = _train(tmp_path, "real", "real")
    out = tmp_path / "report"
    assert main(["report", str(real), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    assert (out / "figure.png").stat().st_size > 0
    assert "unet" in (out / "summary.md").read_text()
    assert json.loads((out / "summary.json").read_text())["segmentation"][0]["strategy"] == "real"
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    assert not (tmp_path / "r2").exists()


def test_numbers_are_formatted_by_column(tmp_path):
    assert format_cell("params", 5701.0) == "5,701" and format_cell("videos", 12) == "12"
    assert format_cell("dice_LV", 0.00363) == "0.0036" and format_cell("dice_mean", 0.155345953) == "0.1553"
    assert format_cell("hd95_mean", 2.487662475989179) == "2.49"
    assert format_cell("mean_diff", 30.3921, "hd95", units=True) == "+30.39 px"
    assert format_cell("mean_diff", 0.012345, "dice") == "+0.0123" and format_cell("p_adj", 0.0123) == "0.012"
    assert format_cell("aFD_ED_frames", 1.23456) == "1.23" and format_cell("aFD_ED_ms", 41.15) == "41.1"
    assert format_cell("dice_LA", None) == "–" and format_cell("frozen", False) == "False"
    real = _train(tmp_path, "real", "real")
    afd = _run(tmp_path / "afd", "eval afd", {"masks": "preds"},
               {"aFD_ED_frames": 1.5, "aFD_ES_frames": 2.0, "aFD_ED_ms": 30.0, "aFD_ES_ms": 40.0,
                "videos_evaluated": 4, "parameters": 5701})
    md = markdown(collect([real, afd]))
    assert "hd95_mean (px)" in md and "| 4.00 |" in md and "| 5,701 |" in md and "5701.000" not in md


def test_unnamed_runs_are_relabelled_and_toy_runs_noted(tmp_path, capsys):
    toy = _run(tmp_path / "toy", "data toy-camus", {}, {})
    prompts = Run.create("prompts", "build", out=tmp_path / "prompts", inputs={"data": toy})
    with run_context(prompts):
        prompts.write_summary({})
    per = {"LV": {"dice_mean": 0.9}}
    summary = {"data": {"train": {"source": ["real"]}}, "test": {"overall": {"dice_mean": 0.9}, "per_structure": per}}
    stamped = []
    for stamp, model in (("20240101-120000", "unet"), ("20240101-120100", "clipseg")):
        run = Run.create("train", out=tmp_path / "train" / stamp, inputs={"train_data": prompts.path},
                         config={"model": model, "prompt": "p7", "model_config": "tiny"})
        with run_context(run):
            run.write_summary(summary)
        stamped.append(run.path)
    # a stats run made when unnamed runs were labelled by their time stamps
    pairing = [{"a": "20240101-120000", "b": "20240101-120100", "path_a": str(stamped[0] / "per_sample.csv"),
                "path_b": str(stamped[1] / "per_sample.csv")}]
    results = [{"a": "20240101-120000", "b": "20240101-120100", "group": "all", "n": 10, "mean_diff": 0.05,
                "ci_low": 0.01, "ci_high": 0.09, "rank_biserial": 0.6, "p_value": 0.01, "p_adjusted": 0.02}]
    run = Run.create("stats", "wilcoxon", out=tmp_path / "stats", inputs={"a": stamped[0], "b": stamped[1]})
    with run_context(run):
        run.write_summary({"metric": "dice", "pairing": pairing, "results": results})
    stats = run.path
    tables = collect([*stamped, stats])
    assert tables["paired_tests"].loc[0, "comparison"] == "clipseg p7 real vs unet real"
    note = provenance([stats])
    assert note is not None and "toy data" in note and "tiny models" in note
    assert provenance([_train(tmp_path, "real", "real")]) is None
    out = tmp_path / "report"
    assert main(["report", *map(str, stamped), str(stats), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "clipseg p7 real vs unet real" in err and note in err
    md = (out / "summary.md").read_text()
    assert md.count(note) == 1 and "20240101-120000" not in md
