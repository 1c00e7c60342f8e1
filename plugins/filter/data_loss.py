"""Decisions of playbooks/data_loss.yml (Guide: Emergency Procedures > Data Loss), as pure functions.

- ``data_loss_backup_findings``: what the restore_backup role's diagnosis of the store means
  (no store, no valid backup, invalid backups, the newest valid one too old).
- ``data_loss_plan``: restore or not, and why - the integrity findings that justify a restore, the
  guard rails that forbid it, the "would ..." lines of a dry run and what is handed over.
- ``data_loss_actions``: the lines of the report for what restore_backup really did.

Unit tests: tests/unit/test_data_loss.py.
"""

from __future__ import annotations

from datetime import datetime, timezone

DOCUMENTATION = """
name: data_loss
short_description: Decisions of the Data Loss runbook
description:
  - C(data_loss_backup_findings) turns restore_backup's verdicts on the backup store into findings.
  - C(data_loss_plan) decides whether to restore, with the guard rails, and says what would be done.
  - C(data_loss_actions) turns restore_backup_result.actions into report lines.
"""

STORE_MISSING = "BACKUP_STORE_MISSING"
NONE_VALID = "BACKUP_NONE_VALID"
INVALID = "BACKUP_INVALID"
STALE = "BACKUP_STALE"
DIAGNOSIS_FAILED = "BACKUP_DIAGNOSIS_FAILED"
UNREACHABLE_CODES = ("PG_UNREACHABLE", "PG_LOGIN_REJECTED", "PG_CONNECTIONS_EXHAUSTED")


def _time(text):
    """'2026-01-01T12:00:00Z' (or with an offset) -> aware datetime; None when unset or malformed."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _hours(seconds):
    return "%.1f h" % (seconds / 3600.0)


def _finding(code, severity, message, evidence=None, remediation=None):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence or [],
            "component": "postgres", "ref": "backups", "remediation": remediation}


def data_loss_backup_findings(backup, max_age_hours, now=None):
    """Findings about the backups, from {'error': str, 'store': str, 'backups': [...], 'chosen': {...}|None}.

    ``backups`` and ``chosen`` are restore_backup_result's; ``error`` the role's failure message, if any.
    """
    backup = backup or {}
    error = backup.get("error") or ""
    store = backup.get("store") or "?"
    backups = backup.get("backups") or []
    chosen = backup.get("chosen")
    findings = []
    if error and "backup store" in error and ("does not exist" in error or "is not a directory" in error):
        return [_finding(STORE_MISSING, "high", "The backup store %s is missing: no backup can be listed or restored."
                         % store, [error], "Mount the backup volume, or point data_loss_backup_store at it.")]
    invalid = [b for b in backups if not b.get("valid")]
    if invalid:
        findings.append(_finding(
            INVALID, "high",
            "%d backup(s) in %s fail their checks and are never restored: %s." % (
                len(invalid), store, "; ".join("%s (%s)" % (b.get("id"), ", ".join(b.get("reasons") or []))
                                               for b in invalid[:3])),
            ["%s: %s" % (b.get("id"), "; ".join(b.get("reasons") or [])) for b in invalid][:10],
            "Find out why the backup job writes broken backups (guide: backup failures, escalate within 2 hours)."))
    if not chosen:
        if backups or "no valid backup" in error:
            findings.append(_finding(NONE_VALID, "high",
                                     "No valid backup in %s: nothing can be restored." % store,
                                     [error] if error else [], "Escalate: restoring needs a verified backup."))
        elif error:
            findings.append(_finding(DIAGNOSIS_FAILED, "high",
                                     "The backups in %s could not be examined: %s" % (store, error), [error],
                                     "Read the error; the restore_backup role's diagnosis must succeed first."))
        else:
            findings.append(_finding(NONE_VALID, "high", "No backup at all in %s: nothing can be restored." % store,
                                     [], "Escalate: restoring needs a verified backup."))
        return findings
    created = _time(chosen.get("created_at"))
    current = _time(now) or datetime.now(timezone.utc)
    if created is not None and max_age_hours is not None:
        age = (current - created).total_seconds()
        if age > float(max_age_hours) * 3600:
            findings.append(_finding(
                STALE, "high",
                "The newest verified backup, %s, is %s old (more than %s h): backups are not being taken, and "
                "restoring it would lose everything written since." % (chosen.get("id"), _hours(age), max_age_hours),
                ["created_at: %s" % chosen.get("created_at"), "path: %s" % chosen.get("path")],
                "Fix the backup job (escalate within 2 hours); a restore from it needs a human decision."))
    return findings


def data_loss_plan(integrity, backup, settings):
    """Restore or not.

    integrity: saasodoo_pg_integrity's result. backup: as for data_loss_backup_findings.
    settings: restore_on (codes), max_backup_age_hours, max_rows_discarded, cooldown_minutes, confirm,
    check_mode, now, database, backend ({ref, replicas}).
    Returns {'decision', 'triggers', 'blockers', 'actions', 'handed_over'}; decision is one of
    none (nothing justifies a restore), restore, would_restore (check mode or not confirmed),
    blocked (a guard rail forbids it), cannot_assess (the database could not be examined).
    """
    integrity = integrity or {}
    backup = backup or {}
    settings = settings or {}
    findings = integrity.get("findings") or []
    chosen = backup.get("chosen")
    database = settings.get("database") or integrity.get("database") or "?"
    backend = settings.get("backend") or {}
    now = _time(settings.get("now")) or datetime.now(timezone.utc)
    restore_on = set(settings.get("restore_on") or [])
    out = {"decision": "none", "triggers": [], "blockers": [], "actions": [], "handed_over": []}

    unreachable = [f for f in findings if f.get("code") in UNREACHABLE_CODES]
    if unreachable:
        out["decision"] = "cannot_assess"
        out["handed_over"].append(
            "database %s cannot be examined (%s), so the damage cannot be assessed -> postgres_connection.yml "
            "(PostgreSQL Connection Failures); run data_loss.yml again once it answers." % (
                database, unreachable[0]["code"]))
        return out

    triggers = sorted(set(f["code"] for f in findings if f.get("code") in restore_on))
    out["triggers"] = triggers
    if not triggers:
        return out

    blockers = []
    if not chosen:
        blockers.append({"ref": "database %s" % database,
                         "why": "no verified backup to restore from (%s)" % (backup.get("store") or "?")})
    else:
        created = _time(chosen.get("created_at"))
        max_age = settings.get("max_backup_age_hours")
        if created is not None and max_age is not None and (now - created).total_seconds() > float(max_age) * 3600:
            blockers.append({"ref": "backup %s" % chosen.get("id"), "why": "it is %s old, more than %s h "
                             "(data_loss_max_backup_age_hours)" % (_hours((now - created).total_seconds()), max_age)})
        discarded = int((integrity.get("summary") or {}).get("rows_added") or 0)
        cap = settings.get("max_rows_discarded")
        if cap is not None and discarded > int(cap):
            blockers.append({"ref": "database %s" % database, "why": "a restore would take %d rows written since the "
                             "backup out of the live database, more than %s (data_loss_max_rows_discarded)"
                             % (discarded, cap)})
        cooldown = int(settings.get("cooldown_minutes") or 0)
        kept = [k for k in integrity.get("kept_databases") or [] if _time(k.get("restored_at"))]
        if cooldown and kept:
            last = max(_time(k["restored_at"]) for k in kept)
            left = cooldown * 60 - (now - last).total_seconds()
            if left > 0:
                blockers.append({"ref": "database %s" % database, "why": "it was restored %d min ago; cooldown of %d "
                                 "min (data_loss_cooldown_minutes) has %d min left - a second restore so soon means "
                                 "the cause is still at work" % ((now - last).total_seconds() // 60, cooldown,
                                                                 -(-left // 60))})
    out["blockers"] = blockers
    if blockers:
        out["decision"] = "blocked"
        out["handed_over"].append(
            "database %s needs a restore (%s), which this runbook will not do: %s -> on-call engineer (Guide: "
            "Data Loss, critical: escalate immediately)." % (
                database, ", ".join(triggers), "; ".join("%s: %s" % (b["ref"], b["why"]) for b in blockers)))
        return out

    ref = backend.get("ref")
    replicas = backend.get("replicas")
    stamp = now.strftime("%Y%m%d%H%M%S")
    discarded = int((integrity.get("summary") or {}).get("rows_added") or 0)
    lines = []
    if ref:
        lines.append("stop writes: scale %s from %s to 0 replicas (scale_backend records %s)" % (ref, replicas, replicas))
    lines.append("restore backup %s (created %s, %s) into database %s, keeping the current one as %s_before_restore_%s"
                 % (chosen.get("id"), chosen.get("created_at"), chosen.get("path"), database, database, stamp))
    lines.append("validate the restored tables and row counts against the backup's manifest, then compare it row by row")
    if ref:
        lines.append("restore writes: scale %s back to %s replicas" % (ref, replicas))
    if discarded:
        lines.append("take %d row(s) written since the backup out of the live database (kept in the old one)" % discarded)
    confirmed = bool(settings.get("confirm"))
    if settings.get("check_mode") or not confirmed:
        out["decision"] = "would_restore"
        out["actions"] = ["would " + line for line in lines]
        out["handed_over"].append(
            "database %s needs a restore (%s): %s -> a human approves it: run again with "
            "data_loss_confirm_restore=true (AWX: approve the Data Loss workflow's restore)." % (
                database, ", ".join(triggers),
                "check mode, nothing was changed" if settings.get("check_mode")
                else "data_loss_confirm_restore is false, nothing was changed"))
    else:
        out["decision"] = "restore"
        out["actions"] = []
    return out


def data_loss_actions(restore_result):
    """Report lines for what restore_backup did (its result's actions, with before/after)."""
    lines = []
    for action in (restore_result or {}).get("actions") or []:
        kind = action.get("action")
        before, after = action.get("before") or {}, action.get("after") or {}
        if kind == "stop writes":
            lines.append("stopped writes: scaled %s from %s to %s replicas" % (
                action.get("workload"), before.get("replicas"), after.get("replicas")))
        elif kind == "restore writes":
            lines.append("restored writes: scaled %s from %s back to %s replicas" % (
                action.get("workload"), before.get("replicas"), after.get("replicas")))
        elif kind == "restore database":
            rows_before = sum(int(v) for v in (before.get("rows") or {}).values())
            rows_after = sum(int(v) for v in (after.get("rows") or {}).values())
            line = "restored backup %s into database %s (%d rows before, %d after)" % (
                action.get("backup"), action.get("database"), rows_before, rows_after)
            if action.get("old_database_kept_as"):
                line += "; the damaged database is kept as %s" % action["old_database_kept_as"]
            errors = [e for e in action.get("pg_restore_errors") or [] if e.startswith("pg_restore: error")]
            if errors:
                line += "; pg_restore reported %d tolerated error(s), every table and row count still matched" % len(errors)
            lines.append(line)
        else:
            lines.append("%s" % kind)
    return lines


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "data_loss_backup_findings": data_loss_backup_findings,
            "data_loss_plan": data_loss_plan,
            "data_loss_actions": data_loss_actions,
        }
