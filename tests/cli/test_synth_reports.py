"""`echoseg synth reports` end to end: template, tiny random LLM and NER runs, reproducibility, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import skewed_prompts_run, tiny_causal_lm, tiny_token_classifier

from echoseg.cli import main


def _run(argv: list[str], capsys) -> Path:
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.splitlines()
    assert len(lines) == 1 and cap.out == lines[0] + "\n"  # stdout is exactly the run path
    return Path(lines[0])


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return skewed_prompts_run(tmp_path_factory.mktemp("prompts"))


def test_balanced_template_corpus(prompts, tmp_path, capsys):
    argv = ["synth", "reports", "--entities", str(prompts), "--count", "120", "--tau-max", "62", "--seed", "4"]
    run = _run([*argv, "--out", str(tmp_path / "a")], capsys)
    assert {p.name for p in run.iterdir()} >= {"entities.csv", "entities.png", "balance.png", "reports.csv",
                                               "dropped.csv", "summary.json", "metrics.jsonl", "run.json"}
    summary = json.loads((run / "summary.json").read_text())
    reports = pd.read_csv(run / "reports.csv")
    sampled = summary["frequencies"]["sampled"]
    assert max(n for vals in sampled.values() for n in vals.values()) <= 62  # the cap holds
    assert summary["categories_represented"] and set(sampled) == set(summary["inventory"]["categories"])
    assert summary["spread"]["sampled"]["max_min_ratio"] < summary["spread"]["natural"]["max_min_ratio"]
    ver = summary["verification"]
    assert ver["verified"] == 120 and ver["dropped"] == 0 and ver["requeries"] == 0  # template: 100% on first try
    assert len(reports) == 120 and (reports["tries"] == 1).all() and (reports["entities"] == reports["extracted"]).all()
    assert (reports["prompt"] == reports["text"]).all() and summary["splits"] == {"train": 108, "val": 12}
    first = json.loads(reports["entities"].iloc[0])
    assert reports[["view", "phase"]].iloc[0].tolist() == [first["view"][0], first["phase"][0]]
    assert reports["sex"].isin(["F", "M"]).all() and reports["age"].between(18, 95).all()
    entities = pd.read_csv(run / "entities.csv")
    assert list(entities.columns[:3]) == ["entity", "category", "count"] and entities["sampled"].max() <= 62
    assert [r["try"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == [1]

    again = _run([*argv, "--out", str(tmp_path / "b")], capsys)  # seeded: the same corpus
    assert (again / "reports.csv").read_bytes() == (run / "reports.csv").read_bytes()

    natural = _run(["synth", "reports", "--entities", str(prompts), "--count", "120", "--sampling", "natural",
                    "--seed", "4", "--out", str(tmp_path / "n")], capsys)
    nat = json.loads((natural / "summary.json").read_text())
    assert nat["sampling"]["tau_max"] is None
    assert summary["spread"]["sampled"]["max_min_ratio"] < nat["spread"]["sampled"]["max_min_ratio"]

    from echoseg.core.synth.text2img import read_prompts

    assert len(read_prompts(run / "reports.csv")) == 120  # the --prompts file of `synth generate --pipeline`


def test_random_llm_reports_are_dropped_and_counted(prompts, tmp_path, capsys):
    texts = pd.read_csv(prompts / "reports.csv")["report"].tolist()
    lm = tiny_causal_lm(tmp_path / "lm", texts)
    run = _run(["synth", "reports", "--entities", str(prompts), "--writer", f"llm:{lm}", "--count", "6",
                "--max-tries", "2", "--batch-size", "4", "--max-new-tokens", "12", "--device", "cpu",
                "--out", str(tmp_path / "r")], capsys)
    ver = json.loads((run / "summary.json").read_text())["verification"]
    dropped = pd.read_csv(run / "dropped.csv")
    assert ver["writer"] == f"llm:{lm}" and ver["verified"] + ver["dropped"] == 6 and ver["dropped"] == len(dropped)
    assert ver["dropped"] >= 5 and (dropped["tries"] == 2).all()  # random weights: re-queried, then dropped
    assert ver["queries"] == ver["requeries"] + 6 and [t["try"] for t in ver["per_try"]] == [1, 2]
    assert len(pd.read_csv(run / "reports.csv")) == ver["verified"]


def test_ner_inventory_run(prompts, tmp_path, capsys):
    texts = pd.read_csv(prompts / "reports.csv")["report"].tolist()
    ner = tiny_token_classifier(tmp_path / "ner", texts)
    run = _run(["synth", "reports", "--entities", str(prompts), "--ner", str(ner), "--count", "8",
                "--per-category", "2", "--max-tries", "1", "--device", "cpu", "--out", str(tmp_path / "r")], capsys)
    summary = json.loads((run / "summary.json").read_text())
    entities = pd.read_csv(run / "entities.csv")
    assert summary["inventory"]["kind"] == "ner" and summary["inventory"]["reports"] == 40  # train + val images
    assert set(entities["category"]) <= {"abnormality", "non-abnormality", "disease", "non-disease", "anatomy"}
    assert summary["verification"]["extractor"] == f"ner:{ner}"
    assert summary["verification"]["verified"] + summary["verification"]["dropped"] == 8


def test_bad_inputs_exit_2_and_leave_nothing(prompts, tmp_path, capsys):
    out = tmp_path / "x"
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ["--entities", str(empty)],  # not a prompts run
        ["--entities", str(tmp_path / "missing")],
        [],  # no --entities
        ["--entities", str(prompts), "--writer", "gpt"],
        ["--entities", str(prompts), "--writer", "llm:"],
        ["--entities", str(prompts), "--tau-max", "0"],
        ["--entities", str(prompts), "--sampling", "natural", "--tau-max", "50"],
        ["--entities", str(prompts), "--writer", f"llm:{tmp_path / 'no-model'}"],
        ["--entities", str(prompts), "--ner", str(tmp_path / "no-ner")],
        ["--entities", str(prompts), "--ner", str(empty)],  # a folder without config.json
        ["--entities", str(prompts), "--max-tries", "0"],
        ["--entities", str(prompts), "--val-fraction", "1"],
        ["--entities", str(prompts), "--splits", "test2"],
    ]
    for argv in cases:
        assert main(["synth", "reports", *argv, "--out", str(out)]) == 2, argv
        cap = capsys.readouterr()
        assert cap.out == "" and cap.err.startswith("error:") and "\n" not in cap.err.strip(), (argv, cap.err)
        assert not out.exists()
