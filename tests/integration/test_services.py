"""Integration tests of the test bed's real data services (testbed/services.sh).

They talk to the real PostgreSQL and Redis servers on loopback; nothing is mocked. The
servers are started outside this file (`bash testbed/services.sh up`, or the shared conftest).
"""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
import redis
from psycopg import errors

DB_HOST = os.environ.get("SAASODOO_DB_HOST", "127.0.0.1")
DB_PORT = int(os.environ.get("SAASODOO_DB_PORT", "55432"))
DB_PASSWORD = os.environ.get("SAASODOO_DB_PASSWORD", "saasodoo-local")
DB_NAME = "saasodoo"
DB_USER = "saasodoo"
REDIS_HOST = os.environ.get("SAASODOO_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("SAASODOO_REDIS_PORT", "56379"))

SEEDED_TENANTS = {"acme": "premium", "globex": "basic", "initech": "basic"}
TENANT_STATUSES = {"pending", "provisioning", "active", "failed"}


@pytest.fixture
def db():
    conn = psycopg.connect(
        host=DB_HOST,
        port=DB_PORT,
        dbname=DB_NAME,
        user=DB_USER,
        password=DB_PASSWORD,
        connect_timeout=5,
    )
    try:
        yield conn
    finally:
        conn.rollback()
        conn.close()


@pytest.fixture
def cache():
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=5, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def test_connects_as_saasodoo_without_superuser(db):
    row = db.execute(
        "SELECT current_user, current_database(), rolsuper, rolcreatedb"
        " FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row == (DB_USER, DB_NAME, False, True)
    roles = {
        r[0]
        for r in db.execute(
            "SELECT g.rolname FROM pg_auth_members m"
            " JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member"
            " WHERE u.rolname = current_user"
        )
    }
    assert {"pg_monitor", "pg_signal_backend"} <= roles


def test_wrong_password_is_rejected():
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=DB_HOST,
            port=DB_PORT,
            dbname=DB_NAME,
            user=DB_USER,
            password=DB_PASSWORD + "-wrong",
            connect_timeout=5,
        )


def test_platform_tables_exist_and_are_owned_by_saasodoo(db):
    owners = dict(
        db.execute(
            "SELECT tablename, tableowner FROM pg_tables"
            " WHERE schemaname = 'public'"
            " AND tablename IN ('tenants', 'users', 'subscriptions', 'audit_log')"
        ).fetchall()
    )
    assert owners == {t: DB_USER for t in ("tenants", "users", "subscriptions", "audit_log")}


def test_seeded_tenants(db):
    rows = db.execute(
        "SELECT slug, tier, status, created_at, updated_at, status_changed_at"
        " FROM tenants WHERE slug = ANY(%s)",
        (list(SEEDED_TENANTS),),
    ).fetchall()
    assert {slug: tier for slug, tier, *_ in rows} == SEEDED_TENANTS
    for _slug, _tier, status, *timestamps in rows:
        # Runbook tests may move a tenant through its life cycle; the value must stay valid.
        assert status in TENANT_STATUSES
        assert all(ts is not None for ts in timestamps)
    users = dict(
        db.execute(
            "SELECT t.slug, count(u.id) FROM tenants t LEFT JOIN users u ON u.tenant_id = t.id"
            " WHERE t.slug = ANY(%s) GROUP BY t.slug",
            (list(SEEDED_TENANTS),),
        ).fetchall()
    )
    assert all(users[slug] >= 1 for slug in SEEDED_TENANTS)
    subscribed = {
        r[0]
        for r in db.execute(
            "SELECT DISTINCT t.slug FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id"
        )
    }
    assert set(SEEDED_TENANTS) <= subscribed


def test_tenant_status_check_rejects_unknown_status(db):
    slug = f"test-{uuid.uuid4().hex[:12]}"
    with pytest.raises(errors.CheckViolation) as excinfo:
        db.execute(
            "INSERT INTO tenants (slug, tier, status) VALUES (%s, 'basic', 'exploded')", (slug,)
        )
    assert excinfo.value.diag.constraint_name == "tenants_status_check"
    db.rollback()
    with pytest.raises(errors.CheckViolation):
        db.execute("UPDATE tenants SET status = 'exploded' WHERE slug = 'acme'")
    db.rollback()


def test_tenant_tier_check_rejects_unknown_tier(db):
    with pytest.raises(errors.CheckViolation) as excinfo:
        db.execute(
            "INSERT INTO tenants (slug, tier, status) VALUES (%s, 'gold', 'pending')",
            (f"test-{uuid.uuid4().hex[:12]}",),
        )
    assert excinfo.value.diag.constraint_name == "tenants_tier_check"


def test_pg_stat_statements_is_installed_and_collecting(db):
    assert db.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'"
    ).fetchone() is not None
    assert "pg_stat_statements" in db.execute("SHOW shared_preload_libraries").fetchone()[0]
    db.execute("SELECT count(*) FROM tenants")
    # pg_monitor lets saasodoo read every statement's text, not just "<insufficient privilege>".
    (count,) = db.execute(
        "SELECT count(*) FROM pg_stat_statements WHERE query ILIKE '%%FROM tenants%%'"
    ).fetchone()
    assert count >= 1


def test_server_settings(db):
    assert db.execute("SHOW max_connections").fetchone()[0] == "50"
    assert db.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
    assert int(db.execute("SHOW port").fetchone()[0]) == DB_PORT


def test_redis_ping(cache):
    assert cache.ping() is True


def test_redis_set_get_round_trip(cache):
    key = f"saasodoo:test:{uuid.uuid4().hex}"
    try:
        assert cache.set(key, "tenant=acme", ex=60) is True
        assert cache.get(key) == "tenant=acme"
        assert 0 < cache.ttl(key) <= 60
    finally:
        cache.delete(key)
    assert cache.get(key) is None
