"""Config resolution: defaults < --config < explicit options < --set."""

from __future__ import annotations

from pathlib import Path

import pytest

from echoseg.core.config import config_name_or_file, parse_sets, resolve_config, resumed_config
from echoseg.core.errors import UserError
from echoseg.core.runs import Run


def test_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 7\nlr: 0.01\nbatch-size: 4\n")
    params = {"epochs": 10, "lr": 0.002, "batch_size": 8, "name": "x"}
    out = resolve_config(params, explicit={"lr"}, config_file=cfg, sets=["batch_size=16"])
    assert out == {"epochs": 7, "lr": 0.002, "batch_size": 16, "name": "x"}


def test_set_types_and_errors(tmp_path):
    assert parse_sets(["a=3", "b=0.5", "c=true", "d=[1, 2]", "e=text"]) == {
        "a": 3, "b": 0.5, "c": True, "d": [1, 2], "e": "text"}
    with pytest.raises(UserError, match="key=value"):
        parse_sets(["novalue"])
    with pytest.raises(UserError, match="unknown option 'nope'"):
        resolve_config({"a": 1}, set(), sets=["nope=1"])
    with pytest.raises(UserError, match="must be an integer"):
        resolve_config({"a": 1}, set(), sets=["a=x"])
    assert resolve_config({"lr": 0.1}, set(), sets=["lr=1"]) == {"lr": 1.0}


def test_bad_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(UserError, match="not valid YAML"):
        resolve_config({"a": 1}, set(), config_file=bad)
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    with pytest.raises(UserError, match="mapping"):
        resolve_config({"a": 1}, set(), config_file=lst)
    with pytest.raises(UserError, match="not found"):
        resolve_config({"a": 1}, set(), config_file=tmp_path / "missing.yaml")


def test_config_name_or_file(tmp_path):
    assert config_name_or_file(None, "tiny") == (None, "tiny")
    assert config_name_or_file("rn50", "tiny") == (None, "rn50")
    assert config_name_or_file("opts.yaml", "tiny") == (Path("opts.yaml"), "tiny")  # a file by its suffix
    existing = tmp_path / "base"
    existing.write_text("epochs: 1\n")
    assert config_name_or_file(str(existing), "tiny") == (existing, "tiny")  # a file because it exists


def _run(tmp_path, command, config):
    group, _, verb = command.partition(" ")
    return Run.create(group, verb or None, out=tmp_path / "r", config=config).path


def test_resumed_config_refuses_any_other_option(tmp_path):
    path = _run(tmp_path, "train", {"data": {"all": "d"}, "epochs": 1, "lr": None})
    given = {"epochs": 3, "lr": 0.1, "resume": path, "out": None}
    cfg = resumed_config(path, "train", {"epochs", "resume"}, given, ("epochs", "device"),
                         requires=("data", dict, "training"))
    assert cfg["epochs"] == 3 and cfg["lr"] is None
    with pytest.raises(UserError, match=r"drop --lr \(only --epochs and --device may change\)"):
        resumed_config(path, "train", {"epochs", "lr"}, given, ("epochs", "device"))
    with pytest.raises(UserError, match="not 'distill'"):
        resumed_config(path, "distill", set(), given, ("epochs",))
    with pytest.raises(UserError, match="no distillation configuration"):
        resumed_config(path, "train", set(), given, ("epochs",), requires=("teacher", str, "distillation"))


def test_resumed_config_accepts_unchanged_options(tmp_path):
    path = _run(tmp_path, "synth train", {"data": str(tmp_path.resolve()), "lr": 0.5, "steps": 2})
    given = {"data": tmp_path, "lr": 0.5, "steps": 9, "name": "ignored"}
    cfg = resumed_config(path, "synth train", {"data", "lr", "steps", "name"}, given, ("steps",),
                         ignored=("name",), same_ok=True)
    assert cfg == {"data": str(tmp_path.resolve()), "lr": 0.5, "steps": 9}
    with pytest.raises(UserError, match="--lr 0.1 differs from the run's 0.5 \\(only --steps may change\\)"):
        resumed_config(path, "synth train", {"lr"}, {"lr": 0.1}, ("steps",), same_ok=True)
