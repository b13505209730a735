"""Text-to-image through a local diffusers pipeline: a tiny random Stable Diffusion built from configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synth_fixtures import build_tiny_sd

from echoseg.core.data.imaging import load_image
from echoseg.core.errors import UserError
from echoseg.core.runs import Run
from echoseg.core.synth.text2img import generate_from_prompts, load_pipeline, read_prompts


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd") / "pipeline"
    build_tiny_sd(folder)
    return folder


def test_read_prompts_formats(tmp_path):
    (tmp_path / "p.txt").write_text("# comment\nan apical four-chamber echo\n\n a two-chamber echo \n")
    assert read_prompts(tmp_path / "p.txt")["prompt"].tolist() == ["an apical four-chamber echo", "a two-chamber echo"]
    pd.DataFrame({"prompt": ["x", "y"], "view": ["2CH", "4CH"]}).to_csv(tmp_path / "p.csv", index=False)
    assert read_prompts(tmp_path / "p.csv")["view"].tolist() == ["2CH", "4CH"]
    (tmp_path / "p.json").write_text(json.dumps(["a", {"prompt": "b", "sex": "F"}]))
    assert read_prompts(tmp_path / "p.json")["prompt"].tolist() == ["a", "b"]
    (tmp_path / "bad.csv").write_text("text\nx\n")
    with pytest.raises(UserError, match="prompt"):
        read_prompts(tmp_path / "bad.csv")
    with pytest.raises(UserError, match="not found"):
        read_prompts(tmp_path / "none.txt")


def test_text_to_image_writes_images_and_manifest_and_resumes(tiny_sd, tmp_path):
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": ["apical four-chamber view", "two-chamber view of a female"],
                  "view": ["4CH", "2CH"]}).to_csv(prompts, index=False)
    run = Run.create("synth", "generate", out=tmp_path / "run")
    kw = {"count_per_prompt": 2, "guidance": 4.0, "steps": 2, "batch_size": 3, "seed": 5, "device": "cpu"}
    summary = generate_from_prompts(run, tiny_sd, prompts, **kw)
    assert summary["images"] == 4 and summary["pipeline_class"] == "StableDiffusionPipeline"
    manifest = pd.read_csv(run.path / "prompts_manifest.csv")
    assert not any(Path(p).is_absolute() for p in manifest["image"])  # relative to the run directory
    manifest["image"] = [str(run.path / p) for p in manifest["image"]]
    assert manifest["seed"].tolist() == [5, 6, 7, 8] and manifest["view"].tolist() == ["4CH", "4CH", "2CH", "2CH"]
    first = load_image(manifest["image"][0])
    assert first.shape[:2] == (16, 16)
    before = [open(p, "rb").read() for p in manifest["image"]]
    import os

    os.remove(manifest["image"][3])
    run.close()  # as if the first process had ended
    generate_from_prompts(Run.resume(run.path, "synth", "generate"), tiny_sd, prompts, **kw)
    after = [open(p, "rb").read() for p in manifest["image"]]
    assert after == before  # the missing image is regenerated identically, the others untouched
    assert not np.array_equal(load_image(manifest["image"][0]), load_image(manifest["image"][1]))


def test_not_a_pipeline(tmp_path):
    with pytest.raises(UserError, match="model_index.json"):
        load_pipeline(tmp_path)
