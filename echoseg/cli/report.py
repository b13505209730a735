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

    A Dice table per run (model, training strategy, prompt), paired tests with CIs,
    an aFD table (EchoDFKD) and a pre-training table: retrieval, zero-shot and probe AUC with CIs and grounding
    Dice per method and pre-training data real / synthetic / mix (SynCXR Tables 1 and 3).

    EchoDFKD's experiments: distill runs of two or more student sizes (same teacher and --eval-data) give the
    scaling tables and fig6_scaling.png (-log(aFD_ED + aFD_ES) and log(1 - mIoU) against log parameters, with
    least-squares lines); eval afd runs of one segmenter at two or more --subsample K give the sampling table and
    fig4_sampling.png (aFD against K).

    Synthetic Boost's grid: train / eval seg runs of clipseg and cris over several prompts or with frozen and
    unfrozen encoders give Table 2 (unfrozen, with zero-shot) and Table 3 (frozen) as mean ± std Dice per strategy
    and prompt, fig2_paired.png (stats wilcoxon differences between strategies per prompt, with CIs) and
    fig3_frozen.png (frozen minus unfrozen mean Dice per prompt); examples/synthetic_boost.sh runs it.

    Each run's kind is read from its run.json; the run writes summary.md, summary.json and figure.png.

    Example: echoseg report runs/train/* runs/stats-wilcoxon/* runs/eval-afd/*
    """
    from rich.console import Console

    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.console import console
    from echoseg.core.io import save_figure, write_json, write_text
    from echoseg.core.report.echodfkd import echodfkd_figures, figure_links
    from echoseg.core.report.summary import collect, figure, markdown, provenance, rich_table
    from echoseg.core.report.synthetic_boost import figures as sb_figures

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
        extra = echodfkd_figures(tables)  # EchoDFKD Fig. 6 / Fig. 4, when the runs support them
        extra.update(sb_figures(tables))  # Synthetic Boost Figs. 2 and 3, when the runs form its grid
        write_text(run.file("summary.md"), markdown(tables, note) + "\n" + figure_links(list(extra)))
        write_json(run.file("summary.json"), {**{k: v.to_dict(orient="records") for k, v in tables.items()},
                                              "note": note})
        save_figure(run.file("figure.png"), figure(tables))
        for file_name, fig in extra.items():
            save_figure(run.file(file_name), fig)
        run.log(f"summary of {len(runs)} run(s): {run.path / 'summary.md'}")
    emit_run_path(run.path)


def register(app: typer.Typer) -> None:
    """Add `echoseg report` to the root app."""
    app.command("report")(report)
