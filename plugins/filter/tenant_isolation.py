"""Tenant isolation, judged on the real objects: can a real pod of tenant A reach a real pod of tenant B
under the NetworkPolicies in place, does every tenant namespace deny by default, is its Pod Security
level what it should be, and what the drift between desired and live isolation objects means.

The pair evaluation works on the pods that exist (their labels, their IPs, hostNetwork), not on
the label sets the templates should give them (that is ``netpol_isolation`` in netpol.py, which
reapply_netpol uses to predict). Selector semantics and policyTypes defaulting come from netpol.py,
so both agree on what a policy selects. What this adds, per the Kubernetes API
(networking.k8s.io/v1):

- ``ipBlock`` peers are matched against the real pod IPs (``status.podIP``/``podIPs``) minus
  ``except``: an egress rule to 0.0.0.0/0 lets a pod reach other pods' IPs on plugins that apply
  ipBlocks to pod traffic (most do), so it counts;
- pods with ``hostNetwork: true`` are not subject to NetworkPolicies at all (neither their egress
  nor their ingress is restricted), and as a peer they are not matched by pod or namespace
  selectors, only by rules without peers or by an ipBlock (their IP is the node's; unknown here,
  so any ipBlock is assumed to cover it);
- ports are not considered: reachable on one port is reachable.

Every decision is unit-tested without a cluster (tests/unit/test_tenant_isolation_filter.py).
"""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path

DOCUMENTATION = """
name: tenant_isolation
short_description: Tenant isolation on the real pods and policies, and its findings
description:
  - C(tenant_isolation_pod) turns a Pod object into the peer the evaluation uses (namespace, name, labels, IPs,
    hostNetwork).
  - C(tenant_isolation_allows) says whether one real pod may reach another under the NetworkPolicies, and why.
  - C(tenant_isolation_pairs) evaluates every ordered pair of tenants (A -> B) on their real pods (plus, optionally,
    a probe pod standing for a pod created tomorrow) and says which pairs are open and through which policies.
  - C(tenant_isolation_default_deny) lists the policies of a namespace that deny all ingress / all egress.
  - C(tenant_isolation_pod_security) reads a namespace's Pod Security admission labels and compares the enforced
    level with a minimum.
  - C(tenant_isolation_findings) turns the drift (netpol_drift_tenants), the pairs and the Pod Security levels into
    findings with stable codes.
  - C(tenant_isolation_plan) decides which tenants tenant_isolation.yml reapplies (capped) and what it hands over.
  - C(tenant_isolation_audit) does all of it from the rendered desired objects and the live objects by kind.
"""

_spec = importlib.util.spec_from_file_location("saasodoo_netpol_semantics", Path(__file__).resolve().parent / "netpol.py")
_netpol = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_netpol)

selector_matches = _netpol.netpol_selector_matches
policy_types = _netpol.policy_types
NAME_LABEL = _netpol.NAME_LABEL

PSA_LEVELS = ("privileged", "baseline", "restricted")
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
PSA_MODES = ("enforce", "enforce-version", "warn", "warn-version", "audit", "audit-version")
FINISHED = ("Succeeded", "Failed")
PROBE_NAME = "(any new pod)"


def _get(obj, *path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _ref(policy):
    return "%s/%s" % (_get(policy, "metadata", "namespace"), _get(policy, "metadata", "name"))


# ---------------------------------------------------------------------------------------------
# Pods and namespaces


def tenant_isolation_pod(pod):
    """The peer the evaluation needs from a Pod object: {namespace, name, labels, ips, host_network}."""
    status = pod.get("status") or {}
    ips = [i.get("ip") for i in status.get("podIPs") or [] if isinstance(i, dict) and i.get("ip")]
    if status.get("podIP") and status["podIP"] not in ips:
        ips.insert(0, status["podIP"])
    return {
        "namespace": _get(pod, "metadata", "namespace"),
        "name": _get(pod, "metadata", "name"),
        "labels": dict(_get(pod, "metadata", "labels") or {}),
        "ips": ips,
        "host_network": bool(_get(pod, "spec", "hostNetwork")),
    }


def _namespace_labels(namespaces):
    """{name: labels (with kubernetes.io/metadata.name)} from Namespace objects or a {name: labels} dict."""
    out = {}
    items = namespaces.items() if isinstance(namespaces, dict) else (
        (_get(ns, "metadata", "name"), _get(ns, "metadata", "labels")) for ns in namespaces or [])
    for name, labels in items:
        if name:
            out[name] = dict(labels or {}, **{NAME_LABEL: name})
    return out


# ---------------------------------------------------------------------------------------------
# Reachability of one pod from another


def _in_block(block, ips):
    """Whether one of the IPs is inside an ipBlock (cidr minus except). Unparseable blocks never match."""
    try:
        cidr = ipaddress.ip_network(block.get("cidr"), strict=False)
        excepts = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or []]
    except (TypeError, ValueError):
        return False
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if addr.version == cidr.version and addr in cidr and not any(
                addr.version == e.version and addr in e for e in excepts):
            return True
    return False


def _peer_matches(peer, policy_namespace, pod, ns_labels):
    """Whether one entry of a rule's from/to matches a pod."""
    if not isinstance(peer, dict):
        return False
    if "ipBlock" in peer:
        block = peer.get("ipBlock") or {}
        # A host-network pod speaks with its node's IP, which we do not know: assume covered.
        return bool(pod.get("host_network")) or _in_block(block, pod.get("ips") or [])
    if pod.get("host_network"):
        return False  # selectors match pod-network pods only
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    if pod_sel is None and ns_sel is None:
        return False
    if ns_sel is None:
        in_scope = pod["namespace"] == policy_namespace
    else:
        in_scope = selector_matches(ns_sel, ns_labels.get(pod["namespace"], {NAME_LABEL: pod["namespace"]}))
    return in_scope and (pod_sel is None or selector_matches(pod_sel, pod.get("labels") or {}))


def _direction(policies, pod, peer, direction, ns_labels):
    """Ingress into ``pod`` from ``peer`` (or egress of ``pod`` to ``peer``)."""
    if pod.get("host_network"):
        return {"isolated": False, "allowed": True, "selected_by": [], "allowed_by": [],
                "note": "hostNetwork pod: NetworkPolicies do not apply to it"}
    key, rule_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies
                 if _get(p, "metadata", "namespace") == pod["namespace"]
                 and direction in policy_types(p)
                 and selector_matches((p.get("spec") or {}).get("podSelector", {}), pod.get("labels") or {})]
    if not selecting:
        return {"isolated": False, "allowed": True, "selected_by": [], "allowed_by": []}
    allowed_by = []
    for policy in selecting:
        for rule in (policy.get("spec") or {}).get(key) or []:
            peers = (rule or {}).get(rule_key)
            if not peers or any(_peer_matches(p, _get(policy, "metadata", "namespace"), peer, ns_labels)
                                for p in peers):
                allowed_by.append(_ref(policy))
                break
    return {"isolated": True, "allowed": bool(allowed_by), "selected_by": sorted(_ref(p) for p in selecting),
            "allowed_by": sorted(allowed_by)}


def tenant_isolation_allows(source, destination, policies, namespaces=None):
    """Can pod ``source`` reach pod ``destination``? Pods as tenant_isolation_pod gives them (or Pod objects).

    Returns {allowed, egress: {isolated, allowed, selected_by, allowed_by}, ingress: {...}}: traffic flows when
    the source's egress and the destination's ingress both allow it.
    """
    source = source if "metadata" not in source else tenant_isolation_pod(source)
    destination = destination if "metadata" not in destination else tenant_isolation_pod(destination)
    ns_labels = _namespace_labels(namespaces or [])
    policies = policies or []
    egress = _direction(policies, source, destination, "Egress", ns_labels)
    ingress = _direction(policies, destination, source, "Ingress", ns_labels)
    return {"allowed": egress["allowed"] and ingress["allowed"], "egress": egress, "ingress": ingress}


# ---------------------------------------------------------------------------------------------
# Every pair of tenants


def _probe(namespace):
    """A pod created tomorrow in the namespace, with no labels and an IP nobody's ipBlock names."""
    return {"namespace": namespace, "name": PROBE_NAME, "labels": {}, "ips": [], "host_network": False,
            "probe": True}


def tenant_isolation_pairs(tenants, pods, policies, namespaces=None, probe=True):
    """Every ordered pair (A -> B) of distinct tenants, judged on their real pods.

    ``tenants``: [{slug, namespace}]. ``pods``: Pod objects (any namespaces; finished pods are left
    out). With ``probe``, each side also gets a pod without labels standing for a pod created later,
    so that a namespace without pods is still judged and a missing default-deny shows. A pair is
    open when some pod of A can reach some pod of B. Per pair: from, to, from_namespace,
    to_namespace, open, pods_from, pods_to (real pods), evaluated (pod pairs tried), open_paths, and
    for an open pair ``path`` (the first open one: from_pod, to_pod, egress, ingress).
    """
    ns_labels = _namespace_labels(namespaces or [])
    policies = policies or []
    by_ns = {}
    for pod in pods or []:
        if (pod.get("status") or {}).get("phase") in FINISHED:
            continue
        peer = tenant_isolation_pod(pod)
        by_ns.setdefault(peer["namespace"], []).append(peer)
    sides = {}
    for t in tenants or []:
        real = sorted(by_ns.get(t["namespace"], []), key=lambda p: p["name"] or "")
        sides[t["slug"]] = (real, real + ([_probe(t["namespace"])] if probe else []))
    pairs = []
    for a in tenants or []:
        for b in tenants or []:
            if a["slug"] == b["slug"]:
                continue
            real_a, cand_a = sides[a["slug"]]
            real_b, cand_b = sides[b["slug"]]
            entry = {"from": a["slug"], "to": b["slug"], "from_namespace": a["namespace"],
                     "to_namespace": b["namespace"], "open": False, "pods_from": len(real_a),
                     "pods_to": len(real_b), "evaluated": 0, "open_paths": 0}
            for src in cand_a:
                for dst in cand_b:
                    entry["evaluated"] += 1
                    verdict = tenant_isolation_allows(src, dst, policies, ns_labels)
                    if verdict["allowed"]:
                        entry["open_paths"] += 1
                        if not entry["open"]:
                            entry["open"] = True
                            entry["path"] = {"from_pod": src["name"], "to_pod": dst["name"],
                                             "egress": verdict["egress"], "ingress": verdict["ingress"]}
            pairs.append(entry)
    return pairs


def tenant_isolation_default_deny(policies, namespace):
    """The policies of ``namespace`` that deny all ingress / all egress of every pod (podSelector {}, the
    direction in policyTypes, no rule for it): {ingress: [refs], egress: [refs]}."""
    out = {"ingress": [], "egress": []}
    for policy in policies or []:
        if _get(policy, "metadata", "namespace") != namespace:
            continue
        spec = policy.get("spec") or {}
        selector = spec.get("podSelector") or {}
        if selector.get("matchLabels") or selector.get("matchExpressions"):
            continue
        types = policy_types(policy)
        if "Ingress" in types and not spec.get("ingress"):
            out["ingress"].append(_ref(policy))
        if "Egress" in types and not spec.get("egress"):
            out["egress"].append(_ref(policy))
    return {"ingress": sorted(out["ingress"]), "egress": sorted(out["egress"])}


def tenant_isolation_pod_security(namespace, minimum="baseline"):
    """A namespace's Pod Security admission labels and whether the enforced level is at least ``minimum``.

    ``namespace``: a Namespace object, or its labels. No enforce label means the cluster default, which
    is privileged unless the API server's admission configuration says otherwise (not visible here).
    Returns {namespace, enforce, labelled, labels, minimum, ok}.
    """
    if minimum not in PSA_LEVELS:
        raise ValueError("tenant_isolation_pod_security: minimum must be one of %s, not %r" % (
            ", ".join(PSA_LEVELS), minimum))
    if isinstance(namespace, dict) and "metadata" in namespace:
        name, labels = _get(namespace, "metadata", "name"), _get(namespace, "metadata", "labels") or {}
    else:
        name, labels = None, namespace or {}
    psa = dict((k[len("pod-security.kubernetes.io/"):], v) for k, v in labels.items()
               if k.startswith("pod-security.kubernetes.io/") and k[len("pod-security.kubernetes.io/"):] in PSA_MODES)
    enforce = psa.get("enforce")
    level = enforce if enforce in PSA_LEVELS else "privileged"
    return {"namespace": name, "enforce": level, "labelled": enforce is not None, "labels": psa,
            "minimum": minimum, "ok": PSA_LEVELS.index(level) >= PSA_LEVELS.index(minimum)}


# ---------------------------------------------------------------------------------------------
# Findings


def _finding(code, severity, message, evidence, tenant=None, ref=None, remediation=None):
    out = {"code": code, "severity": severity, "message": message, "evidence": evidence, "component": None,
           "tenant": tenant, "ref": ref}
    if remediation:
        out["remediation"] = remediation
    return out


def _describe_side(side, name):
    if side.get("note"):
        return "%s: %s" % (name, side["note"])
    if not side.get("isolated"):
        return "%s: not restricted by any policy" % name
    return "%s: allowed by %s" % (name, ", ".join(side.get("allowed_by") or []))


def tenant_isolation_findings(drift, pairs, pod_security=None):
    """Findings from the drift (netpol_drift_tenants entries), the pairs (tenant_isolation_pairs) and the
    tenants' Pod Security (tenant_isolation_pod_security results keyed by slug).

    Codes: TENANT_NAMESPACE_MISSING (high), TENANT_DEFAULT_DENY_MISSING (high), TENANT_NETPOL_MISSING (high),
    TENANT_NETPOL_CHANGED (high), TENANT_NETPOL_EXTRA (medium), TENANT_QUOTA_MISSING (high), TENANT_QUOTA_DRIFT
    (medium), TENANT_LIMITRANGE_DRIFT (medium), TENANT_POD_SECURITY_WEAKENED (high), TENANT_NAMESPACE_LABELS_DRIFT
    (medium), TENANT_PAIR_OPEN (critical: tenants can reach each other, the guide's security breach).
    """
    findings = []
    pod_security = pod_security or {}
    for t in drift or []:
        slug, ns = t.get("slug"), t.get("namespace")
        if not t.get("namespace_exists"):
            findings.append(_finding(
                "TENANT_NAMESPACE_MISSING", "high",
                "Tenant %s has no namespace %s: nothing isolates it because it is not provisioned" % (slug, ns),
                ["namespace %s not found" % ns], slug, "Namespace/%s" % ns,
                "tenant_provisioning.yml (provision_tenant)"))
            continue
        missing = list(t.get("missing") or [])
        changed = list(t.get("changed") or [])
        deny = [r for r in missing if r.startswith("NetworkPolicy/") and r.endswith("/default-deny")]
        policies = [r for r in missing if r.startswith("NetworkPolicy/") and r not in deny]
        if deny:
            findings.append(_finding(
                "TENANT_DEFAULT_DENY_MISSING", "high",
                "Tenant %s: NetworkPolicy default-deny is missing from %s, so pods no other policy selects are "
                "not isolated" % (slug, ns), deny, slug, deny[0], "reapply_netpol"))
        if policies:
            findings.append(_finding(
                "TENANT_NETPOL_MISSING", "high",
                "Tenant %s: %d NetworkPolicy(ies) missing from %s" % (slug, len(policies), ns),
                policies, slug, policies[0], "reapply_netpol"))
        for c in changed:
            kind, ref = c.get("kind"), c.get("ref")
            if kind == "NetworkPolicy":
                findings.append(_finding(
                    "TENANT_NETPOL_CHANGED", "high",
                    "Tenant %s: %s differs from its desired spec" % (slug, ref),
                    {"before": c.get("before"), "after": c.get("after")}, slug, ref, "reapply_netpol"))
            elif kind == "ResourceQuota":
                findings.append(_finding(
                    "TENANT_QUOTA_DRIFT", "medium",
                    "Tenant %s: %s does not hold the tier's limits" % (slug, ref),
                    {"before": c.get("before"), "after": c.get("after")}, slug, ref, "reapply_netpol"))
            elif kind == "LimitRange":
                findings.append(_finding(
                    "TENANT_LIMITRANGE_DRIFT", "medium",
                    "Tenant %s: %s does not hold the tier's container defaults" % (slug, ref),
                    {"before": c.get("before"), "after": c.get("after")}, slug, ref, "reapply_netpol"))
            elif kind == "Namespace":
                before, after = c.get("before") or {}, c.get("after") or {}
                keys = sorted(k for k in after if before.get(k) != after.get(k))
                psa = [k for k in keys if k.startswith("pod-security.kubernetes.io/")]
                other = [k for k in keys if k not in psa]
                evidence = ["%s: %s (desired %s)" % (k, before.get(k), after.get(k)) for k in keys]
                sec = pod_security.get(slug)
                if psa and (sec is None or not sec.get("ok")):
                    findings.append(_finding(
                        "TENANT_POD_SECURITY_WEAKENED", "high",
                        "Tenant %s: namespace %s enforces Pod Security level %s, below the desired %s" % (
                            slug, ns, (sec or {}).get("enforce", before.get(PSA_ENFORCE) or "privileged"),
                            after.get(PSA_ENFORCE)),
                        evidence, slug, ref, "reapply_netpol"))
                    psa = []
                if psa or other:
                    findings.append(_finding(
                        "TENANT_NAMESPACE_LABELS_DRIFT", "medium",
                        "Tenant %s: namespace %s labels differ from the desired ones: %s" % (
                            slug, ns, ", ".join(psa + other)),
                        [e for e in evidence if e.split(":")[0] in psa + other], slug, ref, "reapply_netpol"))
        for ref in missing:
            if ref.startswith("ResourceQuota/"):
                findings.append(_finding(
                    "TENANT_QUOTA_MISSING", "high",
                    "Tenant %s: ResourceQuota missing from %s, so its resource limits are not applied" % (slug, ns),
                    [ref], slug, ref, "reapply_netpol"))
            elif ref.startswith("LimitRange/"):
                findings.append(_finding(
                    "TENANT_LIMITRANGE_DRIFT", "medium",
                    "Tenant %s: LimitRange missing from %s, so its containers get no default limits" % (slug, ns),
                    [ref], slug, ref, "reapply_netpol"))
            elif ref.startswith("Namespace/"):
                pass  # namespace_exists covers it
        if t.get("extra"):
            findings.append(_finding(
                "TENANT_NETPOL_EXTRA", "medium",
                "Tenant %s: %d NetworkPolicy(ies) in %s are not in the desired set: %s" % (
                    slug, len(t["extra"]), ns, ", ".join(r.split("/")[-1] for r in t["extra"])),
                list(t["extra"]), slug, t["extra"][0], "reapply_netpol with removal of extra policies"))
    for p in pairs or []:
        if not p.get("open"):
            continue
        path = p.get("path") or {}
        findings.append(_finding(
            "TENANT_PAIR_OPEN", "critical",
            "Tenant %s can reach tenant %s: pod %s/%s may connect to pod %s/%s under the NetworkPolicies in place" % (
                p["from"], p["to"], p["from_namespace"], path.get("from_pod"), p["to_namespace"], path.get("to_pod")),
            ["%d of %d pod pair(s) open" % (p.get("open_paths", 0), p.get("evaluated", 0)),
             _describe_side(path.get("egress") or {}, "egress of %s" % p["from"]),
             _describe_side(path.get("ingress") or {}, "ingress of %s" % p["to"])],
            p["from"], "%s->%s" % (p["from_namespace"], p["to_namespace"]),
            "reapply_netpol (extra policies removed); guide: Security breach, escalate"))
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    return sorted(findings, key=lambda f: (order[f["severity"]], f["code"], f.get("tenant") or "", f.get("ref") or ""))


def _ref_of(obj):
    ns, name = _get(obj, "metadata", "namespace"), _get(obj, "metadata", "name")
    return "%s/%s/%s" % (obj.get("kind"), ns, name) if ns else "%s/%s" % (obj.get("kind"), name)


def tenant_isolation_audit(desired, objects, probe=True):
    """The whole audit from the desired isolation of each tenant and the live objects.

    ``desired``: [{slug, tier, namespace, pod_security (the desired enforce level), manifests}] as
    the tenant_isolation_audit role renders them. ``objects``: the live objects as saasodoo_k8s_lists
    returns them: {namespaces, networkpolicies, resourcequotas, limitranges, pods}.
    Returns {tenants, drift, pairs, open_pairs, pairs_total, isolated, findings}: per tenant its
    drift (refs), the policies denying all ingress/egress, its Pod Security and its pod count;
    ``drift`` the netpol_drift entries (``apply``/``remove`` included, for the caller's "would").
    """
    objects = objects or {}
    namespaces = objects.get("namespaces") or []
    policies = objects.get("networkpolicies") or []
    pods = [p for p in objects.get("pods") or [] if (p.get("status") or {}).get("phase") not in FINISHED]
    live = namespaces + policies + (objects.get("resourcequotas") or []) + (objects.get("limitranges") or [])
    by_name = dict((_get(ns, "metadata", "name"), ns) for ns in namespaces)
    drift = _netpol.netpol_drift_tenants(desired, live, True)
    security, tenants = {}, []
    for entry in drift:
        ns = by_name.get(entry["namespace"])
        sec = tenant_isolation_pod_security(ns, entry.get("pod_security") or "privileged") if ns else None
        if sec is not None:
            security[entry["slug"]] = sec
        tenants.append({
            "slug": entry["slug"], "tier": entry.get("tier"), "namespace": entry["namespace"],
            "namespace_exists": entry["namespace_exists"],
            "missing": entry["missing"], "changed": [c["ref"] for c in entry["changed"]], "extra": entry["extra"],
            "in_sync": len(entry["in_sync"]),
            "reapply": [_ref_of(d) for d in entry["apply"]] if entry["namespace_exists"] else [],
            "default_deny": tenant_isolation_default_deny(policies, entry["namespace"]),
            "pod_security": sec,
            "pods": sum(1 for p in pods if _get(p, "metadata", "namespace") == entry["namespace"]),
        })
    present = [{"slug": t["slug"], "namespace": t["namespace"]} for t in tenants if t["namespace_exists"]]
    pairs = tenant_isolation_pairs(present, pods, policies, namespaces, probe)
    open_pairs = [dict((k, p[k]) for k in ("from", "to", "from_namespace", "to_namespace", "path", "open_paths",
                                          "evaluated") if k in p) for p in pairs if p["open"]]
    return {
        "tenants": tenants, "drift": drift, "pairs": pairs, "pairs_total": len(pairs), "open_pairs": open_pairs,
        "isolated": not open_pairs, "findings": tenant_isolation_findings(drift, pairs, security),
    }


def tenant_isolation_plan(audit, remove_extra=False, max_tenants=10, remediate=True):
    """What tenant_isolation.yml does with an audit (tenant_isolation_audit's result).

    Returns {todo: tenants whose isolation objects are reapplied (drift, or extra policies when
    ``remove_extra``), in the audit's order, at most ``max_tenants``; skipped: [{ref, why}] beyond
    the cap; missing_namespace: slugs without a namespace; extra_kept: extra policy refs left alone
    because ``remove_extra`` is off}. With ``remediate`` false nothing is to do: what would be is
    listed as skipped.
    """
    if int(max_tenants) < 1:
        raise ValueError("tenant_isolation_plan: max_tenants must be at least 1")
    present = [t for t in (audit or {}).get("tenants") or [] if t.get("namespace_exists")]
    wanted = [t for t in present if t.get("reapply") or (remove_extra and t.get("extra"))]
    off = [] if remediate else wanted
    wanted = wanted if remediate else []
    todo, capped = wanted[:int(max_tenants)], wanted[int(max_tenants):]
    return {
        "todo": todo,
        "skipped": [{"ref": "Namespace/%s" % t["namespace"],
                     "why": "cap of %d tenant(s) per run reached; rerun to continue" % int(max_tenants)}
                    for t in capped]
        + [{"ref": "Namespace/%s" % t["namespace"],
            "why": "remediation off (tenant_isolation_remediate=false): would reapply %s" % (
                ", ".join(t.get("reapply") or []) or "nothing but the removal of extra policies")}
           for t in off],
        "missing_namespace": [t["slug"] for t in (audit or {}).get("tenants") or [] if not t.get("namespace_exists")],
        "extra_kept": [] if remove_extra else [r for t in present for r in t.get("extra") or []],
    }


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "tenant_isolation_pod": tenant_isolation_pod,
            "tenant_isolation_allows": tenant_isolation_allows,
            "tenant_isolation_pairs": tenant_isolation_pairs,
            "tenant_isolation_default_deny": tenant_isolation_default_deny,
            "tenant_isolation_pod_security": tenant_isolation_pod_security,
            "tenant_isolation_findings": tenant_isolation_findings,
            "tenant_isolation_audit": tenant_isolation_audit,
            "tenant_isolation_plan": tenant_isolation_plan,
        }
