"""Tenant isolation on real-looking pods and policies (plugins/filter/tenant_isolation.py)."""

from __future__ import annotations

import pytest

from plugins.filter import tenant_isolation as f

NAME = "kubernetes.io/metadata.name"
TENANT = "saasodoo.io/tenant"
ODOO = {"app.kubernetes.io/name": "odoo"}
NAMESPACES = [
    {"metadata": {"name": "tenant-a", "labels": {TENANT: "a"}}},
    {"metadata": {"name": "tenant-b", "labels": {TENANT: "b"}}},
    {"metadata": {"name": "saasodoo-system", "labels": {}}},
    {"metadata": {"name": "kube-system", "labels": {}}},
]
TENANTS = [{"slug": "a", "namespace": "tenant-a"}, {"slug": "b", "namespace": "tenant-b"}]


def policy(namespace, name, pod_selector=None, types=None, ingress=None, egress=None):
    spec = {"podSelector": pod_selector if pod_selector is not None else {}}
    if types is not None:
        spec["policyTypes"] = types
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"kind": "NetworkPolicy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ns_peer(name, pods=None):
    peer = {"namespaceSelector": {"matchLabels": {NAME: name}}}
    if pods is not None:
        peer["podSelector"] = {"matchLabels": pods}
    return peer


def tenant_policies(namespace):
    """What provision_tenant renders for a tenant."""
    return [
        policy(namespace, "default-deny", types=["Ingress", "Egress"]),
        policy(namespace, "allow-from-ingress", types=["Ingress"],
               ingress=[{"from": [ns_peer("saasodoo-system", {"app.kubernetes.io/name": "traefik"})],
                         "ports": [{"protocol": "TCP", "port": 8069}]}]),
        policy(namespace, "allow-dns-egress", types=["Egress"],
               egress=[{"to": [ns_peer("kube-system", {"app.kubernetes.io/name": "coredns"})]}]),
        policy(namespace, "allow-platform-db-egress", pod_selector={"matchLabels": ODOO}, types=["Egress"],
               egress=[{"to": [ns_peer("saasodoo-system", {"app.kubernetes.io/name": "postgres"})]}]),
    ]


def pod(namespace, name, labels=None, ip=None, host_network=False, phase="Running"):
    return {"kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                        "labels": dict(ODOO) if labels is None else labels},
            "spec": {"hostNetwork": host_network} if host_network else {},
            "status": {"phase": phase, **({"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {})}}


PODS = [pod("tenant-a", "odoo-a1", ip="10.244.0.10"), pod("tenant-b", "odoo-b1", ip="10.244.0.20"),
        pod("tenant-b", "odoo-b2", ip="10.244.0.21")]
ISOLATED = tenant_policies("tenant-a") + tenant_policies("tenant-b")


def open_pairs(policies, pods=PODS, probe=True):
    return sorted((p["from"], p["to"]) for p in f.tenant_isolation_pairs(TENANTS, pods, policies, NAMESPACES, probe)
                  if p["open"])


# ---- one pod to another


def test_pod_peer_from_a_pod_object():
    peer = f.tenant_isolation_pod(pod("tenant-a", "x", {"k": "v"}, ip="10.0.0.1", host_network=True))
    assert peer == {"namespace": "tenant-a", "name": "x", "labels": {"k": "v"}, "ips": ["10.0.0.1"],
                    "host_network": True}


def test_no_policy_means_reachable():
    verdict = f.tenant_isolation_allows(PODS[0], PODS[1], [], NAMESPACES)
    assert verdict["allowed"] and not verdict["egress"]["isolated"] and not verdict["ingress"]["isolated"]


def test_desired_policies_isolate_real_pods_both_ways():
    verdict = f.tenant_isolation_allows(PODS[0], PODS[1], ISOLATED, NAMESPACES)
    assert not verdict["allowed"]
    assert verdict["egress"]["isolated"] and verdict["egress"]["allowed_by"] == []
    assert verdict["ingress"]["selected_by"] == ["tenant-b/allow-from-ingress", "tenant-b/default-deny"]
    assert open_pairs(ISOLATED) == []


def test_desired_policies_let_the_ingress_controller_in():
    traefik = pod("saasodoo-system", "traefik-0", {"app.kubernetes.io/name": "traefik"}, ip="10.244.1.1")
    assert f.tenant_isolation_allows(traefik, PODS[0], ISOLATED, NAMESPACES)["allowed"]
    other = pod("saasodoo-system", "other", {}, ip="10.244.1.2")
    assert not f.tenant_isolation_allows(other, PODS[0], ISOLATED, NAMESPACES)["allowed"]


def test_one_side_open_is_not_enough():
    # a's egress open to everything, b still denies ingress: closed both ways
    policies = ISOLATED + [policy("tenant-a", "egress-all", types=["Egress"], egress=[{}])]
    assert open_pairs(policies) == []
    # and b's ingress opened to every namespace: a -> b opens, b -> a stays closed
    policies += [policy("tenant-b", "from-anywhere", types=["Ingress"], ingress=[{"from": [{"namespaceSelector": {}}]}])]
    assert open_pairs(policies) == [("a", "b")]
    pair = [p for p in f.tenant_isolation_pairs(TENANTS, PODS, policies, NAMESPACES) if p["open"]][0]
    assert pair["path"]["egress"]["allowed_by"] == ["tenant-a/egress-all"]
    assert pair["path"]["ingress"]["allowed_by"] == ["tenant-b/from-anywhere"]
    assert pair["pods_from"] == 1 and pair["pods_to"] == 2
    # 2 candidates (odoo-a1 + probe) x 3 candidates (odoo-b1, odoo-b2 + probe)
    assert pair["evaluated"] == 6 and pair["open_paths"] == 6


def test_namespace_selector_on_a_tenant_label():
    policies = ISOLATED + [
        policy("tenant-a", "to-b", types=["Egress"], egress=[{"to": [{"namespaceSelector": {"matchLabels": {TENANT: "b"}}}]}]),
        policy("tenant-b", "from-a", types=["Ingress"],
               ingress=[{"from": [{"namespaceSelector": {"matchLabels": {TENANT: "a"}}, "podSelector": {"matchLabels": ODOO}}]}]),
    ]
    assert open_pairs(policies) == [("a", "b")]
    # the probe pod (no labels) of a does not match b's podSelector, the real Odoo pod does
    pair = [p for p in f.tenant_isolation_pairs(TENANTS, PODS, policies, NAMESPACES) if p["open"]][0]
    assert pair["path"]["from_pod"] == "odoo-a1"


def test_ip_block_is_matched_against_real_pod_ips():
    egress_cidr = policy("tenant-a", "egress-cidr", types=["Egress"],
                         egress=[{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.0.21/32"]}}]}])
    ingress_cidr = policy("tenant-b", "ingress-cidr", types=["Ingress"],
                          ingress=[{"from": [{"ipBlock": {"cidr": "10.244.0.10/32"}}]}])
    pairs = f.tenant_isolation_pairs(TENANTS, PODS, ISOLATED + [egress_cidr, ingress_cidr], NAMESPACES)
    a_to_b = [p for p in pairs if p["from"] == "a"][0]
    assert a_to_b["open"] and a_to_b["open_paths"] == 1
    assert (a_to_b["path"]["from_pod"], a_to_b["path"]["to_pod"]) == ("odoo-a1", "odoo-b1")
    # odoo-b2 is in `except`; the probe pod has no IP anybody named
    only_b2 = [pod("tenant-a", "odoo-a1", ip="10.244.0.10"), pod("tenant-b", "odoo-b2", ip="10.244.0.21")]
    assert open_pairs(ISOLATED + [egress_cidr, ingress_cidr], only_b2) == []


def test_egress_to_the_whole_internet_reaches_pods():
    world = policy("tenant-a", "internet", types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])
    open_in = policy("tenant-b", "open", types=["Ingress"], ingress=[{}])
    assert open_pairs(ISOLATED + [world, open_in]) == [("a", "b")]


def test_host_network_pods_escape_network_policies():
    pods = PODS + [pod("tenant-a", "debug", {}, ip="192.168.0.5", host_network=True)]
    # b's ingress only lets traefik in: a host-network pod is not matched by its selectors
    assert open_pairs(ISOLATED, pods) == []
    # a rule without peers (or any ipBlock) lets it in, and nothing restricts its egress
    open_in = policy("tenant-b", "open", types=["Ingress"], ingress=[{}])
    pairs = f.tenant_isolation_pairs(TENANTS, pods, ISOLATED + [open_in], NAMESPACES)
    a_to_b = [p for p in pairs if p["from"] == "a"][0]
    assert a_to_b["open"] and a_to_b["path"]["from_pod"] == "debug"
    assert a_to_b["path"]["egress"]["note"].startswith("hostNetwork pod")
    # as a destination its ingress is not restricted either
    host_b = [pod("tenant-a", "odoo-a1", ip="10.244.0.10"),
              pod("tenant-b", "node-agent", {}, ip="192.168.0.6", host_network=True)]
    egress_cidr = policy("tenant-a", "to-nodes", types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "192.168.0.0/24"}}]}])
    assert open_pairs(ISOLATED, host_b, probe=False) == []
    assert open_pairs(ISOLATED + [egress_cidr], host_b, probe=False) == [("a", "b")]


def test_probe_pod_finds_a_missing_default_deny():
    # default-deny gone on both sides: allow-from-ingress still selects every pod for ingress and
    # allow-dns-egress every pod for egress, so the tenants stay closed
    policies = [p for p in ISOLATED if p["metadata"]["name"] != "default-deny"]
    assert open_pairs(policies) == []
    # only the Odoo-only egress policy left: today's (Odoo) pods are still egress-isolated, but a pod
    # created tomorrow without the Odoo label is not - only the probe shows it
    only_db = [p for p in policies if p["metadata"]["name"] == "allow-platform-db-egress"]
    assert open_pairs(only_db, probe=False) == []
    assert open_pairs(only_db) == [("a", "b"), ("b", "a")]
    pair = f.tenant_isolation_pairs(TENANTS, PODS, only_db, NAMESPACES)[0]
    assert pair["path"]["from_pod"] == f.PROBE_NAME


def test_finished_pods_and_empty_namespaces():
    done = [pod("tenant-a", "job", ip="10.244.0.99", phase="Succeeded")]
    pairs = f.tenant_isolation_pairs(TENANTS, done, [], NAMESPACES, probe=False)
    assert [p["evaluated"] for p in pairs] == [0, 0] and not any(p["open"] for p in pairs)
    pairs = f.tenant_isolation_pairs(TENANTS, done, [], NAMESPACES)
    assert [p["evaluated"] for p in pairs] == [1, 1] and all(p["open"] for p in pairs)
    assert pairs[0]["path"]["from_pod"] == f.PROBE_NAME


# ---- default deny, pod security


def test_default_deny_detection():
    policies = ISOLATED + [policy("tenant-b", "deny-in", types=["Ingress"])]
    assert f.tenant_isolation_default_deny(policies, "tenant-a") == {
        "ingress": ["tenant-a/default-deny"], "egress": ["tenant-a/default-deny"]}
    assert f.tenant_isolation_default_deny(policies, "tenant-b")["ingress"] == ["tenant-b/default-deny", "tenant-b/deny-in"]
    # a policy with rules, or aimed at some pods, is not a default deny; policyTypes left out means Ingress
    partial = [policy("x", "some", pod_selector={"matchLabels": ODOO}, types=["Ingress", "Egress"]),
               policy("x", "rules", types=["Ingress"], ingress=[{}]), policy("x", "implicit")]
    assert f.tenant_isolation_default_deny(partial, "x") == {"ingress": ["x/implicit"], "egress": []}


@pytest.mark.parametrize("labels, minimum, enforce, ok", [
    ({"pod-security.kubernetes.io/enforce": "baseline"}, "baseline", "baseline", True),
    ({"pod-security.kubernetes.io/enforce": "restricted"}, "baseline", "restricted", True),
    ({"pod-security.kubernetes.io/enforce": "privileged"}, "baseline", "privileged", False),
    ({}, "baseline", "privileged", False),
    ({}, "privileged", "privileged", True),
    ({"pod-security.kubernetes.io/enforce": "bogus"}, "baseline", "privileged", False),
])
def test_pod_security_levels(labels, minimum, enforce, ok):
    result = f.tenant_isolation_pod_security({"metadata": {"name": "n", "labels": labels}}, minimum)
    assert (result["enforce"], result["ok"], result["labelled"]) == (enforce, ok, bool(labels))


def test_pod_security_refuses_an_unknown_minimum():
    with pytest.raises(ValueError, match="minimum must be one of"):
        f.tenant_isolation_pod_security({}, "strict")


# ---- findings


def drift_entry(**kw):
    base = {"slug": "a", "namespace": "tenant-a", "namespace_exists": True, "missing": [], "changed": [],
            "extra": [], "in_sync": []}
    base.update(kw)
    return base


def codes(findings):
    return [(x["code"], x["severity"]) for x in findings]


def test_findings_from_drift():
    drift = [
        drift_entry(missing=["NetworkPolicy/tenant-a/default-deny", "NetworkPolicy/tenant-a/allow-dns-egress",
                             "ResourceQuota/tenant-a/tenant-quota"]),
        drift_entry(slug="b", namespace="tenant-b", changed=[{
            "ref": "Namespace/tenant-b", "kind": "Namespace",
            "before": {"pod-security.kubernetes.io/enforce": "privileged", "saasodoo.io/tier": "basic"},
            "after": {"pod-security.kubernetes.io/enforce": "baseline", "saasodoo.io/tier": "premium"}}],
            extra=["NetworkPolicy/tenant-b/allow-all"]),
        drift_entry(slug="c", namespace="tenant-c", namespace_exists=False, missing=["Namespace/tenant-c"]),
    ]
    security = {"b": f.tenant_isolation_pod_security({"pod-security.kubernetes.io/enforce": "privileged"}, "baseline")}
    found = f.tenant_isolation_findings(drift, [], security)
    assert codes(found) == [
        ("TENANT_DEFAULT_DENY_MISSING", "high"), ("TENANT_NAMESPACE_MISSING", "high"),
        ("TENANT_NETPOL_MISSING", "high"), ("TENANT_POD_SECURITY_WEAKENED", "high"), ("TENANT_QUOTA_MISSING", "high"),
        ("TENANT_NAMESPACE_LABELS_DRIFT", "medium"), ("TENANT_NETPOL_EXTRA", "medium")]
    labels = [x for x in found if x["code"] == "TENANT_NAMESPACE_LABELS_DRIFT"][0]
    assert labels["evidence"] == ["saasodoo.io/tier: basic (desired premium)"]
    weak = [x for x in found if x["code"] == "TENANT_POD_SECURITY_WEAKENED"][0]
    assert "level privileged, below the desired baseline" in weak["message"]
    assert all(x["tenant"] for x in found)


def test_findings_quota_and_policy_changed():
    drift = [drift_entry(changed=[
        {"ref": "ResourceQuota/tenant-a/tenant-quota", "kind": "ResourceQuota", "before": {"hard": {"pods": "99"}},
         "after": {"hard": {"pods": "10"}}},
        {"ref": "NetworkPolicy/tenant-a/default-deny", "kind": "NetworkPolicy", "before": {}, "after": {}},
        {"ref": "LimitRange/tenant-a/tenant-limits", "kind": "LimitRange", "before": {}, "after": {}}])]
    assert codes(f.tenant_isolation_findings(drift, [])) == [
        ("TENANT_NETPOL_CHANGED", "high"), ("TENANT_LIMITRANGE_DRIFT", "medium"), ("TENANT_QUOTA_DRIFT", "medium")]


def test_open_pair_is_critical_with_the_path():
    policies = ISOLATED + [policy("tenant-a", "out", types=["Egress"], egress=[{}]),
                           policy("tenant-b", "in", types=["Ingress"], ingress=[{}])]
    pairs = f.tenant_isolation_pairs(TENANTS, PODS, policies, NAMESPACES)
    found = f.tenant_isolation_findings([], pairs)
    assert codes(found) == [("TENANT_PAIR_OPEN", "critical")]
    assert found[0]["message"].startswith("Tenant a can reach tenant b: pod tenant-a/odoo-a1 may connect to pod "
                                          "tenant-b/odoo-b1")
    assert "egress of a: allowed by tenant-a/out" in found[0]["evidence"]
    assert "ingress of b: allowed by tenant-b/in" in found[0]["evidence"]


def test_nothing_found_when_in_sync_and_closed():
    pairs = f.tenant_isolation_pairs(TENANTS, PODS, ISOLATED, NAMESPACES)
    assert f.tenant_isolation_findings([drift_entry(), drift_entry(slug="b", namespace="tenant-b")], pairs) == []



# ---- what tenant_isolation.yml does


def audit_tenants():
    return {"tenants": [
        {"slug": "a", "namespace": "tenant-a", "namespace_exists": True, "reapply": ["ResourceQuota/tenant-a/q"],
         "extra": []},
        {"slug": "b", "namespace": "tenant-b", "namespace_exists": True, "reapply": [],
         "extra": ["NetworkPolicy/tenant-b/allow-all"]},
        {"slug": "c", "namespace": "tenant-c", "namespace_exists": True, "reapply": ["Namespace/tenant-c"], "extra": []},
        {"slug": "d", "namespace": "tenant-d", "namespace_exists": False, "reapply": [], "extra": []}]}


def test_plan_reapplies_drift_and_hands_over_extras():
    plan = f.tenant_isolation_plan(audit_tenants())
    assert [t["slug"] for t in plan["todo"]] == ["a", "c"]
    assert plan["extra_kept"] == ["NetworkPolicy/tenant-b/allow-all"]
    assert plan["missing_namespace"] == ["d"] and plan["skipped"] == []


def test_plan_removes_extras_when_confirmed_within_the_cap():
    plan = f.tenant_isolation_plan(audit_tenants(), remove_extra=True, max_tenants=2)
    assert [t["slug"] for t in plan["todo"]] == ["a", "b"] and plan["extra_kept"] == []
    assert plan["skipped"] == [{"ref": "Namespace/tenant-c",
                                "why": "cap of 2 tenant(s) per run reached; rerun to continue"}]
    with pytest.raises(ValueError, match="max_tenants must be at least 1"):
        f.tenant_isolation_plan(audit_tenants(), max_tenants=0)


def test_plan_with_remediation_off():
    plan = f.tenant_isolation_plan(audit_tenants(), remediate=False)
    assert plan["todo"] == []
    assert [s["ref"] for s in plan["skipped"]] == ["Namespace/tenant-a", "Namespace/tenant-c"]
    assert plan["skipped"][0]["why"] == ("remediation off (tenant_isolation_remediate=false): would reapply "
                                         "ResourceQuota/tenant-a/q")


def desired(slug, tier="basic"):
    ns = "tenant-" + slug
    labels = {TENANT: slug, "pod-security.kubernetes.io/enforce": "baseline"}
    manifests = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
                 {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "tenant-quota", "namespace": ns},
                  "spec": {"hard": {"pods": "10"}}}] + [dict(p, apiVersion="networking.k8s.io/v1")
                                                        for p in tenant_policies(ns)]
    return {"slug": slug, "tier": tier, "namespace": ns, "pod_security": "baseline", "manifests": manifests}


def live_objects(desired_list):
    objs = {"namespaces": [], "networkpolicies": [], "resourcequotas": [], "limitranges": [], "pods": list(PODS)}
    key = {"Namespace": "namespaces", "NetworkPolicy": "networkpolicies", "ResourceQuota": "resourcequotas"}
    for d in desired_list:
        for m in d["manifests"]:
            objs[key[m["kind"]]].append(m)
    return objs


def test_audit_end_to_end():
    want = [desired("a"), desired("b"), desired("c")]
    live = live_objects(want[:2])  # c never provisioned
    assert f.tenant_isolation_audit(want[:2], live)["findings"] == []
    # b: quota gone, Pod Security lowered, allow-all in both a and b
    live["resourcequotas"] = [q for q in live["resourcequotas"] if q["metadata"]["namespace"] != "tenant-b"]
    live["namespaces"][1] = {"kind": "Namespace", "metadata": {"name": "tenant-b", "labels": {
        TENANT: "b", "pod-security.kubernetes.io/enforce": "privileged"}}}
    live["networkpolicies"] += [policy("tenant-a", "allow-all", types=["Ingress", "Egress"], ingress=[{}], egress=[{}]),
                                policy("tenant-b", "allow-all", types=["Ingress", "Egress"], ingress=[{}], egress=[{}])]
    result = f.tenant_isolation_audit(want, live)
    assert [(x["code"], x["tenant"]) for x in result["findings"]] == [
        ("TENANT_PAIR_OPEN", "a"), ("TENANT_PAIR_OPEN", "b"), ("TENANT_NAMESPACE_MISSING", "c"),
        ("TENANT_POD_SECURITY_WEAKENED", "b"), ("TENANT_QUOTA_MISSING", "b"),
        ("TENANT_NETPOL_EXTRA", "a"), ("TENANT_NETPOL_EXTRA", "b")]
    assert result["pairs_total"] == 2 and not result["isolated"]  # c has no namespace: not paired
    b = [t for t in result["tenants"] if t["slug"] == "b"][0]
    assert b["reapply"] == ["Namespace/tenant-b", "ResourceQuota/tenant-b/tenant-quota"]
    assert b["pod_security"]["enforce"] == "privileged" and b["pods"] == 2
    assert b["default_deny"] == {"ingress": ["tenant-b/default-deny"], "egress": ["tenant-b/default-deny"]}
