"""Diagnosis of playbooks/postgres_connection.yml (Guide: Database Issues > PostgreSQL Connection Failures).

``postgres_connection_diagnosis`` judges, from plain Kubernetes objects and the two PostgreSQL
modules' results, the three things the guide asks about - the StatefulSet's pods, its volume claims
(and the disk they give the database), and whether the platform can open a session - and decides
what the runbook may do about each: restart the StatefulSet, scale it back, or hand over.

Unit tests: tests/unit/test_postgres_connection.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCUMENTATION = """
name: postgres_connection
short_description: Diagnosis of the PostgreSQL Connection Failures runbook
description:
  - C(postgres_connection_diagnosis) judges the postgres StatefulSet, its pods and volume claims, the database's
    size against its volume, and the connection test, and returns findings and the remediation plan.
  - C(postgres_connection_claim_names) names the claims a StatefulSet's pods use (<template>-<name>-<ordinal>).
"""

# The same judgements as every other runbook's (plugins/module_utils/saasodoo_k8s_health.py), loaded
# by path as plugins/filter/saasodoo.py does.
_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_health_pc", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_k8s_health.py")
k8s_health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s_health)
dig = k8s_health.dig

STORAGE_HANDOVER = "storage owner / cluster admin (never deleted or re-created by this runbook)"


def _finding(code, severity, message, evidence=None, ref=None, remediation=None, component="postgres"):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence or [],
            "component": component, "ref": ref, "remediation": remediation}


def postgres_connection_claim_names(statefulset):
    """['data-saasodoo-postgres-0', ...] for the StatefulSet's replicas and volumeClaimTemplates."""
    if not statefulset:
        return []
    name = dig(statefulset, "metadata", "name")
    replicas = dig(statefulset, "spec", "replicas", default=1)
    templates = dig(statefulset, "spec", "volumeClaimTemplates", default=[]) or []
    return ["%s-%s-%d" % (dig(t, "metadata", "name"), name, i) for i in range(int(replicas)) for t in templates]


def _bytes(quantity):
    try:
        return k8s_health.parse_quantity(quantity)
    except ValueError:
        return None


def _claims(statefulset, pvcs, pvs, storage_classes, events):
    """Each expected claim judged: phase, class, capacity, the volume reserved for it, the latest event."""
    ns = dig(statefulset, "metadata", "namespace")
    by_name = {dig(p, "metadata", "name"): p for p in pvcs or [] if dig(p, "metadata", "namespace") == ns}
    classes = set(storage_classes or [])
    out = []
    for name in postgres_connection_claim_names(statefulset):
        pvc = by_name.get(name)
        claim = {"name": name, "namespace": ns, "exists": pvc is not None, "phase": None, "storage_class": None,
                 "capacity_bytes": None, "volume": None, "bound": False, "problems": []}
        if pvc is None:
            claim["problems"].append("claim %s/%s does not exist" % (ns, name))
        else:
            claim["phase"] = dig(pvc, "status", "phase", default="Unknown")
            claim["bound"] = claim["phase"] == "Bound"
            claim["storage_class"] = dig(pvc, "spec", "storageClassName")
            claim["volume"] = dig(pvc, "spec", "volumeName")
            claim["capacity_bytes"] = _bytes(dig(pvc, "status", "capacity", "storage")) or _bytes(
                dig(pvc, "spec", "resources", "requests", "storage"))
            if not claim["bound"]:
                claim["problems"].append("claim %s/%s is %s" % (ns, name, claim["phase"]))
                if claim["storage_class"] and classes and claim["storage_class"] not in classes:
                    claim["problems"].append("its StorageClass %s does not exist" % claim["storage_class"])
                uid = dig(pvc, "metadata", "uid")
                for pv in pvs or []:
                    ref = dig(pv, "spec", "claimRef", default={}) or {}
                    if ref.get("namespace") == ns and ref.get("name") == name:
                        phase = dig(pv, "status", "phase", default="Unknown")
                        if ref.get("uid") and ref.get("uid") != uid:
                            claim["problems"].append(
                                "PersistentVolume %s (%s) is still reserved for an earlier claim of that name (uid %s)"
                                % (dig(pv, "metadata", "name"), phase, ref.get("uid")))
                        else:
                            claim["problems"].append("PersistentVolume %s is %s" % (dig(pv, "metadata", "name"), phase))
                mine = [e for e in events or [] if dig(e, "involvedObject", "name") == name
                        and dig(e, "involvedObject", "kind") == "PersistentVolumeClaim"]
                if mine:
                    last = sorted(mine, key=lambda e: str(k8s_health.event_last_seen(e) or ""))[-1]
                    claim["problems"].append("event %s: %s" % (last.get("reason"), (last.get("message") or "").strip()))
        out.append(claim)
    return out


def _pod_scheduling(pod):
    for cond in dig(pod, "status", "conditions", default=[]) or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return "%s: %s" % (cond.get("reason"), (cond.get("message") or "").strip())
    return None


def postgres_connection_diagnosis(statefulset, pods, pvcs, pvs, storage_classes, events, pg, integrity, settings):
    """The findings and the plan.

    statefulset: the object or None; pods: its pods; pvcs/pvs/storage_classes (names)/events: of the cluster
    (events of the namespace are enough); pg: saasodoo_pg_health's result; integrity: saasodoo_pg_integrity's
    (foreign_keys only), or {}; settings: component (key), spec (the inventory's component), database, endpoint,
    restart_threshold, db_size_warning_percent, db_size_critical_percent.
    Returns {'findings', 'restart', 'scale_to', 'skipped', 'handed_over', 'claims', 'database_bytes',
    'volume_bytes', 'volume_used_percent', 'workload', 'reachable', 'connected'}.
    """
    settings = settings or {}
    pg = pg or {}
    integrity = integrity or {}
    spec = settings.get("spec") or {}
    key = settings.get("component") or "postgres"
    database = settings.get("database") or "?"
    severity = "critical" if spec.get("critical", True) else "high"
    ref = "%s/%s/%s" % (spec.get("kind"), spec.get("namespace"), spec.get("name"))
    findings, skipped, handed = [], [], []
    out = {"findings": findings, "restart": False, "scale_to": None, "skipped": skipped, "handed_over": handed,
           "claims": [], "database_bytes": None, "volume_bytes": None, "volume_used_percent": None,
           "workload": None, "reachable": bool(pg.get("reachable")), "connected": bool(pg.get("connected"))}

    # -- the StatefulSet and its pods
    storage_broken = False
    if not statefulset:
        findings.append(_finding("PG_STATEFULSET_MISSING", severity, "%s: %s does not exist." % (key, ref), [], ref,
                                 "Redeploy the database component (its volume claims are kept)."))
        handed.append("%s is missing -> redeploy the platform's database component (cluster admin)" % ref)
    else:
        reports = [k8s_health.pod_health(p, int(settings.get("restart_threshold") or 3)) for p in pods or []]
        health = k8s_health.workload_health(statefulset, reports)
        out["workload"] = {k: health[k] for k in ("ref", "replicas", "ready_replicas", "healthy", "reasons")}
        claims = _claims(statefulset, pvcs, pvs, storage_classes, events)
        out["claims"] = claims
        unbound = [c for c in claims if not c["bound"]]
        storage_broken = bool(unbound)
        if unbound:
            waiting = [p for p in pods or [] if _pod_scheduling(p)]
            findings.append(_finding(
                "PG_PVC_UNBOUND", severity,
                "%s: the database's volume claim%s %s %s not bound, so its pod cannot start: %s." % (
                    key, "" if len(unbound) == 1 else "s", ", ".join(c["name"] for c in unbound),
                    "is" if len(unbound) == 1 else "are", "; ".join("; ".join(c["problems"]) for c in unbound)),
                [p for c in unbound for p in c["problems"]]
                + ["pod %s: %s" % (dig(p, "metadata", "name"), _pod_scheduling(p)) for p in waiting],
                ref, "Bind the claim to the database's volume (kubectl describe pvc; a Released volume needs its "
                     "claimRef cleared by whoever owns the data) - never delete the claim or the volume."))
            handed.append("storage: %s not bound (%s) -> %s" % (
                ", ".join(c["namespace"] + "/" + c["name"] for c in unbound),
                "; ".join(c["problems"][0] for c in unbound), STORAGE_HANDOVER))
        want = int(spec.get("replicas", 1) or 1)
        if health["replicas"] == 0 and want > 0:
            findings.append(_finding("PG_STATEFULSET_SCALED_TO_ZERO", severity,
                                     "%s: %s is scaled to 0 replicas (desired %d): the database is down." % (key, ref, want),
                                     [], ref, "Scale it back to its desired replicas."))
            out["scale_to"] = want
        elif not health["healthy"]:
            bad = ["%s: %s" % (p["name"], ", ".join(p["reasons"])) for p in health["pods"]
                   if not p["healthy"] and not p["terminating"]] or health["reasons"]
            bad = bad + ["%s: %s" % (dig(p, "metadata", "name"), _pod_scheduling(p)) for p in pods or []
                         if _pod_scheduling(p)]
            code = "PG_POD_CRASHLOOP" if health["crashloop"] else "PG_POD_UNAVAILABLE"
            findings.append(_finding(
                code, severity, "%s: %s is not healthy (%s)%s." % (
                    key, ref, "; ".join(health["reasons"][:3]),
                    ", because its volume claim is not bound" if storage_broken else ""),
                bad, ref, "Rolling restart of the StatefulSet (restart_service)" if not storage_broken
                else "Fix the volume claim first; a restart would leave the new pod Pending too."))
            if storage_broken:
                skipped.append({"ref": ref, "why": "not restarted: its volume claim is not bound, a new pod would be "
                                                   "Pending as well (storage handed over)"})
            else:
                out["restart"] = True

    # -- the database, from the platform's side
    pg_findings = list(pg.get("findings") or [])
    endpoint = settings.get("endpoint") or "?"
    for f in pg_findings:
        code = f.get("code")
        evidence = f.get("evidence")
        if isinstance(evidence, dict):
            evidence = ["%s: %s" % (k, v) for k, v in sorted(evidence.items()) if v is not None]
        if code == "PG_LOGIN_REJECTED" and "kind: missing_db" in (evidence or []):
            findings.append(_finding("DB_DATABASE_MISSING", "critical",
                                     "The platform database %s does not exist on %s: its data is gone." % (database, endpoint),
                                     evidence, "database %s" % database, "playbooks/data_loss.yml (restore)"))
            handed.append("database %s is missing on %s -> data_loss.yml (restore the newest verified backup)"
                          % (database, endpoint))
            continue
        item = _finding(code, f.get("severity"), f.get("message"), evidence, "database %s" % database,
                        f.get("remediation"))
        findings.append(item)
        if code == "PG_UNREACHABLE":
            pods_ready = out["workload"] is not None and out["workload"]["healthy"]
            handed.append(
                "PostgreSQL at %s cannot be reached%s -> on-call DBA: bring the server back (its logs, the Service "
                "and network policies%s); if it will not start because its data is damaged -> data_loss.yml "
                "(restore the newest verified backup)" % (
                    endpoint, " while %s reports all pods Ready (a restart of a serving StatefulSet is not done "
                    "automatically)" % ref if pods_ready else "",
                    "" if pods_ready else "; the StatefulSet's own state is handled above"))
        elif code == "PG_LOGIN_REJECTED":
            handed.append("PostgreSQL at %s refuses the platform's login -> check the credentials secret and "
                          "pg_hba.conf (the password is never shown)" % endpoint)
        elif code in ("PG_CONNECTIONS_EXHAUSTED", "PG_CONNECTIONS_NEAR_LIMIT"):
            handed.append("%s -> db_performance.yml (pooling, connection limits)" % f.get("message"))
        elif code == "PG_DISK_LOW":
            handed.append("%s -> %s" % (f.get("message"), STORAGE_HANDOVER))

    # -- the database's size against its volume
    sizes = (pg.get("sizes") or {}).get("databases") or []
    size = next((d.get("bytes") for d in sizes if d.get("database") == database), None)
    capacity = next((c["capacity_bytes"] for c in out["claims"] if c["capacity_bytes"]), None) or _bytes(spec.get("storage"))
    out["database_bytes"], out["volume_bytes"] = size, capacity
    if size is not None and capacity:
        used = round(100.0 * size / capacity, 1)
        out["volume_used_percent"] = used
        warn = float(settings.get("db_size_warning_percent") or 80)
        crit = float(settings.get("db_size_critical_percent") or 95)
        if used >= warn:
            findings.append(_finding(
                "PG_DB_SIZE_NEAR_CAPACITY", "critical" if used >= crit else "high",
                "Database %s takes %.1f%% of its %s volume (%d of %d bytes; threshold %g%%): when it is full, "
                "PostgreSQL stops accepting writes." % (database, used, spec.get("storage") or "", size, capacity, warn),
                ["pg_database_size(%s): %d bytes" % (database, size), "volume capacity: %d bytes" % capacity],
                "database %s" % database, "Grow the volume or free space (VACUUM FULL of bloated tables, old data)."))
            handed.append("database %s fills %.1f%% of its volume -> %s" % (database, used, STORAGE_HANDOVER))

    # -- corruption seen from the platform's side
    for f in integrity.get("findings") or []:
        if f.get("code") == "DB_FK_ORPHANS":
            findings.append(_finding(f["code"], f["severity"], f["message"], f.get("evidence"), "database %s" % database,
                                     f.get("remediation")))
            handed.append("database %s is corrupt (%s) -> data_loss.yml (assess against the newest verified backup, "
                          "restore)" % (database, f["message"]))

    order = ("critical", "high", "medium", "low")
    findings.sort(key=lambda f: (order.index(f["severity"]) if f["severity"] in order else 9, f["code"]))
    return out


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "postgres_connection_diagnosis": postgres_connection_diagnosis,
            "postgres_connection_claim_names": postgres_connection_claim_names,
        }
