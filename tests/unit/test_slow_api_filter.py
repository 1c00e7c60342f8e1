"""slow_api's judgement on hand-made data: the backend's capacity, Redis, the slow query log, and the cause
(database, cache, backend saturation, undetermined), plus api_latency's per-path verdicts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


slow_api = _load("slow_api_filter", "plugins/filter/slow_api.py")
api_latency = _load("api_latency_filter", "roles/api_latency/filter_plugins/api_latency.py")


# ------------------------------------------------------------------ api_latency

def _probe(path, statuses, ms, timeouts=0, refused=0):
    samples = [{"status": s, "ms": m, "error_kind": None} for s, m in zip(statuses, ms)]
    samples += [{"status": None, "ms": 3000.0, "error_kind": "timeout"}] * timeouts
    samples += [{"status": None, "ms": 0.5, "error_kind": "refused"}] * refused
    counts = {}
    for s in statuses:
        counts[str(s)] = counts.get(str(s), 0) + 1
    errors = {k: v for k, v in (("timeout", timeouts), ("refused", refused)) if v}
    return {"item": path, "url": "http://api" + path, "requests": len(samples), "statuses": counts,
            "unanswered": timeouts + refused, "unexpected": sum(1 for s in statuses if s != 200), "timeouts": timeouts,
            "errors": errors, "error_samples": [], "samples": samples, "latency_ms": {}}


def test_fast_paths_are_ok():
    result = api_latency.api_latency_judge([_probe("/health", [200] * 10, [5.0] * 10)], p95_ms=2000)
    assert result["healthy"] and result["paths"][0]["verdict"] == "ok" and result["findings"] == []


def test_slow_path_is_named_with_its_percentiles_medium_under_high_mark():
    result = api_latency.api_latency_judge([_probe("/api/v1/tenants", [200] * 10, [2500.0] * 10)], p95_ms=2000,
                                           high_ms=5000)
    (finding,) = result["findings"]
    assert finding["code"] == "API_PATH_SLOW" and finding["ref"] == "/api/v1/tenants"
    assert finding["severity"] == "medium" and "p95 2500 ms" in finding["message"]
    assert result["slow_paths"] == ["/api/v1/tenants"]


def test_timeouts_count_as_time_waited_and_make_it_high():
    result = api_latency.api_latency_judge([_probe("/api/v1/tenants", [], [], timeouts=10)], p95_ms=2000, timeout_s=3)
    path = result["paths"][0]
    assert path["latency_ms"]["p95"] == 3000.0 and path["slow"] and not path["errors"]
    assert result["findings"][0]["severity"] == "high" and "10 request(s) timed out" in result["findings"][0]["message"]


def test_errors_are_not_times():
    result = api_latency.api_latency_judge([_probe("/x", [200, 503], [5.0, 5.0], refused=2)], p95_ms=2000)
    path = result["paths"][0]
    assert path["verdict"] == "errors" and path["error_share"] == 0.75
    assert [f["code"] for f in result["findings"]] == ["API_PATH_ERRORS"]


def test_p95_uses_linear_interpolation_of_the_shared_module():
    result = api_latency.api_latency_judge([_probe("/x", [200] * 20, [10.0] * 19 + [2500.0])], p95_ms=2000)
    assert result["paths"][0]["latency_ms"]["p95"] == pytest.approx(134.5)
    assert result["healthy"]


# ------------------------------------------------------------------ backend

def _deployment(replicas=2, ready=2, cpu_limit="1"):
    return {"kind": "Deployment", "metadata": {"name": "be", "namespace": "ns"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
                     "template": {"spec": {"containers": [{"name": "be", "resources": {
                         "requests": {"cpu": "250m"}, "limits": {"cpu": cpu_limit}}}]}}},
            "status": {"readyReplicas": ready}}


def _pod(name, restarts=0, ready=True):
    return {"metadata": {"name": name, "namespace": "ns"},
            "spec": {"nodeName": "n1", "containers": [{"name": "be", "resources": {"requests": {"cpu": "250m"},
                                                                                    "limits": {"cpu": "1"}}}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": "be", "restartCount": restarts, "state": {"running": {}}}]}}


def test_backend_without_metrics_api_says_cpu_unknown():
    b = slow_api.slow_api_backend(_deployment(), [_pod("p1"), _pod("p2")], [], None, "not served", 2)
    assert b["exists"] and not b["metrics_available"] and b["saturated_pods"] == [] and b["hpa"] is None
    assert b["pods"][0]["cpu_percent_of_limit"] is None


def test_backend_cpu_saturation_from_pod_metrics_and_hpa_at_max():
    metrics = [{"metadata": {"name": "p1"}, "containers": [{"usage": {"cpu": "900m"}}]},
               {"metadata": {"name": "p2"}, "containers": [{"usage": {"cpu": "100000000n"}}]}]
    hpa = {"metadata": {"name": "be"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "be"},
                                                "minReplicas": 1, "maxReplicas": 2}}
    b = slow_api.slow_api_backend(_deployment(), [_pod("p1"), _pod("p2")], [hpa], metrics, None, 2,
                                  cpu_saturation_percent=80)
    assert b["saturated_pods"] == ["p1"] and b["pods"][1]["cpu_percent_of_limit"] == 10.0
    assert b["hpa"]["max"] == 2 and b["hpa_at_max"]


def test_backend_restarts_and_missing():
    b = slow_api.slow_api_backend(_deployment(ready=1), [_pod("p1", restarts=5), _pod("p2", ready=False)], [], None)
    assert b["restarting_pods"] == ["p1"] and b["unavailable"]
    assert slow_api.slow_api_backend(None)["exists"] is False


# ------------------------------------------------------------------ redis and the slow query log

def test_redis_unreachable_and_healthy_and_low_hit_ratio():
    down = slow_api.slow_api_redis({"failed": True, "msg": "refused"}, {"succeeded": 0, "error_samples": ["refused"]},
                                   endpoint="r:6379")
    assert [f["code"] for f in down["findings"]] == ["REDIS_UNREACHABLE"]
    ok = slow_api.slow_api_redis({"info": {"used_memory": 10, "maxmemory": 0, "keyspace_hits": 5, "keyspace_misses": 5}},
                                 {"succeeded": 5, "roundtrip_ms": {"p95": 0.3}})
    assert ok["findings"] == [] and ok["facts"]["hit_ratio"] == 0.5  # too few lookups to judge
    low = slow_api.slow_api_redis({"info": {"used_memory": 95, "maxmemory": 100, "keyspace_hits": 100,
                                            "keyspace_misses": 900}},
                                  {"succeeded": 5, "roundtrip_ms": {"p95": 80.0}}, ping_ms=50)
    assert sorted(f["code"] for f in low["findings"]) == ["REDIS_LOW_HIT_RATIO", "REDIS_MEMORY_HIGH", "REDIS_SLOW"]


def test_slow_query_log_state_and_privileges():
    row = {"setting": "-1", "source": "default", "role": "app", "superuser": False, "can_reload": True}
    assert slow_api.slow_query_log_state(row, {"can_alter_system": True}) == {
        "known": True, "enabled": False, "value_ms": -1, "source": "default", "can_change": True, "why_not": None,
        "role": "app"}
    denied = slow_api.slow_query_log_state(row, {"can_alter_system": False})
    assert not denied["can_change"] and "ALTER SYSTEM ON PARAMETER" in denied["why_not"]
    no_reload = slow_api.slow_query_log_state(dict(row, can_reload=False), {"can_alter_system": True})
    assert "pg_reload_conf" in no_reload["why_not"]
    su = slow_api.slow_query_log_state(dict(row, setting="250", superuser=True, can_reload=False), {})
    assert su["enabled"] and su["can_change"]
    assert slow_api.slow_query_log_state({}, {}, "unreachable")["known"] is False


# ------------------------------------------------------------------ the cause

def _api(slow=(), paths=("/health", "/api/v1/tenants", "/api/v1/plans")):
    ps = [{"path": p, "slow": p in slow} for p in paths]
    findings = [{"code": "API_PATH_SLOW", "severity": "medium", "message": "slow " + p, "ref": p} for p in slow]
    return {"paths": ps, "slow_paths": list(slow), "findings": findings}


BACKEND = slow_api.slow_api_backend(_deployment(), [_pod("p1"), _pod("p2")], [], None, "not served", 2)
LOG_ON = {"known": True, "enabled": True, "value_ms": 500}
LOCK = {"code": "PG_BLOCKING_LOCKS", "severity": "high", "message": "Session 4242 (x) blocks 3 other session(s)",
        "evidence": {"blocker_pid": 4242, "blocker_application": "psql"}}


def codes(result):
    return [f["code"] for f in result["findings"]]


def test_nothing_slow_nothing_found():
    result = slow_api.slow_api_diagnosis(_api(), BACKEND, {"findings": []}, {"findings": []}, LOG_ON)
    assert result["findings"] == [] and result["cause"] is None and result["healthy"]


def test_database_lock_is_the_cause_even_when_every_path_is_slow():
    result = slow_api.slow_api_diagnosis(_api(slow=("/health", "/api/v1/tenants", "/api/v1/plans")), BACKEND,
                                         {"findings": [LOCK]}, {"findings": []}, LOG_ON)
    assert result["cause"] == "database" and not result["saturated"]
    cause = next(f for f in result["findings"] if f["code"] == "API_SLOW_CAUSE_DATABASE")
    assert "Session 4242" in cause["message"] and "db_performance.yml" in cause["remediation"]
    assert "BACKEND_SATURATED" not in codes(result)
    handover = slow_api.slow_api_handover(result["findings"])
    assert handover[0] == "blocking session 4242 (psql) -> db_performance.yml (terminate after review, lock_timeout)"


def test_cache_is_the_cause():
    redis = {"findings": [{"code": "REDIS_SLOW", "severity": "medium", "message": "Redis slow"}]}
    result = slow_api.slow_api_diagnosis(_api(slow=("/health",)), BACKEND, {"findings": []}, redis, LOG_ON)
    assert result["cause"] == "cache" and "API_SLOW_CAUSE_CACHE" in codes(result)


def test_slow_health_path_without_db_or_cache_cause_is_saturation():
    result = slow_api.slow_api_diagnosis(_api(slow=("/health", "/api/v1/tenants", "/api/v1/plans")), BACKEND,
                                         {"findings": []}, {"findings": []}, LOG_ON)
    assert result["cause"] == "backend_saturation" and result["saturated"]
    sat = next(f for f in result["findings"] if f["code"] == "BACKEND_SATURATED")
    assert any("/health" in s for s in sat["evidence"]) and any("CPU usage unknown" in s for s in sat["evidence"])


def test_one_slow_path_alone_is_undetermined_not_saturation():
    result = slow_api.slow_api_diagnosis(_api(slow=("/api/v1/tenants",)), BACKEND, {"findings": []},
                                         {"findings": []}, LOG_ON)
    assert result["cause"] == "undetermined" and not result["saturated"]
    assert "API_SLOW_CAUSE_UNDETERMINED" in codes(result) and "BACKEND_SATURATED" not in codes(result)


def test_unavailable_backend_is_handed_over_not_scaled():
    backend = slow_api.slow_api_backend(_deployment(ready=0), [_pod("p1", ready=False)], [], None)
    result = slow_api.slow_api_diagnosis(_api(slow=("/health",)), backend, {"findings": []}, {"findings": []}, LOG_ON)
    assert result["cause"] == "backend_unavailable" and not result["saturated"]
    assert "BACKEND_REPLICAS_UNAVAILABLE" in codes(result)
    assert any("platform_down.yml" in h for h in slow_api.slow_api_handover(result["findings"]))


def test_slow_query_log_off_is_a_low_finding_even_when_healthy():
    result = slow_api.slow_api_diagnosis(_api(), BACKEND, {"findings": []}, {"findings": []},
                                         {"known": True, "enabled": False, "value_ms": -1, "source": "default"})
    assert codes(result) == ["SLOW_QUERY_LOG_DISABLED"] and result["healthy"]
