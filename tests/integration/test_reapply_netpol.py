"""reapply_netpol alone, on two tenants of the test's own (`np-<hex>-a`, `np-<hex>-b`), provisioned
first with provision_tenant: real rows, real namespaces, real NetworkPolicies. No mocks.

NetworkPolicies are stored but not enforced on the test bed (no network plugin): isolation is
judged from the policy objects, the way the role does, by the filter the unit tests pin down.
The seeded tenants (acme, globex, initech) are never touched.
"""

from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import platform_vars
from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

PLAYBOOK = str(ROOT / "tests" / "integration" / "playbooks" / "reapply_netpol.yml")
PROVISION = str(ROOT / "tests" / "integration" / "playbooks" / "provision_tenant.yml")
DB = {
    "host": "127.0.0.1",
    "port": int(os.environ.get("SAASODOO_DB_PORT", "55432")),
    "user": "saasodoo",
    "password": os.environ.get("SAASODOO_DB_PASSWORD", "saasodoo-local"),
    "dbname": "saasodoo",
}
VARS = platform_vars.load()
PREFIX = VARS["saasodoo_tenant_namespace_prefix"]
PVC = VARS["saasodoo_tenant_pvc_name"]
POLICIES = {"default-deny", "allow-from-ingress", "allow-dns-egress", "allow-platform-db-egress"}
ENFORCE = "pod-security.kubernetes.io/enforce"


def core():
    return client.CoreV1Api(k8s_state.api_client())


def net():
    return client.NetworkingV1Api(k8s_state.api_client())


def db():
    return psycopg.connect(connect_timeout=5, autocommit=True, application_name="test_reapply_netpol", **DB)


def allow_all(namespace):
    net().create_namespaced_network_policy(namespace, {
        "metadata": {"name": "allow-all"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}})


def policies(namespace):
    return {p.metadata.name for p in net().list_namespaced_network_policy(namespace).items}


def state(namespaces):
    """The k8s_state snapshot plus what it leaves out and the role may change: labels, LimitRanges."""
    snap = k8s_state.snapshot(namespaces)
    for ns in namespaces:
        snap[f"Namespace/{ns}"] = core().read_namespace(ns).metadata.labels
        for lr in core().list_namespaced_limit_range(ns).items:
            snap[f"LimitRange/{ns}/{lr.metadata.name}"] = {"rv": lr.metadata.resource_version}
    return snap


@pytest.fixture(scope="module")
def tenants(testbed):
    """Two tenants provisioned by provision_tenant (rows, namespaces, PVs removed afterwards)."""
    suffix = secrets.token_hex(3)
    slugs = [f"np-{suffix}-a", f"np-{suffix}-b"]
    with db() as conn:
        for slug in slugs:
            conn.execute("INSERT INTO tenants (slug, tier, status) VALUES (%s, 'basic', 'provisioning')", (slug,))
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            runs = list(pool.map(lambda s: run_playbook(PROVISION, extravars={
                "provision_tenant_slug": s, "provision_tenant_poll_interval": 1}), slugs))
        for result in runs:
            assert result.rc == 0, result.stdout[-3000:]
        yield {"slugs": slugs, "namespaces": [PREFIX + s for s in slugs],
               "vars": {"reapply_netpol_tenants": [{"slug": s, "tier": "basic"} for s in slugs]}}
    finally:
        with db() as conn:
            conn.execute("DELETE FROM tenants WHERE slug = ANY(%s)", (slugs,))
        for slug in slugs:
            for delete in (lambda: core().delete_namespace(PREFIX + slug),
                           lambda: core().delete_persistent_volume(f"{PREFIX}{slug}-{PVC}")):
                try:
                    delete()
                except ApiException as e:
                    if e.status != 404:
                        raise


def pairs(result, key):
    return sorted((p["from"], p["to"]) for p in result["isolation"][key])


def by_slug(result, slug):
    return [t for t in result["tenants"] if t["slug"] == slug][0]


def test_bad_input_is_refused_before_anything_changes(tenants):
    before = state(tenants["namespaces"])
    no_tier = run_playbook(PLAYBOOK, extravars={"reapply_netpol_tenants": [{"slug": tenants["slugs"][0]}]})
    twice = run_playbook(PLAYBOOK, extravars={"reapply_netpol_tenants": tenants["vars"]["reapply_netpol_tenants"] * 2})
    assert no_tier.rc != 0 and "missing required arguments: tier" in no_tier.stdout
    assert twice.rc != 0 and "each once" in " ".join(twice.stdout.split())
    assert k8s_state.diff(before, state(tenants["namespaces"])) == []


def test_drift_is_found_reapplied_and_isolation_proved(tenants):
    (a, b), (ns_a, ns_b) = tenants["slugs"], tenants["namespaces"]
    extra = tenants["vars"]

    # The faults: a's policies and quota deleted, b's Pod Security level lowered, an allow-all
    # policy added on both sides (egress out of a, ingress into b: the pair is open).
    for name in POLICIES:
        net().delete_namespaced_network_policy(name, ns_a)
    core().delete_namespaced_resource_quota("tenant-quota", ns_a)
    core().patch_namespace(ns_b, {"metadata": {"labels": {ENFORCE: "privileged"}}})
    allow_all(ns_a)
    allow_all(ns_b)
    faulty = state([ns_a, ns_b])

    # Check mode: everything is reported, the outcome predicted, nothing changed.
    check = run_playbook(PLAYBOOK, extravars={**extra, "reapply_netpol_remove_extra": True}, check=True)
    assert check.rc == 0, check.stdout[-4000:]
    assert k8s_state.diff(faulty, state([ns_a, ns_b])) == []
    res = check.artifacts["reapply_netpol_result"]
    assert res["check_mode"] is True
    assert sorted(by_slug(res, a)["missing"]) == sorted(
        [f"NetworkPolicy/{ns_a}/{n}" for n in POLICIES] + [f"ResourceQuota/{ns_a}/tenant-quota"])
    changed_b = by_slug(res, b)["changed"]
    assert [c["ref"] for c in changed_b] == [f"Namespace/{ns_b}"]
    assert changed_b[0]["before"][ENFORCE] == "privileged" and changed_b[0]["after"][ENFORCE] == "baseline"
    assert by_slug(res, a)["extra"] == [f"NetworkPolicy/{ns_a}/allow-all"]
    assert pairs(res, "open_before") == [(a, b), (b, a)]
    assert pairs(res, "open_after") == []

    # Without remove_extra: the drift is repaired, the extra policies stay, the pair stays open,
    # and the run fails saying so.
    kept = run_playbook(PLAYBOOK, extravars=extra, diff=True)
    assert kept.rc != 0
    text = " ".join(kept.stdout.split())
    assert f"Open pairs: {a} -> {b}, {b} -> {a}" in text
    assert f"{ns_a}/allow-all" in text and "reapply_netpol_remove_extra=true" in text
    res = kept.artifacts["reapply_netpol_result"]
    assert res["drift_found"] == 6 and res["applied"] == 6 and res["removed"] == 0 and res["drift_after"] == []
    assert pairs(res, "open_after") == [(a, b), (b, a)]
    assert policies(ns_a) == POLICIES | {"allow-all"} and policies(ns_b) == POLICIES | {"allow-all"}
    assert [q.metadata.name for q in core().list_namespaced_resource_quota(ns_a).items] == ["tenant-quota"]
    assert core().read_namespace(ns_b).metadata.labels[ENFORCE] == "baseline"
    assert "Show what changes (--diff)" in kept.stdout

    # With remove_extra: the extra policies go, the pairs close.
    removed = run_playbook(PLAYBOOK, extravars={**extra, "reapply_netpol_remove_extra": True})
    assert removed.rc == 0, removed.stdout[-4000:]
    res = removed.artifacts["reapply_netpol_result"]
    assert res["applied"] == 0 and res["removed"] == 2
    assert pairs(res, "open_before") == [(a, b), (b, a)] and pairs(res, "open_after") == []
    assert policies(ns_a) == POLICIES and policies(ns_b) == POLICIES

    # Rerun: nothing to do.
    again = run_playbook(PLAYBOOK, extravars=extra)
    assert again.rc == 0 and again.changed == 0, again.stdout[-4000:]
    res = again.artifacts["reapply_netpol_result"]
    assert res["drift_found"] == 0 and res["extra_found"] == 0 and res["isolation"]["open_before"] == []
    assert res["isolation"]["pairs"] == 2 and res["duration_seconds"] >= 0
