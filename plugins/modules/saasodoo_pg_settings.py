#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Compare desired PostgreSQL settings with the server (read-only): what is in use, what waits for a restart."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_pg_settings
short_description: Compare desired PostgreSQL settings with the running server and its files (read-only)
description:
  - Reads C(pg_settings) (the value in use, its unit, type and context, C(pending_restart)) and
    C(pg_file_settings) (what the configuration files, C(postgresql.auto.conf) last, will apply) for the
    settings in O(settings), and compares each desired value by value, with PostgreSQL's units
    (C(5min) = C(300s) = C(300000), C(1GB) = C(1024MB)).
  - Says per setting what applying it takes - C(ok) (in use already), C(set) (an C(ALTER SYSTEM) is needed,
    e.g. with M(community.postgresql.postgresql_set)), C(restart_pending) (the files already hold the value,
    only a restart of the server applies it; setting it again would change nothing). This is what makes a
    tuning run idempotent for settings of context C(postmaster), which M(community.postgresql.postgresql_set)
    compares with the value in use only.
  - C(pg_file_settings) is readable by superusers, or after C(GRANT SELECT ON pg_file_settings) and
    C(GRANT EXECUTE ON FUNCTION pg_show_all_file_settings()). Without it, C(file_settings_readable) is false and
    a setting with C(pending_restart) is taken as waiting for its desired value.
  - Settings named in O(only_raise) are never lowered - C(kept) (the server's value is above the desired one).
  - Never changes anything; every transaction of its session is read-only.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
requirements:
  - psycopg (3.1 or later) or psycopg2 on the host that runs the module
  - PostgreSQL 10 or later
options:
  settings:
    description:
      - "Desired values, C({name: value}); values as in C(postgresql.conf) (C(5min), C(500ms), C(1GB), C(on))."
    type: dict
    required: true
  only_raise:
    description:
      - Names of numeric settings that are only ever raised, never lowered (C(max_connections) - lowering it
        drops connections a running platform counts on). When the value in use, or the value waiting in the
        configuration files for a restart, is above the desired one, the setting's action is C(kept) and it
        is not in RV(to_set).
      - A non-numeric setting here is an error.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - saasodoo_pg
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode returns the same result.
seealso:
  - module: community.postgresql.postgresql_set
  - module: saasodoo_pg_health
"""

EXAMPLES = r"""
- name: AUDIT | What applying the tuned settings takes
  saasodoo_pg_settings:
    login_host: "{{ saasodoo_db_host }}"
    login_port: "{{ saasodoo_db_port }}"
    login_user: "{{ saasodoo_db_user }}"
    login_password: "{{ saasodoo_db_password }}"
    login_db: "{{ saasodoo_db_name }}"
    settings:
      max_connections: "100"
      idle_in_transaction_session_timeout: 5min
    only_raise: [max_connections]
  register: __tuning

- name: PATCH | Apply what is not in use yet
  community.postgresql.postgresql_set:
    name: "{{ item }}"
    value: "{{ __tuning.desired[item] }}"
  loop: "{{ __tuning.to_set }}"
"""

RETURN = r"""
settings:
  description: One entry per desired setting, sorted by name; C(action) is C(ok), C(set), C(restart_pending) or C(kept).
  returned: always
  type: list
  elements: dict
  sample:
    - {name: max_connections, desired: "100", current: "50", setting: "50", unit: null, context: postmaster,
       pending_restart: true, file_value: "100", file: /var/lib/postgresql/data/postgresql.auto.conf,
       restart_required: true, action: restart_pending}
desired:
  description: The desired values as given (strings).
  returned: always
  type: dict
to_set:
  description: Names of the settings an C(ALTER SYSTEM) must change.
  returned: always
  type: list
  elements: str
restart_pending:
  description: Names of the settings whose desired value waits in the files for a restart.
  returned: always
  type: list
  elements: str
kept:
  description: Names of the O(only_raise) settings left as they are because the server's value is above the desired one.
  returned: always
  type: list
  elements: str
restart_required:
  description: Whether applying the settings (or what already waits) needs a restart of the server.
  returned: always
  type: bool
file_settings_readable:
  description: Whether C(pg_file_settings) could be read (else pending values are judged from C(pending_restart)).
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saasodoo_findings import DiagnosisError
from ansible.module_utils.saasodoo_pg import (POSTGRES_COMMON_ARGS, PSYCOPG_ERRORS, close, connect, ensure_driver,
                                              error_text, query)
from ansible.module_utils.saasodoo_pg_tuning import plan

SETTINGS_SQL = ("SELECT name, setting, unit, vartype, context, pending_restart, current_setting(name) AS shown "
                "FROM pg_settings WHERE name = ANY(%s)")
FILE_SQL = ("SELECT name, setting, seqno, applied, error, sourcefile FROM pg_file_settings "
            "WHERE name = ANY(%s) ORDER BY seqno")


def read(params, names):
    conn, _ = connect(params, read_only=True, session_settings={"statement_timeout": "15s"})
    try:
        rows = query(conn, SETTINGS_SQL, (names,))
        readable = True
        try:
            file_rows = query(conn, FILE_SQL, (names,))
        except PSYCOPG_ERRORS:
            readable, file_rows = False, []
        return rows, file_rows, readable
    finally:
        close(conn)


def argument_spec():
    spec = dict(POSTGRES_COMMON_ARGS)
    spec["settings"] = dict(type="dict", required=True)
    spec["only_raise"] = dict(type="list", elements="str", default=[])
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    ensure_driver(module)
    params = module.params
    desired = dict((k, "%s" % v) for k, v in (params["settings"] or {}).items())
    error, result = None, None
    try:
        rows, file_rows, readable = read(params, sorted(desired))
        result = plan(rows, file_rows, desired, readable, only_raise=params["only_raise"])
        result["file_settings_readable"] = readable
    except DiagnosisError as e:
        error = "%s" % e
    except PSYCOPG_ERRORS as e:
        error = "PostgreSQL error while reading the settings: %s" % error_text(e, params.get("login_password"))
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message, not a traceback
        error = "saasodoo_pg_settings failed unexpectedly (please report it): %s: %s" % (
            type(e).__name__, error_text(e, params.get("login_password")))
    if error is not None:
        module.fail_json(msg=error)
    if result["errors"]:
        module.fail_json(msg="Some desired settings cannot be applied: %s" % "; ".join(result["errors"]), **result)
    result["desired"] = desired
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
