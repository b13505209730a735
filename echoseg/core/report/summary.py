"""Collect train / eval seg, stats wilcoxon, eval afd and distill runs into one comparable summary.

The segmentation table lists mean test Dice per structure for each run (model, training strategy, prompt), the
paired-test table every Wilcoxon row, and the aFD table EchoDFKD's ED/ES detection table; Synthetic Boost's own
Tables 2/3 and Figs. 2/3 and EchoDFKD's Figs. 4/6 come from :mod:`.synthetic_boost` and :mod:`.echodfkd`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from echoseg.core.errors import UserError
from echoseg.core.io import read_json
from echoseg.core.report.echodfkd import SHOWN as ECHODFKD_SHOWN
from echoseg.core.report.echodfkd import TITLES as ECHODFKD_TITLES
from echoseg.core.report.echodfkd import echodfkd_tables, scaling_row, subsample_of
from echoseg.core.report.pretraining import COMMANDS as PRETRAINING_COMMANDS
from echoseg.core.report.pretraining import plot_panel, pretraining_table
from echoseg.core.report.synthetic_boost import TITLES as SB_TITLES
from echoseg.core.report.synthetic_boost import display as sb_display
from echoseg.core.report.synthetic_boost import synthetic_boost_tables
from echoseg.core.runs import Run
from echoseg.core.stats.labels import lineage, lineage_note, looks_like_stamp, run_labels, training_strategy
from echoseg.core.stats.report import fmt_metric, fmt_p, unit_of

STRUCTURE_ORDER = ("LV", "MYO", "LA")
INTEGER_COLUMNS = ("n", "videos", "params", "best_epoch")
DIFF_COLUMNS = ("mean_diff", "ci_low", "ci_high")


def _load(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    run = Path(run)

    rec = Run.load(run)
    if rec.get("status") != "completed":
        raise UserError(f"{run}: run status is {rec.get('status')!r}, not completed")
    if not (run / "summary.json").is_file():
        raise UserError(f"{run}: no summary.json")
    try:
        summary = read_json(run / "summary.json")
    except (OSError, ValueError) as exc:
        raise UserError(f"{run / 'summary.json'}: not valid JSON ({str(exc).splitlines()[0][:200]})") from None
    return rec, summary


def strategy_of(summary: dict[str, Any], config: dict[str, Any]) -> str:
    """real, synthetic or synth-PT:real-FT, from the sources of the training data and --init-from."""
    return training_strategy(summary, config)


def seg_row(run: Path, rec: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """One row of the segmentation table from a train or eval seg run."""
    cfg = rec.get("config", {})
    test = summary.get("test", summary)
    row: dict[str, Any] = {
        "run": str(run),
        "model": cfg.get("model") or summary.get("model", "?"),
        "strategy": strategy_of(summary, cfg),
        "prompt": cfg.get("prompt") or summary.get("prompt"),
        "frozen": bool(cfg.get("freeze_encoders", False)),
        "best_epoch": summary.get("best_epoch"),
        "time_to_best_s": summary.get("time_to_best_s"),
    }
    per = test.get("per_structure", {})
    for s in STRUCTURE_ORDER:
        row[f"dice_{s}"] = per.get(s, {}).get("dice_mean")
    row["dice_mean"] = test.get("overall", {}).get("dice_mean")
    row["hd95_mean"] = test.get("overall", {}).get("hd95_mean")
    return row


def stats_rows(run: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the paired-test table from a stats wilcoxon run.

    Runs a stats run labelled by bare time stamps (unnamed runs, before labels came from run.json) are relabelled
    from the paths its pairing recorded.
    """
    relabel: dict[str, str] = {}
    pairing = [p for p in summary.get("pairing") or [] if isinstance(p, dict)]
    stamped = {(p.get(side), p.get(f"path_{side}")) for p in pairing for side in ("a", "b")
               if looks_like_stamp(str(p.get(side))) and p.get(f"path_{side}")}
    if stamped:
        labels = run_labels([path for _, path in sorted(stamped)], [label for label, _ in sorted(stamped)])
        relabel = {label: new for (label, _), new in zip(sorted(stamped), labels, strict=True)}
    rows = []
    for r in summary.get("results", []):
        a, b = (relabel.get(str(r.get(side)), r.get(side)) for side in ("a", "b"))
        rows.append({
            "run": str(run), "comparison": f"{b} vs {a}", "group": r.get("group", "all"),
            "metric": summary.get("metric", "dice"), "n": r.get("n"), "mean_diff": r.get("mean_diff", r.get("mean_d")),
            "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"),
            "r_rb": r.get("rank_biserial", r.get("r_rb")), "p": r.get("p_value", r.get("p")),
            "p_adj": r.get("p_adjusted", r.get("p_adj")),
        })
    return rows


def afd_row(run: Path, rec: dict[str, Any], summary: dict[str, Any], label: str | None = None) -> dict[str, Any]:
    """One row of the aFD table from an eval afd run."""
    cfg = rec.get("config", {})
    model = summary.get("teacher") if isinstance(summary.get("teacher"), dict) else {}
    source = model.get("name") or cfg.get("masks") or cfg.get("areas") or run.name
    segmenter_run = cfg.get("run_dir") or cfg.get("run")
    if segmenter_run is None and str(cfg.get("teacher") or "").startswith("run:"):
        segmenter_run = str(cfg["teacher"])[4:]
    if label is None and segmenter_run and (Path(segmenter_run) / "run.json").is_file():
        source = run_labels([segmenter_run])[0]
    return {
        "run": str(run), "segmenter": label or str(source),
        "aFD_ED_frames": summary.get("aFD_ED_frames"), "aFD_ES_frames": summary.get("aFD_ES_frames"),
        "aFD_ED_ms": summary.get("aFD_ED_ms"), "aFD_ES_ms": summary.get("aFD_ES_ms"),
        "videos": summary.get("videos_evaluated"), "params": summary.get("parameters", model.get("parameters")),
    }


def collect(runs: list[Path]) -> dict[str, pd.DataFrame]:
    """Sort runs by kind (from run.json) into the four tables."""
    seg, stats, afd, pretraining = [], [], [], []
    stats_runs = []  # (run, summary) of stats wilcoxon runs: Synthetic Boost's Fig. 2 pairs their sides
    students, sampled = [], []  # EchoDFKD's scaling (distill) and sampling-rate (eval afd --subsample) rows
    for run in runs:
        rec, summary = _load(run)
        command = rec.get("command", "")
        if command in PRETRAINING_COMMANDS:
            pretraining.append((Path(run), rec, summary))
        elif command in ("train", "eval seg"):
            seg.append(seg_row(Path(run), rec, summary))
        elif command == "stats wilcoxon":
            stats.extend(stats_rows(Path(run), summary))
            stats_runs.append((Path(run), summary))
        elif command == "eval afd":
            afd.append(afd_row(Path(run), rec, summary))
            sampled.append({**afd[-1], "subsample": subsample_of(rec, summary)})
        elif command == "distill":
            if (student := scaling_row(Path(run), rec, summary)) is not None:
                students.append(student)
            for who in ("teacher", "student"):
                block = dict((summary.get("eval") or {}).get(who) or {})
                if "aFD_ED_frames" in block:
                    block["parameters"] = ((summary.get("costs") or {}).get(who) or {}).get("parameters")
                    name = (summary.get(who) or {}).get("name", who)
                    afd.append(afd_row(Path(run), rec, block, label=f"{who} ({name})"))
        else:
            raise UserError(f"{run}: a '{command}' run has nothing to report (give train, eval seg, "
                            "stats wilcoxon, eval afd, distill, pretrain, eval zeroshot or eval probe runs)")
    if not (seg or stats or afd or pretraining):
        raise UserError("no runs to report")
    return {"segmentation": pd.DataFrame(seg), "paired_tests": pd.DataFrame(stats), "afd": pd.DataFrame(afd),
            "pretraining": pretraining_table(pretraining), **echodfkd_tables(students, sampled),
            **synthetic_boost_tables(pd.DataFrame(seg), stats_runs)}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and not np.isfinite(v))


def _fmt(v: Any) -> str:
    """A cell of unknown meaning: integers with thousands separators, other numbers with 4 significant digits."""
    if _missing(v):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)) or (isinstance(v, (float, np.floating)) and float(v).is_integer()
                                            and abs(v) >= 1000):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def format_cell(column: str, value: Any, metric: str | None = None, units: bool = False) -> str:
    """A table cell at the precision its column calls for: Dice 4 decimals, HD95 2 (pixels: the header says so),
    counts as integers with thousands separators, p-values with 2 significant digits, aFD frames 2 decimals and
    ms 1; differences of a paired test at the precision of their ``metric`` (with its unit when ``units``)."""
    if _missing(value):
        return "–"
    if isinstance(value, (bool, np.bool_, str)):
        return str(value)
    x = float(value)
    if column in INTEGER_COLUMNS and x.is_integer():
        return f"{int(x):,}"
    if column in DIFF_COLUMNS:
        text = fmt_metric(x, metric or "dice", signed=True)
        unit = unit_of(metric or "dice")
        return f"{text} {unit}" if units and unit else text
    if column.startswith(("dice", "iou")) or column == "grounding_dice":
        return f"{x:.4f}"
    if column.endswith(("_auc", "_r1")):
        return f"{x:.3f}"
    if column.startswith("hd95"):
        return f"{x:.2f}"  # its header carries the unit (px)
    if column in ("p", "p_adj"):
        return fmt_p(x)
    if column == "r_rb":
        return f"{x:.3f}"
    if column.endswith("_frames"):
        return f"{x:.2f}"
    if column.endswith("_ms") or column.endswith("_s"):
        return f"{x:.1f}"
    return _fmt(value)


def _header(column: str) -> str:
    return f"{column} (px)" if column.startswith("hd95") else column


def table_rows(df: pd.DataFrame, columns: list[str], units: bool = False) -> list[list[str]]:
    """Cells of ``columns`` of a report table, formatted by :func:`format_cell`."""
    metrics = df["metric"] if "metric" in df.columns else pd.Series(["dice"] * len(df), index=df.index)
    return [[format_cell(c, row[c], str(metric), units) for c in columns]
            for (_, row), metric in zip(df.iterrows(), metrics, strict=True)]


def provenance(runs: list[Path]) -> str | None:
    """The one-line note that toy data or tiny model configs are behind ``runs`` (None when neither is)."""
    return lineage_note(lineage(list(runs)))


def markdown(tables: dict[str, pd.DataFrame], note: str | None = None) -> str:
    """The three tables as markdown (run paths left out for readability), after ``note`` when given."""
    titles = {
        "segmentation": "Segmentation: mean test Dice per structure, one row per run",
        "paired_tests": "Paired Wilcoxon signed-rank tests on per-sample metrics, B - A",
        "afd": "ED/ES detection: average frame distance (EchoDFKD)",
        "pretraining": "Vision-language pre-training: retrieval R@1, zero-shot and probe AUC [95% CI], grounding Dice "
                       "per method and pre-training data (SynCXR Tables 1 and 3)",
        **ECHODFKD_TITLES,
        **SB_TITLES,
    }
    parts = ["# echoseg summary", ""]
    if note:
        parts += [f"**{note}**", ""]
    for key, df in tables.items():
        if df.empty:
            continue
        df = sb_display(key, df)  # Synthetic Boost's tables as the paper prints them; others unchanged
        shown = [c for c in df.columns if c != "run"]
        parts += [f"## {titles[key]}", "", "| " + " | ".join(_header(c) for c in shown) + " |",
                  "|" + "---|" * len(shown)]
        cells = table_rows(df, shown)
        if "metric" in shown:  # the unit of a paired test's differences goes with its metric
            i = shown.index("metric")
            for row in cells:
                row[i] = f"{row[i]} ({unit_of(row[i])})" if unit_of(row[i]) else row[i]
        parts += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        parts.append("")
    return "\n".join(parts)


SHOWN = {
    "segmentation": ("model", "strategy", "prompt", "dice_LV", "dice_MYO", "dice_LA", "dice_mean", "hd95_mean"),
    "paired_tests": ("comparison", "group", "metric", "n", "mean_diff", "ci_low", "ci_high", "p_adj"),
    "afd": ("segmenter", "aFD_ED_frames", "aFD_ES_frames", "aFD_ED_ms", "aFD_ES_ms", "videos"),
    "pretraining": ("method", "data", "i2t_r1"),  # then every evaluation column the runs have
    **ECHODFKD_SHOWN,
}


def _console_header(column: str) -> str:
    return (column.replace("_frames", "").replace("dice_", "Dice ").replace("hd95_mean", "HD95 (px)")
            .replace("mean_diff", "mean B-A"))


def rich_table(key: str, df: pd.DataFrame) -> Table:
    """A compact rich table of the columns a reader looks at first (all columns are in summary.md)."""
    table = Table(title=key.replace("_", " "))
    df = sb_display(key, df)
    cols = [c for c in SHOWN[key] if c in df.columns] if key in SHOWN else [c for c in df.columns if c != "run"]
    if key == "pretraining":
        cols += [c for c in df.columns if c.endswith("_auc") or c == "grounding_dice"]
    for col in cols:
        table.add_column(_console_header(col), overflow="fold")
    for cells in table_rows(df, cols, units=True):
        table.add_row(*cells)
    return table


def figure(tables: dict[str, pd.DataFrame]):
    """One PNG-ready figure: Dice per model and strategy, paired differences with CIs, aFD bars."""

    import matplotlib  # deferred: heavy import, loaded only when this path runs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    panels = [k for k in ("segmentation", "paired_tests", "afd", "pretraining")
              if k in tables and not tables[k].empty]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        df = tables[key]
        if key == "segmentation":
            labels = [f"{m} {s}" for m, s in zip(df["model"], df["strategy"], strict=True)]
            x = np.arange(len(df))
            width = 0.8 / len(STRUCTURE_ORDER)
            for i, s in enumerate(STRUCTURE_ORDER):
                ax.bar(x + (i - 1) * width, df[f"dice_{s}"].astype(float).fillna(0), width, label=s)
            ax.set_xticks(x, labels, fontsize=7, rotation=35, ha="right", rotation_mode="anchor")
            ax.set_ylim(0, 1)
            ax.set_ylabel("mean test Dice")
            ax.legend(fontsize=8)
            ax.set_title("Segmentation")
        elif key == "paired_tests":
            y = np.arange(len(df))
            d = df["mean_diff"].astype(float)
            lo = d - df["ci_low"].astype(float)
            hi = df["ci_high"].astype(float) - d
            ax.errorbar(d, y, xerr=[lo, hi], fmt="o", capsize=3)
            ax.axvline(0, color="k", lw=0.8)
            ax.set_yticks(y, [f"{c}\n{g}" for c, g in zip(df["comparison"], df["group"], strict=True)], fontsize=6)
            metrics = sorted(set(df["metric"])) if "metric" in df.columns else ["dice"]
            unit = unit_of(metrics[0]) if len(metrics) == 1 else None
            ax.set_xlabel(f"mean {'/'.join(metrics)} difference B - A{f' ({unit})' if unit else ''} (95% CI)")
            ax.set_title("Paired tests")
        elif key == "pretraining":
            plot_panel(ax, df)
        else:
            x = np.arange(len(df))
            ax.bar(x - 0.2, df["aFD_ED_frames"].astype(float), 0.4, label="aFD ED")
            ax.bar(x + 0.2, df["aFD_ES_frames"].astype(float), 0.4, label="aFD ES")
            ax.set_xticks(x, [textwrap.fill(str(s), 24) for s in df["segmenter"]], fontsize=7)
            top = float(np.nanmax(df[["aFD_ED_frames", "aFD_ES_frames"]].astype(float).to_numpy(), initial=0.0))
            ax.set_ylim(0, max(1.0, top * 1.15))
            ax.set_ylabel("frames")
            ax.legend(fontsize=8)
            ax.set_title("ED/ES detection (aFD)")
    fig.tight_layout()
    return fig
