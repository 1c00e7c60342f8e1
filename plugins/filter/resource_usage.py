"""Filters of the resource_usage runbook (guide: Diagnostic Tools > Performance Analysis > Resource Usage Script).

Pure functions over what kubernetes.core.k8s_info, ansible.builtin.uri (Prometheus' HTTP API),
saasodoo_snapshot and community.postgresql.postgresql_info return, unit-tested without a cluster
(tests/unit/test_resource_usage_filter.py).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

DOCUMENTATION = """
name: resource_usage
short_description: Judgements of the resource_usage runbook
description:
  - C(prometheus_vector) turns a Prometheus instant query answer into {label value(s): number}.
  - C(metrics_api_usage) turns metrics.k8s.io NodeMetrics or PodMetrics into the same shape.
  - C(node_utilisation) and C(utilisation_findings) judge node CPU and memory against thresholds, from
    measured usage or, when none is served, from requests (allocation, clearly labelled as such).
  - C(pod_utilisation) ranks pods by usage and flags memory near the limit.
  - C(quota_usage) compares every ResourceQuota's status.used with its hard limits.
  - C(netpol_coverage) lists namespaces that run pods without any NetworkPolicy.
  - C(database_storage) compares the database's size with its volume's capacity.
  - C(summary) prints the measurements as lines.
  - C(pvc_rows) lists the PersistentVolumeClaims; C(label_map) maps objects' names to a label's value.
"""

_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_health", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_k8s_health.py")
k8s_health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s_health)
parse_quantity = k8s_health.parse_quantity

GIB = 2.0 ** 30


def _finding(code, severity, message, evidence=None, ref=None, tenant=None, component=None):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence or [],
            "ref": ref, "tenant": tenant, "component": component}


def _pct(used, total):
    if not total:
        return None
    return round(100.0 * used / total, 1)


def _q(value):
    try:
        return parse_quantity(value) or 0.0
    except ValueError:
        return 0.0


def prometheus_vector(answer, labels):
    """{"a" or "a/b": float} from a uri answer of /api/v1/query (a vector); None when it failed.

    `labels` is one label name or a list of them; the key joins their values with '/'.
    """
    if isinstance(labels, str):
        labels = [labels]
    data = (answer or {}).get("json") or {}
    if (answer or {}).get("status") != 200 or data.get("status") != "success":
        return None
    result = {}
    for sample in (data.get("data") or {}).get("result") or []:
        metric = sample.get("metric") or {}
        if not all(metric.get(label) for label in labels):
            continue
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        result["/".join(metric[label] for label in labels)] = value
    return result


def metrics_api_usage(items, kind="node"):
    """From metrics.k8s.io NodeMetrics (kind node) or PodMetrics (kind pod):
    {"cpu": {key: cores}, "memory": {key: bytes}}, key node name or namespace/pod."""
    cpu, memory = {}, {}
    for item in items or []:
        meta = item.get("metadata") or {}
        key = meta.get("name") if kind == "node" else f"{meta.get('namespace')}/{meta.get('name')}"
        if kind == "node":
            usage = [item.get("usage") or {}]
        else:
            usage = [c.get("usage") or {} for c in item.get("containers") or []]
        cpu[key] = sum(_q(u.get("cpu")) for u in usage)
        memory[key] = sum(_q(u.get("memory")) for u in usage)
    return {"cpu": cpu, "memory": memory}


def node_utilisation(snapshot_nodes, cpu=None, memory=None, source="allocation"):
    """Per node: allocatable, usage (from `cpu`/`memory` {node: cores/bytes}) or requests, and percentages.

    With source 'allocation' the percentages are requests over allocatable (NOT utilisation).
    """
    rows = []
    for node in snapshot_nodes or []:
        name = node.get("name")
        alloc = node.get("allocatable") or {}
        alloc_cpu = (alloc.get("cpu_millicores") or 0) / 1000.0
        alloc_mem = alloc.get("memory_bytes") or 0
        requested = node.get("requested") or {}
        row = {"name": name, "ready": node.get("ready"), "source": source,
               "allocatable": {"cpu_cores": alloc_cpu, "memory_bytes": alloc_mem},
               "requested_percent": {"cpu": _pct((requested.get("cpu_millicores") or 0) / 1000.0, alloc_cpu),
                                     "memory": _pct(requested.get("memory_bytes") or 0, alloc_mem)}}
        if source == "allocation":
            row["cpu_percent"] = row["requested_percent"]["cpu"]
            row["memory_percent"] = row["requested_percent"]["memory"]
        else:
            used_cpu = (cpu or {}).get(name)
            used_mem = (memory or {}).get(name)
            row["usage"] = {"cpu_cores": None if used_cpu is None else round(used_cpu, 3),
                            "memory_bytes": None if used_mem is None else int(used_mem)}
            row["cpu_percent"] = None if used_cpu is None else _pct(used_cpu, alloc_cpu)
            row["memory_percent"] = None if used_mem is None else _pct(used_mem, alloc_mem)
        rows.append(row)
    return rows


def utilisation_findings(rows, cpu_threshold, memory_threshold):
    """NODE_CPU_HIGH / NODE_MEMORY_HIGH from measured usage; NODE_CPU_ALLOCATION_HIGH /
    NODE_MEMORY_ALLOCATION_HIGH from requests (allocation, not utilisation); NODE_USAGE_UNKNOWN
    when a source serves nothing for a Ready node."""
    findings = []
    for row in rows or []:
        name, source = row["name"], row["source"]
        allocation = source == "allocation"
        for what, key, threshold in (("CPU", "cpu_percent", cpu_threshold), ("MEMORY", "memory_percent", memory_threshold)):
            value = row.get(key)
            if value is None:
                continue
            if value >= float(threshold):
                if allocation:
                    findings.append(_finding(
                        f"NODE_{what}_ALLOCATION_HIGH", "medium",
                        f"Node {name}: pods request {value}% of its allocatable {what.lower()} "
                        f"(allocation, not utilisation; threshold {threshold}%).",
                        [f"requests {value}% of allocatable {what.lower()} (no usage metrics served)"], ref=f"Node/{name}"))
                else:
                    used = row["usage"]["cpu_cores" if what == "CPU" else "memory_bytes"]
                    total = row["allocatable"]["cpu_cores" if what == "CPU" else "memory_bytes"]
                    shown = (f"{used} of {total} cores" if what == "CPU"
                             else f"{used / GIB:.2f} GiB of {total / GIB:.2f} GiB")
                    findings.append(_finding(
                        f"NODE_{what}_HIGH", "medium",
                        f"Node {name} uses {value}% of its {what.lower()} (threshold {threshold}%).",
                        [f"{what.lower()} usage {shown} ({source})"], ref=f"Node/{name}"))
        if not allocation and row.get("ready") and row.get("cpu_percent") is None and row.get("memory_percent") is None:
            findings.append(_finding(
                "NODE_USAGE_UNKNOWN", "low", f"Node {name} is Ready but {source} serves no usage for it.",
                [f"source: {source}"], ref=f"Node/{name}"))
    return findings


def pod_utilisation(pods, cpu=None, memory=None, top=10, memory_threshold=90):
    """(rows, findings): the `top` pods by CPU then memory usage, and POD_MEMORY_NEAR_LIMIT for pods whose
    memory usage reaches `memory_threshold`% of their memory limit (the kernel OOM-kills at 100%)."""
    rows, findings = [], []
    for pod in pods or []:
        meta = pod.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if key not in (cpu or {}) and key not in (memory or {}):
            continue
        containers = (pod.get("spec") or {}).get("containers") or []
        limits = [((c.get("resources") or {}).get("limits") or {}).get("memory") for c in containers]
        limit = sum(_q(x) for x in limits) if limits and all(limits) else None
        used_mem = (memory or {}).get(key)
        row = {"pod": key, "node": (pod.get("spec") or {}).get("nodeName"),
               "cpu_cores": None if (cpu or {}).get(key) is None else round(cpu[key], 3),
               "memory_bytes": None if used_mem is None else int(used_mem),
               "memory_limit_bytes": None if limit is None else int(limit),
               "memory_percent_of_limit": None if (limit is None or used_mem is None) else _pct(used_mem, limit)}
        rows.append(row)
        pct = row["memory_percent_of_limit"]
        if pct is not None and pct >= float(memory_threshold):
            findings.append(_finding(
                "POD_MEMORY_NEAR_LIMIT", "medium",
                f"Pod {key} uses {pct}% of its memory limit: it will be OOM-killed at 100%.",
                [f"memory {used_mem / GIB:.2f} GiB of a {limit / GIB:.2f} GiB limit"], ref=f"Pod/{key}"))
    rows.sort(key=lambda r: (-(r["cpu_cores"] or 0), -(r["memory_bytes"] or 0), r["pod"]))
    return {"top": rows[: int(top)], "findings": findings}


def quota_usage(quotas, tenant_namespaces=None, threshold=80):
    """(rows, findings) for every ResourceQuota: per resource used, hard and percent.

    QUOTA_EXHAUSTED (high) when a resource is at or over its hard limit (the API server refuses new
    pods or claims), QUOTA_NEAR_LIMIT (medium) from `threshold`%. `tenant_namespaces` maps namespace
    -> tenant slug.
    """
    rows, findings = [], []
    tenants = tenant_namespaces or {}
    for quota in quotas or []:
        meta = quota.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        status = quota.get("status") or {}
        hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
        used = status.get("used") or {}
        resources = []
        for resource in sorted(hard):
            h, u = _q(hard[resource]), _q(used.get(resource, "0"))
            resources.append({"resource": resource, "used": str(used.get(resource, "0")), "hard": str(hard[resource]),
                              "percent": _pct(u, h) if h else (100.0 if u else 0.0)})
        row = {"ref": f"ResourceQuota/{ns}/{name}", "namespace": ns, "tenant": tenants.get(ns),
               "computed": "used" in status, "resources": resources}
        rows.append(row)
        full = [r for r in resources if r["percent"] is not None and r["percent"] >= 100.0]
        near = [r for r in resources if r["percent"] is not None and float(threshold) <= r["percent"] < 100.0]
        who = f"tenant {tenants[ns]}" if ns in tenants else f"namespace {ns}"
        if full:
            findings.append(_finding(
                "QUOTA_EXHAUSTED", "high",
                f"The quota of {who} is used up: {', '.join(r['resource'] for r in full)} (new pods or claims are refused).",
                [f"{r['resource']}: {r['used']} of {r['hard']} ({r['percent']}%)" for r in full + near],
                ref=row["ref"], tenant=tenants.get(ns)))
        elif near:
            findings.append(_finding(
                "QUOTA_NEAR_LIMIT", "medium",
                f"The quota of {who} is nearly used: {', '.join(r['resource'] for r in near)} at {threshold}% or more.",
                [f"{r['resource']}: {r['used']} of {r['hard']} ({r['percent']}%)" for r in near],
                ref=row["ref"], tenant=tenants.get(ns)))
        if not row["computed"]:
            findings.append(_finding(
                "QUOTA_NOT_COMPUTED", "low",
                f"ResourceQuota {ns}/{name} has no status.used: the quota controller has not computed it.",
                [], ref=row["ref"], tenant=tenants.get(ns)))
    return {"quotas": rows, "findings": findings}


def netpol_coverage(pods, policies, tenant_namespaces=None, exempt=None, tenant_severity="high", other_severity="low"):
    """Namespaces that run pods (not Succeeded/Failed) and have no NetworkPolicy at all.

    NAMESPACE_WITHOUT_NETWORK_POLICY, `tenant_severity` for a tenant's namespace (it is not isolated),
    `other_severity` for the others; `exempt` namespaces are not judged.
    """
    tenants = tenant_namespaces or {}
    exempt = set(exempt or [])
    with_pods = {}
    for pod in pods or []:
        meta = pod.get("metadata") or {}
        if ((pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")) or meta.get("deletionTimestamp"):
            continue
        with_pods[meta.get("namespace")] = with_pods.get(meta.get("namespace"), 0) + 1
    covered = {}
    for pol in policies or []:
        ns = (pol.get("metadata") or {}).get("namespace")
        covered.setdefault(ns, []).append((pol.get("metadata") or {}).get("name"))
    rows, findings = [], []
    for ns in sorted(with_pods):
        if ns in exempt:
            continue
        rows.append({"namespace": ns, "pods": with_pods[ns], "policies": sorted(covered.get(ns, [])),
                     "tenant": tenants.get(ns)})
        if ns not in covered:
            tenant = tenants.get(ns)
            findings.append(_finding(
                "NAMESPACE_WITHOUT_NETWORK_POLICY", tenant_severity if tenant else other_severity,
                f"Namespace {ns} runs {with_pods[ns]} pod(s) and has no NetworkPolicy"
                + (f": tenant {tenant} is not isolated." if tenant else "."),
                [f"pods: {with_pods[ns]}", "NetworkPolicies: none"], ref=f"Namespace/{ns}", tenant=tenant))
    return {"namespaces": rows, "findings": findings}


def database_storage(databases, name, pvcs, pvc_pattern, threshold=80):
    """The database's real size against the capacity of the volume that holds it.

    databases: postgresql_info's `databases`; pvcs: PersistentVolumeClaims; pvc_pattern: regex of
    the database volume's claim name. DB_SIZE_NEAR_CAPACITY (medium) from `threshold`%.
    """
    size = None
    info = (databases or {}).get(name)
    if info is not None:
        try:
            size = int(info.get("size"))
        except (TypeError, ValueError):
            size = None
    claim = next((p for p in pvcs or [] if re.search(pvc_pattern, (p.get("metadata") or {}).get("name") or "")), None)
    capacity = None
    if claim is not None:
        capacity = _q(((claim.get("status") or {}).get("capacity") or {}).get("storage")
                      or (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))
    result = {"database": name, "size_bytes": size,
              "volume": None if claim is None else f"{claim['metadata'].get('namespace')}/{claim['metadata'].get('name')}",
              "capacity_bytes": None if not capacity else int(capacity),
              "percent": None if (size is None or not capacity) else _pct(size, capacity)}
    findings = []
    if size is None:
        findings.append(_finding("DB_SIZE_UNKNOWN", "low", f"The size of database {name} could not be read.",
                                 [f"databases seen: {', '.join(sorted(databases or {})) or 'none'}"]))
    elif result["percent"] is not None and result["percent"] >= float(threshold):
        findings.append(_finding(
            "DB_SIZE_NEAR_CAPACITY", "medium",
            f"Database {name} ({size / GIB:.2f} GiB) fills {result['percent']}% of its volume {result['volume']}.",
            [f"size {size} bytes, volume capacity {int(capacity)} bytes"], ref=f"PersistentVolumeClaim/{result['volume']}"))
    return {"database": result, "findings": findings}


def label_map(objects, label):
    """{metadata.name: the value of `label`} for objects carrying that label (e.g. tenant namespaces -> slug)."""
    result = {}
    for obj in objects or []:
        meta = obj.get("metadata") or {}
        value = (meta.get("labels") or {}).get(label)
        if value is not None:
            result[meta.get("name")] = value
    return result


def pvc_rows(pvcs):
    """Every PersistentVolumeClaim: namespace/name, phase, requested and actual capacity, storage class."""
    rows = []
    for p in pvcs or []:
        meta, spec, status = p.get("metadata") or {}, p.get("spec") or {}, p.get("status") or {}
        rows.append({"pvc": f"{meta.get('namespace')}/{meta.get('name')}", "phase": status.get("phase"),
                     "requested": ((spec.get("resources") or {}).get("requests") or {}).get("storage"),
                     "capacity": (status.get("capacity") or {}).get("storage"),
                     "storage_class": spec.get("storageClassName"), "volume": spec.get("volumeName")})
    return sorted(rows, key=lambda r: r["pvc"])


def summary(analysis):
    """Human-readable lines of the measurements (source, nodes, busiest pods, quotas, database)."""
    lines = [f"Source: {analysis.get('source_note') or analysis.get('source')}"]

    def pct(value):
        return "n/a" if value is None else f"{value}%"

    for node in analysis.get("nodes") or []:
        lines.append(f"Node {node['name']}: CPU {pct(node.get('cpu_percent'))}, memory {pct(node.get('memory_percent'))}"
                     f" (requests: CPU {pct(node['requested_percent'].get('cpu'))},"
                     f" memory {pct(node['requested_percent'].get('memory'))})")
    for pod in (analysis.get("top_pods") or [])[:5]:
        mem = pod.get("memory_bytes")
        lines.append(f"Pod {pod['pod']}: CPU {pod.get('cpu_cores')} cores, memory "
                     f"{'n/a' if mem is None else f'{mem / GIB:.2f} GiB'}")
    for quota in analysis.get("quotas") or []:
        top = max(quota.get("resources") or [], key=lambda r: r.get("percent") or 0, default=None)
        if top:
            lines.append(f"Quota {quota['ref']}: highest {top['resource']} {top['used']} of {top['hard']} ({top['percent']}%)")
    db = (analysis.get("storage") or {}).get("database") or {}
    if db:
        size = db.get("size_bytes")
        lines.append(f"Database {db.get('database')}: {'n/a' if size is None else f'{size / 2 ** 20:.1f} MiB'}"
                     f" = {pct(db.get('percent'))} of volume {db.get('volume')}")
    return lines


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "prometheus_vector": prometheus_vector,
            "metrics_api_usage": metrics_api_usage,
            "node_utilisation": node_utilisation,
            "utilisation_findings": utilisation_findings,
            "pod_utilisation": pod_utilisation,
            "quota_usage": quota_usage,
            "netpol_coverage": netpol_coverage,
            "database_storage": database_storage,
            "pvc_rows": pvc_rows,
            "label_map": label_map,
            "summary": summary,
        }
