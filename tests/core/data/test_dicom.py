"""DICOM reading (real files pydicom and pydicom-data ship) and import into the EchoNet layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from echoseg.core.data.dicom import DEFAULT_FPS, import_dicom, read_dicom
from echoseg.core.data.echonet import check_echonet, read_echonet, read_tracings
from echoseg.core.data.video import load_video
from echoseg.core.errors import UserError


def _testdata(name: str):
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file(name)
    except Exception:  # noqa: BLE001 - pydicom-data lookups can fail in several ways when not installed
        path = None
    if path is None:
        pytest.skip(f"{name} is not available (pydicom-data not installed?)")
    return path


def _decodable(path) -> bool:
    from pydicom.pixels import pixel_array

    try:
        pixel_array(path, index=0)
    except RuntimeError as exc:
        if "missing dependencies" in str(exc):
            return False
        raise
    return True


def test_ybr_jpeg_cardiac_cine():
    clip = read_dicom(_testdata("examples_ybr_color.dcm"))
    assert clip.frames.shape == (30, 240, 320) and clip.frames.dtype == np.uint8
    assert clip.photometric == "YBR_FULL_422"
    assert clip.fps == pytest.approx(1000 / 33.333, rel=1e-6)  # FrameTime 33.333 ms
    dy, dx = clip.spacing  # from SequenceOfUltrasoundRegions (cm) -> mm
    assert 0.3 < dy < 1.0 and dx == pytest.approx(dy)
    assert clip.metadata["Modality"] == "US" and "JPEG" in clip.metadata["TransferSyntax"]
    # The grey level matches the luma channel of the file's own YBR data.
    from pydicom.pixels import pixel_array

    luma = pixel_array(clip.source, as_rgb=False)[..., 0].astype(int)
    assert np.abs(luma - clip.frames).mean() < 0.5
    assert clip.frames.std() > 10 and not np.array_equal(clip.frames[0], clip.frames[10])  # it moves


def test_color3d_jpeg_baseline():
    path = _testdata("color3d_jpeg_baseline.dcm")
    if not _decodable(path):
        pytest.skip("no JPEG baseline decoder installed")
    clip = read_dicom(path)
    assert clip.frames.shape == (120, 480, 640)
    assert clip.fps == pytest.approx(30.0, rel=1e-3) and clip.spacing is not None


def test_monochrome2_multiframe_and_16bit():
    clip = read_dicom(_testdata("emri_small.dcm"))  # MONOCHROME2, 10 frames, 16 bits
    assert clip.photometric == "MONOCHROME2"
    assert clip.frames.shape == (10, 64, 64) and clip.frames.dtype == np.uint8
    assert clip.frames.min() == 0 and clip.frames.max() == 255  # one min-max scale for the whole clip
    single = read_dicom(_testdata("MR_small.dcm"))
    assert single.frames.shape == (1, 64, 64) and single.spacing == pytest.approx((0.3125, 0.3125))
    assert single.fps is None


def test_palette_color_ultrasound():
    clip = read_dicom(_testdata("OBXXXX1A_2frame.dcm"))
    assert clip.photometric == "PALETTE COLOR"
    assert clip.frames.shape == (2, 600, 800) and clip.frames.std() > 5
    assert clip.spacing is not None
    single = read_dicom(_testdata("examples_palette.dcm"))
    assert single.frames.shape == (1, 350, 800)


def test_rgb_ultrasound():
    clip = read_dicom(_testdata("US1_UNCR.dcm"))
    assert clip.photometric == "RGB" and clip.frames.shape == (1, 480, 640)


def test_missing_decoder_names_packages(tmp_path):
    path = _testdata("JPGLosslessP14SV1_1s_1f_8b.dcm")  # JPEG lossless: needs pylibjpeg or gdcm
    if _decodable(path):
        assert read_dicom(path).frames.shape == (1, 768, 1024)
        return
    with pytest.raises(UserError) as err:
        read_dicom(path)
    msg = str(err.value)
    assert "no decoder installed" in msg and "pylibjpeg" in msg and "\n" not in msg


def test_non_dicom_and_corrupt_files(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("this is not DICOM\n" * 20)
    with pytest.raises(UserError, match="notes.dcm: not a DICOM file"):
        read_dicom(text)
    with pytest.raises(UserError, match="file not found"):
        read_dicom(tmp_path / "missing.dcm")
    src = open(_testdata("examples_ybr_color.dcm"), "rb").read()
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(src[: len(src) // 3])
    with pytest.raises(UserError, match="broken.dcm: DICOM file is truncated"):
        read_dicom(broken)
    native = open(_testdata("US1_UNCR.dcm"), "rb").read()
    short = tmp_path / "short.dcm"
    short.write_bytes(native[:-1000])  # uncompressed pixel data missing its last bytes
    with pytest.raises(UserError) as err:
        read_dicom(short)
    assert str(err.value).startswith(f"{short}: cannot decode") and "\n" not in str(err.value)


def test_import_writes_echonet_layout(tmp_path):
    cine = _testdata("examples_ybr_color.dcm")
    palette = _testdata("OBXXXX1A_2frame.dcm")  # no frame rate in the file
    warnings: list[str] = []
    fl = import_dicom([cine, palette, cine], tmp_path, size=64, split="val", log=warnings.append)
    assert list(fl["FileName"]) == ["examples_ybr_color", "OBXXXX1A_2frame", "examples_ybr_color_2"]
    assert fl["EF"].isna().all() and set(fl["Split"]) == {"VAL"}
    assert fl["NumberOfFrames"].tolist() == [30, 2, 30]
    assert fl.loc[1, "FPS"] == DEFAULT_FPS and fl.loc[0, "FPS"] == pytest.approx(30.0, rel=1e-3)
    assert len(warnings) == 1 and "OBXXXX1A_2frame" in warnings[0] and "FPS=50" in warnings[0]
    assert read_tracings(tmp_path) == {}
    assert (tmp_path / "VolumeTracings.csv").read_text().strip() == "FileName,X1,Y1,X2,Y2,Frame"
    table, problems = check_echonet(tmp_path)
    assert [p for p in problems if "VolumeTracings" not in p.path] == [] and len(table) == 3
    df = read_echonet(tmp_path)
    assert not df["traced"].any()
    video = load_video(df.loc[0, "path"])
    assert video.shape == (30, 64, 64)
    sources = pd.read_csv(tmp_path / "dicom_sources.csv")
    assert sources.loc[0, "original_height"] == 240 and sources.loc[0, "photometric"] == "YBR_FULL_422"


def test_import_size_zero_keeps_size_and_bad_file_writes_nothing(tmp_path):
    fl = import_dicom([_testdata("emri_small.dcm")], tmp_path / "keep", size=0, split="TEST")
    assert (fl.loc[0, "FrameHeight"], fl.loc[0, "FrameWidth"]) == (64, 64)
    bad = tmp_path / "x.txt"
    bad.write_text("hello")
    with pytest.raises(UserError, match="x.txt: not a DICOM file"):
        import_dicom([_testdata("emri_small.dcm"), bad], tmp_path / "out", size=32, split="TEST")
    assert not (tmp_path / "out").exists()
