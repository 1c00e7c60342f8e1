"""Verdicts of the health_check runbook: the troubleshooting guide's "Quick Health Check", item by item.

Each filter turns what a read-only probe returned (kubernetes.core.k8s_info, saasodoo_pg_health,
community.general.redis_info, ansible.builtin.uri, saasodoo_dns_query, the ingress_diagnose role,
restore_backup) into one checklist item: {name, title, status: pass|fail, evidence: [lines], findings}.
Every finding names the runbook that remediates it (`runbook`; None when no runbook can: a human or an
outside provider must act), so a chain health_check -> runbook -> health_check can pick the next one.
Unit-tested in tests/unit/test_health_check_filter.py.
"""

from __future__ import annotations

import datetime
import importlib.util
from pathlib import Path

DOCUMENTATION = """
name: health_check
short_description: The Quick Health Check's eight items, each pass or fail with evidence and findings
description:
  - C(health_pods_item), C(health_database_item), C(health_redis_item), C(health_external_item),
    C(health_dns_item), C(health_ssl_item), C(health_monitoring_item), C(health_backup_item) judge one item each.
  - C(health_checklist_lines) prints the checklist, one line per item; C(health_item_summary) is an item as the
    report keeps it; C(health_handover_line) says who acts on a finding; C(health_next_runbooks) lists the
    runbooks the findings point to, worst first.
"""

_spec = importlib.util.spec_from_file_location(
    "saasodoo_filters_for_health", Path(__file__).resolve().parent / "saasodoo.py")
_saasodoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_saasodoo)

SEVERITY_ORDER = ("critical", "high", "medium", "low")


def _finding(item, code, severity, message, evidence=None, runbook=None, component=None, ref=None, remediation=None):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence or [], "item": item,
            "runbook": runbook, "component": component, "ref": ref, "remediation": remediation}


def _item(name, title, findings, evidence):
    findings = sorted(findings, key=lambda f: (SEVERITY_ORDER.index(f["severity"]), f["code"]))
    return {"name": name, "title": title, "status": "fail" if findings else "pass", "evidence": evidence,
            "findings": findings}


def _first_line(text, limit=200):
    text = str(text or "").strip()
    return (text.splitlines() or [""])[0][:limit]


def health_pods_item(pods, namespace, components=None, restart_threshold=3, title=None):
    """All pods of the namespace running and ready (none crash-looping). Severity: critical when a critical
    component has no healthy pod left (an outage), else high."""
    title = title or "All pods running in %s namespace" % namespace
    reports = []
    for pod in pods or []:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue  # on its way out: the controller's replacement is what counts
        report = _saasodoo.pod_health(pod, restart_threshold)
        report["labels"] = (pod.get("metadata") or {}).get("labels") or {}
        reports.append(report)
    bad = [r for r in reports if not r["healthy"]]
    evidence = ["%d of %d pod(s) running and ready in %s" % (len(reports) - len(bad), len(reports), namespace)]
    evidence += ["%s: %s (restarts %s)" % (r["name"], ", ".join(r["reasons"]) or r["phase"], r["restarts"]) for r in bad]
    findings = []
    if not reports:
        findings.append(_finding("pods", "HEALTH_NO_PODS", "critical", "no pod runs in namespace %s" % namespace,
                                 evidence, runbook="platform_down"))
    elif bad:
        down = []
        for key, comp in sorted((components or {}).items()):
            if comp.get("namespace") != namespace or not comp.get("critical"):
                continue
            mine = [r for r in reports if r["name"].startswith(comp.get("name", "") + "-")]
            if mine and not any(r["healthy"] for r in mine):
                down.append(key)
        severity = "critical" if down else "high"
        message = "%d pod(s) of namespace %s are not running and ready" % (len(bad), namespace)
        if down:
            message += "; no healthy pod left for %s" % ", ".join(down)
        findings.append(_finding("pods", "HEALTH_PODS_NOT_RUNNING", severity, message, evidence[1:],
                                 runbook="platform_down"))
    return _item("pods", title, findings, evidence)


def health_database_item(result, title="Database connectivity working"):
    """A session opened on the platform database (saasodoo_pg_health, checks [connections],
    fail_on_unreachable=false)."""
    result = result or {}
    server = result.get("server") or {}
    conn = result.get("connections") or {}
    connected = bool(result.get("connected")) and not result.get("failed")
    evidence = []
    if connected:
        evidence.append("session opened on %s as %s, PostgreSQL %s, in %.3f s" % (
            server.get("database"), server.get("user"), server.get("version"),
            float(result.get("connect_seconds") or 0)))
        if conn:
            evidence.append("connections: %s of %s (%s%%), %s free" % (conn.get("total"), conn.get("max"),
                                                                       conn.get("usage_percent"), conn.get("free")))
    serious = [f for f in result.get("findings") or [] if f.get("code") in
               ("PG_UNREACHABLE", "PG_CONNECTIONS_EXHAUSTED", "PG_LOGIN_REJECTED")]
    findings = []
    if not connected or serious:
        why = [f.get("message") for f in serious] or [_first_line(result.get("msg")) or "no session opened"]
        evidence.extend(why)
        findings.append(_finding("database", serious[0]["code"] if serious else "HEALTH_DATABASE_UNREACHABLE",
                                 "critical", "the platform database does not accept sessions: %s" % why[0], why,
                                 runbook="postgres_connection", component="postgres"))
    return _item("database", title, findings, evidence)


def health_redis_item(result, address, title="Redis connectivity working"):
    """Redis answered INFO (community.general.redis_info)."""
    result = result or {}
    info = result.get("info") or {}
    findings, evidence = [], []
    if result.get("failed") or not info:
        why = _first_line(result.get("msg")) or "no answer"
        evidence.append("Redis at %s: %s" % (address, why))
        findings.append(_finding("redis", "HEALTH_REDIS_UNREACHABLE", "critical",
                                 "Redis at %s does not answer: %s" % (address, why), evidence[:],
                                 runbook="platform_down", component="redis"))
    else:
        evidence.append("Redis %s at %s: up %s s, %s client(s), role %s, memory %s" % (
            info.get("redis_version"), address, info.get("uptime_in_seconds"), info.get("connected_clients"),
            info.get("role"), info.get("used_memory_human")))
        if info.get("loading") in (1, "1"):
            findings.append(_finding("redis", "HEALTH_REDIS_LOADING", "high", "Redis at %s is still loading its "
                                     "dataset" % address, evidence[:], runbook="platform_down", component="redis"))
    return _item("redis", title, findings, evidence)


def health_external_item(results, services, title=None):
    """Each external service's health URL answered 2xx. results: a uri loop over services (item = service)."""
    names = [s.get("name") or s.get("endpoint") for s in services or []]
    title = title or "External services (%s) accessible" % ", ".join(names)
    findings, evidence = [], []
    for res in results or []:
        svc = res.get("item") or {}
        name = svc.get("name") or svc.get("endpoint")
        status = res.get("status")
        url = res.get("url") or svc.get("url")
        if isinstance(status, int) and 200 <= status < 300:
            evidence.append("%s: HTTP %s from %s in %s ms" % (name, status, url, res.get("elapsed_ms", res.get("elapsed", "?"))))
            continue
        answer = ("HTTP %s" % status) if isinstance(status, int) and status > 0 else _first_line(res.get("msg")) or "no answer"
        evidence.append("%s: %s from %s" % (name, answer, url))
        findings.append(_finding("external", "HEALTH_EXTERNAL_SERVICE_DOWN", svc.get("severity") or "high",
                                 "external service %s is not accessible (%s)" % (name, answer),
                                 ["%s: %s" % (url, answer)], runbook=None, ref=url,
                                 remediation="check the provider's status and the platform's credentials; escalate"))
    return _item("external", title, findings, evidence)


# saasodoo_dns_query's statuses for a server that sent nothing back (as opposed to an answer saying no).
DNS_SILENT = ("timeout", "unreachable")


def _dns_entry(entry):
    """One saasodoo_dns_query result as {name, resolved, silent, summary}."""
    name, status = entry.get("name"), entry.get("status")
    took = " (%s ms)" % entry["elapsed_ms"] if entry.get("elapsed_ms") is not None else ""
    if status == "ok":
        summary = "%s -> %s%s" % (name, ", ".join(entry.get("addresses") or []), took)
    else:
        summary = "%s: %s%s" % (name, entry.get("error") or entry.get("rcode") or status, took)
    return {"name": name, "resolved": status == "ok", "silent": status in DNS_SILENT,
            "error": entry.get("error") or status, "summary": summary}


def health_dns_item(result, server, title="DNS resolution working"):
    """Every platform name resolved through the cluster's DNS server (saasodoo_dns_query)."""
    result = result or {}
    entries = [_dns_entry(e) for e in result.get("results") or []]
    evidence = [e["summary"] for e in entries]
    findings = []
    if result.get("failed"):
        evidence.append("the query failed: %s" % _first_line(result.get("msg")))
    bad = [e for e in entries if not e["resolved"]]
    if result.get("failed") or bad or not entries:
        silent = [e for e in bad if e["silent"]]
        if entries and len(silent) == len(entries):
            message = "the DNS server %s does not answer (%s)" % (server, silent[0]["error"])
        else:
            message = "%d of %d platform name(s) do not resolve through %s" % (len(bad), len(entries), server)
        findings.append(_finding("dns", "HEALTH_DNS_RESOLUTION_FAILED", "critical", message,
                                 [e.get("summary") for e in bad] or evidence, runbook="dns_resolution",
                                 component="coredns"))
    return _item("dns", title, findings, evidence)


def health_ssl_item(diagnosis, title="SSL certificates valid"):
    """The ingress_diagnose result (checks certificates and handshake): Certificates valid and the public
    endpoint serving a valid certificate for its server name."""
    diagnosis = diagnosis or {}
    evidence = []
    for cert in diagnosis.get("certificates") or []:
        evidence.append("%s: %s%s" % (cert.get("ref"), cert.get("state"),
                                      (", until %s (%s days)" % (cert.get("not_after"), cert.get("days_left")))
                                      if cert.get("not_after") else ""))
    for hs in diagnosis.get("handshakes") or []:
        if hs.get("reachable"):
            evidence.append("handshake %s for %s: %s, serial %s, until %s, chain: %s" % (
                hs.get("endpoint"), hs.get("server_name"), hs.get("state"), hs.get("serial"), hs.get("not_after"),
                hs.get("chain")))
        else:
            evidence.append("handshake %s for %s: %s" % (hs.get("endpoint"), hs.get("server_name"), hs.get("error")))
    findings = []
    for f in diagnosis.get("findings") or []:
        if f.get("code", "").startswith(("CERT_", "TLS_")) and f.get("severity") != "low":
            findings.append(dict(f, item="ssl", runbook=f.get("runbook", "ingress_tls")))
    return _item("ssl", title, findings, evidence)


def health_monitoring_item(ready, targets, url, title="Monitoring collecting metrics"):
    """Prometheus is ready and its active targets are up (uri results of /-/ready and /api/v1/targets)."""
    ready, targets = ready or {}, targets or {}
    findings, evidence = [], []
    status = ready.get("status")
    if not (isinstance(status, int) and status == 200):
        answer = ("HTTP %s" % status) if isinstance(status, int) and status > 0 else _first_line(ready.get("msg")) or "no answer"
        evidence.append("Prometheus at %s: %s" % (url, answer))
        findings.append(_finding("monitoring", "HEALTH_MONITORING_DOWN", "high",
                                 "Prometheus at %s is not ready (%s): no metrics are collected" % (url, answer),
                                 evidence[:], runbook="metrics_collection", component="prometheus"))
        return _item("monitoring", title, findings, evidence)
    evidence.append("Prometheus at %s: ready" % url)
    active = (((targets.get("json") or {}).get("data") or {}).get("activeTargets")) or []
    down = [t for t in active if t.get("health") != "up"]
    evidence.append("%d of %d active target(s) up" % (len(active) - len(down), len(active)))
    evidence += ["%s %s: %s (%s)" % ((t.get("labels") or {}).get("job"), t.get("scrapeUrl"), t.get("health"),
                                     _first_line(t.get("lastError")) or "no error") for t in down]
    if not active:
        findings.append(_finding("monitoring", "HEALTH_NO_TARGETS", "high", "Prometheus at %s scrapes no target: "
                                 "nothing is collected" % url, evidence[:], runbook="metrics_collection",
                                 component="prometheus"))
    elif down:
        findings.append(_finding("monitoring", "HEALTH_TARGETS_DOWN", "high", "%d of %d Prometheus target(s) are "
                                 "down" % (len(down), len(active)), evidence[2:], runbook="metrics_collection",
                                 component="prometheus"))
    return _item("monitoring", title, findings, evidence)


def _parse_time(value):
    if not value:
        return None
    text = str(value)
    for fmt in ("%Y%m%dT%H%M%SZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def _verify_backup(checks, database, min_size_bytes):
    """Reasons the backup fails restore_backup's checks (manifest, size, sha256, pg_restore --list); [] if none."""
    import base64
    import json

    reasons = []
    manifest = {}
    raw = (checks.get("manifest") or {}).get("content")
    if raw is None:
        reasons.append("manifest.json missing or unreadable")
    else:
        try:
            manifest = json.loads(base64.b64decode(raw))
            if not isinstance(manifest, dict):
                reasons.append("manifest.json is not a JSON object")
                manifest = {}
        except ValueError:
            reasons.append("manifest.json is not valid JSON")
    lacks = [k for k in ("database", "size_bytes", "sha256", "row_counts") if manifest and k not in manifest]
    if lacks:
        reasons.append("manifest.json lacks %s" % ", ".join(lacks))
    if manifest.get("database") not in (None, database):
        reasons.append("it is a backup of database '%s'" % manifest["database"])
    dump = (checks.get("dump") or {}).get("stat") or {}
    if not dump.get("exists"):
        reasons.append("dump.pgdump missing")
    else:
        if dump.get("size", 0) < int(min_size_bytes):
            reasons.append("dump.pgdump is %s bytes, below the minimum of %s bytes" % (dump.get("size"), min_size_bytes))
        if "size_bytes" in manifest and dump.get("size") != int(manifest["size_bytes"]):
            reasons.append("dump.pgdump is %s bytes, the manifest says %s" % (dump.get("size"), manifest["size_bytes"]))
        if "sha256" in manifest and dump.get("checksum") != manifest["sha256"]:
            reasons.append("checksum mismatch: sha256 of dump.pgdump is %s, the manifest says %s" % (
                dump.get("checksum"), manifest["sha256"]))
        toc = checks.get("toc") or {}
        if toc.get("rc", 0) != 0:
            reasons.append("pg_restore cannot read it: %s" % _first_line(toc.get("stderr") or toc.get("msg")))
    return reasons, manifest


def health_backup_item(found, store, checks=None, database="saasodoo", max_age_hours=26, min_size_bytes=1024,
                       now=None, title="Backup system operational"):
    """The newest backup of restore_backup's directory store is verified and recent.

    found: ansible.builtin.find of <store>/<database> (folders named by UTC time); checks: for the newest,
    {'manifest': slurp of manifest.json, 'dump': stat of dump.pgdump with sha256, 'toc': pg_restore --list}.
    The checks are restore_backup's own (tasks/verify_backup.yml), on the newest backup only.
    """
    found = found or {}
    current = _parse_time(now) if now else datetime.datetime.now(datetime.timezone.utc)
    remediation = "take a backup (role restore_backup, tasks_from: backup) and repair the scheduled backup job"
    folders = sorted((f.get("path") for f in found.get("files") or []), key=lambda p: p.rsplit("/", 1)[-1])
    where = "%s/%s" % (str(store).rstrip("/"), database)
    if not folders:
        skipped = found.get("skipped_paths") or {}
        why = ("%s: %s" % (where, skipped.get(where) or next(iter(skipped.values())))) if skipped else \
            "no backup folder in %s" % where
        return _item("backup", title, [_finding("backup", "HEALTH_BACKUP_MISSING", "high",
                                                "no backup of database %s in %s" % (database, store), [why],
                                                remediation=remediation)], ["store %s: %s" % (store, why)])
    newest = folders[-1]
    backup_id = newest.rsplit("/", 1)[-1]
    reasons, manifest = _verify_backup(checks or {}, database, min_size_bytes)
    created = _parse_time(manifest.get("created_at")) or _parse_time(backup_id)
    age_hours = round((current - created).total_seconds() / 3600, 1) if created else None
    dump = ((checks or {}).get("dump") or {}).get("stat") or {}
    evidence = ["store %s: %d backup(s) of %s" % (store, len(folders), database),
                "newest %s: %s, %s bytes, %s" % (
                    backup_id, "verified (manifest, size, sha256, pg_restore --list)" if not reasons
                    else "INVALID: " + "; ".join(reasons), dump.get("size"),
                    ("%.1f h old" % age_hours) if age_hours is not None else "age unknown")]
    findings = []
    if reasons:
        findings.append(_finding("backup", "HEALTH_BACKUP_INVALID", "high", "the newest backup %s fails its checks: "
                                 "it could not be restored" % backup_id, reasons, remediation=remediation, ref=newest))
    if age_hours is None or age_hours > float(max_age_hours):
        findings.append(_finding("backup", "HEALTH_BACKUP_STALE", "high", "the newest backup %s is %s, older than %s "
                                 "hours" % (backup_id, ("%.1f h old" % age_hours) if age_hours is not None
                                            else "of unknown age", max_age_hours),
                                 ["created at %s" % (manifest.get("created_at") or backup_id)],
                                 remediation=remediation, ref=newest))
    return _item("backup", title, findings, evidence)


def health_checklist_lines(items):
    """One line per checklist item: [PASS]/[FAIL] title - first evidence line."""
    lines = []
    for item in items or []:
        evidence = item.get("evidence") or []
        detail = "; ".join(str(e) for e in evidence[:2])
        lines.append("[%s] %s%s" % (item["status"].upper(), item["title"], (" - " + detail) if detail else ""))
    passed = sum(1 for item in items or [] if item["status"] == "pass")
    lines.append("%d of %d checklist item(s) pass" % (passed, len(items or [])))
    return lines


def health_item_summary(item):
    """The item as the report keeps it: name, title, status, evidence and its finding codes."""
    return {"name": item["name"], "title": item["title"], "status": item["status"], "evidence": item["evidence"],
            "findings": [f["code"] for f in item.get("findings") or []]}


def health_handover_line(finding):
    """Who acts on a finding: the runbook that remediates it, or a human."""
    if finding.get("runbook"):
        return "%s (%s): %s -> %s.yml" % (finding["code"], finding.get("item"), finding["message"], finding["runbook"])
    return "%s (%s): %s -> a human: %s" % (finding["code"], finding.get("item"), finding["message"],
                                            finding.get("remediation") or "escalate")


def health_next_runbooks(items):
    """The runbooks the findings point to, worst finding first, each once (for a chain)."""
    findings = [f for item in items or [] for f in item.get("findings") or []]
    findings.sort(key=lambda f: SEVERITY_ORDER.index(f["severity"]))
    out = []
    for f in findings:
        if f.get("runbook") and f["runbook"] not in out:
            out.append(f["runbook"])
    return out


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "health_pods_item": health_pods_item,
            "health_database_item": health_database_item,
            "health_redis_item": health_redis_item,
            "health_external_item": health_external_item,
            "health_dns_item": health_dns_item,
            "health_ssl_item": health_ssl_item,
            "health_monitoring_item": health_monitoring_item,
            "health_backup_item": health_backup_item,
            "health_checklist_lines": health_checklist_lines,
            "health_item_summary": health_item_summary,
            "health_handover_line": health_handover_line,
            "health_next_runbooks": health_next_runbooks,
        }
