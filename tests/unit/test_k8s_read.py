"""saasodoo_k8s_read: what a wait waits for, and the values keys_only drops."""

from __future__ import annotations

import importlib.util
import sys
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
