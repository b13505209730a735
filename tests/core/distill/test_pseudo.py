"""The pseudo-label cache: key, location, atomic per-video records, resume and reuse, stale-video relabelling."""

from __future__ import annotations

import os

import numpy as np
import pytest

from echoseg.core.data.echonet import read_filelist
from echoseg.core.data.hashing import cache_root
from echoseg.core.data.toy.echonet import write_toy_echonet
from echoseg.core.data.video import load_video
from echoseg.core.distill.pseudo import build_pseudo_labels, cache_folder, cache_key


class DarkTeacher:
    """Stand-in teacher: probability of LV = darkness of the pixel (counts its calls)."""

    def __init__(self):
        self.calls = []

    def predict(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        self.calls.append(len(frames))
        return 1.0 - frames.astype(np.float32) / 255.0


@pytest.fixture
def echo(tmp_path):
    root = tmp_path / "echo"
    write_toy_echonet(root, videos=3, frames=16, size=32, seed=1)
    return root


def test_labels_cached_exactly_and_reused(echo, tmp_path):
    ckpt = tmp_path / "teacher.pt"
    ckpt.write_bytes(b"weights")
    spec = f"deeplabv3:{ckpt}"
    names = list(read_filelist(echo)["FileName"])
    teacher = DarkTeacher()
    cache = build_pseudo_labels(teacher, spec, echo, names, progress=False)
    assert cache.folder.parent == cache_root() / "pseudo" and cache.folder.name == cache_key(spec, echo)
    assert teacher.calls == [16, 16, 16]
    frames = load_video(echo / "Videos" / f"{names[0]}.avi")
    np.testing.assert_array_equal(cache.frames(names[0]), frames)
    expected = np.round((1.0 - frames / 255.0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(cache.labels(names[0]), expected)
    assert cache.num_frames(names[0]) == 16
    # a second run with the same teacher reuses everything
    again = DarkTeacher()
    build_pseudo_labels(again, spec, echo, names, progress=False)
    assert again.calls == []
    # new weights -> another key; a touched video stays cached, a changed one is relabelled
    ckpt.write_bytes(b"other weights!")
    assert cache_key(spec, echo) != cache.folder.name
    video = echo / "Videos" / f"{names[1]}.avi"
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cache.is_done(names[1])
    video.write_bytes(video.read_bytes() + b"\0")
    assert not cache.is_done(names[1]) and cache.is_done(names[0])


def test_interrupted_labelling_resumes_and_leaves_no_partial_record(echo, tmp_path):
    spec = f"run:{tmp_path / 'some-run'}"
    names = list(read_filelist(echo)["FileName"])

    class Crashing(DarkTeacher):
        def predict(self, frames, batch_size=32):
            if len(self.calls) == 1:
                raise KeyboardInterrupt
            return super().predict(frames, batch_size)

    with pytest.raises(KeyboardInterrupt):
        build_pseudo_labels(Crashing(), spec, echo, names, progress=False)
    folder = cache_folder(spec, echo)
    assert sorted(p.stem for p in (folder / "done").iterdir()) == [names[0]]
    assert not list(folder.rglob("*.tmp*"))
    teacher = DarkTeacher()
    build_pseudo_labels(teacher, spec, echo, names, progress=False)
    assert teacher.calls == [16, 16]


def test_labels_go_to_echoseg_cache_and_never_into_a_read_only_data_folder(echo, tmp_path, monkeypatch):
    monkeypatch.setenv("ECHOSEG_CACHE", str(tmp_path / "cache"))
    assert cache_folder("deeplabv3:x.pt", echo).parent == tmp_path / "cache" / "pseudo"
    before = {p: p.stat().st_mtime_ns for p in echo.rglob("*")}
    modes = {p: p.stat().st_mode for p in [echo, *echo.rglob("*")]}
    for p in [echo, *echo.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        names = list(read_filelist(echo)["FileName"])
        cache = build_pseudo_labels(DarkTeacher(), "run:some-run", echo, names, progress=False)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert cache.folder.parent == tmp_path / "cache" / "pseudo"
    assert {p: p.stat().st_mtime_ns for p in echo.rglob("*")} == before  # nothing added, nothing touched
