"""saasodoo_pg_integrity's judgement on hand-made data: dump parsing, row comparison, findings.

The real PostgreSQL and a real backup are in tests/integration/test_data_loss.py.
"""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from plugins.module_utils import saasodoo_findings, saasodoo_redact

sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
sys.modules.setdefault("ansible.module_utils.saasodoo_redact", saasodoo_redact)
pg = importlib.import_module("plugins.module_utils.saasodoo_pg")
sys.modules.setdefault("ansible.module_utils.saasodoo_pg", pg)
integrity = importlib.import_module("plugins.modules.saasodoo_pg_integrity")

DUMP = b"""--
-- PostgreSQL database dump
--
SET client_encoding = 'UTF8';

COPY public.tenants (id, slug, tier) FROM stdin;
1\tacme\tpremium
2\tglobex\tbasic
\\.


COPY public."Odd Table" (id, "first, name", note) FROM stdin;
7\tx\t\\N
\\.

SELECT pg_catalog.setval('public.tenants_id_seq', 2, true);
"""


def table(name, backup_rows, live_rows, live=True, in_backup=True, checked=False, lost=None, added=None, **extra):
    entry = {"table": name, "in_backup": in_backup, "live": live, "backup_rows": backup_rows, "live_rows": live_rows,
             "content_checked": checked, "rows_lost": lost, "rows_added": added, "equal": None, "lost_keys": [],
             "added_keys": [], "checksum_backup": None, "checksum_live": None, "why": None}
    entry.update(extra)
    return entry


BACKUP = {"id": "20260101T120000Z", "created_at": "2026-01-01T12:00:00Z"}


def codes(findings):
    return sorted(f["code"] for f in findings)


def test_split_identifiers_handles_quotes_and_commas():
    assert integrity.split_identifiers('id, "first, name", "say ""hi""", x') == ["id", "first, name", 'say "hi"', "x"]
    assert integrity.split_identifiers("") == []


def test_parse_copy_output_reads_every_table_and_row():
    tables = integrity.parse_copy_output(DUMP)
    assert sorted(tables) == ['public."Odd Table"', "public.tenants"]
    assert tables["public.tenants"] == {"columns": ["id", "slug", "tier"],
                                        "rows": [b"1\tacme\tpremium", b"2\tglobex\tbasic"]}
    assert tables['public."Odd Table"']["columns"] == ["id", "first, name", "note"]
    assert tables['public."Odd Table"']["rows"] == [b"7\tx\t\\N"]


def test_split_copy_rows():
    assert integrity.split_copy_rows(b"1\ta\n2\tb\n") == [b"1\ta", b"2\tb"]
    assert integrity.split_copy_rows(b"") == []


def test_compare_rows_is_order_independent_and_tells_lost_from_added():
    columns, keys = ["id", "slug"], ["id"]
    same = integrity.compare_rows([b"1\ta", b"2\tb"], [b"2\tb", b"1\ta"], columns, keys)
    assert same["equal"] and same["rows_lost"] == 0 and same["checksum_backup"] == same["checksum_live"]

    changed = integrity.compare_rows([b"1\ta", b"2\tb", b"3\tc"], [b"1\ta", b"2\tXX", b"4\td"], columns, keys)
    assert not changed["equal"]
    assert changed["rows_lost"] == 2 and changed["lost_keys"] == ["id=2", "id=3"]
    assert changed["rows_added"] == 2 and changed["added_keys"] == ["id=2", "id=4"]
    assert changed["checksum_backup"] != changed["checksum_live"]


def test_compare_rows_counts_duplicates():
    result = integrity.compare_rows([b"x", b"x"], [b"x"], ["v"], [])
    assert result["rows_lost"] == 1 and result["lost_keys"] == []  # no key column: no key shown


def test_row_key_never_shows_more_than_the_key():
    assert integrity.row_key(b"5\tsecret@example.com\t\\N", ["id", "email", "tenant_id"], ["id", "tenant_id"]) \
        == "id=5, tenant_id=NULL"


def test_kept_database_time():
    assert integrity.kept_database_time("saasodoo_before_restore_20260101120500", "saasodoo") == "2026-01-01T12:05:00Z"
    assert integrity.kept_database_time("saasodoo_before_restore_x", "saasodoo") is None
    assert integrity.kept_database_time("other_before_restore_20260101120500", "saasodoo") is None


def test_a_leftover_restore_database_is_a_low_finding_that_names_it():
    found = integrity.leftover_findings("saasodoo", [
        {"name": "saasodoo_restore_20261207031500", "comment": "saasodoo-restore backup=b1", "size_bytes": 8192}])
    assert [(f["code"], f["severity"], f["ref"]) for f in found] == [
        ("DB_RESTORE_LEFTOVER", "low", "database saasodoo_restore_20261207031500")]
    assert "never swapped in" in found[0]["message"] and "backup=b1" in found[0]["message"]
    assert 'DROP DATABASE "saasodoo_restore_20261207031500"' in found[0]["remediation"]
    assert integrity.leftover_findings("saasodoo", []) == []


def test_read_manifest_refuses_what_is_not_a_backup(tmp_path):
    with pytest.raises(saasodoo_findings.DiagnosisError, match="Cannot read"):
        integrity.read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(saasodoo_findings.DiagnosisError, match="not valid JSON"):
        integrity.read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"id": "x"}))
    with pytest.raises(saasodoo_findings.DiagnosisError, match="no row_counts"):
        integrity.read_manifest(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"id": "x", "row_counts": {"public.t": 1}}))
    assert integrity.read_manifest(str(tmp_path))["row_counts"] == {"public.t": 1}


def test_an_intact_database_has_no_findings():
    tables = [table("public.tenants", 3, 3, checked=True, lost=0, added=0)]
    fks = [{"table": "public.users", "columns": ["tenant_id"], "references": "public.tenants",
            "referenced_columns": ["id"], "orphans": 0, "sample": []}]
    assert integrity.analyse("saasodoo", BACKUP, tables, fks, integrity.CHECKS) == []


def test_damage_gives_critical_findings_and_writes_since_the_backup_low_ones():
    tables = [
        table("public.audit_log", 3, None, live=False),
        table("public.subscriptions", 3, 2, checked=True, lost=1, added=0, lost_keys=["id=2"]),
        table("public.users", 6, 6, checked=True, lost=1, added=1, lost_keys=["id=1"], added_keys=["id=1"]),
        table("public.tenants", 3, 4, checked=True, lost=0, added=1, added_keys=["id=4"]),
        table("public.new_table", None, 5, in_backup=False),
    ]
    fks = [{"table": "public.users", "columns": ["tenant_id"], "references": "public.tenants",
            "referenced_columns": ["id"], "orphans": 2, "sample": ["tenant_id=3"]}]
    findings = integrity.analyse("saasodoo", BACKUP, tables, fks, integrity.CHECKS)
    by_code = {f["code"]: f for f in findings}
    assert codes(findings) == ["DB_FK_ORPHANS", "DB_ROWS_ADDED", "DB_ROWS_CHANGED", "DB_ROWS_MISSING",
                               "DB_TABLE_MISSING", "DB_TABLE_NOT_IN_BACKUP"]
    for code in ("DB_FK_ORPHANS", "DB_ROWS_MISSING", "DB_TABLE_MISSING"):
        assert by_code[code]["severity"] == "critical"
    assert by_code["DB_ROWS_CHANGED"]["severity"] == "medium"
    assert by_code["DB_ROWS_ADDED"]["severity"] == "low"
    assert "public.subscriptions has 2, the backup 3" in by_code["DB_ROWS_MISSING"]["message"]
    assert by_code["DB_ROWS_MISSING"]["evidence"] == ["public.subscriptions: 2 rows live, 3 in the backup, "
                                                      "gone or changed: id=2"]
    # A table with fewer rows is reported missing rows, not "changed" as well.
    assert "public.subscriptions" not in by_code["DB_ROWS_CHANGED"]["message"]
    assert by_code["DB_FK_ORPHANS"]["evidence"] == ["public.users.tenant_id -> public.tenants(id): 2 orphaned "
                                                    "(tenant_id=3)"]
    assert all(f["component"] == "postgres" for f in findings)
    summary = integrity.summarise(tables, fks)
    assert summary == {"tables_missing": 1, "rows_missing": 1, "rows_changed": 2, "rows_added": 7, "orphans": 2}


def test_without_a_backup_only_foreign_keys_are_judged():
    fks = [{"table": "public.users", "columns": ["tenant_id"], "references": "public.tenants",
            "referenced_columns": ["id"], "orphans": 1, "sample": []}]
    assert codes(integrity.analyse("saasodoo", None, [], fks, ["foreign_keys"])) == ["DB_FK_ORPHANS"]


def test_tables_too_big_to_compare_are_said_so():
    tables = [table("public.audit_log", 5, 5, why="more than 1 rows (max_rows_per_table)")]
    findings = integrity.analyse("saasodoo", BACKUP, tables, [], integrity.CHECKS)
    assert codes(findings) == ["DB_CONTENT_NOT_CHECKED"] and findings[0]["severity"] == "low"


@pytest.mark.parametrize("kind, code, severity", [
    ("missing_db", "DB_DATABASE_MISSING", "critical"),
    ("refused", "PG_UNREACHABLE", "critical"),
    ("auth", "PG_LOGIN_REJECTED", "high"),
    ("too_many_clients", "PG_CONNECTIONS_EXHAUSTED", "critical"),
])
def test_connection_failures_become_findings(kind, code, severity):
    err = pg.PgConnectError("PostgreSQL at 127.0.0.1:5432 ...", kind, "127.0.0.1:5432", detail="FATAL: ...")
    result = integrity.connect_finding(err, "saasodoo")
    assert (result["code"], result["severity"]) == (code, severity)
    assert "endpoint: 127.0.0.1:5432" in result["evidence"]
