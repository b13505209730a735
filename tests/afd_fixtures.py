"""Synthetic beating-LV masks and EchoNet tracing rows shared by the `eval afd` tests."""

from __future__ import annotations

import numpy as np

PERIOD, PHASE0, FRAMES, SIZE = 20, 3, 45, 64
ED, ES = PHASE0 + PERIOD, PHASE0 + PERIOD + PERIOD // 2  # 23 and 33: the traced cycle


def beating_masks() -> np.ndarray:
    """Uint8 (T, H, W) disks whose radius peaks at PHASE0 + k * PERIOD (ED) and dips half a period later (ES)."""
    t = np.arange(FRAMES)
    radius = 16 + 8 * np.cos(2 * np.pi * (t - PHASE0) / PERIOD)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    d2 = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2
    return (d2[None] <= radius[:, None, None] ** 2).astype(np.uint8) * 255


def tracing_rows(name: str, frame: int, half_width: float) -> list[tuple]:
    """EchoNet tracing rows for one frame: the long axis, then 6 disks of the given half width."""
    rows = [(f"{name}.avi", 32.0, 8.0, 32.0, 56.0, frame)]
    rows += [(f"{name}.avi", 32 - half_width, y, 32 + half_width, y, frame) for y in range(12, 54, 8)]
    return rows
