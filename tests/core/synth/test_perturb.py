"""Label-map perturbation and cone derivation (Echo from noise augmentation)."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.core.data.toy.heart import draw_echo, sample_anatomy, to_sdm_labels
from echoseg.core.synth.perturb import (
    PerturbConfig,
    PerturbParams,
    apply_params,
    camus_from_sdm,
    camus_to_sdm,
    cone_from_image,
    perturb_label_map,
    sample_params,
)


def _toy(size: int = 64, seed: int = 0, view: str = "4CH"):
    rng = np.random.default_rng(seed)
    anat = sample_anatomy(rng, view)
    image, labels, cone = draw_echo(size, anat, rng, quality="Poor")
    return image, labels, cone


@pytest.mark.parametrize(("size", "min_iou"), [(32, 0.93), (128, 0.97)])
def test_cone_from_image_matches_the_drawn_sector(size, min_iou):
    image, _, cone = _toy(size)
    found = cone_from_image(image)
    iou = (found & cone).sum() / (found | cone).sum()
    assert iou > min_iou
    assert not found[0, 0] and not found[-1, 0] and not found[-1, -1]  # the corners lie outside the fan


def test_cone_of_a_black_image_is_empty():
    assert not cone_from_image(np.zeros((32, 32), np.uint8)).any()


def test_camus_to_sdm_and_back():
    _, labels, cone = _toy(64)
    sdm = camus_to_sdm(labels, cone)
    np.testing.assert_array_equal(sdm, to_sdm_labels(labels, cone))
    np.testing.assert_array_equal(camus_from_sdm(sdm), labels)
    with pytest.raises(ValueError):
        camus_to_sdm(np.full((4, 4), 4, np.uint8), np.ones((4, 4), bool))


def test_params_stay_within_the_paper_ranges():
    cfg = PerturbConfig()
    rng = np.random.default_rng(3)
    size = 128
    for _ in range(300):
        p = sample_params(rng, size, cfg)
        assert -5 <= p.rotation <= 5 and -5 <= p.shear <= 5
        assert 0.8 <= p.scale <= 1.05
        assert abs(p.tx) <= 0.05 * size and abs(p.ty) <= 0.05 * size
        assert p.grid == 10 and p.elastic_px == pytest.approx(30 * size / 256)


def test_perturbation_keeps_labels_in_the_cone_and_preserves_values():
    size = 96
    _, labels, cone = _toy(size, seed=5)
    sdm = to_sdm_labels(labels, cone)
    for seed in range(8):
        out, p = perturb_label_map(sdm, np.random.default_rng(seed))
        assert out.dtype == np.uint8 and out.shape == sdm.shape
        np.testing.assert_array_equal(out > 0, cone)  # the cone is fixed, nothing outside it
        assert set(np.unique(out)) <= {0, 1, 2, 3, 4}
        for structure in (1, 3, 4):  # every structure survives a small deformation
            assert (out == structure).sum() > 0.4 * (sdm == structure).sum()
        assert not np.array_equal(out, sdm)


def test_perturbation_is_deterministic_per_seed():
    _, labels, cone = _toy(64, seed=2)
    sdm = to_sdm_labels(labels, cone)
    a, pa = perturb_label_map(sdm, np.random.default_rng(11))
    b, pb = perturb_label_map(sdm, np.random.default_rng(11))
    c, _ = perturb_label_map(sdm, np.random.default_rng(12))
    assert pa == pb
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(apply_params(sdm, pa), a)  # parameters alone reproduce the map


def test_identity_parameters_change_nothing():
    _, labels, cone = _toy(64, seed=4)
    sdm = to_sdm_labels(labels, cone)
    ident = PerturbParams(rotation=0.0, tx=0.0, ty=0.0, scale=1.0, shear=0.0, elastic_seed=0, elastic_px=0.0, grid=10)
    np.testing.assert_array_equal(apply_params(sdm, ident), sdm)


def test_translation_moves_the_structures():
    _, labels, cone = _toy(64, seed=4)
    sdm = to_sdm_labels(labels, cone)
    shift = PerturbParams(rotation=0.0, tx=0.0, ty=4.0, scale=1.0, shear=0.0, elastic_seed=0, elastic_px=0.0, grid=10)
    out = apply_params(sdm, shift)
    ys_before = np.nonzero(sdm == 1)[0].mean()
    ys_after = np.nonzero(out == 1)[0].mean()
    assert ys_after - ys_before == pytest.approx(4.0, abs=0.5)
