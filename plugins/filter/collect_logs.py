"""Filters of the Log Analysis runbook (collect_logs.yml): choose what to collect, filter it, build the bundle.

Pure functions over what kubernetes.core.k8s_info and k8s_log return, so what lands in a bundle is
unit-tested without a cluster (tests/unit/test_collect_logs.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

DOCUMENTATION = """
name: collect_logs
short_description: Select, filter, redact and index platform logs and events into one bundle
description:
  - C(collect_logs_targets) lists the containers of the platform's pods, per component, for the services asked for.
  - C(collect_logs_split) splits a list at a cap into what is taken and what is left (reported).
  - C(collect_logs_bundle) turns k8s_log results and events into the bundle's files (one log per container,
    events per namespace, index.json, README.md) with time window, service and severity filters applied,
    secrets redacted, and the lines matching error patterns counted and sampled.
  - C(collect_logs_findings) gives the runbook's low-severity observations from a bundle's index.
"""

# The redaction lives in plugins/module_utils/saasodoo_redact.py, shared with the incident report and the
# modules. Loaded by path: on the controller a filter plugin cannot import `ansible.module_utils.<project file>`.
_spec = importlib.util.spec_from_file_location(
    "saasodoo_redact", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_redact.py")
redaction = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(redaction)

SEVERITIES = ["debug", "info", "warning", "error"]
MAX_SAMPLE_CHARS = 500
MAX_REASON_CHARS = 400
_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _get(obj, *path, default=None):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


def _parse_time(value):
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value).strip().replace("Z", "+00:00")
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if not match:
        return None
    frac = (match.group(2) or "")[:7]  # Python parses at most microseconds
    try:
        parsed = datetime.fromisoformat(match.group(1) + frac + (match.group(3) or ""))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _iso(moment):
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def collect_logs_window(minutes, now=None):
    """{'since', 'until', 'minutes', 'since_seconds'} for the last `minutes` minutes (UTC)."""
    until = _parse_time(now) if now else datetime.now(timezone.utc)
    minutes = int(minutes)
    return {"since": _iso(until - timedelta(minutes=minutes)), "until": _iso(until), "minutes": minutes,
            "since_seconds": minutes * 60}


def collect_logs_targets(pods, components, component_label, services=None):
    """One entry per container of each platform pod whose component is asked for, sorted.

    pods: k8s_info resources; components: saasodoo_components; services: component keys ([] = all).
    A pod counts for a component when its component label names it and it lives in its namespace.
    """
    wanted = set(services or components or {})
    out = []
    for pod in pods or []:
        meta = pod.get("metadata") or {}
        key = (meta.get("labels") or {}).get(component_label)
        comp = (components or {}).get(key)
        if key not in wanted or not comp or comp.get("namespace") != meta.get("namespace"):
            continue
        statuses = {c.get("name"): c for c in _get(pod, "status", "containerStatuses", default=[]) or []}
        for container in _get(pod, "spec", "containers", default=[]) or []:
            name = container.get("name")
            out.append({
                "component": key, "namespace": meta.get("namespace"), "pod": meta.get("name"), "container": name,
                "node": _get(pod, "spec", "nodeName"), "phase": _get(pod, "status", "phase"),
                "restarts": int((statuses.get(name) or {}).get("restartCount") or 0),
            })
    return sorted(out, key=lambda t: (t["component"], t["namespace"], t["pod"], t["container"]))


def collect_logs_split(items, limit):
    """[the first `limit` items, the rest]: a cap whose overflow is reported, not silently dropped."""
    items, limit = list(items or []), max(0, int(limit))
    return [items[:limit], items[limit:]]


def _compile(patterns):
    return [re.compile(p) for p in patterns or []]


def line_severity(line, severity_patterns):
    """'error', 'warning', 'debug' or 'info' (the default) by the first matching level's patterns."""
    for level in ("error", "warning", "debug"):
        if any(rx.search(line) for rx in severity_patterns.get(level, [])):
            return level
    return "info"


def redact(text, patterns=(), values=()):
    """Secrets out of a whole line (before it is cut anywhere): the literal values in any form and every
    credential-shaped part (the project's shared redaction), then the inventory's own regexes (the match,
    or its group 'secret' when it has one)."""
    text = redaction.redact_text(text, [str(v) for v in values or [] if v])
    for rx in patterns or ():
        if "secret" in rx.groupindex:
            text = rx.sub(lambda m: m.group(0)[:m.start("secret") - m.start(0)] + redaction.MASK
                          + m.group(0)[m.end("secret") - m.start(0):], text)
        else:
            text = rx.sub(redaction.MASK, text)
    return text


def _unavailable_reason(result, patterns=(), values=()):
    """Why a log could not be read: the API's message, redacted whole, then squeezed and cut."""
    msg = str(result.get("msg") or result.get("exception") or "no log returned")
    found = _MESSAGE.findall(msg)
    reason = found[-1] if found else msg
    reason = redact(reason.replace('\\"', '"').replace("\\\\", "\\"), patterns, values)
    return re.sub(r"\s+", " ", reason).strip()[:MAX_REASON_CHARS]


def _event_time(event):
    for path in (("eventTime",), ("lastTimestamp",), ("series", "lastObservedTime"), ("firstTimestamp",),
                 ("metadata", "creationTimestamp")):
        moment = _parse_time(_get(event, *path))
        if moment:
            return moment
    return None


def _event_component(event, components, pods_by_component):
    obj = event.get("involvedObject") or event.get("regarding") or {}
    namespace, name = obj.get("namespace") or _get(event, "metadata", "namespace"), obj.get("name") or ""
    for key, comp in sorted((components or {}).items()):
        if comp.get("namespace") != namespace:
            continue
        if name in pods_by_component.get(key, set()) or name == comp.get("name") \
                or name.startswith(str(comp.get("name")) + "-"):
            return key
    return None


def _event_line(e):
    return (f"{e['time']} {e['type']:<7} {e['reason']:<22} {e['object']}: {e['message']}"
            + (f" (x{e['count']})" if e.get("count", 1) > 1 else ""))


def collect_logs_bundle(log_results, events, options):
    """The bundle: {'files': [{'path', 'content'}], 'index': {...}} (paths relative to the bundle directory).

    log_results: the `results` of a k8s_log loop over collect_logs_targets (each with `item`); a failed
    item (failed_when: false) means the log could not be read and is recorded as unavailable with why.
    events: k8s_info resources of Event in the platform's namespaces.
    options: window {since, until, minutes}, services, namespaces, components, min_severity,
    severity_patterns {error, warning, debug: [regex]}, error_patterns [regex], redact_patterns,
    redact_values, max_samples, bundle.
    """
    opts = options or {}
    min_level = SEVERITIES.index(opts.get("min_severity", "info"))
    sev_rx = {k: _compile(v) for k, v in (opts.get("severity_patterns") or {}).items()}
    err_rx = [(p, re.compile(p)) for p in opts.get("error_patterns") or []]
    red_rx = _compile(opts.get("redact_patterns"))
    red_values = opts.get("redact_values") or []
    max_samples = int(opts.get("max_samples", 5))
    window = opts.get("window") or {}
    since = _parse_time(window.get("since"))
    until = _parse_time(window.get("until"))
    components = opts.get("components") or {}
    services = list(opts.get("services") or [])
    namespaces = set(opts.get("namespaces") or [])

    files, logs_index = [], []
    matches = {p: {"pattern": p, "count": 0, "samples": []} for p, _ in err_rx}
    pods_by_component = {}
    for result in log_results or []:
        target = result.get("item") or {}
        pods_by_component.setdefault(target.get("component"), set()).add(target.get("pod"))
        path = f"logs/{target.get('namespace')}/{target.get('pod')}/{target.get('container')}.log"
        entry = dict(target)
        if "log_lines" not in result or result.get("failed") or result.get("skipped"):
            entry.update(available=False, reason=f"logs unavailable: {_unavailable_reason(result, red_rx, red_values)}",
                         file=None, lines_total=0, lines_kept=0, by_severity={})
            logs_index.append(entry)
            continue
        kept, counts = [], {level: 0 for level in SEVERITIES}
        lines = [line for line in result.get("log_lines") or [] if line != ""]
        for line in lines:
            line = redact(line, red_rx, red_values)
            level = line_severity(line, sev_rx)
            counts[level] += 1
            for pattern, rx in err_rx:
                if rx.search(line):
                    matches[pattern]["count"] += 1
                    if len(matches[pattern]["samples"]) < max_samples:
                        # the line is already redacted whole: cutting it cannot leave a secret's prefix
                        matches[pattern]["samples"].append({"source": path, "line": line[:MAX_SAMPLE_CHARS]})
            if SEVERITIES.index(level) >= min_level:
                kept.append(line)
        entry.update(available=True, reason=None, file=path if kept else None, lines_total=len(lines),
                     lines_kept=len(kept), by_severity={k: v for k, v in counts.items() if v})
        if kept:
            files.append({"path": path, "content": "\n".join(kept) + "\n"})
        logs_index.append(entry)

    seen, kept_events = 0, []
    for event in events or []:
        ns = _get(event, "metadata", "namespace")
        if namespaces and ns not in namespaces:
            continue
        seen += 1
        moment = _event_time(event)
        if since and (moment is None or moment < since):
            continue
        if until and moment and moment > until + timedelta(minutes=1):
            continue
        etype = event.get("type") or "Normal"
        level = "warning" if etype == "Warning" else "info"
        if SEVERITIES.index(level) < min_level:
            continue
        component = _event_component(event, components, pods_by_component)
        if services and component not in services:
            continue
        obj = event.get("involvedObject") or event.get("regarding") or {}
        # redacted before the spaces are squeezed: a secret holding spaces or newlines is still recognised
        message = re.sub(r"\s+", " ", redact(str(event.get("message") or event.get("note") or ""),
                                              red_rx, red_values)).strip()
        kept_events.append({
            "time": _iso(moment) if moment else None, "namespace": ns, "type": etype,
            "reason": event.get("reason") or "", "object": f"{obj.get('kind')}/{obj.get('name')}",
            "component": component, "message": message, "count": int(event.get("count") or 1),
        })
        for pattern, rx in err_rx:
            if rx.search(message) or rx.search(event.get("reason") or ""):
                matches[pattern]["count"] += 1
                if len(matches[pattern]["samples"]) < max_samples:
                    matches[pattern]["samples"].append({"source": f"events/{ns}.log", "line": _event_line(kept_events[-1])})
    kept_events.sort(key=lambda e: (e["time"] or "", e["namespace"], e["object"]))
    by_ns = {}
    for e in kept_events:
        by_ns.setdefault(e["namespace"], []).append(e)
    for ns, items in sorted(by_ns.items()):
        files.append({"path": f"events/{ns}.log", "content": "\n".join(_event_line(e) for e in items) + "\n"})
    files.append({"path": "events/events.json", "content": json.dumps(kept_events, indent=1, sort_keys=True) + "\n"})

    by_type, by_reason, warning_reasons = {}, {}, {}
    for e in kept_events:
        by_type[e["type"]] = by_type.get(e["type"], 0) + 1
        by_reason[e["reason"]] = by_reason.get(e["reason"], 0) + 1
        if e["type"] == "Warning":
            warning_reasons[e["reason"]] = warning_reasons.get(e["reason"], 0) + 1
    index = {
        "bundle": opts.get("bundle"),
        "window": window,
        "filters": {"services": services or "all", "min_severity": SEVERITIES[min_level],
                    "namespaces": sorted(namespaces)},
        "counts": {
            "containers": len(logs_index),
            "containers_with_logs": sum(1 for e in logs_index if e["available"]),
            "containers_unavailable": sum(1 for e in logs_index if not e["available"]),
            "log_lines_total": sum(e["lines_total"] for e in logs_index),
            "log_lines_kept": sum(e["lines_kept"] for e in logs_index),
            "events_seen": seen,
            "events_kept": len(kept_events),
            "error_pattern_matches": sum(m["count"] for m in matches.values()),
        },
        "logs": logs_index,
        "events": {"by_type": by_type, "by_reason": by_reason, "warning_reasons": warning_reasons,
                   "files": [f"events/{ns}.log" for ns in sorted(by_ns)] + ["events/events.json"]},
        "errors": [m for m in matches.values() if m["count"]],
    }
    files.append({"path": "README.md", "content": _readme(index)})
    files.append({"path": "index.json", "content": json.dumps(index, indent=1, sort_keys=True) + "\n"})
    return {"files": files, "index": index}


def _readme(index):
    c = index["counts"]
    w = index.get("window") or {}
    lines = [
        f"# Log bundle {index.get('bundle') or ''}".rstrip(),
        "",
        f"- Window: {w.get('since')} to {w.get('until')} ({w.get('minutes')} min)",
        f"- Services: {index['filters']['services'] if isinstance(index['filters']['services'], str) else ', '.join(index['filters']['services'])}",
        f"- Minimum severity: {index['filters']['min_severity']}",
        f"- Containers: {c['containers']} ({c['containers_with_logs']} with logs, {c['containers_unavailable']} unavailable)",
        f"- Log lines kept: {c['log_lines_kept']} of {c['log_lines_total']}",
        f"- Events kept: {c['events_kept']} of {c['events_seen']} in the namespaces",
        f"- Error pattern matches: {c['error_pattern_matches']}",
        "",
        "| component | pod | container | lines kept/total | file or why not |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in index["logs"]:
        where = e["file"] or (e["reason"] if not e["available"] else "no line at or above the minimum severity")
        lines.append(f"| {e['component']} | {e['namespace']}/{e['pod']} | {e['container']} | "
                     f"{e['lines_kept']}/{e['lines_total']} | {where} |")
    if index["errors"]:
        lines += ["", "## Error patterns", ""]
        for m in index["errors"]:
            lines.append(f"- `{m['pattern']}`: {m['count']} match(es)")
            lines.extend(f"  - {s['source']}: {s['line']}" for s in m["samples"])
    return "\n".join(lines) + "\n"


def collect_logs_findings(index, bundle_ref=""):
    """Low-severity observations for the report: the collector describes, the other runbooks judge."""
    findings = []
    errors = index.get("errors") or []
    if errors:
        findings.append({
            "code": "LOG_ERROR_PATTERNS", "severity": "low",
            "message": f"{sum(m['count'] for m in errors)} log line(s) or event(s) match error patterns "
                       f"({', '.join(m['pattern'] for m in errors)}); see {bundle_ref or 'the bundle'}",
            "evidence": [f"{s['source']}: {s['line']}" for m in errors for s in m["samples"]][:10],
            "component": None})
    missing = [e for e in index.get("logs") or [] if not e["available"]]
    if missing:
        findings.append({
            "code": "LOGS_UNAVAILABLE", "severity": "low",
            "message": f"the logs of {len(missing)} container(s) could not be read through the API",
            "evidence": [f"{e['namespace']}/{e['pod']}/{e['container']}: {e['reason']}" for e in missing][:10],
            "component": None})
    warnings = (index.get("events") or {}).get("by_type", {}).get("Warning", 0)
    if warnings:
        findings.append({
            "code": "WARNING_EVENTS", "severity": "low",
            "message": f"{warnings} Warning event(s) in the window",
            "evidence": [f"{reason}: {count}" for reason, count in
                         sorted((index.get("events") or {}).get("warning_reasons", {}).items())][:10],
            "component": None})
    return findings


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "collect_logs_window": collect_logs_window,
            "collect_logs_targets": collect_logs_targets,
            "collect_logs_split": collect_logs_split,
            "collect_logs_bundle": collect_logs_bundle,
            "collect_logs_findings": collect_logs_findings,
        }
