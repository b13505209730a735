"""The run-directory rules of docs/architecture.md."""

from __future__ import annotations

import json

import pytest

from echoseg.core.errors import UserError
from echoseg.core.io import atomic_path, write_json
from echoseg.core.runs import Run, default_run_dir, run_context


def _status(path):
    return json.loads((path / "run.json").read_text())["status"]


def test_create_writes_run_json_with_environment(tmp_path):
    run = Run.create("data", "toy-camus", out=tmp_path / "r", config={"a": 1}, seed=3, argv=["echoseg", "x"])
    rec = json.loads((run.path / "run.json").read_text())
    assert rec["status"] == "running"
    assert rec["command"] == "data toy-camus"
    assert rec["config"] == {"a": 1} and rec["seed"] == 3 and rec["argv"] == ["echoseg", "x"]
    assert rec["environment"]["echoseg"] and rec["environment"]["python"] and rec["environment"]["torch"]
    assert rec["started"].endswith("+00:00") and rec["finished"] is None
    assert (run.path / "log.txt").exists()


def test_default_path_layout_and_uniqueness(tmp_path):
    a = default_run_dir("train", None, "my run", root=tmp_path)
    assert a.parent == tmp_path / "train"
    stamp, name = a.name.split("_", 1)
    assert len(stamp) == 15 and stamp[8] == "-" and name == "my-run"
    a.mkdir(parents=True)
    b = default_run_dir("train", None, "my run", root=tmp_path)
    assert b != a and not b.exists()


def test_refuses_non_empty_out(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(UserError, match="not empty"):
        Run.create("x", "y", out=out)
    assert (out / "precious.txt").read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert Run.create("x", "y", out=empty).path == empty


def test_completed_and_summary_metrics(tmp_path):
    run = Run.create("x", "y", out=tmp_path / "r")
    with run_context(run):
        run.log_metrics({"epoch": 1, "loss": 0.5})
        run.log_metrics({"epoch": 2, "loss": float("nan")})
        run.write_summary({"dice": 0.9})
        run.log("hello")
    assert _status(run.path) == "completed"
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": None}]
    assert json.loads((run.path / "summary.json").read_text()) == {"dice": 0.9}
    assert "hello" in (run.path / "log.txt").read_text()
    assert json.loads((run.path / "run.json").read_text())["finished"]


def test_failed_keeps_traceback_in_log(tmp_path):
    run = Run.create("x", "y", out=tmp_path / "r")
    with pytest.raises(ZeroDivisionError), run_context(run):
        (run.path / "partial.bin").write_bytes(b"1")
        1 / 0  # noqa: B018
    assert _status(run.path) == "failed"
    assert "ZeroDivisionError" in (run.path / "log.txt").read_text()
    assert "Traceback" in (run.path / "log.txt").read_text()


def test_interrupted(tmp_path):
    run = Run.create("x", "y", out=tmp_path / "r")
    with pytest.raises(KeyboardInterrupt), run_context(run):
        raise KeyboardInterrupt
    assert _status(run.path) == "interrupted"


def test_user_error_before_artefacts_leaves_nothing(tmp_path):
    run = Run.create("x", "y", out=tmp_path / "r")
    with pytest.raises(UserError), run_context(run):
        raise UserError("bad input")
    assert not run.path.exists()


def test_user_error_after_artefacts_marks_failed(tmp_path):
    run = Run.create("x", "y", out=tmp_path / "r")
    with pytest.raises(UserError), run_context(run):
        (run.path / "report.csv").write_text("a\n")
        raise UserError("bad files found")
    assert _status(run.path) == "failed"
    assert json.loads((run.path / "run.json").read_text())["error"] == "bad files found"


def test_resume_same_command_only(tmp_path):
    run = Run.create("synth", "generate", out=tmp_path / "r")
    with pytest.raises(KeyboardInterrupt), run_context(run):
        raise KeyboardInterrupt
    again = Run.resume(run.path, "synth", "generate", argv=["again"])
    rec = json.loads((run.path / "run.json").read_text())
    assert rec["status"] == "running" and rec["resumed"][0]["previous_status"] == "interrupted"
    assert again.fresh is False
    with pytest.raises(UserError, match="not 'train'"):
        Run.resume(run.path, "train")
    with pytest.raises(UserError, match="no run.json"):
        Run.resume(tmp_path / "nothing", "train")


def test_resumed_run_never_deleted_on_user_error(tmp_path):
    run = Run.create("x", "y", out=tmp_path / "r")
    with run_context(run):
        pass
    again = Run.resume(run.path, "x", "y")
    with pytest.raises(UserError), run_context(again):
        raise UserError("bad")
    assert run.path.exists() and _status(run.path) == "failed"


def test_inputs_recorded_with_manifest_hash(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.csv").write_text("sample_id\nx\n")
    run = Run.create("x", "y", out=tmp_path / "r", inputs={"data": data, "none": None})
    rec = json.loads((run.path / "run.json").read_text())
    assert rec["inputs"]["data"]["path"] == str(data.resolve())
    assert len(rec["inputs"]["data"]["sha256"]) == 64
    assert "none" not in rec["inputs"]


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_non_main_process_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    run = Run.create("x", "y", out=tmp_path / "r")
    with run_context(run):
        run.log("x")
        run.write_summary({"a": 1})
    assert not (tmp_path / "r").exists()
