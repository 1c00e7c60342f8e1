"""saasodoo_k8s_read: what a wait waits for, and the values keys_only drops."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from plugins.module_utils import saasodoo_findings

# The module imports its helpers as Ansible ships them (ansible.module_utils.<name>); outside
# Ansible, point those names at the project's files before loading it.
sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
from plugins.module_utils import saasodoo_k8s, saasodoo_k8s_health  # noqa: E402

sys.modules.setdefault("ansible.module_utils.saasodoo_k8s", saasodoo_k8s)
sys.modules.setdefault("ansible.module_utils.saasodoo_k8s_health", saasodoo_k8s_health)
_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_read", Path(__file__).resolve().parents[2] / "plugins" / "modules" / "saasodoo_k8s_read.py")
m = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(m)


def deployment(updated, ready, want=2, deadline=False):
    status = {"observedGeneration": 1, "replicas": updated, "updatedReplicas": updated, "readyReplicas": ready,
              "availableReplicas": ready}
    if deadline:
        status["conditions"] = [{"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]
    return {"kind": "Deployment", "metadata": {"name": "web", "namespace": "ns", "generation": 1},
            "spec": {"replicas": want}, "status": status}


def result(*objects, kind="Deployment", name="web"):
    return {"resources": list(objects), "query": {"kind": kind, "name": name}}


def test_a_rollout_is_waited_for_until_complete_and_a_missing_object_is_named():
    assert m.missing([result(deployment(2, 2))], "rollout") == ""
    assert m.missing([result(deployment(1, 1))], "rollout") == "Deployment/ns/web: 1 of 2 replicas updated"
    assert m.missing([result()], "rollout") == "Deployment web not found"
    with pytest.raises(m.WaitTimedOut, match="progress deadline"):
        m.missing([result(deployment(1, 1, deadline=True))], "rollout")


def test_absent_waits_until_nothing_is_found():
    pod = {"kind": "Pod", "metadata": {"name": "web-1"}}
    assert m.missing([result(kind="Pod", name=None)], "absent") == ""
    assert m.missing([result(pod, kind="Pod", name=None)], "absent") == "still there: Pod web-1"


def test_keys_only_drops_every_value():
    secret = {"kind": "Secret", "data": {"PASSWORD": "aHVudGVyMg=="}, "stringData": {"TOKEN": "t"}}
    assert m.keys_only(secret) == {"kind": "Secret", "data": {"PASSWORD": None}, "stringData": {"TOKEN": None}}
    assert secret["data"]["PASSWORD"] == "aHVudGVyMg=="


def test_a_whole_selector_becomes_label_selector_terms():
    selector = {"matchLabels": {"app": "db", "tier": "data"},
                "matchExpressions": [{"key": "role", "operator": "In", "values": ["primary", "main"]},
                                     {"key": "canary", "operator": "DoesNotExist"},
                                     {"key": "zone", "operator": "NotIn", "values": ["b"]},
                                     {"key": "team", "operator": "Exists"}]}
    assert saasodoo_k8s_health.selector_strings(selector) == [
        "app=db", "tier=data", "role in (main,primary)", "!canary", "zone notin (b)", "team"]
    assert saasodoo_k8s_health.selector_strings({}) == []
    assert saasodoo_k8s_health.selector_strings(None) == []


def test_owned_by_is_checked_before_any_read():
    sts = {"kind": "StatefulSet", "metadata": {"name": "db", "namespace": "ns"}, "spec": {"selector": {}}}
    assert m.check([{"kind": "Pod", "owned_by": sts}]) is None
    assert "kind Pod, no name" in m.check([{"kind": "Secret", "owned_by": sts}])
    assert "kind Pod, no name" in m.check([{"kind": "Pod", "name": "db-0", "owned_by": sts}])
    assert "metadata.name and metadata.namespace" in m.check([{"kind": "Pod", "owned_by": {"kind": "Job"}}])


def test_owned_by_keeps_only_the_workloads_own_pods_and_an_empty_selector_reads_nothing():
    sts = {"kind": "StatefulSet", "metadata": {"name": "db", "namespace": "ns", "uid": "u1"},
           "spec": {"selector": {"matchLabels": {"app": "db"}}}}

    def pod(name, owner, uid):
        return {"metadata": {"name": name, "namespace": "ns", "labels": {"app": "db"},
                             "ownerReferences": [{"kind": "StatefulSet", "name": owner, "uid": uid,
                                                  "controller": True}]}}

    listed = []

    def fake_list(get, counter, page_size, timeout, what, **selectors):
        listed.append(selectors)
        return [pod("db-0", "db", "u1"), pod("db-copy-0", "db-copy", "u2")]

    real = m.list_all
    m.list_all = fake_list
    try:
        dyn = types.SimpleNamespace(client=None)       # never called: list_all is the fake
        own_pods = m.read_one(dyn, {"kind": "Pod", "api_version": "v1", "owned_by": sts},
                              {"Pod": ("pods", True)}, m.ApiCallCounter(), 500, 5)
        empty = m.read_one(dyn, {"kind": "Pod", "api_version": "v1",
                                  "owned_by": dict(sts, spec={"selector": {}})},
                           {"Pod": ("pods", True)}, m.ApiCallCounter(), 500, 5)
    finally:
        m.list_all = real
    # db-copy-0 carries the same labels, but another StatefulSet controls it.
    assert [p["metadata"]["name"] for p in own_pods["resources"]] == ["db-0"]
    assert listed[0] == {"label_selector": "app=db"}
    assert own_pods["query"]["owned_by"] == "StatefulSet/ns/db" and own_pods["query"]["namespace"] == "ns"
    assert empty["resources"] == [] and len(listed) == 1      # an empty selector never lists


def test_keys_only_drops_literal_env_values_of_pods_and_workloads():
    container = {"name": "app", "env": [{"name": "DB_PASSWORD", "value": "s3cr3t-value"},
                                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}]}
    pod = {"kind": "Pod", "spec": {"containers": [container], "initContainers": [dict(container, name="init")]}}
    deploy = {"kind": "Deployment", "spec": {"replicas": 2, "template": {"spec": {"containers": [container]}}}}
    cron = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [container]}}}}}}
    for obj in (pod, deploy, cron):
        assert "s3cr3t-value" not in repr(m.keys_only(obj))
        assert "secretKeyRef" in repr(m.keys_only(obj)) and "DB_PASSWORD" in repr(m.keys_only(obj))
    assert m.keys_only(deploy)["spec"]["replicas"] == 2
    assert container["env"][0]["value"] == "s3cr3t-value"      # the input is left as it was
    assert m.keys_only({"kind": "Service", "spec": {"ports": []}}) == {"kind": "Service", "spec": {"ports": []}}


def test_every_read_of_pods_and_workloads_drops_literal_env_values_but_those_asked_for():
    container = {"name": "app", "env": [{"name": "WEBHOOK_SECRET", "value": "wh-s3cr3t-value"},
                                        {"name": "DATABASE_HOST", "value": "db.ns.svc"},
                                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}]}
    deploy = {"kind": "Deployment", "metadata": {"name": "api", "namespace": "ns"},
              "spec": {"template": {"spec": {"containers": [container]}}}}

    def fake_list(get, counter, page_size, timeout, what, **selectors):
        return [deploy]

    real = m.list_all
    m.list_all = fake_list
    try:
        dyn = types.SimpleNamespace(client=None)
        plain = m.read_one(dyn, {"kind": "Deployment", "api_version": "apps/v1", "namespace": "ns"},
                           {"Deployment": ("deployments", True)}, m.ApiCallCounter(), 500, 5)
        asked = m.read_one(dyn, {"kind": "Deployment", "api_version": "apps/v1", "namespace": "ns",
                                 "env_values": ["DATABASE_HOST"]},
                           {"Deployment": ("deployments", True)}, m.ApiCallCounter(), 500, 5)
    finally:
        m.list_all = real
    env = plain["resources"][0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [(e["name"], e.get("value")) for e in env] == [("WEBHOOK_SECRET", None), ("DATABASE_HOST", None), ("TOKEN", None)]
    assert env[2]["valueFrom"] == {"secretKeyRef": {"name": "t", "key": "k"}}
    env = asked["resources"][0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [(e["name"], e.get("value")) for e in env] == [("WEBHOOK_SECRET", None), ("DATABASE_HOST", "db.ns.svc"),
                                                          ("TOKEN", None)]
    assert "wh-s3cr3t-value" not in repr(plain) + repr(asked)
    assert container["env"][0]["value"] == "wh-s3cr3t-value"      # the input is left as it was
