"""What lands in a log bundle (plugins/filter/collect_logs.py), on hand-made k8s_log results and events."""

from __future__ import annotations

import json

from plugins.filter import collect_logs as f
from testbed import platform_vars

INV = platform_vars.load()
COMPONENTS = INV["saasodoo_components"]
LABEL = INV["saasodoo_component_label"]
NOW = "2026-01-10T12:00:00Z"


def pod(key, name, containers=("main",), restarts=0, namespace=None):
    comp = COMPONENTS[key]
    return {"metadata": {"name": name, "namespace": namespace or comp["namespace"], "labels": {LABEL: key}},
            "spec": {"nodeName": "n1", "containers": [{"name": c} for c in containers]},
            "status": {"phase": "Running", "containerStatuses": [{"name": c, "restartCount": restarts} for c in containers]}}


def target(key, name, container="main"):
    return {"component": key, "namespace": COMPONENTS[key]["namespace"], "pod": name, "container": container}


def ok(t, lines):
    return {"item": t, "changed": False, "failed": False, "log": "\n".join(lines), "log_lines": list(lines) + [""]}


def failed(t, msg):
    return {"item": t, "changed": False, "failed": False, "msg": msg}


def event(key, obj_name, etype, reason, message, when, kind="Pod"):
    ns = COMPONENTS[key]["namespace"]
    return {"metadata": {"name": f"{obj_name}.x", "namespace": ns}, "type": etype, "reason": reason,
            "message": message, "involvedObject": {"kind": kind, "name": obj_name, "namespace": ns},
            "lastTimestamp": when, "count": 1}


OPTIONS = {
    "bundle": "b", "window": f.collect_logs_window(60, NOW), "services": [], "components": COMPONENTS,
    "namespaces": sorted({c["namespace"] for c in COMPONENTS.values()}), "min_severity": "info",
    "severity_patterns": INV["collect_logs_severity_patterns"], "error_patterns": INV["collect_logs_error_patterns"],
    "redact_patterns": INV["collect_logs_redact_patterns"], "redact_values": ["s3cr3t-value"], "max_samples": 2,
}


def build(results, events=(), **overrides):
    return f.collect_logs_bundle(results, list(events), {**OPTIONS, **overrides})


def files(bundle):
    return {x["path"]: x["content"] for x in bundle["files"]}


def test_window():
    assert f.collect_logs_window(90, NOW) == {"since": "2026-01-10T10:30:00Z", "until": NOW, "minutes": 90,
                                               "since_seconds": 5400}


def test_split_reports_the_overflow():
    assert f.collect_logs_split([1, 2, 3], 2) == [[1, 2], [3]]
    assert f.collect_logs_split([1], "5") == [[1], []]
    assert f.collect_logs_split(None, 3) == [[], []]


def test_targets_select_components_and_namespaces():
    pods = [pod("backend", "be-1", restarts=4), pod("backend", "be-2"), pod("frontend", "fe-1", ("web", "sidecar")),
            pod("backend", "impostor", namespace="tenant-acme"), {"metadata": {"name": "x", "namespace": "y"}}]
    everything = f.collect_logs_targets(pods, COMPONENTS, LABEL)
    assert [(t["component"], t["pod"], t["container"]) for t in everything] == [
        ("backend", "be-1", "main"), ("backend", "be-2", "main"), ("frontend", "fe-1", "sidecar"), ("frontend", "fe-1", "web")]
    assert everything[0]["restarts"] == 4 and everything[0]["node"] == "n1"
    assert [t["pod"] for t in f.collect_logs_targets(pods, COMPONENTS, LABEL, ["frontend"])] == ["fe-1", "fe-1"]


def test_severity_and_redaction():
    rx = {k: f._compile(v) for k, v in INV["collect_logs_severity_patterns"].items()}
    assert f.line_severity("2026 ERROR db down", rx) == "error"
    assert f.line_severity("level=warn msg=slow", rx) == "warning"
    assert f.line_severity("DEBUG cache miss", rx) == "debug"
    assert f.line_severity("GET /health 200", rx) == "info"
    red = f._compile(INV["collect_logs_redact_patterns"])
    line = ('url=postgresql://u:pa55w0rd@db/x password="hunter2" api_key: abc123 Authorization: Bearer '
            'eyJabc.def.ghi s3cr3t-value')
    clean = f.redact(line, red, ["s3cr3t-value", "abc"])  # too-short literals are not replaced blindly
    for secret in ("pa55w0rd", "hunter2", "abc123", "eyJabc.def.ghi", "s3cr3t-value"):
        assert secret not in clean, clean
    assert "postgresql://u:********@db/x" in clean and 'password="********"' in clean


def test_bundle_filters_counts_and_unavailable_logs():
    be, fe, rd = target("backend", "be-1"), target("frontend", "fe-1"), target("redis", "rd-1")
    results = [
        ok(be, ["INFO started", "WARN slow", "ERROR boom: connection refused", "DEBUG detail",
                "ERROR token=abcdef123 failed"]),
        ok(fe, ["GET / 200"]),
        failed(rd, 'Unable to retrieve log from Pod due to: b\'{"kind":"Status","message":"Get \\"https://127.0.0.1:'
                   '10250/containerLogs/x\\": dial tcp: connect: connection refused"}\''),
    ]
    events = [
        event("backend", "be-1", "Warning", "BackOff", "Back-off restarting failed container", "2026-01-10T11:59:00Z"),
        event("backend", "saasodoo-backend", "Normal", "ScalingReplicaSet", "Scaled up", "2026-01-10T11:30:00Z",
              kind="Deployment"),
        event("frontend", "fe-1", "Warning", "Unhealthy", "probe failed", "2026-01-10T11:58:00Z"),
        event("backend", "be-1", "Warning", "Failed", "too old", "2026-01-10T09:00:00Z"),
        {**event("backend", "odoo-1", "Warning", "Failed", "tenant", "2026-01-10T11:59:00Z"),
         "metadata": {"name": "t", "namespace": "tenant-acme"}},
    ]
    bundle = build(results, events)
    index, out = bundle["index"], files(bundle)
    assert index["counts"] == {"containers": 3, "containers_with_logs": 2, "containers_unavailable": 1,
                               "log_lines_total": 6, "log_lines_kept": 5, "events_seen": 4, "events_kept": 3,
                               "error_pattern_matches": index["counts"]["error_pattern_matches"]}
    backend_log = out["logs/saasodoo-system/be-1/main.log"]
    assert "DEBUG detail" not in backend_log and "WARN slow" in backend_log and "token=********" in backend_log
    redis = next(e for e in index["logs"] if e["component"] == "redis")
    assert redis["available"] is False and redis["file"] is None
    assert redis["reason"] == ('logs unavailable: Get "https://127.0.0.1:10250/containerLogs/x": dial tcp: '
                               'connect: connection refused')
    assert "logs/saasodoo-system/rd-1/main.log" not in out
    events_log = out["events/saasodoo-system.log"]
    assert "BackOff" in events_log and "ScalingReplicaSet" in events_log and "too old" not in events_log
    assert "tenant" not in events_log  # not a platform namespace
    assert json.loads(out["index.json"]) == index
    assert "| redis | saasodoo-system/rd-1 | main | 0/0 | logs unavailable:" in out["README.md"]
    errors = {m["pattern"]: m for m in index["errors"]}
    assert errors[INV["collect_logs_error_patterns"][0]]["count"] == 2  # two ERROR lines
    assert len(errors[INV["collect_logs_error_patterns"][0]]["samples"]) == 2  # capped by max_samples
    assert index["events"]["warning_reasons"] == {"BackOff": 1, "Unhealthy": 1}

    strict = build(results, events, services=["backend"], min_severity="error")
    sindex, sout = strict["index"], files(strict)
    assert {e["component"] for e in sindex["logs"]} == {"backend", "frontend", "redis"}  # results decide; the playbook selects
    assert sout["logs/saasodoo-system/be-1/main.log"].count("\n") == 2  # the two ERROR lines
    assert "logs/saasodoo-system/fe-1/main.log" not in sout  # nothing at error level
    assert sindex["counts"]["events_kept"] == 0  # Warning events are below error
    warn = build(results, events, services=["backend"], min_severity="warning")
    kept = json.loads(files(warn)["events/events.json"])
    assert [(e["reason"], e["component"]) for e in kept] == [("BackOff", "backend")]


def test_findings_are_low_observations():
    be, rd = target("backend", "be-1"), target("redis", "rd-1")
    index = build([ok(be, ["ERROR boom"]), failed(rd, "no logs")],
                  [event("backend", "be-1", "Warning", "BackOff", "x", "2026-01-10T11:59:00Z")])["index"]
    found = f.collect_logs_findings(index, "/tmp/b")
    assert [(x["code"], x["severity"]) for x in found] == [
        ("LOG_ERROR_PATTERNS", "low"), ("LOGS_UNAVAILABLE", "low"), ("WARNING_EVENTS", "low")]
    assert "/tmp/b" in found[0]["message"] and found[2]["evidence"] == ["BackOff: 1"]
    assert f.collect_logs_findings(build([ok(be, ["fine"])], [])["index"]) == []
