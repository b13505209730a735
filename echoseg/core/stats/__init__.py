"""Paired significance tests between runs: pairing per-sample metrics, Wilcoxon signed-rank, reports."""

from echoseg.core.stats.pairing import KeySpec, MetricsTable, Pairing, pair_runs, pair_tables, read_table
from echoseg.core.stats.report import write_report
from echoseg.core.stats.wilcoxon import (
    ALTERNATIVES,
    CORRECTIONS,
    ZERO_METHODS,
    adjust_pvalues,
    bootstrap_mean_ci,
    compare_pairings,
    rank_biserial,
    signed_rank_test,
)

__all__ = [
    "ALTERNATIVES", "CORRECTIONS", "ZERO_METHODS", "KeySpec", "MetricsTable", "Pairing", "adjust_pvalues",
    "bootstrap_mean_ci", "compare_pairings", "pair_runs", "pair_tables", "rank_biserial", "read_table",
    "signed_rank_test", "write_report",
]
