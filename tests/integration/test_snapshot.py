"""saasodoo_snapshot against the real test bed: break something, take the snapshot, read the finding.

No mocks: the module runs through ansible-runner like in a playbook, against the local control
plane. Every fault is undone in `finally`, and the 200+ tenant namespaces are deleted at teardown.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from testbed import faults
from tests.runbooks import KUBECONFIG, run_module

SEED_TENANTS = 210           # "200+" tenants, each a namespace with a one-replica Deployment
SEED_OWNER = {"saasodoo.test/owner": "snapshot-tests"}
MAX_CALLS = 12


def _api() -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=os.environ.get("KUBECONFIG", str(KUBECONFIG)), client_configuration=cfg)
    cfg.connection_pool_maxsize = 32  # bulk creation runs 32 requests at once
    return client.ApiClient(cfg)


def snapshot(platform: dict, check: bool = False, envvars: dict | None = None, **extra) -> dict:
    args = {
        "components": platform["saasodoo_components"],
        "tenant_label": platform["saasodoo_tenant_label"],
        "restart_threshold": platform["saasodoo_thresholds"]["pod_restart_warning"],
    }
    args.update(extra)
    result = run_module("saasodoo_snapshot", args, check=check, envvars=envvars)
    assert not result.get("failed"), result.get("msg")
    return result


def _findings(result: dict, code: str, **match) -> list[dict]:
    return [f for f in result["findings"] if f["code"] == code and all(f.get(k) == v for k, v in match.items())]


def _inject(make, target: str) -> faults.Fault:
    """Inject a fault; once more if another test's fault on the same target got in the way."""
    try:
        return make(target)
    except faults.FaultError:
        faults.undo_by_name("crashloop", target)
        return make(target)


# --------------------------------------------------------------------------- the base platform

def test_healthy_platform_is_seen_in_a_few_calls(platform):
    result = snapshot(platform, check=True)

    assert result["changed"] is False
    assert result["api_calls"] <= MAX_CALLS
    assert set(result["components"]) == set(platform["saasodoo_components"])
    assert all(not c["missing"] for c in result["components"].values())
    prefix = platform["saasodoo_tenant_namespace_prefix"]
    for tenant in platform["saasodoo_tenants"]:
        assert result["tenants"][prefix + tenant["slug"]]["slug"] == tenant["slug"]
        assert result["tenants"][prefix + tenant["slug"]]["workloads_desired"] >= 1
    assert {n["name"] for n in result["nodes"]} >= {"kwok-worker-1", "kwok-worker-2", "kwok-worker-3"}
    node = result["nodes"][0]
    assert node["allocatable"]["cpu_millicores"] > 0 and node["requested"]["pods"] >= 0
    # Requests are summed per node from the pods: the platform requests something somewhere.
    assert sum(n["requested"]["cpu_millicores"] for n in result["nodes"]) > 0
    assert result["duration_seconds"] >= 0 and result["counts"]["nodes"] >= 3


# --------------------------------------------------------------------------- faults

def test_oomkilled_backend_is_a_critical_workload_finding(platform):
    faults.wait_healthy("backend")
    fault = _inject(faults.oomkilled, "backend")
    try:
        result = snapshot(platform)

        oom = _findings(result, "WORKLOAD_OOMKILLED", component="backend")
        assert oom, [(f["code"], f["component"]) for f in result["findings"]]
        assert oom[0]["severity"] == "critical"
        assert any("OOMKilled" in line and "137" in line for line in oom[0]["evidence"]), oom[0]["evidence"]
        assert result["severity"] == "critical" and result["healthy"] is False
        backend_pods = [p for p in result["pods_unhealthy"] if p["component"] == "backend"]
        assert backend_pods
        for p in backend_pods:
            assert p["last_termination"]["reason"] == "OOMKilled"
            assert p["last_termination"]["exit_code"] == 137
            assert p["waiting_reason"] == "CrashLoopBackOff"
            assert p["restarts"] >= 3
        assert result["components"]["backend"]["oomkilled"] is True
    finally:
        fault.undo()


def test_not_ready_node_is_critical(platform):
    fault = faults.node_not_ready("kwok-worker-3")
    try:
        result = snapshot(platform)

        found = _findings(result, "NODE_NOT_READY", ref="Node/kwok-worker-3")
        assert found, [(f["code"], f["ref"]) for f in result["findings"]]
        # A NotReady node is lost capacity: critical, as the platform_diagnosis filter says.
        assert found[0]["severity"] == "critical"
        node = next(n for n in result["nodes"] if n["name"] == "kwok-worker-3")
        assert node["ready"] is False and node["conditions"]["Ready"] == "False"
        assert all(n["ready"] for n in result["nodes"] if n["name"] != "kwok-worker-3")
    finally:
        fault.undo()
        _wait_untainted("kwok-worker-3")
    # Ready again with its address: the API server reaches its kubelet by it (pod logs).
    addresses = {a.type for a in client.CoreV1Api(_api()).read_node("kwok-worker-3").status.addresses or []}
    assert "InternalIP" in addresses, addresses


def _wait_untainted(node: str, timeout: float = 30) -> None:
    """The node controller lifts its not-ready taints a few seconds after the node is Ready again."""
    core = client.CoreV1Api(_api())
    faults.wait_until(f"node {node} to lose its not-ready taints", lambda: not any(
        t.key.startswith("node.kubernetes.io/not-ready") for t in (core.read_node(node).spec.taints or [])),
        timeout=timeout)


# --------------------------------------------------------------------------- many tenants

def _deployment(name: str) -> dict:
    labels = {"app": "odoo", **SEED_OWNER}
    return {
        "metadata": {"name": "odoo", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "odoo"}},
            # No grace period: the namespace controller then removes the namespaces in seconds.
            "template": {"metadata": {"labels": labels}, "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                "name": "odoo", "image": "odoo:17.0",
                "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}}}]}},
        },
    }


def _delete_seeded(core: client.CoreV1Api, wait: float = 60) -> None:
    selector = ",".join(f"{k}={v}" for k, v in SEED_OWNER.items())
    names = [n.metadata.name for n in core.list_namespace(label_selector=selector).items]

    def delete(name: str) -> None:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(delete, names))
    # The namespace controller empties and removes them; wait while that is quick, not longer.
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and core.list_namespace(label_selector=selector, limit=1).items:
        time.sleep(1)


@pytest.fixture(scope="module")
def many_tenants(platform):
    """The base platform's snapshot, then SEED_TENANTS more tenants (deleted at teardown)."""
    api = _api()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    label = platform["saasodoo_tenant_label"]
    _delete_seeded(core, wait=0)  # leftovers of an interrupted run; fresh numbers avoid those still terminating
    base = snapshot(platform)
    # Numbers continue after any namespace still terminating from an earlier run: no name clash.
    taken = [int(n.metadata.name.rsplit("-", 1)[1]) for n in core.list_namespace().items
             if n.metadata.name.startswith("tenant-snap-") and n.metadata.name.rsplit("-", 1)[1].isdigit()]
    start = max(taken, default=0) + 1
    names = [f"tenant-snap-{n}" for n in range(start, start + SEED_TENANTS)]

    def seed(name: str) -> None:
        core.create_namespace({"metadata": {"name": name, "labels": {label: name.removeprefix("tenant-"),
                                                                     **SEED_OWNER}}})
        apps.create_namespaced_deployment(name, _deployment(name))

    try:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(seed, names))
        yield {"base": base, "names": names}
    finally:
        _delete_seeded(core)


PAGE_SIZE = 500  # the module's default


def _pages(counts: dict) -> int:
    return sum(max(1, -(-n // PAGE_SIZE)) for n in counts.values())


def test_api_calls_do_not_grow_with_tenants(platform, many_tenants):
    base, names = many_tenants["base"], many_tenants["names"]

    result = snapshot(platform)

    assert result["api_calls"] <= MAX_CALLS
    # One call per page of each kind: the count follows the page size, never the tenants.
    assert result["api_calls"] == _pages(result["counts"]) and base["api_calls"] == _pages(base["counts"])
    if max(result["counts"].values()) < PAGE_SIZE:  # no kind needs a second page (no leftovers of other runs)
        assert result["api_calls_by_resource"] == base["api_calls_by_resource"]
        assert result["api_calls"] == base["api_calls"]
    missing = [n for n in names if n not in result["tenants"]]
    assert not missing, f"{len(missing)} seeded tenants missing, e.g. {missing[:3]}"
    assert all(result["tenants"][n]["slug"] == n.removeprefix("tenant-") for n in names)
    assert result["summary"]["tenants"] >= base["summary"]["tenants"] + SEED_TENANTS
    assert result["counts"]["deployments"] >= base["counts"]["deployments"] + SEED_TENANTS
    for name in names[:20]:
        tenant = result["tenants"][name]
        assert tenant["workloads_desired"] == 1
        assert tenant["status"] in ("healthy", "down", "degraded")  # pods may still be starting


# --------------------------------------------------------------------------- connection options

def test_k8s_auth_kubeconfig_alone_is_enough(platform, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    # run_module always sets KUBECONFIG; an empty value is what "not set" looks like to the module.
    result = snapshot(platform, envvars={"KUBECONFIG": "", "K8S_AUTH_KUBECONFIG": str(KUBECONFIG)})
    assert result["api_calls"] <= MAX_CALLS and result["summary"]["nodes"] >= 3
    # And it wins over a KUBECONFIG that points nowhere.
    result = snapshot(platform, envvars={"KUBECONFIG": "/nonexistent/kubeconfig",
                                         "K8S_AUTH_KUBECONFIG": str(KUBECONFIG)})
    assert result["summary"]["nodes"] >= 3


def _failure(args: dict, envvars: dict | None = None) -> str:
    result = run_module("saasodoo_snapshot", args, envvars=envvars)
    assert result.get("failed") is True, result
    # ansible-core 2.19 puts "(traceback unavailable)" in every failure's `exception`: no traceback is the point.
    assert "Traceback" not in json.dumps(result), result.get("exception")
    assert "module_stderr" not in result, "the module must fail with a message, not crash"
    return result["msg"]


def test_unreachable_api_server_is_a_clear_failure():
    msg = _failure({"host": "https://127.0.0.1:1"})
    assert msg == "cannot reach the Kubernetes API at https://127.0.0.1:1: connection refused"


def test_rejected_credentials_are_a_clear_failure():
    host = _api().configuration.host
    # No kubeconfig at all (its client certificate would authenticate): the host and a bad token only.
    msg = _failure({"host": host, "api_key": "not-a-valid-token", "validate_certs": False},
                   envvars={"KUBECONFIG": "", "K8S_AUTH_KUBECONFIG": ""})
    assert msg.startswith("the credentials are not allowed to list ")
    assert "cluster-wide" in msg and "401" in msg


def test_missing_kubeconfig_is_a_clear_failure():
    msg = _failure({}, envvars={"KUBECONFIG": "", "K8S_AUTH_KUBECONFIG": "/nonexistent/kubeconfig"})
    assert msg == "the kubeconfig /nonexistent/kubeconfig (from the kubeconfig option (or K8S_AUTH_KUBECONFIG)) " \
                  "does not exist"
