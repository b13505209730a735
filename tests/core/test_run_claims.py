"""Run directories are claimed atomically: one writer per directory, stale locks taken over, --resume after kill -9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from echoseg.core.errors import UserError
from echoseg.core.runs import LOCK_FILE, Run, run_context

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_second_claim_of_a_live_run_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    first = Run.create("stats", "wilcoxon", out=out, config={})
    try:
        with pytest.raises(UserError, match=rf"in use by another echoseg process \(pid {os.getpid()} on "):
            Run.create("stats", "wilcoxon", out=out, config={})
        with pytest.raises(UserError, match="in use by another echoseg process"):
            Run.resume(out, "stats", "wilcoxon")
    finally:
        first.close()
    assert (out / LOCK_FILE).is_file()


def test_lock_is_released_when_the_run_ends_and_resume_reclaims_it(tmp_path):
    out = tmp_path / "run"
    with run_context(Run.create("stats", "wilcoxon", out=out, config={})):
        pass
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    with pytest.raises(UserError, match="exists and is not empty"):
        Run.create("stats", "wilcoxon", out=out, config={})
    with run_context(Run.resume(out, "stats", "wilcoxon")):
        pass
    assert "took over the lock" not in (out / "log.txt").read_text()  # a released lock is not a stale one


def test_empty_directory_holding_only_a_lock_file_is_fresh(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text("pid 1 on elsewhere\n")
    with run_context(Run.create("stats", "wilcoxon", out=out, config={})) as run:
        assert run.fresh


def test_default_directories_in_the_same_second_are_distinct(tmp_path):
    runs = [Run.create("stats", "wilcoxon", name="same", root=tmp_path, config={}) for _ in range(3)]
    try:
        assert len({r.path for r in runs}) == 3
    finally:
        for r in runs:
            r.close()


_KILLED = """
import os, signal, sys
from echoseg.core.runs import Run
run = Run.create("stats", "wilcoxon", out=sys.argv[1], config={})
run.log("about to die")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_stale_lock_of_a_killed_process_is_taken_over_by_resume(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(out)], env=ENV, capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert "pid" in (out / LOCK_FILE).read_text()
    with run_context(Run.resume(out, "stats", "wilcoxon")):
        pass
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    assert "took over the lock" in (out / "log.txt").read_text()


def test_concurrent_commands_with_the_same_out_never_both_succeed(tmp_path):
    out = tmp_path / "toy"
    cmd = [sys.executable, "-m", "echoseg", "data", "toy", "camus", "--patients", "3", "--size", "32",
           "--out", str(out)]
    procs = [subprocess.Popen([*cmd, "--seed", str(seed)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for seed in (1, 2)]
    results = [(p.wait(timeout=240), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 2], results
    winner = next(r for r in results if r[0] == 0)
    loser = next(r for r in results if r[0] == 2)
    assert winner[1].strip().splitlines() == [str(out)]
    assert loser[1] == ""
    assert "in use by another echoseg process" in loser[2] or "exists and is not empty" in loser[2]
    assert len(loser[2].strip().splitlines()) == 1
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "completed"
    seed = record["seed"]
    assert f"--seed {seed}" in " ".join(record["argv"])
    assert Path(out / "manifest.csv").is_file()
