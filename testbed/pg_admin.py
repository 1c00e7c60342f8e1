#!/usr/bin/env python3
"""Superuser steps on the test bed's PostgreSQL that the db_performance tests need, and their undo.

    testbed/pg_admin.py grant PARAM...    let the platform role apply tuned settings (least privilege)
    testbed/pg_admin.py revoke PARAM...   take it back
    testbed/pg_admin.py reset PARAM...    ALTER SYSTEM RESET each (postgresql.auto.conf), then reload

`grant` gives the role saasodoo what the runbook's ALTER SYSTEM login needs, no more (PostgreSQL
15's parameter privileges): ALTER SYSTEM on each PARAM, EXECUTE on pg_reload_conf(), and read
access to pg_file_settings (to see a value that waits for a restart). `reset` puts the test
bed's configuration back as testbed/services.sh wrote it.

The superuser is the OS user that runs the server (postgres when run as root), over the unix
socket in $TESTBED_CACHE/pg (peer authentication), like testbed/services.sh's own psql calls.
The role's name comes from the inventory (saasodoo_db_user).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed import platform_vars  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("TESTBED_CACHE", ROOT / ".cache" / "testbed")).resolve()
PARAM = re.compile(r"^[a-z_][a-z0-9_.]*$")


class PgAdminError(Exception):
    """A superuser step failed."""


def _psql() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"),
                        key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True)
    if not candidates:
        raise PgAdminError("psql not found under /usr/lib/postgresql/*/bin (testbed/services.sh up installs it)")
    return candidates[0]


def run_sql(sql: str, database: str | None = None) -> str:
    """Run SQL as the test bed's superuser; return psql's output."""
    v = platform_vars.load()
    port = str(int(v["saasodoo_db_port"]))
    root = os.geteuid() == 0
    os_user = "postgres" if root else os.environ.get("USER") or subprocess.check_output(["id", "-un"], text=True).strip()
    cmd = [_psql(), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", str(CACHE / "pg"), "-p", port,
           "-U", os_user, "-d", database or v["saasodoo_db_name"]]
    if root:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    result = subprocess.run(cmd, input=sql, capture_output=True, text=True, cwd="/", check=False)
    if result.returncode != 0:
        raise PgAdminError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _params(names: list[str]) -> list[str]:
    bad = [n for n in names if not PARAM.match(n)]
    if bad or not names:
        raise PgAdminError(f"give setting names (lowercase identifiers); got {names}")
    return names


def _role() -> str:
    role = platform_vars.load()["saasodoo_db_user"]
    if not PARAM.match(role):
        raise PgAdminError(f"unexpected role name {role!r}")
    return role


def grant(names: list[str]) -> None:
    role = _role()
    run_sql("".join(f"GRANT ALTER SYSTEM ON PARAMETER {n} TO {role};\n" for n in _params(names)) + f"""
GRANT EXECUTE ON FUNCTION pg_reload_conf() TO {role};
GRANT SELECT ON pg_file_settings TO {role};
GRANT EXECUTE ON FUNCTION pg_show_all_file_settings() TO {role};
""")


def revoke(names: list[str]) -> None:
    role = _role()
    run_sql("".join(f"REVOKE ALTER SYSTEM ON PARAMETER {n} FROM {role};\n" for n in _params(names)) + f"""
REVOKE EXECUTE ON FUNCTION pg_reload_conf() FROM {role};
REVOKE SELECT ON pg_file_settings FROM {role};
REVOKE EXECUTE ON FUNCTION pg_show_all_file_settings() FROM {role};
""")


def reset(names: list[str]) -> None:
    run_sql("".join(f"ALTER SYSTEM RESET {n};\n" for n in _params(names)) + "SELECT pg_reload_conf();\n")


def main(argv: list[str]) -> int:
    commands = {"grant": grant, "revoke": revoke, "reset": reset}
    if len(argv) < 3 or argv[1] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        commands[argv[1]](argv[2:])
    except PgAdminError as exc:
        print(f"[pg_admin] ERROR: {exc}", file=sys.stderr)
        return 1
    print(f"[pg_admin] {argv[1]}: {', '.join(argv[2:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
