#!/usr/bin/python
# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks: why a tenant is not serving, and what to do about it (read-only).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_tenant_check
short_description: Check tenant provisioning against the platform database and the cluster (read-only)
description:
  - Answers the troubleshooting guide's "Tenant Provisioning Issues" questions for every tenant in one
    task. A tenant comes from the platform database's C(tenants) table and/or from a namespace carrying
    O(tenant_label) (see O(source)); its slug is the row's C(slug) and the label's value.
  - For each tenant it reports its status in the database and for how long it has been in it, which of
    the Kubernetes objects a provisioned tenant has exist and are healthy (namespace, the Odoo Deployment
    ready, Service, Ingress, PersistentVolumeClaim bound, NetworkPolicies, ResourceQuota), the Warning
    events that explain a failure (C(FailedScheduling), C(FailedCreate) including exceeded quota,
    C(FailedBinding), C(ProvisioningFailed)), and whether the cluster has room for the tenant's tier
    (O(tiers)).
  - Gives each tenant a C(verdict) (C(healthy), C(provisioning), C(degraded), C(stuck), C(failed),
    C(orphaned)), the C(reasons) and the recommended C(action) (C(none), C(retry), C(cleanup_and_retry),
    C(cleanup), C(add_capacity)), and returns findings with stable codes that runbooks branch on.
  - Makes a fixed number of cluster-wide list calls (tenant namespaces by label selector, Deployments,
    Services, Ingresses, PVCs, NetworkPolicies, ResourceQuotas, Warning events, nodes, pods), never
    one per tenant, paginated with O(page_size). With fewer objects per kind than O(page_size) that is
    10 calls whatever the number of tenants. RV(api_calls) says how many were made.
  - Never changes anything. Its database session is read-only and its statements time out after 15 s,
    so check mode runs it as is.
  - When the database cannot be read (down, unreachable, login rejected, driver missing) the module fails
    with a clear message, unless O(source=cluster), or O(source=both) with O(database_optional=true); then
    it judges the tenants from the cluster alone and says so with a C(TENANTS_DATABASE_UNAVAILABLE) finding.
  - The Kubernetes credentials need C(list) on those kinds cluster-wide (a ClusterRole).
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  source:
    description:
      - Where the tenants come from.
      - C(both) (the default) reads the database and the cluster and compares them, which is the only
        way to find orphans (a tenant namespace without a row, a row without its namespace).
      - C(database) checks the tenants of the C(tenants) table only; tenant namespaces without a row are
        left out.
      - C(cluster) checks the tenant namespaces only, without the database (no status, no orphans).
    type: str
    choices: [both, database, cluster]
    default: both
  tenants:
    description:
      - Only check these tenants (slugs). Empty (the default) checks them all.
      - Lists are still cluster-wide (the capacity needs every pod); the escalation to critical counts only
        the tenants checked. A slug found nowhere gives a low C(TENANT_NOT_FOUND) finding.
    type: list
    elements: str
    default: []
  database_optional:
    description:
      - With O(source=both), go on with the cluster's data when the database cannot be read, adding a
        high C(TENANTS_DATABASE_UNAVAILABLE) finding, instead of failing.
      - Without the database no tenant can be judged stuck, failed or orphaned, hence the default.
    type: bool
    default: false
  stuck_after_minutes:
    description:
      - A tenant in C(pending) or C(provisioning) for longer than this is C(stuck)
        (C(TENANT_STUCK_PROVISIONING)); before that it is C(provisioning), in progress.
    type: int
    default: 15
  tiers:
    description:
      - The tenant tiers, as the inventory's C(saasodoo_tenant_tiers) defines them, keyed by name. Each
        needs C(resources.requests) (C(cpu), C(memory)); C(odoo_replicas) defaults to 1.
      - A tier fits the cluster when its C(odoo_replicas) replicas, each with the tier's requests, can be
        placed on the Ready, schedulable nodes' free capacity (allocatable minus the requests of the pods
        on them), one replica per node's free room. A tenant that is not healthy and whose tier does not
        fit gets C(TENANT_INSUFFICIENT_CAPACITY) and the action C(add_capacity).
      - Empty (the default) judges capacity from the tenant's unschedulable pods only.
    type: dict
    default: {}
  multi_tenant_threshold:
    description:
      - From this many tenants stuck, failed or missing their namespace at once, the guide's "multiple
        tenant failures" applies - C(TENANTS_MULTIPLE_FAILURES) (critical) is added and each of those
        tenants' main finding becomes critical.
    type: int
    default: 2
  tenant_label:
    description: The label that marks a namespace as a tenant's; its value is the tenant's slug.
    type: str
    default: saasodoo.io/tenant
  tier_label:
    description: The namespace label holding the tenant's tier (used when the database does not say).
    type: str
    default: saasodoo.io/tier
  namespace_prefix:
    description:
      - Tenant namespaces are named O(namespace_prefix) followed by the slug. Used to name the namespace a
        tenant without one should have, and to choose between two namespaces labelled with the same slug.
    type: str
    default: tenant-
  deployment_name:
    description: The tenant's Odoo Deployment; it must exist and have all its replicas ready. Empty skips the check.
    type: str
    default: odoo
  service_name:
    description: The tenant's Odoo Service. Empty skips the check.
    type: str
    default: odoo
  ingress_name:
    description: The tenant's Ingress. Empty skips the check.
    type: str
    default: odoo
  pvc_name:
    description: The tenant's data PersistentVolumeClaim; it must be C(Bound). Empty skips the check.
    type: str
    default: odoo-data
  resource_quota_name:
    description: The tenant's ResourceQuota. Empty skips the check.
    type: str
    default: tenant-quota
  network_policies:
    description: The tenant's NetworkPolicies; each must exist. Empty skips the check.
    type: list
    elements: str
    default: [default-deny, allow-from-ingress, allow-dns-egress, allow-platform-db-egress]
  tolerated_taints:
    description:
      - Keys of C(NoSchedule)/C(NoExecute) taints that tenant pods tolerate. Nodes with any other such taint
        do not count as capacity (for instance control-plane nodes).
    type: list
    elements: str
    default: []
  events_since_minutes:
    description: Warning events last seen longer ago than this are ignored. C(0) keeps them all.
    type: int
    default: 60
  page_size:
    description:
      - Objects per page of each list call (the API's C(limit)); more objects of a kind cost more calls.
        C(0) disables pagination.
    type: int
    default: 500
  request_timeout:
    description: Seconds to wait for the API server to answer each read of a list (connecting waits at most 10).
    type: int
    default: 30
  login_host:
    description:
      - Host of the platform database, or the directory of its unix socket. Default from E(PGHOST), else
        C(localhost).
      - Unlike M(saasodoo_pg_health), there is no C(host) alias here - O(host) is the Kubernetes API server.
    aliases: []
  login_db:
    description: The platform database, the one with the C(tenants) table. Default from E(PGDATABASE), else C(postgres).
extends_documentation_fragment:
  - saasodoo_pg
  - saasodoo_k8s
attributes:
  check_mode:
    support: full
    description: Read-only; check mode returns the same result.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
requirements:
  - python >= 3.8
  - kubernetes >= 24.2.0
  - psycopg (3.1 or later) or psycopg2, unless O(source=cluster)
notes:
  - "Verdicts: C(healthy) (active, every object present and healthy); C(provisioning) (pending or
    provisioning for less than O(stuck_after_minutes): in progress, wait); C(degraded) (active and serving,
    but replicas missing or isolation objects - NetworkPolicies, ResourceQuota - absent); C(stuck) (pending
    or provisioning for too long); C(failed) (status failed, or active but not serving); C(orphaned) (a
    tenant namespace without a row, or an active or provisioning row past O(stuck_after_minutes) without
    its namespace)."
  - "Actions, the first thing to do: C(add_capacity) when the tenant's tier (or its unschedulable pods) do
    not fit the free capacity; C(cleanup) for an orphaned namespace (delete it after checking nobody uses
    it; C(none) when it is already being deleted); C(cleanup_and_retry) for a failed tenant whose namespace
    holds a failed attempt's leftovers, or a
    PVC that cannot bind (its spec cannot be changed); C(retry) (the provision_tenant runbook, which renders
    every object from the tier again) for everything else that is wrong; C(none) when nothing is to do."
  - A FailedScheduling event counts only while the pod it names still exists and is not scheduled, and the
    volume events only while the claim is not bound, so the history of a tenant that recovered is not
    reported as its present.
  - "Severity follows the guide: high for one tenant down (stuck, failed, missing namespace, not ready),
    critical for several; medium for an orphaned namespace or a degraded tenant; low worth knowing."
seealso:
  - module: saasodoo_snapshot
  - module: saasodoo_pg_health
  - name: Troubleshooting guide, Tenant Provisioning Issues
    description: Tenant stuck in provisioning, resource creation errors, retry and cleanup.
    link: https://kubernetes.io/docs/tasks/debug/debug-application/debug-pods/
"""

EXAMPLES = r"""
- name: AUDIT | Check every tenant against the platform database and the cluster
  saasodoo_tenant_check:
    tiers: "{{ saasodoo_tenant_tiers }}"
    tenant_label: "{{ saasodoo_tenant_label }}"
    tier_label: "{{ saasodoo_tenant_tier_label }}"
    namespace_prefix: "{{ saasodoo_tenant_namespace_prefix }}"
    login_host: "{{ saasodoo_db_host }}"
    login_port: "{{ saasodoo_db_port }}"
    login_user: "{{ saasodoo_db_user }}"
    login_password: "{{ saasodoo_db_password }}"
    login_db: "{{ saasodoo_db_name }}"
  register: __tenant_check

- name: AUDIT | One tenant, stuck after 30 minutes, judged from the cluster if the database is down
  saasodoo_tenant_check:
    tenants: [acme]
    stuck_after_minutes: 30
    database_optional: true
    tiers: "{{ saasodoo_tenant_tiers }}"
    login_db: "{{ saasodoo_db_name }}"
  environment:
    PGHOST: "{{ saasodoo_db_host }}"
    PGPORT: "{{ saasodoo_db_port }}"
    PGUSER: "{{ saasodoo_db_user }}"
    PGPASSWORD: "{{ saasodoo_db_password }}"
  register: __tenant_check

- name: PATCH | Retry the provisioning of the tenants that need it
  ansible.builtin.include_role:
    name: provision_tenant
  vars:
    provision_tenant_slug: "{{ item }}"
  loop: "{{ __tenant_check.actions.retry | default([]) }}"

- name: AUDIT | Stop when the cluster has no room for a new tenant
  ansible.builtin.assert:
    that: __tenant_check.findings | selectattr('code', 'equalto', 'TENANT_INSUFFICIENT_CAPACITY') | list | length == 0
    fail_msg: "Add nodes first: {{ __tenant_check.capacity.tiers }}"
"""

RETURN = r"""
source:
  description: Where the tenants came from (O(source)); C(cluster) when the database was optional and could not be read.
  returned: success
  type: str
  sample: both
database:
  description: Whether the database was read, how long connecting took, and the error when it could not be read.
  returned: always
  type: dict
  sample: {used: true, connected: true, connect_seconds: 0.01, tenants: 4, error: null}
tenants:
  description: One entry per tenant checked, by slug.
  returned: success
  type: list
  elements: dict
  contains:
    slug: {description: The tenant's slug., type: str}
    namespace: {description: Its namespace (the one it should have when it has none)., type: str}
    tier: {description: Its tier (database, else the namespace's O(tier_label))., type: str}
    in_database: {description: Whether the C(tenants) table has it (null when the database was not read)., type: bool}
    in_cluster: {description: Whether a namespace is labelled with its slug., type: bool}
    status:
      description: "Its status in the database: pending, provisioning, active, failed (null without a row)."
      type: str
    status_changed_at: {description: When it entered that status (ISO 8601)., type: str}
    status_age_minutes: {description: For how long it has been in that status., type: float}
    last_error: {description: The database's C(last_error)., type: str}
    objects:
      description:
        - "Per expected object: name, present, and its health: deployment (replicas, ready_replicas, ready),
          pvc (phase, bound), network_policies (expected, missing), resource_quota (exhausted: the
          resources at their hard limit), service, ingress (hosts), namespace (phase). Null without a namespace."
      type: dict
    problems:
      description: "What is wrong with the objects: object, problem, serving (whether it stops the tenant serving)."
      type: list
      elements: dict
    unscheduled_pods:
      description: "Its pods that are not scheduled: name, requests, fits_any_node, message."
      type: list
      elements: dict
    events:
      description: "Recent Warning events in its namespace: object, reason, message, count, last_seen, current."
      type: list
      elements: dict
    capacity:
      description: "Whether its tier fits the cluster (see RV(capacity.tiers)); null when its tier is unknown."
      type: dict
    verdict: {description: "healthy, provisioning, degraded, stuck, failed or orphaned.", type: str}
    reasons: {description: Why, in words., type: list, elements: str}
    action: {description: "none, retry, cleanup_and_retry, cleanup or add_capacity.", type: str}
  sample:
    - slug: tc-1a2b
      namespace: tenant-tc-1a2b
      tier: premium
      status: provisioning
      status_age_minutes: 30.2
      verdict: stuck
      action: retry
      reasons:
        - provisioning for 30 min (more than 15)
        - "pod odoo-7c9d-x2x is not scheduled: 0/3 nodes are available: 3 Insufficient cpu."
summary:
  description: How many tenants got each verdict, and how many are down (stuck, failed, missing their namespace).
  returned: success
  type: dict
  sample: {tenants: 4, healthy: 3, provisioning: 0, degraded: 0, stuck: 1, failed: 0, orphaned: 0, down: 1}
actions:
  description: The slugs per action other than C(none), for a runbook to loop over.
  returned: success
  type: dict
  sample: {retry: [tc-1a2b], cleanup_and_retry: [], cleanup: [], add_capacity: []}
not_found:
  description: Slugs of O(tenants) found neither in the database nor in the cluster.
  returned: success
  type: list
  elements: str
capacity:
  description:
    - The cluster's capacity for tenants. CPU in cores, memory in bytes.
    - C(nodes) each have name, eligible (Ready, not cordoned, no untolerated NoSchedule/NoExecute taint),
      reason, allocatable, requested, free. C(allocatable), C(requested), C(free) sum the eligible nodes.
    - C(tiers) has, per tier of O(tiers), replicas, request (per replica), needed (all replicas),
      placeable_replicas and fits.
  returned: success
  type: dict
  sample:
    eligible_nodes: 3
    allocatable: {cpu: 24.0, memory: 103079215104}
    requested: {cpu: 3.9, memory: 7566524416}
    free: {cpu: 20.1, memory: 95512690688}
    largest_node_free: {cpu: 6.75, memory: 31864983552}
    tiers: {premium: {replicas: 2, request: {cpu: 0.5, memory: 1073741824}, needed: {cpu: 1.0, memory: 2147483648},
                      placeable_replicas: 2, fits: true}}
findings:
  description:
    - What is wrong, most severe first. Each has code, severity, message, evidence, remediation, tenant and namespace.
    - "Codes: TENANT_STUCK_PROVISIONING, TENANT_FAILED, TENANT_MISSING_NAMESPACE, TENANT_NOT_READY (high, one
      tenant down; critical when several are - see O(multi_tenant_threshold); TENANT_NOT_READY is medium
      while some replicas are ready), TENANTS_MULTIPLE_FAILURES (critical), TENANT_OBJECT_MISSING (high when it
      stops an active tenant from serving, else medium), TENANT_ORPHANED_NAMESPACE (medium),
      TENANT_UNSCHEDULABLE (high; the scheduler's message in the evidence), TENANT_INSUFFICIENT_CAPACITY
      (high), TENANT_QUOTA_EXCEEDED (high), TENANT_VOLUME_FAILED (high), TENANT_CREATE_FAILED (medium),
      TENANTS_DATABASE_UNAVAILABLE (high), TENANT_NOT_FOUND (low)."
  returned: always
  type: list
  elements: dict
  sample:
    - code: TENANT_UNSCHEDULABLE
      severity: high
      message: "Tenant tc-1a2b: 1 pod cannot be scheduled: 0/3 nodes are available: 3 Insufficient cpu. ..."
      evidence: {event_message: "0/3 nodes are available: 3 Insufficient cpu. ...",
                 pods: [{name: odoo-7c9d-x2x, requests: {cpu: 64.0, memory: 0}, fits_any_node: false}]}
      remediation: "..."
      tenant: tc-1a2b
      namespace: tenant-tc-1a2b
severity:
  description: The worst severity among the findings, or C(none).
  returned: always
  type: str
  sample: high
healthy:
  description: True when no finding is critical, high or medium.
  returned: always
  type: bool
api_calls:
  description: How many requests were sent to the API server (every page of every list).
  returned: success
  type: int
  sample: 10
api_calls_by_resource:
  description: The requests per kind listed.
  returned: success
  type: dict
  sample: {namespaces: 1, deployments: 1, services: 1, ingresses: 1, pvcs: 1, networkpolicies: 1,
           resourcequotas: 1, events: 1, nodes: 1, pods: 1}
duration_seconds:
  description: Seconds the whole check took.
  returned: success
  type: float
"""

import re
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

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
    parse_quantity as _quantity,
    pod_requests as _pod_requests,
)
from ansible.module_utils.saasodoo_pg import (
    HAS_PSYCOPG,
    POSTGRES_COMMON_ARGS,
    PSYCOPG_ERRORS,
    PSYCOPG_REQUIREMENT,
    close,
    connect,
    endpoint,
    error_text,
    query,
)

try:
    from kubernetes.client import AppsV1Api, CoreV1Api, NetworkingV1Api
except ImportError:  # main() reports it (HAS_KUBERNETES)
    pass

APPLICATION_NAME = "saasodoo_tenant_check"
STATEMENT_TIMEOUT_MS = 15000
LOCK_TIMEOUT_MS = 2000

SOURCES = ("both", "database", "cluster")
IN_PROGRESS = ("pending", "provisioning")
# The action a tenant needs first, from the least to the most urgent.
ACTIONS = ("none", "retry", "cleanup_and_retry", "cleanup", "add_capacity")
DOWN_VERDICTS = ("stuck", "failed")
EXPLAINING_REASONS = ("FailedScheduling", "FailedCreate", "FailedBinding", "ProvisioningFailed")
MAX_EVENTS_PER_TENANT = 20
MESSAGE_CHARS = 500

TENANTS_SQL = (
    "SELECT slug, tier, status, created_at, updated_at, status_changed_at, last_error, "
    "extract(epoch FROM now() - status_changed_at)::float8 AS status_age_seconds "
    "FROM tenants ORDER BY slug")
TENANTS_FILTERED_SQL = (
    "SELECT slug, tier, status, created_at, updated_at, status_changed_at, last_error, "
    "extract(epoch FROM now() - status_changed_at)::float8 AS status_age_seconds "
    "FROM tenants WHERE slug = ANY(%s) ORDER BY slug")

REMEDIATION = {
    "retry": "Retry the provisioning of tenant {slug} (provision_tenant runbook): it renders every object from "
             "the tier again and sets the status. Guide: Tenant Provisioning Issues > Retry Provisioning.",
    "cleanup_and_retry": "Clean up what the failed attempt left in namespace {namespace} (or delete the namespace "
                         "if the tenant has no data yet), then retry the provisioning of {slug} (provision_tenant "
                         "runbook). Guide: Tenant Provisioning Issues > Manual Cleanup and Retry.",
    "cleanup": "Check that nobody uses namespace {namespace} (no tenant row, no customer), back up its volume if "
               "it holds data, then delete the namespace.",
    "add_capacity": "Add nodes (or free capacity) for the {tier} tier, then retry the provisioning of {slug}. Guide: "
                    "Tenant Provisioning Issues > Check Resource Availability.",
    "none": None,
}

# --------------------------------------------------------------------------------------------
# Quantities and formatting


def parse_quantity(value, what="quantity"):
    """A Kubernetes quantity ('500m', '1Gi', '2', 1.5) as a float (cores, bytes); None -> 0; else DiagnosisError."""
    try:
        parsed = _quantity(value)
    except ValueError as e:
        raise DiagnosisError("%s: %s" % (what, e))
    return 0.0 if parsed is None else parsed


def fmt_cpu(cores):
    cores = float(cores or 0)
    if cores and cores < 1:
        return "%dm" % round(cores * 1000)
    return ("%.3f" % cores).rstrip("0").rstrip(".")


def fmt_memory(n):
    n = float(n or 0)
    for unit, size in (("Ti", 2 ** 40), ("Gi", 2 ** 30), ("Mi", 2 ** 20), ("Ki", 2 ** 10)):
        if n >= size:
            return ("%.1f" % (n / size)).rstrip("0").rstrip(".") + unit
    return "%d" % n


def fmt_resources(res):
    return "%s CPU / %s memory" % (fmt_cpu(res.get("cpu")), fmt_memory(res.get("memory")))


def _resources(cpu, memory):
    return {"cpu": round(float(cpu), 3), "memory": int(memory)}


def fmt_minutes(minutes):
    if minutes is None:
        return "an unknown time"
    if minutes < 120:
        return "%d min" % round(minutes)
    if minutes < 2880:
        return "%.1f h" % (minutes / 60.0)
    return "%.1f d" % (minutes / 1440.0)


def _one_line(text, limit=MESSAGE_CHARS):
    text = re.sub(r"\s+", " ", "%s" % (text or "")).strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Options


def _check_tiers(tiers):
    """{name: {replicas, request: {cpu, memory}}} from the tiers option, or DiagnosisError."""
    parsed = {}
    for name, spec in (tiers or {}).items():
        if not isinstance(spec, dict):
            raise DiagnosisError("tiers.%s: expected a dict with resources.requests and odoo_replicas, got %r"
                                 % (name, spec))
        requests = _get(spec, "resources", "requests")
        if not isinstance(requests, dict) or not (requests.get("cpu") or requests.get("memory")):
            raise DiagnosisError("tiers.%s: resources.requests (cpu, memory) is missing - pass the inventory's "
                                 "saasodoo_tenant_tiers" % name)
        try:
            replicas = int(spec.get("odoo_replicas", 1))
        except (TypeError, ValueError):
            raise DiagnosisError("tiers.%s: odoo_replicas must be a number, got %r" % (name, spec.get("odoo_replicas")))
        if replicas < 0:
            raise DiagnosisError("tiers.%s: odoo_replicas must be 0 or more, got %s" % (name, replicas))
        parsed[name] = {
            "replicas": replicas,
            "request": _resources(parse_quantity(requests.get("cpu"), "tiers.%s cpu request" % name),
                                  parse_quantity(requests.get("memory"), "tiers.%s memory request" % name)),
        }
    return parsed


DEFAULTS = {
    "source": "both",
    "tenants": [],
    "database_optional": False,
    "stuck_after_minutes": 15,
    "tiers": {},
    "multi_tenant_threshold": 2,
    "tenant_label": "saasodoo.io/tenant",
    "tier_label": "saasodoo.io/tier",
    "namespace_prefix": "tenant-",
    "deployment_name": "odoo",
    "service_name": "odoo",
    "ingress_name": "odoo",
    "pvc_name": "odoo-data",
    "resource_quota_name": "tenant-quota",
    "network_policies": ["default-deny", "allow-from-ingress", "allow-dns-egress", "allow-platform-db-egress"],
    "tolerated_taints": [],
    "events_since_minutes": 60,
}


def options(params):
    opts = dict(DEFAULTS)
    opts.update(dict((k, v) for k, v in (params or {}).items() if k in DEFAULTS and v is not None))
    return opts


def validate(params):
    """Option values out of range -> a message, else None."""
    for name, low in (("stuck_after_minutes", 0), ("events_since_minutes", 0), ("page_size", 0),
                      ("multi_tenant_threshold", 1), ("request_timeout", 1), ("connect_timeout", 1)):
        value = params.get(name)
        if value is not None and value < low:
            return "%s must be %s or more, got %s" % (name, low, value)
    if not params.get("tenant_label"):
        return "tenant_label must not be empty"
    return None


# --------------------------------------------------------------------------------------------
# Capacity


def pod_requests(pod):
    """What the scheduler reserves for a pod (see saasodoo_k8s_health.pod_requests), as {cpu, memory}."""
    try:
        req = _pod_requests(pod)
    except ValueError as e:
        raise DiagnosisError("quantity: %s" % e)
    return _resources(req["cpu"], req["memory"])


def place(count, request, frees):
    """How many of `count` replicas of `request` fit, one at a time, on the nodes' free room (greedy)."""
    room = [dict(f) for f in frees]
    placed = 0
    for _ in range(count):
        candidates = [r for r in room if r["cpu"] + 1e-9 >= request["cpu"] and r["memory"] >= request["memory"]]
        if not candidates:
            break
        best = max(candidates, key=lambda r: (r["cpu"] - request["cpu"], r["memory"] - request["memory"]))
        best["cpu"] -= request["cpu"]
        best["memory"] -= request["memory"]
        placed += 1
    return placed


def analyse_capacity(nodes, pods, tiers, tolerated_taints):
    """Free capacity of the eligible nodes, and whether each tier fits in it."""
    rows = {}
    for node in nodes:
        name = _get(node, "metadata", "name")
        reasons = []
        if not node_health(node)["ready"]:
            reasons.append("not Ready")
        if _get(node, "spec", "unschedulable"):
            reasons.append("cordoned")
        taints = ["%s:%s" % (t.get("key"), t.get("effect")) for t in _get(node, "spec", "taints") or []
                  if t.get("effect") in ("NoSchedule", "NoExecute") and t.get("key") not in tolerated_taints
                  and t.get("key") != "node.kubernetes.io/unschedulable"]
        if taints:
            reasons.append("tainted %s" % ", ".join(taints))
        alloc = _get(node, "status", "allocatable") or {}
        rows[name] = {"name": name, "eligible": not reasons, "reason": "; ".join(reasons) or None,
                      "allocatable": _resources(parse_quantity(alloc.get("cpu")), parse_quantity(alloc.get("memory"))),
                      "requested": {"cpu": 0.0, "memory": 0}}
    for pod in pods:
        row = rows.get(_get(pod, "spec", "nodeName"))
        if row is None or _get(pod, "status", "phase") in ("Succeeded", "Failed"):
            continue
        req = pod_requests(pod)
        row["requested"]["cpu"] += req["cpu"]
        row["requested"]["memory"] += req["memory"]
    totals = {"allocatable": [0.0, 0], "requested": [0.0, 0], "free": [0.0, 0]}
    frees, biggest = [], {"cpu": 0.0, "memory": 0}
    for row in rows.values():
        row["requested"] = _resources(row["requested"]["cpu"], row["requested"]["memory"])
        row["free"] = _resources(max(0.0, row["allocatable"]["cpu"] - row["requested"]["cpu"]),
                                 max(0, row["allocatable"]["memory"] - row["requested"]["memory"]))
        if not row["eligible"]:
            continue
        for key in ("allocatable", "requested", "free"):
            totals[key][0] += row[key]["cpu"]
            totals[key][1] += row[key]["memory"]
        frees.append(dict(row["free"]))
        biggest = max(biggest, row["free"], key=lambda r: (r["cpu"], r["memory"]))
    capacity = {
        "nodes": sorted(rows.values(), key=lambda r: r["name"] or ""),
        "eligible_nodes": len(frees),
        "allocatable": _resources(*totals["allocatable"]),
        "requested": _resources(*totals["requested"]),
        "free": _resources(*totals["free"]),
        "largest_node_free": _resources(biggest["cpu"], biggest["memory"]),
        "tiers": {},
    }
    largest_alloc = [r["allocatable"] for r in rows.values() if r["eligible"]]
    capacity["_frees"] = frees
    capacity["_allocs"] = largest_alloc
    for name, tier in sorted(tiers.items()):
        req = tier["request"]
        placeable = place(tier["replicas"], req, frees)
        capacity["tiers"][name] = {
            "replicas": tier["replicas"], "request": dict(req),
            "needed": _resources(req["cpu"] * tier["replicas"], req["memory"] * tier["replicas"]),
            "placeable_replicas": placeable, "fits": placeable >= tier["replicas"],
        }
    return capacity


def fits_any_node(request, capacity):
    """Whether the request fits an eligible node's allocatable (an empty node of the current sizes)."""
    return any(a["cpu"] + 1e-9 >= request["cpu"] and a["memory"] >= request["memory"] for a in capacity["_allocs"])


# --------------------------------------------------------------------------------------------
# Grouping


def index_by_namespace(items, namespaces):
    """{namespace: {name: object}} for the namespaces given."""
    out = dict((ns, {}) for ns in namespaces)
    for item in items:
        ns = _get(item, "metadata", "namespace")
        if ns in out:
            out[ns][_get(item, "metadata", "name")] = item
    return out


def tenant_namespaces(namespaces, tenant_label, prefix):
    """{slug: namespace object}; a slug on several namespaces keeps the one named prefix+slug (else the first)."""
    by_slug, duplicates = {}, {}
    for ns in sorted(namespaces, key=lambda n: _get(n, "metadata", "name") or ""):
        slug = (_get(ns, "metadata", "labels") or {}).get(tenant_label)
        if not slug:
            continue
        if slug in by_slug:
            duplicates.setdefault(slug, [_get(by_slug[slug], "metadata", "name")]).append(_get(ns, "metadata", "name"))
            if _get(ns, "metadata", "name") == prefix + slug:
                by_slug[slug] = ns
            continue
        by_slug[slug] = ns
    return by_slug, duplicates


# --------------------------------------------------------------------------------------------
# Per tenant: objects, pods, events


def check_objects(ns_obj, idx, opts):
    """The expected objects of a tenant namespace, and the problems with them."""
    objects = {"namespace": {"name": _get(ns_obj, "metadata", "name"), "present": True,
                             "phase": _get(ns_obj, "status", "phase")}}
    problems = []

    def problem(obj, text, serving):
        problems.append({"object": obj, "problem": text, "serving": serving})

    if _get(ns_obj, "metadata", "deletionTimestamp") or _get(ns_obj, "status", "phase") == "Terminating":
        problem("Namespace %s" % objects["namespace"]["name"], "is being deleted", True)

    name = opts["deployment_name"]
    if name:
        dep = idx["deployments"].get(name)
        entry = {"name": name, "present": dep is not None, "ready": False, "replicas": None, "ready_replicas": 0}
        if dep is None:
            problem("Deployment %s" % name, "missing", True)
        else:
            desired = _get(dep, "spec", "replicas")
            desired = 1 if desired is None else int(desired)
            ready = int(_get(dep, "status", "readyReplicas") or 0)
            entry.update(replicas=desired, ready_replicas=ready, ready=desired > 0 and ready >= desired)
            if desired == 0:
                problem("Deployment %s" % name, "scaled to 0 replicas", True)
            elif ready == 0:
                problem("Deployment %s" % name, "no ready replica (0/%d)" % desired, True)
            elif ready < desired:
                problem("Deployment %s" % name, "%d/%d replicas ready" % (ready, desired), False)
        objects["deployment"] = entry

    for key, kind, opt in (("service", "Service", "service_name"), ("ingress", "Ingress", "ingress_name")):
        name = opts[opt]
        if not name:
            continue
        obj = idx[key + "s" if key != "ingress" else "ingresses"].get(name)
        objects[key] = {"name": name, "present": obj is not None}
        if key == "ingress" and obj is not None:
            objects[key]["hosts"] = [r.get("host") for r in _get(obj, "spec", "rules") or [] if r.get("host")]
        if obj is None:
            problem("%s %s" % (kind, name), "missing", True)

    name = opts["pvc_name"]
    if name:
        pvc = idx["pvcs"].get(name)
        phase = _get(pvc, "status", "phase") if pvc else None
        objects["pvc"] = {"name": name, "present": pvc is not None, "phase": phase, "bound": phase == "Bound"}
        if pvc is None:
            problem("PersistentVolumeClaim %s" % name, "missing", True)
        elif phase != "Bound":
            problem("PersistentVolumeClaim %s" % name, "not bound (%s)" % (phase or "no phase"), True)

    expected = list(opts["network_policies"] or [])
    if expected:
        missing = [n for n in expected if n not in idx["networkpolicies"]]
        objects["network_policies"] = {"expected": expected, "missing": missing, "present": not missing}
        if missing:
            problem("NetworkPolicy %s" % ", ".join(missing), "missing (tenant isolation not enforced)", False)

    name = opts["resource_quota_name"]
    if name:
        quota = idx["resourcequotas"].get(name)
        exhausted = []
        if quota is not None:
            hard = _get(quota, "status", "hard") or {}
            used = _get(quota, "status", "used") or {}
            for res in sorted(hard):
                try:
                    limit = parse_quantity(hard[res])
                    if res in used and limit > 0 and parse_quantity(used[res]) >= limit:
                        exhausted.append("%s %s/%s" % (res, used[res], hard[res]))
                except DiagnosisError:
                    continue
        objects["resource_quota"] = {"name": name, "present": quota is not None, "exhausted": exhausted}
        if quota is None:
            problem("ResourceQuota %s" % name, "missing (resource limits not applied)", False)
    return objects, problems


def tenant_events(events, pods_by_name, pvcs, now, since_minutes):
    """Recent Warning events of a namespace, most recent first; `current` when the cause is still there."""
    out = []
    for ev in events:
        seen = event_last_seen(ev)
        if seen is not None and since_minutes and (now - seen).total_seconds() > since_minutes * 60:
            continue
        involved = ev.get("involvedObject") or ev.get("regarding") or {}
        reason = ev.get("reason") or ""
        current = None
        if reason == "FailedScheduling" and involved.get("kind") == "Pod":
            pod = pods_by_name.get(involved.get("name"))
            current = pod is not None and not _get(pod, "spec", "nodeName")
        elif reason in ("FailedBinding", "ProvisioningFailed") and involved.get("kind") == "PersistentVolumeClaim":
            pvc = pvcs.get(involved.get("name"))
            current = pvc is not None and _get(pvc, "status", "phase") != "Bound"
        elif reason == "FailedCreate":
            current = True  # judged by the tenant's state: only listed as a cause when the tenant is not healthy
        count = _get(ev, "series", "count") or ev.get("count") or 1
        out.append({"object": "%s/%s" % (involved.get("kind"), involved.get("name")), "reason": reason,
                    "message": _one_line(ev.get("message") or ev.get("note")), "count": int(count),
                    "last_seen": seen.isoformat() if seen else None,
                    "explains": reason in EXPLAINING_REASONS, "current": current, "_seen": seen})
    out.sort(key=lambda e: e["_seen"] or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
    for e in out:
        del e["_seen"]
    return out


def unscheduled_pods(pods, events, capacity):
    """Live pods without a node, with their requests and the scheduler's latest message."""
    messages = {}
    for ev in events:  # most recent first
        if ev["reason"] == "FailedScheduling" and ev["object"].startswith("Pod/"):
            messages.setdefault(ev["object"][4:], ev["message"])
    out = []
    for pod in pods:
        if _get(pod, "spec", "nodeName") or _get(pod, "status", "phase") not in (None, "Pending"):
            continue
        if _get(pod, "metadata", "deletionTimestamp"):
            continue
        name = _get(pod, "metadata", "name")
        req = pod_requests(pod)
        out.append({"name": name, "requests": req, "fits_any_node": fits_any_node(req, capacity),
                    "message": messages.get(name)})
    return sorted(out, key=lambda p: p["name"])


# --------------------------------------------------------------------------------------------
# Judgement


def _worse_action(a, b):
    return a if ACTIONS.index(a) >= ACTIONS.index(b) else b


def judge_tenant(t, opts, capacity, database_used):
    """Verdict, reasons, action and findings of one tenant. `t` is the tenant entry being built."""
    slug, namespace = t["slug"], t["namespace"]
    status, age = t["status"], t["status_age_minutes"]
    stuck_after = opts["stuck_after_minutes"]
    problems = t["problems"] or []
    reasons, findings, primary = [], [], []
    common = {"tenant": slug, "namespace": namespace}

    def add(code, severity, message, evidence, action, is_primary=False):
        f = finding(code, severity, "Tenant %s: %s" % (slug, message), evidence,
                    REMEDIATION[action].format(slug=slug, namespace=namespace, tier=t["tier"] or "its")
                    if REMEDIATION.get(action) else None, **common)
        findings.append(f)
        if is_primary:
            primary.append(f)
        return f

    status_evidence = {"status": status, "status_changed_at": t["status_changed_at"],
                       "status_age_minutes": age, "stuck_after_minutes": stuck_after, "last_error": t["last_error"]}
    in_ns = t["in_cluster"]
    overdue = age is not None and age > stuck_after
    serving_problems = [p for p in problems if p["serving"]]
    other_problems = [p for p in problems if not p["serving"]]
    problem_text = "; ".join("%s %s" % (p["object"], p["problem"]) for p in problems)

    # ---- the verdict, from the record and the namespace
    terminating = (_get(t, "objects", "namespace", "phase") == "Terminating")
    if database_used and t["in_database"] is False and terminating:
        verdict, action = "orphaned", "none"
        reasons.append("namespace %s has no tenant record and is already being deleted" % namespace)
    elif database_used and t["in_database"] is False:
        verdict, action = "orphaned", "cleanup"
        reasons.append("namespace %s is labelled %s=%s but the tenants table has no such tenant"
                       % (namespace, opts["tenant_label"], slug))
        add("TENANT_ORPHANED_NAMESPACE", "medium",
            "namespace %s has no tenant record in the database (left over from a deleted tenant or a failed "
            "creation)" % namespace,
            {"namespace": namespace, "label": "%s=%s" % (opts["tenant_label"], slug),
             "objects_present": sorted(k for k, v in (t["objects"] or {}).items() if v.get("present"))},
            action, True)
    elif not in_ns:
        if status == "failed":
            verdict, action = "failed", "retry"
            reasons.append("status failed for %s%s; no namespace exists" % (
                fmt_minutes(age), " (last error: %s)" % _one_line(t["last_error"], 200) if t["last_error"] else ""))
            add("TENANT_FAILED", "high", "provisioning failed %s ago%s; nothing is left in the cluster" % (
                fmt_minutes(age), ": %s" % _one_line(t["last_error"], 200) if t["last_error"] else ""),
                status_evidence, action, True)
        elif status in IN_PROGRESS and not overdue:
            verdict, action = "provisioning", "none"
            reasons.append("%s for %s (less than %d min); namespace %s not created yet"
                           % (status, fmt_minutes(age), stuck_after, namespace))
        elif status == "pending":
            verdict, action = "stuck", "retry"
            reasons.append("pending for %s (more than %d min); provisioning never started"
                           % (fmt_minutes(age), stuck_after))
            add("TENANT_STUCK_PROVISIONING", "high", "pending for %s, more than %d min; provisioning never started "
                "(no namespace %s)" % (fmt_minutes(age), stuck_after, namespace), status_evidence, action, True)
        else:  # active, or provisioning for too long, without a namespace
            verdict, action = "orphaned", "retry"
            if status == "active":
                reasons.append("status active but namespace %s does not exist" % namespace)
                message = ("the record says active but namespace %s does not exist: the tenant is down (restore "
                           "its data from backup if its volume is gone)" % namespace)
            else:
                reasons.append("provisioning for %s (more than %d min) but namespace %s does not exist (half-created)"
                               % (fmt_minutes(age), stuck_after, namespace))
                message = ("in provisioning for %s but namespace %s does not exist: provisioning died before "
                           "creating it" % (fmt_minutes(age), namespace))
            add("TENANT_MISSING_NAMESPACE", "high", message,
                dict(status_evidence, namespace=namespace, label="%s=%s" % (opts["tenant_label"], slug)), action, True)
    elif status == "failed":
        verdict, action = "failed", "cleanup_and_retry"
        reasons.append("status failed for %s%s; namespace %s holds the failed attempt's objects" % (
            fmt_minutes(age), " (last error: %s)" % _one_line(t["last_error"], 200) if t["last_error"] else "",
            namespace))
        add("TENANT_FAILED", "high", "provisioning failed %s ago%s" % (
            fmt_minutes(age), ": %s" % _one_line(t["last_error"], 200) if t["last_error"] else ""),
            dict(status_evidence, problems=problems), action, True)
    elif status in IN_PROGRESS:
        if overdue:
            verdict, action = "stuck", "retry"
            reasons.append("%s for %s (more than %d min)" % (status, fmt_minutes(age), stuck_after))
            if not problems:
                reasons.append("every object is present and healthy: the provisioning did not record completion")
            add("TENANT_STUCK_PROVISIONING", "high", "in %s for %s, more than %d min%s" % (
                status, fmt_minutes(age), stuck_after, " (%s)" % problem_text if problems else ""),
                dict(status_evidence, problems=problems), action, True)
        else:
            verdict, action = "provisioning", "none"
            reasons.append("%s for %s (less than %d min)" % (status, fmt_minutes(age), stuck_after))
        if problems:
            add("TENANT_OBJECT_MISSING", "medium", "not ready yet: %s" % problem_text,
                {"problems": problems}, action if verdict == "stuck" else "retry")
    else:  # active, or no record to go by (source cluster)
        if serving_problems:
            verdict, action = "failed", "retry"
            reasons.append("not serving: %s"
                           % "; ".join("%s %s" % (p["object"], p["problem"]) for p in serving_problems))
        elif other_problems:
            verdict, action = "degraded", "retry"
            reasons.append("serving, but %s" % "; ".join("%s %s" % (p["object"], p["problem"]) for p in other_problems))
        else:
            verdict, action = "healthy", "none"
        dep = (t["objects"] or {}).get("deployment") or {}
        not_ready = dep.get("present") and not dep.get("ready")
        missing = [p for p in problems if not p["object"].startswith("Deployment") or not dep.get("present")]
        if not_ready:
            down = not dep.get("ready_replicas")
            add("TENANT_NOT_READY", "high" if down else "medium",
                "Deployment %s has %s/%s replicas ready%s" % (
                    dep["name"], dep.get("ready_replicas") or 0, dep.get("replicas"),
                    ": the tenant is down" if down else ""),
                {"deployment": dep}, action, down)
        if missing:
            serving_missing = [p for p in missing if p["serving"]]
            add("TENANT_OBJECT_MISSING", "high" if serving_missing else "medium",
                "; ".join("%s %s" % (p["object"], p["problem"]) for p in missing),
                {"problems": missing}, action, bool(serving_missing) and not primary)
    if status is None and database_used is False:
        reasons.append("judged from the cluster alone (no database record read)")

    # ---- what explains it: unschedulable pods, quota, volumes (while provisioning is in progress,
    # pods waiting for a node or a volume are normal), then capacity
    explain = verdict in ("stuck", "failed", "degraded") or (verdict == "orphaned" and bool(t["in_database"]))
    if explain or verdict == "provisioning":
        current = [e for e in t["events"] if e["explains"] and e["current"]] if explain else []
        sched = [e for e in current if e["reason"] == "FailedScheduling"]
        pending = t["unscheduled_pods"]
        if sched:
            stuck_pods = [p for p in pending if p["message"]] or pending
            message = sched[0]["message"]
            never = [p for p in stuck_pods if not p["fits_any_node"]]
            for p in stuck_pods:
                reasons.append("pod %s is not scheduled: %s" % (p["name"], p["message"] or "no scheduler message"))
            if never:
                reasons.append("pod %s requests %s, more than any schedulable node's allocatable"
                               % (never[0]["name"], fmt_resources(never[0]["requests"])))
            add("TENANT_UNSCHEDULABLE", "high", "%d pod(s) cannot be scheduled: %s" % (len(stuck_pods), message),
                {"event_message": message, "events": sched[:5],
                 "pods": [{"name": p["name"], "requests": p["requests"], "fits_any_node": p["fits_any_node"]}
                          for p in stuck_pods]},
                action)
        quota = [e for e in current if e["reason"] == "FailedCreate" and "exceeded quota" in e["message"].lower()]
        if quota:
            reasons.append("quota exceeded: %s" % quota[0]["message"])
            add("TENANT_QUOTA_EXCEEDED", "high", "pods are refused by the ResourceQuota: %s" % quota[0]["message"],
                {"event_message": quota[0]["message"], "events": quota[:5],
                 "resource_quota": (t["objects"] or {}).get("resource_quota")}, action)
        created = [e for e in current if e["reason"] == "FailedCreate" and e not in quota]
        if created:
            reasons.append("creation failed: %s" % created[0]["message"])
            add("TENANT_CREATE_FAILED", "medium", "objects cannot be created: %s" % created[0]["message"],
                {"event_message": created[0]["message"], "events": created[:5]}, action)
        volume = [e for e in current if e["reason"] in ("FailedBinding", "ProvisioningFailed")]
        if volume:
            action = _worse_action(action, "cleanup_and_retry")
            reasons.append("volume: %s" % volume[0]["message"])
            add("TENANT_VOLUME_FAILED", "high", "its volume claim cannot be bound: %s" % volume[0]["message"],
                {"event_message": volume[0]["message"], "events": volume[:5], "pvc": (t["objects"] or {}).get("pvc")},
                "cleanup_and_retry")

        # Capacity: the tier when known, else the pods that wait for a node.
        tier_fit = t["capacity"]
        short = None
        if tier_fit is not None:
            if not tier_fit["fits"]:
                short = ("the cluster has room for %d of the %d replica(s) of tier %s (%s each); free on the "
                         "schedulable nodes: %s, largest node: %s" % (
                             tier_fit["placeable_replicas"], tier_fit["replicas"], t["tier"],
                             fmt_resources(tier_fit["request"]), fmt_resources(capacity["free"]),
                             fmt_resources(capacity["largest_node_free"])))
            elif pending and verdict != "provisioning":
                reasons.append("the cluster has room for tier %s (%d x %s), so adding nodes would not help: the "
                               "tenant's objects do not match its tier or other constraints block them"
                               % (t["tier"], tier_fit["replicas"], fmt_resources(tier_fit["request"])))
        elif pending:
            fitting = [p for p in pending if p["fits_any_node"]]
            if fitting and place(len(fitting), max((p["requests"] for p in fitting),
                                                    key=lambda r: (r["cpu"], r["memory"])),
                                 capacity["_frees"]) < len(fitting):
                short = ("its %d unscheduled pod(s) would fit on an empty node but not in the free capacity (%s; "
                         "largest node: %s)" % (len(fitting), fmt_resources(capacity["free"]),
                                                fmt_resources(capacity["largest_node_free"])))
        if short:
            action = "add_capacity"
            reasons.append(short)
            add("TENANT_INSUFFICIENT_CAPACITY", "high", short,
                {"tier": t["tier"], "tier_capacity": tier_fit, "free": capacity["free"],
                 "largest_node_free": capacity["largest_node_free"], "eligible_nodes": capacity["eligible_nodes"]},
                "add_capacity")

    if verdict == "healthy":
        reasons.append("every expected object is present and healthy")
    return verdict, reasons, action, findings, primary


# --------------------------------------------------------------------------------------------
# Analysis of everything


LIST_KEYS = ("namespaces", "deployments", "services", "ingresses", "pvcs", "networkpolicies", "resourcequotas",
             "events", "nodes", "pods")


def analyse(records, raw, params, database_used=True, now=None):
    """The check's result (without api_calls and duration) from the database rows and the lists.

    records: rows of the tenants table (dicts), or None when the database was not read.
    raw: {key: [objects as dicts]} for every key of LIST_KEYS.
    """
    opts = options(params)
    now = now or datetime.now(timezone.utc)
    tiers = _check_tiers(opts["tiers"])
    wanted = set(opts["tenants"] or [])
    prefix, label = opts["namespace_prefix"], opts["tenant_label"]

    ns_by_slug, duplicates = tenant_namespaces(raw.get("namespaces") or [], label, prefix)
    rows = dict((r["slug"], r) for r in (records or []))
    slugs = set(rows)
    if opts["source"] != "database" or not database_used:
        slugs |= set(ns_by_slug)
    if wanted:
        slugs &= wanted
    names = set(_get(ns_by_slug[s], "metadata", "name") for s in slugs if s in ns_by_slug)

    idx = {}
    for key in ("deployments", "services", "ingresses", "pvcs", "networkpolicies", "resourcequotas"):
        idx[key] = index_by_namespace(raw.get(key) or [], names)
    pods_by_ns = dict((n, []) for n in names)
    for pod in raw.get("pods") or []:
        ns = _get(pod, "metadata", "namespace")
        if ns in pods_by_ns:
            pods_by_ns[ns].append(pod)
    events_by_ns = dict((n, []) for n in names)
    for ev in raw.get("events") or []:
        ns = _get(ev, "metadata", "namespace") or _get(ev, "involvedObject", "namespace")
        if ns in events_by_ns:
            events_by_ns[ns].append(ev)

    capacity = analyse_capacity(raw.get("nodes") or [], raw.get("pods") or [], tiers, opts["tolerated_taints"])

    tenants, findings, primaries = [], [], {}
    for slug in sorted(slugs):
        row = rows.get(slug)
        ns_obj = ns_by_slug.get(slug)
        ns_name = _get(ns_obj, "metadata", "name") if ns_obj else prefix + slug
        ns_labels = (_get(ns_obj, "metadata", "labels") or {}) if ns_obj else {}
        tier = (row or {}).get("tier") or ns_labels.get(opts["tier_label"])
        age = row.get("status_age_seconds") if row else None
        entry = {
            "slug": slug, "namespace": ns_name, "tier": tier,
            "in_database": (row is not None) if database_used else None, "in_cluster": ns_obj is not None,
            "status": (row or {}).get("status"), "status_changed_at": (row or {}).get("status_changed_at"),
            "status_age_minutes": round(age / 60.0, 1) if age is not None else None,
            "last_error": (row or {}).get("last_error"),
            "objects": None, "problems": [], "unscheduled_pods": [], "events": [],
            "capacity": capacity["tiers"].get(tier) if tier else None,
        }
        if ns_obj is not None:
            ns_idx = dict((key, idx[key][ns_name]) for key in idx)
            entry["objects"], entry["problems"] = check_objects(ns_obj, ns_idx, opts)
            pods = pods_by_ns[ns_name]
            events = tenant_events(events_by_ns[ns_name], dict((_get(p, "metadata", "name"), p) for p in pods),
                                   ns_idx["pvcs"], now, opts["events_since_minutes"])
            entry["events"] = events[:MAX_EVENTS_PER_TENANT]
            entry["unscheduled_pods"] = unscheduled_pods(pods, events, capacity)
        if slug in duplicates:
            entry.setdefault("duplicate_namespaces", duplicates[slug])
        verdict, reasons, action, tfindings, primary = judge_tenant(entry, opts, capacity, database_used)
        if slug in duplicates:
            reasons.append("several namespaces carry %s=%s: %s (checked %s)" % (
                label, slug, ", ".join(duplicates[slug]), ns_name))
        entry.update(verdict=verdict, reasons=reasons, action=action)
        tenants.append(entry)
        findings.extend(tfindings)
        if primary and (verdict in DOWN_VERDICTS or (verdict == "orphaned" and entry["in_database"])):
            primaries[slug] = primary

    # ---- several tenants down: the guide's "multiple tenant failures" is critical
    if len(primaries) >= opts["multi_tenant_threshold"]:
        down = sorted(primaries)
        for slug in down:
            for f in primaries[slug]:
                f["severity"] = "critical"
        findings.append(finding(
            "TENANTS_MULTIPLE_FAILURES", "critical",
            "%d tenants are stuck, failed or missing their namespace at once: %s. Several tenants failing together "
            "points to a shared cause (capacity, storage, the provisioning service, quotas): escalate immediately."
            % (len(down), ", ".join(down)),
            {"tenants": down, "verdicts": dict((t["slug"], t["verdict"]) for t in tenants if t["slug"] in primaries),
             "threshold": opts["multi_tenant_threshold"]},
            "Escalate (guide: When to Escalate > Critical). Look for the common cause in the findings (e.g. "
            "TENANT_INSUFFICIENT_CAPACITY, TENANT_VOLUME_FAILED) before retrying tenants one by one.",
            tenant=None, namespace=None))

    not_found = sorted(wanted - set(rows) - set(ns_by_slug))
    for slug in not_found:
        findings.append(finding(
            "TENANT_NOT_FOUND", "low", "Tenant %s is neither in the tenants table nor a namespace labelled %s=%s"
            % (slug, label, slug), {"slug": slug, "database_read": database_used}, "Check the slug.",
            tenant=slug, namespace=None))

    summary = dict((v, 0) for v in ("healthy", "provisioning", "degraded", "stuck", "failed", "orphaned"))
    for t in tenants:
        summary[t["verdict"]] += 1
    summary["tenants"] = len(tenants)
    summary["down"] = len(primaries)
    actions = dict((a, [t["slug"] for t in tenants if t["action"] == a]) for a in ACTIONS if a != "none")
    del capacity["_frees"], capacity["_allocs"]
    findings = sort_findings(findings)
    return {
        "changed": False, "tenants": tenants, "summary": summary, "actions": actions, "not_found": not_found,
        "capacity": capacity, "findings": findings, "severity": worst_severity(findings),
        "healthy": not any(f["severity"] in ("critical", "high", "medium") for f in findings),
    }


# --------------------------------------------------------------------------------------------
# Gathering


def read_tenants(params, slugs):
    """Rows of the tenants table (optionally only these slugs), and the seconds it took to connect."""
    conn, seconds = connect(dict(params, application_name=APPLICATION_NAME), read_only=True,
                            session_settings={"statement_timeout": STATEMENT_TIMEOUT_MS,
                                              "lock_timeout": LOCK_TIMEOUT_MS})
    try:
        try:
            if slugs:
                rows = query(conn, TENANTS_FILTERED_SQL, (list(slugs),))
            else:
                rows = query(conn, TENANTS_SQL)
        except PSYCOPG_ERRORS as e:
            text = error_text(e, params.get("login_password"))
            if re.search(r'relation "[^"]*tenants" does not exist|column .* does not exist', text):
                raise DiagnosisError("The database %s at %s has no usable tenants table (%s): is login_db the platform "
                                     "database?" % (params.get("login_db"), endpoint(params), text))
            raise DiagnosisError("Could not read the tenants from the database %s at %s: %s"
                                 % (params.get("login_db"), endpoint(params), text))
    finally:
        close(conn)
    return rows, seconds


def list_calls(api_client, tenant_label):
    """The fixed set of cluster-wide list calls: (key, api call, selectors)."""
    core = CoreV1Api(api_client)
    apps = AppsV1Api(api_client)
    net = NetworkingV1Api(api_client)
    return [
        ("namespaces", core.list_namespace, {"label_selector": tenant_label}),
        ("deployments", apps.list_deployment_for_all_namespaces, {}),
        ("services", core.list_service_for_all_namespaces, {}),
        ("ingresses", net.list_ingress_for_all_namespaces, {}),
        ("pvcs", core.list_persistent_volume_claim_for_all_namespaces, {}),
        ("networkpolicies", net.list_network_policy_for_all_namespaces, {}),
        ("resourcequotas", core.list_resource_quota_for_all_namespaces, {}),
        ("events", core.list_event_for_all_namespaces, {"field_selector": "type=Warning"}),
        ("nodes", core.list_node, {}),
        # Finished pods hold no resources.
        ("pods", core.list_pod_for_all_namespaces, {"field_selector": "status.phase!=Succeeded,status.phase!=Failed"}),
    ]


def gather(api_client, tenant_label, page_size=500, timeout=30, counter=None):
    """Every list, fetched in parallel: {key: [objects as dicts]}."""
    counter = counter if counter is not None else ApiCallCounter()
    calls = list_calls(api_client, tenant_label)
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [(key, pool.submit(list_all, call, counter=counter, page_size=page_size, timeout=timeout,
                                     what=key, **selectors))
                   for key, call, selectors in calls]
        # In the calls' order, so the same failure always gives the same message.
        return dict((key, future.result()) for key, future in futures)


class DatabaseUnavailable(DiagnosisError):
    """The tenants could not be read and the check cannot go on without them."""

    def __init__(self, message, database):
        super(DatabaseUnavailable, self).__init__(message)
        self.database = database


def database_finding(message):
    return finding(
        "TENANTS_DATABASE_UNAVAILABLE", "high",
        "The platform database could not be read, so the tenants are judged from the cluster alone: no status, "
        "no stuck or orphan detection. %s" % message, {"error": message},
        "Diagnose the database (saasodoo_pg_health; restart_service for PostgreSQL), then run the check again.",
        tenant=None, namespace=None)


def run_check(params, api_client=None, counter=None):
    """The database, then the lists, then the analysis. Raises DiagnosisError (DatabaseUnavailable)."""
    opts = options(params)
    _check_tiers(opts["tiers"])  # bad tiers fail before anything is read
    started = time.monotonic()
    source = opts["source"]
    database = {"used": source != "cluster", "connected": False, "connect_seconds": None, "tenants": None,
                "error": None}
    records, extra = None, []
    if source != "cluster":
        try:
            if not HAS_PSYCOPG:
                raise DiagnosisError(missing_required_lib(PSYCOPG_REQUIREMENT))
            records, seconds = read_tenants(params, opts["tenants"])
            database.update(connected=True, connect_seconds=seconds, tenants=len(records))
        except DiagnosisError as e:
            database.update(error="%s" % e, connect_seconds=getattr(e, "seconds", None))
            if source == "both" and opts["database_optional"]:
                extra.append(database_finding("%s" % e))
            elif source == "both":
                raise DatabaseUnavailable(
                    "Cannot read the tenants from the platform database: %s Without it no tenant can be judged "
                    "stuck, failed or orphaned. Fix the database first (saasodoo_pg_health), or run with "
                    "database_optional: true (or source: cluster) to judge the tenants from the cluster alone."
                    % _sentence(e), database)
            else:
                raise DatabaseUnavailable("Cannot read the tenants from the platform database: %s" % e, database)
    counter = counter if counter is not None else ApiCallCounter()
    api_client = api_client or client(params)
    page_size = params.get("page_size")
    raw = gather(api_client, opts["tenant_label"], 500 if page_size is None else int(page_size),
                 int(params.get("request_timeout") or 30), counter)
    database_used = records is not None
    result = analyse(records, raw, params, database_used=database_used)
    if extra:
        result["findings"] = sort_findings(result["findings"] + extra)
        result["severity"] = worst_severity(result["findings"])
        result["healthy"] = False
    result["source"] = source if database_used or source == "cluster" else "cluster"
    result["database"] = database
    result["api_calls"] = counter.calls
    result["api_calls_by_resource"] = dict(counter.by_resource)
    result["duration_seconds"] = round(time.monotonic() - started, 3)
    return result


def _sentence(e):
    text = ("%s" % e).strip()
    return text if text.endswith((".", ")")) else text + "."


def argument_spec():
    spec = dict(K8S_COMMON_ARGS)
    spec.update(
        source=dict(type="str", choices=list(SOURCES), default="both"),
        tenants=dict(type="list", elements="str", default=[]),
        database_optional=dict(type="bool", default=False),
        stuck_after_minutes=dict(type="int", default=15),
        tiers=dict(type="dict", default={}),
        multi_tenant_threshold=dict(type="int", default=2),
        tenant_label=dict(type="str", default="saasodoo.io/tenant"),
        tier_label=dict(type="str", default="saasodoo.io/tier"),
        namespace_prefix=dict(type="str", default="tenant-"),
        deployment_name=dict(type="str", default="odoo"),
        service_name=dict(type="str", default="odoo"),
        ingress_name=dict(type="str", default="odoo"),
        pvc_name=dict(type="str", default="odoo-data"),
        resource_quota_name=dict(type="str", default="tenant-quota"),
        network_policies=dict(type="list", elements="str", default=list(DEFAULTS["network_policies"])),
        tolerated_taints=dict(type="list", elements="str", default=[]),
        events_since_minutes=dict(type="int", default=60),
        page_size=dict(type="int", default=500),
        request_timeout=dict(type="int", default=30),
    )
    for name, value in POSTGRES_COMMON_ARGS.items():
        value = dict(value)
        # `host` is the Kubernetes API server here (K8S_COMMON_ARGS); as an alias of login_host
        # too, one value would silently set both.
        if value.get("aliases"):
            value["aliases"] = [a for a in value["aliases"] if a not in spec]
            if not value["aliases"]:
                del value["aliases"]
        spec[name] = value
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    problem = validate(module.params)
    if problem:
        module.fail_json(msg=problem)
    # fail_json is called outside the except blocks: ansible-core would otherwise attach the
    # pending exception's traceback to the result when tracebacks are enabled.
    error, extra = None, {}
    try:
        result = run_check(module.params)
    except DatabaseUnavailable as e:
        error = "%s" % e
        extra = {"database": e.database}
    except DiagnosisError as e:
        error = "%s" % e
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message; the traceback only with -vvv
        error = "saasodoo_tenant_check failed unexpectedly (please report it): %s: %s" % (
            type(e).__name__, error_text(e, module.params.get("login_password")))
        extra = {"exception": traceback.format_exc()}
    if error is not None:
        module.fail_json(msg=error, **extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
