"""Filters that turn raw Kubernetes objects into the diagnosis the runbooks act on.

They are pure functions over the dicts that kubernetes.core.k8s_info returns, so the
runbooks' decisions are unit-tested without a cluster (tests/unit/test_filters.py).
"""

from __future__ import annotations

import importlib.util
from datetime import datetime, timezone
from pathlib import Path

DOCUMENTATION = """
name: saasodoo
short_description: Diagnosis filters for the SaaSOdoo runbooks
description:
  - C(k8s_selector) turns a matchLabels dict into label_selectors for kubernetes.core.k8s_info;
    C(k8s_selector_terms) a whole LabelSelector (matchExpressions too).
  - C(k8s_owner) trims a workload to what saasodoo_k8s_read's C(owned_by) needs (no pod template).
  - C(k8s_queries), C(k8s_manifest_queries) and C(k8s_pod_queries) build saasodoo_k8s_read queries: objects by
    reference, the live objects of desired manifests, the pods of workloads read; C(k8s_log_reads) the
    saasodoo_k8s_logs reads of pods' logs.
  - C(pod_health) reports whether a pod is healthy and, if not, why (CrashLoopBackOff, OOMKilled, not ready...).
  - C(workload_health) judges a Deployment, StatefulSet or DaemonSet together with its pods.
  - C(rollout_status) says whether a workload's rollout is complete, the way kubectl rollout status does.
  - C(cooldown_remaining) gives the seconds left before a workload may be restarted again.
  - C(node_health) judges a node from its conditions.
"""

# The judgements live in plugins/module_utils/saasodoo_k8s_health.py, shared with the modules.
# Loaded by path, once when Ansible loads this file: on the controller a filter plugin cannot rely on
# `ansible.module_utils.<project file>` (that name is only resolved inside AnsiballZ payloads), and
# this file is not imported as part of a package.
_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_health", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_k8s_health.py")
k8s_health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s_health)

BAD_WAITING_REASONS = k8s_health.BAD_WAITING_REASONS
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
_get = k8s_health.dig
_parse_time = k8s_health.parse_time
rollout_status = k8s_health.rollout_status


def k8s_hide_env(objects, keep=()):
    """Pods or workloads (one or a list) with every container's literal env value replaced by None -
    names and valueFrom kept, and the values of the env names in keep - for reads made by lookup, whose
    result a set_fact would otherwise carry into the job's events."""
    if isinstance(objects, list):
        return [k8s_health.hide_env_values(o, keep) for o in objects]
    return k8s_health.hide_env_values(objects, keep)


def k8s_selector(match_labels):
    """{'app': 'x', 'tier': 'y'} -> ['app=x', 'tier=y'] (sorted, for stable output)."""
    return [f"{k}={v}" for k, v in sorted((match_labels or {}).items())]


def k8s_owner(workload):
    """What saasodoo_k8s_read's owned_by needs of a workload - kind, name, namespace, uid and its
    selector - and nothing else (its pod template may carry env values that must not travel)."""
    workload = workload or {}
    meta = workload.get("metadata") or {}
    return {"kind": workload.get("kind"),
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid") if meta.get(k)},
            "spec": {"selector": (workload.get("spec") or {}).get("selector") or {}}}


def k8s_selector_terms(selector):
    """A whole LabelSelector (matchLabels and matchExpressions) as label selector terms; [] when empty."""
    return k8s_health.selector_strings(selector)


def k8s_queries(refs):
    """saasodoo_k8s_read queries for objects named by {kind, name, namespace[, api_version, env_values]};
    each result's item is the ref itself (as after a loop over refs)."""
    out = []
    for ref in refs or []:
        query = {k: ref[k] for k in ("kind", "api_version", "name", "namespace", "env_values") if ref.get(k)}
        query["item"] = ref
        out.append(query)
    return out


def k8s_manifest_queries(manifests):
    """saasodoo_k8s_read queries for the live objects of desired manifests; each result's item is
    the manifest (as after a loop over the manifests)."""
    out = []
    for manifest in manifests or []:
        query = {"kind": manifest.get("kind"), "api_version": manifest.get("apiVersion"),
                 "name": _get(manifest, "metadata", "name"), "namespace": _get(manifest, "metadata", "namespace")}
        query = {k: v for k, v in query.items() if v}
        query["item"] = manifest
        out.append(query)
    return out


def k8s_log_reads(targets, namespace=None, tail_lines=None, since_seconds=None, name_key="name"):
    """saasodoo_k8s_logs reads for pods given by name (strings, in ``namespace``) or as dicts (the pod's
    name under ``name_key``; namespace and container of their own when they have them); each result's
    item is the target, as after a loop over the targets."""
    out = []
    for target in targets or []:
        if isinstance(target, dict):
            read = {"name": target.get(name_key), "namespace": target.get("namespace") or namespace,
                    "container": target.get("container")}
        else:
            read = {"name": target, "namespace": namespace}
        read.update(tail_lines=tail_lines, since_seconds=since_seconds, item=target)
        out.append({k: v for k, v in read.items() if v is not None})
    return out


def k8s_pod_queries(results):
    """saasodoo_k8s_read queries for the pods of each workload read (results of k8s_info or
    saasodoo_k8s_read): the workload's namespace and matchLabels, env values dropped (keys_only);
    item is the workload's item.
    Results without a workload are left out."""
    out = []
    for result in results or []:
        workload = ((result or {}).get("resources") or [None])[0]
        if workload:
            # keys_only: health needs no env values, and the job's events must not carry them.
            out.append({"kind": "Pod", "namespace": _get(workload, "metadata", "namespace"),
                        "label_selectors": k8s_selector(_get(workload, "spec", "selector", "matchLabels")),
                        "keys_only": True, "item": result.get("item")})
    return out


def pod_health(pod, restart_threshold=3):
    """{'name', 'healthy', 'phase', 'ready', 'restarts', 'reasons', 'last_termination'} for one pod."""
    report = k8s_health.pod_health(pod, restart_threshold)
    del report["waiting_reason"]  # the modules' extra; the filter's output stays as the playbooks know it
    return report


def workload_health(workload, pods=None, restart_threshold=3):
    """Judge a workload with its pods: {'ref', 'healthy', 'reasons', 'pods', ..., 'annotations'}."""
    report = k8s_health.workload_health(workload, [pod_health(p, restart_threshold) for p in (pods or [])])
    report["annotations"] = _get(workload, "metadata", "annotations", default={}) or {}
    return report


def cooldown_remaining(workload, minutes, annotation="saasodoo.io/last-restart-at", now=None):
    """Seconds left before the workload may be restarted again (0 when it may)."""
    last = _parse_time(_get(workload, "metadata", "annotations", default={}).get(annotation))
    if last is None or not minutes:
        return 0
    current = _parse_time(now) if now else datetime.now(timezone.utc)
    left = minutes * 60 - (current - last).total_seconds()
    return max(0, int(left))


def node_health(node):
    """{'name', 'ready', 'healthy', 'reasons', 'pressure'} from a node's conditions."""
    report = k8s_health.node_health(node)
    del report["unschedulable"], report["conditions"]  # the modules' extras
    return report


def k8s_refs(resources):
    """[{kind, name, namespace}] for a list of Kubernetes objects."""
    return [
        {"kind": r.get("kind"), "name": _get(r, "metadata", "name"), "namespace": _get(r, "metadata", "namespace")}
        for r in resources or []
    ]


def k8s_refs_from_components(components):
    """[{kind, name, namespace}] for a list of inventory component definitions."""
    return [{"kind": c["kind"], "name": c["name"], "namespace": c["namespace"]} for c in components or []]


def workloads_health(objects, pods_lists, restart_threshold=3, cooldown_minutes=0,
                     annotation="saasodoo.io/last-restart-at", now=None):
    """workload_health for parallel lists of workloads and their pods, plus cooldown seconds left.

    restart_service acts on what this returns (a StatefulSet's unhealthy pods are deleted), so only the
    pods each workload owns count (k8s_health.owned_pods: its whole selector and its ownerReferences),
    whatever list is passed: a read by matchLabels alone may return another workload's pods."""
    out = []
    for obj, pods in zip(objects or [], pods_lists or []):
        report = workload_health(obj, k8s_health.owned_pods(obj, pods), restart_threshold)
        report["cooldown_remaining"] = cooldown_remaining(obj, cooldown_minutes, annotation, now)
        out.append(report)
    return out


def restart_plan(health, force=False, max_restarts=3):
    """Decide which workloads to restart: unhealthy (or all when forced), not cooling down, capped.

    Returns {'restart': [reports], 'skipped': [{'ref', 'why'}]}; healthy workloads are not listed.
    """
    restart, skipped = [], []
    for report in health or []:
        if report["healthy"] and not force:
            continue
        if report["cooldown_remaining"] > 0:
            skipped.append({"ref": report["ref"], "why": (
                f"restarted recently; cooldown has {report['cooldown_remaining']}s left")})
            continue
        if len(restart) >= max_restarts:
            skipped.append({"ref": report["ref"], "why": (
                f"cap reached: at most {max_restarts} restart(s) per run")})
            continue
        restart.append(report)
    return {"restart": restart, "skipped": skipped}


# Finding codes are stable: runbooks branch on them, never on message text.
SEVERITY_ORDER = ["critical", "high", "medium", "low"]


def _finding(code, severity, message, layer=None, component=None, ref=None, evidence=None, remediation=None):
    return {
        "code": code, "severity": severity, "message": message, "layer": layer,
        "component": component, "ref": ref, "evidence": evidence or [], "remediation": remediation,
    }


def _selects(match_labels, pod):
    # matchLabels only, as this filter always judged (matchExpressions are not consulted here).
    return k8s_health.selector_matches({"matchLabels": match_labels}, _get(pod, "metadata", "labels"))


def external_probes(endpoints):
    """platform_diagnose probes for the inventory's endpoints marked external (Supabase, Kill Bill)."""
    return [{"name": name, "url": ep["url"].rstrip("/") + ep.get("health_path", "/"), "layer": "external",
             "critical": bool(ep.get("critical", True)), "status": int(ep.get("status", 200))}
            for name, ep in sorted((endpoints or {}).items()) if ep.get("external")]


def probe_result(result):
    """One endpoint probe from a registered ansible.builtin.uri loop item (failed_when: false)."""
    item = result.get("item") or {}
    status = result.get("status", -1)
    wanted = item.get("status", 200)
    error = "" if status == wanted else str(result.get("msg") or "").split("Request failed: ")[-1]
    return {"name": item.get("name"), "url": item.get("url"), "layer": item.get("layer") or "external",
            "critical": bool(item.get("critical", True)), "ok": status == wanted, "status": status,
            "error": error.split("\n")[0][:200]}


def platform_diagnosis(nodes, components, workloads, pods, layers, restart_threshold=3, probes=None, annotations=None):
    """Judge the platform layer by layer from a handful of cluster-wide lists.

    nodes, workloads and pods are the `resources` of k8s_info calls (workloads: every
    Deployment, StatefulSet and DaemonSet; pods: every pod), components the inventory's
    `saasodoo_components`, layers the order in which to look (e.g. nodes, ingress, ...).
    probes are HTTP checks of endpoints (e.g. the external services), each with name, layer,
    url, critical, ok, status and error; a failed probe is a finding in its layer. annotations: the
    workload annotation keys each component report keeps (under `annotations`; by default none).
    """
    index = {(w.get("kind"), _get(w, "metadata", "namespace"), _get(w, "metadata", "name")): w
             for w in workloads or []}
    findings = []
    node_reports = [node_health(n) for n in nodes or []]
    comp_reports = {}
    for key, spec in sorted((components or {}).items()):
        ref = f"{spec.get('kind')}/{spec.get('namespace')}/{spec.get('name')}"
        obj = index.get((spec.get("kind"), spec.get("namespace"), spec.get("name")))
        layer = spec.get("layer")
        critical = bool(spec.get("critical", False))
        if obj is None:
            report = {"ref": ref, "healthy": False, "missing": True, "reasons": ["workload does not exist"],
                      "pods": [], "replicas": 0, "ready_replicas": 0, "crashloop": False, "oomkilled": False}
            findings.append(_finding("WORKLOAD_MISSING", "critical" if critical else "high",
                                     f"{key}: {ref} does not exist", layer, key, ref,
                                     remediation="redeploy the component"))
        else:
            match = _get(obj, "spec", "selector", "matchLabels", default={}) or {}
            own = [p for p in pods or [] if _get(p, "metadata", "namespace") == spec.get("namespace") and _selects(match, p)]
            report = workload_health(obj, own, restart_threshold)
            report["missing"] = False
            found = report.pop("annotations", None) or {}
            if annotations:
                report["annotations"] = {k: found[k] for k in annotations if k in found}
            bad = [p for p in report["pods"] if not p["healthy"] and not p["terminating"]]
            evidence = [f"{p['name']}: {', '.join(p['reasons'])}" for p in bad]
            severity = "critical" if critical else "high"
            if report["replicas"] == 0 and spec.get("replicas", 1) > 0:
                findings.append(_finding("WORKLOAD_SCALED_TO_ZERO", severity,
                                         f"{key}: {ref} is scaled to 0 replicas (desired {spec.get('replicas', 1)})",
                                         layer, key, ref, evidence, "scale_backend"))
            elif report["oomkilled"]:
                findings.append(_finding("WORKLOAD_OOMKILLED", severity,
                                         f"{key}: {ref} containers are killed for exceeding their memory limit",
                                         layer, key, ref, evidence, "scale_backend (raise limits)"))
            elif report["crashloop"]:
                findings.append(_finding("WORKLOAD_CRASHLOOP", severity,
                                         f"{key}: {ref} pods are in CrashLoopBackOff", layer, key, ref, evidence,
                                         "restart_service"))
            elif not report["healthy"]:
                findings.append(_finding("WORKLOAD_UNAVAILABLE", severity,
                                         f"{key}: {ref} is not fully available ({'; '.join(report['reasons'][:3])})",
                                         layer, key, ref, evidence, "restart_service"))
        report.update({"component": key, "layer": layer, "critical": critical,
                       "restartable": bool(spec.get("restartable", False)),
                       "desired_replicas": spec.get("replicas", 1)})
        comp_reports[key] = report
    probe_members = {}
    for probe in probes or []:
        layer = probe.get("layer") or "external"
        probe_members.setdefault(layer, []).append(probe["name"])
        if not probe.get("ok"):
            answer = f"HTTP {probe['status']}" if probe.get("status", -1) not in (-1, None) else (probe.get("error") or "no answer")
            findings.append(_finding("ENDPOINT_DOWN", "critical" if probe.get("critical", True) else "high",
                                     f"{probe['name']}: {probe['url']} does not answer as expected ({answer})",
                                     layer, probe["name"], probe["url"], [f"GET {probe['url']}: {answer}"],
                                     "escalate to the service's owner (not restartable from the cluster)"))
    for n in node_reports:
        if not n["healthy"]:
            findings.append(_finding("NODE_NOT_READY" if not n["ready"] else "NODE_PRESSURE",
                                     "critical" if not n["ready"] else "high",
                                     f"node {n['name']}: {'; '.join(n['reasons'])}", "nodes", None,
                                     f"Node/{n['name']}", n["reasons"], "add or repair capacity (escalate)"))
    layer_reports = []
    for name in layers or []:
        if name == "nodes":
            problems = [f for f in findings if f["layer"] == "nodes"]
            ready = [n for n in node_reports if n["ready"]]
            # The nodes layer is broken when no node is Ready or more than half are not.
            broken = not ready or len(ready) * 2 < len(node_reports)
            layer_reports.append({"name": name, "healthy": not problems, "broken": broken,
                                  "members": [n["name"] for n in node_reports],
                                  "problems": [f["message"] for f in problems]})
            continue
        members = [k for k, r in comp_reports.items() if r["layer"] == name] + probe_members.get(name, [])
        problems = [f for f in findings if f["layer"] == name]
        broken = any(f["severity"] == "critical" for f in problems)
        layer_reports.append({"name": name, "healthy": not problems, "broken": broken, "members": members,
                              "problems": [f["message"] for f in problems]})
    return _verdict({"nodes": node_reports, "components": comp_reports}, findings, layer_reports, layers)


def _verdict(base, findings, layer_reports, layers):
    findings = sorted(findings, key=lambda f: (SEVERITY_ORDER.index(f["severity"]),
                                               (layers or []).index(f["layer"]) if f["layer"] in (layers or []) else 99))
    return dict(base, **{
        "healthy": not findings,
        "first_broken_layer": next((layer["name"] for layer in layer_reports if layer["broken"]), None),
        "layers": layer_reports,
        "findings": findings,
        "severity": findings[0]["severity"] if findings else "none",
    })


def platform_add_findings(diagnosis, extra, layers):
    """A platform_diagnosis with findings made outside the cluster's lists added to their layers.

    extra: findings with at least code, severity, message and layer (e.g. the platform database's
    integrity, judged by saasodoo_pg_integrity, in layer `data`). A critical one breaks its layer,
    so the first broken layer is named again in topology order.
    """
    extra = [f for f in extra or [] if f.get("layer") in (layers or [])]
    if not extra:
        return diagnosis
    layer_reports = []
    for layer in diagnosis.get("layers") or []:
        new = [f for f in extra if f["layer"] == layer["name"]]
        if new:
            layer = dict(layer, healthy=False,
                         broken=layer["broken"] or any(f["severity"] == "critical" for f in new),
                         problems=list(layer["problems"]) + [f["message"] for f in new])
        layer_reports.append(layer)
    base = {k: v for k, v in diagnosis.items() if k not in ("healthy", "first_broken_layer", "layers", "findings", "severity")}
    return _verdict(base, list(diagnosis.get("findings") or []) + extra, layer_reports, layers)


def memory_raise_line(raise_, check_mode=False, refused=False):
    """One report line for a memory raise {ref, container, plan (backend_crashloop_memory_plan)}.

    refused: the plan raised nothing (at the cap, or no limit to raise): the line hands it over.
    """
    what = f"{raise_['ref']} container {raise_['container']}"
    if refused:
        return f"{what} is OOMKilled and its memory was not raised: {raise_['plan']['message']} -> a human"
    return f"{'would raise' if check_mode else 'raised'} the memory limit of {what}: {raise_['plan']['message']}"


def report_problems(findings, remaining=None, acted=False, name="runbook"):
    """Why runbook_report must refuse a report, as sentences; [] when it is sound.

    A remediation must come with its verification (remaining: the findings left after it, [] when none);
    every finding needs a code, a message and a known severity. The sentences name a finding by its
    position and code only - never its message or evidence, which may quote a secret.
    """
    problems = []
    if acted and remaining is None:
        problems.append(f"runbook_report: {name} remediated but passed no runbook_report_remaining (the "
                        "verification's findings); a report must say whether the fix worked.")
    for where, items in (("findings", findings), ("remaining", remaining)):
        for i, finding in enumerate(items or [], start=1):
            finding = finding if isinstance(finding, dict) else {}
            code = finding.get("code")
            bad = [what for what, ok in (("a code", isinstance(code, str) and code),
                                         ("a severity of critical, high, medium or low",
                                          finding.get("severity") in SEVERITY_ORDER),
                                         ("a message", "message" in finding)) if not ok]
            if bad:
                problems.append(f"runbook_report: {name} passed a finding without code, message or a severity of "
                                f"critical, high, medium or low: {where} #{i} (code {code!r}) lacks "
                                + " and ".join(bad))
    return problems


def escalation(findings_before, findings_after, remediated=False):
    """The guide's escalation level for what was found and what is left.

    Critical (escalate immediately): anything critical still broken. High (within 2 hours):
    high findings still open. Medium (within 24 hours): the rest still open, or a critical
    incident that the runbook resolved (it still deserves a review).
    """
    left = [f for f in findings_after or [] if f.get("severity") != "low"]
    levels = {f["severity"] for f in left}
    if "critical" in levels:
        return {"level": "critical", "when": "immediately", "why": "critical findings remain after the runbook"}
    if "high" in levels:
        return {"level": "high", "when": "within 2 hours", "why": "high-severity findings remain"}
    if left:
        return {"level": "medium", "when": "within 24 hours", "why": "minor findings remain"}
    if findings_before and remediated:
        return {"level": "medium", "when": "within 24 hours",
                "why": "resolved by the runbook; review the root cause"}
    return {"level": "none", "when": "", "why": "nothing found"}


# The printed summary stays readable at scale (a thousand tenants with the same finding): more than
# SUMMARY_GROUP_AT findings of one code and severity print as one group - the count, the first message
# and the first SUMMARY_SHOWN objects; the actions, the objects left alone and the hand-overs print their
# first SUMMARY_LIST_AT lines and a count. The JSON report (set_stats, the incident report) keeps every one.
SUMMARY_GROUP_AT = 5
SUMMARY_SHOWN = 3
SUMMARY_LIST_AT = 20


def _finding_name(finding):
    return finding.get("ref") or finding.get("component") or finding.get("message", "")


def _evidence_lines(finding):
    evidence = finding.get("evidence") or []
    if isinstance(evidence, dict):
        evidence = [f"{k}: {v}" for k, v in evidence.items()]
    elif not isinstance(evidence, list):
        evidence = [evidence]
    return [f"       evidence: {e}" for e in evidence[:3]]


def _finding_lines(findings):
    """Found: lines, one per finding, or one group per code and severity shared by many."""
    groups = {}
    for finding in findings:
        groups.setdefault((finding.get("code"), finding.get("severity")), []).append(finding)
    lines, shown = [], set()
    for finding in findings:
        key = (finding.get("code"), finding.get("severity"))
        group = groups[key]
        if len(group) <= SUMMARY_GROUP_AT:
            lines.append(f"Found: {finding['severity'].upper()} {finding['code']} {finding['message']}")
            lines.extend(_evidence_lines(finding))
        elif key not in shown:
            shown.add(key)
            names = [_finding_name(f) for f in group[:SUMMARY_SHOWN]]
            lines.append(f"Found: {finding['severity'].upper()} {finding['code']} x{len(group)}, the first: {finding['message']}")
            lines.extend(_evidence_lines(finding))
            lines.append(f"       {len(group)} objects: {', '.join(names)} and {len(group) - len(names)} more"
                         " (every one in the JSON report)")
    return lines


def _listed(prefix, items):
    """prefix lines for the first SUMMARY_LIST_AT items, then one line with how many more."""
    lines = [f"{prefix}{item}" for item in items[:SUMMARY_LIST_AT]]
    if len(items) > SUMMARY_LIST_AT:
        lines.append(f"{prefix}... and {len(items) - SUMMARY_LIST_AT} more (every one in the JSON report)")
    return lines


def _remaining_text(remaining):
    """The remaining findings' messages in order; a code shared by many is said once, with a count."""
    counts = {}
    for finding in remaining:
        counts[finding.get("code")] = counts.get(finding.get("code"), 0) + 1
    parts, said = [], set()
    for finding in remaining:
        code = finding.get("code")
        if counts[code] <= SUMMARY_GROUP_AT:
            parts.append(finding["message"])
        elif code not in said:
            said.add(code)
            parts.append(f"{finding['message']} (and {counts[code] - 1} more {code})")
    return "; ".join(parts)


def summary_lines(report):
    """Human-readable lines for a runbook report (found, did, left alone, verification, escalation).
    Many findings of one code are grouped, long lists are cut with a count (SUMMARY_GROUP_AT)."""
    lines = [f"{report.get('runbook', 'runbook').upper()} RUNBOOK"
             + (" (CHECK MODE: nothing was changed)" if report.get("check_mode") else "")]
    findings = report.get("findings", [])
    if report.get("healthy_before"):
        lines.append("Diagnosis: healthy, nothing to do"
                     + (f" ({len(findings)} low-severity observation(s))" if findings else ""))
    elif "first_broken_layer" in report:
        lines.append(f"Diagnosis: first broken layer: {report.get('first_broken_layer') or 'none (degraded, not down)'}")
    else:
        worst = next((s for s in ("critical", "high", "medium", "low")
                      if any(f.get("severity") == s for f in findings)), "none")
        lines.append(f"Diagnosis: {len(findings)} finding(s), worst severity {worst}")
    lines.extend(_finding_lines(findings))
    actions = report.get("actions", [])
    lines.extend(_listed("Did: ", actions))
    if not actions:
        lines.append("Did: nothing" + ("" if report.get("healthy_before") else
                                       " (remediation off, nodes broken, or nothing this runbook can fix)"))
    lines.extend(_listed("Left alone: ", [f"{s['ref']}: {s['why']}" for s in report.get("skipped", [])]))
    lines.extend(_listed("Hand over: ", report.get("handed_over", [])))
    if report.get("check_mode"):
        lines.append("Verification: not run (check mode)")
    elif report.get("healthy_after"):
        lines.append("Verification: healthy")
    else:
        lines.append("Verification: STILL UNHEALTHY: " + _remaining_text(report.get("remaining", [])))
    esc = report.get("escalation") or {}
    lines.append(f"Escalation: {esc.get('level', 'none')}"
                 + (f" ({esc['when']})" if esc.get("when") else "") + (f": {esc['why']}" if esc.get("why") else ""))
    return lines


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "k8s_selector": k8s_selector,
            "k8s_hide_env": k8s_hide_env,
            "k8s_selector_terms": k8s_selector_terms,
            "k8s_owner": k8s_owner,
            "k8s_queries": k8s_queries,
            "k8s_pod_queries": k8s_pod_queries,
            "k8s_manifest_queries": k8s_manifest_queries,
            "k8s_log_reads": k8s_log_reads,
            "pod_health": pod_health,
            "workload_health": workload_health,
            "rollout_status": rollout_status,
            "cooldown_remaining": cooldown_remaining,
            "node_health": node_health,
            "workloads_health": workloads_health,
            "k8s_refs": k8s_refs,
            "k8s_refs_from_components": k8s_refs_from_components,
            "platform_diagnosis": platform_diagnosis,
            "platform_add_findings": platform_add_findings,
            "probe_result": probe_result,
            "external_probes": external_probes,
            "escalation": escalation,
            "report_problems": report_problems,
            "memory_raise_line": memory_raise_line,
            "summary_lines": summary_lines,
            "restart_plan": restart_plan,
        }
