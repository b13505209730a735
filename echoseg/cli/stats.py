"""`echoseg stats ...`: paired significance tests between runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from echoseg.cli.options import ConfigOpt, NameOpt, OutOpt, SeedOpt, SetOpt, emit_run_path, open_run, resolve
from echoseg.core.errors import UserError
from echoseg.core.runs import run_context

app = typer.Typer(help="Paired significance tests between runs (per-sample metrics).", no_args_is_help=True)


@app.command("wilcoxon")
def wilcoxon(
    ctx: typer.Context,
    runs: Annotated[
        list[Path] | None,
        typer.Argument(help="A B: per-sample CSV files or run directories (their per_sample.csv); "
                       "with --baseline, one or more runs compared with it.", show_default=False),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="Reference A for a many-vs-one comparison (B - A for each run).")
    ] = None,
    metric: Annotated[str, typer.Option("--metric", help="Metric column to compare.")] = "dice",
    key: Annotated[
        str | None, typer.Option("--key", help="Comma-separated key columns that pair samples (default sample_id).")
    ] = None,
    key_regex: Annotated[
        str | None,
        typer.Option("--key-regex", help="Regex extracting the key from the key column (--key, else sample_id, else "
                     "the first column); groups are joined with '/', named groups usable in --group-by."),
    ] = None,
    alternative: Annotated[str, typer.Option("--alternative", help="two-sided|greater|less (of B - A).")] = "two-sided",
    group_by: Annotated[
        str | None, typer.Option("--group-by", help="Comma-separated columns; one test per group (e.g. structure).")
    ] = None,
    correction: Annotated[
        str, typer.Option("--correction", help="Multiple-comparison adjustment: holm|bonferroni|fdr_bh|none.")
    ] = "holm",
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95% CI (0: none).")] = 1000,
    alpha: Annotated[float, typer.Option("--alpha", help="Significance level for adjusted p-values.")] = 0.05,
    zero_method: Annotated[
        str, typer.Option("--zero-method", help="Zero differences: wilcox (drop) | pratt | zsplit.")
    ] = "wilcox",
    allow_unpaired: Annotated[
        bool, typer.Option("--allow-unpaired", help="Accept more than 1% of keys present in only one file.")
    ] = False,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    name: NameOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Wilcoxon signed-rank tests of per-sample metrics, paired by sample, with effect sizes and adjusted p-values.

    Examples:

      echoseg stats wilcoxon RUN_REAL RUN_SYNTH --group-by structure

      echoseg stats wilcoxon --baseline real.csv pt_ft.csv synth.csv --correction holm

      echoseg stats wilcoxon camus/cris/p0/metrics.csv pt/cris/p0/metrics.csv --key-regex '[^/]+/[^/]+$'
    """
    # deferred: the stage and its libraries load only when the command runs (`echoseg --help` stays fast)
    from echoseg.core.stats.pairing import KeySpec, compile_key_regex, pair_runs, parse_columns
    from echoseg.core.stats.report import write_report
    from echoseg.core.stats.wilcoxon import ALTERNATIVES, CORRECTIONS, ZERO_METHODS, check_choice, compare_pairings

    cfg = resolve(ctx, config, sets, exclude=("runs", "baseline"))
    runs = list(runs or [])
    if baseline is None:
        if len(runs) != 2:
            raise UserError(f"give exactly two runs A B (got {len(runs)}), or --baseline A and one or more runs")
        ref, others = runs[0], runs[1:]
        inputs = {"a": str(runs[0]), "b": str(runs[1])}
    else:
        if not runs:
            raise UserError("--baseline needs one or more runs to compare with it")
        ref, others = baseline, runs
        inputs = {"baseline": str(baseline), "runs": [str(r) for r in runs]}
    for p in (ref, *others):
        if not Path(p).exists():
            raise UserError(f"{p}: file or run directory not found")
    check_choice(cfg["alternative"], ALTERNATIVES, "--alternative")
    check_choice(cfg["correction"], CORRECTIONS, "--correction")
    check_choice(cfg["zero_method"], ZERO_METHODS, "--zero-method")
    if cfg["bootstrap"] < 0:
        raise UserError(f"--bootstrap must be >= 0, got {cfg['bootstrap']}")
    if not 0 < cfg["alpha"] < 1:
        raise UserError(f"--alpha must be in (0, 1), got {cfg['alpha']}")
    if cfg["key_regex"] is not None:
        compile_key_regex(cfg["key_regex"])
    group_cols = parse_columns(cfg["group_by"])
    spec = KeySpec(columns=parse_columns(cfg["key"]), regex=cfg["key_regex"])
    pairings = pair_runs(ref, others, metric=cfg["metric"], key=spec, group_by=group_cols,
                         allow_unpaired=cfg["allow_unpaired"])

    run = open_run("stats", "wilcoxon", cfg, out=out, name=name, inputs=inputs)
    with run_context(run):
        table = compare_pairings(
            pairings, group_by=group_cols, alternative=cfg["alternative"], zero_method=cfg["zero_method"],
            correction=cfg["correction"], n_boot=cfg["bootstrap"], seed=cfg["seed"], alpha=cfg["alpha"],
        )
        settings = {"metric": cfg["metric"], "key": spec.describe(), "alternative": cfg["alternative"],
                    "zero_method": cfg["zero_method"], "correction": cfg["correction"], "alpha": cfg["alpha"],
                    "bootstrap": cfg["bootstrap"], "seed": cfg["seed"], "group_by": list(group_cols),
                    "difference": "B - A"}
        write_report(run, table, pairings, settings)
    emit_run_path(run.path)
