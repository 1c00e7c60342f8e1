"""db_performance.yml against the test bed's real PostgreSQL and a real PgBouncer.

Faults, all real: connections near the limit (sessions opened here with psycopg), a blocking lock
(a transaction holding a row lock and a session waiting for it). The runbook's effects are read
back from the server (SHOW, pg_settings, pg_file_settings, pg_stat_activity) and from the cluster.

PgBouncer: the runbook deploys it in the cluster (ConfigMap with pgbouncer.ini, Secret, Deployment,
Service). kwok's nodes run no containers, so testbed/pgbouncer.py plays the kubelet for that one
Deployment: it runs the Debian pgbouncer binary with exactly the deployed pgbouncer.ini, mapped
onto loopback (listen on services.yml's saasodoo_pgbouncer port, the database Service's address
-> the test bed's PostgreSQL). Before the runbook deploys, nothing answers there; afterwards the
test connects through the real pgbouncer and reads its pools.

The runbook's login applies settings with ALTER SYSTEM: testbed/pg_admin.py grants the platform
role exactly that on the tuned parameters (PostgreSQL 15 parameter privileges) and takes it back;
every setting the runbook wrote is reset after each test.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import faults, pg_admin, platform_vars
from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

VARS = platform_vars.load()
DB = {"host": VARS["saasodoo_db_host"], "port": int(VARS["saasodoo_db_port"]), "user": VARS["saasodoo_db_user"],
      "password": VARS["saasodoo_db_password"], "dbname": VARS["saasodoo_db_name"]}
POOLER = {"host": VARS["saasodoo_pgbouncer"]["host"], "port": int(VARS["saasodoo_pgbouncer"]["port"])}
PGB = VARS["db_performance_pgbouncer"]
TUNED = sorted(VARS["db_performance_tuned_settings"])
ENV = VARS["db_performance_backend_db_env"]
BACKEND = VARS["saasodoo_components"]["backend"]


def connect(autocommit=True, **over):
    params = dict(DB, **over)
    return psycopg.connect(connect_timeout=5, autocommit=autocommit, application_name="test_db_performance",
                           prepare_threshold=None, **params)


def settings_state():
    """What the runbook could change on the server: values in use, pending restarts, the files."""
    rows = pg_admin.run_sql(
        "SELECT name, setting, pending_restart FROM pg_settings WHERE name IN (%s) ORDER BY name;"
        "SELECT name, setting, sourcefile FROM pg_file_settings WHERE name IN (%s) ORDER BY seqno;"
        % ((", ".join("'%s'" % n for n in TUNED),) * 2))
    return rows


def show(name):
    with connect() as conn:
        return conn.execute("SELECT current_setting(%s), (SELECT pending_restart FROM pg_settings WHERE name = %s)",
                            (name, name)).fetchone()


def file_value(name):
    out = pg_admin.run_sql("SELECT setting FROM pg_file_settings WHERE name = '%s' ORDER BY seqno DESC LIMIT 1" % name)
    return out.strip()


def codes(report, at_least="low"):
    levels = ["critical", "high", "medium", "low"]
    return {f["code"] for f in report["findings"] if levels.index(f["severity"]) <= levels.index(at_least)}


def apps():
    return client.AppsV1Api(k8s_state.api_client())


def core():
    return client.CoreV1Api(k8s_state.api_client())


def backend_env():
    dep = apps().read_namespaced_deployment(BACKEND["name"], BACKEND["namespace"])
    return {e.name: e.value for e in dep.spec.template.spec.containers[0].env or [] if e.value is not None}


POSTGRES = VARS["saasodoo_components"]["postgres"]


def postgres_memory():
    sts = apps().read_namespaced_stateful_set(POSTGRES["name"], POSTGRES["namespace"])
    res = sts.spec.template.spec.containers[0].resources
    return res.requests["memory"], res.limits["memory"]


def pooler_answers():
    try:
        with psycopg.connect(connect_timeout=2, **dict(DB, **POOLER)):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="module")
def pooler_kubelet(platform):
    """The stand-in kubelet that runs the real pgbouncer once the runbook has deployed it."""
    subprocess.run([sys.executable, "testbed/pgbouncer.py", "up"], cwd=ROOT, check=True)
    yield
    subprocess.run([sys.executable, "testbed/pgbouncer.py", "down"], cwd=ROOT, check=True)


@pytest.fixture(scope="module")
def tuning_grants(platform):
    pg_admin.grant(TUNED)
    yield
    pg_admin.reset(TUNED)
    pg_admin.revoke(TUNED)


@pytest.fixture
def clean(platform, pooler_kubelet, tuning_grants):
    """Start from a healthy database, no pooler, the backend unpointed; leave it that way."""
    pg_admin.run_sql("SELECT pg_stat_statements_reset();")
    faults.wait_healthy("backend")
    yield
    pg_admin.reset(TUNED)
    ns, name = PGB["namespace"], PGB["name"]
    for delete, obj in ((apps().delete_namespaced_deployment, name), (core().delete_namespaced_service, name),
                        (core().delete_namespaced_config_map, name), (core().delete_namespaced_secret, name + "-auth")):
        try:
            delete(obj, ns)
        except ApiException as exc:
            if exc.status != 404:
                raise
    env = backend_env()
    if ENV["host"] in env or ENV["port"] in env:
        apps().patch_namespaced_deployment(BACKEND["name"], BACKEND["namespace"], {"spec": {"template": {"spec": {
            "containers": [{"name": "backend", "env": [{"name": ENV["host"], "$patch": "delete"},
                                                       {"name": ENV["port"], "$patch": "delete"}]}]}}}})
    faults.wait_healthy("backend", timeout=180)
    want = POSTGRES["resources"]
    if postgres_memory() != (want["requests"]["memory"], want["limits"]["memory"]):
        apps().patch_namespaced_stateful_set(POSTGRES["name"], POSTGRES["namespace"], {"spec": {"template": {"spec": {
            "containers": [{"name": "postgres", "resources": want}]}}}})
    faults.wait_healthy("postgres", timeout=180)
    faults.wait_until("pgbouncer to stop", lambda: not pooler_answers(), timeout=30)
    pg_admin.run_sql("SELECT pg_stat_statements_reset();")


def test_bad_input_is_refused_before_anything_changes(clean):
    before = settings_state()

    result = run_playbook("db_performance.yml", extravars={"db_performance_memory_factor": 1})

    assert result.rc != 0
    assert "db_performance_memory_factor must be above 1" in result.stdout
    assert settings_state() == before


def test_connections_near_the_limit_get_a_pooler_tuned_settings_and_memory(clean):
    max_connections = int(show("max_connections")[0])
    threshold = VARS["db_performance_thresholds"]["connection_usage_percent"]
    # Enough sessions to pass the threshold with the runbook's own session, leaving slots for its steps.
    count = math.ceil(max_connections * (threshold + 2) / 100.0) - 1
    direct = [connect() for _ in range(count)]
    ns = PGB["namespace"]
    sts_ref = f"StatefulSet/{POSTGRES['namespace']}/{POSTGRES['name']}"
    # The database's pod is OOMKilled too (kwok's crashloop stage, reason OOMKilled, exit 137).
    oom = faults.oomkilled("postgres")
    try:
        before_settings, before_cluster = settings_state(), k8s_state.snapshot([ns])

        check = run_playbook("db_performance.yml", check=True)
        assert check.rc == 0, check.stdout[-3000:]
        report = check.artifacts["db_performance_report"]
        assert {"PG_CONNECTIONS_NEAR_LIMIT", "DB_POOLER_MISSING", "DB_BACKEND_NOT_POOLED",
                "DB_SETTINGS_NOT_TUNED", "DB_OOMKILLED"} <= codes(report)
        assert f"would raise the memory of {sts_ref} container postgres: memory limit 4Gi -> 6Gi (x1.5, cap 8Gi); " \
               "memory request 1Gi -> 1536Mi" in report["actions"]
        assert "would set max_connections = 100 (ALTER SYSTEM; restart pending)" in report["actions"]
        assert "would set idle_in_transaction_session_timeout = 5min (ALTER SYSTEM; reloaded)" in report["actions"]
        assert any(a.startswith(f"would deploy PgBouncer Deployment/{ns}/{PGB['name']}") for a in report["actions"])
        assert any(a.startswith("would point ") for a in report["actions"])
        assert settings_state() == before_settings
        assert k8s_state.diff(before_cluster, k8s_state.snapshot([ns])) == []
        assert not pooler_answers()

        result = run_playbook("db_performance.yml")
        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["db_performance_report"]
        assert {"PG_CONNECTIONS_NEAR_LIMIT", "DB_POOLER_MISSING", "DB_SETTINGS_NOT_TUNED", "DB_OOMKILLED"} <= codes(report)
        assert f"raised the memory of {sts_ref} container postgres: memory limit 4Gi -> 6Gi (x1.5, cap 8Gi); " \
               "memory request 1Gi -> 1536Mi" in report["actions"]
        assert postgres_memory() == ("1536Mi", "6Gi")
        assert faults.component_healthy("postgres")
        assert "DB_OOMKILLED" not in {f["code"] for f in report["remaining"]}
        assert "set idle_in_transaction_session_timeout = 5min (ALTER SYSTEM; reloaded)" in report["actions"]
        assert "set max_connections = 100 (ALTER SYSTEM; restart pending)" in report["actions"]
        assert any(a.startswith("verified pooling through PgBouncer at") for a in report["actions"]), report["actions"]
        # The pooler's auth file carries the database password: it never shows in the output or the report.
        assert DB["password"] not in result.stdout and DB["password"] not in repr(result.artifacts)
        # The settings really are in place; the restart-only one waits, and the report says so.
        assert show("idle_in_transaction_session_timeout") == ("5min", False)
        assert show("max_connections") == (str(max_connections), True)
        assert file_value("max_connections") == "100"
        assert any("restart pending" in h for h in report["handed_over"]), report["handed_over"]
        assert "DB_RESTART_PENDING" in {f["code"] for f in report["remaining"]}
        # The pooler is deployed in the cluster and the backend points at it.
        assert apps().read_namespaced_deployment(PGB["name"], ns).spec.replicas == PGB["replicas"]
        assert core().read_namespaced_service(PGB["name"], ns).spec.ports[0].port == PGB["port"]
        # The host and port, plus the literal env the sample platform seeds (the secret scan's), untouched.
        assert backend_env() == {ENV["host"]: f"{PGB['name']}.{ns}.svc.{VARS['saasodoo_cluster_domain']}",
                                 ENV["port"]: str(PGB["port"]), **VARS["saasodoo_component_env"]["backend"]}
        assert faults.component_healthy("backend")

        # What pointing the backend at the pooler does: its sessions come through PgBouncer, and
        # PostgreSQL serves them with a few pooled server connections.
        for conn in direct:
            conn.close()
        direct = []
        pooled = [connect(**POOLER) for _ in range(count)]
        for conn in pooled:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with connect(**dict(POOLER, dbname="pgbouncer")) as admin:
            cur = psycopg.ClientCursor(admin)
            cur.execute("SHOW POOLS")
            cols = [d[0] for d in cur.description]
            pool = next(dict(zip(cols, r)) for r in cur.fetchall() if r[cols.index("database")] == DB["dbname"])
        assert pool["cl_active"] + pool["cl_waiting"] >= count
        servers = pool["sv_active"] + pool["sv_idle"] + pool["sv_used"] + pool["sv_tested"] + pool["sv_login"]
        assert 1 <= servers <= PGB["default_pool_size"] + PGB["reserve_pool_size"]
        with connect() as conn:
            total = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                                 ).fetchone()[0]
        assert total < count, f"{count} clients through PgBouncer should need far fewer server sessions, saw {total}"

        again = run_playbook("db_performance.yml")
        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        report = again.artifacts["db_performance_report"]
        # Healed; what is left is the restart a human must schedule.
        assert codes(report, "medium") == {"DB_RESTART_PENDING"}, report["findings"]
        assert report["actions"] == []
        for conn in pooled:
            conn.close()
    finally:
        for conn in direct:
            conn.close()
        if not faults.component_healthy("postgres"):
            oom.undo()


@pytest.fixture
def blocking_lock(clean):
    """A transaction holding a row lock (idle in transaction) and a session waiting for it."""
    blocker = connect(autocommit=False)
    # Session-level: the tuned idle_in_transaction_session_timeout must not end the fault early.
    blocker.execute("SET idle_in_transaction_session_timeout = 0")
    blocker.execute("UPDATE tenants SET updated_at = now() WHERE slug = %s", ("acme",))
    pid = blocker.info.backend_pid
    waiter = connect()
    outcome = {}

    def wait():
        try:
            waiter.execute("UPDATE tenants SET updated_at = now() WHERE slug = %s", ("acme",))
            outcome["done"] = True
        except psycopg.Error as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    lock_wait = 1

    def waited():
        with connect() as conn:
            row = conn.execute("SELECT extract(epoch FROM now() - state_change) FROM pg_stat_activity "
                               "WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)).fetchone()
        return row is not None and row[0] >= lock_wait

    faults.wait_until("the waiting session to wait on the lock", waited, timeout=30)
    yield {"pid": pid, "blocker": blocker, "outcome": outcome, "thread": thread,
           "thresholds": dict(VARS["db_performance_thresholds"], lock_wait_seconds=lock_wait)}
    try:
        blocker.rollback()
    except psycopg.Error:
        pass
    blocker.close()
    thread.join(timeout=30)
    waiter.close()
    # The waiting UPDATE lands in pg_stat_statements as a slow statement: the fault's, not the platform's.
    pg_admin.run_sql("SELECT pg_stat_statements_reset();")


def alive(pid):
    with connect() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 1


def test_blocking_lock_is_reported_and_terminated_only_when_asked(blocking_lock):
    pid = blocking_lock["pid"]
    # The server already allows more connections than this tuned value, which the lock calls for too:
    # max_connections is only ever raised, so every run below must leave it as the server has it.
    max_connections = int(show("max_connections")[0])
    lower = str(max_connections // 2)
    tuned = dict(VARS["db_performance_tuned_settings"],
                 max_connections={"value": lower, "for": ["PG_BLOCKING_LOCKS"], "only_raise": True})
    extra = {"db_performance_thresholds": blocking_lock["thresholds"], "db_performance_tuned_settings": tuned}
    before = settings_state()
    max_before = file_value("max_connections")

    check = run_playbook("db_performance.yml", extravars=dict(extra, db_performance_terminate_blockers=True),
                         check=True)
    assert check.rc == 0, check.stdout[-3000:]
    report = check.artifacts["db_performance_report"]
    assert {"PG_BLOCKING_LOCKS", "DB_SETTINGS_NOT_TUNED"} <= codes(report)
    assert any(a.startswith(f"would terminate blocking session {pid}; its query: UPDATE tenants")
               for a in report["actions"]), report["actions"]
    assert "would set log_lock_waits = on (ALTER SYSTEM; reloaded)" in report["actions"]
    kept = next(f for f in report["findings"] if f["code"] == "DB_SETTING_KEPT_HIGHER")
    assert kept["evidence"] == [f"max_connections: {max_connections} in use, tuned value {lower} (only raised)"]
    assert not any("max_connections" in a for a in report["actions"]), report["actions"]
    assert settings_state() == before
    assert alive(pid)

    # Default: the blocker is reported with its pid and query, never terminated.
    result = run_playbook("db_performance.yml", extravars=extra)
    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["db_performance_report"]
    locks = next(f for f in report["findings"] if f["code"] == "PG_BLOCKING_LOCKS")
    assert locks["evidence"]["blocker_pid"] == pid
    assert any(h.startswith(f"session {pid} ") and "UPDATE tenants" in h
               and "db_performance_terminate_blockers=true" in h for h in report["handed_over"]), report["handed_over"]
    assert "set log_lock_waits = on (ALTER SYSTEM; reloaded)" in report["actions"]
    assert not any("terminated" in a for a in report["actions"])
    assert show("log_lock_waits")[0] == "on"
    assert not any("max_connections" in a for a in report["actions"]), report["actions"]
    assert show("max_connections")[0] == str(max_connections)
    assert file_value("max_connections") == max_before
    assert alive(pid) and "done" not in blocking_lock["outcome"]

    # With the explicit variable: terminated, the waiting session goes on.
    freed = run_playbook("db_performance.yml", extravars=dict(extra, db_performance_terminate_blockers=True))
    assert freed.rc == 0, freed.stdout[-3000:]
    report = freed.artifacts["db_performance_report"]
    assert any(a.startswith(f"terminated blocking session {pid} (its transaction was rolled back)")
               for a in report["actions"]), report["actions"]
    assert "PG_BLOCKING_LOCKS" not in {f["code"] for f in report["remaining"]}
    assert not alive(pid)
    blocking_lock["thread"].join(timeout=30)
    assert blocking_lock["outcome"].get("done") is True, blocking_lock["outcome"]

    pg_admin.run_sql("SELECT pg_stat_statements_reset();")  # the fault's slow UPDATE, see the fixture
    again = run_playbook("db_performance.yml", extravars=extra)
    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    assert codes(again.artifacts["db_performance_report"], "medium") == set()
