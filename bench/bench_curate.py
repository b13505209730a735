"""Benchmark: curation similarity search as chunked matrix products vs a per-pair Python loop.

Cached embeddings are stood in by random unit vectors of CLIP's dimension (512): 10,000 synthetic samples are
compared with 1,000 known-bad exemplars and 2,000 real images (nearest neighbour by cosine similarity, after
centring on the synthetic mean as ``echoseg curate`` does). The per-pair loop runs on a subset of queries and is
extrapolated per pair. Target: the full matrix-product search under 60 s on CPU.

Run: ``python bench/bench_curate.py`` (prints JSON) or ``python bench/run_all.py curate``.
"""

from __future__ import annotations

import time

import numpy as np

from echoseg.core.curate.similarity import center, max_cosine, max_cosine_loop

NAME = "curate"
TARGET_SECONDS = 60.0


def run(n_synth: int = 10_000, n_bad: int = 1_000, n_real: int = 2_000, dim: int = 512, loop_queries: int = 20,
        seed: int = 0) -> dict:
    """Run the benchmark and return ``{"name", "metrics", "target", "passed"}``."""
    rng = np.random.default_rng(seed)
    synth = rng.normal(size=(n_synth, dim)).astype(np.float32)
    bad = rng.normal(size=(n_bad, dim)).astype(np.float32)
    real = rng.normal(size=(n_real, dim)).astype(np.float32)
    synth /= np.linalg.norm(synth, axis=1, keepdims=True)

    t0 = time.perf_counter()
    mean = synth.mean(0)
    s, b, r = center(synth, mean), center(bad, mean), center(real, mean)
    best_bad, idx_bad = max_cosine(s, b)
    best_real, idx_real = max_cosine(s, r)
    matmul_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    loop_bad, loop_idx = max_cosine_loop(s[:loop_queries], b)
    loop_s = time.perf_counter() - t0
    pairs_total = n_synth * (n_bad + n_real)
    loop_per_pair = loop_s / (loop_queries * n_bad)
    loop_full_estimate = loop_per_pair * pairs_total
    agree = bool(np.allclose(loop_bad, best_bad[:loop_queries], atol=1e-4)
                 and (loop_idx == idx_bad[:loop_queries]).all())
    metrics = {
        "synthetic": n_synth, "bad": n_bad, "real": n_real, "dim": dim,
        "matmul_seconds": round(matmul_s, 3),
        "matmul_pairs_per_s": round(pairs_total / matmul_s),
        "loop_pairs_per_s": round(1.0 / loop_per_pair),
        "loop_full_estimate_seconds": round(loop_full_estimate, 1),
        "speedup": round(loop_full_estimate / matmul_s, 1),
        "loop_agrees": agree,
        "max_bad_sim": float(best_bad.max()), "max_real_sim": float(best_real.max()),
    }
    return {
        "name": NAME,
        "description": "nearest bad/real neighbour of 10k synthetic embeddings: chunked matmul vs per-pair loop",
        "metrics": metrics,
        "target": f"matmul_seconds < {TARGET_SECONDS:g} (CPU) and the loop subset agrees",
        "passed": bool(matmul_s < TARGET_SECONDS and agree),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
