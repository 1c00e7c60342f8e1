#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read-only integrity check of a PostgreSQL database, against a verified backup when one is given."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_pg_integrity
short_description: Check a PostgreSQL database for lost or corrupted data (read-only)
description:
  - The "assess the extent of data damage" step of the troubleshooting guide's Data Loss procedure.
  - With O(backup_dir) (a backup written by the C(restore_backup) role, already verified - its
    C(manifest.json) and C(dump.pgdump)), compares the live database with it - every table of the backup
    present (C(tables)), row counts not below the backup's (C(row_counts)), and, table by table, the rows
    themselves (C(content)) - the dump's rows as C(pg_restore --data-only) writes them against the live
    rows as C(COPY ... TO STDOUT) writes them, both with the settings pg_dump uses, compared as multisets.
    Tells rows of the backup that are gone or changed apart from rows added since.
  - Without a backup, only the checks that need none run - every foreign key is checked for rows that
    reference a row that does not exist (C(foreign_keys)), which PostgreSQL itself prevents unless its
    triggers were bypassed, a constraint was added C(NOT VALID), or storage was damaged.
  - Returns the facts and a list of C(findings) (stable C(code), C(severity), C(message), C(evidence),
    C(remediation)); runbooks branch on the codes. Row contents never leave the module - only counts,
    checksums and the key values of a few affected rows (primary key or foreign key columns).
  - Never changes anything; the session is read-only, statements time out.
  - A server that cannot be reached gives the finding C(PG_UNREACHABLE) (critical), a missing database
    C(DB_DATABASE_MISSING) (critical, the whole database is lost), a rejected login C(PG_LOGIN_REJECTED)
    (high). The module fails with that message, or with O(fail_on_unreachable=false) returns ok with
    C(connected=false) and the finding, for a runbook to branch on.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
requirements:
  - psycopg (3.1 or later) or psycopg2 on the host that runs the module
  - pg_restore of the backup's PostgreSQL major version, for the C(content) check
options:
  backup_dir:
    description:
      - Folder of one verified backup (C(manifest.json) and C(dump.pgdump)), for example
        C(restore_backup_result.chosen.path) of the C(restore_backup) role.
      - Without it the checks C(tables), C(row_counts) and C(content) are not run.
    type: path
  checks:
    description: The checks to run.
    type: list
    elements: str
    choices: [tables, row_counts, content, foreign_keys]
    default: [tables, row_counts, content, foreign_keys]
  max_rows_per_table:
    description:
      - Tables with more rows than this (in the backup or live) are not compared row by row
        (C(DB_CONTENT_NOT_CHECKED), low); their row counts still are.
    type: int
    default: 1000000
  sample_size:
    description: Key values of at most this many affected rows are given per table as evidence.
    type: int
    default: 5
  pg_restore:
    description: The pg_restore program (a name on PATH or a path).
    type: str
    default: pg_restore
  statement_timeout_seconds:
    description: Each statement of the check is cancelled after this many seconds.
    type: int
    default: 120
  fail_on_unreachable:
    description:
      - Fail when the server cannot be reached or refuses the session.
      - When false, return ok with C(connected=false) and the finding, for a runbook to branch on.
    type: bool
    default: true
  login_user:
    description: Role to log in as; must be able to read every table. Default from E(PGUSER), else C(postgres).
  login_db:
    description: The database to check. Default from E(PGDATABASE), else C(postgres).
extends_documentation_fragment:
  - saasodoo_pg
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode returns the same result.
notes:
  - Rows changed or added since the backup are normal in a database that is written to; only the runbook
    (and a human) can tell an application's writes from damage. The module reports them with a low or medium
    severity; missing tables, fewer rows than the backup and broken foreign keys are critical.
  - Sequences, large objects and the schema (indexes, functions) are not compared.
seealso:
  - module: saasodoo_pg_health
  - name: restore_backup role
    description: Takes and verifies the backups this module compares against, and restores them.
    link: https://www.postgresql.org/docs/current/app-pgrestore.html
"""

EXAMPLES = r"""
- name: AUDIT | Compare the platform database with the newest verified backup
  saasodoo_pg_integrity:
    login_host: "{{ saasodoo_db_host }}"
    login_port: "{{ saasodoo_db_port }}"
    login_user: "{{ saasodoo_db_user }}"
    login_password: "{{ saasodoo_db_password }}"
    login_db: "{{ saasodoo_db_name }}"
    backup_dir: "{{ restore_backup_result.chosen.path }}"
    fail_on_unreachable: false
  register: __integrity
  no_log: true

- name: AUDIT | Only look for broken foreign keys (no backup needed)
  saasodoo_pg_integrity:
    login_db: saasodoo
    checks: [foreign_keys]
  environment:
    PGHOST: "{{ saasodoo_db_host }}"
    PGPORT: "{{ saasodoo_db_port }}"
    PGUSER: "{{ saasodoo_db_user }}"
    PGPASSWORD: "{{ saasodoo_db_password }}"
"""

RETURN = r"""
connected:
  description: Whether a session was opened and the checks ran.
  returned: always
  type: bool
reachable:
  description: Whether a PostgreSQL server answered at the address (also when it refused the session).
  returned: always
  type: bool
database:
  description: The database checked.
  returned: always
  type: str
  sample: saasodoo
database_exists:
  description: False when the server answered that the database does not exist.
  returned: always
  type: bool
backup:
  description: The backup compared against (from its manifest); null without O(backup_dir).
  returned: always
  type: dict
  sample: {id: 20260101T120000Z, created_at: "2026-01-01T12:00:00Z", database: saasodoo, path: /var/backups/saasodoo/saasodoo/20260101T120000Z}
tables:
  description:
    - One entry per table of the backup or the live database. C(rows_lost) counts rows of the backup that are
      not in the live table as they were (deleted or changed), C(rows_added) live rows that are not in the backup
      (added or changed); both null when the content was not compared.
  returned: always
  type: list
  elements: dict
  sample:
    - {table: public.users, in_backup: true, live: true, backup_rows: 6, live_rows: 4, content_checked: true,
       rows_lost: 2, rows_added: 0, equal: false, lost_keys: ["id=5", "id=6"], added_keys: [],
       checksum_backup: "3f2a...", checksum_live: "91bc..."}
foreign_keys:
  description: Every foreign key, with the number of rows that reference a row that does not exist.
  returned: when the foreign_keys check ran
  type: list
  elements: dict
  sample:
    - {constraint: users_tenant_id_fkey, table: public.users, columns: [tenant_id], references: public.tenants,
       referenced_columns: [id], validated: true, orphans: 2, sample: ["tenant_id=3"]}
summary:
  description:
    - Totals. C(rows_missing) - rows fewer than the backup's counts; C(rows_changed) - rows of the backup not
      found as they were; C(rows_added) - live rows a restore would take out of the live database (new or
      changed rows, and the rows of tables the backup lacks); C(orphans) - rows with a broken foreign key.
  returned: always
  type: dict
  sample: {tables_missing: 0, rows_missing: 2, rows_changed: 2, rows_added: 0, orphans: 3}
kept_databases:
  description: Databases named C(<database>_before_restore_<stamp>) that earlier restores kept, newest first.
  returned: always
  type: list
  elements: dict
  sample: [{name: saasodoo_before_restore_20260101120500, restored_at: "2026-01-01T12:05:00Z"}]
leftover_restores:
  description:
    - Databases named C(<database>_restore_<digits>) - the fresh copy a restore loads a backup into before it
      swaps it in - that are still there, so a restore was interrupted (killed or failed) before its swap or
      its clean-up. Never the live data; each comes with the backup it was loaded from (its comment) and its size.
      Each one is also a C(DB_RESTORE_LEFTOVER) finding.
  returned: always
  type: list
  elements: dict
  sample: [{name: saasodoo_restore_20261207031500, comment: "saasodoo-restore backup=20261207-020000", size_bytes: 8421376}]
findings:
  description: What is wrong, most severe first. Each has code, severity, message, evidence (list of strings), remediation.
  returned: always
  type: list
  elements: dict
severity:
  description: The worst severity among the findings, or none.
  returned: always
  type: str
healthy:
  description: True when no finding is medium or worse.
  returned: always
  type: bool
check_errors:
  description: Checks (or tables) that could not be examined, with the error.
  returned: always
  type: list
  elements: dict
duration_seconds:
  description: Seconds the whole check took.
  returned: always
  type: float
"""

import hashlib
import importlib
import json
import os
import re
import time
from collections import Counter
from datetime import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saasodoo_findings import DiagnosisError, finding, sort_findings, worst_severity
from ansible.module_utils.saasodoo_pg import (
    POSTGRES_COMMON_ARGS,
    PSYCOPG_ERRORS,
    PSYCOPG_MAJOR,
    PgConnectError,
    close,
    connect,
    ensure_driver,
    error_text,
    psycopg,
    query,
)

CHECKS = ["tables", "row_counts", "content", "foreign_keys"]
BACKUP_CHECKS = ("tables", "row_counts", "content")
MANIFEST = "manifest.json"
DUMP = "dump.pgdump"
KEPT_SUFFIX = "_before_restore_"
RESTORE_SUFFIX = "_restore_"
APPLICATION_NAME = "saasodoo_pg_integrity"
# The settings pg_dump uses, so that COPY writes the live rows exactly as the dump holds them.
DUMP_SESSION_SETTINGS = {"DateStyle": "ISO", "IntervalStyle": "postgres", "extra_float_digits": "3"}
EVIDENCE_LIMIT = 10

REMEDIATION_RESTORE = ("Stop the writes and restore the newest verified backup: playbooks/data_loss.yml with "
                       "data_loss_confirm_restore=true (role restore_backup), after reading what it would do.")
REMEDIATION_SERVER = ("Bring the database server back first: playbooks/postgres_connection.yml (Guide: Database "
                      "Issues > PostgreSQL Connection Failures).")

# --------------------------------------------------------------------------------------------
# SQL. Values are parameters; identifiers are composed with the driver's sql module (quoted by it).

TABLES_SQL = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, n.nspname AS schema, c.relname AS "table",
       ARRAY(SELECT a.attname::text
               FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
              WHERE i.indrelid = c.oid AND i.indisprimary
              ORDER BY array_position(i.indkey::int2[], a.attnum)) AS primary_key
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname !~ '^pg_'
   AND n.nspname <> 'information_schema'
 ORDER BY 1
"""

FOREIGN_KEYS_SQL = """
SELECT c.conname::text AS constraint, c.convalidated AS validated,
       format('%I.%I', n.nspname, cl.relname) AS "table", n.nspname AS schema, cl.relname AS relname,
       format('%I.%I', pn.nspname, pcl.relname) AS "references", pn.nspname AS ref_schema, pcl.relname AS ref_relname,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, i)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
              ORDER BY k.i) AS columns,
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, i)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum
              ORDER BY k.i) AS referenced_columns
  FROM pg_catalog.pg_constraint c
  JOIN pg_catalog.pg_class cl ON cl.oid = c.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = cl.relnamespace
  JOIN pg_catalog.pg_class pcl ON pcl.oid = c.confrelid
  JOIN pg_catalog.pg_namespace pn ON pn.oid = pcl.relnamespace
 WHERE c.contype = 'f'
   AND n.nspname !~ '^pg_'
   AND n.nspname <> 'information_schema'
 ORDER BY 3, 1
"""

LEFTOVER_RESTORES_SQL = """
SELECT d.datname::text AS name, pg_catalog.shobj_description(d.oid, 'pg_database') AS comment,
       pg_catalog.pg_database_size(d.oid) AS size_bytes
  FROM pg_catalog.pg_database d
 WHERE starts_with(d.datname, %(prefix)s)
   AND substr(d.datname, length(%(prefix)s) + 1) ~ '^[0-9]+$'
 ORDER BY d.datname
"""

KEPT_DATABASES_SQL = """
SELECT datname::text AS name FROM pg_catalog.pg_database
 WHERE starts_with(datname, %(prefix)s)
 ORDER BY datname DESC
"""


def sql_module():
    """The driver's sql module (psycopg.sql or psycopg2.sql)."""
    return importlib.import_module(psycopg.__name__ + ".sql")


# --------------------------------------------------------------------------------------------
# Pure helpers: bytes and dicts in, facts out. Unit-tested without a database.

_COPY_HEADER = re.compile(rb"^COPY (?P<table>.+?) \((?P<columns>.*)\) FROM stdin;$")


def split_identifiers(text):
    """'id, "Odd, name", tenant_id' -> ['id', 'Odd, name', 'tenant_id'] (identifiers as pg_dump quotes them)."""
    out, current, quoted, i = [], [], False, 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"':
                if i + 1 < len(text) and text[i + 1] == '"':
                    current.append('"')
                    i += 1
                else:
                    quoted = False
            else:
                current.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ",":
            out.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    if current or out:
        out.append("".join(current).strip())
    return [c for c in out if c != ""]


def parse_copy_output(data):
    """pg_restore --data-only output (bytes) -> {table name: {'columns': [...], 'rows': [bytes, ...]}}.

    The table name is the one pg_dump wrote (schema.table, quoted where needed), the same form as the
    manifest's row_counts keys. Each row is one line of COPY's text format.
    """
    tables = {}
    current = None
    for line in data.split(b"\n"):
        if current is None:
            match = _COPY_HEADER.match(line)
            if match:
                name = match.group("table").decode("utf-8", "replace")
                current = {"columns": split_identifiers(match.group("columns").decode("utf-8", "replace")), "rows": []}
                tables[name] = current
            continue
        if line == b"\\.":
            current = None
            continue
        current["rows"].append(line)
    return tables


def split_copy_rows(data):
    """COPY TO STDOUT text (bytes) -> rows (one per line, without the final newline)."""
    if not data:
        return []
    rows = data.split(b"\n")
    if rows and rows[-1] == b"":
        rows.pop()
    return rows


def rows_checksum(rows):
    """sha256 of the rows in sorted order: equal for equal multisets of rows, whatever their physical order."""
    digest = hashlib.sha256()
    for row in sorted(rows):
        digest.update(row)
        digest.update(b"\n")
    return digest.hexdigest()


def _decode_field(raw):
    """One field of COPY's text format, unescaped enough for evidence (\\N -> NULL)."""
    if raw == b"\\N":
        return "NULL"
    text = raw.decode("utf-8", "replace")
    return text.replace("\\t", "\t").replace("\\n", "\n").replace("\\\\", "\\")


def row_key(row, columns, key_columns):
    """'id=5' / 'tenant_id=3, plan=basic' for a COPY row, from its key columns; None without any."""
    fields = row.split(b"\t")
    parts = []
    for name in key_columns:
        if name in columns and columns.index(name) < len(fields):
            parts.append("%s=%s" % (name, _decode_field(fields[columns.index(name)])))
    return ", ".join(parts) if parts else None


def compare_rows(backup_rows, live_rows, columns, key_columns, sample_size=5):
    """Multiset comparison of a table's rows in the backup and live.

    -> {'rows_lost', 'rows_added', 'equal', 'lost_keys', 'added_keys', 'checksum_backup', 'checksum_live'}.
    """
    backup, live = Counter(backup_rows), Counter(live_rows)
    lost = backup - live
    added = live - backup

    def keys(counter):
        out = []
        for row in sorted(counter):
            key = row_key(row, columns, key_columns)
            if key is not None:
                out.append(key)
            if len(out) >= sample_size:
                break
        return out

    return {
        "rows_lost": sum(lost.values()),
        "rows_added": sum(added.values()),
        "equal": not lost and not added,
        "lost_keys": keys(lost),
        "added_keys": keys(added),
        "checksum_backup": rows_checksum(backup_rows),
        "checksum_live": rows_checksum(live_rows),
    }


def kept_database_time(name, database):
    """'<db>_before_restore_20260101120500' -> '2026-01-01T12:05:00Z'; None when the name has no stamp."""
    prefix = database + KEPT_SUFFIX
    if not name.startswith(prefix):
        return None
    stamp = name[len(prefix):]
    try:
        return datetime.strptime(stamp, "%Y%m%d%H%M%S").strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def read_manifest(backup_dir):
    """The manifest of a backup folder, checked for what the comparison needs. DiagnosisError otherwise."""
    path = os.path.join(backup_dir, MANIFEST)
    try:
        with open(path, "rb") as handle:
            manifest = json.loads(handle.read().decode("utf-8"))
    except (IOError, OSError) as e:
        raise DiagnosisError("Cannot read the backup's manifest %s: %s" % (path, e))
    except ValueError as e:
        raise DiagnosisError("The backup's manifest %s is not valid JSON: %s" % (path, e))
    if not isinstance(manifest, dict) or not isinstance(manifest.get("row_counts"), dict):
        raise DiagnosisError("The backup's manifest %s has no row_counts: it is not a backup of the restore_backup "
                             "role, or it is damaged (verify the backup with the role first)." % path)
    return manifest


def _plural(n, one, many=None):
    return "%d %s" % (n, one if n == 1 else (many or one + "s"))


def leftover_findings(database, leftovers):
    """DB_RESTORE_LEFTOVER (low) for each fresh restore database an interrupted restore left behind."""
    return [finding(
        "DB_RESTORE_LEFTOVER", "low",
        "Database %s is the fresh copy of a restore of %s that was never swapped in (%s, %s bytes): a restore "
        "was interrupted - killed or failed - before its swap or its clean-up. It is not the live data." % (
            d["name"], database, d.get("comment") or "no comment", d.get("size_bytes")),
        ["%s: %s" % (d["name"], d.get("comment") or "no comment")],
        "Check that no restore is running (the platform's one-writer Lease), then drop it: "
        "DROP DATABASE \"%s\"; the live database and the <db>_before_restore_* copies are not affected." % d["name"],
        component="postgres", ref="database %s" % d["name"]) for d in leftovers]


def analyse(database, backup, tables, foreign_keys, checks):
    """Findings from the facts (tables and foreign keys as this module returns them)."""
    findings = []
    ref = "database %s" % database
    label = ("backup %s (%s)" % (backup.get("id"), backup.get("created_at"))) if backup else None
    in_backup = [t for t in tables if t["in_backup"]]

    if backup and "tables" in checks:
        missing = [t for t in in_backup if not t["live"]]
        if missing:
            findings.append(finding(
                "DB_TABLE_MISSING", "critical",
                "%s of %s %s missing from database %s: %s." % (
                    _plural(len(missing), "table"), label, "is" if len(missing) == 1 else "are", database,
                    ", ".join(t["table"] for t in missing)),
                ["%s is missing (%s in the backup)" % (t["table"], _plural(t["backup_rows"] or 0, "row"))
                 for t in missing][:EVIDENCE_LIMIT],
                REMEDIATION_RESTORE, component="postgres", ref=ref))
        extra = [t for t in tables if t["live"] and not t["in_backup"]]
        if extra:
            findings.append(finding(
                "DB_TABLE_NOT_IN_BACKUP", "low",
                "%s of database %s %s not in %s (created since, or not backed up): %s." % (
                    _plural(len(extra), "table"), database, "is" if len(extra) == 1 else "are", label,
                    ", ".join(t["table"] for t in extra)),
                ["%s: %s live" % (t["table"], _plural(t["live_rows"] or 0, "row")) for t in extra][:EVIDENCE_LIMIT],
                "A restore replaces the database: such a table would only remain in the database kept aside.",
                component="postgres", ref=ref))

    if backup and "row_counts" in checks:
        fewer = [t for t in in_backup if t["live"] and t["live_rows"] is not None
                 and t["live_rows"] < (t["backup_rows"] or 0)]
        if fewer:
            lost = sum(t["backup_rows"] - t["live_rows"] for t in fewer)
            findings.append(finding(
                "DB_ROWS_MISSING", "critical",
                "%s fewer than in %s, in %s: %s." % (
                    _plural(lost, "row"), label, _plural(len(fewer), "table"),
                    "; ".join("%s has %d, the backup %d" % (t["table"], t["live_rows"], t["backup_rows"]) for t in fewer)),
                ["%s: %d rows live, %d in the backup%s" % (
                    t["table"], t["live_rows"], t["backup_rows"],
                    (", gone or changed: " + ", ".join(t["lost_keys"])) if t.get("lost_keys") else "")
                 for t in fewer][:EVIDENCE_LIMIT],
                REMEDIATION_RESTORE, component="postgres", ref=ref))

    if backup and "content" in checks:
        fewer_names = set(t["table"] for t in in_backup if t["live"] and t["live_rows"] is not None
                          and t["live_rows"] < (t["backup_rows"] or 0))
        changed = [t for t in in_backup if t["content_checked"] and t["rows_lost"] and t["table"] not in fewer_names]
        if changed:
            n = sum(t["rows_lost"] for t in changed)
            findings.append(finding(
                "DB_ROWS_CHANGED", "medium",
                "%s of %s changed since the backup, by the application or by corruption (%s): %s." % (
                    _plural(n, "row"), label, _plural(len(changed), "table"),
                    ", ".join("%s: %d" % (t["table"], t["rows_lost"]) for t in changed)),
                ["%s: %d changed or replaced%s" % (t["table"], t["rows_lost"],
                                                   (" (" + ", ".join(t["lost_keys"]) + ")") if t["lost_keys"] else "")
                 for t in changed][:EVIDENCE_LIMIT],
                "Find out whether the application changed these rows; if they are damaged, restore the backup: "
                + REMEDIATION_RESTORE, component="postgres", ref=ref))
        added = [t for t in in_backup if t["content_checked"] and t["rows_added"]]
        if added:
            n = sum(t["rows_added"] for t in added)
            findings.append(finding(
                "DB_ROWS_ADDED", "low",
                "%s in %s %s not in %s (new or changed since the backup); a restore would leave %s only in the "
                "database kept aside." % (_plural(n, "row"), _plural(len(added), "table"), "is" if n == 1 else "are", label,
                                  "it" if n == 1 else "them"),
                ["%s: %d new or changed%s" % (t["table"], t["rows_added"],
                                              (" (" + ", ".join(t["added_keys"]) + ")") if t["added_keys"] else "")
                 for t in added][:EVIDENCE_LIMIT],
                "Nothing to do unless a restore is planned; then re-enter these rows afterwards from the kept database.",
                component="postgres", ref=ref))
        unchecked = [t for t in in_backup if t["live"] and not t["content_checked"]]
        if unchecked:
            findings.append(finding(
                "DB_CONTENT_NOT_CHECKED", "low",
                "The rows of %s were not compared with %s: %s." % (
                    _plural(len(unchecked), "table"), label,
                    "; ".join("%s (%s)" % (t["table"], t.get("why") or "not compared") for t in unchecked)),
                ["%s: %s" % (t["table"], t.get("why") or "not compared") for t in unchecked][:EVIDENCE_LIMIT],
                "Compare them by hand if they matter, or raise max_rows_per_table.", component="postgres", ref=ref))

    if "foreign_keys" in checks:
        broken = [fk for fk in foreign_keys if fk.get("orphans")]
        if broken:
            n = sum(fk["orphans"] for fk in broken)
            findings.append(finding(
                "DB_FK_ORPHANS", "critical",
                "%s in %s of database %s reference%s rows that do not exist (broken foreign keys): %s." % (
                    _plural(n, "row"), _plural(len(set(fk["table"] for fk in broken)), "table"), database,
                    "s" if n == 1 else "",
                    "; ".join("%s (%s) -> %s: %d" % (fk["table"], ", ".join(fk["columns"]), fk["references"],
                                                      fk["orphans"]) for fk in broken)),
                ["%s.%s -> %s(%s): %d orphaned%s" % (
                    fk["table"], "/".join(fk["columns"]), fk["references"], ", ".join(fk["referenced_columns"]),
                    fk["orphans"], (" (" + ", ".join(fk["sample"]) + ")") if fk.get("sample") else "")
                 for fk in broken][:EVIDENCE_LIMIT],
                REMEDIATION_RESTORE, component="postgres", ref=ref))
    return findings


def summarise(tables, foreign_keys):
    """Totals over the tables and foreign keys, for a runbook's guard rails.

    rows_added counts live rows a restore would take out of the live database: rows not in the backup
    (as compared row by row, else the excess of the count) plus every row of a table the backup lacks.
    """
    in_backup = [t for t in tables if t["in_backup"]]
    live = [t for t in in_backup if t["live"] and t["live_rows"] is not None]

    def added(t):
        if t["content_checked"]:
            return t["rows_added"] or 0
        return max(0, t["live_rows"] - (t["backup_rows"] or 0))

    return {
        "tables_missing": len([t for t in in_backup if not t["live"]]),
        "rows_missing": sum(max(0, (t["backup_rows"] or 0) - t["live_rows"]) for t in live),
        "rows_changed": sum(t["rows_lost"] or 0 for t in live if t["content_checked"]),
        "rows_added": sum(added(t) for t in live)
        + sum(t["live_rows"] or 0 for t in tables if t["live"] and not t["in_backup"]),
        "orphans": sum(fk.get("orphans") or 0 for fk in foreign_keys or []),
    }


def connect_finding(err, database):
    """The finding for a connection failure (PgConnectError)."""
    evidence = ["endpoint: %s" % err.endpoint, "kind: %s" % err.kind]
    if err.detail:
        evidence.append("driver: %s" % err.detail)
    if err.kind == "missing_db":
        return finding("DB_DATABASE_MISSING", "critical",
                       "The platform database %s does not exist on %s: all of its data is gone." % (database, err.endpoint),
                       evidence, REMEDIATION_RESTORE, component="postgres", ref="database %s" % database)
    if err.kind in ("auth", "permission"):
        return finding("PG_LOGIN_REJECTED", "high", "%s" % err, evidence,
                       "Check the credentials the runbook uses (the platform's PostgreSQL secret) and pg_hba.conf.",
                       component="postgres", ref="database %s" % database)
    if err.kind == "too_many_clients":
        return finding("PG_CONNECTIONS_EXHAUSTED", "critical", "%s" % err, evidence,
                       "Free connection slots: playbooks/db_performance.yml.", component="postgres",
                       ref="database %s" % database)
    return finding("PG_UNREACHABLE", "critical", "%s" % err, evidence, REMEDIATION_SERVER,
                   component="postgres", ref="database %s" % database)


# --------------------------------------------------------------------------------------------
# Talking to PostgreSQL and pg_restore.


def copy_rows(conn, schema, table, columns):
    """The live rows of schema.table (these columns, in this order) in COPY's text format."""
    sql = sql_module()
    statement = sql.SQL("COPY {}.{} ({}) TO STDOUT").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    cur = conn.cursor()
    try:
        if PSYCOPG_MAJOR >= 3:
            data = bytearray()
            with cur.copy(statement) as copy:
                for block in copy:
                    data.extend(block)
            return split_copy_rows(bytes(data))
        import io  # psycopg2

        buf = io.BytesIO()
        cur.copy_expert(statement.as_string(conn), buf)
        return split_copy_rows(buf.getvalue())
    finally:
        cur.close()


def count_rows(conn, schema, table):
    sql = sql_module()
    statement = sql.SQL("SELECT count(*) AS n FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    return int(query(conn, statement)[0]["n"])


def orphans(conn, fk, sample_size):
    """(count, sample keys) of rows of fk's table whose non-null key has no referenced row (MATCH SIMPLE)."""
    sql = sql_module()
    child = sql.SQL("{}.{}").format(sql.Identifier(fk["schema"]), sql.Identifier(fk["relname"]))
    parent = sql.SQL("{}.{}").format(sql.Identifier(fk["ref_schema"]), sql.Identifier(fk["ref_relname"]))
    not_null = sql.SQL(" AND ").join(sql.SQL("ch.{} IS NOT NULL").format(sql.Identifier(c)) for c in fk["columns"])
    match = sql.SQL(" AND ").join(
        sql.SQL("p.{} = ch.{}").format(sql.Identifier(p), sql.Identifier(c))
        for c, p in zip(fk["columns"], fk["referenced_columns"]))
    where = sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})").format(not_null, parent, match)
    count = query(conn, sql.SQL("SELECT count(*) AS n FROM {} ch WHERE {}").format(child, where))[0]["n"]
    sample = []
    if count:
        cols = sql.SQL(", ").join(sql.SQL("ch.{}::text").format(sql.Identifier(c)) for c in fk["columns"])
        rows = query(conn, sql.SQL("SELECT DISTINCT {} FROM {} ch WHERE {} ORDER BY 1 LIMIT %(n)s").format(
            cols, child, where), {"n": sample_size})
        for row in rows:
            sample.append(", ".join("%s=%s" % (c, v) for c, v in zip(fk["columns"], row.values())))
    return int(count), sample


class Checker(object):
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.errors = []

    def dump_rows(self, dump, schema, table):
        """The dump's rows of one table (pg_restore --data-only of that table only)."""
        rc, out, err = self.module.run_command(
            [self.params["pg_restore"], "--data-only", "--schema=" + schema, "--table=" + table, "--file=-", dump],
            encoding=None)
        if rc != 0:
            raise DiagnosisError("pg_restore could not read table %s.%s of %s: %s" % (
                schema, table, dump, (err or b"").decode("utf-8", "replace").strip()[:300]))
        return parse_copy_output(out)

    def run(self, checks):
        params = self.params
        database = params["login_db"]
        backup_dir = params.get("backup_dir")
        result = {"connected": False, "reachable": False, "database": database, "database_exists": True,
                  "backup": None, "tables": [], "foreign_keys": [], "kept_databases": [], "leftover_restores": [],
                  "findings": [],
                  "check_errors": self.errors}
        manifest = None
        if backup_dir:
            manifest = read_manifest(backup_dir)
            result["backup"] = {"id": manifest.get("id"), "created_at": manifest.get("created_at"),
                                "database": manifest.get("database"), "path": backup_dir}
        settings = dict(DUMP_SESSION_SETTINGS)
        settings["statement_timeout"] = "%ds" % params["statement_timeout_seconds"]
        settings["lock_timeout"] = "5s"
        if manifest and manifest.get("encoding"):
            settings["client_encoding"] = manifest["encoding"]
        conn_params = dict(params, application_name=APPLICATION_NAME)
        try:
            conn, _seconds = connect(conn_params, read_only=True, session_settings=settings)
        except PgConnectError as err:
            result["reachable"] = err.reachable
            result["database_exists"] = err.kind != "missing_db"
            if err.kind == "missing_db" and manifest:
                result["tables"] = [self._table(name, rows, None) for name, rows in sorted(manifest["row_counts"].items())]
            result["findings"] = [connect_finding(err, database)]
            result["_connect_error"] = err
            return result
        result["connected"] = result["reachable"] = True
        try:
            live = dict((t["name"], t) for t in query(conn, TABLES_SQL))
            result["kept_databases"] = [
                {"name": r["name"], "restored_at": kept_database_time(r["name"], database)}
                for r in query(conn, KEPT_DATABASES_SQL, {"prefix": database + KEPT_SUFFIX})]
            result["leftover_restores"] = [
                {"name": r["name"], "comment": r["comment"], "size_bytes": int(r["size_bytes"] or 0)}
                for r in query(conn, LEFTOVER_RESTORES_SQL, {"prefix": database + RESTORE_SUFFIX})]
            tables = []
            if manifest:
                names = sorted(set(manifest["row_counts"]) | set(live))
                for name in names:
                    tables.append(self._examine(conn, name, manifest, live.get(name), checks))
            result["tables"] = tables
            if "foreign_keys" in checks:
                result["foreign_keys"] = self._foreign_keys(conn)
        finally:
            close(conn)
        result["findings"] = analyse(database, result["backup"], result["tables"], result["foreign_keys"],
                                     checks if manifest else [c for c in checks if c not in BACKUP_CHECKS])
        result["findings"] = sort_findings(result["findings"] + leftover_findings(database, result["leftover_restores"]))
        return result

    def _table(self, name, backup_rows, live):
        return {"table": name, "in_backup": backup_rows is not None, "live": live is not None,
                "backup_rows": backup_rows, "live_rows": None, "content_checked": False, "rows_lost": None,
                "rows_added": None, "equal": None, "lost_keys": [], "added_keys": [], "checksum_backup": None,
                "checksum_live": None, "why": None}

    def _examine(self, conn, name, manifest, live, checks):
        backup_rows = manifest["row_counts"].get(name)
        entry = self._table(name, int(backup_rows) if backup_rows is not None else None, live)
        if live is None:
            entry["why"] = "missing from the live database"
            return entry
        try:
            entry["live_rows"] = count_rows(conn, live["schema"], live["table"])
        except PSYCOPG_ERRORS as e:
            entry["why"] = "could not be counted"
            self.errors.append({"check": "row_counts", "table": name,
                                "error": error_text(e, self.params.get("login_password"))})
            return entry
        if backup_rows is None or "content" not in checks:
            return entry
        limit = self.params["max_rows_per_table"]
        if max(entry["live_rows"], entry["backup_rows"]) > limit:
            entry["why"] = "more than %d rows (max_rows_per_table)" % limit
            return entry
        try:
            dumped = self.dump_rows(os.path.join(self.params["backup_dir"], DUMP), live["schema"], live["table"])
            section = dumped.get(name)
            if section is None:
                entry["why"] = "the dump holds no data for it"
                return entry
            live_rows = copy_rows(conn, live["schema"], live["table"], section["columns"])
        except DiagnosisError as e:
            entry["why"] = "pg_restore failed"
            self.errors.append({"check": "content", "table": name, "error": "%s" % e})
            return entry
        except PSYCOPG_ERRORS as e:
            entry["why"] = "the live rows could not be read in the backup's columns"
            self.errors.append({"check": "content", "table": name,
                                "error": error_text(e, self.params.get("login_password"))})
            return entry
        keys = live.get("primary_key") or []
        entry.update(compare_rows(section["rows"], live_rows, section["columns"], keys, self.params["sample_size"]))
        entry["content_checked"] = True
        return entry

    def _foreign_keys(self, conn):
        out = []
        for fk in query(conn, FOREIGN_KEYS_SQL):
            item = {"constraint": fk["constraint"], "table": fk["table"], "columns": fk["columns"],
                    "references": fk["references"], "referenced_columns": fk["referenced_columns"],
                    "validated": fk["validated"], "orphans": None, "sample": []}
            try:
                item["orphans"], item["sample"] = orphans(conn, fk, self.params["sample_size"])
            except PSYCOPG_ERRORS as e:
                self.errors.append({"check": "foreign_keys", "constraint": fk["constraint"],
                                    "error": error_text(e, self.params.get("login_password"))})
            out.append(item)
        return out


def argument_spec():
    spec = dict(
        backup_dir=dict(type="path"),
        checks=dict(type="list", elements="str", choices=CHECKS, default=list(CHECKS)),
        max_rows_per_table=dict(type="int", default=1000000),
        sample_size=dict(type="int", default=5),
        pg_restore=dict(type="str", default="pg_restore"),
        statement_timeout_seconds=dict(type="int", default=120),
        fail_on_unreachable=dict(type="bool", default=True),
    )
    spec.update(POSTGRES_COMMON_ARGS)
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    ensure_driver(module)
    params = module.params
    for name in ("max_rows_per_table", "sample_size", "statement_timeout_seconds"):
        if params[name] < (0 if name == "sample_size" else 1):
            module.fail_json(msg="%s must be at least %d, got %s" % (name, 0 if name == "sample_size" else 1,
                                                                    params[name]))
    checks = [c for c in CHECKS if c in (params["checks"] or [])]
    started = time.monotonic()
    error = None
    result = None
    try:
        result = Checker(module).run(checks)
    except DiagnosisError as e:
        error = "%s" % e
    except PSYCOPG_ERRORS as e:
        error = "PostgreSQL error during the integrity check of %s: %s" % (
            params["login_db"], error_text(e, params.get("login_password")))
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message, not a traceback
        error = "saasodoo_pg_integrity failed unexpectedly (please report it): %s: %s" % (
            type(e).__name__, error_text(e, params.get("login_password")))
    if error is not None:
        module.fail_json(msg=error)
    connect_error = result.pop("_connect_error", None)
    result["summary"] = summarise(result["tables"], result["foreign_keys"])
    result["findings"] = sort_findings(result["findings"])
    result["severity"] = worst_severity(result["findings"])
    result["healthy"] = not any(f["severity"] in ("critical", "high", "medium") for f in result["findings"])
    result["duration_seconds"] = round(time.monotonic() - started, 3)
    if connect_error is not None and params["fail_on_unreachable"]:
        module.fail_json(msg="%s" % connect_error, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
