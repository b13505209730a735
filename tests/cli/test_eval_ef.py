"""CLI tests for `echoseg eval ef`: toy videos end to end, a DICOM import (its pixel size gives mL), bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicom_variants import grey_cine, variant

from echoseg.cli import main
from echoseg.core.data.toy.echonet import write_toy_echonet


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ef-cli")
    write_toy_echonet(root, videos=4, frames=32, size=112, seed=2)
    return root


def test_ef_on_toy_videos_end_to_end(toy, tmp_path, capsys):
    out = tmp_path / "ef"
    rc, stdout, err = run_cli(capsys, ["eval", "ef", "--data", str(toy), "--masks", str(toy / "Masks"),
                                       "--split", "all", "--out", str(out)])
    assert rc == 0, err
    assert stdout == f"{out}\n"
    table = pd.read_csv(out / "per_video.csv")
    assert len(table) == 4 and (table["Unit"] == "mL").all() and table["EF_error"].abs().max() < 1.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos_compared"] == 4 and summary["EF_MAE"] < 1 and summary["disks"] == 20
    assert {"bland_altman.png", "scatter.png"} <= {p.name for p in out.iterdir()}
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["config"]["volume"] == "disks"


def write_masks(folder: Path, masks: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in masks.items():
        np.savez_compressed(folder / f"{name}.npz", masks=m)
    return folder


def beating_ellipses(frames: int, size: int, a: float, b: float, es_scale: float) -> np.ndarray:
    """(T, size, size) uint8 0/255 ellipses (long axis vertical) scaled by 1 at frame 0 (ED) down to ``es_scale``
    at mid-video (ES) and back."""
    scale = 1 - (1 - es_scale) * (1 - np.cos(2 * np.pi * np.arange(frames) / frames)) / 2
    rows, cols = np.mgrid[0:size, 0:size]
    x, y = cols - size / 2 + 0.3, rows - size / 2 + 0.2
    return np.stack([((x / (b * s)) ** 2 + (y / (a * s)) ** 2 <= 1) for s in scale]).astype(np.uint8) * 255


def test_dicom_import_carries_its_pixel_size_into_ef_volumes(tmp_path, capsys):
    ds, _ = grey_cine()
    region = ds.SequenceOfUltrasoundRegions[0]
    calibrated = variant(tmp_path / "calibrated.dcm", region=(40, 20, 279, 219))
    bare = variant(tmp_path / "bare.dcm", drop=("SequenceOfUltrasoundRegions",))
    data = tmp_path / "imported"
    rc, _, err = run_cli(capsys, ["data", "import-dicom", str(calibrated), str(bare), "--crop", "none",
                                  "--size", "60", "--out", str(data)])
    assert rc == 0, err
    filelist = pd.read_csv(data / "FileList.csv").set_index("FileName")
    # 320 x 240 frames padded to 320 x 320, then resized to 60: a pixel is 320/60 source pixels, in cm
    assert filelist.loc["calibrated", "PhysicalDeltaX"] == pytest.approx(region.PhysicalDeltaX * 320 / 60)
    assert filelist.loc["calibrated", "PhysicalDeltaY"] == pytest.approx(region.PhysicalDeltaY * 320 / 60)
    assert filelist.loc["bare", ["PhysicalDeltaX", "PhysicalDeltaY"]].isna().all()
    assert json.loads((data / "summary.json").read_text())["videos_with_pixel_spacing"] == 1

    es_scale = 0.8
    ellipses = beating_ellipses(30, 60, a=22.0, b=9.0, es_scale=es_scale)
    masks = write_masks(tmp_path / "masks", {"calibrated": ellipses, "bare": ellipses})
    out = tmp_path / "ef"
    rc, stdout, err = run_cli(capsys, ["eval", "ef", "--data", str(data), "--masks", str(masks), "--out", str(out)])
    assert rc == 0, err
    table = pd.read_csv(out / "per_video.csv").set_index("FileName")
    assert table.loc["calibrated", "Unit"] == "mL" and table.loc["bare", "Unit"] == "px3"
    cm = region.PhysicalDeltaX * 320 / 60
    edv = 4 / 3 * math.pi * (22.0 * cm) * (9.0 * cm) ** 2  # the prolate spheroid, in mL
    assert table.loc["calibrated", "EDV"] == pytest.approx(edv * (1 + 1 / 800), rel=0.04)
    assert table.loc["calibrated", "EF"] == pytest.approx(100 * (1 - es_scale**3), abs=2.0)
    assert table.loc["bare", "EF"] == pytest.approx(table.loc["calibrated", "EF"], abs=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos_without_reference_ef"] == 2 and summary["videos_compared"] == 0
    assert summary["figures"] == [] and not (out / "scatter.png").exists()


def test_skip_bad_leaves_out_a_short_mask_file(toy, tmp_path, capsys):
    names = list(pd.read_csv(toy / "FileList.csv")["FileName"])
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in names:
        (masks / f"{name}.npz").symlink_to(toy / "Masks" / f"{name}.npz")
    (masks / f"{names[0]}.npz").unlink()
    np.savez_compressed(masks / f"{names[0]}.npz", masks=np.zeros((5, 112, 112), np.uint8))
    args = ["eval", "ef", "--data", str(toy), "--masks", str(masks), "--split", "all"]
    rc, stdout, err = run_cli(capsys, [*args, "--out", str(tmp_path / "stop")])
    assert rc == 2 and stdout == "" and "holds 5 frames" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "stop").exists()
    rc, _, err = run_cli(capsys, [*args, "--skip-bad", "--out", str(tmp_path / "skip")])
    assert rc == 0, err
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert summary["videos_skipped"] == 1 and summary["videos_compared"] == 3
    assert (tmp_path / "skip" / "problems.csv").is_file()


def bad_filelist(toy: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bad-spacing"
    root.mkdir()
    (root / "Videos").symlink_to(toy / "Videos")
    filelist = pd.read_csv(toy / "FileList.csv")
    filelist.loc[0, "PhysicalDeltaX"] = -0.1
    filelist.to_csv(root / "FileList.csv", index=False)
    return root


@pytest.mark.parametrize(("extra", "message"), [
    (["--volume", "simpson"], "--volume must be one of disks, area-length"),
    (["--phase-source", "manual"], "--phase-source must be one of detected, tracings"),
    (["--save-masks"], "--save-masks applies to --run and --teacher only"),
    (["--split", "nope"], "--split must be TRAIN, VAL, TEST or all"),
    (["--teacher", "run:/nowhere"], "give exactly one of --masks | --run | --teacher"),
    (["--masks", "{empty}"], "has a mask file (<FileName>.npz, .npy or .avi) there"),
    (["--data", "{bad}"], "PhysicalDeltaY and PhysicalDeltaX must both be positive numbers"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(toy, tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    paths = {"empty": str(tmp_path / "empty"), "bad": str(bad_filelist(toy, tmp_path))}
    extra = [w.format(**paths) for w in extra]
    given = {"--data": str(toy), "--masks": str(toy / "Masks"), "--split": "all"}
    base = [w for key, value in given.items() if key not in extra for w in (key, value)]
    out = tmp_path / "run"
    rc, stdout, err = run_cli(capsys, ["eval", "ef", *base, *extra, "--out", str(out)])
    assert rc == 2 and stdout == ""
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
