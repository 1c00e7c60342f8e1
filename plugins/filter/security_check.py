"""The troubleshooting guide's Security Check, item by item, as pure functions on what the cluster
(and the inventory) show: RBAC grants, pods' host access, Secrets in plain sight, and the checklist
itself (pass / fail / unknown, with evidence). Nothing here reads or changes anything; the runbook
security_check.yml reads the objects and passes them in. Unit-tested in
tests/unit/test_security_check_filter.py.
"""

from __future__ import annotations

import re

DOCUMENTATION = """
name: security_check
short_description: Security checklist decisions for the security_check runbook
description:
  - C(security_check_rbac) finds the (Cluster)RoleBindings that grant cluster-admin or wildcard rules to tenant
    ServiceAccounts or to everyone (system:authenticated, system:unauthenticated, system:anonymous).
  - C(security_check_pods) finds privileged containers and host access (hostNetwork, hostPID, hostIPC, hostPath) in
    the given namespaces, minus what the inventory allows.
  - C(security_check_configmap_secrets) finds ConfigMap keys that look like credentials (never their values).
  - C(security_check_checklist) builds the six checklist items and their findings.
"""

SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
HOST_FIELDS = ("hostNetwork", "hostPID", "hostIPC")


def _get(obj, *path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _finding(code, severity, message, evidence, ref=None, tenant=None, component=None):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence, "ref": ref,
            "tenant": tenant, "component": component}


# ---------------------------------------------------------------------------------------------
# RBAC


def security_check_broad_rules(rules):
    """The rules of a role that grant everything somewhere: a '*' verb, or '*' resources (of any
    group), or '*' non-resource URLs with a '*' verb. Returned as short strings."""
    out = []
    for rule in rules or []:
        verbs = rule.get("verbs") or []
        resources = rule.get("resources") or []
        urls = rule.get("nonResourceURLs") or []
        if "*" in verbs or "*" in resources:
            what = ("nonResourceURLs %s" % urls) if urls and not resources else "resources %s in apiGroups %s" % (
                resources, rule.get("apiGroups") or [""])
            out.append("verbs %s on %s" % (verbs, what))
    return out


def _subjects(binding):
    """(kind, namespace, name) of each subject; a ServiceAccount without namespace is the binding's."""
    ns = _get(binding, "metadata", "namespace")
    out = []
    for s in binding.get("subjects") or []:
        kind, name = s.get("kind"), s.get("name")
        sns = s.get("namespace") or (ns if kind == "ServiceAccount" else None)
        out.append((kind, sns, name))
    return out


def security_check_rbac(bindings, roles, tenant_namespaces, public_groups=None, public_users=None):
    """Grants of cluster-admin or wildcard rules to tenant ServiceAccounts or to everyone.

    ``bindings``: ClusterRoleBinding and RoleBinding objects (``kind`` set). ``roles``: ClusterRole and
    Role objects (``kind`` set). ``tenant_namespaces``: the tenants' namespaces. A tenant subject is a
    ServiceAccount of a tenant namespace, the group system:serviceaccounts:<tenant namespace>, or
    system:serviceaccounts (every ServiceAccount). A public subject is one of ``public_groups`` /
    ``public_users``.
    Returns [{binding, scope, role, subject, tenant_namespace, public, why, severity}]:
    critical for a cluster-wide grant, for a grant in another tenant's namespace and for any public
    grant; high for a grant limited to the tenant's own namespace.
    """
    tenant_namespaces = set(tenant_namespaces or [])
    public_groups = set(public_groups if public_groups is not None else
                        ["system:authenticated", "system:unauthenticated"])
    public_users = set(public_users if public_users is not None else ["system:anonymous"])
    by_ref = {}
    for role in roles or []:
        by_ref[(role.get("kind"), _get(role, "metadata", "namespace") or "", _get(role, "metadata", "name"))] = role
    out = []
    for binding in bindings or []:
        kind = binding.get("kind")
        ns = _get(binding, "metadata", "namespace") or ""
        role_ref = binding.get("roleRef") or {}
        ref_kind, ref_name = role_ref.get("kind"), role_ref.get("name")
        role = by_ref.get((ref_kind, ns if ref_kind == "Role" else "", ref_name))
        if ref_name == "cluster-admin" and ref_kind == "ClusterRole":
            why = ["ClusterRole cluster-admin"]
        else:
            why = security_check_broad_rules((role or {}).get("rules"))
        if not why:
            continue
        name = "%s/%s" % (kind, ("%s/%s" % (ns, _get(binding, "metadata", "name"))) if ns else
                          _get(binding, "metadata", "name"))
        scope = "cluster" if kind == "ClusterRoleBinding" else "namespace %s" % ns
        for skind, sns, sname in _subjects(binding):
            tenant_ns = None
            if skind == "ServiceAccount" and sns in tenant_namespaces:
                tenant_ns = sns
            elif skind == "Group" and sname.startswith("system:serviceaccounts:") and \
                    sname[len("system:serviceaccounts:"):] in tenant_namespaces:
                tenant_ns = sname[len("system:serviceaccounts:"):]
            elif skind == "Group" and sname == "system:serviceaccounts":
                tenant_ns = "*"
            public = (skind == "Group" and sname in public_groups) or (skind == "User" and sname in public_users)
            if tenant_ns is None and not public:
                continue
            own = kind == "RoleBinding" and tenant_ns == ns
            subject = "%s %s" % (skind, ("%s/%s" % (sns, sname)) if skind == "ServiceAccount" else sname)
            out.append({"binding": name, "scope": scope, "role": "%s/%s" % (ref_kind, ref_name), "subject": subject,
                        "tenant_namespace": tenant_ns, "public": public, "why": why,
                        "severity": "high" if own and not public else "critical"})
    return sorted(out, key=lambda g: (SEVERITY_ORDER[g["severity"]], g["binding"], g["subject"]))


# ---------------------------------------------------------------------------------------------
# Pods


def _allowed(rule, pod, what):
    if rule.get("namespace") and rule["namespace"] != _get(pod, "metadata", "namespace"):
        return False
    if rule.get("name_prefix") and not (_get(pod, "metadata", "name") or "").startswith(rule["name_prefix"]):
        return False
    labels = _get(pod, "metadata", "labels") or {}
    if any(labels.get(k) != v for k, v in (rule.get("labels") or {}).items()):
        return False
    return what in (rule.get("allow") or [])


def security_check_pods(pods, namespaces, allowed=None):
    """Privileged containers and host access in the pods of ``namespaces``.

    Looks at every container (init and ephemeral too): securityContext.privileged; and at the pod:
    hostNetwork, hostPID, hostIPC, hostPath volumes. ``allowed``: [{namespace, name_prefix, labels,
    allow: [privileged|hostNetwork|hostPID|hostIPC|hostPath], why}] - what the inventory accepts.
    Returns [{pod, namespace, what: [..], details: [..], allowed: [..]}] for pods with anything not allowed.
    """
    namespaces = set(namespaces or [])
    out = []
    for pod in pods or []:
        ns = _get(pod, "metadata", "namespace")
        if ns not in namespaces or _get(pod, "status", "phase") in ("Succeeded", "Failed"):
            continue
        spec = pod.get("spec") or {}
        found = []
        for key in ("initContainers", "containers", "ephemeralContainers"):
            for c in spec.get(key) or []:
                if _get(c, "securityContext", "privileged"):
                    found.append(("privileged", "container %s is privileged" % c.get("name")))
        for field in HOST_FIELDS:
            if spec.get(field):
                found.append((field, "%s: true" % field))
        for v in spec.get("volumes") or []:
            if v.get("hostPath"):
                found.append(("hostPath", "volume %s mounts hostPath %s" % (v.get("name"), _get(v, "hostPath", "path"))))
        bad = [(w, d) for w, d in found if not any(_allowed(r, pod, w) for r in allowed or [])]
        if bad:
            out.append({"pod": "%s/%s" % (ns, _get(pod, "metadata", "name")), "namespace": ns,
                        "what": sorted(set(w for w, _ in bad)), "details": [d for _, d in bad],
                        "allowed": [d for w, d in found if (w, d) not in bad]})
    return sorted(out, key=lambda p: p["pod"])


# ---------------------------------------------------------------------------------------------
# ConfigMaps


def security_check_configmap_secrets(configmaps, namespaces, pattern):
    """ConfigMap keys in ``namespaces`` whose name matches ``pattern`` (credentials kept in plain
    ConfigMaps, which encryption at rest of Secrets does not cover). Keys only, never values."""
    rx = re.compile(pattern)
    namespaces = set(namespaces or [])
    out = []
    for cm in configmaps or []:
        ns = _get(cm, "metadata", "namespace")
        if ns not in namespaces:
            continue
        keys = sorted(k for k in list((cm.get("data") or {}).keys()) + list((cm.get("binaryData") or {}).keys())
                      if rx.search(k))
        if keys:
            out.append({"configmap": "%s/%s" % (ns, _get(cm, "metadata", "name")), "namespace": ns, "keys": keys})
    return sorted(out, key=lambda c: c["configmap"])


# ---------------------------------------------------------------------------------------------
# The checklist


def _item(name, findings, evidence, unknown=False):
    serious = [f for f in findings if f["severity"] != "low"]
    status = "fail" if serious else ("unknown" if unknown else "pass")
    return {"item": name, "status": status, "evidence": evidence, "findings": [f["code"] for f in findings]}


def _network_item(isolation, tenant_namespaces_missing, network_plugin):
    findings, evidence = [], []
    tenants = (isolation or {}).get("tenants") or []
    for t in tenants:
        if not t.get("namespace_exists"):
            continue
        deny = t.get("default_deny") or {}
        lacking = [d for d in ("ingress", "egress") if not deny.get(d)]
        if lacking:
            findings.append(_finding(
                "SECURITY_NO_DEFAULT_DENY", "high",
                "Tenant namespace %s has no default-deny NetworkPolicy for %s" % (t["namespace"], " and ".join(lacking)),
                ["policies denying all ingress: %s" % (", ".join(deny.get("ingress") or []) or "none"),
                 "policies denying all egress: %s" % (", ".join(deny.get("egress") or []) or "none")],
                "Namespace/%s" % t["namespace"], tenant=t.get("slug")))
        else:
            evidence.append("%s: default-deny for ingress (%s) and egress (%s)" % (
                t["namespace"], ", ".join(deny["ingress"]), ", ".join(deny["egress"])))
    for ns in tenant_namespaces_missing or []:
        evidence.append("%s: namespace missing (not provisioned), not judged" % ns)
    open_pairs = (isolation or {}).get("open_pairs") or []
    for p in open_pairs:
        path = p.get("path") or {}
        findings.append(_finding(
            "SECURITY_TENANT_PAIR_OPEN", "critical",
            "Tenant %s can reach tenant %s (pod %s -> %s) under the NetworkPolicies in place" % (
                p["from"], p["to"], path.get("from_pod"), path.get("to_pod")),
            ["egress allowed by %s" % (", ".join(_get(path, "egress", "allowed_by") or []) or "no restriction"),
             "ingress allowed by %s" % (", ".join(_get(path, "ingress", "allowed_by") or []) or "no restriction")],
            "%s->%s" % (p["from_namespace"], p["to_namespace"]), tenant=p["from"]))
    evidence.append("%d tenant pair(s) evaluated on the real pods: %s" % (
        (isolation or {}).get("pairs_total", 0), "all isolated" if not open_pairs else "%d open" % len(open_pairs)))
    if network_plugin:
        evidence.append("network plugin enforcing NetworkPolicies (declared in the inventory): %s" % network_plugin)
    else:
        evidence.append("enforcement: not declared (security_check_network_plugin), not visible through the API")
        findings.append(_finding(
            "SECURITY_NETPOL_ENFORCEMENT_UNVERIFIED", "low",
            "The NetworkPolicy objects were judged; whether the cluster's network plugin enforces them is not visible "
            "to the runbook and the inventory does not declare it (security_check_network_plugin)",
            ["NetworkPolicies only isolate where the network plugin implements them"]))
    return _item("Network policies enforced", findings, evidence, unknown=not network_plugin), findings


def _pod_security_item(levels, pods, tenant_namespaces):
    findings, evidence = [], []
    for lvl in levels or []:
        ns = lvl["namespace"]
        tenant = ns in tenant_namespaces
        label = lvl["enforce"] if lvl.get("labelled") else "%s (no enforce label: cluster default)" % lvl["enforce"]
        if lvl["ok"]:
            evidence.append("%s: Pod Security enforce %s (minimum %s)" % (ns, label, lvl["minimum"]))
        else:
            findings.append(_finding(
                "SECURITY_POD_SECURITY_LEVEL", "high" if tenant else "medium",
                "Namespace %s enforces Pod Security level %s, below the required %s" % (ns, label, lvl["minimum"]),
                ["labels: %s" % (lvl.get("labels") or {})], "Namespace/%s" % ns))
    for p in pods or []:
        tenant = p["namespace"] in tenant_namespaces
        privileged = "privileged" in p["what"]
        findings.append(_finding(
            "SECURITY_PRIVILEGED_POD" if privileged else "SECURITY_HOST_ACCESS_POD",
            "critical" if privileged and tenant else ("high" if privileged or tenant else "medium"),
            "Pod %s has %s, which the inventory does not allow" % (p["pod"], ", ".join(p["what"])),
            p["details"], "Pod/%s" % p["pod"]))
    if not pods:
        evidence.append("no privileged container, hostNetwork/hostPID/hostIPC or hostPath outside the allowed list")
    return _item("Pod security policies active", findings, evidence), findings


def _rbac_item(grants, counts):
    findings = []
    for g in grants or []:
        code = "SECURITY_RBAC_PUBLIC_BROAD_GRANT" if g["public"] else "SECURITY_RBAC_TENANT_BROAD_GRANT"
        findings.append(_finding(
            code, g["severity"],
            "%s grants %s (%s) to %s%s" % (g["binding"], g["role"], "; ".join(g["why"]), g["subject"],
                                           " cluster-wide" if g["scope"] == "cluster" else " in " + g["scope"]),
            ["binding: %s" % g["binding"], "role: %s" % g["role"], "subject: %s" % g["subject"]]
            + ["grants: %s" % w for w in g["why"]], g["binding"]))
    evidence = ["%s checked: %s" % (k, v) for k, v in sorted((counts or {}).items())]
    if not grants:
        evidence.append("no cluster-admin or wildcard grant to a tenant ServiceAccount or to everyone")
    return _item("RBAC permissions correct", findings, evidence), findings


def _secrets_item(encryption, configmap_hits):
    findings, evidence, unknown = [], [], False
    enabled = (encryption or {}).get("enabled")
    if enabled is None:
        unknown = True
        evidence.append("encryption at rest: not declared in the inventory and not visible through the Kubernetes API")
        findings.append(_finding(
            "SECURITY_SECRETS_ENCRYPTION_NOT_VISIBLE", "low",
            "Encryption at rest of Secrets is configured on the API servers (--encryption-provider-config), which the "
            "Kubernetes API does not show, and the inventory does not declare it (security_check_secrets_encryption)",
            ["not verifiable from the API; declare it in the inventory once checked on the control plane"]))
    elif enabled:
        evidence.append("encryption at rest declared in the inventory (not verified by the runbook): %s" % (
            ", ".join("%s=%s" % (k, v) for k, v in sorted(encryption.items()) if k != "enabled") or "enabled"))
    else:
        findings.append(_finding(
            "SECURITY_SECRETS_NOT_ENCRYPTED", "high",
            "The inventory declares that Secrets are not encrypted at rest: anyone reading etcd or its backups reads them",
            ["security_check_secrets_encryption.enabled: false"]))
    for hit in configmap_hits or []:
        findings.append(_finding(
            "SECURITY_SECRET_IN_CONFIGMAP", "high",
            "ConfigMap %s holds key(s) that look like credentials (%s): ConfigMaps are never encrypted nor access-"
            "restricted like Secrets" % (hit["configmap"], ", ".join(hit["keys"])),
            ["keys: %s" % ", ".join(hit["keys"]), "values not read into the report"], "ConfigMap/%s" % hit["configmap"]))
    if not configmap_hits:
        evidence.append("no ConfigMap key of the platform or tenant namespaces looks like a credential")
    return _item("Secrets properly encrypted", findings, evidence, unknown=unknown), findings


def _audit_items(audit, declared_path, threshold, max_age_minutes):
    """The two items the audit log answers: unauthorized access attempts, and audit logs collecting."""
    f_access, f_logs, e_access, e_logs = [], [], [], []
    access_unknown = logs_unknown = False
    if not declared_path:
        logs_unknown = access_unknown = True
        e_logs.append("no API server audit log declared (security_check_audit_log_path)")
        e_access.append("refused requests cannot be counted without the audit log")
        f_logs.append(_finding(
            "SECURITY_AUDIT_LOG_NOT_DECLARED", "low",
            "The inventory declares no API server audit log (security_check_audit_log_path): whether audit logs are "
            "collected is not verifiable", ["security_check_audit_log_path is empty"]))
        f_access.append(_finding(
            "SECURITY_UNAUTHORIZED_NOT_VERIFIABLE", "low",
            "Unauthorized access attempts (401/403) cannot be counted without the API server audit log",
            ["security_check_audit_log_path is empty"]))
    elif not (audit or {}).get("exists"):
        access_unknown = True
        f_logs.append(_finding(
            "SECURITY_AUDIT_LOG_MISSING", "high",
            "The API server audit log %s declared in the inventory is not there or cannot be read%s: audit logs are not "
            "being collected where they should be"
            % (declared_path, (": %s" % audit["error"]) if (audit or {}).get("error") else ""),
            ["path: %s" % declared_path]))
        e_access.append("no audit log to read")
    else:
        age = audit.get("last_event_age_minutes")
        e_logs.append("%s: %d event(s) read, last at %s" % (declared_path, audit.get("events", 0), audit.get("last_event")))
        if age is None or age > max_age_minutes:
            f_logs.append(_finding(
                "SECURITY_AUDIT_LOG_STALE", "medium",
                "The API server audit log %s has no event in the last %d min (last: %s): audit logging may have stopped"
                % (declared_path, max_age_minutes, audit.get("last_event") or "none"),
                ["events read: %d" % audit.get("events", 0), "parse errors: %d" % audit.get("parse_errors", 0)]))
        denied = audit.get("denied") or {}
        total = denied.get("total", 0)
        e_access.append("%d request(s) refused with 401/403 in the last %s min (threshold %d)" % (
            total, audit.get("since_minutes"), threshold))
        if total >= threshold:
            top = ["%s: %d" % (u["user"], u["count"]) for u in (denied.get("by_user") or [])[:5]]
            f_access.append(_finding(
                "SECURITY_UNAUTHORIZED_ATTEMPTS", "high",
                "%d request(s) were refused by the API server (401: %d, 403: %d) in the last %s min, at or above the "
                "threshold of %d" % (total, denied.get("401", 0), denied.get("403", 0), audit.get("since_minutes"),
                                     threshold),
                top + ["source IPs: %s" % ", ".join("%s (%d)" % (s["ip"], s["count"])
                                                    for s in (denied.get("by_source_ip") or [])[:5])]))
    return ([_item("No unauthorized access attempts", f_access, e_access, unknown=access_unknown),
             _item("Audit logs collecting", f_logs, e_logs, unknown=logs_unknown)], f_access + f_logs)


def security_check_checklist(isolation, pod_security_levels, pod_violations, tenant_namespaces, grants, rbac_counts,
                             encryption, configmap_hits, audit, audit_log_path, unauthorized_threshold=10,
                             audit_max_age_minutes=15, network_plugin=""):
    """The guide's six Security Check items, each {item, status: pass|fail|unknown, evidence, findings}, and
    every finding. An item fails on a finding above low, is unknown when what it needs is not visible."""
    tenant_namespaces = set(tenant_namespaces or [])
    missing = [t["namespace"] for t in (isolation or {}).get("tenants") or [] if not t.get("namespace_exists")]
    items, findings = [], []
    for item, found in (
            _network_item(isolation, missing, network_plugin),
            _pod_security_item(pod_security_levels, pod_violations, tenant_namespaces),
            _rbac_item(grants, rbac_counts),
            _secrets_item(encryption, configmap_hits)):
        items.append(item)
        findings.extend(found)
    audit_items, found = _audit_items(audit, audit_log_path, int(unauthorized_threshold), int(audit_max_age_minutes))
    items.extend(audit_items)
    findings.extend(found)
    findings = sorted(findings, key=lambda f: (SEVERITY_ORDER[f["severity"]], f["code"], f.get("ref") or ""))
    return {"items": items, "findings": findings,
            "summary": dict((s, sum(1 for i in items if i["status"] == s)) for s in ("pass", "fail", "unknown"))}


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "security_check_broad_rules": security_check_broad_rules,
            "security_check_rbac": security_check_rbac,
            "security_check_pods": security_check_pods,
            "security_check_configmap_secrets": security_check_configmap_secrets,
            "security_check_checklist": security_check_checklist,
        }
