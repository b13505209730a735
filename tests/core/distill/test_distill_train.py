"""Student training from pseudo-labels: learning (the area curve tracks the teacher's: issue 18), warm start,
threshold choice, half resolution, exact resume, report rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from echoseg.core.data.echonet import read_filelist, video_path
from echoseg.core.data.toy.echonet import toy_lv_masks, write_toy_echonet
from echoseg.core.data.video import load_video
from echoseg.core.distill.pseudo import PseudoLabels, build_pseudo_labels
from echoseg.core.distill.report import evaluate_model, report_rows
from echoseg.core.distill.run import select_videos
from echoseg.core.distill.train import THRESHOLDS, DistillConfig, VideoSet, epoch_plan, frame_dice, train_student
from echoseg.core.errors import UserError
from echoseg.core.metrics.afd_report import select_split
from echoseg.core.models import build_model
from echoseg.core.models.artefacts import load_student
from echoseg.core.runs import Run


class NeverCalled:
    def predict(self, frames, batch_size=32):
        raise AssertionError("every video is cached already")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Toy videos labelled by an oracle teacher: the true LV masks, softened to 0.1 / 0.9."""
    from echoseg.core.distill import pseudo

    root = tmp_path_factory.mktemp("kd") / "echo"
    write_toy_echonet(root, videos=6, frames=18, size=32, seed=3)
    train, val = select_videos(root)
    cache = pseudo.PseudoLabels(pseudo.cache_folder("run:oracle", root), root)
    for name in train + val:
        frames = pseudo.load_video(pseudo.video_path(root, name))
        cache.write(name, frames, np.where(toy_lv_masks(root, name) > 0, 0.9, 0.1))
    build_pseudo_labels(NeverCalled(), "run:oracle", root, train + val, progress=False)
    return VideoSet(cache, train), VideoSet(cache, val)


def _cfg(**kw):
    base = dict(teacher="run:oracle", data="unused", blocks=2, layers=1, seq_len=6, epochs=2, batch_size=2,
                lr=3e-3, device="cpu", seed=0)
    base.update(kw)
    return DistillConfig(**base)


def test_epoch_plan_is_seeded_and_covers_every_video():
    a = epoch_plan(5, [10, 12, 8, 9, 20], 6, 2, seed=0, epoch=3)
    assert a == epoch_plan(5, [10, 12, 8, 9, 20], 6, 2, seed=0, epoch=3)
    assert a != epoch_plan(5, [10, 12, 8, 9, 20], 6, 2, seed=0, epoch=4)
    pairs = [p for batch in a for p in batch]
    assert sorted(i for i, _ in pairs) == [0, 1, 2, 3, 4]
    assert all(0 <= s <= [10, 12, 8, 9, 20][i] - 6 for i, s in pairs)


def _cold(student, frames: np.ndarray) -> np.ndarray:
    """The student's probabilities from a zero state (no warm-up)."""
    warmup, student.warmup = student.warmup, 0
    try:
        return student.predict(frames)
    finally:
        student.warmup = warmup


def test_warm_start_is_the_reflected_first_frames_and_chunk_independent():
    student = build_model("convlstm", "tiny", blocks=2, mean=60.0, std=40.0).eval()
    k = student.warmup
    assert k == 16 and student.spec()["warmup"] == k
    frames = np.random.default_rng(0).integers(0, 256, (k + 4, 16, 16), dtype=np.uint8)
    warm = student.predict(frames, batch_size=5)
    np.testing.assert_allclose(warm, student.predict(frames, batch_size=32), atol=1e-6)
    np.testing.assert_allclose(warm, _cold(student, np.concatenate([frames[k:0:-1], frames]))[k:], atol=1e-6)
    assert np.abs(_cold(student, frames) - warm)[:3].max() > 1e-4  # a cold start differs at the first frames
    short = frames[:3]  # fewer frames than the warm-up: frames 2..1 warm it
    np.testing.assert_allclose(student.predict(short), _cold(student, np.concatenate([short[2:0:-1], short]))[2:],
                               atol=1e-6)
    spec = {key: v for key, v in student.spec().items() if key != "warmup"}  # model.json of a student distilled before
    assert build_model("convlstm", spec).warmup == 0


def test_horizon_restarts_the_state_on_the_frames_before_each_span():
    student = build_model("convlstm", "tiny", blocks=2, mean=60.0, std=40.0, warmup=3, horizon=5).eval()
    assert student.spec()["horizon"] == 5
    frames = np.random.default_rng(1).integers(0, 256, (13, 16, 16), dtype=np.uint8)
    spans = student.predict(frames, batch_size=2)
    np.testing.assert_allclose(spans, student.predict(frames, batch_size=32), atol=1e-6)  # chunk independent
    student.horizon = 0
    whole = student.predict(frames)
    np.testing.assert_allclose(spans[:5], whole[:5], atol=1e-6)  # the first span: the reflected warm start
    for first in (5, 10):  # later spans: a zero state warmed forwards on the 3 frames before the span (causal)
        np.testing.assert_allclose(spans[first : first + 5], _cold(student, frames[first - 3 : first + 5])[3:],
                                   atol=1e-6)
    assert np.abs(spans - whole)[5:].max() > 1e-4  # one state over the video differs after the first span
    spec = {key: v for key, v in student.spec().items() if key != "horizon"}  # a student distilled before
    assert build_model("convlstm", spec).horizon == 0


def test_student_area_curve_tracks_its_teacher(tmp_path):
    """Issue 18: with enough steps (~60 here) the distilled student follows its teacher's LV area curve from the first
    frame on, so that ED/ES detection from it scores like the teacher's (aFD within 1 frame, ED and ES); from a cold
    state (no warm-up) the same weights track it worse."""
    root = tmp_path / "echo"
    write_toy_echonet(root, videos=6, frames=32, size=32, seed=7)  # cycles of 16 frames; an ED on frame 0
    train, val = select_videos(root)
    cache = PseudoLabels(tmp_path / "labels", root)
    rows = select_split(read_filelist(root), "all")
    for name in rows["FileName"]:
        cache.write(name, load_video(video_path(root, name)), np.where(toy_lv_masks(root, name) > 0, 0.9, 0.1))
    run = Run.create("distill", None, out=tmp_path / "kd", argv=["t"])
    train_student(_cfg(seq_len=16, epochs=15, batch_size=1), run, VideoSet(cache, train), VideoSet(cache, val),
                  progress=False)
    student, _ = load_student(run.path)
    thr = float(student.threshold)

    def frames_of(name: str) -> np.ndarray:
        return cache.frames(name, mmap=False)

    def teacher_probs(name: str, frames: np.ndarray) -> np.ndarray:
        return cache.labels(name, mmap=False) / 255.0

    _, teacher, _ = evaluate_model(teacher_probs, 0.5, root, rows, frames_of, "teacher", progress=False)
    _, warm, _ = evaluate_model(lambda n, f: student.predict(f), thr, root, rows, frames_of, "student", False)
    for phase in ("ED", "ES"):
        assert warm[f"aFD_{phase}_frames"] <= teacher[f"aFD_{phase}_frames"] + 1.0, (warm, teacher)
    corr = {"warm": [], "cold": []}
    for name in rows["FileName"]:
        target = (cache.labels(name) >= 128).sum(axis=(1, 2))
        for start, probs in (("warm", student.predict(frames_of(name))), ("cold", _cold(student, frames_of(name)))):
            corr[start].append(np.corrcoef((probs > thr).sum(axis=(1, 2)), target)[0, 1])
    assert np.mean(corr["warm"]) > max(0.8, np.mean(corr["cold"])) and min(corr["warm"]) > 0.6, corr


def test_frame_dice_edge_cases():
    p = torch.zeros(3, 4, 4, dtype=torch.bool)
    t = p.clone()
    p[1, :2] = True
    t[1, :1] = True
    t[2, 0, 0] = True
    np.testing.assert_allclose(frame_dice(p, t).numpy(), [1.0, 2 * 4 / 12, 0.0])


def test_train_half_res_and_exact_resume(videos, tmp_path):
    train_set, val_set = videos
    full = Run.create("distill", None, out=tmp_path / "full", argv=["t"])
    summary = train_student(_cfg(half_res=True), full, train_set, val_set, progress=False)
    assert summary["epochs_run"] == 2 and summary["threshold"] in THRESHOLDS
    rows = full.read_metrics()
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] + 0.05
    best = json.loads((full.path / "checkpoints" / "best.json").read_text())
    weights = load_file(str(full.path / "checkpoints" / "best.safetensors"))
    assert float(weights["threshold"]) == pytest.approx(best["threshold"])

    part = Run.create("distill", None, out=tmp_path / "part", argv=["t"])
    train_student(_cfg(half_res=True, epochs=1), part, train_set, val_set, progress=False)
    part.close()  # the interrupted process is gone: its lock with it
    resumed = Run.resume(tmp_path / "part", "distill", None, argv=["t"])
    train_student(_cfg(half_res=True, epochs=2), resumed, train_set, val_set, progress=False)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in resumed.read_metrics()]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in rows]
    last_a = load_file(str(full.path / "checkpoints" / "last.safetensors"))
    last_b = load_file(str(resumed.path / "checkpoints" / "last.safetensors"))
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def test_config_validation_and_report_rows():
    with pytest.raises(UserError, match="--seq-len"):
        _cfg(seq_len=0).validate()
    with pytest.raises(UserError, match="--precision"):
        _cfg(precision="fp8").validate()
    rows = report_rows({"costs": {"student": {"parameters": 5701, "gflops_per_frame": 0.1},
                                  "teacher": {"parameters": 39_000_000, "gflops_per_frame": 15.0}},
                        "thresholds": {"student": 0.45, "teacher": 0.5},
                        "validation": {"student_dice_vs_teacher": 0.9}})
    assert rows[0] == ("parameters", "5,701", "39,000,000")
    assert ("val Dice vs teacher", "0.9000", "—") in rows
    assert all(r[0] != "aFD ED (frames)" for r in rows)
