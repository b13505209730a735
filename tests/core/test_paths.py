"""core.paths: a path native code would crash on is a one-line UserError showing it escaped."""

from __future__ import annotations

import os

import numpy as np
import pytest

from echoseg.core.errors import UserError
from echoseg.core.paths import check_arguments, check_native_path, shown

BAD = os.fsdecode(b"/data/caf\xe9/a.avi")  # Latin-1 bytes on a UTF-8 system: "caf\udce9"


def test_shown_escapes_bytes_and_control_characters_and_keeps_unicode():
    assert shown(BAD) == "/data/caf\\xe9/a.avi"
    assert shown(b"/x/caf\xe9") == "/x/caf\\xe9"
    assert shown("/data/café/a\nb") == "/data/café/a\\x0ab"
    assert shown("lone \ud800") == "lone \\ud800"  # a surrogate no byte produced


def test_check_native_path():
    assert check_native_path("/data/café/a.avi") == "/data/café/a.avi"
    assert check_native_path(b"/data/x.avi") == "/data/x.avi"
    with pytest.raises(UserError) as err:
        check_native_path(BAD, "video")
    assert str(err.value) == ("video path not encodable as UTF-8 (holds bytes that are not UTF-8; rename it): "
                              "/data/caf\\xe9/a.avi")
    with pytest.raises(UserError, match=r"path not encodable as UTF-8 \(holds a NUL byte\): a\\x00b"):
        check_native_path("a\x00b")


def test_check_arguments_names_the_option():
    check_arguments(["data", "check", "/data/café"])
    with pytest.raises(UserError, match=r"^--out path not encodable .*: /data/caf\\xe9/a.avi$"):
        check_arguments(["data", "toy", "camus", "--out", BAD])
    with pytest.raises(UserError, match=r"^--data path not encodable .*: /data/caf\\xe9/a.avi$"):
        check_arguments(["eval", "afd", f"--data={BAD}"])
    with pytest.raises(UserError, match=r"^argument path not encodable"):
        check_arguments(["data", "check", BAD])


def test_check_arguments_refuses_a_non_utf8_working_directory(tmp_path, monkeypatch):
    bad = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")
    os.mkdir(bad)
    monkeypatch.chdir(bad)
    with pytest.raises(UserError, match=r"current directory path not encodable .*caf\\xe9; run echoseg from"):
        check_arguments(["data", "toy", "camus"])


def test_native_readers_and_writers_check_first(tmp_path):
    """Each of these would abort (SimpleITK) or crash (OpenCV) the process on the path: a UserError instead."""
    from echoseg.core.data.dicom import import_dicom, read_dicom
    from echoseg.core.data.imaging import load_image, load_mask
    from echoseg.core.data.video import load_video, video_fps, write_video

    bad_dir = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")
    os.mkdir(bad_dir)
    frames = np.zeros((2, 16, 16), np.uint8)
    for call in (lambda: load_image(f"{bad_dir}/a.nii.gz"), lambda: load_mask(f"{bad_dir}/a.mhd"),
                 lambda: load_video(f"{bad_dir}/a.avi"), lambda: video_fps(f"{bad_dir}/a.avi"),
                 lambda: write_video(f"{bad_dir}/a.avi", frames, 25.0), lambda: read_dicom(f"{bad_dir}/a.dcm"),
                 lambda: import_dicom([f"{bad_dir}/a.dcm"], tmp_path / "out")):
        with pytest.raises(UserError, match=r"path not encodable as UTF-8 .*caf\\xe9"):
            call()
    assert os.listdir(bad_dir) == [] and not (tmp_path / "out").exists()


def test_a_user_error_naming_a_non_utf8_path_still_finishes_the_run(tmp_path):
    """run_context logs the message in UTF-8: with a raw surrogate in it, that write failed and the run stayed
    `running`; UserError now escapes it."""
    import json

    from echoseg.core.runs import Run, run_context

    run = Run.create("data", "check", out=tmp_path / "run", argv=["echoseg"])
    (tmp_path / "run" / "artefact.csv").write_text("x\n")
    with pytest.raises(UserError) as err, run_context(run):
        raise UserError(f"{BAD}: file not found")
    assert str(err.value) == "/data/caf\\xe9/a.avi: file not found"
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == str(err.value)
    assert "caf\\xe9/a.avi: file not found" in (tmp_path / "run" / "log.txt").read_text(encoding="utf-8")
