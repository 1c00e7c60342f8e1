"""backend_crashloop.yml against the real test bed: each fault injected into the real cluster,
check mode changes nothing, the real run heals (or reports what a human must do), the rerun
changes nothing.

Faults:
- OOMKilled: testbed.faults.oomkilled (kwok's crashloop stage with reason OOMKilled, exit 137);
- a missing Secret key: a key removed from the real Secret the backend Deployment references
  with secretKeyRef (sample_platform's saasodoo-backend-secrets), put back afterwards;
- a NetworkPolicy blocking backend -> database: a real deny policy in the platform namespace
  that isolates the backend's egress (DNS only), with the backend crash-looping on
  "could not connect to server" as it would. The test bed has no network plugin: NetworkPolicies
  are judged from the objects, like reapply_netpol does.
kwok's pods have no logs (no kubelet serves them): the runbook says so in its evidence and
reads the termination messages, events and statuses instead.
"""

from __future__ import annotations

import base64

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import faults
from tests import k8s_state
from tests.runbooks import assert_held_by_another_run, run_playbook

# The cooldown is a guard rail of restart_service with its own test; one session restarts the
# same backend more than once.
NO_COOLDOWN = {"backend_crashloop_cooldown_minutes": 0}
DENY_POLICY = "test-deny-backend-egress"
MISSING_KEY = "KILLBILL_API_KEY"


def core():
    return client.CoreV1Api(k8s_state.api_client())


def apps():
    return client.AppsV1Api(k8s_state.api_client())


def net():
    return client.NetworkingV1Api(k8s_state.api_client())


def codes(report):
    return {f["code"] for f in report["findings"]}


def finding(report, code):
    return next(f for f in report["findings"] if f["code"] == code)


def memory_limit(comp):
    dep = apps().read_namespaced_deployment(comp["name"], comp["namespace"])
    container = next(c for c in dep.spec.template.spec.containers if c.name == "backend")
    return container.resources.limits["memory"]


def restore_resources(comp):
    """Put the backend's resources back to the inventory's desired state (the runbook raised them)."""
    if memory_limit(comp) != comp["resources"]["limits"]["memory"]:
        apps().patch_namespaced_deployment(comp["name"], comp["namespace"], {"spec": {"template": {"spec": {
            "containers": [{"name": "backend", "resources": comp["resources"]}]}}}})
    faults.wait_healthy("backend", timeout=180)


@pytest.fixture
def backend(platform):
    comp = platform["saasodoo_components"]["backend"]
    faults.wait_healthy("backend")
    yield comp
    restore_resources(comp)


def test_bad_input_is_refused_before_anything_changes(backend):
    ns = backend["namespace"]
    before = k8s_state.snapshot([ns])

    result = run_playbook("backend_crashloop.yml", extravars={"backend_crashloop_memory_factor": 0.5})

    assert result.rc != 0
    assert "backend_crashloop_memory_factor must be above 1" in result.stdout
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []


def test_oomkilled_backend_gets_a_bounded_memory_raise(backend):
    ns = backend["namespace"]
    ref = f"Deployment/{ns}/{backend['name']}"
    fault = faults.oomkilled("backend")
    try:
        # Check mode on the broken platform: the findings, the "would", and nothing changed.
        before = k8s_state.snapshot([ns])
        check = run_playbook("backend_crashloop.yml", check=True)
        assert check.rc == 0, check.stdout[-3000:]
        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
        report = check.artifacts["backend_crashloop_report"]
        assert {"BACKEND_CRASHLOOP", "BACKEND_OOMKILLED"} <= codes(report)
        crash = finding(report, "BACKEND_CRASHLOOP")
        assert crash["severity"] == "critical"
        assert any("OOMKilled, exit code 137" in e for e in crash["evidence"]), crash["evidence"]
        assert any(e.startswith("logs: unavailable") for e in crash["evidence"]), crash["evidence"]
        assert report["actions"] == [f"would raise the memory limit of {ref} container backend: "
                                     "memory limit 1Gi -> 1536Mi (x1.5, cap 4Gi)"]
        assert not faults.component_healthy("backend")

        # The real run raises the limit (the rollout replaces the crashing pods) and verifies.
        result = run_playbook("backend_crashloop.yml")
        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["backend_crashloop_report"]
        assert {"BACKEND_CRASHLOOP", "BACKEND_OOMKILLED"} <= codes(report)
        assert report["actions"] == [f"raised the memory limit of {ref} container backend: "
                                     "memory limit 1Gi -> 1536Mi (x1.5, cap 4Gi)"]
        assert report["healthy_after"] is True and report["remaining"] == [], report["remaining"]
        assert report["escalation"]["level"] == "medium"
        assert memory_limit(backend) == "1536Mi"
        assert faults.component_healthy("backend")

        again = run_playbook("backend_crashloop.yml")
        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        assert again.artifacts["backend_crashloop_report"]["findings"] == []
    finally:
        if not faults.component_healthy("backend"):
            fault.undo()


def test_a_lease_held_by_another_live_run_leaves_the_oomkilled_backend_alone(backend):
    # One writer per platform: another live run holds the Lease, so this run diagnoses, reports who
    # holds it, and changes nothing - no memory raise, and the other run's Lease stays as it was.
    ns = backend["namespace"]
    holder = "platform_down/awx-2/20261207T031500Z/7"
    faults.delete_lease()
    fault = faults.oomkilled("backend")
    try:
        faults.lease_held(holder, renewed_ago=5, duration=600,
                          details={"runbook": "platform_down", "awx_job": "4712", "host": "awx-2"})
        before, lease_before = k8s_state.snapshot([ns]), faults.read_lease()

        result = run_playbook("backend_crashloop.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["backend_crashloop_report"]
        assert {"BACKEND_CRASHLOOP", "BACKEND_OOMKILLED"} <= codes(report)
        assert_held_by_another_run(result, report, holder, {"runbook": "platform_down", "awx_job": "4712"})
        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
        # The fault is still there, read from the cluster: the limit was not raised, the pods still crash.
        assert memory_limit(backend) == backend["resources"]["limits"]["memory"]
        assert not faults.component_healthy("backend")
        after = faults.read_lease()
        assert after.metadata.resource_version == lease_before.metadata.resource_version
        assert after.spec.holder_identity == holder
    finally:
        faults.delete_lease()
        if not faults.component_healthy("backend"):
            fault.undo()


@pytest.fixture
def secret_without_key(backend):
    """Remove one key from the real Secret the backend's env references; put it back afterwards."""
    name = next(e.value_from.secret_key_ref.name
                for c in apps().read_namespaced_deployment(backend["name"], backend["namespace"]).spec.template.spec.containers
                for e in c.env or [] if e.value_from and e.value_from.secret_key_ref
                and e.value_from.secret_key_ref.key == MISSING_KEY)
    secret = core().read_namespaced_secret(name, backend["namespace"])
    saved = secret.data[MISSING_KEY]
    core().patch_namespaced_secret(name, backend["namespace"], [{"op": "remove", "path": f"/data/{MISSING_KEY}"}])
    yield name, base64.b64decode(saved).decode()
    core().patch_namespaced_secret(name, backend["namespace"], {"data": {MISSING_KEY: saved}})


def test_missing_secret_key_is_named_and_handed_to_a_human(backend, secret_without_key):
    ns = backend["namespace"]
    name, value = secret_without_key
    before = k8s_state.snapshot([ns])

    check = run_playbook("backend_crashloop.yml", check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    assert codes(check.artifacts["backend_crashloop_report"]) == {"BACKEND_SECRET_KEY_MISSING"}

    result = run_playbook("backend_crashloop.yml")
    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["backend_crashloop_report"]
    missing = finding(report, "BACKEND_SECRET_KEY_MISSING")
    assert missing["severity"] == "high"
    assert f"key {MISSING_KEY} is missing from the Secret {name}" in missing["message"]
    assert report["actions"] == []
    assert report["handed_over"] == [missing["message"] + ": a human must supply it (the runbook never invents "
                                     "secrets or configuration)"]
    assert report["escalation"]["level"] == "high"
    # Nothing invented, nothing changed; no secret value anywhere in the output.
    assert result.changed == 0
    assert MISSING_KEY not in (core().read_namespaced_secret(name, ns).data or {})
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    other = base64.b64decode(core().read_namespaced_secret(name, ns).data["SUPABASE_KEY"]).decode()
    for secret_value in (value, other):
        assert secret_value not in result.stdout and secret_value not in repr(result.artifacts)


@pytest.fixture
def db_blocked(backend, platform):
    """A real deny policy isolating the backend's egress (DNS only), and the backend crash-looping
    on the database connection as it would."""
    ns = backend["namespace"]
    selector = apps().read_namespaced_deployment(backend["name"], ns).spec.selector.match_labels
    net().create_namespaced_network_policy(ns, {
        "metadata": {"name": DENY_POLICY},
        "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": platform["saasodoo_dns_namespace"]}}}],
                     "ports": [{"protocol": "UDP", "port": 53}]}]}})
    fault = faults.crashloop("backend", message="psycopg.OperationalError: could not connect to server: Connection timed out")
    yield ns
    fault.undo()
    for name in (DENY_POLICY, platform["backend_crashloop_db_policy_names"]["egress"],
                 platform["backend_crashloop_db_policy_names"]["ingress"]):
        try:
            net().delete_namespaced_network_policy(name, ns)
        except ApiException as exc:
            if exc.status != 404:
                raise


def test_network_policy_blocking_the_database_is_opened_and_the_backend_rolled(backend, platform, db_blocked):
    ns = db_blocked
    ref = f"Deployment/{ns}/{backend['name']}"
    allow = platform["backend_crashloop_db_policy_names"]["egress"]
    before = k8s_state.snapshot([ns])

    check = run_playbook("backend_crashloop.yml", extravars=NO_COOLDOWN, check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    report = check.artifacts["backend_crashloop_report"]
    assert {"BACKEND_CRASHLOOP", "BACKEND_DB_BLOCKED_BY_NETWORK_POLICY", "BACKEND_LOG_ERRORS"} <= codes(report)
    assert f"would apply NetworkPolicy {ns}/{allow} (allows backend -> database; deny policies left in place)" \
        in report["actions"]
    assert f"would restart {ref}" in report["actions"]

    result = run_playbook("backend_crashloop.yml", extravars=NO_COOLDOWN)
    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["backend_crashloop_report"]
    blocked = finding(report, "BACKEND_DB_BLOCKED_BY_NETWORK_POLICY")
    assert blocked["severity"] == "critical"
    assert blocked["evidence"] == [f"egress isolated by {ns}/{DENY_POLICY}, no rule allows the database"]
    assert "database" in report["causes"]
    assert report["actions"] == [
        f"applied NetworkPolicy {ns}/{allow} (allows backend -> database; deny policies left in place)",
        f"rolling restart of {ref}"]
    assert report["healthy_after"] is True and report["remaining"] == [], report["remaining"]
    # The user's deny policy is still there; the allow policy opens the one path.
    names = {p.metadata.name for p in net().list_namespaced_network_policy(ns).items}
    assert {DENY_POLICY, allow} <= names
    egress = net().read_namespaced_network_policy(allow, ns).spec.egress[0]
    assert egress.ports[0].port == platform["saasodoo_components"]["postgres"]["port"]
    assert faults.component_healthy("backend")

    again = run_playbook("backend_crashloop.yml", extravars=NO_COOLDOWN)
    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["backend_crashloop_report"]["findings"] == []
