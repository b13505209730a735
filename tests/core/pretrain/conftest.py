"""Toy pre-training corpora: CAMUS-layout prompts runs (real) and SDM CAMUS ones (synthetic), built by the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from echoseg.cli import main


def build_pairs_run(root: Path, patients: int, dataset: str = "camus") -> Path:
    """`data toy <dataset>` + `prompts build`: a prompts run with a report per image (48 px)."""
    extra = ["--copies", "1"] if dataset == "sdm-camus" else []
    assert main(["data", "toy", dataset, "--patients", str(patients), "--size", "48", *extra,
                 "--out", str(root / f"{dataset}-data")]) == 0
    assert main(["prompts", "build", str(root / f"{dataset}-data"), "--out", str(root / dataset)]) == 0
    return root / dataset


@pytest.fixture(scope="session")
def pairs_run(tmp_path_factory) -> Path:
    """20 toy CAMUS patients: 48 train and 12 val images (4 per patient)."""
    return build_pairs_run(tmp_path_factory.mktemp("pairs"), 20)


@pytest.fixture(scope="session")
def synthetic_pairs_run(tmp_path_factory) -> Path:
    """A small SDM CAMUS (synthetic) prompts run."""
    return build_pairs_run(tmp_path_factory.mktemp("synpairs"), 6, "sdm-camus")
