"""Chunked matrix-product similarity against the per-pair loop."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.core.curate.similarity import center, l2_normalize, max_cosine, max_cosine_loop


def test_max_cosine_matches_loop_and_chunking():
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(37, 8)), rng.normal(size=(11, 8))
    best, idx = max_cosine(q, r, chunk=5)
    best_loop, idx_loop = max_cosine_loop(q, r)
    np.testing.assert_allclose(best, best_loop, atol=1e-5)
    np.testing.assert_array_equal(idx, idx_loop)
    full = l2_normalize(q) @ l2_normalize(r).T
    np.testing.assert_allclose(best, full.max(1), atol=1e-5)


def test_exact_copy_scale_invariance_and_empty():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(4, 6))
    best, idx = max_cosine(np.stack([3.0 * r[2], -r[0]]), r)
    assert best[0] == pytest.approx(1.0, abs=1e-6) and idx[0] == 2
    best, idx = max_cosine(r, np.zeros((0, 6)))
    assert np.isneginf(best).all() and (idx == -1).all()
    with pytest.raises(ValueError, match="sizes differ"):
        max_cosine(r, np.zeros((2, 5)))


def test_center_removes_the_common_component():
    rng = np.random.default_rng(2)
    x = 10.0 + rng.normal(size=(50, 16))  # a large shared offset makes every raw cosine high
    raw = l2_normalize(x) @ l2_normalize(x).T
    c = center(x, x.mean(0))
    cen = c @ c.T
    off = ~np.eye(50, dtype=bool)
    assert raw[off].min() > 0.9 and abs(cen[off].mean()) < 0.1
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
