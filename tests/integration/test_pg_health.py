"""saasodoo_pg_health against the test bed's real PostgreSQL: inject a fault, run the module, assert
the report names it. No mocks: the faults are real sessions opened from here, and "PostgreSQL is
down" is the server really stopped (and always started again).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import threading
import time

import psycopg
import pytest

from tests.runbooks import ROOT, run_module

DB = {
    "host": "127.0.0.1",
    "port": int(os.environ.get("SAASODOO_DB_PORT", "55432")),
    "user": "saasodoo",
    "password": os.environ.get("SAASODOO_DB_PASSWORD", "saasodoo-local"),
    "dbname": "saasodoo",
}
ARGS = {"login_host": DB["host"], "login_port": DB["port"], "login_user": DB["user"],
        "login_password": DB["password"], "login_db": DB["dbname"]}


def connect(autocommit=True):
    return psycopg.connect(connect_timeout=5, autocommit=autocommit, application_name="test_pg_health", **DB)


def by_code(result, code):
    return [f for f in result.get("findings", []) if f["code"] == code]


def wait_for(what, check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s" % what)


@pytest.fixture
def admin():
    conn = connect()
    yield conn
    conn.close()


@contextlib.contextmanager
def background(conn, sql, params=None):
    """Run one statement on conn in a thread; yields the thread's outcome dict. Joins on exit."""
    outcome = {}

    def work():
        try:
            conn.execute(sql, params)
            outcome["done"] = True
        except psycopg.Error as e:
            outcome["error"] = e

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        thread.join(timeout=25)
        assert not thread.is_alive(), "background statement did not end"


def session_age(admin, pid, column):
    row = admin.execute(
        "SELECT wait_event_type, state, extract(epoch FROM now() - " + column + ")::float8 FROM pg_stat_activity "
        "WHERE pid = %s", (pid,)).fetchone()
    return row


def test_connections_near_the_limit_are_high(admin):
    max_connections = int(admin.execute("SELECT current_setting('max_connections')").fetchone()[0])
    reserved = int(admin.execute("SELECT current_setting('superuser_reserved_connections')").fetchone()[0])
    in_use = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()[0]
    # 82% of max_connections, counting the module's own session; below 95% and with free slots.
    target = int(math.ceil(max_connections * 0.82))
    extra = target - in_use - 1
    if extra < 0 or target >= max_connections - reserved:
        pytest.skip("%d sessions already open: no room to stage 82%% usage safely" % in_use)
    held = []
    try:
        for _ in range(extra):
            held.append(connect())
        result = run_module("saasodoo_pg_health", dict(ARGS, checks=["connections"]))
    finally:
        for conn in held:
            conn.close()
    assert not result.get("failed"), result.get("msg")
    found = by_code(result, "PG_CONNECTIONS_NEAR_LIMIT")
    assert len(found) == 1, result["findings"]
    assert found[0]["severity"] == "high"
    assert result["connections"]["usage_percent"] >= 80
    assert result["connections"]["max"] == max_connections
    assert "db_performance.yml" in found[0]["remediation"]
    assert result["healthy"] is False and result["severity"] == "high"


def test_a_blocking_lock_is_high_and_names_the_blocker(admin):
    blocker, waiter = connect(autocommit=False), connect(autocommit=False)
    try:
        blocker.execute("SELECT id FROM tenants WHERE slug = %s FOR UPDATE", ("acme",))
        blocker_pid, waiter_pid = blocker.info.backend_pid, waiter.info.backend_pid
        waiter.execute("SET statement_timeout = '20s'")
        with background(waiter, "SELECT id FROM tenants WHERE slug = %s FOR UPDATE", ("acme",)) as outcome:
            try:
                wait_for("the waiter to queue for the row lock",
                         lambda: session_age(admin, waiter_pid, "query_start")[0] == "Lock")
                wait_for("a wait of more than 1 s",
                         lambda: session_age(admin, waiter_pid, "query_start")[2] > 1.2)
                result = run_module("saasodoo_pg_health", dict(ARGS, checks=["locks"], lock_wait_seconds=1))
            finally:
                blocker.rollback()
        assert outcome.get("done"), outcome
    finally:
        waiter.rollback()
        blocker.close()
        waiter.close()
    assert not result.get("failed"), result.get("msg")
    ours = [f for f in by_code(result, "PG_BLOCKING_LOCKS") if f["evidence"]["blocker_pid"] == blocker_pid]
    assert len(ours) == 1, result["findings"]
    f = ours[0]
    assert f["severity"] == "high"
    assert waiter_pid in f["evidence"]["blocked_pids"]
    assert f["evidence"]["blocker_state"] == "idle in transaction"
    assert "FOR UPDATE" in f["evidence"]["blocker_query"]
    assert f["evidence"]["max_wait_seconds"] >= 1
    assert "Session %d" % blocker_pid in f["message"]
    assert "pg_terminate_backend(%d)" % blocker_pid in f["remediation"]
    chain = next(c for c in result["locks"] if c["blocker"]["pid"] == blocker_pid)
    assert [m["pid"] for m in chain["blocked"]] == [waiter_pid]


def test_an_exclusively_locked_table_does_not_hang_the_diagnosis(admin):
    table = "pg_health_probe_%d" % os.getpid()  # our own table: tenants stays available to others
    admin.execute("CREATE TABLE IF NOT EXISTS " + table + " (id int)")
    locker = connect(autocommit=False)
    try:
        locker.execute("LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = run_module("saasodoo_pg_health", dict(ARGS, checks=["sizes", "dead_tuples", "locks"]))
        elapsed = time.monotonic() - started
    finally:
        locker.rollback()
        locker.close()
        admin.execute("DROP TABLE IF EXISTS " + table)
    assert not result.get("failed"), result.get("msg")
    assert result["check_errors"] == []
    probe = [t for t in result["sizes"]["tables"] if t["table"] == table]
    assert probe and probe[0]["locked"] is True and probe[0]["total_bytes"] is None
    assert elapsed < 15


def test_a_long_running_query_is_reported(admin):
    sleeper = connect()
    sleeper_pid = sleeper.info.backend_pid
    sleeper.execute("SET statement_timeout = '40s'")
    try:
        with background(sleeper, "SELECT pg_sleep(30)") as outcome:
            try:
                wait_for("pg_sleep to run for more than 1 s",
                         lambda: (session_age(admin, sleeper_pid, "query_start")[1] == "active"
                                  and session_age(admin, sleeper_pid, "query_start")[2] > 1.2))
                result = run_module("saasodoo_pg_health", dict(ARGS, checks=["long_queries"], long_query_seconds=1))
            finally:
                admin.execute("SELECT pg_cancel_backend(%s)", (sleeper_pid,))
        assert isinstance(outcome.get("error"), psycopg.errors.QueryCanceled), outcome
    finally:
        sleeper.close()
    assert not result.get("failed"), result.get("msg")
    found = by_code(result, "PG_LONG_RUNNING_QUERY")
    assert len(found) == 1, result["findings"]
    assert found[0]["severity"] in ("medium", "high")
    assert sleeper_pid in found[0]["evidence"]["pids"]
    ours = next(q for q in result["long_queries"] if q["pid"] == sleeper_pid)
    assert ours["query"] == "SELECT pg_sleep(30)" and ours["seconds"] >= 1


def test_check_mode_returns_the_same_read_only_result():
    normal = run_module("saasodoo_pg_health", ARGS)
    checked = run_module("saasodoo_pg_health", ARGS, check=True)
    for result in (normal, checked):
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is False
        assert result["reachable"] is True and result["connected"] is True
        assert result["check_errors"] == []
        assert result["checks"] == ["connections", "long_queries", "idle_in_transaction", "locks", "slow_statements",
                                    "cache_hit_ratio", "dead_tuples", "sizes", "disk", "replication", "settings"]
        for key in ("server", "connections", "locks", "long_queries", "idle_in_transaction", "slow_statements",
                    "dead_tuples", "sizes", "disk", "replication", "settings"):
            assert result[key] is not None, key
    assert set(checked) == set(normal)
    for key in ("version", "max_connections", "data_directory"):
        assert checked["server"][key] == normal["server"][key]
    assert checked["settings"] == normal["settings"]
    assert checked["pg_stat_statements"]["installed"] is True
    assert checked["disk"]["visible"] is True and checked["disk"]["path"] == normal["server"]["data_directory"]
    assert checked["connect_seconds"] < 5
    assert checked["server"]["uptime_seconds"] > 0
    assert any(d["database"] == "saasodoo" for d in checked["sizes"]["databases"])
    assert {f["code"] for f in checked["findings"] if f["severity"] == "low"} == \
        {f["code"] for f in normal["findings"] if f["severity"] == "low"}
    for result in (normal, checked):  # the password was given as login_password
        assert "saasodoo-local" not in json.dumps(result) and DB["password"] not in json.dumps(result)


def test_the_password_never_appears_in_the_result():
    # The results of a login with the password as an argument: test_check_mode_returns_the_same_read_only_result.
    from_env = run_module("saasodoo_pg_health",
                          {k: v for k, v in ARGS.items() if k != "login_password"} | {"checks": ["connections"]},
                          envvars={"PGPASSWORD": DB["password"]})
    assert from_env["connected"], from_env.get("msg")
    assert "saasodoo-local" not in json.dumps(from_env) and DB["password"] not in json.dumps(from_env)

    wrong = run_module("saasodoo_pg_health",
                       dict(ARGS, login_password="not-the-Pa55word", fail_on_unreachable=False, checks=["settings"]))
    assert wrong.get("failed") is True  # a rejected login always fails: the caller's configuration is wrong
    assert "rejected the login of user saasodoo" in wrong["msg"]
    assert [(f["code"], f["severity"]) for f in wrong["findings"]] == [("PG_LOGIN_REJECTED", "high")]
    assert wrong["reachable"] is True and wrong["connected"] is False
    assert "not-the-Pa55word" not in json.dumps(wrong) and DB["password"] not in json.dumps(wrong)


def _services(action):
    done = subprocess.run(["bash", "testbed/services.sh", action], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, "services.sh %s failed:\n%s\n%s" % (action, done.stdout, done.stderr)


@pytest.fixture
def postgres_stopped():
    """Stop the real PostgreSQL (and Redis: services.sh stops both); always start them again."""
    try:
        _services("down")
        yield
    finally:
        _services("up")


def test_postgres_stopped_fails_clearly_or_reports_unreachable(postgres_stopped):
    failed = run_module("saasodoo_pg_health", ARGS)
    not_failed = run_module("saasodoo_pg_health", dict(ARGS, fail_on_unreachable=False))

    assert failed.get("failed") is True
    assert failed["msg"].startswith("PostgreSQL at 127.0.0.1:%d refused the connection: is it running?" % DB["port"])
    assert "Traceback" not in json.dumps(failed)
    assert [(f["code"], f["severity"]) for f in failed["findings"]] == [("PG_UNREACHABLE", "critical")]
    assert failed["reachable"] is False and failed["healthy"] is False and failed["severity"] == "critical"
    assert "restart_service" in failed["findings"][0]["remediation"]

    assert not not_failed.get("failed"), not_failed.get("msg")
    assert not_failed["reachable"] is False and not_failed["connected"] is False
    assert [(f["code"], f["severity"]) for f in not_failed["findings"]] == [("PG_UNREACHABLE", "critical")]
    assert not_failed["findings"][0]["evidence"]["kind"] == "refused"
    for result in (failed, not_failed):
        assert DB["password"] not in json.dumps(result)
