"""health_check's item verdicts on hand-made probe results: pass/fail, evidence, findings, runbooks."""

from __future__ import annotations

from plugins.filter import health_check as f

NOW = "2026-06-01T12:00:00Z"
COMPONENTS = {
    "backend": {"kind": "Deployment", "name": "saasodoo-backend", "namespace": "sys", "critical": True},
    "grafana": {"kind": "Deployment", "name": "grafana", "namespace": "mon", "critical": False},
}


def pod(name, ready=True, waiting=None, restarts=0, phase="Running", deleting=False):
    cs = {"name": "c", "ready": ready, "restartCount": restarts, "state": {"running": {}}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting}}
    meta = {"name": name, "namespace": "sys"}
    if deleting:
        meta["deletionTimestamp"] = "2026-06-01T11:59:00Z"
    return {"metadata": meta, "status": {"phase": phase, "containerStatuses": [cs],
                                         "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_pods_pass_fail_and_outage_severity():
    ok = f.health_pods_item([pod("saasodoo-backend-1"), pod("saasodoo-backend-2"),
                             pod("saasodoo-backend-0", ready=False, deleting=True)], "sys", COMPONENTS)
    assert ok["status"] == "pass" and ok["title"] == "All pods running in sys namespace"
    assert ok["evidence"] == ["2 of 2 pod(s) running and ready in sys"]

    one = f.health_pods_item([pod("saasodoo-backend-1"), pod("saasodoo-backend-2", False, "CrashLoopBackOff", 5)],
                             "sys", COMPONENTS)
    assert one["status"] == "fail"
    finding = one["findings"][0]
    assert finding["code"] == "HEALTH_PODS_NOT_RUNNING" and finding["severity"] == "high"
    assert finding["runbook"] == "platform_down" and finding["item"] == "pods"
    assert any("saasodoo-backend-2" in e and "CrashLoopBackOff" in e for e in one["evidence"])

    down = f.health_pods_item([pod("saasodoo-backend-1", False, "CrashLoopBackOff", 5),
                               pod("saasodoo-backend-2", False, "CrashLoopBackOff", 4)], "sys", COMPONENTS)
    assert down["findings"][0]["severity"] == "critical"
    assert "no healthy pod left for backend" in down["findings"][0]["message"]
    assert f.health_pods_item([], "sys")["findings"][0]["code"] == "HEALTH_NO_PODS"


def test_database_connected_and_refused():
    ok = f.health_database_item({"connected": True, "connect_seconds": 0.012,
                                 "server": {"database": "saasodoo", "user": "saasodoo", "version": "15.8"},
                                 "connections": {"total": 3, "max": 100, "usage_percent": 3.0, "free": 94},
                                 "findings": []})
    assert ok["status"] == "pass"
    assert ok["evidence"] == ["session opened on saasodoo as saasodoo, PostgreSQL 15.8, in 0.012 s",
                              "connections: 3 of 100 (3.0%), 94 free"]
    down = f.health_database_item({"connected": False, "reachable": False, "findings": [
        {"code": "PG_UNREACHABLE", "severity": "critical", "message": "PostgreSQL at 127.0.0.1:5432 refused"}]})
    assert down["status"] == "fail"
    assert down["findings"][0]["code"] == "PG_UNREACHABLE" and down["findings"][0]["runbook"] == "postgres_connection"
    rejected = f.health_database_item({"failed": True, "msg": "password authentication failed\nmore"})
    assert rejected["findings"][0]["code"] == "HEALTH_DATABASE_UNREACHABLE"
    assert rejected["findings"][0]["evidence"] == ["password authentication failed"]


def test_redis_up_and_down():
    ok = f.health_redis_item({"info": {"redis_version": "7.0.15", "uptime_in_seconds": 5, "connected_clients": 1,
                                       "role": "master", "used_memory_human": "1M"}}, "127.0.0.1:6379")
    assert ok["status"] == "pass" and ok["evidence"][0].startswith("Redis 7.0.15 at 127.0.0.1:6379")
    down = f.health_redis_item({"failed": False, "msg": "unable to connect to database: Error 111 connecting"},
                               "127.0.0.1:6379")
    assert down["status"] == "fail" and down["findings"][0]["code"] == "HEALTH_REDIS_UNREACHABLE"
    assert down["findings"][0]["severity"] == "critical" and "Error 111" in down["findings"][0]["message"]


def test_external_services_each_with_its_severity_and_no_runbook():
    services = [{"endpoint": "supabase", "name": "Supabase", "severity": "high"},
                {"endpoint": "killbill", "name": "Kill Bill", "severity": "medium"}]
    results = [{"item": services[0], "status": -1, "url": "http://x/auth/v1/health",
                "msg": "Status code was -1 and not [200]: Request failed: <urlopen error [Errno 111] Connection refused>"},
               {"item": services[1], "status": 200, "url": "http://y/1.0/healthcheck", "elapsed": 0}]
    item = f.health_external_item(results, services)
    assert item["title"] == "External services (Supabase, Kill Bill) accessible"
    assert item["status"] == "fail" and len(item["findings"]) == 1
    finding = item["findings"][0]
    assert finding["code"] == "HEALTH_EXTERNAL_SERVICE_DOWN" and finding["severity"] == "high"
    assert finding["runbook"] is None and "Connection refused" in finding["message"]
    assert item["evidence"][1] == "Kill Bill: HTTP 200 from http://y/1.0/healthcheck in 0 ms"
    slow = f.health_external_item([dict(results[1], status=503)], services)
    assert slow["findings"][0]["severity"] == "medium" and "HTTP 503" in slow["findings"][0]["message"]


def test_dns_resolved_silent_and_partial():
    ok = f.health_dns_item({"results": [{"name": "a", "status": "ok", "rcode": "NOERROR", "addresses": ["10.0.0.1"],
                                         "elapsed_ms": 1, "error": None}]}, "127.0.0.1:53")
    assert ok["status"] == "pass" and ok["evidence"] == ["a -> 10.0.0.1 (1 ms)"]
    silent = f.health_dns_item({"results": [
        {"name": "a", "status": "timeout", "rcode": None, "addresses": [], "error": "no answer within 2.0s"},
        {"name": "b", "status": "unreachable", "rcode": None, "addresses": [], "error": "no answer within 2.0s"}]},
        "127.0.0.1:53")
    assert silent["findings"][0]["message"] == "the DNS server 127.0.0.1:53 does not answer (no answer within 2.0s)"
    assert silent["findings"][0]["runbook"] == "dns_resolution" and silent["findings"][0]["severity"] == "critical"
    partial = f.health_dns_item({"results": [{"name": "a", "status": "ok", "addresses": ["1"]},
                                             {"name": "b", "status": "nxdomain", "rcode": "NXDOMAIN",
                                              "error": "NXDOMAIN, no A record"}]}, "s")
    assert partial["findings"][0]["message"] == "1 of 2 platform name(s) do not resolve through s"
    assert partial["findings"][0]["evidence"] == ["b: NXDOMAIN, no A record"]


def test_ssl_takes_the_certificate_and_handshake_findings_of_the_diagnosis():
    diagnosis = {"certificates": [{"ref": "Certificate/sys/c", "state": "expired", "not_after": "2026-05-27T12:00:00Z",
                                   "days_left": -5.0}],
                 "handshakes": [{"endpoint": "e", "server_name": "app", "reachable": True, "state": "expired",
                                 "serial": "0e", "not_after": "2026-05-27T12:00:00Z", "chain": "issued by trusted CA CN=ca"}],
                 "findings": [{"code": "CERT_EXPIRED", "severity": "critical", "message": "m", "runbook": "ingress_tls"},
                              {"code": "TLS_CERT_EXPIRED", "severity": "critical", "message": "m", "runbook": "ingress_tls"},
                              {"code": "PUBLIC_ENDPOINT_UNAVAILABLE", "severity": "critical", "message": "m"}]}
    item = f.health_ssl_item(diagnosis)
    assert item["status"] == "fail"
    assert [x["code"] for x in item["findings"]] == ["CERT_EXPIRED", "TLS_CERT_EXPIRED"]
    assert {x["item"] for x in item["findings"]} == {"ssl"} and {x["runbook"] for x in item["findings"]} == {"ingress_tls"}
    assert item["evidence"][0] == "Certificate/sys/c: expired, until 2026-05-27T12:00:00Z (-5.0 days)"
    assert f.health_ssl_item({"certificates": [], "handshakes": [], "findings": []})["status"] == "pass"


def test_monitoring_down_targets_down_and_up():
    down = f.health_monitoring_item({"status": -1, "msg": "Request failed: Connection refused"}, {}, "http://p")
    assert down["findings"][0]["code"] == "HEALTH_MONITORING_DOWN" and down["findings"][0]["severity"] == "high"
    assert down["findings"][0]["runbook"] == "metrics_collection"
    targets = {"json": {"data": {"activeTargets": [
        {"labels": {"job": "prometheus"}, "scrapeUrl": "http://p/metrics", "health": "up"},
        {"labels": {"job": "backend"}, "scrapeUrl": "http://b/metrics", "health": "down", "lastError": "refused"}]}}}
    some = f.health_monitoring_item({"status": 200}, targets, "http://p")
    assert some["findings"][0]["code"] == "HEALTH_TARGETS_DOWN"
    assert some["evidence"][1] == "1 of 2 active target(s) up"
    assert some["evidence"][2] == "backend http://b/metrics: down (refused)"
    up = {"json": {"data": {"activeTargets": [targets["json"]["data"]["activeTargets"][0]]}}}
    assert f.health_monitoring_item({"status": 200}, up, "http://p")["status"] == "pass"
    assert f.health_monitoring_item({"status": 200}, {"json": {"data": {"activeTargets": []}}},
                                    "http://p")["findings"][0]["code"] == "HEALTH_NO_TARGETS"


def _backup(created="2026-06-01T10:00:00Z", size=5000, sha="ab" * 32, database="saasodoo", toc_rc=0, **manifest):
    import base64
    import json

    body = {"database": database, "size_bytes": size, "sha256": sha, "row_counts": {"public.tenants": 3},
            "created_at": created}
    body.update(manifest)
    return {"manifest": {"content": base64.b64encode(json.dumps(body).encode()).decode()},
            "dump": {"stat": {"exists": True, "size": size, "checksum": sha}},
            "toc": {"rc": toc_rc, "stderr": "pg_restore: error: input file does not appear to be a valid archive"
                    if toc_rc else ""}}


FOUND = {"files": [{"path": "/b/saasodoo/20260531T100000Z"}, {"path": "/b/saasodoo/20260601T100000Z"}]}


def test_backup_recent_and_verified():
    ok = f.health_backup_item(FOUND, "/b", _backup(), "saasodoo", 26, 1024, now=NOW)
    assert ok["status"] == "pass"
    assert ok["evidence"] == ["store /b: 2 backup(s) of saasodoo",
                              "newest 20260601T100000Z: verified (manifest, size, sha256, pg_restore --list), "
                              "5000 bytes, 2.0 h old"]


def test_backup_stale_tampered_unreadable_and_missing():
    stale = f.health_backup_item(FOUND, "/b", _backup(), "saasodoo", 1, 1024, now=NOW)
    assert [x["code"] for x in stale["findings"]] == ["HEALTH_BACKUP_STALE"]
    assert stale["findings"][0]["runbook"] is None and stale["findings"][0]["severity"] == "high"
    assert "restore_backup" in stale["findings"][0]["remediation"]

    tampered = _backup()
    tampered["dump"]["stat"]["checksum"] = "cd" * 32
    bad = f.health_backup_item(FOUND, "/b", tampered, "saasodoo", 26, 1024, now=NOW)
    assert [x["code"] for x in bad["findings"]] == ["HEALTH_BACKUP_INVALID"]
    assert bad["findings"][0]["evidence"] == ["checksum mismatch: sha256 of dump.pgdump is %s, the manifest says %s"
                                              % ("cd" * 32, "ab" * 32)]
    assert bad["findings"][0]["ref"] == "/b/saasodoo/20260601T100000Z"

    small = f.health_backup_item(FOUND, "/b", _backup(size=10, toc_rc=1, database="other"), "saasodoo", 26, 1024, now=NOW)
    reasons = small["findings"][0]["evidence"]
    assert "it is a backup of database 'other'" in reasons
    assert "dump.pgdump is 10 bytes, below the minimum of 1024 bytes" in reasons
    assert any(r.startswith("pg_restore cannot read it: pg_restore: error:") for r in reasons)

    unreadable = f.health_backup_item(FOUND, "/b", {"manifest": {"failed": True}, "dump": {"stat": {"exists": False}}},
                                      "saasodoo", 26, 1024, now=NOW)
    assert unreadable["findings"][0]["evidence"] == ["manifest.json missing or unreadable", "dump.pgdump missing"]
    # Age from the folder's name when the manifest cannot tell.
    assert [x["code"] for x in unreadable["findings"]] == ["HEALTH_BACKUP_INVALID"]

    none = f.health_backup_item({"files": [], "skipped_paths": {"/b/saasodoo": "/b/saasodoo was skipped as it does "
                                                                               "not seem to be a valid directory"}},
                                "/b", None, "saasodoo", now=NOW)
    assert none["findings"][0]["code"] == "HEALTH_BACKUP_MISSING"
    assert none["evidence"] == ["store /b: /b/saasodoo: /b/saasodoo was skipped as it does not seem to be a valid "
                                "directory"]
    empty = f.health_backup_item({"files": []}, "/b", None, "saasodoo", now=NOW)
    assert empty["findings"][0]["evidence"] == ["no backup folder in /b/saasodoo"]


def test_checklist_lines_summary_handover_and_next_runbooks():
    items = [f.health_redis_item({"info": {"redis_version": "7"}}, "r"),
             f.health_dns_item({"results": [{"name": "a", "status": "timeout", "error": "e"}]}, "s"),
             f.health_external_item([{"item": {"endpoint": "k", "name": "K", "severity": "medium"}, "status": 500}],
                                    [{"endpoint": "k", "name": "K"}]),
             f.health_pods_item([pod("x-1", False, "CrashLoopBackOff", 9)], "sys")]
    lines = f.health_checklist_lines(items)
    assert lines[0].startswith("[PASS] Redis connectivity working - Redis 7 at r")
    assert lines[1] == "[FAIL] DNS resolution working - a: e"
    assert lines[-1] == "1 of 4 checklist item(s) pass"
    assert f.health_item_summary(items[1]) == {"name": "dns", "title": "DNS resolution working", "status": "fail",
                                               "evidence": ["a: e"], "findings": ["HEALTH_DNS_RESOLUTION_FAILED"]}
    assert f.health_next_runbooks(items) == ["dns_resolution", "platform_down"]
    assert f.health_handover_line(items[1]["findings"][0]).endswith("-> dns_resolution.yml")
    assert " -> a human: " in f.health_handover_line(items[2]["findings"][0])
