"""performance_check.yml's checklist: each item of the guide's Performance Check judged pass, fail or unknown,
with its evidence. Pure functions over what the api_latency role, saasodoo_snapshot, kubernetes.core.k8s_info,
saasodoo_pg_health and saasodoo_tcp_probe return; unit-tested in tests/unit/test_performance_check_filter.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlsplit

DOCUMENTATION = """
name: performance_check
short_description: Checklist items of the performance_check runbook
description:
  - C(perf_api_item) - API response times under the threshold (from the api_latency role's result).
  - C(perf_node_items) - CPU and memory of every node under the threshold - utilisation from the metrics API when
    it is served, otherwise allocation (the sum of the pods' requests over the allocatable), labelled as such.
  - C(perf_db_item) - mean statement times of pg_stat_statements under the threshold.
  - C(perf_quota_item) - no ResourceQuota of a tenant namespace at or over its hard limit.
  - C(perf_network_item) - TCP connect time to the platform's endpoints and data services under the threshold.
  - C(perf_checklist) - the items' findings and the pass/fail/unknown counts.
"""

_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_health", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_k8s_health.py")
k8s_health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s_health)
dig = k8s_health.dig
parse_quantity = k8s_health.parse_quantity


def _item(key, title, status, evidence, threshold, source=None, findings=None, measurements=None):
    return {"item": key, "title": title, "status": status, "evidence": evidence, "threshold": threshold,
            "source": source, "findings": findings or [], "measurements": measurements}


def _finding(code, severity, message, evidence=None, component=None, ref=None, tenant=None):
    out = {"code": code, "severity": severity, "message": message, "evidence": evidence or [], "component": component,
           "ref": ref}
    if tenant:
        out["tenant"] = tenant
    return out


def _fmt_ms(ms):
    return "n/a" if ms is None else "%.0f ms" % ms


# ------------------------------------------------------------------------------------ API

def perf_api_item(api, threshold_ms):
    """API response times < threshold (p95 per path, timeouts counted as the time waited)."""
    paths = api.get("paths") or []
    if not paths:
        return _item("api_response_times", "API response times < %g s" % (threshold_ms / 1000.0), "unknown",
                     ["no API path was measured"], "p95 < %s" % _fmt_ms(threshold_ms))
    evidence = ["%s: p50 %s, p95 %s, p99 %s, %s" % (
        p["path"], _fmt_ms(p["latency_ms"]["p50"]), _fmt_ms(p["latency_ms"]["p95"]), _fmt_ms(p["latency_ms"]["p99"]),
        ", ".join("%s x%d" % kv for kv in sorted(p["statuses"].items())) or "no answer") for p in paths]
    findings = []
    slow = [p for p in paths if p["slow"]]
    failing = [p for p in paths if p["errors"]]
    if slow:
        findings.append(_finding(
            "PERF_API_SLOW", "high" if any(p.get("very_slow") for p in slow) else "medium",
            "API response times over %s: %s" % (_fmt_ms(threshold_ms), ", ".join(
                "%s p95 %s" % (p["path"], _fmt_ms(p["latency_ms"]["p95"])) for p in slow)),
            [e for e in evidence if any(e.startswith(p["path"] + ":") for p in slow)], "backend",
            ", ".join(p["path"] for p in slow)))
    if failing:
        findings.append(_finding(
            "PERF_API_ERRORS", "high", "API paths answer with errors: %s" % ", ".join(
                "%s (%.0f%% bad)" % (p["path"], p["error_share"] * 100) for p in failing),
            [e for e in evidence if any(e.startswith(p["path"] + ":") for p in failing)], "backend",
            ", ".join(p["path"] for p in failing)))
    return _item("api_response_times", "API response times < %g s" % (threshold_ms / 1000.0),
                 "fail" if findings else "pass", evidence, "p95 < %s per path" % _fmt_ms(threshold_ms),
                 "saasodoo_http_probe", findings,
                 [{"path": p["path"], "latency_ms": p["latency_ms"], "statuses": p["statuses"]} for p in paths])


# ------------------------------------------------------------------------------------ nodes

def perf_node_items(nodes, node_metrics=None, cpu_percent=80.0, memory_percent=80.0):
    """CPU and memory items for every node.

    nodes: saasodoo_snapshot's node reports (allocatable, requested, requested_percent, ready). node_metrics:
    NodeMetrics items of metrics.k8s.io, or None when the API is not served (then allocation is judged).
    """
    usage = {}
    if node_metrics is not None:
        for m in node_metrics:
            usage[dig(m, "metadata", "name")] = {"cpu": parse_quantity(dig(m, "usage", "cpu")) or 0.0,
                                                 "memory": parse_quantity(dig(m, "usage", "memory")) or 0.0}
    utilisation = node_metrics is not None
    source = ("utilisation: metrics.k8s.io NodeMetrics usage / allocatable" if utilisation else
              "allocation, not utilisation: sum of the pods' requests / allocatable (no metrics API is served)")
    items = []
    for what, threshold, unit_key, scale in (("cpu", cpu_percent, "cpu_millicores", 1000.0),
                                             ("memory", memory_percent, "memory_bytes", 1.0)):
        evidence, findings, measurements, unknown = [], [], [], []
        for n in nodes or []:
            alloc = (n.get("allocatable") or {}).get(unit_key)
            if utilisation:
                if n["name"] not in usage or not alloc:
                    unknown.append(n["name"])
                    continue
                percent = round(100.0 * usage[n["name"]][what] * scale / alloc, 1)
                used_text = ("%.0fm" % (usage[n["name"]][what] * 1000) if what == "cpu"
                             else "%.0fMi" % (usage[n["name"]][what] / 2 ** 20))
            else:
                percent = (n.get("requested_percent") or {}).get(what)
                if percent is None:
                    unknown.append(n["name"])
                    continue
                req = (n.get("requested") or {}).get(unit_key) or 0
                used_text = "%dm requested" % req if what == "cpu" else "%.0fMi requested" % (req / 2 ** 20)
            alloc_text = "%dm" % alloc if what == "cpu" else "%.0fMi" % (alloc / 2 ** 20)
            evidence.append("%s: %s%% (%s of %s)" % (n["name"], percent, used_text, alloc_text))
            measurements.append({"node": n["name"], "percent": percent})
            if percent >= threshold:
                findings.append(_finding(
                    "PERF_NODE_%s_HIGH" % what.upper(), "medium",
                    "Node %s %s is at %s%% %s (threshold %g%%)" % (
                        n["name"], what.upper() if what == "cpu" else what, percent,
                        "utilisation" if utilisation else "allocation (pod requests)", threshold),
                    [evidence[-1], source], None, "Node/%s" % n["name"]))
        if not nodes:
            status = "unknown"
            evidence = ["no node was reported"]
        elif findings:
            status = "fail"
        elif unknown and len(unknown) == len(nodes):
            status = "unknown"
        else:
            status = "pass"
        if unknown:
            evidence.append("no figures for: %s" % ", ".join(unknown))
        items.append(_item("node_%s" % what, "%s usage < %g%% on all nodes" % ("CPU" if what == "cpu" else "Memory",
                                                                            threshold),
                           status, evidence, "< %g%% of allocatable" % threshold, source, findings, measurements))
    return items


# ------------------------------------------------------------------------------------ database

def perf_db_item(db, threshold_ms):
    """Database query times reasonable: no pg_stat_statements entry with a mean time at or over the threshold."""
    db = db or {}
    title = "Database query times reasonable"
    if not db.get("connected"):
        msgs = [f["message"] for f in db.get("findings") or []]
        return _item("db_query_times", title, "unknown", msgs or ["PostgreSQL could not be examined"],
                     "mean < %s" % _fmt_ms(threshold_ms), "saasodoo_pg_health")
    info = db.get("pg_stat_statements") or {}
    if not info.get("installed"):
        return _item("db_query_times", title, "unknown",
                     ["pg_stat_statements is not usable: %s" % (info.get("reason") or "not installed")],
                     "mean < %s" % _fmt_ms(threshold_ms), "pg_stat_statements")
    slow = db.get("slow_statements") or []
    evidence = ["%s: mean %.1f ms, max %.1f ms over %s call(s): %s" % (
        s.get("user"), s.get("mean_ms") or 0, s.get("max_ms") or 0, s.get("calls"), (s.get("query") or "")[:120])
        for s in slow[:5]]
    findings = []
    if slow:
        findings.append(_finding(
            "PERF_DB_QUERIES_SLOW", "medium",
            "%d statement(s) take %s or more on average (slowest %.0f ms)" % (
                len(slow), _fmt_ms(threshold_ms), max(s.get("mean_ms") or 0 for s in slow)),
            evidence, "postgres"))
    return _item("db_query_times", title, "fail" if slow else "pass",
                 evidence or ["no statement of pg_stat_statements has a mean time of %s or more" % _fmt_ms(threshold_ms)],
                 "mean < %s" % _fmt_ms(threshold_ms), "pg_stat_statements", findings,
                 [{"query": (s.get("query") or "")[:200], "mean_ms": s.get("mean_ms"), "calls": s.get("calls")}
                  for s in slow])


# ------------------------------------------------------------------------------------ quotas

def _quota_value(resource, value):
    if value is None:
        return None
    try:
        return parse_quantity(value)
    except ValueError:
        return None


def perf_quota_item(quotas, tenant_namespaces, warn_percent=90.0, tenant_prefix=""):
    """No resource quota violations in tenant namespaces: every resource's used below its hard limit."""
    tenant_ns = set(tenant_namespaces or [])
    watched = [q for q in quotas or [] if dig(q, "metadata", "namespace") in tenant_ns]
    evidence, at_limit, near, unknown, measurements = [], [], [], [], []
    for q in watched:
        ns = dig(q, "metadata", "namespace")
        ref = "ResourceQuota/%s/%s" % (ns, dig(q, "metadata", "name"))
        hard = dig(q, "status", "hard", default=None)
        used = dig(q, "status", "used", default=None)
        if hard is None or used is None:
            unknown.append(ref)
            continue
        for resource in sorted(hard):
            h = _quota_value(resource, hard[resource])
            u = _quota_value(resource, used.get(resource))
            if h is None or u is None:
                continue
            percent = round(100.0 * u / h, 1) if h else (100.0 if u else 0.0)
            measurements.append({"quota": ref, "resource": resource, "used": used.get(resource),
                                 "hard": hard[resource], "percent": percent})
            line = "%s %s: %s of %s (%s%%)" % (ref, resource, used.get(resource), hard[resource], percent)
            if percent >= 100:
                at_limit.append((ns, ref, resource, line))
            elif percent >= warn_percent:
                near.append((ns, ref, resource, line))
    evidence = [m[3] for m in at_limit + near]
    findings = []
    tenants_at_limit = sorted({ns for ns, _, _, _ in at_limit})
    for ns in tenants_at_limit:
        lines = [m[3] for m in at_limit if m[0] == ns]
        tenant = ns[len(tenant_prefix):] if tenant_prefix and ns.startswith(tenant_prefix) else ns
        findings.append(_finding(
            "PERF_QUOTA_AT_LIMIT", "high" if len(tenants_at_limit) > 1 else "medium",
            "Tenant namespace %s is at its resource quota (%s): new pods are refused" % (
                ns, ", ".join(m[2] for m in at_limit if m[0] == ns)), lines, None,
            next(m[1] for m in at_limit if m[0] == ns), tenant))
    for ns in sorted({m[0] for m in near} - set(tenants_at_limit)):
        findings.append(_finding(
            "PERF_QUOTA_NEAR_LIMIT", "low", "Tenant namespace %s uses %g%% or more of a quota" % (ns, warn_percent),
            [m[3] for m in near if m[0] == ns], None, next(m[1] for m in near if m[0] == ns)))
    if unknown:
        evidence.append("quota status not computed yet: %s" % ", ".join(unknown))
    if not watched:
        status, evidence = "pass", ["no ResourceQuota in the %d tenant namespace(s)" % len(tenant_ns)]
    elif at_limit:
        status = "fail"
    elif unknown and len(unknown) == len(watched):
        status = "unknown"
    else:
        status = "pass"
        evidence = evidence or ["%d quota(s) in %d tenant namespace(s), all below %g%%" % (
            len(watched), len(tenant_ns), warn_percent)]
    return _item("resource_quotas", "No resource quota violations", status, evidence,
                 "used < hard for every resource", "ResourceQuota status (kube-controller-manager)", findings,
                 measurements)


# ------------------------------------------------------------------------------------ network

def perf_network_item(results, threshold_ms):
    """Network latency acceptable: TCP connect p95 to each target under the threshold, every target reachable."""
    evidence, findings, measurements = [], [], []
    slow, unreachable = [], []
    for r in results or []:
        if r.get("skipped"):
            continue
        target = r.get("item") or {}
        name = "%s (%s:%s)" % (target.get("name"), r.get("host"), r.get("port"))
        p95 = dig(r, "connect_ms", "p95")
        measurements.append({"target": target.get("name"), "host": r.get("host"), "port": r.get("port"),
                             "connect_ms": r.get("connect_ms"), "failures": r.get("failures")})
        if not r.get("succeeded"):
            unreachable.append(name)
            evidence.append("%s: unreachable (%s)" % (name, "; ".join(r.get("error_samples") or [])[:150]))
            continue
        evidence.append("%s: connect p50 %s, p95 %s%s" % (name, _fmt_ms(dig(r, "connect_ms", "p50")), _fmt_ms(p95),
                                                          ", %d failed" % r["failures"] if r.get("failures") else ""))
        if p95 is not None and p95 > threshold_ms:
            slow.append(name)
    if slow:
        findings.append(_finding("PERF_NETWORK_LATENCY_HIGH", "medium",
                                 "TCP connect time over %s to: %s" % (_fmt_ms(threshold_ms), ", ".join(slow)),
                                 [e for e in evidence if e.split(":")[0] in slow]))
    if unreachable:
        findings.append(_finding("PERF_NETWORK_UNREACHABLE", "high",
                                 "Not reachable over TCP: %s" % ", ".join(unreachable),
                                 [e for e in evidence if "unreachable" in e]))
    status = "unknown" if not measurements else ("fail" if findings else "pass")
    return _item("network_latency", "Network latency acceptable", status, evidence or ["no target probed"],
                 "TCP connect p95 < %s" % _fmt_ms(threshold_ms), "saasodoo_tcp_probe", findings, measurements)


def perf_url_targets(urls, names=None):
    """[{name, host, port}] of URLs (the scheme's default port when the URL has none), for saasodoo_tcp_probe."""
    out = []
    names = list(names or [])
    for n, url in enumerate(urls or []):
        parts = urlsplit(url)
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
        out.append({"name": names[n] if n < len(names) else parts.hostname, "host": parts.hostname, "port": port})
    return out


# ------------------------------------------------------------------------------------ checklist

def perf_checklist(items):
    """{checklist (items without their findings), findings (failed items' findings and one per unknown item),
    counts}."""
    findings = []
    checklist = []
    for item in items or []:
        findings.extend(item["findings"])
        if item["status"] == "unknown":
            findings.append(_finding("PERF_CHECK_UNKNOWN", "low", "Could not judge: %s (%s)" % (
                item["title"], "; ".join(item["evidence"][:2])), item["evidence"][:3], None, item["item"]))
        checklist.append({k: v for k, v in item.items() if k != "findings"})
    counts = {s: sum(1 for i in checklist if i["status"] == s) for s in ("pass", "fail", "unknown")}
    return {"checklist": checklist, "findings": findings, "counts": counts,
            "lines": ["[%s] %s: %s" % (i["status"].upper(), i["title"], (i["evidence"] or [""])[0]) for i in checklist]}


class FilterModule:
    def filters(self):
        return {
            "perf_api_item": perf_api_item,
            "perf_node_items": perf_node_items,
            "perf_db_item": perf_db_item,
            "perf_quota_item": perf_quota_item,
            "perf_network_item": perf_network_item,
            "perf_checklist": perf_checklist,
            "perf_url_targets": perf_url_targets,
        }
