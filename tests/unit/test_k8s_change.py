"""saasodoo_k8s_change (plugins/action): what kubernetes.core.k8s / k8s_scale return, without a pod spec's env values."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_change_action", Path(__file__).resolve().parents[2] / "plugins" / "action" / "saasodoo_k8s_change.py")
m = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(m)

ENV = [{"name": "HOOK_SECRET", "value": "hk-s3cr3t"}, {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]


def deployment(replicas):
    return {"kind": "Deployment", "metadata": {"name": "api"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "env": ENV}]}}}}


def test_result_and_diff_lose_env_values_and_keep_the_change():
    raw = {"changed": True, "result": deployment(3), "diff": {"before": deployment(2), "after": deployment(3)},
           "method": "patch"}
    out = m.sanitize(raw)
    assert "hk-s3cr3t" not in repr(out) and "secretKeyRef" in repr(out) and "HOOK_SECRET" in repr(out)
    assert (out["diff"]["before"]["spec"]["replicas"], out["diff"]["after"]["spec"]["replicas"]) == (2, 3)
    assert out["changed"] is True and out["method"] == "patch" and out["result"]["spec"]["replicas"] == 3
    assert raw["result"]["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "hk-s3cr3t"


def test_lists_of_objects_and_other_kinds():
    pod = {"kind": "Pod", "spec": {"containers": [{"name": "app", "env": ENV}]}}
    out = m.sanitize({"resources": [pod, {"kind": "ConfigMap", "data": {"a": "b"}}], "diff": [{"before": pod}]})
    assert "hk-s3cr3t" not in repr(out) and out["resources"][1] == {"kind": "ConfigMap", "data": {"a": "b"}}
    assert m.sanitize({"changed": False}) == {"changed": False}
