"""restart_service alone, on throwaway Deployments in a namespace of the test's own."""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes import client

from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

PLAYBOOK = str(ROOT / "tests" / "integration" / "playbooks" / "restart_service.yml")


def _deployment(name: str, replicas: int = 2, template_labels: dict | None = None, min_ready: int = 0) -> dict:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "minReadySeconds": min_ready,
                 "template": {"metadata": {"labels": {**labels, **(template_labels or {})}},
                              "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}},
    }


class Scratch:
    def __init__(self):
        self.ns = f"rs-test-{uuid.uuid4().hex[:6]}"
        self.core = client.CoreV1Api(k8s_state.api_client())
        self.apps = client.AppsV1Api(k8s_state.api_client())
        self.core.create_namespace({"metadata": {"name": self.ns}})

    def deploy(self, name: str, **kw) -> None:
        self.apps.create_namespaced_deployment(self.ns, _deployment(name, **kw))
        self.wait(lambda: (self.apps.read_namespaced_deployment(name, self.ns).status.ready_replicas or 0)
                  == kw.get("replicas", 2) or kw.get("template_labels"), f"{name} ready")

    def pods(self, name: str):
        return [p for p in self.core.list_namespaced_pod(self.ns, label_selector=f"app={name}").items
                if p.metadata.deletion_timestamp is None]

    def crashloop(self, name: str) -> list[str]:
        pods = self.pods(name)
        for p in pods:
            self.core.patch_namespaced_pod(p.metadata.name, self.ns, {"metadata": {"labels": {"saasodoo.test/crashloop": "true"}}})
        self.wait(lambda: all((q.status.container_statuses or [None])[0] is not None
                              and (q.status.container_statuses[0].restart_count or 0) >= 3 for q in self.pods(name)),
                  f"{name} crash-looping")
        return [p.metadata.name for p in pods]

    @staticmethod
    def wait(check, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}")

    def delete(self) -> None:
        self.core.delete_namespace(self.ns)


@pytest.fixture
def scratch(testbed):
    s = Scratch()
    yield s
    s.delete()


def _vars(scratch: Scratch, *names: str, **extra) -> dict:
    return {"restart_service_workloads": [{"kind": "Deployment", "name": n, "namespace": scratch.ns} for n in names],
            "restart_service_timeout": 60, "restart_service_poll_interval": 1, **extra}


def test_bad_input_is_refused_before_anything_changes(scratch):
    scratch.deploy("web")
    scratch.crashloop("web")
    before = k8s_state.snapshot([scratch.ns])

    bad_kind = run_playbook(PLAYBOOK, extravars={"restart_service_workloads": [
        {"kind": "Pod", "name": "web", "namespace": scratch.ns}]})
    no_target = run_playbook(PLAYBOOK, extravars={"restart_service_label_selectors": ["app=web"]})

    assert bad_kind.rc != 0 and "kind" in bad_kind.stdout and "Deployment, StatefulSet, DaemonSet" in bad_kind.stdout
    assert no_target.rc != 0 and "restart_service_namespace" in no_target.stdout
    assert k8s_state.diff(before, k8s_state.snapshot([scratch.ns])) == []


def test_missing_workload_is_named(scratch):
    result = run_playbook(PLAYBOOK, extravars=_vars(scratch, "nope"))
    assert result.rc != 0
    assert f"Deployment nope not found in namespace {scratch.ns}" in result.stdout


def test_restarts_only_the_unhealthy_one_then_is_idempotent(scratch):
    scratch.deploy("web")
    scratch.deploy("api")
    broken = scratch.crashloop("web")
    api_before = k8s_state.snapshot([scratch.ns])

    check = run_playbook(PLAYBOOK, extravars=_vars(scratch, "web", "api"), check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert k8s_state.diff(api_before, k8s_state.snapshot([scratch.ns])) == []
    assert [r["ref"] for r in check.artifacts["restart_service_result"]["restarted"]] == [f"Deployment/{scratch.ns}/web"]

    result = run_playbook(PLAYBOOK, extravars=_vars(scratch, "web", "api"))
    assert result.rc == 0, result.stdout[-3000:]
    res = result.artifacts["restart_service_result"]
    assert [r["ref"] for r in res["restarted"]] == [f"Deployment/{scratch.ns}/web"]
    assert any("CrashLoopBackOff" in reason for reason in res["restarted"][0]["reasons_before"])
    assert res["healthy_after"] is True
    assert not {p.metadata.name for p in scratch.pods("web")} & set(broken)
    api = scratch.apps.read_namespaced_deployment("api", scratch.ns)
    assert "kubectl.kubernetes.io/restartedAt" not in (api.spec.template.metadata.annotations or {})

    again = run_playbook(PLAYBOOK, extravars=_vars(scratch, "web", "api"))
    assert again.rc == 0 and again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["restart_service_result"]["restarted"] == []


def test_cooldown_and_cap_hold_back_restarts(scratch):
    for name in ("a", "b", "c"):
        scratch.deploy(name, replicas=1)
        scratch.crashloop(name)

    capped = run_playbook(PLAYBOOK, extravars=_vars(scratch, "a", "b", "c", restart_service_max_restarts=1))
    assert capped.rc == 0, capped.stdout[-3000:]
    res = capped.artifacts["restart_service_result"]
    assert len(res["restarted"]) == 1
    assert sorted(s["why"].split(":")[0] for s in res["skipped"]) == ["cap reached", "cap reached"]

    forced = run_playbook(PLAYBOOK, extravars=_vars(scratch, "a", restart_service_force=True,
                                                     restart_service_cooldown_minutes=10))
    assert forced.rc == 0 and forced.changed == 0, forced.stdout[-3000:]
    skipped = forced.artifacts["restart_service_result"]["skipped"]
    assert skipped and skipped[0]["why"].startswith("restarted recently; cooldown has")


def test_a_rollout_that_cannot_complete_is_reported_with_the_pods_reasons(scratch):
    # Every pod of this template crash-loops, so the restart's new pods never become available
    # (minReadySeconds outlasts the moment a crashing container looks ready).
    scratch.deploy("doomed", replicas=1, template_labels={"saasodoo.test/crashloop": "true"}, min_ready=15)
    scratch.wait(lambda: any((p.status.container_statuses or [None])[0] is not None
                             and p.status.container_statuses[0].state.waiting is not None
                             for p in scratch.pods("doomed")), "doomed crash-looping")

    result = run_playbook(PLAYBOOK, extravars=_vars(scratch, "doomed", restart_service_timeout=8))

    assert result.rc != 0
    assert f"the rollout of Deployment/{scratch.ns}/doomed did not complete within 8s" in result.stdout
    assert "CrashLoopBackOff" in result.stdout


def test_another_workloads_pods_that_share_its_labels_are_never_judged_or_deleted(scratch):
    """Two StatefulSets whose labels overlap: `shared`'s selector (app=shared) also selects `twin`'s
    pods (app=shared, member=twin). twin crash-loops; restarting `shared` must neither see twin's pods
    as its own (it is healthy: nothing to do) nor delete them (a StatefulSet restart deletes the
    workload's unhealthy pods)."""
    def statefulset(name, selector, labels):
        return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
                "spec": {"replicas": 1, "serviceName": name, "selector": selector,
                         "template": {"metadata": {"labels": labels},
                                      "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}}}

    scratch.apps.create_namespaced_stateful_set(scratch.ns, statefulset(
        "shared", {"matchLabels": {"app": "shared"}}, {"app": "shared", "member": "shared"}))
    scratch.apps.create_namespaced_stateful_set(scratch.ns, statefulset(
        "twin", {"matchLabels": {"app": "shared", "member": "twin"}}, {"app": "shared", "member": "twin"}))
    scratch.wait(lambda: all((scratch.apps.read_namespaced_stateful_set(n, scratch.ns).status.ready_replicas or 0) == 1
                             for n in ("shared", "twin")), "both StatefulSets ready")
    scratch.core.patch_namespaced_pod("twin-0", scratch.ns, {"metadata": {"labels": {"saasodoo.test/crashloop": "true"}}})
    scratch.wait(lambda: (scratch.core.read_namespaced_pod("twin-0", scratch.ns).status.container_statuses[0]
                          .restart_count or 0) >= 3, "twin-0 crash-looping")
    twin_uid = scratch.core.read_namespaced_pod("twin-0", scratch.ns).metadata.uid

    result = run_playbook(PLAYBOOK, extravars={
        "restart_service_workloads": [{"kind": "StatefulSet", "name": "shared", "namespace": scratch.ns}],
        "restart_service_timeout": 60, "restart_service_poll_interval": 1})

    # Read before anything is undone: twin's crash-looping pod is the same pod, nothing was restarted.
    twin_after = scratch.core.read_namespaced_pod("twin-0", scratch.ns)
    shared = scratch.apps.read_namespaced_stateful_set("shared", scratch.ns)
    assert result.rc == 0 and result.changed == 0, result.stdout[-3000:]
    res = result.artifacts["restart_service_result"]
    assert res["restarted"] == [] and res["found"][0]["healthy"] is True, res["found"]
    assert twin_after.metadata.uid == twin_uid and twin_after.metadata.deletion_timestamp is None
    assert "kubectl.kubernetes.io/restartedAt" not in (shared.spec.template.metadata.annotations or {})
