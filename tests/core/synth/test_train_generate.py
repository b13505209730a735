"""Train a tiny mask-conditioned model on toy CAMUS, reload it, generate an SDM CAMUS data set, resume."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from echoseg.core.console import set_progress
from echoseg.core.data.check import check_dataset
from echoseg.core.data.imaging import load_mask
from echoseg.core.data.manifest import read_manifest, write_manifest
from echoseg.core.data.sdm_camus import read_sdm_camus
from echoseg.core.data.toy.camus import write_toy_camus
from echoseg.core.errors import UserError
from echoseg.core.models.diffusion import load_model
from echoseg.core.runs import Run
from echoseg.core.synth.generate import generate, plan_samples
from echoseg.core.synth.train import SynthTrainConfig, label_convention, load_pairs, log_line_every, train

SIZE = 32


@pytest.fixture(scope="module")
def camus(tmp_path_factory):
    root = tmp_path_factory.mktemp("camus")
    write_manifest(write_toy_camus(root, patients=5, size=SIZE, seed=0), root / "manifest.csv")
    return root


@pytest.fixture(scope="module")
def trained(camus, tmp_path_factory):
    run = Run.create("synth", "train", out=tmp_path_factory.mktemp("train") / "run")
    cfg = SynthTrainConfig(size=SIZE, steps=3, batch_size=2, device="cpu", checkpoint_every=2, cond_dropout=0.2)
    summary = train(run, camus, cfg)
    return run.path, summary


def test_pairs_from_camus_use_sdm_labels(camus):
    pairs = load_pairs(camus, SIZE)
    assert label_convention(pd.read_csv(camus / "manifest.csv")) == "camus"
    assert pairs.images.shape == (20, SIZE, SIZE) and pairs.labels.shape == pairs.images.shape
    assert set(np.unique(pairs.labels)) == {0, 1, 2, 3, 4}
    assert {"view", "phase", "sex", "age", "quality", "split"} <= set(pairs.table.columns)


def test_training_writes_a_reloadable_model(trained):
    path, summary = trained
    assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
    assert (path / "model" / "unet" / "config.json").is_file()
    assert (path / "model" / "scheduler" / "scheduler_config.json").is_file()
    assert (path / "checkpoints" / "latest.pt").is_file()
    assert (path / "samples" / "step-000003.png").is_file()
    unet, sched, meta = load_model(path)
    assert meta["size"] == SIZE and meta["cond_dropout"] == 0.2 and unet.config.in_channels == 6
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3


def test_training_logs_loss_lines_and_metrics(trained):
    path, _ = trained
    log = (path / "log.txt").read_text()
    # steps=3, checkpoint_every=2: a line at the checkpoint and one at the end, each with loss, lr, elapsed
    lines = [line for line in log.splitlines() if " step " in line and ": loss " in line]
    assert len(lines) == 2, log
    assert "step 2/3: loss " in lines[0] and "(checkpoint)" in lines[0] and "step 3/3: loss " in lines[1]
    assert all(" lr " in line and " elapsed " in line for line in lines)
    assert log.index("step 3/3") < log.index("model saved")
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert all({"step", "loss", "lr", "elapsed_s"} <= set(row) for row in rows)
    assert log_line_every(100_000, 10) == 1000 and log_line_every(20, 10) == 10 and log_line_every(3, 10) == 10
    assert log_line_every(1000, 1) == 10 and log_line_every(1000, 3) == 9


def test_training_shows_a_step_progress_bar(camus, tmp_path, capsys):
    cfg = SynthTrainConfig(size=SIZE, steps=2, batch_size=2, device="cpu", checkpoint_every=2, grid_count=1,
                           grid_steps=2)
    set_progress(True)
    try:
        train(Run.create("synth", "train", out=tmp_path / "bar"), camus, cfg)
    finally:
        set_progress(None)
    assert "synth train" in capsys.readouterr().err
    capsys.readouterr()
    train(Run.create("synth", "train", out=tmp_path / "quiet"), camus, cfg, progress=False)
    assert "synth train" not in capsys.readouterr().err


def test_resumed_training_matches_uninterrupted(camus, tmp_path):
    cfg = SynthTrainConfig(size=SIZE, steps=4, batch_size=2, device="cpu", checkpoint_every=2, log_every=1)
    full = Run.create("synth", "train", out=tmp_path / "full")
    train(full, camus, cfg)
    part = Run.create("synth", "train", out=tmp_path / "part")
    train(part, camus, SynthTrainConfig(**{**cfg.__dict__, "steps": 2}))
    part.close()  # the interrupted process is gone: its lock with it
    train(Run.resume(part.path, "synth", "train"), camus, cfg)
    a, _, _ = load_model(full.path)
    b, _, _ = load_model(part.path)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, msg=name)
    assert "resuming from step 2" in (part.path / "log.txt").read_text()


def test_generate_writes_sdm_camus_that_the_readers_accept(trained, camus, tmp_path):
    run = Run.create("synth", "generate", out=tmp_path / "gen")
    summary = generate(run, trained[0], camus, count=6, copies_per_mask=2, steps=3, batch_size=4, seed=7,
                       device="cpu")
    assert summary["images"] == 6
    df = read_sdm_camus(run.path)
    assert df["image"].nunique() == 6 and (df["source"] == "synthetic").all()
    assert set(df["label"]) == {1, 3, 4} and set(df["split"]) <= {"train", "val"}
    manifest = read_manifest(run.path)  # paths come back absolute (the file holds them relative to the run)
    assert {"seed", "rotation", "scale", "elastic_seed", "source_image", "sampler"} <= set(manifest.columns)
    src = read_manifest(camus).drop_duplicates("image").set_index("image")
    for r in manifest.drop_duplicates("image").itertuples():
        assert r.sex == src.loc[r.source_image, "sex"] and r.age == src.loc[r.source_image, "age"]
        lab = load_mask(r.mask)
        assert lab.shape == (SIZE, SIZE) and lab.max() <= 4
    report = check_dataset(run.path)
    assert report.layout == "sdm-camus" and not report.problems and report.table["image"].nunique() == 6
    from echoseg.core.prompts.build import build

    prompts = build(run.path, progress=False)
    assert prompts.kind == "sdm-camus"
    assert {f"p{k}" for k in range(7)} <= set(prompts.manifest.columns)
    assert "p7" not in prompts.manifest.columns or (prompts.manifest["p7"].fillna("") == "").all()


def test_generation_resumes_without_changing_written_samples(trained, camus, tmp_path):
    kw = {"count": 5, "copies_per_mask": 1, "steps": 2, "batch_size": 2, "seed": 3, "device": "cpu"}
    run = Run.create("synth", "generate", out=tmp_path / "gen")
    generate(run, trained[0], camus, **kw)
    plan = pd.read_csv(run.path / "plan.csv")
    files = [run.path / p for p in plan["image_rel"]]
    before = {f: f.read_bytes() for f in files}
    mtimes = {f: f.stat().st_mtime_ns for f in files[1:]}
    files[0].unlink()  # as if killed before this sample was written
    run.close()
    resumed = Run.resume(run.path, "synth", "generate")
    summary = generate(resumed, trained[0], camus, **kw)
    assert summary["images"] == 5
    assert files[0].read_bytes() == before[files[0]]  # regenerated identically from its seed
    assert all(f.stat().st_mtime_ns == mtimes[f] for f in files[1:])  # the others were skipped
    resumed.close()
    with pytest.raises(UserError, match="different sample plan"):
        generate(Run.resume(run.path, "synth", "generate"), trained[0], camus, **{**kw, "seed": 4})


def test_balanced_generation_reports_distributions(trained, camus, tmp_path):
    run = Run.create("synth", "generate", out=tmp_path / "gen")
    summary = generate(run, trained[0], camus, count=8, copies_per_mask=4, steps=2, batch_size=8, seed=0,
                       balance=("view", "sex"), tau_max=4, device="cpu")
    report = json.loads((run.path / "balance.json").read_text())
    assert report["balanced"] and report["attributes"] == ["view", "sex"]
    assert summary["distribution"]["after"] == report["after"]
    for attr in ("view", "sex"):
        counts = list(report["after"][attr].values())
        assert max(counts) <= 4 and sum(counts) == 8
    assert report["after"]["view"] == {"2CH": 4, "4CH": 4}


def test_plan_rejects_impossible_counts(camus):
    table = load_pairs(camus, SIZE).table
    with pytest.raises(UserError, match="copies-per-mask"):
        plan_samples(table, count=10_000, copies_per_mask=2, seed=0, size=SIZE)
    plan = plan_samples(table, count=None, copies_per_mask=2, seed=0, size=SIZE)
    assert len(plan) == 2 * (table["split"] != "test").sum()
    assert plan["name"].is_unique and (plan["seed"] == plan["index"]).all()
    assert not plan["split"].eq("test").any()
