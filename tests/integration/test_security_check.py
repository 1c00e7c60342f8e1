"""security_check.yml against the real test bed. Read-only: it must find, never fix.

The fault: a ServiceAccount of a tenant namespace bound to cluster-admin by a real ClusterRoleBinding.
The test bed's API server writes no audit log and has no network plugin; the runbook must say "unknown"
for what it cannot see, and "fail" for an audit log the inventory declares but that is not there.
"""

from __future__ import annotations

import secrets

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import platform_vars
from testbed import tenant_faults as tf
from tests import k8s_state
from tests.runbooks import run_playbook

PLAYBOOK = "security_check.yml"
VARS = platform_vars.load()
SEEDED = [t["slug"] for t in VARS["saasodoo_tenants"]]
TENANT = SEEDED[1]
ITEMS = ["Network policies enforced", "Pod security policies active", "RBAC permissions correct",
         "Secrets properly encrypted", "No unauthorized access attempts", "Audit logs collecting"]


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
    return [tf.namespace(s) for s in SEEDED] + sorted({c["namespace"] for c in VARS["saasodoo_components"].values()})


def rbac():
    return client.RbacAuthorizationV1Api(k8s_state.api_client())


def state(namespaces):
    snap = k8s_state.snapshot(namespaces)
    snap["ClusterRoleBindings"] = sorted((b.metadata.name, b.metadata.resource_version)
                                         for b in rbac().list_cluster_role_binding().items)
    return snap


def items(report):
    return {i["item"]: i for i in report["checklist"]}


def test_tenant_account_bound_to_cluster_admin_is_found_and_left_alone(seeded, tmp_path):
    suffix = secrets.token_hex(3)
    account, binding = f"sc-{suffix}", f"sc-{suffix}-cluster-admin"
    missing_log = str(tmp_path / "kube-apiserver-audit.log")
    fault = tf.tenant_cluster_admin(TENANT, account, binding)
    try:
        before = state(seeded)
        for check in (True, False):
            result = run_playbook(PLAYBOOK, check=check, extravars={"security_check_audit_log_path": missing_log})

            assert result.rc == 0 and result.changed == 0, result.stdout[-4000:]
            assert k8s_state.diff(before, state(seeded)) == []  # read-only, in check mode and out of it
            report = result.artifacts["security_check_report"]
            assert [i["item"] for i in report["checklist"]] == ITEMS
            rbac_item = items(report)["RBAC permissions correct"]
            assert rbac_item["status"] == "fail" and rbac_item["findings"] == ["SECURITY_RBAC_TENANT_BROAD_GRANT"]
            grant = [f for f in report["findings"] if f["code"] == "SECURITY_RBAC_TENANT_BROAD_GRANT"]
            assert len(grant) == 1 and grant[0]["severity"] == "critical"
            assert grant[0]["message"] == (
                f"ClusterRoleBinding/{binding} grants ClusterRole/cluster-admin (ClusterRole cluster-admin) to "
                f"ServiceAccount {tf.namespace(TENANT)}/{account} cluster-wide")
            # The declared audit log is not there: audit logging fails, refused requests cannot be counted.
            assert items(report)["Audit logs collecting"]["status"] == "fail"
            assert items(report)["Audit logs collecting"]["findings"] == ["SECURITY_AUDIT_LOG_MISSING"]
            assert items(report)["No unauthorized access attempts"]["status"] == "unknown"
            assert items(report)["Pod security policies active"]["status"] == "pass"
            assert report["actions"] == [] and report["escalation"]["level"] == "critical"
            assert any("Security Team" in h for h in report["handed_over"])
        assert rbac().read_cluster_role_binding(binding).subjects[0].name == account
    finally:
        fault.undo()


def test_healthy_platform_passes_what_it_can_see(seeded):
    before = state(seeded)

    result = run_playbook(PLAYBOOK)

    assert result.rc == 0 and result.changed == 0, result.stdout[-4000:]
    assert k8s_state.diff(before, state(seeded)) == []
    report = result.artifacts["security_check_report"]
    status = {name: item["status"] for name, item in items(report).items()}
    assert status == {"Network policies enforced": "unknown", "Pod security policies active": "pass",
                      "RBAC permissions correct": "pass", "Secrets properly encrypted": "unknown",
                      "No unauthorized access attempts": "unknown", "Audit logs collecting": "unknown"}
    assert {f["severity"] for f in report["findings"]} == {"low"}
    assert sorted(f["code"] for f in report["findings"]) == [
        "SECURITY_AUDIT_LOG_NOT_DECLARED", "SECURITY_NETPOL_ENFORCEMENT_UNVERIFIED",
        "SECURITY_SECRETS_ENCRYPTION_NOT_VISIBLE", "SECURITY_UNAUTHORIZED_NOT_VERIFIABLE"]
    network = items(report)["Network policies enforced"]["evidence"]
    assert f"{len(SEEDED) * (len(SEEDED) - 1)} tenant pair(s) evaluated on the real pods: all isolated" in network
    assert report["healthy_before"] is True and report["escalation"]["level"] == "none"
    assert report["checklist_summary"] == {"pass": 2, "fail": 0, "unknown": 4}
