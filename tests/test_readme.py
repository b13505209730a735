"""The README's toy-data shell examples are copy-paste correct.

Fenced ```bash blocks use only toy data and run, in order, in one shell (slow: `make test-all`); ```sh blocks need
real data or weights. Both are checked, fast, to name existing commands and options.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_runnable_examples():
    assert len(_blocks("bash")) >= 5


@pytest.mark.parametrize("lang", ["sh", "bash"])
def test_examples_name_real_commands_and_options(lang):
    """Every `echoseg ...` line names an existing (sub)command, and each literal --option is one of its own."""
    import typer.main

    from echoseg.cli import app

    root = typer.main.get_command(app)
    for block in _blocks(lang):
        for line in block.replace("\\\n", " ").splitlines():
            for m in re.finditer(r"(?:^|\$\(|\s)echoseg ([^)|;&>]*)", line):
                cmd, words = root, m.group(1).split()
                while words and hasattr(cmd, "commands") and not words[0].startswith("-"):
                    assert words[0] in cmd.commands, f"README names unknown command: {line.strip()}"
                    cmd = cmd.commands[words.pop(0)]
                assert not hasattr(cmd, "commands"), f"README names a command group only: {line.strip()}"
                known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
                unknown = [w for w in words if re.fullmatch(r"--[a-z][a-z0-9-]*", w) and w not in known]
                assert not unknown, f"README gives {cmd.name} unknown options {unknown}: {line.strip()}"


def test_bash_examples_are_valid_bash():
    proc = subprocess.run(["bash", "-n"], input="\n".join(_blocks("bash")), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_bash_examples_run(tmp_path):
    """Runs every ```bash block on toy data (about two minutes on 2 CPU cores: `make test-all`)."""
    script = "set -euo pipefail\n" + "\n".join(_blocks("bash"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", ECHOSEG_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CAMUS usable" in proc.stdout and "EchoNet usable" in proc.stdout
    assert '"aFD_ED' in proc.stdout or "aFD_ED" in proc.stdout
