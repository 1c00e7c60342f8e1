"""restore_backup alone, against the real PostgreSQL and a throwaway backend Deployment.

Every test works on a database of its own (restore_test_<random>, owned by saasodoo), a backup
store in a temporary folder and, where a backend is involved, a namespace of its own; all of them
are removed at the end. The platform database and namespace are never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from kubernetes import client

from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

PLAYBOOK = str(ROOT / "tests" / "integration" / "playbooks" / "restore_backup.yml")
PG = {"host": "127.0.0.1", "port": int(os.environ.get("SAASODOO_DB_PORT", "55432")), "user": "saasodoo",
      "password": os.environ.get("SAASODOO_DB_PASSWORD", "saasodoo-local")}
REPLICAS = 2
ANNOTATION = "saasodoo.io/replicas-before-stop"
ID_FORMAT = "%Y%m%dT%H%M%SZ"

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE invoices (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, amount numeric(10, 2));
CREATE TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 20) g;
INSERT INTO invoices SELECT g, 1 + g % 20, g * 1.25 FROM generate_series(1, 60) g;
INSERT INTO notes VALUES (1, 'première note, ünïcödé'), (2, NULL), (3, 'quote '' and backslash \\');
"""
DAMAGE = """
DELETE FROM invoices WHERE id > 7;
UPDATE customers SET name = 'garbage';
DROP TABLE notes;
"""


def _deployment(name: str) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "app", "image": "example/backend:1"}]}}}}


def _text(result) -> str:
    """The run's output with the callback's line wrapping undone."""
    return " ".join(result.stdout.split())


def _wait(check, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


class Scratch:
    """A database with known data, a backup store, and (on demand) a backend Deployment."""

    def __init__(self, tmp_path: Path):
        self.db = f"restore_test_{uuid.uuid4().hex[:8]}"
        self.store = tmp_path / "store"
        self.store.mkdir()
        self.ns: str | None = None
        self.sql(f'CREATE DATABASE "{self.db}"', db="postgres", autocommit=True)
        self.sql(SCHEMA)

    # --- PostgreSQL -------------------------------------------------------------------------
    def sql(self, statement: str, db: str | None = None, autocommit: bool = False) -> list[tuple]:
        with psycopg.connect(dbname=db or self.db, autocommit=autocommit, **PG) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def data(self, db: str | None = None) -> dict:
        """Every row of every table, sorted: what "the same data" means here."""
        tables = [t for (t,) in self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", db=db)]
        return {t: self.sql(f'SELECT * FROM "{t}" ORDER BY 1', db=db) for t in tables}

    def databases(self) -> dict[str, str | None]:
        """This test's databases (name -> comment)."""
        rows = self.sql("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                        f"WHERE datname LIKE '{self.db}%' ORDER BY 1", db="postgres")
        return dict(rows)

    # --- Backup store -----------------------------------------------------------------------
    def backups(self) -> list[Path]:
        folder = self.store / self.db
        return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.exists() else []

    @staticmethod
    def tamper(backup: Path) -> None:
        """Flip bytes in the middle of the dump: the manifest's checksum no longer matches."""
        dump = backup / "dump.pgdump"
        raw = bytearray(dump.read_bytes())
        for i in range(len(raw) // 2, len(raw) // 2 + 16):
            raw[i] ^= 0xFF
        dump.write_bytes(bytes(raw))

    # --- Backend ----------------------------------------------------------------------------
    def backend(self) -> dict:
        self.ns = f"rb-test-{uuid.uuid4().hex[:6]}"
        self.core = client.CoreV1Api(k8s_state.api_client())
        self.apps = client.AppsV1Api(k8s_state.api_client())
        self.core.create_namespace({"metadata": {"name": self.ns}})
        self.apps.create_namespaced_deployment(self.ns, _deployment("backend"))
        _wait(lambda: (self.deployment().status.ready_replicas or 0) == REPLICAS, "backend ready")
        return {"kind": "Deployment", "name": "backend", "namespace": self.ns}

    def deployment(self):
        return self.apps.read_namespaced_deployment("backend", self.ns)

    # --- Runs -------------------------------------------------------------------------------
    def run(self, check: bool = False, **extra):
        return run_playbook(PLAYBOOK, check=check, extravars={
            "restore_backup_db": self.db, "restore_backup_store": str(self.store), **extra})

    def backup(self):
        result = self.run(runbook_entry_point="backup")
        assert result.rc == 0, result.stdout[-3000:]
        return result

    def cleanup(self) -> None:
        for name in self.databases():
            self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', db="postgres", autocommit=True)
        if self.ns:
            self.core.delete_namespace(self.ns)


class ReplicaWatch:
    """Records every replica count of the backend seen while a run goes on."""

    def __init__(self, scratch: Scratch):
        self.scratch, self.seen, self._stop = scratch, set(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.seen.add(self.scratch.deployment().spec.replicas)
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture
def scratch(testbed, tmp_path):
    s = Scratch(tmp_path)
    yield s
    s.cleanup()
    shutil.rmtree(tmp_path, ignore_errors=True)


def _assert_backup_is_sound(scratch: Scratch, result) -> Path:
    [backup] = scratch.backups()
    assert sorted(p.name for p in backup.iterdir()) == ["dump.pgdump", "manifest.json"]
    assert not [p for p in (scratch.store / scratch.db).iterdir() if p.name.startswith(".")]
    manifest = json.loads((backup / "manifest.json").read_text())
    dump = (backup / "dump.pgdump").read_bytes()
    assert manifest["database"] == scratch.db and manifest["id"] == backup.name
    assert manifest["sha256"] == hashlib.sha256(dump).hexdigest() and manifest["size_bytes"] == len(dump)
    assert manifest["row_counts"] == {"public.customers": 20, "public.invoices": 60, "public.notes": 3}
    assert manifest["pg_dump_version"].startswith("pg_dump (PostgreSQL) 1")
    assert manifest["server_version"] and manifest["created_at"].endswith("Z") and manifest["tool_version"]
    assert result.artifacts["restore_backup_backup_result"]["location"] == str(backup)
    return backup


def test_backup_damage_restore_then_nothing_to_do(scratch):
    workload = scratch.backend()
    seeded = scratch.data()

    # Backup: check mode writes nothing; a real run writes one complete, verifiable backup.
    check = scratch.run(check=True, runbook_entry_point="backup")
    assert check.rc == 0, check.stdout[-3000:]
    assert scratch.backups() == [] and not (scratch.store / scratch.db).exists()
    assert check.artifacts["restore_backup_backup_result"]["created"] is False
    result = scratch.backup()
    assert result.changed > 0
    backup = _assert_backup_is_sound(scratch, result)

    scratch.sql(DAMAGE)
    damaged, dbs = scratch.data(), scratch.databases()
    args = {"restore_backup_backend_workload": workload}

    # Check mode and confirm=false diagnose and say what they would do; they change nothing.
    check = scratch.run(check=True, restore_backup_confirm=True, **args)
    assert check.rc == 0 and check.changed == 0, check.stdout[-3000:]
    assert check.artifacts["restore_backup_result"]["status"] == "would_restore"
    assert check.artifacts["restore_backup_result"]["check_mode"] is True
    unconfirmed = scratch.run(**args)
    assert unconfirmed.rc == 0 and unconfirmed.changed == 0, unconfirmed.stdout[-3000:]
    res = unconfirmed.artifacts["restore_backup_result"]
    assert res["message"].startswith(
        f"restore_backup_confirm is false: nothing was changed; would restore backup {backup.name}")
    assert "public.invoices has 7 rows, the backup 60" in res["live_differences"]
    assert "table public.notes is missing (the backup has 3 rows)" in res["live_differences"]
    assert scratch.data() == damaged and scratch.databases() == dbs
    assert scratch.deployment().spec.replicas == REPLICAS

    # The inspect entry point never restores, even confirmed (as AWX's extra var would confirm it).
    inspected = scratch.run(runbook_entry_point="inspect", restore_backup_confirm=True, **args)
    assert inspected.rc == 0 and inspected.changed == 0, inspected.stdout[-3000:]
    res = inspected.artifacts["restore_backup_result"]
    assert res["status"] == "would_restore" and res["chosen"]["id"] == backup.name and res["actions"] == []
    assert res["message"].startswith("inspection only (tasks_from: inspect): nothing was changed; would restore")
    assert [b["valid"] for b in res["backups"]] == [True]
    assert scratch.data() == damaged and scratch.databases() == dbs
    assert scratch.deployment().spec.replicas == REPLICAS

    # The restore.
    with ReplicaWatch(scratch) as watch:
        result = scratch.run(restore_backup_confirm=True, **args)
    assert result.rc == 0, result.stdout[-4000:]
    res = result.artifacts["restore_backup_result"]
    assert res["status"] == "restored" and res["chosen"]["id"] == backup.name
    assert scratch.data() == seeded
    # The damaged database is kept, renamed, with its damage.
    old = res["old_database_kept_as"]
    assert old.startswith(f"{scratch.db}_before_restore_") and old in scratch.databases()
    assert scratch.data(db=old) == damaged
    # The live database carries the backup it came from and the dump's checksum (what the rerun's
    # "up to date" is judged by), and only the damaged copy is kept beside it.
    sha = json.loads((backup / "manifest.json").read_text())["sha256"]
    assert scratch.databases()[scratch.db] == f"restore_backup:{backup.name}:sha256={sha[:16]}"
    assert set(scratch.databases()) == {scratch.db, old}
    # Writes were stopped during the swap and restored after it.
    assert 0 in watch.seen
    dep = scratch.deployment()
    assert dep.spec.replicas == REPLICAS and ANNOTATION not in (dep.metadata.annotations or {})
    assert [a["action"] for a in res["actions"]] == ["stop writes", "restore database", "restore writes"]
    stop, restore, back = res["actions"]
    assert (stop["before"]["replicas"], stop["after"]["replicas"]) == (REPLICAS, 0)
    assert (back["before"]["replicas"], back["after"]["replicas"]) == (0, REPLICAS)
    assert restore["before"]["rows"] == {"public.customers": 20, "public.invoices": 7}
    assert restore["after"]["rows"] == {"public.customers": 20, "public.invoices": 60, "public.notes": 3}
    assert res["rows_after"] == restore["after"]["rows"]

    # Same inputs again: the live database carries the backup; nothing to do.
    dbs = scratch.databases()
    again = scratch.run(restore_backup_confirm=True, **args)
    assert again.rc == 0 and again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["restore_backup_result"]["status"] == "up_to_date"
    assert again.artifacts["restore_backup_result"]["actions"] == []
    assert scratch.databases() == dbs and scratch.data() == seeded


def test_tampered_backups_are_never_restored(scratch):
    workload = scratch.backend()
    at_backup = scratch.data()
    scratch.backup()
    [older] = scratch.backups()
    # A newer backup that rotted on disk: a copy of the first one, its dump's bytes flipped.
    newer = older.with_name((datetime.strptime(older.name, ID_FORMAT) + timedelta(hours=1)).strftime(ID_FORMAT))
    shutil.copytree(older, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "id": newer.name}))
    scratch.tamper(newer)
    scratch.sql(DAMAGE)

    # The newest backup fails its checksum: refused; the older valid one is restored.
    result = scratch.run(restore_backup_confirm=True)
    assert result.rc == 0, result.stdout[-4000:]
    res = result.artifacts["restore_backup_result"]
    verdicts = {b["id"]: b for b in res["backups"]}
    assert verdicts[newer.name]["valid"] is False
    assert any(r.startswith("checksum mismatch") for r in verdicts[newer.name]["reasons"])
    assert verdicts[older.name]["valid"] is True and res["chosen"]["id"] == older.name
    assert scratch.data() == at_backup
    # No backend given: nothing to stop.
    assert [a["action"] for a in res["actions"]] == ["restore database"]

    # A manifest that does not describe its dump (a row count edited; the dump's checksum still
    # holds): the fresh database fails validation once the writes are stopped. Nothing is swapped,
    # the fresh copy is dropped, and the writes are restored all the same.
    manifest = json.loads((older / "manifest.json").read_text())
    manifest["row_counts"]["public.customers"] = 99
    (older / "manifest.json").write_text(json.dumps(manifest))
    live, dbs = scratch.data(), scratch.databases()
    with ReplicaWatch(scratch) as watch:
        failed = scratch.run(restore_backup_confirm=True, restore_backup_backend_workload=workload)
    assert failed.rc != 0
    assert (f"the database restored from backup {older.name} does not match its manifest: "
            "public.customers has 20 rows, the backup 99") in _text(failed)
    assert f"The live database {scratch.db} was not touched. Writes were restored." in _text(failed)
    assert scratch.data() == live and scratch.databases() == dbs
    assert 0 in watch.seen
    dep = scratch.deployment()
    assert dep.spec.replicas == REPLICAS and ANNOTATION not in (dep.metadata.annotations or {})

    # Only tampered backups left: refused, nothing changed, the backend left alone.
    scratch.tamper(older)
    scratch.sql(DAMAGE)
    damaged, dbs = scratch.data(), scratch.databases()
    refused = scratch.run(restore_backup_confirm=True, restore_backup_backend_workload=workload)
    assert refused.rc != 0
    assert f"no valid backup of {scratch.db}" in _text(refused)
    assert "checksum mismatch" in _text(refused) and "Nothing was changed" in _text(refused)
    assert scratch.data() == damaged and scratch.databases() == dbs
    dep = scratch.deployment()
    assert dep.spec.replicas == REPLICAS and ANNOTATION not in (dep.metadata.annotations or {})


def test_bad_input_is_refused_before_anything_changes(scratch):
    (scratch.store / scratch.db).mkdir()
    dbs = scratch.databases()

    missing = scratch.run(restore_backup_confirm=True, restore_backup_store=str(scratch.store / "not-mounted"))
    unknown = scratch.run(restore_backup_confirm=True, restore_backup_store_type="s3")

    assert missing.rc != 0
    assert f"the backup store {scratch.store / 'not-mounted'} (type directory) does not exist" in _text(missing)
    assert "Nothing was changed" in _text(missing)
    assert unknown.rc != 0
    assert "restore_backup_store_type must be one of: directory, got: s3" in _text(unknown)
    assert scratch.databases() == dbs
    assert [p.name for p in scratch.store.iterdir()] == [scratch.db] and not any((scratch.store / scratch.db).iterdir())
