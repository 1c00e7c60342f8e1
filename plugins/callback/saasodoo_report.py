# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks: write an incident report for every runbook run, and optionally notify.
"""Incident report callback.

The pure parts (building the report from the runbook's published report, rendering it as
Markdown, redaction, urgency, the notification bodies, HTTP with retries) are module-level
functions, unit-tested without Ansible running (tests/unit/test_report_callback.py). The
CallbackModule only collects what happens during the run and calls them at the end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from ansible.plugins.callback import CallbackBase

# The redaction lives in plugins/module_utils/saasodoo_redact.py, shared with the filters, the modules and
# saasodoo_runbooks. Loaded by path (resolved: playbooks/callback_plugins is a symlink to this directory):
# on the controller a callback cannot import `ansible.module_utils.<project file>`.
_spec = importlib.util.spec_from_file_location(
    "saasodoo_redact", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_redact.py")
redaction = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(redaction)

DOCUMENTATION = r"""
name: saasodoo_report
type: aggregate
short_description: Write an incident report (JSON and Markdown) for each runbook run, optionally notify
description:
  - Collects a timeline during the run (task starts; results that changed something or failed, with the
    Kubernetes object kind and name and a before/after taken from the result's C(diff) when there is one,
    never the full object).
  - At the end reads the report the runbook published with C(ansible.builtin.set_stats) (a custom stat
    whose name ends in C(_report), e.g. C(platform_down_report), or C(saasodoo_report)) and writes an
    incident report with the troubleshooting guide's "Information to Include" (issue description, impact,
    steps taken, logs and evidence, timeline, urgency) to O(report_dir) as
    C(<runbook>-<UTC timestamp>.json) and C(.md), plus C(<runbook>-latest.json) and C(.md) copies.
    The JSON follows C(docs/incident-report.schema.json) (C(schema_version) 1).
  - When the run failed before the runbook published its report, a report with result C(failed) is
    written from the timeline.
  - A run that publishes no report and does not fail (e.g. a deployment playbook) writes nothing.
  - Secrets never reach the report. Results of C(no_log) tasks are censored by Ansible before any callback
    sees them; in addition, every value of a variable (or nested key) whose name matches
    C(password|passwd|secret|token|api_key|apikey|private_key|routing_key) (names ending in C(name), C(ref),
    C(file), C(path), C(dir) excepted), every such environment variable, and the notification URLs and
    routing key are replaced with C(********) wherever they appear in the report, also URL-encoded,
    escaped or base64-encoded; credentials are hidden by their shape even when their value is unknown
    (C(scheme://user:pw@), C(Authorization) headers (Basic, Bearer), C(password=...), C(PASSWORD '...')).
    A value is redacted whole before it is shortened.
  - Optionally notifies a generic JSON webhook, a Slack-compatible incoming webhook and the PagerDuty Events
    API v2 when the urgency is at least O(notify_min_level). A failed notification never fails the run; it
    is reported as a warning and recorded in the report's C(notifications). URLs and the routing key are
    never printed.
  - "Prints C(Incident report: <path>.json, <path>.md) at the end of the run."
requirements:
  - enable it in ansible.cfg (C(callbacks_enabled = saasodoo_report) under C([defaults])) or with
    C(ANSIBLE_CALLBACKS_ENABLED=saasodoo_report)
options:
  report_dir:
    description:
      - Directory for the reports (created when missing).
      - A relative path set in ansible.cfg is relative to the directory of ansible.cfg; one set in the
        environment is relative to the current directory.
      - Default is C(reports) next to ansible.cfg (the current directory when there is no ansible.cfg).
    type: path
    env:
      - name: SAASODOO_REPORT_DIR
    ini:
      - section: saasodoo_report
        key: report_dir
  notify_webhook_url:
    description: POST the whole report as JSON to this URL. Empty disables it.
    type: str
    default: ''
    env:
      - name: SAASODOO_NOTIFY_WEBHOOK_URL
    ini:
      - section: saasodoo_report
        key: notify_webhook_url
  notify_slack_url:
    description: Slack-compatible incoming webhook URL (C({"text", "blocks"}) body). Empty disables it.
    type: str
    default: ''
    env:
      - name: SAASODOO_NOTIFY_SLACK_URL
    ini:
      - section: saasodoo_report
        key: notify_slack_url
  notify_pagerduty_url:
    description: PagerDuty Events API v2 endpoint. Used only when O(notify_pagerduty_routing_key) is set.
    type: str
    default: https://events.pagerduty.com/v2/enqueue
    env:
      - name: SAASODOO_NOTIFY_PAGERDUTY_URL
    ini:
      - section: saasodoo_report
        key: notify_pagerduty_url
  notify_pagerduty_routing_key:
    description:
      - PagerDuty integration (routing) key. Empty disables PagerDuty.
      - An event C(trigger) is sent when the urgency is at least O(notify_min_level); an event C(resolve) (same
        C(dedup_key), one per runbook) whenever the result is C(healthy) or C(remediated), whatever the level,
        so that an incident an earlier run triggered is closed.
    type: str
    default: ''
    env:
      - name: SAASODOO_NOTIFY_PAGERDUTY_ROUTING_KEY
    ini:
      - section: saasodoo_report
        key: notify_pagerduty_routing_key
  notify_min_level:
    description: Notify only when the report's urgency is at least this level (C(none) notifies on every run).
    type: str
    default: high
    choices: [critical, high, medium, none]
    env:
      - name: SAASODOO_NOTIFY_MIN_LEVEL
    ini:
      - section: saasodoo_report
        key: notify_min_level
  notify_retries:
    description: Retries after a failed attempt (connection error, timeout, HTTP 429 or 5xx), per target.
    type: int
    default: 3
    env:
      - name: SAASODOO_NOTIFY_RETRIES
    ini:
      - section: saasodoo_report
        key: notify_retries
  notify_backoff_seconds:
    description: Wait before the first retry; doubled before each next one (exponential backoff).
    type: float
    default: 1
    env:
      - name: SAASODOO_NOTIFY_BACKOFF_SECONDS
    ini:
      - section: saasodoo_report
        key: notify_backoff_seconds
  notify_timeout_seconds:
    description: Timeout of each HTTP attempt.
    type: float
    default: 5
    env:
      - name: SAASODOO_NOTIFY_TIMEOUT_SECONDS
    ini:
      - section: saasodoo_report
        key: notify_timeout_seconds
"""

SCHEMA_VERSION = 1
MASK = redaction.MASK
LEVELS = ("none", "medium", "high", "critical")
ESCALATE = {"critical": "immediately", "high": "within 2 hours", "medium": "within 24 hours", "none": ""}
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "none": "info"}
SEVERITIES = ("critical", "high", "medium", "low")
RESULTS = ("healthy", "remediated", "needs_human", "failed")

# Object fields that change on every write and say nothing about what the runbook did.
NOISE_PATHS = re.compile(r"^metadata\.(managedFields|resourceVersion|generation|uid|creationTimestamp)\b")
MAX_TIMELINE = 1000
MAX_DIFF_PATHS = 30
MAX_VALUE_CHARS = 300
REF = re.compile(r"\b([A-Z][A-Za-z]+)/([a-z0-9.-]+)/([a-z0-9.-]+)\b")


def utc_now():
    return datetime.now(timezone.utc)


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(value, limit=MAX_VALUE_CHARS, secrets=()):
    """value as text of at most `limit` characters, redacted whole before it is cut."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if not isinstance(value, str):
        value = json.dumps(redaction.redact(value, secrets), sort_keys=True, default=str)
    return redaction.shorten(value, limit, secrets)


def plain(data):
    """Ansible's tagged and lazy containers as plain JSON data."""
    return json.loads(json.dumps(data, default=str))


# --------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------

# One implementation for the whole project: plugins/module_utils/saasodoo_redact.py.
is_secret_name = redaction.is_secret_name
secret_values = redaction.secret_values
env_secret_values = redaction.env_secret_values
redact_text = redaction.redact_text
redact = redaction.redact


def mask_url(url):
    """scheme://host[:port]/*** : the path of a webhook URL is its secret."""
    if not url:
        return ""
    parts = urllib.parse.urlsplit(str(url))
    host = parts.hostname or "?"
    if parts.port:
        host = "%s:%s" % (host, parts.port)
    return "%s://%s%s" % (parts.scheme or "?", host, "/***" if parts.path.strip("/") or parts.query else "")


# --------------------------------------------------------------------------------------------
# What a task changed
# --------------------------------------------------------------------------------------------

def _flatten(data, prefix=""):
    """{'a.b': leaf}; an empty dict holds no value and gives no path."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, "%s.%s" % (prefix, key) if prefix else str(key)))
        return out
    return {prefix: data}


def minimal_diff(diff, kind=None, secrets=()):
    """{'before': {path: value}, 'after': {path: value}} from a module's diff; None when there is none.

    Only the fields that differ, without bookkeeping fields; values are shortened. The data of a
    Kubernetes Secret is never recorded.
    """
    if not diff:
        return None
    if isinstance(diff, list):
        diff = diff[0] if len(diff) == 1 else {"before": [d.get("before") for d in diff if isinstance(d, dict)],
                                                "after": [d.get("after") for d in diff if isinstance(d, dict)]}
    if not isinstance(diff, dict) or ("before" not in diff and "after" not in diff):
        return None
    if kind == "Secret":
        return {"before": "(Secret data not recorded)", "after": "(Secret data not recorded)"}
    before, after = diff.get("before"), diff.get("after")
    if isinstance(before, dict) or isinstance(after, dict):
        flat_before = _flatten(before if isinstance(before, dict) else {})
        flat_after = _flatten(after if isinstance(after, dict) else {})
        paths = sorted(p for p in set(flat_before) | set(flat_after)
                       if p and not NOISE_PATHS.match(p) and flat_before.get(p) != flat_after.get(p))
        paths = paths[:MAX_DIFF_PATHS]
        if not paths:
            return None
        return {"before": {p: _short(flat_before.get(p), secrets=secrets) for p in paths},
                "after": {p: _short(flat_after.get(p), secrets=secrets) for p in paths}}
    if before == after:
        return None
    return {"before": _short(before, secrets=secrets), "after": _short(after, secrets=secrets)}


def k8s_object(result):
    """{'kind', 'name', 'namespace'} of the object a kubernetes.core result is about, or None."""
    obj = result.get("result") if isinstance(result, dict) else None
    if isinstance(obj, dict) and isinstance(obj.get("results"), list) and obj["results"]:
        obj = obj["results"][0].get("result") if isinstance(obj["results"][0], dict) else None
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
        return None
    meta = obj["metadata"]
    return {"kind": obj.get("kind"), "name": meta.get("name"), "namespace": meta.get("namespace")}


def timeline_entry(event, at, task, host=None, action=None, result=None, item=None, secrets=()):
    """One line of the timeline; `result` is the task's result dict (already censored by Ansible).

    Every text is redacted (with `secrets` and by shape) before it is shortened.
    """
    result = result or {}
    entry = {"at": at, "event": event, "task": redact_text(task, secrets) if task is not None else None,
             "host": host, "action": action,
             "changed": bool(result.get("changed")) if event != "task_start" else None,
             "item": _short(item, 120, secrets) if item is not None else None,
             "object": None, "before": None, "after": None, "message": None}
    if result.get("censored") or result.get("_ansible_no_log"):
        entry["message"] = "output hidden (no_log)"
        return entry
    # saasodoo_k8s_change: kubernetes.core.k8s / k8s_scale behind an action plugin, same result shape.
    if action and ("kubernetes.core" in action or action.startswith("k8s") or action.endswith("saasodoo_k8s_change")):
        entry["object"] = k8s_object(result)
        change = minimal_diff(result.get("diff"), (entry["object"] or {}).get("kind"), secrets)
        if change:
            entry["before"], entry["after"] = change["before"], change["after"]
    if event in ("failed", "unreachable"):
        entry["message"] = _short(result.get("msg") or result.get("stderr") or result.get("reason") or "", 500,
                                  secrets)
    return entry


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def find_runbook_report(custom):
    """(key, report) from the run's custom stats (set_stats), or (None, None).

    custom is {'_run': {...}} for run-wide stats and {host: {...}} for per-host ones.
    """
    for scope in sorted(custom or {}, key=lambda s: s != "_run"):
        data = custom[scope]
        if not isinstance(data, dict):
            continue
        if isinstance(data.get("saasodoo_report"), dict):
            return "saasodoo_report", data["saasodoo_report"]
        for key in sorted(data):
            if str(key).endswith("_report") and isinstance(data[key], dict):
                return key, data[key]
    return None, None


def _level(level):
    level = str(level or "none").lower()
    if level == "low":
        return "medium"
    return level if level in LEVELS else "medium"


def worst_severity(findings):
    levels = {f.get("severity") for f in findings or []}
    return next((s for s in SEVERITIES if s in levels), "none")


def urgency(report, failed=False):
    """{'level', 'escalate', 'why', 'incident_severity'} per the guide's "When to Escalate".

    The level is the runbook's escalation (what is left for a human, and how soon); the incident
    severity is the worst finding, the business impact even when the runbook resolved it.
    """
    report = report or {}
    findings = report.get("findings") or []
    esc = report.get("escalation") or {}
    if esc.get("level"):
        level, why = _level(esc["level"]), esc.get("why") or ""
    else:
        left = report.get("remaining", findings) or []
        worst = worst_severity(left)
        level = "none" if worst == "none" else _level(worst)
        why = "%s findings remain" % worst if left else "nothing found"
    if failed and LEVELS.index(level) < LEVELS.index("high"):
        level, why = "high", "the runbook run failed; a human must finish the diagnosis" + (
            " (%s)" % why if why and why != "nothing found" else "")
    return {"level": level, "escalate": ESCALATE[level], "why": why,
            "incident_severity": worst_severity(findings)}


def run_result(report, failed=False):
    """healthy, remediated, needs_human or failed."""
    if failed:
        return "failed"
    if not report:
        return "needs_human"
    if report.get("healthy_before") and not report.get("actions"):
        return "healthy"
    if not report.get("check_mode") and report.get("healthy_after") and not report.get("remaining"):
        return "remediated" if report.get("actions") else "healthy"
    return "needs_human"


MEASUREMENTS = (
    (re.compile(r"(\d+) restarts"), ("restarts",)),
    (re.compile(r"(\d+) of (\d+) replicas ready"), ("ready_replicas", "replicas")),
    (re.compile(r"exit code (-?\d+)"), ("exit_code",)),
)


def evidence_of(finding, secrets=()):
    """{'code', 'ref', 'lines', 'measurements'} for one finding (list or dict evidence), lines redacted then cut."""
    raw = finding.get("evidence")
    lines, measurements = [], {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                measurements[str(key)] = value
            elif isinstance(value, bool) or value is None:
                measurements[str(key)] = value
            else:
                lines.append("%s: %s" % (key, MASK if is_secret_name(key) and value else _short(value, secrets=secrets)))
    elif isinstance(raw, (list, tuple)):
        lines = [str(_short(line, secrets=secrets)) for line in raw]
    elif raw:
        lines = [str(_short(raw, secrets=secrets))]
    for line in lines:
        for pattern, names in MEASUREMENTS:
            match = pattern.search(line)
            if match:
                for name, value in zip(names, match.groups()):
                    measurements[name] = max(int(value), measurements.get(name, int(value))) \
                        if name == "restarts" else int(value)
    return {"code": finding.get("code"), "ref": finding.get("ref"), "lines": lines, "measurements": measurements}


def impact(report):
    findings = (report or {}).get("findings") or []
    remaining = (report or {}).get("remaining") or []
    components = sorted({f["component"] for f in findings if f.get("component")})
    refs = sorted({f["ref"] for f in findings if f.get("ref")})
    tenants = sorted({str(f["tenant"]) for f in findings if f.get("tenant")})
    by_severity = {s: sum(1 for f in findings if f.get("severity") == s) for s in SEVERITIES}
    first_broken = (report or {}).get("first_broken_layer")
    if first_broken:
        scope = "platform"
        summary = ("Platform-wide: the %s layer was down, so every tenant was affected" % first_broken)
    elif tenants:
        scope = "tenants"
        summary = "%d tenant(s) affected: %s" % (len(tenants), ", ".join(tenants))
    elif findings:
        scope = "components"
        summary = "Degraded, not down: %d component(s) affected (%s)" % (
            len(components or refs), ", ".join(components or refs) or "see findings")
    elif not report:
        scope = "none"
        summary = "Unknown: the run failed before the runbook published its diagnosis"
    else:
        scope = "none"
        summary = "No impact found"
    counts = dict(by_severity, findings=len(findings), components=len(components), tenants=len(tenants),
                  actions=len((report or {}).get("actions") or []), remaining=len(remaining))
    return {"scope": scope, "summary": summary, "components_affected": components, "objects_affected": refs,
            "tenants_affected": tenants, "counts": counts}


def describe(report, runbook, result, failures=None):
    """One clear paragraph: what was found, what was done, how it ended."""
    section = (report or {}).get("guide_section") or runbook
    if not report:
        why = "; ".join(failures or []) or "see the timeline"
        return "The %s run failed before the runbook published its report: %s." % (runbook, why)
    findings = report.get("findings") or []
    if not findings:
        text = "The %s runbook (%s) found nothing wrong" % (section, runbook)
    else:
        counts = ", ".join("%d %s" % (n, s) for s in SEVERITIES
                           if (n := sum(1 for f in findings if f.get("severity") == s)))
        text = "The %s runbook (%s) found %d problem(s) (%s): %s" % (
            section, runbook, len(findings), counts, "; ".join(f.get("message", f.get("code", "")) for f in findings[:3]))
        if len(findings) > 3:
            text += "; and %d more" % (len(findings) - 3)
        if report.get("first_broken_layer"):
            text += ". First broken layer: %s" % report["first_broken_layer"]
    actions = report.get("actions") or []
    text += ". " + ("It did: %s" % "; ".join(actions) if actions else "It changed nothing")
    if report.get("check_mode"):
        text += " (check mode)"
    ending = {
        "healthy": "The platform is healthy.",
        "remediated": "The platform was healthy afterwards.",
        "failed": "The run then failed: %s." % ("; ".join(failures or []) or "see the timeline"),
    }.get(result)
    if ending is None:
        left = report.get("remaining") or findings
        ending = "Still needs a human: %s." % ("; ".join(f.get("message", "") for f in left[:3]) or
                                               "; ".join(report.get("handed_over") or []) or "see the findings")
    return text + ". " + ending


def steps_taken(report, timeline, result):
    """Diagnosis, each action (with when, and the state before and after), verification."""
    report = report or {}
    steps = []
    findings = report.get("findings") or []
    remaining = report.get("remaining") or []
    if report:
        steps.append({"action": "diagnosis (%s): %d finding(s)%s" % (
            report.get("guide_section") or report.get("runbook"), len(findings),
            "; first broken layer: %s" % report["first_broken_layer"] if report.get("first_broken_layer") else ""),
            "at": report.get("started"), "before": None, "after": None, "changes": None})
    changed = [e for e in timeline or [] if e.get("event") == "changed"]
    for action in report.get("actions") or []:
        match = REF.search(action)
        ref = "/".join(match.groups()) if match else None
        entry = None
        if match:
            kind, namespace, name = match.groups()
            entry = next((e for e in reversed(changed) if e.get("object")
                          and e["object"].get("kind") == kind and e["object"].get("name") == name
                          and e["object"].get("namespace") in (namespace, None)), None)
        else:
            entry = next((e for e in reversed(changed) if e.get("item") and e["item"] in action), None)
        before = [f.get("message") for f in findings if ref and f.get("ref") == ref]
        after_left = [f.get("message") for f in remaining if ref and f.get("ref") == ref]
        if report.get("check_mode"):
            after = "not changed (check mode)"
        elif after_left:
            after = "; ".join(after_left)
        elif report.get("healthy_after"):
            after = "healthy"
        else:
            after = "no finding left on it" if ref else None
        changes = None
        if entry and (entry.get("before") is not None or entry.get("after") is not None):
            changes = {"before": entry.get("before"), "after": entry.get("after")}
        steps.append({"action": action, "at": entry["at"] if entry else None,
                      "before": "; ".join(before) if before else None, "after": after, "changes": changes})
    for skipped in report.get("skipped") or []:
        steps.append({"action": "left alone %s: %s" % (skipped.get("ref"), skipped.get("why")),
                      "at": None, "before": None, "after": None, "changes": None})
    for handed in report.get("handed_over") or []:
        steps.append({"action": "handed over: %s" % handed, "at": None, "before": None, "after": None,
                      "changes": None})
    if report.get("actions") and not report.get("check_mode"):
        steps.append({"action": "verification after remediation: %s" % (
            "healthy" if report.get("healthy_after") else "still unhealthy"),
            "at": None, "before": None,
            "after": "healthy" if report.get("healthy_after") else "; ".join(f.get("message", "") for f in remaining),
            "changes": None})
    return steps


# The keys every runbook report has (role runbook_report); any other key is the runbook's own detail.
STANDARD_KEYS = ("runbook", "guide_section", "started", "check_mode", "healthy_before", "findings", "actions",
                 "skipped", "handed_over", "healthy_after", "remaining", "escalation")


def details_of(report):
    """What the runbook reported beyond the standard keys (checklists, measurements, decisions), plus
    what it deliberately left alone and handed over."""
    rb = report or {}
    extra = dict((k, v) for k, v in sorted(rb.items()) if k not in STANDARD_KEYS)
    return {"handed_over": list(rb.get("handed_over") or []), "left_alone": list(rb.get("skipped") or []),
            "runbook": extra}


def build_report(runbook_report, timeline=None, run=None, secrets=()):
    """The incident report (schema_version 1) from the runbook's published report and the run.

    run: {'playbook', 'started', 'finished', 'check_mode', 'failed', 'failures': [str], 'stats_key'}
    The inputs are redacted (with `secrets` and by shape) before anything is shortened.
    """
    rb = redact(runbook_report or {}, secrets)
    timeline = redact(list(timeline or []), secrets)
    run = redact(run or {}, secrets)
    failed = bool(run.get("failed"))
    runbook = rb.get("runbook") or run.get("playbook") or "runbook"
    result = run_result(rb, failed)
    findings = rb.get("findings") or []
    return {
        "schema_version": SCHEMA_VERSION,
        "runbook": runbook,
        "guide_section": rb.get("guide_section") or "",
        "description": describe(rb, runbook, result, run.get("failures")),
        "impact": impact(rb),
        "steps_taken": steps_taken(rb, timeline, result),
        "evidence": [evidence_of(f, secrets) for f in findings],
        "timeline": list(timeline or []),
        "findings": findings,
        "remaining": rb.get("remaining") or [],
        "details": details_of(rb),
        "urgency": urgency(rb, failed),
        "check_mode": bool(rb.get("check_mode", run.get("check_mode", False))),
        "started": rb.get("started") or run.get("started"),
        "finished": run.get("finished"),
        "result": result,
        "source": {"playbook": run.get("playbook"), "stats_key": run.get("stats_key"),
                   "failures": list(run.get("failures") or [])},
        "notifications": [],
    }


def _md(text):
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def render_markdown(report, secrets=()):
    """The report as Markdown, one heading per item of the guide's "Information to Include".

    Shortened values are redacted (with `secrets` and by shape) before they are cut.
    """
    u = report["urgency"]
    imp = report["impact"]
    lines = ["# Incident report: %s%s" % (report["runbook"],
                                          " (%s)" % report["guide_section"] if report.get("guide_section") else ""),
             "",
             "- Result: **%s**%s" % (report["result"], " (check mode: nothing was changed)" if report["check_mode"] else ""),
             "- Urgency: **%s**%s" % (u["level"].upper(), " (escalate %s)" % u["escalate"] if u["escalate"] else ""),
             "- Started: %s, finished: %s" % (report.get("started") or "?", report.get("finished") or "?"),
             "",
             "## Issue Description", "", report["description"], ""]
    lines += ["## Impact Assessment", "", imp["summary"] + ".", "",
              "- Components affected: %s" % (", ".join(imp["components_affected"]) or "none"),
              "- Objects affected: %s" % (", ".join(imp["objects_affected"]) or "none"),
              "- Tenants affected: %s" % (", ".join(imp["tenants_affected"]) or
                                          ("all (platform-wide)" if imp["scope"] == "platform" else "none")),
              "- Findings: %d (%s); remaining after the run: %d" % (
                  imp["counts"]["findings"],
                  ", ".join("%d %s" % (imp["counts"][s], s) for s in SEVERITIES if imp["counts"][s]) or "none",
                  imp["counts"]["remaining"]),
              ""]
    lines += ["## Steps Taken", ""]
    for i, step in enumerate(report["steps_taken"], 1):
        lines.append("%d. %s%s" % (i, step["action"], " (at %s)" % step["at"] if step.get("at") else ""))
        if step.get("before"):
            lines.append("   - before: %s" % step["before"])
        if step.get("after"):
            lines.append("   - after: %s" % step["after"])
        if step.get("changes"):
            lines.append("   - changed: `%s` -> `%s`" % (_short(step["changes"]["before"], 200, secrets),
                                                        _short(step["changes"]["after"], 200, secrets)))
    if not report["steps_taken"]:
        lines.append("None.")
    lines += ["", "## Logs and Evidence", ""]
    for ev in report["evidence"]:
        lines.append("### %s%s" % (ev["code"], " (%s)" % ev["ref"] if ev.get("ref") else ""))
        lines.append("")
        lines += ["    %s" % line for line in ev["lines"]] or ["    (no evidence lines)"]
        if ev["measurements"]:
            lines += ["", "Measurements: %s" % ", ".join("%s=%s" % kv for kv in sorted(ev["measurements"].items()))]
        lines.append("")
    if not report["evidence"]:
        lines += ["No findings.", ""]
    if report["source"].get("failures"):
        lines += ["Failures:", ""] + ["    %s" % f for f in report["source"]["failures"]] + [""]
    details = report.get("details") or {}
    if details.get("handed_over") or details.get("left_alone") or details.get("runbook"):
        lines += ["### What the runbook handed over, left alone and measured", ""]
        lines += ["- Handed over: %s" % h for h in details.get("handed_over") or []]
        lines += ["- Left alone: %s: %s" % (s.get("ref", "?"), s.get("why", "")) if isinstance(s, dict)
                  else "- Left alone: %s" % s for s in details.get("left_alone") or []]
        for key, value in sorted((details.get("runbook") or {}).items()):
            lines.append("- %s: `%s`" % (key, _short(value, 400, secrets)))
        lines.append("")
    lines += ["## Timeline", "", "| at | event | task | host | object | change |", "|---|---|---|---|---|---|"]
    for e in report["timeline"]:
        obj = e.get("object") or {}
        change = ""
        if e.get("before") is not None or e.get("after") is not None:
            change = "%s -> %s" % (_short(e.get("before"), 120, secrets), _short(e.get("after"), 120, secrets))
        elif e.get("message"):
            change = e["message"]
        lines.append("| %s | %s | %s | %s | %s | %s |" % (
            e["at"], e["event"], _md(e["task"]) + (" (%s)" % _md(e["item"]) if e.get("item") else ""),
            _md(e.get("host") or ""), _md("/".join(str(v) for v in (obj.get("kind"), obj.get("namespace"), obj.get("name")) if v)),
            _md(change)))
    lines += ["", "## Urgency Level", "",
              "- Level: **%s**" % u["level"].upper(),
              "- Escalate: %s" % (u["escalate"] or "no escalation needed"),
              "- Why: %s" % (u["why"] or "-"),
              "- Incident severity (business impact): %s" % u["incident_severity"], ""]
    if report.get("notifications"):
        lines += ["## Notifications", ""]
        for n in report["notifications"]:
            lines.append("- %s: %s after %d attempt(s)%s" % (n["target"], "sent" if n["ok"] else "FAILED",
                                                            n["attempts"], ": %s" % n["error"] if n.get("error") else ""))
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Notifications
# --------------------------------------------------------------------------------------------

def should_notify(level, min_level):
    return LEVELS.index(_level(level)) >= LEVELS.index(_level(min_level)) if _level(min_level) != "none" else True


def summary_text(report):
    return "[%s] %s: %s. %s" % (report["urgency"]["level"].upper(), report["runbook"], report["result"],
                                report["description"])


def slack_body(report, report_path=None):
    """Slack-compatible incoming webhook body: text (fallback) and blocks."""
    def esc(text):
        return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    u = report["urgency"]
    fields = [
        {"type": "mrkdwn", "text": "*Urgency*\n%s%s" % (u["level"].upper(), " (escalate %s)" % u["escalate"] if u["escalate"] else "")},
        {"type": "mrkdwn", "text": "*Result*\n%s" % report["result"]},
        {"type": "mrkdwn", "text": "*Impact*\n%s" % esc(report["impact"]["summary"])[:1900]},
        {"type": "mrkdwn", "text": "*Components*\n%s" % (", ".join(report["impact"]["components_affected"]) or "none")},
    ]
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": ("%s %s: %s" % (
            u["level"].upper(), report["runbook"], report["result"]))[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": esc(report["description"])[:2900]}},
        {"type": "section", "fields": fields},
    ]
    steps = [s["action"] for s in report["steps_taken"]]
    if steps:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            "*Steps taken*\n" + "\n".join("- %s" % esc(s) for s in steps))[:2900]}})
    context = "started %s, finished %s" % (report.get("started"), report.get("finished"))
    if report_path:
        context += ", report %s" % report_path
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": esc(context)[:2900]}]})
    return {"text": esc(summary_text(report))[:2900], "blocks": blocks}


def pagerduty_body(report, routing_key, source=None, report_path=None):
    """PagerDuty Events API v2 event: trigger, or resolve when the result is healthy or remediated."""
    u = report["urgency"]
    action = "resolve" if report["result"] in ("healthy", "remediated") else "trigger"
    first = (report.get("findings") or [{}])[0]
    return {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": "saasodoo-runbooks/%s" % report["runbook"],
        "client": "SaaSOdoo Runbooks",
        "payload": {
            "summary": summary_text(report)[:1024],
            "source": source or socket.gethostname(),
            "severity": PAGERDUTY_SEVERITY[u["level"]],
            "timestamp": report.get("finished") or report.get("started"),
            "component": first.get("component") or report["runbook"],
            "group": report.get("guide_section") or report["runbook"],
            "class": first.get("code") or report["result"],
            "custom_details": {
                "runbook": report["runbook"],
                "result": report["result"],
                "urgency": u,
                "description": report["description"],
                "impact": report["impact"]["summary"],
                "components_affected": report["impact"]["components_affected"],
                "tenants_affected": report["impact"]["tenants_affected"],
                "steps_taken": [s["action"] for s in report["steps_taken"]],
                "remaining": [f.get("message") for f in report.get("remaining") or []],
                "report": report_path,
            },
        },
    }


def post_json(url, body, retries=3, backoff=1.0, timeout=5.0, secrets=(), sleep=time.sleep,
              opener=urllib.request.urlopen):
    """POST body as JSON; retry connection errors, timeouts, 429 and 5xx with exponential backoff.

    Returns {'ok', 'attempts', 'status', 'error'}; never raises. Errors never carry the URL or secrets.
    """
    data = json.dumps(body).encode("utf-8")
    attempts, status, error = 0, None, None
    hide = set(secrets or ()) | {url}
    for attempt in range(int(retries) + 1):
        if attempt:
            sleep(float(backoff) * (2 ** (attempt - 1)))
        attempts += 1
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "saasodoo-runbooks/1"})
        try:
            with opener(request, timeout=float(timeout)) as response:
                status = getattr(response, "status", None) or response.getcode()
                response.read()
            return {"ok": True, "attempts": attempts, "status": status, "error": None}
        except urllib.error.HTTPError as exc:
            status, error = exc.code, "HTTP %s %s" % (exc.code, exc.reason)
            if exc.code != 429 and exc.code < 500:
                break
        except urllib.error.URLError as exc:
            status, error = None, "cannot connect: %s" % (exc.reason,)
        except (OSError, ValueError) as exc:  # timeouts, resets, malformed URLs
            status, error = None, "%s: %s" % (type(exc).__name__, exc)
    return {"ok": False, "attempts": attempts, "status": status, "error": redact_text(str(error), hide)}


def notification_plan(report, options, report_path=None, source=None):
    """[(target, url, body)] to send for this report, given the notify_* options."""
    level, minimum = report["urgency"]["level"], options.get("notify_min_level") or "high"
    wanted = should_notify(level, minimum)
    plan = []
    if options.get("notify_webhook_url") and wanted:
        plan.append(("webhook", options["notify_webhook_url"], report))
    if options.get("notify_slack_url") and wanted:
        plan.append(("slack", options["notify_slack_url"], slack_body(report, report_path)))
    key = options.get("notify_pagerduty_routing_key")
    if key and options.get("notify_pagerduty_url"):
        body = pagerduty_body(report, key, source, report_path)
        if wanted or body["event_action"] == "resolve":
            plan.append(("pagerduty", options["notify_pagerduty_url"], body))
    return plan


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _write_atomic(path, text):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def report_paths(report_dir, runbook, finished):
    """(json, md) paths for this run; a suffix keeps two runs in the same second apart."""
    stamp = finished.strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", runbook) or "runbook"
    base = os.path.join(report_dir, "%s-%s" % (safe, stamp))
    n = 1
    while os.path.exists(base + ".json"):
        n += 1
        base = os.path.join(report_dir, "%s-%s-%d" % (safe, stamp, n))
    return base + ".json", base + ".md"


def write_report(report, report_dir, finished, secrets):
    """Write the report (redacted) as JSON and Markdown, plus the -latest copies. Returns the paths."""
    os.makedirs(report_dir, exist_ok=True)
    json_path, md_path = report_paths(report_dir, report["runbook"], finished)
    clean = redact(report, secrets)
    json_text = redact_text(json.dumps(clean, indent=2, sort_keys=True, default=str) + "\n", secrets)
    md_text = redact_text(render_markdown(clean, secrets) + "\n", secrets)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", report["runbook"]) or "runbook"
    latest = os.path.join(report_dir, safe + "-latest")
    for path, text in ((json_path, json_text), (md_path, md_text),
                       (latest + ".json", json_text), (latest + ".md", md_text)):
        _write_atomic(path, text)
    return json_path, md_path


def default_report_dir():
    try:
        from ansible import constants as C
        config_file = C.CONFIG_FILE
    except Exception:  # pragma: no cover - only outside Ansible
        config_file = None
    base = os.path.dirname(os.path.abspath(config_file)) if config_file else os.getcwd()
    return os.path.join(base, "reports")


# --------------------------------------------------------------------------------------------
# The callback
# --------------------------------------------------------------------------------------------

class CallbackModule(CallbackBase):
    """Collects the timeline and the secrets to hide; writes the incident report at the end."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "saasodoo_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super().__init__(display=display)
        self._started = utc_now()
        self._playbook = None
        self._timeline = []
        self._secrets = set(env_secret_values(os.environ))
        self._failures = []

    # -- collection -------------------------------------------------------------------------
    def _add(self, entry):
        if len(self._timeline) < MAX_TIMELINE:
            self._timeline.append(entry)

    def v2_playbook_on_start(self, playbook):
        name = getattr(playbook, "_file_name", None) or ""
        self._playbook = os.path.splitext(os.path.basename(name))[0] or None

    def v2_playbook_on_play_start(self, play):
        """Collect the values of secret-looking variables, rendered, for every host of the play."""
        begin = time.monotonic()
        try:
            from ansible.template import Templar

            manager = play.get_variable_manager()
            loader = play.get_loader()
            inventory = getattr(manager, "_inventory", None)
            hosts = inventory.get_hosts(play.hosts)[:20] if inventory is not None else []
            for host in hosts or [None]:
                variables = manager.get_vars(play=play, host=host) if host else manager.get_vars(play=play)
                templar = Templar(loader=loader, variables=variables)
                self._secrets |= secret_values(variables, render=templar.template)
            self._display.vvv("saasodoo_report: %d value(s) to redact, found in %.2fs"
                              % (len(self._secrets), time.monotonic() - begin))
        except Exception as exc:  # redaction still covers the environment and no_log results
            self._display.warning("saasodoo_report: could not read the play's variables for redaction: %s"
                                  % type(exc).__name__)

    def _known_secrets(self):
        """The values to hide: the play's and the environment's secrets, the notification URLs and key."""
        secrets = set(self._secrets)
        for name in ("notify_webhook_url", "notify_slack_url", "notify_pagerduty_routing_key"):
            try:
                value = self.get_option(name)
            except Exception:  # options not set yet (unit tests)
                value = None
            if value:
                secrets.add(str(value))
        return secrets

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._add(timeline_entry("task_start", iso(utc_now()), task.get_name().strip(),
                                 action=getattr(task, "action", None), secrets=self._known_secrets()))

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _record(self, event, result, item=False):
        data = result._result
        if event == "changed" and not item and isinstance(data.get("results"), list):
            return  # a loop: each item was recorded on its own
        label = None
        if item:
            label = data.get("_ansible_item_label", data.get("item"))
        entry = timeline_entry(event, iso(utc_now()), result.task_name or result._task.get_name(),
                               host=result._host.get_name(), action=getattr(result._task, "action", None),
                               result=data, item=label, secrets=self._known_secrets())
        self._add(plain(entry))
        if event in ("failed", "unreachable") and not item:
            self._failures.append("%s on %s: %s" % (entry["task"], entry["host"], entry["message"] or event))

    def v2_runner_on_ok(self, result):
        if result._result.get("changed"):
            self._record("changed", result)

    def v2_runner_item_on_ok(self, result):
        if result._result.get("changed"):
            self._record("changed", result, item=True)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._record("failed", result)

    def v2_runner_item_on_failed(self, result):
        self._record("failed", result, item=True)

    def v2_runner_on_unreachable(self, result):
        self._record("unreachable", result)

    # -- the report -------------------------------------------------------------------------
    def _notify_options(self):
        names = ("notify_webhook_url", "notify_slack_url", "notify_pagerduty_url", "notify_pagerduty_routing_key",
                 "notify_min_level", "notify_retries", "notify_backoff_seconds", "notify_timeout_seconds")
        return {name: self.get_option(name) for name in names}

    def v2_playbook_on_stats(self, stats):
        try:
            self._finish(stats)
        except Exception as exc:  # the report must never fail the run
            self._display.warning("saasodoo_report: could not write the incident report: %s: %s"
                                  % (type(exc).__name__, redact_text(str(exc), self._secrets)))

    def _finish(self, stats):
        finished = utc_now()
        key, runbook_report = find_runbook_report(plain(getattr(stats, "custom", {}) or {}))
        failed = any((stats.failures or {}).values()) or any((stats.dark or {}).values())
        if runbook_report is None and not failed:
            self._display.vvv("saasodoo_report: no runbook report in the custom stats and no failure: no incident report")
            return
        try:
            from ansible import context
            check_mode = bool(context.CLIARGS.get("check", False))
        except Exception:  # pragma: no cover
            check_mode = False
        options = self._notify_options()
        secrets = set(self._secrets)
        for name in ("notify_webhook_url", "notify_slack_url", "notify_pagerduty_routing_key"):
            if options.get(name):
                secrets.add(str(options[name]))
        # build_report redacts its inputs before it shortens anything; the result is redacted once more.
        report = build_report(runbook_report, self._timeline, {
            "playbook": self._playbook, "started": iso(self._started), "finished": iso(finished),
            "check_mode": check_mode, "failed": failed, "failures": self._failures, "stats_key": key}, secrets)
        report = redact(report, secrets)
        report_dir = self.get_option("report_dir") or default_report_dir()
        try:
            os.makedirs(report_dir, exist_ok=True)
            planned = report_paths(report_dir, report["runbook"], finished)[0]
        except OSError as exc:  # still notify: the people paged need it most when the disk is the problem
            self._display.warning("saasodoo_report: cannot use the report directory %s: %s" % (report_dir, exc))
            planned = None
        report["notifications"] = self._notify(report, options, planned, secrets)
        json_path, md_path = write_report(report, report_dir, finished, secrets)
        self._display.display("Incident report: %s, %s" % (json_path, md_path))

    def _notify(self, report, options, report_path, secrets):
        outcomes = []
        for target, url, body in notification_plan(report, options, report_path):
            # The bodies come from the redacted report; only the routing key is added to PagerDuty's.
            outcome = post_json(url, body,
                                retries=max(0, int(options.get("notify_retries") or 0)),
                                backoff=float(options.get("notify_backoff_seconds") or 0),
                                timeout=float(options.get("notify_timeout_seconds") or 5), secrets=secrets)
            outcomes.append({"target": target, "url": mask_url(url), "ok": outcome["ok"],
                             "attempts": outcome["attempts"], "status": outcome["status"], "error": outcome["error"]})
            if not outcome["ok"]:
                self._display.warning("saasodoo_report: the %s notification to %s failed after %d attempt(s): %s. "
                                      "The run is not affected; the report records it."
                                      % (target, mask_url(url), outcome["attempts"], outcome["error"]))
        return outcomes
