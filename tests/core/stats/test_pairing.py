"""Pairing per-sample tables: keys, regex keys, unpaired/duplicate/NaN checks, published Synthetic Boost files."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echoseg.core.errors import UserError
from echoseg.core.models import list_models
from echoseg.core.models.base import SegModel
from echoseg.core.runs import Run, run_context
from echoseg.core.stats.labels import TEXT_FREE_MODELS, describe_run, run_labels, short_labels
from echoseg.core.stats.pairing import KeySpec, pair_runs, pair_tables, read_table

SB_REGEX = r"mask_(?P<structure>\d)/(?P<stem>[^/]+)_gt\.png$"


def per_sample(n: int = 300, seed: int = 0, shift: float = 0.0) -> pd.DataFrame:
    """A per_sample.csv frame in the layout of docs/architecture.md."""
    rng = np.random.default_rng(seed)
    ids = [f"patient{i // 3:04d}_2CH_ED_{'LV MYO LA'.split()[i % 3]}" for i in range(n)]
    return pd.DataFrame({
        "sample_id": ids, "image": [f"/data/{i}.nii.gz" for i in ids], "structure": ["LV", "MYO", "LA"] * (n // 3),
        "prompt": "p0", "dice": np.clip(rng.normal(0.8 + shift, 0.05, n), 0, 1), "iou": rng.uniform(0.5, 0.9, n),
        "hd95": rng.uniform(2, 9, n),
    })


def synthetic_boost_csv(path: Path, prefix: str, seed: int, shift: float = 0.0, shuffle: bool = True) -> Path:
    """A metrics.csv in the published Synthetic Boost format (percentages, absolute paths of another machine)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in (1, 2, 3):
        for p in range(1, 11):
            for view, phase in (("2CH", "ED"), ("4CH", "ES")):
                dice = float(np.clip(rng.normal(80 + shift + k, 5), 0, 100))
                rows.append({"filename": f"{prefix}/p0/mask_{k}/patient{p:04d}_{view}_{phase}_gt.png",
                             "iou": dice * 0.7, "dice": dice, "hausdorff_distance": rng.uniform(5e3, 2e4),
                             "ones_dice_diff": dice * 0.6, "zeros_dice_diff": dice})
    df = pd.DataFrame(rows)
    if shuffle:
        df = df.sample(frac=1.0, random_state=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, float_format="%.4f")
    return path


def write(tmp_path: Path, name: str, df: pd.DataFrame) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(p, index=False)
    return p


def test_pairs_on_sample_id_in_any_order(tmp_path):
    a = per_sample()
    b = per_sample(seed=1).sample(frac=1.0, random_state=0)
    run_b = tmp_path / "run_b"
    write(run_b, "per_sample.csv", b)
    pairing = pair_tables(read_table(write(tmp_path, "a.csv", a)), read_table(run_b), metric="dice")
    assert (pairing.n_paired, pairing.only_a, pairing.only_b, len(pairing.data)) == (300, 0, 0, 300)
    merged = a.merge(b, on="sample_id")
    got = pairing.data.set_index("__key__")
    assert np.allclose(got.loc[merged["sample_id"], "a"], merged["dice_x"])
    assert np.allclose(got.loc[merged["sample_id"], "b"], merged["dice_y"])


def test_group_by_columns_and_multi_column_key(tmp_path):
    a, b = per_sample(), per_sample(seed=2)
    pa, pb = write(tmp_path, "a.csv", a), write(tmp_path, "b.csv", b)
    pairing = pair_tables(read_table(pa), read_table(pb), key=KeySpec(("sample_id", "prompt")), group_by=("structure",))
    assert sorted(pairing.data["structure"].unique()) == ["LA", "LV", "MYO"]
    with pytest.raises(UserError, match="--group-by 'view'"):
        pair_tables(read_table(pa), read_table(pb), group_by=("view",))


def test_unpaired_limit_and_allow(tmp_path):
    a = per_sample()
    b = per_sample(seed=1).iloc[:290]  # 10 of 300 keys (3.3%) only in A
    pa, pb = write(tmp_path, "a.csv", a), write(tmp_path, "b.csv", b)
    with pytest.raises(UserError, match=r"10 of 300 keys \(3.3%\) are unpaired.*--allow-unpaired"):
        pair_tables(read_table(pa), read_table(pb))
    pairing = pair_tables(read_table(pa), read_table(pb), allow_unpaired=True)
    assert (pairing.n_paired, pairing.only_a, pairing.only_b) == (290, 10, 0)
    # 2 of 300 (0.67%) is within the 1% tolerance
    ok = pair_tables(read_table(pa), read_table(write(tmp_path, "c.csv", per_sample(seed=1).iloc[:298])))
    assert ok.only_a == 2


def test_nan_dropped_and_counted(tmp_path):
    a, b = per_sample(), per_sample(seed=1)
    a.loc[[0, 5], "dice"] = np.nan
    b.loc[[5, 7], "dice"] = np.inf
    pairing = pair_tables(read_table(write(tmp_path, "a.csv", a)), read_table(write(tmp_path, "b.csv", b)))
    assert pairing.dropped_nonfinite == 3 and len(pairing.data) == 297
    assert pairing.info()["dropped_nonfinite"] == 3


def test_errors_name_file_and_problem(tmp_path):
    a = per_sample()
    pa = write(tmp_path, "a.csv", a)
    dup = write(tmp_path, "dup.csv", pd.concat([a, a.iloc[:2]]))
    with pytest.raises(UserError, match=r"dup\.csv: 2 key\(s\) occur more than once"):
        pair_tables(read_table(pa), read_table(dup))
    with pytest.raises(UserError, match=r"a\.csv: no metric column 'dsc'"):
        pair_tables(read_table(pa), read_table(pa), metric="dsc")
    text = a.assign(dice=a["dice"].astype(str))
    text.loc[3, "dice"] = "n/a?"
    with pytest.raises(UserError, match="non-numeric"):
        pair_tables(read_table(pa), read_table(write(tmp_path, "t.csv", text)))
    other = a.assign(sample_id=a["sample_id"] + "_x")
    with pytest.raises(UserError, match="no key in common"):
        pair_tables(read_table(pa), read_table(write(tmp_path, "o.csv", other)))
    with pytest.raises(UserError, match="no 'sample_id' column"):
        pair_tables(read_table(pa), read_table(write(tmp_path, "n.csv", a.drop(columns="sample_id"))))
    with pytest.raises(UserError, match="holds no per_sample.csv"):
        read_table(tmp_path)
    with pytest.raises(UserError, match="not a valid regular expression"):
        pair_tables(read_table(pa), read_table(pa), key=KeySpec(regex="(unclosed"))


def test_key_regex_on_published_format(tmp_path):
    a = synthetic_boost_csv(tmp_path / "real/cris/p0/metrics.csv", "/mnt/Enterprise/x/camus", 0)
    b = synthetic_boost_csv(tmp_path / "ptft/cris/p0/metrics.csv", "/home/y/asmus_out_masks/cris", 1, shift=2)
    with pytest.raises(UserError, match="no 'sample_id' column"):
        pair_runs(a, [b])
    with pytest.raises(UserError, match="no key in common"):  # whole paths differ between machines
        pair_runs(a, [b], key=KeySpec(("filename",)))
    [pairing] = pair_runs(tmp_path / "real/cris/p0", [tmp_path / "ptft/cris/p0"], key=KeySpec(regex=SB_REGEX),
                          group_by=("structure",))
    assert (pairing.label_a, pairing.label_b) == ("real", "ptft")
    assert pairing.n_paired == 60 and pairing.only_a == pairing.only_b == 0
    assert pairing.data["__key__"].iloc[0].count("/") == 1
    assert sorted(pairing.data["structure"].unique()) == ["1", "2", "3"]
    # a regex without groups keys on the whole match
    [plain] = pair_runs(a, [b], key=KeySpec(regex=r"[^/]+/[^/]+$"))
    assert plain.n_paired == 60 and plain.data["__key__"].str.startswith("mask_").all()
    bad = synthetic_boost_csv(tmp_path / "bad/metrics.csv", "/z", 2)
    with pytest.raises(UserError, match="does not match 60 of 60 values of column 'filename'"):
        pair_runs(a, [bad], key=KeySpec(regex=r"label_(\d)/"))


def test_short_labels():
    assert short_labels(["/r/real/cris/p0/metrics.csv", "/r/synth/cris/p0/metrics.csv"]) == ["real", "synth"]
    assert short_labels(["/r/a/per_sample.csv", "/r/b/c/per_sample.csv"]) == ["a", "b/c"]
    assert short_labels(["/r/a.csv", "/r/b.csv"]) == ["a.csv", "b.csv"]


def test_reads_real_published_metrics(reference):
    real = reference("synthetic-boost/metrics/camus_metrics_reduce_lr/clip_seg_bs_128/p0/metrics.csv")
    ptft = reference("synthetic-boost/metrics", "pt_on_sdm_camus_ft_on_camus_metrics_reduce_lr",
                     "clip_seg_bs_128/p0/metrics.csv")
    [pairing] = pair_runs(real, [ptft], key=KeySpec(regex=SB_REGEX), group_by=("structure",))
    assert (pairing.n_paired, pairing.only_a, pairing.only_b, pairing.dropped_nonfinite) == (600, 0, 0, 0)
    assert pairing.data.groupby("structure").size().to_dict() == {"1": 200, "2": 200, "3": 200}
    assert 0 < pairing.data["a"].mean() <= 100  # percentages


def _train_run(path: Path, model: str, prompt: str, source: str, init_from: Path | None = None) -> Path:
    run = Run.create("train", out=path, config={"model": model, "prompt": prompt,
                                                "init_from": str(init_from) if init_from else None})
    with run_context(run):
        run.write_summary({"data": {"train": {"source": [source]}}})
    per_sample().to_csv(path / "per_sample.csv", index=False)
    return path


def test_text_free_models_match_the_model_classes():
    for name in list_models("segmentation"):
        module = importlib.import_module(f"echoseg.core.models.{name}")
        [cls] = [c for _, c in inspect.getmembers(module, inspect.isclass)
                 if issubclass(c, SegModel) and c is not SegModel and c.__module__ == module.__name__]
        assert (name in TEXT_FREE_MODELS) == (not cls.uses_text), name


def test_runs_are_labelled_by_name_else_by_their_config(tmp_path):
    stamps = tmp_path / "runs" / "train"
    clip = _train_run(stamps / "20240101-120000", "clipseg", "p7", "real")
    synth = _train_run(stamps / "20240101-120100", "unet", "p4", "synthetic")
    ptft = _train_run(stamps / "20240101-120200", "unet", "p4", "real", init_from=synth)
    named = _train_run(stamps / "20240101-120300_baseline", "unet", "p4", "real")
    chosen = _train_run(tmp_path / "train-cris-real", "cris", "p0", "real")
    assert describe_run(clip) == "clipseg p7 real"  # text-free unet gets no prompt
    assert run_labels([clip, synth, ptft, named, chosen / "per_sample.csv"]) == [
        "clipseg p7 real", "unet synthetic", "unet synthetic->real", "baseline", "train-cris-real"]
    [pairing] = pair_runs(clip, [ptft])
    assert (pairing.label_a, pairing.label_b) == ("clipseg p7 real", "unet synthetic->real")
    # equal descriptions stay apart: the differing part of their paths is added, then a number
    twin = _train_run(stamps / "20240101-120400", "clipseg", "p7", "real")
    assert run_labels([clip, twin]) == ["clipseg p7 real (20240101-120000)", "clipseg p7 real (20240101-120400)"]
    assert run_labels([clip, clip], ["x", "x"]) == ["clipseg p7 real (x) #1", "clipseg p7 real (x) #2"]
    # files outside run directories keep the short path labels
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        per_sample().to_csv(tmp_path / name / "per_sample.csv", index=False)
    [plain] = pair_runs(tmp_path / "a", [tmp_path / "b"])
    assert (plain.label_a, plain.label_b) == ("a", "b")
