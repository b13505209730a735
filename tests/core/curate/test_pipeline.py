"""The curation pipeline on a toy synthetic run with planted defects: each is rejected by the right filter."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echoseg.core.curate import CurateConfig, curate
from echoseg.core.data.manifest import read_manifest
from echoseg.core.errors import UserError
from echoseg.core.runs import Run, run_context

# defect -> the (filter, check) pairs that must reject it, and nothing else
EXPECTED = {
    "blank": {("sanity", "constant")},
    "noise": {("agreement", "dice_min")},
    "nan": {("sanity", "nonfinite")},
    "empty_mask": {("sanity", "mask_empty"), ("sanity", "no_cone")},
    "real_copy": {("dup", "cosine")},
    "contradiction": {("agreement", "dice_min")},
    "near_bad": {("bad", "cosine")},
}


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _curate(planted, tmp_path, name="out", **options):
    cfg = CurateConfig(synth=str(planted.synth), bad=str(planted.bad), real=str(planted.real), encoder="pixels",
                       device="cpu", **options)
    run = Run.create("curate", None, out=tmp_path / name, config={})
    with run_context(run):
        summary = curate(cfg, run, segmenter=planted.oracle, progress=False)
    return run.path, summary


def test_planted_defects_rejected_by_the_right_filter(planted, tmp_path):
    before = _tree_digest(planted.synth)
    out, summary = _curate(planted, tmp_path)
    assert _tree_digest(planted.synth) == before  # the input run is only read
    rejected = pd.read_csv(out / "rejected.csv", keep_default_na=False)
    for stem, defect in planted.planted.items():
        got = set(zip(rejected.loc[rejected["sample"] == stem, "filter"],
                      rejected.loc[rejected["sample"] == stem, "check"], strict=True))
        assert got == EXPECTED[defect], (stem, defect, got)
    by = {(r.sample, r.filter): r for r in rejected.itertuples()}
    assert by[("patient0090_2CH_ED_training_0", "sanity")].score == 0.0  # std of a blank image
    assert by[("patient0094_2CH_ED_training_0", "dup")].score == pytest.approx(1.0, abs=1e-5)
    assert by[("patient0094_2CH_ED_training_0", "dup")].detail.endswith(".png")  # the real image it copies
    assert by[("patient0096_2CH_ED_training_0", "bad")].score > 0.9
    assert by[("patient0096_2CH_ED_training_0", "bad")].detail.endswith("exemplar.png")
    assert by[("patient0095_2CH_ED_training_0", "agreement")].score < 0.5
    assert by[("patient0091_2CH_ED_training_0", "agreement")].score == 0.0
    assert rejected["primary"].astype(str).isin(["True"]).all()  # one filter each here
    assert set(rejected["keep_if"]) >= {">=", "<="}

    kept = read_manifest(out)
    source = read_manifest(planted.synth)
    assert list(kept.columns) == list(source.columns)
    assert sorted(kept["stem"].unique()) == sorted(planted.clean)  # every clean image kept, with all its rows
    assert len(kept) == 3 * len(planted.clean)

    assert summary["input"] == {"images": len(planted.clean) + 8, "samples": 3 * (len(planted.clean) + 8)}
    assert summary["kept"]["images"] == len(planted.clean)
    f = summary["filters"]
    assert f["sanity"]["failed_images"] == 3 and f["sanity"]["checks"]["constant"] == 1
    assert f["agreement"]["failed_images"] == 2 and f["agreement"]["failed_samples"] == 6
    assert f["bad"]["failed_images"] == 2 and f["dup"]["failed_images"] == 1
    assert f["zero_shot"]["enabled"] is False and f["balance"]["enabled"] is False
    assert summary["scores"]["dup_sim"]["max"] == pytest.approx(1.0, abs=1e-5)
    assert summary["encoder"] == "pixels:32"
    assert json.loads((out / "summary.json").read_text())["kept"] == summary["kept"]
    for fig in ("kept.png", "rejected.png", "hist_dice_min.png", "hist_bad_sim.png", "hist_dup_sim.png",
                "hist_std.png"):
        assert (out / "figures" / fig).stat().st_size > 1000
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == summary["input"]["images"]
    emb = np.load(out / "embeddings" / "synthetic.npy")
    assert emb.shape == (summary["input"]["images"] - 3, 32 * 32)  # sanity failures are not embedded


def test_per_structure_agreement_segmenter_encoder_and_balance(planted, tmp_path):
    cfg = CurateConfig(synth=str(planted.synth), real=str(planted.real), aggregate="structure", min_dice=0.7,
                       balance=["view"], tau_max=3, skip=["bad"], device="cpu", bad=str(planted.bad))
    run = Run.create("curate", None, out=tmp_path / "s", config={})
    with run_context(run):
        summary = curate(cfg, run, segmenter=planted.oracle, progress=False)
    rejected = pd.read_csv(run.path / "rejected.csv", keep_default_na=False)
    agree = rejected[rejected["filter"] == "agreement"]
    # per structure: rows are sample ids, each carries its structure
    assert set(agree["structure"]) <= {"LV", "MYO", "LA"} and agree["sample"].str.endswith(("_LV", "_MYO", "_LA")).all()
    assert summary["encoder"] == "segmenter:unet"
    dup = rejected[rejected["filter"] == "dup"]
    assert "patient0094_2CH_ED_training_0" in set(dup["sample"])
    assert dup.loc[dup["sample"] == "patient0094_2CH_ED_training_0", "score"].iloc[0] == pytest.approx(1.0, abs=1e-4)
    assert "bad" not in set(rejected["filter"]) and summary["filters"]["bad"]["enabled"] is False
    kept = read_manifest(run.path)
    assert kept.drop_duplicates("image")["view"].value_counts().max() <= 3
    assert summary["balance_after"]["view"] and max(summary["balance_after"]["view"].values()) <= 3
    bal = rejected[rejected["filter"] == "balance"]
    assert len(bal) and (bal["threshold"] == 3).all() and bal["detail"].str.startswith("capped: view=").all()
    assert not set(kept["sample_id"]) & set(agree["sample"])


def test_config_validation(planted):
    with pytest.raises(UserError, match="--tau-max"):
        CurateConfig(synth="x", balance=["view"]).validate()
    with pytest.raises(UserError, match="--segmenter"):
        CurateConfig(synth="x", real="y").validate()
    with pytest.raises(UserError, match="--aggregate"):
        CurateConfig(synth="x", aggregate="max").validate()
    with pytest.raises(UserError, match="--skip"):
        CurateConfig(synth="x", skip=["nope"]).validate()
    with pytest.raises(UserError, match="--encoder"):
        CurateConfig(synth="x", encoder="clip").validate()
    with pytest.raises(UserError, match="--bad-sim"):
        CurateConfig(synth="x", bad_sim=2.0).validate()
    assert CurateConfig(synth="x", segmenter="r").enabled("agreement")
    assert not CurateConfig(synth="x", segmenter="r", skip=["agreement"]).enabled("agreement")
