"""The metrics_collection runbook's judgements (plugins/filter/metrics_collection.py) on hand-made data."""

from __future__ import annotations

import copy

from plugins.filter import metrics_collection as f

COMPONENTS = {
    "backend": {"name": "saasodoo-backend", "namespace": "saasodoo-system"},
    "traefik": {"name": "traefik", "namespace": "saasodoo-system"},
}
SHORT = [
    {"name": "saasodoo-backend", "component": "backend", "port": "http", "path": "/metrics", "interval": "30s"},
    {"name": "traefik", "component": "traefik", "port": "metrics"},
]
COMP = "app.kubernetes.io/component"


def desired():
    return f.servicemonitor_manifests(SHORT, COMPONENTS, "monitoring", "app.kubernetes.io/part-of", "saasodoo", COMP)


def target(pool, health, url="http://127.0.0.1:1/metrics", error=""):
    return {"scrapePool": pool, "health": health, "scrapeUrl": url, "lastError": error,
            "labels": {"instance": url.split("/")[2]}, "lastScrape": "2026-01-01T00:00:00Z"}


def targets_answer(active):
    return {"status": 200, "json": {"status": "success", "data": {"activeTargets": active}}}


def codes(findings):
    return sorted((x["code"], x.get("ref")) for x in findings)


# --------------------------------------------------------------------------- desired objects

def test_servicemonitor_manifests_select_the_component_service():
    sm = desired()[1]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["kind"] == "ServiceMonitor"
    assert sm["metadata"] == {"name": "traefik", "namespace": "monitoring",
                              "labels": {"app.kubernetes.io/part-of": "saasodoo", COMP: "traefik"}}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["saasodoo-system"]}
    assert sm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "traefik", COMP: "traefik"}
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]


def test_network_policy_manifest_has_one_ingress_rule_from_the_monitoring_pods():
    pol = f.network_policy_manifests([{
        "name": "allow-monitoring-scrape", "namespace": "saasodoo-system",
        "pod_selector": {"app.kubernetes.io/part-of": "saasodoo"}, "from_namespace": "monitoring",
        "from_pod_selector": {COMP: "prometheus"}, "ports": ["http", "metrics"]}], {"x": "y"})[0]
    assert pol["metadata"] == {"name": "allow-monitoring-scrape", "namespace": "saasodoo-system", "labels": {"x": "y"}}
    assert pol["spec"] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "saasodoo"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                               "podSelector": {"matchLabels": {COMP: "prometheus"}}}],
                     "ports": [{"port": "http", "protocol": "TCP"}, {"port": "metrics", "protocol": "TCP"}]}],
    }


# --------------------------------------------------------------------------- drift

def test_drift_missing_drifted_and_what_others_added_is_ignored():
    want = desired()
    live_backend = copy.deepcopy(want[0])
    live_backend["metadata"]["resourceVersion"] = "12"
    live_backend["spec"]["jobLabel"] = "added-by-someone"  # not ours: ignored
    drift = f.desired_drift(want, [live_backend])
    assert [(d["ref"], d["state"]) for d in drift] == [
        ("ServiceMonitor/monitoring/saasodoo-backend", "ok"), ("ServiceMonitor/monitoring/traefik", "missing")]

    live_traefik = copy.deepcopy(want[1])
    live_traefik["spec"]["endpoints"][0]["port"] = "web"
    drift = f.desired_drift(want, [live_backend, live_traefik])
    assert drift[1]["state"] == "drifted"
    assert drift[1]["differences"] == ["spec.endpoints[0].port: want 'metrics', found 'web'"]
    findings = f.drift_findings(drift, "SERVICEMONITOR")
    assert codes(findings) == [("SERVICEMONITOR_DRIFTED", "ServiceMonitor/monitoring/traefik")]
    assert findings[0]["severity"] == "medium"


def test_drift_compares_numbers_and_strings_by_value_and_lists_by_length():
    want = [{"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "n"},
             "spec": {"ingress": [{"ports": [{"port": 8000, "protocol": "TCP"}]}]}}]
    same = copy.deepcopy(want)
    same[0]["spec"]["ingress"][0]["ports"][0]["port"] = "8000"
    assert f.desired_drift(want, same)[0]["state"] == "ok"
    longer = copy.deepcopy(want)
    longer[0]["spec"]["ingress"].append({"ports": []})
    assert f.desired_drift(want, longer)[0]["state"] == "drifted"


# --------------------------------------------------------------------------- Prometheus

def test_prometheus_not_ready_is_high_and_says_so():
    findings = f.prometheus_findings({"status": -1, "msg": "Connection refused"}, None, desired(), desired(), "http://p")
    assert codes(findings) == [("PROMETHEUS_NOT_READY", None)]
    assert findings[0]["severity"] == "high"
    assert "Connection refused" in findings[0]["evidence"][0]


def test_targets_api_failing_while_ready_is_reported():
    findings = f.prometheus_findings({"status": 200}, {"status": 500, "msg": "boom"}, [], [], "http://p")
    assert codes(findings) == [("PROMETHEUS_API_UNAVAILABLE", None)]


def test_target_down_with_its_last_error_and_scraped_pools_are_fine():
    active = [target("serviceMonitor/monitoring/saasodoo-backend/0", "up"),
              target("serviceMonitor/monitoring/traefik/0", "down", error="connection refused"),
              target("prometheus", "up")]
    findings = f.prometheus_findings({"status": 200}, targets_answer(active), desired(), desired())
    assert codes(findings) == [("PROMETHEUS_TARGET_DOWN", "serviceMonitor/monitoring/traefik/0")]
    assert "lastError: connection refused" in findings[0]["evidence"]


def test_every_target_down_is_one_more_high_finding():
    active = [target("a", "down"), target("b", "down")]
    findings = f.prometheus_findings({"status": 200}, targets_answer(active), [], [])
    assert [x["code"] for x in findings] == ["PROMETHEUS_ALL_TARGETS_DOWN", "PROMETHEUS_TARGET_DOWN",
                                             "PROMETHEUS_TARGET_DOWN"]
    assert findings[0]["severity"] == "high"


def test_servicemonitor_present_but_not_scraped_is_reported_once_missing_one_is_not():
    want = desired()
    active = [target("serviceMonitor/monitoring/saasodoo-backend/0", "up")]
    # traefik's ServiceMonitor exists but Prometheus has no pool for it
    findings = f.prometheus_findings({"status": 200}, targets_answer(active), want, want)
    assert codes(findings) == [("SERVICEMONITOR_NO_TARGETS", "serviceMonitor/monitoring/traefik/0")]
    # deleted: the drift reports it (SERVICEMONITOR_MISSING), not this
    assert f.prometheus_findings({"status": 200}, targets_answer(active), want, want[:1]) == []


def test_unknown_health_is_not_down():
    active = [target("serviceMonitor/monitoring/saasodoo-backend/0", "unknown"),
              target("serviceMonitor/monitoring/traefik/0", "up")]
    assert f.prometheus_findings({"status": 200}, targets_answer(active), desired(), desired()) == []


def test_pools_settled_needs_every_target_of_every_pool_up():
    pools = f.servicemonitor_pools(desired())
    assert pools == ["serviceMonitor/monitoring/saasodoo-backend/0", "serviceMonitor/monitoring/traefik/0"]
    up = [target(p, "up") for p in pools]
    assert f.pools_settled(up, pools)
    assert not f.pools_settled(up[:1], pools)
    assert not f.pools_settled(up + [target(pools[1], "unknown")], pools)


# --------------------------------------------------------------------------- who fixes a target down

def test_target_handover_fixed_here_unhealthy_component_or_owner():
    want = desired()
    down = [
        {"code": "PROMETHEUS_TARGET_DOWN", "ref": "serviceMonitor/monitoring/traefik/0",
         "evidence": ["lastError: connection refused"]},
        {"code": "PROMETHEUS_TARGET_DOWN", "ref": "serviceMonitor/monitoring/saasodoo-backend/0",
         "evidence": ["lastError: connection refused"]},
        {"code": "PROMETHEUS_TARGET_DOWN", "ref": "apiserver", "evidence": ["lastError: 403"]},
    ]
    health = [{"component": "backend", "healthy": False, "reasons": ["CrashLoopBackOff"]},
              {"component": "traefik", "healthy": True, "reasons": []}]
    result = f.target_handover(down, want, health, ["ServiceMonitor/monitoring/traefik"], COMP)
    assert result["fixed_here"] == ["serviceMonitor/monitoring/traefik/0"]
    assert result["handed_over"][0].startswith("serviceMonitor/monitoring/saasodoo-backend/0: its component backend")
    assert "platform_down.yml" in result["handed_over"][0]
    assert result["handed_over"][1].startswith("apiserver: the metrics endpoint does not answer (403)")


def test_components_health_flattens_the_snapshot():
    snap = {"grafana": {"healthy": True, "reasons": []}, "prometheus": {"healthy": False, "reasons": ["x"], "missing": False}}
    assert f.components_health(snap) == [
        {"component": "grafana", "healthy": True, "reasons": [], "missing": False},
        {"component": "prometheus", "healthy": False, "reasons": ["x"], "missing": False}]


# --------------------------------------------------------------------------- Grafana

CM = {"metadata": {"name": "grafana-datasources", "namespace": "monitoring"},
      "parsed": {"apiVersion": 1, "datasources": [
          {"name": "Prometheus", "type": "prometheus", "url": "http://prometheus.monitoring.svc.cluster.local:9090"}]}}
EXPECTED = "http://prometheus.monitoring.svc.cluster.local:9090/"
PROM_OK = {"status": 200, "json": {"status": "success", "data": {}}}


def test_grafana_datasource_as_configured_and_answering_is_fine():
    assert f.grafana_datasource_findings(CM, "datasources.yaml", "Prometheus", EXPECTED, PROM_OK, "datasource_url") == []


def test_grafana_datasource_pointing_elsewhere_or_missing():
    wrong = copy.deepcopy(CM)
    wrong["parsed"]["datasources"][0]["url"] = "http://prometheus.other.svc:9090"
    found = f.grafana_datasource_findings(wrong, "k", "Prometheus", EXPECTED, PROM_OK, "datasource_url")
    assert [x["code"] for x in found] == ["GRAFANA_DATASOURCE_MISCONFIGURED"]
    assert [x["code"] for x in f.grafana_datasource_findings(CM, "k", "Loki", EXPECTED, PROM_OK, "datasource_url")] == [
        "GRAFANA_DATASOURCE_CONFIG_MISSING"]
    assert [x["code"] for x in f.grafana_datasource_findings(None, "k", "Prometheus", EXPECTED, PROM_OK, "x")] == [
        "GRAFANA_DATASOURCE_CONFIG_MISSING"]


def test_grafana_datasource_unhealthy_by_either_method():
    down = {"status": -1, "msg": "Connection refused"}
    found = f.grafana_datasource_findings(CM, "k", "Prometheus", EXPECTED, down, "datasource_url", "http://p")
    assert [x["code"] for x in found] == ["GRAFANA_DATASOURCE_UNHEALTHY"]
    assert "the datasource's Prometheus API (http://p)" in found[0]["evidence"][0]
    grafana_says_error = {"status": 400, "json": {"status": "ERROR", "message": "Post ...: connection refused"}}
    found = f.grafana_datasource_findings(CM, "k", "Prometheus", EXPECTED, grafana_says_error, "grafana_api")
    assert found[0]["code"] == "GRAFANA_DATASOURCE_UNHEALTHY" and "Grafana's datasource health" in found[0]["evidence"][0]
    assert f.grafana_datasource_findings(CM, "k", "Prometheus", EXPECTED, {"status": 200, "json": {"status": "OK"}},
                                         "grafana_api") == []


# --------------------------------------------------------------------------- the plan

def test_plan_restarts_unhealthy_monitoring_and_reapplies_drift_only():
    drift = f.desired_drift(desired(), desired()[:1])  # traefik's ServiceMonitor missing
    diag = {"findings": [
        {"code": "WORKLOAD_CRASHLOOP", "component": "prometheus"},
        {"code": "WORKLOAD_CRASHLOOP", "component": "backend"},  # not monitoring: not ours to restart
        {"code": "WORKLOAD_SCALED_TO_ZERO", "component": "grafana", "message": "grafana has no replicas."},
        {"code": "SERVICEMONITOR_MISSING", "ref": "ServiceMonitor/monitoring/traefik"},
    ], "servicemonitor_drift": drift, "policy_drift": [], "components": []}
    plan = f.remediation_plan(diag, desired(), ["prometheus", "grafana"], ["prometheus", "grafana", "backend"],
                              "datasource_url", COMP)
    assert plan["restart"] == ["prometheus"]
    assert [d["ref"] for d in plan["servicemonitors"]] == ["ServiceMonitor/monitoring/traefik"]
    assert plan["policies"] == []
    assert plan["handed_over"] == ["grafana has no replicas. A restart does not cure this -> platform_down.yml / "
                                   "backend_crashloop.yml"]


def test_plan_restarts_prometheus_not_answering_once_and_grafana_only_on_its_own_word():
    diag = {"findings": [{"code": "PROMETHEUS_NOT_READY", "component": "prometheus"},
                         {"code": "WORKLOAD_UNAVAILABLE", "component": "prometheus"},
                         {"code": "GRAFANA_DATASOURCE_UNHEALTHY", "component": "grafana"}]}
    plan = f.remediation_plan(diag, [], ["prometheus", "grafana"], ["prometheus", "grafana"], "grafana_api")
    assert plan["restart"] == ["prometheus"]  # Grafana's datasource is down because Prometheus is
    diag = {"findings": [{"code": "GRAFANA_DATASOURCE_UNHEALTHY", "component": "grafana"}]}
    assert f.remediation_plan(diag, [], ["prometheus", "grafana"], ["prometheus", "grafana"], "grafana_api")["restart"] == [
        "grafana"]
    assert f.remediation_plan(diag, [], ["prometheus", "grafana"], ["prometheus", "grafana"], "datasource_url")["restart"] == []
    # not restartable in the inventory: left alone
    diag = {"findings": [{"code": "PROMETHEUS_NOT_READY"}]}
    assert f.remediation_plan(diag, [], ["prometheus"], [], "datasource_url")["restart"] == []
