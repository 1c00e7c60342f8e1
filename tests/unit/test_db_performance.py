"""db_performance's decisions without a server: settings compared by value with PostgreSQL's
units and what applying them takes (saasodoo_pg_tuning), PgBouncer's pools judged
(saasodoo_pgbouncer), and the runbook's findings, actions and hand-overs (filter db_performance)."""

from __future__ import annotations

import configparser
import importlib
import sys
from pathlib import Path

import pytest
import yaml
from ansible.plugins.loader import fragment_loader
from ansible.utils.plugin_docs import get_docstring

from plugins.filter import db_performance as f
from plugins.module_utils import saasodoo_findings, saasodoo_redact, saasodoo_pg_tuning as tuning

# Ansible imports a module's custom module_utils as ansible.module_utils.<name>; alias them the
# same way before importing the ones that import others.
sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
sys.modules.setdefault("ansible.module_utils.saasodoo_redact", saasodoo_redact)
sys.modules.setdefault("ansible.module_utils.saasodoo_pg", importlib.import_module("plugins.module_utils.saasodoo_pg"))
pgb = importlib.import_module("plugins.module_utils.saasodoo_pgbouncer")
sys.modules.setdefault("ansible.module_utils.saasodoo_pgbouncer", pgb)
sys.modules.setdefault("ansible.module_utils.saasodoo_pg_tuning", tuning)
settings_module = importlib.import_module("plugins.modules.saasodoo_pg_settings")
pgbouncer_module = importlib.import_module("plugins.modules.saasodoo_pgbouncer_info")


# ------------------------------------------------------------------------ settings by value

@pytest.mark.parametrize("desired, setting, unit, vartype, same", [
    ("5min", "300000", "ms", "integer", True),
    ("300s", "300000", "ms", "integer", True),
    ("5min", "0", "ms", "integer", False),
    ("500ms", "500", "ms", "integer", True),
    ("1s", "500", "ms", "integer", False),
    ("128MB", "16384", "8kB", "integer", True),
    ("1GB", "131072", "8kB", "integer", True),
    ("64MB", "65536", "kB", "integer", True),
    ("65536", "65536", "kB", "integer", True),      # a bare number is in the setting's unit
    ("100", "100", None, "integer", True),
    ("on", "on", None, "bool", True),
    ("true", "on", None, "bool", True),
    ("off", "on", None, "bool", False),
    ("Transaction", "transaction", None, "enum", True),
    ("0.9", "0.9", None, "real", True),
])
def test_values_are_compared_the_way_postgresql_reads_them(desired, setting, unit, vartype, same):
    assert tuning.compare_value(desired, setting, unit, vartype) is same


@pytest.mark.parametrize("desired, unit, vartype, match", [
    ("5min", "kB", "integer", "does not fit"), ("lots", "ms", "integer", "not a number"),
    ("maybe", None, "bool", "not a boolean"),
])
def test_a_value_the_setting_cannot_take_is_refused(desired, unit, vartype, match):
    with pytest.raises(tuning.SettingValueError, match=match):
        tuning.compare_value(desired, "1", unit, vartype)


def row(name, setting, context="user", unit=None, vartype="integer", pending=False, shown=None):
    return {"name": name, "setting": setting, "unit": unit, "vartype": vartype, "context": context,
            "pending_restart": pending, "shown": shown or setting}


def file_row(name, setting, seqno, source="postgresql.auto.conf", error=None):
    return {"name": name, "setting": setting, "seqno": seqno, "sourcefile": source, "error": error}


def test_plan_sets_what_differs_and_leaves_what_is_in_use():
    rows = [row("idle_in_transaction_session_timeout", "0", unit="ms"), row("log_lock_waits", "on", "superuser",
                                                                            vartype="bool")]
    out = tuning.plan(rows, [], {"idle_in_transaction_session_timeout": "5min", "log_lock_waits": "on"})
    assert out["to_set"] == ["idle_in_transaction_session_timeout"]
    assert [s["action"] for s in out["settings"]] == ["set", "ok"]
    assert out["restart_required"] is False


def test_a_restart_only_setting_already_in_the_files_is_pending_not_set_again():
    rows = [row("max_connections", "50", "postmaster", pending=True)]
    files = [file_row("max_connections", "50", 1, "testbed.conf"),
             file_row("max_connections", "100", 2, error=tuning.PENDING_ERROR)]
    out = tuning.plan(rows, files, {"max_connections": "100"})
    assert out["to_set"] == [] and out["restart_pending"] == ["max_connections"]
    assert out["settings"][0]["file_value"] == "100" and out["restart_required"] is True


def test_a_restart_only_setting_gets_set_when_the_files_hold_another_value():
    rows = [row("max_connections", "50", "postmaster")]
    out = tuning.plan(rows, [file_row("max_connections", "50", 1, "testbed.conf")], {"max_connections": "100"})
    assert out["to_set"] == ["max_connections"] and out["restart_required"] is True
    # In use and nothing in the files: the built-in default is what a restart keeps.
    ok = tuning.plan([row("max_connections", "100", "postmaster")], [], {"max_connections": "100"})
    assert ok["settings"][0]["action"] == "ok" and ok["restart_required"] is False


def test_a_bad_line_in_the_files_is_ignored_and_unreadable_files_fall_back_to_pending_restart():
    rows = [row("max_connections", "50", "postmaster", pending=True)]
    files = [file_row("max_connections", "lots", 3, error="invalid value")]
    assert tuning.plan(rows, files, {"max_connections": "100"})["to_set"] == ["max_connections"]
    blind = tuning.plan(rows, [], {"max_connections": "100"}, file_readable=False)
    assert blind["restart_pending"] == ["max_connections"]


def test_an_only_raise_setting_is_never_lowered():
    # The server allows 300; the tuned 100 would cut it: kept, not set, no restart asked for.
    out = tuning.plan([row("max_connections", "300", "postmaster")], [], {"max_connections": "100"},
                      only_raise=["max_connections"])
    assert out["to_set"] == [] and out["kept"] == ["max_connections"] and out["restart_required"] is False
    assert out["settings"][0]["action"] == "kept"
    # A higher value waiting in the files for a restart counts too (100 in use, 300 pending).
    files = [file_row("max_connections", "300", 2, error=tuning.PENDING_ERROR)]
    waiting = tuning.plan([row("max_connections", "100", "postmaster", pending=True)], files,
                          {"max_connections": "100"}, only_raise=["max_connections"])
    assert waiting["kept"] == ["max_connections"] and waiting["to_set"] == []
    # Below the tuned value it is raised as before; without only_raise it would be lowered.
    low = tuning.plan([row("max_connections", "50", "postmaster")], [], {"max_connections": "100"},
                      only_raise=["max_connections"])
    assert low["to_set"] == ["max_connections"]
    assert tuning.plan([row("max_connections", "300", "postmaster")], [], {"max_connections": "100"}
                       )["to_set"] == ["max_connections"]
    # Equal (in the setting's unit) is ok, not kept; a bool cannot be "only raised".
    same = tuning.plan([row("shared_buffers", "16384", "postmaster", unit="8kB")], [], {"shared_buffers": "128MB"},
                       only_raise=["shared_buffers"])
    assert same["settings"][0]["action"] == "ok"
    bad = tuning.plan([row("log_lock_waits", "on", vartype="bool")], [], {"log_lock_waits": "on"},
                      only_raise=["log_lock_waits"])
    assert bad["errors"] == ["log_lock_waits: only numeric settings can be kept from being lowered (this one is bool)"]


def test_a_kept_setting_is_a_low_finding_and_not_a_setting_to_tune():
    plan = tuning.plan([row("max_connections", "300", "postmaster")], [], {"max_connections": "100"},
                       only_raise=["max_connections"])
    out = f.db_performance_findings(ctx(pg=pg_result(["PG_CONNECTIONS_NEAR_LIMIT"]), tuning=plan,
                                        wanted={"max_connections": "100"}))
    assert "DB_SETTINGS_NOT_TUNED" not in codes(out)
    kept = next(x for x in out["findings"] if x["code"] == "DB_SETTING_KEPT_HIGHER")
    assert kept["severity"] == "low"
    assert kept["evidence"] == ["max_connections: 300 in use, tuned value 100 (only raised)"]
    files = [file_row("max_connections", "300", 2, error=tuning.PENDING_ERROR)]
    waiting = tuning.plan([row("max_connections", "100", "postmaster", pending=True)], files,
                          {"max_connections": "100"}, only_raise=["max_connections"])
    out = f.db_performance_findings(ctx(pg=pg_result(["PG_CONNECTIONS_NEAR_LIMIT"]), tuning=waiting,
                                        wanted={"max_connections": "100"}))
    kept = next(x for x in out["findings"] if x["code"] == "DB_SETTING_KEPT_HIGHER")
    assert kept["evidence"] == ["max_connections: 100 in use, 300 waiting in postgresql.auto.conf, tuned value 100 "
                                "(only raised)"]
    assert f.db_performance_only_raise({"max_connections": {"value": "100", "only_raise": True},
                                        "work_mem": {"value": "8MB"}}) == ["max_connections"]


def test_unknown_and_internal_settings_are_errors():
    out = tuning.plan([row("block_size", "8192", "internal")], [], {"block_size": "16384", "nope": "1"})
    assert out["errors"] == ["block_size: cannot be changed (internal)", "nope: no such setting on this server"]


# ------------------------------------------------------------------------ PgBouncer pools

def state(cl_waiting=0, maxwait=0, sv_active=2, pool_size=10):
    return {"pools": [{"database": "saasodoo", "user": "saasodoo", "cl_active": 40, "cl_waiting": cl_waiting,
                       "sv_active": sv_active, "sv_idle": 1, "sv_used": 0, "maxwait": maxwait, "maxwait_us": 0,
                       "pool_mode": "transaction"}],
            "databases": [{"name": "saasodoo", "pool_size": pool_size}], "config": {"default_pool_size": 20}}


def test_waiting_clients_mean_an_exhausted_pool_and_a_full_pool_is_a_warning():
    assert pgb.analyse(state()) == []
    waiting = pgb.analyse(state(cl_waiting=5, maxwait=3, sv_active=10))
    assert [x["code"] for x in waiting] == ["PGBOUNCER_CLIENTS_WAITING"]
    assert "5 client(s) wait" in waiting[0]["message"] and waiting[0]["evidence"]["pool_size"] == 10
    assert [x["code"] for x in pgb.analyse(state(sv_active=10))] == ["PGBOUNCER_POOL_FULL"]
    # A short wait is ordinary.
    assert [x["code"] for x in pgb.analyse(state(cl_waiting=1, maxwait=0, sv_active=10))] == ["PGBOUNCER_POOL_FULL"]


def test_show_refuses_anything_but_its_commands():
    with pytest.raises(ValueError, match="unsupported SHOW command"):
        pgb.show(None, "POOLS; DROP")
    assert pgb.parse_version("PgBouncer 1.18.0") == (1, 18, 0)


# ------------------------------------------------------------------------ the runbook's decisions

TUNED = {
    "max_connections": {"value": "100", "for": ["PG_CONNECTIONS_NEAR_LIMIT"]},
    "idle_in_transaction_session_timeout": {"value": "5min", "for": ["PG_CONNECTIONS_NEAR_LIMIT", "PG_BLOCKING_LOCKS"]},
    "log_lock_waits": {"value": "on", "for": ["PG_BLOCKING_LOCKS"]},
}


def test_only_the_settings_the_findings_call_for_are_wanted():
    assert f.db_performance_wanted_settings(TUNED, ["PG_BLOCKING_LOCKS"]) == {
        "idle_in_transaction_session_timeout": "5min", "log_lock_waits": "on"}
    assert f.db_performance_wanted_settings(TUNED, []) == {}
    assert f.db_performance_tuned_values(TUNED)["max_connections"] == "100"


def backend(env):
    return {"spec": {"template": {"spec": {"containers": [{"name": "backend", "env": env}]}}}}


def test_the_backend_points_at_the_pooler_only_with_both_host_and_port():
    names = {"host": "DB_HOST", "port": "DB_PORT"}
    pointed = f.db_performance_env_points_at(backend([{"name": "DB_HOST", "value": "pgb.ns.svc"},
                                                      {"name": "DB_PORT", "value": "6432"}]), "pgb.ns.svc", 6432, names)
    assert pointed == {"pointed": True, "host": "pgb.ns.svc", "port": "6432", "container": "backend"}
    assert not f.db_performance_env_points_at(backend([{"name": "DB_HOST", "value": "pgb.ns.svc"}]),
                                              "pgb.ns.svc", 6432, names)["pointed"]


def test_the_pgbouncer_ini_points_at_the_database_service_and_pools():
    ini = f.db_performance_pgbouncer_ini(
        {"port": 6432, "pool_mode": "transaction", "default_pool_size": 10, "max_client_conn": 500},
        {"name": "pg", "namespace": "sys", "port": 5432}, "saasodoo", "saasodoo", "cluster.local")
    parser = configparser.RawConfigParser(delimiters=("=",))
    parser.read_string(ini)
    assert parser["databases"]["saasodoo"] == "host=pg.sys.svc.cluster.local port=5432 dbname=saasodoo"
    assert parser["pgbouncer"]["pool_mode"] == "transaction"
    assert parser["pgbouncer"]["stats_users"] == "saasodoo"
    assert parser["pgbouncer"]["auth_type"] == "scram-sha-256"


def pg_result(codes=()):
    return {"findings": [{"code": c, "severity": "high", "message": c, "evidence": {}} for c in codes],
            "connections": {"total": 41, "max": 50, "by_user": {"saasodoo": 41}, "by_state": {"idle": 40}}}


def ctx(**kw):
    base = {"component": "postgres", "ref": "StatefulSet/sys/pg", "pg": pg_result(),
            "pooler": {"deployed": False, "ref": "Deployment/sys/pgb", "info": None},
            "backend": {"ref": "Deployment/sys/api", "pointed": False, "host": None, "port": None,
                        "want_host": "pgb.sys.svc", "want_port": 6432},
            "tuning": {"settings": []}, "wanted": {}, "oom": {"oomkilled": False}}
    base.update(kw)
    return base


def codes(result):
    return [x["code"] for x in result["findings"]]


def test_a_healthy_database_has_no_findings():
    assert f.db_performance_findings(ctx())["findings"] == []


def test_connection_pressure_without_a_pooler_asks_for_one_and_for_the_backend_to_use_it():
    plan = tuning.plan([row("max_connections", "50", "postmaster")], [], {"max_connections": "100"})
    out = f.db_performance_findings(ctx(pg=pg_result(["PG_CONNECTIONS_NEAR_LIMIT"]), tuning=plan,
                                        wanted={"max_connections": "100"}))
    assert out["pressure"] is True
    assert codes(out) == ["PG_CONNECTIONS_NEAR_LIMIT", "DB_POOLER_MISSING", "DB_BACKEND_NOT_POOLED",
                          "DB_SETTINGS_NOT_TUNED"]
    tuned = next(x for x in out["findings"] if x["code"] == "DB_SETTINGS_NOT_TUNED")
    assert tuned["evidence"] == ["max_connections: 50 -> 100 (needs a restart)"]
    assert out["findings"][0]["component"] == "postgres"


def test_a_deployed_pooler_the_backend_ignores_is_drift_and_a_pending_restart_is_reported():
    files = [file_row("max_connections", "100", 2, error=tuning.PENDING_ERROR)]
    plan = tuning.plan([row("max_connections", "50", "postmaster", pending=True)], files, {"max_connections": "100"})
    out = f.db_performance_findings(ctx(pooler={"deployed": True, "ref": "Deployment/sys/pgb", "info": {"findings": []}},
                                        tuning=plan))
    assert codes(out) == ["DB_BACKEND_NOT_POOLED", "DB_RESTART_PENDING"]
    assert [x["severity"] for x in out["findings"]] == ["medium", "medium"]
    assert "(restart pending)" in out["findings"][1]["message"]


def test_an_oomkilled_database_is_raised_or_handed_over_at_the_cap():
    from plugins.filter import backend_crashloop as bc

    plan = bc.backend_crashloop_memory_plan({"limits": {"memory": "4Gi"}, "requests": {"memory": "1Gi"}}, 1.5, "8Gi",
                                            True)
    out = f.db_performance_findings(ctx(oom={"oomkilled": True, "pods": ["pod pg-0: OOMKilled"], "plan": plan}))
    assert codes(out) == ["DB_OOMKILLED"]
    capped = bc.backend_crashloop_memory_plan({"limits": {"memory": "8Gi"}}, 1.5, "8Gi", True)
    out = f.db_performance_findings(ctx(oom={"oomkilled": True, "pods": [], "plan": capped}))
    assert codes(out) == ["DB_MEMORY_AT_CAP"]


BLOCKER = {"blocker_pid": 4242, "blocker_user": "saasodoo", "blocker_database": "saasodoo",
           "blocker_state": "idle in transaction", "blocker_query": "UPDATE tenants SET updated_at = now()",
           "blocked_count": 1}


def test_actions_say_what_was_done_or_would_be_done():
    before = {"wanted": {"max_connections": "100", "log_lock_waits": "on"},
              "tuning": [{"name": "max_connections", "restart_required": True},
                         {"name": "log_lock_waits", "restart_required": False}],
              "memory_plan": {"container": "postgres", "message": "memory limit 4Gi -> 6Gi (x1.5, cap 8Gi)"}}
    base = {"before": before, "set": ["log_lock_waits", "max_connections"], "pool": True,
            "pooler_ref": "Deployment/sys/pgb", "pgbouncer": {"pool_mode": "transaction", "default_pool_size": 10},
            "backend_ref": "Deployment/sys/api", "backend_env": {"DB_PORT": "6432", "DB_HOST": "pgb.sys.svc"},
            "probe": {"probe": {"ok": True}, "pools": [{"database": "saasodoo", "user": "saasodoo", "cl_active": 1,
                                                        "sv_idle": 1}]},
            "probe_endpoint": "127.0.0.1:58080", "raise": True, "ref": "StatefulSet/sys/pg",
            "blockers": [BLOCKER], "terminate": True, "max_terminations": 3, "terminated": [BLOCKER],
            "restarted": []}
    assert f.db_performance_actions(dict(base, check_mode=False)) == [
        "set log_lock_waits = on (ALTER SYSTEM; reloaded)",
        "set max_connections = 100 (ALTER SYSTEM; restart pending)",
        "deployed PgBouncer Deployment/sys/pgb with its Service, ConfigMap and Secret (pool_mode transaction, "
        "default_pool_size 10)",
        "pointed Deployment/sys/api at the pooler: DB_HOST=pgb.sys.svc, DB_PORT=6432",
        "verified pooling through PgBouncer at 127.0.0.1:58080: a query through it answered; pools: "
        "saasodoo/saasodoo: 1 client(s), 1 server connection(s)",
        "raised the memory of StatefulSet/sys/pg container postgres: memory limit 4Gi -> 6Gi (x1.5, cap 8Gi)",
        "terminated blocking session 4242 (its transaction was rolled back); its query: UPDATE tenants SET "
        "updated_at = now()",
    ]
    check = f.db_performance_actions(dict(base, check_mode=True, probe={}, terminated=[]))
    assert check[0] == "would set log_lock_waits = on (ALTER SYSTEM; reloaded)"
    assert check[-1] == "would terminate blocking session 4242; its query: UPDATE tenants SET updated_at = now()"


def test_handover_names_the_blocking_pid_and_query_unless_terminated_and_a_pending_restart():
    lines = f.db_performance_handover({"before": {"findings": []}, "blockers": [BLOCKER], "terminate": False,
                                       "pending": ["max_connections"], "allow_restart": False})
    assert lines[0].startswith("session 4242 (saasodoo on saasodoo, idle in transaction) blocks 1 session(s); "
                               "its query: UPDATE tenants SET updated_at = now() -> a human")
    assert "db_performance_terminate_blockers=true" in lines[0]
    assert lines[1].startswith("PostgreSQL needs a restart to apply max_connections (restart pending)")
    assert f.db_performance_handover({"before": {}, "blockers": [BLOCKER], "terminate": True, "max_terminations": 3,
                                      "pending": ["max_connections"], "allow_restart": True}) == []


def merged_documentation(module):
    """The module's DOCUMENTATION with its doc fragments (plugins/doc_fragments) merged in, as ansible-doc shows it."""
    fragment_loader.add_directory(str(Path(__file__).resolve().parents[2] / "plugins" / "doc_fragments"))
    return get_docstring(module.__file__, fragment_loader, is_module=True)[0]


# ------------------------------------------------------------------------ the modules' documentation

@pytest.mark.parametrize("module", [settings_module, pgbouncer_module], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_documentation_matches_the_argument_spec(module):
    doc = merged_documentation(module)
    spec = module.argument_spec()
    assert set(doc["options"]) == set(spec)
    for name, option in spec.items():
        documented = doc["options"][name]
        assert documented["type"] == option.get("type", "str"), name
        assert documented.get("default") == option.get("default"), name
        assert documented.get("choices") == option.get("choices"), name
        assert sorted(documented.get("aliases", [])) == sorted(option.get("aliases", [])), name
        assert bool(documented.get("required")) == bool(option.get("required")), name
    assert spec["login_password"]["no_log"] is True
    yaml.safe_load(module.RETURN)
    yaml.safe_load(module.EXAMPLES)
