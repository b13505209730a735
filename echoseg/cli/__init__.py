"""The `echoseg` command line: a Typer app of thin wrappers over echoseg.core.

`main()` owns the exit codes: 0 done, 2 bad input or usage, 1 internal error, 130 interrupted.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback

import typer

from echoseg import __version__
from echoseg.cli import (
    _offline,  # noqa: F401 - first: sets HF_HUB_OFFLINE before any hub library is imported
    curate,
    data,
    distill,
    models,
    pretrain,
    prompts,
    report,
    stats,
    synth,
    train,
)
from echoseg.cli import eval as evaluate
from echoseg.core.console import console, set_progress
from echoseg.core.errors import UserError
from echoseg.core.hub import apply_offline_default
from echoseg.core.paths import check_arguments

app = typer.Typer(
    name="echoseg",
    help="Synthetic data for vision-language segmentation of echocardiography.\n\n"
    "Every command writes one run directory and prints its path (only that) on stdout:\n\n"
    "  RUN=$(echoseg data toy camus --patients 10)",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"echoseg {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Never show progress bars."),
    allow_download: bool = typer.Option(  # noqa: ARG001 - read from argv before any import (echoseg.core.hub)
        False, "--allow-download", help="Let Hugging Face ids that are not cached be downloaded (also "
        "ECHOSEG_ALLOW_DOWNLOAD=1); without it echoseg is offline (HF_HUB_OFFLINE=1)."),
) -> None:
    """Synthetic data for vision-language segmentation of echocardiography."""
    set_progress(False if no_progress else None)


# The command groups and single commands, in the order `echoseg --help` lists them: (module, group name or None for
# a single command such as `echoseg train`). A module missing from the package is an ImportError here.
GROUPS = [
    (data, "data"),
    (prompts, "prompts"),
    (synth, "synth"),
    (curate, None),
    (pretrain, None),
    (train, None),
    (distill, None),
    (evaluate, "eval"),
    (stats, "stats"),
    (models, "models"),
    (report, None),
]


def _typers(t):
    """A Typer app and every Typer app nested in it."""
    if t is None:
        return []
    out = [t]
    for info in getattr(t, "registered_groups", []):
        out.extend(_typers(info.typer_instance))
    return out


def _reflow(text: str | None) -> str | None:
    """Join the lines of each docstring paragraph (Typer keeps single newlines in --help)."""
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _reflow_help(t) -> None:
    for info in getattr(t, "registered_commands", []):
        info.help = _reflow(info.help or (info.callback.__doc__ if info.callback else None))
    if t.info.help:
        t.info.help = _reflow(t.info.help)


def _register() -> None:
    for mod, group in GROUPS:
        for sub in _typers(getattr(mod, "app", None)):
            _reflow_help(sub)
        if group is None:  # a single command (echoseg train, echoseg distill)
            mod.register(app)
        else:
            app.add_typer(mod.app, name=group)


def _flags_without_type() -> None:
    """Show no value type after a flag in --help: recent Typer labels every flag (``--help`` included) ``<bool>``
    in its rich help panels although a flag takes no value (its plain help already leaves flags out)."""
    option = getattr(importlib.import_module("typer.core"), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_without_type", False):
        return  # an older Typer, which shows no type for flags, or already done

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        return shown(self, ctx)

    display_type_rich.flags_without_type = True
    option.display_type_rich = display_type_rich


_register()
_reflow_help(app)
_flags_without_type()


def _click_exceptions() -> tuple[tuple, tuple, tuple]:
    """(ClickException, Exit, Abort) classes of click and of the click copy newer Typer versions vendor."""
    mods = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            continue
    return (
        tuple(m.ClickException for m in mods),
        tuple(getattr(m, "Exit", typer.Exit) for m in mods) + (typer.Exit,),
        tuple(getattr(m, "Abort", typer.Abort) for m in mods) + (typer.Abort,),
    )


def _say(message: str, style: str | None = None) -> None:
    """Print one line on stderr; if stderr is gone (its reader died), stay silent instead of failing."""
    try:
        console.print(message, style=style, markup=False, highlight=False)
    except (OSError, ValueError):
        try:
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - keeps interpreter shutdown from failing too
        except OSError:
            pass


def _sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (never raises)."""
    if argv is not None:
        sys.argv = ["echoseg", *argv]
    apply_offline_default(sys.argv[1:])
    try:
        signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not in the main thread
        pass
    click_error, click_exit, click_abort = _click_exceptions()
    try:
        check_arguments(sys.argv[1:])  # a non-UTF-8 path crashes native readers: exit 2 before any code sees it
        result = app(args=argv, prog_name="echoseg", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except click_exit as exc:
        return exc.exit_code
    except (KeyboardInterrupt, *click_abort):
        _say("interrupted", style="yellow")
        return 130
    except click_error as exc:
        message = exc.format_message()
        if message:  # empty when a group was called without a command: its help was shown
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _say(f"error: {message}{hint}")
        return 2
    except UserError as exc:
        _say(f"error: {exc}")
        return 2
    except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback on the console
        if os.environ.get("ECHOSEG_DEBUG"):
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        _say(f"internal error: {type(exc).__name__}: {first} (traceback in the run's log.txt; "
             "set ECHOSEG_DEBUG=1 to print it)")
        return 1
