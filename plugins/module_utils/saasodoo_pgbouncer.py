# -*- coding: utf-8 -*-
# Shared by saasodoo_pgbouncer_info and the db_performance runbook's tests: read a PgBouncer's
# admin console and judge its pools.
"""PgBouncer client code for the SaaSOdoo modules.

PgBouncer answers its own admin console (the virtual database ``pgbouncer``) with ``SHOW``
commands, over the simple query protocol only: psycopg 3 needs a client-side-binding cursor
for it (psycopg2 always uses the simple protocol). Connection handling (errors with a kind and
a clear message, the password never in a message) is saasodoo_pg's.

- ``show(conn, what)``: one ``SHOW <what>`` (POOLS, STATS, CONFIG, DATABASES, LISTS, VERSION) as
  a list of dicts of plain values.
- ``read_state(conn)``: version, pools, stats, config (the settings that matter for pooling),
  lists.
- ``analyse(state, max_wait_seconds)``: findings (clients waiting for a server connection,
  pools at their size).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.module_utils.saasodoo_findings import finding, sort_findings
from ansible.module_utils.saasodoo_pg import PSYCOPG_MAJOR, plain, psycopg

SHOW_COMMANDS = ("POOLS", "STATS", "CONFIG", "DATABASES", "LISTS", "VERSION", "CLIENTS", "SERVERS")
# The [pgbouncer] settings reported back (the rest of SHOW CONFIG is noise for a runbook).
CONFIG_KEYS = ("pool_mode", "default_pool_size", "min_pool_size", "reserve_pool_size", "max_client_conn",
               "max_db_connections", "max_user_connections", "server_idle_timeout", "server_lifetime",
               "listen_port", "auth_type", "ignore_startup_parameters")
POOL_INT_FIELDS = ("cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
                   "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
                   "maxwait", "maxwait_us")


def show(conn, what):
    """Rows of ``SHOW <what>`` on the admin console; ``what`` must be one of SHOW_COMMANDS."""
    what = ("%s" % what).upper()
    if what not in SHOW_COMMANDS:
        raise ValueError("unsupported SHOW command %r (one of %s)" % (what, ", ".join(SHOW_COMMANDS)))
    sql = "SHOW " + what  # a constant from the list above, no value is formatted in
    if PSYCOPG_MAJOR >= 3:
        cur = psycopg.ClientCursor(conn)
    else:
        cur = conn.cursor()
    try:
        cur.execute(sql)
        if cur.description is None:
            return []
        columns = [d[0] for d in cur.description]
        return [dict(zip(columns, (plain(v) for v in row))) for row in cur.fetchall()]
    finally:
        cur.close()


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def read_state(conn):
    """What a runbook needs from the admin console (the admin database 'pgbouncer' itself left out)."""
    version_rows = show(conn, "VERSION")
    version = next(iter(version_rows[0].values())) if version_rows else None
    pools = []
    for row in show(conn, "POOLS"):
        if row.get("database") == "pgbouncer":
            continue
        pools.append(dict((k, _int(v) if k in POOL_INT_FIELDS else v) for k, v in row.items()))
    stats = [dict((k, _int(v) if k != "database" else v) for k, v in row.items())
             for row in show(conn, "STATS") if row.get("database") != "pgbouncer"]
    config = {}
    for row in show(conn, "CONFIG"):
        key = row.get("key")
        if key in CONFIG_KEYS:
            config[key] = _int(row.get("value"))
    databases = [row for row in show(conn, "DATABASES") if row.get("name") != "pgbouncer"]
    lists = dict((row.get("list"), _int(row.get("items"))) for row in show(conn, "LISTS"))
    return {"version": version, "pools": pools, "stats": stats, "config": config,
            "databases": [{"name": d.get("name"), "host": d.get("host"), "port": _int(d.get("port")),
                           "database": d.get("database"), "pool_size": _int(d.get("pool_size")),
                           "pool_mode": d.get("pool_mode") or None, "current_connections":
                               _int(d.get("current_connections"))} for d in databases],
            "lists": lists}


def parse_version(text):
    """'PgBouncer 1.18.0' -> (1, 18, 0); () when unknown."""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", "%s" % (text or ""))
    return tuple(int(g) for g in match.groups() if g is not None) if match else ()


def _pool_size(state, pool):
    for d in state.get("databases") or []:
        if d.get("name") == pool.get("database") and isinstance(d.get("pool_size"), int):
            return d["pool_size"]
    size = (state.get("config") or {}).get("default_pool_size")
    return size if isinstance(size, int) else None


def analyse(state, max_wait_seconds=1.0):
    """Findings about the pools.

    PGBOUNCER_CLIENTS_WAITING (high): clients wait for a server connection at least
    ``max_wait_seconds`` - the pool is exhausted, the guide's "connection pool exhaustion".
    PGBOUNCER_POOL_FULL (medium): every server connection of a pool is in use (the next client
    will wait).
    """
    findings = []
    for pool in state.get("pools") or []:
        waiting = pool.get("cl_waiting") or 0
        wait = (pool.get("maxwait") or 0) + (pool.get("maxwait_us") or 0) / 1e6
        size = _pool_size(state, pool)
        name = "%s/%s" % (pool.get("database"), pool.get("user"))
        evidence = {"pool": name, "cl_active": pool.get("cl_active"), "cl_waiting": waiting,
                    "sv_active": pool.get("sv_active"), "sv_idle": pool.get("sv_idle"), "pool_size": size,
                    "maxwait_seconds": round(wait, 3), "pool_mode": pool.get("pool_mode")}
        if waiting and wait >= max_wait_seconds:
            findings.append(finding(
                "PGBOUNCER_CLIENTS_WAITING", "high",
                "PgBouncer pool %s is exhausted: %d client(s) wait for a server connection, the oldest for %.1f s "
                "(pool size %s)." % (name, waiting, wait, size), evidence,
                "Find the long transactions that hold the server connections (PG_LONG_RUNNING_QUERY, "
                "PG_IDLE_IN_TRANSACTION), then raise default_pool_size within max_connections."))
        elif size and (pool.get("sv_active") or 0) >= size:
            findings.append(finding(
                "PGBOUNCER_POOL_FULL", "medium",
                "PgBouncer pool %s uses all %d server connections; the next client will wait." % (name, size),
                evidence, "Watch cl_waiting; raise default_pool_size within max_connections if clients wait."))
    return sort_findings(findings)
