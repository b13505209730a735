"""Attribute-balanced sampling with a frequency cap (SynCXR)."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from echoseg.core.errors import UserError
from echoseg.core.synth.balance import age_bin, attribute_values, balanced_indices, distribution


def _pool() -> pd.DataFrame:
    rows = [{"view": v, "phase": p, "sex": s, "age": a, "quality": q}
            for v, p, s, a, q in itertools.product(["2CH", "4CH"], ["ED", "ES"], ["M", "F"], [35, 52, 71, 85],
                                                  ["Good", "Medium", "Poor"])]
    # Skew the pool: many extra old, good-quality 2CH rows.
    rows += [{"view": "2CH", "phase": "ED", "sex": "M", "age": 85, "quality": "Good"}] * 40
    return pd.DataFrame(rows)


def test_age_bins():
    assert [age_bin(a) for a in (20, 39.9, 40, 59, 60, 79, 80, 99)] == \
        ["<40", "<40", "40-59", "40-59", "60-79", "60-79", "80+", "80+"]
    assert age_bin(None) == "unknown" and age_bin(float("nan")) == "unknown" and age_bin("x") == "unknown"


def test_balanced_counts_differ_by_at_most_one_and_respect_the_cap():
    pool = _pool()
    attrs = ["view", "phase", "sex", "age", "quality"]
    count, tau = 40, 20  # binary attributes hit the cap exactly
    picks = balanced_indices(pool, count, attrs, tau_max=tau, seed=0)
    assert len(picks) == count
    dist = distribution(pool.iloc[picks], attrs)
    for attr, counts in dist.items():
        values = list(counts.values())
        assert max(values) <= tau, attr
        assert max(values) - min(values) <= 1, (attr, counts)
    # The skewed pool alone is far from balanced.
    before = distribution(pool, attrs)
    assert before["view"]["2CH"] - before["view"]["4CH"] == 40


def test_cap_forces_resampling_of_other_values():
    pool = pd.DataFrame({"view": ["2CH"] * 50 + ["4CH"] * 2})
    picks = balanced_indices(pool, 6, ["view"], tau_max=4, seed=1, replace=False)
    got = pool.iloc[picks]["view"].value_counts().to_dict()
    assert got == {"2CH": 4, "4CH": 2}
    with pytest.raises(UserError, match="tau-max"):
        balanced_indices(pool, 7, ["view"], tau_max=3, seed=1, replace=False)


def test_without_replacement_each_row_once_and_deterministic():
    pool = _pool()
    a = balanced_indices(pool, 50, ["view", "sex"], seed=3, replace=False)
    b = balanced_indices(pool, 50, ["view", "sex"], seed=3, replace=False)
    assert a == b and len(set(a)) == 50
    with pytest.raises(UserError, match="exhausted"):
        balanced_indices(pool.head(3), 4, ["view"], replace=False)


def test_unknown_attribute_and_missing_values():
    pool = pd.DataFrame({"sex": ["M", None, "F"], "age": [30, None, 70]})
    vals = attribute_values(pool, ["sex", "age"])
    assert vals["sex"].tolist() == ["M", "unknown", "F"] and vals["age"].tolist() == ["<40", "unknown", "60-79"]
    with pytest.raises(UserError, match="quality"):
        balanced_indices(pool, 2, ["quality"])
