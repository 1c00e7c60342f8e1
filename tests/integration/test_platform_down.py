"""platform_down.yml against the real test bed: inject the fault, run, assert healed, rerun."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from kubernetes import client

from testbed import faults, postgres_faults
from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

# The cooldown is a guard rail with its own test; here it would block the repeated restarts
# that one test session makes of the same backend.
NO_COOLDOWN = {"platform_down_cooldown_minutes": 0}


@pytest.fixture
def backend_crashloop(platform):
    faults.wait_healthy("backend")
    fault = faults.crashloop("backend")
    yield fault
    fault.undo()


def _codes(report: dict) -> set[tuple[str, str]]:
    return {(f["code"], f["component"] or "") for f in report["findings"]}


def test_check_mode_on_broken_platform_changes_nothing(platform, backend_crashloop):
    ns = platform["saasodoo_platform_namespace"]
    before = k8s_state.snapshot([ns])

    result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN, check=True)

    assert result.rc == 0, result.stdout[-3000:]
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    report = result.artifacts["platform_down_report"]
    assert ("WORKLOAD_CRASHLOOP", "backend") in _codes(report)
    assert report["first_broken_layer"] == "backend"
    assert any(a.startswith("would restart Deployment/" + ns + "/" + platform["saasodoo_components"]["backend"]["name"])
               for a in report["actions"]), report["actions"]
    assert not faults.component_healthy("backend"), "check mode must not heal the backend"


def test_crashlooping_backend_is_restarted_and_healed(platform, backend_crashloop):
    backend = platform["saasodoo_components"]["backend"]
    ref = f"Deployment/{backend['namespace']}/{backend['name']}"

    result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["platform_down_report"]
    assert ("WORKLOAD_CRASHLOOP", "backend") in _codes(report)
    crash = next(f for f in report["findings"] if f["code"] == "WORKLOAD_CRASHLOOP")
    assert crash["severity"] == "critical"
    assert any("CrashLoopBackOff" in line for line in crash["evidence"])
    assert report["first_broken_layer"] == "backend"
    assert f"rolling restart of {ref}" in report["actions"]
    assert report["healthy_after"] is True, report["remaining"]
    assert "first broken layer: backend" in result.stdout
    # The platform really healed: new pods, none of the broken ones left, all ready.
    assert faults.component_healthy("backend")
    live = {p.metadata.name for p in faults._pods(backend)}
    assert live.isdisjoint(p.split("/")[-1] for p in backend_crashloop.touched)
    deployment = faults._workload(backend)
    assert "kubectl.kubernetes.io/restartedAt" in deployment.spec.template.metadata.annotations
    assert "saasodoo.io/last-restart-at" in deployment.metadata.annotations

    again = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["platform_down_report"]["healthy_before"] is True
    assert again.artifacts["platform_down_report"]["actions"] == []

    # Crashing again within the cooldown: the run decides to restart, takes the one-writer Lease, the
    # cooldown holds the restart back - and nothing is reported changed (the run's own Lease, created
    # and given back, is not a change to the platform) and no Lease is left behind.
    relapse = faults.crashloop("backend")
    try:
        held = run_playbook("platform_down.yml")

        assert held.rc == 0, held.stdout[-3000:]
        assert held.changed == 0, held.stdout[-3000:]
        skipped = held.artifacts["platform_down_report"]["skipped"]
        assert any(s["ref"] == ref and "cooldown" in s["why"] for s in skipped), skipped
        assert not faults.component_healthy("backend")
        assert faults.read_lease() is None
    finally:
        relapse.undo()


@pytest.fixture
def pod_with_a_literal_secret(platform):
    """A workload outside the platform whose pod spec carries a password as a literal env value (as
    real clusters have): the diagnosis lists workloads and pods cluster-wide, so it reads this one."""
    api = k8s_state.api_client()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = f"pd-secret-{uuid.uuid4().hex[:6]}"
    secret = f"Lit3ral-{uuid.uuid4().hex}"
    core.create_namespace({"metadata": {"name": ns}})
    apps.create_namespaced_deployment(ns, {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "legacy"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "legacy"}},
                 "template": {"metadata": {"labels": {"app": "legacy"}}, "spec": {"containers": [
                     {"name": "app", "image": "example/legacy:1",
                      "env": [{"name": "DATABASE_PASSWORD", "value": secret}]}]}}}})
    faults.wait_until("the legacy pod to exist",
                      lambda: len(core.list_namespaced_pod(ns, label_selector="app=legacy").items) == 1, timeout=60)
    yield secret
    core.delete_namespace(ns)


def test_healthy_platform_is_left_alone(platform, pod_with_a_literal_secret):
    faults.wait_healthy("backend")
    ns = platform["saasodoo_platform_namespace"]
    before = k8s_state.snapshot([ns])

    result = run_playbook("platform_down.yml")

    assert result.rc == 0, result.stdout[-3000:]
    assert result.changed == 0
    assert result.artifacts["platform_down_report"]["findings"] == []
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    # The pod's literal env value was read by the cluster-wide lists, yet it is in no artifact: not the
    # output, not ansible-runner's job events (what AWX stores), not the stats.
    secret = pod_with_a_literal_secret
    assert '"DATABASE_PASSWORD"' in result.events        # the pod was read
    assert secret not in result.stdout and secret not in result.events and secret not in repr(result.artifacts)


def test_frontend_scaled_to_zero_is_scaled_back(platform):
    frontend = platform["saasodoo_components"]["frontend"]
    faults.wait_healthy("frontend")
    fault = faults.scale_to_zero("frontend")
    try:
        result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["platform_down_report"]
        assert ("WORKLOAD_SCALED_TO_ZERO", "frontend") in _codes(report)
        assert report["first_broken_layer"] == "frontend"
        assert "scaled back to desired replicas: frontend" in report["actions"]
        assert report["healthy_after"] is True, report["remaining"]
        assert faults._workload(frontend).spec.replicas == frontend["replicas"]
        assert faults.component_healthy("frontend")

        again = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)
        assert again.rc == 0 and again.changed == 0, again.stdout[-3000:]
    finally:
        if not faults.component_healthy("frontend"):
            fault.undo()


def test_a_component_stopped_on_purpose_is_not_scaled_up(platform):
    """scale_backend's stop mode (data_loss.yml, restore_backup) records the replicas it had and scales to
    zero: platform_down names it, hands it over and leaves it at zero (a restore may be running)."""
    frontend = platform["saasodoo_components"]["frontend"]
    annotation = platform["platform_down_stop_annotation"]
    faults.wait_healthy("frontend")
    patch = faults.apps().patch_namespaced_deployment
    patch(frontend["name"], frontend["namespace"], {"metadata": {"annotations": {annotation: str(frontend["replicas"])}},
                                                    "spec": {"replicas": 0}})
    try:
        faults.wait_until("frontend to have no pods", lambda: not faults._pods(frontend))
        result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        # Read before the stop is undone: still at zero, still carrying its record.
        workload = faults._workload(frontend)
        assert workload.spec.replicas == 0
        assert (workload.metadata.annotations or {}).get(annotation) == str(frontend["replicas"])
        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["platform_down_report"]
        assert ("WORKLOAD_SCALED_TO_ZERO", "frontend") in _codes(report)
        assert not [a for a in report["actions"] if "frontend" in a], report["actions"]
        ref = f"Deployment/{frontend['namespace']}/{frontend['name']}"
        skipped = next(s for s in report["skipped"] if s["ref"] == ref)
        assert skipped["why"].startswith(f"stopped on purpose ({annotation} records the replicas it had)")
        assert report["healthy_after"] is False
    finally:
        patch(frontend["name"], frontend["namespace"], {"metadata": {"annotations": {annotation: None}},
                                                        "spec": {"replicas": frontend["replicas"]}})
        faults.wait_healthy("frontend")


def test_writers_an_interrupted_run_left_stopped_are_brought_back(platform):
    """What a data_loss run killed after its swap leaves (test_data_loss.py kills real runs): the backend at
    zero with the replicas it had and the run's name recorded, and that run's expired Lease. platform_down
    names the run, takes the Lease over and brings the backend back to the recorded count, not to the
    inventory's; check mode changes nothing; a rerun changes nothing."""
    backend = platform["saasodoo_components"]["backend"]
    record, by = platform["platform_down_stop_annotation"], platform["platform_down_stopped_by_annotation"]
    killed = "data_loss/ci-runner-9/20261207T031500Z/4242"
    recorded = backend["replicas"] + 1           # what it ran before the stop, not the inventory's count
    ns = backend["namespace"]
    faults.wait_healthy("backend")
    faults.delete_lease()
    patch = faults.apps().patch_namespaced_deployment
    patch(backend["name"], ns, {"metadata": {"annotations": {record: str(recorded), by: killed}}, "spec": {"replicas": 0}})
    lease = faults.lease_held(killed, renewed_ago=3600, duration=900, details={"runbook": "data_loss"})
    try:
        faults.wait_until("backend to have no pods", lambda: not faults._pods(backend))
        before = k8s_state.snapshot([ns])

        dry = run_playbook("platform_down.yml", check=True, extravars=NO_COOLDOWN)

        assert dry.rc == 0, dry.stdout[-3000:]
        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
        assert faults.read_lease().spec.holder_identity == killed
        report = dry.artifacts["platform_down_report"]
        assert any(a.startswith(f"would bring back after the interrupted run {killed}: ") for a in report["actions"]), \
            report["actions"]

        result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        # Read from the cluster before anything is undone.
        workload = faults._workload(backend)
        assert workload.spec.replicas == recorded and (workload.status.ready_replicas or 0) == recorded
        assert not {record, by} & set(workload.metadata.annotations or {})
        assert faults.read_lease() is None
        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["platform_down_report"]
        assert ("WORKLOAD_SCALED_TO_ZERO", "backend") in _codes(report)
        ref = f"Deployment/{ns}/{backend['name']}"
        assert any(a.startswith(f"brought back after the interrupted run {killed}: {ref}: scaled from 0 back to the "
                                f"recorded {recorded}") for a in report["actions"]), report["actions"]
        assert any(a.startswith("took over the one-writer Lease") and killed in a for a in report["actions"])
        assert not [s for s in report["skipped"] if s["ref"] == ref], report["skipped"]

        again = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)
        assert again.rc == 0 and again.changed == 0, again.stdout[-3000:]
    finally:
        lease.undo()
        patch(backend["name"], ns, {"metadata": {"annotations": {record: None, by: None}},
                                    "spec": {"replicas": backend["replicas"]}})
        faults.wait_until("backend back at its replicas", lambda: len(faults._pods(backend)) == backend["replicas"], timeout=120)
        faults.wait_healthy("backend")


def _public_status(platform) -> int:
    """HTTP status of the public HTTPS entry point (the test bed's endpoint follows Traefik's pods)."""
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(platform["saasodoo_endpoints"]["public"]["url"] + "/", timeout=5, context=ctx) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_ingress_controller_down_is_named_and_restarted(platform):
    """Traefik crash-looping: the first broken layer is the ingress, not the frontend behind it."""
    traefik = platform["saasodoo_components"]["traefik"]
    faults.wait_healthy("traefik")
    fault = faults.crashloop("traefik")
    try:
        faults.wait_until("the public endpoint to lose its ingress", lambda: _public_status(platform) == 503, timeout=15)

        result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["platform_down_report"]
        assert ("WORKLOAD_CRASHLOOP", "traefik") in _codes(report)
        assert report["first_broken_layer"] == "ingress"
        assert f"rolling restart of Deployment/{traefik['namespace']}/{traefik['name']}" in report["actions"]
        assert report["healthy_after"] is True, report["remaining"]
        assert faults.component_healthy("traefik")
        faults.wait_until("the public endpoint to answer again", lambda: _public_status(platform) == 200, timeout=15)

        again = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        assert again.artifacts["platform_down_report"]["actions"] == []
    finally:
        if not faults.component_healthy("traefik"):
            fault.undo()


def _memory_limit(comp: dict) -> tuple[str, str]:
    """(container, memory limit) of the component's first container."""
    container = faults._workload(comp).spec.template.spec.containers[0]
    return container.name, (container.resources.limits or {}).get("memory")


def test_oomkilled_component_gets_a_bounded_memory_raise(platform):
    """Resource exhaustion: Redis killed at its memory limit gets the limit raised x1.5, once."""
    redis = platform["saasodoo_components"]["redis"]
    ns = redis["namespace"]
    ref = f"{redis['kind']}/{ns}/{redis['name']}"
    container, limit = _memory_limit(redis)
    assert limit == redis["resources"]["limits"]["memory"] == "512Mi"
    faults.wait_healthy("redis")
    fault = faults.oomkilled("redis")
    try:
        before = k8s_state.snapshot([ns])
        check = run_playbook("platform_down.yml", check=True, extravars=NO_COOLDOWN)

        assert check.rc == 0, check.stdout[-3000:]
        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
        report = check.artifacts["platform_down_report"]
        assert ("WORKLOAD_OOMKILLED", "redis") in _codes(report)
        assert report["first_broken_layer"] == "data"
        line = f"{ref} container {container}: memory limit 512Mi -> 768Mi (x1.5, cap 4Gi)"
        assert report["actions"] == [f"would raise the memory limit of {line}"], report["actions"]

        result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["platform_down_report"]
        assert report["actions"] == [f"raised the memory limit of {line}"], report["actions"]
        assert report["healthy_after"] is True, report["remaining"]
        assert report["escalation"]["level"] == "medium"
        assert _memory_limit(redis) == (container, "768Mi")
        assert faults.component_healthy("redis")

        again = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        assert again.rc == 0, again.stdout[-3000:]
        assert again.changed == 0, again.stdout[-3000:]
        assert again.artifacts["platform_down_report"]["findings"] == []
    finally:
        faults.apps().patch_namespaced_deployment(redis["name"], ns, {"spec": {"template": {"spec": {"containers": [
            {"name": container, "resources": {"limits": {"memory": limit}}}]}}}})
        faults.wait_healthy("redis")


def _node_specs() -> dict:
    """What a runbook could change on a node: cordon and taints (the node controller's own
    node.kubernetes.io/* taints for NotReady nodes are its business, not the runbook's)."""
    return {n.metadata.name: {"unschedulable": bool(n.spec.unschedulable),
                              "taints": sorted((t.key, t.effect) for t in n.spec.taints or []
                                               if not t.key.startswith("node.kubernetes.io/"))}
            for n in faults.core().list_node().items}


def test_nodes_not_ready_stop_the_diagnosis_and_nothing_is_touched(platform):
    """Two of three nodes NotReady: the nodes layer is broken, the runbook names it and changes nothing."""
    ns = platform["saasodoo_platform_namespace"]
    nodes = sorted(n.metadata.name for n in faults.core().list_node().items)[:2]
    injected = []
    try:
        for node in nodes:
            injected.append(faults.node_not_ready(node))
        before = k8s_state.snapshot([ns])
        node_specs = _node_specs()

        result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        assert result.changed == 0
        report = result.artifacts["platform_down_report"]
        assert report["first_broken_layer"] == "nodes"
        assert {("NODE_NOT_READY", "")} <= _codes(report)
        assert {f["ref"] for f in report["findings"] if f["code"] == "NODE_NOT_READY"} == {f"Node/{n}" for n in nodes}
        assert report["actions"] == []
        assert report["escalation"]["level"] == "critical"
        assert "first broken layer: nodes" in result.stdout
        # Nodes are never cordoned, drained or otherwise touched, and no workload was restarted.
        assert _node_specs() == node_specs
        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    finally:
        for fault in injected:
            fault.undo()


def test_external_service_down_is_reported_for_escalation(platform):
    """Supabase refusing connections: the external layer is named; nothing in the cluster is touched."""
    from testbed import endpoints

    ns = platform["saasodoo_platform_namespace"]
    before = k8s_state.snapshot([ns])
    endpoints.set_fault("supabase", down=True)
    try:
        result = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        assert result.changed == 0
        report = result.artifacts["platform_down_report"]
        assert ("ENDPOINT_DOWN", "supabase") in _codes(report)
        down = next(f for f in report["findings"] if f["code"] == "ENDPOINT_DOWN")
        assert "Connection refused" in down["evidence"][0]
        assert report["first_broken_layer"] == "external"
        assert report["actions"] == []
        assert report["escalation"]["level"] == "critical"
        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    finally:
        endpoints.clear("supabase")

    again = run_playbook("platform_down.yml", extravars=NO_COOLDOWN)
    assert again.rc == 0 and again.artifacts["platform_down_report"]["findings"] == [], again.stdout[-3000:]


def test_data_layer_unreachable_is_named_and_handed_over(platform):
    """PostgreSQL and Redis stopped behind Ready pods: the data layer is named from the platform's side."""
    ns = platform["saasodoo_platform_namespace"]
    postgres = platform["saasodoo_components"]["postgres"]
    db_address = f"{platform['saasodoo_db_host']}:{platform['saasodoo_db_port']}"
    redis_address = f"{platform['saasodoo_redis_host']}:{platform['saasodoo_redis_port']}"
    stopped = postgres_faults.stop_server()
    subprocess.run(["redis-cli", "-h", platform["saasodoo_redis_host"], "-p", str(platform["saasodoo_redis_port"]),
                    "shutdown", "nosave"], capture_output=True, check=False)
    try:
        assert faults.component_healthy("postgres") and faults.component_healthy("redis")  # the pods look fine
        before = k8s_state.snapshot([ns])

        for check in (True, False):
            result = run_playbook("platform_down.yml", check=check, extravars=NO_COOLDOWN)

            assert result.rc == 0, result.stdout[-3000:]
            assert result.changed == 0, result.stdout[-3000:]
            report = result.artifacts["platform_down_report"]
            assert report["first_broken_layer"] == "data", report["findings"]
            pg = next(f for f in report["findings"] if f["code"] == "PG_UNREACHABLE")
            assert pg["runbook"] == "postgres_connection" and pg["severity"] == "critical"
            assert pg["ref"] == f"StatefulSet/{ns}/{postgres['name']}" and db_address in pg["message"]
            redis = next(f for f in report["findings"] if f["code"] == "REDIS_UNREACHABLE")
            assert redis["layer"] == "data" and redis_address in redis["message"]
            assert report["actions"] == [] and report["escalation"]["level"] == "critical"
            assert platform["saasodoo_db_password"] not in result.stdout
        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    finally:
        stopped.undo()
        subprocess.run(["bash", "testbed/services.sh", "up"], cwd=ROOT, capture_output=True, check=True)
