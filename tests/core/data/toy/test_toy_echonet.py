"""Toy EchoNet-Dynamic generator: layout, truth, EF consistency, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from echoseg.core.data.echonet import (
    check_echonet,
    read_echonet,
    read_tracings,
    tracing_mask,
    tracing_volume,
)
from echoseg.core.data.toy.echonet import toy_cm_per_pixel, toy_lv_masks, write_toy_echonet
from echoseg.core.data.video import load_video
from echoseg.core.errors import UserError


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    filelist = write_toy_echonet(root, videos=4, frames=40, size=64, seed=3)
    return root, filelist


def test_layout_and_reader_round_trip(toy):
    root, filelist = toy
    expected = {"FileList.csv", "VolumeTracings.csv", "toy_truth.csv", "Videos", "Masks"}
    assert expected <= {p.name for p in root.iterdir()}
    df = read_echonet(root)
    assert list(df["FileName"]) == list(filelist["FileName"])
    assert set(df["Split"]) == {"TRAIN", "VAL", "TEST"}
    for _, row in df.iterrows():
        video = load_video(row["path"])
        assert video.shape == (40, 64, 64) and video.dtype == np.uint8
        assert video.std() > 10  # an image, not a blank
    assert df["traced"].all()


def test_check_finds_no_problem(toy):
    root, filelist = toy
    table, problems = check_echonet(root)
    assert problems == [] and len(table) == len(filelist)


def test_truth_ed_es_are_area_extremes_and_match_tracings(toy):
    root, _ = toy
    truth = pd.read_csv(root / "toy_truth.csv")
    df = read_echonet(root).set_index("FileName")
    for name, g in truth.groupby("FileName"):
        areas = g["Area"].to_numpy()
        ed, es = g["is_ed"].to_numpy(), g["is_es"].to_numpy()
        assert ed.any() and es.any()
        assert (areas[ed] == areas.max()).all() and (areas[~ed] < areas.max()).all()
        assert (areas[es] == areas.min()).all() and (areas[~es] > areas.min()).all()
        masks = toy_lv_masks(root, name + ".avi")
        np.testing.assert_array_equal(masks.reshape(len(masks), -1).sum(1), areas)
        ed_frame, es_frame = int(df.loc[name, "ed_frame"]), int(df.loc[name, "es_frame"])
        assert ed[ed_frame] and es[es_frame]
        # The traced polygon overlaps the true cavity closely.
        traced = tracing_mask(read_tracings(root)[name][ed_frame], 64, 64).astype(bool)
        true = masks[ed_frame].astype(bool)
        assert 2 * (traced & true).sum() / (traced.sum() + true.sum()) > 0.9


def test_ef_consistent_with_tracings(toy):
    root, filelist = toy
    tracings = read_tracings(root)
    df = read_echonet(root).set_index("FileName")
    cm = toy_cm_per_pixel(64)
    for name, row in df.iterrows():
        edv = tracing_volume(tracings[name][int(row["ed_frame"])], cm)
        esv = tracing_volume(tracings[name][int(row["es_frame"])], cm)
        assert row["EDV"] == pytest.approx(edv, rel=1e-9)
        assert row["ESV"] == pytest.approx(esv, rel=1e-9)
        assert row["EF"] == pytest.approx(100 * (edv - esv) / edv, rel=1e-9)
        assert 20 < row["EF"] < 75 and 40 < row["EDV"] < 250  # plausible adult values


def test_deterministic_for_a_seed(tmp_path):
    a = write_toy_echonet(tmp_path / "a", videos=2, frames=16, size=32, seed=7)
    b = write_toy_echonet(tmp_path / "b", videos=2, frames=16, size=32, seed=7)
    c = write_toy_echonet(tmp_path / "c", videos=2, frames=16, size=32, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert list(a["FileName"]) != list(c["FileName"])
    for name in ("FileList.csv", "VolumeTracings.csv", "toy_truth.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for fname in a["FileName"]:
        np.testing.assert_array_equal(load_video(tmp_path / "a" / "Videos" / f"{fname}.avi"),
                                      load_video(tmp_path / "b" / "Videos" / f"{fname}.avi"))
        np.testing.assert_array_equal(toy_lv_masks(tmp_path / "a", fname), toy_lv_masks(tmp_path / "b", fname))


def test_small_and_invalid_sizes(tmp_path):
    fl = write_toy_echonet(tmp_path / "one", videos=1, frames=16, size=32, seed=0)
    assert list(fl["Split"]) == ["TRAIN"] and read_echonet(tmp_path / "one")["traced"].all()
    with pytest.raises(UserError):
        write_toy_echonet(tmp_path / "bad", videos=1, frames=8, size=32)
    with pytest.raises(UserError, match="no toy LV masks"):
        toy_lv_masks(tmp_path / "one", "nope")
