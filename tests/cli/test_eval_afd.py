"""CLI tests for `echoseg eval afd`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from afd_fixtures import ED, ES, FRAMES, SIZE, beating_masks, tracing_rows

from echoseg.cli import main


@pytest.fixture
def echonet(tmp_path: Path) -> Path:
    """A minimal EchoNet-Dynamic folder: videos a, b traced (ED, ES), c untraced; a and c in TEST."""
    root = tmp_path / "echonet"
    (root / "Videos").mkdir(parents=True)
    pd.DataFrame({
        "FileName": ["a", "b", "c"], "EF": 60.0, "ESV": 40.0, "EDV": 100.0, "FrameHeight": SIZE,
        "FrameWidth": SIZE, "FPS": [50.0, 25.0, 50.0], "NumberOfFrames": FRAMES, "Split": ["TEST", "TRAIN", "TEST"],
    }).to_csv(root / "FileList.csv", index=False)
    rows = []
    for name in ("a", "b"):
        rows += tracing_rows(name, ES, 6.0) + tracing_rows(name, ED, 14.0)  # ES listed first: area decides
    pd.DataFrame(rows, columns=["FileName", "X1", "Y1", "X2", "Y2", "Frame"]).to_csv(
        root / "VolumeTracings.csv", index=False)
    return root


def areas_csv(path: Path, shift_b: int = 0) -> Path:
    """Areas of the beating masks for a, c and (rolled by ``shift_b`` frames) b."""
    curve = (beating_masks() > 127).sum(axis=(1, 2))
    rows = []
    for name, c in (("a", curve), ("b", np.roll(curve, shift_b)), ("c", curve)):
        rows += [(name, f, int(v)) for f, v in enumerate(c)]
    pd.DataFrame(rows, columns=["FileName", "Frame", "Area"]).to_csv(path, index=False)
    return path


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_afd_from_areas_csv(tmp_path, echonet, capsys):
    out = tmp_path / "run"
    rc, stdout, _ = run_cli(capsys, ["eval", "afd", "--data", str(echonet), "--split", "all",
                                      "--areas", str(areas_csv(tmp_path / "areas.csv", shift_b=2)), "--out", str(out)])
    assert rc == 0
    assert stdout == f"{out}\n"
    table = pd.read_csv(out / "per_video.csv")
    assert table["FileName"].tolist() == ["a", "b", "c"]
    assert table["ED_ref"].tolist()[:2] == [ED, ED] and table["ES_ref"].tolist()[:2] == [ES, ES]
    assert table["ED_delay"].tolist()[:2] == [0, 2] and table["ES_delay"].tolist()[:2] == [0, 2]
    assert table["ED_delay_ms"].tolist()[1] == pytest.approx(2 / 25 * 1000)
    assert table.loc[2, "Reference"] == "no" and pd.isna(table.loc[2, "ED_delay"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aFD_ED_frames"] == pytest.approx(1.0) and summary["aFD_ES_frames"] == pytest.approx(1.0)
    assert summary["aFD_ED_ms"] == pytest.approx((0 + 80) / 2)
    assert summary["videos_evaluated"] == 2
    assert summary["videos_without_reference"] == 1 and summary["without_reference"] == ["c"]
    assert (out / "area_curves.png").stat().st_size > 0
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


def test_afd_from_masks_is_zero_on_the_test_split(tmp_path, echonet, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    np.savez_compressed(masks / "a.npz", masks=beating_masks())
    np.save(masks / "b.npy", beating_masks().astype(np.float32) / 255)  # TRAIN: outside the split
    out = tmp_path / "run"
    rc, stdout, _ = run_cli(capsys, ["eval", "afd", "--data", str(echonet), "--masks", str(masks),
                                      "--out", str(out)])
    assert rc == 0 and stdout == f"{out}\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aFD_ED_frames"] == 0 and summary["aFD_ES_frames"] == 0
    assert summary["videos_evaluated"] == 1
    assert summary["without_areas"] == ["c"] and summary["not_in_filelist"] == ["b"]


def test_afd_reference_csv(tmp_path, echonet, capsys):
    (tmp_path / "ref.csv").write_text(f"FileName,ED,ES\na,{ED},{ES + 1}\nc,{ED},{ES}\n")
    out = tmp_path / "run"
    rc, _, _ = run_cli(capsys, ["eval", "afd", "--data", str(echonet), "--areas", str(areas_csv(tmp_path / "x.csv")),
                                "--reference", str(tmp_path / "ref.csv"), "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos_evaluated"] == 2 and summary["aFD_ES_frames"] == pytest.approx(0.5)


def test_afd_bad_areas_header_is_one_line_exit_2(tmp_path, echonet, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("FileName,Frame,LVArea\na,0,10\n")
    out = tmp_path / "run"
    rc, stdout, stderr = run_cli(capsys, ["eval", "afd", "--data", str(echonet), "--areas", str(bad),
                                          "--out", str(out)])
    assert rc == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert "--areas" in stderr and "Area" in stderr
    assert not out.exists()


@pytest.mark.parametrize("extra", [[], ["--areas", "a.csv", "--masks", "."], ["--areas", "a.csv", "--threshold", "1"]])
def test_afd_usage_errors(tmp_path, echonet, capsys, extra):
    (tmp_path / "a.csv").write_text("FileName,Frame,Area\na,0,1\n")
    rc, stdout, stderr = run_cli(capsys, ["eval", "afd", "--data", str(echonet), *[
        str(tmp_path / e) if e.endswith(".csv") else e for e in extra]])
    assert rc == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1
