"""saasodoo_snapshot's grouping and analysis, with hand-made objects and fake list calls (no cluster)."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import datetime, timedelta, timezone

import pytest
import urllib3
from kubernetes.client.rest import ApiException

from plugins.filter import saasodoo as filters
from plugins.module_utils import saasodoo_findings

# The module imports its helpers as Ansible ships them (ansible.module_utils.<name>); outside
# Ansible, point those names at the project's files before loading it.
sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
from plugins.module_utils import saasodoo_k8s as k8s  # noqa: E402
from plugins.module_utils import saasodoo_k8s_health as k8s_health  # noqa: E402

sys.modules.setdefault("ansible.module_utils.saasodoo_k8s", k8s)
sys.modules.setdefault("ansible.module_utils.saasodoo_k8s_health", k8s_health)
_spec = importlib.util.spec_from_file_location("saasodoo_snapshot", k8s.__file__.replace(
    "module_utils/saasodoo_k8s.py", "modules/saasodoo_snapshot.py"))
snap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(snap)

DiagnosisError = saasodoo_findings.DiagnosisError
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- hand-made objects

def pod(name, ns="saasodoo-system", labels=None, phase="Running", ready=True, restarts=0, waiting=None,
        last=None, exit_code=None, deleting=False, node="node-1", cpu=None, memory=None, init_cpu=None):
    cs = {"name": "app", "restartCount": restarts,
          "state": {"waiting": {"reason": waiting}} if waiting else {"running": {}}}
    if last:
        cs["lastState"] = {"terminated": {"reason": last, "exitCode": exit_code}}
    meta = {"name": name, "namespace": ns, "labels": labels if labels is not None else {"app": "backend"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    spec = {"nodeName": node, "containers": [{"name": "app", "resources": {"requests": requests}}]}
    if init_cpu:
        spec["initContainers"] = [{"name": "init", "resources": {"requests": {"cpu": init_cpu}}}]
    return {"kind": "Pod", "metadata": meta, "spec": spec,
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [cs]}}


def deployment(name="saasodoo-backend", ns="saasodoo-system", replicas=2, ready=2, match=None, kind="Deployment"):
    obj = {"kind": kind,
           "metadata": {"name": name, "namespace": ns, "generation": 1},
           "spec": {"replicas": replicas, "selector": {"matchLabels": match or {"app": "backend"}}},
           "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": ready,
                      "updatedReplicas": replicas, "availableReplicas": ready}}
    if kind == "DaemonSet":
        obj["status"].update({"desiredNumberScheduled": replicas, "numberReady": ready,
                              "updatedNumberScheduled": replicas, "numberAvailable": ready})
    return obj


def node(name="node-1", ready=True, pressure=(), cordoned=False, cpu="8", memory="32Gi", pods="110"):
    conds = [{"type": "Ready", "status": "True" if ready else "False",
              "reason": "KubeletReady" if ready else "NodeStatusUnknown",
              "message": "" if ready else "kubelet stopped"}]
    conds += [{"type": t, "status": "True" if t in pressure else "False"}
              for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]
    return {"kind": "Node", "metadata": {"name": name}, "spec": {"unschedulable": cordoned} if cordoned else {},
            "status": {"conditions": conds, "allocatable": {"cpu": cpu, "memory": memory, "pods": pods}}}


def tenant_ns(slug, terminating=False):
    obj = {"kind": "Namespace", "metadata": {"name": f"tenant-{slug}", "labels": {"saasodoo.io/tenant": slug}},
           "status": {"phase": "Terminating" if terminating else "Active"}}
    return obj


def pvc(name, ns, phase="Bound"):
    return {"kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": ns},
            "spec": {"storageClassName": "local", "resources": {"requests": {"storage": "5Gi"}}},
            "status": {"phase": phase}}


def event(ns, kind, name, reason="BackOff", minutes_ago=5, count=3):
    seen = (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"kind": "Event", "metadata": {"name": f"{name}.1", "namespace": ns},
            "involvedObject": {"kind": kind, "name": name, "namespace": ns},
            "reason": reason, "message": f"{reason} on {name}", "count": count, "type": "Warning",
            "lastTimestamp": seen}


COMPONENTS = {
    "backend": {"kind": "Deployment", "name": "saasodoo-backend", "namespace": "saasodoo-system",
                "layer": "backend", "critical": True, "replicas": 2},
    "grafana": {"kind": "Deployment", "name": "grafana", "namespace": "monitoring",
                "layer": "monitoring", "critical": False, "replicas": 1},
}


def platform(**overrides):
    """A healthy little platform: two nodes, backend and grafana, tenants acme and globex."""
    raw = {
        "nodes": [node("node-1"), node("node-2")],
        "namespaces": [tenant_ns("acme"), tenant_ns("globex")],
        "pods": [pod("backend-a"), pod("backend-b", node="node-2"),
                 pod("grafana-a", ns="monitoring", labels={"app": "grafana"}),
                 pod("odoo-a", ns="tenant-acme", labels={"app": "odoo"}),
                 pod("odoo-g", ns="tenant-globex", labels={"app": "odoo"})],
        "deployments": [deployment(), deployment("grafana", "monitoring", 1, 1, {"app": "grafana"}),
                        deployment("odoo", "tenant-acme", 1, 1, {"app": "odoo"}),
                        deployment("odoo", "tenant-globex", 1, 1, {"app": "odoo"})],
        "statefulsets": [], "daemonsets": [],
        "pvcs": [pvc("odoo-data", "tenant-acme"), pvc("odoo-data", "tenant-globex")],
        "events": [],
    }
    raw.update(overrides)
    return raw


def analyse(raw, **params):
    params.setdefault("components", COMPONENTS)
    return snap.analyse(raw, params, now=NOW)


def codes(result):
    return {(f["code"], f["component"] or f["tenant"] or f["ref"]) for f in result["findings"]}


# --------------------------------------------------------------------------- same findings as the filters

def test_component_findings_match_platform_diagnosis():
    """Same objects, same (code, component, severity) as the filter the playbooks use today."""
    raw = platform(
        pods=[pod("backend-a", ready=False, restarts=6, waiting="CrashLoopBackOff", last="OOMKilled", exit_code=137),
              pod("backend-b", ready=False, restarts=6, waiting="CrashLoopBackOff", last="Error", exit_code=1)],
        deployments=[deployment(ready=0), deployment("grafana", "monitoring", 0, 0, {"app": "grafana"})])
    comps = dict(COMPONENTS, redis={"kind": "Deployment", "name": "redis", "namespace": "saasodoo-system",
                                    "layer": "data", "critical": True})
    diag = filters.platform_diagnosis(raw["nodes"], comps, raw["deployments"], raw["pods"], ["nodes"])
    result = analyse(raw, components=comps, namespaces=["saasodoo-system", "monitoring"])
    theirs = {(f["code"], f["component"], f["severity"]) for f in diag["findings"]}
    mine = {(f["code"], f["component"], f["severity"]) for f in result["findings"]}
    assert theirs == mine == {("WORKLOAD_OOMKILLED", "backend", "critical"),
                              ("WORKLOAD_SCALED_TO_ZERO", "grafana", "high"),
                              ("WORKLOAD_MISSING", "redis", "critical")}


# --------------------------------------------------------------------------- components

def test_healthy_platform_has_no_findings():
    result = analyse(platform())
    assert result["findings"] == [] and result["severity"] == "none" and result["healthy"] is True
    assert result["components"]["backend"]["ready_replicas"] == 2
    assert [p["name"] for p in result["components"]["backend"]["pods"]] == ["backend-a", "backend-b"]
    assert result["summary"]["tenants"] == 2 and result["summary"]["pods_unhealthy"] == 0


def test_oomkilled_component_names_the_exit_code():
    raw = platform()
    raw["pods"][0] = pod("backend-a", ready=False, restarts=4, waiting="CrashLoopBackOff", last="OOMKilled",
                         exit_code=137)
    raw["deployments"][0] = deployment(ready=1)
    result = analyse(raw)
    oom = next(f for f in result["findings"] if f["code"] == "WORKLOAD_OOMKILLED")
    assert (oom["component"], oom["severity"], oom["layer"]) == ("backend", "critical", "backend")
    assert any("OOMKilled (exit code 137)" in line for line in oom["evidence"])
    assert result["severity"] == "critical" and result["healthy"] is False
    bad = result["pods_unhealthy"]
    assert [(p["name"], p["component"], p["waiting_reason"], p["last_termination"]["exit_code"]) for p in bad] == [
        ("backend-a", "backend", "CrashLoopBackOff", 137)]


def test_crashloop_and_unavailable_components():
    raw = platform()
    raw["pods"][0] = pod("backend-a", ready=False, restarts=5, waiting="CrashLoopBackOff", last="Error", exit_code=1)
    raw["deployments"][1] = deployment("grafana", "monitoring", 1, 0, {"app": "grafana"})
    raw["pods"][2] = pod("grafana-a", ns="monitoring", labels={"app": "grafana"}, ready=False)
    result = analyse(raw)
    assert {("WORKLOAD_CRASHLOOP", "backend"), ("WORKLOAD_UNAVAILABLE", "grafana")} <= codes(result)
    assert next(f for f in result["findings"] if f["component"] == "grafana")["severity"] == "high"


def test_pods_are_matched_by_the_workloads_selector_in_its_namespace():
    raw = platform()
    raw["pods"] += [pod("frontend-a", labels={"app": "frontend"}, ready=False),           # same ns, other app
                    pod("backend-x", ns="elsewhere", ready=False)]                         # same labels, other ns
    raw["deployments"][0]["spec"]["selector"] = {"matchLabels": {"app": "backend"},
                                                 "matchExpressions": [{"key": "track", "operator": "DoesNotExist"}]}
    raw["pods"].append(pod("backend-canary", labels={"app": "backend", "track": "canary"}, ready=False))
    result = analyse(raw)
    assert [p["name"] for p in result["components"]["backend"]["pods"]] == ["backend-a", "backend-b"]
    assert result["components"]["backend"]["healthy"] is True
    owners = {p["name"]: p["component"] for p in result["pods_unhealthy"]}
    assert owners == {"frontend-a": None, "backend-x": None, "backend-canary": None}


def test_unwatched_component_is_not_judged():
    result = analyse(platform(deployments=[]), namespaces=["monitoring"])
    assert result["components"]["backend"]["watched"] is False
    assert ("WORKLOAD_MISSING", "backend") not in codes(result)
    assert ("WORKLOAD_MISSING", "grafana") in codes(result)
    assert result["tenants"] == {}, "tenant namespaces are not watched either"


def test_bad_component_definition_is_a_clear_error():
    with pytest.raises(DiagnosisError, match="component web lacks namespace"):
        analyse(platform(), components={"web": {"kind": "Deployment", "name": "web"}})
    with pytest.raises(DiagnosisError, match="kind CronJob is not one of"):
        analyse(platform(), components={"web": {"kind": "CronJob", "name": "web", "namespace": "x"}})


# --------------------------------------------------------------------------- tenants

def _break_tenant(raw, slug, waiting="CrashLoopBackOff", last="Error", exit_code=1):
    ns = f"tenant-{slug}"
    raw["pods"] = [p for p in raw["pods"] if p["metadata"]["namespace"] != ns]
    raw["pods"].append(pod(f"odoo-{slug}", ns=ns, labels={"app": "odoo"}, ready=False, restarts=7,
                           waiting=waiting, last=last, exit_code=exit_code))
    for d in raw["deployments"]:
        if d["metadata"]["namespace"] == ns:
            d["status"]["readyReplicas"] = 0


def test_one_tenant_down_is_high():
    raw = platform()
    _break_tenant(raw, "acme", last="OOMKilled", exit_code=137)
    result = analyse(raw)
    assert result["tenants"]["tenant-acme"]["status"] == "down"
    acme = result["tenants"]["tenant-acme"]
    assert (acme["slug"], acme["workloads_ready"], acme["workloads_desired"]) == ("acme", 0, 1)
    assert result["tenants"]["tenant-globex"]["status"] == "healthy"
    found = {(f["code"], f["severity"], f["tenant"]) for f in result["findings"]}
    assert found == {("TENANT_DOWN", "high", "acme"), ("POD_OOMKILLED", "medium", "acme")}
    assert result["severity"] == "high"
    oom = next(f for f in result["findings"] if f["code"] == "POD_OOMKILLED")
    assert "exit code 137" in oom["evidence"][0]


def test_several_tenants_down_is_one_critical_finding():
    raw = platform()
    _break_tenant(raw, "acme")
    _break_tenant(raw, "globex")
    result = analyse(raw)
    down = [f for f in result["findings"] if f["code"] in ("TENANT_DOWN", "TENANTS_DOWN")]
    assert [(f["code"], f["severity"]) for f in down] == [("TENANTS_DOWN", "critical")]
    assert down[0]["tenants"] == ["acme", "globex"]
    assert {f["code"] for f in result["findings"]} == {"TENANTS_DOWN", "POD_CRASHLOOP"}
    assert result["findings"][0]["code"] == "TENANTS_DOWN", "sorted: critical first"
    assert result["summary"]["tenants_down"] == 2


def test_multi_tenant_threshold():
    raw = platform()
    _break_tenant(raw, "acme")
    _break_tenant(raw, "globex")
    result = analyse(raw, multi_tenant_threshold=3)
    assert sorted(f["code"] for f in result["findings"] if "TENANT" in f["code"]) == ["TENANT_DOWN"]


def test_degraded_tenants_and_unbound_pvcs():
    raw = platform()
    raw["deployments"][2] = deployment("odoo", "tenant-acme", 2, 1, {"app": "odoo"})
    raw["pvcs"] = [pvc("odoo-data", "tenant-acme"), pvc("odoo-data", "tenant-globex", phase="Pending"),
                   pvc("pg-data", "saasodoo-system", phase="Lost")]
    result = analyse(raw)
    assert result["tenants"]["tenant-acme"]["status"] == "degraded"
    assert result["tenants"]["tenant-globex"]["status"] == "degraded"
    assert result["tenants"]["tenant-globex"]["pvcs_unbound"] == [{"name": "odoo-data", "phase": "Pending"}]
    found = {(f["code"], f["severity"], f["ref"]) for f in result["findings"]}
    assert ("TENANTS_DEGRADED", "high", None) in found
    assert ("PVC_UNBOUND", "medium", "PersistentVolumeClaim/tenant-globex/odoo-data") in found
    assert ("PVC_UNBOUND", "high", "PersistentVolumeClaim/saasodoo-system/pg-data") in found


def test_empty_and_terminating_tenants_are_not_down():
    raw = platform(namespaces=[tenant_ns("acme"), tenant_ns("globex", terminating=True), tenant_ns("new")])
    _break_tenant(raw, "globex")
    result = analyse(raw)
    assert result["tenants"]["tenant-globex"]["status"] == "terminating"
    assert result["tenants"]["tenant-new"]["status"] == "empty"
    assert result["findings"] == [] or all(f["tenant"] != "globex" for f in result["findings"])
    assert not any(f["code"].startswith("TENANT") for f in result["findings"])
    assert result["summary"]["tenants"] == 2


def test_tenants_are_keyed_by_namespace_and_duplicate_slugs_are_reported():
    raw = platform(namespaces=[tenant_ns("acme"), tenant_ns("globex"),
                               {"kind": "Namespace", "status": {"phase": "Active"},
                                "metadata": {"name": "old-acme", "labels": {"saasodoo.io/tenant": "acme"}}}])
    result = analyse(raw)
    assert {k: t["slug"] for k, t in result["tenants"].items()} == {
        "old-acme": "acme", "tenant-acme": "acme", "tenant-globex": "globex"}
    dup = [f for f in result["findings"] if f["code"] == "TENANT_LABEL_DUPLICATE"]
    assert [(f["tenant"], f["severity"]) for f in dup] == [("acme", "low")]
    assert result["healthy"] is True, "a low finding is worth knowing, not unhealthy"


def test_other_tenant_label():
    raw = platform(namespaces=[{"kind": "Namespace", "status": {"phase": "Active"},
                                "metadata": {"name": "customer-x", "labels": {"example.com/customer": "x"}}}])
    assert list(analyse(raw, tenant_label="example.com/customer")["tenants"]) == ["customer-x"]


def test_many_tenants_are_grouped_per_namespace():
    slugs = [f"t{i:03d}" for i in range(300)]
    raw = platform(namespaces=[tenant_ns(s) for s in slugs],
                   pods=[pod(f"odoo-{s}", ns=f"tenant-{s}", labels={"app": "odoo"}) for s in slugs],
                   deployments=[deployment("odoo", f"tenant-{s}", 1, 1, {"app": "odoo"}) for s in slugs])
    result = analyse(raw, components={})
    assert len(result["tenants"]) == 300
    assert all(t["status"] == "healthy" and t["pods"] == 1 for t in result["tenants"].values())


# --------------------------------------------------------------------------- nodes and events

def test_not_ready_node_is_critical_and_counts_its_pods():
    raw = platform(nodes=[node("node-1"), node("node-2", ready=False), node("node-3", pressure=("MemoryPressure",))])
    result = analyse(raw)
    by_code = {f["code"]: f for f in result["findings"]}
    assert by_code["NODE_NOT_READY"]["severity"] == "critical"
    assert by_code["NODE_NOT_READY"]["ref"] == "Node/node-2"
    assert "1 pods are scheduled on it" in by_code["NODE_NOT_READY"]["evidence"]
    assert by_code["NODE_PRESSURE"]["severity"] == "high"
    assert result["summary"]["nodes_not_ready"] == 1


def test_requested_resources_per_node():
    raw = platform(nodes=[node("node-1", cpu="2", memory="4Gi", pods="10")],
                   pods=[pod("a", cpu="500m", memory="1Gi"), pod("b", cpu="1", memory="512Mi", init_cpu="1500m"),
                         pod("done", phase="Failed", cpu="4"), pod("elsewhere", node="node-9", cpu="4")])
    n = analyse(raw, components={})["nodes"][0]
    assert n["allocatable"] == {"cpu_millicores": 2000, "memory_bytes": 4 * 2 ** 30, "pods": 10}
    # b reserves max(1, init 1.5) CPU; the failed pod and the other node's pod count nowhere here.
    assert n["requested"] == {"cpu_millicores": 2000, "memory_bytes": int(1.5 * 2 ** 30), "pods": 2}
    assert n["requested_percent"] == {"cpu": 100.0, "memory": 37.5, "pods": 20.0}
    result = analyse(raw, components={})
    assert [(f["code"], f["severity"]) for f in result["findings"] if f["code"].startswith("NODE")] == [
        ("NODE_REQUESTS_HIGH", "medium")]
    off = analyse(raw, components={}, node_request_percent=0)
    assert not [f for f in off["findings"] if f["code"].startswith("NODE")]


def test_recent_warning_events_are_grouped():
    raw = platform(events=[
        event("saasodoo-system", "Pod", "backend-a", minutes_ago=2, count=4),
        event("saasodoo-system", "ReplicaSet", "saasodoo-backend-5d6cc9d88b", reason="FailedCreate",
              minutes_ago=3, count=1),
        event("tenant-acme", "Pod", "odoo-a", reason="FailedMount", minutes_ago=10, count=2),
        event("tenant-acme", "Pod", "odoo-a", reason="Old", minutes_ago=120),
        event("other", "Pod", "x", minutes_ago=1, count=1),
    ])
    result = analyse(raw, events_since_minutes=60)
    reasons = [(e["object"], e["reason"]) for e in result["events"]]
    assert reasons == [("Pod/x", "BackOff"), ("Pod/backend-a", "BackOff"),
                       ("ReplicaSet/saasodoo-backend-5d6cc9d88b", "FailedCreate"), ("Pod/odoo-a", "FailedMount")]
    assert result["events_total"] == 4
    assert result["components"]["backend"]["warning_events"] == 5
    assert result["tenants"]["tenant-acme"]["warning_events"] == 2
    assert result["events"][3]["tenant"] == "acme"
    assert len(analyse(raw, max_events=1)["events"]) == 1
    assert [e["namespace"] for e in analyse(raw, namespaces=["tenant-acme"])["events"]] == ["tenant-acme"]


# --------------------------------------------------------------------------- pagination and call counting

class FakeResponse:
    def __init__(self, payload):
        self.data = json.dumps(payload).encode()


class FakeApi:
    """A list call that serves `total` objects page by page, remembering what it was asked."""

    def __init__(self, total, kind="PodList", host="https://k8s.test:6443", fail=None):
        self.total, self.kind, self.fail = total, kind, fail
        self.requests = []
        self.api_client = type("C", (), {"configuration": type("Cfg", (), {"host": host})()})()

    def list_pod_for_all_namespaces(self, _preload_content=True, _request_timeout=None, **kwargs):
        assert _preload_content is False, "list_all must skip the client's slow model deserialization"
        self.requests.append(kwargs)
        if self.fail:
            raise self.fail(kwargs)
        start = int(kwargs.get("_continue") or 0)
        limit = kwargs.get("limit") or self.total
        items = [{"metadata": {"name": f"p{i}"}} for i in range(start, min(start + limit, self.total))]
        more = start + limit < self.total
        return FakeResponse({"kind": self.kind, "items": items,
                             "metadata": {"continue": str(start + limit) if more else ""}})


@pytest.mark.parametrize("total,page,calls", [(0, 500, 1), (499, 500, 1), (500, 500, 1), (501, 500, 2),
                                              (1200, 500, 3), (1200, 0, 1)])
def test_list_all_paginates_and_counts(total, page, calls):
    api = FakeApi(total)
    counter = k8s.ApiCallCounter()
    items = k8s.list_all(api.list_pod_for_all_namespaces, counter=counter, page_size=page,
                         label_selector="app=x")
    assert len(items) == total and len({i["metadata"]["name"] for i in items}) == total
    assert all(i["kind"] == "Pod" for i in items), "list answers leave kind out; list_all fills it in"
    assert counter.calls == calls == len(api.requests)
    assert counter.by_resource == {"pods": calls}
    assert all(r["label_selector"] == "app=x" for r in api.requests)
    if page:
        assert all(r["limit"] == page for r in api.requests)
        assert [r.get("_continue") for r in api.requests][1:] == [str(page * i) for i in range(1, calls)]


def test_list_all_uses_the_shared_counter_by_default():
    k8s.API_CALLS.reset()
    k8s.list_all(FakeApi(3).list_pod_for_all_namespaces, page_size=2)
    assert k8s.API_CALLS.calls == 2


def test_expired_continue_token_restarts_the_list_once():
    api = FakeApi(5)
    real = api.list_pod_for_all_namespaces
    expired = []

    def flaky(**kwargs):
        if kwargs.get("_continue") and not expired:
            expired.append(1)
            raise ApiException(status=410, reason="Gone")
        return real(**kwargs)

    counter = k8s.ApiCallCounter()
    items = k8s.list_all(flaky, counter=counter, page_size=2, what="pods")
    assert len(items) == 5
    assert counter.calls == 5  # page 1, expired page 2, then 3 pages from the start


def _raise(exc):
    def fail(_kwargs):
        raise exc
    return fail


@pytest.mark.parametrize("exc,message", [
    (ApiException(status=403, reason="Forbidden"),
     "the credentials are not allowed to list pods cluster-wide: 403 Forbidden (HTTP 403 from https://k8s.test:6443)"),
    (ApiException(status=401, reason="Unauthorized"), "the credentials are not allowed to list pods cluster-wide"),
    (ApiException(status=500, reason="Internal Server Error"),
     "the Kubernetes API at https://k8s.test:6443 refused to list pods cluster-wide: HTTP 500"),
    (urllib3.exceptions.MaxRetryError(None, "/api/v1/pods", urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused")),
     "cannot reach the Kubernetes API at https://k8s.test:6443: connection refused"),
    (urllib3.exceptions.MaxRetryError(None, "/api/v1/pods", urllib3.exceptions.ConnectTimeoutError(
        None, "timed out")), "cannot reach the Kubernetes API at https://k8s.test:6443: no answer to the connection"),
    (urllib3.exceptions.ReadTimeoutError(None, "/api/v1/pods", "read timed out"),
     "the Kubernetes API at https://k8s.test:6443 timed out after 30s while listing pods cluster-wide"),
])
def test_api_errors_become_clear_messages(exc, message):
    api = FakeApi(1, fail=_raise(exc))
    with pytest.raises(DiagnosisError) as err:
        k8s.list_all(api.list_pod_for_all_namespaces, counter=k8s.ApiCallCounter())
    assert message in str(err.value)


def test_forbidden_message_quotes_the_api_servers_reason():
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"kind": "Status", "message": 'pods is forbidden: User "bob" cannot list resource "pods"'})
    with pytest.raises(DiagnosisError, match='not allowed to list pods cluster-wide: pods is forbidden: User "bob"'):
        k8s.list_all(FakeApi(1, fail=_raise(exc)).list_pod_for_all_namespaces, counter=k8s.ApiCallCounter())


def _fake_lists(tenants, per_kind_extra=0):
    """What gather() would return for a platform with `tenants` tenants, as fake paginated calls."""
    sizes = {"nodes": 3, "namespaces": tenants, "pods": 20 + tenants, "deployments": 8 + tenants,
             "statefulsets": 1, "daemonsets": 0, "pvcs": 1 + tenants, "events": 3 + per_kind_extra}
    return [(key, FakeApi(n, kind="List").list_pod_for_all_namespaces, {}) for key, n in sizes.items()]


@pytest.mark.parametrize("tenants", [0, 3, 250, 450])
def test_snapshot_call_count_does_not_grow_with_tenants(monkeypatch, tenants):
    monkeypatch.setattr(snap, "list_calls", lambda api_client, label: _fake_lists(tenants))
    monkeypatch.setattr(snap, "analyse", lambda raw, opts: {"seen": {k: len(v) for k, v in raw.items()}})
    result = snap.run_snapshot({"page_size": 500}, api_client=object())
    assert result["api_calls"] == 8
    assert result["seen"]["namespaces"] == tenants
    assert set(result["api_calls_by_resource"]) == {"nodes", "namespaces", "pods", "deployments", "statefulsets",
                                                    "daemonsets", "pvcs", "events"}


def test_snapshot_pages_big_lists(monkeypatch):
    monkeypatch.setattr(snap, "list_calls", lambda api_client, label: _fake_lists(1000))
    monkeypatch.setattr(snap, "analyse", lambda raw, opts: {})
    result = snap.run_snapshot({"page_size": 500}, api_client=object())
    # namespaces 1000 -> 2, pods 1020 -> 3, deployments 1008 -> 3, pvcs 1001 -> 3, the other four 1 each.
    assert result["api_calls"] == 2 + 3 + 3 + 3 + 4
    assert result["api_calls_by_resource"]["pods"] == 3


def test_the_real_list_calls_are_cluster_wide_and_fixed():
    from kubernetes import client

    api = client.ApiClient(client.Configuration())
    calls = snap.list_calls(api, "saasodoo.io/tenant")
    names = [c.__name__ for _k, c, _s in calls]
    assert len(calls) == 8
    assert all(n == "list_node" or n == "list_namespace" or n.endswith("_for_all_namespaces") for n in names)
    selectors = {k: s for k, _c, s in calls}
    assert selectors["namespaces"] == {"label_selector": "saasodoo.io/tenant"}
    assert selectors["events"] == {"field_selector": "type=Warning"}


# --------------------------------------------------------------------------- connection options

KUBECONFIG_TEXT = """
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://kube.example:6443", insecure-skip-tls-verify: true}
- name: other
  cluster: {server: "https://other.example:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: abc}
contexts:
- name: main
  context: {cluster: c, user: u}
- name: second
  context: {cluster: other, user: u}
current-context: main
"""


def test_client_from_kubeconfig_context_and_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG_TEXT)
    assert k8s.client({"kubeconfig": str(path)}).configuration.host == "https://kube.example:6443"
    assert k8s.client({"kubeconfig": str(path), "context": "second"}).configuration.host == "https://other.example:6443"
    cfg = k8s.client({"kubeconfig": str(path), "host": "https://x:1/", "api_key": "t0k",
                      "validate_certs": False}).configuration
    assert (cfg.host, cfg.api_key["authorization"], cfg.verify_ssl) == ("https://x:1", "Bearer t0k", False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert k8s.client({}).configuration.host == "https://kube.example:6443"


def test_client_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DiagnosisError, match="does not exist"):
        k8s.client({"kubeconfig": str(tmp_path / "nope")})
    with pytest.raises(DiagnosisError, match="no Kubernetes credentials"):
        k8s.client({})
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG_TEXT)
    with pytest.raises(DiagnosisError, match="context nope"):
        k8s.client({"kubeconfig": str(path), "context": "nope"})
    # A host with its own token needs no kubeconfig at all.
    assert k8s.client({"host": "https://h:6443", "api_key": "t"}).configuration.host == "https://h:6443"


def test_common_args_fall_back_to_the_awx_variables():
    env = {name: spec["fallback"][1][0] for name, spec in k8s.K8S_COMMON_ARGS.items()}
    assert env == {"kubeconfig": "K8S_AUTH_KUBECONFIG", "context": "K8S_AUTH_CONTEXT", "host": "K8S_AUTH_HOST",
                   "api_key": "K8S_AUTH_API_KEY", "validate_certs": "K8S_AUTH_VERIFY_SSL",
                   "ca_cert": "K8S_AUTH_SSL_CA_CERT", "client_cert": "K8S_AUTH_CERT_FILE",
                   "client_key": "K8S_AUTH_KEY_FILE"}
    assert k8s.K8S_COMMON_ARGS["api_key"]["no_log"] is True
