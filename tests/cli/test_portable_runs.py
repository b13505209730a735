"""Data runs store their own files relative to themselves: a copied or moved run reads its own files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from echoseg.cli import main
from echoseg.core.data.manifest import read_manifest, relative_paths


def _run(capsys, argv: list[str]) -> Path:
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return Path(cap.out.strip().splitlines()[-1])


def test_copied_and_moved_data_runs_read_their_own_files(tmp_path, capsys):
    orig = _run(capsys, ["data", "toy", "camus", "--patients", "3", "--size", "32", "--out", str(tmp_path / "orig")])
    raw = pd.read_csv(orig / "manifest.csv")
    assert not any(Path(p).is_absolute() for p in raw["image"].tolist() + raw["mask"].tolist())

    edited = tmp_path / "edited"
    shutil.copytree(orig, edited)
    shutil.move(str(orig), str(tmp_path / "gone"))  # the original is not there any more
    frame = read_manifest(edited)
    assert all(str(p).startswith(str(edited)) and Path(p).is_file() for p in frame["image"])

    prompts = _run(capsys, ["prompts", "build", str(edited), "--out", str(tmp_path / "prompts")])
    built = read_manifest(prompts)
    assert all(str(p).startswith(str(edited)) for p in built["image"])  # external data: absolute, the copy's
    record = json.loads((prompts / "run.json").read_text())
    assert str(edited) in json.dumps(record["inputs"])


def test_relative_paths_keep_external_files_absolute(tmp_path):
    inside = tmp_path / "run" / "images" / "a.png"
    outside = tmp_path / "elsewhere" / "b.png"
    df = pd.DataFrame({"image": [str(inside), str(outside)], "mask": ["", None]})
    rel = relative_paths(df, tmp_path / "run")
    assert rel["image"].tolist() == ["images/a.png", str(outside)]
    assert rel["mask"].tolist()[0] == "" and rel["mask"].isna().tolist()[1]
