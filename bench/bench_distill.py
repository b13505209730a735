"""Benchmark: the EchoDFKD student against its teacher.

1. Speed: inference frames per second on 112x112 grey clips on the CPU of the convlstm student B4L1 (714,577
   parameters; clips of 16 frames, 2 per batch, one causal pass) and of EchoNet-Dynamic's teacher
   ``deeplabv3_resnet50`` (1 output, random weights: speed does not depend on them; batches of 8 frames). Both run
   in channels-last memory format under ``torch.inference_mode``. Target: student / teacher >= 10x.
2. aFD on toy EchoNet videos with known ED/ES: the teacher is an *oracle* — the toy generator's true LV masks
   (``toy_lv_masks``) served as soft labels 0.05/0.95 — because no trained DeepLabv3 checkpoint is available offline;
   a small student (B2L1, CPU-sized), without and with ``--skips``, is distilled from it on 12 videos of 48 frames
   at 48x48 for 6 epochs, and all are scored with the ``eval afd`` machinery (references from VolumeTracings.csv)
   and Dice against the tracings. Reported, not a pass criterion.

Run: ``python bench/bench_distill.py`` (prints JSON) or ``python bench/run_all.py distill``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

NAME = "distill"
TARGET_RATIO = 10.0
SIZE, CLIP, CLIPS, TEACHER_BATCH, REPEATS = 112, 16, 2, 8, 2


def _fps(fn, frames: int, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return frames / best


def speed() -> dict:
    """Frames per second of student (B4L1) and teacher (deeplabv3_resnet50) on 112x112 input."""
    from echoseg.core.models import build_model
    from echoseg.core.models.teachers import build_deeplabv3

    torch.manual_seed(0)
    cl = torch.channels_last
    student = build_model("convlstm", "base", blocks=4, layers=1).eval().to(memory_format=cl)
    teacher = build_deeplabv3().eval().to(memory_format=cl)
    clips = torch.randn(CLIPS, CLIP, 1, SIZE, SIZE)
    batch = torch.randn(TEACHER_BATCH, 3, SIZE, SIZE).contiguous(memory_format=cl)
    with torch.inference_mode():
        s_fps = _fps(lambda: student(clips), CLIPS * CLIP)
        t_fps = _fps(lambda: teacher(batch)["out"], TEACHER_BATCH)
    return {"student_fps": s_fps, "teacher_fps": t_fps, "fps_ratio": s_fps / t_fps,
            "student_parameters": student.num_parameters(),
            "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
            "student_gflops_per_frame": student.gflops(SIZE, SIZE),
            "threads": torch.get_num_threads()}


def toy_afd(epochs: int = 6) -> dict:
    """Distil a B2L1 student from the oracle teacher on toy videos; aFD of both (frames)."""
    from echoseg.core.data.echonet import read_filelist
    from echoseg.core.data.toy_echonet import toy_lv_masks, write_toy_echonet
    from echoseg.core.data.video import load_video
    from echoseg.core.distill import select_videos
    from echoseg.core.distill.pseudo import PseudoLabels, cache_folder
    from echoseg.core.distill.report import evaluate_model
    from echoseg.core.distill.train import DistillConfig, VideoSet, load_student, train_student
    from echoseg.core.eval.afd_report import select_split
    from echoseg.core.runs import Run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "echo"
        write_toy_echonet(root, videos=12, frames=48, size=48, seed=7)
        spec = "run:oracle"
        cache = PseudoLabels(cache_folder(spec, root), root)
        fl = read_filelist(root)
        for name in fl["FileName"]:
            frames = load_video(root / "Videos" / f"{name}.avi")
            cache.write(name, frames, np.where(toy_lv_masks(root, name) > 0, 0.95, 0.05))
        train, val = select_videos(root)
        rows = select_split(fl, "all")
        frames_of = lambda n: cache.frames(n, mmap=False)  # noqa: E731
        pick = ("aFD_ED_frames", "aFD_ES_frames", "dice_mean_tracings")
        _, t_sum, _ = evaluate_model(lambda n, f: cache.labels(n, mmap=False) / 255.0, 0.5, root, rows,
                                     frames_of, "oracle teacher", progress=False)
        out: dict = {"oracle_teacher": {k: t_sum[k] for k in pick}, "videos": len(rows), "epochs": epochs}
        for skips in (False, True):
            cfg = DistillConfig(teacher=spec, data=str(root), blocks=2, layers=1, skips=skips, seq_len=16,
                                epochs=epochs, batch_size=4, lr=3e-3, device="cpu", seed=0)
            label = "student_skips" if skips else "student"
            run = Run.create("distill", None, out=Path(tmp) / label, argv=["bench"])
            t0 = time.perf_counter()
            training = train_student(cfg, run, VideoSet(cache, train), VideoSet(cache, val), progress=False)
            seconds = time.perf_counter() - t0
            student, _ = load_student(run.path)
            _, s_sum, _ = evaluate_model(lambda n, f, m=student: m.predict(f), float(student.threshold), root,
                                         rows, frames_of, label, progress=False)
            out[label] = {**{k: s_sum[k] for k in pick}, "val_dice_vs_teacher": training["val_dice_vs_teacher"],
                          "parameters": student.num_parameters(), "train_seconds": seconds}
    return out


def run() -> dict:
    """Both parts; passed when the student is >= 10x faster than the teacher."""
    sp = speed()
    afd = toy_afd()
    return {"name": NAME,
            "metrics": {**sp, "toy_afd": afd},
            "target": f"student (convlstm B4L1) >= {TARGET_RATIO:g}x teacher (deeplabv3_resnet50) frames/s at "
                      f"{SIZE}x{SIZE} on CPU",
            "passed": bool(sp["fps_ratio"] >= TARGET_RATIO)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
