"""Toy SDM CAMUS data sets in the published "Echo from noise" layout (for demos and CI).

Writes ``<VIEW>_<PHASE>/images/{training,validation}/patientNNNN_<VIEW>_<PHASE>_<split>_<k>.png`` with the sector
label map of the same name in ``<VIEW>_<PHASE>/annotations/...`` (0 outside the cone, 1 LV, 2 cone background,
3 MYO, 4 LA), plus ``manifest.csv`` with each image's attributes, as ``synth generate`` writes one. Each copy ``k``
is drawn from a slightly perturbed label map of the source patient, like the SDM CAMUS label augmentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from echoseg.core.data.camus import rule_count
from echoseg.core.data.manifest import write_manifest
from echoseg.core.data.sdm_camus import SDM_LABELS, read_sdm_camus
from echoseg.core.data.toy.heart import (
    PHASES,
    VIEWS,
    draw_heart,
    perturb_anatomy,
    render_echo,
    sample_anatomy,
    sample_patient,
    to_sdm_labels,
)
from echoseg.core.io import write_png


def write_toy_sdm_camus(
    root: str | Path, patients: int = 5, copies: int = 2, size: int = 256, seed: int = 0
) -> pd.DataFrame:
    """Write a toy SDM CAMUS data set under ``root``; return its manifest (as ``read_sdm_camus`` reads it).

    The first fifth of the patients (at least one when there are two or more) are ``validation``, the rest
    ``training``; every (patient, view, phase) gets ``copies`` synthetic images.
    """
    if patients < 1 or copies < 1 or size < 32:
        raise ValueError("need patients >= 1, copies >= 1 and size >= 32")
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_val = rule_count(patients)
    rows = []
    for i in range(1, patients + 1):
        prng = np.random.default_rng(rng.integers(2**63))
        patient = f"patient{i:04d}"
        split_word, split = ("validation", "val") if i <= n_val else ("training", "train")
        attrs = sample_patient(prng)
        for view in VIEWS:
            anat = sample_anatomy(prng, view)
            for phase_idx, phase in enumerate(PHASES):
                folder = root / f"{view}_{phase}"
                for k in range(copies):
                    labels, cone, right = draw_heart(size, perturb_anatomy(anat, prng), float(phase_idx))
                    name = f"{patient}_{view}_{phase}_{split_word}_{k}.png"
                    image = folder / "images" / split_word / name
                    mask = folder / "annotations" / split_word / name
                    write_png(image, render_echo(labels, cone, right, prng, attrs["ImageQuality"]))
                    write_png(mask, to_sdm_labels(labels, cone))
                    for structure, label in SDM_LABELS.items():
                        rows.append({
                            "sample_id": f"{name[:-4]}_{structure}", "image": str(image.resolve()),
                            "mask": str(mask.resolve()), "label": label, "structure": structure, "view": view,
                            "phase": phase, "patient": patient, "sex": attrs["Sex"], "age": attrs["Age"],
                            "quality": attrs["ImageQuality"], "split": split, "source": "synthetic",
                        })
    write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    return read_sdm_camus(root)
