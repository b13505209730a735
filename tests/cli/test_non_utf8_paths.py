"""Paths holding a byte that is not UTF-8 (b"caf\\xe9" on Linux): exit 2 with the path escaped, never a native crash
(SimpleITK aborts, OpenCV segfaults) and never a run left `running`. Real subprocesses: a crash kills the process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# slow tier: every case is a real subprocess (~19 s in all), which keeps `make test` inside its 4 minutes
pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Linux file names are bytes; macOS/Windows are UTF-16"),
    pytest.mark.slow,
]


def _echoseg(*args: str, cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "echoseg", *args], capture_output=True, cwd=cwd, env=env,
                          timeout=300)


def _non_utf8(parent: Path, name: bytes = b"caf\xe9") -> str:
    path = os.fsdecode(os.fsencode(parent) + b"/" + name)
    os.mkdir(path)
    return path


def _runs_left_running(root: Path) -> list[bytes]:
    left = []
    for folder, _, names in os.walk(os.fsencode(root)):
        if b"run.json" in names:
            record = json.loads(Path(os.fsdecode(folder), "run.json").read_bytes())
            if record.get("status") == "running":
                left.append(folder)
    return left


def _refused(proc: subprocess.CompletedProcess, option: str) -> None:
    err = proc.stderr.decode("utf-8")  # the message is ASCII-escaped: it decodes
    assert proc.returncode == 2, (proc.returncode, err)
    assert proc.stdout == b"" and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {option} path not encodable as UTF-8") and "caf\\xe9" in err, err


@pytest.fixture(scope="module")
def toy_echonet(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy") / "echonet"
    proc = _echoseg("data", "toy", "echonet", "--videos", "2", "--frames", "16", "--size", "32", "--out", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    return out


def test_data_toy_camus_out(tmp_path):
    bad = _non_utf8(tmp_path)
    _refused(_echoseg("data", "toy", "camus", "--patients", "1", "--size", "64", "--out", f"{bad}/toy"), "--out")
    _refused(_echoseg("data", "toy", "echonet", f"--out={bad}/toy"), "--out")
    assert os.listdir(bad) == [] and not _runs_left_running(tmp_path)


def test_data_check(tmp_path, toy_echonet):
    bad = _non_utf8(tmp_path)
    shutil.copytree(toy_echonet, f"{bad}/echonet")
    _refused(_echoseg("data", "check", f"{bad}/echonet", "--out", str(tmp_path / "check")), "argument")
    assert not (tmp_path / "check").exists() and not _runs_left_running(tmp_path)


def test_data_import_dicom(tmp_path):
    from pydicom.data import get_testdata_file

    bad = _non_utf8(tmp_path)
    cine = shutil.copy(get_testdata_file("examples_ybr_color.dcm"), f"{bad}/cine.dcm")
    _refused(_echoseg("data", "import-dicom", cine, "--out", str(tmp_path / "a")), "argument")
    good = shutil.copy(get_testdata_file("examples_ybr_color.dcm"), tmp_path / "cine.dcm")
    _refused(_echoseg("data", "import-dicom", str(good), "--out", f"{bad}/imp"), "--out")
    assert not (tmp_path / "a").exists() and os.listdir(bad) == ["cine.dcm"]
    assert not _runs_left_running(tmp_path)


def test_eval_afd_data(tmp_path, toy_echonet):
    bad = _non_utf8(tmp_path)
    shutil.copytree(toy_echonet, f"{bad}/echonet")
    out = tmp_path / "afd"
    proc = _echoseg("eval", "afd", "--data", f"{bad}/echonet", "--masks", str(toy_echonet / "Masks"),
                    "--out", str(out))
    _refused(proc, "--data")
    assert not out.exists() and not _runs_left_running(tmp_path)


def test_non_utf8_working_directory(tmp_path):
    bad = _non_utf8(tmp_path)
    proc = _echoseg("data", "toy", "echonet", "--videos", "2", "--frames", "16", "--size", "32", cwd=bad)
    err = proc.stderr.decode("utf-8")
    assert proc.returncode == 2 and err.startswith("error: current directory path not encodable") and "caf\\xe9" in err
    assert os.listdir(bad) == [] and not _runs_left_running(tmp_path)
