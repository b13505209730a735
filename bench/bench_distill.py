"""Benchmark: the EchoDFKD student against its teacher.

1. Speed: inference frames per second on the CPU, on the same random 112x112 grey frames, of the convlstm student
   B4L1 (714,577 parameters; clips of 16 frames, one causal pass each) and of EchoNet-Dynamic's teacher
   ``deeplabv3_resnet50`` (1 output, random weights: speed does not depend on them; the grey frames replicated to
   3 channels). Each model runs in its best honest configuration, chosen from the same sweep: channels-last
   memory, ``torch.inference_mode``, eval-mode BatchNorm folded into the convolutions (the student's folded fast
   path, which ``predict`` uses; ``torch.fx`` conv-BN fusion for the teacher), batch sizes (student: 1, 2 or 8
   clips per batch; teacher: 8 or 32 frames) and intra-op threads (1 or all). Target: best student / best teacher
   >= 10x. Also reported: the ratio at each thread count, and the student's reference (unfolded) path, so the
   speed-up of the fast path is measured in the same run (the machine may be shared: compare within one run).
2. aFD on toy EchoNet videos with known ED/ES: the teacher is an *oracle* — the toy generator's true LV masks
   (``toy_lv_masks``) served as soft labels 0.05/0.95 — because no trained DeepLabv3 checkpoint is available offline;
   a small student (B2L1, CPU-sized), without and with ``--skips``, is distilled from it on 12 videos of 48 frames
   at 48x48 (windows of 16 frames, 2 per step, Adam at 3e-3, ``EPOCHS`` epochs: ~100 steps, as the demo), and all are
   scored with the ``eval afd`` machinery (references from VolumeTracings.csv) and Dice against the tracings. Each
   student is scored as shipped (warm start, ``warmup`` 16: see ``echoseg.core.models.convlstm``) and, in the same
   run, from a cold (zero) state, which shows what the warm-up buys. CPU minutes (process time, all threads) of
   each distillation are reported. Target: the B2L1 student's aFD within 1 frame of its teacher's, ED and ES.

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
SIZE, CLIP, REPEATS = 112, 16, 2
STUDENT_CLIPS = (1, 2, 8)  # clips of CLIP frames per batch
TEACHER_BATCHES = (8, 32)  # frames per batch
EPOCHS = 25  # toy distillation: 8 training videos, 4 steps of 2 windows an epoch


def _fps(fn, frames: int, repeats: int = REPEATS) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return frames / best


def speed() -> dict:
    """Frames per second of student (B4L1) and teacher (deeplabv3_resnet50) on 112x112 input, best of a sweep."""
    from torch.fx.experimental.optimization import fuse

    from echoseg.core.models import build_model
    from echoseg.core.models.teachers import build_deeplabv3

    torch.manual_seed(0)
    cl = torch.channels_last
    student = build_model("convlstm", "base", blocks=4, layers=1).eval().to(memory_format=cl)
    teacher = fuse(build_deeplabv3().eval()).to(memory_format=cl)  # conv + BatchNorm folded, like the student
    frames = torch.randn(max(max(STUDENT_CLIPS) * CLIP, max(TEACHER_BATCHES)), SIZE, SIZE)
    clips = {n: frames[: n * CLIP].reshape(n, CLIP, 1, SIZE, SIZE) for n in STUDENT_CLIPS}
    batches = {n: frames[:n, None].expand(n, 3, SIZE, SIZE).contiguous(memory_format=cl) for n in TEACHER_BATCHES}
    all_threads = torch.get_num_threads()
    student_runs, teacher_runs, reference_runs = {}, {}, {}
    try:
        for threads in sorted({1, all_threads}):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                for n, x in clips.items():
                    student_runs[(n, threads)] = _fps(lambda x=x: student(x), n * CLIP)
                reference_runs[threads] = _fps(lambda: student(clips[2], fast=False), 2 * CLIP)
                for n, x in batches.items():
                    teacher_runs[(n, threads)] = _fps(lambda x=x: teacher(x)["out"], n)
    finally:
        torch.set_num_threads(all_threads)
    (s_clips, s_threads), s_fps = max(student_runs.items(), key=lambda kv: kv[1])
    (t_batch, t_threads), t_fps = max(teacher_runs.items(), key=lambda kv: kv[1])
    out = {"student_fps": s_fps, "student_config": f"{s_clips} clips x {CLIP} frames, {s_threads} thread(s)",
           "teacher_fps": t_fps, "teacher_config": f"batch {t_batch}, {t_threads} thread(s)",
           "fps_ratio": s_fps / t_fps}
    for threads in sorted({1, all_threads}):
        best_s = max(v for (_, th), v in student_runs.items() if th == threads)
        best_t = max(v for (_, th), v in teacher_runs.items() if th == threads)
        out[f"fps_ratio_{threads}_threads"] = best_s / best_t
        out[f"student_reference_fps_2_clips_{threads}_threads"] = reference_runs[threads]
        out[f"student_fast_fps_2_clips_{threads}_threads"] = student_runs[(2, threads)]
    return {**out, "student_parameters": student.num_parameters(),
            "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
            "student_gflops_per_frame": student.gflops(SIZE, SIZE),
            "student_fast_path_gflops_per_frame": student.gflops(SIZE, SIZE, fast=True),
            "threads_available": all_threads}


def toy_afd(epochs: int = EPOCHS) -> dict:
    """Distil B2L1 students (without, with skips) from the oracle teacher on toy videos; aFD of all (frames)."""
    from echoseg.core.data.echonet import read_filelist
    from echoseg.core.data.toy.echonet import toy_lv_masks, write_toy_echonet
    from echoseg.core.data.video import load_video
    from echoseg.core.distill.pseudo import PseudoLabels, cache_folder
    from echoseg.core.distill.report import evaluate_model
    from echoseg.core.distill.run import select_videos
    from echoseg.core.distill.train import DistillConfig, VideoSet, train_student
    from echoseg.core.metrics.afd_report import select_split
    from echoseg.core.models.artefacts import load_student
    from echoseg.core.runs import Run

    pick = ("aFD_ED_frames", "aFD_ES_frames", "dice_mean_tracings")
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
        _, t_sum, _ = evaluate_model(lambda n, f: cache.labels(n, mmap=False) / 255.0, 0.5, root, rows,
                                     frames_of, "oracle teacher", progress=False)
        out: dict = {"oracle_teacher": {k: t_sum[k] for k in pick}, "videos": len(rows), "epochs": epochs}
        for skips in (False, True):
            cfg = DistillConfig(teacher=spec, data=str(root), blocks=2, layers=1, skips=skips, seq_len=16,
                                epochs=epochs, batch_size=2, lr=3e-3, device="cpu", seed=0)
            label = "student_skips" if skips else "student"
            run = Run.create("distill", None, out=Path(tmp) / label, argv=["bench"])
            t0, c0 = time.perf_counter(), time.process_time()
            training = train_student(cfg, run, VideoSet(cache, train), VideoSet(cache, val), progress=False)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            student, _ = load_student(run.path)
            res = {"parameters": student.num_parameters(), "val_dice_vs_teacher": training["val_dice_vs_teacher"],
                   "steps": training["epochs_run"] * -(-len(train) // cfg.batch_size),
                   "train_seconds": seconds, "train_cpu_minutes": cpu / 60.0}
            for warm in (student.warmup, 0):  # as shipped, then the same weights from a cold (zero) state
                student.warmup = warm
                _, s_sum, _ = evaluate_model(lambda n, f, m=student: m.predict(f), float(student.threshold), root,
                                             rows, frames_of, label, progress=False)
                res.update({(k if warm else f"cold_start_{k}"): s_sum[k] for k in pick})
            out[label] = res
        teacher, student = out["oracle_teacher"], out["student"]
        out["student_within_1_frame"] = all(student[k] <= teacher[k] + 1.0 for k in pick[:2])
    return out


def run() -> dict:
    """Both parts; passed when the student is >= 10x faster than the teacher and within 1 frame of its aFD."""
    sp = speed()
    afd = toy_afd()
    flat = {"toy_afd_videos": afd["videos"], "toy_afd_epochs": afd["epochs"]}
    for model in ("oracle_teacher", "student", "student_skips"):
        flat.update({f"toy_afd_{model}_{k}": v for k, v in afd[model].items()})
    flat["toy_afd_student_within_1_frame"] = afd["student_within_1_frame"]
    return {"name": NAME,
            "metrics": {**sp, **flat},
            "target": f"student (convlstm B4L1) >= {TARGET_RATIO:g}x teacher (deeplabv3_resnet50) frames/s at "
                      f"{SIZE}x{SIZE} on CPU (measured {sp['fps_ratio']:.2f}x: "
                      f"{'met' if sp['fps_ratio'] >= TARGET_RATIO else 'NOT met'}); distilled B2L1 student's toy aFD "
                      "within 1 frame of its teacher's, ED and ES (measured "
                      f"{afd['student']['aFD_ED_frames']:.2f} / {afd['student']['aFD_ES_frames']:.2f} vs "
                      f"{afd['oracle_teacher']['aFD_ED_frames']:.2f} / {afd['oracle_teacher']['aFD_ES_frames']:.2f}: "
                      f"{'met' if afd['student_within_1_frame'] else 'NOT met'})",
            "passed": bool(sp["fps_ratio"] >= TARGET_RATIO and afd["student_within_1_frame"])}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
