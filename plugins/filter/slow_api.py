"""slow_api.yml's judgement: the backend's capacity, the cache, and what makes the API slow.

Pure functions over what kubernetes.core.k8s_info, saasodoo_pg_health, community.general.redis_info,
saasodoo_tcp_probe and the api_latency role return, unit-tested in tests/unit/test_slow_api_filter.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCUMENTATION = """
name: slow_api
short_description: Diagnosis filters of the slow_api runbook
description:
  - C(slow_api_backend) sums up the backend Deployment, its pods, autoscalers and (when served) pod metrics.
  - C(slow_api_redis) judges Redis from its INFO and a timed PING.
  - C(slow_api_slow_query_log) judges PostgreSQL's log_min_duration_statement and whether the runbook may change it.
  - C(slow_api_diagnosis) puts the parts together, names the cause of slow API paths (database, cache, backend
    saturation, or undetermined) and returns the findings.
"""

_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_health", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_k8s_health.py")
k8s_health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s_health)

dig = k8s_health.dig
parse_quantity = k8s_health.parse_quantity

# PostgreSQL findings that say the database is what makes requests slow right now.
DB_CAUSE_CODES = ("PG_BLOCKING_LOCKS", "PG_LONG_RUNNING_QUERY", "PG_SLOW_STATEMENTS", "PG_CONNECTIONS_NEAR_LIMIT",
                  "PG_CONNECTIONS_EXHAUSTED", "PG_UNREACHABLE", "PG_LOGIN_REJECTED")
CACHE_CAUSE_CODES = ("REDIS_UNREACHABLE", "REDIS_SLOW")
# Database findings that are not a cause of slowness by themselves, but are db_performance's to handle.
DB_HANDOVER_CODES = ("PG_IDLE_IN_TRANSACTION", "PG_LOW_CACHE_HIT_RATIO")
HANDOVER_DB = "db_performance.yml"


def _finding(code, severity, message, component=None, evidence=None, remediation=None, ref=None):
    return {"code": code, "severity": severity, "message": message, "component": component, "ref": ref,
            "evidence": evidence if evidence is not None else [], "remediation": remediation}


def _pct(part, whole):
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 1)


# ------------------------------------------------------------------------------------ backend

def _container_resources(container):
    res = container.get("resources") or {}
    return {"name": container.get("name"), "requests": res.get("requests") or {}, "limits": res.get("limits") or {}}


def _pod_cpu(metrics_item, pod):
    """(usage cores, limit cores or None, request cores or None) of a pod from its PodMetrics."""
    usage = sum(parse_quantity(dig(c, "usage", "cpu")) or 0.0 for c in (metrics_item or {}).get("containers") or [])
    containers = dig(pod, "spec", "containers", default=[]) or []
    limits = [parse_quantity(dig(c, "resources", "limits", "cpu")) for c in containers]
    requests = [parse_quantity(dig(c, "resources", "requests", "cpu")) for c in containers]
    limit = sum(limits) if limits and all(v is not None for v in limits) else None
    request = sum(requests) if requests and all(v is not None for v in requests) else None
    return usage, limit, request


def slow_api_backend(deployment, pods=None, hpas=None, pod_metrics=None, metrics_error=None, desired_replicas=None,
                     restart_threshold=3, cpu_saturation_percent=80):
    """The backend's capacity: replicas, pods (ready, restarts, CPU use when known), resources, autoscaler.

    deployment: the Deployment (or StatefulSet) object, None when missing. pods: its pods. hpas: the autoscalers of
    its namespace. pod_metrics: PodMetrics items of its namespace, or None when the metrics API is not served
    (metrics_error says why).
    """
    if not deployment:
        return {"exists": False, "ref": None, "replicas": 0, "ready_replicas": 0, "pods": [], "containers": [],
                "hpa": None, "metrics_available": pod_metrics is not None, "metrics_error": metrics_error,
                "restarting_pods": [], "saturated_pods": [], "unavailable": True, "desired_replicas": desired_replicas}
    kind = deployment.get("kind")
    name = dig(deployment, "metadata", "name")
    namespace = dig(deployment, "metadata", "namespace")
    metrics_by_pod = {dig(m, "metadata", "name"): m for m in (pod_metrics or [])}
    pod_reports = []
    for pod in pods or []:
        if dig(pod, "metadata", "deletionTimestamp"):
            continue
        health = k8s_health.pod_health(pod, restart_threshold)
        report = {"name": health["name"], "ready": health["ready"], "phase": health["phase"],
                  "restarts": health["restarts"], "reasons": health["reasons"], "node": dig(pod, "spec", "nodeName"),
                  "cpu_usage_cores": None, "cpu_limit_cores": None, "cpu_percent_of_limit": None}
        if pod_metrics is not None and health["name"] in metrics_by_pod:
            usage, limit, request = _pod_cpu(metrics_by_pod[health["name"]], pod)
            basis = limit if limit else request
            report.update(cpu_usage_cores=round(usage, 3), cpu_limit_cores=limit,
                          cpu_percent_of_limit=_pct(usage, basis))
        pod_reports.append(report)
    hpa = None
    for h in hpas or []:
        ref = dig(h, "spec", "scaleTargetRef", default={}) or {}
        if ref.get("kind") == kind and ref.get("name") == name:
            hpa = {"name": dig(h, "metadata", "name"), "min": dig(h, "spec", "minReplicas", default=1),
                   "max": dig(h, "spec", "maxReplicas"), "current": dig(h, "status", "currentReplicas"),
                   "desired": dig(h, "status", "desiredReplicas")}
            break
    replicas = dig(deployment, "spec", "replicas", default=1)
    ready = dig(deployment, "status", "readyReplicas", default=0) or 0
    containers = [_container_resources(c) for c in dig(deployment, "spec", "template", "spec", "containers",
                                                        default=[]) or []]
    return {
        "exists": True, "ref": "%s/%s/%s" % (kind, namespace, name), "kind": kind, "name": name,
        "namespace": namespace, "replicas": replicas, "ready_replicas": ready,
        "desired_replicas": desired_replicas if desired_replicas is not None else replicas,
        "unavailable": ready < replicas or replicas == 0,
        "pods": pod_reports, "containers": containers,
        "containers_without_cpu_request": [c["name"] for c in containers if not c["requests"].get("cpu")],
        "containers_without_limits": [c["name"] for c in containers if not c["limits"]],
        "hpa": hpa, "hpa_at_max": bool(hpa and hpa["max"] is not None and replicas >= hpa["max"]),
        "metrics_available": pod_metrics is not None, "metrics_error": metrics_error,
        "restarting_pods": [p["name"] for p in pod_reports if p["restarts"] >= restart_threshold],
        "saturated_pods": [p["name"] for p in pod_reports
                           if p["cpu_percent_of_limit"] is not None and p["cpu_percent_of_limit"] >= cpu_saturation_percent],
        "cpu_saturation_percent": cpu_saturation_percent,
    }


# ------------------------------------------------------------------------------------ cache

def slow_api_redis(info_result=None, ping_result=None, ping_ms=50.0, hit_ratio=0.8, min_lookups=1000,
                   memory_percent=90.0, endpoint=""):
    """Redis from community.general.redis_info's result and a saasodoo_tcp_probe PING: facts and findings."""
    info_result = info_result or {}
    info = info_result.get("info") or {}
    ping = ping_result or {}
    reachable = bool(ping.get("succeeded")) or bool(info)
    findings = []
    ping_p95 = dig(ping, "roundtrip_ms", "p95") if ping.get("roundtrip_ms") else None
    facts = {"endpoint": endpoint, "reachable": reachable, "version": info.get("redis_version"),
             "ping_ms": ping.get("roundtrip_ms"), "connect_ms": ping.get("connect_ms"),
             "used_memory": info.get("used_memory"), "maxmemory": info.get("maxmemory"),
             "memory_percent": None, "hits": info.get("keyspace_hits"), "misses": info.get("keyspace_misses"),
             "hit_ratio": None, "evicted_keys": info.get("evicted_keys"),
             "connected_clients": info.get("connected_clients"), "blocked_clients": info.get("blocked_clients"),
             "info_error": info_result.get("msg") if info_result.get("failed") else None}
    if not reachable:
        findings.append(_finding(
            "REDIS_UNREACHABLE", "high",
            "Redis at %s does not answer: the API cannot use its cache (%s)" % (
                endpoint, "; ".join(ping.get("error_samples") or []) or facts["info_error"] or "no answer"),
            "redis", ping.get("error_samples") or [], "restart Redis (platform_down.yml) and check its network policy"))
        return {"facts": facts, "findings": findings}
    if ping_p95 is not None and ping_p95 > ping_ms:
        findings.append(_finding(
            "REDIS_SLOW", "medium", "Redis answers PING slowly: p95 %.1f ms (threshold %g ms)" % (ping_p95, ping_ms),
            "redis", ["PING round trip: %s" % ping.get("roundtrip_ms")],
            "look for slow commands (SLOWLOG GET) and CPU/memory pressure on Redis"))
    used, maxmem = info.get("used_memory"), info.get("maxmemory")
    if used is not None and maxmem:
        facts["memory_percent"] = _pct(used, maxmem)
        if facts["memory_percent"] >= memory_percent:
            findings.append(_finding(
                "REDIS_MEMORY_HIGH", "medium",
                "Redis uses %.0f%% of its maxmemory (%s of %s bytes): keys are evicted, the hit ratio drops"
                % (facts["memory_percent"], used, maxmem), "redis",
                ["used_memory %s, maxmemory %s, evicted_keys %s" % (used, maxmem, info.get("evicted_keys"))],
                "raise Redis' memory limit and maxmemory, or shorten cache expiry"))
    hits, misses = info.get("keyspace_hits"), info.get("keyspace_misses")
    if hits is not None and misses is not None:
        lookups = hits + misses
        facts["hit_ratio"] = round(hits / float(lookups), 4) if lookups else None
        facts["lookups"] = lookups
        if lookups >= min_lookups and facts["hit_ratio"] < hit_ratio:
            findings.append(_finding(
                "REDIS_LOW_HIT_RATIO", "low",
                "Redis serves only %.0f%% of lookups from the cache (%d hits, %d misses; threshold %.0f%%)"
                % (facts["hit_ratio"] * 100, hits, misses, hit_ratio * 100), "redis",
                ["keyspace_hits %d, keyspace_misses %d" % (hits, misses)],
                "cache the frequently read data and review expiry policies (guide: Add Redis Caching)"))
    return {"facts": facts, "findings": findings}


# ------------------------------------------------------------------------------------ slow query log

def slow_query_log_state(settings_row=None, privilege_row=None, error=None):
    """{enabled, value_ms, source, can_change, why_not} from the setting and the admin role's privileges."""
    row = settings_row or {}
    if error or not row:
        return {"known": False, "enabled": None, "value_ms": None, "source": None, "can_change": False,
                "why_not": error or "the setting could not be read"}
    value = int(row.get("setting"))
    privileged = bool(row.get("superuser")) or bool((privilege_row or {}).get("can_alter_system"))
    can_reload = bool(row.get("superuser")) or bool(row.get("can_reload"))
    why = None
    if not privileged:
        why = ("role %s may not ALTER SYSTEM SET log_min_duration_statement (needs superuser or, on PostgreSQL 15+, "
               "GRANT ALTER SYSTEM ON PARAMETER log_min_duration_statement)" % row.get("role"))
    elif not can_reload:
        why = "role %s may not run pg_reload_conf() (GRANT EXECUTE ON FUNCTION pg_reload_conf())" % row.get("role")
    return {"known": True, "enabled": value >= 0, "value_ms": value, "source": row.get("source"),
            "can_change": why is None, "why_not": why, "role": row.get("role")}


# ------------------------------------------------------------------------------------ the diagnosis

def slow_api_diagnosis(api, backend, database, redis, slow_log, health_path="/health", component="backend",
                       handover_db=HANDOVER_DB):
    """Findings and cause of the API's slowness from the parts' results.

    api: api_latency_result. backend: slow_api_backend. database: saasodoo_pg_health's result. redis: slow_api_redis.
    slow_log: slow_query_log_state.
    """
    findings = list(api.get("findings") or [])
    slow_paths = list(api.get("slow_paths") or [])
    db_findings = [dict(f, component=f.get("component") or "postgres") for f in (database or {}).get("findings") or []]
    findings.extend(db_findings)
    findings.extend((redis or {}).get("findings") or [])
    ref = backend.get("ref")

    # The backend's own state.
    if not backend.get("exists"):
        findings.append(_finding("BACKEND_MISSING", "critical", "The backend workload does not exist", component,
                                 [], "platform_down.yml"))
    elif backend.get("unavailable"):
        findings.append(_finding(
            "BACKEND_REPLICAS_UNAVAILABLE", "high",
            "%s has %d of %d replicas ready: fewer pods carry the load" % (ref, backend["ready_replicas"],
                                                                           backend["replicas"]),
            component, ["%s: %s" % (p["name"], ", ".join(p["reasons"]) or "ready") for p in backend["pods"]],
            "platform_down.yml (restart or scale back the unhealthy backend)", ref))
    if backend.get("restarting_pods"):
        findings.append(_finding(
            "BACKEND_POD_RESTARTS", "medium",
            "Backend pods restart repeatedly (%s): requests fail or wait while they come back"
            % ", ".join(backend["restarting_pods"]), component,
            ["%s: %d restart(s) %s" % (p["name"], p["restarts"], ", ".join(p["reasons"])) for p in backend["pods"]
             if p["name"] in backend["restarting_pods"]], "backend_crashloop.yml", ref))
    if backend.get("exists") and backend.get("containers_without_cpu_request"):
        findings.append(_finding(
            "BACKEND_NO_CPU_REQUEST", "low",
            "Backend containers without a CPU request (%s): the scheduler cannot reserve CPU and an autoscaler "
            "cannot measure utilisation" % ", ".join(backend["containers_without_cpu_request"]), component,
            [str(c) for c in backend["containers"]], "scale_backend (resources mode)", ref))
    if slow_log.get("known") and not slow_log.get("enabled"):
        findings.append(_finding(
            "SLOW_QUERY_LOG_DISABLED", "low",
            "PostgreSQL does not log slow statements (log_min_duration_statement = %s): slow queries leave no trace"
            % slow_log.get("value_ms"), "postgres",
            ["log_min_duration_statement = %s (source: %s)" % (slow_log.get("value_ms"), slow_log.get("source"))]
            + (["cannot change it: %s" % slow_log["why_not"]] if slow_log.get("why_not") else []),
            "enable it with ALTER SYSTEM (community.postgresql.postgresql_set) and reload"))

    # The cause of slow paths.
    db_cause = [f for f in db_findings if f["code"] in DB_CAUSE_CODES]
    cache_cause = [f for f in (redis or {}).get("findings") or [] if f["code"] in CACHE_CAUSE_CODES]
    paths = api.get("paths") or []
    all_slow = bool(paths) and all(p["slow"] for p in paths)
    signals = []
    if health_path in slow_paths:
        signals.append("the health path %s, which does no database work, is slow too" % health_path)
    if all_slow and len(paths) > 1:
        signals.append("every probed path is slow (%s)" % ", ".join(p["path"] for p in paths))
    if backend.get("saturated_pods"):
        signals.append("pods at or over %s%% of their CPU limit: %s" % (
            backend.get("cpu_saturation_percent"), ", ".join(
                "%s %s%%" % (p["name"], p["cpu_percent_of_limit"]) for p in backend["pods"]
                if p["name"] in backend["saturated_pods"])))
    if backend.get("hpa_at_max"):
        signals.append("the autoscaler %s is at its maximum of %s replicas" % (backend["hpa"]["name"],
                                                                             backend["hpa"]["max"]))
    cause = None
    saturated = False
    if slow_paths:
        where = ", ".join(slow_paths)
        if db_cause:
            cause = "database"
            lock = next((f for f in db_cause if f["code"] == "PG_BLOCKING_LOCKS"), None)
            detail = lock["message"] if lock else db_cause[0]["message"]
            findings.append(_finding(
                "API_SLOW_CAUSE_DATABASE", "high",
                "API path(s) %s are slow because of the database: %s" % (where, detail), "postgres",
                [f["code"] + ": " + f["message"] for f in db_cause],
                "%s (this runbook does not terminate sessions or tune the database)" % handover_db))
        elif cache_cause:
            cause = "cache"
            findings.append(_finding(
                "API_SLOW_CAUSE_CACHE", "high",
                "API path(s) %s are slow and the cache is: %s" % (where, cache_cause[0]["message"]), "redis",
                [f["message"] for f in cache_cause], "restore Redis (platform_down.yml)"))
        elif signals and backend.get("exists") and not backend.get("unavailable"):
            cause = "backend_saturation"
            saturated = True
            findings.append(_finding(
                "BACKEND_SATURATED", "high",
                "The backend is saturated: %s; the database and the cache show no cause" % "; ".join(signals),
                component, signals + ["replicas %d (ready %d)%s" % (
                    backend["replicas"], backend["ready_replicas"],
                    "" if backend.get("metrics_available") else "; CPU usage unknown: %s" % (
                        backend.get("metrics_error") or "metrics API not served"))],
                "scale the backend (scale_backend) and enable horizontal pod autoscaling", ref))
        elif backend.get("unavailable") or not backend.get("exists"):
            cause = "backend_unavailable"
        else:
            cause = "undetermined"
            findings.append(_finding(
                "API_SLOW_CAUSE_UNDETERMINED", "medium",
                "API path(s) %s are slow while the other paths, the database and the cache are fine: the handler "
                "itself is slow (code, an external call); scaling would not help" % where, component,
                ["fast paths: %s" % (", ".join(p["path"] for p in paths if not p["slow"]) or "none")]
                + ["CPU usage: %s" % ("known, no pod saturated" if backend.get("metrics_available")
                                      else "unknown (%s)" % (backend.get("metrics_error") or "no metrics API"))],
                "hand the measurements to the backend developers; the slow query log helps if it is SQL"))
    return {"findings": findings, "cause": cause, "saturated": saturated, "signals": signals,
            "slow_paths": slow_paths, "healthy": not [f for f in findings if f["severity"] != "low"]}


def slow_api_handover(findings, handover_db=HANDOVER_DB):
    """Lines for the report's handed_over: what this runbook leaves to another runbook or a human."""
    out = []
    for f in findings or []:
        code = f.get("code")
        if code == "PG_BLOCKING_LOCKS":
            ev = f.get("evidence") or {}
            out.append("blocking session %s (%s) -> %s (terminate after review, lock_timeout)"
                       % (ev.get("blocker_pid"), ev.get("blocker_application") or "-", handover_db))
        elif code in DB_CAUSE_CODES or code in DB_HANDOVER_CODES:
            out.append("%s: %s -> %s" % (code, f.get("message"), handover_db))
        elif code == "BACKEND_POD_RESTARTS":
            out.append("%s -> backend_crashloop.yml" % f.get("message"))
        elif code in ("BACKEND_REPLICAS_UNAVAILABLE", "BACKEND_MISSING", "REDIS_UNREACHABLE"):
            out.append("%s -> platform_down.yml" % f.get("message"))
        elif code == "API_SLOW_CAUSE_UNDETERMINED":
            out.append("%s -> backend developers (with the measurements)" % f.get("message"))
    return out


class FilterModule:
    def filters(self):
        return {
            "slow_api_backend": slow_api_backend,
            "slow_api_redis": slow_api_redis,
            "slow_api_slow_query_log": slow_query_log_state,
            "slow_api_diagnosis": slow_api_diagnosis,
            "slow_api_handover": slow_api_handover,
        }
