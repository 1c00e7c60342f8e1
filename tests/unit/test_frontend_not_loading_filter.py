"""frontend_not_loading's judgement on hand-made objects: asset references, pods, logs, the route against its
desired state (and the exact patches that restore it), volumes and the way to the API."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fnl_filter", ROOT / "plugins/filter/frontend_not_loading.py")
fnl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fnl)

NS = "saasodoo-system"
HOST = "app.example.com"
DESIRED = {
    "namespace": NS, "host": HOST, "labels": {"part-of": "saasodoo", "component": "frontend"},
    "labels_route": {"part-of": "saasodoo"},
    "service": {"name": "fe", "port": 3000, "port_name": "http", "protocol": "TCP"},
    "ingress": {"name": "saasodoo", "class": "traefik", "tls": [{"secretName": "tls", "hosts": [HOST]}],
                "annotations": {}},
    "ingressroute": {"enabled": True, "name": "saasodoo", "entry_points": ["web"], "tls_secret": "tls"},
}
SELECTOR = {"app.kubernetes.io/name": "fe", "component": "frontend"}


def deployment(replicas=2, ready=2, volumes=None):
    return {"kind": "Deployment", "metadata": {"name": "fe", "namespace": NS, "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": SELECTOR},
                     "template": {"metadata": {"labels": SELECTOR},
                                  "spec": {"containers": [{"name": "frontend"}], "volumes": volumes or []}}},
            "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
                       "updatedReplicas": replicas, "observedGeneration": 1}}


def service(selector=None, ports=None):
    return {"metadata": {"name": "fe", "namespace": NS},
            "spec": {"selector": SELECTOR if selector is None else selector,
                     "ports": ports or [{"name": "http", "port": 3000, "targetPort": "http"}]}}


def ingress(rules):
    return {"metadata": {"name": "saasodoo", "namespace": NS}, "spec": {"rules": rules}}


def rule(host, svc="fe", port_name="http"):
    return {"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                              "backend": {"service": {"name": svc, "port": {"name": port_name}}}}]}}


def ingressroute(routes):
    return {"metadata": {"name": "saasodoo", "namespace": NS}, "spec": {"routes": routes}}


def route(host, svc="fe", port=3000):
    return {"kind": "Rule", "match": "Host(`%s`)" % host, "services": [{"name": svc, "namespace": NS, "port": port}]}


GOOD_ING = ingress([rule(HOST), rule("api.example.com", "be")])
GOOD_IR = ingressroute([route(HOST), route("api.example.com", "be", 8000)])
SLICE = [{"endpoints": [{"conditions": {"ready": True}}]}]


def codes(findings):
    return sorted(f["code"] for f in findings)


# ------------------------------------------------------------------ assets

def test_asset_refs_local_only_in_order_without_duplicates():
    html = ('<html><head><link rel="stylesheet" href="/static/css/main.css"><script src="static/js/a.js"></script>'
            '<script src="https://cdn.example.net/static/x.js"></script><link href="/favicon.ico">'
            '<script src="/static/css/main.css"></script><img src="http://fe:3000/static/img/logo.png"></head></html>')
    assert fnl.frontend_asset_refs(html, "/static/", "http://fe:3000") == [
        "/static/css/main.css", "/static/js/a.js", "/static/img/logo.png"]
    assert fnl.frontend_asset_refs(None) == []


def _probe(item, ok=True, statuses=None, body=None, url=None):
    return {"item": item, "ok": ok, "statuses": statuses or ({"200": 1} if ok else {"404": 1}), "body": body,
            "url": url, "error_samples": []}


def test_missing_asset_is_named_and_index_down_is_critical():
    index = _probe(None, body="<html/>", url="http://fe/")
    result = fnl.frontend_assets(index, [_probe("/static/js/main.js", ok=False), _probe("/static/css/main.css")])
    (finding,) = result["findings"]
    assert finding["code"] == "FRONTEND_STATIC_ASSET_MISSING" and "/static/js/main.js (HTTP 404)" in finding["message"]
    assert result["missing"] == ["/static/js/main.js"]
    down = fnl.frontend_assets({"ok": False, "statuses": {"503": 1}, "body": "no available server\n", "url": "http://fe/"},
                               [])
    assert codes(down["findings"]) == ["FRONTEND_INDEX_UNAVAILABLE"] and down["findings"][0]["severity"] == "critical"
    assert "HTTP 503 x1" in down["findings"][0]["message"]


# ------------------------------------------------------------------ pods and logs

def test_pods_scaled_to_zero_and_missing():
    assert codes(fnl.frontend_pods(deployment(0, 0), [], 3, 2)["findings"]) == ["FRONTEND_SCALED_TO_ZERO"]
    assert codes(fnl.frontend_pods(None)["findings"]) == ["FRONTEND_MISSING"]
    assert fnl.frontend_pods(deployment(), [], 3, 2)["findings"] == []


def test_logs_unavailable_is_said_not_hidden_and_errors_are_found():
    none = fnl.frontend_logs([{"item": "p1", "failed": True, "msg": "dial tcp 127.0.0.1:10250: connection refused"}],
                             [r"(?i)\berror\b"])
    assert codes(none["findings"]) == ["FRONTEND_LOGS_UNAVAILABLE"] and none["findings"][0]["severity"] == "low"
    some = fnl.frontend_logs([{"item": "p1", "log_lines": ["ok", "Error: cannot find /static/js/main.js"]}],
                             [r"(?i)\berror\b"])
    assert codes(some["findings"]) == ["FRONTEND_LOG_ERRORS"] and some["read"] == [{"pod": "p1", "lines": 2, "matches": 1}]


# ------------------------------------------------------------------ route

def test_route_in_desired_state_needs_nothing():
    result = fnl.frontend_route(deployment(), [service()], [GOOD_ING], [GOOD_IR], SLICE, DESIRED)
    assert result["findings"] == [] and result["changes"] == []


def test_missing_service_is_created_with_the_workloads_selector():
    result = fnl.frontend_route(deployment(), [], [GOOD_ING], [GOOD_IR], [], DESIRED)
    assert codes(result["findings"]) == ["FRONTEND_SERVICE_MISSING"]
    (change,) = result["changes"]
    assert change["action"] == "create" and change["ref"] == "Service/%s/fe" % NS
    assert change["definition"]["spec"]["selector"] == SELECTOR
    assert change["definition"]["spec"]["ports"] == [{"name": "http", "port": 3000, "targetPort": "http",
                                                      "protocol": "TCP"}]


def test_drifted_selector_is_patched_with_nulls_for_extra_keys():
    result = fnl.frontend_route(deployment(), [service(selector={"component": "frontend", "stale": "x"})],
                                [GOOD_ING], [GOOD_IR], [], DESIRED)
    assert codes(result["findings"]) == ["FRONTEND_SERVICE_DRIFT"]
    patch = result["changes"][0]["definition"]["spec"]
    assert patch == {"selector": dict(SELECTOR, stale=None)}


def test_no_endpoints_although_pods_are_ready():
    result = fnl.frontend_route(deployment(), [service()], [GOOD_ING], [GOOD_IR], [], DESIRED)
    assert codes(result["findings"]) == ["FRONTEND_NO_ENDPOINTS"] and result["changes"] == []


def test_ingress_rule_removed_is_put_back_keeping_the_other_hosts():
    result = fnl.frontend_route(deployment(), [service()], [ingress([rule("api.example.com", "be")])], [GOOD_IR],
                                SLICE, DESIRED)
    assert codes(result["findings"]) == ["FRONTEND_ROUTE_MISSING"]
    (change,) = result["changes"]
    rules = change["definition"]["spec"]["rules"]
    assert [r["host"] for r in rules] == ["api.example.com", HOST] and change["merge_type"] == "merge"


def test_ingress_rule_pointing_elsewhere_is_replaced_in_place():
    drifted = ingress([rule(HOST, "wrong"), rule("api.example.com", "be")])
    result = fnl.frontend_route(deployment(), [service()], [drifted], [GOOD_IR], SLICE, DESIRED)
    assert codes(result["findings"]) == ["FRONTEND_ROUTE_DRIFT"]
    rules = result["changes"][0]["definition"]["spec"]["rules"]
    assert rules[0] == rule(HOST) and rules[1] == rule("api.example.com", "be")


def test_whole_ingress_missing_is_created_from_desired_state():
    result = fnl.frontend_route(deployment(), [service()], [], [GOOD_IR], SLICE, DESIRED)
    (change,) = result["changes"]
    assert change["action"] == "create"
    assert change["definition"]["spec"] == {"ingressClassName": "traefik", "rules": [rule(HOST)],
                                            "tls": [{"secretName": "tls", "hosts": [HOST]}]}


def test_ingressroute_drift_and_api_not_served():
    drifted = ingressroute([route(HOST, "fe", 9999), route("api.example.com", "be", 8000)])
    result = fnl.frontend_route(deployment(), [service()], [GOOD_ING], [drifted], SLICE, DESIRED)
    assert codes(result["findings"]) == ["FRONTEND_INGRESSROUTE_DRIFT"]
    assert result["changes"][0]["definition"]["spec"]["routes"][0] == route(HOST)
    unserved = fnl.frontend_route(deployment(), [service()], [GOOD_ING], [], SLICE, DESIRED,
                                  ingressroute_api_available=False)
    assert unserved["findings"] == []


def test_route_input_is_not_mutated():
    live = [copy.deepcopy(GOOD_ING)]
    fnl.frontend_route(deployment(), [service()], live, [GOOD_IR], SLICE, dict(DESIRED, host="other.example.com"))
    assert live == [GOOD_ING]


# ------------------------------------------------------------------ volumes and reachability

def test_no_volumes_is_said_and_missing_sources_are_found():
    none = fnl.frontend_volumes(deployment())
    assert none["findings"] == [] and "declares no volumes" in none["note"]
    vols = [{"name": "cfg", "configMap": {"name": "fe-config"}}, {"name": "assets", "persistentVolumeClaim":
                                                                 {"claimName": "fe-assets"}},
            {"name": "tmp", "emptyDir": {}}]
    pvc = [{"metadata": {"name": "fe-assets"}, "status": {"phase": "Pending"}}]
    result = fnl.frontend_volumes(deployment(volumes=vols), [], [], [], pvc, [
        {"reason": "FailedMount", "involvedObject": {"name": "fe-1"}, "message": "configmap not found"}])
    (finding,) = result["findings"]
    assert finding["code"] == "FRONTEND_VOLUME_SOURCE_MISSING"
    assert "ConfigMap fe-config does not exist" in finding["message"] and "Pending, not Bound" in finding["message"]
    assert [v["ok"] for v in result["declared"]] == [False, False, True]


def test_reachability_config_api_and_policy():
    config = {"ok": True, "body": json.dumps({"apiUrl": "http://api"}), "url": "http://fe/config.json"}
    good = fnl.frontend_reachability(config, {"ok": True}, policy={"allowed": True})
    assert good["findings"] == [] and good["api_url"] == "http://api"
    down = fnl.frontend_reachability(config, {"ok": False, "statuses": {"503": 2}})
    assert codes(down["findings"]) == ["FRONTEND_API_UNREACHABLE"]
    missing = fnl.frontend_reachability({"ok": False, "statuses": {"404": 1}, "url": "u"}, None)
    assert codes(missing["findings"]) == ["FRONTEND_CONFIG_MISSING"]
    blocked = fnl.frontend_reachability(config, {"ok": True}, policy={
        "allowed": False, "egress": {"allowed": True}, "ingress": {"allowed": False, "selected_by": ["deny-all"]}})
    assert codes(blocked["findings"]) == ["FRONTEND_BACKEND_BLOCKED_BY_POLICY"]
    assert fnl.frontend_reachability(None, None)["findings"] == []
