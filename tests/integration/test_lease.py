"""One writer per platform (roles/runbook_lease, module saasodoo_lease) on the test bed's API server.

platform_down.yml takes the platform's Lease before it changes anything. The faults are real (the
backend crash-looping in kwok) and so is the Lease: another run's, live or left expired by a killed
run, written here through the coordination.k8s.io API; two real runs race for it side by side.
"""

from __future__ import annotations

import threading

import pytest

from testbed import faults, platform_vars
from testbed.faults import delete_lease, read_lease
from tests import k8s_state
from tests.runbooks import assert_held_by_another_run, run_playbook

VARS = platform_vars.load()
NO_COOLDOWN = {"platform_down_cooldown_minutes": 0}


@pytest.fixture
def crashloop(platform):
    delete_lease()
    faults.wait_healthy("backend")
    fault = faults.crashloop("backend")
    yield fault
    delete_lease()
    if not faults.component_healthy("backend"):
        fault.undo()


def test_a_lease_held_by_another_live_run_stops_every_change(crashloop):
    faults.lease_held("data_loss/awx-1/20261207T031500Z/42", renewed_ago=5, duration=600,
         details={"runbook": "data_loss", "awx_job": "4711", "host": "awx-1"})
    ns = VARS["saasodoo_platform_namespace"]
    before, lease_before = k8s_state.snapshot([ns]), read_lease()

    result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["platform_down_report"]
    # It still diagnosed and reported ...
    assert any(f["code"] == "WORKLOAD_CRASHLOOP" for f in report["findings"])
    # ... changed nothing, said who holds the lease since when, and ends as "needs a human".
    assert_held_by_another_run(result, report, "data_loss/awx-1/20261207T031500Z/42",
                               {"runbook": "data_loss", "awx_job": "4711"})
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    assert not faults.component_healthy("backend")
    after = read_lease()      # the other run's lease is untouched
    assert after.metadata.resource_version == lease_before.metadata.resource_version
    assert after.spec.holder_identity == "data_loss/awx-1/20261207T031500Z/42"


def test_a_lease_left_by_a_killed_run_is_taken_over_and_given_back(crashloop):
    faults.lease_held("platform_down/ci-7/20261207T010000Z/9", renewed_ago=7200, duration=900, details={"runbook": "platform_down"})

    result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["platform_down_report"]
    assert faults.component_healthy("backend")
    took = [a for a in report["actions"] if a.startswith("took over the one-writer")]
    assert len(took) == 1 and "from platform_down/ci-7/20261207T010000Z/9, which expired at" in took[0], \
        report["actions"]
    assert any(a.startswith("rolling restart of ") for a in report["actions"])
    assert read_lease() is None            # given back in the always


def test_check_mode_never_takes_the_lease(crashloop):
    result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN, check=True)
    assert result.rc == 0, result.stdout[-3000:]
    assert any(a.startswith("would restart ") for a in result.artifacts["platform_down_report"]["actions"])
    assert read_lease() is None


def test_two_runs_side_by_side_one_writer(crashloop):
    backend = VARS["saasodoo_components"]["backend"]
    results = {}

    def go(key):
        results[key] = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

    runs = [threading.Thread(target=go, args=(k,)) for k in ("a", "b")]
    for t in runs:
        t.start()
    for t in runs:
        t.join(timeout=600)
    reports = [results[k].artifacts["platform_down_report"] for k in ("a", "b")]
    assert all(results[k].rc == 0 for k in ("a", "b")), [results[k].stdout[-2000:] for k in ("a", "b")]
    restarts = [a for r in reports for a in r["actions"] if a.startswith("rolling restart of ")]
    # Exactly one run restarted the backend; the other was held off by the lease (or, had it diagnosed
    # after the first had finished, found nothing left to do).
    assert restarts == [f"rolling restart of Deployment/{backend['namespace']}/{backend['name']}"], reports
    other = next(r for r in reports if not any(a.startswith("rolling restart of ") for a in r["actions"]))
    assert other["actions"] == [] and (
        any("holds the one-writer" in h for h in other["handed_over"]) or other["healthy_before"]), other
    assert faults.component_healthy("backend")
    assert read_lease() is None
