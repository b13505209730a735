"""`echoseg report`: one summary of finished runs (tables on stderr, summary.md, summary.json, figure.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import ConfigOpt, NameOpt, OutOpt, SetOpt, emit_run_path, open_run, resolve
from echoseg.core.runs import run_context


def report(
    ctx: typer.Context,
    runs: Annotated[list[Path], typer.Argument(
        help="Finished runs: train, eval seg, stats wilcoxon, eval afd, distill, pretrain, eval zeroshot, "
        "eval probe.")],
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Summarise finished runs like the papers do.

    A Dice table per model and training strategy (Synthetic Boost Table 2), paired tests with CIs (its Fig. 2),
    an aFD table (EchoDFKD) and a pre-training table: retrieval, zero-shot and probe AUC with CIs and grounding
    Dice per method and pre-training data real / synthetic / mix (SynCXR Tables 1 and 3).

    Each run's kind is read from its run.json; the run writes summary.md, summary.json and figure.png.

    Example: echoseg report runs/train/* runs/stats-wilcoxon/* runs/eval-afd/*
    """
    from rich.console import Console

    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.console import console
    from echoseg.core.io import save_figure, write_json, write_text
    from echoseg.core.report.summary import collect, figure, markdown, provenance, rich_table

    tables = collect(runs)
    note = provenance(runs)
    cfg = resolve(ctx, config, sets, exclude=("runs",))
    cfg["runs"] = [str(r) for r in runs]
    run = open_run("report", None, cfg, out=out, name=name, inputs={"runs": [str(r) for r in runs]})
    with run_context(run):
        shown = [key for key, df in tables.items() if not df.empty]
        # redirected stderr (a log file) is read wider than the 80 columns rich assumes without a terminal
        wide = console if console.is_terminal else Console(stderr=True, width=140, highlight=False)
        for key in shown:
            wide.print(rich_table(key, tables[key]))
        if note:
            wide.print(note, style="yellow", markup=False, soft_wrap=True)
        write_text(run.file("summary.md"), markdown(tables, note) + "\n")
        write_json(run.file("summary.json"), {**{k: v.to_dict(orient="records") for k, v in tables.items()},
                                              "note": note})
        save_figure(run.file("figure.png"), figure(tables))
        run.log(f"summary of {len(runs)} run(s): {run.path / 'summary.md'}")
    emit_run_path(run.path)


def register(app: typer.Typer) -> None:
    """Add `echoseg report` to the root app."""
    app.command("report")(report)
