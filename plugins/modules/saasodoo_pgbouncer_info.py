#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read-only view of a PgBouncer: its pools, stats and settings, and a query through it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_pgbouncer_info
short_description: Read a PgBouncer's pools and settings, and prove it pools (read-only)
description:
  - Connects to PgBouncer's admin console (the virtual database O(admin_db)) and reads C(SHOW VERSION),
    C(SHOW POOLS), C(SHOW STATS), C(SHOW CONFIG), C(SHOW DATABASES) and C(SHOW LISTS). The login must be
    in PgBouncer's C(stats_users) or C(admin_users).
  - With O(probe_db), also opens a session B(through) PgBouncer to that database and runs C(SELECT 1), so
    the answer proves that the pooler reaches the server; the pools are read after the probe, so the probed
    pool is in them.
  - Judges the pools - C(PGBOUNCER_CLIENTS_WAITING) (high) when clients wait for a server connection at least
    O(max_wait_seconds) (the troubleshooting guide's "connection pool exhaustion"), C(PGBOUNCER_POOL_FULL)
    (medium) when a pool uses all its server connections - and, when it cannot connect,
    C(PGBOUNCER_UNREACHABLE) (high).
  - Never changes anything (only C(SHOW) commands and one C(SELECT 1)).
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
requirements:
  - psycopg (3.1 or later) or psycopg2 on the host that runs the module
  - PgBouncer 1.8 or later
options:
  login_host:
    description: Host PgBouncer listens on. Default from E(PGHOST), else C(localhost).
    type: str
    default: localhost
    aliases: [host]
  login_port:
    description: PgBouncer's port. Default from E(PGPORT), else 6432.
    type: int
    default: 6432
    aliases: [port]
  login_user:
    description: Role to log in as (one of PgBouncer's C(stats_users) or C(admin_users)). Default from E(PGUSER).
    type: str
    default: pgbouncer
  login_password:
    description: Password of O(login_user). Default from E(PGPASSWORD). Never returned, logged or put in a message.
    type: str
  admin_db:
    description: Name of the admin console's virtual database.
    type: str
    default: pgbouncer
  probe_db:
    description: A database behind PgBouncer to run C(SELECT 1) on through it; empty skips the probe.
    type: str
    default: ""
  connect_timeout:
    description: Seconds to wait for each connection (libpq waits at least 2).
    type: int
    default: 5
  max_wait_seconds:
    description: Clients waiting at least this long for a server connection give C(PGBOUNCER_CLIENTS_WAITING).
    type: float
    default: 1
  fail_on_unreachable:
    description:
      - Fail when PgBouncer cannot be reached. When false, return ok with C(reachable=false) and the finding
        C(PGBOUNCER_UNREACHABLE), for a runbook to branch on (for instance, before it deploys one).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode returns the same result.
notes:
  - The admin console speaks only the simple query protocol; the module uses a client-side-binding cursor.
seealso:
  - module: saasodoo_pg_health
  - name: PgBouncer usage (SHOW commands)
    description: The admin console's commands and their columns.
    link: https://www.pgbouncer.org/usage.html
"""

EXAMPLES = r"""
- name: AUDIT | Read the pooler and prove it reaches the platform database
  saasodoo_pgbouncer_info:
    login_host: "{{ saasodoo_pgbouncer.host }}"
    login_port: "{{ saasodoo_pgbouncer.port }}"
    login_user: "{{ saasodoo_db_user }}"
    login_password: "{{ saasodoo_db_password }}"
    probe_db: "{{ saasodoo_db_name }}"
    fail_on_unreachable: false
  register: __pooler

- name: AUDIT | Say when the pool is exhausted
  ansible.builtin.debug:
    msg: "{{ __pooler.findings | map(attribute='message') | list }}"
  when: __pooler.findings | length > 0
"""

RETURN = r"""
reachable:
  description: Whether the admin console answered.
  returned: always
  type: bool
version:
  description: PgBouncer's version string.
  returned: when reachable
  type: str
  sample: PgBouncer 1.18.0
pools:
  description: C(SHOW POOLS), one entry per database/user pair (the admin console's own left out).
  returned: always
  type: list
  elements: dict
  sample:
    - {database: saasodoo, user: saasodoo, cl_active: 40, cl_waiting: 0, sv_active: 0, sv_idle: 3, sv_used: 0,
       maxwait: 0, maxwait_us: 0, pool_mode: transaction}
stats:
  description: C(SHOW STATS) per database (totals and averages since start).
  returned: always
  type: list
  elements: dict
config:
  description: The pooling settings of C(SHOW CONFIG) (pool_mode, default_pool_size, max_client_conn, ...).
  returned: always
  type: dict
  sample: {pool_mode: transaction, default_pool_size: 10, max_client_conn: 500, max_db_connections: 20}
databases:
  description: C(SHOW DATABASES) - where each database entry points and its pool size.
  returned: always
  type: list
  elements: dict
lists:
  description: C(SHOW LISTS) - counts of databases, users, pools, clients and servers.
  returned: always
  type: dict
probe:
  description:
    - The query through PgBouncer when O(probe_db) is set - C(ok), C(seconds), C(error) (never the password).
  returned: always
  type: dict
  sample: {database: saasodoo, ok: true, seconds: 0.012, error: null}
findings:
  description: What is wrong, most severe first (code, severity, message, evidence, remediation).
  returned: always
  type: list
  elements: dict
healthy:
  description: True when no finding is medium or worse.
  returned: always
  type: bool
"""

import time

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible.module_utils.saasodoo_findings import DiagnosisError, finding, sort_findings
from ansible.module_utils.saasodoo_pg import (PSYCOPG_ERRORS, PgConnectError, close, connect, ensure_driver,
                                              error_text, query_value)
from ansible.module_utils.saasodoo_pgbouncer import analyse, read_state


def argument_spec():
    return dict(
        login_host=dict(type="str", default="localhost", fallback=(env_fallback, ["PGHOST"]), aliases=["host"]),
        login_port=dict(type="int", default=6432, fallback=(env_fallback, ["PGPORT"]), aliases=["port"]),
        login_user=dict(type="str", default="pgbouncer", fallback=(env_fallback, ["PGUSER"])),
        login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
        admin_db=dict(type="str", default="pgbouncer"),
        probe_db=dict(type="str", default=""),
        connect_timeout=dict(type="int", default=5),
        max_wait_seconds=dict(type="float", default=1.0),
        fail_on_unreachable=dict(type="bool", default=True),
    )


def _params(params, dbname):
    return {"login_host": params["login_host"], "login_port": params["login_port"],
            "login_user": params["login_user"], "login_password": params.get("login_password"),
            "login_db": dbname, "connect_timeout": params["connect_timeout"], "ssl_mode": "prefer",
            "application_name": "saasodoo_pgbouncer_info"}


def probe(params):
    """SELECT 1 through PgBouncer on probe_db: {database, ok, seconds, error}."""
    started = time.monotonic()
    out = {"database": params["probe_db"], "ok": False, "seconds": None, "error": None}
    conn = None
    try:
        conn, _ = connect(_params(params, params["probe_db"]), read_only=False)
        out["ok"] = query_value(conn, "SELECT 1") == 1
    except PgConnectError as e:
        out["error"] = "%s" % e
    except PSYCOPG_ERRORS as e:
        out["error"] = error_text(e, params.get("login_password"))
    finally:
        close(conn)
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def inspect(params):
    result = {"reachable": False, "version": None, "pools": [], "stats": [], "config": {}, "databases": [],
              "lists": {}, "probe": {}, "findings": [], "healthy": False}
    if params["probe_db"]:
        result["probe"] = probe(params)
    conn, _ = connect(_params(params, params["admin_db"]), read_only=False)
    try:
        state = read_state(conn)
    finally:
        close(conn)
    result.update(state)
    result["reachable"] = True
    findings = analyse(state, params["max_wait_seconds"])
    if result["probe"] and not result["probe"]["ok"]:
        findings.append(finding(
            "PGBOUNCER_PROBE_FAILED", "high",
            "PgBouncer answers but a query through it to %s failed: %s" % (params["probe_db"],
                                                                          result["probe"]["error"]),
            result["probe"], "Check the [databases] entry (host, port) and the credentials in auth_file."))
    result["findings"] = sort_findings(findings)
    result["healthy"] = not [f for f in findings if f["severity"] != "low"]
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    ensure_driver(module)
    params = module.params
    error, unreachable, result = None, None, None
    try:
        result = inspect(params)
    except PgConnectError as e:
        unreachable = e
    except DiagnosisError as e:
        error = "%s" % e
    except PSYCOPG_ERRORS as e:
        error = "PgBouncer error while reading its admin console: %s" % error_text(e, params.get("login_password"))
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message, not a traceback
        error = "saasodoo_pgbouncer_info failed unexpectedly (please report it): %s: %s" % (
            type(e).__name__, error_text(e, params.get("login_password")))
    if unreachable is not None:
        where = "%s:%s" % (params["login_host"], params["login_port"])
        message = "PgBouncer at %s cannot be read: %s" % (where, ("%s" % unreachable).replace("PostgreSQL", "server"))
        result = {"reachable": unreachable.reachable, "version": None, "pools": [], "stats": [], "config": {},
                  "databases": [], "lists": {}, "probe": {}, "healthy": False,
                  "findings": [finding("PGBOUNCER_UNREACHABLE", "high", message,
                                       {"endpoint": where, "kind": unreachable.kind},
                                       "Check the PgBouncer Deployment, its Service and its logs.")]}
        if params["fail_on_unreachable"] or unreachable.kind == "auth":
            module.fail_json(msg=message, **result)
        module.exit_json(msg=message, **result)
    if error is not None:
        module.fail_json(msg=error)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
