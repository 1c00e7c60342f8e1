"""resource_usage.yml against the real test bed, under real pressure.

Pressure: a tenant's ResourceQuota pushed past the threshold by a real pod (kube-apiserver's quota
admission and kube-controller-manager compute status.used), and a node's CPU and memory usage above
80%, emulated by kwok for a real pod (annotations) and scraped by the real Prometheus of
testbed/prometheus.py. The pressure pod's scratch namespace has no NetworkPolicy. Storage: the real
size of the test bed's PostgreSQL database against the PostgreSQL volume claim's capacity.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import faults, prometheus
from tests import k8s_state
from tests.runbooks import run_playbook

WINDOW = "20s"  # CPU rate window for the test (4 samples at the test bed's 5 s scrape interval)
NODE_CPU = f"sum by (node) (rate(node_cpu_usage_seconds_total[{WINDOW}]))"


def _core() -> client.CoreV1Api:
    return client.CoreV1Api(k8s_state.api_client())


def _millicores(value: str) -> int:
    return int(value[:-1]) if value.endswith("m") else int(float(value) * 1000)


def _pod(name: str, ns: str, requests: dict, limits: dict, annotations: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {},
                         "labels": {"saasodoo.test/pressure": "true"}},
            "spec": {"containers": [{"name": "load", "image": "busybox:1.36",
                                     "resources": {"requests": requests, "limits": limits}}]}}


def _running_node(ns: str, name: str) -> str | None:
    pod = _core().read_namespaced_pod(name, ns)
    return pod.spec.node_name if pod.status.phase == "Running" else None


def _codes(report: dict) -> set[tuple[str, str]]:
    return {(f["code"], f.get("ref") or "") for f in report["findings"]}


@pytest.fixture(scope="module")
def usage(platform):
    """Prometheus up (stopped again at the end if this module started it)."""
    was_up = all(s == "healthy" for s in prometheus.status().values())
    prometheus.up()
    yield platform
    if not was_up:
        prometheus.down()


@pytest.fixture
def pressure(usage):
    """A tenant quota over the threshold and a node over 80% CPU and memory, both real; undone after."""
    thresholds = usage["resource_usage_thresholds"]
    tenant = next(t for t in usage["saasodoo_tenants"] if t["tier"] == "basic")
    tenant_ns = usage["saasodoo_tenant_namespace_prefix"] + tenant["slug"]
    scratch = f"ru-{uuid.uuid4().hex[:6]}"
    core = _core()
    quota = core.list_namespaced_resource_quota(tenant_ns).items[0]
    hard = _millicores(quota.status.hard["requests.cpu"])
    used = _millicores(quota.status.used["requests.cpu"])
    # requests.cpu to 85% of hard: over the inventory's threshold, under the hard limit
    add = int(hard * 0.85) - used
    assert add > 0 and (used + add) * 100 / hard >= int(thresholds["quota_percent"]), (hard, used)
    filler = f"quota-filler-{scratch}"
    noisy = "noisy"
    created = []
    try:
        core.create_namespaced_pod(tenant_ns, _pod(filler, tenant_ns, {"cpu": f"{add}m", "memory": "256Mi"},
                                                   {"cpu": f"{add}m", "memory": "256Mi"}))
        created.append((tenant_ns, filler))
        core.create_namespace({"metadata": {"name": scratch, "labels": {"saasodoo.test/pressure": "true"}}})
        core.create_namespaced_pod(scratch, _pod(noisy, scratch, {"cpu": "100m", "memory": "128Mi"}, {},
                                                 {prometheus.USAGE_CPU: "7", prometheus.USAGE_MEMORY: "28Gi"}))
        faults.wait_until("the pressure pods to run", lambda: _running_node(tenant_ns, filler) and _running_node(scratch, noisy))
        node = _running_node(scratch, noisy)
        alloc_cpu = float(core.read_node(node).status.allocatable["cpu"])
        # Preconditions, read from the real components: the quota controller counted the filler,
        # Prometheus sees the node's emulated CPU above the threshold.
        faults.wait_until("the quota to count the filler pod", lambda: _millicores(
            core.read_namespaced_resource_quota(quota.metadata.name, tenant_ns).status.used["requests.cpu"]) == used + add)

        def node_cpu_percent() -> float:
            sample = [s for s in prometheus.query(NODE_CPU) if s["metric"].get("node") == node]
            return float(sample[0]["value"][1]) * 100 / alloc_cpu if sample else 0.0

        prometheus.wait_until(f"Prometheus to see {node} over {thresholds['node_cpu_percent']}% CPU",
                              lambda: node_cpu_percent() >= int(thresholds["node_cpu_percent"]) + 2, timeout=120)
        yield {"tenant": tenant["slug"], "tenant_ns": tenant_ns, "quota": quota.metadata.name, "scratch": scratch,
               "node": node, "filler": filler}
    finally:
        for ns, name in created:
            try:
                core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        try:
            core.delete_namespace(scratch)
        except ApiException as exc:
            if exc.status != 404:
                raise

        def gone() -> bool:
            try:
                core.read_namespace(scratch)
                return False
            except ApiException as exc:
                return exc.status == 404

        faults.wait_until(f"namespace {scratch} to be deleted", gone, timeout=120)


def _db_size(v: dict) -> int:
    with psycopg.connect(host=v["saasodoo_db_host"], port=int(v["saasodoo_db_port"]), user=v["saasodoo_db_user"],
                         password=v["saasodoo_db_password"], dbname=v["saasodoo_db_name"]) as conn:
        return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]


def test_pressure_is_found_and_nothing_is_changed(usage, pressure):
    v = usage
    node, tenant_ns, scratch = pressure["node"], pressure["tenant_ns"], pressure["scratch"]
    namespaces = [v["saasodoo_platform_namespace"], tenant_ns, scratch]
    before = k8s_state.snapshot(namespaces)

    result = run_playbook("resource_usage.yml", extravars={"resource_usage_rate_window": WINDOW})

    assert result.rc == 0, result.stdout[-3000:]
    assert result.changed == 0, result.stdout[-3000:]
    report = result.artifacts["resource_usage_report"]
    codes = _codes(report)
    quota_ref = f"ResourceQuota/{tenant_ns}/{pressure['quota']}"
    assert {("NODE_CPU_HIGH", f"Node/{node}"), ("NODE_MEMORY_HIGH", f"Node/{node}"),
            ("QUOTA_NEAR_LIMIT", quota_ref), ("NAMESPACE_WITHOUT_NETWORK_POLICY", f"Namespace/{scratch}")} <= codes, codes
    # only the pressured node is over the thresholds; no tenant namespace lacks policies
    assert {c for c in codes if c[0] in ("NODE_CPU_HIGH", "NODE_MEMORY_HIGH")} == {
        ("NODE_CPU_HIGH", f"Node/{node}"), ("NODE_MEMORY_HIGH", f"Node/{node}")}
    assert not any(f["code"] == "NAMESPACE_WITHOUT_NETWORK_POLICY" and f.get("tenant") for f in report["findings"])
    quota = next(f for f in report["findings"] if f["code"] == "QUOTA_NEAR_LIMIT")
    assert quota["tenant"] == pressure["tenant"] and quota["severity"] == "medium"
    assert any(e.startswith("requests.cpu: ") and "(85.0%)" in e for e in quota["evidence"]), quota["evidence"]
    netpol = next(f for f in report["findings"] if f["ref"] == f"Namespace/{scratch}")
    assert netpol["severity"] == "low"
    # utilisation is measured (Prometheus), not guessed from requests
    assert report["source"] == "prometheus", report["source_note"]
    row = next(n for n in report["nodes"] if n["name"] == node)
    assert row["cpu_percent"] >= 80 and row["memory_percent"] >= 80, row
    assert row["requested_percent"]["cpu"] < 80, row  # the pressure is usage, not allocation
    assert f"{scratch}/noisy" in [p["pod"] for p in report["top_pods"]]
    # storage: every claim, and the real database against its volume
    assert f"{v['saasodoo_platform_namespace']}/data-{v['saasodoo_components']['postgres']['name']}-0" in [
        p["pvc"] for p in report["storage"]["pvcs"]]
    db = report["storage"]["database"]
    assert db["database"] == v["saasodoo_db_name"]
    assert db["capacity_bytes"] == 20 * 2 ** 30
    assert abs(db["size_bytes"] - _db_size(v)) <= 1 * 2 ** 20, db
    assert report["escalation"]["level"] == "medium"
    assert k8s_state.diff(before, k8s_state.snapshot(namespaces)) == []

    # Check mode, with the metrics API as the only source (this test bed serves none): the runbook
    # falls back to requests against allocatable, says so, and still changes nothing.
    check = run_playbook("resource_usage.yml", extravars={"resource_usage_sources": ["metrics_api"]}, check=True)

    assert check.rc == 0, check.stdout[-3000:]
    assert check.changed == 0, check.stdout[-3000:]
    report = check.artifacts["resource_usage_report"]
    codes = _codes(report)
    assert report["source"] == "allocation"
    assert "allocation, not utilisation" in report["source_note"]
    assert ("UTILISATION_UNAVAILABLE", "") in codes
    assert not any(c[0] in ("NODE_CPU_HIGH", "NODE_MEMORY_HIGH") for c in codes)
    assert ("QUOTA_NEAR_LIMIT", quota_ref) in codes
    assert all(n["source"] == "allocation" and n["cpu_percent"] == n["requested_percent"]["cpu"] for n in report["nodes"])
    assert k8s_state.diff(before, k8s_state.snapshot(namespaces)) == []


def test_bad_input_is_refused_before_anything_is_read(usage):
    result = run_playbook("resource_usage.yml", extravars={"resource_usage_sources": ["kubectl-top"]})

    assert result.rc != 0
    assert "sources must be among metrics_api, prometheus" in result.stdout
