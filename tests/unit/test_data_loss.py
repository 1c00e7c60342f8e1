"""data_loss.yml's decisions on hand-made results: restore or not, guard rails, backup findings."""

from __future__ import annotations

import pytest

from plugins.filter import data_loss as f

NOW = "2026-01-02T12:00:00Z"
CHOSEN = {"id": "20260102T110000Z", "created_at": "2026-01-02T11:00:00Z", "path": "/store/saasodoo/20260102T110000Z"}
BACKUPS = {"error": "", "store": "/store", "backups": [dict(CHOSEN, valid=True, reasons=[])], "chosen": CHOSEN}
SETTINGS = {"restore_on": ["DB_DATABASE_MISSING", "DB_TABLE_MISSING", "DB_ROWS_MISSING", "DB_FK_ORPHANS"],
            "max_backup_age_hours": 24, "max_rows_discarded": 100, "cooldown_minutes": 60, "confirm": True,
            "check_mode": False, "now": NOW, "database": "saasodoo",
            "backend": {"ref": "Deployment/saasodoo-system/saasodoo-backend", "replicas": 2}}


def integrity(*codes, rows_added=0, kept=None):
    return {"database": "saasodoo",
            "findings": [{"code": c, "severity": "critical", "message": c + " happened"} for c in codes],
            "summary": {"rows_added": rows_added}, "kept_databases": kept or []}


def settings(**overrides):
    return dict(SETTINGS, **overrides)


def test_nothing_to_restore_without_a_trigger():
    plan = f.data_loss_plan(integrity("DB_ROWS_CHANGED", "DB_ROWS_ADDED"), BACKUPS, settings())
    assert plan == {"decision": "none", "triggers": [], "blockers": [], "actions": [], "handed_over": []}


def test_confirmed_damage_is_restored():
    plan = f.data_loss_plan(integrity("DB_ROWS_MISSING", "DB_FK_ORPHANS"), BACKUPS, settings())
    assert plan["decision"] == "restore"
    assert plan["triggers"] == ["DB_FK_ORPHANS", "DB_ROWS_MISSING"]
    assert plan["blockers"] == [] and plan["handed_over"] == []


@pytest.mark.parametrize("overrides, says", [
    ({"confirm": False}, "data_loss_confirm_restore is false, nothing was changed"),
    ({"check_mode": True}, "check mode, nothing was changed"),
])
def test_unconfirmed_or_check_mode_says_what_it_would_do(overrides, says):
    plan = f.data_loss_plan(integrity("DB_ROWS_MISSING", rows_added=3), BACKUPS, settings(**overrides))
    assert plan["decision"] == "would_restore"
    assert plan["actions"] == [
        "would stop writes: scale Deployment/saasodoo-system/saasodoo-backend from 2 to 0 replicas "
        "(scale_backend records 2)",
        "would restore backup 20260102T110000Z (created 2026-01-02T11:00:00Z, /store/saasodoo/20260102T110000Z) "
        "into database saasodoo, keeping the current one as saasodoo_before_restore_20260102120000",
        "would validate the restored tables and row counts against the backup's manifest, then compare it row by row",
        "would restore writes: scale Deployment/saasodoo-system/saasodoo-backend back to 2 replicas",
        "would take 3 row(s) written since the backup out of the live database (kept in the old one)",
    ]
    assert len(plan["handed_over"]) == 1 and says in plan["handed_over"][0]
    assert "data_loss_confirm_restore=true" in plan["handed_over"][0]


def test_unreachable_database_cannot_be_assessed_and_goes_to_postgres_connection():
    plan = f.data_loss_plan(integrity("PG_UNREACHABLE", "DB_ROWS_MISSING"), BACKUPS, settings())
    assert plan["decision"] == "cannot_assess"
    assert "postgres_connection.yml" in plan["handed_over"][0]


@pytest.mark.parametrize("backups, result, why", [
    (dict(BACKUPS, chosen=None, backups=[]), {}, "no verified backup"),
    (dict(BACKUPS, chosen=dict(CHOSEN, created_at="2025-12-30T00:00:00Z")), {}, "(data_loss_max_backup_age_hours)"),
    (BACKUPS, {"rows_added": 101}, "101 rows written since the backup"),
    (BACKUPS, {"kept": [{"name": "saasodoo_before_restore_20260102113000", "restored_at": "2026-01-02T11:30:00Z"}]},
     "restored 30 min ago; cooldown of 60 min (data_loss_cooldown_minutes) has 30 min left"),
])
def test_guard_rails_block_the_restore(backups, result, why):
    plan = f.data_loss_plan(integrity("DB_TABLE_MISSING", **result), backups, settings())
    assert plan["decision"] == "blocked"
    assert any(why in b["why"] for b in plan["blockers"]), plan["blockers"]
    assert plan["actions"] == []
    assert "which this runbook will not do" in plan["handed_over"][0]


def test_cooldown_zero_and_old_restores_do_not_block():
    kept = [{"name": "saasodoo_before_restore_20260102113000", "restored_at": "2026-01-02T11:30:00Z"}]
    assert f.data_loss_plan(integrity("DB_ROWS_MISSING", kept=kept), BACKUPS,
                            settings(cooldown_minutes=0))["decision"] == "restore"
    assert f.data_loss_plan(integrity("DB_ROWS_MISSING", kept=kept), BACKUPS,
                            settings(cooldown_minutes=20))["decision"] == "restore"


def test_backup_findings():
    assert f.data_loss_backup_findings(BACKUPS, 24, NOW) == []
    stale = f.data_loss_backup_findings(dict(BACKUPS, chosen=dict(CHOSEN, created_at="2025-12-31T00:00:00Z")), 24, NOW)
    assert [x["code"] for x in stale] == ["BACKUP_STALE"] and "60.0 h old" in stale[0]["message"]
    invalid = dict(id="20260102T115000Z", valid=False, reasons=["checksum mismatch"])
    found = f.data_loss_backup_findings(dict(BACKUPS, backups=[invalid] + BACKUPS["backups"]), 24, NOW)
    assert [x["code"] for x in found] == ["BACKUP_INVALID"] and found[0]["severity"] == "high"
    assert "checksum mismatch" in found[0]["message"]
    none = f.data_loss_backup_findings({"error": "restore_backup: no valid backup of saasodoo", "store": "/s",
                                        "backups": [invalid], "chosen": None}, 24, NOW)
    assert [x["code"] for x in none] == ["BACKUP_INVALID", "BACKUP_NONE_VALID"]
    missing = f.data_loss_backup_findings({"error": "restore_backup: the backup store /s (type directory) does not "
                                                    "exist. Nothing was changed.", "store": "/s"}, 24, NOW)
    assert [x["code"] for x in missing] == ["BACKUP_STORE_MISSING"]
    other = f.data_loss_backup_findings({"error": "boom", "store": "/s", "backups": [], "chosen": None}, 24, NOW)
    assert [x["code"] for x in other] == ["BACKUP_DIAGNOSIS_FAILED"]


def test_actions_from_restore_backup_result():
    result = {"actions": [
        {"action": "stop writes", "workload": "Deployment/ns/b", "before": {"replicas": 2}, "after": {"replicas": 0}},
        {"action": "restore database", "database": "saasodoo", "backup": "B1", "old_database_kept_as": "saasodoo_x",
         "before": {"rows": {"a": 1, "b": 2}}, "after": {"rows": {"a": 3, "b": 2}},
         "pg_restore_errors": ["pg_restore: error: could not execute query: ERROR:  permission denied",
                               "pg_restore: warning: errors ignored on restore: 1"]},
        {"action": "restore writes", "workload": "Deployment/ns/b", "before": {"replicas": 0}, "after": {"replicas": 2}},
    ]}
    assert f.data_loss_actions(result) == [
        "stopped writes: scaled Deployment/ns/b from 2 to 0 replicas",
        "restored backup B1 into database saasodoo (3 rows before, 5 after); the damaged database is kept as "
        "saasodoo_x; pg_restore reported 1 tolerated error(s), every table and row count still matched",
        "restored writes: scaled Deployment/ns/b from 0 back to 2 replicas",
    ]
    assert f.data_loss_actions(None) == []
