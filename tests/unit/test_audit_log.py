"""saasodoo_audit_log on audit logs in the API server's own format (audit.k8s.io/v1 Event, JSON lines)."""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "saasodoo_audit_log", Path(__file__).resolve().parents[2] / "plugins" / "modules" / "saasodoo_audit_log.py")
m = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(m)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def event(minutes_ago, code=200, user="system:serviceaccount:tenant-a:default", stage="ResponseComplete",
          verb="list", resource="secrets", ips=("10.244.0.10",), audit_id=None):
    t = (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": audit_id or "id",
            "stage": stage, "requestURI": "/api/v1/%s" % resource, "verb": verb, "user": {"username": user},
            "sourceIPs": list(ips), "objectRef": {"resource": resource, "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": code}, "requestReceivedTimestamp": t, "stageTimestamp": t}


def write(tmp_path, events, extra_lines=()):
    path = tmp_path / "audit.log"
    path.write_text("\n".join([json.dumps(e) for e in events] + list(extra_lines)) + "\n")
    return str(path)


def test_missing_file_is_not_an_error(tmp_path):
    result = m.scan(str(tmp_path / "nope.log"), now=NOW)
    assert result["exists"] is False and result["events"] == 0 and result["denied"]["total"] == 0


def test_counts_refusals_in_the_window(tmp_path):
    received = dict(event(5, code=403), stage="RequestReceived")
    del received["responseStatus"]
    path = write(tmp_path, [
        event(90, code=403),                       # too old
        received,                                  # same request, first stage: not counted twice
        event(5, code=403),
        event(4, code=403, verb="get", resource="pods"),
        event(3, code=401, user="", ips=("203.0.113.7",)),
        event(2, code=200),
        event(1, code=403, stage="ResponseStarted"),  # a watch that started: counted at ResponseComplete only
    ], extra_lines=["not json", '{"no": "timestamp"}', "[1]"])
    result = m.scan(path, since_minutes=60, now=NOW)
    assert result["exists"] and not result["truncated"]
    assert result["events"] == 7 and result["parse_errors"] == 3
    denied = result["denied"]
    assert (denied["total"], denied["401"], denied["403"]) == (3, 1, 2)
    assert denied["by_user"] == [{"user": "system:serviceaccount:tenant-a:default", "count": 2},
                                 {"user": "(unauthenticated)", "count": 1}]
    assert denied["by_source_ip"][0] == {"ip": "10.244.0.10", "count": 2}
    assert denied["by_resource"] == [{"verb": "list", "resource": "secrets", "count": 2},
                                     {"verb": "get", "resource": "pods", "count": 1}]
    assert denied["samples"][0]["code"] == 401 and denied["samples"][0]["source_ips"] == ["203.0.113.7"]
    assert result["last_event_age_minutes"] == 1.0
    assert result["first_event"].startswith("2024-05-01T10:30:00")


def test_reads_only_the_tail(tmp_path):
    events = [event(50 - i, code=403, audit_id=str(i)) for i in range(40)]
    path = write(tmp_path, events)
    size = Path(path).stat().st_size
    result = m.scan(path, max_bytes=size // 4, now=NOW)
    assert result["truncated"] is True and result["parse_errors"] == 0
    assert 0 < result["events"] < 40 and result["denied"]["total"] == result["events"]
    assert result["bytes_read"] <= size // 4


def test_stale_log_shows_its_age(tmp_path):
    result = m.scan(write(tmp_path, [event(600)]), now=NOW)
    assert result["last_event_age_minutes"] == 600.0 and result["denied"]["total"] == 0


@pytest.mark.parametrize("value, expected", [
    ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
    ("2024-05-01T12:00:00.123456789Z", datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)),
    ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
    ("yesterday", None), (None, None)])
def test_timestamps(value, expected):
    assert m.parse_time(value) == expected


def test_directory_and_bad_inputs(tmp_path):
    with pytest.raises(m.AuditLogError, match="is a directory"):
        m.scan(str(tmp_path), now=NOW)
    assert "since_minutes must be > 0" in m.validate({"since_minutes": 0, "max_bytes": 1, "top": 1})
    assert m.validate({"since_minutes": 1, "max_bytes": 0, "top": 1}) is None
