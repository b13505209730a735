"""Tests for the preprocessed, memory-mapped sample cache."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from echoseg.core.data import cache as cache_mod
from echoseg.core.data.cache import (
    build_cache,
    cache_key,
    default_cache_dir,
    open_cache,
    resize_image,
    resize_mask,
)
from echoseg.core.data.imaging import load_image, load_mask
from echoseg.core.data.manifest import MANIFEST_COLUMNS, STRUCTURES
from echoseg.core.errors import UserError
from echoseg.core.io import write_png

SIZE = 32


def _pair(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    img = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    msk = np.zeros((h, w), np.uint8)
    msk[h // 4: h // 2, w // 4: w // 2] = 1
    msk[h // 2: 3 * h // 4, w // 4: 3 * w // 4] = 2
    msk[3 * h // 4:, w // 3: 2 * w // 3] = 3
    return img, msk


def _write_nifti(path: Path, arr: np.ndarray) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))


@pytest.fixture
def manifest(tmp_path: Path) -> pd.DataFrame:
    """Five images (NIfTI, .nii.gz and PNG, various sizes), three structure rows each."""
    rng = np.random.default_rng(0)
    src = tmp_path / "data"
    src.mkdir()
    rows = []
    shapes = [(40, 30), (50, 44), (24, 20), (32, 32), (61, 47)]
    for k, (h, w) in enumerate(shapes):
        img, msk = _pair(rng, h, w)
        if k == 2:
            img_p, msk_p = src / f"p{k}.png", src / f"p{k}_gt.png"
            write_png(img_p, img)
            write_png(msk_p, msk)
        else:
            ext = ".nii.gz" if k % 2 else ".nii"
            img_p, msk_p = src / f"p{k}{ext}", src / f"p{k}_gt{ext}"
            _write_nifti(img_p, img)
            _write_nifti(msk_p, msk)
        for label, name in STRUCTURES.items():
            rows.append({
                "sample_id": f"p{k}_{name}", "image": str(img_p), "mask": str(msk_p), "label": label,
                "structure": name, "view": "2CH", "phase": "ED", "patient": f"p{k}", "sex": "F", "age": 60,
                "quality": "good", "split": "train", "source": "real",
            })
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _tmp_dirs(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.iterdir() if p.name.startswith(".")] if cache_dir.exists() else []


def test_values_match_direct_decode(manifest: pd.DataFrame, tmp_path: Path) -> None:
    c = build_cache(manifest, SIZE, tmp_path / "cache", progress=False)
    unique = manifest.drop_duplicates("image")
    assert len(c) == len(unique) == 5
    assert c.size == SIZE
    for _, row in unique.iterrows():
        i = c.row_of(row["image"])
        img, msk = load_image(row["image"]), load_mask(row["mask"])
        np.testing.assert_array_equal(c.image(i), resize_image(img, SIZE))
        np.testing.assert_array_equal(c.mask(i), resize_mask(msk, SIZE))
        assert c.original_size(i) == img.shape
        assert c.image(i).dtype == np.uint8 and c.image(i).shape == (SIZE, SIZE)
        assert set(np.unique(c.mask(i))) <= {0, 1, 2, 3}
    assert (c.path / "index.csv").is_file() and (c.path / "meta.json").is_file()
    with pytest.raises(KeyError):
        c.row_of(tmp_path / "nope.nii")


def test_resize_policies() -> None:
    m = np.zeros((40, 40), np.uint8)
    m[:20] = 3
    assert set(np.unique(resize_mask(m, 17))) == {0, 3}
    img = np.full((40, 40), 200, np.uint8)
    assert np.all(resize_image(img, 10) == 200)
    assert resize_image(img, 80).shape == (80, 80)


def test_reuse_does_not_rewrite(manifest: pd.DataFrame, tmp_path: Path) -> None:
    first = build_cache(manifest, SIZE, tmp_path / "cache", progress=False)
    before = {f: (first.path / f).stat().st_mtime_ns for f in ("images.npy", "masks.npy", "meta.json")}
    calls = []
    orig = cache_mod._write_cache
    cache_mod._write_cache = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        second = build_cache(manifest.sample(frac=1.0, random_state=1), SIZE, tmp_path / "cache", progress=False)
    finally:
        cache_mod._write_cache = orig
    assert second.path == first.path and not calls
    assert before == {f: (second.path / f).stat().st_mtime_ns for f in before}
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.key]


def test_key_changes_with_size_and_files(manifest: pd.DataFrame, tmp_path: Path) -> None:
    cdir = tmp_path / "cache"
    a = build_cache(manifest, SIZE, cdir, progress=False)
    b = build_cache(manifest, SIZE + 8, cdir, progress=False)
    assert a.key != b.key and b.size == SIZE + 8
    # Rewrite one image with new content (and a distinct mtime): a new cache with the new pixels.
    img_path = manifest["image"].iloc[0]
    new = np.full(load_image(img_path).shape, 7, np.uint8)
    _write_nifti(Path(img_path), new)
    st = os.stat(img_path)
    os.utime(img_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = build_cache(manifest, SIZE, cdir, progress=False)
    assert c.key not in (a.key, b.key)
    assert np.all(c.image(c.row_of(img_path)) == 7)
    # A subset of the manifest is a different data set.
    d = build_cache(manifest[manifest["patient"] != "p0"], SIZE, cdir, progress=False)
    assert d.key != c.key and len(d) == 4


def test_crash_leaves_no_complete_looking_cache(manifest: pd.DataFrame, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cdir = tmp_path / "cache"
    calls = {"n": 0}

    def failing_load(path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return load_image(path)

    monkeypatch.setattr(cache_mod, "load_image", failing_load)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_cache(manifest, SIZE, cdir, progress=False)
    assert list(cdir.iterdir()) == []
    monkeypatch.setattr(cache_mod, "load_image", load_image)
    c = build_cache(manifest, SIZE, cdir, progress=False)
    assert len(c) == 5


def test_killed_build_folder_is_ignored_and_cleaned(manifest: pd.DataFrame, tmp_path: Path) -> None:
    cdir = tmp_path / "cache"
    pairs = cache_mod._unique_pairs(manifest)
    key = cache_mod.cache_key(pairs, SIZE)
    # What a SIGKILLed build leaves behind: a hidden temp folder of a dead process, arrays but no meta.json.
    dead_pid = 2**22 + 12345
    stale = cdir / f"{cache_mod._TMP_PREFIX}{key}.{cache_mod.socket.gethostname()}.{dead_pid}.abc123"
    stale.mkdir(parents=True)
    np.save(stale / "images.npy", np.zeros((5, SIZE, SIZE), np.uint8))
    with pytest.raises(UserError, match="not a complete sample cache"):
        open_cache(stale)
    c = build_cache(manifest, SIZE, cdir, progress=False)
    assert c.key == key and not stale.exists() and _tmp_dirs(cdir) == []


def test_arrays_are_read_only(manifest: pd.DataFrame, tmp_path: Path) -> None:
    c = build_cache(manifest, SIZE, tmp_path / "cache", progress=False)
    for arr in (c.image(0), c.mask(0), c.images, c.masks):
        assert not arr.flags.writeable
    with pytest.raises(ValueError):
        c.image(0)[0, 0] = 1
    reopened = pickle.loads(pickle.dumps(c))
    assert reopened.path == c.path and len(pickle.dumps(c)) < 1000
    np.testing.assert_array_equal(reopened.mask(3), c.mask(3))


def test_builder_that_loses_the_race_uses_the_winner(manifest: pd.DataFrame, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cdir = tmp_path / "cache"
    winner = build_cache(manifest, SIZE, cdir, progress=False)
    mtime = (winner.path / "images.npy").stat().st_mtime_ns
    # Pretend the target was not there at the first look, so this build runs and then meets it at rename time.
    real = cache_mod._is_complete
    looks: list[Path] = []

    def first_look_misses(path: Path) -> bool:
        looks.append(path)
        return len(looks) > 1 and real(path)

    monkeypatch.setattr(cache_mod, "_is_complete", first_look_misses)
    loser = build_cache(manifest, SIZE, cdir, progress=False)
    assert loser.path == winner.path and len(looks) == 2
    assert (winner.path / "images.npy").stat().st_mtime_ns == mtime
    assert _tmp_dirs(cdir) == []


def test_concurrent_builders(manifest: pd.DataFrame, tmp_path: Path) -> None:
    cdir = tmp_path / "cache"
    results: list = []
    errors: list = []

    def work() -> None:
        try:
            results.append(build_cache(manifest, SIZE, cdir, progress=False))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.path for r in results}) == 1
    assert [p.name for p in cdir.iterdir()] == [results[0].key]


def test_bad_inputs(manifest: pd.DataFrame, tmp_path: Path) -> None:
    missing = manifest.copy()
    missing.loc[0, "mask"] = str(tmp_path / "gone.nii")
    missing.loc[0, "image"] = str(tmp_path / "gone_img.nii")
    with pytest.raises(UserError, match="gone"):
        build_cache(missing, SIZE, tmp_path / "cache", progress=False)
    two_masks = manifest.copy()
    two_masks.loc[0, "mask"] = manifest["mask"].iloc[5]
    with pytest.raises(UserError, match="more than one mask"):
        build_cache(two_masks, SIZE, tmp_path / "cache", progress=False)
    with pytest.raises(UserError, match="positive"):
        build_cache(manifest, 0, tmp_path / "cache", progress=False)
    with pytest.raises(UserError):
        open_cache(tmp_path)


def test_default_cache_dir_is_never_an_input_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHOSEG_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env" / "samples"
    monkeypatch.delenv("ECHOSEG_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "echoseg" / "samples"


def test_cache_key_follows_content_not_mtime(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"image")
    b.write_bytes(b"mask")
    key = cache_key([(str(a), str(b))], 32)
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes: same cache
    assert cache_key([(str(a), str(b))], 32) == key
    a.write_bytes(b"repaired")  # new bytes: a new cache, the repaired file is read again
    assert cache_key([(str(a), str(b))], 32) != key
