"""The shared stderr console and progress bars (stdout is reserved for the run path)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

class _Console(Console):
    """A console that keeps working when its reader goes away (a killed `| tail`): output is dropped."""

    def on_broken_pipe(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stderr.fileno())
        except (OSError, ValueError):
            pass


console = _Console(stderr=True, highlight=False, soft_wrap=True)
_progress_enabled: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on/off; ``None`` restores auto (on only when stderr is a terminal)."""
    global _progress_enabled
    _progress_enabled = enabled


def progress_enabled() -> bool:
    """Whether progress bars are shown."""
    if _progress_enabled is not None:
        return _progress_enabled
    return sys.stderr.isatty()


def make_progress(show: bool = True) -> Progress:
    """A rich Progress on stderr, disabled when progress bars are off (or ``show`` is False)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (show and progress_enabled()),
        transient=False,
    )


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (silent when progress bars are off)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with make_progress() as prog:
        task = prog.add_task(description, total=total)
        for item in iterable:
            yield item
            prog.advance(task)
