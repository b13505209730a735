"""`echoseg eval afd --subsample K`: every K-th frame, estimates mapped back to original frame indices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from afd_fixtures import ED, ES, FRAMES, SIZE, beating_masks, tracing_rows

from echoseg.cli import main
from echoseg.core.eval.afd import EveryKth, subsample_signals
from echoseg.core.metrics.areas import AreaSignals


@pytest.fixture
def echonet(tmp_path: Path) -> Path:
    """A minimal EchoNet-Dynamic folder: one TEST video ``a`` at 50 FPS, traced at ED and ES."""
    root = tmp_path / "echonet"
    (root / "Videos").mkdir(parents=True)
    pd.DataFrame({"FileName": ["a"], "EF": 60.0, "ESV": 40.0, "EDV": 100.0, "FrameHeight": SIZE, "FrameWidth": SIZE,
                  "FPS": 50.0, "NumberOfFrames": FRAMES, "Split": "TEST"}).to_csv(root / "FileList.csv", index=False)
    rows = tracing_rows("a", ES, 6.0) + tracing_rows("a", ED, 14.0)
    pd.DataFrame(rows, columns=["FileName", "X1", "Y1", "X2", "Y2", "Frame"]).to_csv(
        root / "VolumeTracings.csv", index=False)
    return root


def _afd(capsys, echonet: Path, source: list[str], out: Path, k: int) -> tuple[pd.DataFrame, dict]:
    rc = main(["eval", "afd", "--data", str(echonet), *source, "--subsample", str(k), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out == f"{out}\n"
    return pd.read_csv(out / "per_video.csv"), json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("kind", ["areas", "masks"])
def test_subsample_maps_estimates_back_to_original_frames(tmp_path, echonet, capsys, kind):
    masks = beating_masks()
    if kind == "areas":
        path = tmp_path / "areas.csv"
        pd.DataFrame({"FileName": "a", "Frame": np.arange(FRAMES), "Area": (masks > 127).sum(axis=(1, 2))}).to_csv(
            path, index=False)
        source = ["--areas", str(path)]
    else:
        (tmp_path / "masks").mkdir()
        np.savez_compressed(tmp_path / "masks" / "a.npz", masks=masks)
        source = ["--masks", str(tmp_path / "masks")]
    table, summary = _afd(capsys, echonet, source, tmp_path / "k1", 1)
    assert (table.loc[0, "ED_est"], table.loc[0, "ES_est"]) == (ED, ES) and summary["subsample"] == 1
    # every 4th frame: 0, 4, ..., 44; the kept frames nearest the true ED (23) and ES (33) are 24 and 32
    table, summary = _afd(capsys, echonet, source, tmp_path / "k4", 4)
    row = table.loc[0]
    assert (row["ED_ref"], row["ES_ref"]) == (ED, ES)  # references stay in original frames
    assert (row["ED_est"], row["ES_est"]) == (24, 32) and (row["ED_delay"], row["ES_delay"]) == (1, -1)
    assert row["NumberOfFrames"] == 12 and row["ES_delay_ms"] == pytest.approx(-20.0)  # 1 frame at 50 FPS
    assert summary["subsample"] == 4 and summary["aFD_ED_frames"] == 1 and summary["aFD_ES_ms"] == pytest.approx(20)
    assert json.loads((tmp_path / "k4" / "run.json").read_text())["config"]["subsample"] == 4
    assert (tmp_path / "k4" / "area_curves.png").stat().st_size > 0


@pytest.mark.parametrize("extra", [["--areas", "AREAS", "--subsample", "0"], ["--areas", "AREAS", "--subsample", "-2"],
                                   ["--teacher", "run:missing", "--save-masks", "--subsample", "2"]])
def test_bad_subsample_is_one_line_exit_2(tmp_path, echonet, capsys, extra):
    path = tmp_path / "areas.csv"
    path.write_text("FileName,Frame,Area\na,0,1\na,1,2\n")
    out = tmp_path / "run"
    rc = main(["eval", "afd", "--data", str(echonet), *[str(path) if e == "AREAS" else e for e in extra],
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "--subsample" in captured.err
    assert not out.exists()


def test_every_kth_model_and_signals():
    class Recorder:
        def predict(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
            self.seen = frames[:, 0, 0].tolist()
            return frames.astype(np.float32)

    model = Recorder()
    frames = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    assert EveryKth(model, 3).predict(frames).shape == (4, 2, 2) and model.seen == [0, 3, 6, 9]
    signals = subsample_signals(AreaSignals.from_curves({"a": np.arange(7.0), "b": np.arange(3.0)}), 2)
    assert signals.curve(0).tolist() == [0, 2, 4, 6] and signals.curve(1).tolist() == [0, 2]
