"""Attribute-balanced sampling with a per-value frequency cap (SynCXR).

Generation draws source label maps so that every value of every balanced attribute (view, phase, sex, age bin,
quality) appears about equally often. Each draw takes, among the pool rows none of whose values has reached its
cap ``tau_max``, one whose values have been used least so far (sum of the current counts of its values; ties broken
at random). A value that hits its cap is excluded from then on, so later draws resample among the other values.
When the pool holds every combination of values, each attribute's counts then differ by at most one.

Whether the draws met the balance is reported, not assumed (:func:`balance_report`): each value of each balanced
attribute may be drawn at most its cap, ``tau_max`` when given, else an equal share (``ceil(draws / values)``). A
pool that cannot give the under-represented values often enough (e.g. every source map drawn, so the counts are the
pool's own) is reported ``balanced: false`` with the reason.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd

from echoseg.core.errors import UserError

BALANCE_ATTRIBUTES = ("view", "phase", "sex", "age", "quality")
AGE_BINS = (0, 40, 60, 80)  # lower edges: <40, 40-59, 60-79, 80+
UNKNOWN = "unknown"


def age_bin(age) -> str:
    """Age in years -> bin label ('<40', '40-59', '60-79', '80+'; 'unknown' when missing)."""
    try:
        a = float(age)
    except (TypeError, ValueError):
        return UNKNOWN
    if not np.isfinite(a):
        return UNKNOWN
    if a < AGE_BINS[1]:
        return f"<{AGE_BINS[1]}"
    for lo, hi in zip(AGE_BINS[1:], AGE_BINS[2:], strict=False):
        if a < hi:
            return f"{lo}-{hi - 1}"
    return f"{AGE_BINS[-1]}+"


def attribute_values(df: pd.DataFrame, attributes: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """The balancing values of each row as strings (age binned, missing values 'unknown')."""
    out = {}
    for attr in attributes:
        if attr not in df.columns:
            raise UserError(f"--balance: attribute {attr!r} is not a manifest column (have: {', '.join(df.columns)})")
        col = df[attr]
        if attr == "age":
            out[attr] = [age_bin(v) for v in col]
        else:
            out[attr] = [UNKNOWN if pd.isna(v) or str(v).strip() == "" else str(v) for v in col]
    return pd.DataFrame(out, index=df.index)


def distribution(df: pd.DataFrame, attributes: list[str] | tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Counts of every attribute value (age in bins), e.g. ``{"view": {"2CH": 10, "4CH": 10}}``."""
    values = attribute_values(df, attributes)
    return {a: {k: int(v) for k, v in sorted(Counter(values[a]).items())} for a in attributes}


def balanced_indices(
    pool: pd.DataFrame,
    count: int,
    attributes: list[str] | tuple[str, ...],
    tau_max: int | None = None,
    seed: int = 0,
    replace: bool = True,
) -> list[int]:
    """Positions (0-based, into ``pool``) of ``count`` draws, balanced over ``attributes``.

    Args:
        pool: candidate rows (one per source label map) holding the attribute columns.
        count: number of draws.
        attributes: columns to balance.
        tau_max: cap on how often any one value of any attribute may be drawn (None: no cap).
        seed: random seed for tie breaking.
        replace: draw with replacement (a pool row may be drawn again); without it each row is drawn once.

    Raises:
        UserError: the caps make ``count`` draws impossible.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if tau_max is not None and tau_max < 1:
        raise UserError(f"--tau-max must be >= 1, got {tau_max}")
    if len(pool) == 0:
        raise UserError("no source label maps to draw from")
    rng = np.random.default_rng(seed)
    values = attribute_values(pool.reset_index(drop=True), attributes)
    # Integer code of each row's value per attribute, and running counts per (attribute, code).
    codes, counts = [], []
    for attr in attributes:
        cats = pd.Categorical(values[attr])
        codes.append(np.asarray(cats.codes, np.int64))
        counts.append(np.zeros(len(cats.categories), np.int64))
    code_mat = np.stack(codes, 1) if codes else np.zeros((len(pool), 0), np.int64)
    picks: list[int] = []
    available = np.ones(len(pool), bool)
    for n in range(count):
        per_attr = [counts[j][code_mat[:, j]] for j in range(len(attributes))]
        usage = np.stack(per_attr, 1) if per_attr else np.zeros((len(pool), 0), np.int64)
        ok = available.copy() if tau_max is None else available & (usage < tau_max).all(1)
        if not ok.any():
            why = f"--tau-max {tau_max}: every value still in the pool hit its cap" if available.any() \
                else "the pool is exhausted"
            raise UserError(f"{why} after {n} of {count} draws; raise --tau-max or --copies-per-mask, "
                            "or lower --count")
        score = usage.sum(1).astype(np.float64)
        score[~ok] = np.inf
        best = np.flatnonzero(score == score.min())
        pick = int(rng.choice(best))
        picks.append(pick)
        if not replace:
            available[pick] = False
        for j in range(len(attributes)):
            counts[j][code_mat[pick, j]] += 1
    return picks


def balance_report(pool: pd.DataFrame, drawn: pd.DataFrame, attributes: list[str] | tuple[str, ...],
                   tau_max: int | None = None, copies: int = 1) -> dict:
    """Whether ``drawn`` (rows taken from ``pool``, each pool row at most ``copies`` times) is balanced.

    An attribute is balanced when none of the pool's values of it was drawn more often than its cap: ``tau_max``
    when given, else an equal share of the draws, ``ceil(len(drawn) / values)``.

    Returns:
        ``{"balanced": bool, "caps": {attribute: cap}, "reason": str | None}``; the reason names each attribute
        over its cap, its counts, and how many draws the pool could give each value.
    """
    values_pool = attribute_values(pool.reset_index(drop=True), attributes)
    values_drawn = attribute_values(drawn.reset_index(drop=True), attributes)
    caps: dict[str, int] = {}
    reasons: list[str] = []
    for attr in attributes:
        have = Counter(values_pool[attr])
        got = Counter(values_drawn[attr])
        keys = sorted(set(have) | set(got))
        cap = int(tau_max) if tau_max is not None else max(1, math.ceil(len(drawn) / max(1, len(keys))))
        caps[attr] = cap
        over = [k for k in keys if got.get(k, 0) > cap]
        if not over:
            continue
        short = [k for k in keys if have.get(k, 0) * copies < cap]
        counts = ", ".join(f"{k} {got.get(k, 0)}" for k in keys)
        gives = ", ".join(f"{k} {have.get(k, 0) * copies} ({have.get(k, 0)} label map(s) x {copies})" for k in short)
        why = (f"the pool (x --copies-per-mask) gives at most {gives}" if short
               else "the other attributes' balance took precedence")
        cap_of = f"--tau-max {cap}" if tau_max is not None else f"an equal share of {len(drawn)} draws"
        reasons.append(f"{attr}: {counts}; {', '.join(over)} over the cap of {cap} ({cap_of}): {why}")
    reason = None
    if reasons:
        reason = "; ".join(reasons) + " (lower --count, raise --copies-per-mask, or balance fewer attributes)"
    return {"balanced": not reasons, "caps": caps, "reason": reason}
