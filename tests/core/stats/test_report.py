"""Comparisons across runs and groups, the adjustment across the call, and the written report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from echoseg.core.errors import UserError
from echoseg.core.runs import Run, run_context
from echoseg.core.stats.pairing import KeySpec, pair_runs
from echoseg.core.stats.report import fmt_metric, markdown_table, write_report
from echoseg.core.stats.wilcoxon import RESULT_COLUMNS, compare_pairings


def runs(tmp_path, shifts=(0.0, 0.02, -0.01), n=150):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, n)
    paths = []
    for i, shift in enumerate(shifts):
        df = pd.DataFrame({"sample_id": [f"s{j:03d}" for j in range(n)], "structure": ["LV", "MYO", "LA"] * (n // 3),
                           "dice": base + shift + rng.normal(0, 0.005, n)})
        p = tmp_path / f"run{i}" / "per_sample.csv"
        p.parent.mkdir()
        df.to_csv(p, index=False)
        paths.append(p.parent)
    return paths


def test_many_vs_one_grouped_rows_and_adjustment(tmp_path):
    base, *others = runs(tmp_path)
    pairings = pair_runs(base, others, group_by=("structure",))
    table = compare_pairings(pairings, group_by=("structure",), correction="fdr_bh", n_boot=200, seed=3)
    assert list(table.columns) == RESULT_COLUMNS[:4] + ["structure"] + RESULT_COLUMNS[4:]
    assert len(table) == 6 and table["n"].tolist() == [50] * 6
    assert table["a"].unique().tolist() == ["run0"] and table["b"].unique().tolist() == ["run1", "run2"]
    assert np.allclose(table["p_adjusted"], multipletests(table["p_value"], method="fdr_bh")[1])
    # every row is the scipy test of that group's pairs
    data = pairings[1].data
    la = data[data["structure"] == "LA"]
    row = table[(table["b"] == "run2") & (table["structure"] == "LA")].iloc[0]
    assert row["p_value"] == pytest.approx(stats.wilcoxon(la["b"], la["a"]).pvalue)
    assert row["mean_diff"] == pytest.approx((la["b"] - la["a"]).mean())
    assert row["mean_diff"] < 0 and row["significant"]
    again = compare_pairings(pairings, group_by=("structure",), correction="fdr_bh", n_boot=200, seed=3)
    assert np.array_equal(table["ci_low"], again["ci_low"])  # seeded


def test_group_name_clash_is_user_error(tmp_path):
    base, other = runs(tmp_path, shifts=(0, 0.01))
    pairings = pair_runs(base, [other], key=KeySpec(("sample_id",)))
    with pytest.raises(UserError, match="--group-by 'metric'"):
        compare_pairings(pairings, group_by=("metric",))


def test_write_report(tmp_path):
    base, *others = runs(tmp_path)
    pairings = pair_runs(base, others)
    table = compare_pairings(pairings, n_boot=100)
    settings = {"metric": "dice", "alternative": "two-sided", "zero_method": "wilcox", "correction": "holm",
                "alpha": 0.05, "bootstrap": 100, "seed": 0}
    run = Run.create("stats", "wilcoxon", out=tmp_path / "out", argv=["test"])
    with run_context(run):
        summary = write_report(run, table, pairings, settings)
    for name in ("results.csv", "results.json", "summary.md", "summary.json", "mean_differences.png"):
        assert (run.path / name).is_file(), name
    assert (run.path / "mean_differences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = pd.read_csv(run.path / "results.csv")
    assert np.allclose(written["p_value"], table["p_value"])
    res = json.loads((run.path / "results.json").read_text())
    assert res["pairing"][0]["paired"] == 150 and len(res["results"]) == 2
    assert summary["tests"] == 2 and summary["comparisons"] == 2
    md = (run.path / "summary.md").read_text()
    assert md.count("\n| run0 | run") == 2
    assert "| A | B | group | n |" in markdown_table(table)


def test_metric_values_carry_their_precision_and_unit(tmp_path):
    assert fmt_metric(2.487662475989179, "hd95") == "2.49" and fmt_metric(0.812345678, "dice") == "0.8123"
    assert fmt_metric(0.01, "dice", signed=True) == "+0.0100" and fmt_metric(float("nan"), "dice") == "-"
    assert fmt_metric(123.456789, "loss") == "123.5"
    base, other = runs(tmp_path, shifts=(0.0, 0.02))
    for path in (base, other):  # an HD95-like column in pixels
        df = pd.read_csv(path / "per_sample.csv")
        df["hd95"] = df["dice"] * 10
        df.to_csv(path / "per_sample.csv", index=False)
    table = compare_pairings(pair_runs(base, [other], metric="hd95"), n_boot=50)
    md = markdown_table(table)
    assert "| mean A (px) | mean B (px) | mean B-A [95% CI] (px) |" in md
    cells = md.splitlines()[2].split(" | ")
    row = table.iloc[0]
    assert cells[4] == f"{row['mean_a']:.2f}"
    assert cells[6] == f"{row['mean_diff']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
    assert "2.48766" not in md
