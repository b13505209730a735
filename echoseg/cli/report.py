"""`echoseg report`: one summary of finished runs (tables on stderr, summary.md, summary.json, figure.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import NameOpt, OutOpt, emit_run_path, open_run, resolve
from echoseg.core.runs import run_context


def report(
    ctx: typer.Context,
    runs: Annotated[list[Path], typer.Argument(
        help="Finished runs: train, eval seg, stats wilcoxon, eval afd, distill.")],
    out: OutOpt = None,
    name: NameOpt = None,
) -> None:
    """Summarise finished runs like the papers do.

    A Dice table per model and training strategy (Synthetic Boost Table 2), paired tests with CIs (its Fig. 2)
    and an aFD table (EchoDFKD).

    Each run's kind is read from its run.json; the run writes summary.md, summary.json and figure.png.

    Example: echoseg report runs/train/* runs/stats-wilcoxon/* runs/eval-afd/*
    """
    from echoseg.core.console import console
    from echoseg.core.io import save_figure, write_json, write_text
    from echoseg.core.report.summary import collect, figure, markdown

    tables = collect(runs)
    cfg = resolve(ctx, exclude=("runs",))
    cfg["runs"] = [str(r) for r in runs]
    run = open_run("report", None, cfg, out=out, name=name, inputs={"runs": [str(r) for r in runs]})
    with run_context(run):
        for key, df in tables.items():
            if not df.empty:
                console.print(_rich_table(key, df))
        write_text(run.file("summary.md"), markdown(tables) + "\n")
        write_json(run.file("summary.json"), {k: v.to_dict(orient="records") for k, v in tables.items()})
        save_figure(run.file("figure.png"), figure(tables))
        run.log(f"summary of {len(runs)} run(s): {run.path / 'summary.md'}")
    emit_run_path(run.path)


_SHOWN = {
    "segmentation": ("model", "strategy", "prompt", "dice_LV", "dice_MYO", "dice_LA", "dice_mean"),
    "paired_tests": ("comparison", "group", "n", "mean_diff", "ci_low", "ci_high", "p_adj"),
    "afd": ("segmenter", "aFD_ED_frames", "aFD_ES_frames", "aFD_ED_ms", "aFD_ES_ms", "videos"),
}


def _rich_table(key: str, df):
    """A compact rich table of the columns a reader looks at first (all columns are in summary.md)."""
    from rich.table import Table

    from echoseg.core.report.summary import _fmt

    table = Table(title=key.replace("_", " "))
    cols = [c for c in _SHOWN[key] if c in df.columns]
    for col in cols:
        table.add_column(col.replace("_frames", "").replace("dice_", "Dice "), overflow="fold")
    for row in df[cols].itertuples(index=False):
        table.add_row(*[_fmt(v) for v in row])
    return table


def register(app: typer.Typer) -> None:
    """Add `echoseg report` to the root app."""
    app.command("report")(report)
