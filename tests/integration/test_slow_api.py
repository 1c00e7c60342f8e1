"""slow_api.yml against the real test bed: a slow endpoint (the test-bed API's latency fault), a real
PostgreSQL lock that makes /api/v1/tenants wait, and a backend slow on every path (saturated).

Check mode on the broken platform changes neither the cluster nor PostgreSQL's settings; the real run
remediates only what it diagnosed (slow query logging when off; scaling and an autoscaler only for a
saturated backend, never for a database cause); the rerun on the healed platform changes nothing.
"""

from __future__ import annotations

import threading
import urllib.request

import pytest
from kubernetes import client

from testbed import db_faults, endpoints, faults
from tests import k8s_state
from tests.runbooks import run_playbook

LOG_SETTING = "log_min_duration_statement"
SLOW_MS = 2500  # over the inventory's 2 s threshold, under its 5 s "high" mark


def _codes(report: dict) -> set[str]:
    return {f["code"] for f in report["findings"]}


def _finding(report: dict, code: str) -> dict:
    return next(f for f in report["findings"] if f["code"] == code)


def _hpas(namespace: str) -> dict:
    api = client.AutoscalingV2Api(k8s_state.api_client())
    return {h.metadata.name: k8s_state.api_client().sanitize_for_serialization(h.spec)
            for h in api.list_namespaced_horizontal_pod_autoscaler(namespace).items}


@pytest.fixture(scope="module")
def slow_api_bed(platform):
    """The platform, healthy; the runbook's database role may change log_min_duration_statement (PostgreSQL 15
    least privilege), slow query logging is off, and earlier statements do not count as slow ones."""
    backend = platform["saasodoo_components"]["backend"]
    db_faults.grant_alter_system(platform["saasodoo_db_user"], LOG_SETTING)
    db_faults.reset_setting(LOG_SETTING)
    db_faults.reset_statement_stats()
    endpoints.clear("api")
    faults.wait_healthy("backend")
    yield platform
    endpoints.clear("api")
    db_faults.reset_setting(LOG_SETTING)
    db_faults.revoke_alter_system(platform["saasodoo_db_user"], LOG_SETTING)
    _restore_backend(backend)


def _restore_backend(backend: dict) -> None:
    """Remove an autoscaler the runbook created and scale the backend back to its desired replicas."""
    api = client.AutoscalingV2Api(k8s_state.api_client())
    if backend["name"] in _hpas(backend["namespace"]):
        api.delete_namespaced_horizontal_pod_autoscaler(backend["name"], backend["namespace"])
    workload = faults._workload(backend)
    if workload.spec.replicas != backend["replicas"]:
        faults.apps().patch_namespaced_deployment(backend["name"], backend["namespace"],
                                                  {"spec": {"replicas": backend["replicas"]}})
    faults.wait_healthy("backend")


class UserTraffic:
    """Users keep calling an API path (one request a second) while a test runs, as they would in production."""

    def __init__(self, url: str):
        self.url = url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                urllib.request.urlopen(self.url, timeout=2).read()
            except OSError:
                pass
            self.stop.wait(1.0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def test_bad_input_is_refused_before_anything_runs(slow_api_bed):
    result = run_playbook("slow_api.yml", extravars={"slow_api_paths": ["api/v1/tenants"]})

    assert result.rc != 0
    assert "slow_api: invalid variables" in result.stdout
    assert "Measure the response times" not in result.stdout


def test_slow_endpoint_is_named_logging_enabled_and_backend_left_alone(slow_api_bed):
    platform = slow_api_bed
    ns = platform["saasodoo_platform_namespace"]
    backend = platform["saasodoo_components"]["backend"]
    endpoints.set_fault("api", path="/api/v1/tenants", latency_ms=SLOW_MS)
    try:
        # (1) check mode on the broken platform: findings and "would" actions, nothing changed.
        cluster_before, hpa_before = k8s_state.snapshot([ns]), _hpas(ns)
        settings_before = db_faults.settings_digest()

        check = run_playbook("slow_api.yml", check=True)

        assert check.rc == 0, check.stdout[-3000:]
        report = check.artifacts["slow_api_report"]
        assert {"API_PATH_SLOW", "API_SLOW_CAUSE_UNDETERMINED", "SLOW_QUERY_LOG_DISABLED"} <= _codes(report)
        slow = _finding(report, "API_PATH_SLOW")
        assert slow["ref"] == "/api/v1/tenants" and "/api/v1/tenants" in slow["message"]
        assert report["slow_paths"] == ["/api/v1/tenants"]
        assert report["cause"] == "undetermined"
        measured = {m["path"]: m for m in report["measurements"]}
        assert measured["/api/v1/tenants"]["latency_ms"]["p95"] >= SLOW_MS
        assert measured["/health"]["verdict"] == "ok" and measured["/api/v1/plans"]["verdict"] == "ok"
        assert report["actions"] == [
            f"would enable slow query logging: {LOG_SETTING} = 500ms (ALTER SYSTEM, reload, no restart)"]
        assert k8s_state.diff(cluster_before, k8s_state.snapshot([ns])) == []
        assert _hpas(ns) == hpa_before
        assert db_faults.settings_digest() == settings_before
        assert db_faults.setting(LOG_SETTING) == "-1"

        # (2) the real run: slow query logging is turned on; the slow path is no backend saturation, so no scaling.
        result = run_playbook("slow_api.yml")

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["slow_api_report"]
        assert "API_PATH_SLOW" in _codes(report) and "BACKEND_SATURATED" not in _codes(report)
        assert report["actions"] == [
            f"enabled slow query logging: {LOG_SETTING} = 500ms (ALTER SYSTEM, reload, no restart)"]
        assert db_faults.setting(LOG_SETTING) == "500"
        assert faults._workload(backend).spec.replicas == backend["replicas"]
        assert backend["name"] not in _hpas(ns)
        # Verification ran and is honest: the slow path is still slow, logging is now on.
        remaining = {f["code"] for f in report["remaining"]}
        assert "API_PATH_SLOW" in remaining and "SLOW_QUERY_LOG_DISABLED" not in remaining
        assert report["healthy_after"] is False
        assert any("backend developers" in h for h in report["handed_over"])
    finally:
        endpoints.clear("api")

    # (3) rerun on the healed platform: nothing to do, nothing changed.
    again = run_playbook("slow_api.yml")

    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["slow_api_report"]["findings"] == []
    assert again.artifacts["slow_api_report"]["actions"] == []


def test_db_lock_is_named_with_its_blocking_pid_and_handed_over(slow_api_bed):
    platform = slow_api_bed
    ns = platform["saasodoo_platform_namespace"]
    backend = platform["saasodoo_components"]["backend"]
    tenants_url = platform["saasodoo_endpoints"]["api"]["url"] + "/api/v1/tenants"
    cluster_before = k8s_state.snapshot([ns])
    with db_faults.TableLock("tenants") as lock, UserTraffic(tenants_url):
        result = run_playbook("slow_api.yml")

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["slow_api_report"]
        assert {"API_PATH_SLOW", "PG_BLOCKING_LOCKS", "API_SLOW_CAUSE_DATABASE"} <= _codes(report)
        assert report["cause"] == "database"
        assert "/api/v1/tenants" in report["slow_paths"]
        locks = _finding(report, "PG_BLOCKING_LOCKS")
        assert locks["evidence"]["blocker_pid"] == lock.pid
        assert "LOCK TABLE" in locks["evidence"]["blocker_query"]
        cause = _finding(report, "API_SLOW_CAUSE_DATABASE")
        assert f"Session {lock.pid}" in cause["message"] and "/api/v1/tenants" in cause["message"]
        # Reported and handed over, never acted on: no scaling, no autoscaler, the blocking session lives on.
        assert "BACKEND_SATURATED" not in _codes(report)
        assert not [a for a in report["actions"] if "scale" in a or "HorizontalPodAutoscaler" in a]
        assert any(f"blocking session {lock.pid}" in h and "db_performance.yml" in h for h in report["handed_over"])
        assert any("scaling the backend would not help" in s["why"] for s in report["skipped"])
        assert not lock.conn.closed and lock.conn.execute("SELECT 1").fetchone() == (1,)  # the blocker lives on
        assert faults._workload(backend).spec.replicas == backend["replicas"]
        assert k8s_state.diff(cluster_before, k8s_state.snapshot([ns])) == []
        assert report["escalation"]["level"] == "high"

        # Still locked, run again: the same diagnosis, and nothing changes (whatever the first run
        # had to switch on, slow-query logging, is on now).
        again = run_playbook("slow_api.yml")

        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        assert {"PG_BLOCKING_LOCKS", "API_SLOW_CAUSE_DATABASE"} <= _codes(again.artifacts["slow_api_report"])
        assert again.artifacts["slow_api_report"]["actions"] == []
        assert not lock.conn.closed


def test_saturated_backend_is_scaled_and_autoscaled(slow_api_bed):
    platform = slow_api_bed
    ns = platform["saasodoo_platform_namespace"]
    backend = platform["saasodoo_components"]["backend"]
    endpoints.set_fault("api", latency_ms=SLOW_MS)  # every path, /health included: the backend itself is slow
    try:
        result = run_playbook("slow_api.yml")

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["slow_api_report"]
        assert "BACKEND_SATURATED" in _codes(report), report["findings"]
        assert report["cause"] == "backend_saturation"
        saturated = _finding(report, "BACKEND_SATURATED")
        assert any("/health" in line for line in saturated["evidence"])
        ref = f"Deployment/{ns}/{backend['name']}"
        assert f"scaled {ref} from {backend['replicas']} to {backend['replicas'] + 1} replicas (backend saturated)" \
            in report["actions"]
        assert any(a.startswith(f"created HorizontalPodAutoscaler {ns}/{backend['name']}") for a in report["actions"])
        # Really scaled and autoscaled.
        assert faults._workload(backend).spec.replicas == backend["replicas"] + 1
        hpa = _hpas(ns)[backend["name"]]
        assert hpa["minReplicas"] == backend["replicas"]
        assert hpa["maxReplicas"] == platform["slow_api_max_backend_replicas"]
        assert hpa["scaleTargetRef"]["name"] == backend["name"]
        assert faults.component_healthy("backend")
        # The latency fault is not capacity the test bed can add: verification says so honestly.
        assert report["after"]["replicas"] == backend["replicas"] + 1
        assert report["healthy_after"] is False
    finally:
        endpoints.clear("api")

    again = run_playbook("slow_api.yml")

    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["slow_api_report"]["findings"] == []
    _restore_backend(backend)
