"""provision_tenant's plan: which of a tenant's desired objects to create or update, from the
answer of a server-side dry run of all of them (kubernetes.core.k8s in check mode, diff on)."""

from __future__ import annotations

DOCUMENTATION = """
name: provision_tenant_plan
short_description: Plan a tenant's actions from a server-side dry run of its desired objects
description:
  - Input, the desired manifests (Namespace first) and the registered result of kubernetes.core.k8s run on
    them in check mode with diff and continue_on_error; and whether a cleanup (delete the namespace, then
    create everything) was asked for.
  - Returns namespace_exists, terminating, rebuild (the namespace is deleted first), actions (kind, name,
    namespace, action create or update, before, after, summary), in_sync (refs), errors (objects the API
    refuses, with its message), apply (the definitions to apply, Namespace first) and check_apply (those
    a check-mode apply can dry-run: none during a rebuild, none inside a namespace not made yet).
"""


def _ref(obj):
    meta = obj.get("metadata") or {}
    if meta.get("namespace"):
        return "%s/%s/%s" % (obj.get("kind"), meta["namespace"], meta.get("name"))
    return "%s/%s" % (obj.get("kind"), meta.get("name"))


def _results(dry_run):
    """One result per definition, in order (k8s returns a single result unwrapped)."""
    inner = (dry_run or {}).get("result")
    if isinstance(inner, dict) and isinstance(inner.get("results"), list):
        return inner["results"]
    return [dry_run or {}]


def _error(result):
    error = result.get("error")
    if not error:
        return None
    return (error.get("msg") if isinstance(error, dict) else "%s" % error) or "error"


NOISE = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid")


def _clean(side):
    """A diff side without bookkeeping (managedFields, resourceVersion...) and status."""
    if not isinstance(side, dict):
        return side
    out = dict((k, v) for k, v in side.items() if k != "status")
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta = dict((k, v) for k, v in meta.items() if k not in NOISE)
        if meta:
            out["metadata"] = meta
        else:
            out.pop("metadata")
    return out


def _owned(manifest):
    """What the desired object sets, for the `after` of a created object (no status, no noise)."""
    out = {"labels": (manifest.get("metadata") or {}).get("labels") or {}}
    if "spec" in manifest:
        out["spec"] = manifest["spec"]
    return out


def provision_tenant_plan(manifests, dry_run, cleanup=False, tenant_label=None):
    """The actions that bring the tenant's objects to their manifests, from a server dry run.

    ``namespace_foreign``: the namespace exists but does not carry ``tenant_label`` with the value the
    desired Namespace gives it (the slug) - not this tenant's namespace, never to be repaired or deleted.
    """
    manifests = list(manifests or [])
    results = _results(dry_run)
    if len(results) != len(manifests):
        raise ValueError("provision_tenant_plan: %d manifests but %d dry-run results" % (len(manifests), len(results)))
    ns_result = results[0]
    ns_manifest = manifests[0]
    if ns_manifest.get("kind") != "Namespace":
        raise ValueError("provision_tenant_plan: the first manifest must be the Namespace")
    namespace = ns_manifest["metadata"]["name"]
    ns_exists = ns_result.get("method") == "update" and not _error(ns_result)
    live_ns = ns_result.get("result") or {}
    terminating = bool(ns_exists and (live_ns.get("metadata") or {}).get("deletionTimestamp"))
    rebuild = bool(ns_exists and (cleanup or terminating))
    # The namespace's tenant label as it is now. The dry run's diff holds only what the apply would change
    # (before and after): when it would set the tenant label, the label is missing or names another slug;
    # otherwise it already is the wanted one.
    wanted = ((ns_manifest.get("metadata") or {}).get("labels") or {}).get(tenant_label) if tenant_label else None
    diff = ns_result.get("diff") or {}
    changes = ((diff.get("after") or {}).get("metadata") or {}).get("labels") or {}
    found = wanted
    if tenant_label and tenant_label in changes:
        found = (((diff.get("before") or {}).get("metadata") or {}).get("labels") or {}).get(tenant_label)
    plan = {"namespace": namespace, "namespace_exists": ns_exists, "terminating": terminating, "rebuild": rebuild,
            "namespace_foreign": bool(ns_exists and tenant_label and found != wanted), "namespace_tenant": found,
            "actions": [], "in_sync": [], "errors": [], "apply": [], "check_apply": []}
    for manifest, result in zip(manifests, results):
        ref = _ref(manifest)
        meta = manifest.get("metadata") or {}
        in_namespace = manifest.get("kind") == "Namespace" or meta.get("namespace") == namespace
        action = {"ref": ref, "kind": manifest.get("kind"), "name": meta.get("name"),
                  "namespace": meta.get("namespace")}
        error = _error(result)
        if rebuild and in_namespace:
            action.update(action="create", before=None, after=_owned(manifest),
                          summary="%s: create (after the namespace is deleted)" % ref)
        elif error and in_namespace and not ns_exists and manifest.get("kind") != "Namespace":
            # Cannot be dry-run before its namespace exists: it will be created with it.
            action.update(action="create", before=None, after=_owned(manifest), summary="%s: create" % ref)
        elif error:
            action.update(action="create" if result.get("method") in (None, "create") else "update",
                          before=None, after=_owned(manifest), error=error,
                          summary="%s: refused by the API server: %s" % (ref, error))
            plan["errors"].append({"ref": ref, "error": error})
        elif result.get("method") == "create":
            action.update(action="create", before=None, after=_owned(manifest), summary="%s: create" % ref)
        elif result.get("changed"):
            diff = result.get("diff") or {}
            before, after = _clean(diff.get("before")), _clean(diff.get("after"))
            fields = sorted(set((after or {}).keys()) | set((before or {}).keys()))
            action.update(action="update", before=before, after=after,
                          summary="%s: update %s" % (ref, ", ".join(fields) or "fields"))
        else:
            plan["in_sync"].append(ref)
            continue
        plan["actions"].append(action)
        plan["apply"].append(manifest)
        # What a check-mode apply can dry-run: not what waits for a namespace still to be made.
        if not rebuild and not error and (ns_exists or not meta.get("namespace")):
            plan["check_apply"].append(manifest)
    return plan


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {"provision_tenant_plan": provision_tenant_plan}
