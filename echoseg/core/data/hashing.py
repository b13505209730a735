"""Content hashes of input files, streamed once and remembered by (path, size, mtime).

Caches key on what the files hold, not on when they were touched, so a repaired file is read again; run.json
records the hash of the data a command read (docs/architecture.md, "Claims, caches and the network"). Hashing a
large data set once costs a read of every byte; the memo under ``$ECHOSEG_CACHE/digests/`` makes every later run
pay one ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from echoseg.core.errors import UserError
from echoseg.core.io import write_json

CACHE_ENV = "ECHOSEG_CACHE"
_CHUNK = 1 << 20


def cache_root() -> Path:
    """Where echoseg keeps caches: ``$ECHOSEG_CACHE``, else ``~/.cache/echoseg`` (never an input folder)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "echoseg"


def _memo_path(path: str) -> Path:
    return cache_root() / "digests" / f"{hashlib.sha256(path.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.json"


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex); remembered while its size, mtime and inode stay the same."""
    p = os.path.abspath(path)
    try:
        st = os.stat(p)
    except OSError:
        raise UserError(f"{path}: file not found") from None
    stamp = {"path": p, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    memo = _memo_path(p)
    try:
        record = json.loads(memo.read_text(encoding="utf-8"))
        if {k: record.get(k) for k in stamp} == stamp:
            return str(record["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    try:
        with open(p, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    digest = h.hexdigest()
    try:
        write_json(memo, {**stamp, "sha256": digest})
    except OSError:  # a read-only cache still hashes, it just does not remember
        pass
    return digest


def files_digest(paths: Iterable[str | Path], base: str | Path | None = None) -> str:
    """One sha256 over the sorted (name, content hash) pairs of ``paths``; names relative to ``base`` when given,
    so a copied data set hashes the same."""
    h = hashlib.sha256()
    root = os.path.abspath(base) if base is not None else None
    for p in sorted({os.path.abspath(x) for x in paths}):
        name = os.path.relpath(p, root) if root is not None else p
        h.update(f"{name}\t{file_digest(p)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()
