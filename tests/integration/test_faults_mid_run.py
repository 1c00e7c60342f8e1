"""Faults that strike while a runbook is acting, on the real test bed (issue 12, "faults mid-run").

The API server stops answering in the middle of platform_down's remediation: frozen (SIGSTOP) when the
run reaches its rolling restart, after it has diagnosed the crash-looping backend and taken the
one-writer Lease. No Kubernetes client of the run waits forever: the project's modules have request
timeouts, and every task is bounded by ansible.cfg's task_timeout (kubernetes.core has no request
timeout of its own). The run ends failed, with an incident report of what it did before the fault and
no Python traceback.
"""

from __future__ import annotations

import json

from saasodoo_runbooks import api
from testbed import faults
from testbed.faults import delete_lease, read_lease
from tests.runbooks import run_playbook

# Short here so the test does not wait ansible.cfg's ten minutes per hung task.
TASK_TIMEOUT = 10
RESTART_TASK = "PATCH | Rolling restart of unhealthy services"


def test_api_server_frozen_mid_remediation_ends_failed_with_a_report_and_no_hang(platform, tmp_path):
    faults.wait_healthy("backend")
    delete_lease()
    crash = faults.crashloop("backend")
    frozen: list[faults.Fault] = []

    def freeze_at_the_restart(event: dict) -> None:
        task = (event.get("event_data") or {}).get("task", "")
        if event.get("event") == "playbook_on_task_start" and task.endswith(RESTART_TASK) and not frozen:
            frozen.append(faults.api_server_frozen())

    try:
        try:
            result = run_playbook("platform_down.yml", extravars={"platform_down_cooldown_minutes": 0},
                                  envvars={"ANSIBLE_TASK_TIMEOUT": str(TASK_TIMEOUT),
                                           "SAASODOO_REPORT_DIR": str(tmp_path)},
                                  event_handler=freeze_at_the_restart)
        finally:
            for fault in frozen:
                fault.undo()
        # The run's own Lease: given back, or - when the give-back was cut off too - still this run's
        # until it expires (the next run then names it as the holder).
        lease = read_lease()

        assert frozen, "the run never reached its restart:\n" + result.stdout[-3000:]
        # A clear failure, bounded, no traceback: the CLI's exit 30.
        assert result.rc != 0 and result.status == "failed", result.stdout[-3000:]
        assert api.step_result(None, result.rc, result.status) == "failed"
        assert "Traceback" not in result.stdout
        assert f"{TASK_TIMEOUT} second" in result.stdout, result.stdout[-3000:]
        # The incident report says what the run did before the fault, and that it failed.
        reports = sorted(tmp_path.glob("platform_down-2*.json"))
        assert len(reports) == 1, list(tmp_path.iterdir())
        report = json.loads(reports[0].read_text())
        assert report["result"] == "failed", report["description"]
        timeline = report["timeline"]
        first_failure = next(i for i, e in enumerate(timeline) if e["event"] == "failed")
        before = [e["task"] for e in timeline[:first_failure] if e["event"] == "task_start"]
        assert any("List nodes, workloads and pods cluster-wide" in t for t in before), before
        assert any("Take the one-writer lease" in t for t in before), before
        assert any(RESTART_TASK in t for t in before), before
        failed = [e for e in timeline if e["event"] == "failed"]
        assert all("Traceback" not in (e.get("message") or "") for e in failed), failed
        assert any(f"{TASK_TIMEOUT} second" in (e.get("message") or "") for e in failed), failed
        assert "failed" in report["description"]
        # The backend was not restarted while the API server was away.
        assert not faults.component_healthy("backend")
        assert lease is None or lease.spec.holder_identity.startswith("platform_down/")
    finally:
        delete_lease()
        crash.undo()
