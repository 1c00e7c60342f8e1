"""scale_backend alone, on throwaway workloads in a namespace of the test's own.

Each mode runs the way the kubernetes.core integration targets run a feature: check mode
(assert the cluster did not change), real run (assert it did what it says), rerun (assert
changed=0).
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from kubernetes import client

from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

PLAYBOOK = str(ROOT / "tests" / "integration" / "playbooks" / "scale_backend.yml")
ANNOTATION = "saasodoo.io/replicas-before-stop"
RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}}


def _pod_template(name: str, template_labels: dict | None) -> dict:
    return {"metadata": {"labels": {"app": name, **(template_labels or {})}},
            "spec": {"containers": [{"name": "app", "image": "example/app:1", "resources": RESOURCES},
                                    {"name": "sidecar", "image": "example/sidecar:1"}]}}


class Scratch:
    """A namespace of the test's own; its workloads go with it."""

    def __init__(self):
        self.ns = f"sb-test-{uuid.uuid4().hex[:6]}"
        self.core = client.CoreV1Api(k8s_state.api_client())
        self.apps = client.AppsV1Api(k8s_state.api_client())
        self.autoscaling = client.AutoscalingV2Api(k8s_state.api_client())
        self.core.create_namespace({"metadata": {"name": self.ns}})

    def deploy(self, name: str, replicas: int = 2, template_labels: dict | None = None, min_ready: int = 0,
               wait: bool = True) -> None:
        self.apps.create_namespaced_deployment(self.ns, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "minReadySeconds": min_ready,
                     "template": _pod_template(name, template_labels)}})
        if wait:
            self.wait(lambda: (self.deployment(name).status.ready_replicas or 0) == replicas, f"{name} ready")

    def stateful_set(self, name: str, replicas: int = 2, app: str | None = None, extra_labels: dict | None = None) -> None:
        """app: the `app` label (default: the name), shared when another workload's is the same."""
        labels = {"app": app or name, **(extra_labels or {})}
        self.apps.create_namespaced_stateful_set(self.ns, {
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": labels},
                     "template": {**_pod_template(app or name, extra_labels)}}})
        self.wait(lambda: (self.apps.read_namespaced_stateful_set(name, self.ns).status.ready_replicas or 0)
                  == replicas, f"{name} ready")

    def deployment(self, name: str):
        return self.apps.read_namespaced_deployment(name, self.ns)

    def pods(self, name: str):
        return [p for p in self.core.list_namespaced_pod(self.ns, label_selector=f"app={name}").items
                if p.metadata.deletion_timestamp is None]

    def hpas(self) -> dict:
        return {f"HorizontalPodAutoscaler/{self.ns}/{h.metadata.name}": k8s_state.api_client().sanitize_for_serialization(h.spec)
                for h in self.autoscaling.list_namespaced_horizontal_pod_autoscaler(self.ns).items}

    def snapshot(self) -> dict:
        """k8s_state's snapshot plus the autoscalers, which it does not cover."""
        return {**k8s_state.snapshot([self.ns]), **self.hpas()}

    def unchanged_since(self, before: dict) -> list[str]:
        return k8s_state.diff(before, self.snapshot())

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


def _run(scratch: Scratch, name: str = "web", kind: str = "Deployment", check: bool = False, **extra):
    extravars = {"scale_backend_workload": {"kind": kind, "name": name, "namespace": scratch.ns},
                 "scale_backend_timeout": 60, "scale_backend_poll_interval": 1, **extra}
    return run_playbook(PLAYBOOK, extravars=extravars, check=check, diff=True)


def _ok(result) -> dict:
    assert result.rc == 0, result.stdout[-4000:]
    return result.artifacts["scale_backend_result"]


def _refused(result, *needles: str) -> None:
    assert result.rc != 0, result.stdout[-3000:]
    # Messages are wrapped in the YAML output; compare on single spaces.
    text = re.sub(r"\s+", " ", result.stdout)
    for needle in needles:
        assert needle in text, result.stdout[-3000:]


def test_replicas_absolute_then_relative_within_bounds(scratch):
    scratch.deploy("web", replicas=2)
    before = scratch.snapshot()

    check = _run(scratch, scale_backend_replicas=4, check=True)
    res = _ok(check)
    assert scratch.unchanged_since(before) == []
    assert res["check_mode"] is True and res["changed"] is True
    assert (res["before"]["replicas"], res["after"]["replicas"]) == (2, 4)
    assert re.search(r"^\+\s+replicas: 4$", check.stdout, re.M), "check mode --diff shows the new count"

    res = _ok(_run(scratch, scale_backend_replicas=4))
    assert res["changed"] is True and res["check_mode"] is False
    assert (res["before"]["replicas"], res["after"]["replicas"], res["after"]["ready_replicas"]) == (2, 4, 4)
    assert res["ref"] == f"Deployment/{scratch.ns}/web" and res["mode"] == "replicas"
    assert res["workload"] == {"kind": "Deployment", "name": "web", "namespace": scratch.ns}
    assert "scaled from 2 to 4" in res["message"] and "Ready: 4 of 4" in res["message"]
    assert isinstance(res["duration_seconds"], int)
    assert len(scratch.pods("web")) == 4

    again = _run(scratch, scale_backend_replicas=4)
    assert _ok(again)["changed"] is False and again.changed == 0, again.stdout[-3000:]

    res = _ok(_run(scratch, scale_backend_delta=-1))
    assert (res["before"]["replicas"], res["after"]["replicas"]) == (4, 3)
    assert "4 - 1 (scale_backend_delta) = 3" in res["message"]


def test_replicas_outside_the_bounds_are_clamped_or_refused(scratch):
    scratch.deploy("web", replicas=2)

    res = _ok(_run(scratch, scale_backend_delta=10, scale_backend_max_replicas=4))
    assert res["after"]["replicas"] == 4
    assert "is above scale_backend_max_replicas=4: clamped to 4" in res["message"]

    res = _ok(_run(scratch, scale_backend_replicas=0))
    assert res["after"]["replicas"] == 1 and "clamped to 1" in res["message"]

    before = scratch.snapshot()
    refused = _run(scratch, scale_backend_replicas=9, scale_backend_max_replicas=4, scale_backend_clamp=False)
    _refused(refused, "scale_backend_replicas=9 is above scale_backend_max_replicas=4; refused", "Nothing was changed")
    assert scratch.unchanged_since(before) == []


def test_stop_records_the_count_and_restore_brings_it_back(scratch):
    scratch.deploy("web", replicas=3)
    before = scratch.snapshot()

    check = _run(scratch, scale_backend_mode="stop", check=True)
    res = _ok(check)
    assert scratch.unchanged_since(before) == []
    assert res["changed"] is True and res["after"] == {"replicas": 0, "ready_replicas": 3, "recorded_replicas": 3}
    assert re.search(rf"^\+\s+{re.escape(ANNOTATION)}: '3'$", check.stdout, re.M), check.stdout[-3000:]

    res = _ok(_run(scratch, scale_backend_mode="stop"))
    assert res["changed"] is True and (res["before"]["replicas"], res["after"]["replicas"]) == (3, 0)
    assert "Stopped: no pods left" in res["message"]
    web = scratch.deployment("web")
    assert web.spec.replicas == 0 and web.metadata.annotations[ANNOTATION] == "3"
    assert scratch.core.list_namespaced_pod(scratch.ns, label_selector="app=web").items == []

    again = _run(scratch, scale_backend_mode="stop")
    res = _ok(again)
    assert again.changed == 0 and res["changed"] is False, again.stdout[-3000:]
    assert "already stopped" in res["message"] and res["after"]["recorded_replicas"] == 3
    assert scratch.deployment("web").metadata.annotations[ANNOTATION] == "3"

    stopped = scratch.snapshot()
    check = _run(scratch, scale_backend_mode="restore", check=True)
    res = _ok(check)
    assert scratch.unchanged_since(stopped) == []
    assert res["after"]["replicas"] == 3 and res["after"]["recorded_replicas"] is None

    res = _ok(_run(scratch, scale_backend_mode="restore"))
    assert res["changed"] is True and (res["before"]["replicas"], res["after"]["replicas"]) == (0, 3)
    assert res["after"]["ready_replicas"] == 3 and res["after"]["recorded_replicas"] is None
    assert ANNOTATION not in (scratch.deployment("web").metadata.annotations or {})

    again = _run(scratch, scale_backend_mode="restore")
    res = _ok(again)
    assert again.changed == 0 and res["changed"] is False, again.stdout[-3000:]
    assert "nothing recorded" in res["message"] and res["after"]["replicas"] == 3


def test_restore_with_nothing_recorded_uses_the_given_count(scratch):
    scratch.deploy("web", replicas=2)
    scratch.apps.patch_namespaced_deployment_scale("web", scratch.ns, {"spec": {"replicas": 0}})

    res = _ok(_run(scratch, scale_backend_mode="restore", scale_backend_replicas=2))
    assert res["after"]["replicas"] == 2 and "nothing recorded" in res["message"]


def test_stop_and_restore_a_stateful_set(scratch):
    scratch.stateful_set("db", replicas=2)
    # Another StatefulSet whose pods carry db's labels too (app=db, plus copy=yes): db's selector app=db
    # matches them, but they are not db's. Stopping db must wait for db's own pods only, and leave these.
    scratch.stateful_set("db-copy", replicas=1, app="db", extra_labels={"copy": "yes"})
    copy_pods = sorted(p.metadata.uid for p in scratch.pods("db") if p.metadata.name.startswith("db-copy-"))
    assert len(copy_pods) == 1

    res = _ok(_run(scratch, name="db", kind="StatefulSet", scale_backend_mode="stop"))
    assert res["after"] == {"replicas": 0, "ready_replicas": 0, "recorded_replicas": 2}
    assert "Stopped: no pods left" in res["message"]
    left = scratch.pods("db")
    assert sorted(p.metadata.uid for p in left) == copy_pods, [p.metadata.name for p in left]
    assert scratch.apps.read_namespaced_stateful_set("db-copy", scratch.ns).spec.replicas == 1
    res = _ok(_run(scratch, name="db", kind="StatefulSet", scale_backend_mode="restore"))
    assert (res["after"]["replicas"], res["after"]["ready_replicas"]) == (2, 2)


def test_hpa_is_created_kept_and_updated(scratch):
    scratch.deploy("web", replicas=2)
    hpa_vars = {"scale_backend_mode": "hpa", "scale_backend_hpa_min": 2, "scale_backend_hpa_max": 5}
    before = scratch.snapshot()

    check = _run(scratch, check=True, **hpa_vars)
    res = _ok(check)
    assert scratch.unchanged_since(before) == [] and scratch.hpas() == {}
    assert res["before"]["hpa"] is None and res["after"]["hpa"]["max"] == 5

    res = _ok(_run(scratch, **hpa_vars))
    assert res["changed"] is True and "HorizontalPodAutoscaler web created: min 2, max 5, CPU 70%" in res["message"]
    hpa = scratch.autoscaling.read_namespaced_horizontal_pod_autoscaler("web", scratch.ns)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 5)
    assert hpa.spec.scale_target_ref.kind == "Deployment" and hpa.spec.scale_target_ref.name == "web"
    assert [(m.resource.name, m.resource.target.average_utilization) for m in hpa.spec.metrics] == [("cpu", 70)]
    # The sidecar has no CPU request: the role says the CPU target cannot be measured for it.
    assert "container(s) sidecar have no CPU request" in res["message"]

    again = _run(scratch, **hpa_vars)
    assert again.changed == 0 and _ok(again)["changed"] is False, again.stdout[-3000:]

    res = _ok(_run(scratch, **{**hpa_vars, "scale_backend_hpa_max": 6, "scale_backend_hpa_memory_percent": 80}))
    assert res["changed"] is True
    assert res["before"]["hpa"]["max"] == 5 and res["after"]["hpa"] == {
        "name": "web", "min": 2, "max": 6, "cpu_percent": 70, "memory_percent": 80, "target": "Deployment/web"}
    hpa = scratch.autoscaling.read_namespaced_horizontal_pod_autoscaler("web", scratch.ns)
    assert hpa.spec.max_replicas == 6 and len(hpa.spec.metrics) == 2

    # Scaling by hand under an autoscaler is allowed, with a warning that it will not last.
    res = _ok(_run(scratch, scale_backend_replicas=3, check=True))
    assert "HorizontalPodAutoscaler web manages this workload" in res["message"]


def test_resources_are_raised_once_and_never_lowered_unasked(scratch):
    scratch.deploy("web", replicas=2)
    raise_vars = {"scale_backend_mode": "resources", "scale_backend_memory_limit": "512Mi",
                  "scale_backend_cpu_limit": "1"}
    before = scratch.snapshot()

    check = _run(scratch, check=True, **raise_vars)
    res = _ok(check)
    assert scratch.unchanged_since(before) == []
    assert res["after"]["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert re.search(r"^\+\s+memory: 512Mi$", check.stdout, re.M), check.stdout[-3000:]

    old_pods = {p.metadata.name for p in scratch.pods("web")}
    res = _ok(_run(scratch, **raise_vars))
    assert res["changed"] is True and res["before"]["container"] == "app"
    assert res["before"]["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert res["after"]["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}
    assert "memory limit 256Mi -> 512Mi" in res["message"] and "Ready: 2 of 2" in res["message"]
    containers = {c.name: c for c in scratch.deployment("web").spec.template.spec.containers}
    assert containers["app"].resources.limits == {"cpu": "1", "memory": "512Mi"}
    assert containers["app"].resources.requests == RESOURCES["requests"]
    assert containers["sidecar"].resources.limits is None, "only the chosen container changes"
    assert not old_pods & {p.metadata.name for p in scratch.pods("web")}, "the rollout replaced the pods"

    again = _run(scratch, **raise_vars)
    assert again.changed == 0 and _ok(again)["changed"] is False, again.stdout[-3000:]

    raised = scratch.snapshot()
    lower = _run(scratch, scale_backend_mode="resources", scale_backend_memory_limit="128Mi")
    _refused(lower, "refusing to lower resources of container app: memory limit 512Mi -> 128Mi "
                    "(scale_backend_memory_limit)", "scale_backend_allow_decrease", "Nothing was changed")
    assert scratch.unchanged_since(raised) == []

    # Memory alone: the CPU limit the run was not given stays as it is, and a rerun changes nothing.
    memory_only = {"scale_backend_mode": "resources", "scale_backend_memory_limit": "768Mi"}
    res = _ok(_run(scratch, **memory_only))
    assert res["changed"] is True and res["after"]["resources"]["limits"] == {"cpu": "1", "memory": "768Mi"}
    containers = {c.name: c for c in scratch.deployment("web").spec.template.spec.containers}
    assert containers["app"].resources.limits == {"cpu": "1", "memory": "768Mi"}
    again = _run(scratch, **memory_only)
    assert again.changed == 0 and _ok(again)["changed"] is False, again.stdout[-3000:]


def test_a_workload_that_does_not_become_ready_is_reported_with_the_pods_reasons(scratch):
    # Every pod of this template crash-loops, so the new replica never becomes available
    # (minReadySeconds outlasts the moment a crashing container looks ready).
    scratch.deploy("doomed", replicas=1, template_labels={"saasodoo.test/crashloop": "true"}, min_ready=15, wait=False)
    scratch.wait(lambda: any((p.status.container_statuses or [None])[0] is not None
                             and p.status.container_statuses[0].state.waiting is not None
                             for p in scratch.pods("doomed")), "doomed crash-looping")

    result = _run(scratch, name="doomed", scale_backend_replicas=2, scale_backend_timeout=6)

    _refused(result, f"Deployment/{scratch.ns}/doomed (replicas: scaled from 1 to 2 replicas",
             "did not become ready within 6s", "CrashLoopBackOff")


@pytest.mark.parametrize("extra, needles", [
    ({"scale_backend_mode": "grow"}, ["scale_backend_mode must be one of: replicas, stop, restore, hpa, resources"]),
    ({"scale_backend_replicas": 3, "scale_backend_delta": 1},
     ["exactly one of scale_backend_replicas", "scale_backend_delta", "got both"]),
    ({}, ["exactly one of scale_backend_replicas", "got neither"]),
    ({"scale_backend_workload": None, "scale_backend_replicas": 3},
     ["missing required arguments: scale_backend_workload"]),
    ({"scale_backend_workload": {"kind": "Pod", "name": "web"}, "scale_backend_replicas": 3},
     ["scale_backend_workload", "Deployment, StatefulSet"]),
    ({"name": "nope", "scale_backend_replicas": 3},
     ["Deployment nope not found in namespace", "(scale_backend_workload)", "Nothing was changed"]),
    ({"scale_backend_mode": "resources", "scale_backend_container": "nope", "scale_backend_cpu_limit": "2"},
     ["no container named 'nope' (scale_backend_container); its containers: app, sidecar"]),
])
def test_bad_input_is_refused_before_anything_changes(scratch, extra, needles):
    scratch.deploy("web", replicas=2)
    before = scratch.snapshot()
    extra = dict(extra)
    name = extra.pop("name", "web")
    extravars = {"scale_backend_workload": {"kind": "Deployment", "name": name, "namespace": scratch.ns},
                 "scale_backend_timeout": 60, "scale_backend_poll_interval": 1, **extra}
    if extravars["scale_backend_workload"] is None:
        del extravars["scale_backend_workload"]

    result = run_playbook(PLAYBOOK, extravars=extravars)

    _refused(result, *needles)
    assert scratch.unchanged_since(before) == []
