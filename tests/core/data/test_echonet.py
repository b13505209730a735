"""EchoNet-Dynamic reader: FileList, VolumeTracings, videos, ED/ES by area, and the data set check."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from echoseg.core.data.echonet import (
    check_echonet,
    detect_echonet,
    echonet_channel_stats,
    read_echonet,
    read_filelist,
    read_tracings,
    reference_frames,
    tracing_area,
    tracing_mask,
    tracing_polygon,
    tracing_volume,
)
from echoseg.core.data.toy.echonet import write_toy_echonet
from echoseg.core.data.video import load_video, write_video
from echoseg.core.errors import UserError

HEADER = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"


def _disk_rows(cx: float, top: float, length: float, half: float, n: int = 20) -> np.ndarray:
    """A rectangle-like tracing: long axis, then n horizontal disks of half-width ``half``."""
    rows = [[cx, top, cx, top + length]]
    for i in range(n):
        y = top + (i + 0.5) * length / n
        rows.append([cx - half, y, cx + half, y])
    return np.array(rows, dtype=float)


def _write_tracings(path, blocks: list[tuple[str, int, np.ndarray]]) -> None:
    lines = ["FileName,X1,Y1,X2,Y2,Frame"]
    for name, frame, rows in blocks:
        lines += [f"{name},{r[0]},{r[1]},{r[2]},{r[3]},{frame}" for r in rows]
    path.write_text("\n".join(lines) + "\n")


def _dataset(root, n_frames: int = 12, size: int = 32) -> dict[str, np.ndarray]:
    """Two grey videos A (traced at ES=2 and ED=7) and B (untraced)."""
    (root / "Videos").mkdir(parents=True)
    rng = np.random.default_rng(0)
    videos = {}
    for name in ("A", "B"):
        frames = rng.integers(0, 256, (n_frames, size, size), dtype=np.uint8)
        write_video(root / "Videos" / f"{name}.avi", frames, 50.0)
        videos[name] = frames
    (root / "FileList.csv").write_text(
        f"{HEADER}\r\nA,55.0,20,44,{size},{size},50,{n_frames},train\r\nB.avi,60.1,10,25,{size},{size},50,{n_frames},TEST\r\n"
    )
    small, large = _disk_rows(16, 4, 20, 4), _disk_rows(16, 4, 24, 8)
    _write_tracings(root / "VolumeTracings.csv", [("A.avi", 2, small), ("A.avi", 7, large)])
    return videos


def test_filelist_crlf_names_and_splits(tmp_path):
    _dataset(tmp_path)
    assert detect_echonet(tmp_path)
    fl = read_filelist(tmp_path)
    assert list(fl["FileName"]) == ["A", "B"]  # normalised without .avi
    assert list(fl["Split"]) == ["TRAIN", "TEST"]  # no stray '\r', upper-cased
    assert fl["EF"].tolist() == [55.0, 60.1]
    assert fl["NumberOfFrames"].tolist() == [12, 12]


def test_filelist_without_split_is_user_error(tmp_path):
    (tmp_path / "FileList.csv").write_text("FileName,EF\nA,50\n")
    with pytest.raises(UserError, match=r"FileList\.csv: missing column 'Split'"):
        read_filelist(tmp_path)


def test_filelist_missing_and_duplicate(tmp_path):
    with pytest.raises(UserError, match="FileList.csv: file not found"):
        read_filelist(tmp_path)
    (tmp_path / "FileList.csv").write_text(f"{HEADER}\nA,1,1,1,1,1,1,1,TRAIN\nA.avi,1,1,1,1,1,1,1,TRAIN\n")
    with pytest.raises(UserError, match="'A' listed more than once"):
        read_filelist(tmp_path)


def test_tracings_columns_must_match(tmp_path):
    (tmp_path / "VolumeTracings.csv").write_text("FileName,X1,Y1,X2,Y2\nA.avi,1,2,3,4\n")
    with pytest.raises(UserError, match="columns must be exactly"):
        read_tracings(tmp_path)


def test_tracing_polygon_order():
    rows = np.array([[0, 0, 0, 9], [1, 1, 5, 1], [2, 2, 6, 2], [3, 3, 7, 3]], dtype=float)
    poly = tracing_polygon(rows)
    # X1/Y1 of rows 2.. in order, then X2/Y2 of rows 2.. reversed; the long axis is not a vertex.
    np.testing.assert_array_equal(poly, [[1, 1], [2, 2], [3, 3], [7, 3], [6, 2], [5, 1]])
    with pytest.raises(ValueError):
        tracing_polygon(rows[:2])


def test_tracing_mask_area_and_volume():
    rows = _disk_rows(16, 4, 20, 5)
    mask = tracing_mask(rows, 32, 32)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    # polygon: x 11..21, y 4.5..23.5 -> 10 x 19 = 190 px
    assert tracing_area(rows) == pytest.approx(190.0)
    assert abs(int(mask.sum()) - 190) <= 30
    # 20 disks of diameter 10 over a long axis of 20: pi * 25 * 20 = 1570.8
    assert tracing_volume(rows) == pytest.approx(np.pi * 25 * 20)
    assert tracing_volume(rows, cm_per_pixel=0.1) == pytest.approx(np.pi * 25 * 20 / 1000)


def test_shuffled_tracings_give_same_ed_es(tmp_path):
    _dataset(tmp_path)
    first = read_echonet(tmp_path)
    # Rewrite with the large (ED) frame first and disk rows unchanged: the answer must not change.
    small, large = _disk_rows(16, 4, 20, 4), _disk_rows(16, 4, 24, 8)
    _write_tracings(tmp_path / "VolumeTracings.csv", [("A", 7, large), ("A", 2, small)])
    second = read_echonet(tmp_path)
    for df in (first, second):
        a = df.set_index("FileName").loc["A"]
        assert (a["ed_frame"], a["es_frame"]) == (7, 2)
        assert bool(a["traced"])
    assert reference_frames(read_tracings(tmp_path)["A"]) == (7, 2)
    assert reference_frames({3: small}) is None


def test_read_tracings_keeps_file_order(tmp_path):
    rows = _disk_rows(16, 4, 20, 4, n=3)
    _write_tracings(tmp_path / "VolumeTracings.csv", [("A.avi", 5, rows)])
    got = read_tracings(tmp_path)
    assert set(got) == {"A"} and set(got["A"]) == {5}
    np.testing.assert_allclose(got["A"][5], rows)


def test_read_echonet_rows_and_split(tmp_path):
    _dataset(tmp_path)
    df = read_echonet(tmp_path)
    assert list(df.columns[:2]) == ["FileName", "path"]
    for col in ("EF", "ESV", "EDV", "FPS", "NumberOfFrames", "Split", "ed_frame", "es_frame", "traced"):
        assert col in df.columns
    b = df.set_index("FileName").loc["B"]
    assert np.isnan(b["ed_frame"]) and not b["traced"]
    assert b["path"].endswith("Videos/B.avi")
    test = read_echonet(tmp_path, split="test")
    assert list(test["FileName"]) == ["B"]
    with pytest.raises(UserError, match="no video in split"):
        read_echonet(tmp_path, split="VAL")


def test_video_round_trip_is_exact(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (9, 24, 40), dtype=np.uint8)
    codec = write_video(tmp_path / "v.avi", frames, 25.0)
    back = load_video(tmp_path / "v.avi")
    assert back.shape == frames.shape and back.dtype == np.uint8
    if codec == "FFV1":
        np.testing.assert_array_equal(back, frames)
    else:  # lossy fallback
        assert np.abs(back.astype(int) - frames).mean() < 20
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_load_video_errors(tmp_path):
    with pytest.raises(UserError, match="video not found"):
        load_video(tmp_path / "missing.avi")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(UserError, match="junk.avi"):
        load_video(junk)


def test_check_clean_dataset(tmp_path):
    _dataset(tmp_path)
    table, problems = check_echonet(tmp_path)
    assert problems == []
    assert list(table["FileName"]) == ["A", "B"]


def test_check_catches_truncated_video_and_bad_tracings(tmp_path):
    _dataset(tmp_path)
    avi = tmp_path / "Videos" / "B.avi"
    avi.write_bytes(avi.read_bytes()[:300])
    rows = _disk_rows(16, 4, 20, 4)
    _write_tracings(tmp_path / "VolumeTracings.csv",
                    [("A", 2, rows), ("A", 40, rows), ("Ghost.avi", 1, rows)])
    table, problems = check_echonet(tmp_path)
    reasons = {(p.path.rsplit("/", 1)[-1], p.reason) for p in problems}
    assert any(path == "B.avi" for path, _ in reasons)
    assert any("A frame 40 outside" in r for _, r in reasons)
    assert any("'Ghost'" in r for _, r in reasons)
    assert list(table["FileName"]) == []  # A has a bad tracing, B an unreadable video


def test_check_catches_frame_count_mismatch(tmp_path):
    _dataset(tmp_path, n_frames=12)
    fl = pd.read_csv(tmp_path / "FileList.csv")
    fl.loc[0, "NumberOfFrames"] = 13  # within tolerance
    fl.loc[1, "NumberOfFrames"] = 20
    fl.to_csv(tmp_path / "FileList.csv", index=False)
    table, problems = check_echonet(tmp_path)
    assert [p.reason for p in problems] == ["decodes 12 frames, FileList.csv declares NumberOfFrames=20"]
    assert list(table["FileName"]) == ["A"]


def test_check_reports_filelist_without_split(tmp_path):
    _dataset(tmp_path)
    (tmp_path / "FileList.csv").write_text("FileName,EF\nA,50\nB,60\n")
    table, problems = check_echonet(tmp_path)
    assert table.empty
    assert len(problems) == 1 and problems[0].path.endswith("FileList.csv")
    assert "Split" in problems[0].reason


def _rgb_pixels(path) -> np.ndarray:
    """(N, 3) R, G, B levels of every pixel of every frame, read as echonet.utils.loadvideo does."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames).reshape(-1, 3).astype(np.float64)


def test_channel_stats_equal_numpy(tmp_path):
    table = write_toy_echonet(tmp_path, videos=5, frames=16, size=32, seed=1)
    videos = {n: tmp_path / "Videos" / f"{n}.avi" for n in table["FileName"]}
    every = echonet_channel_stats(tmp_path, split="all", max_videos=None)
    pixels = np.concatenate([_rgb_pixels(p) for p in videos.values()])
    np.testing.assert_allclose(every.mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(every.std, pixels.std(axis=0), rtol=1e-12)  # population std, as EchoNet-Dynamic
    assert (every.split, every.videos, every.frames) == ("all", 5, 80)
    # the default split is TRAIN; a sample of max_videos is drawn without replacement, seeded
    train = table[table["Split"] == "TRAIN"]["FileName"].tolist()
    sample = echonet_channel_stats(tmp_path, max_videos=2, seed=3)
    picked = np.sort(np.random.default_rng(3).choice(len(train), 2, replace=False))
    pixels = np.concatenate([_rgb_pixels(videos[train[i]]) for i in picked])
    np.testing.assert_allclose(sample.mean, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sample.std, pixels.std(axis=0), rtol=1e-12)
    assert (sample.split, sample.videos, sample.seed) == ("TRAIN", 2, 3)
    assert echonet_channel_stats(tmp_path, max_videos=2, seed=3) == sample
    assert echonet_channel_stats(tmp_path, split=None, max_videos=2, seed=3) == sample  # TRAIN when listed
    with pytest.raises(UserError, match="no video in split"):
        echonet_channel_stats(tmp_path, split="nope")


def test_load_video_rgb_keeps_channel_order(tmp_path):
    path = tmp_path / "colour.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (16, 8), isColor=True)
    if not writer.isOpened():
        pytest.skip("no FFV1 writer in this OpenCV build")
    frame = np.zeros((8, 16, 3), np.uint8)
    frame[...] = (200, 100, 10)  # OpenCV frames are B, G, R
    for _ in range(3):
        writer.write(frame)
    writer.release()
    rgb = load_video(path, rgb=True)
    assert rgb.shape == (3, 8, 16, 3)
    assert tuple(int(v) for v in rgb[0, 0, 0]) == (10, 100, 200)
    assert load_video(path).shape == (3, 8, 16)
