"""Signed-rank test, rank-biserial, bootstrap and p-value adjustment against hand-computed values and libraries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from echoseg.core.errors import UserError
from echoseg.core.stats.wilcoxon import (
    adjust_pvalues,
    bootstrap_mean_ci,
    bootstrap_means,
    choose_method,
    compare_arrays,
    rank_biserial,
    signed_rank_sums,
    signed_rank_test,
)

# The classic example (Wikipedia, "Wilcoxon signed-rank test"): differences x2 - x1 of 10 pairs.
X1 = np.array([110, 122, 125, 120, 140, 124, 123, 137, 135, 145], float)
X2 = np.array([125, 115, 130, 140, 140, 115, 140, 125, 140, 135], float)


def test_rank_biserial_worked_example():
    d = X2 - X1
    assert d.tolist() == [15, -7, 5, 20, 0, -9, 17, -12, 5, -10]
    # Zero dropped; |d| 5,5,7,9,10,12,15,17,20 -> ranks 1.5,1.5,3,4,5,6,7,8,9.
    w_plus, w_minus, ties = signed_rank_sums(d)
    assert (w_plus, w_minus, ties) == (27.0, 18.0, True)
    assert rank_biserial(d) == pytest.approx(9 / 45)  # = 0.2
    assert rank_biserial(-d) == pytest.approx(-0.2)


def test_small_exact_by_hand():
    d = np.array([1.0, -2.0, 3.0, 4.0, 5.0])
    res = signed_rank_test(d)
    # R+ = 1+3+4+5 = 13, R- = 2; P(R+ >= 13) = P(R- <= 2) = #{{}, {1}, {2}} / 2^5 = 3/32.
    assert (res.w_plus, res.w_minus, res.statistic) == (13.0, 2.0, 2.0)
    assert res.method == "exact"
    assert res.p_value == pytest.approx(2 * 3 / 32)
    assert signed_rank_test(d, "greater").p_value == pytest.approx(3 / 32)
    assert signed_rank_test(d, "less").p_value == pytest.approx(1 - 2 / 32)  # P(R+ <= 13) = 1 - P(R+ >= 14)
    assert res.rank_biserial == pytest.approx(11 / 15)
    assert "low power" in res.notes[0]


def test_large_normal_approximation_by_hand():
    rng = np.random.default_rng(3)
    d = np.round(rng.normal(0.2, 1.0, 400), 1)  # rounding makes ties and some zeros
    res = signed_rank_test(d)
    assert res.method == "asymptotic"
    nz = d[d != 0]
    n = nz.size
    ranks = stats.rankdata(np.abs(nz))
    w_plus = ranks[nz > 0].sum()
    _, counts = np.unique(np.abs(nz), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - (counts**3 - counts).sum() / 48
    z = (w_plus - n * (n + 1) / 4) / math.sqrt(var)
    assert res.w_plus == pytest.approx(w_plus)
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-10)
    assert abs(res.z) == pytest.approx(abs(z))


@pytest.mark.parametrize("n", [6, 9, 30, 49, 51, 300])
@pytest.mark.parametrize("kind", ["distinct", "ties", "zeros"])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("zero_method", ["wilcox", "pratt", "zsplit"])
def test_matches_scipy_auto(n, kind, alternative, zero_method):
    rng = np.random.default_rng(n)
    d = rng.normal(0.3, 1.0, n)
    if kind == "ties":
        d = np.round(d, 1) + 0.05  # ties, no zeros
    elif kind == "zeros":
        d[: max(1, n // 5)] = 0.0
    res = signed_rank_test(d, alternative, zero_method)
    ref = stats.wilcoxon(d, zero_method=zero_method, alternative=alternative, method="auto")
    assert res.p_value == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-12)
    assert res.statistic == pytest.approx(float(ref.statistic))
    nonzero = np.abs(d[d != 0])
    expected = choose_method(n, has_ties=np.unique(nonzero).size < nonzero.size, has_zeros=kind == "zeros")
    assert res.method == expected


def test_direction_is_b_minus_a():
    a = np.linspace(0.5, 0.7, 40)
    b = a + np.linspace(0.01, 0.05, 40)
    row = compare_arrays(a, b, alternative="greater", n_boot=200, seed=1)
    assert row["mean_diff"] > 0 and row["rank_biserial"] == pytest.approx(1.0)
    assert row["p_value"] < 1e-6
    ref = stats.wilcoxon(b, a, alternative="greater")
    assert row["p_value"] == pytest.approx(ref.pvalue)
    assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]


def test_all_differences_zero_is_p_one_with_note():
    res = signed_rank_test(np.zeros(20))
    assert res.p_value == 1.0 and res.method == "none" and "all differences are zero" in res.notes[0]
    row = compare_arrays(np.full(20, 0.8), np.full(20, 0.8), n_boot=50)
    assert row["p_value"] == 1.0 and "A is constant" in row["note"] and "B is constant" in row["note"]
    assert row["ci_low"] == row["ci_high"] == 0.0


def test_no_pairs():
    res = signed_rank_test(np.array([]))
    assert math.isnan(res.p_value) and res.n == 0 and res.notes


def test_bad_choices_are_user_errors():
    with pytest.raises(UserError, match="--alternative"):
        signed_rank_test(np.ones(3), alternative="bigger")
    with pytest.raises(UserError, match="--correction"):
        adjust_pvalues([0.1], "sidak-ish")


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_adjustment_matches_statsmodels(method):
    p = np.array([0.001, 0.01, 0.02, 0.04, 0.2, 0.5, 0.03])
    assert np.allclose(adjust_pvalues(p, method), multipletests(p, method=method)[1])


def test_adjustment_by_hand_and_nan():
    # Holm: sorted 0.01, 0.02, 0.04 -> 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04) = 0.03, 0.04, 0.04
    assert np.allclose(adjust_pvalues([0.04, 0.01, 0.02], "holm"), [0.04, 0.03, 0.04])
    out = adjust_pvalues([0.01, float("nan"), 0.02], "bonferroni")
    assert np.allclose(out[[0, 2]], [0.02, 0.04]) and math.isnan(out[1])
    assert np.array_equal(adjust_pvalues([0.3, 0.01], "none"), [0.3, 0.01])


def test_bootstrap_is_seeded_and_worker_independent():
    d = np.random.default_rng(0).normal(1.0, 2.0, 5000)
    one = bootstrap_means(d, 300, seed=7, chunk_elements=20_000, workers=1)
    two = bootstrap_means(d, 300, seed=7, chunk_elements=20_000, workers=2)
    assert np.array_equal(one, two)
    assert not np.array_equal(one, bootstrap_means(d, 300, seed=8, chunk_elements=20_000, workers=1))
    # the spread of bootstrap means estimates the standard error of the mean
    assert one.std() == pytest.approx(d.std() / math.sqrt(d.size), rel=0.15)
    lo, hi = bootstrap_mean_ci(d, 1000, seed=1)
    assert lo < d.mean() < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * d.std() / math.sqrt(d.size), rel=0.15)
    assert all(math.isnan(v) for v in bootstrap_mean_ci(d, 0))


def test_bootstrap_counts_path_matches_index_path(monkeypatch):
    import echoseg.core.stats.wilcoxon as w

    d = np.random.default_rng(2).integers(-3, 5, 4000).astype(float)  # 8 distinct values: multinomial counts
    by_counts = bootstrap_means(d, 2000, seed=0)
    monkeypatch.setattr(w, "COUNTS_FACTOR", 10**9)  # force index resampling
    by_index = bootstrap_means(d, 2000, seed=0)
    assert not np.array_equal(by_counts, by_index)
    se = d.std() / math.sqrt(d.size)
    for means in (by_counts, by_index):
        assert means.mean() == pytest.approx(d.mean(), abs=0.2 * se)
        assert means.std() == pytest.approx(se, rel=0.1)
    assert np.quantile(by_counts, [0.025, 0.975]) == pytest.approx(np.quantile(by_index, [0.025, 0.975]), abs=0.3 * se)
