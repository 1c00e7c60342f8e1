"""The per-run log of tests/runbooks.py and the breakdown tests/parallel.py prints from it."""

from __future__ import annotations

import json
import os

from tests import parallel, runbooks


def test_each_run_is_logged_with_its_wall_and_cpu_seconds(tmp_path, monkeypatch):
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("SAASODOO_RUN_LOG", str(log))
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/integration/test_x.py::test_y (call)")
    t0, c0 = runbooks.time.monotonic() - 2.5, os.times()
    runbooks._log_run("/work/playbooks/platform_down.yml", True, t0, c0)
    entry = json.loads(log.read_text())
    assert entry["test"] == "tests/integration/test_x.py::test_y"
    assert entry["playbook"] == "platform_down.yml" and entry["check"] is True
    assert entry["wall"] >= 2.5 and entry["cpu"] >= 0


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("SAASODOO_RUN_LOG", raising=False)
    monkeypatch.chdir(tmp_path)
    runbooks._log_run("platform_down.yml", False, runbooks.time.monotonic(), os.times())
    assert list(tmp_path.iterdir()) == []


def test_breakdown_and_costliest_playbooks():
    runs = [{"playbook": "a.yml", "wall": 10.0, "cpu": 9.0}, {"playbook": "a.yml", "wall": 6.0, "cpu": 5.0},
            {"playbook": "b.yml", "wall": 20.0, "cpu": 10.0}]
    assert parallel.run_breakdown(runs, 72.0) == "3 playbook runs took 36s (50% of the tests' 72s), 24 CPU s"
    lines = parallel.costliest_playbooks(runs)
    assert [line.split()[-1] for line in lines] == ["b.yml", "a.yml"]
    assert "2 runs" in lines[1] and "8.0s each" in lines[1] and "88% CPU" in lines[1]


def test_cpu_busy_share():
    before = [100, 0, 50, 800, 50, 0, 0]
    after = [400, 0, 150, 1000, 50, 0, 0]
    assert parallel.cpu_busy(before, after) == 400 / 600
    assert parallel.cpu_busy(None, after) is None
    assert parallel.cpu_times() is None or len(parallel.cpu_times()) >= 4
