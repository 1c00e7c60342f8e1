"""saasodoo_k8s_read against the real test bed: many reads, of any kind, in one module run.

No mocks: the module runs through ansible-runner like in a playbook, against the local control
plane and the sample platform's objects (read-only, nothing to undo).
"""

from __future__ import annotations

from kubernetes import client

from tests import k8s_state
from tests.runbooks import run_module


def test_named_listed_custom_and_unknown_reads_in_one_run(platform):
    backend = platform["saasodoo_components"]["backend"]
    ns = backend["namespace"]
    live_pods = {p.metadata.name for p in client.CoreV1Api(k8s_state.api_client()).list_namespaced_pod(ns).items}
    queries = [
        {"kind": backend["kind"], "api_version": "apps/v1", "namespace": ns, "name": backend["name"]},
        {"kind": "Deployment", "api_version": "apps/v1", "namespace": ns, "name": "no-such-deployment"},
        {"kind": "Pod", "namespace": ns, "item": {"why": "every pod"}},
        {"kind": "Secret", "namespace": ns, "keys_only": True},
        {"kind": "Certificate", "api_version": "cert-manager.io/v1"},
        {"kind": "Widget", "api_version": "nothing.example.com/v1"},
        {"kind": "Namespace", "name": ns},
        {"kind": "Pod", "namespace": ns, "field_selectors": ["metadata.name=no-such-pod"]},
    ]

    result = run_module("saasodoo_k8s_read", {"queries": queries})

    assert not result["failed"], result.get("msg")
    named, missing, pods, secrets, certificates, unknown, namespace, none = result["results"]
    assert [o["metadata"]["name"] for o in named["resources"]] == [backend["name"]]
    assert named["resources"][0]["kind"] == backend["kind"] and named["api_found"] is True
    assert named["item"]["name"] == backend["name"] and named["item"]["kind"] == backend["kind"]
    assert missing["resources"] == [] and missing["api_found"] is True
    assert {o["metadata"]["name"] for o in pods["resources"]} == live_pods
    assert pods["item"] == {"why": "every pod"}
    assert secrets["resources"], "the platform namespace has Secrets"
    for secret in secrets["resources"]:
        for field in ("data", "stringData", "binaryData"):
            assert all(v is None for v in (secret.get(field) or {}).values()), secret["metadata"]["name"]
    assert any(s.get("data") for s in secrets["resources"]), "the key names are kept"
    assert certificates["api_found"] is True and certificates["resources"]
    assert unknown == {**unknown, "api_found": False, "resources": []}
    assert [o["metadata"]["name"] for o in namespace["resources"]] == [ns]
    assert none["resources"] == []
    assert result["changed"] is False
    # Discovery once per API version (4) and one request per read the cluster serves (7).
    assert result["api_calls"] == 11, result["api_calls"]


def test_a_named_read_of_a_namespaced_kind_needs_a_namespace():
    result = run_module("saasodoo_k8s_read", {"queries": [{"kind": "Pod", "name": "anything"}]})

    assert result["failed"]
    assert "the read of Pod anything needs a namespace: Pod is namespaced" in result["msg"]


def test_a_query_with_a_name_and_selectors_is_refused_before_any_read():
    result = run_module("saasodoo_k8s_read", {"queries": [
        {"kind": "Pod", "namespace": "default", "name": "x", "label_selectors": ["app=x"]}]})

    assert result["failed"]
    assert "query 1 (Pod x) has both a name and selectors" in result["msg"]
