"""performance_check's checklist items on hand-made data: pass, fail and unknown, with their evidence."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("perf_filter", ROOT / "plugins/filter/performance_check.py")
perf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perf)


def _path(path, p95, slow=False, errors=False, statuses=None, very_slow=False):
    return {"path": path, "slow": slow, "errors": errors, "very_slow": very_slow, "error_share": 0.5 if errors else 0.0,
            "statuses": statuses or {"200": 10}, "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95}}


def test_api_item_pass_fail_unknown():
    ok = perf.perf_api_item({"paths": [_path("/health", 10.0)]}, 2000)
    assert ok["status"] == "pass" and ok["findings"] == [] and "/health: p50 5 ms, p95 10 ms" in ok["evidence"][0]
    bad = perf.perf_api_item({"paths": [_path("/health", 10.0), _path("/api/v1/plans", 2600.0, slow=True)]}, 2000)
    assert bad["status"] == "fail"
    (finding,) = bad["findings"]
    assert finding["code"] == "PERF_API_SLOW" and finding["ref"] == "/api/v1/plans"
    assert "/api/v1/plans p95 2600 ms" in finding["message"] and finding["severity"] == "medium"
    assert perf.perf_api_item({"paths": []}, 2000)["status"] == "unknown"


NODES = [
    {"name": "n1", "allocatable": {"cpu_millicores": 8000, "memory_bytes": 32 * 2 ** 30},
     "requested": {"cpu_millicores": 7200, "memory_bytes": 2 ** 30}, "requested_percent": {"cpu": 90.0, "memory": 3.1}},
    {"name": "n2", "allocatable": {"cpu_millicores": 8000, "memory_bytes": 32 * 2 ** 30},
     "requested": {"cpu_millicores": 800, "memory_bytes": 2 ** 30}, "requested_percent": {"cpu": 10.0, "memory": 3.1}},
]


def test_node_items_allocation_is_labelled_and_names_the_node():
    cpu, memory = perf.perf_node_items(NODES, None, 80, 80)
    assert cpu["status"] == "fail" and memory["status"] == "pass"
    assert cpu["source"].startswith("allocation, not utilisation")
    (finding,) = cpu["findings"]
    assert finding["code"] == "PERF_NODE_CPU_HIGH" and finding["ref"] == "Node/n1"
    assert "90.0% allocation (pod requests)" in finding["message"]
    assert "n1: 90.0% (7200m requested of 8000m)" in cpu["evidence"]


def test_node_items_utilisation_from_metrics_api():
    metrics = [{"metadata": {"name": "n1"}, "usage": {"cpu": "2", "memory": "30Gi"}},
               {"metadata": {"name": "n2"}, "usage": {"cpu": "500m", "memory": "1Gi"}}]
    cpu, memory = perf.perf_node_items(NODES, metrics, 80, 80)
    assert cpu["status"] == "pass" and cpu["source"].startswith("utilisation")
    assert memory["status"] == "fail" and memory["findings"][0]["code"] == "PERF_NODE_MEMORY_HIGH"
    assert memory["measurements"][0] == {"node": "n1", "percent": 93.8}
    none = perf.perf_node_items(NODES, [], 80, 80)
    assert none[0]["status"] == "unknown"


def test_db_item():
    assert perf.perf_db_item({"connected": False, "findings": [{"message": "down"}]}, 500)["status"] == "unknown"
    missing = perf.perf_db_item({"connected": True, "pg_stat_statements": {"installed": False, "reason": "x"}}, 500)
    assert missing["status"] == "unknown"
    ok = perf.perf_db_item({"connected": True, "pg_stat_statements": {"installed": True}, "slow_statements": []}, 500)
    assert ok["status"] == "pass"
    slow = perf.perf_db_item({"connected": True, "pg_stat_statements": {"installed": True}, "slow_statements": [
        {"user": "app", "mean_ms": 812.5, "max_ms": 2000.0, "calls": 3, "query": "SELECT 1"}]}, 500)
    assert slow["status"] == "fail" and slow["findings"][0]["code"] == "PERF_DB_QUERIES_SLOW"


def _quota(ns, hard, used, name="tenant-quota"):
    return {"metadata": {"namespace": ns, "name": name}, "status": {"hard": hard, "used": used}}


def test_quota_at_limit_fails_near_limit_is_low_and_other_namespaces_are_ignored():
    quotas = [
        _quota("tenant-a", {"requests.cpu": "1", "pods": "10"}, {"requests.cpu": "1000m", "pods": "4"}),
        _quota("tenant-b", {"requests.cpu": "4"}, {"requests.cpu": "3700m"}),
        _quota("tenant-c", {"pods": "10"}, {"pods": "1"}),
        _quota("kube-system", {"pods": "1"}, {"pods": "5"}),
    ]
    item = perf.perf_quota_item(quotas, ["tenant-a", "tenant-b", "tenant-c"], 90, "tenant-")
    assert item["status"] == "fail"
    assert [(f["code"], f.get("tenant")) for f in item["findings"]] == [("PERF_QUOTA_AT_LIMIT", "a"),
                                                                       ("PERF_QUOTA_NEAR_LIMIT", None)]
    assert "requests.cpu" in item["findings"][0]["message"] and item["findings"][0]["severity"] == "medium"
    assert "ResourceQuota/tenant-a/tenant-quota requests.cpu: 1000m of 1 (100.0%)" in item["evidence"]
    assert not any("kube-system" in e for e in item["evidence"])
    fine = perf.perf_quota_item(quotas[2:3], ["tenant-c"], 90)
    assert fine["status"] == "pass" and fine["findings"] == []
    pending = perf.perf_quota_item([{"metadata": {"namespace": "tenant-c", "name": "q"}, "status": {}}], ["tenant-c"])
    assert pending["status"] == "unknown"


def test_network_item():
    ok = {"item": {"name": "api"}, "host": "h", "port": 1, "succeeded": 5, "failures": 0,
          "connect_ms": {"p50": 0.2, "p95": 0.4}}
    slow = dict(ok, item={"name": "db"}, connect_ms={"p50": 150.0, "p95": 300.0})
    down = {"item": {"name": "kb"}, "host": "h", "port": 2, "succeeded": 0, "failures": 5, "connect_ms": {},
            "error_samples": ["refused"]}
    assert perf.perf_network_item([ok], 200)["status"] == "pass"
    item = perf.perf_network_item([ok, slow, down], 200)
    assert item["status"] == "fail"
    assert sorted(f["code"] for f in item["findings"]) == ["PERF_NETWORK_LATENCY_HIGH", "PERF_NETWORK_UNREACHABLE"]


def test_url_targets_and_checklist():
    assert perf.perf_url_targets(["http://a:81/x", "https://b"], ["api", "pub"]) == [
        {"name": "api", "host": "a", "port": 81}, {"name": "pub", "host": "b", "port": 443}]
    items = [perf.perf_api_item({"paths": [_path("/x", 3000.0, slow=True)]}, 2000),
             perf.perf_db_item({"connected": False}, 500)]
    result = perf.perf_checklist(items)
    assert result["counts"] == {"pass": 0, "fail": 1, "unknown": 1}
    assert [f["code"] for f in result["findings"]] == ["PERF_API_SLOW", "PERF_CHECK_UNKNOWN"]
    assert result["lines"][0].startswith("[FAIL] API response times < 2 s")
    assert "findings" not in result["checklist"][0]
