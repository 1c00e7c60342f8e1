"""scale_backend's decisions, and its refusals, on hand-made objects."""

from __future__ import annotations

import pytest

from plugins.filter import scale_backend as f

ANNOTATION = "saasodoo.io/replicas-before-stop"


def deployment(replicas=2, annotations=None, containers=None, kind="Deployment"):
    return {"kind": kind,
            "metadata": {"name": "web", "namespace": "ns", "annotations": annotations or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": containers if containers is not None else [
                         {"name": "app", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                       "limits": {"cpu": "500m", "memory": "256Mi"}}},
                         {"name": "side"}]}}},
            "status": {"readyReplicas": replicas}}


@pytest.mark.parametrize("text, value", [
    ("500m", 0.5), ("2", 2.0), ("0.5", 0.5), (".5", 0.5), ("1Gi", 2 ** 30), ("512Mi", 2 ** 29),
    ("1e3", 1000.0), ("1E3", 1000.0), ("100k", 1e5), ("1M", 1e6), ("2E", 2e18), (3, 3.0),
])
def test_quantities_are_read_the_kubernetes_way(text, value):
    assert f.scale_backend_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-1", "1Gb", "1e", "Mi"])
def test_a_non_quantity_is_refused_with_its_text(text):
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        f.scale_backend_quantity(text)


def test_state_reports_replicas_record_and_the_first_container_by_default():
    state = f.scale_backend_state(deployment(0, {ANNOTATION: "3"}), ANNOTATION)
    assert state["ref"] == "Deployment/ns/web"
    assert (state["replicas"], state["recorded_replicas"], state["container"]) == (0, 3, "app")
    assert state["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert f.scale_backend_state(deployment(), ANNOTATION, "side")["resources"] == {"limits": {}, "requests": {}}
    assert f.scale_backend_state(deployment(), ANNOTATION, "nope")["container"] is None


def test_absolute_and_relative_targets():
    assert f.scale_backend_target(2, replicas=5)["target"] == 5
    assert f.scale_backend_target(2, delta=3)["target"] == 5
    assert f.scale_backend_target(4, delta=-1)["target"] == 3
    assert "4 - 1 (scale_backend_delta) = 3" in f.scale_backend_target(4, delta=-1)["message"]


def test_targets_outside_the_bounds_are_clamped_and_say_so():
    high = f.scale_backend_target(2, replicas=40, minimum=1, maximum=10)
    assert (high["target"], high["clamped"], high["requested"]) == (10, True, 40)
    assert "clamped to 10" in high["message"] and "scale_backend_max_replicas=10" in high["message"]
    low = f.scale_backend_target(2, delta=-5, minimum=1, maximum=10)
    assert (low["target"], low["clamped"]) == (1, True)
    assert "scale_backend_min_replicas=1" in low["message"]


def test_targets_outside_the_bounds_are_refused_without_clamp():
    out = f.scale_backend_target(2, replicas=40, maximum=10, clamp=False)
    assert out["target"] is None
    assert "above scale_backend_max_replicas=10; refused" in out["error"]
    assert "scale_backend_clamp" in out["error"]


@pytest.mark.parametrize("kw, needle", [
    ({"replicas": 3, "delta": 1}, "not both"),
    ({}, "give scale_backend_replicas"),
    ({"replicas": 3, "minimum": 5, "maximum": 2}, "make no range"),
])
def test_target_inputs_that_make_no_sense_are_refused(kw, needle):
    out = f.scale_backend_target(2, **kw)
    assert needle in out["error"] and out["target"] is None


def test_stop_records_the_count_and_is_a_no_op_when_already_stopped():
    first = f.scale_backend_stop_plan(deployment(3), ANNOTATION)
    assert (first["action"], first["record"]) == ("stop", 3)
    again = f.scale_backend_stop_plan(deployment(0, {ANNOTATION: "3"}), ANNOTATION)
    assert (again["action"], again["record"]) == ("none", 3)
    assert "already stopped" in again["message"] and "kept" in again["message"]


def test_stop_at_zero_without_record_records_nothing():
    plan = f.scale_backend_stop_plan(deployment(0), ANNOTATION)
    assert (plan["action"], plan["record"]) == ("none", None)
    assert "no count is recorded" in plan["message"]


def test_stop_replaces_a_stale_record_when_the_workload_runs_again():
    plan = f.scale_backend_stop_plan(deployment(4, {ANNOTATION: "2"}), ANNOTATION)
    assert (plan["action"], plan["record"]) == ("stop", 4)
    assert "stale record 2" in plan["message"]


def test_restore_brings_back_the_recorded_count_first():
    plan = f.scale_backend_restore_plan(deployment(0, {ANNOTATION: "3"}), ANNOTATION, replicas=7)
    assert (plan["action"], plan["target"], plan["source"]) == ("restore", 3, "recorded")


def test_restore_without_record_changes_nothing_and_says_so():
    plan = f.scale_backend_restore_plan(deployment(2), ANNOTATION)
    assert (plan["action"], plan["target"], plan["error"]) == ("none", 2, "")
    assert "nothing recorded" in plan["message"] and "scale_backend_replicas" in plan["message"]


def test_restore_without_record_uses_the_given_count_within_bounds():
    plan = f.scale_backend_restore_plan(deployment(0), ANNOTATION, replicas=20, maximum=10)
    assert (plan["action"], plan["target"], plan["source"]) == ("restore", 10, "scale_backend_replicas")
    refused = f.scale_backend_restore_plan(deployment(0), ANNOTATION, replicas=20, maximum=10, clamp=False)
    assert refused["action"] == "none" and "refused" in refused["error"]


def test_restore_refuses_a_record_that_is_not_a_count():
    plan = f.scale_backend_restore_plan(deployment(0, {ANNOTATION: "lots"}), ANNOTATION)
    assert "'lots' is not a replica count" in plan["error"]


def test_hpa_definition_and_summary_round_trip():
    ref = {"kind": "Deployment", "name": "web", "namespace": "ns"}
    hpa = f.scale_backend_hpa_definition(ref, 2, 6, 70, 0, {"a": "b"})
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["metadata"]["name"] == "web"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert f.scale_backend_hpa_summary(hpa) == {"name": "web", "min": 2, "max": 6, "cpu_percent": 70,
                                                 "memory_percent": None, "target": "Deployment/web"}
    both = f.scale_backend_hpa_definition(ref, 1, 3, 60, 80)
    assert f.scale_backend_hpa_summary(both)["memory_percent"] == 80
    assert f.scale_backend_hpa_summary(None) is None


def test_resources_raise_patches_only_that_container():
    plan = f.scale_backend_resources_plan(deployment(), memory_limit="512Mi", cpu_request="0.2")
    assert plan["error"] == "" and plan["changed"] is True and plan["container"] == "app"
    assert plan["patch"] == {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "resources": {"limits": {"memory": "512Mi"}, "requests": {"cpu": "0.2"}}}]}}}}
    assert plan["changes"] == ["cpu request 100m -> 0.2", "memory limit 256Mi -> 512Mi"]
    assert plan["after"]["limits"] == {"cpu": "500m", "memory": "512Mi"}


def test_resources_equal_in_another_notation_change_nothing():
    plan = f.scale_backend_resources_plan(deployment(), cpu_limit="0.5", memory_limit="0.25Gi")
    assert (plan["changed"], plan["patch"], plan["error"]) == (False, {}, "")


def test_resources_decrease_is_refused_unless_allowed():
    plan = f.scale_backend_resources_plan(deployment(), memory_limit="128Mi")
    assert "refusing to lower resources of container app" in plan["error"]
    assert "memory limit 256Mi -> 128Mi (scale_backend_memory_limit)" in plan["error"]
    assert "scale_backend_allow_decrease" in plan["error"] and plan["patch"] == {}
    allowed = f.scale_backend_resources_plan(deployment(), memory_limit="128Mi", allow_decrease=True)
    assert allowed["error"] == "" and allowed["changed"] is True


def test_a_limit_where_there_was_none_counts_as_lowering():
    plan = f.scale_backend_resources_plan(deployment(), container="side", cpu_limit="1")
    assert "cpu limit unlimited -> 1" in plan["error"]
    request = f.scale_backend_resources_plan(deployment(), container="side", cpu_request="100m")
    assert request["error"] == "" and request["changes"] == ["cpu request unset -> 100m"]


def test_resources_refuse_a_request_above_its_limit():
    plan = f.scale_backend_resources_plan(deployment(), memory_request="1Gi")
    assert "memory request 1Gi would exceed the memory limit 256Mi" in plan["error"]


@pytest.mark.parametrize("kw, needle", [
    ({"container": "nope", "cpu_limit": "1"}, "no container named 'nope' (scale_backend_container); its containers: app, side"),
    ({}, "needs at least one of"),
    ({"memory_limit": "lots"}, "scale_backend_memory_limit: 'lots' is not a Kubernetes quantity"),
])
def test_resources_bad_input_is_named(kw, needle):
    plan = f.scale_backend_resources_plan(deployment(), **kw)
    assert needle in plan["error"] and plan["patch"] == {}
