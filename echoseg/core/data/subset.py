"""Seeded patient-level subsets of a split (``--train-fraction``, the 1 % / 10 % / 100 % curves of SynCXR).

Patients, not rows, are drawn, so no patient's images are split between a subset and the rest; the draw depends
only on (seed, fraction) and the set of patients, and a smaller fraction's patients are a subset of a larger one's
(one seeded permutation, cut at different lengths), so the curves compare nested training sets.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from echoseg.core.errors import UserError


def patient_fraction(frame: pd.DataFrame, fraction: float, seed: int = 0, option: str = "--train-fraction",
                     column: str = "patient") -> pd.DataFrame:
    """The rows of ``ceil(fraction x patients)`` patients (at least one) drawn with ``seed``.

    Args:
        frame: manifest rows of one split; a frame without ``column`` is drawn per row (each row its own patient).
        fraction: in (0, 1]; 1 returns ``frame`` unchanged.
        seed: the draw's seed.
        option: the option name for error messages.
        column: the patient column.
    Raises:
        UserError: ``fraction`` outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise UserError(f"{option} must be in (0, 1], got {fraction}")
    if fraction == 1:
        return frame
    keys = frame[column].astype(str) if column in frame else pd.Series(frame.index.astype(str), index=frame.index)
    patients = np.array(sorted(keys.unique()))
    order = np.random.default_rng([seed, 1009]).permutation(len(patients))
    keep = set(patients[order[: max(1, math.ceil(fraction * len(patients)))]])
    return frame[keys.isin(keep)].reset_index(drop=True)


def subset_record(frame: pd.DataFrame, subset: pd.DataFrame, fraction: float, seed: int,
                  column: str = "patient") -> dict:
    """What run.json records about a subset: fraction, seed, patients and rows kept of the whole."""
    def count(df: pd.DataFrame) -> int:
        return int(df[column].astype(str).nunique()) if column in df else len(df)

    return {"fraction": fraction, "seed": seed, "patients": count(subset), "of_patients": count(frame),
            "rows": len(subset), "of_rows": len(frame)}
