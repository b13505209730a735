"""`curate --mllm`: a local image-text-to-text model answers a quality question per image; an image is kept when its
answer matches --mllm-keep. A tiny random LLaVA (built offline) runs the real path; a stub judge gives mixed answers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from synth_fixtures import tiny_llava

from echoseg.cli import main
from echoseg.core.curate.mllm import MllmJudge, ask_files, check_mllm, keep_pattern
from echoseg.core.curate.run import CurateConfig, curate
from echoseg.core.data.imaging import load_image
from echoseg.core.data.manifest import write_manifest
from echoseg.core.data.toy.sdm import write_toy_sdm_camus
from echoseg.core.errors import UserError
from echoseg.core.runs import Run


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mllm-syn")
    write_manifest(write_toy_sdm_camus(root, patients=1, copies=1, size=32, seed=0), root / "manifest.csv")
    return root


@pytest.fixture(scope="module")
def llava(tmp_path_factory) -> Path:
    return tiny_llava(tmp_path_factory.mktemp("llava") / "model")


def _images(toy: Path) -> list[str]:
    return sorted(set(pd.read_csv(toy / "manifest.csv")["image"].map(lambda p: str(toy / p))))


def test_tiny_llava_answers_greedily_in_batches(llava, toy):
    judge = MllmJudge(str(llava), "is this a good echocardiography image ?", device="cpu", max_new_tokens=3)
    assert "<image>" in judge.prompt and judge.prompt.rstrip().endswith("assistant :")  # the chat template
    paths = _images(toy)
    answers = ask_files(judge, paths, batch_size=3, progress=False)
    assert len(answers) == len(paths) and all(isinstance(a, str) for a in answers)
    assert answers == judge.ask([load_image(p) for p in paths])  # greedy: batching changes nothing
    plain = MllmJudge(str(tiny_llava(llava.parent / "nochat", chat=False)), "good ?", device="cpu")
    assert plain.prompt.startswith("<image>")  # no chat template: after the image token
    assert len(plain.ask([load_image(paths[0])])) == 1


@pytest.mark.parametrize("keep", [".*", "^this answer never comes$"])
def test_curate_keeps_or_rejects_on_the_answer(llava, toy, tmp_path, keep):
    cfg = CurateConfig(synth=str(toy), encoder="pixels", mllm=str(llava), mllm_keep=keep, mllm_max_new_tokens=3,
                       batch_size=4, device="cpu")
    run = Run.create("curate", None, out=tmp_path / "c")
    summary = curate(cfg, run, progress=False)
    n = summary["input"]["images"]
    scores = pd.read_csv(run.path / "scores.csv", keep_default_na=False)
    assert scores["mllm_answer"].map(type).eq(str).all() and len(scores) == n
    rejected = pd.read_csv(run.path / "rejected.csv", keep_default_na=False)
    assert summary["filters"]["mllm"]["enabled"] and summary["mllm_model"] == str(llava)
    if keep == ".*":
        assert summary["kept"]["images"] == n and rejected.empty
    else:
        assert summary["kept"]["images"] == 0 and (rejected["filter"] == "mllm").all() and len(rejected) == n
        answers = dict(zip(scores["image"], scores["mllm_answer"], strict=True))
        assert all(r.detail == answers[r.image] for r in rejected.itertuples())  # the answer is the reason


def test_stub_answers_split_kept_and_rejected(toy, tmp_path):
    answers = iter(["Yes.", "no", " YES ", "It is noise."] * 10)

    class Judge:
        name = "stub"

        def ask(self, images):
            return [next(answers) for _ in images]

    cfg = CurateConfig(synth=str(toy), encoder="pixels", mllm="stub", batch_size=2, device="cpu")
    run = Run.create("curate", None, out=tmp_path / "c")
    summary = curate(cfg, run, judge=Judge(), progress=False)
    scores = pd.read_csv(run.path / "scores.csv").set_index("image")
    rejected = pd.read_csv(run.path / "rejected.csv")
    kept = pd.read_csv(run.path / "manifest.csv")["image"].map(lambda p: str(run.path / p)).map(Path)
    matched = {Path(i) for i, a in scores["mllm_answer"].items() if keep_pattern(r"^\W*yes").search(a)}
    assert {Path(p).resolve() for p in kept} == {p.resolve() for p in matched}
    assert set(rejected["detail"]) == {"no", "It is noise."} and summary["mllm_kept"] == len(matched) > 0
    assert json.loads((run.path / "summary.json").read_text())["filters"]["mllm"]["keep"] == r"^\W*yes"


def test_bad_mllm_options(llava, toy, tmp_path, capsys):
    with pytest.raises(UserError, match="--mllm-keep"):
        keep_pattern("(unclosed")
    with pytest.raises(UserError, match="not a transformers model folder"):
        check_mllm(str(toy))
    cases = {"model folder not found": ["--mllm", str(tmp_path / "none")],
             "--mllm-keep": ["--mllm", str(llava), "--mllm-keep", "("],
             "--mllm-question": ["--mllm", str(llava), "--mllm-question", " "],
             "--mllm-max-new-tokens": ["--mllm", str(llava), "--mllm-max-new-tokens", "0"]}
    for expected, extra in cases.items():
        capsys.readouterr()
        assert main(["curate", str(toy), "--encoder", "pixels", *extra, "--out", str(tmp_path / "c")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
        assert not (tmp_path / "c").exists()
