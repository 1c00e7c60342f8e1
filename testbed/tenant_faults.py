#!/usr/bin/env python3
"""Tenant faults of the troubleshooting guide's "Tenant Provisioning Issues" and "Security Check",
injected into the real test bed (the Kubernetes API and the platform's PostgreSQL), and undone.

From pytest:
    from testbed import tenant_faults as tf
    fault = tf.stuck_unschedulable("tp-1a2b3c-s")   # row provisioning for 30 min, pod FailedScheduling
    ...
    fault.undo()

- stuck_unschedulable: a tenant row in `provisioning` since 30 minutes, its namespace, and an `odoo`
  Deployment whose pod requests more CPU than any node has: the real scheduler reports FailedScheduling.
- missing_namespace: a row in `provisioning` since 30 minutes, no namespace (provisioning died early).
- half_created: a row `failed` since 30 minutes (with its last_error) and a namespace holding a failed
  attempt's leftovers (a ResourceQuota that is not the tier's, nothing else).
- delete_network_policy, delete_resource_quota, label_namespace, allow_all: isolation faults on a
  tenant's namespace; undo puts back exactly what was there.
- tenant_cluster_admin: a ServiceAccount in a tenant namespace bound to cluster-admin by a real
  ClusterRoleBinding.

Names (prefix, labels, the database) come from the inventory (testbed/platform_vars.py). Undo is
idempotent and tolerates what a runbook already repaired.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from kubernetes import client  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from testbed import platform_vars  # noqa: E402
from testbed.faults import Fault, api, wait_until  # noqa: E402

VARS = platform_vars.load()
PREFIX = VARS["saasodoo_tenant_namespace_prefix"]
TENANT_LABEL = VARS["saasodoo_tenant_label"]
TIER_LABEL = VARS["saasodoo_tenant_tier_label"]
PVC_NAME = VARS.get("saasodoo_tenant_pvc_name", "odoo-data")


def db():
    return psycopg.connect(host=VARS["saasodoo_db_host"], port=int(os.environ.get("SAASODOO_DB_PORT", VARS["saasodoo_db_port"])),
                           user=VARS["saasodoo_db_user"], password=VARS["saasodoo_db_password"],
                           dbname=VARS["saasodoo_db_name"], connect_timeout=5, autocommit=True,
                           application_name="testbed.tenant_faults")


def core() -> client.CoreV1Api:
    return client.CoreV1Api(api())


def apps() -> client.AppsV1Api:
    return client.AppsV1Api(api())


def net() -> client.NetworkingV1Api:
    return client.NetworkingV1Api(api())


def rbac() -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(api())


def _ignore_404(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except ApiException as e:
        if e.status != 404:
            raise
        return None


def namespace(slug: str) -> str:
    return PREFIX + slug


def tenant_row(slug: str) -> dict | None:
    with db() as conn:
        row = conn.execute("SELECT status, tier, last_error, status_changed_at FROM tenants WHERE slug = %s",
                           (slug,)).fetchone()
    return None if row is None else {"status": row[0], "tier": row[1], "last_error": row[2],
                                     "status_changed_at": row[3]}


def _insert(slug: str, tier: str, status: str, last_error: str | None = None, minutes_ago: int = 30) -> None:
    with db() as conn:
        conn.execute(
            "INSERT INTO tenants (slug, tier, status, created_at, updated_at, status_changed_at, last_error) "
            "VALUES (%s, %s, %s, now() - make_interval(mins => %s + 1), now() - make_interval(mins => %s), "
            "now() - make_interval(mins => %s), %s)", (slug, tier, status, minutes_ago, minutes_ago, minutes_ago,
                                                       last_error))


def _create_namespace(slug: str, tier: str) -> None:
    labels = {VARS["saasodoo_part_of_label"]: VARS["saasodoo_part_of"], TENANT_LABEL: slug, TIER_LABEL: tier}
    core().create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace(slug), labels=labels)))


def remove_tenant(slug: str) -> None:
    """Everything a scratch tenant may have: its row, its namespace, its PersistentVolume."""
    with db() as conn:
        conn.execute("DELETE FROM tenants WHERE slug = %s", (slug,))
    _ignore_404(core().delete_namespace, namespace(slug))
    _ignore_404(core().delete_persistent_volume, "%s-%s" % (namespace(slug), PVC_NAME))


def _scratch(slug: str, inject) -> Fault:
    fault = Fault("scratch-tenant", slug, [namespace(slug), "tenants/" + slug], lambda: remove_tenant(slug))
    try:
        inject()
    except BaseException:
        fault.undo()
        raise
    return fault


# --------------------------------------------------------------------------- provisioning faults

def stuck_unschedulable(slug: str, tier: str = "basic", cpu: str = "64", timeout: float = 90) -> Fault:
    """Row provisioning for 30 min, namespace, and an odoo Deployment whose pod no node can hold."""

    def inject():
        _insert(slug, tier, "provisioning")
        _create_namespace(slug, tier)
        labels = {"app.kubernetes.io/name": "odoo", TENANT_LABEL: slug}
        container = client.V1Container(
            name="odoo", image=VARS["saasodoo_tenant_odoo_image"],
            resources=client.V1ResourceRequirements(requests={"cpu": cpu, "memory": "1Gi"},
                                                    limits={"cpu": cpu, "memory": "1Gi"}))
        apps().create_namespaced_deployment(namespace(slug), client.V1Deployment(
            metadata=client.V1ObjectMeta(name="odoo", labels=labels),
            spec=client.V1DeploymentSpec(
                replicas=1, selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels),
                                                  spec=client.V1PodSpec(containers=[container])))))
        wait_until("the scheduler's FailedScheduling event in %s" % namespace(slug), lambda: bool(
            core().list_namespaced_event(namespace(slug), field_selector="reason=FailedScheduling").items),
            timeout=timeout)

    return _scratch(slug, inject)


def missing_namespace(slug: str, tier: str = "basic") -> Fault:
    """Row provisioning for 30 min, no namespace: provisioning died before creating it."""
    return _scratch(slug, lambda: _insert(slug, tier, "provisioning"))


def half_created(slug: str, tier: str = "basic") -> Fault:
    """Row failed 30 min ago, and a namespace with a failed attempt's leftover (a quota not the tier's)."""

    def inject():
        _insert(slug, tier, "failed", last_error="timed out waiting for Deployment odoo to roll out")
        _create_namespace(slug, tier)
        core().create_namespaced_resource_quota(namespace(slug), {
            "metadata": {"name": "tenant-quota"}, "spec": {"hard": {"pods": "1"}}})

    return _scratch(slug, inject)


# --------------------------------------------------------------------------- isolation faults

def _clean(obj: dict) -> dict:
    meta = obj.get("metadata") or {}
    keep = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if meta.get(k)}
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": keep, "spec": obj.get("spec")}


def delete_network_policy(slug: str, name: str = "default-deny") -> Fault:
    ns = namespace(slug)
    saved = _clean(api().sanitize_for_serialization(net().read_namespaced_network_policy(name, ns)))
    saved.update(apiVersion="networking.k8s.io/v1", kind="NetworkPolicy")
    net().delete_namespaced_network_policy(name, ns)

    def undo():
        if _ignore_404(net().read_namespaced_network_policy, name, ns) is None:
            net().create_namespaced_network_policy(ns, saved)

    return Fault("delete-network-policy", "%s/%s" % (ns, name), ["NetworkPolicy/%s/%s" % (ns, name)], undo)


def delete_resource_quota(slug: str, name: str = "tenant-quota") -> Fault:
    ns = namespace(slug)
    saved = _clean(api().sanitize_for_serialization(core().read_namespaced_resource_quota(name, ns)))
    saved.update(apiVersion="v1", kind="ResourceQuota")
    core().delete_namespaced_resource_quota(name, ns)

    def undo():
        if _ignore_404(core().read_namespaced_resource_quota, name, ns) is None:
            core().create_namespaced_resource_quota(ns, saved)

    return Fault("delete-resource-quota", "%s/%s" % (ns, name), ["ResourceQuota/%s/%s" % (ns, name)], undo)


def label_namespace(slug: str, key: str, value: str | None) -> Fault:
    """Set (or, with None, remove) one label of the tenant's namespace."""
    ns = namespace(slug)
    before = (core().read_namespace(ns).metadata.labels or {}).get(key)
    core().patch_namespace(ns, {"metadata": {"labels": {key: value}}})
    return Fault("label-namespace", "%s %s" % (ns, key), ["Namespace/%s" % ns],
                 lambda: core().patch_namespace(ns, {"metadata": {"labels": {key: before}}}))


def allow_all(slug: str, name: str = "allow-all") -> Fault:
    """A NetworkPolicy opening the tenant's pods to every peer, both ways (a hand-made 'fix')."""
    ns = namespace(slug)
    net().create_namespaced_network_policy(ns, {
        "metadata": {"name": name},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}})
    return Fault("allow-all", "%s/%s" % (ns, name), ["NetworkPolicy/%s/%s" % (ns, name)],
                 lambda: _ignore_404(net().delete_namespaced_network_policy, name, ns))


# --------------------------------------------------------------------------- RBAC faults

def tenant_cluster_admin(slug: str, account: str, binding: str) -> Fault:
    """ServiceAccount `account` in the tenant's namespace, bound to cluster-admin by ClusterRoleBinding `binding`."""
    ns = namespace(slug)
    core().create_namespaced_service_account(ns, {"metadata": {"name": account}})
    try:
        rbac().create_cluster_role_binding({
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]})
    except BaseException:
        _ignore_404(core().delete_namespaced_service_account, account, ns)
        raise

    def undo():
        _ignore_404(rbac().delete_cluster_role_binding, binding)
        _ignore_404(core().delete_namespaced_service_account, account, ns)

    return Fault("tenant-cluster-admin", "%s/%s" % (ns, account),
                 ["ClusterRoleBinding/%s" % binding, "ServiceAccount/%s/%s" % (ns, account)], undo)
