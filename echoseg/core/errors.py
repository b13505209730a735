"""Exception types that map onto the CLI's exit codes."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input or usage: the CLI prints the message on one line and exits with code 2.

    The message must name the offending file or option and say what is wrong. A path in it holding bytes that
    are not UTF-8 (surrogates) is shown with ``\\xNN`` escapes, so the message can always be printed and logged.
    """

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (utf8_safe(args[0]), *args[1:])
        super().__init__(*args)


def utf8_safe(text: str) -> str:
    """``text`` with the surrogates of undecodable bytes written as ``\\xNN`` (others as ``\\udNNN``)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no byte produced
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when empty), at most ``limit`` characters."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def _require(path, what: str, is_kind, kind: str) -> None:
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not is_kind(p):
        raise UserError(f"{what} is not {kind}: {p}")


def require_file(path, what: str = "file") -> None:
    """Raise UserError unless ``path`` is an existing file."""
    _require(path, what, Path.is_file, "a file")


def require_dir(path, what: str = "directory") -> None:
    """Raise UserError unless ``path`` is an existing directory."""
    _require(path, what, Path.is_dir, "a directory")
