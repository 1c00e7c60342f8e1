"""tenant_isolation.yml against the real test bed, on the sample platform's own tenants (acme, globex,
initech) and their real pods. No mocks.

The faults: acme's default-deny NetworkPolicy deleted, globex's ResourceQuota removed, initech's namespace
label pod-security.kubernetes.io/enforce lowered to privileged, and an allow-all NetworkPolicy added by hand in
acme and globex (so a pod of either may reach a pod of the other). Every fault is undone afterwards, whatever
the runbook did.

NetworkPolicies are stored but not enforced on the test bed (no network plugin): isolation is proved from the
policy objects and the real pods, by the evaluation the unit tests pin down.
"""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import platform_vars
from testbed import tenant_faults as tf
from tests import k8s_state
from tests.runbooks import run_playbook

PLAYBOOK = "tenant_isolation.yml"
VARS = platform_vars.load()
SEEDED = [t["slug"] for t in VARS["saasodoo_tenants"]]
ACME, GLOBEX, INITECH = SEEDED[:3]
ENFORCE = "pod-security.kubernetes.io/enforce"


@pytest.fixture(scope="module")
def seeded(request):
    """The sample platform's tenants: deployed already, or deployed now by the `platform` fixture."""
    apps = client.AppsV1Api(k8s_state.api_client())

    def deployed(slug):
        try:
            dep = apps.read_namespaced_deployment("odoo", tf.namespace(slug))
        except ApiException:
            return False
        return (dep.status.ready_replicas or 0) >= (dep.spec.replicas or 1)

    if not all(deployed(slug) for slug in SEEDED):
        request.getfixturevalue("platform")
    return [tf.namespace(s) for s in SEEDED]


def net():
    return client.NetworkingV1Api(k8s_state.api_client())


def core():
    return client.CoreV1Api(k8s_state.api_client())


def state(namespaces):
    """k8s_state's snapshot plus what it leaves out and the runbook may change: namespace labels, LimitRanges."""
    snap = k8s_state.snapshot(namespaces)
    for ns in namespaces:
        snap[f"Namespace/{ns}"] = core().read_namespace(ns).metadata.labels
        for lr in core().list_namespaced_limit_range(ns).items:
            snap[f"LimitRange/{ns}/{lr.metadata.name}"] = lr.metadata.resource_version
    return snap


def findings(report, code):
    return sorted(f.get("tenant") for f in report["findings"] if f["code"] == code)


def test_bad_input_is_refused_before_anything_is_read(seeded):
    before = state(seeded)
    result = run_playbook(PLAYBOOK, extravars={"tenant_isolation_tenants": [{"slug": ACME}]})
    assert result.rc != 0 and "missing required arguments: tier" in result.stdout
    assert k8s_state.diff(before, state(seeded)) == []


def test_drift_found_reapplied_and_isolation_proved(seeded):
    faults = []
    try:
        faults.append(tf.delete_network_policy(ACME, "default-deny"))
        faults.append(tf.delete_resource_quota(GLOBEX))
        faults.append(tf.label_namespace(INITECH, ENFORCE, "privileged"))
        faults.append(tf.allow_all(ACME))
        faults.append(tf.allow_all(GLOBEX))
        broken = state(seeded)

        # Check mode: every fault reported, the pair proved open, "would" actions, nothing changed.
        check = run_playbook(PLAYBOOK, check=True)

        assert check.rc == 0, check.stdout[-4000:]
        assert k8s_state.diff(broken, state(seeded)) == []
        report = check.artifacts["tenant_isolation_report"]
        assert findings(report, "TENANT_DEFAULT_DENY_MISSING") == [ACME]
        assert findings(report, "TENANT_QUOTA_MISSING") == [GLOBEX]
        assert findings(report, "TENANT_POD_SECURITY_WEAKENED") == [INITECH]
        assert findings(report, "TENANT_NETPOL_EXTRA") == [ACME, GLOBEX]
        assert findings(report, "TENANT_PAIR_OPEN") == [ACME, GLOBEX]
        assert report["pairs_evaluated"] == len(SEEDED) * (len(SEEDED) - 1)
        assert sorted(report["open_pairs_before"]) == [f"{ACME} -> {GLOBEX}", f"{GLOBEX} -> {ACME}"]
        pair = [f for f in report["findings"] if f["code"] == "TENANT_PAIR_OPEN" and f["tenant"] == ACME][0]
        assert pair["severity"] == "critical"
        assert f"egress of {ACME}: allowed by {tf.namespace(ACME)}/allow-all" in pair["evidence"]
        assert pair["message"].startswith(f"Tenant {ACME} can reach tenant {GLOBEX}: pod {tf.namespace(ACME)}/odoo-")
        assert sorted(report["actions"]) == sorted([
            f"would reapply from desired state: NetworkPolicy/{tf.namespace(ACME)}/default-deny",
            f"would reapply from desired state: ResourceQuota/{tf.namespace(GLOBEX)}/tenant-quota",
            f"would reapply from desired state: Namespace/{tf.namespace(INITECH)}"])
        handed = " ".join(report["handed_over"])
        assert f"NetworkPolicy/{tf.namespace(ACME)}/allow-all is not in the desired set" in handed
        assert "tenant_isolation_confirm_remove_extra=true" in handed
        assert report["escalation"]["level"] == "critical"

        # Real run, extra policies confirmed for removal: healed, and every pair proved closed again.
        fixed = run_playbook(PLAYBOOK, extravars={"tenant_isolation_confirm_remove_extra": True})

        assert fixed.rc == 0, fixed.stdout[-4000:]
        report = fixed.artifacts["tenant_isolation_report"]
        assert findings(report, "TENANT_PAIR_OPEN") == [ACME, GLOBEX]
        assert f"reapplied from desired state: NetworkPolicy/{tf.namespace(ACME)}/default-deny" in report["actions"]
        assert f"removed extra policy: NetworkPolicy/{tf.namespace(GLOBEX)}/allow-all" in report["actions"]
        assert report["remaining"] == [] and report["healthy_after"] is True
        assert report["open_pairs_after"] == [] and report["isolated_after"] is True
        assert report["escalation"]["level"] == "medium"  # resolved; the root cause deserves a review
        deny = net().read_namespaced_network_policy("default-deny", tf.namespace(ACME)).spec
        assert deny.pod_selector.match_labels is None and sorted(deny.policy_types) == ["Egress", "Ingress"]
        assert not deny.ingress and not deny.egress
        quota = core().read_namespaced_resource_quota("tenant-quota", tf.namespace(GLOBEX)).spec.hard
        assert quota["pods"] == VARS["saasodoo_tenant_tiers"]["basic"]["quota"]["pods"]
        assert core().read_namespace(tf.namespace(INITECH)).metadata.labels[ENFORCE] == "baseline"
        for slug in (ACME, GLOBEX):
            names = {p.metadata.name for p in net().list_namespaced_network_policy(tf.namespace(slug)).items}
            assert "allow-all" not in names and "default-deny" in names

        # Rerun: nothing left, nothing changed.
        again = run_playbook(PLAYBOOK)

        assert again.rc == 0 and again.changed == 0, again.stdout[-4000:]
        report = again.artifacts["tenant_isolation_report"]
        assert report["findings"] == [] and report["actions"] == [] and report["open_pairs_before"] == []
    finally:
        for fault in reversed(faults):
            fault.undo()
