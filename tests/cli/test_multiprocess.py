"""Every iterating command under a REAL multi-process launch on CPU (gloo): `accelerate launch --multi_gpu
--num_processes 2`, `torchrun --nproc_per_node 2`, and two "machines" of one process each on 127.0.0.1.

Each launch must exit 0, print exactly one stdout line (the run directory, from global rank 0 only), leave run.json
`completed`, and produce what a one-process run produces (the same test rows, the same generated samples). A hang
fails through the subprocess timeout instead of blocking the suite. See docs/architecture.md, "Several processes
and several machines".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from echoseg.cli import main
from echoseg.cli.options import emit_run_path
from echoseg.core.env import launch_mismatch

TIMEOUT = 240  # seconds per launch; a tiny run takes ~10-40 s on two CPU cores
CPU = ["--device", "cpu", "--precision", "no"]
TRAIN = ["train", "--model", "unet", "--config", "tiny", "--input-size", "16", "--eval-size", "32", "--epochs", "1",
         "--batch-size", "8", *CPU]
SYNTH_TRAIN = ["synth", "train", "--config", "tiny", "--size", "32", "--steps", "2", "--batch-size", "2", *CPU]
DISTILL = ["distill", "--blocks", "2", "--layers", "1", "--seq-len", "8", "--batch-size", "4", "--epochs", "1", *CPU]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerate(*extra: str) -> list[str]:
    """`accelerate launch` (as a module: no dependence on the venv's bin/ being on PATH)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", "no", "--dynamo_backend", "no",
            *extra]


def _multi() -> list[str]:
    """`accelerate launch --multi_gpu --num_processes 2` on a free port (gloo on CPU)."""
    return _accelerate("--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                       "--main_process_port", str(_free_port()), "-m", "echoseg")


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _start(cmd: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    # Its own session: a timeout kills the launcher and every worker it started.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_env(), **(extra_env or {})}, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"launch did not finish in {timeout} s (a process waits at a collective the others skip?)\n"
                    f"{err[-4000:]}")
    return proc.returncode, out, err


def _launch(cmd: list[str], out: Path) -> Path:
    """Run a launch; assert exit 0, exactly one stdout line naming ``out``, run.json completed."""
    rc, stdout, stderr = _finish(_start(cmd))
    assert rc == 0, stderr[-4000:]
    assert stdout.splitlines() == [str(out)], (stdout, stderr[-2000:])
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    return out


def _rows(run: Path) -> list[tuple[str, str]]:
    per = pd.read_csv(run / "per_sample.csv")
    return sorted(zip(per["sample_id"].astype(str), per["prompt"].astype(str), strict=True))


def _samples(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*.png") if "images" in p.parts or "annotations" in p.parts}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy CAMUS, its prompts run, toy EchoNet videos and one-process baselines (train, synth train)."""
    root = tmp_path_factory.mktemp("multiprocess")
    for argv in (["data", "toy", "camus", "--patients", "3", "--size", "48", "--out", str(root / "camus")],
                 ["prompts", "build", str(root / "camus"), "--out", str(root / "real")],
                 ["data", "toy", "echonet", "--videos", "6", "--frames", "20", "--size", "32",
                  "--out", str(root / "echo")],
                 [*TRAIN, "--data", str(root / "real"), "--out", str(root / "train1")],
                 [*SYNTH_TRAIN, "--data", str(root / "camus"), "--out", str(root / "synth1")]):
        assert main(argv) == 0, argv
    return root


# ----------------------------------------------------------------------------------------------- fast checks
def test_only_rank_zero_prints_the_run_path(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("RANK", "1")
    emit_run_path(tmp_path)
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    emit_run_path(tmp_path)
    assert capsys.readouterr().out == f"{tmp_path}\n"


def test_launch_mismatch_detects_a_lone_process_only():
    lone = {"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29500"}
    argv = ["python", "accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "echoseg", "train"]
    message = launch_mismatch(lone, argv)
    assert message and "2 processes" in message and "--multi_gpu --num_processes 2" in message
    assert "\n" not in message
    assert launch_mismatch(lone, []) is not None  # launcher command line unknown: the environment decides
    assert launch_mismatch({}, []) is None  # a plain `echoseg ...`
    assert launch_mismatch({**lone, "WORLD_SIZE": "2", "RANK": "0"}, argv) is None  # torchrun / --multi_gpu
    assert launch_mismatch({k: v for k, v in lone.items() if not k.startswith("MASTER")}, []) is None
    # MASTER_* exported by the user, but the launcher was asked for one process on one machine
    assert launch_mismatch(lone, ["accelerate", "launch", "--num_processes=1", "-m", "echoseg"]) is None


# ------------------------------------------------------------------------------------------- real launches
@pytest.mark.slow
def test_train_with_test_split_two_processes(toy, tmp_path):
    out = _launch([*_multi(), *TRAIN, "--data", str(toy / "real"), "--out", str(tmp_path / "t")], tmp_path / "t")
    assert _rows(out) == _rows(toy / "train1")  # the whole test split, scored once: as a one-process run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["overall"]["n"] == len(_rows(out))
    assert (out / "checkpoints" / "best.safetensors").is_file()


@pytest.mark.slow
def test_train_without_test_split_torchrun(toy, tmp_path):
    out = tmp_path / "t"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "echoseg", *TRAIN, "--train-data", str(toy / "real"), "--val-data",
           str(toy / "real"), "--out", str(out)]
    _launch(cmd, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["test"] is None and "test" not in summary and not (out / "per_sample.csv").exists()
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]


@pytest.mark.slow
def test_synth_train_two_processes(toy, tmp_path):
    out = _launch([*_multi(), *SYNTH_TRAIN, "--data", str(toy / "camus"), "--out", str(tmp_path / "m")],
                  tmp_path / "m")
    assert (out / "model" / "conditioning.json").is_file() and (out / "checkpoints" / "latest.pt").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == 2


@pytest.mark.slow
def test_synth_generate_two_processes_writes_the_same_samples(toy, tmp_path):
    args = ["synth", "generate", "--model", str(toy / "synth1"), "--masks", str(toy / "camus"), "--copies-per-mask",
            "1", "--steps", "2", "--batch-size", "4", *CPU]
    assert main([*args, "--out", str(tmp_path / "g1")]) == 0
    out = _launch([*_multi(), *args, "--out", str(tmp_path / "g2")], tmp_path / "g2")
    one = _samples(tmp_path / "g1")
    assert one and _samples(out) == one
    assert len(pd.read_csv(out / "manifest.csv")) == len(pd.read_csv(tmp_path / "g1" / "manifest.csv"))
    assert json.loads((out / "summary.json").read_text())["images"] == len(one) // 2  # an image and a mask each


@pytest.mark.slow
def test_distill_two_processes(toy, tmp_path):
    out = _launch([*_multi(), *DISTILL, "--teacher", f"run:{toy / 'train1'}", "--data", str(toy / "echo"),
                   "--eval-data", str(toy / "echo"), "--eval-split", "all", "--out", str(tmp_path / "kd")],
                  tmp_path / "kd")
    for name in ("model.json", "best.safetensors", "last.safetensors", "best.json"):
        assert (out / "checkpoints" / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval"]["student"]["videos_evaluated"] == 6 and (out / "report.md").is_file()
    cached = Path(summary["pseudo_labels"]["train"])
    assert len(list((cached / "done").glob("*.json"))) == 6  # the labelling, shared by the processes, is complete


PRETRAIN = ["pretrain", "--config", "tiny-vit", "--epochs", "2", "--text", "p3", "--attention-pairs", "1", *CPU]


def _pretrain_data(root: Path) -> Path:
    for argv in (["data", "toy", "camus", "--patients", "6", "--size", "48", "--out", str(root / "camus6")],
                 ["prompts", "build", str(root / "camus6"), "--out", str(root / "real6")]):
        assert main(argv) == 0, argv
    return root / "real6"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["convirt", "gloria"])
def test_pretrain_two_processes_equal_one_process_with_the_joint_batch(tmp_path, method):
    """Negatives gathered with gradients: two processes of 4 pairs step as one process of 8 (a ViT and heads
    without BatchNorm, no dropout: nothing differs but the order of the sums)."""
    data = _pretrain_data(tmp_path)
    assert main([*PRETRAIN, "--method", method, "--batch-size", "8", "--data", str(data),
                 "--out", str(tmp_path / "one")]) == 0
    two = _launch([*_multi(), *PRETRAIN, "--method", method, "--batch-size", "4", "--data", str(data),
                   "--out", str(tmp_path / "two")], tmp_path / "two")
    rows = [[json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] for run in (tmp_path / "one",
                                                                                                  two)]
    for a, b in zip(*rows, strict=True):
        for key in ("train_loss", "i2t_r1", "t2i_r1", "i2t_r5", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (a["epoch"], key)
    wa = load_file(tmp_path / "one" / "checkpoints" / "last.safetensors")
    wb = load_file(two / "checkpoints" / "last.safetensors")
    # Attention key biases get a zero gradient (softmax ignores a shift), which Adam turns into steps of rounding
    # noise; every other tensor must agree.
    learned = [k for k in wa if not k.endswith(("key.bias", "qkv.bias"))]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in learned)
    assert (two / "encoders" / "text" / "config.json").is_file()


@pytest.mark.slow
def test_pretrain_mgca_two_processes_distributed_sinkhorn(tmp_path):
    data = _pretrain_data(tmp_path)
    out = _launch([*_multi(), *PRETRAIN, "--method", "mgca", "--batch-size", "4", "--data", str(data),
                   "--out", str(tmp_path / "mgca")], tmp_path / "mgca")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["train_proto"] > 0 for r in rows)
    assert (out / "attention_maps.png").is_file()


SRUN_STUB = """#!/bin/bash
# srun for a test: one task per "node" on this machine, SLURM_NODEID set; per-task stdout and exit status kept.
while [[ $1 == -* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do
    SLURM_NODEID=$i "$@" > "$STUB_DIR/task$i.out" &
    pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; rc=$?
    echo $rc > "$STUB_DIR/task$i.rc"
    [ $rc -eq 0 ] || status=$rc
done
cat "$STUB_DIR"/task*.out
exit $status
"""


@pytest.mark.slow
def test_two_machines_of_one_process_each(toy, tmp_path):
    """examples/slurm/echoseg_multinode.sbatch as two 'machines' of one CPU process each on 127.0.0.1: the same
    `accelerate launch --multi_gpu --num_machines 2 --machine_rank 0|1 --main_process_ip ...` on each."""
    script = Path(__file__).resolve().parents[2] / "examples" / "slurm" / "echoseg_multinode.sbatch"
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "srun").write_text(SRUN_STUB)
    (stubs / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")  # `scontrol show hostnames`: the first node
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    out = tmp_path / "t"
    env = {"PATH": f"{stubs}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "STUB_DIR": str(stubs), "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "1", "SLURM_JOB_NODELIST": "node[1-2]",
           "MAIN_PORT": str(_free_port())}
    rc, stdout, stderr = _finish(_start(["bash", str(script), str(toy / "real"), str(out), *TRAIN[1:]], env))
    assert rc == 0, stderr[-4000:]
    for rank in (0, 1):
        assert (stubs / f"task{rank}.rc").read_text().strip() == "0", stderr[-4000:]
    assert (stubs / "task0.out").read_text().splitlines() == [str(out)]  # one line in all, from global rank 0
    assert (stubs / "task1.out").read_text() == ""
    assert stdout.splitlines() == [str(out)]
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    assert _rows(out) == _rows(toy / "train1")


@pytest.mark.slow
def test_single_process_launch_warns(tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts ONE process: it still works, and says so on stderr."""
    out = tmp_path / "d"
    cmd = [*_accelerate("--cpu", "--num_processes", "2", "-m", "echoseg"), "data", "toy", "camus", "--patients", "1",
           "--size", "32", "--out", str(out)]
    rc, stdout, stderr = _finish(_start(cmd))
    assert rc == 0, stderr[-4000:]
    assert stdout.splitlines() == [str(out)]
    warnings = [line for line in stderr.splitlines() if "started only this one" in line]
    assert len(warnings) == 1 and "--multi_gpu --num_processes 2" in warnings[0]
    assert "started only this one" in (out / "log.txt").read_text()
