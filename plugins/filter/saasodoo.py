"""Filters that turn raw Kubernetes objects into the diagnosis the runbooks act on.

They are pure functions over the dicts that kubernetes.core.k8s_info returns, so the
runbooks' decisions are unit-tested without a cluster (tests/unit/test_filters.py).
"""

from __future__ import annotations

from datetime import datetime, timezone

DOCUMENTATION = """
name: saasodoo
short_description: Diagnosis filters for the SaaSOdoo runbooks
description:
  - C(k8s_selector) turns a matchLabels dict into label_selectors for kubernetes.core.k8s_info.
  - C(pod_health) reports whether a pod is healthy and, if not, why (CrashLoopBackOff, OOMKilled, not ready...).
  - C(workload_health) judges a Deployment, StatefulSet or DaemonSet together with its pods.
  - C(rollout_status) says whether a workload's rollout is complete, the way kubectl rollout status does.
  - C(cooldown_remaining) gives the seconds left before a workload may be restarted again.
  - C(node_health) judges a node from its conditions.
"""

# Waiting reasons that mean the container cannot run, not that it is merely starting.
BAD_WAITING_REASONS = {
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
    "CreateContainerError", "InvalidImageName", "RunContainerError",
}
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _get(obj, *path, default=None):
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
        if obj is None:
            return default
    return obj


def k8s_selector(match_labels):
    """{'app': 'x', 'tier': 'y'} -> ['app=x', 'tier=y'] (sorted, for stable output)."""
    return [f"{k}={v}" for k, v in sorted((match_labels or {}).items())]


def _ref(obj):
    meta = obj.get("metadata", {})
    return f"{obj.get('kind', '?')}/{meta.get('namespace', '')}/{meta.get('name', '?')}"


def pod_health(pod, restart_threshold=3):
    """{'name', 'healthy', 'phase', 'ready', 'restarts', 'reasons', 'last_termination'} for one pod."""
    meta = pod.get("metadata", {})
    status = pod.get("status", {}) or {}
    phase = status.get("phase", "Unknown")
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions", []) or []}
    ready = conditions.get("Ready") == "True"
    reasons = []
    restarts = 0
    last_termination = None
    for cs in status.get("containerStatuses", []) or []:
        restarts += int(cs.get("restartCount", 0) or 0)
        waiting = _get(cs, "state", "waiting") or {}
        if waiting.get("reason") in BAD_WAITING_REASONS:
            reasons.append(f"container {cs.get('name')} is waiting in {waiting['reason']}")
        terminated = _get(cs, "lastState", "terminated") or _get(cs, "state", "terminated")
        if terminated:
            last_termination = {
                "container": cs.get("name"),
                "reason": terminated.get("reason", ""),
                "exit_code": terminated.get("exitCode"),
                "finished_at": terminated.get("finishedAt"),
            }
    if last_termination and last_termination["reason"] == "OOMKilled":
        reasons.append(f"container {last_termination['container']} was OOMKilled (exit code {last_termination['exit_code']})")
    if phase in ("Failed", "Unknown"):
        reasons.append(f"pod phase is {phase}")
    elif phase == "Pending":
        reasons.append("pod is Pending (not scheduled or not started)")
    elif phase == "Running" and not ready:
        reasons.append("pod is Running but not Ready")
    if restarts >= restart_threshold:
        reasons.append(f"{restarts} restarts (threshold {restart_threshold})")
    if meta.get("deletionTimestamp"):
        # A terminating pod is on its way out; it says nothing about the workload's health.
        reasons = []
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "node": _get(pod, "spec", "nodeName"),
        "phase": phase,
        "ready": ready,
        "restarts": restarts,
        "terminating": bool(meta.get("deletionTimestamp")),
        "last_termination": last_termination,
        "healthy": not reasons,
        "reasons": reasons,
    }


def rollout_status(workload):
    """{'complete': bool, 'message': str} as `kubectl rollout status` judges it."""
    kind = workload.get("kind")
    meta = workload.get("metadata", {})
    spec = workload.get("spec", {}) or {}
    status = workload.get("status", {}) or {}
    generation = meta.get("generation", 0)
    observed = status.get("observedGeneration", 0)
    if observed < generation:
        return {"complete": False, "message": "waiting for the controller to observe the new spec"}
    if kind == "Deployment":
        want = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        total = status.get("replicas", 0)
        available = status.get("availableReplicas", 0)
        ready = status.get("readyReplicas", 0)
        for cond in status.get("conditions", []) or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                return {"complete": False, "failed": True, "message": f"rollout exceeded its progress deadline: {cond.get('message', '')}"}
        if updated < want:
            return {"complete": False, "message": f"{updated} of {want} replicas updated"}
        if total > updated:
            return {"complete": False, "message": f"{total - updated} old replicas pending termination"}
        if available < updated or ready < want:
            return {"complete": False, "message": f"{min(available, ready)} of {want} updated replicas available"}
        return {"complete": True, "message": f"{want} of {want} replicas updated and available"}
    if kind == "StatefulSet":
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0)
        updated = status.get("updatedReplicas", 0)
        if updated < want:
            return {"complete": False, "message": f"{updated} of {want} replicas updated"}
        if ready < want:
            return {"complete": False, "message": f"{ready} of {want} replicas ready"}
        if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
            return {"complete": False, "message": "waiting for the update revision to become current"}
        return {"complete": True, "message": f"{want} of {want} replicas updated and ready"}
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled", 0)
        updated = status.get("updatedNumberScheduled", 0)
        available = status.get("numberAvailable", 0)
        if updated < want:
            return {"complete": False, "message": f"{updated} of {want} pods updated"}
        if available < want:
            return {"complete": False, "message": f"{available} of {want} updated pods available"}
        return {"complete": True, "message": f"{want} of {want} pods updated and available"}
    return {"complete": False, "message": f"unsupported kind {kind}"}


def workload_health(workload, pods=None, restart_threshold=3):
    """Judge a workload with its pods: {'ref', 'healthy', 'reasons', 'pods', ...}."""
    kind = workload.get("kind")
    meta = workload.get("metadata", {})
    spec = workload.get("spec", {}) or {}
    status = workload.get("status", {}) or {}
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled", 0)
        ready = status.get("numberReady", 0)
    else:
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0)
    reasons = []
    if want == 0:
        reasons.append("scaled to zero replicas")
    elif ready < want:
        reasons.append(f"{ready} of {want} replicas ready")
    pod_reports = [pod_health(p, restart_threshold) for p in (pods or [])]
    live = [p for p in pod_reports if not p["terminating"]]
    for p in live:
        for reason in p["reasons"]:
            reasons.append(f"pod {p['name']}: {reason}")
    oom = any(p["last_termination"] and p["last_termination"]["reason"] == "OOMKilled" for p in live)
    crashloop = any(any("CrashLoopBackOff" in r for r in p["reasons"]) for p in live)
    return {
        "ref": _ref(workload),
        "kind": kind,
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "replicas": want,
        "ready_replicas": ready,
        "healthy": not reasons,
        "reasons": reasons,
        "crashloop": crashloop,
        "oomkilled": oom,
        "pods": pod_reports,
        "rollout": rollout_status(workload),
        "annotations": meta.get("annotations", {}) or {},
    }


def _parse_time(value):
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


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
    conditions = {c.get("type"): c for c in _get(node, "status", "conditions", default=[]) or []}
    ready_cond = conditions.get("Ready", {})
    ready = ready_cond.get("status") == "True"
    reasons = []
    if not ready:
        reasons.append(f"node is NotReady ({ready_cond.get('reason') or 'no Ready condition'}: {ready_cond.get('message', '')})".strip())
    pressure = [t for t in ("MemoryPressure", "DiskPressure", "PIDPressure") if conditions.get(t, {}).get("status") == "True"]
    reasons.extend(f"node reports {t}" for t in pressure)
    if _get(node, "spec", "unschedulable"):
        reasons.append("node is cordoned (unschedulable)")
    return {
        "name": _get(node, "metadata", "name"),
        "ready": ready,
        "healthy": not reasons,
        "reasons": reasons,
        "pressure": pressure,
    }


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
    """workload_health for parallel lists of workloads and their pods, plus cooldown seconds left."""
    out = []
    for obj, pods in zip(objects or [], pods_lists or []):
        report = workload_health(obj, pods, restart_threshold)
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
    labels = _get(pod, "metadata", "labels", default={}) or {}
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def platform_diagnosis(nodes, components, workloads, pods, layers, restart_threshold=3):
    """Judge the platform layer by layer from a handful of cluster-wide lists.

    nodes, workloads and pods are the `resources` of k8s_info calls (workloads: every
    Deployment, StatefulSet and DaemonSet; pods: every pod), components the inventory's
    `saasodoo_components`, layers the order in which to look (e.g. nodes, ingress, ...).
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
            report.pop("annotations", None)
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
        members = [k for k, r in comp_reports.items() if r["layer"] == name]
        problems = [f for f in findings if f["layer"] == name]
        broken = any(f["severity"] == "critical" for f in problems)
        layer_reports.append({"name": name, "healthy": not problems, "broken": broken, "members": members,
                              "problems": [f["message"] for f in problems]})
    first_broken = next((layer["name"] for layer in layer_reports if layer["broken"]), None)
    findings.sort(key=lambda f: (SEVERITY_ORDER.index(f["severity"]),
                                 (layers or []).index(f["layer"]) if f["layer"] in (layers or []) else 99))
    return {
        "healthy": not findings,
        "first_broken_layer": first_broken,
        "layers": layer_reports,
        "nodes": node_reports,
        "components": comp_reports,
        "findings": findings,
        "severity": findings[0]["severity"] if findings else "none",
    }


def escalation(findings_before, findings_after, remediated=False):
    """The guide's escalation level for what was found and what is left.

    Critical (escalate immediately): anything critical still broken. High (within 2 hours):
    high findings still open. Medium (within 24 hours): the rest still open, or a critical
    incident that the runbook resolved (it still deserves a review).
    """
    left = findings_after or []
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


def summary_lines(report):
    """Human-readable lines for a runbook report (found, did, left alone, verification, escalation)."""
    lines = [f"{report.get('runbook', 'runbook').upper()} RUNBOOK"
             + (" (CHECK MODE: nothing was changed)" if report.get("check_mode") else "")]
    if report.get("healthy_before"):
        lines.append("Diagnosis: healthy, nothing to do")
    else:
        lines.append(f"Diagnosis: first broken layer: {report.get('first_broken_layer') or 'none (degraded, not down)'}")
    for f in report.get("findings", []):
        lines.append(f"Found: {f['severity'].upper()} {f['code']} {f['message']}")
        lines.extend(f"       evidence: {e}" for e in f.get("evidence", [])[:3])
    actions = report.get("actions", [])
    lines.extend(f"Did: {a}" for a in actions)
    if not actions:
        lines.append("Did: nothing" + ("" if report.get("healthy_before") else
                                       " (remediation off, nodes broken, or nothing this runbook can fix)"))
    lines.extend(f"Left alone: {s['ref']}: {s['why']}" for s in report.get("skipped", []))
    lines.extend(f"Hand over: {h}" for h in report.get("handed_over", []))
    if report.get("check_mode"):
        lines.append("Verification: not run (check mode)")
    elif report.get("healthy_after"):
        lines.append("Verification: healthy")
    else:
        lines.append("Verification: STILL UNHEALTHY: " + "; ".join(f["message"] for f in report.get("remaining", [])))
    esc = report.get("escalation") or {}
    lines.append(f"Escalation: {esc.get('level', 'none')}"
                 + (f" ({esc['when']})" if esc.get("when") else "") + (f": {esc['why']}" if esc.get("why") else ""))
    return lines


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "k8s_selector": k8s_selector,
            "pod_health": pod_health,
            "workload_health": workload_health,
            "rollout_status": rollout_status,
            "cooldown_remaining": cooldown_remaining,
            "node_health": node_health,
            "workloads_health": workloads_health,
            "k8s_refs": k8s_refs,
            "k8s_refs_from_components": k8s_refs_from_components,
            "platform_diagnosis": platform_diagnosis,
            "escalation": escalation,
            "summary_lines": summary_lines,
            "restart_plan": restart_plan,
        }
