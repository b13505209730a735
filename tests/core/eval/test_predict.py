"""Running a teacher over every frame of EchoNet videos: areas, cached uint8 masks, missing videos."""

from __future__ import annotations

import numpy as np
import pytest

from echoseg.core.data.echonet import read_filelist
from echoseg.core.data.toy.echonet import write_toy_echonet
from echoseg.core.data.video import load_video
from echoseg.core.eval.predict import (
    iter_video_probabilities,
    model_areas,
    predict_videos,
    save_mask_npz,
    teacher_info,
    to_uint8,
)
from echoseg.core.metrics.areas import areas_from_masks, load_mask_video


class BrightnessTeacher:
    """A deterministic stand-in teacher: the LV probability of a pixel is its grey level / 255."""

    name = "brightness"
    info = {"kind": "test"}

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
        self.batches.append(batch_size)
        return frames.astype(np.float32) / 255.0

    def num_parameters(self) -> int:
        return 0

    def gflops(self, height: int, width: int) -> float:
        return height * width / 1e9


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("echonet")
    write_toy_echonet(root, videos=3, frames=16, size=32, seed=1)
    return root


def test_to_uint8_and_npz_round_trip(tmp_path):
    p = np.array([[[0.0, 0.4999, 0.5, 0.5001, 1.0, 1.2]]], np.float32)
    assert to_uint8(p).tolist() == [[[0, 127, 128, 128, 255, 255]]]
    save_mask_npz(tmp_path / "v.npz", to_uint8(p))
    back = load_mask_video(tmp_path / "v.npz")
    assert back.dtype == np.uint8 and np.array_equal(back, to_uint8(p))


def test_model_areas_match_thresholded_predictions_and_saved_masks(toy, tmp_path):
    names = list(read_filelist(toy)["FileName"]) + ["0XMISSING"]
    teacher = BrightnessTeacher()
    areas, missing = model_areas(teacher, toy, names, threshold=0.5, batch_size=5, save_dir=tmp_path / "m",
                                 progress=False)
    assert missing == ["0XMISSING"] and areas.names == names[:3] and teacher.batches == [5, 5, 5]
    for i, name in enumerate(areas.names):
        frames = load_video(toy / "Videos" / f"{name}.avi")
        expected = (frames.astype(np.float32) / 255 > 0.5).reshape(len(frames), -1).sum(axis=1)
        np.testing.assert_array_equal(areas.curve(i), expected)
    # The cached uint8 masks give the same areas with the --masks default threshold (127).
    again, absent = areas_from_masks(tmp_path / "m", names, progress=False)
    assert absent == ["0XMISSING"]
    np.testing.assert_array_equal(again.values, areas.values)
    strict, _ = model_areas(teacher, toy, names[:1], threshold=0.9, progress=False)
    assert strict.values.sum() < areas.curve(0).sum()


def test_iterator_keeps_order_and_predict_videos(toy):
    names = list(read_filelist(toy)["FileName"])
    order = [k for k, _, _ in iter_video_probabilities(BrightnessTeacher(), toy, names[::-1], progress=False)]
    assert order == names[::-1]
    probs = predict_videos(BrightnessTeacher(), toy, [n + ".avi" for n in names], progress=False)
    assert list(probs) == names and all(p.dtype == np.float32 and p.shape == (16, 32, 32) for p in probs.values())
    assert predict_videos(BrightnessTeacher(), toy, [], progress=False) == {}


def test_teacher_info():
    info = teacher_info(BrightnessTeacher(), 112, 112)
    assert info["name"] == "brightness" and info["kind"] == "test" and info["parameters"] == 0
    assert info["gflops_per_frame"] == pytest.approx(112 * 112 / 1e9)
    assert "gflops_per_frame" not in teacher_info(BrightnessTeacher())
