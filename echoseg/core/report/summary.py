"""Collect train / eval seg, stats wilcoxon, eval afd and distill runs into one comparable summary.

The segmentation table mirrors Synthetic Boost's Table 2 (mean test Dice per structure for each model and training
strategy), the paired-test table its Fig. 2, and the aFD table EchoDFKD's ED/ES detection table.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoseg.core.errors import UserError
from echoseg.core.io import read_json
from echoseg.core.runs import Run

STRUCTURE_ORDER = ("LV", "MYO", "LA")


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
    sources = set((summary.get("data", {}).get("train") or {}).get("source") or [])
    if config.get("init_from"):
        init = Path(config["init_from"])
        try:
            init_sources = set(read_json(init / "summary.json").get("data", {}).get("train", {}).get("source") or [])
        except (OSError, ValueError):
            init_sources = set()
        first = "synth" if "synthetic" in init_sources else "real"
        second = "synth" if "synthetic" in sources else "real"
        return f"{first}-PT:{second}-FT"
    return "synthetic" if sources == {"synthetic"} else "real" if sources <= {"real"} else "mixed"


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
    """Rows of the paired-test table from a stats wilcoxon run."""
    rows = []
    for r in summary.get("results", []):
        rows.append({
            "run": str(run), "comparison": f"{r.get('b')} vs {r.get('a')}", "group": r.get("group", "all"),
            "n": r.get("n"), "mean_diff": r.get("mean_diff", r.get("mean_d")),
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
    return {
        "run": str(run), "segmenter": label or str(source),
        "aFD_ED_frames": summary.get("aFD_ED_frames"), "aFD_ES_frames": summary.get("aFD_ES_frames"),
        "aFD_ED_ms": summary.get("aFD_ED_ms"), "aFD_ES_ms": summary.get("aFD_ES_ms"),
        "videos": summary.get("videos_evaluated"), "params": summary.get("parameters", model.get("parameters")),
    }


def collect(runs: list[Path]) -> dict[str, pd.DataFrame]:
    """Sort runs by kind (from run.json) into the three tables."""
    seg, stats, afd = [], [], []
    for run in runs:
        rec, summary = _load(run)
        command = rec.get("command", "")
        if command in ("train", "eval seg"):
            seg.append(seg_row(Path(run), rec, summary))
        elif command == "stats wilcoxon":
            stats.extend(stats_rows(Path(run), summary))
        elif command == "eval afd":
            afd.append(afd_row(Path(run), rec, summary))
        elif command == "distill":
            for who in ("teacher", "student"):
                block = dict((summary.get("eval") or {}).get(who) or {})
                if "aFD_ED_frames" in block:
                    block["parameters"] = ((summary.get("costs") or {}).get(who) or {}).get("parameters")
                    name = (summary.get(who) or {}).get("name", who)
                    afd.append(afd_row(Path(run), rec, block, label=f"{who} ({name})"))
        else:
            raise UserError(f"{run}: a '{command}' run has nothing to report (give train, eval seg, "
                            "stats wilcoxon, eval afd or distill runs)")
    if not (seg or stats or afd):
        raise UserError("no runs to report")
    return {"segmentation": pd.DataFrame(seg), "paired_tests": pd.DataFrame(stats), "afd": pd.DataFrame(afd)}


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}"
    return str(v)


def markdown(tables: dict[str, pd.DataFrame]) -> str:
    """The three tables as markdown (run paths left out for readability)."""
    titles = {
        "segmentation": "Segmentation: mean test Dice per structure (Synthetic Boost Table 2)",
        "paired_tests": "Paired Wilcoxon signed-rank tests on per-sample Dice, B - A (Synthetic Boost Fig. 2)",
        "afd": "ED/ES detection: average frame distance (EchoDFKD)",
    }
    parts = ["# echoseg summary", ""]
    for key, df in tables.items():
        if df.empty:
            continue
        shown = df.drop(columns=["run"])
        parts += [f"## {titles[key]}", "", "| " + " | ".join(shown.columns) + " |",
                  "|" + "---|" * len(shown.columns)]
        parts += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in shown.itertuples(index=False)]
        parts.append("")
    return "\n".join(parts)


def figure(tables: dict[str, pd.DataFrame]):
    """One PNG-ready figure: Dice per model and strategy, paired differences with CIs, aFD bars."""

    import matplotlib  # deferred: heavy import, loaded only when this path runs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    panels = [k for k in ("segmentation", "paired_tests", "afd") if not tables[k].empty]
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
            ax.set_xlabel("mean Dice difference B - A (95% CI)")
            ax.set_title("Paired tests")
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
