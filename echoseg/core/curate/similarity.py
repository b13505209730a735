"""Cosine similarity between embedding sets as chunked matrix products.

Curation compares every synthetic sample with every known-bad exemplar and every real training image. With
embeddings L2-normalised, cosine similarity is a dot product, so ``Q @ R.T`` computes all pairs at once; the
queries are processed in chunks so memory stays at ``chunk x len(R)`` floats whatever the set sizes. Only the
maximum over the references (and which reference attains it) is kept per query.

Centring: pooled features of convolutional or CLIP encoders share a large common component, so the raw cosine of
any two echo images is high. :func:`center` subtracts a mean embedding (by default the synthetic set's) before
normalising, so the similarity measures how two images differ from a typical one; exact copies stay at 1.
"""

from __future__ import annotations

import numpy as np
import torch


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (all-zero rows stay zero), as float32."""
    x = np.asarray(x, np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def center(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``x - mean`` re-normalised to unit rows (see the module notes)."""
    return l2_normalize(np.asarray(x, np.float32) - np.asarray(mean, np.float32)[None])


def max_cosine(
    queries: np.ndarray, refs: np.ndarray, chunk: int = 4096, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the largest cosine similarity to any reference row and that reference's index.

    Args:
        queries: (N, D) embeddings (normalised here).
        refs: (M, D) embeddings (normalised here).
        chunk: queries per matrix product.
        device: torch device of the products (``cuda`` for large sets on a GPU).
    Returns:
        ``(best (N,) float32, index (N,) int64)``; with no references, ``-inf`` and ``-1``.
    """
    q = l2_normalize(queries)
    r = l2_normalize(refs)
    n = len(q)
    if len(r) == 0 or n == 0:
        return np.full(n, -np.inf, np.float32), np.full(n, -1, np.int64)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"embedding sizes differ: {q.shape[1]} vs {r.shape[1]}")
    rt = torch.from_numpy(r).to(device).T.contiguous()
    best = np.empty(n, np.float32)
    index = np.empty(n, np.int64)
    with torch.no_grad():
        for start in range(0, n, chunk):
            sims = torch.from_numpy(q[start:start + chunk]).to(device) @ rt
            values, idx = sims.max(dim=1)
            best[start:start + chunk] = values.cpu().numpy()
            index[start:start + chunk] = idx.cpu().numpy()
    return np.clip(best, -1.0, 1.0), index


def nearest(queries: np.ndarray, refs: np.ndarray, mean: np.ndarray | None = None, device: str = "cpu"
            ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`max_cosine` of ``queries`` against ``refs``, both centred on ``mean`` first when it is given.

    The one similarity `curate --bad`/`--real` and `synth generate --regenerate-bad` measure.
    """
    if mean is not None:
        queries, refs = center(queries, mean), center(refs, mean)
    return max_cosine(queries, refs, device=device)


def max_cosine_loop(queries: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference implementation of :func:`max_cosine` with one Python-level dot product per pair (benchmarks)."""
    q = l2_normalize(queries).tolist()
    r = l2_normalize(refs).tolist()
    best = np.full(len(q), -np.inf, np.float32)
    index = np.full(len(q), -1, np.int64)
    for i, a in enumerate(q):
        for j, b in enumerate(r):
            s = sum(x * y for x, y in zip(a, b, strict=True))
            if s > best[i]:
                best[i], index[i] = s, j
    return np.clip(best, -1.0, 1.0), index
