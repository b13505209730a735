"""The README's toy-data shell examples are copy-paste correct.

Fenced ```bash blocks use only toy data and run, in order, in one shell; ```sh blocks need real data or weights and
are only checked to name existing commands.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_runnable_examples():
    assert len(_blocks("bash")) >= 5


def test_sh_examples_name_real_commands():
    import typer.main

    from echoseg.cli import app

    root = typer.main.get_command(app)
    for block in _blocks("sh"):
        for line in block.splitlines():
            m = re.search(r"(?:^|\$\(|\s)echoseg ([a-z-]+)(?: ([a-z-]+))?", line)
            if not m:
                continue
            group = root.commands.get(m.group(1))
            assert group is not None, f"README names unknown command: {line.strip()}"
            if hasattr(group, "commands") and m.group(2):
                assert m.group(2) in group.commands, f"README names unknown command: {line.strip()}"


def test_bash_examples_run(tmp_path):
    script = "set -euo pipefail\n" + "\n".join(_blocks("bash"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", ECHOSEG_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CAMUS usable" in proc.stdout and "EchoNet usable" in proc.stdout
    assert '"aFD_ED' in proc.stdout or "aFD_ED" in proc.stdout
