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
import json
import os
import re
import shutil
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from echoseg.core.console import console
from echoseg.core.env import environment
from echoseg.core.errors import UserError
from echoseg.core.io import read_json, sha256_file, to_json, write_json, write_text

STATUSES = ("running", "completed", "failed", "interrupted")
RUN_FILES = ("run.json", "log.txt", "metrics.jsonl", "summary.json")
DEFAULT_ROOT = "runs"


def utc_now() -> str:
    """Current UTC time in ISO format with seconds."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a distributed launch (torchrun/accelerate set RANK)."""
    return os.environ.get("RANK", "0") in ("", "0")


def default_run_dir(group: str, verb: str | None, name: str | None = None, root: str | Path = DEFAULT_ROOT) -> Path:
    """``runs/<group>-<verb>/<UTC yyyymmdd-HHMMSS>_<name>``, made unique if that second is taken."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    label = "-".join(p for p in (group, verb) if p)
    leaf = f"{stamp}_{_safe_name(name)}" if name else stamp
    base = Path(root) / label / leaf
    path, k = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


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
    p = Path(value)
    entry: dict[str, Any] = {"path": str(p.resolve())}
    manifest = p / "manifest.csv" if p.is_dir() else p
    if manifest.is_file() and manifest.suffix.lower() in (".csv", ".json") and manifest.stat().st_size < 1 << 30:
        entry["sha256"] = sha256_file(manifest)
        if manifest != p:
            entry["manifest"] = str(manifest.resolve())
    return entry


class Run:
    """A run directory being written by a command."""

    def __init__(self, path: Path, record: dict[str, Any], *, fresh: bool, writer: bool = True):
        self.path = Path(path)
        self.record = record
        self.fresh = fresh
        self.writer = writer

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
        """Create a new run directory; refuse an ``out`` that exists and is not empty."""
        path = Path(out) if out is not None else default_run_dir(group, verb, name, root)
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {path} exists and is not a directory")
        if path.is_dir() and any(path.iterdir()):
            raise UserError(
                f"--out {path} exists and is not empty; choose a new directory "
                "(or --resume it if the command supports it)"
            )
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
            "resumed": [],
        }
        writer = is_main_process()
        run = cls(path, record, fresh=True, writer=writer)
        if writer:
            path.mkdir(parents=True, exist_ok=True)
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
        record["status"] = "running"
        record["finished"] = None
        run = cls(path, record, fresh=False, writer=is_main_process())
        if run.writer:
            run._save()
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
        with open(self.path / "log.txt", "a", encoding="utf-8") as f:
            f.write(f"{utc_now()} {message}\n")
        try:
            console.print(message, style=style, markup=False)
        except (OSError, ValueError):  # stderr closed (e.g. a pipe reader died): the log file has it
            pass

    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one JSON object to metrics.jsonl (flushed at once so a crash loses nothing)."""
        if not self.writer:
            return
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(to_json(row, indent=None) + "\n")
            f.flush()

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
        if error:
            self.record["error"] = error
        else:
            self.record.pop("error", None)
        self._save()

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
            with open(run.path / "log.txt", "a", encoding="utf-8") as f:
                f.write(f"{utc_now()} error: {exc}\n")
        if run.fresh and run.writer and not run.has_artefacts():
            shutil.rmtree(run.path, ignore_errors=True)
        else:
            run.finish("failed", str(exc))
        raise
    except BaseException as exc:
        if run.writer:
            with open(run.path / "log.txt", "a", encoding="utf-8") as f:
                f.write(f"{utc_now()} internal error\n{traceback.format_exc()}")
        run.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    else:
        run.finish("completed")
