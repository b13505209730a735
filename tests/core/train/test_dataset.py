"""Prompt selection, targets, augmentation and epoch batches of the training data set."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.core.data.cache import build_cache
from echoseg.core.data.manifest import load_split, prompt_columns
from echoseg.core.engine.batches import epoch_batches
from echoseg.core.errors import UserError
from echoseg.core.train.dataset import SegDataset, augment_pair


def test_prompt_columns():
    assert prompt_columns("p3") == ["p3"]
    assert prompt_columns("p3_b") == ["p3_b"]
    assert prompt_columns("random") == ["p7", "p7_b"]
    assert prompt_columns("random:p2") == ["p2", "p2_b"]
    with pytest.raises(UserError, match="--prompt"):
        prompt_columns("p9")


@pytest.fixture
def split(prompts_run, tmp_path):
    s = load_split(prompts_run, "train")
    return s, build_cache(s.frame, 32, tmp_path / "cache", progress=False)


def test_p0_same_text_for_every_structure_and_binary_targets(split):
    s, cache = split
    ds = SegDataset(s.frame, cache, (0.5,) * 3, (0.5,) * 3, ["p0"])
    items = [ds[i] for i in range(len(ds))]
    assert {it["text"] for it in items} == {""}
    assert {it["structure"] for it in items} == {1, 2, 3}
    for it in items:
        assert it["image"].shape == (3, 32, 32) and it["target"].shape == (1, 32, 32)
        assert set(np.unique(it["target"].numpy())) <= {0.0, 1.0}
    i = 0
    expected = np.asarray(cache.mask(cache.row_of(s.frame["image"][i]))) == s.frame["label"][i]
    assert np.array_equal(items[i]["target"][0].numpy().astype(bool), expected)


def test_random_prompt_draws_both_variants_reproducibly(split):
    s, cache = split
    ds = SegDataset(s.frame, cache, (0.5,) * 3, (0.5,) * 3, prompt_columns("random"), seed=3)
    ds.set_epoch(1)
    first = [ds[i]["text"] for i in range(len(ds))]
    assert any(t.endswith("of the heart.") for t in first) and any(t.endswith("cardiac ultrasound.") for t in first)
    assert first == [ds[i]["text"] for i in range(len(ds))]  # same epoch, same draws
    ds.set_epoch(2)
    assert first != [ds[i]["text"] for i in range(len(ds))]


def test_augmentation_keeps_target_aligned_and_never_flips():
    img = np.zeros((32, 32), np.uint8)
    img[4:12, 2:8] = 255  # a block in the top-left corner
    tgt = (img > 0).astype(np.uint8)
    moved = 0
    for seed in range(10):
        a, t = augment_pair(img, tgt, np.random.default_rng([seed]))
        assert a.dtype == np.uint8 and a.shape == t.shape == img.shape and set(np.unique(t)) <= {0, 1}
        bright, mask = a > 127, t.astype(bool)
        assert (bright & mask).sum() / (bright | mask).sum() > 0.75  # the target moved with the image
        rows, cols = np.nonzero(mask)
        assert rows.mean() < 16 and cols.mean() < 16  # still top-left: no horizontal or vertical flip
        moved += not np.array_equal(t, tgt)
    assert moved >= 5  # the rotation/zoom really moves the pair


def test_epoch_batches_cover_and_shard():
    b = epoch_batches(10, 3, seed=0, epoch=1, shuffle=True)
    assert sorted(i for batch in b for i in batch) == list(range(10))
    assert b == epoch_batches(10, 3, seed=0, epoch=1, shuffle=True)
    assert b != epoch_batches(10, 3, seed=0, epoch=2, shuffle=True)
    shards = [epoch_batches(10, 2, 0, 1, True, rank=r, world=3) for r in range(3)]
    assert len({sum(len(x) for x in s) for s in shards}) == 1  # equal steps per process (padded)
    assert {i for s in shards for x in s for i in x} == set(range(10))
    assert epoch_batches(5, 2, 0, 0, False) == [[0, 1], [2, 3], [4]]
