"""Snapshots of the real cluster's state, to prove that check mode changed nothing."""

from __future__ import annotations

import hashlib
import json
import os

from kubernetes import client, config
from kubernetes.client.rest import ApiException

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


# Custom resources the runbooks read or write (group, version, plural); absent CRDs are skipped.
CUSTOM = [("traefik.io", "v1alpha1", "ingressroutes"), ("monitoring.coreos.com", "v1", "servicemonitors"),
          ("cert-manager.io", "v1", "certificates"), ("cert-manager.io", "v1", "issuers")]


def _content(obj) -> object:
    """What a runbook could change besides metadata: the spec, or a ConfigMap's data, or a digest of a Secret's."""
    if isinstance(obj, client.V1ConfigMap):
        return {"data": obj.data or {}, "binary": sorted((obj.binary_data or {}).keys())}
    if isinstance(obj, client.V1Secret):
        digest = hashlib.sha256(json.dumps(obj.data or {}, sort_keys=True).encode()).hexdigest()
        return {"type": obj.type, "keys": sorted((obj.data or {}).keys()), "sha256": digest}
    return api_client().sanitize_for_serialization(getattr(obj, "spec", None))


def snapshot(namespaces: list[str]) -> dict:
    """What a runbook could change in the namespaces: specs (ConfigMap data, a digest of each Secret's),
    labels and annotations of workloads, autoscalers, services, config, policies, quotas, claims,
    ingresses, Traefik routes, ServiceMonitors and certificates; the pods and whether they are deleting.

    Status is left out on purpose: kwok keeps updating crash-looping pods' restart counts, which is
    the fault at work, not a change made by a runbook.
    """
    apps = client.AppsV1Api(api_client())
    core = client.CoreV1Api(api_client())
    net = client.NetworkingV1Api(api_client())
    auto = client.AutoscalingV2Api(api_client())
    custom = client.CustomObjectsApi(api_client())
    state: dict = {}
    for ns in namespaces:
        for kind, items in (
            ("Deployment", apps.list_namespaced_deployment(ns).items),
            ("StatefulSet", apps.list_namespaced_stateful_set(ns).items),
            ("DaemonSet", apps.list_namespaced_daemon_set(ns).items),
            ("HorizontalPodAutoscaler", auto.list_namespaced_horizontal_pod_autoscaler(ns).items),
            ("Service", core.list_namespaced_service(ns).items),
            ("ConfigMap", core.list_namespaced_config_map(ns).items),
            ("Secret", core.list_namespaced_secret(ns).items),
            ("NetworkPolicy", net.list_namespaced_network_policy(ns).items),
            ("Ingress", net.list_namespaced_ingress(ns).items),
            ("ResourceQuota", core.list_namespaced_resource_quota(ns).items),
            ("LimitRange", core.list_namespaced_limit_range(ns).items),
            ("PersistentVolumeClaim", core.list_namespaced_persistent_volume_claim(ns).items),
        ):
            for obj in items:
                state[f"{kind}/{ns}/{obj.metadata.name}"] = {"meta": _meta(obj), "spec": _content(obj)}
        for group, version, plural in CUSTOM:
            try:
                items = custom.list_namespaced_custom_object(group, version, ns, plural)["items"]
            except ApiException as exc:
                if exc.status == 404:  # the CRD is not installed
                    continue
                raise
            for obj in items:
                meta = obj["metadata"]
                state[f"{plural}.{group}/{ns}/{meta['name']}"] = {
                    "meta": {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {},
                             "generation": meta.get("generation")},
                    "spec": obj.get("spec")}
        for pod in core.list_namespaced_pod(ns).items:
            state[f"Pod/{ns}/{pod.metadata.name}"] = {"meta": _meta(pod), "deleting": pod.metadata.deletion_timestamp is not None}
    return state


def diff(before: dict, after: dict) -> list[str]:
    changes = [f"added {k}" for k in after.keys() - before.keys()]
    changes += [f"removed {k}" for k in before.keys() - after.keys()]
    changes += [f"changed {k}" for k in before.keys() & after.keys() if before[k] != after[k]]
    return sorted(changes)
