"""Benchmark: paired comparison of 1,000,000 per-sample Dice pairs with a 1,000-resample bootstrap CI.

Two data sets of 1,000,000 pairs: Dice as continuous floats (every difference distinct, so the bootstrap
resamples indices) and Dice rounded to 4 decimals as published tables are (a few thousand distinct differences,
so the bootstrap draws multinomial counts per distinct value - exact, O(distinct) per resample). On the continuous
data it measures

(a) a naive bootstrap - one ``rng.choice(d, n).mean()`` per resample in a Python loop (timed on a few resamples
    and scaled to 1,000), and
(b) ``bootstrap_means``: chunked index matrices drawn and gathered on a thread pool, memory bounded by
    ``BOOT_CHUNK_ELEMENTS`` per worker,

and on both data sets the whole row of ``stats wilcoxon`` (signed-rank test, rank-biserial, medians, bootstrap
CI) through ``compare_arrays``. Target: the whole comparison under 10 s on either data set. Peak memory of the
bootstrap is measured with tracemalloc (numpy reports its buffers to it).

Run: ``python bench/bench_wilcoxon.py`` (prints JSON).
"""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np

from echoseg.core.stats.wilcoxon import BOOT_CHUNK_ELEMENTS, _worker_count, bootstrap_means, compare_arrays

NAME = "wilcoxon"
TARGET_S = 10.0


def _timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def _peak_mib(fn, *args) -> float:
    tracemalloc.start()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return round(peak / 2**20, 1)


def run(n: int = 1_000_000, n_boot: int = 1000, naive_resamples: int = 20, seed: int = 0) -> dict:
    """Run the benchmark and return ``{"name", "description", "metrics", "target", "passed"}``."""
    rng = np.random.default_rng(seed)
    a = np.clip(rng.normal(0.85, 0.06, n), 0, 1)
    b = np.clip(a + rng.normal(0.003, 0.03, n), 0, 1)
    a4, b4 = a.round(4), b.round(4)
    d = b - a

    naive_rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(naive_resamples):
        naive_rng.choice(d, n, replace=True).mean()
    naive_s = (time.perf_counter() - t0) * n_boot / naive_resamples
    means, vector_s = _timed(bootstrap_means, d, n_boot, seed)
    row, total_s = _timed(compare_arrays, a, b, n_boot=n_boot, seed=seed)
    row4, total4_s = _timed(compare_arrays, a4, b4, n_boot=n_boot, seed=seed)

    metrics = {
        "pairs": n,
        "bootstrap_resamples": n_boot,
        "workers": _worker_count(),
        "naive_bootstrap_s": round(naive_s, 2),
        "index_bootstrap_s": round(vector_s, 2),
        "speedup_index_vs_naive": round(naive_s / vector_s, 1),
        "compare_continuous_s": round(total_s, 2),
        "compare_rounded_s": round(total4_s, 2),
        "distinct_differences_rounded": int(np.unique(b4 - a4).size),
        "index_bootstrap_peak_mib": _peak_mib(bootstrap_means, d, n_boot, seed),
        "counts_bootstrap_peak_mib": _peak_mib(bootstrap_means, b4 - a4, n_boot, seed),
        "chunk_elements": BOOT_CHUNK_ELEMENTS,
        "bootstrap_se_ratio": round(float(means.std() / (d.std() / np.sqrt(n))), 3),  # ~1 when correct
        "continuous": {"method": row["method"], "mean_diff": row["mean_diff"], "ci": [row["ci_low"], row["ci_high"]]},
        "rounded": {"method": row4["method"], "mean_diff": row4["mean_diff"], "ci": [row4["ci_low"], row4["ci_high"]]},
    }
    return {
        "name": NAME,
        "description": "stats wilcoxon on 1,000,000 pairs with a 1,000-resample bootstrap CI (continuous and "
                       "4-decimal Dice): naive loop vs chunked threaded index resampling / multinomial counts",
        "metrics": metrics,
        "target": f"compare_continuous_s < {TARGET_S:g} and compare_rounded_s < {TARGET_S:g}",
        "passed": bool(total_s < TARGET_S and total4_s < TARGET_S),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
