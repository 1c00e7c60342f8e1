"""Snapshots of the real cluster's state, to prove that check mode changed nothing."""

from __future__ import annotations

import os

from kubernetes import client, config

from tests.runbooks import KUBECONFIG

_client = None


def api_client() -> client.ApiClient:
    global _client
    if _client is None:
        _client = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG", str(KUBECONFIG)))
    return _client


def _meta(obj) -> dict:
    meta = obj.metadata
    return {"labels": meta.labels or {}, "annotations": meta.annotations or {}, "generation": meta.generation}


def snapshot(namespaces: list[str]) -> dict:
    """Specs, labels and annotations of workloads, pods, services, policies and config in the namespaces.

    Pod *status* is left out on purpose: kwok keeps updating crash-looping pods' restart counts,
    which is the fault at work, not a change made by a runbook.
    """
    apps = client.AppsV1Api(api_client())
    core = client.CoreV1Api(api_client())
    net = client.NetworkingV1Api(api_client())
    ser = api_client().sanitize_for_serialization
    state: dict = {}
    for ns in namespaces:
        for kind, items in (
            ("Deployment", apps.list_namespaced_deployment(ns).items),
            ("StatefulSet", apps.list_namespaced_stateful_set(ns).items),
            ("DaemonSet", apps.list_namespaced_daemon_set(ns).items),
            ("Service", core.list_namespaced_service(ns).items),
            ("ConfigMap", core.list_namespaced_config_map(ns).items),
            ("NetworkPolicy", net.list_namespaced_network_policy(ns).items),
            ("ResourceQuota", core.list_namespaced_resource_quota(ns).items),
            ("PersistentVolumeClaim", core.list_namespaced_persistent_volume_claim(ns).items),
        ):
            for obj in items:
                state[f"{kind}/{ns}/{obj.metadata.name}"] = {"meta": _meta(obj), "spec": ser(getattr(obj, "spec", None))}
        for pod in core.list_namespaced_pod(ns).items:
            state[f"Pod/{ns}/{pod.metadata.name}"] = {"meta": _meta(pod), "deleting": pod.metadata.deletion_timestamp is not None}
    return state


def diff(before: dict, after: dict) -> list[str]:
    changes = [f"added {k}" for k in after.keys() - before.keys()]
    changes += [f"removed {k}" for k in before.keys() - after.keys()]
    changes += [f"changed {k}" for k in before.keys() & after.keys() if before[k] != after[k]]
    return sorted(changes)
