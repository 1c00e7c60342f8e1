"""saasodoo_pg_health's judgement, on hand-made data: thresholds, severities, lock chains, settings.

The analysis functions take plain rows (as the SQL returns them) and return facts and findings,
so no database is needed here; the real PostgreSQL is in tests/integration/test_pg_health.py.
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import sys
from pathlib import Path

import pytest
import yaml
from ansible.plugins.loader import fragment_loader
from ansible.utils.plugin_docs import get_docstring

# Ansible imports a module's custom module_utils as ansible.module_utils.<name>; alias them the
# same way before importing the module.
from plugins.module_utils import saasodoo_findings, saasodoo_redact

sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
sys.modules.setdefault("ansible.module_utils.saasodoo_redact", saasodoo_redact)
pg = importlib.import_module("plugins.module_utils.saasodoo_pg")
sys.modules.setdefault("ansible.module_utils.saasodoo_pg", pg)
health = importlib.import_module("plugins.modules.saasodoo_pg_health")

MIB = 1024 * 1024
GIB = 1024 * MIB


def codes(findings):
    return [f["code"] for f in findings]


def client(pid, state="idle", user="odoo", database="acme", **extra):
    row = {"pid": pid, "backend_type": "client backend", "state": state, "user": user, "database": database,
           "application": "odoo", "client_addr": "10.0.0.5", "is_self": False, "query": "SELECT %d" % pid,
           "query_seconds": 0.1, "xact_seconds": None, "state_seconds": 0.1, "blocked_by": [],
           "lock_wait_seconds": None, "wait_event_type": None, "wait_event": None}
    row.update(extra)
    return row


# ------------------------------------------------------------------------------------------
# module_utils/saasodoo_pg


@pytest.mark.parametrize("text, kind", [
    ('connection failed: connection to server at "127.0.0.1", port 55432 failed: Connection refused\n'
     '\tIs the server running on that host and accepting TCP/IP connections?', "refused"),
    ('connection failed: connection to server at "127.0.0.1", port 55432 failed: FATAL:  password '
     'authentication failed for user "saasodoo"', "auth"),
    ('connection to server at "db" failed: FATAL:  role "nobody" does not exist', "auth"),
    ('connection failed: connection to server at "127.0.0.1", port 55432 failed: FATAL:  database "nodb" '
     'does not exist', "missing_db"),
    ('FATAL:  permission denied for database "saasodoo"\nDETAIL:  User does not have CONNECT privilege.',
     "permission"),
    ('FATAL:  no pg_hba.conf entry for host "10.1.1.1", user "x", database "y", no encryption', "permission"),
    ("FATAL:  sorry, too many clients already", "too_many_clients"),
    ("FATAL:  remaining connection slots are reserved for non-replication superuser connections",
     "too_many_clients"),
    ("FATAL:  the database system is starting up", "starting"),
    ("connection timeout expired", "timeout"),
    ("failed to resolve host 'no-such-host.invalid': [Errno -2] Name or service not known", "unreachable"),
    ('connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file or directory', "unreachable"),
    ('connection to server at "10.0.0.1", port 5432 failed: received invalid response to SSL negotiation: H',
     "protocol"),
    ("something nobody expected", "other"),
])
def test_connection_failures_are_classified(text, kind):
    assert pg.classify_connect_error(text) == kind


def test_connect_error_messages_name_the_place_and_never_the_password():
    params = {"login_host": "127.0.0.1", "login_port": 55432, "login_user": "saasodoo",
              "login_password": "s3cret-pw", "login_db": "saasodoo", "connect_timeout": 3}
    for kind in ("refused", "timeout", "unreachable", "protocol", "starting", "auth", "missing_db", "permission",
                 "too_many_clients", "other"):
        message = pg.connect_error_message(kind, params, "driver said so")
        assert "127.0.0.1:55432" in message
        assert "s3cret-pw" not in message
    assert pg.connect_error_message("refused", params, None).startswith(
        "PostgreSQL at 127.0.0.1:55432 refused the connection: is it running?")
    assert "within 3 s" in pg.connect_error_message("timeout", params, None)
    assert pg.redact("password was s3cret-pw", "s3cret-pw") == "password was ********"


def test_connect_to_a_closed_port_raises_a_clear_diagnosis_error():
    params = {"login_host": "127.0.0.1", "login_port": 1, "login_user": "x", "login_password": "s3cret-pw",
              "login_db": "x", "connect_timeout": 2, "ssl_mode": "prefer"}
    with pytest.raises(pg.PgConnectError) as excinfo:
        pg.connect(params)
    err = excinfo.value
    assert isinstance(err, saasodoo_findings.DiagnosisError)
    assert err.kind == "refused" and not err.reachable
    assert str(err).startswith("PostgreSQL at 127.0.0.1:1 refused the connection: is it running?")
    assert "s3cret-pw" not in str(err) and err.seconds is not None


def test_common_args_read_the_libpq_environment_and_hide_the_password(monkeypatch):
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    spec = pg.POSTGRES_COMMON_ARGS
    assert spec["login_password"]["no_log"] is True
    for name, env in (("login_host", "PGHOST"), ("login_port", "PGPORT"), ("login_user", "PGUSER"),
                      ("login_password", "PGPASSWORD"), ("login_db", "PGDATABASE")):
        assert spec[name]["fallback"][1] == [env]
    for env, value in (("PGHOST", "db.example"), ("PGPORT", "6543"), ("PGUSER", "u"), ("PGPASSWORD", "pw-from-env"),
                       ("PGDATABASE", "d")):
        monkeypatch.setenv(env, value)
    result = ArgumentSpecValidator(spec).validate({})
    assert result.error_messages == []
    params = result.validated_parameters
    assert (params["login_host"], params["login_port"], params["login_user"], params["login_db"]) == \
        ("db.example", 6543, "u", "d")
    assert params["login_password"] == "pw-from-env"
    assert "pw-from-env" in result._no_log_values
    for env in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"):
        monkeypatch.delenv(env)
    params = ArgumentSpecValidator(spec).validate({}).validated_parameters
    assert (params["login_host"], params["login_port"], params["login_password"]) == ("localhost", 5432, None)


class FakeCursor:
    def __init__(self, log, rows, columns):
        self.log, self.rows, self.columns = log, rows, columns
        self.description = None

    def execute(self, sql, params=None):
        self.log.append((sql, params))
        self.description = [(c,) for c in self.columns] if self.columns else None

    def fetchall(self):
        return self.rows

    def close(self):
        pass


class FakeConn:
    def __init__(self, rows=(), columns=()):
        self.log = []
        self.rows, self.columns = list(rows), list(columns)

    def cursor(self):
        return FakeCursor(self.log, self.rows, self.columns)


def test_query_passes_values_as_parameters_and_returns_plain_dicts():
    ts = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    conn = FakeConn(rows=[(decimal.Decimal("1.5"), datetime.timedelta(seconds=90), ts, decimal.Decimal("7"))],
                    columns=["ratio", "age", "at", "n"])
    rows = pg.query(conn, "SELECT ... WHERE datname = %(db)s", {"db": "x'; DROP TABLE tenants; --"})
    assert rows == [{"ratio": 1.5, "age": 90.0, "at": "2026-01-01T00:00:00+00:00", "n": 7}]
    assert conn.log == [("SELECT ... WHERE datname = %(db)s", {"db": "x'; DROP TABLE tenants; --"})]
    assert pg.query_value(conn, "SELECT 1") == 1.5
    assert pg.query_one(FakeConn(), "SET x") is None


# ------------------------------------------------------------------------------------------
# Connections


def test_connections_below_the_threshold_give_no_finding():
    activity = [client(i) for i in range(10)] + [{"pid": 99, "backend_type": "checkpointer", "state": None}]
    summary, findings = health.analyse_connections(activity, 50, 3, 80)
    assert findings == []
    assert summary["total"] == 10 and summary["usage_percent"] == 20.0 and summary["free"] == 37
    assert summary["by_state"] == {"idle": 10}


def test_connections_at_the_threshold_are_near_the_limit_high():
    activity = [client(i, state="active" if i < 5 else "idle") for i in range(40)]
    summary, findings = health.analyse_connections(activity, 50, 3, 80)
    assert codes(findings) == ["PG_CONNECTIONS_NEAR_LIMIT"]
    f = findings[0]
    assert f["severity"] == "high"
    assert f["evidence"]["usage_percent"] == 80.0 and f["evidence"]["free"] == 7
    assert "80%" in f["message"] and "db_performance.yml" in f["remediation"]
    assert summary["by_state"] == {"active": 5, "idle": 35}
    _, findings = health.analyse_connections(activity[:39], 50, 3, 80)
    assert findings == []


def test_connections_at_95_percent_or_without_a_free_slot_are_exhausted_critical():
    _, findings = health.analyse_connections([client(i) for i in range(95)], 100, 3, 80)
    assert [(f["code"], f["severity"]) for f in findings] == [("PG_CONNECTIONS_EXHAUSTED", "critical")]
    # 47 of 50 is 94%, but the 3 reserved slots leave nothing for the applications.
    _, findings = health.analyse_connections([client(i) for i in range(47)], 50, 3, 80)
    assert [(f["code"], f["severity"]) for f in findings] == [("PG_CONNECTIONS_EXHAUSTED", "critical")]
    assert findings[0]["evidence"]["free"] == 0


def test_a_custom_threshold_is_honoured():
    _, findings = health.analyse_connections([client(i) for i in range(30)], 50, 3, 60)
    assert codes(findings) == ["PG_CONNECTIONS_NEAR_LIMIT"]


# ------------------------------------------------------------------------------------------
# Long queries and idle transactions


def test_long_queries_are_found_above_the_threshold_longest_first():
    activity = [client(1, "active", query_seconds=70), client(2, "active", query_seconds=200),
                client(3, "active", query_seconds=10), client(4, "idle", query_seconds=900),
                client(5, "active", query_seconds=999, is_self=True),
                {"pid": 6, "backend_type": "autovacuum worker", "state": "active", "query_seconds": 5000}]
    queries, findings = health.analyse_long_queries(activity, 60)
    assert [q["pid"] for q in queries] == [2, 1]
    assert [(f["code"], f["severity"]) for f in findings] == [("PG_LONG_RUNNING_QUERY", "medium")]
    assert findings[0]["evidence"]["pids"] == [2, 1]
    assert "pid 2" in findings[0]["message"] and "pg_cancel_backend(2)" in findings[0]["remediation"]


def test_a_query_running_five_times_the_threshold_is_high():
    _, findings = health.analyse_long_queries([client(1, "active", query_seconds=300)], 60)
    assert findings[0]["severity"] == "high"
    _, findings = health.analyse_long_queries([client(1, "active", query_seconds=299)], 60)
    assert findings[0]["severity"] == "medium"


def test_idle_in_transaction_sessions_older_than_the_threshold_are_medium():
    activity = [client(1, "idle in transaction", state_seconds=61, xact_seconds=120),
                client(2, "idle in transaction (aborted)", state_seconds=3600),
                client(3, "idle in transaction", state_seconds=5),
                client(4, "idle", state_seconds=9000)]
    sessions, findings = health.analyse_idle_in_transaction(activity, 60)
    assert [s["pid"] for s in sessions] == [2, 1]
    assert sessions[1]["transaction_seconds"] == 120
    assert [(f["code"], f["severity"]) for f in findings] == [("PG_IDLE_IN_TRANSACTION", "medium")]
    assert "pg_terminate_backend(2)" in findings[0]["remediation"]
    assert health.analyse_idle_in_transaction(activity, 7200) == ([], [])


# ------------------------------------------------------------------------------------------
# Blocking chains


def test_a_simple_block_is_one_chain():
    activity = [client(10, "idle in transaction", xact_seconds=300, state_seconds=290, query="UPDATE tenants"),
                client(11, "active", blocked_by=[10], lock_wait_seconds=42.0, wait_event_type="Lock",
                       wait_event="transactionid")]
    chains = health.build_blocking_chains(activity)
    assert len(chains) == 1
    c = chains[0]
    assert c["blocker"]["pid"] == 10 and c["blocker"]["visible"] and c["blocker"]["idle_seconds"] == 290
    assert [(m["pid"], m["depth"], m["waiting_seconds"]) for m in c["blocked"]] == [(11, 1, 42.0)]
    assert c["blocked_count"] == 1 and c["max_wait_seconds"] == 42.0 and not c["deadlock"]


def test_a_chain_follows_sessions_that_wait_for_waiting_sessions():
    # 1 blocks 2; 2 blocks 3 and 4; 5 waits for both 1 and 4. A second, independent chain 20 -> 21.
    activity = [client(1, "idle in transaction"),
                client(2, "active", blocked_by=[1], query_seconds=30),
                client(3, "active", blocked_by=[2], query_seconds=20),
                client(4, "active", blocked_by=[2], query_seconds=10),
                client(5, "active", blocked_by=[4, 1], query_seconds=5),
                client(20, "active"), client(21, "active", blocked_by=[20], query_seconds=99),
                client(30, "idle")]
    chains = health.build_blocking_chains(activity)
    assert [c["blocker"]["pid"] for c in chains] == [1, 20]
    first = chains[0]
    assert [(m["pid"], m["depth"]) for m in first["blocked"]] == [(2, 1), (5, 1), (3, 2), (4, 2)]
    assert first["blocked_count"] == 4 and first["max_wait_seconds"] == 30
    assert next(m for m in first["blocked"] if m["pid"] == 5)["blocked_by"] == [1, 4]
    # Without pg_locks.waitstart (PostgreSQL < 14) the wait is the query's age.
    assert chains[1]["max_wait_seconds"] == 99


def test_a_lock_cycle_is_reported_as_a_deadlock():
    activity = [client(7, "active", blocked_by=[8], query_seconds=1),
                client(8, "active", blocked_by=[7], query_seconds=2)]
    chains = health.build_blocking_chains(activity)
    assert len(chains) == 1 and chains[0]["deadlock"] is True
    assert chains[0]["blocker"]["pid"] == 7 and [m["pid"] for m in chains[0]["blocked"]] == [8]


def test_a_blocker_outside_pg_stat_activity_is_named_anyway():
    chains = health.build_blocking_chains([client(5, "active", blocked_by=[0], query_seconds=12)])
    assert chains[0]["blocker"] == {"pid": 0, "visible": False, "note": "a prepared transaction (pid 0)"}
    assert health.build_blocking_chains([client(1), client(2)]) == []


def test_blocking_locks_are_high_with_the_blocker_in_the_evidence():
    activity = [client(10, "idle in transaction", user="odoo_acme", xact_seconds=400, state_seconds=390,
                       query="UPDATE res_partner SET name = $1 WHERE id = $2"),
                client(11, "active", blocked_by=[10], lock_wait_seconds=120.0),
                client(12, "active", blocked_by=[11], lock_wait_seconds=60.0)]
    chains, findings = health.analyse_locks(activity, 5)
    assert len(chains) == 1
    assert [(f["code"], f["severity"]) for f in findings] == [("PG_BLOCKING_LOCKS", "high")]
    f = findings[0]
    assert f["evidence"]["blocker_pid"] == 10 and f["evidence"]["blocked_pids"] == [11, 12]
    assert f["evidence"]["max_wait_seconds"] == 120.0 and f["evidence"]["blocker_user"] == "odoo_acme"
    assert "Session 10" in f["message"] and "idle in transaction" in f["message"] and "2 other" in f["message"]
    assert "terminate the blocking session after review" in f["remediation"]
    assert "pg_terminate_backend(10)" in f["remediation"]


def test_short_lock_waits_are_listed_but_not_a_finding():
    activity = [client(10, "active"), client(11, "active", blocked_by=[10], lock_wait_seconds=0.3)]
    chains, findings = health.analyse_locks(activity, 5)
    assert len(chains) == 1 and findings == []
    _, findings = health.analyse_locks(activity, 0)
    assert codes(findings) == ["PG_BLOCKING_LOCKS"]


# ------------------------------------------------------------------------------------------
# pg_stat_statements, cache, dead tuples, disk, replication


def test_missing_pg_stat_statements_is_a_low_finding():
    slow, findings = health.analyse_slow_statements({"installed": False, "reason": "not installed"}, [], 500,
                                                    "saasodoo")
    assert slow == []
    assert [(f["code"], f["severity"]) for f in findings] == [("PG_STAT_STATEMENTS_MISSING", "low")]
    assert "saasodoo" in findings[0]["message"]


def test_slow_statements_above_the_mean_threshold_are_medium():
    rows = [{"queryid": "1", "mean_ms": 600.123, "calls": 3, "query": "SELECT a"},
            {"queryid": "2", "mean_ms": 2500.0, "calls": 1, "query": "SELECT b"},
            {"queryid": "3", "mean_ms": 20.0, "calls": 900, "query": "SELECT c"}]
    slow, findings = health.analyse_slow_statements({"installed": True}, rows, 500, "saasodoo")
    assert [s["queryid"] for s in slow] == ["2", "1"] and slow[1]["mean_ms"] == 600.1
    assert [(f["code"], f["severity"]) for f in findings] == [("PG_SLOW_STATEMENTS", "medium")]
    assert "2500 ms" in findings[0]["message"]
    assert health.analyse_slow_statements({"installed": True}, rows[2:], 500) == ([], [])


def test_cache_hit_ratio_below_the_threshold_is_medium_once_there_is_enough_data():
    dbs = [{"database": "acme", "blks_hit": 90000, "blks_read": 10000},
           {"database": "x", "blks_hit": 0, "blks_read": 0}]
    ratio, details, findings = health.analyse_cache(dbs, 0.95)
    assert ratio == 0.9 and details["judged"]
    assert [(f["code"], f["severity"]) for f in findings] == [("PG_LOW_CACHE_HIT_RATIO", "medium")]
    assert health.analyse_cache(dbs, 0.85)[2] == []
    ratio, details, findings = health.analyse_cache([{"database": "a", "blks_hit": 10, "blks_read": 90}], 0.95)
    assert ratio == 0.1 and not details["judged"] and findings == []
    assert health.analyse_cache([], 0.95)[0] is None


def test_dead_tuples_per_table_low_or_medium():
    tables = [{"schema": "public", "table": "a", "live": 7000, "dead": 3000},     # 30%: low
              {"schema": "public", "table": "b", "live": 5000, "dead": 5000},     # 50%: medium (>= 2x 20%)
              {"schema": "public", "table": "c", "live": 10, "dead": 900},        # too few dead rows
              {"schema": "public", "table": "d", "live": 10 ** 8, "dead": 10 ** 6}]  # 1%: fine
    out, findings = health.analyse_dead_tuples(tables, 0.2)
    assert [t["table"] for t in out] == ["d", "b", "a", "c"]
    assert next(t for t in out if t["table"] == "a")["ratio"] == 0.3
    assert [(f["code"], f["severity"], f["evidence"]["table"]) for f in findings] == [
        ("PG_DEAD_TUPLES", "medium", "public.b"), ("PG_DEAD_TUPLES", "low", "public.a")]
    assert "VACUUM (ANALYZE) public.b" in findings[0]["remediation"]


def test_disk_low_is_high_and_critical_below_half_the_threshold():
    def disk(free_percent):
        return {"visible": True, "path": "/data", "total_bytes": 100 * GIB,
                "free_bytes": int(free_percent * GIB), "free_percent": free_percent}

    assert health.analyse_disk(disk(50.0), 10) == []
    assert [(f["code"], f["severity"]) for f in health.analyse_disk(disk(7.0), 10)] == [("PG_DISK_LOW", "high")]
    assert [(f["code"], f["severity"]) for f in health.analyse_disk(disk(4.9), 10)] == [("PG_DISK_LOW", "critical")]
    assert health.analyse_disk({"visible": False, "reason": "remote"}, 10) == []


def test_disk_usage_is_only_measured_where_the_data_directory_is_visible(tmp_path):
    seen = health.disk_usage(str(tmp_path), local=True)
    assert seen["visible"] and seen["free_percent"] is not None and seen["total_bytes"] > 0
    assert not health.disk_usage(str(tmp_path), local=False)["visible"]
    missing = health.disk_usage(str(tmp_path / "nope"), local=True)
    assert not missing["visible"] and "does not exist" in missing["reason"]
    assert not health.disk_usage(None, local=True)["visible"]
    assert health.is_local_host("127.0.0.1") and health.is_local_host("/var/run/postgresql")
    assert health.is_local_host("") and not health.is_local_host("db.saasodoo.svc.cluster.local")


def test_replication_lag_and_a_replica_not_streaming():
    replicas = [{"application_name": "r1", "state": "streaming", "replay_lag_seconds": 1.0, "replay_lag_bytes": 10},
                {"application_name": "r2", "state": "streaming", "replay_lag_seconds": 90.0, "replay_lag_bytes": GIB},
                {"application_name": "r3", "state": "streaming", "replay_lag_seconds": 400.0},
                {"application_name": "r4", "state": "catchup", "replay_lag_seconds": None}]
    findings = health.analyse_replication(replicas, 60)
    assert [(f["evidence"]["application_name"], f["severity"]) for f in findings] == [
        ("r2", "medium"), ("r3", "high"), ("r4", "medium")]
    assert set(codes(findings)) == {"PG_REPLICATION_LAG"}
    assert "1.0 GiB of WAL" in findings[0]["message"]


# ------------------------------------------------------------------------------------------
# Settings


def current(shared_buffers, effective_cache_size, work_mem):
    return {"shared_buffers": {"current": "%dMB" % (shared_buffers // MIB), "bytes": shared_buffers},
            "effective_cache_size": {"current": "%dMB" % (effective_cache_size // MIB), "bytes": effective_cache_size},
            "work_mem": {"current": "%dMB" % (work_mem // MIB), "bytes": work_mem}}


def test_defaults_on_a_4gb_server_get_recommendations():
    values, findings = health.recommend_settings(current(128 * MIB, 4 * GIB, 4 * MIB), 4 * GIB, 100)
    by_setting = dict((f["evidence"]["setting"], f) for f in findings)
    assert set(by_setting) == {"shared_buffers"}
    f = by_setting["shared_buffers"]
    assert (f["code"], f["severity"]) == ("PG_SETTING_NOT_RECOMMENDED", "low")
    assert f["evidence"]["current"] == "128MB" and f["evidence"]["recommended"] == "1GB"
    assert "restart" in f["remediation"] and "db_performance.yml" in f["remediation"]
    assert values["effective_cache_size"]["ok"] is True and values["effective_cache_size"]["recommended"] == "3GB"
    assert values["work_mem"]["ok"] is True and values["max_connections"]["ok"] is True


def test_well_tuned_settings_give_no_finding():
    values, findings = health.recommend_settings(current(GIB, 3 * GIB, 8 * MIB), 4 * GIB, 100)
    assert findings == []
    assert all(v["ok"] for v in values.values())


def test_settings_too_high_for_the_memory_are_flagged():
    values, findings = health.recommend_settings(current(2 * GIB, 8 * GIB, 64 * MIB), 4 * GIB, 500)
    by_setting = dict((f["evidence"]["setting"], f["evidence"]) for f in findings)
    assert set(by_setting) == {"shared_buffers", "effective_cache_size", "work_mem", "max_connections"}
    assert values["shared_buffers"]["why"].startswith("50% of memory (above 40%)")
    assert by_setting["effective_cache_size"]["recommended"] == "3GB"
    assert "exceeds the memory" in values["work_mem"]["why"]
    assert by_setting["work_mem"]["recommended"] == "4MB"  # (4GB - 1GB) / (4 x 500), floor 4MB
    assert by_setting["max_connections"]["current"] == "500"
    assert by_setting["max_connections"]["recommended"] == "at most 256"  # 4 GiB / 16 MiB


def test_a_low_work_mem_on_a_big_server_is_flagged():
    values, findings = health.recommend_settings(current(16 * GIB, 48 * GIB, 4 * MIB), 64 * GIB, 100)
    assert codes(findings) == ["PG_SETTING_NOT_RECOMMENDED"]
    assert findings[0]["evidence"]["setting"] == "work_mem" and values["work_mem"]["recommended"] == "122MB"


def test_without_knowing_the_memory_nothing_is_judged():
    values, findings = health.recommend_settings(current(128 * MIB, 4 * GIB, 4 * MIB), None, 100)
    assert findings == []
    assert all(v["ok"] is None and v["recommended"] is None for v in values.values())


def test_pg_settings_units_are_converted_to_bytes():
    assert health.setting_bytes("16384", "8kB") == 128 * MIB
    assert health.setting_bytes("4096", "kB") == 4 * MIB
    assert health.setting_bytes("100", None) is None and health.setting_bytes(None, "kB") is None
    assert health.round_setting_bytes(int(5.88 * GIB)) == 6 * GIB
    assert health.round_setting_bytes(720 * MIB) == 768 * MIB
    assert health.fmt_setting_bytes(6 * GIB) == "6GB" and health.fmt_setting_bytes(119 * MIB) == "119MB"


# ------------------------------------------------------------------------------------------
# Putting it together


def test_query_texts_lose_their_password_literals():
    assert health.redact_query("ALTER ROLE x PASSWORD 'hunter2' VALID UNTIL 'infinity'") == \
        "ALTER ROLE x PASSWORD '********' VALID UNTIL 'infinity'"
    assert health.redact_query("CREATE USER y WITH password='a''b'") == "CREATE USER y WITH password='********'"
    assert health.redact_query(None) is None


def test_unreachable_findings_by_kind():
    def err(kind):
        return pg.PgConnectError("PostgreSQL at h:5432 ...", kind, "h:5432", seconds=0.01, detail="x")

    assert [(f["code"], f["severity"]) for f in [health.unreachable_finding(err("refused"))]] == [
        ("PG_UNREACHABLE", "critical")]
    assert health.unreachable_finding(err("timeout"))["code"] == "PG_UNREACHABLE"
    assert (health.unreachable_finding(err("too_many_clients"))["code"],
            health.unreachable_finding(err("too_many_clients"))["severity"]) == ("PG_CONNECTIONS_EXHAUSTED", "critical")
    assert (health.unreachable_finding(err("auth"))["code"], health.unreachable_finding(err("auth"))["severity"]) == \
        ("PG_LOGIN_REJECTED", "high")
    assert not err("refused").reachable and err("auth").reachable and err("too_many_clients").reachable


def test_low_findings_alone_leave_the_server_healthy_and_findings_are_sorted():
    result = health.empty_result(health.CHECKS)
    result["findings"] = [saasodoo_findings.finding("PG_SETTING_NOT_RECOMMENDED", "low", "m")]
    assert health.finish(result)["healthy"] is True and result["severity"] == "low"
    result["findings"].append(saasodoo_findings.finding("PG_BLOCKING_LOCKS", "high", "m"))
    health.finish(result)
    assert result["healthy"] is False and result["severity"] == "high"
    assert codes(result["findings"]) == ["PG_BLOCKING_LOCKS", "PG_SETTING_NOT_RECOMMENDED"]


@pytest.mark.parametrize("name, value", [("connection_usage_percent", 0), ("connection_usage_percent", 101),
                                         ("cache_hit_ratio", 1.5), ("long_query_seconds", -1),
                                         ("disk_free_percent", 120)])
def test_thresholds_out_of_range_are_refused(name, value):
    params = dict((k, v.get("default")) for k, v in health.argument_spec().items())
    assert health.validate(params) is None
    params[name] = value
    assert name in health.validate(params)


def merged_documentation(module):
    """The module's DOCUMENTATION with its doc fragments (plugins/doc_fragments) merged in, as ansible-doc shows it."""
    fragment_loader.add_directory(str(Path(__file__).resolve().parents[2] / "plugins" / "doc_fragments"))
    return get_docstring(module.__file__, fragment_loader, is_module=True)[0]


def test_documentation_matches_the_argument_spec():
    doc = merged_documentation(health)
    spec = health.argument_spec()
    assert set(doc["options"]) == set(spec)
    for name, option in spec.items():
        documented = doc["options"][name]
        assert documented["type"] == option.get("type", "str"), name
        assert documented.get("default") == option.get("default"), name
        assert documented.get("choices") == option.get("choices"), name
        assert sorted(documented.get("aliases", [])) == sorted(option.get("aliases", [])), name
    assert doc["options"]["checks"]["choices"] == health.CHECKS
    returned = yaml.safe_load(health.RETURN)
    for key in health.empty_result(health.CHECKS):
        assert key == "changed" or key in returned, key
    yaml.safe_load(health.EXAMPLES)
