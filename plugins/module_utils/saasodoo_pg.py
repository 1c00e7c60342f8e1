# -*- coding: utf-8 -*-
# Shared by the project's PostgreSQL modules. Modelled on community.postgresql's
# module_utils/postgres.py: one argument spec, one connection helper, parameterised queries.
"""PostgreSQL client code for the SaaSOdoo modules.

- ``POSTGRES_COMMON_ARGS``: the connection options every module accepts (defaults from the
  libpq environment variables PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE).
- ``connect(params)``: opens an autocommit session, measures how long it took and turns every
  connection failure into a ``PgConnectError`` (a ``DiagnosisError``) with a message a tired
  engineer understands and a ``kind`` a module can branch on. The password never appears in it.
- ``query`` / ``query_one`` / ``query_value``: run parameterised SQL, return plain Python values
  (dicts of JSON-friendly types). Values are always passed as parameters, never formatted in.

psycopg 3 (>= 3.1) is preferred; psycopg2 is the fallback. ``HAS_PSYCOPG`` says whether either
is importable; modules report a missing driver with ``missing_required_lib(PSYCOPG_REQUIREMENT)``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import decimal
import re
import time

from ansible.module_utils.basic import env_fallback, missing_required_lib
from ansible.module_utils.saasodoo_findings import DiagnosisError
from ansible.module_utils.saasodoo_redact import redact_text

psycopg = None
PSYCOPG_IMPORT_ERROR = None
PSYCOPG_MAJOR = 0
try:
    import psycopg  # noqa: F811 (psycopg 3)

    if tuple(int(p) for p in re.findall(r"\d+", psycopg.__version__)[:2]) < (3, 1):
        raise ImportError("psycopg %s is too old (3.1 or later needed)" % psycopg.__version__)
    PSYCOPG_MAJOR = 3
except ImportError as e3:
    try:
        import psycopg2 as psycopg  # noqa: F811

        PSYCOPG_MAJOR = 2
    except ImportError as e2:
        psycopg = None
        PSYCOPG_IMPORT_ERROR = "%s; %s" % (e3, e2)

HAS_PSYCOPG = psycopg is not None
PSYCOPG_REQUIREMENT = "psycopg (3.1 or later) or psycopg2"

# psycopg.Error is the base of every driver error (both majors have it).
PSYCOPG_ERRORS = (psycopg.Error,) if HAS_PSYCOPG else ()

SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

POSTGRES_COMMON_ARGS = dict(
    login_host=dict(
        type="str",
        default="localhost",
        fallback=(env_fallback, ["PGHOST"]),
        aliases=["host"],
    ),
    login_port=dict(type="int", default=5432, fallback=(env_fallback, ["PGPORT"]), aliases=["port"]),
    login_user=dict(type="str", default="postgres", fallback=(env_fallback, ["PGUSER"])),
    login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["PGPASSWORD"])),
    login_db=dict(type="str", default="postgres", fallback=(env_fallback, ["PGDATABASE"]), aliases=["db"]),
    connect_timeout=dict(type="int", default=5),
    ssl_mode=dict(type="str", default="prefer", choices=SSL_MODES),
)

# The same options as documentation, for modules to reference from DOCUMENTATION when useful.
POSTGRES_COMMON_ARG_NAMES = tuple(sorted(POSTGRES_COMMON_ARGS))


class PgConnectError(DiagnosisError):
    """The server could not be reached or refused the session.

    ``kind`` is one of: refused, timeout, unreachable, starting, protocol, auth, missing_db,
    permission, too_many_clients, other. ``reachable`` says whether a PostgreSQL server answered
    (it did for auth, missing_db, permission, too_many_clients, starting).
    """

    REACHABLE_KINDS = ("auth", "missing_db", "permission", "too_many_clients", "starting")

    def __init__(self, message, kind, endpoint, seconds=None, detail=None):
        super(PgConnectError, self).__init__(message)
        self.kind = kind
        self.endpoint = endpoint
        self.seconds = seconds
        self.detail = detail

    @property
    def reachable(self):
        return self.kind in self.REACHABLE_KINDS


def ensure_driver(module):
    """fail_json with the usual 'missing library' message when no driver is importable."""
    if not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib(PSYCOPG_REQUIREMENT))


def endpoint(params):
    """'host:port' (or the socket directory) for messages."""
    host = params.get("login_host") or "local socket"
    return "%s:%s" % (host, params.get("login_port") or 5432)


def redact(text, secret):
    """Remove a secret (in any form) and credential-shaped parts from a text (defence in depth: libpq never
    echoes the password)."""
    return redact_text("%s" % (text,), [secret] if secret else (), min_length=3)


def classify_connect_error(text):
    """The kind of a connection failure, from the driver's message.

    Server-side refusals are tested first: their messages also say "connection to server ...
    failed", which network-level failures say too.
    """
    low = ("%s" % (text,)).lower()

    def has(*patterns):
        return any(p in low for p in patterns)

    if has("too many clients", "remaining connection slots are reserved"):
        return "too_many_clients"
    if has("password authentication failed", "authentication failed", "no password supplied",
           "fe_sendauth") or re.search(r'role "[^"]*" does not exist', low):
        return "auth"
    if re.search(r'database "[^"]*" does not exist', low):
        return "missing_db"
    if has("permission denied", "connect privilege", "no pg_hba.conf entry", "pg_hba.conf rejects"):
        return "permission"
    if has("the database system is starting up", "the database system is shutting down",
           "the database system is in recovery mode", "the database system is not yet accepting"):
        return "starting"
    if has("timeout expired", "timed out"):
        return "timeout"
    if has("connection refused"):
        return "refused"
    if has("could not translate host name", "failed to resolve host", "name or service not known",
           "temporary failure in name resolution", "no route to host", "network is unreachable",
           "host is unreachable", "no such file or directory"):
        return "unreachable"
    if has("ssl negotiation", "received invalid response", "server closed the connection unexpectedly",
           "server does not support ssl", "ssl error"):
        return "protocol"
    return "other"


def _driver_detail(text):
    """The useful part of a libpq message: the FATAL line or the first line, stripped."""
    lines = [ln.strip() for ln in ("%s" % (text,)).splitlines() if ln.strip()]
    if not lines:
        return ""
    for ln in lines:
        if "FATAL:" in ln:
            return re.sub(r"\s+", " ", ln[ln.index("FATAL:"):])
    return re.sub(r"\s+", " ", lines[0])


def connect_error_message(kind, params, detail):
    """A message per kind; names the place to look next. Never includes the password."""
    where = endpoint(params)
    user = params.get("login_user")
    db = params.get("login_db")
    timeout = params.get("connect_timeout")
    messages = {
        "refused": "PostgreSQL at %s refused the connection: is it running? Check the PostgreSQL pod "
                   "(StatefulSet) and its logs, then the Service and port." % where,
        "timeout": "PostgreSQL at %s did not answer within %s s: the server is overloaded or a firewall/"
                   "network policy drops the traffic." % (where, timeout),
        "unreachable": "PostgreSQL at %s is unreachable: the host name does not resolve or there is no route "
                       "to it (check the Service name, DNS and network policies)." % where,
        "protocol": "Something at %s answered, but not like a PostgreSQL server: check the host, port and "
                    "ssl_mode." % where,
        "starting": "PostgreSQL at %s is running but not accepting sessions yet (starting up, shutting down "
                    "or recovering): wait and retry, and read its log." % where,
        "auth": "PostgreSQL at %s rejected the login of user %s: wrong password or unknown role (check the "
                "credentials secret; the password is not shown)." % (where, user),
        "missing_db": "PostgreSQL at %s has no database %s: check login_db." % (where, db),
        "permission": "PostgreSQL at %s refused user %s access to database %s (pg_hba.conf or CONNECT "
                      "privilege)." % (where, user, db),
        "too_many_clients": "PostgreSQL at %s has no free connection slot (too many clients): connections are "
                            "exhausted; find who holds them and add connection pooling." % where,
        "other": "Could not connect to PostgreSQL at %s." % where,
    }
    message = messages.get(kind, messages["other"])
    if detail:
        message = "%s (driver: %s)" % (message, detail)
    return message


def _connect_kwargs(params):
    kwargs = {
        "host": params.get("login_host") or None,
        "port": params.get("login_port"),
        "user": params.get("login_user"),
        "password": params.get("login_password"),
        "dbname": params.get("login_db"),
        "connect_timeout": params.get("connect_timeout"),
        "sslmode": params.get("ssl_mode"),
        "application_name": params.get("application_name"),
    }
    return dict((k, v) for k, v in kwargs.items() if v is not None and v != "")


def connect(params, read_only=True, session_settings=None):
    """Open an autocommit session; return (connection, seconds it took to connect).

    ``params``: the module's params (the POSTGRES_COMMON_ARGS keys, plus an optional
    ``application_name``). ``read_only`` makes every transaction of the session read-only.
    ``session_settings``: {setting: value} applied with set_config() (e.g. statement_timeout).
    Raises PgConnectError (a DiagnosisError) with a clear message on any failure.
    """
    if not HAS_PSYCOPG:
        raise DiagnosisError(missing_required_lib(PSYCOPG_REQUIREMENT))
    password = params.get("login_password")
    started = time.monotonic()
    try:
        kwargs = _connect_kwargs(params)
        if PSYCOPG_MAJOR >= 3:
            conn = psycopg.connect(autocommit=True, **kwargs)
        else:
            conn = psycopg.connect(**kwargs)
            conn.autocommit = True
    except PSYCOPG_ERRORS + (OSError, ValueError) as e:
        seconds = time.monotonic() - started
        raw = redact(e, password)
        kind = classify_connect_error(raw)
        detail = _driver_detail(raw)
        raise PgConnectError(connect_error_message(kind, params, detail), kind, endpoint(params),
                             seconds=round(seconds, 3), detail=detail)
    seconds = time.monotonic() - started
    try:
        settings = dict(session_settings or {})
        if read_only:
            settings["default_transaction_read_only"] = "on"
        for name in sorted(settings):
            query(conn, "SELECT set_config(%s, %s, false)", (name, "%s" % settings[name]))
    except PSYCOPG_ERRORS as e:
        close(conn)
        raise DiagnosisError("Connected to PostgreSQL at %s but could not configure the session: %s"
                             % (endpoint(params), _driver_detail(redact(e, password))))
    return conn, round(seconds, 3)


def close(conn):
    """Close a connection, ignoring errors (the server may be gone)."""
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # pylint: disable=broad-except
        pass


def is_closed(conn):
    """Whether the session is gone (psycopg 3: bool; psycopg2: non-zero int)."""
    try:
        return bool(conn.closed)
    except Exception:  # pylint: disable=broad-except
        return True


def error_text(error, secret=None):
    """One-line message of a driver error, password removed."""
    return _driver_detail(redact(error, secret)) or type(error).__name__


def plain(value):
    """A JSON-friendly version of a value returned by the driver."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, memoryview):
        return value.tobytes().decode("utf-8", "replace")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def query(conn, sql, params=None):
    """Run one parameterised statement; return its rows as a list of dicts of plain values.

    ``sql`` is a constant with %s / %(name)s placeholders; ``params`` the values. Never format
    values into ``sql``.
    """
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        if cur.description is None:
            return []
        columns = [d[0] for d in cur.description]
        return [dict(zip(columns, (plain(v) for v in row))) for row in cur.fetchall()]
    finally:
        cur.close()


def query_one(conn, sql, params=None):
    """The first row as a dict, or None."""
    rows = query(conn, sql, params)
    return rows[0] if rows else None


def query_value(conn, sql, params=None):
    """The first column of the first row, or None."""
    row = query_one(conn, sql, params)
    if not row:
        return None
    return next(iter(row.values()))
