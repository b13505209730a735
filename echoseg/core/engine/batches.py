"""Per-process epoch batches and cross-process sums, the same for every training loop.

Batches depend only on (seed, epoch, process), so a resumed run repeats an uninterrupted one and N processes
together visit what one process visits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's batches of sample indices for one epoch: a permutation seeded by (seed, epoch), sharded
    by rank, then cut into batches. Shuffled (training) shards are padded by repeating the first indices so
    every process runs the same number of steps (DDP needs that); unshuffled shards are not padded."""
    order = np.random.default_rng([seed, epoch, 7]).permutation(n) if shuffle else np.arange(n)
    if shuffle and world > 1 and n % world:
        order = np.concatenate([order, order[: world - n % world]])
    mine = order[rank::world].tolist()
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def sum_reduce(accelerator, values: Sequence[float]) -> list[float]:
    """Sum ``values`` over all processes (float64; one collective)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        t = accelerator.reduce(t, reduction="sum")
    return t.tolist()
