"""Annotation-free mask-quality score with a CLIP model (EchoDFKD, Petit et al. 2024).

For each frame and its left-ventricle mask (pixels above 127 of 255, or 0.5 for probabilities):

- black out the pixels under the mask; similarity of that image to "WALL" and to "NOTHING";
- black out the mask dilated by ``dilate`` pixels (cv2.dilate, elliptical kernel of size ``2 * dilate + 1``);
  similarity of that image to "LEFT VENTRICLE";
- frame score = sim(WALL) + sim(NOTHING) - sim(LEFT VENTRICLE), with L2-normalised image and text embeddings
  and a plain dot product. A video's score is the mean over its frames; higher means the mask covers the
  cavity better.

The published code computed the dilated mask but never applied it; echoseg applies it.

Models are open_clip models loaded by :mod:`echoseg.core.models.openclip` (EchoCLIP is an open_clip ConvNeXt).

``echoseg eval echoclip`` is :func:`run_echoclip` with an :class:`EvalEchoclipConfig`: the masks come from a folder
(``masks``) or from a model run over every frame of the selected videos (``run_dir`` or ``teacher``, see
:mod:`echoseg.core.eval.sources`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from echoseg.core.console import track
from echoseg.core.data.echonet import read_filelist, video_path
from echoseg.core.data.manifest import Problem, report_skipped
from echoseg.core.data.video import load_video
from echoseg.core.errors import UserError, require_dir
from echoseg.core.eval.predict import iter_video_probabilities
from echoseg.core.eval.sources import VideoEvalConfig, load_frame_model, screen, teacher_summary
from echoseg.core.io import write_csv
from echoseg.core.metrics.afd_report import select_split
from echoseg.core.metrics.areas import binarise, find_mask_file, list_mask_videos, load_mask_video, video_key
from echoseg.core.models.openclip import ClipModel, encode_images, encode_texts, load_clip_model
from echoseg.core.models.teachers import Teacher
from echoseg.core.runs import Run

PROMPTS = ("WALL", "NOTHING", "LEFT VENTRICLE")



# ----------------------------------------------------------------------------- scoring
def dilate_masks(masks: np.ndarray, px: int) -> np.ndarray:
    """Dilate boolean ``(T, H, W)`` masks by ``px`` pixels with an elliptical kernel (``px = 0``: unchanged)."""
    if px <= 0:
        return masks.copy()

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return np.stack([cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in masks])


def blackout(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Copy of ``(T, H, W[, C])`` frames with the pixels under boolean ``(T, H, W)`` masks set to 0."""
    out = frames.copy()
    out[masks] = 0
    return out


def _rgb(frames: np.ndarray) -> np.ndarray:
    f = np.asarray(frames)
    if f.ndim == 3:
        f = np.repeat(f[..., None], 3, axis=-1)
    elif f.shape[-1] == 1:
        f = np.repeat(f, 3, axis=-1)
    if f.dtype != np.uint8:
        f = np.clip(f, 0, 255).astype(np.uint8)
    return f


def _fit_masks(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if masks.shape[1:] == shape:
        return masks

    return np.stack([cv2.resize(m.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
                     for m in masks])


def frame_scores(
    clip: ClipModel, frames: np.ndarray, masks: np.ndarray, dilate: int = 5, batch_size: int = 64, text=None
) -> dict[str, np.ndarray]:
    """Per-frame similarities and scores for one video.

    Args:
        frames: ``(T, H, W)`` or ``(T, H, W, 3)`` uint8 frames.
        masks: ``(T, H', W')`` masks (0..255, probabilities or boolean); resized (nearest) to the frames if needed.
        dilate: dilation in pixels before the LEFT VENTRICLE comparison.
        text: precomputed :func:`encode_texts` output (computed when None).
    Returns:
        ``{"wall", "nothing", "left_ventricle", "score"}``, each ``(T,)``.
    """
    rgb = _rgb(frames)
    m = _fit_masks(binarise(masks), rgb.shape[1:3])
    text = encode_texts(clip, PROMPTS) if text is None else text
    sim_under = (encode_images(clip, blackout(rgb, m), batch_size) @ text.T).cpu().numpy()
    sim_dilated = (encode_images(clip, blackout(rgb, dilate_masks(m, dilate)), batch_size) @ text.T).cpu().numpy()
    wall, nothing, lv = sim_under[:, 0], sim_under[:, 1], sim_dilated[:, 2]
    return {"wall": wall, "nothing": nothing, "left_ventricle": lv, "score": wall + nothing - lv}


def score_videos(
    clip: ClipModel,
    data_root: str | Path,
    masks_dir: str | Path,
    names: list[str] | None = None,
    dilate: int = 5,
    batch_size: int = 64,
    progress: bool = True,
    problems: list[Problem] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Score the masks of every video of ``masks_dir`` (or ``names``) against ``data_root/Videos/<name>.avi``.

    When a video and its masks differ in frame count, the first ``min`` frames are scored (both counts are in
    the table). Returns the per-video table and the summary (mean score; videos without video or mask listed).
    An unreadable video or mask file is a UserError naming it, unless ``problems`` is a list: then it is added
    there and the video is left out (``--skip-bad``).
    """


    keys = list_mask_videos(masks_dir) if names is None else [video_key(n) for n in names]
    text = encode_texts(clip, PROMPTS)
    rows, without_video, without_masks = [], [], []
    for key in track(keys, "CLIP mask score") if progress else keys:
        mask_path = find_mask_file(masks_dir, key)
        path = video_path(data_root, key)
        if mask_path is None:
            without_masks.append(key)
            continue
        if not path.is_file():
            without_video.append(key)
            continue
        try:
            frames, masks = load_video(path), load_mask_video(mask_path)
        except UserError as exc:
            if problems is None:
                raise
            bad = str(mask_path) if str(exc).startswith(f"{mask_path}: ") else str(path)
            problems.append(Problem(bad, str(exc).removeprefix(f"{bad}: ")))
            continue
        n = min(len(frames), len(masks))
        s = frame_scores(clip, frames[:n], masks[:n], dilate=dilate, batch_size=batch_size, text=text)
        rows.append({"FileName": key, "VideoFrames": len(frames), "MaskFrames": len(masks), "FramesScored": n,
                     "sim_wall": float(s["wall"].mean()), "sim_nothing": float(s["nothing"].mean()),
                     "sim_left_ventricle": float(s["left_ventricle"].mean()), "score": float(s["score"].mean())})
    columns = ["FileName", "VideoFrames", "MaskFrames", "FramesScored", "sim_wall", "sim_nothing",
               "sim_left_ventricle", "score"]
    table = pd.DataFrame(rows, columns=columns)
    summary = {
        "score_mean": float(table["score"].mean()) if len(table) else float("nan"),
        "videos_scored": len(table),
        "frames_scored": int(table["FramesScored"].sum()) if len(table) else 0,
        "videos_frame_count_mismatch": int((table["VideoFrames"] != table["MaskFrames"]).sum()) if len(table) else 0,
        "videos_without_video": len(without_video),
        "without_video": without_video,
        "videos_without_masks": len(without_masks),
        "without_masks": without_masks,
        "clip_model": clip.spec,
        "prompts": list(PROMPTS),
        "dilate_px": dilate,
        "dilation_applied": True,
        "score": "mean over frames of sim(WALL) + sim(NOTHING) - sim(LEFT VENTRICLE)",
    }
    return table, summary


# ----------------------------------------------------------------------------- eval echoclip
@dataclass
class EvalEchoclipConfig(VideoEvalConfig):
    """Options of `eval echoclip` (recorded in run.json); exactly one of masks, run_dir, teacher is set."""

    clip_model: str = ""
    split: str = "all"
    dilate: int = 5
    batch_size: int = 64

    def checks(self) -> list[tuple[bool, str]]:
        """The ranges :meth:`validate` checks, then the shared ones."""
        return [(self.dilate >= 0, f"--dilate must be >= 0, got {self.dilate}"), *super().checks()]


@dataclass
class EchoclipInputs:
    """What an `eval echoclip` run reads, loaded (and so checked) before the run directory exists."""

    clip: ClipModel
    names: list[str] | None = None  # the videos to score (None: every mask file)
    filelist: pd.DataFrame | None = None
    model: Teacher | None = None  # with run_dir or teacher
    skipped: list[str] = field(default_factory=list)  # videos left out by --skip-bad
    problems: list[Problem] = field(default_factory=list)  # why


def load_echoclip_inputs(cfg: EvalEchoclipConfig) -> EchoclipInputs:
    """Check the data and masks folders, read the file list's split, load the labelling and CLIP models, and check
    every video to score as `data check` does (it decodes to its FileList.csv NumberOfFrames, within 1, and size).

    Raises:
        UserError: a missing or unreadable input, naming its option; a damaged video, naming it (unless
            ``cfg.skip_bad``: then it is left out and listed).
    """
    source = cfg.source
    require_dir(cfg.data, "--data")
    require_dir(Path(cfg.data) / "Videos", "--data Videos folder")
    if source == "masks":
        require_dir(cfg.masks, "--masks")
    names = filelist = None
    listed = read_filelist(cfg.data)
    if source != "masks" or cfg.split.upper() != "ALL":
        filelist = select_split(listed, cfg.split)
        names = list(filelist["FileName"])
    model = load_frame_model(cfg)
    clip = load_clip_model(cfg.clip_model, cfg.device)
    wanted = list_mask_videos(cfg.masks) if names is None else [video_key(n) for n in names]
    if source == "masks":  # only videos with a mask file are read
        wanted = [k for k in wanted if find_mask_file(cfg.masks, k) is not None]
    usable, problems = screen(cfg, listed.assign(FileName=listed["FileName"].map(video_key)), wanted)
    skipped = [k for k in wanted if k not in set(usable)]
    if skipped:
        names = [k for k in (names if names is not None else wanted) if video_key(k) not in set(skipped)]
        if filelist is not None:
            filelist = filelist[~filelist["FileName"].map(video_key).isin(skipped)].reset_index(drop=True)
    return EchoclipInputs(clip, names, filelist, model, skipped, problems)


def run_echoclip(cfg: EvalEchoclipConfig, run: Run, inputs: EchoclipInputs | None = None) -> dict[str, Any]:
    """Score the masks into ``run``: per_video.csv, summary.json (and masks/ when a model labels the frames).

    Args:
        inputs: from :func:`load_echoclip_inputs` (loaded here when None; the CLI loads them before opening the
            run, so that bad input leaves no run directory).
    Returns:
        The summary.
    """
    if inputs is None:
        cfg.validate()
        inputs = load_echoclip_inputs(cfg)
    masks_dir, extra, model = cfg.masks, {}, inputs.model
    if model is not None:
        masks_dir = run.file("masks")
        run.log(f"labelling {len(inputs.names)} video(s) with {model.name} on {model.device}")
        for _ in iter_video_probabilities(model, cfg.data, inputs.names, batch_size=cfg.batch_size,
                                          save_dir=masks_dir):
            pass
        extra = {"teacher": teacher_summary(model, inputs.filelist), "masks_dir": str(masks_dir.resolve()),
                 "masks": "LV probabilities as uint8 round(255 p); scored pixels: above 127 (p >= 0.5)"}
    problems = list(inputs.problems)
    table, summary = score_videos(inputs.clip, cfg.data, masks_dir, names=inputs.names, dilate=cfg.dilate,
                                  batch_size=cfg.batch_size, problems=problems if cfg.skip_bad else None)
    summary.update(extra)
    if cfg.skip_bad:  # the videos screened out before the run, and those whose mask file failed while scoring
        unreadable = len(problems) - len(inputs.problems)
        summary.update(report_skipped(run, problems, len(inputs.skipped) + unreadable))
    write_csv(run.file("per_video.csv"), table)
    run.write_summary(summary)
    run.log(f"CLIP mask score over {summary['videos_scored']} video(s): mean {summary['score_mean']:.4f}; "
            f"{summary['videos_without_video']} without video")
    return summary
