"""Config resolution: defaults < --config < explicit options < --set."""

from __future__ import annotations

import pytest

from echoseg.core.config import parse_sets, resolve_config
from echoseg.core.errors import UserError


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
