"""Presenting paired-test results: rich table (stderr), markdown, JSON headline and a mean-difference plot."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from echoseg.core.console import console
from echoseg.core.io import save_figure, write_csv, write_json, write_text
from echoseg.core.stats.pairing import Pairing

HEADERS = ["A", "B", "group", "n", "mean A", "mean B", "mean B-A [95% CI]", "median B-A", "r_rb", "p", "p adj",
           "method", "note"]
#: decimals metric values are shown with (others: 4 significant digits) and their units
METRIC_DECIMALS = {"dice": 4, "iou": 4, "hd95": 2}
METRIC_UNITS = {"hd95": "px"}
_VALUE_HEADERS = ("mean A", "mean B", "mean B-A [95% CI]", "median B-A", "B-A [95% CI]")


def fmt_p(p: float) -> str:
    """A p-value with two significant digits (``8.3e-06``), ``-`` when undefined."""
    if p is None or not math.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def fmt(x: float, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, ``-`` when undefined."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.{digits}g}"


def fmt_metric(x: float, metric: str, signed: bool = False) -> str:
    """A metric value at the metric's precision (Dice/IoU 4 decimals, HD95 2), ``-`` when undefined."""
    if x is None or not math.isfinite(x):
        return "-"
    sign = "+" if signed else ""
    decimals = METRIC_DECIMALS.get(str(metric).lower())
    return f"{x:{sign}.4g}" if decimals is None else f"{x:{sign}.{decimals}f}"


def unit_of(metric: str) -> str | None:
    """The unit of a metric's values (``px`` for HD95), None for unitless ones."""
    return METRIC_UNITS.get(str(metric).lower())


def _with_unit(headers: list[str], metric: str) -> list[str]:
    unit = unit_of(metric)
    return [f"{h} ({unit})" if unit and h in _VALUE_HEADERS else h for h in headers]


def _metric_of(table: pd.DataFrame) -> str:
    return str(table["metric"].iloc[0]) if "metric" in table.columns and len(table) else ""


def _ci(row: pd.Series) -> str:
    metric = row.get("metric", "")
    text = fmt_metric(float(row["mean_diff"]), metric, signed=True)
    if math.isfinite(row["ci_low"]):
        text += f" [{fmt_metric(row['ci_low'], metric, True)}, {fmt_metric(row['ci_high'], metric, True)}]"
    return text


def display_rows(table: pd.DataFrame) -> list[list[str]]:
    """The results as text cells in the order of :data:`HEADERS`."""
    rows = []
    for _, r in table.iterrows():
        p_adj = fmt_p(r["p_adjusted"]) + (" *" if bool(r["significant"]) else "")
        metric = r.get("metric", "")
        rows.append([str(r["a"]), str(r["b"]), str(r["group"]), f"{int(r['n']):,}", fmt_metric(r["mean_a"], metric),
                     fmt_metric(r["mean_b"], metric), _ci(r), fmt_metric(r["median_diff"], metric, signed=True),
                     fmt(r["rank_biserial"], 3), fmt_p(r["p_value"]), p_adj, str(r["method"]),
                     str(r["note"] or "")])
    return rows


def markdown_table(table: pd.DataFrame) -> str:
    """The results as a GitHub-flavoured markdown table (``*`` marks adjusted p below alpha)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    headers = _with_unit(HEADERS, _metric_of(table))
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in display_rows(table)]
    return "\n".join(lines) + "\n"


RICH_HEADERS = ["#", "group", "n", "mean A", "mean B", "B-A [95% CI]", "r_rb", "p", "p adj", "method"]


def rich_table(table: pd.DataFrame, title: str | None = None):
    """The results as a compact ``rich.table.Table`` (comparisons by number; labels and notes are logged)."""

    t = Table(title=title, show_lines=False)
    for h, shown in zip(RICH_HEADERS, _with_unit(RICH_HEADERS, _metric_of(table)), strict=True):
        left = h in ("group", "method")
        t.add_column(shown, justify="left" if left else "right", overflow="fold",
                     no_wrap=h not in ("group", "B-A [95% CI]", "method"))
    for comparison, cells in zip(table["comparison"], display_rows(table), strict=True):
        _a, _b, group, n, mean_a, mean_b, ci, _median, r_rb, p, p_adj, method, _note = cells
        t.add_row(str(comparison), group, n, mean_a, mean_b, ci, r_rb, p, p_adj, method)
    return t


def plot_differences(table: pd.DataFrame, metric: str = "dice"):
    """Mean difference B - A with its bootstrap CI per (comparison, group), one horizontal line each."""
    import matplotlib  # deferred: heavy import, loaded only when this path runs

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    labels = [f"{_shorten(str(r.b))} vs {_shorten(str(r.a))}" + ("" if r.group == "all" else f"  [{r.group}]")
              for r in table.itertuples()]
    y = np.arange(len(table))[::-1]
    mean = table["mean_diff"].to_numpy(float)
    lo, hi = table["ci_low"].to_numpy(float), table["ci_high"].to_numpy(float)
    err = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
    sig = table["significant"].to_numpy(bool)
    fig, ax = plt.subplots(figsize=(8, max(2.0, 0.35 * len(table) + 1.2)))
    for mask, color, name in ((sig, "tab:red", "significant (adjusted)"), (~sig, "tab:gray", "not significant")):
        if mask.any():
            ax.errorbar(mean[mask], y[mask], xerr=err[:, mask], fmt="o", color=color, capsize=3, label=name)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    unit = unit_of(metric)
    ax.set_xlabel(f"mean {metric} difference B - A{f' ({unit})' if unit else ''} (95% bootstrap CI)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _shorten(text: str, width: int = 32) -> str:
    """``text`` cut in the middle to at most ``width`` characters."""
    if len(text) <= width:
        return text
    keep = width - 3
    return text[: keep - keep // 2] + "..." + text[len(text) - keep // 2:]


def headline(table: pd.DataFrame, pairings: list[Pairing], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON headline for summary.json: settings, pairing counts and the key numbers of each row."""
    keep = ["a", "b", "group", "n", "mean_diff", "ci_low", "ci_high", "median_diff", "rank_biserial",
            "p_value", "p_adjusted", "method", "significant", "note"]
    rows = table[keep].to_dict(orient="records")
    return {
        **settings,
        "comparisons": int(table["comparison"].nunique()),
        "tests": len(table),
        "significant": int(table["significant"].sum()),
        "pairing": [p.info() for p in pairings],
        "results": rows,
    }


def write_report(run, table: pd.DataFrame, pairings: list[Pairing], settings: dict[str, Any]) -> dict[str, Any]:
    """Write results.csv/json, summary.md/json and mean_differences.png into ``run``; log the table and notes."""


    write_csv(run.file("results.csv"), table)
    write_json(run.file("results.json"), {**settings, "pairing": [p.info() for p in pairings],
                                          "results": table.to_dict(orient="records")})
    for i, p in enumerate(pairings):
        run.log(f"#{i}: B {p.label_b} vs A {p.label_a}: {p.n_paired} paired, {p.only_a} only in A, "
                f"{p.only_b} only in B, {p.dropped_nonfinite} dropped (NaN/inf {p.metric})",
                style="yellow" if (p.only_a or p.only_b or p.dropped_nonfinite) else None)
    for r in table.itertuples():
        if r.note:
            run.log(f"note: {r.b} vs {r.a} [{r.group}]: {r.note}", style="yellow")
    title = (f"Wilcoxon signed-rank, {settings['metric']} B - A, {settings['alternative']}, "
             f"correction {settings['correction']}")
    if run.writer:
        # redirected stderr (a log file) is read wider than the 80 columns rich assumes without a terminal
        out = console if console.is_terminal else Console(stderr=True, width=140, highlight=False)
        out.print(rich_table(table, title))
    unit = unit_of(settings["metric"])
    md = [f"# Paired Wilcoxon signed-rank tests ({settings['metric']}{f', {unit}' if unit else ''})", "",
          f"Differences are B - A; alternative {settings['alternative']}; zero method {settings['zero_method']}; "
          f"p-values adjusted with {settings['correction']} across {len(table)} test(s); * marks adjusted p < "
          f"{settings['alpha']}; CI: {settings['bootstrap']} bootstrap resamples (seed {settings['seed']}); r_rb: "
          "matched-pairs rank-biserial correlation (positive favours B).", "", markdown_table(table)]
    write_text(run.file("summary.md"), "\n".join(md))
    save_figure(run.file("mean_differences.png"), plot_differences(table, settings["metric"]))
    summary = headline(table, pairings, settings)
    run.write_summary(summary)
    return summary
