"""tenant_provisioning.yml's decisions on saasodoo_tenant_check-shaped verdicts (plugins/filter/tenant_provisioning.py)."""

from __future__ import annotations

import pytest

from plugins.filter import tenant_provisioning as f


def entry(slug, verdict, action, status="provisioning", reasons=None, age=30.0, in_database=True, in_cluster=True):
    return {"slug": slug, "namespace": "tenant-" + slug, "verdict": verdict, "action": action, "status": status,
            "status_age_minutes": age, "reasons": reasons or ["%s reason" % verdict], "in_database": in_database,
            "in_cluster": in_cluster}


def inventory(*slugs):
    return [{"slug": s, "tier": "basic"} for s in slugs]


def test_retry_and_nothing_for_healthy():
    check = {"tenants": [entry("a", "healthy", "none", "active"), entry("b", "stuck", "retry")]}
    plan = f.tenant_provisioning_plan(check, inventory("a", "b"))
    assert plan["todo"] == [{"slug": "b", "tier": "basic", "cleanup": False, "verdict": "stuck",
                             "reasons": ["stuck reason"]}]
    assert plan["skipped"] == [] and plan["handed_over"] == [] and plan["refused"] == []
    assert plan["verdicts"]["a"]["verdict"] == "healthy" and plan["verdicts"]["b"]["action"] == "retry"


def test_cleanup_needs_confirmation():
    check = {"tenants": [entry("h", "failed", "cleanup_and_retry", "failed")]}
    plan = f.tenant_provisioning_plan(check, inventory("h"))
    assert plan["todo"] == []
    assert len(plan["handed_over"]) == 1
    assert "would delete namespace tenant-h" in plan["handed_over"][0]
    assert "tenant_provisioning_confirm_cleanup=true" in plan["handed_over"][0]
    confirmed = f.tenant_provisioning_plan(check, inventory("h"), confirm_cleanup=True)
    assert [(t["slug"], t["cleanup"]) for t in confirmed["todo"]] == [("h", True)]
    assert confirmed["handed_over"] == []


def test_cleanup_of_an_active_tenant_is_never_done():
    check = {"tenants": [entry("v", "failed", "cleanup_and_retry", "active", ["volume: claim lost"])]}
    plan = f.tenant_provisioning_plan(check, inventory("v"), confirm_cleanup=True)
    assert plan["todo"] == [] and "is active" in plan["handed_over"][0] and "volume: claim lost" in plan["handed_over"][0]


def test_no_capacity_is_refused_not_retried():
    reasons = ["pod odoo-x is not scheduled: 0/3 nodes are available: 3 Insufficient cpu.",
               "the cluster has room for 0 of the 1 replica(s) of tier basic (250m CPU each)"]
    check = {"tenants": [entry("c", "stuck", "add_capacity", reasons=reasons)]}
    plan = f.tenant_provisioning_plan(check, inventory("c"), confirm_cleanup=True, max_tenants=5)
    assert plan["todo"] == [] and plan["refused"] == ["c"]
    assert plan["handed_over"][0].startswith("refused to provision tenant c again: the cluster lacks capacity")
    assert "room for 0 of the 1 replica(s)" in plan["handed_over"][0]
    assert "Insufficient cpu" not in plan["handed_over"][0]


def test_pods_no_node_can_hold_are_refused_whatever_the_action():
    pods = [{"name": "odoo-x", "requests": {"cpu": 64.0, "memory": 1073741824}, "fits_any_node": False,
             "message": "0/3 nodes are available: 3 Insufficient cpu."}]
    for action in ("retry", "cleanup_and_retry"):
        stuck = dict(entry("s", "stuck", action), unscheduled_pods=pods)
        plan = f.tenant_provisioning_plan({"tenants": [stuck]}, inventory("s"), confirm_cleanup=True)
        assert plan["todo"] == [] and plan["refused"] == ["s"]
        assert ("refused to provision tenant s again: pod odoo-x requests 64 CPU / 1024Mi memory, more than any "
                "schedulable node can hold (FailedScheduling: 0/3 nodes are available: 3 Insufficient cpu.)"
                in plan["handed_over"][0])
    # a pod that would fit an empty node is the scheduler's business (or add_capacity's): retried
    fits = dict(entry("s", "stuck", "retry"), unscheduled_pods=[dict(pods[0], fits_any_node=True)])
    assert [t["slug"] for t in f.tenant_provisioning_plan({"tenants": [fits]}, inventory("s"))["todo"]] == ["s"]


def test_cap_leaves_the_rest_for_the_next_run():
    check = {"tenants": [entry(s, "stuck", "retry") for s in ("a", "b", "c")]}
    plan = f.tenant_provisioning_plan(check, inventory("c", "a", "b"), max_tenants=2)
    assert [t["slug"] for t in plan["todo"]] == ["c", "a"]  # the inventory's order
    assert plan["skipped"] == [{"ref": "tenants/b", "why": "cap of 2 tenant(s) provisioned per run reached; "
                                                           "rerun to continue"}]


def test_in_progress_orphans_and_unknown_tenants():
    check = {"tenants": [entry("p", "provisioning", "none", age=3.0),
                         entry("o", "orphaned", "cleanup", status=None, in_database=False),
                         entry("t", "orphaned", "none", status=None, in_database=False,
                               reasons=["namespace tenant-t has no tenant record and is already being deleted"])]}
    plan = f.tenant_provisioning_plan(check, inventory("p", "o", "t", "ghost"))
    assert plan["todo"] == []
    assert plan["skipped"] == [
        {"ref": "tenants/p", "why": "provisioning in progress (status provisioning for 3 min): wait"},
        {"ref": "tenants/t", "why": "namespace tenant-t has no tenant record and is already being deleted"}]
    assert "namespace tenant-o carries tenant o's label but the tenants table has no such tenant" in plan["handed_over"][0]
    assert plan["handed_over"][1].startswith("tenant ghost is in the inventory but neither in the tenants table")
    assert plan["verdicts"]["ghost"]["verdict"] == "not_found"


def test_remediation_off_lists_what_would_be_done():
    check = {"tenants": [entry("a", "stuck", "retry"), entry("h", "failed", "cleanup_and_retry", "failed")]}
    plan = f.tenant_provisioning_plan(check, inventory("a", "h"), confirm_cleanup=True, remediate=False)
    assert plan["todo"] == []
    assert plan["skipped"] == [
        {"ref": "tenants/a", "why": "remediation off (tenant_provisioning_remediate=false): would provision it again"},
        {"ref": "tenants/h", "why": "remediation off (tenant_provisioning_remediate=false): would clean up and "
                                    "provision it again"}]


def test_bad_cap_is_refused():
    with pytest.raises(ValueError, match="max_tenants must be at least 1"):
        f.tenant_provisioning_plan({"tenants": []}, [], max_tenants=0)


def test_action_lines():
    done = [
        {"slug": "a", "cleanup": False, "ok": True, "result": {
            "actions": [{"summary": "Deployment/tenant-a/odoo: update spec"}, {"summary": "status provisioning -> active"}],
            "status": {"before": "provisioning", "after": "active"}}},
        {"slug": "h", "cleanup": True, "ok": True, "result": {"actions": [], "status": {}}},
        {"slug": "x", "cleanup": False, "ok": False, "error": "timed out", "result": {}},
    ]
    assert f.tenant_provisioning_actions(done) == [
        "provisioned again tenant a: 2 action(s) (Deployment/tenant-a/odoo: update spec; status provisioning -> "
        "active); status provisioning -> active",
        "cleaned up and provisioned again tenant h: 0 action(s) (none); status None -> None",
        "tried to provision again tenant x: FAILED: timed out"]
    assert f.tenant_provisioning_actions(done[:2], check_mode=True) == [
        "would provision again tenant a: Deployment/tenant-a/odoo: update spec; status provisioning -> active",
        "would clean up and provision again tenant h: nothing to apply"]
