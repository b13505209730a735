"""Sanity checks, size parsing and attribute caps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from echoseg.core.curate.filters import SanityConfig, cap_attributes, expected_size, sanity_check_image
from echoseg.core.errors import UserError
from echoseg.core.io import write_png


def _pair(tmp_path, image, mask, name="a"):
    write_png(tmp_path / f"{name}.png", image)
    write_png(tmp_path / f"{name}_m.png", mask)
    return str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}_m.png")


def _sdm_mask(size=32):
    m = np.zeros((size, size), np.uint8)
    m[4:, 4:-4] = 2
    m[10:20, 10:20] = 1
    return m


def test_sanity_checks(tmp_path):
    cfg = SanityConfig(size=(32, 32))
    rng = np.random.default_rng(0)
    ok = rng.integers(0, 200, (32, 32)).astype(np.uint8)
    scores, fails = sanity_check_image("a", *_pair(tmp_path, ok, _sdm_mask()), [1, 3, 4], "sdm", cfg)
    assert fails == [] and scores["std"] > 10 and scores["cone_pixels"] > 0
    sat = np.full((32, 32), 255, np.uint8)
    sat[0, 0] = 0
    _, fails = sanity_check_image("b", *_pair(tmp_path, sat, _sdm_mask(), "b"), [1], "sdm", cfg)
    assert {f.check for f in fails} == {"saturated"} and fails[0].score > 0.99 and fails[0].keep_if == "<="
    _, fails = sanity_check_image("c", *_pair(tmp_path, ok[:16], _sdm_mask()[:16], "c"), [1], "sdm", cfg)
    assert [f.check for f in fails] == ["size"] and "expected 32x32" in fails[0].detail
    _, fails = sanity_check_image("d", *_pair(tmp_path, ok, _sdm_mask()[:16], "d"), [1], "sdm", cfg)
    assert [f.check for f in fails] == ["size"] and "label map" in fails[0].detail
    nocone = _sdm_mask()
    nocone[nocone == 2] = 0
    _, fails = sanity_check_image("e", *_pair(tmp_path, ok, nocone, "e"), [1], "sdm", cfg)
    assert [f.check for f in fails] == ["no_cone"]
    _, fails = sanity_check_image("f", *_pair(tmp_path, ok, nocone, "f"), [1], "camus", cfg)
    assert fails == []  # plain CAMUS label maps have no cone label
    (tmp_path / "g.png").write_bytes(b"not a png")
    _, fails = sanity_check_image("g", str(tmp_path / "g.png"), str(tmp_path / "a_m.png"), [1], "sdm", cfg)
    assert fails[0].check == "unreadable" and "g.png" in fails[0].detail


def test_expected_size(tmp_path):
    paths = [_pair(tmp_path, np.zeros((8, 6), np.uint8), np.zeros((8, 6), np.uint8), f"i{i}")[0] for i in range(3)]
    images = pd.DataFrame({"image": paths})
    assert expected_size(images, "auto") == (8, 6)
    assert expected_size(images, "any") is None
    assert expected_size(images, "64") == (64, 64) and expected_size(images, "64x48") == (64, 48)
    with pytest.raises(UserError, match="--size"):
        expected_size(images, "big")


def test_cap_attributes_balances_and_caps():
    frame = pd.DataFrame({"view": ["2CH"] * 8 + ["4CH"] * 3, "phase": ["ED", "ES"] * 5 + ["ED"],
                          "age": [30, 50, 70, 85, 30, 50, 70, 85, 30, 50, None]})
    keep = cap_attributes(frame, ["view", "phase"], tau_max=3, seed=0)
    kept = frame[keep]
    assert kept["view"].value_counts().max() <= 3 and kept["phase"].value_counts().max() <= 3
    assert keep.sum() == 6  # 3 x 2CH + 3 x 4CH fit within the phase caps too
    assert (cap_attributes(frame, ["view", "phase"], 3, seed=0) == keep).all()
    by_age = frame[cap_attributes(frame, ["age"], tau_max=1)]
    assert len(by_age) == 5  # <40, 40-59, 60-79, 80+, unknown
    with pytest.raises(UserError, match="--tau-max"):
        cap_attributes(frame, ["view"], 0)
