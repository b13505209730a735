"""Reusable Typer option declarations and helpers shared by every command group."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from echoseg.core.config import resolve_config, resumed_config

OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Run directory to write; must not exist or be empty. "
                 "Default: runs/<group>-<verb>/<UTC time>_<name>."),
]
NameOpt = Annotated[str | None, typer.Option("--name", help="Short name appended to the default run directory.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (recorded in run.json).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto|cpu|cuda.")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="Mixed precision: no|fp16|bf16.")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML/JSON file of option values (CLI options win over it).")
]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override an option: --set key=value (repeatable; wins over all).")
]
ResumeOpt = Annotated[Path | None, typer.Option("--resume", help="Continue an interrupted or failed run in place.")]
ReportToOpt = Annotated[
    list[str] | None,
    typer.Option("--report-to", metavar="TRACKER", help="Also log each metrics.jsonl row and the run's config to "
                 "experiment trackers: tensorboard, wandb, mlflow (repeatable or comma-separated; default none; "
                 "recorded in run.json, results unchanged). Files go to <run>/trackers/; wandb runs offline unless "
                 "WANDB_MODE is set, mlflow writes <run>/trackers/mlruns unless MLFLOW_TRACKING_URI is set. Each "
                 "needs its extra, e.g. pip install 'echoseg[tensorboard]'."),
]
CacheDirOpt = Annotated[
    Path | None, typer.Option("--cache-dir", help="Where preprocessed caches go (default: $ECHOSEG_CACHE/samples, "
        "else ~/.cache/echoseg/samples).")
]


def argv() -> list[str]:
    """The command line as typed (program name first)."""
    return ["echoseg", *sys.argv[1:]] if sys.argv else ["echoseg"]


def explicit_params(ctx: typer.Context) -> set[str]:
    """Names of parameters the user gave on the command line (not defaults)."""
    explicit = set()
    for name in ctx.params:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            explicit.add(name)
    return explicit


def config_from(
    ctx: typer.Context, config: Path | None, sets: list[str] | None, exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Resolve the command's options against ``--config`` and ``--set`` (see core.config.resolve_config)."""
    skip = {"config", "set", "sets", "out", "resume", *exclude}
    params = {k: v for k, v in ctx.params.items() if k not in skip}
    return resolve_config(params, explicit_params(ctx), config, sets)


def emit_run_path(path: Path) -> None:
    """Print the run directory on stdout: the only thing a command prints there.

    Under a multi-process launch (`accelerate launch`, torchrun; one or several machines) only the main process
    (global rank 0) prints, so a job's stdout holds the run path once, however many processes it ran.
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.runs import is_main_process

    if is_main_process():
        typer.echo(str(path))


def resolve(
    ctx: typer.Context, config: Path | None = None, sets: list[str] | None = None, exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The command's resolved configuration (options < --config < explicit options < --set)."""
    return config_from(ctx, config, sets, exclude=("name", *exclude))


def resumed(
    ctx: typer.Context, resume: Path, command: str, allowed: tuple[str, ...], **policy: Any
) -> dict[str, Any]:
    """The configuration of the run given to ``--resume``, with the command's explicit options applied (those in
    ``allowed``) or refused: core.config.resumed_config, whose ``ignored``, ``same_ok`` and ``requires`` are
    ``policy``."""
    return resumed_config(resume, command, explicit_params(ctx), ctx.params, allowed, **policy)


def open_run(
    group: str,
    verb: str | None,
    cfg: dict[str, Any],
    *,
    out: Path | None,
    name: str | None = None,
    inputs: dict[str, Any] | None = None,
    resume: Path | None = None,
    command_line: list[str] | None = None,
):
    """Create (or, with ``resume``, reopen) the command's run directory; validate inputs before this.

    ``command_line`` replaces the recorded argv (e.g. with source paths redacted) from the first write on. A
    ``report_to`` entry of ``cfg`` (``--report-to``) is checked and stored as a list of tracker names.
    """
    import os

    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.env import launch_mismatch
    from echoseg.core.errors import UserError
    from echoseg.core.runs import Run

    if resume is not None and out is not None and Path(out).resolve() != Path(resume).resolve():
        raise UserError("--resume and --out name different directories; give only --resume")
    if "report_to" in cfg:  # --report-to: known trackers whose packages are installed, before any directory exists
        from echoseg.core.engine.tracking import check_report_to

        cfg["report_to"] = check_report_to(cfg["report_to"])

    def _open() -> Run:
        recorded = command_line if command_line is not None else argv()
        if resume is not None:
            return Run.resume(resume, group, verb, argv=recorded, config=cfg)
        return Run.create(group, verb, out=out, name=name, config=cfg, seed=cfg.get("seed"), inputs=inputs,
                          argv=recorded)

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        run = _open()
        warning = launch_mismatch()
        if warning:  # `accelerate launch --num_processes N` that started one process: say so, once, on stderr
            run.log(f"warning: {warning}", style="yellow")
        return run
    # Under `accelerate launch` / torchrun: the main process creates the run, the others attach read-only.
    if out is None and resume is None:
        raise UserError("under a multi-process launch give --out (every process must use the same run directory)")
    from accelerate import PartialState

    state = PartialState(cpu=cfg.get("device") == "cpu")
    run = _open() if state.is_main_process else None
    state.wait_for_everyone()
    if run is None:
        path = Path(resume or out)
        run = Run(path, Run.load(path), fresh=False, writer=False)
    return run
