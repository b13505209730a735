"""The pre-training table of `echoseg report` (SynCXR Tables 1 and 3): one row per pre-trained model (method x
pre-training data real / synthetic / mix), one column group per evaluation.

- ``pretrain`` runs give the method, the pre-training data and validation retrieval (image->text R@1);
- ``eval zeroshot`` runs give zero-shot AUC per task with its bootstrap CI, or grounding Dice;
- ``eval probe`` runs give AUC per task and training fraction (linear probe or fine-tuning).

An evaluation joins the row of the pretrain run it names (``--run``); a pretrain run not among the reported runs
is read from its own directory, so a report of evaluations alone still names method and data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoseg.core.io import read_json
from echoseg.core.runs import Run

DATA_ORDER = ("real", "synthetic", "mix")
COMMANDS = ("pretrain", "eval zeroshot", "eval probe")


def data_label(sources: dict[str, int] | None) -> str:
    """real, synthetic or mix from a pretrain run's training pairs by source."""
    kinds = {str(k).lower() for k, v in (sources or {}).items() if v}
    if kinds == {"real"}:
        return "real"
    if kinds and kinds <= {"synthetic", "sdm-camus"}:
        return "synthetic"
    return "mix" if len(kinds) > 1 else (next(iter(kinds)) if kinds else "?")


def _key(path: str | Path) -> str:
    return str(Path(path).resolve())


def _identity(pretrain_dir: str | Path) -> dict[str, Any]:
    """Method, data and retrieval of a pretrain run read from its directory (empty when unreadable)."""
    try:
        rec, summary = Run.load(pretrain_dir), read_json(Path(pretrain_dir) / "summary.json")
    except (OSError, ValueError, Exception):  # noqa: BLE001 - a missing or foreign run leaves the cells empty
        return {}
    if rec.get("command") != "pretrain":
        return {}
    retrieval = summary.get("retrieval") or {}
    return {"method": summary.get("method"), "data": data_label(((summary.get("data") or {}).get("train") or {})
                                                               .get("source")),
            "text": summary.get("text"), "image_encoder": summary.get("image_encoder"),
            "i2t_r1": retrieval.get("i2t_r1"), "t2i_r1": retrieval.get("t2i_r1"),
            "chance_r1": retrieval.get("chance_r1")}


def _ci(block: dict[str, Any] | None) -> tuple[float | None, str]:
    if not block:
        return None, ""
    lo, hi = block.get("ci_low"), block.get("ci_high")
    ci = f"[{lo:.2f}, {hi:.2f}]" if isinstance(lo, float) and np.isfinite(lo) and np.isfinite(hi) else ""
    return block.get("value"), ci


def evaluation_cells(rec: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The table cells one pretrain, zeroshot or probe run contributes to its model's row."""
    command = rec.get("command")
    if command == "pretrain":
        return {}
    task = summary.get("task", "?")
    if command == "eval zeroshot":
        if task == "grounding":
            return {"grounding_dice": (summary.get("overall") or {}).get("dice_mean")}
        value, ci = _ci(summary.get("auc"))
        return {f"zs_{task}_auc": value, f"zs_{task}_ci": ci}
    cells: dict[str, Any] = {}
    mode = "ft" if summary.get("mode") == "finetune" else "lp"
    for f in summary.get("fractions") or []:
        if f.get("scorable", True):
            value, ci = _ci(f.get("auc"))
            label = f"{mode}_{task}_{float(f['fraction']):g}"
            cells[f"{label}_auc"], cells[f"{label}_ci"] = value, ci
    return cells


def pretraining_table(items: list[tuple[Path, dict[str, Any], dict[str, Any]]]) -> pd.DataFrame:
    """The table from ``(run dir, run.json, summary.json)`` of pretrain, eval zeroshot and eval probe runs."""
    rows: dict[str, dict[str, Any]] = {}
    for path, rec, summary in items:
        target = path if rec.get("command") == "pretrain" else Path(str((rec.get("config") or {}).get("run", "")))
        key = _key(target)
        row = rows.setdefault(key, {"pretrain_run": str(target), **_identity(target)})
        row.update(evaluation_cells(rec, summary))
    df = pd.DataFrame(list(rows.values()))
    if df.empty:
        return df
    for col in ("method", "data"):
        if col not in df:
            df[col] = "?"
    order = {d: i for i, d in enumerate(DATA_ORDER)}
    df = df.assign(_d=df["data"].map(lambda d: order.get(d, 9))).sort_values(["method", "_d"], kind="stable")
    lead = [c for c in ("method", "data", "text", "image_encoder", "i2t_r1", "t2i_r1", "chance_r1") if c in df]
    rest = sorted(c for c in df.columns if c not in lead and c not in ("_d", "pretrain_run"))
    return df[[*lead, *rest, "pretrain_run"]].reset_index(drop=True).rename(columns={"pretrain_run": "run"})


def auc_columns(df: pd.DataFrame) -> list[str]:
    """The AUC columns of the table (zero-shot tasks, then probe fractions)."""
    return [c for c in df.columns if c.endswith("_auc")]


def _legend(column: str) -> str:
    """``zs_view_auc`` -> "zero-shot view", ``lp_view_0.1_auc`` -> "probe view 10%", ``grounding_dice``."""
    if column == "grounding_dice":
        return "grounding (Dice)"
    kind, rest = column.split("_", 1)
    rest = rest[: -len("_auc")]
    if kind == "zs":
        return f"zero-shot {rest}"
    task, fraction = rest.rsplit("_", 1)
    return f"{'probe' if kind == 'lp' else 'fine-tune'} {task} {float(fraction) * 100:g}%"


def plot_panel(ax, df: pd.DataFrame) -> None:
    """Grouped bars: each evaluation's AUC (or grounding Dice) per pre-trained model, CIs not drawn."""
    cols = auc_columns(df) + (["grounding_dice"] if "grounding_dice" in df else [])
    labels = [f"{m}\n{d}" for m, d in zip(df["method"], df["data"], strict=True)]
    x = np.arange(len(df))
    width = 0.8 / max(len(cols), 1)
    for i, col in enumerate(cols):
        ax.bar(x + (i - (len(cols) - 1) / 2) * width, df[col].astype(float).fillna(0), width, label=_legend(col))
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUC (Dice for grounding)")
    ax.legend(fontsize=6)
    ax.set_title("Pre-training (SynCXR)")
