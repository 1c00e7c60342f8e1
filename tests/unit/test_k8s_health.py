"""The shared Kubernetes judgements (plugins/module_utils/saasodoo_k8s_health.py) on hand-made objects.

The filters (plugins/filter/saasodoo.py) and the modules (saasodoo_snapshot, saasodoo_tenant_check)
all call these; what each adds on top is tested in their own test files.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from plugins.module_utils import saasodoo_k8s_health as h


def pod(name, phase="Running", ready=True, restarts=0, waiting=None, last=None, exit_code=None, deleting=False):
    cs = {"name": "app", "restartCount": restarts,
          "state": {"waiting": {"reason": waiting}} if waiting else {"running": {}}}
    if last:
        cs["lastState"] = {"terminated": {"reason": last, "exitCode": exit_code}}
    meta = {"name": name, "namespace": "ns", "labels": {"app": "backend"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"kind": "Pod", "metadata": meta, "spec": {"nodeName": "node-1"},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [cs]}}


def workload(kind="Deployment", replicas=2, ready=2):
    """A workload whose status carries both the replica fields and the DaemonSet ones; each kind reads its own."""
    status = {"observedGeneration": 1, "replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas,
              "availableReplicas": ready, "desiredNumberScheduled": replicas, "numberReady": ready,
              "updatedNumberScheduled": replicas, "numberAvailable": ready}
    return {"kind": kind, "metadata": {"name": "web", "namespace": "ns", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "backend"}}}, "status": status}


def node(ready=True, pressure=(), cordoned=False):
    conds = [{"type": "Ready", "status": "True" if ready else "False",
              "reason": "KubeletReady" if ready else "NodeStatusUnknown",
              "message": "" if ready else "kubelet stopped"}]
    conds += [{"type": t, "status": "True" if t in pressure else "False"}
              for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]
    return {"kind": "Node", "metadata": {"name": "node-1"}, "spec": {"unschedulable": cordoned} if cordoned else {},
            "status": {"conditions": conds}}


# --------------------------------------------------------------------------- pods

@pytest.mark.parametrize("obj, healthy, waiting_reason, reasons", [
    (pod("ok"), True, None, []),
    (pod("loop", ready=False, restarts=5, waiting="CrashLoopBackOff", last="Error", exit_code=1), False,
     "CrashLoopBackOff",
     ["container app is waiting in CrashLoopBackOff", "pod is Running but not Ready", "5 restarts (threshold 3)"]),
    (pod("oom", ready=False, restarts=4, waiting="CrashLoopBackOff", last="OOMKilled", exit_code=137), False,
     "CrashLoopBackOff",
     ["container app is waiting in CrashLoopBackOff", "container app was OOMKilled (exit code 137)",
      "pod is Running but not Ready", "4 restarts (threshold 3)"]),
    (pod("pending", phase="Pending", ready=False), False, None, ["pod is Pending (not scheduled or not started)"]),
    (pod("notready", ready=False), False, None, ["pod is Running but not Ready"]),
    (pod("failed", phase="Failed", ready=False), False, None, ["pod phase is Failed"]),
    (pod("img", ready=False, waiting="ImagePullBackOff"), False, "ImagePullBackOff",
     ["container app is waiting in ImagePullBackOff", "pod is Running but not Ready"]),
    (pod("gone", ready=False, waiting="CrashLoopBackOff", deleting=True), True, "CrashLoopBackOff", []),
    (pod("restarted", restarts=3), False, None, ["3 restarts (threshold 3)"]),
    (pod("starting", ready=False, waiting="ContainerCreating", phase="Pending"), False, "ContainerCreating",
     ["pod is Pending (not scheduled or not started)"]),
], ids=lambda v: v["metadata"]["name"] if isinstance(v, dict) else None)
def test_pod_verdicts(obj, healthy, waiting_reason, reasons):
    report = h.pod_health(obj, 3)
    assert (report["healthy"], report["waiting_reason"], report["reasons"]) == (healthy, waiting_reason, reasons)
    assert report["terminating"] is (obj["metadata"]["name"] == "gone")
    assert (report["name"], report["namespace"], report["node"]) == (obj["metadata"]["name"], "ns", "node-1")


def test_pod_last_termination_and_restart_threshold():
    report = h.pod_health(pod("oom", ready=False, restarts=4, last="OOMKilled", exit_code=137), 5)
    assert report["last_termination"] == {"container": "app", "reason": "OOMKilled", "exit_code": 137,
                                          "finished_at": None}
    assert report["restarts"] == 4 and not any("restarts" in r for r in report["reasons"])


# --------------------------------------------------------------------------- workloads

@pytest.mark.parametrize("kind, ready, rollout", [
    ("Deployment", 0, {"complete": False, "message": "0 of 2 updated replicas available"}),
    ("Deployment", 2, {"complete": True, "message": "2 of 2 replicas updated and available"}),
    ("StatefulSet", 1, {"complete": False, "message": "1 of 2 replicas ready"}),
    ("StatefulSet", 2, {"complete": True, "message": "2 of 2 replicas updated and ready"}),
    ("DaemonSet", 1, {"complete": False, "message": "1 of 2 updated pods available"}),
    ("DaemonSet", 2, {"complete": True, "message": "2 of 2 pods updated and available"}),
])
def test_workload_verdicts_with_their_pods(kind, ready, rollout):
    pods = [pod("a"), pod("b", ready=False, waiting="CrashLoopBackOff", restarts=4, last="OOMKilled", exit_code=137),
            pod("gone", ready=False, waiting="CrashLoopBackOff", deleting=True)]
    report = h.workload_health(workload(kind, 2, ready), [h.pod_health(p) for p in pods])
    expected = ([] if ready == 2 else [f"{ready} of 2 replicas ready"]) + [
        "pod b: container app is waiting in CrashLoopBackOff", "pod b: container app was OOMKilled (exit code 137)",
        "pod b: pod is Running but not Ready", "pod b: 4 restarts (threshold 3)"]
    assert report["reasons"] == expected, "a terminating pod's reasons never count"
    assert (report["ref"], report["replicas"], report["ready_replicas"]) == (f"{kind}/ns/web", 2, ready)
    assert report["healthy"] is False and report["crashloop"] is True and report["oomkilled"] is True
    assert report["rollout"] == rollout
    assert [p["name"] for p in report["pods"]] == ["a", "b", "gone"]


def test_healthy_and_scaled_to_zero_workloads():
    assert h.workload_health(workload(), [h.pod_health(pod("a")), h.pod_health(pod("b"))])["healthy"]
    zero = h.workload_health(workload(replicas=0, ready=0), [])
    assert zero["reasons"] == ["scaled to zero replicas"] and not zero["crashloop"] and not zero["oomkilled"]


def test_rollout_status_follows_kubectl_rules():
    stale = workload()
    stale["metadata"]["generation"] = 2
    assert h.rollout_status(stale) == {"complete": False, "message": "waiting for the controller to observe the new spec"}
    stuck = workload()
    stuck["status"]["conditions"] = [{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "slow"}]
    assert h.rollout_status(stuck) == {"complete": False, "failed": True,
                                       "message": "rollout exceeded its progress deadline: slow"}
    assert h.rollout_status({"kind": "CronJob"}) == {"complete": False, "message": "unsupported kind CronJob"}


# --------------------------------------------------------------------------- nodes

@pytest.mark.parametrize("obj, ready, reasons", [
    (node(), True, []),
    (node(ready=False), False, ["node is NotReady (NodeStatusUnknown: kubelet stopped)"]),
    (node(pressure=("DiskPressure",)), True, ["node reports DiskPressure"]),
    (node(cordoned=True), True, ["node is cordoned (unschedulable)"]),
    ({"metadata": {"name": "node-1"}}, False, ["node is NotReady (no Ready condition: )"]),
])
def test_node_verdicts(obj, ready, reasons):
    report = h.node_health(obj)
    assert (report["name"], report["ready"], report["healthy"], report["reasons"]) == ("node-1", ready, not reasons,
                                                                                       reasons)
    assert report["unschedulable"] is bool(obj.get("spec", {}).get("unschedulable"))
    assert report["pressure"] == [r.rsplit(" ", 1)[1] for r in reasons if r.startswith("node reports")]


def test_node_conditions_are_type_to_status():
    assert h.node_health(node(pressure=("PIDPressure",)))["conditions"] == {
        "Ready": "True", "MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "True"}


# --------------------------------------------------------------------------- selectors, quantities, times

def test_selector_matching():
    sel = {"matchLabels": {"a": "1"}, "matchExpressions": [
        {"key": "b", "operator": "In", "values": ["x", "y"]}, {"key": "c", "operator": "NotIn", "values": ["z"]},
        {"key": "d", "operator": "Exists"}]}
    assert h.selector_matches(sel, {"a": "1", "b": "x", "d": ""})
    assert not h.selector_matches(sel, {"a": "1", "b": "q", "d": ""})
    assert not h.selector_matches(sel, {"a": "1", "b": "x", "c": "z", "d": ""})
    assert not h.selector_matches(sel, {"a": "1", "b": "x"})
    assert not h.selector_matches({"matchExpressions": [{"key": "e", "operator": "DoesNotExist"}]}, {"e": "1"})
    assert not h.selector_matches({}, {"a": "1"}), "an empty selector selects nothing"


@pytest.mark.parametrize("text, value", [
    ("500m", 0.5), ("2", 2.0), ("1.5", 1.5), ("128Mi", 128 * 2 ** 20), ("1Gi", 2 ** 30), ("1G", 1e9),
    ("1e3", 1000.0), ("100k", 1e5), ("128974848", 128974848.0), (" 250m ", 0.25), (3, 3.0), (0.5, 0.5),
    (None, None), ("", None),
])
def test_quantities(text, value):
    assert h.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "1Gb", "1e", "Mi", True])
def test_a_non_quantity_is_a_value_error_naming_it(text):
    with pytest.raises(ValueError, match=re.escape("%r is not a Kubernetes quantity" % (text,))):
        h.parse_quantity(text)


def test_pod_requests_count_init_containers_sidecars_and_overhead():
    spec = {"containers": [{"resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}, {"name": "no-requests"}],
            "initContainers": [
                {"resources": {"requests": {"cpu": "2", "memory": "10Mi"}}},
                {"restartPolicy": "Always", "resources": {"requests": {"cpu": "50m", "memory": "50Mi"}}}],
            "overhead": {"cpu": "10m"}}
    req = h.pod_requests({"spec": spec})
    assert req["cpu"] == pytest.approx(2.01)  # the init container (2) outweighs 100m + the 50m sidecar
    assert req["memory"] == 150 * 2 ** 20
    assert h.pod_requests({}) == {"cpu": 0.0, "memory": 0.0}


@pytest.mark.parametrize("text, expected", [
    ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)),
    ("2026-03-01T12:00:00.123456789Z", datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2026-03-01T13:30:00+01:30", datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)),
    ("2026-03-01T12:00:00", datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)),
    (None, None), ("", None), ("yesterday", None),
])
def test_parse_time(text, expected):
    assert h.parse_time(text) == expected


def test_event_last_seen_prefers_the_series_then_last_timestamp():
    event = {"series": {"lastObservedTime": "2026-03-01T12:05:00Z"}, "lastTimestamp": "2026-03-01T11:00:00Z",
             "metadata": {"creationTimestamp": "2026-03-01T10:00:00Z"}}
    assert h.event_last_seen(event) == datetime(2026, 3, 1, 12, 5, tzinfo=timezone.utc)
    del event["series"]
    assert h.event_last_seen(event) == datetime(2026, 3, 1, 11, 0, tzinfo=timezone.utc)
    assert h.event_last_seen({"eventTime": "2026-03-01T09:00:00.000001Z"}).hour == 9
    assert h.event_last_seen({}) is None


def test_dig():
    obj = {"a": {"b": {"c": 0}, "n": None, "s": "text"}}
    assert h.dig(obj, "a", "b", "c") == 0
    assert h.dig(obj, "a", "n", default=[]) == [] and h.dig(obj, "a", "s", "x", default=1) == 1
    assert h.dig(None, "a") is None and h.dig(obj, "missing") is None
    assert h.workload_ref({"kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"}}) == "Deployment/ns/web"
