"""NetworkPolicy semantics and drift, as pure functions: can a pod in A reach a pod in B, and how
far are a tenant's isolation objects from their desired state.

The reapply_netpol role reads the cluster (NetworkPolicies, Namespaces, ResourceQuotas,
LimitRanges), renders the desired objects through provision_tenant, and lets these filters
decide; every decision is unit-tested without a cluster (tests/unit/test_netpol_filter.py).

Semantics follow the Kubernetes API (networking.k8s.io/v1), not any one network plugin:
- a pod is isolated for ingress (egress) when a NetworkPolicy of its namespace selects it
  (``podSelector``) and has ``Ingress`` (``Egress``) in its ``policyTypes``; ``policyTypes``
  left out means ``Ingress``, plus ``Egress`` when the policy has egress rules;
- an isolated pod accepts (sends) only what one of those policies' rules allows; a rule without
  ``from`` (``to``) allows every peer; a peer with only ``podSelector`` means pods of the
  policy's own namespace, with only ``namespaceSelector`` every pod of the matching namespaces,
  with both the matching pods of the matching namespaces; ``ipBlock`` peers never match pods;
- traffic from A to B flows when A's egress allows B **and** B's ingress allows A. Ports are
  not considered: reachable on any port counts as reachable.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

DOCUMENTATION = """
name: netpol
short_description: NetworkPolicy reachability and isolation drift for the reapply_netpol role
description:
  - C(netpol_selector_matches) tells whether a LabelSelector (matchLabels, matchExpressions) matches labels.
  - C(netpol_allows) says whether a pod (namespace, labels) can reach another, given every NetworkPolicy
    and the namespaces' labels, and which policies decide it.
  - C(netpol_isolation) evaluates every ordered pair of tenants and says which pairs are open.
  - C(netpol_drift) compares a tenant's desired isolation objects (Namespace labels, NetworkPolicies,
    ResourceQuota, LimitRange) with the live ones and returns what is missing, changed or extra, and
    the definitions that repair it; C(netpol_drift_tenants) does it for a list of tenants.
  - C(netpol_summary) turns the drift and the pairs, before and after, into the role's report.
  - C(netpol_live_after) overlays the objects the API server returned to kubernetes.core.k8s (and the
    removals) on the live objects, for the state after a run.
"""

NAME_LABEL = "kubernetes.io/metadata.name"
OWNED_KINDS = ("Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange")

# ---------------------------------------------------------------------------------------------
# Selectors


def netpol_selector_matches(selector, labels):
    """Whether a LabelSelector matches a label set. ``{}`` matches everything; ``None`` nothing."""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if operator == "In":
            if key not in labels or labels[key] not in values:
                return False
        elif operator == "NotIn":
            if key in labels and labels[key] in values:
                return False
        elif operator == "Exists":
            if key not in labels:
                return False
        elif operator == "DoesNotExist":
            if key in labels:
                return False
        else:  # an operator the API would refuse: never matches rather than guessing
            return False
    return True


def _namespace_labels(namespaces):
    """{name: labels} from Namespace objects, or from a {name: labels} dict; the name label added."""
    out = {}
    if isinstance(namespaces, dict):
        items = namespaces.items()
    else:
        items = (((ns.get("metadata") or {}).get("name"), (ns.get("metadata") or {}).get("labels"))
                 for ns in namespaces or [])
    for name, labels in items:
        if name:
            out[name] = dict(labels or {}, **{NAME_LABEL: name})
    return out


def policy_types(policy):
    """The policyTypes a policy has, with the API's defaulting when the field is left out."""
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return list(types)
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def _ref(policy):
    meta = policy.get("metadata") or {}
    return "%s/%s" % (meta.get("namespace"), meta.get("name"))


def _peer_matches(peer, policy_namespace, pod, ns_labels):
    """Whether a rule's peer (from/to item) matches a pod {namespace, labels}."""
    if not isinstance(peer, dict) or "ipBlock" in peer:
        return False
    pod_sel = peer.get("podSelector")
    ns_sel = peer.get("namespaceSelector")
    if ns_sel is None and pod_sel is None:
        return False
    if ns_sel is None:
        in_scope = pod["namespace"] == policy_namespace
    else:
        in_scope = netpol_selector_matches(ns_sel, ns_labels.get(pod["namespace"], {NAME_LABEL: pod["namespace"]}))
    if not in_scope:
        return False
    return pod_sel is None or netpol_selector_matches(pod_sel, pod.get("labels") or {})


def _direction(policies, pod, peer, direction, ns_labels):
    """Ingress into ``pod`` from ``peer`` (or egress from ``pod`` to ``peer``): isolated, allowed, by whom."""
    key, rule_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies
                 if (p.get("metadata") or {}).get("namespace") == pod["namespace"]
                 and direction in policy_types(p)
                 and netpol_selector_matches((p.get("spec") or {}).get("podSelector", {}), pod.get("labels") or {})]
    if not selecting:
        return {"isolated": False, "allowed": True, "selected_by": [], "allowed_by": []}
    allowed_by = []
    for policy in selecting:
        namespace = (policy.get("metadata") or {}).get("namespace")
        for rule in (policy.get("spec") or {}).get(key) or []:
            peers = (rule or {}).get(rule_key)
            if not peers or any(_peer_matches(p, namespace, peer, ns_labels) for p in peers):
                allowed_by.append(_ref(policy))
                break
    return {"isolated": True, "allowed": bool(allowed_by), "selected_by": sorted(_ref(p) for p in selecting),
            "allowed_by": sorted(allowed_by)}


def netpol_allows(source, destination, policies, namespaces=None):
    """Can a pod ``source`` ({namespace, labels}) reach a pod ``destination``?

    ``policies``: NetworkPolicy objects (any namespaces; only the two pods' namespaces count).
    ``namespaces``: Namespace objects, or {name: labels}, for namespaceSelector matching.
    Returns {allowed, egress: {isolated, allowed, selected_by, allowed_by}, ingress: {...}}.
    """
    ns_labels = _namespace_labels(namespaces or [])
    policies = policies or []
    egress = _direction(policies, source, destination, "Egress", ns_labels)
    ingress = _direction(policies, destination, source, "Ingress", ns_labels)
    return {"allowed": egress["allowed"] and ingress["allowed"], "egress": egress, "ingress": ingress}


def _candidate_labels(tenant, policies):
    """The pod label sets to try in a tenant's namespace: the given ones, an unlabelled pod, and the
    matchLabels of every podSelector of the namespace's policies (a policy aimed at some pods)."""
    sets = [dict(s or {}) for s in tenant.get("pod_labels") or []] + [{}]
    for policy in policies:
        if (policy.get("metadata") or {}).get("namespace") != tenant["namespace"]:
            continue
        selector = (policy.get("spec") or {}).get("podSelector") or {}
        if selector.get("matchLabels") and not selector.get("matchExpressions"):
            sets.append(dict(selector["matchLabels"]))
    unique = []
    for s in sets:
        if s not in unique:
            unique.append(s)
    return unique


def netpol_isolation(tenants, policies, namespaces=None):
    """Every ordered pair (A -> B) of distinct tenants, and whether it is open.

    ``tenants``: [{slug, namespace, pod_labels: [label sets]}]. A pair is open when some pod of A
    (among the candidate label sets) can reach some pod of B. Returns, per pair: from, to,
    from_namespace, to_namespace, open, and for an open pair the labels and the policies that let
    it through (egress_by / ingress_by; empty when the side is not isolated at all).
    """
    policies = policies or []
    ns_labels = _namespace_labels(namespaces or [])
    candidates = dict((t["slug"], _candidate_labels(t, policies)) for t in tenants)
    pairs = []
    for a in tenants:
        for b in tenants:
            if a["slug"] == b["slug"]:
                continue
            entry = {"from": a["slug"], "to": b["slug"], "from_namespace": a["namespace"],
                     "to_namespace": b["namespace"], "open": False}
            for src_labels in candidates[a["slug"]]:
                for dst_labels in candidates[b["slug"]]:
                    verdict = netpol_allows({"namespace": a["namespace"], "labels": src_labels},
                                            {"namespace": b["namespace"], "labels": dst_labels},
                                            policies, ns_labels)
                    if verdict["allowed"]:
                        entry.update(open=True, from_labels=src_labels, to_labels=dst_labels,
                                     egress_isolated=verdict["egress"]["isolated"],
                                     egress_by=verdict["egress"]["allowed_by"],
                                     ingress_isolated=verdict["ingress"]["isolated"],
                                     ingress_by=verdict["ingress"]["allowed_by"])
                        break
                if entry["open"]:
                    break
            pairs.append(entry)
    return pairs


# ---------------------------------------------------------------------------------------------
# Drift

_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")
_SUFFIX = {"Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
           "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60, "n": Decimal("1e-9"), "u": Decimal("1e-6"),
           "m": Decimal("1e-3"), "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"),
           "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"), None: Decimal(1)}


def _quantity(value):
    """A Kubernetes quantity as a Decimal, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value.strip())
    if not match:
        return None
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        return None
    suffix = match.group(2)
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def _empty(value):
    return value is None or value == [] or value == {}


def _same(desired, live):
    """Equality the API way: missing == empty, a quantity equals its other spellings (1 == "1000m")."""
    if isinstance(desired, dict) and isinstance(live, dict):
        for key in set(desired) | set(live):
            a, b = desired.get(key), live.get(key)
            if _empty(a) and _empty(b):
                continue
            if not _same(a, b):
                return False
        return True
    if isinstance(desired, list) and isinstance(live, list):
        return len(desired) == len(live) and all(_same(a, b) for a, b in zip(desired, live))
    if _empty(desired) and _empty(live):
        return True
    if desired == live:
        return True
    qa, qb = _quantity(desired), _quantity(live)
    return qa is not None and qb is not None and qa == qb


def _normalise_policy_spec(spec):
    """A NetworkPolicy spec with the API's defaults made explicit (policyTypes, TCP ports)."""
    spec = dict(spec or {})
    spec["policyTypes"] = policy_types({"spec": spec})
    for key in ("ingress", "egress"):
        rules = []
        for rule in spec.get(key) or []:
            rule = dict(rule or {})
            if rule.get("ports"):
                rule["ports"] = [dict({"protocol": "TCP"}, **(p or {})) for p in rule["ports"]]
            rules.append(rule)
        spec[key] = rules
    return spec


def _with_nulls(desired, live):
    """``desired`` plus a null for every key only ``live`` has (in nested dicts), so that a merge
    patch removes what someone added. Lists of these kinds are replaced whole by a patch."""
    if not isinstance(desired, dict) or not isinstance(live, dict):
        return desired
    out = {}
    for key, value in desired.items():
        out[key] = _with_nulls(value, live.get(key)) if isinstance(value, dict) else value
    for key in live:
        if key not in desired:
            out[key] = None
    return out


def _key(obj):
    meta = obj.get("metadata") or {}
    return (obj.get("kind"), meta.get("namespace") or "", meta.get("name"))


def _ref_of(obj):
    kind, namespace, name = _key(obj)
    return "%s/%s/%s" % (kind, namespace, name) if namespace else "%s/%s" % (kind, name)


def netpol_drift(desired, live, remove_extra=False):
    """What differs between a tenant's desired isolation objects and the live ones.

    ``desired``: the tenant's manifests (as provision_tenant renders them); only Namespace,
    NetworkPolicy, ResourceQuota and LimitRange count. ``live``: the live objects of those kinds
    (any namespaces; cluster-wide lists are fine, missing kinds count as none).
    Compared: the Namespace's labels that the desired Namespace sets (others are left alone), and
    the ``spec`` of the other kinds. Extra: NetworkPolicies of the tenant's namespace that are not
    desired.

    Returns {namespace, namespace_exists, missing, changed, extra, in_sync, apply, remove}:
    ``apply`` holds the definitions that repair the drift (Namespace first; a changed object's
    definition carries nulls for the fields someone added, so that the patch removes them);
    ``remove`` the extra policies to delete when ``remove_extra``.
    """
    wanted = [d for d in desired or [] if d.get("kind") in OWNED_KINDS]
    ns_def = next((d for d in wanted if d["kind"] == "Namespace"), None)
    if ns_def is None:
        raise ValueError("netpol_drift: the desired objects have no Namespace")
    namespace = ns_def["metadata"]["name"]
    index = dict((_key(o), o) for o in live or [] if o.get("kind") in OWNED_KINDS)
    live_ns = index.get(("Namespace", "", namespace))
    out = {"namespace": namespace, "namespace_exists": live_ns is not None, "missing": [], "changed": [],
           "extra": [], "in_sync": [], "apply": [], "remove": []}
    if live_ns is None:
        out["missing"] = [_ref_of(d) for d in wanted]
        return out
    if (live_ns.get("metadata") or {}).get("deletionTimestamp"):
        out["terminating"] = True
    for obj in wanted:
        ref = _ref_of(obj)
        current = index.get(_key(obj))
        if obj["kind"] == "Namespace":
            want = (obj.get("metadata") or {}).get("labels") or {}
            have = (current.get("metadata") or {}).get("labels") or {}
            before = dict((k, have.get(k)) for k in sorted(want))
            if before == want:
                out["in_sync"].append(ref)
                continue
            out["changed"].append({"ref": ref, "kind": "Namespace", "name": namespace, "field": "metadata.labels",
                                   "before": before, "after": dict(sorted(want.items()))})
            out["apply"].append({"apiVersion": obj.get("apiVersion", "v1"), "kind": "Namespace",
                                 "metadata": {"name": namespace, "labels": want}})
            continue
        if current is None:
            out["missing"].append(ref)
            out["apply"].append(obj)
            continue
        want_spec = obj.get("spec") or {}
        have_spec = current.get("spec") or {}
        if obj["kind"] == "NetworkPolicy":
            same = _same(_normalise_policy_spec(want_spec), _normalise_policy_spec(have_spec))
        else:
            same = _same(want_spec, have_spec)
        if same:
            out["in_sync"].append(ref)
            continue
        out["changed"].append({"ref": ref, "kind": obj["kind"], "name": obj["metadata"]["name"], "field": "spec",
                               "before": have_spec, "after": want_spec})
        out["apply"].append(dict(obj, spec=_with_nulls(want_spec, have_spec)))
    desired_policies = set(d["metadata"]["name"] for d in wanted if d["kind"] == "NetworkPolicy")
    for key in sorted(index):
        kind, ns, name = key
        if kind == "NetworkPolicy" and ns == namespace and name not in desired_policies:
            out["extra"].append("NetworkPolicy/%s/%s" % (ns, name))
            if remove_extra:
                out["remove"].append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                      "metadata": {"name": name, "namespace": ns}})
    # The Namespace first: the other objects live in it.
    out["apply"].sort(key=lambda d: 0 if d["kind"] == "Namespace" else 1)
    return out


def netpol_drift_tenants(tenants, live, remove_extra=False):
    """netpol_drift for each tenant {slug, manifests, ...}: the tenant's keys plus its drift."""
    out = []
    for tenant in tenants or []:
        entry = dict((k, v) for k, v in tenant.items() if k != "manifests")
        entry.update(netpol_drift(tenant["manifests"], live, remove_extra))
        out.append(entry)
    return out


def _k8s_objects(registered):
    """The objects the API server returned to kubernetes.core.k8s, from a registered result (one
    definition or several; a loop's results too). Errors and deletions are skipped."""
    out = []
    if isinstance(registered, list):
        for item in registered:
            out.extend(_k8s_objects(item))
        return out
    if not isinstance(registered, dict) or registered.get("skipped"):
        return out
    if isinstance(registered.get("results"), list):
        return _k8s_objects(registered["results"])
    result = registered.get("result")
    if isinstance(result, dict) and isinstance(result.get("results"), list):
        return _k8s_objects(result["results"])
    if registered.get("error") or registered.get("method") == "delete":
        return out
    if isinstance(result, dict) and result.get("kind") and result.get("metadata"):
        out.append(result)
    return out


def netpol_live_after(live, applied=None, removed=None):
    """The live objects once ``applied`` (registered kubernetes.core.k8s results: the objects the API
    server returned, real or dry-run) replaced theirs and the ``removed`` definitions are gone. The
    state after a run, from the server's own answers, without listing everything again."""
    index = dict((_key(o), o) for o in live or [])
    for obj in _k8s_objects(applied or []):
        index[_key(obj)] = obj
    for obj in removed or []:
        index.pop(_key(obj), None)
    return [index[k] for k in sorted(index, key=lambda k: (k[0] or "", k[1], k[2] or ""))]


def _pair_report(pair):
    keys = ("from", "to", "from_namespace", "to_namespace", "from_labels", "to_labels",
            "egress_isolated", "egress_by", "ingress_isolated", "ingress_by")
    return dict((k, pair[k]) for k in keys if k in pair)


def netpol_summary(drift, drift_after, pairs_before, pairs_after):
    """The report of a run: per tenant what was found, applied and removed; the drift left after;
    the open pairs before and after."""
    tenants = []
    for entry in drift or []:
        can_apply = entry.get("namespace_exists") and not entry.get("terminating")
        tenants.append({
            "slug": entry.get("slug"), "tier": entry.get("tier"), "namespace": entry.get("namespace"),
            "namespace_exists": entry.get("namespace_exists"), "terminating": bool(entry.get("terminating")),
            "missing": entry.get("missing", []), "changed": entry.get("changed", []), "extra": entry.get("extra", []),
            "in_sync": entry.get("in_sync", []),
            "applied": [_ref_of(d) for d in entry.get("apply", [])] if can_apply else [],
            "removed": [_ref_of(d) for d in entry.get("remove", [])] if entry.get("namespace_exists") else [],
        })
    left = []
    for entry in drift_after or []:
        if entry.get("namespace_exists") and (entry.get("missing") or entry.get("changed")):
            left.append({"slug": entry.get("slug"), "missing": entry.get("missing", []),
                         "changed": [c["ref"] for c in entry.get("changed", [])]})
    open_before = [_pair_report(p) for p in pairs_before or [] if p.get("open")]
    open_after = [_pair_report(p) for p in pairs_after or [] if p.get("open")]
    return {
        "tenants": tenants,
        "drift_found": sum(len(t["missing"]) + len(t["changed"]) for t in tenants if t["namespace_exists"]),
        "extra_found": sum(len(t["extra"]) for t in tenants),
        "applied": sum(len(t["applied"]) for t in tenants),
        "removed": sum(len(t["removed"]) for t in tenants),
        "namespaces_missing": [t["namespace"] for t in tenants if not t["namespace_exists"]],
        "drift_after": left,
        "isolation": {"pairs": len(pairs_before or []), "open_before": open_before, "open_after": open_after,
                      "isolated_after": not open_after},
    }


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "netpol_selector_matches": netpol_selector_matches,
            "netpol_allows": netpol_allows,
            "netpol_isolation": netpol_isolation,
            "netpol_drift": netpol_drift,
            "netpol_drift_tenants": netpol_drift_tenants,
            "netpol_live_after": netpol_live_after,
            "netpol_summary": netpol_summary,
        }
