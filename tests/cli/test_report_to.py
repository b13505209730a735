"""`--report-to`: metrics.jsonl rows and the run's config go to experiment trackers (tensorboard here), inside the
run directory; unknown trackers and missing packages are one-line errors (exit 2) that leave no run behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from echoseg.cli import main
from echoseg.core.engine import tracking

pytest.importorskip("tensorboard", reason="the tensorboard extra (pip install 'echoseg[tensorboard]')")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TRAIN = ["train", "--model", "unet", "--config", "tiny", "--input-size", "16", "--eval-size", "32", "--batch-size",
         "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report_to")
    assert main(["data", "toy", "camus", "--patients", "6", "--size", "48", "--out", str(root / "camus")]) == 0
    assert main(["prompts", "build", str(root / "camus"), "--out", str(root / "real")]) == 0
    return root


def _run(args: list[str], capsys) -> Path:
    capsys.readouterr()
    rc = main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    lines = cap.out.splitlines()
    assert len(lines) == 1 and cap.out == lines[0] + "\n"  # stdout is still only the run path
    return Path(lines[0])


def _events(run: Path) -> EventAccumulator:
    """The scalars of the run's tensorboard event files (trackers/echoseg/, not the hparams sub-runs)."""
    folder = run / "trackers" / tracking.PROJECT
    assert any(folder.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def _assert_metrics_logged(run: Path, step_key: str) -> list[dict]:
    """Every numeric field of every metrics.jsonl row is a tensorboard scalar at the row's step."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = _events(run)
    tags = set(acc.Tags()["scalars"])
    numeric = {k for row in rows for k, v in row.items() if isinstance(v, (int, float)) and k != step_key}
    assert numeric and numeric <= tags, numeric - tags
    for key in numeric:
        logged = {e.step: e.value for e in acc.Scalars(key)}
        expected = {row[step_key]: float(row[key]) for row in rows if key in row}
        assert logged.keys() == expected.keys(), key
        for step, value in expected.items():
            assert logged[step] == pytest.approx(value, rel=1e-6, abs=1e-7), (key, step)
    return rows


def _hparams(run: Path) -> dict:
    """The run configuration accelerate stored beside the events (hparams.yml of the latest start)."""
    files = sorted((run / "trackers" / tracking.PROJECT).glob("*/hparams.yml"))
    assert files
    return yaml.safe_load(files[-1].read_text())


def test_train_reports_metrics_and_config_to_tensorboard_and_resume_appends(data, tmp_path, capsys):
    run = _run([*TRAIN, "--data", str(data / "real"), "--epochs", "2", "--report-to", "tensorboard",
                "--out", str(tmp_path / "tb")], capsys)
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["config"]["report_to"] == ["tensorboard"]
    assert record["trackers"] == {"report_to": ["tensorboard"], "dir": "trackers"}
    rows = _assert_metrics_logged(run, "epoch")
    assert [r["epoch"] for r in rows] == [1, 2]
    hp = _hparams(run)
    assert hp["model"] == "unet" and hp["epochs"] == 2 and hp["run.command"] == "train"
    assert hp["data.train"] is None and hp["data.all"] == str(data / "real")  # nested config flattened
    assert hp["report_to"] == '["tensorboard"]'

    assert _run(["train", "--resume", str(run), "--epochs", "3"], capsys) == run
    rows = _assert_metrics_logged(run, "epoch")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert _hparams(run)["epochs"] == 3


def test_no_report_to_writes_no_tracker_files(data, tmp_path, capsys):
    run = _run([*TRAIN, "--data", str(data / "real"), "--epochs", "1", "--out", str(tmp_path / "plain")], capsys)
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["report_to"] == [] and "trackers" not in record
    assert not (run / "trackers").exists()


def test_a_resumed_run_may_start_reporting(data, tmp_path, capsys):
    run = _run([*TRAIN, "--data", str(data / "real"), "--epochs", "1", "--out", str(tmp_path / "late")], capsys)
    assert _run(["train", "--resume", str(run), "--epochs", "2", "--report-to", "tensorboard"], capsys) == run
    acc = _events(run)
    assert [e.step for e in acc.Scalars("val_dice")] == [2]  # from the resume on
    assert json.loads((run / "run.json").read_text())["config"]["report_to"] == ["tensorboard"]


def test_train_reports_to_wandb_offline_and_an_mlflow_store_in_the_run(data, tmp_path, capsys, monkeypatch):
    """Runs where the wandb and mlflow extras are installed: no network, everything inside the run directory."""
    pytest.importorskip("wandb", reason="the wandb extra")
    mlflow = pytest.importorskip("mlflow", reason="the mlflow extra")
    for var in ("WANDB_MODE", "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME",
                "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = _run([*TRAIN, "--data", str(data / "real"), "--epochs", "2", "--report-to", "wandb,mlflow",
                "--out", str(tmp_path / "wm")], capsys)
    record = json.loads((run / "run.json").read_text())
    offline = list((run / "trackers" / "wandb").glob(f"offline-run-*-{record['run_id']}"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb"))
    client = mlflow.tracking.MlflowClient(tracking_uri=(run / "trackers" / "mlruns").resolve().as_uri())
    mlflow_run = client.get_run(record["trackers"]["mlflow_run_id"])
    assert mlflow_run.data.params["model"] == "unet" and mlflow_run.data.params["epochs"] == "2"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(mlflow_run.info.run_id, "val_dice")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r["val_dice"])) for r in rows]
    # the resumed run continues the same mlflow run; its changed --epochs does not clash with the logged param
    assert _run(["train", "--resume", str(run), "--epochs", "3"], capsys) == run
    assert [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "val_dice")] == [1, 2, 3]


@pytest.mark.parametrize("value", ["tensorbord", "tensorboard,comet"])
def test_unknown_tracker_is_one_line_exit_2_and_no_run(data, tmp_path, capsys, value):
    out = tmp_path / "bad"
    capsys.readouterr()
    assert main([*TRAIN, "--data", str(data / "real"), "--epochs", "1", "--report-to", value, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--report-to: unknown tracker" in err
    assert "tensorboard, wandb, mlflow" in err
    assert not out.exists()


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_tracker_package_names_the_extra(data, tmp_path, capsys, monkeypatch, name):
    monkeypatch.setattr(tracking, "_available", lambda tracker: tracker != name)
    out = tmp_path / "missing"
    capsys.readouterr()
    rc = main(["pretrain", "--config", "tiny", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--data",
               str(data / "real"), "--report-to", f"tensorboard,{name}", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--report-to {name}: the {name} package is not installed" in err and f"echoseg[{name}]" in err
    assert not out.exists()


def test_pretrain_reports_to_tensorboard(data, tmp_path, capsys):
    run = _run(["pretrain", "--config", "tiny", "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--data",
                str(data / "real"), "--report-to", "none,tensorboard", "--out", str(tmp_path / "pt")], capsys)
    assert json.loads((run / "run.json").read_text())["config"]["report_to"] == ["tensorboard"]
    rows = _assert_metrics_logged(run, "epoch")
    assert len(rows) == 2 and "val_loss" in rows[0]


def test_synth_train_reports_steps_to_tensorboard(data, tmp_path, capsys):
    run = _run(["synth", "train", "--data", str(data / "camus"), "--config", "tiny", "--size", "32", "--steps", "2",
                "--batch-size", "2", "--device", "cpu", "--report-to", "tensorboard", "--out", str(tmp_path / "sy")],
               capsys)
    rows = _assert_metrics_logged(run, "step")
    assert rows[-1]["step"] == 2 and "loss" in _events(run).Tags()["scalars"]


def test_parse_flatten_and_row_values():
    assert tracking.parse_report_to(None) == []
    assert tracking.parse_report_to(["wandb, TensorBoard", "wandb", "none"]) == ["wandb", "tensorboard"]
    assert tracking.parse_report_to("mlflow") == ["mlflow"]
    flat = tracking.flatten_config({"a": {"b": 1, "c": {"d": None}}, "l": [1, "x"], "p": Path("/x"), "f": 0.5})
    assert flat == {"a.b": 1, "a.c.d": None, "l": '[1, "x"]', "p": "/x", "f": 0.5}
    step, values = tracking.row_values({"epoch": 3, "loss": 0.25, "best": True, "note": "x", "none": None})
    assert step == 3 and values == {"loss": 0.25, "best": 1}
    step, values = tracking.row_values({"step": 10, "epoch": 1, "loss": 1.0})
    assert step == 10 and values == {"epoch": 1, "loss": 1.0}


def test_resume_replaces_the_steps_it_repeats_and_only_the_writer_logs(tmp_path):
    """A run that logged epoch 2 but crashed before checkpointing it repeats epoch 2 on resume: tensorboard keeps
    the new value (purge_step). A process that does not write the run (rank > 0) gets no trackers."""
    from echoseg.core.env import make_accelerator
    from echoseg.core.runs import Run

    run = Run.create("train", out=tmp_path / "r", config={"report_to": ["tensorboard"]}, argv=["echoseg", "train"])
    make_accelerator("no", "cpu", run)
    run.log_metrics({"epoch": 1, "x": 1.0})
    run.log_metrics({"epoch": 2, "x": 2.0})
    run.finish("failed")
    run.close()
    again = Run.resume(tmp_path / "r", "train", argv=["echoseg", "train", "--resume"])
    make_accelerator("no", "cpu", again)
    again.log_metrics({"epoch": 2, "x": 5.0})
    again.finish("completed")
    again.close()
    assert [(e.step, e.value) for e in _events(tmp_path / "r").Scalars("x")] == [(1, 1.0), (2, 5.0)]

    reader = Run(tmp_path / "r", Run.load(tmp_path / "r"), fresh=False, writer=False)
    make_accelerator("no", "cpu", reader)
    assert reader.trackers is None


@pytest.mark.slow
def test_two_processes_log_once_from_the_main_process(data, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` (gloo on CPU): rank 0 alone writes the event files, with
    the rows of metrics.jsonl, and the launch ends cleanly (closing the trackers leaves the process group alone)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "mp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--main_process_port", str(port),
           "-m", "echoseg", *TRAIN, "--precision", "no", "--epochs", "2", "--data", str(data / "real"),
           "--report-to", "tensorboard", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**env, "HF_HUB_OFFLINE": "1",
                          "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines() == [str(out)]
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    assert len(list((out / "trackers" / tracking.PROJECT).glob("events.out.tfevents.*"))) == 1
    assert len(_assert_metrics_logged(out, "epoch")) == 2
