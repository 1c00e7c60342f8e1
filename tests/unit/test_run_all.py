"""tests/run_all.py's end-of-run summary: the failed tests are named, so a CI log cut to its tail says what failed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SPEC = importlib.util.spec_from_file_location("run_all", Path(__file__).resolve().parents[1] / "run_all.py")
run_all = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(run_all)

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.integration.test_a" name="test_ok" time="1.0" />
<testcase classname="tests.integration.test_a" name="test_broken" time="2.0">
  <failure message="AssertionError: assert 1 == 2&#10;second line">trace</failure></testcase>
<testcase classname="tests.integration.test_b" name="test_setup[x]" time="0.1">
  <error message="failed on setup with &quot;RuntimeError: bed down&quot;">trace</error></testcase>
<testcase classname="tests.integration.test_b" name="test_skipped" time="0.0"><skipped message="no" /></testcase>
</testsuite></testsuites>
"""


def test_failed_and_erroring_tests_are_named_with_the_first_line_of_their_message(tmp_path):
    path = tmp_path / "w0.xml"
    path.write_text(JUNIT)
    assert run_all.counts(path) == (1, 2, 1)
    assert run_all.failures(path) == [
        "tests/integration/test_a.py::test_broken (failure) - AssertionError: assert 1 == 2",
        'tests/integration/test_b.py::test_setup[x] (error) - failed on setup with "RuntimeError: bed down"',
    ]


def test_a_missing_or_green_file_names_nothing(tmp_path):
    assert run_all.failures(tmp_path / "absent.xml") == []
    green = tmp_path / "w1.xml"
    green.write_text('<testsuites><testsuite><testcase classname="t.x" name="test_y" /></testsuite></testsuites>')
    assert run_all.failures(green) == []
