"""platform_down.yml against the real test bed: inject the fault, run, assert healed, rerun."""

from __future__ import annotations

import pytest

from testbed import faults
from tests import k8s_state
from tests.runbooks import run_playbook

# The cooldown is a guard rail with its own test; here it would block the repeated restarts
# that one test session makes of the same backend.
NO_COOLDOWN = {"platform_down_cooldown_minutes": 0}


@pytest.fixture
def backend_crashloop(platform):
    faults.wait_healthy("backend")
    fault = faults.crashloop("backend")
    yield fault
    fault.undo()


def _codes(report: dict) -> set[tuple[str, str]]:
    return {(f["code"], f["component"] or "") for f in report["findings"]}


def test_check_mode_on_broken_platform_changes_nothing(platform, backend_crashloop):
    ns = platform["saasodoo_platform_namespace"]
    before = k8s_state.snapshot([ns])

    result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN, check=True)

    assert result.rc == 0, result.stdout[-3000:]
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    report = result.artifacts["platform_down_report"]
    assert ("WORKLOAD_CRASHLOOP", "backend") in _codes(report)
    assert report["first_broken_layer"] == "backend"
    assert any(a.startswith("would restart Deployment/" + ns + "/" + platform["saasodoo_components"]["backend"]["name"])
               for a in report["actions"]), report["actions"]
    assert not faults.component_healthy("backend"), "check mode must not heal the backend"


def test_crashlooping_backend_is_restarted_and_healed(platform, backend_crashloop):
    backend = platform["saasodoo_components"]["backend"]
    ref = f"Deployment/{backend['namespace']}/{backend['name']}"

    result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["platform_down_report"]
    assert ("WORKLOAD_CRASHLOOP", "backend") in _codes(report)
    crash = next(f for f in report["findings"] if f["code"] == "WORKLOAD_CRASHLOOP")
    assert crash["severity"] == "critical"
    assert any("CrashLoopBackOff" in line for line in crash["evidence"])
    assert report["first_broken_layer"] == "backend"
    assert f"rolling restart of {ref}" in report["actions"]
    assert report["healthy_after"] is True, report["remaining"]
    assert "first broken layer: backend" in result.stdout
    # The platform really healed: new pods, none of the broken ones left, all ready.
    assert faults.component_healthy("backend")
    live = {p.metadata.name for p in faults._pods(backend)}
    assert live.isdisjoint(p.split("/")[-1] for p in backend_crashloop.touched)
    deployment = faults._workload(backend)
    assert "kubectl.kubernetes.io/restartedAt" in deployment.spec.template.metadata.annotations
    assert "saasodoo.io/last-restart-at" in deployment.metadata.annotations

    again = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["platform_down_report"]["healthy_before"] is True
    assert again.artifacts["platform_down_report"]["actions"] == []


def test_healthy_platform_is_left_alone(platform):
    faults.wait_healthy("backend")
    ns = platform["saasodoo_platform_namespace"]
    before = k8s_state.snapshot([ns])

    result = run_playbook("platform_down.yml")

    assert result.rc == 0, result.stdout[-3000:]
    assert result.changed == 0
    assert result.artifacts["platform_down_report"]["findings"] == []
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []


def test_frontend_scaled_to_zero_is_scaled_back(platform):
    frontend = platform["saasodoo_components"]["frontend"]
    faults.wait_healthy("frontend")
    fault = faults.scale_to_zero("frontend")
    try:
        result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["platform_down_report"]
        assert ("WORKLOAD_SCALED_TO_ZERO", "frontend") in _codes(report)
        assert report["first_broken_layer"] == "frontend"
        assert "scaled back to desired replicas: frontend" in report["actions"]
        assert report["healthy_after"] is True, report["remaining"]
        assert faults._workload(frontend).spec.replicas == frontend["replicas"]
        assert faults.component_healthy("frontend")

        again = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)
        assert again.rc == 0 and again.changed == 0, again.stdout[-3000:]
    finally:
        if not faults.component_healthy("frontend"):
            fault.undo()
