"""What tenant_provisioning.yml does with the verdicts of saasodoo_tenant_check: which tenants to
provision again (and whether their namespace is cleaned up first), which to refuse for lack of
capacity, what to leave to a human, and what to leave for the next run (the cap).

Pure functions on the module's result; every decision is unit-tested without a cluster
(tests/unit/test_tenant_provisioning_filter.py).
"""

from __future__ import annotations

DOCUMENTATION = """
name: tenant_provisioning
short_description: Plan of the tenant_provisioning runbook from saasodoo_tenant_check's verdicts
description:
  - C(tenant_provisioning_plan) turns the check's per-tenant verdicts and actions into the runbook's plan.
  - C(tenant_provisioning_actions) turns provision_tenant's results into the report's action lines.
"""


def _minutes(value):
    return "%s min" % (int(value) if value is not None and float(value) == int(value) else value)


def _fmt_requests(req):
    cpu, mem = (req or {}).get("cpu"), (req or {}).get("memory")
    parts = []
    if cpu is not None:
        parts.append("%g CPU" % cpu)
    if mem is not None:
        parts.append("%gMi memory" % round(mem / 1048576.0, 1))
    return " / ".join(parts) or "no requests"


def tenant_provisioning_plan(check, tenants, confirm_cleanup=False, max_tenants=2, remediate=True):
    """The plan for the inventory's ``tenants`` ([{slug, tier}]) from ``check`` (saasodoo_tenant_check's result).

    Per the check's ``action`` for each tenant, in the inventory's order:
    - ``retry``: provision again (provision_tenant);
    - ``cleanup_and_retry``: provision again after deleting the namespace, only with ``confirm_cleanup`` and never
      for an active tenant; otherwise handed over, saying what would be deleted;
    - ``add_capacity``, or any action while a pod of the tenant waits for a node and requests more than any
      schedulable node can hold (FailedScheduling that no retry fixes): refused - provisioning again cannot
      help while no node has room for those requests, and a rollout would wait on them; handed over, saying why;
    - ``cleanup`` (a namespace without a tenant record): handed over, a human decides;
    - ``none``: nothing, or left alone while provisioning is still in progress.
    At most ``max_tenants`` tenants are provisioned; the others are skipped until the next run. With
    ``remediate`` false nothing is provisioned: what would be is listed as skipped.

    Returns {todo: [{slug, tier, cleanup, verdict, reasons}], skipped: [{ref, why}], handed_over: [str],
    refused: [slug], verdicts: {slug: {verdict, action, status, in_database, in_cluster}}}.
    """
    max_tenants = int(max_tenants)
    if max_tenants < 1:
        raise ValueError("tenant_provisioning_plan: max_tenants must be at least 1")
    checked = dict((t["slug"], t) for t in (check or {}).get("tenants") or [])
    wanted, skipped, handed, refused, verdicts = [], [], [], [], {}
    for tenant in tenants or []:
        slug, tier = tenant["slug"], tenant.get("tier")
        entry = checked.get(slug)
        ref = "tenants/%s" % slug
        if entry is None:
            handed.append("tenant %s is in the inventory but neither in the tenants table nor a namespace: create it "
                          "through the platform (it records the tenant as pending), then rerun" % slug)
            verdicts[slug] = {"verdict": "not_found", "action": "none", "status": None, "in_database": None,
                              "in_cluster": False}
            continue
        action, verdict = entry.get("action") or "none", entry.get("verdict")
        verdicts[slug] = {"verdict": verdict, "action": action, "status": entry.get("status"),
                          "in_database": entry.get("in_database"), "in_cluster": entry.get("in_cluster")}
        reasons = list(entry.get("reasons") or [])
        namespace = entry.get("namespace")
        never = [p for p in entry.get("unscheduled_pods") or [] if p.get("fits_any_node") is False]
        if never and action in ("retry", "cleanup_and_retry"):
            refused.append(slug)
            handed.append("refused to provision tenant %s again: pod %s requests %s, more than any schedulable node "
                          "can hold (FailedScheduling: %s). Retrying cannot schedule it and the rollout would wait on "
                          "it: add nodes big enough, or, if these requests are wrong for tier %s, clean the tenant up "
                          "and provision it from its tier (provision_tenant with provision_tenant_cleanup=true)" % (
                              slug, never[0].get("name"), _fmt_requests(never[0].get("requests")),
                              never[0].get("message") or "no scheduler message", tier))
        elif action == "retry":
            wanted.append({"slug": slug, "tier": tier, "cleanup": False, "verdict": verdict, "reasons": reasons})
        elif action == "cleanup_and_retry":
            if entry.get("status") == "active":
                handed.append("tenant %s is active but its namespace %s needs a cleanup (%s): an active tenant may "
                              "hold a customer's data - back it up and decide by hand (provision_tenant with "
                              "provision_tenant_force_cleanup)" % (slug, namespace, "; ".join(reasons)))
            elif confirm_cleanup:
                wanted.append({"slug": slug, "tier": tier, "cleanup": True, "verdict": verdict, "reasons": reasons})
            else:
                handed.append("tenant %s (%s): would delete namespace %s with everything in it (data PVC included) "
                              "and provision it again - rerun with tenant_provisioning_confirm_cleanup=true "
                              "(guide: Manual Cleanup and Retry)" % (slug, verdict, namespace))
        elif action == "add_capacity":
            refused.append(slug)
            short = [r for r in reasons if "room for" in r or "capacity" in r] or reasons
            handed.append("refused to provision tenant %s again: the cluster lacks capacity for it (%s). Retrying "
                          "cannot help until nodes are added or capacity is freed; then rerun (guide: Check Resource "
                          "Availability)" % (slug, "; ".join(short)))
        elif action == "cleanup":
            handed.append("namespace %s carries tenant %s's label but the tenants table has no such tenant: check that "
                          "nobody uses it and back up its volume, then delete it by hand (or create the tenant's "
                          "record through the platform)" % (namespace, slug))
        elif verdict == "provisioning":
            skipped.append({"ref": ref, "why": "provisioning in progress (status %s for %s): wait" % (
                entry.get("status"), _minutes(entry.get("status_age_minutes")))})
        elif verdict == "orphaned":
            skipped.append({"ref": ref, "why": "; ".join(reasons) or "orphaned, nothing to do"})
    if not remediate:
        for item in wanted:
            skipped.append({"ref": "tenants/%s" % item["slug"],
                            "why": "remediation off (tenant_provisioning_remediate=false): would %s" % (
                                "clean up and provision it again" if item["cleanup"] else "provision it again")})
        wanted = []
    todo = wanted[:max_tenants]
    for item in wanted[max_tenants:]:
        skipped.append({"ref": "tenants/%s" % item["slug"],
                        "why": "cap of %d tenant(s) provisioned per run reached; rerun to continue" % max_tenants})
    return {"todo": todo, "skipped": skipped, "handed_over": handed, "refused": refused, "verdicts": verdicts}


def tenant_provisioning_actions(done, check_mode=False):
    """Report lines from the runs of provision_tenant: [{slug, cleanup, ok, error, result}]."""
    lines = []
    for item in done or []:
        result = item.get("result") or {}
        acts = [a.get("summary") for a in result.get("actions") or [] if a.get("summary")]
        status = result.get("status") or {}
        what = "clean up and provision again" if item.get("cleanup") else "provision again"
        if not item.get("ok"):
            lines.append("tried to %s tenant %s: FAILED: %s" % (what, item["slug"], item.get("error") or "no message"))
        elif check_mode:
            lines.append("would %s tenant %s: %s" % (what, item["slug"], "; ".join(acts) or "nothing to apply"))
        else:
            lines.append("%s tenant %s: %d action(s) (%s); status %s -> %s" % (
                "cleaned up and provisioned again" if item.get("cleanup") else "provisioned again", item["slug"],
                len(acts), "; ".join(acts) or "none", status.get("before"), status.get("after")))
    return lines


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "tenant_provisioning_plan": tenant_provisioning_plan,
            "tenant_provisioning_actions": tenant_provisioning_actions,
        }
