"""data_loss.yml against the real PostgreSQL of the test bed and the sample platform's backend.

The module takes a real, verified backup of the platform database first (restore_backup's `backup`
entry point, into a store of its own), then damages the live database for real - rows deleted, a
tenant deleted with the foreign keys bypassed (a superuser's session_replication_role = replica),
leaving its users, subscription and audit entries pointing nowhere, and a row overwritten - and runs
the runbook: check mode and an unconfirmed run change nothing; a confirmed run restores every row,
scales the backend back, and a rerun changes nothing.

Teardown leaves the platform as the module found it: the database restored if a test left it
damaged, the databases the restores kept aside dropped, and testbed/services.sh up re-applies what
only a superuser can create (the pg_stat_statements extension, which the runbook's restore cannot).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from saasodoo_runbooks.api import runbooks_pointed_to
from testbed import faults, platform_vars, postgres_faults
from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

BACKUP_PLAYBOOK = str(ROOT / "tests" / "integration" / "playbooks" / "restore_backup.yml")
VARS = platform_vars.load()
DB = VARS["saasodoo_db_name"]
PG = {"host": VARS["saasodoo_db_host"], "port": int(VARS["saasodoo_db_port"]), "user": VARS["saasodoo_db_user"],
      "password": os.environ.get("SAASODOO_DB_PASSWORD", "saasodoo-local")}
REPLICAS_BEFORE_STOP = "saasodoo.io/replicas-before-stop"
STOPPED_BY = "saasodoo.io/stopped-by"

# Idempotent: a second application changes nothing more.
DAMAGE = """
SET session_replication_role = replica;
DELETE FROM tenants WHERE slug = 'initech';
DELETE FROM subscriptions WHERE plan = 'basic-monthly';
UPDATE users SET email = 'corrupted-' || id || '@invalid' WHERE email = 'admin@acme.example';
"""
RESTORE_TRIGGERS = {"DB_FK_ORPHANS", "DB_ROWS_MISSING"}


def _sql(statement: str, db: str = DB) -> list[tuple]:
    with psycopg.connect(dbname=db, autocommit=True, **PG) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def _data() -> dict:
    """Every row of every table of the platform database, sorted."""
    tables = [t for (t,) in _sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
    return {t: _sql(f'SELECT * FROM "{t}" ORDER BY 1') for t in tables}


def _databases() -> set[str]:
    return {d for (d,) in _sql(f"SELECT datname FROM pg_database WHERE datname LIKE '{DB}%'", db="postgres")}


def _backend():
    return faults._workload(VARS["saasodoo_components"]["backend"])


def _codes(report: dict) -> set[str]:
    return {f["code"] for f in report["findings"]}


@pytest.fixture(scope="module")
def backup(platform, tmp_path_factory):
    """A verified backup of the intact platform database, in a store of the module's own."""
    if not postgres_faults.server_running():
        postgres_faults.start_server()
    faults.wait_healthy("backend")
    store = tmp_path_factory.mktemp("data-loss-store")
    databases = _databases()
    original = _data()
    result = run_playbook(BACKUP_PLAYBOOK, extravars={"runbook_entry_point": "backup",
                                                      "restore_backup_store": str(store)})
    assert result.rc == 0, result.stdout[-3000:]
    taken = result.artifacts["restore_backup_backup_result"]
    yield {"store": str(store), "id": taken["id"], "original": original}

    if _data() != original:
        # A test stopped half-way: put the backup back with the role alone.
        healed = run_playbook(BACKUP_PLAYBOOK, extravars={
            "restore_backup_store": str(store), "restore_backup_confirm": True,
            "restore_backup_restore_exit_on_error": False,
            "restore_backup_backend_workload": {k: VARS["saasodoo_components"]["backend"][k]
                                               for k in ("kind", "name", "namespace")}})
        assert healed.rc == 0, healed.stdout[-3000:]
    for name in _databases() - databases:
        _sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', db="postgres")
    postgres_faults.start_server()  # re-creates pg_stat_statements, which only a superuser can
    faults.wait_healthy("backend")


def _run(backup: dict, check: bool = False, **extra):
    return run_playbook("data_loss.yml", check=check,
                        extravars={"data_loss_backup_store": backup["store"], "data_loss_cooldown_minutes": 0, **extra})


def _damage() -> None:
    postgres_faults.superuser_sql(DAMAGE)


def test_check_mode_and_unconfirmed_run_change_nothing(platform, backup):
    _damage()
    damaged = _data()
    assert damaged != backup["original"]
    databases = _databases()
    ns = platform["saasodoo_platform_namespace"]
    cluster = k8s_state.snapshot([ns])
    backend = platform["saasodoo_components"]["backend"]
    ref = f"Deployment/{ns}/{backend['name']}"

    # As AWX's workflow launches it: job type check, its confirmation variable set.
    dry = _run(backup, check=True, restore_backup_confirm="yes")

    assert dry.rc == 0, dry.stdout[-3000:]
    report = dry.artifacts["data_loss_report"]
    assert RESTORE_TRIGGERS | {"DB_ROWS_CHANGED"} <= _codes(report), report["findings"]
    orphans = next(f for f in report["findings"] if f["code"] == "DB_FK_ORPHANS")
    assert orphans["severity"] == "critical"
    assert any("public.users.tenant_id -> public.tenants(id): 2 orphaned" in e for e in orphans["evidence"]), orphans
    missing = next(f for f in report["findings"] if f["code"] == "DB_ROWS_MISSING")
    assert "public.subscriptions has 2, the backup 3" in missing["message"]
    assert report["decision"] == "would_restore" and report["confirmed"] is True
    assert report["backup"]["id"] == backup["id"]
    assert f"would stop writes: scale {ref} from {backend['replicas']} to 0 replicas (scale_backend records " \
           f"{backend['replicas']})" in report["actions"]
    assert any(a.startswith(f"would restore backup {backup['id']} ") for a in report["actions"]), report["actions"]
    assert f"would restore writes: scale {ref} back to {backend['replicas']} replicas" in report["actions"]
    assert any("check mode, nothing was changed" in h for h in report["handed_over"])
    assert report["escalation"]["level"] == "critical"
    assert _data() == damaged and _databases() == databases
    assert k8s_state.diff(cluster, k8s_state.snapshot([ns])) == []

    unconfirmed = _run(backup)

    assert unconfirmed.rc == 0, unconfirmed.stdout[-3000:]
    assert unconfirmed.changed == 0
    report = unconfirmed.artifacts["data_loss_report"]
    assert RESTORE_TRIGGERS <= _codes(report)
    assert report["decision"] == "would_restore" and report["confirmed"] is False
    assert any("data_loss_confirm_restore is false, nothing was changed" in h and "data_loss_confirm_restore=true" in h
               for h in report["handed_over"]), report["handed_over"]
    assert report["healthy_after"] is False and report["escalation"]["level"] == "critical"
    assert _data() == damaged and _databases() == databases
    assert k8s_state.diff(cluster, k8s_state.snapshot([ns])) == []


def test_platform_down_names_the_damage_and_hands_it_over_to_data_loss(platform, backup):
    """Platform Down's recovery step "restore from backup if data corruption detected": platform_down
    finds the damage (against the newest backup of the same store), names the data layer, leaves the
    writers and the database alone, and points to data_loss.yml (what the CLI's `auto` step runs next)."""
    _damage()
    damaged = _data()
    databases = _databases()
    ns = platform["saasodoo_platform_namespace"]
    cluster = k8s_state.snapshot([ns])

    result = run_playbook("platform_down.yml", extravars={"platform_down_backup_store": backup["store"]})

    assert result.rc == 0, result.stdout[-3000:]
    assert result.changed == 0, result.stdout[-3000:]
    report = result.artifacts["platform_down_report"]
    damage = [f for f in report["findings"] if f["code"] in RESTORE_TRIGGERS]
    assert {f["code"] for f in damage} == RESTORE_TRIGGERS, report["findings"]
    assert all(f["layer"] == "data" and f["runbook"] == "data_loss" and f["severity"] == "critical" for f in damage)
    assert report["first_broken_layer"] == "data"
    assert any(h.startswith(f"database {DB} is damaged (") and "-> data_loss.yml" in h for h in report["handed_over"]), \
        report["handed_over"]
    assert report["actions"] == [] and report["escalation"]["level"] == "critical"
    assert runbooks_pointed_to(report, {"data_loss", "platform_down"}) == ["data_loss"]
    assert PG["password"] not in result.stdout  # the database password never shows
    assert _data() == damaged and _databases() == databases
    assert k8s_state.diff(cluster, k8s_state.snapshot([ns])) == []


def test_a_confirmed_restore_waits_for_the_run_holding_the_lease(platform, backup):
    """Another live run (platform_down, say) holds the platform's one-writer Lease: the confirmed restore
    assesses and reports, but stops no writer and restores nothing, and says who holds the Lease."""
    _damage()
    damaged, databases = _data(), _databases()
    ns = platform["saasodoo_platform_namespace"]
    other_run = faults.lease_held("platform_down/ci-3/20261207T030000Z/7", details={"runbook": "platform_down"})
    try:
        cluster = k8s_state.snapshot([ns])
        result = _run(backup, data_loss_confirm_restore=True)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["data_loss_report"]
        assert RESTORE_TRIGGERS <= _codes(report) and report["actions"] == []
        held = [h for h in report["handed_over"] if "holds the one-writer" in h]
        assert len(held) == 1 and "platform_down/ci-3/20261207T030000Z/7 (runbook platform_down) since " in held[0]
        assert _data() == damaged and _databases() == databases
        assert k8s_state.diff(cluster, k8s_state.snapshot([ns])) == []
        assert faults.read_lease().spec.holder_identity == "platform_down/ci-3/20261207T030000Z/7"
    finally:
        other_run.undo()


def test_confirmed_restore_brings_every_row_back_and_rerun_changes_nothing(platform, backup):
    _damage()
    databases = _databases()
    ns = platform["saasodoo_platform_namespace"]
    backend = platform["saasodoo_components"]["backend"]
    ref = f"Deployment/{ns}/{backend['name']}"

    result = _run(backup, data_loss_confirm_restore=True)

    assert result.rc == 0, result.stdout[-3000:]
    assert result.changed > 0
    report = result.artifacts["data_loss_report"]
    assert RESTORE_TRIGGERS <= _codes(report), report["findings"]
    assert report["decision"] == "restore"
    assert report["actions"][0] == f"stopped writes: scaled {ref} from {backend['replicas']} to 0 replicas"
    assert report["actions"][1].startswith(f"restored backup {backup['id']} into database {DB} ")
    assert report["actions"][2] == f"restored writes: scaled {ref} from 0 back to {backend['replicas']} replicas"
    assert report["healthy_after"] is True, report["remaining"]
    assert [f for f in report["remaining"] if f["severity"] != "low"] == []
    assert report["damage_after"]["rows_missing"] == 0 and report["damage_after"]["orphans"] == 0
    assert report["escalation"]["level"] == "medium"  # resolved; the root cause deserves a review
    # Really healed: every row of every table as it was when the backup was taken.
    assert _data() == backup["original"]
    kept = _databases() - databases
    assert len(kept) == 1 and next(iter(kept)).startswith(f"{DB}_before_restore_"), kept
    # The damaged database is kept aside, as it was.
    assert _sql("SELECT count(*) FROM subscriptions", db=next(iter(kept))) == [(2,)]
    workload = _backend()
    assert workload.spec.replicas == backend["replicas"]
    assert (workload.status.ready_replicas or 0) == backend["replicas"]
    assert REPLICAS_BEFORE_STOP not in (workload.metadata.annotations or {})

    again = _run(backup, data_loss_confirm_restore=True)

    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    report = again.artifacts["data_loss_report"]
    assert report["findings"] == [] and report["decision"] == "none" and report["actions"] == []
    assert _databases() - databases == kept


def test_conflicting_confirmations_are_refused_before_anything_changes(platform, backup):
    databases = _databases()
    data = _data()

    result = _run(backup, data_loss_confirm_restore=True, restore_backup_confirm=False)

    assert result.rc != 0
    assert "two different answers" in " ".join(result.stdout.split())
    assert "AUDIT | Verify the backups" not in result.stdout
    assert _data() == data and _databases() == databases


def _start_killable(backup: dict, **extra) -> subprocess.Popen:
    """A confirmed data_loss run as its own process group, for SIGKILL - what an AWX timeout or a lost
    CI runner does to a run: no rescue, no always, no report."""
    extravars = {"data_loss_backup_store": backup["store"], "data_loss_cooldown_minutes": 0,
                 "data_loss_confirm_restore": True, **extra}
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(ROOT / "inventories" / "local"),
         str(ROOT / "playbooks" / "data_loss.yml"), "-e", json.dumps(extravars)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill_when(proc: subprocess.Popen, what: str, ready, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_lease_expired() -> None:
    lease = faults.read_lease()
    expires = lease.spec.renew_time + timedelta(seconds=lease.spec.lease_duration_seconds)
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 1)


def test_restores_killed_mid_run_are_recognised_and_the_writes_come_back(platform, backup):
    """Restores SIGKILLed half-way, and what the next runs make of it.

    Run 1 is killed once its fresh database exists (writes stopped, nothing swapped): an unconfirmed
    run names it and leaves the writes stopped (the database still needs the restore); a confirmed
    one takes over its expired lease, restores, and brings the backend back to the replicas recorded
    before the stop (not the 0 it found). Run 2, on a database damaged again, is killed right after
    its swap (data restored, writes still stopped): an unconfirmed run brings the writes back at once.
    The fresh database run 1 left is reported, never dropped; every damaged copy is kept; a rerun
    changes nothing."""
    _damage()
    damaged, databases = _data(), _databases()
    ns = platform["saasodoo_platform_namespace"]
    backend = platform["saasodoo_components"]["backend"]
    ref = f"Deployment/{ns}/{backend['name']}"
    short_lease = {**VARS["saasodoo_lease"], "duration_seconds": 12}
    fresh = re.compile(rf"^{DB}_restore_[0-9]+$")
    kept = re.compile(rf"^{DB}_before_restore_[0-9]+$")

    def new(pattern):
        return sorted(d for d in _databases() - databases if pattern.match(d))

    def stopped_by(report):
        return [f["message"] for f in report["findings"] if f["code"] == "DATA_LOSS_WRITES_STOPPED"]
    try:
        # Run 1, killed once its fresh database exists.
        _kill_when(_start_killable(backup, saasodoo_lease=short_lease), "fresh restore database", lambda: new(fresh))
        workload = _backend()
        notes = workload.metadata.annotations or {}
        first_run = notes.get(STOPPED_BY)
        assert workload.spec.replicas == 0 and notes.get(REPLICAS_BEFORE_STOP) == str(backend["replicas"]), notes
        assert first_run and first_run.startswith("data_loss/") and faults.read_lease().spec.holder_identity == first_run
        leftover = new(fresh)
        assert len(leftover) == 1 and _data() == damaged and not new(kept)
        _wait_lease_expired()

        # Unconfirmed: named, reported, nothing changed - the writes stay stopped.
        held = _run(backup)

        assert held.rc == 0 and held.changed == 0, held.stdout[-3000:]
        report = held.artifacts["data_loss_report"]
        assert len(stopped_by(report)) == 1 and first_run in stopped_by(report)[0], report["findings"]
        assert report["decision"] == "would_restore"
        assert any(h.startswith(f"{ref} stays at 0 replicas (stopped by the interrupted run {first_run})")
                   for h in report["handed_over"]), report["handed_over"]
        assert _backend().spec.replicas == 0 and _data() == damaged

        # Confirmed: restored, and the writes come back to the count recorded before the stop.
        restored = _run(backup, data_loss_confirm_restore=True)

        assert restored.rc == 0, restored.stdout[-3000:]
        report = restored.artifacts["data_loss_report"]
        assert report["decision"] == "restore" and first_run in stopped_by(report)[0]
        assert any("took over the one-writer Lease" in a and first_run in a for a in report["actions"]), report["actions"]
        assert f"restored writes: scaled {ref} from 0 back to {backend['replicas']} replicas" in report["actions"]
        # Left: the leftover (reported, low) and the extension pg_restore cannot recreate (low, as in every restore).
        assert {f["code"] for f in report["remaining"]} == {"DB_RESTORE_LEFTOVER", "DATA_LOSS_RESTORE_INCOMPLETE"}, \
            report["remaining"]
        assert [f["ref"] for f in report["remaining"] if f["code"] == "DB_RESTORE_LEFTOVER"] == [f"database {leftover[0]}"]
        workload = _backend()
        assert workload.spec.replicas == backend["replicas"]
        assert (workload.status.ready_replicas or 0) == backend["replicas"]
        assert not {REPLICAS_BEFORE_STOP, STOPPED_BY} & set(workload.metadata.annotations or {})
        assert _data() == backup["original"] and faults.read_lease() is None
        assert len(new(kept)) == 1 and new(fresh) == leftover          # the leftover is not dropped

        # Run 2, on a database damaged again, killed right after its swap.
        _damage()
        _kill_when(_start_killable(backup, saasodoo_lease=short_lease), "swap", lambda: len(new(kept)) == 2)
        workload = _backend()
        second_run = (workload.metadata.annotations or {}).get(STOPPED_BY)
        assert workload.spec.replicas == 0 and second_run and second_run != first_run
        assert faults.read_lease().spec.holder_identity == second_run
        assert _data() == backup["original"]
        _wait_lease_expired()

        # Unconfirmed: the database is intact, so the writes come back at once.
        result = _run(backup)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["data_loss_report"]
        assert len(stopped_by(report)) == 1 and second_run in stopped_by(report)[0], report["findings"]
        assert report["decision"] == "none"
        assert any(a.startswith(f"writes brought back after the interrupted run {second_run}: {ref}: scaled from 0 "
                                f"back to the recorded {backend['replicas']}") for a in report["actions"]), report["actions"]
        assert any("took over the one-writer Lease" in a and second_run in a for a in report["actions"]), report["actions"]
        # Read from the cluster and the server before anything is cleaned up.
        workload = _backend()
        assert workload.spec.replicas == backend["replicas"]
        assert (workload.status.ready_replicas or 0) == backend["replicas"]
        assert not {REPLICAS_BEFORE_STOP, STOPPED_BY} & set(workload.metadata.annotations or {})
        assert faults.read_lease() is None
        assert _data() == backup["original"]
        assert new(fresh) == leftover and len(new(kept)) == 2     # nothing dropped: both damaged copies kept
        assert all(_sql("SELECT count(*) FROM subscriptions", db=d) == [(2,)] for d in new(kept))
        assert [f["code"] for f in report["remaining"]] == ["DB_RESTORE_LEFTOVER"], report["remaining"]

        again = _run(backup)

        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        report = again.artifacts["data_loss_report"]
        assert _codes(report) == {"DB_RESTORE_LEFTOVER"} and report["actions"] == []
    finally:
        faults.delete_lease()
        workload = _backend()
        if workload.spec.replicas == 0:
            faults.apps().patch_namespaced_deployment(workload.metadata.name, workload.metadata.namespace, {
                "metadata": {"annotations": {REPLICAS_BEFORE_STOP: None, STOPPED_BY: None}},
                "spec": {"replicas": backend["replicas"]}})
            faults.wait_healthy("backend")
        for name in new(fresh):
            _sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', db="postgres")
