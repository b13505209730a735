"""run.json provenance: input runs by id and hashes, data sets by content, git state, library versions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
from safetensors.torch import save_file

from echoseg.core.data.hashing import file_digest, files_digest
from echoseg.core.data.manifest import write_manifest
from echoseg.core.data.toy.camus import write_toy_camus
from echoseg.core.data.toy.echonet import write_toy_echonet
from echoseg.core.runs import Run, run_context


def _record(path):
    return json.loads((path / "run.json").read_text())


def test_run_records_id_git_state_and_the_libraries_it_used(tmp_path):
    with run_context(Run.create("stats", "wilcoxon", out=tmp_path / "r", config={})) as run:
        np.zeros(1)
    rec = _record(run.path)
    assert len(rec["run_id"]) == 32
    env = rec["environment"]
    assert "git_dirty" in env and env["git_dirty"] in (True, False, None)
    assert env["libraries"]["numpy"] == np.__version__ and "torch" in env["libraries"]


def test_input_runs_are_recorded_with_id_and_hashes_of_run_json_and_weights(tmp_path):
    with run_context(Run.create("train", None, out=tmp_path / "teacher", config={})) as teacher:
        (teacher.path / "checkpoints").mkdir()
        save_file({"w": torch.ones(2)}, str(teacher.path / "checkpoints" / "best.safetensors"))
    with run_context(Run.create("distill", None, out=tmp_path / "kd", config={},
                                inputs={"teacher": teacher.path})) as kd:
        pass
    entry = _record(kd.path)["inputs"]["teacher"]
    assert entry["run_id"] == _record(teacher.path)["run_id"] and entry["command"] == "train"
    assert entry["run_json_sha256"] == file_digest(teacher.path / "run.json")
    assert entry["weights"] == {"checkpoints/best.safetensors": file_digest(
        teacher.path / "checkpoints" / "best.safetensors")}


def test_data_sets_are_hashed_by_content_the_same_after_a_copy(tmp_path):
    root = tmp_path / "camus"
    write_manifest(write_toy_camus(root, patients=2, size=32, seed=1), root / "manifest.csv")
    echo = tmp_path / "echo"
    write_toy_echonet(echo, videos=2, frames=16, size=32, seed=1)
    with run_context(Run.create("prompts", "build", out=tmp_path / "p", config={},
                                inputs={"data": root, "videos": echo})) as run:
        pass
    inputs = _record(run.path)["inputs"]
    assert inputs["data"]["content_files"] == 16  # 8 images and their 8 masks
    assert inputs["videos"]["content_files"] == 4  # 2 videos, FileList.csv and VolumeTracings.csv
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    images = sorted({str(p) for p in copy.rglob("*.nii.gz")})
    assert files_digest(images, copy) == files_digest(sorted({str(p) for p in root.rglob("*.nii.gz")}), root)
    with run_context(Run.create("prompts", "build", out=tmp_path / "p2", config={}, inputs={"data": copy})) as again:
        pass
    assert _record(again.path)["inputs"]["data"]["content_sha256"] == inputs["data"]["content_sha256"]
    first = sorted(copy.rglob("*.nii.gz"))[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed, same size
    first.write_bytes(bytes(data))
    with run_context(Run.create("prompts", "build", out=tmp_path / "p3", config={}, inputs={"data": copy})) as third:
        pass
    assert _record(third.path)["inputs"]["data"]["content_sha256"] != inputs["data"]["content_sha256"]
