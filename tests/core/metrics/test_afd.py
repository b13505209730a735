"""Tests for the EchoDFKD ED/ES detection (aFD), the area readers and the per-video report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from echoseg.core.data.video import write_video
from echoseg.core.errors import UserError
from echoseg.core.metrics.afd import afd, detect, estimate_frame, estimate_frames, marked_frames, standardise
from echoseg.core.metrics.afd_report import afd_table, evaluate_afd, select_split
from echoseg.core.metrics.areas import (
    AreaSignals,
    areas_from_masks,
    load_mask_video,
    mask_areas,
    read_areas_csv,
    read_reference_csv,
)


def reference_estimate(areas: np.ndarray, phase: str, ref: int | None) -> int:
    """A plain, loop-based transcription of the algorithm, to check the vectorised one against."""
    a = np.asarray(areas, float)
    z = (a - a.mean()) / a.std() if a.std() > 0 else np.zeros_like(a)
    s = -z if phase == "ED" else z
    if ref is None:
        return int(np.argmin(s))
    med = np.median(s)
    marked = [t for t in range(len(s)) if s[t] < med] or [t for t in range(len(s)) if s[t] <= med]
    runs: list[list[int]] = []
    for t in marked:
        if runs and runs[-1][-1] == t - 1:
            runs[-1].append(t)
        else:
            runs.append([t])
    best, best_d = None, None
    for run in runs:
        d = min(abs(run[0] - ref), abs(run[-1] - ref))
        if best_d is None or d < best_d:
            best, best_d = run, d
    values = [s[t] for t in best]
    return best[int(np.argmin(values))]


# --------------------------------------------------------------------------- the algorithm on hand-built signals
def test_standardise_rows_and_constant_rows():
    z = standardise(np.array([[1.0, 2.0, 3.0, 6.0], [4.0, 4.0, 4.0, 4.0]]))
    assert np.allclose(z[0].mean(), 0) and np.isclose(z[0].std(), 1)
    assert np.array_equal(z[1], np.zeros(4))


def test_constant_signal_gives_first_frame():
    flat = np.full(10, 7.0)
    for phase in ("ED", "ES"):
        assert estimate_frame(flat, phase, 3) == 0
        assert estimate_frame(flat, phase, None) == 0


def test_no_frame_strictly_below_median_uses_less_or_equal():
    s = np.array([1, 1, 5, 1, 1, 5, 5], float)  # median 1: nothing strictly below it
    assert marked_frames(s).tolist() == [[True, True, False, True, True, False, False]]
    assert estimate_frame(s, "ES", 4) == 3  # run 3..4, first occurrence of the minimum
    assert estimate_frame(s, "ES", 0) == 0


def test_run_touching_the_last_frame():
    s = np.array([5, 4, 3, 4, 5, 6, 5, 3, 2], float)  # median 4: runs {2} and {7, 8}
    assert estimate_frame(s, "ES", 8) == 8
    assert estimate_frame(s, "ES", 6) == 8
    assert estimate_frame(s, "ES", 3) == 2


def test_reference_inside_a_run_keeps_that_run_even_if_shallower():
    s = np.array([3, -1, -2, -1, 3, 3, -1, -4, -1, 3, 3, 3], float)  # runs 1..3 and 6..8
    assert estimate_frame(s, "ES", 2) == 2  # not the global minimum at 7
    assert estimate_frame(s, "ES", 7) == 7
    assert estimate_frame(s, "ES", 5) == 7  # distances 2 (run 1) vs 1 (run 2)
    assert estimate_frame(s, "ES", 4) == 2  # distances 1 vs 2


def test_ties_between_runs_pick_the_first():
    s = np.array([3, -1, -2, -1, 3, -1, -4, -1, 3, 3, 3, 3], float)  # runs 1..3 and 5..7, both 1 from frame 4
    assert estimate_frame(s, "ES", 4) == 2


def test_ties_inside_a_run_pick_the_first_occurrence():
    s = np.array([3, -2, -1, -2, 3, 3], float)
    assert estimate_frame(s, "ES", 2) == 1


def test_ed_is_the_negated_signal():
    rng = np.random.default_rng(0)
    a = rng.normal(100, 10, 40)
    for ref in (0, 13, 39):
        assert estimate_frame(a, "ED", ref) == estimate_frame(-a, "ES", ref)


def test_several_cycles_pick_the_cycle_of_the_reference():
    t = np.arange(60)
    area = 100 + 30 * np.cos(2 * np.pi * t / 20)  # maxima (ED) at 0, 20, 40; minima (ES) at 10, 30, 50
    assert estimate_frame(area, "ED", 20) == 20
    assert estimate_frame(area, "ED", 37) == 40
    assert estimate_frame(area, "ES", 30) == 30
    assert estimate_frame(area, "ES", 47) == 50
    assert estimate_frame(area, "ES", 2) == 10


def test_no_reference_is_the_global_minimum():
    s = np.array([3, -1, -2, -1, 3, 3, -1, -4, -1, 3], float)
    assert estimate_frame(s, "ES", None) == 7
    assert estimate_frames(s[None], np.array([-1]))[0] == 7


def test_vectorised_matches_loop_transcription():
    rng = np.random.default_rng(1)
    n, length = 300, 37
    walk = np.cumsum(rng.integers(-3, 4, size=(n, length)), axis=1).astype(float)  # many ties
    walk[:5] = 4.0  # constant rows
    ed_ref = rng.integers(-1, length + 3, n)  # includes "no reference" and references past the end
    es_ref = rng.integers(-1, length, n)
    ed, es = detect(walk, ed_ref, es_ref)
    for i in range(n):
        ed_expect = reference_estimate(walk[i], "ED", None if ed_ref[i] < 0 else int(ed_ref[i]))
        es_expect = reference_estimate(walk[i], "ES", None if es_ref[i] < 0 else int(es_ref[i]))
        assert (ed[i], es[i]) == (ed_expect, es_expect), i


def test_afd_is_mean_absolute_delay_ignoring_nan():
    assert afd(np.array([1, -3, np.nan, 2])) == pytest.approx(2.0)
    assert np.isnan(afd(np.array([np.nan])))


# --------------------------------------------------------------------------- masks of a beating LV
def beating_masks(frames: int = 45, size: int = 64, period: int = 20, phase0: int = 3) -> tuple[np.ndarray, int, int]:
    """Uint8 (T, H, W) disks whose radius follows a cosine; returns masks and the (ED, ES) frames of cycle 2."""
    t = np.arange(frames)
    radius = 16 + 8 * np.cos(2 * np.pi * (t - phase0) / period)
    yy, xx = np.mgrid[:size, :size]
    d2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    masks = (d2[None] <= radius[:, None, None] ** 2).astype(np.uint8) * 255
    return masks, phase0 + period, phase0 + period + period // 2


def test_beating_lv_masks_give_zero_afd(tmp_path):
    masks, ed, es = beating_masks()
    write_video(tmp_path / "v_avi.avi", masks, fps=50)
    np.savez_compressed(tmp_path / "v_npz.npz", masks=masks)
    np.save(tmp_path / "v_npy.npy", masks.astype(np.float32) / 255.0)  # probabilities
    signals, missing = areas_from_masks(tmp_path, ["v_avi", "v_npz.avi", "v_npy", "absent"])
    assert missing == ["absent"]
    assert sorted(signals.names) == ["v_avi", "v_npy", "v_npz"]
    refs = {name: (ed, es) for name in signals.names}
    table = afd_table(signals, refs, fps={name: 50.0 for name in signals.names})
    assert table["ED_est"].tolist() == [ed] * 3 and table["ES_est"].tolist() == [es] * 3
    assert table["ED_delay"].abs().sum() == 0 and table["ES_delay_ms"].abs().sum() == 0


def test_mask_thresholds_and_loaders(tmp_path):
    m = np.zeros((2, 4, 4), np.uint8)
    m[0, :2] = 200
    m[1, :1] = 127  # not above 127
    assert mask_areas(m).tolist() == [8.0, 0.0]
    assert mask_areas(m.astype(float) / 255).tolist() == [8.0, 0.0]  # 127/255 < 0.5
    assert mask_areas(m > 0).tolist() == [8.0, 4.0]
    assert mask_areas(m, threshold=100).tolist() == [8.0, 4.0]
    np.savez(tmp_path / "two.npz", a=m, b=m)
    with pytest.raises(UserError, match="masks"):
        load_mask_video(tmp_path / "two.npz")
    np.save(tmp_path / "flat.npy", m[0])
    with pytest.raises(UserError, match=r"\(T, H, W\)"):
        load_mask_video(tmp_path / "flat.npy")


# --------------------------------------------------------------------------- CSV inputs and the report
def test_areas_csv_in_any_order_matches_masks(tmp_path):
    masks, ed, es = beating_masks()
    curve = mask_areas(masks)
    rows = [("a.avi", f, curve[f]) for f in range(len(curve))] + [("b", f, 5.0) for f in range(10)]
    df = pd.DataFrame(rows, columns=["FileName", "Frame", "Area"]).sample(frac=1, random_state=0)
    df.to_csv(tmp_path / "areas.csv", index=False)
    signals = read_areas_csv(tmp_path / "areas.csv")
    assert signals.names == ["a", "b"]
    assert np.array_equal(signals.curve(0), curve) and signals.lengths.tolist() == [len(curve), 10]
    filelist = pd.DataFrame({"FileName": ["a", "b", "c"], "FPS": [50.0, 25.0, 50.0], "Split": ["TEST"] * 3})
    table, summary = evaluate_afd(signals, filelist, {"a": (ed, es + 2)})
    assert table["FileName"].tolist() == ["a", "b"]
    assert summary["aFD_ED_frames"] == 0 and summary["aFD_ES_frames"] == 2
    assert summary["aFD_ES_ms"] == pytest.approx(2 / 50 * 1000)
    assert summary["videos_evaluated"] == 1
    assert summary["without_reference"] == ["b"] and summary["without_areas"] == ["c"]
    row_b = table.set_index("FileName").loc["b"]
    assert row_b["Reference"] == "no" and pd.isna(row_b["ED_delay"]) and row_b["ED_est"] == 0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("FileName,Frame,Size\na,0,1\n", "missing column"),
        ("FileName,Frame,Area\na,0,1\na,2,1\n", "0..n-1"),
        ("FileName,Frame,Area\na,0,1\na,0,2\n", "0..n-1"),
        ("FileName,Frame,Area\na,0.5,1\n", "row 2"),
        ("FileName,Frame,Area\na,0,x\n", "row 2"),
    ],
)
def test_areas_csv_errors(tmp_path, text, match):
    (tmp_path / "areas.csv").write_text(text)
    with pytest.raises(UserError, match=match):
        read_areas_csv(tmp_path / "areas.csv")


def test_reference_csv(tmp_path):
    (tmp_path / "ref.csv").write_text("FileName,ED,ES\na.avi,3,10\nb,,\n")
    assert read_reference_csv(tmp_path / "ref.csv") == {"a": (3, 10)}
    (tmp_path / "bad.csv").write_text("FileName,ED,ES\na,3,\n")
    with pytest.raises(UserError, match="both"):
        read_reference_csv(tmp_path / "bad.csv")


def test_groups_by_length_and_split_selection():
    signals = AreaSignals.from_curves({"x": np.arange(5.0), "y": np.arange(3.0), "z": np.ones(5)})
    groups = {len(m[0]): idx.tolist() for idx, m in signals.groups()}
    assert groups == {3: [1], 5: [0, 2]}
    fl = pd.DataFrame({"FileName": ["x", "y"], "Split": ["TRAIN", "TEST"]})
    assert select_split(fl, "test")["FileName"].tolist() == ["y"]
    assert len(select_split(fl, "all")) == 2
    with pytest.raises(UserError, match="--split"):
        select_split(fl, "dev")
