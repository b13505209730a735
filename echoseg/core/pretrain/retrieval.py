"""Image<->text retrieval recall over a split, counting a retrieved item as correct when its text is the query's.

Reports built from a few attributes repeat (two images of the same view, phase, sex, age and quality get the same
report), so recall by pair index alone would punish a model for ranking an identical text first. A hit is an item
whose text equals the query pair's text; chance is the recall of a random ranking with the same repeats.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from math import comb

import numpy as np
import torch

KS = (1, 5)


def retrieval_recall(img: torch.Tensor, txt: torch.Tensor, texts: Sequence[str],
                     ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k of image->text and text->image retrieval on cosine similarity.

    Args:
        img, txt: L2-normalised embeddings (N, D) of the N pairs.
        texts: the pairs' texts (defines which items are correct).
    Returns:
        ``{"i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5"}`` (k capped at N).
    """
    n = len(texts)
    codes = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)[1]
    same = torch.from_numpy(codes[:, None] == codes[None, :])
    sim = img.double() @ txt.double().T  # rows images, columns texts
    out: dict[str, float] = {}
    for k in ks:
        kk = min(k, n)
        top_t = sim.topk(kk, dim=1).indices  # texts for each image
        top_i = sim.T.topk(kk, dim=1).indices  # images for each text
        rows = torch.arange(n)[:, None]
        out[f"i2t_r{k}"] = float(same[rows, top_t].any(dim=1).double().mean()) if n else 0.0
        out[f"t2i_r{k}"] = float(same[rows, top_i].any(dim=1).double().mean()) if n else 0.0
    return out


def chance_recall(texts: Sequence[str], k: int) -> float:
    """Expected recall@k of a random ranking: mean over queries of 1 - C(N - g, k) / C(N, k), g = the query's
    number of correct items (pairs sharing its text)."""
    n = len(texts)
    if n == 0:
        return 0.0
    k = min(k, n)
    counts = Counter(str(t) for t in texts)
    return float(np.mean([1.0 - comb(n - counts[str(t)], k) / comb(n, k) for t in texts]))
