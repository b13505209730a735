"""Toy CAMUS / SDM CAMUS generators: determinism, layout, and echo-like, learnable content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from echoseg.core.data.camus import parse_info_cfg
from echoseg.core.data.imaging import load_image, load_mask
from echoseg.core.data.toy.camus import toy_split_counts, write_toy_camus
from echoseg.core.data.toy.heart import (
    LA,
    LV,
    MYO,
    draw_echo,
    draw_heart,
    render_echo,
    sample_anatomy,
    to_sdm_labels,
)
from echoseg.core.data.toy.sdm import write_toy_sdm_camus


def _content(root: Path) -> dict[str, object]:
    """Decoded pixel data and text of every data file (gzip headers may differ in time stamps)."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.name.endswith((".nii.gz", ".mhd", ".png")):
            out[rel] = load_mask(p, labels=None).tobytes() if p.name.endswith(".png") else _itk(p)
        elif p.suffix in (".cfg", ".txt"):
            out[rel] = p.read_text()
    return out


def _itk(p: Path) -> bytes:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(p))).tobytes()


@pytest.mark.parametrize("layout", ["nifti", "mhd"])
def test_toy_camus_is_deterministic_per_seed(tmp_path, layout):
    a = write_toy_camus(tmp_path / "a", patients=3, size=48, layout=layout, seed=7)
    b = write_toy_camus(tmp_path / "b", patients=3, size=48, layout=layout, seed=7)
    c = write_toy_camus(tmp_path / "c", patients=3, size=48, layout=layout, seed=8)
    ca, cb, cc = _content(tmp_path / "a"), _content(tmp_path / "b"), _content(tmp_path / "c")
    assert ca == cb and ca != cc
    assert list(a["sample_id"]) == list(b["sample_id"])
    rel = [str(Path(p).relative_to(tmp_path / "a")) for p in a["image"]]
    assert rel == [str(Path(p).relative_to(tmp_path / "b")) for p in b["image"]]
    assert len(c) == len(a)


def test_toy_camus_layout_and_cfg(tmp_path):
    df = write_toy_camus(tmp_path, patients=5, size=64, layout="nifti", seed=0)
    split_dir = tmp_path / "database_split"
    lists = {k: (split_dir / f"subgroup_{k}.txt").read_text().split() for k in ("training", "validation", "testing")}
    assert sorted(sum(lists.values(), [])) == [f"patient{i:04d}" for i in range(1, 6)]
    assert (len(lists["testing"]), len(lists["validation"])) == toy_split_counts(5) == (1, 1)
    info = parse_info_cfg(tmp_path / "database_nifti" / "patient0001" / "Info_4CH.cfg")
    assert {"ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "LVedv", "LVesv", "LVef", "FrameRate"} <= set(info)
    assert info["ED"] == 1 and info["ES"] == info["NbFrame"] and info["LVedv"] > info["LVesv"] > 0
    assert len(df) == 5 * 12 and set(df["split"]) == {"train", "val", "test"}


def test_ed_larger_than_es_and_shapes():
    rng = np.random.default_rng(0)
    for view in ("2CH", "4CH"):
        for _ in range(5):
            anat = sample_anatomy(rng, view)
            ed, cone, _ = draw_heart(128, anat, 0.0)
            es, _, _ = draw_heart(128, anat, 1.0)
            assert (ed == LV).sum() > 1.2 * (es == LV).sum()
            assert set(np.unique(ed)) == {0, LV, MYO, LA} and not ed[~cone].any()
            # MYO: a wall of a few pixels around the LV, open at the base (touches the LA side only at the rim)
            ratio = (ed == MYO).sum() / (ed == LV).sum()
            assert 0.15 < ratio < 0.6
            lv_rows, la_rows = np.nonzero(ed == LV)[0], np.nonzero(ed == LA)[0]
            assert lv_rows.mean() < la_rows.mean()
            # the MYO ring is open at the base: the LV's bottom row touches no myocardium directly below it
            bottom = lv_rows.max()
            cols = np.nonzero(ed[bottom] == LV)[0]
            assert not (ed[bottom + 1, cols[1:-1]] == MYO).all()


def test_4ch_shows_unlabelled_right_heart():
    rng = np.random.default_rng(1)
    anat2, anat4 = sample_anatomy(rng, "2CH"), sample_anatomy(rng, "4CH")
    _, _, right2 = draw_heart(128, anat2, 0.0)
    labels4, _, right4 = draw_heart(128, anat4, 0.0)
    assert not right2.any() and (right4 == 1).sum() > 100
    assert not (labels4[right4 > 0]).any()
    img4, _, cone4 = draw_echo(128, anat4, np.random.default_rng(2), 0.0, "Good")
    tissue = cone4 & (labels4 == 0) & (right4 == 0)
    assert img4[right4 == 1].mean() < 0.5 * img4[tissue].mean()


def test_quality_controls_contrast_and_speckle():
    rng = np.random.default_rng(3)
    anat = sample_anatomy(rng, "2CH")
    labels, cone, right = draw_heart(128, anat, 0.0)

    def contrast(quality: str) -> float:
        img = render_echo(labels, cone, right, np.random.default_rng(4), quality).astype(float)
        return img[labels == MYO].mean() / max(img[labels == LV].mean(), 1.0)

    good, poor = contrast("Good"), contrast("Poor")
    assert good > 3.0 and good > 1.5 * poor > 1.5
    # multiplicative speckle: the myocardium's intensity varies strongly around its mean
    img = render_echo(labels, cone, right, np.random.default_rng(5), "Good").astype(float)
    myo = img[labels == MYO]
    assert 0.25 < myo.std() / myo.mean() < 0.8
    assert img[~cone].max() == 0


def test_sdm_label_values():
    labels, cone, _ = draw_heart(96, sample_anatomy(np.random.default_rng(0), "4CH"), 0.0)
    sdm = to_sdm_labels(labels, cone)
    assert set(np.unique(sdm)) == {0, 1, 2, 3, 4}
    assert ((sdm == 0) == ~cone).all() and ((sdm == 2) == (cone & (labels == 0))).all()
    assert ((sdm == 4) == (labels == LA)).all() and ((sdm == 3) == (labels == MYO)).all()


def test_toy_sdm_is_deterministic_and_in_published_layout(tmp_path):
    a = write_toy_sdm_camus(tmp_path / "a", patients=3, copies=2, size=48, seed=1)
    write_toy_sdm_camus(tmp_path / "b", patients=3, copies=2, size=48, seed=1)
    assert _content(tmp_path / "a") == _content(tmp_path / "b")
    img = tmp_path / "a" / "2CH_ED" / "images" / "training" / "patient0002_2CH_ED_training_1.png"
    ann = tmp_path / "a" / "2CH_ED" / "annotations" / "training" / "patient0002_2CH_ED_training_1.png"
    assert img.is_file() and ann.is_file()
    assert (tmp_path / "a" / "4CH_ES" / "images" / "validation" / "patient0001_4CH_ES_validation_0.png").is_file()
    assert load_image(img).shape == load_mask(ann).shape == (48, 48)
    assert set(np.unique(load_mask(ann))) == {0, 1, 2, 3, 4}
    assert len(a) == 3 * 2 * 2 * 2 * 3 and (tmp_path / "a" / "manifest.csv").is_file()
    # copies of one (patient, view, phase) differ: each is drawn from a perturbed label map
    other = ann.with_name("patient0002_2CH_ED_training_0.png")
    assert not np.array_equal(load_mask(ann), load_mask(other))
