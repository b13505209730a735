"""Synthetic Boost's Tables 2 and 3 and Figs. 2 and 3 from a grid of CLIPSeg / CRIS runs.

- Table 2 (``sb_table2``): test Dice, mean ± std, per model and strategy (zero-shot, synthetic, real,
  synth-PT:real-FT) and prompt, encoders trained (unfrozen); zero-shot rows (pre-trained weights, no training) go
  here as in the paper.
- Table 3 (``sb_table3``): the same with frozen encoders.
- Fig. 2 (``sb_fig2``): paired differences between strategies per model and prompt, with the bootstrap 95% CIs and
  adjusted p-values of `echoseg stats wilcoxon` runs whose two sides are runs of the grid.
- Fig. 3 (``sb_fig3``): mean Dice with frozen minus with unfrozen encoders per model, strategy and prompt.

With one run per cell the ± is the sample standard deviation over the test samples (the run's summary); with
several (e.g. seeds) the cell gives the mean of the runs' means ± their standard deviation (``runs`` says how many).
The tables appear only when the VLSM runs form a grid: more than one prompt, or both frozen and unfrozen encoders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echoseg.core.io import read_json
from echoseg.core.stats.labels import training_strategy

VLSMS = ("clipseg", "cris")
STRATEGY_ORDER = ("zero-shot", "synthetic", "real", "synth-PT:real-FT")
KEYS = ("sb_table2", "sb_table3", "sb_fig2", "sb_fig3")
TITLES = {
    "sb_table2": "Synthetic Boost Table 2: test Dice (%), mean ± std, encoders unfrozen (zero-shot: no training)",
    "sb_table3": "Synthetic Boost Table 3: test Dice (%), mean ± std, encoders frozen",
    "sb_fig2": "Synthetic Boost Fig. 2: paired Dice differences between strategies per prompt, B - A (95% CI)",
    "sb_fig3": "Synthetic Boost Fig. 3: mean Dice with frozen minus with unfrozen encoders per prompt",
}
FIGURE_FILES = {"sb_fig2": "fig2_paired.png", "sb_fig3": "fig3_frozen.png"}


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def run_facts(path: str | Path) -> dict[str, Any] | None:
    """Model, prompt, strategy and frozen encoders of a train / eval seg run (or of a file inside one); None for
    anything else."""
    p = Path(path)
    run = p if (p / "run.json").is_file() else p.parent
    rec = _read(run / "run.json")
    if rec.get("command") not in ("train", "eval seg"):
        return None
    cfg = rec.get("config") or {}
    summary = _read(run / "summary.json")
    return {"model": cfg.get("model") or summary.get("model"), "prompt": cfg.get("prompt") or summary.get("prompt"),
            "strategy": training_strategy(summary, cfg), "frozen": bool(cfg.get("freeze_encoders", False))}


def _prompt_key(prompt: str) -> tuple[int, str]:
    digits = "".join(ch for ch in str(prompt) if ch.isdigit())
    return (int(digits) if digits else 99, str(prompt))


def _order(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the paper's order: model, strategy (zero-shot first), prompt P0..P7."""
    if df.empty:
        return df
    rank = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    keys = df.assign(_m=df["model"].map(lambda m: VLSMS.index(m) if m in VLSMS else 9),
                     _s=df["strategy"].map(lambda s: rank.get(s, 9)),
                     _p=df["prompt"].map(_prompt_key))
    return keys.sort_values(["_m", "_s", "_p"]).drop(columns=["_m", "_s", "_p"]).reset_index(drop=True)


def _cell_rows(seg: pd.DataFrame) -> pd.DataFrame:
    """One row per VLSM run: model, strategy, prompt, frozen, dice_mean, dice_std and n from its summary."""
    rows = []
    for r in seg.to_dict(orient="records"):
        if r.get("model") not in VLSMS or r.get("dice_mean") is None:
            continue
        summary = _read(Path(str(r["run"])) / "summary.json")
        overall = summary.get("test", summary).get("overall", {})
        rows.append({"model": r["model"], "strategy": r["strategy"], "prompt": str(r["prompt"]),
                     "frozen": bool(r["frozen"]), "dice_mean": float(r["dice_mean"]),
                     "dice_std": overall.get("dice_std"), "n": overall.get("n")})
    return pd.DataFrame(rows, columns=["model", "strategy", "prompt", "frozen", "dice_mean", "dice_std", "n"])


def _cells(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of one table merged per (model, strategy, prompt)."""
    out = []
    for (model, strategy, prompt), g in runs.groupby(["model", "strategy", "prompt"], sort=False):
        if len(g) == 1:
            one = g.iloc[0]
            mean, std, n = one["dice_mean"], one["dice_std"], one["n"]
        else:
            mean, std, n = float(g["dice_mean"].mean()), float(g["dice_mean"].std(ddof=1)), int(len(g))
        out.append({"model": model, "strategy": strategy, "prompt": prompt, "dice_mean": mean,
                    "dice_std": None if std is None or pd.isna(std) else float(std),
                    "n": None if n is None or pd.isna(n) else int(n), "runs": int(len(g))})
    return _order(pd.DataFrame(out, columns=["model", "strategy", "prompt", "dice_mean", "dice_std", "n", "runs"]))


def paired_rows(stats_runs: list[tuple[Path, dict[str, Any]]]) -> pd.DataFrame:
    """Fig. 2's rows: each test of a stats wilcoxon run whose sides are two strategies of one model, prompt and
    encoder setting."""
    rows = []
    for run, summary in stats_runs:
        paths: dict[str, str] = {}
        for p in summary.get("pairing") or []:
            if isinstance(p, dict):
                paths.update({str(p.get("a")): str(p.get("path_a")), str(p.get("b")): str(p.get("path_b"))})
        for r in summary.get("results") or []:
            fa, fb = (run_facts(paths[str(r.get(s))]) if str(r.get(s)) in paths else None for s in ("a", "b"))
            if not fa or not fb or fa["model"] not in VLSMS:
                continue
            if (fa["model"], fa["prompt"], fa["frozen"]) != (fb["model"], fb["prompt"], fb["frozen"]):
                continue
            if fa["strategy"] == fb["strategy"]:
                continue
            rows.append({"run": str(run), "model": fa["model"], "frozen": fa["frozen"], "prompt": str(fa["prompt"]),
                         "comparison": f"{fb['strategy']} - {fa['strategy']}", "group": r.get("group", "all"),
                         "metric": summary.get("metric", "dice"), "n": r.get("n"), "mean_diff": r.get("mean_diff"),
                         "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"), "p_adj": r.get("p_adjusted")})
    cols = ["run", "model", "frozen", "prompt", "comparison", "group", "metric", "n", "mean_diff", "ci_low",
            "ci_high", "p_adj"]
    df = pd.DataFrame(rows, columns=cols)
    if df.empty:
        return df
    keys = df.assign(_m=df["model"].map(VLSMS.index), _p=df["prompt"].map(_prompt_key))
    return keys.sort_values(["_m", "frozen", "_p", "comparison"]).drop(columns=["_m", "_p"]).reset_index(drop=True)


def frozen_minus_unfrozen(table2: pd.DataFrame, table3: pd.DataFrame) -> pd.DataFrame:
    """Fig. 3's rows: mean Dice frozen, unfrozen and their difference per model, strategy and prompt."""
    keys = ["model", "strategy", "prompt"]
    both = table3[[*keys, "dice_mean"]].merge(table2[[*keys, "dice_mean"]], on=keys, suffixes=("_frozen", "_unfrozen"))
    both = both.rename(columns={"dice_mean_frozen": "dice_frozen", "dice_mean_unfrozen": "dice_unfrozen"})
    both["dice_diff"] = both["dice_frozen"] - both["dice_unfrozen"]
    return _order(both)


def synthetic_boost_tables(seg: pd.DataFrame, stats_runs: list[tuple[Path, dict[str, Any]]]
                           ) -> dict[str, pd.DataFrame]:
    """The tables the runs support (keys of :data:`KEYS`; none unless the VLSM runs form a grid)."""
    runs = _cell_rows(seg)
    if runs.empty or (runs["prompt"].nunique() < 2 and runs["frozen"].nunique() < 2):
        return {}
    trained = runs["strategy"] != "zero-shot"
    table2 = _cells(runs[~runs["frozen"] | ~trained])
    table3 = _cells(runs[runs["frozen"] & trained])
    out = {"sb_table2": table2, "sb_table3": table3, "sb_fig2": paired_rows(stats_runs),
           "sb_fig3": frozen_minus_unfrozen(table2, table3)}
    return {k: v for k, v in out.items() if not v.empty}


def _pm(mean: Any, std: Any) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if std is not None and not pd.isna(std) else f"{100 * mean:.2f}"


def display(key: str, df: pd.DataFrame) -> pd.DataFrame:
    """The table as printed: Tables 2/3 pivoted to one row per strategy and model and one column per prompt
    (``mean ± std`` in %), Fig. 2's rows with their encoder setting in words; other tables unchanged."""
    if key in ("sb_table2", "sb_table3"):
        prompts = sorted(df["prompt"].unique(), key=_prompt_key)
        rows = []
        for (strategy, model), g in df.groupby(["strategy", "model"], sort=False):
            cells = {p: _pm(r["dice_mean"], r["dice_std"]) for p, r in zip(g["prompt"], g.to_dict("records"),
                                                                           strict=True)}
            rows.append({"strategy": strategy, "model": model, **{p.upper(): cells.get(p, "–") for p in prompts}})
        rank = {s: i for i, s in enumerate(STRATEGY_ORDER)}
        rows.sort(key=lambda r: (rank.get(r["strategy"], 9), VLSMS.index(r["model"])))
        return pd.DataFrame(rows)
    if key == "sb_fig2":
        return df.assign(frozen=df["frozen"].map({True: "frozen", False: "unfrozen"})).rename(
            columns={"frozen": "encoders"})
    return df


def _panels(n: int, width: float = 5.0, height: float = 3.8):
    import matplotlib  # deferred: heavy import, loaded only when a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when a figure is drawn

    return plt.subplots(1, n, figsize=(width * n, height), squeeze=False)


def fig2(df: pd.DataFrame):
    """Paired differences with 95% CIs (in Dice points x 100), one panel per model and encoder setting."""
    groups = list(df.groupby(["model", "frozen"], sort=False))
    fig, axes = _panels(len(groups))
    for ax, ((model, frozen), g) in zip(axes[0], groups, strict=True):
        prompts = sorted(g["prompt"].unique(), key=_prompt_key)
        comparisons = list(dict.fromkeys(g["comparison"]))
        step = 0.4 / max(1, len(comparisons))
        for i, comp in enumerate(comparisons):
            c = g[g["comparison"] == comp]
            y = np.array([prompts.index(p) for p in c["prompt"]]) + (i - (len(comparisons) - 1) / 2) * step
            d = 100 * c["mean_diff"].astype(float).to_numpy()
            lo = d - 100 * c["ci_low"].astype(float).to_numpy()
            hi = 100 * c["ci_high"].astype(float).to_numpy() - d
            ax.errorbar(d, y, xerr=[np.nan_to_num(lo), np.nan_to_num(hi)], fmt="o", capsize=3, label=comp)
        ax.axvline(0, color="k", lw=0.8)
        for y in np.arange(len(prompts) - 1) + 0.5:  # a rule between prompts
            ax.axhline(y, color="0.85", lw=0.6)
        ax.set_yticks(range(len(prompts)), [p.upper() for p in prompts])
        ax.invert_yaxis()
        ax.set_xlabel("mean Dice difference B - A (x100, 95% CI)")
        ax.set_title(f"{model}, encoders {'frozen' if frozen else 'unfrozen'}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def fig3(df: pd.DataFrame):
    """Mean Dice frozen minus unfrozen (x100) per prompt, one bar per strategy, one panel per model."""
    groups = list(df.groupby("model", sort=False))
    fig, axes = _panels(len(groups))
    for ax, (model, g) in zip(axes[0], groups, strict=True):
        prompts = sorted(g["prompt"].unique(), key=_prompt_key)
        strategies = [s for s in STRATEGY_ORDER if s in set(g["strategy"])]
        width = 0.8 / max(1, len(strategies))
        for i, strategy in enumerate(strategies):
            s = g[g["strategy"] == strategy]
            x = np.array([prompts.index(p) for p in s["prompt"]]) + (i - (len(strategies) - 1) / 2) * width
            ax.bar(x, 100 * s["dice_diff"].astype(float), width, label=strategy)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(prompts)), [p.upper() for p in prompts])
        ax.set_ylabel("mean Dice frozen - unfrozen (x100)")
        ax.set_title(str(model))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figures(tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """File name -> figure for Figs. 2 and 3, where the tables hold them."""
    out = {}
    if "sb_fig2" in tables and not tables["sb_fig2"].empty:
        out[FIGURE_FILES["sb_fig2"]] = fig2(tables["sb_fig2"])
    if "sb_fig3" in tables and not tables["sb_fig3"].empty:
        out[FIGURE_FILES["sb_fig3"]] = fig3(tables["sb_fig3"])
    return out
