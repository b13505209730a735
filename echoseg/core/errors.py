"""Exception types that map onto the CLI's exit codes."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input or usage: the CLI prints the message on one line and exits with code 2.

    The message must name the offending file or option and say what is wrong.
    """


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), at most ``limit`` characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def require_file(path, what: str = "file") -> None:
    """Raise UserError unless ``path`` is an existing file."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not p.is_file():
        raise UserError(f"{what} is not a file: {p}")


def require_dir(path, what: str = "directory") -> None:
    """Raise UserError unless ``path`` is an existing directory."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not p.is_dir():
        raise UserError(f"{what} is not a directory: {p}")
