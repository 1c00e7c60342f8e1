"""saasodoo_k8s_lists: the list calls it makes exist in the kubernetes client, ConfigMap values never leave it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from kubernetes import client

from plugins.module_utils import saasodoo_findings

# The module imports its helpers as Ansible ships them (ansible.module_utils.<name>); outside
# Ansible, point those names at the project's files before loading it.
sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
from plugins.module_utils import saasodoo_k8s  # noqa: E402

sys.modules.setdefault("ansible.module_utils.saasodoo_k8s", saasodoo_k8s)
from plugins.module_utils import saasodoo_k8s_health  # noqa: E402

sys.modules.setdefault("ansible.module_utils.saasodoo_k8s_health", saasodoo_k8s_health)
_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_lists", Path(__file__).resolve().parents[2] / "plugins" / "modules" / "saasodoo_k8s_lists.py")
m = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(m)

APIS = {"core": client.CoreV1Api, "net": client.NetworkingV1Api, "rbac": client.RbacAuthorizationV1Api}


def test_every_kind_maps_to_a_cluster_wide_list_call():
    for kind, (api, method) in m.CALLS.items():
        assert callable(getattr(APIS[api], method)), kind
        assert method.startswith("list_") and ("namespace" not in method or method.endswith("for_all_namespaces")
                                               or method == "list_namespace"), method
    doc_choices = m.DOCUMENTATION.split("choices: [")[1].split("]")[0].replace("\n", " ")
    assert sorted(c.strip() for c in doc_choices.split(",")) == sorted(m.CALLS)


def test_configmap_values_are_dropped():
    cm = {"kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"PASSWORD": "hunter2"}, "binaryData": {"k": "AA=="}}
    out = m.keys_only(cm)
    assert out["data"] == {"PASSWORD": None} and out["binaryData"] == {"k": None}
    assert cm["data"]["PASSWORD"] == "hunter2"  # the input is not modified
    assert m.keys_only({"metadata": {"name": "empty"}}) == {"metadata": {"name": "empty"}}


def test_read_lists_only_what_is_asked_and_strips_values(monkeypatch):
    seen = []

    def fake_list_all(call, counter=None, page_size=500, timeout=30, what=None, **kwargs):
        seen.append((what, kwargs))
        counter.add(what)
        if what == "configmaps":
            return [{"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"TOKEN": "t"}}]
        return [{"kind": "X", "metadata": {"name": what}}]

    monkeypatch.setattr(m, "list_all", fake_list_all)
    for name in ("CoreV1Api", "NetworkingV1Api", "RbacAuthorizationV1Api"):
        monkeypatch.setattr(m, name, lambda api_client: type("Api", (), {
            k: None for k in [meth for _, meth in m.CALLS.values()]})(), raising=False)
    params = {"kinds": ["pods", "configmaps"], "finished_pods": False, "configmap_values": False, "page_size": 500,
              "request_timeout": 30}
    result = m.read(params, api_client=object())
    assert sorted(k for k in result if k not in ("changed", "api_calls")) == ["configmaps", "pods"]
    assert result["configmaps"][0]["data"] == {"TOKEN": None}
    assert dict(seen)["pods"] == {"field_selector": m.FINISHED_SELECTOR}
    assert result["api_calls"] == 2 and result["changed"] is False
    result = m.read(dict(params, kinds=["pods"], finished_pods=True), api_client=object())
    assert seen[-1] == ("pods", {})
