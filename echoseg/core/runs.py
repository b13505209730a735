"""The run directory: one per command invocation (see docs/architecture.md, "The run directory").

```
<run>/run.json        command, argv, config, status, times, versions, seed, inputs
<run>/log.txt         the log (the console shows the same)
<run>/metrics.jsonl   one JSON object per epoch/step
<run>/summary.json    the headline results
```
Only the main process of a distributed job writes; other processes get a read-only handle.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from echoseg.core.console import console
from echoseg.core.data.hashing import file_digest, files_digest
from echoseg.core.data.manifest import absolute_paths
from echoseg.core.env import environment, library_versions
from echoseg.core.errors import UserError
from echoseg.core.io import read_json, sha256_file, to_json, write_json, write_text

STATUSES = ("running", "completed", "failed", "interrupted")
LOCK_FILE = ".echoseg.lock"
RUN_FILES = ("run.json", "log.txt", "metrics.jsonl", "summary.json", LOCK_FILE)
DEFAULT_ROOT = "runs"


def utc_now() -> str:
    """Current UTC time in ISO format with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed launch (torchrun/accelerate set RANK)."""
    return os.environ.get("RANK", "0") in ("", "0")


def default_run_dir(group: str, verb: str | None, name: str | None = None, root: str | Path = DEFAULT_ROOT) -> Path:
    """``runs/<group>-<verb>/<UTC yyyymmdd-HHMMSS>_<name>``, made unique if that second is taken (not created)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    label = "-".join(p for p in (group, verb) if p)
    leaf = f"{stamp}_{_safe_name(name)}" if name else stamp
    base = Path(root) / label / leaf
    path, k = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


def _claim_default_dir(group: str, verb: str | None, name: str | None, root: str | Path) -> Path:
    """Create a fresh default run directory with an exclusive mkdir (two commands in one second get two)."""
    while True:
        path = default_run_dir(group, verb, name, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
            return path
        except FileExistsError:  # taken between the check and the mkdir: pick the next name
            continue


class RunLock:
    """An exclusive ``flock`` on ``<run>/.echoseg.lock``, held by the process writing the run for its whole life.

    The kernel drops the lock when its process dies, however it dies, so a lock left by a killed process is
    never in force: the next claimant takes it over (``--resume`` works after ``kill -9``). The file names its
    holder (pid, host, time) for the error a second claimant gets.
    """

    def __init__(self, fd: int, path: Path, stale: str | None = None) -> None:
        self.fd = fd
        self.path = path
        self.stale = stale

    @classmethod
    def acquire(cls, run_dir: Path, option: str) -> RunLock:
        """Lock ``run_dir`` or raise UserError naming the run and the process holding it."""
        lock_path = run_dir / LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"{option} {run_dir}: cannot create {LOCK_FILE} ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _in_use(option, run_dir, holder) from None
            raise UserError(f"{option} {run_dir}: cannot lock {LOCK_FILE} ({exc.strerror})") from None
        stale = _read_holder(fd) or None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {utc_now()}\n".encode(), 0)
        return cls(fd, lock_path, stale)

    @staticmethod
    def probe(run_dir: Path, option: str) -> None:
        """Raise the "in use" UserError when a live process holds ``run_dir``'s lock; never creates the file."""
        try:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise _in_use(option, run_dir, _read_holder(fd)) from None
        finally:
            os.close(fd)

    def release(self) -> None:
        """Drop the lock (the file stays: unlinking it could let two claimants lock two different files).

        The holder line is cleared first, so only a lock its process did not release (it died) reads as stale.
        """
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = -1


def _in_use(option: str, run_dir: Path, holder: str) -> UserError:
    return UserError(f"{option} {run_dir}: the run directory is in use by another echoseg process "
                     f"({holder or 'unknown holder'}); wait for it or choose another directory")


def _has_content(path: Path) -> bool:
    return any(p.name != LOCK_FILE for p in path.iterdir())


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def _describe_inputs(inputs: dict[str, Any] | None) -> dict[str, Any]:
    """Absolute paths of inputs, with the sha256 of any manifest file they are or contain."""
    out: dict[str, Any] = {}
    for key, value in (inputs or {}).items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            out[key] = [_describe_one(v) for v in value]
        else:
            out[key] = _describe_one(value)
    return out


def _describe_one(value: Any) -> dict[str, Any]:
    """Path and identity of one input: for a run its id and the sha256 of its run.json and weights; for a manifest
    the sha256 of the file and of the data it lists; for a data set folder or file the hash of its contents."""
    p = Path(value)
    entry: dict[str, Any] = {"path": str(p.resolve())}
    manifest = p / "manifest.csv" if p.is_dir() else p
    if manifest.is_file() and manifest.suffix.lower() in (".csv", ".json") and manifest.stat().st_size < 1 << 30:
        entry["sha256"] = sha256_file(manifest)
        if manifest != p:
            entry["manifest"] = str(manifest.resolve())
    if p.is_dir() and (p / "run.json").is_file():
        entry.update(_run_identity(p))
    data_files = _data_files(p)
    if data_files:
        entry["content_sha256"] = files_digest(data_files, p if p.is_dir() else p.parent)
        entry["content_files"] = len(data_files)
    elif p.is_file() and "sha256" not in entry:
        entry["sha256"] = file_digest(p)
    return entry


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _run_identity(run_dir: Path) -> dict[str, Any]:
    try:
        record = read_json(run_dir / "run.json")
    except (OSError, ValueError):
        record = {}
    weights = sorted(q for q in run_dir.rglob("*") if q.suffix in WEIGHT_SUFFIXES and q.is_file()
                     and "cache" not in q.relative_to(run_dir).parts)
    return {
        "run_id": record.get("run_id") if isinstance(record, dict) else None,
        "command": record.get("command") if isinstance(record, dict) else None,
        "run_json_sha256": sha256_file(run_dir / "run.json"),
        "weights": {str(q.relative_to(run_dir)): file_digest(q) for q in weights},
    }


def _data_files(p: Path) -> list[str]:
    """The data files an input names: a manifest's images and masks, an EchoNet folder's lists and videos."""
    manifest = p / "manifest.csv" if p.is_dir() else p
    if manifest.is_file() and manifest.name.endswith(".csv"):
        try:
            frame = pd.read_csv(manifest, usecols=lambda c: c in ("image", "mask"), dtype=str)
        except (ValueError, OSError, pd.errors.ParserError):
            return []
        frame = absolute_paths(frame, manifest.parent)
        return sorted({f for col in frame.columns for f in frame[col].dropna() if os.path.isfile(f)})
    if p.is_dir() and (p / "FileList.csv").is_file():
        listed = [p / "FileList.csv", p / "VolumeTracings.csv", *sorted((p / "Videos").glob("*"))]
        return [str(f) for f in listed if f.is_file()]
    if p.is_dir() and not (p / "run.json").is_file():  # a data set in its published layout: every file in it
        return sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    return []


class Run:
    """A run directory being written by a command."""

    def __init__(self, path: Path, record: dict[str, Any], *, fresh: bool, writer: bool = True,
                 lock: RunLock | None = None):
        self.path = Path(path)
        self.record = record
        self.fresh = fresh
        self.writer = writer
        self.lock = lock
        self.trackers: Any = None  # experiment trackers (engine.tracking.attach) that get every metrics row

    # ----------------------------------------------------------------- creation
    @classmethod
    def create(
        cls,
        group: str,
        verb: str | None = None,
        *,
        out: str | Path | None = None,
        name: str | None = None,
        config: dict[str, Any] | None = None,
        seed: int | None = None,
        inputs: dict[str, Any] | None = None,
        argv: list[str] | None = None,
        root: str | Path = DEFAULT_ROOT,
    ) -> Run:
        """Create a new run directory and claim it; refuse an ``out`` that exists and is not empty.

        The claim is atomic: an exclusive lock on ``.echoseg.lock`` inside the directory, held until
        :meth:`close`, so of two processes given the same ``--out`` exactly one gets it and the other exits 2.
        """
        writer = is_main_process()
        path = Path(out) if out is not None else default_run_dir(group, verb, name, root)
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {path} exists and is not a directory")
        # inputs are described (and hashed) before anything is created: a bad input leaves no directory
        record = {
            "command": " ".join(p for p in (group, verb) if p),
            "argv": list(argv if argv is not None else sys.argv),
            "config": config or {},
            "status": "running",
            "started": utc_now(),
            "finished": None,
            "seed": seed,
            "inputs": _describe_inputs(inputs),
            "environment": environment(),
            "run_id": uuid.uuid4().hex,
            "resumed": [],
        }
        lock = None
        if writer:
            if out is None:
                path = _claim_default_dir(group, verb, name, root)
            else:
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise UserError(f"--out {path}: cannot create the directory ({exc.strerror})") from None
            not_empty = UserError(f"--out {path} exists and is not empty; choose a new directory "
                                  "(or --resume it if the command supports it)")
            if _has_content(path):  # refuse before touching it: no lock file is left in someone's folder
                RunLock.probe(path, "--out")  # a live run there: name its process
                raise not_empty
            lock = RunLock.acquire(path, "--out")
            if _has_content(path):  # filled between the check and the lock: by a run that has finished since
                lock.release()
                raise not_empty
        run = cls(path, record, fresh=True, writer=writer, lock=lock)
        if writer:
            run._save()
            (path / "log.txt").touch()
        return run

    @classmethod
    def resume(
        cls,
        path: str | Path,
        group: str,
        verb: str | None = None,
        *,
        argv: list[str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> Run:
        """Reopen an existing run of the same command to continue it."""
        path = Path(path)
        run_json = path / "run.json"
        if not run_json.is_file():
            raise UserError(f"--resume {path}: not a run directory (no run.json)")
        try:
            record = read_json(run_json)
        except ValueError as exc:
            raise UserError(f"--resume {path}: run.json is not valid JSON ({exc})") from None
        command = " ".join(p for p in (group, verb) if p)
        if record.get("command") != command:
            raise UserError(f"--resume {path}: that run is '{record.get('command')}', not '{command}'")
        if config is not None:
            record["config"] = config
        record.setdefault("resumed", []).append(
            {
                "at": utc_now(),
                "argv": list(argv if argv is not None else sys.argv),
                "previous_status": record.get("status"),
            }
        )
        writer = is_main_process()
        lock = RunLock.acquire(path, "--resume") if writer else None
        record["status"] = "running"
        record["finished"] = None
        run = cls(path, record, fresh=False, writer=writer, lock=lock)
        if run.writer:
            run._save()
            if lock is not None and lock.stale:
                run.log(f"took over the lock of a process that no longer runs ({lock.stale})")
        return run

    @classmethod
    def load(cls, path: str | Path) -> dict[str, Any]:
        """Read the run.json of an existing run (raises UserError if there is none)."""
        run_json = Path(path) / "run.json"
        if not run_json.is_file():
            raise UserError(f"{path}: not an echoseg run directory (no run.json)")
        try:
            record = read_json(run_json)
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise UserError(f"{run_json}: not a valid run.json ({str(exc).splitlines()[0][:200]})") from None
        if not isinstance(record, dict):
            raise UserError(f"{run_json}: not a valid run.json (expected a JSON object)")
        return record

    # ----------------------------------------------------------------- writing
    def file(self, relative: str | Path) -> Path:
        """Path of an artefact inside the run (parent folders created)."""
        p = self.path / relative
        if self.writer:
            p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def _save(self) -> None:
        if self.writer:
            write_json(self.path / "run.json", self.record)

    def update(self, **fields: Any) -> None:
        """Set top-level fields of run.json and save it."""
        self.record.update(fields)
        self._save()

    def log(self, message: str, *, style: str | None = None) -> None:
        """Write a line to the console (stderr) and to log.txt."""
        if not self.writer:
            return
        with open(self.path / "log.txt", "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write(f"{utc_now()} {message}\n")
        try:
            console.print(message, style=style, markup=False)
        except (OSError, ValueError):  # stderr closed (e.g. a pipe reader died): the log file has it
            pass

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one JSON object to metrics.jsonl (flushed at once so a crash loses nothing) and log it to the
        run's experiment trackers, if any (``--report-to``)."""
        if not self.writer:
            return
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(to_json(row, indent=None) + "\n")
            f.flush()
        if self.trackers is not None:
            self.trackers.log(row)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl written so far."""

        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]

    def trim_metrics(self, last_epoch: int) -> None:
        """Drop metrics.jsonl rows of epochs after ``last_epoch`` (written after the checkpoint a resume uses)."""
        rows = [r for r in self.read_metrics() if int(r.get("epoch", 0)) <= last_epoch]
        if self.writer:
            write_text(self.path / "metrics.jsonl", "".join(to_json(r, indent=None) + "\n" for r in rows))

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Atomically write summary.json."""
        if self.writer:
            write_json(self.path / "summary.json", summary)

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the final status and time."""
        if status not in STATUSES:
            raise ValueError(status)
        self.record["status"] = status
        self.record["finished"] = utc_now()
        self.record.setdefault("environment", {})["libraries"] = library_versions()
        if error:
            self.record["error"] = error
        else:
            self.record.pop("error", None)
        self._save()

    def close(self) -> None:
        """Finish the run's experiment trackers and release the run directory's lock (the run stays as it is)."""
        trackers, self.trackers = self.trackers, None
        if trackers is not None:
            trackers.finish()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def has_artefacts(self) -> bool:
        """Whether the run holds anything beyond its bookkeeping files."""
        if not self.path.is_dir():
            return False
        return any(p.name not in RUN_FILES for p in self.path.iterdir())


@contextlib.contextmanager
def run_context(run: Run) -> Iterator[Run]:
    """Finalise ``run`` as completed, failed or interrupted, whatever happens inside.

    A fresh run that fails on bad input before producing any artefact is removed, so bad input leaves
    nothing half-written behind; otherwise the run stays, marked, and can be resumed.
    """
    try:
        yield run
    except KeyboardInterrupt:
        run.finish("interrupted", "interrupted by the user")
        run.log("interrupted; continue with --resume " + str(run.path), style="yellow")
        raise
    except UserError as exc:
        if run.writer:
            with open(run.path / "log.txt", "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(f"{utc_now()} error: {exc}\n")
        if run.fresh and run.writer and not run.has_artefacts():
            run.close()
            shutil.rmtree(run.path, ignore_errors=True)
        else:
            run.finish("failed", str(exc))
        raise
    except BaseException as exc:
        if run.writer:
            with open(run.path / "log.txt", "a", encoding="utf-8", errors="backslashreplace") as f:
                f.write(f"{utc_now()} internal error\n{traceback.format_exc()}")
        run.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    else:
        run.finish("completed")
    finally:
        run.close()
