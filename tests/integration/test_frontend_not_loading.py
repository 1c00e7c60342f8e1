"""frontend_not_loading.yml against the real test bed: the frontend scaled to zero, a static asset that
404s until the frontend's pods are replaced (a stale-pod fault of the test-bed endpoints that a rolling
restart heals for real), and the frontend's route deleted from the cluster (Service and Ingress rule).

Each fault is visible over HTTP the way an ingress shows it (503 without ready pods, 404 for the asset),
and healing the cluster heals the endpoint.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from kubernetes import client

from testbed import endpoints, faults
from tests import k8s_state
from tests.runbooks import run_playbook

NO_COOLDOWN = {"frontend_not_loading_cooldown_minutes": 0}
ASSET = "/static/js/main.js"


def _codes(report: dict) -> set[str]:
    return {f["code"] for f in report["findings"]}


def _serious(findings: list[dict]) -> list[dict]:
    return [f for f in findings if f["severity"] != "low"]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _routes(ns: str) -> dict:
    """Ingresses and Traefik IngressRoutes of the namespace (the part of the cluster k8s_state does not cover)."""
    api = k8s_state.api_client()
    ser = api.sanitize_for_serialization
    out = {f"Ingress/{i.metadata.name}": ser(i.spec)
           for i in client.NetworkingV1Api(api).list_namespaced_ingress(ns).items}
    for r in client.CustomObjectsApi(api).list_namespaced_custom_object("traefik.io", "v1alpha1", ns,
                                                                         "ingressroutes")["items"]:
        out[f"IngressRoute/{r['metadata']['name']}"] = r["spec"]
    return out


@pytest.fixture(scope="module")
def frontend_bed(platform):
    endpoints.clear("frontend")
    faults.wait_healthy("frontend")
    yield platform
    endpoints.clear("frontend")
    faults.wait_healthy("frontend")


def test_bad_input_is_refused_before_anything_runs(frontend_bed):
    result = run_playbook("frontend_not_loading.yml", extravars={"frontend_not_loading_asset_prefix": "static"})

    assert result.rc != 0
    assert "frontend_not_loading: invalid variables" in result.stdout
    assert "Load the frontend's page" not in result.stdout


def test_frontend_at_zero_is_scaled_back(frontend_bed):
    platform = frontend_bed
    ns = platform["saasodoo_platform_namespace"]
    frontend = platform["saasodoo_components"]["frontend"]
    ref = f"Deployment/{ns}/{frontend['name']}"
    url = platform["saasodoo_endpoints"]["frontend"]["url"]
    fault = faults.scale_to_zero("frontend")
    try:
        # The ingress notices within a second that it has no pod to send the page's request to.
        faults.wait_until("the frontend's page to answer 503", lambda: _status(url + "/") == 503, timeout=30)
        before, routes_before = k8s_state.snapshot([ns]), _routes(ns)

        check = run_playbook("frontend_not_loading.yml", extravars=NO_COOLDOWN, check=True)

        assert check.rc == 0, check.stdout[-3000:]
        report = check.artifacts["frontend_not_loading_report"]
        assert {"FRONTEND_SCALED_TO_ZERO", "FRONTEND_INDEX_UNAVAILABLE"} <= _codes(report)
        assert report["actions"] == [f"would scale {ref} back to {frontend['replicas']} replicas"]
        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == [] and _routes(ns) == routes_before
        assert faults._workload(frontend).spec.replicas == 0 and _status(url + "/") == 503

        result = run_playbook("frontend_not_loading.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["frontend_not_loading_report"]
        assert "FRONTEND_SCALED_TO_ZERO" in _codes(report)
        assert report["actions"] == [f"scaled {ref} back to {frontend['replicas']} replicas"]
        assert report["healthy_after"] is True, report["remaining"]
        assert _serious(report["remaining"]) == []
        assert report["after"]["index_status"] == {"200": 1}
        # Really healed: the desired replicas are ready and the page and its assets load.
        assert faults._workload(frontend).spec.replicas == frontend["replicas"]
        assert faults.component_healthy("frontend")
        assert _status(url + "/") == 200 and _status(url + ASSET) == 200
    finally:
        if faults._workload(frontend).spec.replicas == 0:
            fault.undo()

    again = run_playbook("frontend_not_loading.yml", extravars=NO_COOLDOWN)

    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    report = again.artifacts["frontend_not_loading_report"]
    assert report["healthy_before"] is True and report["actions"] == []
    # Only the honest note that kwok's pods have no logs may remain.
    assert {f["code"] for f in report["findings"]} <= {"FRONTEND_LOGS_UNAVAILABLE"}


def test_stale_static_asset_is_healed_by_a_rolling_restart(frontend_bed):
    platform = frontend_bed
    ns = platform["saasodoo_platform_namespace"]
    frontend = platform["saasodoo_components"]["frontend"]
    url = platform["saasodoo_endpoints"]["frontend"]["url"]
    stale = {p.metadata.name for p in faults._pods(frontend)}
    endpoints.set_fault("frontend", path="/static/js", status=404, until_restart="frontend")
    try:
        assert _status(url + ASSET) == 404 and _status(url + "/") == 200

        result = run_playbook("frontend_not_loading.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["frontend_not_loading_report"]
        missing = next(f for f in report["findings"] if f["code"] == "FRONTEND_STATIC_ASSET_MISSING")
        assert ASSET in missing["message"] and "HTTP 404" in missing["message"]
        assert report["assets"]["missing"] == [ASSET]
        assert "FRONTEND_PODS_UNHEALTHY" not in _codes(report)  # the pods look fine: only their assets are stale
        assert report["actions"] == [f"rolling restart of Deployment/{ns}/{frontend['name']}"]
        assert report["healthy_after"] is True, report["remaining"]
        assert report["after"]["assets"]["missing"] == []
        # Really healed: new pods, none of the stale ones, and the asset loads.
        assert faults.component_healthy("frontend")
        assert stale.isdisjoint(p.metadata.name for p in faults._pods(frontend))
        assert _status(url + ASSET) == 200
        annotations = faults._workload(frontend).metadata.annotations or {}
        assert "static assets missing" in annotations.get("saasodoo.io/last-restart-reason", "")

        again = run_playbook("frontend_not_loading.yml", extravars=NO_COOLDOWN)

        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        assert again.artifacts["frontend_not_loading_report"]["actions"] == []
    finally:
        endpoints.clear("frontend")


def test_deleted_route_is_reapplied_from_desired_state(frontend_bed):
    platform = frontend_bed
    ns = platform["saasodoo_platform_namespace"]
    frontend = platform["saasodoo_components"]["frontend"]
    host = next(h["host"] for h in platform["saasodoo_public_hosts"] if h["component"] == "frontend")
    api = k8s_state.api_client()
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    ingress_name = platform["saasodoo_part_of"]
    service_before = core.read_namespaced_service(frontend["name"], ns)
    ingress_before = net.read_namespaced_ingress(ingress_name, ns)
    # The fault: the frontend's Service is deleted and its host's rule removed from the Ingress.
    core.delete_namespaced_service(frontend["name"], ns)
    net.patch_namespaced_ingress(ingress_name, ns, {"spec": {"rules": [
        api.sanitize_for_serialization(r) for r in ingress_before.spec.rules if r.host != host]}})
    try:
        result = run_playbook("frontend_not_loading.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["frontend_not_loading_report"]
        assert {"FRONTEND_SERVICE_MISSING", "FRONTEND_ROUTE_MISSING"} <= _codes(report)
        assert f"reapplied the route from desired state: create Service/{ns}/{frontend['name']}" in report["actions"]
        assert f"reapplied the route from desired state: patch Ingress/{ns}/{ingress_name}" in report["actions"]
        assert report["healthy_after"] is True, report["remaining"]
        # Really back: the Service selects the frontend's pods on the same port, the rule routes the host to it,
        # and the other hosts' rules are untouched.
        service = core.read_namespaced_service(frontend["name"], ns)
        assert service.spec.selector == service_before.spec.selector
        assert [(p.name, p.port, str(p.target_port)) for p in service.spec.ports] == \
            [(p.name, p.port, str(p.target_port)) for p in service_before.spec.ports]
        assert service.metadata.labels == service_before.metadata.labels
        ingress = net.read_namespaced_ingress(ingress_name, ns)
        by_host = lambda rules: sorted(api.sanitize_for_serialization(rules), key=lambda r: r["host"])  # noqa: E731
        assert by_host(ingress.spec.rules) == by_host(ingress_before.spec.rules)

        again = run_playbook("frontend_not_loading.yml", extravars=NO_COOLDOWN)

        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        assert again.artifacts["frontend_not_loading_report"]["actions"] == []
    finally:
        # Put back whatever the runbook did not (so the next test starts from the deployed platform).
        try:
            core.read_namespaced_service(frontend["name"], ns)
        except client.ApiException:
            body = api.sanitize_for_serialization(service_before)
            body["metadata"] = {"name": frontend["name"], "namespace": ns, "labels": service_before.metadata.labels}
            body["spec"].pop("clusterIP", None)
            body["spec"].pop("clusterIPs", None)
            core.create_namespaced_service(ns, body)
        net.patch_namespaced_ingress(ingress_name, ns, {"spec": {"rules": api.sanitize_for_serialization(
            ingress_before.spec.rules)}})
