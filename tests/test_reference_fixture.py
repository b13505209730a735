"""The `reference` fixture: found files pass; a missing folder or file skips, and fails under CI=true."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")
INNER = """
def test_reads_a_published_file(reference):
    assert reference("synthetic-boost", "tasks", "camus", "test.json").read_text() == "[]"
"""


@pytest.mark.parametrize(("layout", "ci", "outcome"), [
    ("full", "true", "passed"),
    ("none", "true", "failed"),
    ("none", None, "skipped"),
    ("none", "false", "skipped"),
    ("folder", "true", "failed"),
    ("folder", None, "skipped"),
])
def test_missing_reference_skips_or_fails_under_ci(pytester, monkeypatch, layout, ci, outcome):
    ref = pytester.path / "ref"
    if layout != "none":
        (ref / "synthetic-boost" / "tasks").mkdir(parents=True)
    if layout == "full":
        (ref / "synthetic-boost" / "tasks" / "camus").mkdir()
        (ref / "synthetic-boost" / "tasks" / "camus" / "test.json").write_text("[]")
    monkeypatch.setenv("ECHOSEG_REFERENCE", str(ref))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(INNER)
    result = pytester.runpytest("-rsf", "-p", "no:cacheprovider")
    result.assert_outcomes(**{outcome: 1})
    if outcome != "passed":
        result.stdout.fnmatch_lines(["*reference files not found*ECHOSEG_REFERENCE*"])
    if outcome == "failed":
        result.stdout.fnmatch_lines(["*CI=true requires them*"])


def test_default_is_shared_reference_beside_the_clone():
    spec = importlib.util.spec_from_file_location("tests_conftest", CONFTEST)
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    assert conftest.reference_root({}) == CONFTEST.parents[2] / "shared" / "reference"
    assert conftest.reference_root({"ECHOSEG_REFERENCE": "/x/y"}) == Path("/x/y")
