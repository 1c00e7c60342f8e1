"""The Security Check's decisions (plugins/filter/security_check.py) on hand-made objects."""

from __future__ import annotations

import pytest

from plugins.filter import security_check as f
from plugins.filter import tenant_isolation as ti

TENANT_NS = ["tenant-a", "tenant-b"]


def crb(name, role, subjects, kind="ClusterRoleBinding", namespace=None, role_kind="ClusterRole"):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"kind": kind, "metadata": meta, "roleRef": {"kind": role_kind, "name": role}, "subjects": subjects}


def sa(namespace, name="default"):
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


ROLES = [
    {"kind": "ClusterRole", "metadata": {"name": "cluster-admin"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "view"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "all-secrets"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]},
    {"kind": "Role", "metadata": {"name": "everything", "namespace": "tenant-a"},
     "rules": [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}]},
    {"kind": "ClusterRole", "metadata": {"name": "urls"}, "rules": [{"nonResourceURLs": ["*"], "verbs": ["*"]}]},
]


def test_broad_rules():
    assert f.security_check_broad_rules(ROLES[0]["rules"]) == ["verbs ['*'] on resources ['*'] in apiGroups ['*']"]
    assert f.security_check_broad_rules(ROLES[1]["rules"]) == []
    assert f.security_check_broad_rules(ROLES[4]["rules"]) == ["verbs ['*'] on nonResourceURLs ['*']"]


def test_tenant_service_account_bound_to_cluster_admin_is_critical():
    grants = f.security_check_rbac([crb("oops", "cluster-admin", [sa("tenant-a", "odoo")])], ROLES, TENANT_NS)
    assert grants == [{"binding": "ClusterRoleBinding/oops", "scope": "cluster", "role": "ClusterRole/cluster-admin",
                       "subject": "ServiceAccount tenant-a/odoo", "tenant_namespace": "tenant-a", "public": False,
                       "why": ["ClusterRole cluster-admin"], "severity": "critical"}]


def test_platform_accounts_and_narrow_roles_are_fine():
    bindings = [crb("traefik", "cluster-admin", [sa("saasodoo-system", "traefik")]),
                crb("viewer", "view", [sa("tenant-a")]),
                crb("masters", "cluster-admin", [{"kind": "Group", "name": "system:masters"}])]
    assert f.security_check_rbac(bindings, ROLES, TENANT_NS) == []


def test_role_bindings_scope_and_subjects():
    bindings = [
        # wildcard Role in its own namespace: high
        crb("own", "everything", [{"kind": "ServiceAccount", "name": "default"}], kind="RoleBinding",
            namespace="tenant-a", role_kind="Role"),
        # tenant-b's account given a wildcard ClusterRole inside tenant-a: another tenant, critical
        crb("cross", "all-secrets", [sa("tenant-b")], kind="RoleBinding", namespace="tenant-a"),
        # every account of tenant-b through its group
        crb("group", "all-secrets", [{"kind": "Group", "name": "system:serviceaccounts:tenant-b"}]),
        # everyone
        crb("public", "urls", [{"kind": "Group", "name": "system:unauthenticated"}]),
        crb("anon", "cluster-admin", [{"kind": "User", "name": "system:anonymous"}]),
        crb("all-sa", "cluster-admin", [{"kind": "Group", "name": "system:serviceaccounts"}]),
    ]
    grants = f.security_check_rbac(bindings, ROLES, TENANT_NS)
    summary = [(g["binding"], g["subject"], g["severity"], g["public"], g["tenant_namespace"]) for g in grants]
    assert summary == [
        ("ClusterRoleBinding/all-sa", "Group system:serviceaccounts", "critical", False, "*"),
        ("ClusterRoleBinding/anon", "User system:anonymous", "critical", True, None),
        ("ClusterRoleBinding/group", "Group system:serviceaccounts:tenant-b", "critical", False, "tenant-b"),
        ("ClusterRoleBinding/public", "Group system:unauthenticated", "critical", True, None),
        ("RoleBinding/tenant-a/cross", "ServiceAccount tenant-b/default", "critical", False, "tenant-b"),
        ("RoleBinding/tenant-a/own", "ServiceAccount tenant-a/default", "high", False, "tenant-a"),
    ]


def pod(namespace, name, spec, labels=None, phase="Running"):
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels or {}}, "spec": spec,
            "status": {"phase": phase}}


def test_pods_with_host_access():
    pods = [
        pod("tenant-a", "odoo", {"containers": [{"name": "odoo"}]}),
        pod("tenant-a", "evil", {"hostNetwork": True, "containers": [{"name": "c", "securityContext": {"privileged": True}}],
                                 "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
        pod("kube-system", "agent-x", {"hostPID": True, "containers": [{"name": "a"}]}, labels={"app": "agent"}),
        pod("kube-system", "agent-y", {"hostPID": True, "hostIPC": True, "containers": [{"name": "a"}]},
            labels={"app": "agent"}),
        pod("other", "ignored", {"hostNetwork": True, "containers": []}),
        pod("tenant-b", "done", {"hostNetwork": True, "containers": []}, phase="Succeeded"),
    ]
    allowed = [{"namespace": "kube-system", "labels": {"app": "agent"}, "allow": ["hostPID"], "why": "node agent"}]
    found = f.security_check_pods(pods, TENANT_NS + ["kube-system"], allowed)
    assert [(p["pod"], p["what"]) for p in found] == [
        ("kube-system/agent-y", ["hostIPC"]),
        ("tenant-a/evil", ["hostNetwork", "hostPath", "privileged"])]
    assert found[0]["allowed"] == ["hostPID: true"]
    assert "volume root mounts hostPath /" in found[1]["details"]


def test_configmap_credentials_keys_only():
    cms = [{"metadata": {"namespace": "saasodoo-system", "name": "cfg"},
            "data": {"APP_ENV": "local", "DB_PASSWORD": "hunter2", "api-key": "x"}},
           {"metadata": {"namespace": "elsewhere", "name": "cfg"}, "data": {"PASSWORD": "x"}}]
    hits = f.security_check_configmap_secrets(cms, ["saasodoo-system"], r"(?i)(password|secret|token|api[_-]?key)")
    assert hits == [{"configmap": "saasodoo-system/cfg", "namespace": "saasodoo-system", "keys": ["DB_PASSWORD", "api-key"]}]
    assert "hunter2" not in str(hits)


# ---- the checklist


def isolation(default_deny=True, open_pairs=(), missing=False):
    deny = {"ingress": ["tenant-a/default-deny"], "egress": ["tenant-a/default-deny"]} if default_deny else \
        {"ingress": [], "egress": []}
    tenants = [{"slug": "a", "namespace": "tenant-a", "namespace_exists": True, "default_deny": deny}]
    if missing:
        tenants.append({"slug": "c", "namespace": "tenant-c", "namespace_exists": False})
    return {"tenants": tenants, "pairs_total": 2, "open_pairs": list(open_pairs)}


LEVELS = [ti.tenant_isolation_pod_security({"metadata": {"name": "tenant-a", "labels": {
    "pod-security.kubernetes.io/enforce": "baseline"}}}, "baseline"),
    ti.tenant_isolation_pod_security({"metadata": {"name": "saasodoo-system", "labels": {}}}, "privileged")]
GOOD_AUDIT = {"exists": True, "events": 50, "last_event": "2024-01-01T00:00:00+00:00", "last_event_age_minutes": 1.0,
              "since_minutes": 60, "parse_errors": 0, "denied": {"total": 2, "401": 1, "403": 1}}


def checklist(**kw):
    args = dict(isolation=isolation(), pod_security_levels=LEVELS, pod_violations=[], tenant_namespaces=["tenant-a"],
                grants=[], rbac_counts={"ClusterRoleBinding": 3}, encryption={}, configmap_hits=[], audit={},
                audit_log_path="", unauthorized_threshold=10, audit_max_age_minutes=15, network_plugin="")
    args.update(kw)
    return f.security_check_checklist(**args)


def status(result):
    return dict((i["item"], i["status"]) for i in result["items"])


def test_healthy_but_invisible_is_unknown_with_low_findings():
    result = checklist()
    assert status(result) == {"Network policies enforced": "unknown", "Pod security policies active": "pass",
                              "RBAC permissions correct": "pass", "Secrets properly encrypted": "unknown",
                              "No unauthorized access attempts": "unknown", "Audit logs collecting": "unknown"}
    assert {x["severity"] for x in result["findings"]} == {"low"}
    assert sorted(x["code"] for x in result["findings"]) == [
        "SECURITY_AUDIT_LOG_NOT_DECLARED", "SECURITY_NETPOL_ENFORCEMENT_UNVERIFIED",
        "SECURITY_SECRETS_ENCRYPTION_NOT_VISIBLE", "SECURITY_UNAUTHORIZED_NOT_VERIFIABLE"]
    assert result["summary"] == {"pass": 2, "fail": 0, "unknown": 4}


def test_everything_declared_and_fine_passes():
    result = checklist(network_plugin="calico", encryption={"enabled": True, "provider": "aescbc"},
                       audit=GOOD_AUDIT, audit_log_path="/var/log/audit.log")
    assert set(status(result).values()) == {"pass"} and result["findings"] == []
    secrets = [i for i in result["items"] if i["item"] == "Secrets properly encrypted"][0]
    assert "declared in the inventory (not verified by the runbook): provider=aescbc" in secrets["evidence"][0]


def test_failures_per_item():
    grant = f.security_check_rbac([crb("oops", "cluster-admin", [sa("tenant-a")])], ROLES, ["tenant-a"])
    pair = {"from": "a", "to": "b", "from_namespace": "tenant-a", "to_namespace": "tenant-b",
            "path": {"from_pod": "p", "to_pod": "q", "egress": {"allowed_by": ["tenant-a/x"]}, "ingress": {}}}
    weak = [ti.tenant_isolation_pod_security({"metadata": {"name": "tenant-a", "labels": {}}}, "baseline")]
    result = checklist(isolation=isolation(default_deny=False, open_pairs=[pair], missing=True),
                       pod_security_levels=weak,
                       pod_violations=[{"pod": "tenant-a/evil", "namespace": "tenant-a", "what": ["privileged"],
                                        "details": ["container c is privileged"], "allowed": []}],
                       grants=grant, encryption={"enabled": False},
                       configmap_hits=[{"configmap": "tenant-a/cfg", "namespace": "tenant-a", "keys": ["PASSWORD"]}],
                       audit=dict(GOOD_AUDIT, last_event_age_minutes=600.0,
                                  denied={"total": 12, "401": 12, "403": 0, "by_user": [{"user": "x", "count": 12}],
                                          "by_source_ip": [{"ip": "10.0.0.9", "count": 12}]}),
                       audit_log_path="/var/log/audit.log")
    assert set(status(result).values()) == {"fail"}
    codes = [(x["code"], x["severity"]) for x in result["findings"]]
    assert codes == [
        ("SECURITY_PRIVILEGED_POD", "critical"), ("SECURITY_RBAC_TENANT_BROAD_GRANT", "critical"),
        ("SECURITY_TENANT_PAIR_OPEN", "critical"), ("SECURITY_NO_DEFAULT_DENY", "high"),
        ("SECURITY_POD_SECURITY_LEVEL", "high"), ("SECURITY_SECRETS_NOT_ENCRYPTED", "high"),
        ("SECURITY_SECRET_IN_CONFIGMAP", "high"), ("SECURITY_UNAUTHORIZED_ATTEMPTS", "high"),
        ("SECURITY_AUDIT_LOG_STALE", "medium"), ("SECURITY_NETPOL_ENFORCEMENT_UNVERIFIED", "low")]
    rbac = [x for x in result["findings"] if x["code"] == "SECURITY_RBAC_TENANT_BROAD_GRANT"][0]
    assert rbac["message"] == ("ClusterRoleBinding/oops grants ClusterRole/cluster-admin (ClusterRole cluster-admin) "
                               "to ServiceAccount tenant-a/default cluster-wide")
    network = [i for i in result["items"] if i["item"] == "Network policies enforced"][0]
    assert "tenant-c: namespace missing (not provisioned), not judged" in network["evidence"]


def test_declared_audit_log_that_is_missing():
    result = checklist(audit={"exists": False, "error": None}, audit_log_path="/nowhere/audit.log")
    assert status(result)["Audit logs collecting"] == "fail"
    assert status(result)["No unauthorized access attempts"] == "unknown"
    missing = [x for x in result["findings"] if x["code"] == "SECURITY_AUDIT_LOG_MISSING"][0]
    assert missing["severity"] == "high" and "/nowhere/audit.log" in missing["message"]


@pytest.mark.parametrize("total, fails", [(9, False), (10, True)])
def test_unauthorized_threshold(total, fails):
    audit = dict(GOOD_AUDIT, denied={"total": total, "401": total, "403": 0, "by_user": [], "by_source_ip": []})
    result = checklist(audit=audit, audit_log_path="/var/log/audit.log", network_plugin="calico",
                       encryption={"enabled": True})
    assert (status(result)["No unauthorized access attempts"] == "fail") is fails
