#!/usr/bin/env python3
"""Break the test bed the way the troubleshooting guide's symptoms describe, and undo it.

From pytest:
    from testbed import faults
    fault = faults.crashloop("backend")       # pods in CrashLoopBackOff, restart count growing
    ...
    fault.undo()

From the command line (KUBECONFIG points at the test bed):
    testbed/faults.py list
    testbed/faults.py status           # each platform component and its pods
    testbed/faults.py inject crashloop backend
    testbed/faults.py inject oomkilled backend
    testbed/faults.py inject scale-to-zero frontend
    testbed/faults.py inject node-not-ready kwok-worker-3
    testbed/faults.py undo crashloop backend

Faults act on the real cluster through the Kubernetes API; kwok's stages (testbed/kwok/kwok.yaml)
turn the labels set here into the pod and node states a kubelet would report.
Names (namespaces, components) come from the inventory, like the runbooks'.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from testbed import platform_vars  # noqa: E402

CRASHLOOP_LABEL = "saasodoo.test/crashloop"
NODE_NOT_READY_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
PREVIOUS_REPLICAS = "saasodoo.test/replicas-before-fault"
DEFAULT_KUBECONFIG = Path(os.environ.get("TESTBED_CACHE", platform_vars.ROOT / ".cache" / "testbed")) / "kubeconfig"


class FaultError(Exception):
    """The fault could not be injected or undone."""


@dataclass
class Fault:
    """An injected fault: what it is, what it touched, and how to undo it."""

    name: str
    target: str
    touched: list[str] = field(default_factory=list)
    _undo: Callable[[], None] | None = None

    def undo(self) -> None:
        if self._undo:
            self._undo()
            self._undo = None


_api_client = None


def api() -> client.ApiClient:
    global _api_client
    if _api_client is None:
        path = os.environ.get("KUBECONFIG") or str(DEFAULT_KUBECONFIG)
        _api_client = config.new_client_from_config(config_file=path)
    return _api_client


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api())


def apps() -> client.AppsV1Api:
    return client.AppsV1Api(api())


def _component(name: str) -> dict:
    components = platform_vars.load()["saasodoo_components"]
    if name not in components:
        raise FaultError(f"unknown component {name!r}; the inventory has {', '.join(sorted(components))}")
    return components[name]


def _workload(comp: dict):
    reader = {"Deployment": apps().read_namespaced_deployment,
              "StatefulSet": apps().read_namespaced_stateful_set,
              "DaemonSet": apps().read_namespaced_daemon_set}[comp["kind"]]
    return reader(comp["name"], comp["namespace"])


def _selector(workload) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(workload.spec.selector.match_labels.items()))


def _pods(comp: dict):
    pods = core().list_namespaced_pod(comp["namespace"], label_selector=_selector(_workload(comp))).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise FaultError(f"timed out after {timeout:.0f}s waiting for {what}")


# --------------------------------------------------------------------------- control plane faults

def _api_answers() -> bool:
    try:
        client.VersionApi(api()).get_code(_request_timeout=2)
        return True
    except Exception:  # noqa: BLE001 - any failure means: not answering yet
        return False


def api_server_frozen() -> Fault:
    """The bed's kube-apiserver stops answering (SIGSTOP): the kernel still accepts connections and no
    answer ever comes, as with a hung API server or a black-holed network - the case a client without a
    timeout waits on forever (a stopped one refuses at once). Undo: SIGCONT, then wait until it answers."""
    import signal

    from testbed import cluster

    name = "kube-apiserver"
    pid = int(cluster.pid_file(name).read_text())
    if not cluster.process_alive(pid, name):
        raise FaultError(f"{name} (pid {pid}) is not running: start the bed (make testbed-up)")
    os.kill(pid, signal.SIGSTOP)

    def undo() -> None:
        os.kill(pid, signal.SIGCONT)
        wait_until("the API server to answer again", _api_answers, timeout=60)

    return Fault("api-server-frozen", f"{name} pid {pid}", [f"process/{name}/{pid}"], undo)


# --------------------------------------------------------------------------- pod faults

def crashloop(component: str, reason: str = "Error", exit_code: int = 1, message: str = "",
              min_restarts: int = 3) -> Fault:
    """Every current pod of the component crash-loops (CrashLoopBackOff, growing restart count).

    A rolling restart cures it: the new pods do not carry the fault label, as a transient crash
    (a poisoned cache, a stuck connection) is cured by fresh containers.
    """
    comp = _component(component)
    pods = _pods(comp)
    if not pods:
        raise FaultError(f"{component} has no pods to break")
    for pod in pods:
        core().patch_namespaced_pod(pod.metadata.name, comp["namespace"], {"metadata": {
            "labels": {CRASHLOOP_LABEL: "true"},
            "annotations": {"saasodoo.test/crashloop-reason": reason,
                            "saasodoo.test/crashloop-exit-code": str(exit_code),
                            "saasodoo.test/crashloop-message": message},
        }})
    names = [p.metadata.name for p in pods]

    def looping() -> bool:
        current = {p.metadata.name: p for p in _pods(comp)}
        for name in names:
            pod = current.get(name)
            if pod is None or not pod.status.container_statuses:
                return False
            cs = pod.status.container_statuses[0]
            if not (cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff" and cs.restart_count >= min_restarts):
                return False
        return True

    wait_until(f"{component} pods to crash-loop with {min_restarts}+ restarts", looping, timeout=90)

    def undo() -> None:
        # Fresh pods are the cure: delete the broken ones and let the controller replace them.
        for name in names:
            try:
                core().delete_namespaced_pod(name, comp["namespace"], grace_period_seconds=0)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        wait_healthy(component)

    return Fault("crashloop", component, [f"Pod/{comp['namespace']}/{n}" for n in names], undo)


def oomkilled(component: str) -> Fault:
    """The component's containers are killed for exceeding their memory limit (OOMKilled, 137)."""
    fault = crashloop(component, reason="OOMKilled", exit_code=137, message="container exceeded its memory limit")
    fault.name = "oomkilled"
    return fault


# --------------------------------------------------------------------------- workload faults

def scale_to_zero(component: str) -> Fault:
    """Scale the component's workload to zero replicas (remembering the previous count)."""
    comp = _component(component)
    workload = _workload(comp)
    before = workload.spec.replicas
    patch = {"metadata": {"annotations": {PREVIOUS_REPLICAS: str(before)}}, "spec": {"replicas": 0}}
    patcher = {"Deployment": apps().patch_namespaced_deployment,
               "StatefulSet": apps().patch_namespaced_stateful_set}[comp["kind"]]
    patcher(comp["name"], comp["namespace"], patch)
    wait_until(f"{component} to have no pods", lambda: not _pods(comp))

    def undo() -> None:
        patcher(comp["name"], comp["namespace"],
                {"metadata": {"annotations": {PREVIOUS_REPLICAS: None}}, "spec": {"replicas": before}})
        wait_healthy(component)

    return Fault("scale-to-zero", component, [f"{comp['kind']}/{comp['namespace']}/{comp['name']}"], undo)


# --------------------------------------------------------------------------- node faults

def node_not_ready(node: str) -> Fault:
    """kwok reports the node NotReady (its Ready condition False)."""
    core().patch_node(node, {"metadata": {"labels": {NODE_NOT_READY_LABEL: "true"}}})

    def ready_status() -> str | None:
        conds = core().read_node(node).status.conditions or []
        return next((c.status for c in conds if c.type == "Ready"), None)

    wait_until(f"node {node} to report NotReady", lambda: ready_status() == "False")

    def undo() -> None:
        core().patch_node(node, {"metadata": {"labels": {NODE_NOT_READY_LABEL: None}}})
        wait_until(f"node {node} to report Ready", lambda: ready_status() == "True")

    return Fault("node-not-ready", node, [f"Node/{node}"], undo)


# --------------------------------------------------------------------------- the one-writer lease

def _leases() -> client.CoordinationV1Api:
    return client.CoordinationV1Api(api())


def read_lease():
    """The platform's one-writer Lease (inventory saasodoo_lease), or None when there is none."""
    lease = platform_vars.load()["saasodoo_lease"]
    try:
        return _leases().read_namespaced_lease(lease["name"], lease["namespace"])
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def delete_lease() -> None:
    lease = platform_vars.load()["saasodoo_lease"]
    try:
        _leases().delete_namespaced_lease(lease["name"], lease["namespace"])
    except ApiException as exc:
        if exc.status != 404:
            raise


def lease_held(holder: str, renewed_ago: float = 5, duration: int = 600, details: dict | None = None) -> Fault:
    """Another run holds the platform's one-writer Lease: renewed `renewed_ago` seconds ago for
    `duration` seconds (live when renewed_ago < duration, left by a killed run otherwise), with the
    annotations roles/runbook_lease writes (saasodoo.io/lease-<key>: runbook, awx_job, host...)."""
    lease = platform_vars.load()["saasodoo_lease"]
    renewed = (datetime.now(timezone.utc) - timedelta(seconds=renewed_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _leases().create_namespaced_lease(lease["namespace"], {
        "metadata": {"name": lease["name"],
                     "annotations": {f"saasodoo.io/lease-{k}": v for k, v in (details or {}).items()}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                 "acquireTime": renewed, "renewTime": renewed}})
    return Fault("lease-held", holder, [f"Lease/{lease['namespace']}/{lease['name']}"], delete_lease)


# --------------------------------------------------------------------------- checks

def component_healthy(component: str) -> bool:
    comp = _component(component)
    w = _workload(comp)
    want = w.spec.replicas
    st = w.status
    if want == 0 or (st.observed_generation or 0) < w.metadata.generation:
        return False
    if (st.ready_replicas or 0) < want or (st.updated_replicas or 0) < want:
        return False
    pods = _pods(comp)
    return len(pods) == want and all(
        any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        and CRASHLOOP_LABEL not in (p.metadata.labels or {})
        for p in pods
    )


def wait_healthy(component: str, timeout: float = 120) -> None:
    wait_until(f"{component} to be healthy", lambda: component_healthy(component), timeout=timeout)


FAULTS: dict[str, Callable[[str], Fault]] = {
    "crashloop": crashloop,
    "oomkilled": oomkilled,
    "scale-to-zero": scale_to_zero,
    "node-not-ready": node_not_ready,
}


def undo_by_name(fault: str, target: str) -> None:
    """Undo a fault injected by an earlier process (the command line's `undo`)."""
    if fault in ("crashloop", "oomkilled"):
        comp = _component(target)
        for pod in _pods(comp):
            if CRASHLOOP_LABEL in (pod.metadata.labels or {}):
                core().delete_namespaced_pod(pod.metadata.name, comp["namespace"], grace_period_seconds=0)
        wait_healthy(target)
    elif fault == "scale-to-zero":
        comp = _component(target)
        w = _workload(comp)
        before = int((w.metadata.annotations or {}).get(PREVIOUS_REPLICAS, comp["replicas"]))
        apps().patch_namespaced_deployment(comp["name"], comp["namespace"], {
            "metadata": {"annotations": {PREVIOUS_REPLICAS: None}}, "spec": {"replicas": before}})
        wait_healthy(target)
    elif fault == "node-not-ready":
        core().patch_node(target, {"metadata": {"labels": {NODE_NOT_READY_LABEL: None}}})
    else:
        raise FaultError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")


def show_status() -> None:
    """One line per platform component and pod, like `kubectl get pods` but from the inventory's names."""
    for key, comp in sorted(platform_vars.load()["saasodoo_components"].items()):
        try:
            w = _workload(comp)
        except ApiException as exc:
            print(f"{key:11} {comp['kind']}/{comp['namespace']}/{comp['name']}: {exc.reason}")
            continue
        print(f"{key:11} {comp['kind']}/{comp['namespace']}/{comp['name']}: "
              f"{w.status.ready_replicas or 0}/{w.spec.replicas} ready")
        for pod in _pods(comp):
            cs = (pod.status.container_statuses or [None])[0]
            state = pod.status.phase
            if cs is not None and cs.state.waiting:
                state = cs.state.waiting.reason
            restarts = cs.restart_count if cs is not None else 0
            print(f"{'':11}   pod {pod.metadata.name:44} {state:18} restarts={restarts}")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] == "status":
        show_status()
        return 0
    if len(argv) >= 2 and argv[1] == "list":
        for name, fn in FAULTS.items():
            print(f"{name:16} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if len(argv) != 4 or argv[1] not in ("inject", "undo"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    action, fault, target = argv[1:]
    try:
        if action == "inject":
            if fault not in FAULTS:
                raise FaultError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
            injected = FAULTS[fault](target)
            print(f"injected {injected.name} into {injected.target}: {', '.join(injected.touched)}")
        else:
            undo_by_name(fault, target)
            print(f"undid {fault} on {target}")
    except (FaultError, ApiException) as exc:
        reason = getattr(exc, "reason", None) or exc
        print(f"faults: ERROR: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
