"""Paths handed to native code (SimpleITK, OpenCV, ...) must be encodable as UTF-8.

On Linux a file name is any byte string; Python decodes bytes that are not UTF-8 to lone surrogates
(``b"caf\\xe9"`` becomes ``"caf\\udce9"``, PEP 383). Python's own ``open`` round-trips them, but the C++ bindings
encode ``str`` as strict UTF-8: SimpleITK aborts the process (SIGABRT), OpenCV crashes (SIGSEGV) and writing such a
path into a UTF-8 CSV or log raises UnicodeEncodeError. Every path that native code will see is checked here first,
so such a path is a one-line UserError (exit 2) that shows it with backslash escapes instead of a crash.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from echoseg.core.errors import UserError

_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x20), 0x7F)}


def shown(path: str | bytes | os.PathLike) -> str:
    """``path`` as one printable line: non-UTF-8 bytes as ``\\xNN``, control characters escaped, rest kept."""
    try:
        raw = os.fspath(path)
    except TypeError:
        return ascii(path)
    if isinstance(raw, str):
        try:
            raw = os.fsencode(raw)  # surrogate-escaped bytes come back as the original bytes
        except UnicodeEncodeError:  # a lone surrogate that no byte produced
            return ascii(raw)[1:-1]
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL)


def encodable(text: str) -> bool:
    """Whether ``text`` encodes as strict UTF-8 (no surrogates from undecodable bytes) and holds no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def check_native_path(path: str | bytes | os.PathLike, what: str = "") -> str:
    """Return ``path`` as a ``str`` native libraries accept, or raise UserError saying why it cannot be used.

    Args:
        path: a path (``str``, ``bytes`` or path-like).
        what: what the path is, for the message (an option such as ``--out``, or "video", "DICOM file").

    Raises:
        UserError: the path holds bytes that are not UTF-8 (surrogates after decoding) or a NUL byte; the message
            shows the path with backslash escapes, on one line.
    """
    raw = os.fspath(path)
    text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
    if not encodable(text):
        label = f"{what} path" if what else "path"
        reason = "holds a NUL byte" if "\x00" in text else "holds bytes that are not UTF-8; rename it"
        raise UserError(f"{label} not encodable as UTF-8 ({reason}): {shown(raw)}")
    return text


def check_arguments(args: Sequence[str]) -> None:
    """Refuse a command line whose arguments, or the working directory relative paths resolve against, are not
    UTF-8, before any of them reaches a file or native code.

    The message names the option the bad value belongs to (``--out``, ``--data``, ...) or "argument".
    """
    try:
        cwd = os.getcwd()
    except OSError:  # removed under us: relative paths fail later with their own message
        cwd = ""
    if not encodable(cwd):
        raise UserError(f"current directory path not encodable as UTF-8 (holds bytes that are not UTF-8): "
                        f"{shown(cwd)}; run echoseg from another directory")
    for i, arg in enumerate(args):
        if encodable(arg):
            continue
        option, value = "argument", arg
        if arg.startswith("--") and "=" in arg and encodable(arg.split("=", 1)[0]):
            option, value = arg.split("=", 1)
        elif i > 0 and args[i - 1].startswith("-") and encodable(args[i - 1]):
            option = args[i - 1]
        check_native_path(value, option)  # raises: value is not encodable
