"""metrics_collection.yml against the real test bed: a real Prometheus (testbed/prometheus.py) scraping
real local processes, its scrape jobs derived from the cluster's real ServiceMonitors.

Faults: a ServiceMonitor deleted (its target really disappears from Prometheus), a ServiceMonitor
pointed at a port where nothing listens (its target really goes down: connection refused), the
monitoring NetworkPolicy deleted, a scraped process stopped, the Prometheus Deployment crash-looping.
"""

from __future__ import annotations

import copy

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import faults, prometheus
from tests import k8s_state
from tests.runbooks import run_playbook

SM = ("monitoring.coreos.com", "v1", "servicemonitors")
POLICY = "allow-monitoring-scrape"
NO_COOLDOWN = {"metrics_collection_cooldown_minutes": 0}


def _custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(k8s_state.api_client())


def _net() -> client.NetworkingV1Api:
    return client.NetworkingV1Api(k8s_state.api_client())


def _servicemonitors(ns: str) -> dict[str, dict]:
    items = _custom().list_namespaced_custom_object(*SM[:2], ns, SM[2])["items"]
    return {o["metadata"]["name"]: o for o in items}


def _policy(ns: str):
    try:
        return _net().read_namespaced_network_policy(POLICY, ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _pools() -> dict[str, list[str]]:
    """scrape pool -> healths of its targets, as the real Prometheus reports them."""
    result: dict[str, list[str]] = {}
    for t in prometheus.targets():
        result.setdefault(t["scrapePool"], []).append(t["health"])
    return result


def _codes(report: dict) -> set[tuple[str, str]]:
    return {(f["code"], f.get("ref") or f.get("component") or "") for f in report["findings"]}


def _clean_copy(obj: dict) -> dict:
    body = copy.deepcopy(obj)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        body["metadata"].pop(key, None)
    return body


@pytest.fixture(scope="module")
def monitoring(platform):
    """The real Prometheus up and every target scraped; the desired monitoring policy in place.

    Whatever this module started or created is stopped or removed at the end, so the platform is
    left as it was found.
    """
    was_up = all(s == "healthy" for s in prometheus.status().values())
    prometheus.up()
    ns = platform["saasodoo_platform_namespace"]
    had_policy = _policy(ns) is not None
    if not had_policy:  # the sample platform does not create it: a first run of the runbook does
        result = run_playbook("metrics_collection.yml")
        assert result.rc == 0, result.stdout[-3000:]
    prometheus.wait_until("every ServiceMonitor target up", lambda: all(
        h == ["up"] for p, h in _pools().items() if p.startswith("serviceMonitor/")) and len(
        [p for p in _pools() if p.startswith("serviceMonitor/")]) == len(platform["saasodoo_servicemonitors"]))
    yield platform
    if not had_policy and _policy(ns) is not None:
        _net().delete_namespaced_network_policy(POLICY, ns)
    if not was_up:
        prometheus.down()


@pytest.fixture
def broken_monitoring(monitoring):
    """Delete the backend's ServiceMonitor, point traefik's at a port nothing serves, delete the policy."""
    mon_ns = monitoring["saasodoo_monitoring_namespace"]
    ns = monitoring["saasodoo_platform_namespace"]
    backend_sm, traefik_sm = (sm["name"] for sm in monitoring["saasodoo_servicemonitors"])
    saved = {name: _clean_copy(obj) for name, obj in _servicemonitors(mon_ns).items()}
    saved_policy = _clean_copy(_net().api_client.sanitize_for_serialization(_policy(ns)))
    backend_pool = f"serviceMonitor/{mon_ns}/{backend_sm}/0"
    traefik_pool = f"serviceMonitor/{mon_ns}/{traefik_sm}/0"
    wrong = copy.deepcopy(saved[traefik_sm]["spec"]["endpoints"])
    wrong[0]["port"] = "web"  # a real port of the traefik Service, where no metrics are served
    try:
        _custom().delete_namespaced_custom_object(*SM[:2], mon_ns, SM[2], backend_sm)
        _custom().patch_namespaced_custom_object(*SM[:2], mon_ns, SM[2], traefik_sm, {"spec": {"endpoints": wrong}})
        _net().delete_namespaced_network_policy(POLICY, ns)
        # The faults are real: Prometheus dropped the backend's target and cannot scrape traefik's.
        prometheus.wait_until("Prometheus to drop the backend target and fail traefik's", lambda: (
            backend_pool not in _pools() and _pools().get(traefik_pool) == ["down"]))
        yield {"backend_pool": backend_pool, "traefik_pool": traefik_pool, "backend_sm": backend_sm,
               "traefik_sm": traefik_sm}
    finally:
        live = _servicemonitors(mon_ns)
        for name, body in saved.items():
            if name not in live:
                _custom().create_namespaced_custom_object(*SM[:2], mon_ns, SM[2], body)
            elif live[name]["spec"] != body["spec"]:
                _custom().patch_namespaced_custom_object(*SM[:2], mon_ns, SM[2], name, {"spec": body["spec"]})
        if _policy(ns) is None:
            _net().create_namespaced_network_policy(ns, saved_policy)


def test_servicemonitor_deleted_and_target_down_are_found_then_repaired(monitoring, broken_monitoring):
    mon_ns = monitoring["saasodoo_monitoring_namespace"]
    ns = monitoring["saasodoo_platform_namespace"]
    fault = broken_monitoring
    sm_backend = f"ServiceMonitor/{mon_ns}/{fault['backend_sm']}"
    sm_traefik = f"ServiceMonitor/{mon_ns}/{fault['traefik_sm']}"
    policy_ref = f"NetworkPolicy/{ns}/{POLICY}"
    expected = {("SERVICEMONITOR_MISSING", sm_backend), ("SERVICEMONITOR_DRIFTED", sm_traefik),
                ("PROMETHEUS_TARGET_DOWN", fault["traefik_pool"]), ("MONITORING_NETPOL_MISSING", policy_ref)}

    # (1) check mode on the broken platform: the findings, the "would" actions, nothing changed
    before = k8s_state.snapshot([ns, mon_ns])
    sms_before = {n: o["metadata"]["resourceVersion"] for n, o in _servicemonitors(mon_ns).items()}

    check = run_playbook("metrics_collection.yml", extravars=NO_COOLDOWN, check=True)

    assert check.rc == 0, check.stdout[-3000:]
    report = check.artifacts["metrics_collection_report"]
    assert _codes(report) == expected, report["findings"]
    down = next(f for f in report["findings"] if f["code"] == "PROMETHEUS_TARGET_DOWN")
    assert any("connection refused" in e for e in down["evidence"]), down
    drifted = next(f for f in report["findings"] if f["code"] == "SERVICEMONITOR_DRIFTED")
    assert "spec.endpoints[0].port: want 'metrics', found 'web'" in drifted["evidence"]
    assert sorted(report["actions"]) == sorted([f"would reapply {sm_backend}", f"would reapply {sm_traefik}",
                                                f"would reapply {policy_ref}"])
    assert report["check_mode"] is True
    assert k8s_state.diff(before, k8s_state.snapshot([ns, mon_ns])) == []
    assert {n: o["metadata"]["resourceVersion"] for n, o in _servicemonitors(mon_ns).items()} == sms_before
    assert fault["backend_pool"] not in _pools() and _pools()[fault["traefik_pool"]] == ["down"]

    # (2) the real run repairs the desired state, and Prometheus really scrapes both targets again
    result = run_playbook("metrics_collection.yml", extravars=NO_COOLDOWN)

    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["metrics_collection_report"]
    assert _codes(report) == expected
    assert sorted(report["actions"]) == sorted([f"reapply {sm_backend}", f"reapply {sm_traefik}", f"reapply {policy_ref}"])
    assert report["healthy_after"] is True, report["remaining"]
    assert report["remaining"] == []
    assert report["escalation"]["level"] == "medium" and "resolved" in report["escalation"]["why"]
    assert report["grafana_check"]["method"] == "datasource_url"
    assert "Grafana itself was NOT checked" in report["grafana_check"]["note"]
    live = _servicemonitors(mon_ns)
    assert fault["backend_sm"] in live
    assert live[fault["traefik_sm"]]["spec"]["endpoints"][0]["port"] == "metrics"
    assert _policy(ns) is not None
    pools = _pools()
    assert pools[fault["backend_pool"]] == ["up"] and pools[fault["traefik_pool"]] == ["up"], pools

    # (3) rerun on the healed platform: nothing found, nothing changed
    again = run_playbook("metrics_collection.yml", extravars=NO_COOLDOWN)

    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["metrics_collection_report"]["findings"] == []
    assert again.artifacts["metrics_collection_report"]["actions"] == []


def test_scraped_process_down_is_reported_and_handed_over(monitoring):
    mon_ns = monitoring["saasodoo_monitoring_namespace"]
    ns = monitoring["saasodoo_platform_namespace"]
    sm = monitoring["saasodoo_servicemonitors"][0]
    pool = f"serviceMonitor/{mon_ns}/{sm['name']}/0"
    exporter = f"{sm['component']}-{sm['port']}"
    prometheus.exporter_down(exporter)
    try:
        prometheus.wait_until(f"Prometheus to see {pool} down", lambda: _pools().get(pool) == ["down"])
        before = k8s_state.snapshot([ns, mon_ns])

        result = run_playbook("metrics_collection.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["metrics_collection_report"]
        assert _codes(report) == {("PROMETHEUS_TARGET_DOWN", pool)}, report["findings"]
        assert any("connection refused" in e for e in report["findings"][0]["evidence"])
        # Its ServiceMonitor and the component are as desired: nothing here can fix a dead endpoint.
        assert report["actions"] == []
        assert any(h.startswith(f"{pool}: the metrics endpoint does not answer") for h in report["handed_over"])
        assert report["healthy_after"] is False
        assert report["escalation"]["level"] == "medium"
        assert k8s_state.diff(before, k8s_state.snapshot([ns, mon_ns])) == []
    finally:
        prometheus.exporter_up(exporter)
    prometheus.wait_until(f"{pool} up again", lambda: _pools().get(pool) == ["up"])


def test_crashlooping_prometheus_deployment_is_restarted(monitoring):
    comp = monitoring["saasodoo_components"]["prometheus"]
    ref = f"{comp['kind']}/{comp['namespace']}/{comp['name']}"
    faults.wait_healthy("prometheus")
    fault = faults.crashloop("prometheus")
    try:
        result = run_playbook("metrics_collection.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["metrics_collection_report"]
        assert ("WORKLOAD_CRASHLOOP", "prometheus") in {(f["code"], f.get("component")) for f in report["findings"]}
        assert f"rolling restart of {ref}" in report["actions"]
        assert report["healthy_after"] is True, report["remaining"]
        assert faults.component_healthy("prometheus")
    finally:
        if not faults.component_healthy("prometheus"):
            fault.undo()


def test_bad_input_is_refused_before_anything_changes(monitoring):
    ns = monitoring["saasodoo_platform_namespace"]
    before = k8s_state.snapshot([ns, monitoring["saasodoo_monitoring_namespace"]])

    result = run_playbook("metrics_collection.yml", extravars={"metrics_collection_components": ["no-such-component"]})

    assert result.rc != 0
    assert "every component must be a key of saasodoo_components" in result.stdout
    assert k8s_state.diff(before, k8s_state.snapshot([ns, monitoring["saasodoo_monitoring_namespace"]])) == []
