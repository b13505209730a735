"""A preprocessed, memory-mapped cache of images and label maps at one square size.

Decoding a CAMUS NIfTI file and resizing it costs milliseconds per sample on every epoch; training instead reads
uint8 arrays from a cache written once per data set and size::

    <cache_dir>/<key>/images.npy   (N, S, S) uint8 grey images (cv2 INTER_AREA when shrinking, else INTER_LINEAR)
    <cache_dir>/<key>/masks.npy    (N, S, S) uint8 label maps (nearest neighbour)
    <cache_dir>/<key>/index.csv    row, image, mask, orig_height, orig_width
    <cache_dir>/<key>/meta.json    format, key, size, count, created (written last)

``key`` hashes the sorted unique (image, mask) paths, the sha256 of their bytes (:mod:`echoseg.core.data.hashing`),
the size ``S`` and the cache format, so editing, repairing, adding or removing a file gives a new cache rather than
a stale one. A cache is built in
a hidden temporary folder next to its target and renamed into place in one step: a killed build never leaves a
folder that looks complete, and of two concurrent builders of the same key the second discards its copy and uses
the first one's.

Where caches live: :func:`default_cache_dir`, ``$ECHOSEG_CACHE/samples`` (``~/.cache/echoseg/samples`` without the
variable), or ``--cache-dir``; never inside an input folder, so read-only data works and a failed run leaves
nothing in the data.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import socket
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from numpy.lib.format import open_memmap

from echoseg.core.console import track
from echoseg.core.data.hashing import cache_root, file_digest
from echoseg.core.data.imaging import load_image, load_mask
from echoseg.core.errors import UserError
from echoseg.core.io import read_json, write_csv, write_json

CACHE_FORMAT = 2
INDEX_COLUMNS = ["row", "image", "mask", "orig_height", "orig_width"]
_TMP_PREFIX = ".building-"


def default_cache_dir() -> Path:
    """Where sample caches are kept: ``$ECHOSEG_CACHE/samples``, else ``~/.cache/echoseg/samples``."""
    return cache_root() / "samples"


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a grey uint8 image to (size, size): area averaging when shrinking both sides, else bilinear."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(image)
    interp = cv2.INTER_AREA if size <= h and size <= w else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 label map to (size, size) with nearest neighbour, so no new labels appear."""
    if mask.shape[:2] == (size, size):
        return np.ascontiguousarray(mask)
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)


class SampleCache:
    """Read-only access to a built cache; arrays are views into memory maps opened with ``mmap_mode="r"``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise UserError(f"{self.path}: not a complete sample cache (no meta.json)")
        try:
            self.meta: dict = read_json(meta_path)
            self._images = np.load(self.path / "images.npy", mmap_mode="r")
            self._masks = np.load(self.path / "masks.npy", mmap_mode="r")
            self.index = pd.read_csv(self.path / "index.csv", dtype={"image": str, "mask": str})
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.path}: unreadable sample cache ({exc})") from None
        if self.meta.get("format") != CACHE_FORMAT:
            raise UserError(f"{self.path}: cache format {self.meta.get('format')!r}, expected {CACHE_FORMAT}")
        self.size = int(self.meta["size"])
        n = int(self.meta["count"])
        shape = (n, self.size, self.size)
        if self._images.shape != shape or self._masks.shape != shape or len(self.index) != n:
            raise UserError(f"{self.path}: cache arrays/index do not match meta.json (expected {shape})")
        self._rows = {img: i for i, img in enumerate(self.index["image"])}

    @property
    def key(self) -> str:
        """The cache key (the folder name)."""
        return str(self.meta["key"])

    @property
    def images(self) -> np.ndarray:
        """All images, (N, S, S) uint8, read-only memory map."""
        return self._images

    @property
    def masks(self) -> np.ndarray:
        """All label maps, (N, S, S) uint8, read-only memory map."""
        return self._masks

    def __len__(self) -> int:
        return len(self._rows)

    def row_of(self, image_path: str | Path) -> int:
        """The row holding ``image_path`` (as written in the manifest, or any path resolving to it).

        Raises:
            KeyError: the image is not in this cache.
        """
        key = str(image_path)
        if key in self._rows:
            return self._rows[key]
        alt = os.path.abspath(key)
        if alt in self._rows:
            return self._rows[alt]
        raise KeyError(f"{image_path} is not in the cache at {self.path}")

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as a read-only (S, S) uint8 view."""
        return self._images[i]

    def mask(self, i: int) -> np.ndarray:
        """Label map ``i`` as a read-only (S, S) uint8 view."""
        return self._masks[i]

    def original_size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i`` before resizing."""
        row = self.index.iloc[i]
        return int(row["orig_height"]), int(row["orig_width"])

    # Pickle as a path and reopen, so DataLoader workers started with "spawn" map the files instead of copying them.
    def __getstate__(self) -> dict:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(Path(state["path"]))

    def __repr__(self) -> str:
        return f"SampleCache({str(self.path)!r}, n={len(self)}, size={self.size})"


def open_cache(path: str | Path) -> SampleCache:
    """Open a complete cache folder (``<cache_dir>/<key>``).

    Raises:
        UserError: the folder is not a complete, readable cache.
    """
    return SampleCache(Path(path))


def _unique_pairs(manifest: pd.DataFrame) -> list[tuple[str, str]]:
    """Sorted unique (image, mask) pairs; an image must map to one mask."""
    for col in ("image", "mask"):
        if col not in manifest.columns:
            raise UserError(f"manifest lacks column {col!r}")
    pairs = manifest[["image", "mask"]]
    if pairs.isna().any().any():
        bad = manifest.loc[pairs.isna().any(axis=1)].iloc[0]
        raise UserError(f"manifest row {bad.get('sample_id', bad.name)!r}: empty image or mask path")
    pairs = pairs.astype(str).drop_duplicates()
    dup = pairs["image"].duplicated(keep=False)
    if dup.any():
        img = pairs.loc[dup, "image"].iloc[0]
        raise UserError(f"manifest: image {img} is paired with more than one mask")
    return sorted(zip(pairs["image"], pairs["mask"], strict=True))


def cache_key(pairs: list[tuple[str, str]], size: int) -> str:
    """Hash of the file list, the files' contents, the size and the cache format (24 hex digits)."""
    h = hashlib.sha256(f"echoseg-cache/{CACHE_FORMAT}/{int(size)}\n".encode())
    for img, msk in pairs:
        for p in (img, msk):
            if not os.path.isfile(p):
                raise UserError(f"{p}: file not found (listed in the manifest)")
            h.update(f"{p}\t{file_digest(p)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:24]


def _is_complete(path: Path) -> bool:
    return (path / "meta.json").is_file()


def _remove_stale_builds(cache_dir: Path) -> None:
    """Delete temporary folders left by builds on this host whose process no longer exists."""
    host = socket.gethostname()
    for tmp in cache_dir.glob(f"{_TMP_PREFIX}*"):
        parts = tmp.name[len(_TMP_PREFIX):].split(".")
        # name: .building-<key>.<host>.<pid>.<random>
        if len(parts) < 4 or ".".join(parts[1:-2]) != host or not parts[-2].isdigit():
            continue
        try:
            os.kill(int(parts[-2]), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _write_cache(tmp: Path, pairs: list[tuple[str, str]], size: int, key: str, progress: bool) -> None:
    n = len(pairs)
    images = open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
    masks = open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
    rows = []
    items = enumerate(pairs)
    if progress:
        items = track(items, f"caching {n} images at {size}x{size}", total=n)
    for i, (img_path, mask_path) in items:
        img = load_image(img_path)
        msk = load_mask(mask_path)
        if img.shape != msk.shape:
            raise UserError(f"{mask_path}: label map shape {msk.shape} differs from image {img_path} {img.shape}")
        images[i] = resize_image(img, size)
        masks[i] = resize_mask(msk, size)
        rows.append({"row": i, "image": img_path, "mask": mask_path,
                     "orig_height": img.shape[0], "orig_width": img.shape[1]})
    images.flush()
    masks.flush()
    del images, masks
    write_csv(tmp / "index.csv", pd.DataFrame(rows, columns=INDEX_COLUMNS))
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    # meta.json last: its presence is what marks a cache complete.
    write_json(tmp / "meta.json", {
        "format": CACHE_FORMAT, "key": key, "size": size, "count": n, "created": created,
        "image_interpolation": "INTER_AREA when shrinking both sides, else INTER_LINEAR",
        "mask_interpolation": "INTER_NEAREST",
    })


def build_cache(manifest: pd.DataFrame, size: int, cache_dir: Path, progress: bool = True) -> SampleCache:
    """Build (or reuse) the cache of a manifest's unique images and masks at ``size`` x ``size``.

    Args:
        manifest: rows with ``image`` and ``mask`` paths (several structure rows may share one image).
        size: side of the square arrays.
        cache_dir: folder holding caches; the cache goes to ``cache_dir/<key>``.
        progress: show a progress bar while decoding (if progress bars are on).

    Returns:
        The opened cache; an existing complete cache with the same key is reused without rewriting.

    Raises:
        UserError: a listed file is missing or unreadable, or the manifest is inconsistent.
    """
    if int(size) < 1:
        raise UserError(f"cache size must be positive, got {size}")
    size = int(size)
    pairs = _unique_pairs(manifest)
    if not pairs:
        raise UserError("manifest has no rows to cache")
    key = cache_key(pairs, size)
    cache_dir = Path(cache_dir)
    target = cache_dir / key
    if _is_complete(target):
        return open_cache(target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(cache_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key}.{socket.gethostname()}.{os.getpid()}.", dir=cache_dir))
    try:
        _write_cache(tmp, pairs, size, key, progress)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another builder finished first (the target is a non-empty folder now): use theirs.
            if not _is_complete(target):
                raise UserError(f"{target}: exists but is not a complete cache; delete it and run again") from None
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_cache(target)
