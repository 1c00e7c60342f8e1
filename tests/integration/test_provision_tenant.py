"""provision_tenant alone, on tenants of the test's own (random slugs `pt-<hex>-*`): real rows in the
platform database, real namespaces, the real scheduler and admission. No mocks.

Each story is independent and slow (a real rollout), so the stories start together in background
threads when the module starts; each test waits for its story and checks what the runbook promised.
The seeded tenants (acme, globex, initech) are never touched. Rows, namespaces and PVs are removed
afterwards, whatever happens.
"""

from __future__ import annotations

import copy
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import faults, platform_vars
from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

PLAYBOOK = str(ROOT / "tests" / "integration" / "playbooks" / "provision_tenant.yml")
DB = {
    "host": "127.0.0.1",
    "port": int(os.environ.get("SAASODOO_DB_PORT", "55432")),
    "user": "saasodoo",
    "password": os.environ.get("SAASODOO_DB_PASSWORD", "saasodoo-local"),
    "dbname": "saasodoo",
}
VARS = platform_vars.load()
PREFIX = VARS["saasodoo_tenant_namespace_prefix"]
LABEL = VARS["saasodoo_tenant_label"]
TIER_LABEL = VARS["saasodoo_tenant_tier_label"]
PART_OF = {VARS["saasodoo_part_of_label"]: VARS["saasodoo_part_of"]}
PVC = VARS["saasodoo_tenant_pvc_name"]
POLICIES = {"default-deny", "allow-from-ingress", "allow-dns-egress", "allow-platform-db-egress"}
FAST = {"provision_tenant_poll_interval": 1, "provision_tenant_timeout": 90}


def core():
    return client.CoreV1Api(k8s_state.api_client())


def db():
    return psycopg.connect(connect_timeout=5, autocommit=True, application_name="test_provision_tenant", **DB)


def row(slug):
    with db() as conn:
        cur = conn.execute("SELECT slug, tier, status, last_error, created_at, updated_at, status_changed_at "
                           "FROM tenants WHERE slug = %s", (slug,))
        found = cur.fetchone()
        if found is None:
            return None
        return dict(zip([d[0] for d in cur.description], found))


def insert(slug, tier, status, last_error=None):
    with db() as conn:
        conn.execute("INSERT INTO tenants (slug, tier, status, last_error, status_changed_at, updated_at) "
                     "VALUES (%s, %s, %s, %s, now() - interval '5 minutes', now() - interval '5 minutes')",
                     (slug, tier, status, last_error))


def half_made(slug, tier="basic"):
    """What a failed attempt leaves: the namespace (without its Pod Security labels), the quota and a
    leftover ConfigMap; nothing else."""
    ns = PREFIX + slug
    core().create_namespace({"metadata": {"name": ns, "labels": {**PART_OF, LABEL: slug, TIER_LABEL: tier}}})
    core().create_namespaced_resource_quota(ns, {"metadata": {"name": "tenant-quota"},
                                                 "spec": {"hard": {"pods": "10"}}})
    core().create_namespaced_config_map(ns, {"metadata": {"name": "leftover"}, "data": {"attempt": "1"}})
    # The controllers add their objects to a new namespace (CA bundle ConfigMap, default ServiceAccount):
    # wait for them, so that a snapshot taken now is not changed by them later.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = {c.metadata.name for c in core().list_namespaced_config_map(ns).items}
        if "kube-root-ca.crt" in names and core().list_namespaced_service_account(ns).items:
            return
        time.sleep(0.3)
    raise AssertionError(f"the controllers did not populate namespace {ns}")


def cluster_state(ns):
    """Everything a run could change about one tenant: the k8s_state snapshot plus the namespace's
    labels and uid, its LimitRanges, Ingresses and the tenant's PV."""
    state = k8s_state.snapshot([ns])
    try:
        namespace = core().read_namespace(ns)
        state["Namespace"] = {"labels": namespace.metadata.labels, "uid": namespace.metadata.uid}
    except ApiException as e:
        if e.status != 404:
            raise
        return state
    state["LimitRanges"] = sorted(lr.metadata.name for lr in core().list_namespaced_limit_range(ns).items)
    net = client.NetworkingV1Api(k8s_state.api_client())
    state["Ingresses"] = sorted(i.metadata.name for i in net.list_namespaced_ingress(ns).items)
    try:
        state["PV"] = core().read_persistent_volume(f"{ns}-{PVC}").metadata.resource_version
    except ApiException:
        state["PV"] = None
    return state


def serving(ns):
    apps = client.AppsV1Api(k8s_state.api_client())
    dep = apps.read_namespaced_deployment("odoo", ns)
    pvc = core().read_namespaced_persistent_volume_claim(PVC, ns)
    policies = {p.metadata.name for p in client.NetworkingV1Api(k8s_state.api_client())
                .list_namespaced_network_policy(ns).items}
    labels = core().read_namespace(ns).metadata.labels
    return {"ready": (dep.status.ready_replicas or 0) == dep.spec.replicas, "bound": pvc.status.phase == "Bound",
            "policies": policies, "quota": [q.metadata.name for q in core().list_namespaced_resource_quota(ns).items],
            "limits": [lr.metadata.name for lr in core().list_namespaced_limit_range(ns).items],
            "pod_security": labels.get("pod-security.kubernetes.io/enforce")}


def run(slug, **extra):
    return run_playbook(PLAYBOOK, extravars={"provision_tenant_slug": slug, **FAST, **extra.pop("extravars", {})},
                        **extra)


# ---- the stories


def story_fresh(slug):
    """A row in provisioning, nothing in the cluster: provision, rerun, then a refused cleanup."""
    out = {"first": run(slug)}
    out["row_after_first"] = row(slug)
    out["serving"] = serving(PREFIX + slug)
    out["again"] = run(slug)
    before = cluster_state(PREFIX + slug)
    out["refused"] = run(slug, extravars={"provision_tenant_cleanup": True})
    out["refused_diff"] = k8s_state.diff(before, cluster_state(PREFIX + slug))
    out["row_after_refusal"] = row(slug)
    return out


def story_half(slug):
    """Namespace + quota only, status failed: check mode first (nothing may change), then the repair."""
    ns = PREFIX + slug
    out = {"state_before": cluster_state(ns), "row_before": row(slug)}
    out["check"] = run(slug, check=True)
    out["state_after_check"] = cluster_state(ns)
    out["row_after_check"] = row(slug)
    out["repair"] = run(slug, diff=True)
    out["serving"] = serving(ns)
    out["row_after"] = row(slug)
    out["leftover"] = [c.metadata.name for c in core().list_namespaced_config_map(ns).items]
    # After the repair the tenant is healthy: a rerun changes nothing, check mode finds nothing to do.
    out["rerun"] = run(slug)
    out["check_after"] = run(slug, check=True)
    return out


def story_cleanup(slug):
    """A half-made tenant, cleaned up and made again."""
    ns = PREFIX + slug
    out = {"uid_before": core().read_namespace(ns).metadata.uid}
    out["result"] = run(slug, extravars={"provision_tenant_cleanup": True})
    out["uid_after"] = core().read_namespace(ns).metadata.uid
    out["leftover"] = [c.metadata.name for c in core().list_namespaced_config_map(ns).items]
    out["serving"] = serving(ns)
    out["row_after"] = row(slug)
    return out


def story_capacity(slug):
    """A tier bigger than any node: refused, said so, status failed, nothing created."""
    tiers = copy.deepcopy(VARS["saasodoo_tenant_tiers"])
    tiers["basic"]["resources"] = {"requests": {"cpu": "64", "memory": "1Gi"}, "limits": {"cpu": "64", "memory": "1Gi"}}
    out = {"result": run(slug, extravars={"provision_tenant_tiers": tiers})}
    out["row_after"] = row(slug)
    try:
        core().read_namespace(PREFIX + slug)
        out["namespace"] = True
    except ApiException:
        out["namespace"] = False
    return out


@pytest.fixture(scope="module")
def stories(testbed):
    suffix = secrets.token_hex(3)
    slugs = {key: f"pt-{suffix}-{key}" for key in ("fresh", "half", "clean", "cap")}
    insert(slugs["fresh"], "basic", "provisioning")
    insert(slugs["half"], "basic", "failed", "timeout waiting for the Odoo Deployment")
    insert(slugs["clean"], "basic", "failed", "PVC never bound")
    insert(slugs["cap"], "basic", "provisioning")
    pool = ThreadPoolExecutor(max_workers=4)
    try:
        half_made(slugs["half"])
        half_made(slugs["clean"])
        futures = {"fresh": pool.submit(story_fresh, slugs["fresh"]), "half": pool.submit(story_half, slugs["half"]),
                   "clean": pool.submit(story_cleanup, slugs["clean"]), "cap": pool.submit(story_capacity, slugs["cap"])}
        yield {"slugs": slugs, "futures": futures}
    finally:
        pool.shutdown(wait=True)
        with db() as conn:
            conn.execute("DELETE FROM tenants WHERE slug = ANY(%s)", (list(slugs.values()),))
        # Deleted, not waited for: the namespace controller finishes on its own.
        for slug in slugs.values():
            for delete in (lambda: core().delete_namespace(PREFIX + slug),
                           lambda: core().delete_persistent_volume(f"{PREFIX}{slug}-{PVC}")):
                try:
                    delete()
                except ApiException as e:
                    if e.status != 404:
                        raise


def story(stories, key):
    return stories["futures"][key].result(timeout=600), stories["slugs"][key]


# ---- the tests


def test_bad_input_is_refused_before_anything_changes(testbed):
    slug = f"pt-{secrets.token_hex(3)}-bad"
    insert(slug, "basic", "provisioning")
    try:
        before, row_before = cluster_state(PREFIX + slug), row(slug)
        with ThreadPoolExecutor(max_workers=2) as pool:
            unknown_tier = pool.submit(run, slug, extravars={"provision_tenant_tier": "platinum"})
            no_slug = pool.submit(run_playbook, PLAYBOOK, extravars=FAST)
        unknown_tier, no_slug = unknown_tier.result(), no_slug.result()
        assert unknown_tier.rc != 0
        assert "provision_tenant_tier, when given, one of basic, premium (got 'platinum')" \
            in " ".join(unknown_tier.stdout.split())
        assert "nothing was changed" in unknown_tier.stdout
        assert no_slug.rc != 0 and "missing required arguments: provision_tenant_slug" in no_slug.stdout
        assert k8s_state.diff(before, cluster_state(PREFIX + slug)) == [] and row(slug) == row_before
    finally:
        with db() as conn:
            conn.execute("DELETE FROM tenants WHERE slug = %s", (slug,))


def test_a_new_tenant_is_provisioned_then_a_rerun_changes_nothing(stories):
    out, slug = story(stories, "fresh")
    first = out["first"]
    assert first.rc == 0, first.stdout[-4000:]
    res = first.artifacts["provision_tenant_result"]
    assert res["status"] == {"before": "provisioning", "after": "active"}
    assert res["found"]["in_cluster"] is False and res["check_mode"] is False
    created = {a["kind"] for a in res["actions"] if a["action"] == "create"}
    assert created >= {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "PersistentVolumeClaim",
                       "Deployment", "Service", "Ingress"}
    assert [a["summary"] for a in res["actions"] if a["kind"] == "TenantRecord"] == ["status provisioning -> active"]
    assert out["serving"] == {"ready": True, "bound": True, "policies": POLICIES, "quota": ["tenant-quota"],
                              "limits": ["tenant-limits"], "pod_security": "baseline"}
    assert out["row_after_first"]["status"] == "active" and out["row_after_first"]["last_error"] is None
    assert out["row_after_first"]["status_changed_at"] > out["row_after_first"]["created_at"]
    assert res["duration_seconds"] > 0

    again = out["again"]
    assert again.rc == 0 and again.changed == 0, again.stdout[-4000:]
    assert again.artifacts["provision_tenant_result"]["actions"] == []
    assert again.artifacts["provision_tenant_result"]["found"]["verdict"] == "healthy"


def test_cleanup_of_an_active_tenant_is_refused(stories):
    out, slug = story(stories, "fresh")
    refused = out["refused"]
    assert refused.rc != 0
    text = " ".join(refused.stdout.split())
    assert f"Refusing to delete namespace {PREFIX}{slug}: tenant {slug} is active" in text
    assert "provision_tenant_force_cleanup=true" in text
    assert out["refused_diff"] == []
    assert out["row_after_refusal"] == out["row_after_first"]


def test_check_mode_changes_nothing_on_a_half_made_tenant(stories):
    out, slug = story(stories, "half")
    check = out["check"]
    assert check.rc == 0, check.stdout[-4000:]
    assert k8s_state.diff(out["state_before"], out["state_after_check"]) == []
    assert out["state_before"]["Namespace"] == out["state_after_check"]["Namespace"]
    assert out["row_after_check"] == out["row_before"]
    res = check.artifacts["provision_tenant_result"]
    assert res["check_mode"] is True and res["status"] == {"before": "failed", "after": "active"}
    drift = " | ".join(res["found"]["drift"])
    assert f"Namespace/{PREFIX}{slug}: update metadata" in drift
    assert f"Deployment/{PREFIX}{slug}/odoo: create" in drift
    assert f"ResourceQuota/{PREFIX}{slug}/tenant-quota: update metadata, spec" in drift


def test_a_half_made_tenant_is_repaired_in_place(stories):
    out, slug = story(stories, "half")
    repair = out["repair"]
    assert repair.rc == 0, repair.stdout[-4000:]
    res = repair.artifacts["provision_tenant_result"]
    assert res["status"] == {"before": "failed", "after": "active"}
    assert res["found"]["verdict"] == "failed"
    namespace_update = [a for a in res["actions"] if a["kind"] == "Namespace"][0]
    assert namespace_update["action"] == "update"
    assert namespace_update["after"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    quota = [a for a in res["actions"] if a["kind"] == "ResourceQuota"][0]
    assert quota["action"] == "update" and quota["after"]["spec"]["hard"]["requests.cpu"] == "1"
    # --diff shows what changed
    assert "Show what changes (--diff)" in repair.stdout
    assert f"Namespace/{PREFIX}{slug}: update metadata" in repair.stdout
    assert "pod-security.kubernetes.io/enforce: baseline" in repair.stdout
    assert out["serving"]["ready"] and out["serving"]["bound"] and out["serving"]["policies"] == POLICIES
    assert out["serving"]["pod_security"] == "baseline"
    assert out["row_after"]["status"] == "active" and out["row_after"]["last_error"] is None
    # in place: what the failed attempt left that is not ours stays
    assert "leftover" in out["leftover"]
    rerun = out["rerun"]
    assert rerun.rc == 0 and rerun.changed == 0, rerun.stdout[-3000:]
    assert rerun.artifacts["provision_tenant_result"]["actions"] == []
    check = out["check_after"]
    assert check.rc == 0 and check.changed == 0, check.stdout[-3000:]
    res = check.artifacts["provision_tenant_result"]
    assert res["actions"] == [] and res["found"]["verdict"] == "healthy" and res["status"]["before"] == "active"


def test_cleanup_deletes_a_half_made_tenant_and_makes_it_again(stories):
    out, slug = story(stories, "clean")
    result = out["result"]
    assert result.rc == 0, result.stdout[-4000:]
    res = result.artifacts["provision_tenant_result"]
    assert res["actions"][0]["summary"] == "status failed -> provisioning"
    deleted = [a for a in res["actions"] if a["action"] == "delete"]
    assert [a["ref"] for a in deleted] == [f"Namespace/{PREFIX}{slug}"]
    assert out["uid_after"] != out["uid_before"]
    assert "leftover" not in out["leftover"]
    assert out["serving"]["ready"] and out["serving"]["bound"] and out["serving"]["policies"] == POLICIES
    assert out["row_after"]["status"] == "active"


def test_a_tier_the_cluster_has_no_room_for_is_refused_and_recorded(stories):
    out, slug = story(stories, "cap")
    result = out["result"]
    assert result.rc != 0
    text = " ".join(result.stdout.split())
    assert f"refusing to provision tenant {slug}: insufficient capacity for tier basic" in text
    assert "Add nodes" in text
    assert out["namespace"] is False
    assert out["row_after"]["status"] == "failed"
    assert out["row_after"]["last_error"].startswith("insufficient capacity:")
    assert result.artifacts["provision_tenant_result"]["status"]["after"] == "failed"


@pytest.mark.parametrize("kind", ["kube-system", "another tenant's", "unlabelled"])
def test_a_namespace_that_is_not_the_tenants_is_never_repaired_or_deleted(testbed, kind):
    """Empty prefix + slug `kube-system`, or a slug whose namespace is someone else's: with cleanup and
    force_cleanup both on, the run refuses before anything changes, whatever the tenant's row says."""
    name = "kube-system" if kind == "kube-system" else f"ptf-{secrets.token_hex(3)}"
    if kind != "kube-system":
        labels = {LABEL: "someone-else"} if kind == "another tenant's" else {"team": "billing"}
        core().create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
        core().create_namespaced_config_map(name, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="precious"), data={"k": "v"}))
        # kube-controller-manager publishes kube-root-ca.crt into every new namespace, a moment later:
        # the "before" state is taken once it is there (else it shows up as a change the runbook never made).
        faults.wait_until("kube-root-ca.crt in the new namespace", lambda: any(
            c.metadata.name == "kube-root-ca.crt" for c in core().list_namespaced_config_map(name).items), timeout=60)
    try:
        before = cluster_state(name)
        result = run(name, extravars={"provision_tenant_namespace_prefix": "", "provision_tenant_cleanup": True,
                                      "provision_tenant_force_cleanup": True, "provision_tenant_update_status": False,
                                      "provision_tenant_tier": "basic"})
        # Read before anything is undone: the namespace and everything in it as they were.
        after = cluster_state(name)
        assert result.rc != 0
        said = " ".join(result.stdout.split())
        assert f"Namespace {name} exists but does not carry the label {LABEL}={name}" in said, result.stdout[-3000:]
        assert "neither repaired nor deleted, whatever provision_tenant_force_cleanup says" in said
        assert ("it has " + LABEL + "=someone-else" if kind == "another tenant's" else f"it has no {LABEL} label") in said
        assert k8s_state.diff(before, after) == []
        assert core().read_namespace(name).metadata.deletion_timestamp is None
        assert result.artifacts["provision_tenant_result"]["actions"] == []
    finally:
        if kind != "kube-system":
            core().delete_namespace(name)
