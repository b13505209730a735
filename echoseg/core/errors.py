"""Exception types that map onto the CLI's exit codes."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or usage: the CLI prints the message on one line and exits with code 2.

    The message must name the offending file or option and say what is wrong.
    """


def require_file(path, what: str = "file") -> None:
    """Raise UserError unless ``path`` is an existing file."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not p.is_file():
        raise UserError(f"{what} is not a file: {p}")


def require_dir(path, what: str = "directory") -> None:
    """Raise UserError unless ``path`` is an existing directory."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not p.is_dir():
        raise UserError(f"{what} is not a directory: {p}")
