"""EchoDFKD's experiments across runs: student-size scaling (its Fig. 6) and aFD versus sampling rate (its Fig. 4).

- **Scaling** (``scaling``, ``scaling_fit``): one row per distillation run whose student was evaluated on videos
  with tracings (``distill --eval-data``): its size (B blocks x L layers, parameters), aFD ED/ES in frames and mIoU
  against the human tracings (the IoU of the binarised student mask and the rasterised tracing, averaged over the
  traced frames, as the authors' ``evaluate_DICE.py`` ``mean_iou``). The figure plots
  ``-log(aFD_ED + aFD_ES)`` and ``log(1 - mIoU)`` against ``log(parameters)`` (natural logs), each with its least
  squares line (``numpy.polyfit``); ``scaling_fit`` holds each line's slope, intercept and R^2, per group of runs
  that share a teacher and evaluation data, for groups with at least 2 student sizes. A point whose value is not
  finite (aFD_ED + aFD_ES = 0, mIoU = 1) cannot sit on a log axis: it stays in the table and is left out of the
  fit and the plot, counted in ``points_left_out``.
- **Sampling** (``sampling``): one row per ``eval afd`` run of a segmenter evaluated at two or more ``--subsample``
  K (every K-th frame; runs before the option count as K = 1): aFD ED/ES in original frames and ms. The figure
  plots aFD against K per segmenter.

Figures are drawn only when the runs support them: at least 2 student sizes in a group, at least 2 K values for a
segmenter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TITLES = {
    "scaling": "Student size scaling: aFD and mIoU against parameters per distilled student (EchoDFKD Fig. 6)",
    "scaling_fit": "Student size scaling: least-squares lines against log(parameters) (EchoDFKD Fig. 6)",
    "sampling": "ED/ES detection against sampling rate: aFD keeping every K-th frame (EchoDFKD Fig. 4)",
}
SHOWN = {
    "scaling": ("student", "params", "aFD_ED_frames", "aFD_ES_frames", "miou", "neg_log_afd", "log_1m_miou"),
    "scaling_fit": ("group", "line", "n", "slope", "intercept", "r2", "points_left_out"),
    "sampling": ("segmenter", "subsample", "aFD_ED_frames", "aFD_ES_frames", "aFD_ED_ms", "aFD_ES_ms", "videos"),
}
LINES = {"neg_log_afd": "-log(aFD_ED + aFD_ES)", "log_1m_miou": "log(1 - mIoU)"}
FIGURES = {"scaling_fit": "fig6_scaling.png", "sampling": "fig4_sampling.png"}


def _number(value: Any) -> float:
    """``value`` as a float; NaN when it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _log(x: float) -> float:
    """Natural log, NaN for a non-positive or missing argument (never a warning or an infinity)."""
    return float(np.log(x)) if np.isfinite(x) and x > 0 else float("nan")


def scaling_row(run: Path, rec: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any] | None:
    """One row of the scaling table from a distill run; None when its student was not evaluated (no
    ``--eval-data``)."""
    student = ((summary.get("eval") or {}).get("student")) or {}
    if "aFD_ED_frames" not in student:
        return None
    cfg = rec.get("config", {})
    params = _number(((summary.get("costs") or {}).get("student") or {}).get("parameters"))
    ed, es = _number(student.get("aFD_ED_frames")), _number(student.get("aFD_ES_frames"))
    miou = _number(student.get("iou_mean_tracings"))
    teacher = (summary.get("teacher") or {}).get("name") or cfg.get("teacher") or "?"
    data = (summary.get("eval") or {}).get("data") or cfg.get("eval_data") or "?"
    return {
        "run": str(run), "group": f"{teacher} on {Path(str(data)).name}",
        "student": (summary.get("student") or {}).get("name") or f"B{cfg.get('blocks')}L{cfg.get('layers')}",
        "blocks": cfg.get("blocks"), "layers": cfg.get("layers"), "params": params,
        "aFD_ED_frames": ed, "aFD_ES_frames": es, "miou": miou,
        "dice_mean_tracings": _number(student.get("dice_mean_tracings")),
        "log_params": _log(params), "neg_log_afd": -_log(ed + es) if ed + es > 0 else float("nan"),
        "log_1m_miou": _log(1.0 - miou),
    }


def fit_line(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line ``y = slope x + intercept`` through the finite points, with R^2 (1 - SS_res / SS_tot;
    NaN when y is constant). Needs two distinct x values."""
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual ** 2).sum()) / total if total > 0 else float("nan")
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def scaling_fits(scaling: pd.DataFrame) -> pd.DataFrame:
    """The fitted lines of each group of ``scaling`` with at least 2 student sizes (distinct parameter counts)."""
    rows = []
    if scaling.empty:
        return pd.DataFrame()
    for group, df in scaling.groupby("group", sort=False):
        if df["params"].dropna().nunique() < 2:
            continue
        for line, label in LINES.items():
            ok = np.isfinite(df["log_params"].to_numpy(float)) & np.isfinite(df[line].to_numpy(float))
            x, y = df.loc[ok, "log_params"].to_numpy(float), df.loc[ok, line].to_numpy(float)
            fit = fit_line(x, y) if np.unique(x).size >= 2 else {"slope": np.nan, "intercept": np.nan, "r2": np.nan}
            rows.append({"group": group, "line": label, "column": line, "n": int(ok.sum()), **fit,
                         "points_left_out": int((~ok).sum())})
    return pd.DataFrame(rows)


def sampling_table(afd_rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of ``eval afd`` runs (their ``afd`` table rows with a ``subsample`` K) of the segmenters evaluated at
    two or more K, sorted by segmenter and K."""
    if not afd_rows:
        return pd.DataFrame()
    df = pd.DataFrame(afd_rows)
    df["subsample"] = df["subsample"].fillna(1).astype(int)
    df = df[df.groupby("segmenter")["subsample"].transform("nunique") >= 2]
    columns = ["run", "segmenter", "subsample", "aFD_ED_frames", "aFD_ES_frames", "aFD_ED_ms", "aFD_ES_ms", "videos"]
    return df.sort_values(["segmenter", "subsample"], kind="stable").reset_index(drop=True)[columns]


def echodfkd_tables(scaling_rows: list[dict[str, Any]], afd_rows: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The ``scaling``, ``scaling_fit`` and ``sampling`` tables (see the module docstring).

    Args:
        scaling_rows: :func:`scaling_row` of every evaluated distill run.
        afd_rows: rows of the report's aFD table for the ``eval afd`` runs, each with ``subsample`` (K or None).
    """
    scaling = pd.DataFrame(scaling_rows)
    fits = scaling_fits(scaling)
    if fits.empty:  # one student size (or none): a table of one point per group, no line
        scaling = pd.DataFrame()
    else:
        scaling = scaling[scaling["group"].isin(set(fits["group"]))].sort_values(
            ["group", "params"], kind="stable").reset_index(drop=True)
    return {"scaling": scaling, "scaling_fit": fits, "sampling": sampling_table(afd_rows)}


def subsample_of(rec: dict[str, Any], summary: dict[str, Any]) -> int:
    """The ``--subsample`` K of an ``eval afd`` run (1 for runs before the option)."""
    k = summary.get("subsample", (rec.get("config") or {}).get("subsample"))
    return int(k) if k is not None else 1


def _pyplot():
    import matplotlib  # deferred: heavy import, loaded only when this path runs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: heavy import, loaded only when this path runs

    return plt


def scaling_figure(scaling: pd.DataFrame, fits: pd.DataFrame):
    """EchoDFKD Fig. 6: ``-log(aFD_ED + aFD_ES)`` and ``log(1 - mIoU)`` against ``log(parameters)``, one colour
    per group, points labelled by student, with the fitted lines and their slope and R^2 in the legend."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    for ax, (line, label) in zip(axes[0], LINES.items(), strict=True):
        for i, (group, df) in enumerate(scaling.groupby("group", sort=False)):
            color = f"C{i}"
            x, y = df["log_params"].to_numpy(float), df[line].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            ax.scatter(x[ok], y[ok], color=color, zorder=3)
            for xi, yi, name in zip(x[ok], y[ok], df.loc[ok, "student"], strict=True):
                ax.annotate(str(name).replace("convlstm ", ""), (xi, yi), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            fit = fits[(fits["group"] == group) & (fits["column"] == line)]
            if len(fit) and np.isfinite(fit["slope"].iloc[0]):
                slope, intercept, r2 = (float(fit[c].iloc[0]) for c in ("slope", "intercept", "r2"))
                grid = np.linspace(x[ok].min(), x[ok].max(), 50)
                ax.plot(grid, slope * grid + intercept, color=color, lw=1.2,
                        label=f"{group}: slope {slope:.3g}, R² {r2:.2f}")
            left = int((~ok).sum())
            if left:
                ax.text(0.02, 0.02 + 0.06 * i, f"{left} point(s) not finite, left out", transform=ax.transAxes,
                        fontsize=7, color=color)
        ax.set_xlabel("log(parameters)")
        ax.set_ylabel(label)
        ax.set_title(f"{label} against student size")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def sampling_figure(sampling: pd.DataFrame):
    """EchoDFKD Fig. 4: aFD ED (solid) and ES (dashed) in original frames against the subsampling factor K."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, (segmenter, df) in enumerate(sampling.groupby("segmenter", sort=False)):
        k = df["subsample"].to_numpy(int)
        ax.plot(k, df["aFD_ED_frames"].astype(float), "o-", color=f"C{i}", label=f"{segmenter}: ED")
        ax.plot(k, df["aFD_ES_frames"].astype(float), "s--", color=f"C{i}", label=f"{segmenter}: ES")
    ks = sorted(set(sampling["subsample"].astype(int)))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K (every K-th frame kept)")
    ax.set_ylabel("aFD (original frames)")
    ax.set_title("ED/ES detection against sampling rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def echodfkd_figures(tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """``{file name: figure}`` for the figures the tables support (none, one or both of fig6_scaling.png and
    fig4_sampling.png)."""
    figures: dict[str, Any] = {}
    fits, sampling = tables.get("scaling_fit"), tables.get("sampling")
    if fits is not None and not fits.empty:
        figures[FIGURES["scaling_fit"]] = scaling_figure(tables["scaling"], fits)
    if sampling is not None and not sampling.empty:
        figures[FIGURES["sampling"]] = sampling_figure(sampling)
    return figures


def figure_links(names: list[str]) -> str:
    """Markdown that shows the figures ``names`` (written next to summary.md); empty without any."""
    return "".join(f"![{Path(n).stem}]({n})\n\n" for n in names)
