"""`echoseg report` on EchoDFKD's experiments: student-size scaling (Fig. 6) and aFD against sampling rate (Fig. 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from echoseg.cli import main
from echoseg.core.report.echodfkd import fit_line
from echoseg.core.report.summary import collect, markdown
from echoseg.core.runs import Run, run_context

# (student, parameters) of the published configs; aFD_ED + aFD_ES = 50 p^-0.3 and 1 - mIoU = 2 p^-0.1 exactly
SIZES = [("B1L1", 5_701), ("B2L1", 39_577), ("B2L2", 76_000), ("B4L4", 3_361_657)]


def _run(path: Path, command: str, config: dict, summary: dict) -> Path:
    group, _, verb = command.partition(" ")
    run = Run.create(group, verb or None, out=path, config=config)
    with run_context(run):
        run.write_summary(summary)
    return path


def _distill(tmp: Path, student: str, params: int, afd_sum: float | None = None, teacher: str = "unet") -> Path:
    total = 50 * params ** -0.3 if afd_sum is None else afd_sum
    block = {"aFD_ED_frames": 0.4 * total, "aFD_ES_frames": 0.6 * total, "aFD_ED_ms": 1.0, "aFD_ES_ms": 1.0,
             "videos_evaluated": 8, "iou_mean_tracings": 1 - 2 * params ** -0.1, "dice_mean_tracings": 0.7}
    summary = {"teacher": {"name": teacher}, "student": {"name": f"convlstm {student}"},
               "costs": {"student": {"parameters": params}, "teacher": {"parameters": 10**7}},
               "eval": {"data": "/data/echonet", "student": block, "teacher": dict(block, iou_mean_tracings=0.9)}}
    cfg = {"teacher": f"run:{teacher}", "blocks": int(student[1]), "layers": int(student[3])}
    return _run(tmp / f"{teacher}-{student}", "distill", cfg, summary)


def _afd(tmp: Path, name: str, k: int | None, ed: float, masks: str = "preds") -> Path:
    summary = {"aFD_ED_frames": ed, "aFD_ES_frames": ed + 0.5, "aFD_ED_ms": 20 * ed, "aFD_ES_ms": 20 * ed + 10,
               "videos_evaluated": 8}
    if k is not None:
        summary["subsample"] = k
    return _run(tmp / name, "eval afd", {"masks": masks, "subsample": k or 1}, summary)


def test_fit_line_recovers_a_line_and_its_r2():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    fit = fit_line(x, 2 * x - 1)
    assert fit["slope"] == pytest.approx(2) and fit["intercept"] == pytest.approx(-1) and fit["r2"] == pytest.approx(1)
    noisy = fit_line(x, np.array([1.0, 3.0, 2.0, 4.0]))
    assert noisy["slope"] == pytest.approx(0.8) and noisy["r2"] == pytest.approx(0.64)


def test_scaling_table_and_fits(tmp_path):
    runs = [_distill(tmp_path, s, p) for s, p in SIZES]
    tables = collect(runs)
    scaling, fits = tables["scaling"], tables["scaling_fit"]
    assert list(scaling["student"]) == [f"convlstm {s}" for s, _ in SIZES] and list(scaling["params"]) == [
        p for _, p in SIZES]
    assert scaling.loc[0, "neg_log_afd"] == pytest.approx(0.3 * np.log(5701) - np.log(50))
    afd, iou = (fits[fits["column"] == c].iloc[0] for c in ("neg_log_afd", "log_1m_miou"))
    assert afd["slope"] == pytest.approx(0.3) and afd["intercept"] == pytest.approx(-np.log(50))
    assert iou["slope"] == pytest.approx(-0.1) and iou["intercept"] == pytest.approx(np.log(2))
    assert afd["r2"] == pytest.approx(1) and iou["r2"] == pytest.approx(1) and afd["n"] == 4
    assert len(tables["afd"]) == 8  # the aFD table keeps its student and teacher rows
    md = markdown(tables)
    assert "EchoDFKD Fig. 6" in md and "log(1 - mIoU)" in md


def test_points_off_the_log_axis_are_left_out_and_counted(tmp_path):
    runs = [_distill(tmp_path, s, p) for s, p in SIZES[:3]] + [_distill(tmp_path, *SIZES[3], afd_sum=0.0)]
    fits = collect(runs)["scaling_fit"].set_index("column")
    assert fits.loc["neg_log_afd", "n"] == 3 and fits.loc["neg_log_afd", "points_left_out"] == 1
    assert fits.loc["neg_log_afd", "slope"] == pytest.approx(0.3) and fits.loc["log_1m_miou", "n"] == 4


def test_one_size_per_teacher_gives_no_scaling(tmp_path):
    runs = [_distill(tmp_path, "B1L1", 5_701), _distill(tmp_path, "B2L1", 39_577, teacher="deeplabv3")]
    tables = collect(runs)
    assert tables["scaling"].empty and tables["scaling_fit"].empty


def test_sampling_rows_of_segmenters_seen_at_two_or_more_k(tmp_path):
    runs = [_afd(tmp_path, f"k{k}", k, ed=0.5 * k) for k in (4, 1, 2)]
    runs += [_afd(tmp_path, "old", None, ed=3.0, masks="other")]  # before --subsample: K = 1, one K only
    sampling = collect(runs)["sampling"]
    assert list(sampling["subsample"]) == [1, 2, 4] and set(sampling["segmenter"]) == {"preds"}
    assert list(sampling["aFD_ED_frames"]) == [0.5, 1.0, 2.0]


def test_cli_draws_fig6_and_fig4_only_when_supported(tmp_path, capsys):
    students = [_distill(tmp_path, s, p) for s, p in SIZES]
    sampled = [_afd(tmp_path, f"k{k}", k, ed=0.5 * k) for k in (1, 2, 4)]
    out = tmp_path / "report"
    assert main(["report", *map(str, students + sampled), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    for name in ("fig6_scaling.png", "fig4_sampling.png", "figure.png"):
        assert (out / name).stat().st_size > 0
    md = (out / "summary.md").read_text()
    assert "![fig6_scaling](fig6_scaling.png)" in md and "![fig4_sampling](fig4_sampling.png)" in md
    summary = json.loads((out / "summary.json").read_text())
    assert {r["line"] for r in summary["scaling_fit"]} == {"-log(aFD_ED + aFD_ES)", "log(1 - mIoU)"}
    assert [r["subsample"] for r in summary["sampling"]] == [1, 2, 4] and len(summary["scaling"]) == 4

    single = tmp_path / "single"
    assert main(["report", str(students[0]), str(sampled[0]), "--out", str(single)]) == 0
    assert not (single / "fig6_scaling.png").exists() and not (single / "fig4_sampling.png").exists()
    assert "![fig" not in (single / "summary.md").read_text()
