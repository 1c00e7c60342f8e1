#!/usr/bin/env python3
"""Real faults and administrator actions on the test bed's PostgreSQL, for the runbooks' tests.

  lock      a real transaction that holds a lock on a table (ACCESS EXCLUSIVE by default), so every
            query of that table - the test-bed API's /api/v1/tenants included - really waits
  admin     SQL as the database superuser (the OS user that owns the test-bed cluster, over its unix
            socket, as testbed/services.sh does): grants, ALTER SYSTEM RESET, pg_stat_statements_reset()
  setting   a server setting as a new session sees it

  db_faults.py lock [--table tenants] [--seconds 60]    hold a lock for a while (foreground)
  db_faults.py admin "SELECT 1"                         run SQL as the superuser
  db_faults.py setting log_min_duration_statement

Environment: TESTBED_CACHE (where services.sh keeps the cluster and its socket), SAASODOO_DB_PORT,
SAASODOO_DB_PASSWORD; names from the inventory (testbed/platform_vars.py).
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed import platform_vars  # noqa: E402

CACHE = Path(os.environ.get("TESTBED_CACHE", platform_vars.ROOT / ".cache" / "testbed")).resolve()
PG_DIR = CACHE / "pg"  # services.sh: unix socket directory and data directory's parent
LOCK_APPLICATION = "testbed-lock-holder"


class DbFaultError(Exception):
    pass


def _db() -> dict:
    v = platform_vars.load()
    return {"host": v["saasodoo_db_host"], "port": int(v["saasodoo_db_port"]), "dbname": v["saasodoo_db_name"],
            "user": v["saasodoo_db_user"], "password": os.environ.get("SAASODOO_DB_PASSWORD", "saasodoo-local")}


def connect(application_name: str = "testbed-db-faults", autocommit: bool = True):
    """A session as the platform's role (saasodoo), like the API's."""
    import psycopg

    db = _db()
    return psycopg.connect(host=db["host"], port=db["port"], dbname=db["dbname"], user=db["user"],
                           password=db["password"], connect_timeout=5, application_name=application_name,
                           autocommit=autocommit)


def _psql() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))
    if not found:
        raise DbFaultError("psql not found under /usr/lib/postgresql/*/bin")
    return found[-1]


def admin(sql: str, dbname: str | None = None) -> str:
    """Run SQL as the superuser over the cluster's unix socket; returns psql's unaligned output."""
    db = _db()
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    cmd = [_psql(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(PG_DIR), "-p", str(db["port"]),
           "-U", user, "-d", dbname or db["dbname"], "-c", sql]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=60)
    if proc.returncode != 0:
        raise DbFaultError(f"superuser SQL failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    return proc.stdout.strip()


def setting(name: str) -> str:
    """A setting as a new session sees it (after any reload)."""
    with connect() as conn:
        return conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()[0]


def settings_digest() -> dict:
    """Every server setting (name -> setting) plus what ALTER SYSTEM wrote: to prove a run changed none."""
    with connect() as conn:
        rows = dict(conn.execute("SELECT name, setting FROM pg_settings").fetchall())
    rows["__postgresql.auto.conf"] = admin(
        "SELECT coalesce(string_agg(name || '=' || setting, ',' ORDER BY name), '') FROM pg_file_settings "
        "WHERE sourcefile LIKE '%postgresql.auto.conf'")
    return rows


def reset_setting(name: str, wait_seconds: float = 10) -> None:
    """ALTER SYSTEM RESET a setting, reload, and wait until new sessions see the default again."""
    boot = admin(f"SELECT boot_val FROM pg_settings WHERE name = '{name}'")
    admin(f"ALTER SYSTEM RESET {name}")
    admin("SELECT pg_reload_conf()")
    deadline = time.monotonic() + wait_seconds
    while setting(name) != boot:
        if time.monotonic() > deadline:
            raise DbFaultError(f"{name} still {setting(name)} after the reload (boot value {boot})")
        time.sleep(0.2)


def grant_alter_system(role: str, parameter: str) -> None:
    """Least privilege for a runbook's role: ALTER SYSTEM on one parameter and pg_reload_conf() (PostgreSQL 15+)."""
    admin(f"GRANT ALTER SYSTEM ON PARAMETER {parameter} TO {role}")
    admin(f"GRANT EXECUTE ON FUNCTION pg_reload_conf() TO {role}")


def revoke_alter_system(role: str, parameter: str) -> None:
    admin(f"REVOKE ALTER SYSTEM ON PARAMETER {parameter} FROM {role}")
    admin(f"REVOKE EXECUTE ON FUNCTION pg_reload_conf() FROM {role}")


def reset_statement_stats() -> None:
    """pg_stat_statements_reset(): earlier tests' statements must not count as this test's slow queries."""
    admin("SELECT pg_stat_statements_reset()")


class TableLock:
    """A real open transaction holding a lock on a table; release() ends it.

    Sessions that queue behind it are cancelled before the lock goes away, so the statements that
    waited do not finish (and do not land in pg_stat_statements as slow statements).
    """

    def __init__(self, table: str = "tenants", mode: str = "ACCESS EXCLUSIVE"):
        from psycopg import sql

        self.table = table
        self.conn = connect(LOCK_APPLICATION, autocommit=False)
        self.pid = self.conn.info.backend_pid
        self.conn.execute(sql.SQL("LOCK TABLE {} IN " + mode + " MODE").format(sql.Identifier(table)))

    def waiting(self) -> list[int]:
        """pids of the sessions blocked by this one."""
        with connect() as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                (self.pid,)).fetchall()
        return [r[0] for r in rows]

    def release(self) -> None:
        if self.conn.closed:
            return
        with connect() as conn:
            conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                         "WHERE %s = ANY(pg_blocking_pids(pid))", (self.pid,))
        self.conn.rollback()
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    lock = sub.add_parser("lock")
    lock.add_argument("--table", default="tenants")
    lock.add_argument("--seconds", type=float, default=60)
    adm = sub.add_parser("admin")
    adm.add_argument("sql")
    st = sub.add_parser("setting")
    st.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "lock":
            with TableLock(args.table) as held:
                print(f"lock on {args.table} held by pid {held.pid} for {args.seconds:g} s", flush=True)
                time.sleep(args.seconds)
        elif args.cmd == "admin":
            print(admin(args.sql))
        else:
            print(setting(args.name))
    except DbFaultError as exc:
        print(f"db_faults: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
