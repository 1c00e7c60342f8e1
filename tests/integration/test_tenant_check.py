"""saasodoo_tenant_check against the real test bed: real PostgreSQL rows, real namespaces, the real
kube-scheduler failing to place a pod. No mocks.

Three broken tenants are made once for the module (random slugs `tc-<hex>`, removed afterwards):
- stuck:   a row in provisioning since 30 min, tier premium, its namespace and an `odoo` Deployment
           whose pod asks for 64 CPU - more than any node has - so the scheduler reports FailedScheduling;
- orphan:  a namespace labelled as a tenant's, without a row;
- half:    a row in provisioning since 30 min whose namespace was never created.
The seeded tenants (acme, globex, initech) are only read.
"""

from __future__ import annotations

import os
import secrets
import time

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import platform_vars
from tests.k8s_state import api_client
from tests.runbooks import run_module

DB = {
    "host": "127.0.0.1",
    "port": int(os.environ.get("SAASODOO_DB_PORT", "55432")),
    "user": "saasodoo",
    "password": os.environ.get("SAASODOO_DB_PASSWORD", "saasodoo-local"),
    "dbname": "saasodoo",
}
DB_ARGS = {"login_host": DB["host"], "login_port": DB["port"], "login_user": DB["user"],
           "login_password": DB["password"], "login_db": DB["dbname"]}
SEEDED = ("acme", "globex", "initech")
VARS = platform_vars.load()
PREFIX = VARS["saasodoo_tenant_namespace_prefix"]
LABEL = VARS["saasodoo_tenant_label"]
TIER_LABEL = VARS["saasodoo_tenant_tier_label"]
MODULE = "saasodoo_tenant_check"
KINDS = {"namespaces", "deployments", "services", "ingresses", "pvcs", "networkpolicies", "resourcequotas", "events",
         "nodes", "pods"}


def module_args(**extra):
    args = dict(DB_ARGS, tiers=VARS["saasodoo_tenant_tiers"], tenant_label=LABEL, tier_label=TIER_LABEL,
                namespace_prefix=PREFIX)
    args.update(extra)
    return args


def wait_for(what, check, timeout=60.0, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def tenant(result, slug):
    found = [t for t in result["tenants"] if t["slug"] == slug]
    assert len(found) == 1, "tenant %s not in the result: %s" % (slug, [t["slug"] for t in result["tenants"]])
    return found[0]


def findings(result, slug, code=None):
    return [f for f in result["findings"] if f.get("tenant") == slug and (code is None or f["code"] == code)]


def namespace_body(slug, tier):
    """A tenant namespace labelled the way the sample platform labels them."""
    labels = {VARS["saasodoo_part_of_label"]: VARS["saasodoo_part_of"], LABEL: slug, TIER_LABEL: tier}
    return client.V1Namespace(metadata=client.V1ObjectMeta(name=PREFIX + slug, labels=labels))


def unschedulable_deployment(slug):
    """The tenant's `odoo` Deployment, asking for more CPU than any node of the test bed has (8)."""
    labels = {"app.kubernetes.io/name": "odoo", LABEL: slug}
    container = client.V1Container(
        name="odoo", image=VARS["saasodoo_tenant_odoo_image"],
        resources=client.V1ResourceRequirements(requests={"cpu": "64", "memory": "1Gi"},
                                                limits={"cpu": "64", "memory": "1Gi"}))
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name="odoo", labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels),
                                              spec=client.V1PodSpec(containers=[container]))))


@pytest.fixture(scope="module")
def broken():
    """The three broken tenants; rows and namespaces are removed whatever happens."""
    suffix = secrets.token_hex(3)
    slugs = {"stuck": "tc-%s-s" % suffix, "orphan": "tc-%s-o" % suffix, "half": "tc-%s-h" % suffix}
    core = client.CoreV1Api(api_client())
    apps = client.AppsV1Api(api_client())
    conn = psycopg.connect(connect_timeout=5, autocommit=True, application_name="test_tenant_check", **DB)
    namespaces = []
    try:
        for key in ("stuck", "half"):
            conn.execute(
                "INSERT INTO tenants (slug, tier, status, created_at, updated_at, status_changed_at) "
                "VALUES (%s, 'premium', 'provisioning', now() - interval '31 minutes', now() - interval '30 minutes', "
                "now() - interval '30 minutes')", (slugs[key],))
        for key in ("stuck", "orphan"):
            core.create_namespace(namespace_body(slugs[key], "premium"))
            namespaces.append(PREFIX + slugs[key])
        ns = PREFIX + slugs["stuck"]
        apps.create_namespaced_deployment(ns, unschedulable_deployment(slugs["stuck"]))

        def scheduling_event():
            events = core.list_namespaced_event(ns, field_selector="reason=FailedScheduling").items
            return events[0] if events else None

        event = wait_for("the scheduler's FailedScheduling event in %s" % ns, scheduling_event)
        yield {"slugs": slugs, "event_message": event.message}
    finally:
        conn.execute("DELETE FROM tenants WHERE slug = ANY(%s)", (list(slugs.values()),))
        conn.close()
        for name in namespaces:
            try:
                core.delete_namespace(name)
            except ApiException as e:
                if e.status != 404:
                    raise


@pytest.fixture(scope="module")
def seeded(request):
    """The sample platform's tenants: deployed already, or deployed now by the `platform` fixture.

    The idempotent deploy takes minutes on a busy test bed; it only runs when a seeded tenant's
    namespace or Deployment is missing.
    """
    apps = client.AppsV1Api(api_client())

    def deployed(slug):
        try:
            dep = apps.read_namespaced_deployment("odoo", PREFIX + slug)
        except ApiException:
            return False
        return (dep.status.ready_replicas or 0) >= (dep.spec.replicas or 1)

    if not all(deployed(slug) for slug in SEEDED):
        request.getfixturevalue("platform")
    return SEEDED


@pytest.fixture(scope="module")
def whole(broken, seeded):
    """One run over every tenant (no filter)."""
    result = run_module(MODULE, module_args())
    assert not result["failed"], result.get("msg")
    return result


@pytest.fixture(scope="module")
def focused(broken):
    """One run on the stuck tenant only."""
    result = run_module(MODULE, module_args(tenants=[broken["slugs"]["stuck"]]))
    assert not result["failed"], result.get("msg")
    return result


def assert_stuck(result, slug, event_message, severity):
    t = tenant(result, slug)
    # The cluster has room for a premium tenant (2 x 500m / 1Gi), and the waiting pod asks for more than
    # any node has: more nodes of the same size would not help, provisioning again from the tier would.
    assert (t["verdict"], t["action"]) == ("stuck", "retry"), t["reasons"]
    assert t["status"] == "provisioning" and 29 <= t["status_age_minutes"] <= 40
    assert t["capacity"]["fits"] is True
    stuck = findings(result, slug, "TENANT_STUCK_PROVISIONING")
    assert [f["severity"] for f in stuck] == [severity]
    unsched = findings(result, slug, "TENANT_UNSCHEDULABLE")
    assert len(unsched) == 1, [f["code"] for f in findings(result, slug)]
    assert unsched[0]["evidence"]["event_message"] == event_message
    assert "Insufficient cpu" in event_message
    assert [p["fits_any_node"] for p in unsched[0]["evidence"]["pods"]] == [False]
    assert unsched[0]["evidence"]["pods"][0]["requests"]["cpu"] == 64.0
    assert not findings(result, slug, "TENANT_INSUFFICIENT_CAPACITY")
    assert t["objects"]["deployment"] == dict(t["objects"]["deployment"], present=True, ready=False)
    assert t["objects"]["service"]["present"] is False


def test_stuck_tenant_with_failed_scheduling(broken, focused):
    slug = broken["slugs"]["stuck"]
    assert [t["slug"] for t in focused["tenants"]] == [slug]
    assert_stuck(focused, slug, broken["event_message"], "high")
    assert focused["actions"]["retry"] == [slug]
    assert focused["severity"] == "high" and focused["healthy"] is False
    # A fixed set of cluster-wide lists, not one per tenant (one call each unless a kind has more
    # objects than a page holds; the unit tests prove the count does not grow with the tenants).
    assert set(focused["api_calls_by_resource"]) == KINDS
    assert focused["api_calls"] == sum(focused["api_calls_by_resource"].values()) >= 10
    assert focused["changed"] is False


def test_stuck_tenant_in_the_whole_platform(broken, whole):
    slug = broken["slugs"]["stuck"]
    # Here two of our tenants are down at once (stuck + half): several tenants failing is critical.
    assert_stuck(whole, slug, broken["event_message"], "critical")
    multi = [f for f in whole["findings"] if f["code"] == "TENANTS_MULTIPLE_FAILURES"]
    assert len(multi) == 1 and multi[0]["severity"] == "critical"
    assert {slug, broken["slugs"]["half"]} <= set(multi[0]["evidence"]["tenants"])
    assert whole["severity"] == "critical"
    assert set(whole["api_calls_by_resource"]) == KINDS


def test_orphaned_namespace(broken, whole):
    slug = broken["slugs"]["orphan"]
    t = tenant(whole, slug)
    assert (t["verdict"], t["action"]) == ("orphaned", "cleanup")
    assert (t["in_database"], t["in_cluster"], t["namespace"]) == (False, True, PREFIX + slug)
    orphan = findings(whole, slug, "TENANT_ORPHANED_NAMESPACE")
    assert [f["severity"] for f in orphan] == ["medium"]
    assert slug in whole["actions"]["cleanup"]


def test_record_without_namespace(broken, whole):
    slug = broken["slugs"]["half"]
    t = tenant(whole, slug)
    assert (t["verdict"], t["action"]) == ("orphaned", "retry")
    assert (t["in_database"], t["in_cluster"], t["objects"]) == (True, False, None)
    missing = findings(whole, slug, "TENANT_MISSING_NAMESPACE")
    assert len(missing) == 1 and missing[0]["evidence"]["namespace"] == PREFIX + slug
    assert missing[0]["severity"] == "critical"  # high alone; critical with the stuck tenant down too
    assert slug in whole["actions"]["retry"]


def test_seeded_tenants_are_healthy(seeded, whole):
    for slug in seeded:
        t = tenant(whole, slug)
        assert (t["verdict"], t["action"], t["status"]) == ("healthy", "none", "active"), (slug, t["reasons"])
        assert t["problems"] == [] and not findings(whole, slug)
        assert t["objects"]["pvc"]["bound"] is True
        assert t["objects"]["network_policies"]["missing"] == []
        assert t["objects"]["resource_quota"]["present"] is True


def _essence(result):
    """What check mode must not change: everything but clocks and counters."""
    return {
        "changed": result["changed"],
        "tenants": [{k: t[k] for k in ("slug", "verdict", "action", "status", "tier", "objects", "problems",
                                       "capacity", "in_database", "in_cluster")} for t in result["tenants"]],
        "findings": sorted((f["code"], f["severity"], f.get("tenant")) for f in result["findings"]),
        "api_calls": result["api_calls"],
    }


def test_check_mode_gives_the_same_result(broken, focused):
    checked = run_module(MODULE, module_args(tenants=[broken["slugs"]["stuck"]]), check=True)
    assert not checked["failed"], checked.get("msg")
    assert _essence(checked) == _essence(focused)


def test_unreachable_database_fails_clearly(broken):
    result = run_module(MODULE, module_args(login_port=1, connect_timeout=2, tenants=[broken["slugs"]["stuck"]]))
    assert result["failed"] is True
    msg = result["msg"]
    assert "Cannot read the tenants from the platform database" in msg
    assert "127.0.0.1:1" in msg and "refused" in msg and "database_optional" in msg
    assert "Traceback" not in msg and "Traceback" not in str(result.get("exception") or "")
    assert DB["password"] not in str(result)
    assert result["database"]["connected"] is False


def test_unreachable_database_is_optional_when_asked(broken):
    slug = broken["slugs"]["stuck"]
    result = run_module(MODULE, module_args(login_port=1, connect_timeout=2, database_optional=True, tenants=[slug]))
    assert not result["failed"], result.get("msg")
    assert result["source"] == "cluster"
    assert [f["severity"] for f in result["findings"] if f["code"] == "TENANTS_DATABASE_UNAVAILABLE"] == ["high"]
    # No status to go by: judged from its objects alone, the tenant is not serving.
    t = tenant(result, slug)
    assert (t["verdict"], t["in_database"], t["status"]) == ("failed", None, None)
    assert findings(result, slug, "TENANT_UNSCHEDULABLE")
