#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read-only health diagnosis of the platform's PostgreSQL server."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_pg_health
short_description: Diagnose the health of a PostgreSQL server (read-only)
description:
  - Connects to PostgreSQL with a timeout (and measures how long it took), then looks at what the
    troubleshooting guide's "Database Issues" section asks about - connection usage, stuck and
    long-running sessions, blocking lock chains, slow statements, cache hit ratio, dead tuples,
    sizes, free disk space, replication lag and settings that do not fit the host's memory.
  - Returns the facts and a sorted list of C(findings), each with a stable C(code), a
    C(severity), a C(message), the C(evidence) and the C(remediation) (the runbook or step that
    fixes it). Runbooks branch on codes, never on message text.
  - Never changes anything. Every transaction of its session is read-only, statements time out
    after 15 s and wait at most 2 s for a lock, so the diagnosis cannot make an incident worse.
  - When the server cannot be reached (stopped, refused, timed out, out of connection slots) the
    module does not crash. By default it fails with a clear C(msg) and still returns the finding
    (C(PG_UNREACHABLE) or C(PG_CONNECTIONS_EXHAUSTED), critical); with O(fail_on_unreachable=false)
    it returns ok with C(reachable=false) or C(connected=false) so a runbook can branch.
    A rejected login (wrong password, unknown database, pg_hba.conf) always fails - it is a
    configuration error of the caller - and carries the finding C(PG_LOGIN_REJECTED).
  - The role used should be a member of C(pg_monitor) (all sessions' queries, all settings, all
    statistics). Without it the module still runs but sees less.
  - Per-database facts (dead tuples, table sizes, C(pg_stat_statements)) are about O(login_db);
    run the module once per database to cover several.
  - If one check fails (for instance a permission is missing) the others still run; the failure
    is listed in C(check_errors) with a low C(PG_CHECK_FAILED) finding.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
requirements:
  - psycopg (3.1 or later) or psycopg2 on the host that runs the module
  - PostgreSQL 10 or later
options:
  checks:
    description:
      - The checks to run. Server version and uptime are always collected.
      - C(connections), C(long_queries), C(idle_in_transaction) and C(locks) share one snapshot
        of C(pg_stat_activity).
    type: list
    elements: str
    choices: [connections, long_queries, idle_in_transaction, locks, slow_statements, cache_hit_ratio,
              dead_tuples, sizes, disk, replication, settings]
    default: [connections, long_queries, idle_in_transaction, locks, slow_statements, cache_hit_ratio,
              dead_tuples, sizes, disk, replication, settings]
  fail_on_unreachable:
    description:
      - Fail when the module cannot open a session because the server is down, unreachable,
        not accepting sessions yet, or out of connection slots.
      - When false, return ok with C(connected=false) and the finding, for a runbook to branch on.
    type: bool
    default: true
  connection_usage_percent:
    description:
      - Client connections at or above this percentage of C(max_connections) give
        C(PG_CONNECTIONS_NEAR_LIMIT) (high). At 95% or with no free slot left for ordinary roles,
        C(PG_CONNECTIONS_EXHAUSTED) (critical).
    type: float
    default: 80
  long_query_seconds:
    description:
      - Active queries running at least this long give C(PG_LONG_RUNNING_QUERY) (medium; high when
        one runs 5 times as long).
    type: float
    default: 60
  idle_in_transaction_seconds:
    description: Sessions idle inside an open transaction at least this long give C(PG_IDLE_IN_TRANSACTION) (medium).
    type: float
    default: 60
  lock_wait_seconds:
    description:
      - A blocking chain gives C(PG_BLOCKING_LOCKS) (high) when one of the sessions it blocks has
        waited at least this long. Shorter waits are ordinary contention; they are still listed
        in C(locks).
    type: float
    default: 5
  cache_hit_ratio:
    description:
      - Below this share of blocks read from shared buffers, C(PG_LOW_CACHE_HIT_RATIO) (medium).
      - Judged only once the server has read at least 10000 blocks since its statistics were reset.
    type: float
    default: 0.95
  dead_tuple_ratio:
    description:
      - Tables of O(login_db) with at least 1000 dead rows and this share of dead rows give
        C(PG_DEAD_TUPLES) (low; medium at twice the ratio or a million dead rows).
    type: float
    default: 0.2
  slow_statement_ms:
    description:
      - Statements in C(pg_stat_statements) with a mean execution time at least this long give
        C(PG_SLOW_STATEMENTS) (medium).
      - When the extension is not installed in O(login_db), C(PG_STAT_STATEMENTS_MISSING) (low).
    type: float
    default: 500
  disk_free_percent:
    description:
      - Below this share of free space on the data directory's file system, C(PG_DISK_LOW)
        (high; critical below half of it).
      - Only judged when the data directory is visible from the host running the module (the
        server is local and the path can be examined).
    type: float
    default: 10
  replication_lag_seconds:
    description:
      - A replica whose replay lag reaches this gives C(PG_REPLICATION_LAG) (medium; high at 5
        times it). A replica that is not streaming gives it too.
    type: float
    default: 60
  memory_mb:
    description:
      - Memory available to PostgreSQL in MiB (for instance the pod's memory limit), the basis of
        the settings recommendations (C(PG_SETTING_NOT_RECOMMENDED)).
      - Default is the total memory of this host when the server is local; otherwise the
        settings are reported without recommendations.
    type: int
  login_db:
    description:
      - Database to connect to, the one whose tables (dead tuples, sizes) and C(pg_stat_statements) are
        examined. Default from E(PGDATABASE), else C(postgres).
extends_documentation_fragment:
  - saasodoo_pg
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode returns the same result.
notes:
  - Query texts are read whole, redacted (C(PASSWORD '...') literals, credentials in URLs and C(key=value) pairs,
    the login password) and only then cut to 200 characters, so a secret at the cut leaves nothing behind.
  - The module's own session counts in C(connections) but is excluded from the other checks.
seealso:
  - name: Troubleshooting guide, Database Issues
    description: PostgreSQL connection failures and database performance problems.
    link: https://wiki.postgresql.org/wiki/Performance_Optimization
"""

EXAMPLES = r"""
- name: AUDIT | Diagnose the platform database
  saasodoo_pg_health:
    login_host: "{{ saasodoo_db_host }}"
    login_port: "{{ saasodoo_db_port }}"
    login_user: "{{ saasodoo_db_user }}"
    login_password: "{{ saasodoo_db_password }}"
    login_db: "{{ saasodoo_db_name }}"
  register: __db_health

- name: AUDIT | Only connections and locks, stricter thresholds, do not fail when down
  saasodoo_pg_health:
    login_host: "{{ saasodoo_db_host }}"
    login_port: "{{ saasodoo_db_port }}"
    login_user: "{{ saasodoo_db_user }}"
    login_password: "{{ saasodoo_db_password }}"
    login_db: "{{ saasodoo_db_name }}"
    checks: [connections, locks, long_queries]
    connection_usage_percent: 70
    long_query_seconds: 30
    fail_on_unreachable: false
  register: __db_health

- name: PATCH | Restart PostgreSQL when it is down
  ansible.builtin.include_role:
    name: restart_service
  when: not __db_health.reachable

- name: AUDIT | Judge settings against the pod's memory limit (4 GiB)
  saasodoo_pg_health:
    login_db: saasodoo
    checks: [settings]
    memory_mb: 4096
  environment:
    PGHOST: "{{ saasodoo_db_host }}"
    PGPORT: "{{ saasodoo_db_port }}"
    PGUSER: "{{ saasodoo_db_user }}"
    PGPASSWORD: "{{ saasodoo_db_password }}"
"""

RETURN = r"""
reachable:
  description:
    - Whether a PostgreSQL server answered at the address. False when it is stopped, refused the
      connection, timed out or is unreachable; true when it answered but refused the session
      (starting up, out of connection slots, login rejected) - restarting it would not help then.
  returned: always
  type: bool
connected:
  description: Whether the module opened a session and ran the checks.
  returned: always
  type: bool
connect_seconds:
  description: Seconds it took to connect (or to fail).
  returned: always
  type: float
  sample: 0.021
checks:
  description: The checks that ran.
  returned: always
  type: list
  elements: str
server:
  description: The server; null when not connected.
  returned: always
  type: dict
  sample:
    version: "15.18"
    version_num: 150018
    uptime_seconds: 3600.5
    started_at: "2026-01-01T10:00:00+00:00"
    max_connections: 50
    superuser_reserved_connections: 3
    reserved_connections: 0
    data_directory: /var/lib/postgresql/data
    in_recovery: false
    database: saasodoo
    user: saasodoo
connections:
  description:
    - Client connections by state, database and user, against C(max_connections).
    - C(free) is what is left for roles that are not superusers (reserved slots excluded).
  returned: when the connections check ran
  type: dict
  sample:
    by_state: {active: 2, idle: 30, "idle in transaction": 1}
    by_database: {saasodoo: 33}
    by_user: {saasodoo: 33}
    total: 33
    max: 50
    reserved: 3
    free: 14
    usage_percent: 66.0
locks:
  description:
    - Blocking chains, one per session at the root (blocking others, itself not blocked). A lock
      cycle (deadlock, until PostgreSQL breaks it) is listed with C(deadlock=true).
    - C(blocker) has pid, user, database, application, client_addr, backend_type, state, query,
      query_seconds, transaction_seconds, idle_seconds, visible. Each of C(blocked) has pid, user,
      database, application, backend_type, depth (1 = waits for the blocker directly),
      blocked_by, waiting_seconds, wait_event, query.
  returned: when the locks check ran
  type: list
  elements: dict
  sample:
    - blocker: {pid: 4242, user: odoo, state: idle in transaction, query: "UPDATE res_partner ...",
                transaction_seconds: 310.2}
      blocked: [{pid: 4250, depth: 1, blocked_by: [4242], waiting_seconds: 300.1, query: "UPDATE res_partner ..."}]
      blocked_count: 1
      max_wait_seconds: 300.1
      deadlock: false
long_queries:
  description: Active queries running at least O(long_query_seconds), longest first.
  returned: when the long_queries check ran
  type: list
  elements: dict
  sample:
    - {pid: 4300, user: odoo, database: acme, application: odoo, client_addr: 10.0.0.7, seconds: 95.2,
       wait_event_type: null, wait_event: null, query: "SELECT ..."}
idle_in_transaction:
  description: Sessions idle inside an open transaction at least O(idle_in_transaction_seconds), longest first.
  returned: when the idle_in_transaction check ran
  type: list
  elements: dict
slow_statements:
  description:
    - Statements of C(pg_stat_statements) with a mean time of at least O(slow_statement_ms),
      slowest first (at most 20).
  returned: when the slow_statements check ran
  type: list
  elements: dict
  sample:
    - {queryid: "-123", user: odoo, database: acme, calls: 12, mean_ms: 812.5, max_ms: 2010.0, total_ms: 9750.0,
       row_count: 12, query: "SELECT ... WHERE partner_id = $1"}
pg_stat_statements:
  description: Whether C(pg_stat_statements) is usable in O(login_db), its version, and why not.
  returned: when the slow_statements check ran
  type: dict
  sample: {installed: true, version: "1.10", schema: public, reason: null}
cache_hit_ratio:
  description: Share of block reads served from shared buffers, over all databases; null without reads.
  returned: always
  type: float
  sample: 0.9987
cache:
  description: Blocks hit and read, per database and in total, behind C(cache_hit_ratio).
  returned: when the cache_hit_ratio check ran
  type: dict
dead_tuples:
  description: Tables of O(login_db) with the most dead rows (at most 20), with their dead-row ratio.
  returned: when the dead_tuples check ran
  type: list
  elements: dict
  sample:
    - {schema: public, table: audit_log, live: 100000, dead: 40000, ratio: 0.2857, last_autovacuum: null}
sizes:
  description: Database sizes, and the largest tables of O(login_db) (size null when the table is locked exclusively).
  returned: when the sizes check ran
  type: dict
  sample:
    databases: [{database: saasodoo, bytes: 8000000, pretty: 7.6 MiB}]
    tables: [{schema: public, table: tenants, total_bytes: 65536, pretty: 64.0 KiB, estimated_rows: 3, locked: false}]
disk:
  description:
    - Free space of the file system holding the data directory, when visible from this host;
      otherwise C(visible=false) and the C(reason).
  returned: when the disk check ran
  type: dict
  sample: {visible: true, path: /var/lib/postgresql/data, total_bytes: 100000000000, free_bytes: 40000000000,
           free_percent: 40.0, reason: null}
replication:
  description:
    - The server's role, its replicas from C(pg_stat_replication) (lags in seconds and bytes),
      and a standby's replay delay.
  returned: when the replication check ran
  type: dict
  sample:
    role: primary
    replicas: [{application_name: replica-1, client_addr: 10.0.0.9, state: streaming, sync_state: async,
                replay_lag_seconds: 0.4, replay_lag_bytes: 1024}]
    standby_replay_delay_seconds: null
settings:
  description:
    - The memory the recommendations are based on and, per setting (shared_buffers,
      effective_cache_size, work_mem, max_connections), its current and recommended values.
  returned: when the settings check ran
  type: dict
  sample:
    memory_mb: 4096
    memory_source: memory_mb option
    values:
      shared_buffers: {current: 128MB, current_bytes: 134217728, recommended: 1024MB, recommended_bytes: 1073741824,
                       ok: false, why: "below 15% of memory"}
findings:
  description: What is wrong, most severe first. Each has code, severity, message, evidence, remediation.
  returned: always
  type: list
  elements: dict
  sample:
    - code: PG_BLOCKING_LOCKS
      severity: high
      message: "Session 4242 (odoo on acme, idle in transaction for 5.2 min) blocks 3 other session(s) ..."
      evidence: {blocker_pid: 4242, blocked_pids: [4250, 4251, 4260], max_wait_seconds: 300.1}
      remediation: "... terminate the blocking session after review: SELECT pg_terminate_backend(4242) ..."
severity:
  description: The worst severity among the findings (critical, high, medium, low), or none.
  returned: always
  type: str
healthy:
  description: True when no finding is medium or worse (low findings are worth knowing, nothing to do now).
  returned: always
  type: bool
duration_seconds:
  description: Seconds the whole diagnosis took.
  returned: when connected
  type: float
check_errors:
  description: Checks that could not run, with the error.
  returned: always
  type: list
  elements: dict
  sample: [{check: sizes, error: "canceling statement due to lock timeout"}]
"""

import os
import re
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saasodoo_findings import (
    DiagnosisError,
    finding,
    sort_findings,
    worst_severity,
)
from ansible.module_utils.saasodoo_pg import (
    POSTGRES_COMMON_ARGS,
    PSYCOPG_ERRORS,
    PgConnectError,
    close,
    connect,
    endpoint,
    ensure_driver,
    error_text,
    is_closed,
    query,
    query_one,
    query_value,
)
from ansible.module_utils.saasodoo_redact import shorten

CHECKS = ["connections", "long_queries", "idle_in_transaction", "locks", "slow_statements", "cache_hit_ratio",
          "dead_tuples", "sizes", "disk", "replication", "settings"]
ACTIVITY_CHECKS = ("connections", "long_queries", "idle_in_transaction", "locks")
IDLE_IN_TRANSACTION_STATES = ("idle in transaction", "idle in transaction (aborted)")
CLIENT_BACKEND = "client backend"

QUERY_CHARS = 200          # query texts are cut to this many characters, after they are redacted whole
LIST_LIMIT = 20            # rows kept in returned lists
EVIDENCE_LIMIT = 10        # rows kept in a finding's evidence
EXHAUSTED_PERCENT = 95.0   # connection usage that is critical whatever the threshold
MIN_CACHE_BLOCKS = 10000   # below this many block reads a hit ratio means nothing
MIN_DEAD_TUPLES = 1000     # fewer dead rows than this are never worth a finding
MANY_DEAD_TUPLES = 1000000
STATEMENT_TIMEOUT_MS = 15000
LOCK_TIMEOUT_MS = 2000
MIB = 1024 * 1024
GIB = 1024 * MIB
CONNECTION_MEMORY_BYTES = 16 * MIB   # what one backend costs, roughly, when sizing max_connections

APPLICATION_NAME = "saasodoo_pg_health"

REMEDIATION_PERFORMANCE = "db_performance.yml (PgBouncer / tuned settings)"
REMEDIATION_RESTART = ("Check the PostgreSQL pod (StatefulSet), its events and logs, and its volume's free space; "
                       "restart it with the restart_service role (platform_down.yml diagnoses the whole platform). "
                       "Guide: Database Issues > PostgreSQL Connection Failures")

# --------------------------------------------------------------------------------------------
# Formatting


def fmt_seconds(seconds):
    """'45 s', '5.2 min', '3.1 h', '2.0 d' for a duration in seconds."""
    if seconds is None:
        return "unknown time"
    seconds = float(seconds)
    if seconds < 120:
        return "%d s" % round(seconds)
    if seconds < 7200:
        return "%.1f min" % (seconds / 60)
    if seconds < 172800:
        return "%.1f h" % (seconds / 3600)
    return "%.1f d" % (seconds / 86400)


def fmt_bytes(n):
    """'512 B', '7.6 MiB', '3.1 GiB'."""
    if n is None:
        return "unknown"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024
    return "%d B" % n  # pragma: no cover


def fmt_setting_bytes(n):
    """A byte count as PostgreSQL would write it in postgresql.conf ('4MB', '6GB', '512kB')."""
    n = int(n)
    if n >= GIB and n % GIB == 0:
        return "%dGB" % (n // GIB)
    if n >= MIB:
        return "%dMB" % (n // MIB)
    return "%dkB" % max(1, n // 1024)


def round_setting_bytes(n):
    """A recommendation rounded the way a person would write it: whole GB from 4GB, 128MB steps from 512MB."""
    n = int(n)
    if n >= 4 * GIB:
        return int(round(float(n) / GIB)) * GIB
    if n >= 512 * MIB:
        return int(round(float(n) / (128 * MIB))) * 128 * MIB
    return max(MIB, n // MIB * MIB)


def redact_query(text, secrets=()):
    """A query text redacted whole (PASSWORD literals, credentials, the known `secrets`), then cut to QUERY_CHARS."""
    if not text:
        return text
    return shorten(text, QUERY_CHARS, secrets)


def _secrets(params):
    """The known secret values a query text may hold: the login password."""
    return [params["login_password"]] if params.get("login_password") else []


def _one_line(text, limit=80):
    text = re.sub(r"\s+", " ", text or "").strip()
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Analysis: plain data in, (facts, findings) out. No database, no Ansible.


def is_client(row):
    return (row.get("backend_type") or CLIENT_BACKEND) == CLIENT_BACKEND


def analyse_connections(activity, max_connections, reserved, threshold_percent):
    """Client connections against max_connections -> (summary, findings)."""
    clients = [r for r in activity if is_client(r)]
    by_state, by_database, by_user = {}, {}, {}
    for r in clients:
        for counter, key in ((by_state, r.get("state") or "unknown"), (by_database, r.get("database") or "-"),
                             (by_user, r.get("user") or "-")):
            counter[key] = counter.get(key, 0) + 1
    total = len(clients)
    usage = round(100.0 * total / max_connections, 1) if max_connections else None
    free = max_connections - (reserved or 0) - total if max_connections else None
    summary = {"by_state": by_state, "by_database": by_database, "by_user": by_user, "total": total,
               "max": max_connections, "reserved": reserved, "free": free, "usage_percent": usage}
    findings = []
    if usage is None:
        return summary, findings

    def top(counter):
        return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:5])

    evidence = {"total": total, "max_connections": max_connections, "reserved": reserved, "free": free,
                "usage_percent": usage, "threshold_percent": threshold_percent, "by_state": by_state,
                "top_databases": top(by_database), "top_users": top(by_user)}
    holders = ", ".join("%s: %d" % kv for kv in top(by_database).items())
    idle = by_state.get("idle", 0)
    remediation = ("Find who holds the connections (top databases/users in the evidence; %d are idle). Put PgBouncer "
                   "in front of PostgreSQL and cap the applications' pool sizes: %s. Raising max_connections costs "
                   "memory per connection and needs a restart." % (idle, REMEDIATION_PERFORMANCE))
    if usage >= EXHAUSTED_PERCENT or (free is not None and free <= 0):
        findings.append(finding(
            "PG_CONNECTIONS_EXHAUSTED", "critical",
            "PostgreSQL is out of connection slots: %d of max_connections %d in use (%.0f%%), %d left for "
            "applications. New sessions of every tenant are refused with 'too many clients'. By database: %s."
            % (total, max_connections, usage, max(free, 0), holders),
            evidence,
            "Free slots now: terminate idle sessions of the biggest holder after review "
            "(SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle' AND datname = '...'). "
            + remediation))
    elif usage >= threshold_percent:
        findings.append(finding(
            "PG_CONNECTIONS_NEAR_LIMIT", "high",
            "PostgreSQL connections are at %.0f%% of max_connections (%d of %d, %d left for applications; "
            "threshold %.0f%%). When they run out, tenants get 'too many clients' errors. By database: %s."
            % (usage, total, max_connections, free, threshold_percent, holders),
            evidence, remediation))
    return summary, findings


def _session(row):
    return {"pid": row.get("pid"), "user": row.get("user"), "database": row.get("database"),
            "application": row.get("application"), "client_addr": row.get("client_addr")}


def analyse_long_queries(activity, threshold_seconds):
    """Active client queries running at least threshold_seconds -> (list, findings)."""
    rows = [r for r in activity if is_client(r) and not r.get("is_self") and r.get("state") == "active"
            and r.get("query_seconds") is not None and r["query_seconds"] >= threshold_seconds]
    rows.sort(key=lambda r: -r["query_seconds"])
    queries = []
    for r in rows[:LIST_LIMIT]:
        item = _session(r)
        item.update({"seconds": round(r["query_seconds"], 1), "wait_event_type": r.get("wait_event_type"),
                     "wait_event": r.get("wait_event"), "query": r.get("query")})
        queries.append(item)
    findings = []
    if rows:
        longest = rows[0]
        severity = "high" if longest["query_seconds"] >= 5 * threshold_seconds else "medium"
        findings.append(finding(
            "PG_LONG_RUNNING_QUERY", severity,
            "%d quer%s running for more than %s; the longest, pid %s (%s on %s), for %s: %s"
            % (len(rows), "y has been" if len(rows) == 1 else "ies have been", fmt_seconds(threshold_seconds),
               longest.get("pid"), longest.get("user"), longest.get("database"),
               fmt_seconds(longest["query_seconds"]), _one_line(longest.get("query"))),
            {"count": len(rows), "threshold_seconds": threshold_seconds,
             "longest_seconds": round(longest["query_seconds"], 1),
             "pids": [r.get("pid") for r in rows], "queries": queries[:EVIDENCE_LIMIT]},
            "Read the query in the evidence and ask its owner. Cancel it after review with "
            "SELECT pg_cancel_backend(%s) (the session stays); look for a missing index with EXPLAIN; cap runaway "
            "queries with statement_timeout per role: %s." % (longest.get("pid"), REMEDIATION_PERFORMANCE)))
    return queries, findings


def analyse_idle_in_transaction(activity, threshold_seconds):
    """Sessions idle inside an open transaction at least threshold_seconds -> (list, findings)."""
    rows = [r for r in activity if is_client(r) and not r.get("is_self")
            and r.get("state") in IDLE_IN_TRANSACTION_STATES
            and r.get("state_seconds") is not None and r["state_seconds"] >= threshold_seconds]
    rows.sort(key=lambda r: -r["state_seconds"])
    sessions = []
    for r in rows[:LIST_LIMIT]:
        item = _session(r)
        item.update({"state": r.get("state"), "idle_seconds": round(r["state_seconds"], 1),
                     "transaction_seconds": round(r["xact_seconds"], 1) if r.get("xact_seconds") is not None else None,
                     "last_query": r.get("query")})
        sessions.append(item)
    findings = []
    if rows:
        worst = rows[0]
        findings.append(finding(
            "PG_IDLE_IN_TRANSACTION", "medium",
            "%d session(s) sit idle inside an open transaction for more than %s; the oldest, pid %s (%s on %s, "
            "application %s), for %s. They hold their locks and keep vacuum from cleaning up."
            % (len(rows), fmt_seconds(threshold_seconds), worst.get("pid"), worst.get("user"), worst.get("database"),
               worst.get("application") or "-", fmt_seconds(worst["state_seconds"])),
            {"count": len(rows), "threshold_seconds": threshold_seconds, "pids": [r.get("pid") for r in rows],
             "sessions": sessions[:EVIDENCE_LIMIT]},
            "Fix the application that opens a transaction and does not finish it (its last query is in the evidence). "
            "Terminate the session after review: SELECT pg_terminate_backend(%s) (its transaction is rolled back). "
            "Set idle_in_transaction_session_timeout: %s." % (worst.get("pid"), REMEDIATION_PERFORMANCE)))
    return sessions, findings


def _blocker_entry(pid, row):
    if row is None:
        return {"pid": pid, "visible": False,
                "note": "a prepared transaction (pid 0)" if pid == 0 else "not visible in pg_stat_activity"}
    entry = _session(row)
    entry.update({
        "visible": True, "backend_type": row.get("backend_type"), "state": row.get("state"), "query": row.get("query"),
        "query_seconds": _round(row.get("query_seconds")), "transaction_seconds": _round(row.get("xact_seconds")),
        "idle_seconds": _round(row.get("state_seconds")) if row.get("state") in IDLE_IN_TRANSACTION_STATES else None,
    })
    return entry


def _round(value, digits=1):
    return None if value is None else round(value, digits)


def _waiting_seconds(row):
    value = row.get("lock_wait_seconds")
    if value is None:
        value = row.get("query_seconds")
    return _round(value)


def build_blocking_chains(activity):
    """Who blocks whom, from pg_blocking_pids(): one chain per root blocker.

    ``activity``: rows with pid and blocked_by (list of pids). A root blocker blocks others and is
    not blocked itself. Sessions caught in a cycle (a deadlock PostgreSQL has not broken yet) get
    a chain rooted at the lowest pid, with deadlock=true. Returns chains sorted by how many
    sessions they block, then how long the longest waited.
    """
    by_pid = dict((r.get("pid"), r) for r in activity)
    blocked = {}
    for r in activity:
        blockers = sorted(set(p for p in (r.get("blocked_by") or []) if p is not None))
        if blockers:
            blocked[r.get("pid")] = blockers
    if not blocked:
        return []
    blocks = {}
    for pid, blockers in blocked.items():
        for b in blockers:
            blocks.setdefault(b, []).append(pid)

    def chain(root, deadlock):
        seen = set([root])
        queue = [(root, 0)]
        members = []
        while queue:
            pid, depth = queue.pop(0)
            for child in sorted(blocks.get(pid, [])):
                if child in seen:
                    continue
                seen.add(child)
                row = by_pid.get(child) or {"pid": child}
                members.append({
                    "pid": child, "user": row.get("user"), "database": row.get("database"),
                    "application": row.get("application"), "backend_type": row.get("backend_type"),
                    "depth": depth + 1, "blocked_by": blocked.get(child, []),
                    "waiting_seconds": _waiting_seconds(row),
                    "wait_event": row.get("wait_event"), "query": row.get("query"),
                })
                queue.append((child, depth + 1))
        waits = [m["waiting_seconds"] for m in members if m["waiting_seconds"] is not None]
        return seen, {"blocker": _blocker_entry(root, by_pid.get(root)), "blocked": members,
                      "blocked_count": len(members), "max_wait_seconds": max(waits) if waits else None,
                      "deadlock": deadlock}

    chains = []
    covered = set()
    for root in sorted(b for b in blocks if b not in blocked):
        seen, c = chain(root, False)
        covered |= seen
        chains.append(c)
    rest = sorted(p for p in blocked if p not in covered)
    while rest:
        seen, c = chain(rest[0], True)
        covered |= seen
        chains.append(c)
        rest = [p for p in rest if p not in covered]
    chains.sort(key=lambda c: (-c["blocked_count"], -(c["max_wait_seconds"] or 0), c["blocker"]["pid"]))
    return chains


def _blocker_doing(b):
    if not b.get("visible"):
        return b.get("note")
    state = b.get("state")
    if state in IDLE_IN_TRANSACTION_STATES:
        return "%s for %s, transaction open for %s" % (state, fmt_seconds(b.get("idle_seconds")),
                                                      fmt_seconds(b.get("transaction_seconds")))
    if state == "active":
        return "running its current query for %s" % fmt_seconds(b.get("query_seconds"))
    return "%s, transaction open for %s" % (state or b.get("backend_type") or "unknown state",
                                            fmt_seconds(b.get("transaction_seconds")))


def analyse_locks(activity, lock_wait_seconds):
    """Blocking chains -> (chains, findings): one PG_BLOCKING_LOCKS per chain waiting long enough."""
    chains = build_blocking_chains(activity)
    findings = []
    for c in chains:
        if (c["max_wait_seconds"] or 0) < lock_wait_seconds:
            continue
        b = c["blocker"]
        pid = b["pid"]
        blocked_pids = [m["pid"] for m in c["blocked"]]
        evidence = {
            "blocker_pid": pid, "blocker_user": b.get("user"), "blocker_database": b.get("database"),
            "blocker_application": b.get("application"), "blocker_client_addr": b.get("client_addr"),
            "blocker_state": b.get("state"), "blocker_query": b.get("query"),
            "blocker_transaction_seconds": b.get("transaction_seconds"),
            "blocked_pids": blocked_pids, "blocked_count": c["blocked_count"],
            "max_wait_seconds": c["max_wait_seconds"], "deadlock": c["deadlock"],
            "blocked": c["blocked"][:EVIDENCE_LIMIT],
        }
        if c["deadlock"]:
            message = ("Sessions %s wait for each other in a lock cycle (a deadlock); the longest has waited %s. "
                       "PostgreSQL cancels one after deadlock_timeout."
                       % (", ".join(str(p) for p in [pid] + blocked_pids), fmt_seconds(c["max_wait_seconds"])))
            remediation = ("Usually resolves itself within deadlock_timeout; if it persists, terminate one session "
                           "after review: SELECT pg_terminate_backend(%s). Fix the application's lock order." % pid)
        else:
            message = ("Session %s (%s on %s, %s) blocks %d other session(s); the longest has waited %s. "
                       "Blocker's last query: %s"
                       % (pid, b.get("user") or "?", b.get("database") or "?", _blocker_doing(b),
                          c["blocked_count"], fmt_seconds(c["max_wait_seconds"]), _one_line(b.get("query"))))
            remediation = ("Find out what session %s (application %s) is doing; if it is stuck or abandoned, "
                           "terminate the blocking session after review: SELECT pg_terminate_backend(%s) (its "
                           "transaction is rolled back, the blocked sessions continue). Then fix the application "
                           "that holds locks in long transactions; idle_in_transaction_session_timeout and "
                           "lock_timeout: %s." % (pid, b.get("application") or "-", pid, REMEDIATION_PERFORMANCE))
        findings.append(finding("PG_BLOCKING_LOCKS", "high", message, evidence, remediation))
    return chains, findings


def analyse_slow_statements(info, statements, threshold_ms, database=None):
    """pg_stat_statements rows -> (slow statements, findings).

    ``info``: {'installed': bool, 'reason': str or None, ...}.
    """
    if not info.get("installed"):
        return [], [finding(
            "PG_STAT_STATEMENTS_MISSING", "low",
            "pg_stat_statements is not usable in database %s (%s): slow statements cannot be listed."
            % (database or "?", info.get("reason") or "not installed"),
            dict(info, database=database),
            "Add pg_stat_statements to shared_preload_libraries (restart) and run CREATE EXTENSION "
            "pg_stat_statements in the database: %s." % REMEDIATION_PERFORMANCE)]
    slow = [s for s in statements if s.get("mean_ms") is not None and s["mean_ms"] >= threshold_ms]
    slow.sort(key=lambda s: -s["mean_ms"])
    slow = slow[:LIST_LIMIT]
    for s in slow:
        for key in ("mean_ms", "max_ms", "total_ms"):
            s[key] = _round(s.get(key), 1)
    findings = []
    if slow:
        worst = slow[0]
        findings.append(finding(
            "PG_SLOW_STATEMENTS", "medium",
            "%d statement(s) take %s ms or more on average; the slowest takes %.0f ms over %s call(s) (%s on %s): %s"
            % (len(slow), "%g" % threshold_ms, worst["mean_ms"], worst.get("calls"), worst.get("user"),
               worst.get("database"), _one_line(worst.get("query"))),
            {"count": len(slow), "threshold_ms": threshold_ms, "statements": slow[:EVIDENCE_LIMIT]},
            "EXPLAIN (ANALYZE, BUFFERS) the statements in the evidence and add the missing indexes; tune memory "
            "settings: %s. Reset the statistics after a fix: SELECT pg_stat_statements_reset()."
            % REMEDIATION_PERFORMANCE))
    return slow, findings


def analyse_cache(databases, threshold):
    """pg_stat_database hit/read counts -> (ratio or None, details, findings)."""
    hit = sum(float(d.get("blks_hit") or 0) for d in databases)
    read = sum(float(d.get("blks_read") or 0) for d in databases)
    ratio = round(hit / (hit + read), 4) if hit + read > 0 else None
    per_db = []
    for d in databases:
        h, r = float(d.get("blks_hit") or 0), float(d.get("blks_read") or 0)
        per_db.append({"database": d.get("database"), "blks_hit": int(h), "blks_read": int(r),
                       "ratio": round(h / (h + r), 4) if h + r > 0 else None})
    per_db.sort(key=lambda d: (d["ratio"] if d["ratio"] is not None else 2, d["database"] or ""))
    details = {"blks_hit": int(hit), "blks_read": int(read), "judged": hit + read >= MIN_CACHE_BLOCKS,
               "databases": per_db}
    findings = []
    if ratio is not None and hit + read >= MIN_CACHE_BLOCKS and ratio < threshold:
        worst = [d for d in per_db if d["ratio"] is not None and d["blks_hit"] + d["blks_read"] >= MIN_CACHE_BLOCKS]
        findings.append(finding(
            "PG_LOW_CACHE_HIT_RATIO", "medium",
            "Only %.1f%% of block reads come from shared_buffers (threshold %.1f%%): the working set does not fit "
            "in memory and queries wait on the disk." % (100 * ratio, 100 * threshold),
            {"cache_hit_ratio": ratio, "threshold": threshold, "blks_hit": int(hit), "blks_read": int(read),
             "worst_databases": worst[:5]},
            "Give PostgreSQL more memory (shared_buffers, effective_cache_size; scale the pod's memory) and look for "
            "sequential scans of big tables (missing indexes): %s." % REMEDIATION_PERFORMANCE))
    return ratio, details, findings


def analyse_dead_tuples(tables, ratio_threshold):
    """pg_stat_user_tables rows -> (tables with their ratio, findings: one per table above the ratio)."""
    out = []
    for t in tables:
        live, dead = int(t.get("live") or 0), int(t.get("dead") or 0)
        item = dict(t)
        item.update({"live": live, "dead": dead, "ratio": round(dead / float(live + dead), 4) if live + dead else 0.0})
        out.append(item)
    out.sort(key=lambda t: (-t["dead"], t.get("schema") or "", t.get("table") or ""))
    bad = [t for t in out if t["dead"] >= MIN_DEAD_TUPLES and t["ratio"] >= ratio_threshold]
    bad.sort(key=lambda t: (-t["ratio"], -t["dead"]))
    findings = []
    for t in bad[:EVIDENCE_LIMIT]:
        name = "%s.%s" % (t.get("schema"), t.get("table"))
        severity = "medium" if t["ratio"] >= min(1.0, 2 * ratio_threshold) or t["dead"] >= MANY_DEAD_TUPLES else "low"
        findings.append(finding(
            "PG_DEAD_TUPLES", severity,
            "Table %s is %.0f%% dead rows (%d dead, %d live; threshold %.0f%%): autovacuum is not keeping up, the "
            "table bloats and its scans slow down. Last autovacuum: %s."
            % (name, 100 * t["ratio"], t["dead"], t["live"], 100 * ratio_threshold,
               t.get("last_autovacuum") or "never"),
            dict(t, table=name, threshold=ratio_threshold),
            "VACUUM (ANALYZE) %s in a quiet hour; end long transactions that hold vacuum back (idle in transaction); "
            "make autovacuum more aggressive for this table: %s." % (name, REMEDIATION_PERFORMANCE)))
    return out[:LIST_LIMIT], findings


def analyse_disk(disk, threshold_percent):
    """Free space of the data directory's file system -> findings (none when not visible)."""
    if not disk or not disk.get("visible") or disk.get("free_percent") is None:
        return []
    free = disk["free_percent"]
    if free >= threshold_percent:
        return []
    severity = "critical" if free < threshold_percent / 2.0 else "high"
    return [finding(
        "PG_DISK_LOW", severity,
        "Only %.1f%% (%s of %s) is free on the file system of the data directory %s (threshold %.0f%%). When it "
        "is full PostgreSQL stops (it cannot write WAL) and every tenant is down."
        % (free, fmt_bytes(disk.get("free_bytes")), fmt_bytes(disk.get("total_bytes")), disk.get("path"),
           threshold_percent),
        dict(disk, threshold_percent=threshold_percent),
        "Grow the volume (PVC) now; find what grows: WAL kept by an inactive replication slot or a failing "
        "archive_command, table bloat (VACUUM), old logs. Never delete files under pg_wal by hand. Guide: Database "
        "Issues > Check Storage Issues.")]


def analyse_replication(replicas, lag_threshold_seconds):
    """pg_stat_replication rows -> findings: a replica lagging or not streaming."""
    findings = []
    for r in replicas:
        name = r.get("application_name") or r.get("client_addr") or "?"
        lag = r.get("replay_lag_seconds")
        state = r.get("state")
        problems = []
        severity = None
        if state != "streaming":
            problems.append("is %s, not streaming" % (state or "in an unknown state"))
            severity = "medium"
        if lag is not None and lag >= lag_threshold_seconds:
            problems.append("replays %s behind the primary" % fmt_seconds(lag))
            severity = "high" if lag >= 5 * lag_threshold_seconds else "medium"
        if not problems:
            continue
        findings.append(finding(
            "PG_REPLICATION_LAG", severity,
            "Replica %s (%s) %s%s: reads from it are stale and a failover would lose recent writes."
            % (name, r.get("client_addr") or "-", " and ".join(problems),
               "" if r.get("replay_lag_bytes") is None else " (%s of WAL behind)" % fmt_bytes(r["replay_lag_bytes"])),
            dict(r, threshold_seconds=lag_threshold_seconds),
            "Check the replica's pod, disk and network, and long queries on it that delay replay; if it cannot catch "
            "up, rebuild it from a fresh base backup."))
    return findings


def recommend_settings(current, memory_bytes, max_connections):
    """Memory settings against the memory available -> (values, findings).

    ``current``: {name: {'current': text, 'bytes': int}} for shared_buffers, effective_cache_size
    and work_mem. ``memory_bytes``: None when unknown (values returned, nothing judged).
    Rules (common OLTP tuning, as pgtune): shared_buffers 25% of memory (flag under 15% or over
    40%), effective_cache_size 75% (flag under 50% or over 100%), work_mem about
    (memory - shared_buffers) / (4 * max_connections) within [4MB, 256MB] (flag under a quarter of
    it, or when max_connections * work_mem exceeds memory), max_connections at most one per 16 MiB.
    """
    values = {}
    findings = []

    def add(name, cur_text, cur_bytes, ok, why, rec_bytes=None, rec_text=None, restart=False):
        if rec_text is None and rec_bytes is not None:
            rec_bytes = round_setting_bytes(rec_bytes)
            rec_text = fmt_setting_bytes(rec_bytes)
        values[name] = {"current": cur_text, "current_bytes": cur_bytes, "recommended": rec_text,
                        "recommended_bytes": rec_bytes, "ok": ok, "why": why}
        if ok is False:
            findings.append(finding(
                "PG_SETTING_NOT_RECOMMENDED", "low",
                "%s is %s on a server with %s of memory: %s. Recommended: %s." % (
                    name, cur_text, fmt_bytes(memory_bytes), why, rec_text),
                {"setting": name, "current": cur_text, "current_bytes": cur_bytes, "recommended": rec_text,
                 "recommended_bytes": rec_bytes, "memory_bytes": memory_bytes, "max_connections": max_connections},
                "Set %s = %s with the tuned settings of %s%s." % (
                    name, rec_text, REMEDIATION_PERFORMANCE,
                    " (needs a PostgreSQL restart)" if restart else " (a reload is enough)")))

    def cur(name):
        item = current.get(name) or {}
        return item.get("current"), item.get("bytes")

    if not memory_bytes:
        for name in ("shared_buffers", "effective_cache_size", "work_mem"):
            text, n = cur(name)
            add(name, text, n, None, "memory unknown: pass memory_mb to judge")
        add("max_connections", str(max_connections), None, None, "memory unknown: pass memory_mb to judge")
        return values, findings

    m = int(memory_bytes)
    text, sb = cur("shared_buffers")
    if sb is not None:
        rec = int(m * 0.25)
        share = 100.0 * sb / m
        if sb < m * 0.15:
            add("shared_buffers", text, sb, False, "%.1f%% of memory (below 15%%)" % share, rec, restart=True)
        elif sb > m * 0.40:
            add("shared_buffers", text, sb, False, "%.0f%% of memory (above 40%%)" % share, rec, restart=True)
        else:
            add("shared_buffers", text, sb, True, "%.0f%% of memory" % share, rec)
    text, ecs = cur("effective_cache_size")
    if ecs is not None:
        rec = int(m * 0.75)
        share = 100.0 * ecs / m
        if ecs < m * 0.5:
            add("effective_cache_size", text, ecs, False, "%.0f%% of memory (below 50%%)" % share, rec)
        elif ecs > m:
            add("effective_cache_size", text, ecs, False, "more than the memory", rec)
        else:
            add("effective_cache_size", text, ecs, True, "%.0f%% of memory" % share, rec)
    text, wm = cur("work_mem")
    if wm is not None and max_connections:
        rec = int((m - min(sb or m * 0.25, m * 0.25)) / (4.0 * max_connections))
        rec = max(4 * MIB, min(256 * MIB, rec)) // MIB * MIB
        if wm * max_connections > m:
            add("work_mem", text, wm, False, "too high: max_connections x work_mem (%s) exceeds the memory, an "
                "out-of-memory risk" % fmt_bytes(wm * max_connections), rec)
        elif wm < rec / 4.0:
            add("work_mem", text, wm, False, "low, sorts and hashes spill to disk", rec)
        else:
            add("work_mem", text, wm, True, "fits", rec)
    if max_connections:
        limit = int(max(20, m // CONNECTION_MEMORY_BYTES))
        if max_connections > limit:
            add("max_connections", str(max_connections), None, False,
                "too high: each backend needs memory (about 16 MiB); pool with PgBouncer instead",
                rec_text="at most %d" % limit, restart=True)
        else:
            add("max_connections", str(max_connections), None, True, "fits the memory", rec_text="at most %d" % limit)
    return values, findings


def is_local_host(host):
    """Whether the server runs on this host (so its data directory can be examined here)."""
    if not host or host.startswith("/"):
        return True
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        return True
    try:
        return host in (socket.gethostname(), socket.gethostname().split(".")[0])
    except (OSError, ValueError):  # pragma: no cover
        return False


def disk_usage(path, local):
    """Free space of the file system of path, when it is visible from this host."""
    result = {"visible": False, "path": path, "total_bytes": None, "free_bytes": None, "free_percent": None,
              "reason": None}
    if not path:
        result["reason"] = "data_directory is not readable by this role (grant pg_monitor or pg_read_all_settings)"
        return result
    if not local:
        result["reason"] = "the server runs on another host: check its volume there (PVC usage)"
        return result
    try:
        if not os.path.isdir(path):
            result["reason"] = "%s does not exist on this host (the server runs in a container?)" % path
            return result
        st = os.statvfs(path)
    except OSError as e:
        result["reason"] = "cannot examine %s from this host: %s" % (path, e.strerror or e)
        return result
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    result.update({"visible": True, "total_bytes": total, "free_bytes": free,
                   "free_percent": round(100.0 * free / total, 1) if total else None})
    return result


def host_memory_bytes(meminfo="/proc/meminfo"):
    """Total memory of this host, from /proc/meminfo; None when unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


_UNIT_BYTES = {"B": 1, "kB": 1024, "MB": MIB, "GB": GIB, "TB": 1024 * GIB}


def setting_bytes(setting, unit):
    """Bytes of a pg_settings value ('16384' with unit '8kB' -> 134217728); None if not a size."""
    if setting is None or not unit:
        return None
    m = re.match(r"^(\d*)\s*([kMGT]?B)$", unit)
    if not m:
        return None
    try:
        return int(setting) * int(m.group(1) or 1) * _UNIT_BYTES[m.group(2)]
    except (ValueError, KeyError):
        return None


# --------------------------------------------------------------------------------------------
# Collection: constant SQL, values as parameters only.

SERVER_SQL = """
SELECT current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num,
       extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime_seconds,
       pg_postmaster_start_time() AS started_at,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS superuser_reserved_connections,
       coalesce(current_setting('reserved_connections', true), '0')::int AS reserved_connections,
       pg_is_in_recovery() AS in_recovery,
       current_database() AS database,
       current_user AS "user"
"""

SETTINGS_SQL = """
SELECT name, setting, unit, current_setting(name) AS current
FROM pg_settings WHERE name = ANY(%(names)s)
"""

_ACTIVITY_SQL = """
SELECT a.pid,
       a.pid = pg_backend_pid() AS is_self,
       a.backend_type,
       a.usename AS "user",
       a.datname AS database,
       a.application_name AS application,
       host(a.client_addr) AS client_addr,
       a.state,
       a.wait_event_type,
       a.wait_event,
       extract(epoch FROM now() - a.xact_start)::float8 AS xact_seconds,
       extract(epoch FROM now() - a.query_start)::float8 AS query_seconds,
       extract(epoch FROM now() - a.state_change)::float8 AS state_seconds,
       a.query,
       CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) ELSE '{}'::int[] END AS blocked_by,
       {lock_wait} AS lock_wait_seconds
FROM pg_stat_activity a
WHERE a.pid IS NOT NULL
"""
# pg_locks.waitstart (when a session started to wait for its lock) exists from PostgreSQL 14.
ACTIVITY_SQL_14 = _ACTIVITY_SQL.replace("{lock_wait}", """CASE WHEN a.wait_event_type = 'Lock' THEN
           (SELECT extract(epoch FROM now() - min(l.waitstart))::float8
              FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted) END""")
ACTIVITY_SQL_10 = _ACTIVITY_SQL.replace("{lock_wait}", "NULL::float8")

STAT_STATEMENTS_EXTENSION_SQL = """
SELECT e.extversion AS version, n.nspname AS schema, quote_ident(n.nspname) AS schema_ident
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""

# {schema} is replaced by the extension's schema as quoted by the server's quote_ident(), never
# by a value from the caller; the values are parameters.
_STAT_STATEMENTS_SQL = """
SELECT s.queryid::text AS queryid, r.rolname AS "user", d.datname AS database, s.calls::bigint AS calls,
       s.{mean}::float8 AS mean_ms, s.{max}::float8 AS max_ms, s.{total}::float8 AS total_ms,
       s.rows::bigint AS row_count, s.query
FROM {schema}.pg_stat_statements s
LEFT JOIN pg_roles r ON r.oid = s.userid
LEFT JOIN pg_database d ON d.oid = s.dbid
WHERE s.{mean} >= %(ms)s
ORDER BY s.{mean} DESC
LIMIT %(limit)s
"""

CACHE_SQL = """
SELECT datname AS database, blks_hit::float8 AS blks_hit, blks_read::float8 AS blks_read
FROM pg_stat_database WHERE datname IS NOT NULL
"""

DEAD_TUPLES_SQL = """
SELECT schemaname AS schema, relname AS "table", n_live_tup::bigint AS live, n_dead_tup::bigint AS dead,
       last_vacuum, last_autovacuum, autovacuum_count::bigint AS autovacuum_count
FROM pg_stat_user_tables
WHERE n_dead_tup > 0
ORDER BY n_dead_tup DESC
LIMIT 200
"""

DATABASE_SIZES_SQL = """
SELECT datname AS database, pg_database_size(oid)::bigint AS bytes
FROM pg_database
WHERE datallowconn
  AND (has_database_privilege(oid, 'CONNECT') OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER'))
ORDER BY 2 DESC
"""

# Tables with an AccessExclusiveLock granted or requested are skipped: measuring them would wait
# behind the lock.
TABLE_SIZES_SQL = """
WITH locked AS (
    SELECT DISTINCT relation FROM pg_locks
    WHERE locktype = 'relation' AND mode = 'AccessExclusiveLock'
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
)
SELECT n.nspname AS schema, c.relname AS "table", c.reltuples::bigint AS estimated_rows,
       c.oid IN (SELECT relation FROM locked) AS locked,
       CASE WHEN c.oid IN (SELECT relation FROM locked) THEN NULL
            ELSE pg_total_relation_size(c.oid) END::bigint AS total_bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp)'
ORDER BY total_bytes DESC NULLS LAST, 1, 2
LIMIT %(limit)s
"""

REPLICATION_SQL = """
SELECT application_name, host(client_addr) AS client_addr, state, sync_state,
       extract(epoch FROM write_lag)::float8 AS write_lag_seconds,
       extract(epoch FROM flush_lag)::float8 AS flush_lag_seconds,
       extract(epoch FROM replay_lag)::float8 AS replay_lag_seconds,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END,
                       replay_lsn)::bigint AS replay_lag_bytes
FROM pg_stat_replication
ORDER BY application_name
"""

STANDBY_SQL = """
SELECT CASE WHEN pg_is_in_recovery()
            THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS replay_delay_seconds
"""


def collect_server(conn):
    server = query_one(conn, SERVER_SQL)
    server["data_directory"] = query_value(conn, "SELECT setting FROM pg_settings WHERE name = %(name)s",
                                           {"name": "data_directory"})
    if server.get("uptime_seconds") is not None:
        server["uptime_seconds"] = round(server["uptime_seconds"], 1)
    return server


def collect_activity(conn, version_num, secrets=()):
    sql = ACTIVITY_SQL_14 if (version_num or 0) >= 140000 else ACTIVITY_SQL_10
    # The whole text (the server keeps at most track_activity_query_size bytes): redacted, then cut.
    rows = query(conn, sql)
    for r in rows:
        r["query"] = redact_query(r.get("query"), secrets)
        r["blocked_by"] = [p for p in (r.get("blocked_by") or [])]
    return rows


def collect_stat_statements(conn, version_num, threshold_ms, secrets=()):
    """(info, statements) from pg_stat_statements in the current database; query texts redacted, then cut."""
    ext = query_one(conn, STAT_STATEMENTS_EXTENSION_SQL)
    if not ext:
        return {"installed": False, "version": None, "schema": None,
                "reason": "CREATE EXTENSION pg_stat_statements was not run in this database"}, []
    info = {"installed": True, "version": ext["version"], "schema": ext["schema"], "reason": None}
    if (version_num or 0) >= 130000:
        columns = {"mean": "mean_exec_time", "max": "max_exec_time", "total": "total_exec_time"}
    else:
        columns = {"mean": "mean_time", "max": "max_time", "total": "total_time"}
    sql = _STAT_STATEMENTS_SQL.replace("{schema}", ext["schema_ident"])
    for key, column in columns.items():
        sql = sql.replace("{%s}" % key, column)
    try:
        rows = query(conn, sql, {"ms": float(threshold_ms), "limit": LIST_LIMIT})
    except PSYCOPG_ERRORS as e:
        if is_closed(conn):
            raise
        # Typically "pg_stat_statements must be loaded via shared_preload_libraries".
        info.update({"installed": False, "reason": error_text(e)})
        return info, []
    for r in rows:
        r["query"] = redact_query(r.get("query"), secrets)
    return info, rows


def collect_settings(conn):
    rows = query(conn, SETTINGS_SQL, {"names": ["shared_buffers", "effective_cache_size", "work_mem"]})
    return dict((r["name"], {"current": r["current"], "bytes": setting_bytes(r["setting"], r["unit"])}) for r in rows)


def collect_sizes(conn):
    databases = query(conn, DATABASE_SIZES_SQL)
    for d in databases:
        d["pretty"] = fmt_bytes(d["bytes"])
    tables = query(conn, TABLE_SIZES_SQL, {"limit": LIST_LIMIT})
    for t in tables:
        t["pretty"] = fmt_bytes(t["total_bytes"]) if t["total_bytes"] is not None else None
        if t["estimated_rows"] is not None and t["estimated_rows"] < 0:
            t["estimated_rows"] = None  # never analysed
    return {"databases": databases, "tables": tables}


def collect_replication(conn):
    replicas = query(conn, REPLICATION_SQL)
    for r in replicas:
        for key in ("write_lag_seconds", "flush_lag_seconds", "replay_lag_seconds"):
            r[key] = _round(r.get(key), 3)
    standby = query_one(conn, STANDBY_SQL) or {}
    delay = standby.get("replay_delay_seconds")
    return {"replicas": replicas, "standby_replay_delay_seconds": _round(delay, 1)}


# --------------------------------------------------------------------------------------------
# The diagnosis


def empty_result(checks):
    return {
        "changed": False, "reachable": False, "connected": False, "connect_seconds": None, "checks": checks,
        "server": None, "connections": None, "locks": None, "long_queries": None, "idle_in_transaction": None,
        "slow_statements": None, "pg_stat_statements": None, "cache_hit_ratio": None, "cache": None,
        "dead_tuples": None, "sizes": None, "disk": None, "replication": None, "settings": None,
        "findings": [], "severity": "none", "healthy": True, "check_errors": [],
    }


def finish(result):
    result["findings"] = sort_findings(result["findings"])
    result["severity"] = worst_severity(result["findings"])
    result["healthy"] = not any(f["severity"] in ("critical", "high", "medium") for f in result["findings"])
    return result


def unreachable_finding(err):
    """The finding for a connection failure (PgConnectError)."""
    evidence = {"endpoint": err.endpoint, "kind": err.kind, "driver_message": err.detail,
                "seconds_until_failure": err.seconds}
    if err.kind == "too_many_clients":
        return finding(
            "PG_CONNECTIONS_EXHAUSTED", "critical",
            "PostgreSQL at %s refuses new sessions: all connection slots are taken ('too many clients'). Every "
            "tenant's new requests fail." % err.endpoint, evidence,
            "Connect as a superuser (reserved slots) to see who holds the connections and terminate idle ones after "
            "review; then %s." % REMEDIATION_PERFORMANCE)
    if err.kind in ("auth", "missing_db", "permission"):
        return finding(
            "PG_LOGIN_REJECTED", "high", "%s" % err, evidence,
            "Check the credentials the runbook uses (the platform's PostgreSQL secret), the database name and "
            "pg_hba.conf. If the applications use the same credentials, they cannot log in either.")
    return finding("PG_UNREACHABLE", "critical", "%s" % err, evidence, REMEDIATION_RESTART)


def diagnose(params, checks):
    """Connect, run the selected checks, return the result dict (without failed/msg).

    Raises PgConnectError when no session could be opened, DiagnosisError when the session was
    lost during the checks.
    """
    result = empty_result(checks)
    conn_params = dict(params, application_name=APPLICATION_NAME)
    conn, seconds = connect(conn_params, read_only=True,
                            session_settings={"statement_timeout": STATEMENT_TIMEOUT_MS,
                                              "lock_timeout": LOCK_TIMEOUT_MS})
    result.update({"reachable": True, "connected": True, "connect_seconds": seconds})
    findings = result["findings"]
    try:
        server = collect_server(conn)
        result["server"] = server
        version_num = server.get("version_num")
        max_connections = server.get("max_connections")
        local = is_local_host(params.get("login_host"))

        def run(check, fn):
            if check not in checks:
                return
            try:
                fn()
            except PSYCOPG_ERRORS as e:
                if is_closed(conn):
                    raise DiagnosisError("Lost the connection to PostgreSQL at %s during the %s check: %s"
                                         % (endpoint(params), check,
                                            error_text(e, params.get("login_password"))))
                message = error_text(e, params.get("login_password"))
                result["check_errors"].append({"check": check, "error": message})
                findings.append(finding(
                    "PG_CHECK_FAILED", "low", "The %s check could not run: %s" % (check, message),
                    {"check": check, "error": message},
                    "Grant the diagnosis role pg_monitor; rerun the module with checks: [%s]." % check))

        activity, activity_error = [], []
        if any(c in checks for c in ACTIVITY_CHECKS):
            try:
                activity = collect_activity(conn, version_num, _secrets(params))
            except PSYCOPG_ERRORS as e:
                if is_closed(conn):
                    raise
                activity_error.append(e)

        def activity_check(check, fn):
            def wrapped():
                if activity_error:
                    raise activity_error[0]  # recorded by run() against each check that needed the snapshot
                fn()
            run(check, wrapped)

        def connections():
            reserved = (server.get("superuser_reserved_connections") or 0) + (server.get("reserved_connections") or 0)
            result["connections"], f = analyse_connections(activity, max_connections, reserved,
                                                           params["connection_usage_percent"])
            findings.extend(f)

        def long_queries():
            result["long_queries"], f = analyse_long_queries(activity, params["long_query_seconds"])
            findings.extend(f)

        def idle_in_transaction():
            result["idle_in_transaction"], f = analyse_idle_in_transaction(activity,
                                                                           params["idle_in_transaction_seconds"])
            findings.extend(f)

        def locks():
            result["locks"], f = analyse_locks(activity, params["lock_wait_seconds"])
            findings.extend(f)

        def slow_statements():
            info, rows = collect_stat_statements(conn, version_num, params["slow_statement_ms"], _secrets(params))
            result["pg_stat_statements"] = info
            result["slow_statements"], f = analyse_slow_statements(info, rows, params["slow_statement_ms"],
                                                                   server.get("database"))
            findings.extend(f)

        def cache_hit_ratio():
            ratio, details, f = analyse_cache(query(conn, CACHE_SQL), params["cache_hit_ratio"])
            result["cache_hit_ratio"], result["cache"] = ratio, details
            findings.extend(f)

        def dead_tuples():
            result["dead_tuples"], f = analyse_dead_tuples(query(conn, DEAD_TUPLES_SQL), params["dead_tuple_ratio"])
            findings.extend(f)

        def sizes():
            result["sizes"] = collect_sizes(conn)

        def disk():
            result["disk"] = disk_usage(server.get("data_directory"), local)
            findings.extend(analyse_disk(result["disk"], params["disk_free_percent"]))

        def replication():
            info = collect_replication(conn)
            info["role"] = "standby" if server.get("in_recovery") else "primary"
            result["replication"] = info
            findings.extend(analyse_replication(info["replicas"], params["replication_lag_seconds"]))

        def settings():
            if params.get("memory_mb"):
                memory, source = params["memory_mb"] * MIB, "memory_mb option"
            elif local:
                memory, source = host_memory_bytes(), "this host (/proc/meminfo)"
            else:
                memory, source = None, None
            values, f = recommend_settings(collect_settings(conn), memory, max_connections)
            result["settings"] = {"memory_mb": memory // MIB if memory else None,
                                  "memory_source": source if memory else None, "values": values}
            findings.extend(f)

        for check, fn in (("connections", connections), ("long_queries", long_queries),
                          ("idle_in_transaction", idle_in_transaction), ("locks", locks)):
            activity_check(check, fn)
        for check, fn in (("slow_statements", slow_statements), ("cache_hit_ratio", cache_hit_ratio),
                          ("dead_tuples", dead_tuples), ("sizes", sizes), ("disk", disk),
                          ("replication", replication), ("settings", settings)):
            run(check, fn)
    finally:
        close(conn)
    return finish(result)


def validate(params):
    """Thresholds out of range -> a message, else None."""
    ranges = (
        ("connection_usage_percent", 1, 100), ("long_query_seconds", 0, None), ("idle_in_transaction_seconds", 0, None),
        ("lock_wait_seconds", 0, None), ("cache_hit_ratio", 0, 1), ("dead_tuple_ratio", 0, 1),
        ("slow_statement_ms", 0, None), ("disk_free_percent", 0, 100), ("replication_lag_seconds", 0, None),
        ("memory_mb", 1, None), ("connect_timeout", 1, None),
    )
    for name, low, high in ranges:
        value = params.get(name)
        if value is None:
            continue
        if value < low or (high is not None and value > high):
            return "%s must be %s, got %s" % (
                name, "between %s and %s" % (low, high) if high is not None else "at least %s" % low, value)
    return None


def argument_spec():
    spec = dict(
        checks=dict(type="list", elements="str", choices=CHECKS, default=list(CHECKS)),
        fail_on_unreachable=dict(type="bool", default=True),
        connection_usage_percent=dict(type="float", default=80),
        long_query_seconds=dict(type="float", default=60),
        idle_in_transaction_seconds=dict(type="float", default=60),
        lock_wait_seconds=dict(type="float", default=5),
        cache_hit_ratio=dict(type="float", default=0.95),
        dead_tuple_ratio=dict(type="float", default=0.2),
        slow_statement_ms=dict(type="float", default=500),
        disk_free_percent=dict(type="float", default=10),
        replication_lag_seconds=dict(type="float", default=60),
        memory_mb=dict(type="int"),
    )
    spec.update(POSTGRES_COMMON_ARGS)
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    ensure_driver(module)
    params = module.params
    problem = validate(params)
    if problem:
        module.fail_json(msg=problem)
    checks = [c for c in CHECKS if c in (params["checks"] or [])]
    started = time.monotonic()
    # fail_json is called outside the except blocks: ansible-core would otherwise attach the
    # pending exception's traceback to the result when tracebacks are enabled.
    error, unreachable = None, None
    try:
        result = diagnose(params, checks)
    except PgConnectError as e:
        unreachable = e
    except DiagnosisError as e:
        error = "%s" % e
    except PSYCOPG_ERRORS as e:
        error = "PostgreSQL error during the diagnosis: %s" % error_text(e, params.get("login_password"))
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message, not a traceback
        error = "saasodoo_pg_health failed unexpectedly (please report it): %s: %s" % (
            type(e).__name__, error_text(e, params.get("login_password")))
    if unreachable is not None:
        result = empty_result(checks)
        result.update({"reachable": unreachable.reachable, "connect_seconds": unreachable.seconds,
                       "findings": [unreachable_finding(unreachable)]})
        finish(result)
        if unreachable.kind in ("auth", "missing_db", "permission") or params["fail_on_unreachable"]:
            module.fail_json(msg="%s" % unreachable, **result)
        module.exit_json(msg="%s" % unreachable, **result)
    if error is not None:
        module.fail_json(msg=error)
    result["duration_seconds"] = round(time.monotonic() - started, 3)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
