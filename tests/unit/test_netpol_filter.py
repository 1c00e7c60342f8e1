"""NetworkPolicy reachability and isolation drift (plugins/filter/netpol.py) on hand-made objects."""

from __future__ import annotations

import copy

import pytest

from plugins.filter import netpol as f

NAME = "kubernetes.io/metadata.name"
ODOO = {"app.kubernetes.io/name": "odoo"}


def policy(namespace, name, pod_selector=None, types=None, ingress=None, egress=None):
    spec = {"podSelector": pod_selector if pod_selector is not None else {}}
    if types is not None:
        spec["policyTypes"] = types
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ns_peer(name, pods=None):
    peer = {"namespaceSelector": {"matchLabels": {NAME: name}}}
    if pods is not None:
        peer["podSelector"] = {"matchLabels": pods}
    return peer


def tenant_policies(namespace):
    """The four policies provision_tenant renders for a tenant."""
    return [
        policy(namespace, "default-deny", types=["Ingress", "Egress"]),
        policy(namespace, "allow-from-ingress", types=["Ingress"],
               ingress=[{"from": [ns_peer("saasodoo-system", {"app.kubernetes.io/name": "traefik"})],
                         "ports": [{"protocol": "TCP", "port": 8069}]}]),
        policy(namespace, "allow-dns-egress", types=["Egress"],
               egress=[{"to": [ns_peer("kube-system", {"app.kubernetes.io/name": "coredns"})],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]),
        policy(namespace, "allow-platform-db-egress", pod_selector={"matchLabels": ODOO}, types=["Egress"],
               egress=[{"to": [ns_peer("saasodoo-system", {"app.kubernetes.io/name": "postgres"})],
                        "ports": [{"protocol": "TCP", "port": 5432}]}]),
    ]


def allow_all(namespace, name="allow-all"):
    return policy(namespace, name, types=["Ingress", "Egress"], ingress=[{}], egress=[{}])


NAMESPACES = {"tenant-a": {"saasodoo.io/tenant": "a"}, "tenant-b": {"saasodoo.io/tenant": "b"},
              "saasodoo-system": {}, "kube-system": {}}
TENANTS = [{"slug": "a", "namespace": "tenant-a", "pod_labels": [ODOO]},
           {"slug": "b", "namespace": "tenant-b", "pod_labels": [ODOO]}]


def pod(namespace, labels=None):
    return {"namespace": namespace, "labels": labels if labels is not None else dict(ODOO)}


def open_pairs(policies, namespaces=None):
    return [(p["from"], p["to"]) for p in f.netpol_isolation(TENANTS, policies, namespaces or NAMESPACES) if p["open"]]


# ---- selectors


@pytest.mark.parametrize("selector, labels, expected", [
    ({}, {}, True),
    ({}, {"a": "1"}, True),
    (None, {"a": "1"}, False),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": "x"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "x"}, False),
    ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
])
def test_label_selectors(selector, labels, expected):
    assert f.netpol_selector_matches(selector, labels) is expected


# ---- reachability


def test_no_policy_at_all_means_open():
    verdict = f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [], NAMESPACES)
    assert verdict["allowed"] and not verdict["egress"]["isolated"] and not verdict["ingress"]["isolated"]


def test_the_desired_policies_isolate_tenants_both_ways():
    policies = tenant_policies("tenant-a") + tenant_policies("tenant-b")
    assert open_pairs(policies) == []
    verdict = f.netpol_allows(pod("tenant-a"), pod("tenant-b"), policies, NAMESPACES)
    assert verdict["egress"]["isolated"] and verdict["egress"]["allowed_by"] == []
    assert verdict["ingress"]["selected_by"] == ["tenant-b/allow-from-ingress", "tenant-b/default-deny"]


def test_the_desired_policies_still_let_the_platform_in_and_dns_out():
    policies = tenant_policies("tenant-a")
    traefik = {"namespace": "saasodoo-system", "labels": {"app.kubernetes.io/name": "traefik"}}
    coredns = {"namespace": "kube-system", "labels": {"app.kubernetes.io/name": "coredns"}}
    postgres = {"namespace": "saasodoo-system", "labels": {"app.kubernetes.io/name": "postgres"}}
    assert f.netpol_allows(traefik, pod("tenant-a"), policies, NAMESPACES)["allowed"]
    assert f.netpol_allows(pod("tenant-a"), coredns, policies, NAMESPACES)["allowed"]
    assert f.netpol_allows(pod("tenant-a"), postgres, policies, NAMESPACES)["allowed"]
    # only Odoo pods may reach the database
    assert not f.netpol_allows(pod("tenant-a", {}), postgres, policies, NAMESPACES)["allowed"]
    # any other pod of the platform namespace is refused
    assert not f.netpol_allows({"namespace": "saasodoo-system", "labels": {}}, pod("tenant-a"), policies,
                               NAMESPACES)["allowed"]


def test_deleting_default_deny_alone_keeps_tenants_isolated():
    # The other policies select every pod for ingress (allow-from-ingress) and egress (allow-dns-egress).
    policies = [p for p in tenant_policies("tenant-a") + tenant_policies("tenant-b")
                if p["metadata"]["name"] != "default-deny"]
    assert open_pairs(policies) == []


def test_a_namespace_without_policies_is_reachable_by_one_whose_egress_is_open():
    # b has no policy at all (ingress open); a's egress is restricted: a -> b closed, b -> a closed too
    policies = tenant_policies("tenant-a")
    assert open_pairs(policies) == []
    # a without policies either: both directions open
    assert open_pairs([]) == [("a", "b"), ("b", "a")]


def test_allow_all_on_one_side_is_not_enough():
    policies = tenant_policies("tenant-a") + tenant_policies("tenant-b") + [allow_all("tenant-b")]
    # b's ingress and egress are open, but a's egress (a -> b) and a's ingress (b -> a) are not
    assert open_pairs(policies) == []


def test_allow_all_on_both_sides_opens_both_pairs_and_names_the_policies():
    policies = (tenant_policies("tenant-a") + tenant_policies("tenant-b")
                + [allow_all("tenant-a"), allow_all("tenant-b")])
    pairs = [p for p in f.netpol_isolation(TENANTS, policies, NAMESPACES) if p["open"]]
    assert [(p["from"], p["to"]) for p in pairs] == [("a", "b"), ("b", "a")]
    assert pairs[0]["egress_by"] == ["tenant-a/allow-all"] and pairs[0]["ingress_by"] == ["tenant-b/allow-all"]


def test_policy_types_default_from_the_sections():
    # No policyTypes: Ingress always, Egress only with egress rules.
    assert f.policy_types({"spec": {"podSelector": {}}}) == ["Ingress"]
    assert f.policy_types({"spec": {"podSelector": {}, "egress": [{}]}}) == ["Ingress", "Egress"]
    # An ingress-only policy with an egress section in policyTypes [Ingress] does not restrict egress
    p = policy("tenant-a", "odd", types=["Ingress"], egress=[])
    verdict = f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [p], NAMESPACES)
    assert not verdict["egress"]["isolated"] and verdict["ingress"]["isolated"] is False


def test_pod_selector_only_peer_means_the_policys_own_namespace():
    b_from_own_pods = policy("tenant-b", "same-ns", types=["Ingress"], ingress=[{"from": [{"podSelector": {}}]}])
    verdict = f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [b_from_own_pods], NAMESPACES)
    assert not verdict["ingress"]["allowed"]
    assert f.netpol_allows(pod("tenant-b"), pod("tenant-b"), [b_from_own_pods], NAMESPACES)["allowed"]


def test_namespace_selector_matches_namespace_labels():
    from_tenants = policy("tenant-b", "from-tenants", types=["Ingress"], ingress=[{"from": [
        {"namespaceSelector": {"matchExpressions": [{"key": "saasodoo.io/tenant", "operator": "Exists"}]}}]}])
    assert f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [from_tenants], NAMESPACES)["allowed"]
    from_all = policy("tenant-b", "from-all", types=["Ingress"], ingress=[{"from": [{"namespaceSelector": {}}]}])
    assert f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [from_all], NAMESPACES)["allowed"]
    # namespaceSelector and podSelector in one peer: both must match
    both = policy("tenant-b", "both", types=["Ingress"], ingress=[{"from": [ns_peer("tenant-a", {"role": "x"})]}])
    assert not f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [both], NAMESPACES)["allowed"]
    assert f.netpol_allows(pod("tenant-a", {"role": "x"}), pod("tenant-b"), [both], NAMESPACES)["allowed"]


def test_the_name_label_is_known_without_being_listed():
    p = policy("tenant-b", "from-a", types=["Ingress"], ingress=[{"from": [ns_peer("tenant-a")]}])
    assert f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [p], {"tenant-a": {}})["allowed"]
    namespaces = [{"metadata": {"name": "tenant-a", "labels": {}}}]
    assert f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [p], namespaces)["allowed"]


def test_ip_blocks_never_match_pods():
    p = policy("tenant-b", "cidr", types=["Ingress"], ingress=[{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])
    assert not f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [p], NAMESPACES)["allowed"]


def test_a_rule_without_from_allows_every_source_and_no_rule_allows_none():
    any_source = policy("tenant-b", "any", types=["Ingress"], ingress=[{"ports": [{"port": 8069}]}])
    assert f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [any_source], NAMESPACES)["allowed"]
    none = policy("tenant-b", "none", types=["Ingress"], ingress=[])
    assert not f.netpol_allows(pod("tenant-a"), pod("tenant-b"), [none], NAMESPACES)["allowed"]


def test_a_policy_aimed_at_some_pods_opens_the_pair_for_those_pods():
    debug = {"matchLabels": {"app": "debug"}}
    policies = (tenant_policies("tenant-a") + tenant_policies("tenant-b")
                + [policy("tenant-a", "debug-out", pod_selector=debug, types=["Egress"], egress=[{}]),
                   policy("tenant-b", "debug-in", pod_selector=debug, types=["Ingress"], ingress=[{}])])
    pairs = [p for p in f.netpol_isolation(TENANTS, policies, NAMESPACES) if p["open"]]
    assert [(p["from"], p["to"]) for p in pairs] == [("a", "b")]
    assert pairs[0]["from_labels"] == {"app": "debug"} and pairs[0]["to_labels"] == {"app": "debug"}


# ---- drift


def desired(namespace="tenant-a", level="baseline"):
    labels = {"saasodoo.io/tenant": "a", "pod-security.kubernetes.io/enforce": level}
    return ([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}},
             {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "tenant-quota", "namespace": namespace},
              "spec": {"hard": {"requests.cpu": "1", "requests.memory": "2Gi", "pods": "10"}}},
             {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "tenant-limits", "namespace": namespace},
              "spec": {"limits": [{"type": "Container", "default": {"cpu": "1", "memory": "1Gi"},
                                   "defaultRequest": {"cpu": "250m", "memory": "512Mi"}}]}}]
            + tenant_policies(namespace)
            + [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "odoo", "namespace": namespace}}])


def live_from(objects):
    """What the API server returns: the kind filled in, metadata.name label, server-side defaults."""
    out = copy.deepcopy([o for o in objects if o["kind"] != "Deployment"])
    for obj in out:
        if obj["kind"] == "Namespace":
            obj["metadata"]["labels"][NAME] = obj["metadata"]["name"]
            obj["status"] = {"phase": "Active"}
        obj["metadata"]["resourceVersion"] = "42"
    return out


def test_in_sync_when_the_live_objects_match():
    d = desired()
    drift = f.netpol_drift(d, live_from(d))
    assert drift["missing"] == [] and drift["changed"] == [] and drift["extra"] == [] and drift["apply"] == []
    assert len(drift["in_sync"]) == 7


def test_quantities_compare_by_value_and_ports_default_to_tcp():
    d = desired()
    live = live_from(d)
    live[1]["spec"]["hard"]["requests.cpu"] = "1000m"
    live[1]["spec"]["hard"]["requests.memory"] = "2048Mi"
    allow_ingress = [o for o in live if o["metadata"]["name"] == "allow-from-ingress"][0]
    del allow_ingress["spec"]["ingress"][0]["ports"][0]["protocol"]
    assert f.netpol_drift(d, live)["changed"] == []


def test_missing_default_deny_and_quota_are_reported_and_applied():
    d = desired()
    live = [o for o in live_from(d) if o["metadata"]["name"] not in ("default-deny", "tenant-quota")]
    drift = f.netpol_drift(d, live)
    assert drift["missing"] == ["ResourceQuota/tenant-a/tenant-quota", "NetworkPolicy/tenant-a/default-deny"]
    assert [o["metadata"]["name"] for o in drift["apply"]] == ["tenant-quota", "default-deny"]


def test_a_changed_pod_security_label_is_repaired_alone():
    d = desired()
    live = live_from(d)
    live[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = "privileged"
    live[0]["metadata"]["labels"]["team"] = "ops"  # not ours: left alone
    drift = f.netpol_drift(d, live)
    assert [c["ref"] for c in drift["changed"]] == ["Namespace/tenant-a"]
    assert drift["changed"][0]["before"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert drift["apply"] == [{"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": "tenant-a", "labels": d[0]["metadata"]["labels"]}}]


def test_a_changed_spec_is_patched_with_nulls_for_what_was_added():
    d = desired()
    live = live_from(d)
    live[1]["spec"]["hard"]["pods"] = "3"
    live[1]["spec"]["hard"]["services"] = "7"
    live[1]["spec"]["scopes"] = ["BestEffort"]
    allow = [o for o in live if o["metadata"]["name"] == "allow-from-ingress"][0]
    allow["spec"]["ingress"].append({})  # an extra rule: allow everyone
    drift = f.netpol_drift(d, live)
    assert sorted(c["ref"] for c in drift["changed"]) == ["NetworkPolicy/tenant-a/allow-from-ingress",
                                                          "ResourceQuota/tenant-a/tenant-quota"]
    quota = [o for o in drift["apply"] if o["kind"] == "ResourceQuota"][0]
    assert quota["spec"]["hard"]["services"] is None and quota["spec"]["scopes"] is None
    assert quota["spec"]["hard"]["pods"] == "10"
    policy_fix = [o for o in drift["apply"] if o["kind"] == "NetworkPolicy"][0]
    assert len(policy_fix["spec"]["ingress"]) == 1


def test_extra_policies_are_reported_and_removed_only_when_asked():
    d = desired()
    live = live_from(d) + [allow_all("tenant-a"), allow_all("tenant-b", "elsewhere")]
    kept = f.netpol_drift(d, live)
    assert kept["extra"] == ["NetworkPolicy/tenant-a/allow-all"] and kept["remove"] == []
    removed = f.netpol_drift(d, live, remove_extra=True)
    assert removed["remove"] == [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                  "metadata": {"name": "allow-all", "namespace": "tenant-a"}}]


def test_a_missing_namespace_is_reported_not_applied():
    drift = f.netpol_drift(desired(), [])
    assert drift["namespace_exists"] is False and drift["apply"] == [] and len(drift["missing"]) == 7


def test_the_state_after_comes_from_the_servers_answers():
    d = desired()
    live = [o for o in live_from(d) if o["metadata"]["name"] != "default-deny"] + [allow_all("tenant-a")]
    drift = f.netpol_drift_tenants([{"slug": "a", "manifests": d}], live, remove_extra=True)
    applied = {"results": [{"item": drift[0], "changed": True,
                            "result": {"results": [{"changed": True, "method": "create",
                                                    "result": dict(d[3], metadata=dict(d[3]["metadata"], uid="u"))}]}}]}
    after = f.netpol_live_after(live, applied, drift[0]["remove"])
    names = sorted(o["metadata"]["name"] for o in after if o["kind"] == "NetworkPolicy")
    assert names == ["allow-dns-egress", "allow-from-ingress", "allow-platform-db-egress", "default-deny"]
    assert f.netpol_drift(d, after)["missing"] == []


def test_summary_reports_per_tenant_and_the_open_pairs():
    d = desired()
    live = [o for o in live_from(d) if o["metadata"]["name"] != "default-deny"] + [allow_all("tenant-a")]
    drift = f.netpol_drift_tenants([{"slug": "a", "tier": "basic", "manifests": d}], live)
    pairs = [{"from": "a", "to": "b", "open": True, "egress_by": ["tenant-a/allow-all"], "ingress_by": []},
             {"from": "b", "to": "a", "open": False}]
    summary = f.netpol_summary(drift, drift, pairs, [])
    assert summary["drift_found"] == 1 and summary["extra_found"] == 1 and summary["applied"] == 1
    assert summary["tenants"][0]["applied"] == ["NetworkPolicy/tenant-a/default-deny"]
    assert summary["drift_after"] == [{"slug": "a", "missing": ["NetworkPolicy/tenant-a/default-deny"], "changed": []}]
    assert [(p["from"], p["to"]) for p in summary["isolation"]["open_before"]] == [("a", "b")]
    assert summary["isolation"]["isolated_after"] is True
