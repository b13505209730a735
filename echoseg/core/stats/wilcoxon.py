"""Paired comparisons: Wilcoxon signed-rank test, rank-biserial effect size, bootstrap CI, p-value adjustment.

Differences are always ``d = B - A`` (B minus the reference A), so ``alternative="greater"`` asks whether B tends
to be larger than A, and a positive rank-biserial correlation or mean difference favours B.

The p-value comes from :func:`scipy.stats.wilcoxon` with the method chosen here explicitly and reported:
``exact`` (the exact null distribution; n <= 50 with no ties and no zero differences), ``exact-permutation``
(all 2^n sign flips; n <= 13 with ties or zeros, where the exact table does not apply), else ``asymptotic`` (normal
approximation whose variance is corrected for ties and, with ``zero_method="pratt"``, for zeros - Cureton 1967).
This is the rule scipy's ``method="auto"`` applies; naming it makes the results table say what was done.

The matched-pairs rank-biserial correlation (Kerby 2014, "simple difference formula") is
``r = (R+ - R-) / (R+ + R-)``, with R+ and R- the sums of the ranks of |d| over positive and negative
differences (average ranks for ties, zeros handled as the test handles them). Worked example - the classic
Wilcoxon signed-rank example (Wikipedia, "Wilcoxon signed-rank test"), differences
``d = [15, -7, 5, 20, 0, -9, 17, -12, 5, -10]``: drop the zero; |d| sorted 5, 5, 7, 9, 10, 12, 15, 17, 20 get
ranks 1.5, 1.5, 3, 4, 5, 6, 7, 8, 9; R+ = 7 + 1.5 + 9 + 8 + 1.5 = 27 and R- = 3 + 4 + 6 + 5 = 18, so
r = (27 - 18) / 45 = 0.2 (tests/core/stats/test_wilcoxon.py checks these numbers).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from echoseg.core.console import track
from echoseg.core.errors import UserError
from echoseg.core.stats.pairing import Pairing

ALTERNATIVES = ("two-sided", "greater", "less")
ZERO_METHODS = ("wilcox", "pratt", "zsplit")
CORRECTIONS = ("holm", "bonferroni", "fdr_bh", "none")
EXACT_MAX_N = 50  # scipy's limit for the exact null distribution under method="auto"
PERMUTATION_MAX_N = 13  # 2**13 sign flips < scipy's 9999 resamples, so the permutation test is exhaustive
LOW_POWER_N = 10
CI_LEVEL = 0.95
BOOT_CHUNK_ELEMENTS = 1 << 22  # resampled indices (or counts) held per worker at a time
COUNTS_FACTOR = 16  # a multinomial draw per distinct value costs about 16 index draws


@dataclass
class SignedRankResult:
    """One Wilcoxon signed-rank test on differences ``d = B - A``."""

    n: int
    n_zero: int
    w_plus: float
    w_minus: float
    statistic: float  # scipy's: min(R+, R-) two-sided, R+ one-sided
    z: float  # the normal deviate (asymptotic method only)
    p_value: float
    method: str
    rank_biserial: float
    notes: list[str] = field(default_factory=list)


def check_choice(value: str, choices: Sequence[str], option: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a one-line UserError naming ``option``."""
    if value not in choices:
        raise UserError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return value


def signed_rank_sums(d: np.ndarray, zero_method: str = "wilcox") -> tuple[float, float, bool]:
    """R+, R- and whether |d| has ties, ranking zeros as the test does (see ``zero_method`` in scipy)."""
    d = np.asarray(d, dtype=float)
    zeros = d == 0
    if zero_method == "wilcox":
        d = d[~zeros]
        zeros = np.zeros(d.size, bool)
    if d.size == 0:
        return 0.0, 0.0, False
    ranks = stats.rankdata(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    w_minus = float(ranks[d < 0].sum())
    if zero_method == "zsplit":
        half = float(ranks[zeros].sum()) / 2
        w_plus, w_minus = w_plus + half, w_minus + half
    has_ties = bool(np.unique(np.abs(d[~zeros])).size < int((~zeros).sum()))
    return w_plus, w_minus, has_ties


def rank_biserial(d: np.ndarray, zero_method: str = "wilcox") -> float:
    """Matched-pairs rank-biserial correlation ``(R+ - R-) / (R+ + R-)`` of differences ``d`` (NaN if all zero)."""
    w_plus, w_minus, _ = signed_rank_sums(d, zero_method)
    total = w_plus + w_minus
    return (w_plus - w_minus) / total if total > 0 else float("nan")


def choose_method(n: int, has_ties: bool, has_zeros: bool) -> str:
    """The p-value method for ``n`` differences (scipy's ``auto`` rule, made explicit)."""
    if n > EXACT_MAX_N:
        return "asymptotic"
    if not (has_ties or has_zeros):
        return "exact"
    return "exact-permutation" if n <= PERMUTATION_MAX_N else "asymptotic"


def signed_rank_test(
    d: np.ndarray, alternative: str = "two-sided", zero_method: str = "wilcox", correction: bool = False
) -> SignedRankResult:
    """Wilcoxon signed-rank test of differences ``d`` (finite values) against a zero median.

    Args:
        d: paired differences ``B - A``.
        alternative: ``two-sided``, ``greater`` (B > A) or ``less`` (B < A).
        zero_method: how zero differences count (``wilcox`` drops them, as the original test and R do).
        correction: continuity correction of the normal approximation (scipy's default: off).
    Returns:
        A :class:`SignedRankResult`; all-zero differences give p = 1 with a note instead of an error.
    """
    check_choice(alternative, ALTERNATIVES, "--alternative")
    check_choice(zero_method, ZERO_METHODS, "--zero-method")
    d = np.asarray(d, dtype=float)
    n, n_zero = int(d.size), int(np.count_nonzero(d == 0))
    nan = float("nan")
    if n == 0:
        return SignedRankResult(0, 0, 0.0, 0.0, nan, nan, nan, "none", nan, ["no pairs: nothing to test"])
    if n_zero == n:
        return SignedRankResult(n, n_zero, 0.0, 0.0, 0.0, nan, 1.0, "none", 0.0,
                                ["all differences are zero: p = 1 (no evidence of a difference)"])
    w_plus, w_minus, has_ties = signed_rank_sums(d, zero_method)
    method = choose_method(n, has_ties, n_zero > 0)
    scipy_method: Any = stats.PermutationMethod() if method == "exact-permutation" else method
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's small-sample warnings are replaced by our notes
        res = stats.wilcoxon(d, zero_method=zero_method, correction=correction, alternative=alternative,
                             method=scipy_method)
    notes = []
    if n < LOW_POWER_N:
        notes.append(f"n = {n} < {LOW_POWER_N}: {method} test, low power")
    total = w_plus + w_minus
    return SignedRankResult(
        n=n, n_zero=n_zero, w_plus=w_plus, w_minus=w_minus, statistic=float(res.statistic),
        z=float(getattr(res, "zstatistic", nan)), p_value=float(res.pvalue), method=method,
        rank_biserial=(w_plus - w_minus) / total if total > 0 else nan, notes=notes,
    )


def _worker_count() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def bootstrap_means(
    d: np.ndarray, n_boot: int, seed: int | Sequence[int] = 0, *, chunk_elements: int = BOOT_CHUNK_ELEMENTS,
    workers: int | None = None,
) -> np.ndarray:
    """Means of ``n_boot`` bootstrap resamples of ``d`` (each resample: n values drawn with replacement).

    Two exact ways, chosen by cost. When ``d`` has few distinct values (m, e.g. metrics rounded to 4 decimals,
    m * COUNTS_FACTOR <= n), a resample is summarised by how often it draws each distinct value, which is
    Multinomial(n, frequencies / n); its mean is ``counts @ values / n`` - O(m) work per resample instead of O(n).
    Otherwise resamples are index matrices. Either way work goes in chunks of about ``chunk_elements`` numbers
    (memory stays bounded), each chunk from its own child of ``SeedSequence(seed)``, on a thread pool (numpy
    releases the GIL while drawing and gathering). The result depends on ``seed``, ``d`` and ``n_boot`` only,
    not on the number of workers.
    """
    d = np.ascontiguousarray(d, dtype=float)
    n = d.size
    if n == 0 or n_boot <= 0:
        return np.full(max(n_boot, 0), np.nan)
    values, freq = np.unique(d, return_counts=True)
    by_counts = values.size * COUNTS_FACTOR <= n
    width = values.size if by_counts else n
    per_chunk = max(1, chunk_elements // width)
    sizes = [min(per_chunk, n_boot - s) for s in range(0, n_boot, per_chunk)]
    children = np.random.SeedSequence(seed).spawn(len(sizes))
    index_type = np.int32 if n < 2**31 else np.int64
    pvals = freq / n

    def one(job: tuple[np.random.SeedSequence, int]) -> np.ndarray:
        child, k = job
        rng = np.random.default_rng(child)
        if by_counts:
            return rng.multinomial(n, pvals, size=k) @ values / n
        idx = rng.integers(0, n, size=(k, n), dtype=index_type)
        return np.take(d, idx).mean(axis=1)

    jobs = list(zip(children, sizes, strict=True))
    workers = workers or _worker_count()
    if workers == 1 or len(jobs) == 1:
        return np.concatenate([one(j) for j in jobs])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.concatenate(list(pool.map(one, jobs)))


def bootstrap_mean_ci(
    d: np.ndarray, n_boot: int = 1000, seed: int | Sequence[int] = 0, level: float = CI_LEVEL, **kwargs: Any
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``d`` (NaNs when ``n_boot`` is 0 or d is empty)."""
    if n_boot <= 0 or np.asarray(d).size == 0:
        return float("nan"), float("nan")
    means = bootstrap_means(d, n_boot, seed, **kwargs)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def adjust_pvalues(p: Sequence[float], method: str = "holm") -> np.ndarray:
    """p-values adjusted with statsmodels ``multipletests`` (``none`` returns them unchanged; NaNs stay NaN)."""
    from statsmodels.stats.multitest import multipletests  # deferred: heavy import, loaded only when this path runs

    check_choice(method, CORRECTIONS, "--correction")
    p = np.asarray(p, dtype=float)
    out = p.copy()
    finite = np.isfinite(p)
    if method != "none" and finite.any():
        out[finite] = multipletests(p[finite], method=method)[1]
    return out


RESULT_COLUMNS = [
    "comparison", "a", "b", "group", "metric", "n", "n_zero", "mean_a", "mean_b", "median_a", "median_b",
    "mean_diff", "median_diff", "ci_low", "ci_high", "w_plus", "w_minus", "statistic", "z", "p_value",
    "method", "alternative", "zero_method", "rank_biserial", "p_adjusted", "correction", "significant", "note",
]


def compare_arrays(
    a: np.ndarray, b: np.ndarray, *, alternative: str = "two-sided", zero_method: str = "wilcox",
    correction: bool = False, n_boot: int = 1000, seed: int | Sequence[int] = 0,
) -> dict[str, Any]:
    """All statistics of one paired comparison of ``b`` against ``a`` (one row of the results table)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = b - a
    test = signed_rank_test(d, alternative, zero_method, correction)
    lo, hi = bootstrap_mean_ci(d, n_boot, seed)
    notes = list(test.notes)
    for name, v in (("A", a), ("B", b)):
        if v.size > 1 and np.ptp(v) == 0:
            notes.append(f"{name} is constant ({v[0]:g})")
    nan = float("nan")

    def stat(fn, v):
        return float(fn(v)) if v.size else nan

    return {
        "n": test.n, "n_zero": test.n_zero, "mean_a": stat(np.mean, a), "mean_b": stat(np.mean, b),
        "median_a": stat(np.median, a), "median_b": stat(np.median, b), "mean_diff": stat(np.mean, d),
        "median_diff": stat(np.median, d), "ci_low": lo, "ci_high": hi, "w_plus": test.w_plus,
        "w_minus": test.w_minus, "statistic": test.statistic, "z": test.z, "p_value": test.p_value,
        "method": test.method, "alternative": alternative, "zero_method": zero_method,
        "rank_biserial": test.rank_biserial, "note": "; ".join(notes),
    }


def compare_pairings(
    pairings: list[Pairing],
    *,
    group_by: tuple[str, ...] = (),
    alternative: str = "two-sided",
    zero_method: str = "wilcox",
    continuity: bool = False,
    correction: str = "holm",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Test every pairing (and every group of it), then adjust all p-values of the call together.

    Returns a table with :data:`RESULT_COLUMNS` (plus one column per ``group_by`` column), one row per
    (comparison, group); row ``k``'s bootstrap uses the seed ``[seed, k]``.
    """
    check_choice(alternative, ALTERNATIVES, "--alternative")
    check_choice(zero_method, ZERO_METHODS, "--zero-method")
    check_choice(correction, CORRECTIONS, "--correction")
    clash = [c for c in group_by if c in RESULT_COLUMNS]
    if clash:
        raise UserError(f"--group-by {clash[0]!r}: that name is taken by a results column; rename the column")
    tasks: list[tuple[int, Pairing, dict[str, str], pd.DataFrame]] = []
    for i, pairing in enumerate(pairings):
        if group_by:
            for values, sub in pairing.data.groupby(list(group_by), sort=True, dropna=False):
                values = values if isinstance(values, tuple) else (values,)
                tasks.append((i, pairing, dict(zip(group_by, map(str, values), strict=True)), sub))
        else:
            tasks.append((i, pairing, {}, pairing.data))
    rows = []
    for k, (i, pairing, groups, sub) in enumerate(track(tasks, "wilcoxon")):
        row = {"comparison": i, "a": pairing.label_a, "b": pairing.label_b,
               "group": ", ".join(f"{c}={v}" for c, v in groups.items()) or "all", **groups,
               "metric": pairing.metric}
        row.update(compare_arrays(sub["a"].to_numpy(), sub["b"].to_numpy(), alternative=alternative,
                                  zero_method=zero_method, correction=continuity, n_boot=n_boot, seed=[seed, k]))
        rows.append(row)
    table = pd.DataFrame(rows)
    table["p_adjusted"] = adjust_pvalues(table["p_value"].to_numpy(), correction)
    table["correction"] = correction
    table["significant"] = table["p_adjusted"] < alpha
    columns = RESULT_COLUMNS[:4] + list(group_by) + RESULT_COLUMNS[4:]
    return table[columns]
