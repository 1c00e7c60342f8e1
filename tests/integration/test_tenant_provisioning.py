"""tenant_provisioning.yml against the real test bed: real rows in the platform's PostgreSQL, real namespaces,
the real scheduler failing to place a pod. No mocks.

Three scratch tenants (`tp-<hex>-*`, basic tier, removed afterwards), next to the seeded ones:
- stuck:   provisioning for 30 min; its Deployment's pod asks for 64 CPU, more than any node has, so the
           scheduler reports FailedScheduling - capacity is missing for it: the runbook must refuse, not retry;
- missing: provisioning for 30 min without a namespace (half-created, provisioning died early): retried;
- half:    failed 30 min ago, its namespace holds a failed attempt's leftovers: cleaned up and retried, only
           with tenant_provisioning_confirm_cleanup=true.
The inventory's tenants are passed along, as extra vars, so the file is never altered.
"""

from __future__ import annotations

import secrets

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import faults, platform_vars
from testbed import tenant_faults as tf
from tests import k8s_state
from tests.runbooks import assert_held_by_another_run, run_playbook

PLAYBOOK = "tenant_provisioning.yml"
VARS = platform_vars.load()
SEEDED = [t["slug"] for t in VARS["saasodoo_tenants"]]


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
    return SEEDED


@pytest.fixture(scope="module")
def broken(seeded):
    suffix = secrets.token_hex(3)
    slugs = {"stuck": f"tp-{suffix}-s", "missing": f"tp-{suffix}-m", "half": f"tp-{suffix}-h"}
    faults = []
    try:
        faults.append(tf.stuck_unschedulable(slugs["stuck"]))
        faults.append(tf.missing_namespace(slugs["missing"]))
        faults.append(tf.half_created(slugs["half"]))
        tenants = VARS["saasodoo_tenants"] + [{"slug": s, "tier": "basic"} for s in slugs.values()]
        yield {"slugs": slugs, "vars": {"tenant_provisioning_tenants": tenants},
               "namespaces": [tf.namespace(slugs["stuck"]), tf.namespace(slugs["half"])]}
    finally:
        for fault in faults:
            fault.undo()


def core():
    return client.CoreV1Api(k8s_state.api_client())


def apps():
    return client.AppsV1Api(k8s_state.api_client())


def state(broken):
    """What the runbook may change: the scratch tenants' rows, namespaces (with their uid) and objects."""
    snap = k8s_state.snapshot(broken["namespaces"])
    for slug in broken["slugs"].values():
        snap[f"row/{slug}"] = tf.tenant_row(slug)
        ns = tf._ignore_404(core().read_namespace, tf.namespace(slug))
        snap[f"Namespace/{tf.namespace(slug)}"] = ns and (ns.metadata.uid, ns.metadata.labels)
    return snap


def codes(report, slug=None):
    return sorted({f["code"] for f in report["findings"] if slug is None or f.get("tenant") == slug})


def serving(slug):
    dep = apps().read_namespaced_deployment("odoo", tf.namespace(slug))
    return (dep.status.ready_replicas or 0) >= dep.spec.replicas


def test_bad_input_is_refused_before_anything_is_read(broken):
    before = state(broken)
    result = run_playbook(PLAYBOOK, extravars={**broken["vars"], "tenant_provisioning_max_tenants": 0})
    assert result.rc != 0
    assert "tenant_provisioning_max_tenants" in " ".join(result.stdout.split()) and "must be > 0" in result.stdout
    assert k8s_state.diff(before, state(broken)) == []


def test_check_mode_reports_and_changes_nothing(broken):
    s = broken["slugs"]
    before = state(broken)

    result = run_playbook(PLAYBOOK, extravars=broken["vars"], check=True)

    assert result.rc == 0, result.stdout[-4000:]
    assert k8s_state.diff(before, state(broken)) == []
    report = result.artifacts["tenant_provisioning_report"]
    assert report["check_mode"] is True
    assert codes(report, s["stuck"]) == ["TENANT_OBJECT_MISSING", "TENANT_STUCK_PROVISIONING", "TENANT_UNSCHEDULABLE"]
    assert codes(report, s["missing"]) == ["TENANT_MISSING_NAMESPACE"]
    assert codes(report, s["half"]) == ["TENANT_FAILED"]
    assert "TENANTS_MULTIPLE_FAILURES" in codes(report)
    assert not any(f.get("tenant") in SEEDED for f in report["findings"])
    unsched = [f for f in report["findings"] if f["code"] == "TENANT_UNSCHEDULABLE"][0]
    assert "Insufficient cpu" in unsched["evidence"]["event_message"]
    # retry predicted by provision_tenant itself; the cleanup needs the confirmation; the stuck one is refused
    assert [a for a in report["actions"] if a.startswith(f"would provision again tenant {s['missing']}: ")]
    assert "Namespace/" + tf.namespace(s["missing"]) + ": create" in report["actions"][0]
    assert len(report["actions"]) == 1
    handed = " ".join(report["handed_over"])
    assert f"refused to provision tenant {s['stuck']} again: pod odoo-" in handed and "64 CPU" in handed
    assert f"would delete namespace {tf.namespace(s['half'])}" in handed
    assert "tenant_provisioning_confirm_cleanup=true" in handed
    assert report["refused_for_capacity"] == [s["stuck"]]
    assert report["verdicts_before"][s["stuck"]]["verdict"] == "stuck"
    assert report["escalation"]["level"] == "critical"


def test_a_lease_held_by_another_live_run_provisions_nothing(broken):
    # One writer per platform: with the cleanup confirmed there is a retry to make, but another live
    # run holds the Lease - nothing is provisioned or cleaned up, and the report says who holds it.
    s = broken["slugs"]
    holder = "tenant_provisioning/awx-3/20261207T031500Z/11"
    faults.delete_lease()
    try:
        faults.lease_held(holder, renewed_ago=5, duration=600,
                          details={"runbook": "tenant_provisioning", "awx_job": "4713"})
        before, lease_before = state(broken), faults.read_lease()

        result = run_playbook(PLAYBOOK, extravars={**broken["vars"], "tenant_provisioning_confirm_cleanup": True})

        assert result.rc == 0, result.stdout[-4000:]
        report = result.artifacts["tenant_provisioning_report"]
        assert codes(report, s["missing"]) == ["TENANT_MISSING_NAMESPACE"]
        assert codes(report, s["half"]) == ["TENANT_FAILED"]
        assert_held_by_another_run(result, report, holder, {"runbook": "tenant_provisioning", "awx_job": "4713"})
        assert k8s_state.diff(before, state(broken)) == []
        # The faults are still there, read from the cluster and the database.
        assert tf._ignore_404(core().read_namespace, tf.namespace(s["missing"])) is None
        assert tf.tenant_row(s["half"])["status"] == "failed"
        after = faults.read_lease()
        assert after.metadata.resource_version == lease_before.metadata.resource_version
        assert after.spec.holder_identity == holder
    finally:
        faults.delete_lease()


def test_retry_cleanup_and_refusal_then_nothing_to_do(broken):
    s = broken["slugs"]
    half_uid = core().read_namespace(tf.namespace(s["half"])).metadata.uid
    stuck_before = {k: v for k, v in state(broken).items() if s["stuck"] in k}

    result = run_playbook(PLAYBOOK, extravars={**broken["vars"], "tenant_provisioning_confirm_cleanup": True})

    assert result.rc == 0, result.stdout[-4000:]
    report = result.artifacts["tenant_provisioning_report"]
    assert codes(report, s["missing"]) == ["TENANT_MISSING_NAMESPACE"]
    assert codes(report, s["half"]) == ["TENANT_FAILED"]
    actions = report["actions"]
    assert [a for a in actions if a.startswith(f"provisioned again tenant {s['missing']}: ")], actions
    assert [a for a in actions if a.startswith(f"cleaned up and provisioned again tenant {s['half']}: ")], actions
    assert any(a.endswith("status failed -> active") for a in actions), actions
    # The platform really healed: rows active without error, pods ready, the half-made namespace recreated.
    for slug in (s["missing"], s["half"]):
        row = tf.tenant_row(slug)
        assert (row["status"], row["last_error"]) == ("active", None), row
        assert serving(slug)
    assert core().read_namespace(tf.namespace(s["half"])).metadata.uid != half_uid
    quota = core().read_namespaced_resource_quota("tenant-quota", tf.namespace(s["half"]))
    assert quota.spec.hard["pods"] == VARS["saasodoo_tenant_tiers"]["basic"]["quota"]["pods"]
    # The stuck tenant was refused, never touched: same row, same namespace and Deployment.
    assert report["refused_for_capacity"] == [s["stuck"]]
    assert {k: v for k, v in state(broken).items() if s["stuck"] in k} == stuck_before
    assert not any(s["stuck"] in a for a in actions)
    # Verification: only the refused tenant is left, and it still needs a human within 2 hours.
    assert {f.get("tenant") for f in report["remaining"]} == {s["stuck"]}
    assert report["verdicts_after"][s["missing"]] == "healthy" and report["verdicts_after"][s["half"]] == "healthy"
    assert report["healthy_after"] is False and report["escalation"]["level"] == "high"

    again = run_playbook(PLAYBOOK, extravars={**broken["vars"], "tenant_provisioning_confirm_cleanup": True})

    assert again.rc == 0 and again.changed == 0, again.stdout[-4000:]
    report = again.artifacts["tenant_provisioning_report"]
    assert report["actions"] == []
    assert {f.get("tenant") for f in report["findings"]} == {s["stuck"]}
    assert report["refused_for_capacity"] == [s["stuck"]]
