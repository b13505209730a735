"""DICOM reading (real files pydicom and pydicom-data ship) and import into the EchoNet layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from dicom_variants import grey_cine as _grey_cine
from dicom_variants import variant as _variant

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
    fl = import_dicom([_testdata("emri_small.dcm")], tmp_path / "keep", size=0, split="TEST", any_modality=True)
    assert (fl.loc[0, "FrameHeight"], fl.loc[0, "FrameWidth"]) == (64, 64)
    bad = tmp_path / "x.txt"
    bad.write_text("hello")
    with pytest.raises(UserError, match="x.txt: not a DICOM file"):
        import_dicom([_testdata("emri_small.dcm"), bad], tmp_path / "out", size=32, split="TEST", any_modality=True)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ variants of the real cine, edited with pydicom
def test_frame_rate_from_frame_time_vector_cine_rate_in_that_order(tmp_path):
    _, grey = _grey_cine()
    vector = ["0"] + ["57.97"] * (len(grey) - 1)  # a 17.25 fps cine described by FrameTimeVector only
    ftv = _variant(tmp_path / "ftv.dcm", drop=("FrameTime",), FrameTimeVector=vector,
                   FrameIncrementPointer=0x00181065)
    clip = read_dicom(ftv)
    assert clip.fps_source == "FrameTimeVector" and clip.fps == pytest.approx(1000 / 57.97)
    both = _variant(tmp_path / "both.dcm", FrameTimeVector=vector)  # FrameTime 33.333 wins
    assert read_dicom(both).fps_source == "FrameTime"
    cine = _variant(tmp_path / "cine.dcm", drop=("FrameTime",), CineRate=25)
    assert read_dicom(cine).fps == 25.0 and read_dicom(cine).fps_source == "CineRate"
    display = _variant(tmp_path / "display.dcm", drop=("FrameTime",), RecommendedDisplayFrameRate=40)
    assert read_dicom(display).fps_source == "RecommendedDisplayFrameRate"
    none = _variant(tmp_path / "none.dcm", drop=("FrameTime",))
    assert read_dicom(none).fps is None and read_dicom(none).fps_source is None

    warnings: list[str] = []
    fl = import_dicom([ftv, cine, none, display], tmp_path / "out", size=32, log=warnings.append)
    assert fl["FPS"].tolist() == pytest.approx([1000 / 57.97, 25.0, DEFAULT_FPS, 40.0])
    sources = pd.read_csv(tmp_path / "out" / "dicom_sources.csv")
    assert sources["fps_source"].tolist() == ["FrameTimeVector", "CineRate", "default", "RecommendedDisplayFrameRate"]
    assert sources["fps_from_file"].tolist() == [True, True, False, True]
    from echoseg.core.data.video import video_fps

    assert video_fps(tmp_path / "out" / "Videos" / "ftv.avi") == pytest.approx(1000 / 57.97, rel=1e-3)
    assert len(warnings) == 2 and "none: no FrameTime" in warnings[0] and "display rate" in warnings[1]


def test_irregular_frame_time_vector_is_warned_about(tmp_path):
    _, grey = _grey_cine()
    vector = ["0"] + ["40", "80"] * ((len(grey) - 1) // 2) + ["40"] * ((len(grey) - 1) % 2)
    path = _variant(tmp_path / "jitter.dcm", drop=("FrameTime",), FrameTimeVector=vector)
    warnings: list[str] = []
    fl = import_dicom([path], tmp_path / "out", size=32, log=warnings.append)
    assert fl.loc[0, "FPS"] == pytest.approx(1000 / 60, rel=0.02)
    assert len(warnings) == 1 and "FrameTimeVector increments vary" in warnings[0]


def test_aspect_ratio_kept_by_padding_to_a_square(tmp_path):
    import cv2

    _, grey = _grey_cine()  # 240 x 320: wide
    fl = import_dicom([_testdata("examples_ybr_color.dcm")], tmp_path / "wide", size=64)
    assert (fl.loc[0, "FrameHeight"], fl.loc[0, "FrameWidth"]) == (64, 64)
    video = load_video(tmp_path / "wide" / "Videos" / "examples_ybr_color.avi")
    # 320 -> 64 is a factor 5: the 240 rows become 48, centred with 8 black rows above and below
    assert video[:, :8].max() == 0 and video[:, 56:].max() == 0
    expected = np.stack([cv2.resize(f, (64, 48), interpolation=cv2.INTER_AREA) for f in grey])
    assert np.abs(video[:, 8:56].astype(int) - expected).mean() < 1.0
    sources = pd.read_csv(tmp_path / "wide" / "dicom_sources.csv")
    assert (sources.loc[0, "pad_top"], sources.loc[0, "pad_left"]) == (40, 0)
    assert sources.loc[0, "spacing_y_mm"] == pytest.approx(sources.loc[0, "spacing_x_mm"])  # pixels stay square

    tall = _variant(tmp_path / "tall.dcm", np.ascontiguousarray(grey[:, :, 60:180]))  # 240 x 120
    import_dicom([tall], tmp_path / "tall", size=60)
    video = load_video(tmp_path / "tall" / "Videos" / "tall.avi")
    assert video.shape == (30, 60, 60) and video[:, :, :15].max() == 0 and video[:, :, 45:].max() == 0
    assert video[:, :, 15:45].std() > 10


def test_crop_region_keeps_the_ultrasound_region_and_records_its_scale(tmp_path):
    import cv2

    ds, grey = _grey_cine()
    frames = grey.copy()
    frames[:, 0:12, 0:140] = 255  # burned-in text above the region
    path = _variant(tmp_path / "burned.dcm", frames, region=(40, 20, 279, 219), BurnedInAnnotation="YES")
    with pytest.raises(UserError, match=r"burned.dcm: BurnedInAnnotation is YES.*--crop region"):
        import_dicom([path], tmp_path / "refused", size=64)
    assert not (tmp_path / "refused").exists()
    fl = import_dicom([path], tmp_path / "crop", size=60, crop="region")
    video = load_video(tmp_path / "crop" / "Videos" / "burned.avi")
    # region 240 wide x 200 tall -> padded to 240 x 240 (20 rows above and below) -> 60 x 60 (factor 4)
    assert video.shape == (30, 60, 60) and video[:, :5].max() == 0 and video[:, 55:].max() == 0
    expected = np.stack([cv2.resize(f[20:220, 40:280], (60, 50), interpolation=cv2.INTER_AREA) for f in grey])
    assert np.abs(video[:, 5:55].astype(int) - expected).mean() < 1.0
    s = pd.read_csv(tmp_path / "crop" / "dicom_sources.csv").iloc[0]
    assert (s["crop"], s["crop_x0"], s["crop_y0"], s["crop_x1"], s["crop_y1"]) == ("region", 40, 20, 279, 219)
    delta = ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX
    assert s["region_delta_x"] == pytest.approx(delta) and s["region_units_x"] == s["region_units_y"] == "cm"
    assert s["spacing_x_mm"] == pytest.approx(delta * 10 * 240 / 60) and s["burned_in_annotation"] == "YES"
    assert fl.loc[0, "FPS"] == pytest.approx(30.0, rel=1e-3)
    fl = import_dicom([path], tmp_path / "allowed", size=64, allow_burned_in=True)  # the user's choice
    assert load_video(tmp_path / "allowed" / "Videos" / "burned.avi")[:, 8:10, 0:25].min() > 250


def test_crop_region_refuses_missing_or_misplaced_regions_and_clips_a_one_pixel_overshoot(tmp_path):
    # the real cine's region (x 84..595, y 31..414) was left from a 640 x 480 original: outside its 320 x 240 frames
    with pytest.raises(UserError, match=r"examples_ybr_color.dcm: --crop region: .* lies outside the 320x240"):
        import_dicom([_testdata("examples_ybr_color.dcm")], tmp_path / "a", crop="region")
    with pytest.raises(UserError, match=r"US1_UNCR.dcm: --crop region, but the file has no SequenceOfUltra"):
        import_dicom([_testdata("US1_UNCR.dcm")], tmp_path / "b", crop="region")
    # OBXXXX1A_2frame.dcm (800 x 600) gives RegionLocationMaxX1 = 800: clipped to the last column, 799
    import_dicom([_testdata("OBXXXX1A_2frame.dcm")], tmp_path / "c", size=0, crop="region")
    s = pd.read_csv(tmp_path / "c" / "dicom_sources.csv").iloc[0]
    assert (s["crop_x0"], s["crop_y0"], s["crop_x1"], s["crop_y1"]) == (120, 60, 799, 518)
    fl = pd.read_csv(tmp_path / "c" / "FileList.csv")
    assert (fl.loc[0, "FrameHeight"], fl.loc[0, "FrameWidth"]) == (459, 680)  # size 0: the region, unpadded


def test_only_ultrasound_unless_any_modality(tmp_path):
    for name, found in (("CT_small.dcm", "CT"), ("MR_small.dcm", "MR")):
        with pytest.raises(UserError, match=rf"{name}: Modality is {found}, not US .*--any-modality"):
            import_dicom([_testdata("examples_ybr_color.dcm"), _testdata(name)], tmp_path / name, size=32)
        assert not (tmp_path / name).exists()
    missing = _variant(tmp_path / "nomod.dcm", drop=("Modality",))
    with pytest.raises(UserError, match="nomod.dcm: Modality is missing"):
        import_dicom([missing], tmp_path / "x", size=32)
    fl = import_dicom([_testdata("CT_small.dcm")], tmp_path / "ct", size=32, any_modality=True)
    assert len(fl) == 1 and pd.read_csv(tmp_path / "ct" / "dicom_sources.csv").loc[0, "modality"] == "CT"


def test_no_patient_data_or_source_path_in_the_import(tmp_path):
    src = tmp_path / "phi-src"
    src.mkdir()
    phi = {"PatientName": "Zyxwvut^Qorstuv", "PatientID": "PID987654321", "PatientBirthDate": "19230417"}
    path = _variant(src / "Zyxwvut_PID987654321.dcm", **phi)
    out = tmp_path / "out"
    fl = import_dicom([path], out, size=32)
    name = fl.loc[0, "FileName"]
    assert name.startswith("dicom_") and "Zyxwvut" not in name  # the file name held the patient's name and id
    sources = pd.read_csv(out / "dicom_sources.csv")
    from echoseg.core.data.dicom import source_hash

    assert sources.loc[0, "source_sha256"] == source_hash(path) and "source" not in sources.columns
    needles = [b"Zyxwvut", b"Qorstuv", b"PID987654321", b"19230417", str(src).encode(), b"phi-src"]
    for f in out.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert not [n for n in needles if n in data], f
