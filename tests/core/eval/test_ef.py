"""`eval ef` as a stage: the toy videos' true masks recover FileList.csv's EF (known by construction).

The toy generator draws each LV as one analytic shape whose 20 traced chords give FileList.csv's EDV, ESV and EF,
and writes its true per-frame masks (``Masks/<name>.npz``); those masks are what is scored here, so the only error
left is pixelisation (under a point of EF at 112 px). A model's masks go through the same scoring (a stand-in model
that returns the true masks as probabilities checks that path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echoseg.core.data.toy.echonet import toy_lv_masks, write_toy_echonet
from echoseg.core.errors import UserError
from echoseg.core.eval.ef import EvalEfConfig, agreement, load_ef_inputs, mask_threshold, run_ef
from echoseg.core.runs import Run


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ef-toy")
    write_toy_echonet(root, videos=6, frames=32, size=112, seed=5)
    return root


def evaluate(root: Path, out: Path, **options) -> tuple[dict, pd.DataFrame]:
    cfg = EvalEfConfig(data=str(root), split="all", **({"masks": str(root / "Masks")} | options))
    cfg.validate()
    inputs = load_ef_inputs(cfg)
    run = Run.create("eval", "ef", out=out, config=cfg.to_dict(), inputs=cfg.inputs())
    summary = run_ef(cfg, run, inputs)
    return summary, pd.read_csv(out / "per_video.csv")


# FileList.csv's EF is the method of disks on the drawn shape (a truncated ellipse): the disks on its masks agree
# to pixel noise; area-length, which assumes an untruncated ellipse, within a few points
@pytest.mark.parametrize(("volume", "phase_source", "worst", "rtol"), [("disks", "detected", 1.5, 0.03),
                                                                       ("area-length", "tracings", 3.0, 0.05)])
def test_true_masks_recover_the_toy_ef(toy, tmp_path, volume, phase_source, worst, rtol):
    summary, table = evaluate(toy, tmp_path / "run", volume=volume, phase_source=phase_source)
    filelist = pd.read_csv(toy / "FileList.csv").set_index("FileName")
    assert summary["videos_compared"] == 6 and summary["volume_units"] == {"mL": 6}
    assert (table["ED_frame"] == table["ED_traced"]).all() and (table["ES_frame"] == table["ES_traced"]).all()
    np.testing.assert_allclose(table["EF_ref"], filelist.loc[table["FileName"], "EF"])
    assert table["EF_error"].abs().max() < worst and summary["EF_MAE"] < worst / 2
    assert summary["EF_R2"] > 0.98 and abs(summary["EF_bias"]) < worst / 2
    assert summary["EF_loa_lower"] < summary["EF_bias"] < summary["EF_loa_upper"]
    # the toy's pixel size (FileList.csv PhysicalDeltaY/X) makes the volumes mL, comparable with EDV and ESV
    np.testing.assert_allclose(table["EDV"], table["EDV_ref"], rtol=rtol)
    np.testing.assert_allclose(table["ESV"], table["ESV_ref"], rtol=rtol)
    assert summary["volume_method"] == volume and summary["figures"] == ["bland_altman.png", "scatter.png"]
    assert (tmp_path / "run" / "bland_altman.png").stat().st_size > 0
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["EF_MAE"] == pytest.approx(summary["EF_MAE"]) and written["videos_empty_mask"] == 0


class TrueMasks:
    """A stand-in frame labeller: the toy's true masks as LV probabilities (what a perfect model would give)."""

    name, device, threshold, info = "truth", "cpu", 0.5, {}

    def __init__(self, root: Path, names: list[str]):
        self.root, self.names = root, list(names)  # the order in which the videos will be labelled

    def predict(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        masks = toy_lv_masks(self.root, self.names.pop(0)).astype(np.float32)
        assert masks.shape == frames.shape
        return masks

    def num_parameters(self) -> int:
        return 0

    def gflops(self, height: int, width: int) -> float:
        return 0.0


def test_a_model_labels_every_frame_and_saves_its_masks(toy, tmp_path):
    _, from_files = evaluate(toy, tmp_path / "files")
    cfg = EvalEfConfig(data=str(toy), split="all", teacher="stand-in", save_masks=True)
    inputs = load_ef_inputs(EvalEfConfig(data=str(toy), split="all", masks=str(toy / "Masks")))
    order = pd.read_csv(toy / "FileList.csv")["FileName"]
    inputs.model, inputs.areas = TrueMasks(toy, order), None
    inputs.filelist = inputs.filelist.set_index("FileName").loc[order].reset_index()
    run = Run.create("eval", "ef", out=tmp_path / "model", config=cfg.to_dict())
    summary = run_ef(cfg, run, inputs)
    table = pd.read_csv(tmp_path / "model" / "per_video.csv")
    pd.testing.assert_frame_equal(table, from_files)
    assert summary["threshold"] == 0.5 and summary["teacher"]["name"] == "truth"
    assert sorted(p.stem for p in (tmp_path / "model" / "masks").glob("*.npz")) == sorted(order)


def test_videos_without_a_reference_are_scored_alone(toy, tmp_path):
    root = tmp_path / "imported"
    root.mkdir()
    (root / "Masks").symlink_to(toy / "Masks")
    (root / "Videos").symlink_to(toy / "Videos")
    filelist = pd.read_csv(toy / "FileList.csv")
    filelist[["EF", "EDV", "ESV", "PhysicalDeltaY", "PhysicalDeltaX"]] = np.nan  # as a DICOM without calibration
    filelist.to_csv(root / "FileList.csv", index=False)
    (root / "VolumeTracings.csv").write_text("FileName,X1,Y1,X2,Y2,Frame\n")
    summary, table = evaluate(root, tmp_path / "run")
    assert summary["videos_compared"] == 0 and summary["videos_scored"] == 6
    assert summary["videos_without_reference_ef"] == 6 and summary["volume_units"] == {"px3": 6}
    assert summary["EF_MAE"] != summary["EF_MAE"] and summary["figures"] == []  # NaN: nothing to compare
    assert table["ED_traced"].isna().all() and table["EF"].between(20, 70).all()
    _, with_ref = evaluate(toy, tmp_path / "ref")
    np.testing.assert_allclose(table["EF"], with_ref["EF"], atol=1e-9)  # EF needs no calibration
    with pytest.raises(UserError, match="--phase-source tracings: VolumeTracings.csv .* traces none"):
        load_ef_inputs(EvalEfConfig(data=str(root), masks=str(root / "Masks"), split="all",
                                    phase_source="tracings"))


def test_agreement_statistics_by_hand():
    est, ref = np.array([50.0, 61.0, 40.0, 30.0]), np.array([52.0, 58.0, 45.0, 30.0])
    stats = agreement(est, ref)
    diff = np.array([-2.0, 3.0, -5.0, 0.0])
    assert stats["MAE"] == pytest.approx(10 / 4) and stats["RMSE"] == pytest.approx(np.sqrt(38 / 4))
    ss_tot = np.sum((ref - ref.mean()) ** 2)  # mean 46.25
    assert stats["R2"] == pytest.approx(1 - 38 / ss_tot)
    assert stats["bias"] == pytest.approx(-1.0) and stats["sd_diff"] == pytest.approx(diff.std(ddof=1))
    assert stats["loa_upper"] - stats["loa_lower"] == pytest.approx(2 * 1.96 * diff.std(ddof=1))
    assert np.isnan(agreement(np.array([50.0]), np.array([55.0]))["R2"])


def test_mask_threshold_reads_label_masks_and_probabilities():
    labels = np.array([[0, 1]], np.uint8)
    assert mask_threshold(labels, None) == 0.5 and mask_threshold(labels * 255, None) is None
    assert mask_threshold(labels, 0.2) == 0.2 and mask_threshold(labels.astype(np.float32), None) is None
