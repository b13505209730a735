"""Curation inside generation: a sample too similar to a known-bad image is re-queried with new seeds, kept only at or
below the threshold, else given up and recorded (SynCXR); the similarity is curate's (pixels encoder, centred)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from accelerate import PartialState
from synth_fixtures import build_tiny_sd

from echoseg.cli import main
from echoseg.core.curate.gate import BadImageGate
from echoseg.core.data.imaging import load_image
from echoseg.core.data.manifest import read_manifest, write_manifest
from echoseg.core.data.toy.camus import write_toy_camus
from echoseg.core.errors import UserError
from echoseg.core.io import write_png
from echoseg.core.runs import Run
from echoseg.core.synth.generate import generate
from echoseg.core.synth.regenerate import RECORDS_DIR, Sample, gate_summary, load_records, regenerate_bad
from echoseg.core.synth.text2img import generate_from_prompts

THRESHOLD = 0.5


def blob(seed: int) -> np.ndarray:
    """A 24 x 24 grey image drawn from ``seed``: random 3 x 3 blocks (what `pixels:8` sees, exactly)."""
    blocks = np.random.default_rng(seed).integers(20, 235, (8, 8)).astype(np.uint8)
    return np.kron(blocks, np.ones((3, 3), np.uint8))


STUCK = blob(999)  # what the stuck sample renders whatever its seed


def render(samples, seeds):
    return [STUCK if s.key == "s3" else blob(seed) for s, seed in zip(samples, seeds, strict=True)]


@pytest.fixture
def planted(tmp_path):
    """A run whose first pass is written, and bad exemplars that are near-copies of samples s0, s1 and s3."""
    run = Run.create("synth", "generate", out=tmp_path / "run")
    samples = [Sample(f"s{i}", run.path / "images" / f"s{i}.png", 100 + i) for i in range(6)]
    for s, img in zip(samples, render(samples, [s.seed for s in samples]), strict=True):
        write_png(s.image, img)
    bad = tmp_path / "bad"
    for i in (0, 1, 3):
        noisy = np.clip(load_image(samples[i].image).astype(int) + (np.arange(24 * 24).reshape(24, 24) % 3), 0, 255)
        write_png(bad / f"bad{i}.png", noisy.astype(np.uint8))
    return run, samples, bad


def _kept_similarities(run: Run, gate: BadImageGate, records: dict) -> list[float]:
    """The similarity of every kept image as it lies on disk, measured again from scratch."""
    mean = np.load(run.path / RECORDS_DIR / "mean.npy")
    kept = [run.path / r["image"] for r in records.values() if not r["given_up"]]
    sims, _ = gate.nearest(gate.embed([load_image(p) for p in kept]), mean)
    return sims.tolist()


def test_requeries_until_below_threshold_or_gives_up(planted):
    run, samples, bad = planted
    gate = BadImageGate(str(bad), "pixels:8", THRESHOLD)
    records = regenerate_bad(run, samples, render, gate, PartialState(cpu=True), max_tries=3, stride=len(samples),
                             batch_size=4, progress=False)
    assert set(records) == {s.key for s in samples}
    for key in ("s0", "s1"):  # copies of a bad exemplar: re-queried with seed + t * stride, then kept
        r = records[key]
        assert r["tries"] >= 2 and not r["given_up"] and r["sims"][0] > THRESHOLD
        assert r["seeds"] == [100 + int(key[1]) + t * 6 for t in range(r["tries"])]
        assert (run.path / "rejected" / f"{key}_try0.png").is_file()
        assert np.array_equal(load_image(run.path / r["image"]), blob(r["seed"]))
    stuck = records["s3"]  # renders the bad image whatever the seed: given up after every try
    assert stuck["given_up"] and stuck["tries"] == 3 and min(stuck["sims"]) > THRESHOLD
    assert not samples[3].image.exists()
    assert sorted(p.name for p in (run.path / "rejected").glob("s3_*")) == [f"s3_try{t}.png" for t in range(3)]
    assert all(records[k]["tries"] == 1 for k in ("s2", "s4", "s5"))
    # the acceptance: no kept sample exceeds the threshold (measured again on the written files)
    assert max(_kept_similarities(run, gate, records)) <= THRESHOLD
    summary = gate_summary(records, gate, 3)
    assert summary["given_up"] == 1 and summary["given_up_keys"] == ["s3"] and summary["regenerated"] == 2
    assert summary["queries"] == sum(r["tries"] for r in records.values())


def test_resume_repeats_an_unrecorded_sample_exactly(planted):
    run, samples, bad = planted
    gate = BadImageGate(str(bad), "pixels:8", THRESHOLD)
    state = PartialState(cpu=True)
    first = regenerate_bad(run, samples, render, gate, state, max_tries=3, stride=6, batch_size=4, progress=False)
    # as if killed after s0's final image was written but before its record: the image holds a later attempt
    path = run.path / RECORDS_DIR / "records.0.jsonl"
    lines = [ln for ln in path.read_text().splitlines() if json.loads(ln)["key"] != "s0"]
    path.write_text("\n".join(lines) + "\n")
    before = samples[0].image.read_bytes()
    again = regenerate_bad(run, samples, render, gate, state, max_tries=3, stride=6, batch_size=4, progress=False)
    assert again["s0"] == first["s0"] and samples[0].image.read_bytes() == before
    assert len(load_records(run.path)) == len(samples)


def test_gate_refuses_bad_inputs(tmp_path):
    (tmp_path / "bad").mkdir()
    with pytest.raises(UserError, match="no images found"):
        BadImageGate(str(tmp_path / "bad"), "pixels", THRESHOLD)
    write_png(tmp_path / "bad" / "x.png", blob(0))
    with pytest.raises(UserError, match="needs --encoder"):
        BadImageGate(str(tmp_path / "bad"), None, THRESHOLD)
    with pytest.raises(UserError, match="--encoder 'segmenter'"):
        BadImageGate(str(tmp_path / "bad"), "segmenter", THRESHOLD)
    with pytest.raises(UserError, match="--bad-sim"):
        BadImageGate(str(tmp_path / "bad"), "pixels", 2.0)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd") / "pipeline"
    build_tiny_sd(folder)
    return folder


def test_text_to_image_with_the_gate(tiny_sd, tmp_path):
    prompts = tmp_path / "reports.csv"
    pd.DataFrame({"report_id": [f"r{i}" for i in range(4)], "split": ["train", "train", "val", "train"],
                  "prompt": [f"apical view {i}" for i in range(4)], "seed": [7] * 4}).to_csv(prompts, index=False)
    kw = {"steps": 2, "batch_size": 4, "seed": 0, "device": "cpu"}
    plain = Run.create("synth", "generate", out=tmp_path / "plain")
    generate_from_prompts(plain, tiny_sd, prompts, **kw)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("prompt00001_000.png", "prompt00002_000.png"):  # the same seeds give these images again
        shutil.copyfile(plain.path / "images" / name, bad / name)
    run = Run.create("synth", "generate", out=tmp_path / "gated")
    gate = BadImageGate(str(bad), "pixels:8", THRESHOLD)
    summary = generate_from_prompts(run, tiny_sd, prompts, gate=gate, max_tries=3, **kw)
    records = load_records(run.path)
    assert records["prompt00001_000"]["sims"][0] > 0.99 and records["prompt00002_000"]["sims"][0] > 0.99
    assert summary["regenerate"]["regenerated"] + summary["regenerate"]["given_up"] == 2
    corpus = read_manifest(run.path)
    kept = {k for k, r in records.items() if not r["given_up"]}
    assert set(corpus["stem"]) == kept and (corpus["bad_sim"] <= THRESHOLD).all()
    assert (corpus["prompt_seed"] == 7).all()  # the prompts' own seed column is carried under another name
    by_stem = corpus.set_index("stem")
    for key in kept & {"prompt00001_000", "prompt00002_000"}:
        assert by_stem.at[key, "seed"] == records[key]["seed"] != records[key]["seeds"][0]
    assert max(_kept_similarities(run, gate, records)) <= THRESHOLD
    regen = pd.read_csv(run.path / "regenerate.csv")
    assert len(regen) == 4 and {"tries", "given_up", "bad_sim", "seeds", "sims"} <= set(regen.columns)

    hopeless = Run.create("synth", "generate", out=tmp_path / "hopeless")  # nothing can pass: all given up
    summary = generate_from_prompts(hopeless, tiny_sd, prompts, gate=BadImageGate(str(bad), "pixels:8", -1.0),
                                    max_tries=2, **kw)
    assert summary["regenerate"]["given_up"] == 4 and summary["kept"] == 0
    assert read_manifest(hopeless.path).empty and not list((hopeless.path / "images").glob("*.png"))
    assert len(list((hopeless.path / "rejected").glob("*.png"))) == 8


def test_label_map_route_with_the_gate(tmp_path):
    camus = tmp_path / "camus"
    write_manifest(write_toy_camus(camus, patients=3, size=32, seed=1), camus / "manifest.csv")
    assert main(["synth", "train", "--data", str(camus), "--config", "tiny", "--size", "32", "--steps", "1",
                 "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path / "model")]) == 0
    kw = {"copies_per_mask": 1, "steps": 2, "batch_size": 8, "device": "cpu"}
    plain = Run.create("synth", "generate", out=tmp_path / "plain")
    generate(plain, tmp_path / "model", camus, **kw)
    bad = tmp_path / "bad"
    bad.mkdir()
    first = read_manifest(plain.path).drop_duplicates("image")
    for image in first["image"].head(2):  # the same seeds give these images again
        shutil.copyfile(image, bad / Path(image).name)
    run = Run.create("synth", "generate", out=tmp_path / "gated")
    gate = BadImageGate(str(bad), "pixels", THRESHOLD)
    summary = generate(run, tmp_path / "model", camus, gate=gate, max_tries=3, **kw)
    records = load_records(run.path)
    copied = {Path(p).stem for p in first["image"].head(2)}
    assert all(records[k]["tries"] > 1 for k in copied) and summary["regenerate"]["checked"] == len(first)
    corpus = read_manifest(run.path)
    kept = {k for k, r in records.items() if not r["given_up"]}
    assert set(corpus["stem"]) == kept and (corpus["bad_sim"] <= THRESHOLD).all()
    for key in kept & copied:  # the same label map, new noise: the map is kept, the image changes
        row = corpus[corpus["stem"] == key].iloc[0]
        assert row["noise_seed"] != row["seed"] and row["noise_seed"] == records[key]["seed"]
        assert load_image(row["mask"]).shape == load_image(row["image"]).shape
    assert max(_kept_similarities(run, gate, records)) <= THRESHOLD
