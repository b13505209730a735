"""Root CLI behaviour: version, help, exit codes, stdout discipline."""

from __future__ import annotations

import subprocess
import sys

from echoseg import __version__
from echoseg.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"echoseg {__version__}"


def test_help_lists_groups(capsys):
    assert main(["--help"]) == 0
    assert "data" in capsys.readouterr().out


def test_unknown_option_is_exit_2_one_line(capsys):
    assert main(["data", "toy", "camus", "--bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--bogus" in err and "\n" not in err


def test_bad_value_is_exit_2_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["data", "toy", "camus", "--layout", "dicom", "--out", str(out)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert "--layout" in cap.err and "\n" not in cap.err.strip()
    assert not out.exists()


def test_config_and_set_reach_run_json(tmp_path, capsys):
    import json

    cfg = tmp_path / "c.yaml"
    cfg.write_text("patients: 2\nsize: 64\n")
    out = tmp_path / "r"
    rc = main(["data", "toy", "camus", "--config", str(cfg), "--set", "size=48", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert capsys.readouterr().out == f"{out}\n"
    rec = json.loads((out / "run.json").read_text())
    assert rec["config"]["patients"] == 2 and rec["config"]["size"] == 48
    assert rec["status"] == "completed"


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "echoseg", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"echoseg {__version__}"
