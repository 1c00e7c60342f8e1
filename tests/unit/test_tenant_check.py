"""saasodoo_tenant_check's judgement, on hand-made rows and objects (no database, no cluster).

analyse() takes the tenants table's rows and the cluster's lists as plain dicts, exactly as the
module gets them, so every verdict can be built here; the real test bed is in
tests/integration/test_tenant_check.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from ansible.plugins.loader import fragment_loader
from ansible.utils.plugin_docs import get_docstring

from plugins.module_utils import saasodoo_findings, saasodoo_redact

# The module imports its helpers as Ansible ships them (ansible.module_utils.<name>); outside
# Ansible, point those names at the project's files before loading it.
sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
sys.modules.setdefault("ansible.module_utils.saasodoo_redact", saasodoo_redact)
from plugins.module_utils import saasodoo_k8s as k8s  # noqa: E402
from plugins.module_utils import saasodoo_k8s_health as k8s_health  # noqa: E402
from plugins.module_utils import saasodoo_pg as pg  # noqa: E402

sys.modules.setdefault("ansible.module_utils.saasodoo_k8s", k8s)
sys.modules.setdefault("ansible.module_utils.saasodoo_k8s_health", k8s_health)
sys.modules.setdefault("ansible.module_utils.saasodoo_pg", pg)
_spec = importlib.util.spec_from_file_location("saasodoo_tenant_check", k8s.__file__.replace(
    "module_utils/saasodoo_k8s.py", "modules/saasodoo_tenant_check.py"))
tc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tc)

DiagnosisError = saasodoo_findings.DiagnosisError
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
GI = 2 ** 30
LABEL = "saasodoo.io/tenant"
TIERS = {
    "basic": {"odoo_replicas": 1, "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
    "premium": {"odoo_replicas": 2, "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
}
NETPOLS = ["default-deny", "allow-from-ingress", "allow-dns-egress", "allow-platform-db-egress"]


# --------------------------------------------------------------------------- hand-made data

def ts(minutes_ago):
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(slug, status="active", tier="basic", minutes=600.0, last_error=None):
    return {"slug": slug, "tier": tier, "status": status, "created_at": "2026-03-01T00:00:00+00:00",
            "updated_at": "2026-03-01T00:00:00+00:00", "status_changed_at": "2026-03-01T02:00:00+00:00",
            "last_error": last_error, "status_age_seconds": minutes * 60.0}


def node(name, cpu="8", memory="32Gi", ready=True, unschedulable=False, taints=None):
    return {"kind": "Node", "metadata": {"name": name},
            "spec": {"unschedulable": unschedulable, "taints": taints or []},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(name, ns, node_name=None, cpu="250m", memory="512Mi", phase=None):
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node_name,
                     "containers": [{"name": "odoo", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
            "status": {"phase": phase or ("Running" if node_name else "Pending")}}


def event(ns, reason, message, kind="Pod", name="odoo-1", minutes_ago=1):
    return {"kind": "Event", "metadata": {"name": "%s.%s" % (name, reason), "namespace": ns},
            "involvedObject": {"kind": kind, "name": name, "namespace": ns}, "reason": reason,
            "message": message, "type": "Warning", "count": 3, "lastTimestamp": ts(minutes_ago)}


def meta(name, ns, **labels):
    return {"name": name, "namespace": ns, "labels": labels}


def tenant_objects(slug, ready=None, replicas=1, pvc_phase="Bound", netpols=NETPOLS, quota=True,
                   service=True, ingress=True, deployment=True, terminating=False, tier="basic"):
    """The lists of a tenant as the sample platform creates it (plus what is asked to be broken)."""
    ns = "tenant-" + slug
    namespace = {"kind": "Namespace", "metadata": {"name": ns, "labels": {LABEL: slug, "saasodoo.io/tier": tier}},
                 "status": {"phase": "Terminating" if terminating else "Active"}}
    out = {"namespaces": [namespace], "deployments": [], "services": [], "ingresses": [], "pvcs": [],
           "networkpolicies": [], "resourcequotas": [], "pods": [], "events": []}
    if deployment:
        out["deployments"].append({"kind": "Deployment", "metadata": meta("odoo", ns), "spec": {"replicas": replicas},
                                   "status": {"readyReplicas": replicas if ready is None else ready}})
    if service:
        out["services"].append({"kind": "Service", "metadata": meta("odoo", ns)})
    if ingress:
        out["ingresses"].append({"kind": "Ingress", "metadata": meta("odoo", ns),
                                 "spec": {"rules": [{"host": slug + ".example.com"}]}})
    if pvc_phase:
        out["pvcs"].append({"kind": "PersistentVolumeClaim", "metadata": meta("odoo-data", ns),
                            "status": {"phase": pvc_phase}})
    for name in netpols:
        out["networkpolicies"].append({"kind": "NetworkPolicy", "metadata": meta(name, ns)})
    if quota:
        out["resourcequotas"].append({"kind": "ResourceQuota", "metadata": meta("tenant-quota", ns),
                                      "status": {"hard": {"pods": "10"}, "used": {"pods": "1"}}})
    return out


def cluster(*parts, nodes=None):
    raw = {key: [] for key in tc.LIST_KEYS}
    raw["nodes"] = nodes if nodes is not None else [node("n1"), node("n2"), node("n3")]
    for part in parts:
        for key, items in part.items():
            raw[key].extend(items)
    return raw


def run(records, raw, database_used=True, **params):
    params.setdefault("tiers", TIERS)
    return tc.analyse(records, raw, params, database_used=database_used, now=NOW)


def tenant(result, slug):
    return next(t for t in result["tenants"] if t["slug"] == slug)


def codes(result, slug=None):
    return sorted(f["code"] for f in result["findings"] if slug is None or f.get("tenant") == slug)


def one(result, code, slug=None):
    found = [f for f in result["findings"] if f["code"] == code and (slug is None or f.get("tenant") == slug)]
    assert len(found) == 1, (code, codes(result))
    return found[0]


# --------------------------------------------------------------------------- quantities, capacity

@pytest.mark.parametrize("text, value", [
    ("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("512Mi", 512 * 2 ** 20), ("1Gi", GI), ("1G", 1e9),
    ("128974848", 128974848.0), ("1e3", 1000.0), ("100k", 1e5), (None, 0.0), (3, 3.0),
])
def test_parse_quantity(text, value):
    assert tc.parse_quantity(text) == pytest.approx(value)


def test_parse_quantity_rejects_garbage_with_a_message():
    with pytest.raises(DiagnosisError, match="not a Kubernetes quantity"):
        tc.parse_quantity("lots", "tiers.basic cpu request")


def test_pod_requests_count_init_containers_sidecars_and_overhead():
    p = pod("p", "ns", cpu="100m", memory="100Mi")
    p["spec"]["initContainers"] = [
        {"name": "migrate", "resources": {"requests": {"cpu": "2", "memory": "10Mi"}}},
        {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}}},
    ]
    p["spec"]["overhead"] = {"cpu": "10m"}
    req = tc.pod_requests(p)
    assert req["cpu"] == pytest.approx(2.01)  # the init container (2) outweighs 100m + 50m sidecar
    assert req["memory"] == 150 * 2 ** 20


def test_capacity_counts_only_ready_schedulable_untainted_nodes():
    nodes = [node("ok"), node("down", ready=False), node("cordoned", unschedulable=True),
             node("cp", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
             node("soft", taints=[{"key": "x", "effect": "PreferNoSchedule"}])]
    pods = [pod("a", "ns", "ok", cpu="3", memory="8Gi"), pod("b", "ns", "down", cpu="1"),
            pod("done", "ns", "ok", cpu="4", phase="Succeeded")]
    cap = tc.analyse_capacity(nodes, pods, tc._check_tiers(TIERS), [])
    by = {n["name"]: n for n in cap["nodes"]}
    assert [n for n in by if by[n]["eligible"]] == ["ok", "soft"]
    assert "not Ready" in by["down"]["reason"] and "cordoned" in by["cordoned"]["reason"]
    assert "control-plane" in by["cp"]["reason"]
    assert cap["free"] == {"cpu": 13.0, "memory": 56 * GI}
    assert by["ok"]["requested"]["cpu"] == 3.0  # the Succeeded pod holds nothing
    tolerated = tc.analyse_capacity(nodes, pods, {}, ["node-role.kubernetes.io/control-plane"])
    assert tolerated["eligible_nodes"] == 3


def test_tier_fit_is_per_node_not_just_the_sum():
    # 3 nodes with 0.4 CPU free each: 1.2 CPU free in total, yet no node takes a 500m replica.
    nodes = [node("n%d" % i, cpu="1") for i in range(3)]
    pods = [pod("p%d" % i, "ns", "n%d" % i, cpu="600m") for i in range(3)]
    cap = tc.analyse_capacity(nodes, pods, tc._check_tiers(TIERS), [])
    assert cap["free"]["cpu"] == pytest.approx(1.2)
    assert cap["tiers"]["premium"] == dict(cap["tiers"]["premium"], fits=False, placeable_replicas=0)
    assert cap["tiers"]["basic"]["fits"] is True


def test_bad_tiers_are_refused_with_a_message():
    with pytest.raises(DiagnosisError, match="tiers.gold: resources.requests"):
        tc._check_tiers({"gold": {"odoo_replicas": 1}})
    with pytest.raises(DiagnosisError, match="not a Kubernetes quantity"):
        tc._check_tiers({"gold": {"resources": {"requests": {"cpu": "fast"}}}})


# --------------------------------------------------------------------------- verdicts

def test_seeded_like_tenants_are_healthy():
    raw = cluster(tenant_objects("acme", replicas=2, tier="premium"), tenant_objects("globex"))
    result = run([row("acme", tier="premium"), row("globex")], raw)
    assert [tenant(result, s)["verdict"] for s in ("acme", "globex")] == ["healthy", "healthy"]
    assert [tenant(result, s)["action"] for s in ("acme", "globex")] == ["none", "none"]
    assert result["findings"] == [] and result["healthy"] is True and result["severity"] == "none"
    assert result["summary"]["healthy"] == 2 and result["actions"]["retry"] == []


def stuck_cluster(slug="tc-stuck", cpu="64"):
    ns = "tenant-" + slug
    part = tenant_objects(slug, ready=0, replicas=1, service=False, ingress=False, pvc_phase=None, netpols=[],
                          quota=False, tier="premium")
    part["pods"] = [pod("odoo-abc", ns, cpu=cpu, memory="1Gi")]
    part["events"] = [event(ns, "FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu. preemption: "
                            "0/3 nodes are available: 3 No preemption victims found for incoming pod.",
                            name="odoo-abc")]
    return part


def test_stuck_in_provisioning_with_failed_scheduling_and_room_for_the_tier_is_a_retry():
    result = run([row("tc-stuck", "provisioning", "premium", minutes=30)], cluster(stuck_cluster()))
    t = tenant(result, "tc-stuck")
    assert (t["verdict"], t["action"]) == ("stuck", "retry")
    stuck = one(result, "TENANT_STUCK_PROVISIONING")
    assert stuck["severity"] == "high" and stuck["evidence"]["status_age_minutes"] == 30.0
    unsched = one(result, "TENANT_UNSCHEDULABLE")
    assert "Insufficient cpu" in unsched["evidence"]["event_message"]
    assert unsched["evidence"]["pods"] == [{"name": "odoo-abc", "requests": {"cpu": 64.0, "memory": GI},
                                            "fits_any_node": False}]
    assert "TENANT_INSUFFICIENT_CAPACITY" not in codes(result)
    assert any("more than any schedulable node" in r for r in t["reasons"])
    assert any("adding nodes would not help" in r for r in t["reasons"])
    assert one(result, "TENANT_OBJECT_MISSING")["severity"] == "medium"
    assert result["actions"]["retry"] == ["tc-stuck"]


def test_stuck_tenant_whose_tier_does_not_fit_needs_capacity():
    # Each node has 0.3 CPU left: a premium replica (500m) fits nowhere.
    nodes = [node("n%d" % i, cpu="1") for i in range(3)]
    busy = {"pods": [pod("busy%d" % i, "other", "n%d" % i, cpu="700m") for i in range(3)]}
    result = run([row("tc-stuck", "provisioning", "premium", minutes=30)],
                 cluster(stuck_cluster(cpu="500m"), busy, nodes=nodes))
    t = tenant(result, "tc-stuck")
    assert (t["verdict"], t["action"]) == ("stuck", "add_capacity")
    cap = one(result, "TENANT_INSUFFICIENT_CAPACITY")
    assert cap["severity"] == "high" and cap["evidence"]["tier_capacity"]["placeable_replicas"] == 0
    assert "add nodes" in cap["remediation"].lower()


def test_unknown_tier_judges_capacity_from_the_waiting_pods():
    nodes = [node("n1", cpu="2")]
    busy = {"pods": [pod("busy", "other", "n1", cpu="1800m")]}
    result = run([row("tc-stuck", "provisioning", "gold", minutes=30)],
                 cluster(stuck_cluster(cpu="1"), busy, nodes=nodes), tiers={})
    assert tenant(result, "tc-stuck")["action"] == "add_capacity"  # 1 CPU fits an empty node, not the free 0.2
    result = run([row("tc-stuck", "provisioning", "gold", minutes=30)],
                 cluster(stuck_cluster(cpu="64"), busy, nodes=nodes), tiers={})
    assert tenant(result, "tc-stuck")["action"] == "retry"  # 64 CPU fits no node: more nodes would not help


def test_recent_provisioning_is_in_progress_not_stuck():
    part = stuck_cluster()
    result = run([row("tc-new", "provisioning", "premium", minutes=3), row("tc-stuck", "pending", minutes=5)],
                 cluster(part))
    assert (tenant(result, "tc-new")["verdict"], tenant(result, "tc-new")["action"]) == ("provisioning", "none")
    assert tenant(result, "tc-new")["in_cluster"] is False
    assert tenant(result, "tc-stuck")["verdict"] == "provisioning"
    assert "TENANT_STUCK_PROVISIONING" not in codes(result)
    assert "TENANT_UNSCHEDULABLE" not in codes(result)  # pods wait for nodes while provisioning runs


def test_pending_for_too_long_without_namespace_is_stuck():
    result = run([row("tc-p", "pending", minutes=45)], cluster())
    t = tenant(result, "tc-p")
    assert (t["verdict"], t["action"]) == ("stuck", "retry")
    assert codes(result) == ["TENANT_STUCK_PROVISIONING"]


def test_namespace_without_record_is_an_orphan_to_clean_up():
    result = run([row("acme")], cluster(tenant_objects("acme"), tenant_objects("ghost")))
    t = tenant(result, "ghost")
    assert (t["verdict"], t["action"], t["in_database"]) == ("orphaned", "cleanup", False)
    f = one(result, "TENANT_ORPHANED_NAMESPACE")
    assert f["severity"] == "medium" and f["tenant"] == "ghost" and f["namespace"] == "tenant-ghost"
    assert result["actions"]["cleanup"] == ["ghost"] and result["summary"]["down"] == 0


def test_orphan_namespace_already_being_deleted_needs_nothing():
    result = run([], cluster(tenant_objects("ghost", terminating=True)))
    assert (tenant(result, "ghost")["verdict"], tenant(result, "ghost")["action"]) == ("orphaned", "none")
    assert result["findings"] == []


@pytest.mark.parametrize("status", ["provisioning", "active"])
def test_record_without_namespace_is_missing_its_namespace(status):
    result = run([row("tc-half", status, minutes=40)], cluster())
    t = tenant(result, "tc-half")
    assert (t["verdict"], t["action"], t["in_cluster"]) == ("orphaned", "retry", False)
    f = one(result, "TENANT_MISSING_NAMESPACE")
    assert f["severity"] == "high" and f["evidence"]["namespace"] == "tenant-tc-half"
    assert result["summary"]["down"] == 1


def test_failed_tenant_with_leftovers_is_cleanup_and_retry_without_is_retry():
    raw = cluster(tenant_objects("tc-f1", ready=0))
    result = run([row("tc-f1", "failed", last_error="timeout waiting for odoo"), row("tc-f2", "failed")], raw,
                 multi_tenant_threshold=5)
    assert (tenant(result, "tc-f1")["verdict"], tenant(result, "tc-f1")["action"]) == ("failed", "cleanup_and_retry")
    assert (tenant(result, "tc-f2")["verdict"], tenant(result, "tc-f2")["action"]) == ("failed", "retry")
    f1 = one(result, "TENANT_FAILED", "tc-f1")
    assert f1["severity"] == "high" and "timeout waiting for odoo" in f1["message"]
    assert f1["evidence"]["last_error"] == "timeout waiting for odoo"


def test_active_tenant_not_serving_is_failed_partially_ready_is_degraded():
    raw = cluster(tenant_objects("down", ready=0), tenant_objects("half", replicas=2, ready=1, tier="premium"),
                  tenant_objects("noingress", ingress=False))
    result = run([row("down"), row("half", tier="premium"), row("noingress")], raw, multi_tenant_threshold=5)
    assert (tenant(result, "down")["verdict"], tenant(result, "down")["action"]) == ("failed", "retry")
    assert one(result, "TENANT_NOT_READY", "down")["severity"] == "high"
    assert tenant(result, "half")["verdict"] == "degraded"
    assert one(result, "TENANT_NOT_READY", "half")["severity"] == "medium"
    assert tenant(result, "noingress")["verdict"] == "failed"
    assert one(result, "TENANT_OBJECT_MISSING", "noingress")["severity"] == "high"
    assert result["summary"]["down"] == 2


def test_missing_isolation_objects_degrade_a_serving_tenant():
    raw = cluster(tenant_objects("acme", netpols=["default-deny"], quota=False))
    result = run([row("acme")], raw)
    t = tenant(result, "acme")
    assert (t["verdict"], t["action"]) == ("degraded", "retry")
    f = one(result, "TENANT_OBJECT_MISSING")
    assert f["severity"] == "medium"
    assert t["objects"]["network_policies"]["missing"] == NETPOLS[1:]
    assert t["objects"]["resource_quota"]["present"] is False


def test_several_tenants_down_escalate_to_critical():
    raw = cluster(stuck_cluster("tc-a"), stuck_cluster("tc-b"))
    records = [row("tc-a", "provisioning", "premium", 30), row("tc-b", "provisioning", "premium", 30),
               row("tc-c", "active", minutes=30)]
    result = run(records, raw)
    multi = one(result, "TENANTS_MULTIPLE_FAILURES")
    assert multi["severity"] == "critical" and multi["evidence"]["tenants"] == ["tc-a", "tc-b", "tc-c"]
    assert [f["severity"] for f in result["findings"] if f["code"] == "TENANT_STUCK_PROVISIONING"] == ["critical"] * 2
    assert one(result, "TENANT_MISSING_NAMESPACE")["severity"] == "critical"
    assert all(f["severity"] == "high" for f in result["findings"] if f["code"] == "TENANT_UNSCHEDULABLE")
    assert result["severity"] == "critical"
    # Filtered to one tenant, it is one tenant down again: high.
    single = run(records, raw, tenants=["tc-a"])
    assert codes(single) == ["TENANT_OBJECT_MISSING", "TENANT_STUCK_PROVISIONING", "TENANT_UNSCHEDULABLE"]
    assert one(single, "TENANT_STUCK_PROVISIONING")["severity"] == "high"
    assert run(records, raw, multi_tenant_threshold=4)["severity"] == "high"


def test_old_or_resolved_scheduling_events_do_not_count():
    part = tenant_objects("acme")
    part["pods"] = [pod("odoo-new", "tenant-acme", "n1")]
    part["events"] = [event("tenant-acme", "FailedScheduling", "0/3 nodes are available", name="odoo-gone")]
    result = run([row("acme")], cluster(part))
    assert tenant(result, "acme")["verdict"] == "healthy" and result["findings"] == []
    assert tenant(result, "acme")["events"][0]["current"] is False
    # Stuck, but the only scheduling event is 2 hours old: listed nowhere.
    stuck = stuck_cluster()
    stuck["events"][0]["lastTimestamp"] = ts(120)
    result = run([row("tc-stuck", "provisioning", "premium", 30)], cluster(stuck))
    assert "TENANT_UNSCHEDULABLE" not in codes(result) and tenant(result, "tc-stuck")["events"] == []
    result = run([row("tc-stuck", "provisioning", "premium", 30)], cluster(stuck), events_since_minutes=0)
    assert "TENANT_UNSCHEDULABLE" in codes(result)


def test_quota_exceeded_and_volume_failures_explain_a_stuck_tenant():
    ns = "tenant-tc-q"
    part = tenant_objects("tc-q", ready=0, pvc_phase="Pending")
    part["events"] = [
        event(ns, "FailedCreate", 'pods "odoo-x" is forbidden: exceeded quota: tenant-quota, requested: '
              "requests.cpu=2, used: requests.cpu=0, limited: requests.cpu=1", kind="ReplicaSet", name="odoo-x"),
        event(ns, "ProvisioningFailed", "storageclass.storage.k8s.io \"fast\" not found",
              kind="PersistentVolumeClaim", name="odoo-data"),
    ]
    result = run([row("tc-q", "provisioning", minutes=20)], cluster(part))
    t = tenant(result, "tc-q")
    assert (t["verdict"], t["action"]) == ("stuck", "cleanup_and_retry")  # a claim's spec cannot be changed
    assert "exceeded quota" in one(result, "TENANT_QUOTA_EXCEEDED")["evidence"]["event_message"]
    assert one(result, "TENANT_VOLUME_FAILED")["evidence"]["pvc"]["phase"] == "Pending"


def test_source_cluster_judges_namespaces_without_records():
    raw = cluster(tenant_objects("acme"), tenant_objects("ghost", ready=0))
    result = run(None, raw, database_used=False, source="cluster")
    assert tenant(result, "acme")["verdict"] == "healthy" and tenant(result, "acme")["in_database"] is None
    assert tenant(result, "ghost")["verdict"] == "failed"  # no orphan without the database to compare
    assert "TENANT_ORPHANED_NAMESPACE" not in codes(result)


def test_source_database_leaves_unrecorded_namespaces_out():
    raw = cluster(tenant_objects("acme"), tenant_objects("ghost"))
    result = run([row("acme")], raw, source="database")
    assert [t["slug"] for t in result["tenants"]] == ["acme"]


def test_tenant_filter_and_unknown_slugs():
    raw = cluster(tenant_objects("acme"), tenant_objects("globex"))
    result = run([row("acme"), row("globex")], raw, tenants=["globex", "nope"])
    assert [t["slug"] for t in result["tenants"]] == ["globex"]
    assert result["not_found"] == ["nope"]
    assert one(result, "TENANT_NOT_FOUND")["severity"] == "low" and result["healthy"] is True


def test_duplicate_slug_prefers_the_prefixed_namespace():
    dup = tenant_objects("acme")
    other = {"namespaces": [{"kind": "Namespace", "metadata": {"name": "aaa-acme", "labels": {LABEL: "acme"}},
                             "status": {"phase": "Active"}}]}
    result = run([row("acme")], cluster(other, dup))
    t = tenant(result, "acme")
    assert t["namespace"] == "tenant-acme" and t["verdict"] == "healthy"
    assert any("several namespaces" in r for r in t["reasons"])


def test_result_is_json_serialisable():
    result = run([row("tc-stuck", "provisioning", "premium", 30)], cluster(stuck_cluster(), tenant_objects("x")))
    json.dumps(result)
    assert "_frees" not in result["capacity"]


# --------------------------------------------------------------------------- gathering, failures, options

def fake_calls(raw, pages=None):
    """List calls that answer from `raw` the way the API does (bytes of a JSON list), recording the kwargs."""
    seen = []

    def make(key):
        kind = {"pvcs": "PersistentVolumeClaim", "networkpolicies": "NetworkPolicy", "ingresses": "Ingress",
                "resourcequotas": "ResourceQuota", "namespaces": "Namespace"}.get(key, key[:-1].capitalize())

        def call(_preload_content=False, _request_timeout=None, **kwargs):
            seen.append((key, kwargs))

            class Response:
                data = json.dumps({"kind": kind + "List", "metadata": {}, "items": raw[key]}).encode()
            return Response()
        call.__name__ = "list_" + key
        return call
    return [(key, make(key), sel) for key, sel in
            (("namespaces", {"label_selector": LABEL}), ("deployments", {}), ("services", {}), ("ingresses", {}),
             ("pvcs", {}), ("networkpolicies", {}), ("resourcequotas", {}),
             ("events", {"field_selector": "type=Warning"}), ("nodes", {}), ("pods", {}))], seen


@pytest.mark.parametrize("tenants", [3, 60])
def test_the_number_of_api_calls_does_not_depend_on_the_tenants(monkeypatch, tenants):
    raw = cluster(*[tenant_objects("t%d" % i) for i in range(tenants)])
    calls, seen = fake_calls(raw)
    monkeypatch.setattr(tc, "list_calls", lambda api_client, label: calls)
    monkeypatch.setattr(tc, "read_tenants", lambda params, slugs: ([row("t%d" % i) for i in range(tenants)], 0.01))
    result = tc.run_check({"tiers": TIERS}, api_client=object())
    assert result["api_calls"] == 10 and len(seen) == 10
    assert result["summary"]["healthy"] == tenants
    assert dict(seen)["namespaces"]["label_selector"] == LABEL
    assert dict(seen)["events"]["field_selector"] == "type=Warning"


def unreachable(params, slugs):
    raise pg.PgConnectError("PostgreSQL at 127.0.0.1:1 refused the connection: is it running?", "refused",
                            "127.0.0.1:1", seconds=0.01)


def test_database_down_with_source_both_fails_clearly(monkeypatch):
    monkeypatch.setattr(tc, "read_tenants", unreachable)
    monkeypatch.setattr(tc, "client", lambda params: pytest.fail("the cluster must not be asked"))
    with pytest.raises(tc.DatabaseUnavailable) as err:
        tc.run_check({"source": "both"})
    assert "refused the connection" in str(err.value) and "database_optional: true" in str(err.value)
    assert err.value.database["error"].startswith("PostgreSQL at 127.0.0.1:1")
    with pytest.raises(tc.DatabaseUnavailable, match="refused the connection"):
        tc.run_check({"source": "database"})


def test_database_optional_goes_on_with_the_cluster_and_says_so(monkeypatch):
    calls, _ = fake_calls(cluster(tenant_objects("acme")))
    monkeypatch.setattr(tc, "list_calls", lambda api_client, label: calls)
    monkeypatch.setattr(tc, "read_tenants", unreachable)
    result = tc.run_check({"source": "both", "database_optional": True, "tiers": TIERS}, api_client=object())
    assert result["source"] == "cluster" and result["database"]["connected"] is False
    assert one(result, "TENANTS_DATABASE_UNAVAILABLE")["severity"] == "high"
    assert tenant(result, "acme")["verdict"] == "healthy" and result["healthy"] is False


def test_source_cluster_never_touches_the_database(monkeypatch):
    calls, _ = fake_calls(cluster(tenant_objects("acme")))
    monkeypatch.setattr(tc, "list_calls", lambda api_client, label: calls)
    monkeypatch.setattr(tc, "read_tenants", lambda *a: pytest.fail("the database must not be asked"))
    result = tc.run_check({"source": "cluster"}, api_client=object())
    assert result["database"]["used"] is False and tenant(result, "acme")["verdict"] == "healthy"


def merged_documentation(module):
    """The module's DOCUMENTATION with its doc fragments (plugins/doc_fragments) merged in, as ansible-doc shows it."""
    fragment_loader.add_directory(str(Path(__file__).resolve().parents[2] / "plugins" / "doc_fragments"))
    return get_docstring(module.__file__, fragment_loader, is_module=True)[0]


def test_argument_spec_matches_the_documentation():
    spec = tc.argument_spec()
    doc = merged_documentation(tc)["options"]
    assert sorted(spec) == sorted(doc)
    for name, opt in spec.items():
        assert opt.get("type", "str") == doc[name].get("type", "str"), name
        assert opt.get("default") == doc[name].get("default"), name
        assert sorted(opt.get("aliases", [])) == sorted(doc[name].get("aliases", [])), name
        assert opt.get("choices") == doc[name].get("choices"), name
    # `host` is the API server: it must not also be an alias of login_host.
    assert "aliases" not in spec["login_host"]
    assert spec["login_password"]["no_log"] is True and spec["api_key"]["no_log"] is True
    yaml.safe_load(tc.EXAMPLES)
    yaml.safe_load(tc.RETURN)


@pytest.mark.parametrize("params, message", [
    ({"stuck_after_minutes": -1}, "stuck_after_minutes must be 0 or more"),
    ({"multi_tenant_threshold": 0}, "multi_tenant_threshold must be 1 or more"),
    ({"tenant_label": ""}, "tenant_label must not be empty"),
])
def test_validate(params, message):
    base = {"tenant_label": LABEL}
    base.update(params)
    assert message in tc.validate(base)
