#!/usr/bin/python
# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks: one fast, read-only picture of the platform for every runbook.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_snapshot
short_description: A fast, read-only snapshot of the SaaSOdoo platform on Kubernetes
description:
  - Gathers in one task what the troubleshooting guide asks to check first (cluster node status
    and pod health across all namespaces). Nodes with their conditions, pressure and how much of
    their allocatable CPU, memory and pods is requested; pods with phase, readiness, restarts, last
    termination (reason and exit code, for example C(OOMKilled) and C(137)) and waiting reason; Deployments,
    StatefulSets and DaemonSets with their rollout state; PersistentVolumeClaims; recent Warning events.
  - Groups all of it per platform component (the inventory's C(saasodoo_components)) and per tenant
    (every namespace carrying the tenant label), and returns findings with stable codes that runbooks
    branch on, and a severity that follows the guide's escalation rules.
  - Stays fast on a large platform. It makes a fixed handful of cluster-wide list calls (nodes,
    tenant namespaces, pods, Deployments, StatefulSets, DaemonSets, PVCs, Warning events), never one
    call per namespace or tenant, paginated with O(page_size). With fewer objects per kind than
    O(page_size) that is 8 calls whatever the number of tenants; O(api_calls) in the result says how
    many were made.
  - The judgements are those of the project's diagnosis filters (C(pod_health), C(workload_health),
    C(node_health) in C(plugins/filter/saasodoo.py)), since both use C(plugins/module_utils/saasodoo_k8s_health.py);
    the finding codes they share are the same.
  - Read-only; it never changes anything, so check mode runs it as is.
  - The credentials need C(list) on those kinds cluster-wide (a ClusterRole), since lists are
    cluster-wide even when O(namespaces) restricts what is reported.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  namespaces:
    description:
      - The namespaces to report on. Empty (the default) means all namespaces.
      - Lists are still cluster-wide (one call each); other namespaces are left out of the report.
        Nodes are always reported, and their requested resources count every pod on them.
      - A component whose namespace is not watched is reported with C(watched=false) and judged not at all.
    type: list
    elements: str
    default: []
  components:
    description:
      - The platform components, as the inventory's C(saasodoo_components) defines them, keyed by role.
      - Each needs C(kind) (Deployment, StatefulSet or DaemonSet), C(name) and C(namespace); C(layer),
        C(critical) and C(replicas) (the desired count) are used when present.
      - A component's pods are those of its namespace that its workload's selector matches.
    type: dict
    default: {}
  tenant_label:
    description:
      - The label that marks a namespace as a tenant's; its value is the tenant's slug.
    type: str
    default: saasodoo.io/tenant
  events_since_minutes:
    description:
      - Warning events last seen longer ago than this many minutes are left out.
    type: int
    default: 60
  max_events:
    description:
      - At most this many Warning events (the most recent) are returned in RV(events);
        RV(events_total) counts them all.
    type: int
    default: 200
  page_size:
    description:
      - Objects per page of each list call (the API's C(limit)); more objects of a kind cost more calls.
      - C(0) disables pagination (one call per kind, however big the answer).
    type: int
    default: 500
  restart_threshold:
    description:
      - Restarts from which a pod counts as unhealthy (the inventory's C(saasodoo_thresholds.pod_restart_warning)).
    type: int
    default: 3
  multi_tenant_threshold:
    description:
      - From this many tenants down (or degraded) at once, one multi-tenant finding
        (C(TENANTS_DOWN) critical, C(TENANTS_DEGRADED) high) replaces the single-tenant one.
    type: int
    default: 2
  node_request_percent:
    description:
      - A Ready node whose requested CPU, memory or pod count reaches this percentage of its
        allocatable gets a C(NODE_REQUESTS_HIGH) finding. C(0) disables the check.
    type: int
    default: 90
  request_timeout:
    description:
      - Seconds to wait for the API server to answer each read of a list (connecting waits at most 10).
    type: int
    default: 30
extends_documentation_fragment:
  - saasodoo_k8s
attributes:
  check_mode:
    support: full
    description: Read-only; runs as is in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
requirements:
  - python >= 3.8
  - kubernetes >= 24.2.0
notes:
  - Severity follows the troubleshooting guide; critical is an outage or several tenants down,
    high one tenant down or degradation of several, medium a minor failure, low worth knowing.
  - O(healthy) is true when no finding is critical, high or medium.
"""

EXAMPLES = r"""
- name: AUDIT the platform in one snapshot
  saasodoo_snapshot:
    components: "{{ saasodoo_components }}"
    tenant_label: "{{ saasodoo_tenant_label }}"
    restart_threshold: "{{ saasodoo_thresholds.pod_restart_warning }}"
  register: __snapshot

- name: Stop when the cluster itself is broken
  ansible.builtin.assert:
    that: __snapshot.findings | selectattr('code', 'equalto', 'NODE_NOT_READY') | list | length == 0
    fail_msg: "{{ __snapshot.findings | map(attribute='message') | join('; ') }}"

- name: Only the platform namespaces, events of the last 15 minutes, with an AWX-injected token
  saasodoo_snapshot:
    namespaces: ["{{ saasodoo_platform_namespace }}", "{{ saasodoo_monitoring_namespace }}"]
    components: "{{ saasodoo_components }}"
    events_since_minutes: 15
    host: "{{ lookup('ansible.builtin.env', 'K8S_AUTH_HOST') }}"
    api_key: "{{ lookup('ansible.builtin.env', 'K8S_AUTH_API_KEY') }}"
  register: __snapshot

- name: Show the tenants that are down
  ansible.builtin.debug:
    msg: "{{ __snapshot.tenants.values() | selectattr('status', 'equalto', 'down') | map(attribute='slug') }}"
"""

RETURN = r"""
api_calls:
  description: How many requests were sent to the API server (every page of every list).
  returned: success
  type: int
  sample: 8
api_calls_by_resource:
  description: The requests per kind listed.
  returned: success
  type: dict
  sample: {"nodes": 1, "pods": 1, "deployments": 1}
duration_seconds:
  description: Time taken by the snapshot (lists and analysis), in seconds.
  returned: success
  type: float
  sample: 0.42
counts:
  description: Objects seen per kind (pods without the Succeeded ones; only tenant namespaces).
  returned: success
  type: dict
  sample: {"nodes": 3, "pods": 25, "deployments": 12, "statefulsets": 1, "daemonsets": 0,
           "pvcs": 4, "events": 3, "namespaces": 3}
nodes:
  description: One entry per node.
  returned: success
  type: list
  elements: dict
  contains:
    name: {description: Node name., type: str}
    ready: {description: Whether the Ready condition is True., type: bool}
    healthy: {description: Ready, no pressure, not cordoned., type: bool}
    reasons: {description: Why it is not healthy., type: list, elements: str}
    pressure: {description: The pressure conditions that are True., type: list, elements: str}
    unschedulable: {description: Whether the node is cordoned., type: bool}
    conditions: {description: "Condition type -> status.", type: dict}
    allocatable: {description: "cpu_millicores, memory_bytes, pods.", type: dict}
    requested: {description: "The same, summed over the requests of the node's running or pending pods.", type: dict}
    requested_percent: {description: "cpu, memory, pods: requested as a percentage of allocatable.", type: dict}
components:
  description: One entry per component of O(components), keyed like it.
  returned: success
  type: dict
  contains:
    ref: {description: "Kind/namespace/name.", type: str}
    watched: {description: Whether its namespace is watched (see O(namespaces)); if not, nothing else is judged., type: bool}
    missing: {description: Whether the workload does not exist., type: bool}
    healthy: {description: Whether the workload and its pods are healthy., type: bool}
    reasons: {description: Why it is not healthy., type: list, elements: str}
    replicas: {description: Replicas the workload asks for (DaemonSet; desired scheduled pods)., type: int}
    ready_replicas: {description: Ready replicas., type: int}
    desired_replicas: {description: Replicas the inventory asks for., type: int}
    crashloop: {description: Whether a live pod is in CrashLoopBackOff., type: bool}
    oomkilled: {description: Whether a live pod's last termination was OOMKilled., type: bool}
    rollout: {description: "complete (bool) and message, as kubectl rollout status judges.", type: dict}
    pods: {description: The component's pods (see RV(pods_unhealthy) for the fields)., type: list, elements: dict}
    warning_events: {description: Recent Warning events about the workload or its pods., type: int}
    layer: {description: The component's layer from the inventory., type: str}
    critical: {description: Whether the platform cannot run without it., type: bool}
tenants:
  description:
    - One entry per tenant namespace (a namespace carrying O(tenant_label)), keyed by the namespace's
      name; C(slug) is the label's value. Two namespaces with the same slug get a C(TENANT_LABEL_DUPLICATE) finding.
  returned: success
  type: dict
  contains:
    slug: {description: The tenant's slug (the value of O(tenant_label))., type: str}
    namespace: {description: The tenant's namespace., type: str}
    status: {description: "healthy, degraded, down (a workload has no ready replica), empty (no workload wants a pod) or terminating.", type: str}
    workloads_ready: {description: Ready replicas over all its workloads (capped at each one's desired)., type: int}
    workloads_desired: {description: Desired replicas over all its workloads., type: int}
    workloads: {description: "Per workload: ref, replicas, ready_replicas, healthy, reasons.", type: list, elements: dict}
    pods: {description: Pods in the namespace., type: int}
    pods_unhealthy: {description: "Unhealthy live pods: name and reasons.", type: list, elements: dict}
    pvcs: {description: PVCs in the namespace., type: int}
    pvcs_unbound: {description: "PVCs not Bound: name and phase.", type: list, elements: dict}
    warning_events: {description: Recent Warning events in the namespace (sum of their counts)., type: int}
summary:
  description: Headline numbers.
  returned: success
  type: dict
  sample: {"nodes": 3, "nodes_not_ready": 0, "pods": 25, "pods_unhealthy": 0, "components": 8,
           "components_unhealthy": 0, "tenants": 3, "tenants_down": 0, "tenants_degraded": 0}
pods_unhealthy:
  description: Every unhealthy live pod in the watched namespaces.
  returned: success
  type: list
  elements: dict
  contains:
    namespace: {description: Namespace., type: str}
    name: {description: Pod name., type: str}
    node: {description: The node it runs on., type: str}
    phase: {description: Pod phase., type: str}
    ready: {description: Whether the Ready condition is True., type: bool}
    restarts: {description: Restarts of all its containers., type: int}
    waiting_reason: {description: "Why a container waits (e.g. CrashLoopBackOff), if one does.", type: str}
    last_termination: {description: "container, reason (e.g. OOMKilled), exit_code (e.g. 137), finished_at.", type: dict}
    reasons: {description: Why it is unhealthy., type: list, elements: str}
    component: {description: The component it belongs to, if any., type: str}
    tenant: {description: The tenant it belongs to, if any., type: str}
events:
  description: Recent Warning events in the watched namespaces, most recent first (at most O(max_events)).
  returned: success
  type: list
  elements: dict
  contains:
    namespace: {description: Namespace., type: str}
    object: {description: "Kind/name of the object the event is about.", type: str}
    reason: {description: "Event reason (BackOff, FailedScheduling...).", type: str}
    message: {description: Event message (at most 300 characters)., type: str}
    count: {description: How many times it happened., type: int}
    last_seen: {description: When it last happened (ISO 8601)., type: str}
    component: {description: The component it is about, if any., type: str}
    tenant: {description: The tenant it is about, if any., type: str}
events_total:
  description: How many recent Warning events there are in the watched namespaces.
  returned: success
  type: int
findings:
  description:
    - What is wrong, most severe first. Each has code, severity, message, evidence (a list of
      strings), remediation, component, layer, ref and tenant (the last four may be null).
    - "Codes: NODE_NOT_READY (critical), NODE_PRESSURE (high; also a cordoned node, as the filters say),
      NODE_REQUESTS_HIGH (medium), WORKLOAD_MISSING, WORKLOAD_SCALED_TO_ZERO, WORKLOAD_OOMKILLED,
      WORKLOAD_CRASHLOOP, WORKLOAD_UNAVAILABLE (critical for a critical component, else high),
      POD_OOMKILLED and POD_CRASHLOOP (medium, per tenant), PVC_UNBOUND (high when Lost, else medium),
      TENANT_DOWN (high) or TENANTS_DOWN (critical), TENANT_DEGRADED (medium) or TENANTS_DEGRADED (high),
      TENANT_LABEL_DUPLICATE (low; one slug on several namespaces)."
  returned: success
  type: list
  elements: dict
severity:
  description: The worst severity among the findings, or C(none).
  returned: success
  type: str
  sample: critical
healthy:
  description: True when no finding is critical, high or medium.
  returned: success
  type: bool
"""

import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.saasodoo_findings import DiagnosisError, finding, sort_findings, worst_severity
from ansible.module_utils.saasodoo_k8s import (
    HAS_KUBERNETES,
    K8S_COMMON_ARGS,
    KUBERNETES_IMPORT_ERROR,
    ApiCallCounter,
    client,
    list_all,
)
from ansible.module_utils.saasodoo_k8s_health import (
    dig as _get,
    event_last_seen,
    node_health,
    parse_quantity,
    pod_health,
    pod_requests,
    selector_matches,
    workload_health,
    workload_ref,
)

try:
    from kubernetes.client import AppsV1Api, CoreV1Api
except ImportError:  # main() reports it (HAS_KUBERNETES)
    pass

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

# ------------------------------------------------------------------------ small helpers

def _percent(part, whole):
    return round(100.0 * part / whole, 1) if whole else None


def _cap(lines, limit=20):
    """At most `limit` evidence lines, then how many were left out."""
    if len(lines) <= limit:
        return list(lines)
    return list(lines[:limit]) + ["... and %d more" % (len(lines) - limit)]


def _pod_line(p):
    return "%s: %s" % (p["name"], ", ".join(p["reasons"]))


def _pod_entry(p, component=None, tenant=None):
    return {
        "namespace": p["namespace"], "name": p["name"], "node": p["node"], "phase": p["phase"],
        "ready": p["ready"], "restarts": p["restarts"], "waiting_reason": p["waiting_reason"],
        "last_termination": p["last_termination"], "healthy": p["healthy"], "terminating": p["terminating"],
        "reasons": p["reasons"], "component": component, "tenant": tenant,
    }


def _finding(code, severity, message, evidence=None, remediation=None, component=None, layer=None,
             ref=None, tenant=None, **extra):
    return finding(code, severity, message, evidence=list(evidence or []), remediation=remediation,
                   component=component, layer=layer, ref=ref, tenant=tenant, **extra)


# ------------------------------------------------------------------------ gathering

def list_calls(api_client, tenant_label):
    """The fixed set of cluster-wide list calls: (key, api call, selectors)."""
    core = CoreV1Api(api_client)
    apps = AppsV1Api(api_client)
    return [
        ("nodes", core.list_node, {}),
        ("namespaces", core.list_namespace, {"label_selector": tenant_label}),
        # Completed pods (Jobs) hold no resources and say nothing about health.
        ("pods", core.list_pod_for_all_namespaces, {"field_selector": "status.phase!=Succeeded"}),
        ("deployments", apps.list_deployment_for_all_namespaces, {}),
        ("statefulsets", apps.list_stateful_set_for_all_namespaces, {}),
        ("daemonsets", apps.list_daemon_set_for_all_namespaces, {}),
        ("pvcs", core.list_persistent_volume_claim_for_all_namespaces, {}),
        ("events", core.list_event_for_all_namespaces, {"field_selector": "type=Warning"}),
    ]


def gather(api_client, tenant_label="saasodoo.io/tenant", page_size=500, timeout=30, counter=None):
    """Every list of the snapshot, fetched in parallel: {key: [objects as dicts]}."""
    counter = counter if counter is not None else ApiCallCounter()
    calls = list_calls(api_client, tenant_label)
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [(key, pool.submit(list_all, call, counter=counter, page_size=page_size, timeout=timeout,
                                     what=key, **selectors))
                   for key, call, selectors in calls]
        # In the calls' order, so the same failure always gives the same message.
        return {key: future.result() for key, future in futures}


# ------------------------------------------------------------------------ analysis

DEFAULTS = {
    "namespaces": [],
    "components": {},
    "tenant_label": "saasodoo.io/tenant",
    "events_since_minutes": 60,
    "max_events": 200,
    "restart_threshold": 3,
    "multi_tenant_threshold": 2,
    "node_request_percent": 90,
}


def _options(params):
    opts = dict(DEFAULTS)
    opts.update({k: v for k, v in (params or {}).items() if v is not None})
    return opts


def _check_components(components):
    for key, spec in (components or {}).items():
        if not isinstance(spec, dict):
            raise DiagnosisError("component %s: expected a dict with kind, name and namespace, got %r" % (key, spec))
        lacking = [k for k in ("kind", "name", "namespace") if not spec.get(k)]
        if lacking:
            raise DiagnosisError("component %s lacks %s (see saasodoo_components in the inventory)"
                                 % (key, ", ".join(lacking)))
        if spec["kind"] not in WORKLOAD_KINDS:
            raise DiagnosisError("component %s: kind %s is not one of %s"
                                 % (key, spec["kind"], ", ".join(WORKLOAD_KINDS)))


def analyse_nodes(nodes, pods, request_percent):
    """Node reports with allocatable and requested resources, and their findings."""
    used = {}
    for pod in pods:
        node = _get(pod, "spec", "nodeName")
        if not node or _get(pod, "status", "phase") in ("Succeeded", "Failed"):
            continue
        req = pod_requests(pod)
        acc = used.setdefault(node, {"cpu": 0.0, "memory": 0.0, "pods": 0})
        acc["cpu"] += req["cpu"]
        acc["memory"] += req["memory"]
        acc["pods"] += 1
    reports, findings = [], []
    for node in sorted(nodes, key=lambda n: _get(n, "metadata", "name") or ""):
        report = node_health(node)
        alloc = _get(node, "status", "allocatable", default={}) or {}
        acc = used.get(report["name"], {"cpu": 0.0, "memory": 0.0, "pods": 0})
        allocatable = {
            "cpu_millicores": int(round((parse_quantity(alloc.get("cpu")) or 0) * 1000)),
            "memory_bytes": int(parse_quantity(alloc.get("memory")) or 0),
            "pods": int(parse_quantity(alloc.get("pods")) or 0),
        }
        requested = {"cpu_millicores": int(round(acc["cpu"] * 1000)), "memory_bytes": int(acc["memory"]),
                     "pods": acc["pods"]}
        percent = {
            "cpu": _percent(requested["cpu_millicores"], allocatable["cpu_millicores"]),
            "memory": _percent(requested["memory_bytes"], allocatable["memory_bytes"]),
            "pods": _percent(requested["pods"], allocatable["pods"]),
        }
        report.update({"allocatable": allocatable, "requested": requested, "requested_percent": percent})
        reports.append(report)
        ref = "Node/%s" % report["name"]
        if not report["healthy"]:
            evidence = list(report["reasons"])
            if not report["ready"]:
                evidence.append("%d pods are scheduled on it" % acc["pods"])
            findings.append(_finding(
                "NODE_NOT_READY" if not report["ready"] else "NODE_PRESSURE",
                "critical" if not report["ready"] else "high",
                "node %s: %s" % (report["name"], "; ".join(report["reasons"])),
                evidence, "add or repair capacity (escalate)", layer="nodes", ref=ref))
        elif request_percent:
            full = ["%s requests at %s%% of allocatable (%s of %s)" % (
                what, percent[what], requested[key], allocatable[key])
                for what, key in (("cpu", "cpu_millicores"), ("memory", "memory_bytes"), ("pods", "pods"))
                if percent[what] is not None and percent[what] >= request_percent]
            if full:
                findings.append(_finding(
                    "NODE_REQUESTS_HIGH", "medium",
                    "node %s is nearly full: %s" % (report["name"], "; ".join(full)),
                    full, "add capacity or rebalance (scale_backend, escalate)", layer="nodes", ref=ref))
    return reports, findings


def analyse(raw, params=None, now=None):
    """The snapshot's result (without api_calls and duration) from the lists gather() returns."""
    opts = _options(params)
    _check_components(opts["components"])
    now = now or datetime.now(timezone.utc)
    watched = set(opts["namespaces"] or [])

    def is_watched(ns):
        return not watched or ns in watched

    threshold = opts["restart_threshold"]
    all_pods = raw.get("pods") or []
    node_reports, findings = analyse_nodes(raw.get("nodes") or [], all_pods, opts["node_request_percent"])

    # Index everything by namespace once; no per-namespace work touches another namespace's objects.
    pods_by_ns, reports_by_uid = {}, {}
    for pod in all_pods:
        ns = _get(pod, "metadata", "namespace")
        if not is_watched(ns):
            continue
        report = pod_health(pod, threshold)
        pods_by_ns.setdefault(ns, []).append((pod, report))
    workloads = {}
    workloads_by_ns = {}
    for key in ("deployments", "statefulsets", "daemonsets"):
        for obj in raw.get(key) or []:
            ns = _get(obj, "metadata", "namespace")
            workloads[(obj.get("kind"), ns, _get(obj, "metadata", "name"))] = obj
            if is_watched(ns):
                workloads_by_ns.setdefault(ns, []).append(obj)
    pvcs_by_ns = {}
    for pvc in raw.get("pvcs") or []:
        ns = _get(pvc, "metadata", "namespace")
        if is_watched(ns):
            pvcs_by_ns.setdefault(ns, []).append(pvc)

    def selected(obj):
        ns = _get(obj, "metadata", "namespace")
        sel = _get(obj, "spec", "selector", default={})
        return [(p, r) for p, r in pods_by_ns.get(ns, []) if selector_matches(sel, _get(p, "metadata", "labels"))]

    # Tenants: namespaces carrying the tenant label (the list call selected them).
    label = opts["tenant_label"]
    tenant_of_ns = {}
    tenant_namespaces = []
    for ns_obj in sorted(raw.get("namespaces") or [], key=lambda n: _get(n, "metadata", "name") or ""):
        name = _get(ns_obj, "metadata", "name")
        slug = (_get(ns_obj, "metadata", "labels", default={}) or {}).get(label)
        if slug is None or not is_watched(name):
            continue
        tenant_of_ns[name] = slug
        tenant_namespaces.append(ns_obj)

    # Components: by kind/namespace/name, their pods by the workload's selector.
    component_of_pod = {}
    component_of_object = {}
    components = {}
    for key, spec in sorted((opts["components"] or {}).items()):
        ref = "%s/%s/%s" % (spec["kind"], spec["namespace"], spec["name"])
        layer = spec.get("layer")
        critical = bool(spec.get("critical", False))
        base = {"ref": ref, "component": key, "layer": layer, "critical": critical,
                "desired_replicas": spec.get("replicas", 1), "watched": is_watched(spec["namespace"]),
                "warning_events": 0}
        if not base["watched"]:
            base.update({"missing": None, "healthy": None, "reasons": ["namespace not watched"], "pods": []})
            components[key] = base
            continue
        obj = workloads.get((spec["kind"], spec["namespace"], spec["name"]))
        severity = "critical" if critical else "high"
        if obj is None:
            base.update({"missing": True, "healthy": False, "reasons": ["workload does not exist"], "pods": [],
                         "replicas": 0, "ready_replicas": 0, "crashloop": False, "oomkilled": False,
                         "rollout": {"complete": False, "message": "workload does not exist"}})
            components[key] = base
            findings.append(_finding("WORKLOAD_MISSING", severity, "%s: %s does not exist" % (key, ref),
                                     remediation="redeploy the component", component=key, layer=layer, ref=ref))
            continue
        own = selected(obj)
        report = workload_health(obj, [r for _p, r in own])
        component_of_object[(obj.get("kind"), spec["namespace"], spec["name"])] = key
        for _p, r in own:
            component_of_pod[(r["namespace"], r["name"])] = key
            component_of_object[("Pod", r["namespace"], r["name"])] = key
        report["pods"] = [_pod_entry(r, key, tenant_of_ns.get(r["namespace"])) for r in report["pods"]]
        base.update(report)
        base["missing"] = False
        components[key] = base
        bad = [r for _p, r in own if not r["healthy"] and not r["terminating"]]
        evidence = [_pod_line(r) for r in bad]
        if report["replicas"] == 0 and spec.get("replicas", 1) > 0:
            findings.append(_finding("WORKLOAD_SCALED_TO_ZERO", severity, "%s: %s is scaled to 0 replicas (desired %s)"
                                     % (key, ref, spec.get("replicas", 1)), evidence, "scale_backend",
                                     component=key, layer=layer, ref=ref))
        elif report["oomkilled"]:
            findings.append(_finding("WORKLOAD_OOMKILLED", severity,
                                     "%s: %s containers are killed for exceeding their memory limit" % (key, ref),
                                     evidence, "scale_backend (raise limits)", component=key, layer=layer, ref=ref))
        elif report["crashloop"]:
            findings.append(_finding("WORKLOAD_CRASHLOOP", severity, "%s: %s pods are in CrashLoopBackOff" % (key, ref),
                                     evidence, "restart_service", component=key, layer=layer, ref=ref))
        elif not report["healthy"]:
            findings.append(_finding("WORKLOAD_UNAVAILABLE", severity, "%s: %s is not fully available (%s)"
                                     % (key, ref, "; ".join(report["reasons"][:3])), evidence, "restart_service",
                                     component=key, layer=layer, ref=ref))

    # Warning events, recent ones only, newest first.
    since = now - timedelta(minutes=opts["events_since_minutes"])
    events = []
    warnings_by_ns = {}
    for ev in raw.get("events") or []:
        involved = ev.get("involvedObject") or {}
        ns = involved.get("namespace") or _get(ev, "metadata", "namespace")
        if not is_watched(ns):
            continue
        seen = event_last_seen(ev)
        if seen is None or seen < since:
            continue
        count = int(_get(ev, "series", "count") or ev.get("count") or 1)
        kind, name = involved.get("kind"), involved.get("name")
        component = component_of_object.get((kind, ns, name))
        if component is None and kind == "ReplicaSet":
            # A Deployment's ReplicaSet is named <deployment>-<hash>.
            component = component_of_object.get(("Deployment", ns, (name or "").rsplit("-", 1)[0]))
        if component:
            components[component]["warning_events"] += count
        warnings_by_ns[ns] = warnings_by_ns.get(ns, 0) + count
        events.append({
            "namespace": ns, "object": "%s/%s" % (kind, name), "reason": ev.get("reason"),
            "message": (ev.get("message") or "")[:300], "count": count, "last_seen": seen.isoformat(),
            "component": component, "tenant": tenant_of_ns.get(ns),
        })
    events.sort(key=lambda e: e["last_seen"], reverse=True)

    # Tenants.
    tenants = {}
    down, degraded = [], []
    for ns_obj in tenant_namespaces:
        ns = _get(ns_obj, "metadata", "name")
        slug = tenant_of_ns[ns]
        pod_pairs = pods_by_ns.get(ns, [])
        reports = [workload_health(w, [r for _p, r in selected(w)])
                   for w in sorted(workloads_by_ns.get(ns, []), key=workload_ref)]
        unhealthy = [r for _p, r in pod_pairs if not r["healthy"] and not r["terminating"]]
        unbound = [{"name": _get(p, "metadata", "name"), "phase": _get(p, "status", "phase", default="Pending")}
                   for p in pvcs_by_ns.get(ns, []) if _get(p, "status", "phase") != "Bound"]
        desired = sum(r["replicas"] for r in reports)
        ready = sum(min(r["ready_replicas"], r["replicas"]) for r in reports)
        dead = [r for r in reports if r["replicas"] > 0 and r["ready_replicas"] == 0]
        if _get(ns_obj, "status", "phase") == "Terminating" or _get(ns_obj, "metadata", "deletionTimestamp"):
            status = "terminating"
        elif desired == 0:
            status = "empty"
        elif dead:
            status = "down"
        elif ready < desired or unhealthy or unbound:
            status = "degraded"
        else:
            status = "healthy"
        tenants[ns] = {
            "slug": slug, "namespace": ns, "status": status,
            "workloads_ready": ready, "workloads_desired": desired,
            "workloads": [{"ref": r["ref"], "replicas": r["replicas"], "ready_replicas": r["ready_replicas"],
                           "healthy": r["healthy"], "reasons": r["reasons"][:5]} for r in reports],
            "pods": len(pod_pairs),
            "pods_unhealthy": [{"name": r["name"], "reasons": r["reasons"]} for r in unhealthy],
            "pvcs": len(pvcs_by_ns.get(ns, [])),
            "pvcs_unbound": unbound,
            "warning_events": warnings_by_ns.get(ns, 0),
        }
        if status == "terminating":
            continue
        ref = "Namespace/%s" % ns
        if status == "down":
            down.append((slug, ns, ["%s: %s" % (r["ref"], "; ".join(r["reasons"][:2])) for r in dead]))
        elif status == "degraded":
            degraded.append((slug, ns, [_pod_line(r) for r in unhealthy] or
                             ["%s: %s" % (r["ref"], r["reasons"][0]) for r in reports if not r["healthy"]] or
                             ["PVC %s is %s" % (p["name"], p["phase"]) for p in unbound]))
        oom = [r for r in unhealthy if r["last_termination"] and r["last_termination"]["reason"] == "OOMKilled"]
        loop = [r for r in unhealthy if any("CrashLoopBackOff" in x for x in r["reasons"])]
        if oom:
            findings.append(_finding("POD_OOMKILLED", "medium",
                                     "tenant %s: %d pod(s) killed for exceeding their memory limit" % (slug, len(oom)),
                                     _cap([_pod_line(r) for r in oom]), "raise the tenant's memory limit (tier)",
                                     ref=ref, tenant=slug))
        elif loop:
            findings.append(_finding("POD_CRASHLOOP", "medium",
                                     "tenant %s: %d pod(s) in CrashLoopBackOff" % (slug, len(loop)),
                                     _cap([_pod_line(r) for r in loop]), "restart the tenant's Odoo (restart_service)",
                                     ref=ref, tenant=slug))

    # One slug, several namespaces: a provisioning mistake (or a half-finished migration).
    by_slug = {}
    for ns, slug in sorted(tenant_of_ns.items()):
        by_slug.setdefault(slug, []).append(ns)
    for slug, namespaces in sorted(by_slug.items()):
        if len(namespaces) > 1:
            findings.append(_finding("TENANT_LABEL_DUPLICATE", "low",
                                     "tenant %s is claimed by %d namespaces: %s"
                                     % (slug, len(namespaces), ", ".join(namespaces)),
                                     ["Namespace/%s has %s=%s" % (ns, label, slug) for ns in namespaces],
                                     "remove the label from the namespace that is not the tenant's", tenant=slug))

    # PVCs that are not Bound, in every watched namespace.
    for ns in sorted(pvcs_by_ns):
        for pvc in pvcs_by_ns[ns]:
            phase = _get(pvc, "status", "phase", default="Pending")
            if phase == "Bound":
                continue
            name = _get(pvc, "metadata", "name")
            slug = tenant_of_ns.get(ns)
            findings.append(_finding(
                "PVC_UNBOUND", "high" if phase == "Lost" else "medium",
                "PersistentVolumeClaim %s/%s is %s%s" % (ns, name, phase, " (tenant %s)" % slug if slug else ""),
                ["storageClassName: %s, requested: %s" % (_get(pvc, "spec", "storageClassName"),
                                                          _get(pvc, "spec", "resources", "requests", "storage"))],
                "check the StorageClass and its provisioner (escalate if Lost)",
                ref="PersistentVolumeClaim/%s/%s" % (ns, name), tenant=slug))

    # Tenants down or degraded: one tenant is high (down) / medium; several at once is an incident.
    many = max(2, int(opts["multi_tenant_threshold"]))

    def lines(group):
        return _cap(["%s (%s): %s" % (slug, ns, "; ".join(why[:2])) for slug, ns, why in group])

    if len(down) >= many:
        findings.append(_finding("TENANTS_DOWN", "critical", "%d tenants are down: %s" % (
            len(down), ", ".join(s for s, _n, _w in down[:10]) + (", ..." if len(down) > 10 else "")),
            lines(down), "platform_down (find the shared cause)", tenants=[s for s, _n, _w in down]))
    elif down:
        slug, ns, why = down[0]
        findings.append(_finding("TENANT_DOWN", "high", "tenant %s (%s) is down" % (slug, ns), why,
                                 "tenant_down", ref="Namespace/%s" % ns, tenant=slug, tenants=[slug]))
    if len(degraded) >= many:
        findings.append(_finding("TENANTS_DEGRADED", "high", "%d tenants are degraded: %s" % (
            len(degraded), ", ".join(s for s, _n, _w in degraded[:10]) + (", ..." if len(degraded) > 10 else "")),
            lines(degraded), "look for a shared cause (nodes, storage, backend)",
            tenants=[s for s, _n, _w in degraded]))
    elif degraded:
        slug, ns, why = degraded[0]
        findings.append(_finding("TENANT_DEGRADED", "medium", "tenant %s (%s) is degraded" % (slug, ns), why,
                                 "tenant_down", ref="Namespace/%s" % ns, tenant=slug, tenants=[slug]))

    # Every unhealthy live pod, with what it belongs to.
    pods_unhealthy = []
    for ns in sorted(pods_by_ns):
        for _p, r in sorted(pods_by_ns[ns], key=lambda pr: pr[1]["name"] or ""):
            if not r["healthy"] and not r["terminating"]:
                pods_unhealthy.append(_pod_entry(r, component_of_pod.get((ns, r["name"])), tenant_of_ns.get(ns)))

    findings = sort_findings(findings)
    severity = worst_severity(findings)
    live_tenants = [t for t in tenants.values() if t["status"] != "terminating"]
    return {
        "changed": False,
        "nodes": node_reports,
        "components": components,
        "tenants": tenants,
        "pods_unhealthy": pods_unhealthy,
        "events": events[:max(0, int(opts["max_events"]))],
        "events_total": len(events),
        "findings": findings,
        "severity": severity,
        "healthy": severity in ("none", "low"),
        "counts": {key: len(raw.get(key) or []) for key in
                   ("nodes", "namespaces", "pods", "deployments", "statefulsets", "daemonsets", "pvcs", "events")},
        "summary": {
            "nodes": len(node_reports),
            "nodes_not_ready": sum(1 for n in node_reports if not n["ready"]),
            "pods": sum(len(v) for v in pods_by_ns.values()),
            "pods_unhealthy": len(pods_unhealthy),
            "components": len(components),
            "components_unhealthy": sum(1 for c in components.values() if c.get("healthy") is False),
            "tenants": len(live_tenants),
            "tenants_down": len(down),
            "tenants_degraded": len(degraded),
        },
    }


def run_snapshot(params, api_client=None, counter=None):
    """One snapshot: the lists, then the analysis; raises DiagnosisError. Used by main() and the bench."""
    opts = _options(params)
    _check_components(opts["components"])
    counter = counter if counter is not None else ApiCallCounter()
    start = time.monotonic()
    api_client = api_client or client(params)
    raw = gather(api_client, opts["tenant_label"], int(opts.get("page_size", 500)),
                 int(opts.get("request_timeout", 30)), counter)
    result = analyse(raw, opts)
    result["api_calls"] = counter.calls
    result["api_calls_by_resource"] = dict(counter.by_resource)
    result["duration_seconds"] = round(time.monotonic() - start, 3)
    return result


def main():
    argument_spec = dict(K8S_COMMON_ARGS)
    argument_spec.update(
        namespaces=dict(type="list", elements="str", default=[]),
        components=dict(type="dict", default={}),
        tenant_label=dict(type="str", default="saasodoo.io/tenant"),
        events_since_minutes=dict(type="int", default=60),
        max_events=dict(type="int", default=200),
        page_size=dict(type="int", default=500),
        restart_threshold=dict(type="int", default=3),
        multi_tenant_threshold=dict(type="int", default=2),
        node_request_percent=dict(type="int", default=90),
        request_timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    for name in ("page_size", "events_since_minutes", "max_events", "node_request_percent"):
        if module.params[name] < 0:
            module.fail_json(msg="%s must be 0 or more, got %s" % (name, module.params[name]))
    for name in ("request_timeout", "restart_threshold", "multi_tenant_threshold"):
        if module.params[name] < 1:
            module.fail_json(msg="%s must be 1 or more, got %s" % (name, module.params[name]))
    try:
        result = run_snapshot(module.params)
    except DiagnosisError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # a bug, not a diagnosis: still a message, the traceback only with -vvv
        module.fail_json(msg="saasodoo_snapshot failed unexpectedly: %s: %s" % (type(exc).__name__, exc),
                         exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
