"""`echoseg stats wilcoxon`: run directory, stdout discipline, exit codes, published-format files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echoseg.cli import main

SB_REGEX = r"mask_(?P<structure>\d)/(?P<stem>[^/]+)_gt\.png$"


def make_run(root: Path, name: str, shift: float, n: int = 90, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(99).uniform(0.6, 0.9, n)
    df = pd.DataFrame({
        "sample_id": [f"p{i // 3:03d}_{'LV MYO LA'.split()[i % 3]}" for i in range(n)],
        "image": "x.nii.gz", "structure": ["LV", "MYO", "LA"] * (n // 3), "prompt": "p0",
        "dice": base + shift + rng.normal(0, 0.01, n), "iou": base * 0.8, "hd95": rng.uniform(1, 5, n),
    })
    (root / name).mkdir(parents=True)
    df.to_csv(root / name / "per_sample.csv", index=False)
    return root / name


def sb_file(path: Path, prefix: str, seed: int, shift: float = 0.0) -> Path:
    rng = np.random.default_rng(seed)
    rows = [{"filename": f"{prefix}/mask_{k}/patient{p:04d}_{v}_gt.png", "iou": 50.0,
             "dice": float(np.clip(rng.normal(75 + shift, 4), 0, 100)), "hausdorff_distance": 1e4,
             "ones_dice_diff": 40.0, "zeros_dice_diff": 70.0}
            for k in (1, 2, 3) for p in range(1, 21) for v in ("2CH_ED", "4CH_ES")]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).sample(frac=1.0, random_state=seed).to_csv(path, index=False, float_format="%.4f")
    return path


def test_two_runs(tmp_path, capsys):
    a, b = make_run(tmp_path, "real", 0.0), make_run(tmp_path, "synth", 0.02, seed=1)
    out = tmp_path / "out"
    rc = main(["stats", "wilcoxon", str(a), str(b), "--group-by", "structure", "--bootstrap", "200",
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out == f"{out}\n"
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed" and record["command"] == "stats wilcoxon"
    assert record["inputs"]["a"]["path"] == str(a.resolve()) and "b" in record["inputs"]
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 3 and set(results["structure"]) == {"LV", "MYO", "LA"}
    assert (results["mean_diff"] > 0).all() and results["significant"].all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tests"] == 3 and summary["pairing"][0]["paired"] == 90
    assert (out / "mean_differences.png").is_file() and "| real | synth |" in (out / "summary.md").read_text()
    assert "Wilcoxon signed-rank" in captured.err


def test_baseline_many_vs_one(tmp_path, capsys):
    base = make_run(tmp_path, "base", 0.0)
    others = [make_run(tmp_path, f"r{i}", s, seed=i + 1) for i, s in enumerate((0.01, -0.01, 0.0))]
    out = tmp_path / "out"
    rc = main(["stats", "wilcoxon", "--baseline", str(base), *map(str, others), "--correction", "bonferroni",
               "--alternative", "greater", "--bootstrap", "0", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    results = pd.read_csv(out / "results.csv")
    assert results["b"].tolist() == ["r0", "r1", "r2"] and (results["a"] == "base").all()
    assert np.allclose(results["p_adjusted"], np.minimum(1, 3 * results["p_value"]))
    assert results["ci_low"].isna().all()
    inputs = json.loads((out / "run.json").read_text())["inputs"]
    assert inputs["baseline"]["path"] == str(base.resolve()) and len(inputs["runs"]) == 3


def test_published_format_with_key_regex(tmp_path, capsys):
    a = sb_file(tmp_path / "camus_metrics/cris/p0/metrics.csv", "/mnt/Enterprise/m/out/cris/camus/p0", 0)
    b = sb_file(tmp_path / "pt_ft_metrics/cris/p0/metrics.csv", "/home/m/asmus_out_masks/cris/ptft/p0", 1, 3.0)
    out = tmp_path / "out"
    rc = main(["stats", "wilcoxon", str(a), str(b), "--key-regex", SB_REGEX, "--group-by", "structure",
               "--bootstrap", "100", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    results = pd.read_csv(out / "results.csv")
    assert results["n"].tolist() == [40, 40, 40] and results["structure"].tolist() == [1, 2, 3]
    assert (results["a"] == "camus_metrics").all() and results["mean_diff"].mean() > 1  # percentages


@pytest.mark.parametrize(
    "args, message",
    [
        (["ONE"], "exactly two runs"),
        (["--baseline", "A"], "one or more runs"),
        (["A", "B", "--correction", "sidak2"], "--correction must be one of"),
        (["A", "B", "--alternative", "bigger"], "--alternative must be one of"),
        (["A", "B", "--metric", "dsc"], "no metric column 'dsc'"),
        (["A", "MISSING"], "not found"),
        (["A", "B", "--key-regex", "(oops"], "not a valid regular expression"),
        (["A", "B", "--bootstrap", "-1"], "--bootstrap"),
    ],
)
def test_bad_input_is_exit_2_one_line(tmp_path, capsys, args, message):
    paths = {"A": make_run(tmp_path, "a", 0.0), "B": make_run(tmp_path, "b", 0.01),
             "ONE": tmp_path / "a", "MISSING": tmp_path / "nope"}
    out = tmp_path / "out"
    rc = main(["stats", "wilcoxon", *[str(paths.get(x, x)) for x in args], "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2
    err = captured.err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert captured.out == "" and not out.exists()


def test_unpaired_needs_allow_flag(tmp_path, capsys):
    a = make_run(tmp_path, "a", 0.0)
    b = make_run(tmp_path, "b", 0.01)
    df = pd.read_csv(b / "per_sample.csv").iloc[:80]
    df.loc[3, "dice"] = np.nan
    df.to_csv(b / "per_sample.csv", index=False)
    assert main(["stats", "wilcoxon", str(a), str(b), "--out", str(tmp_path / "o1")]) == 2
    assert "--allow-unpaired" in capsys.readouterr().err
    out = tmp_path / "o2"
    assert main(["stats", "wilcoxon", str(a), str(b), "--allow-unpaired", "--bootstrap", "0", "--out", str(out)]) == 0
    info = json.loads((out / "summary.json").read_text())["pairing"][0]
    assert (info["only_a"], info["dropped_nonfinite"], info["used"]) == (10, 1, 79)
    assert "10 only in A" in (out / "log.txt").read_text()


def test_degenerate_identical_runs_small_n(tmp_path, capsys):
    a = make_run(tmp_path, "a", 0.0, n=6)
    out = tmp_path / "out"
    rc = main(["stats", "wilcoxon", str(a), str(a / "per_sample.csv"), "--bootstrap", "50", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["p_value"] == 1.0 and "all differences are zero" in row["note"]
    assert "all differences are zero" in (out / "log.txt").read_text()


def test_real_published_files(tmp_path, capsys, reference):
    files = [reference("synthetic-boost", "metrics", s, "cris", "p3", "metrics.csv")
             for s in ("camus_metrics_reduce_lr", "pt_on_sdm_camus_ft_on_camus_metrics_reduce_lr",
                       "sdm_camus_metrics_reduce_lr")]
    out = tmp_path / "out"
    rc = main(["stats", "wilcoxon", "--baseline", *map(str, files), "--key-regex", SB_REGEX, "--bootstrap", "200",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    results = pd.read_csv(out / "results.csv")
    assert results["n"].tolist() == [600, 600]
    assert results["b"].tolist() == ["pt_on_sdm_camus_ft_on_camus_metrics_reduce_lr", "sdm_camus_metrics_reduce_lr"]
    assert (results["method"] == "asymptotic").all()
