"""postgres_connection.yml against the real test bed: PostgreSQL stopped, its volume claim unbound, its pods crash-looping.

- PostgreSQL stopped: the test bed's real server is stopped (pg_ctl). On the test bed the server runs
  outside the cluster, so the StatefulSet's (kwok) pods stay Ready: the runbook must report the
  unreachable server and hand it over - naming data_loss.yml for damaged data - and change nothing.
  The server is started again in teardown.
- PVC unbound: the StatefulSet's data claim is really Pending (re-created while its volume is still
  reserved for the old claim) and its pod Pending with it: reported and handed over, the claim never
  deleted, no restart tried. Teardown frees the volume for the claim.
- Pods crash-looping: check mode changes nothing; a rolling restart heals them; a rerun changes nothing.
- The StatefulSet scaled to zero (PostgreSQL stopped the Kubernetes way): scaled back, healed, rerun
  changes nothing.
"""

from __future__ import annotations

import pytest

from testbed import faults, postgres_faults
from tests import k8s_state
from tests.runbooks import run_playbook

# The cooldown is a guard rail of restart_service with its own tests; here it would block the
# restarts that one test session makes of the same StatefulSet.
NO_COOLDOWN = {"postgres_connection_cooldown_minutes": 0}


def _codes(report: dict) -> set[str]:
    return {f["code"] for f in report["findings"]}


@pytest.fixture
def postgres_stopped(platform):
    faults.wait_healthy("postgres")
    fault = postgres_faults.stop_server()
    try:
        yield fault
    finally:
        fault.undo()
        assert postgres_faults.server_running()


@pytest.fixture
def pvc_unbound(platform):
    faults.wait_healthy("postgres")
    fault = postgres_faults.pvc_unbound()
    try:
        yield fault
    finally:
        fault.undo()


def test_postgres_stopped_is_reported_and_handed_over(platform, postgres_stopped):
    ns = platform["saasodoo_platform_namespace"]
    endpoint = f"{platform['saasodoo_db_host']}:{platform['saasodoo_db_port']}"
    before = k8s_state.snapshot([ns])

    dry = run_playbook("postgres_connection.yml", extravars=NO_COOLDOWN, check=True)

    assert dry.rc == 0, dry.stdout[-3000:]
    report = dry.artifacts["postgres_connection_report"]
    assert _codes(report) == {"PG_UNREACHABLE"}, report["findings"]
    assert report["actions"] == []
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    assert not postgres_faults.server_running()

    result = run_playbook("postgres_connection.yml", extravars=NO_COOLDOWN)

    assert result.rc == 0, result.stdout[-3000:]
    assert result.changed == 0
    report = result.artifacts["postgres_connection_report"]
    unreachable = next(f for f in report["findings"] if f["code"] == "PG_UNREACHABLE")
    assert unreachable["severity"] == "critical"
    assert f"PostgreSQL at {endpoint} refused the connection" in unreachable["message"]
    assert "kind: refused" in unreachable["evidence"]
    assert report["connected"] is False and report["workload"]["healthy"] is True
    assert report["actions"] == []
    handed = " ".join(report["handed_over"])
    assert f"PostgreSQL at {endpoint} cannot be reached while" in handed and "reports all pods Ready" in handed
    assert "data_loss.yml" in handed
    assert report["healthy_after"] is False and report["escalation"]["level"] == "critical"
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    assert not postgres_faults.server_running(), "the runbook does not start a server outside the cluster"


def test_unbound_volume_claim_is_reported_and_never_deleted(platform, pvc_unbound):
    ns = platform["saasodoo_platform_namespace"]
    claim_ref = next(t for t in pvc_unbound.touched if t.startswith("PersistentVolumeClaim/"))
    claim = claim_ref.rsplit("/", 1)[1]
    uid = faults.core().read_namespaced_persistent_volume_claim(claim, ns).metadata.uid
    before = k8s_state.snapshot([ns])

    result = run_playbook("postgres_connection.yml", extravars=NO_COOLDOWN)

    assert result.rc == 0, result.stdout[-3000:]
    assert result.changed == 0
    report = result.artifacts["postgres_connection_report"]
    assert {"PG_PVC_UNBOUND", "PG_POD_UNAVAILABLE"} <= _codes(report), report["findings"]
    unbound = next(f for f in report["findings"] if f["code"] == "PG_PVC_UNBOUND")
    assert unbound["severity"] == "critical"
    assert f"claim {ns}/{claim} is Pending" in unbound["evidence"]
    assert any("is still reserved for an earlier claim" in e for e in unbound["evidence"]), unbound["evidence"]
    assert report["claims"][0]["phase"] == "Pending"
    assert report["actions"] == []
    assert any("not restarted: its volume claim is not bound" in s["why"] for s in report["skipped"])
    assert any(h.startswith(f"storage: {ns}/{claim} not bound") and "never deleted" in h for h in report["handed_over"])
    assert report["escalation"]["level"] == "critical"
    # Nothing was deleted, re-created or restarted.
    assert faults.core().read_namespaced_persistent_volume_claim(claim, ns).metadata.uid == uid
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []


def test_crashlooping_postgres_is_restarted_and_healed(platform):
    postgres = platform["saasodoo_components"]["postgres"]
    ref = f"StatefulSet/{postgres['namespace']}/{postgres['name']}"
    faults.wait_healthy("postgres")
    fault = faults.crashloop("postgres")
    try:
        before = k8s_state.snapshot([postgres["namespace"]])
        dry = run_playbook("postgres_connection.yml", extravars=NO_COOLDOWN, check=True)

        assert dry.rc == 0, dry.stdout[-3000:]
        assert _codes(dry.artifacts["postgres_connection_report"]) == {"PG_POD_CRASHLOOP"}
        assert dry.artifacts["postgres_connection_report"]["actions"] == [f"would restart {ref}"]
        assert k8s_state.diff(before, k8s_state.snapshot([postgres["namespace"]])) == []
        assert not faults.component_healthy("postgres")

        result = run_playbook("postgres_connection.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["postgres_connection_report"]
        assert _codes(report) == {"PG_POD_CRASHLOOP"}, report["findings"]
        assert any("CrashLoopBackOff" in e for e in report["findings"][0]["evidence"])
        assert report["actions"] == [f"rolling restart of {ref}"]
        assert report["healthy_after"] is True, report["remaining"]
        assert report["escalation"]["level"] == "medium"
        assert faults.component_healthy("postgres")
        live = {p.metadata.name: p for p in faults._pods(postgres)}
        assert all("saasodoo.test/crashloop" not in (p.metadata.labels or {}) for p in live.values())
        assert "saasodoo.io/last-restart-at" in faults._workload(postgres).metadata.annotations

        again = run_playbook("postgres_connection.yml", extravars=NO_COOLDOWN)

        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        assert again.artifacts["postgres_connection_report"]["findings"] == []
        assert again.artifacts["postgres_connection_report"]["actions"] == []
    finally:
        if not faults.component_healthy("postgres"):
            fault.undo()


def test_statefulset_scaled_to_zero_is_scaled_back(platform):
    """PostgreSQL stopped the Kubernetes way: its StatefulSet at 0 replicas is scaled back to the desired count."""
    postgres = platform["saasodoo_components"]["postgres"]
    ns = postgres["namespace"]
    ref = f"StatefulSet/{ns}/{postgres['name']}"
    faults.wait_healthy("postgres")
    fault = faults.scale_to_zero("postgres")
    try:
        before = k8s_state.snapshot([ns])
        dry = run_playbook("postgres_connection.yml", extravars=NO_COOLDOWN, check=True)

        assert dry.rc == 0, dry.stdout[-3000:]
        report = dry.artifacts["postgres_connection_report"]
        assert "PG_STATEFULSET_SCALED_TO_ZERO" in _codes(report), report["findings"]
        assert report["actions"] == [f"would scale {ref} back to {postgres['replicas']} replicas"]
        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []

        result = run_playbook("postgres_connection.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["postgres_connection_report"]
        assert "PG_STATEFULSET_SCALED_TO_ZERO" in _codes(report)
        assert report["actions"] == [f"scaled {ref} back to {postgres['replicas']} replicas"]
        assert report["healthy_after"] is True, report["remaining"]
        assert faults._workload(postgres).spec.replicas == postgres["replicas"]
        assert faults.component_healthy("postgres")

        again = run_playbook("postgres_connection.yml", extravars=NO_COOLDOWN)

        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        assert again.artifacts["postgres_connection_report"]["findings"] == []
    finally:
        if faults._workload(postgres).spec.replicas == 0:
            fault.undo()
        else:  # the fault's own note of the replicas it found
            faults.apps().patch_namespaced_stateful_set(postgres["name"], ns, {"metadata": {"annotations": {
                faults.PREVIOUS_REPLICAS: None}}})
