"""A killed command leaves its run marked `interrupted` (exit 130), even when its stderr reader is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from echoseg.cli import main


@pytest.fixture(scope="module")
def camus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("d") / "camus"
    assert main(["data", "toy", "camus", "--out", str(out), "--patients", "3", "--size", "64"]) == 0
    return out


def _start(args: list[str], stderr) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "echoseg", "--no-progress", *args], stdout=subprocess.PIPE,
                            stderr=stderr, env=env, text=True)


def _wait_for_status(run: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size > 0:
            return
        if proc.poll() is not None:
            pytest.fail(f"command ended early with {proc.returncode}")
        time.sleep(0.2)
    pytest.fail("the run never started iterating")


@pytest.mark.slow  # a real training subprocess killed mid-epoch, twice (~13 s)
@pytest.mark.parametrize("closed_stderr", [False, True])
def test_sigterm_marks_interrupted(camus, tmp_path, closed_stderr):
    run = tmp_path / "synth"
    args = ["synth", "train", "--data", str(camus), "--size", "32", "--steps", "100000", "--batch-size", "2",
            "--sample-every", "0", "--out", str(run)]
    proc = _start(args, subprocess.PIPE if closed_stderr else subprocess.DEVNULL)
    try:
        _wait_for_status(run, proc)
        if closed_stderr:
            proc.stderr.close()  # the reader of the console is gone, as when `| tail` is killed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "interrupted" and rec["finished"]
