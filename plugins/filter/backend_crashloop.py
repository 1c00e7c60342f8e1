"""Pure decisions of backend_crashloop.yml (and the memory math db_performance.yml shares).

The runbook reads the cluster (the backend Deployment, its pods, events, logs, the Secrets and
ConfigMaps it references, the NetworkPolicies between it and the database) and lets these
filters decide: why the pods crash, which keys are missing, which allow policy is needed, how
far a memory limit may be raised. Every decision is unit-tested without a cluster
(tests/unit/test_backend_crashloop_filter.py).
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

DOCUMENTATION = """
name: backend_crashloop
short_description: Diagnosis and planning filters of the backend_crashloop and db_performance runbooks
description:
  - C(backend_crashloop_memory_plan) raises a container's memory limit by a factor, never above a hard cap, and says
    when the limit is already at the cap.
  - C(backend_crashloop_quantity_bytes) reads a memory quantity (C(512Mi), C(1Gi), C(1G)) as bytes.
  - C(backend_crashloop_config_refs) lists the Secret and ConfigMap references of a workload's pod template
    (env valueFrom, envFrom, volumes), C(backend_crashloop_object_queries) the reads of the objects referenced (keys only),
    C(backend_crashloop_log_reads) the reads of the crashed containers' logs,
    C(backend_crashloop_object_keys) the key names of the live objects (never
    their values), C(backend_crashloop_missing_refs) the ones the live objects do not satisfy.
  - C(backend_crashloop_select_pods) keeps the pods a workload's selector selects.
  - C(backend_crashloop_pod_crashes) summarises each pod's restarts and last termination (reason, exit code and its
    meaning, message); C(backend_crashloop_log_sources) gathers the logs read and the termination messages;
    C(backend_crashloop_log_matches) matches log lines and termination messages against patterns.
  - C(backend_crashloop_event_summary) groups the events about the workload's objects by reason.
  - C(backend_crashloop_db_policies) builds the allow NetworkPolicies for the blocked direction(s) of backend ->
    database traffic.
  - C(backend_crashloop_findings) turns all of it into the runbook's findings.
"""

# The shared Kubernetes judgements (dig, quantities), loaded by path: on the controller a filter
# plugin cannot import project module_utils as ansible.module_utils.<name>.
_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_health", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_k8s_health.py")
_k8s_health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_k8s_health)
_get = _k8s_health.dig

MIB = 2 ** 20
_BINARY_UNITS = (("Ti", 2 ** 40), ("Gi", 2 ** 30), ("Mi", 2 ** 20), ("Ki", 2 ** 10))
NAME_LABEL = "kubernetes.io/metadata.name"

# What an exit code usually means (128 + n is signal n).
EXIT_CODES = {
    0: "exited normally",
    1: "application error",
    2: "misuse of a shell builtin or bad arguments",
    126: "command cannot be executed",
    127: "command not found",
    134: "aborted (SIGABRT)",
    137: "killed (SIGKILL: out of memory or forced stop)",
    139: "segmentation fault (SIGSEGV)",
    143: "terminated (SIGTERM)",
}


# ------------------------------------------------------------------------ quantities

def backend_crashloop_quantity_bytes(value):
    """A memory quantity as whole bytes (rounded up); None when unset. ValueError when not a quantity."""
    parsed = _k8s_health.parse_quantity(value)
    return None if parsed is None else int(math.ceil(parsed))


def _format_bytes(n):
    """Bytes as the largest binary unit that divides them exactly (1536Mi, 4Gi), else plain bytes."""
    n = int(n)
    for unit, size in _BINARY_UNITS:
        if n >= size and n % size == 0:
            return "%d%s" % (n // size, unit)
    return str(n)


def _ceil_mib(n):
    # Rounded first, so float noise (100Mi x 1.1 = 110.00000000000001Mi) does not add a MiB.
    return int(math.ceil(round(n / float(MIB), 6))) * MIB


def backend_crashloop_memory_plan(resources, factor, cap, raise_request=False):
    """Raise a container's memory limit by ``factor``, never above ``cap``.

    ``resources``: the container's {limits, requests}. Returns {limit_before, limit_after,
    request_before, request_after, changed, capped (the cap cut the raise short), at_cap (already
    at or above the cap: nothing raised), no_limit, factor, cap, message}. The new limit is rounded
    up to whole MiB. With ``raise_request`` the memory request grows by the same factor, never
    above the new limit. ValueError on a factor <= 1 or a value that is not a quantity.
    """
    factor = float(factor)
    if factor <= 1:
        raise ValueError("the memory factor must be above 1 (got %s)" % factor)
    cap_bytes = backend_crashloop_quantity_bytes(cap)
    if not cap_bytes:
        raise ValueError("the memory cap must be a positive quantity (got %r)" % (cap,))
    resources = resources or {}
    limit_text = _get(resources, "limits", "memory")
    request_text = _get(resources, "requests", "memory")
    limit = backend_crashloop_quantity_bytes(limit_text)
    request = backend_crashloop_quantity_bytes(request_text)
    out = {"limit_before": limit_text, "limit_after": limit_text, "request_before": request_text,
           "request_after": request_text, "changed": False, "capped": False, "at_cap": False,
           "no_limit": limit is None, "factor": factor, "cap": _format_bytes(cap_bytes) if cap_bytes else cap,
           "message": ""}
    if limit is None:
        out["message"] = ("no memory limit is set: an OOM kill then comes from the node's memory pressure, not from "
                          "the container's limit; nothing to raise")
        return out
    if limit >= cap_bytes:
        out["at_cap"] = True
        out["message"] = ("the memory limit %s is already at the cap %s: not raised; a human must decide "
                          "(find the leak, or raise the cap)" % (limit_text, out["cap"]))
        return out
    wanted = _ceil_mib(limit * factor)
    new = min(wanted, cap_bytes)
    out["capped"] = wanted > cap_bytes
    out["limit_after"] = _format_bytes(new)
    out["changed"] = True
    if raise_request and request is not None:
        new_request = min(_ceil_mib(request * factor), new)
        if new_request > request:
            out["request_after"] = _format_bytes(new_request)
    if out["capped"]:
        out["message"] = "memory limit %s -> %s: held at the cap (x%s would be %s)" % (
            limit_text, out["limit_after"], _num(factor), _format_bytes(wanted))
    else:
        out["message"] = "memory limit %s -> %s (x%s, cap %s)" % (limit_text, out["limit_after"], _num(factor),
                                                                 out["cap"])
    if out["request_after"] != request_text:
        out["message"] += "; memory request %s -> %s" % (request_text, out["request_after"])
    return out


def _num(x):
    return ("%g" % x)


# ------------------------------------------------------------------------ configuration references

def backend_crashloop_config_refs(workload):
    """Every Secret/ConfigMap reference of a workload's pod template.

    [{kind, name, key (None: the whole object), optional, container, env (the variable, or the
    envFrom prefix / volume name), via (secretKeyRef, configMapKeyRef, envFrom, volume)}], in
    template order.
    """
    spec = _get(workload, "spec", "template", "spec", default={}) or {}
    refs = []
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    for c in containers:
        cname = c.get("name")
        for env in c.get("env") or []:
            for via, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                ref = _get(env, "valueFrom", via)
                if ref:
                    refs.append({"kind": kind, "name": ref.get("name"), "key": ref.get("key"),
                                 "optional": bool(ref.get("optional", False)), "container": cname,
                                 "env": env.get("name"), "via": via})
        for src in c.get("envFrom") or []:
            for via, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                ref = src.get(via)
                if ref:
                    refs.append({"kind": kind, "name": ref.get("name"), "key": None,
                                 "optional": bool(ref.get("optional", False)), "container": cname,
                                 "env": src.get("prefix") or "", "via": "envFrom"})
    for vol in spec.get("volumes") or []:
        for field, kind, name_field in (("secret", "Secret", "secretName"), ("configMap", "ConfigMap", "name")):
            ref = vol.get(field)
            if not ref:
                continue
            items = ref.get("items") or []
            base = {"kind": kind, "name": ref.get(name_field), "optional": bool(ref.get("optional", False)),
                    "container": None, "env": vol.get("name"), "via": "volume"}
            if items:
                refs.extend(dict(base, key=item.get("key")) for item in items)
            else:
                refs.append(dict(base, key=None))
    return refs


def backend_crashloop_log_reads(targets, namespace, tail_lines):
    """saasodoo_k8s_logs reads of the crashed pods: the container that last terminated, the previous
    instance's log when the pod restarted; each result's item is the target."""
    out = []
    for t in targets or []:
        read = {"name": t.get("name"), "namespace": namespace, "previous": (t.get("restarts") or 0) > 0,
                "tail_lines": tail_lines, "item": t}
        if t.get("last_termination") and t["last_termination"].get("container"):
            read["container"] = t["last_termination"]["container"]
        out.append(read)
    return out


def backend_crashloop_object_queries(refs, namespace):
    """saasodoo_k8s_read queries for the Secrets and ConfigMaps the workload references, each once, keys only."""
    out = []
    for ref in refs or []:
        query = {"kind": ref.get("kind"), "name": ref.get("name"), "namespace": namespace, "keys_only": True}
        if query["kind"] in ("Secret", "ConfigMap") and query["name"] and query not in out:
            out.append(query)
    return out


def backend_crashloop_object_keys(results):
    """{name: [keys]} of the objects that exist, from a looped kubernetes.core.k8s_info's results.

    Only the key names are kept (data, binaryData, stringData): a Secret's values never leave here.
    """
    out = {}
    for result in results or []:
        for obj in (result or {}).get("resources") or []:
            name = _get(obj, "metadata", "name")
            keys = set()
            for field in ("data", "binaryData", "stringData"):
                keys.update((obj.get(field) or {}).keys())
            out[name] = sorted(keys)
    return out


def backend_crashloop_missing_refs(refs, objects):
    """The references the live objects do not satisfy.

    ``objects``: {'Secret': {name: [keys]}, 'ConfigMap': {name: [keys]}} of the objects that exist.
    Optional references never count. Returns [{kind, name, key, container, env, via,
    object_missing}] (object_missing: the whole Secret/ConfigMap is absent).
    """
    objects = objects or {}
    missing = []
    for ref in refs or []:
        if ref.get("optional"):
            continue
        have = (objects.get(ref["kind"]) or {}).get(ref["name"])
        if have is None:
            missing.append(dict(ref, object_missing=True))
        elif ref.get("key") is not None and ref["key"] not in have:
            missing.append(dict(ref, object_missing=False))
    out = []
    for m in missing:  # one entry per object/key, even when two containers use it
        if not any((o["kind"], o["name"], o["key"]) == (m["kind"], m["name"], m["key"]) for o in out):
            out.append(m)
    return out


# ------------------------------------------------------------------------ pods, terminations, logs

def backend_crashloop_exit_meaning(code):
    """A short explanation of a container exit code."""
    if code is None or code == "":
        return "unknown"
    code = int(code)
    if code in EXIT_CODES:
        return EXIT_CODES[code]
    if code > 128:
        return "killed by signal %d" % (code - 128)
    return "application exit code %d" % code


def backend_crashloop_select_pods(pods, workload):
    """The pods of the workload's namespace that its selector (matchLabels and matchExpressions) selects."""
    if not workload:
        return []
    namespace = _get(workload, "metadata", "namespace")
    selector = _get(workload, "spec", "selector", default={}) or {}
    return [p for p in pods or [] if _get(p, "metadata", "namespace") == namespace
            and _k8s_health.selector_matches(selector, _get(p, "metadata", "labels", default={}))]


def backend_crashloop_pod_crashes(pods):
    """Per pod (not terminating): name, ready, restarts, waiting_reason and last termination
    (container, reason, exit_code, meaning, message, finished_at)."""
    out = []
    for pod in pods or []:
        if _get(pod, "metadata", "deletionTimestamp"):
            continue
        conditions = {c.get("type"): c.get("status") for c in _get(pod, "status", "conditions", default=[]) or []}
        entry = {"name": _get(pod, "metadata", "name"), "ready": conditions.get("Ready") == "True",
                 "phase": _get(pod, "status", "phase"), "restarts": 0, "waiting_reason": None,
                 "last_termination": None}
        for cs in _get(pod, "status", "containerStatuses", default=[]) or []:
            entry["restarts"] += int(cs.get("restartCount") or 0)
            waiting = _get(cs, "state", "waiting", default={}) or {}
            if waiting.get("reason") and not entry["waiting_reason"]:
                entry["waiting_reason"] = waiting["reason"]
            term = _get(cs, "lastState", "terminated") or _get(cs, "state", "terminated")
            if term and entry["last_termination"] is None:
                code = term.get("exitCode")
                entry["last_termination"] = {
                    "container": cs.get("name"), "reason": term.get("reason") or "",
                    "exit_code": code, "meaning": backend_crashloop_exit_meaning(code),
                    "message": (term.get("message") or "").strip(), "finished_at": term.get("finishedAt"),
                }
        out.append(entry)
    return out


def backend_crashloop_log_sources(log_results, crashes):
    """What there is to read: the logs kubernetes.core.k8s_log returned (a looped result) and each
    pod's last termination message.

    Returns {sources: [{pod, source, text}], summary: {available, read, errors}}; ``errors`` says
    why logs could not be read (e.g. no kubelet answers), each cut to 160 characters.
    """
    sources, errors, read = [], [], 0
    for result in log_results or []:
        pod = _get(result, "item", "name")
        if result.get("failed") or "log" not in result:
            errors.append(("%s" % (result.get("msg") or "no log returned")).strip().splitlines()[0][:160])
            continue
        read += 1
        sources.append({"pod": pod, "source": "log", "text": result.get("log") or ""})
    for p in crashes or []:
        term = p.get("last_termination") or {}
        if term.get("message"):
            sources.append({"pod": p.get("name"), "source": "termination message", "text": term["message"]})
    return {"sources": sources, "summary": {"available": read > 0, "read": read, "errors": sorted(set(errors))}}


def backend_crashloop_log_matches(sources, patterns, limit=5):
    """Lines of logs or termination messages that match the error patterns.

    ``sources``: [{pod, source ('log' or 'termination message'), text}]. ``patterns``: [{name,
    cause, regex}] (regex case-insensitive). Returns [{pod, source, pattern, cause, line}], at most
    ``limit`` per pattern.
    """
    compiled = []
    for p in patterns or []:
        try:
            compiled.append((p, re.compile(p["regex"], re.I)))
        except re.error as exc:
            raise ValueError("log pattern %r has a bad regex: %s" % (p.get("name"), exc))
    hits = []
    counts = {}
    for src in sources or []:
        for line in (src.get("text") or "").splitlines():
            for p, rx in compiled:
                if counts.get(p["name"], 0) >= int(limit):
                    continue
                if rx.search(line):
                    counts[p["name"]] = counts.get(p["name"], 0) + 1
                    hits.append({"pod": src.get("pod"), "source": src.get("source", "log"), "pattern": p["name"],
                                 "cause": p.get("cause", "unknown"), "line": line.strip()[:300]})
    return hits


def backend_crashloop_event_summary(events, names, limit=8):
    """Events about the given objects (pods, ReplicaSets, the workload: names or name prefixes),
    grouped by reason: ['BackOff (Warning) x12: Back-off restarting failed container ...'], newest
    reasons first, at most ``limit``."""
    names = [n for n in names or [] if n]
    groups = {}
    for ev in events or []:
        target = _get(ev, "involvedObject", "name") or _get(ev, "regarding", "name") or ""
        if not any(target == n or target.startswith(n + "-") for n in names):
            continue
        reason = ev.get("reason") or "?"
        key = (reason, ev.get("type") or "Normal")
        seen = _k8s_health.event_last_seen(ev)
        g = groups.setdefault(key, {"count": 0, "message": "", "last": None})
        g["count"] += int(ev.get("count") or _get(ev, "series", "count") or 1)
        if g["last"] is None or (seen is not None and seen >= g["last"]):
            g["last"] = seen
            g["message"] = (ev.get("message") or ev.get("note") or "").strip()
    ordered = sorted(groups.items(), key=lambda kv: (kv[1]["last"] is None, kv[1]["last"]), reverse=True)
    ordered = sorted(ordered, key=lambda kv: kv[0][1] != "Warning")  # warnings first, stable
    return ["%s (%s) x%d: %s" % (reason, kind, g["count"], g["message"][:200])
            for (reason, kind), g in ordered[:int(limit)]]


# ------------------------------------------------------------------------ network policies

def backend_crashloop_db_policies(verdict, backend, database, names, labels=None):
    """Allow policies for the blocked direction(s) of backend -> database traffic.

    ``verdict``: netpol_allows(backend pod, database pod, ...). ``backend``/``database``:
    {namespace, match_labels} (the workloads' selectors); ``database`` also has ``port``.
    ``names``: {egress, ingress} policy names. Only a blocked side gets a policy: an egress allow
    on the backend when its egress is isolated and not allowed, an ingress allow on the database
    when its ingress is. Allow policies only add (NetworkPolicies are additive), so a user's deny
    policy stays in place and keeps denying everything else.
    """
    labels = dict(labels or {})
    port = [{"protocol": "TCP", "port": int(database["port"])}]
    out = []
    egress = (verdict or {}).get("egress") or {}
    ingress = (verdict or {}).get("ingress") or {}
    if egress.get("isolated") and not egress.get("allowed"):
        out.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": names["egress"], "namespace": backend["namespace"], "labels": labels},
            "spec": {"podSelector": {"matchLabels": dict(backend["match_labels"])}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"namespaceSelector": {"matchLabels": {NAME_LABEL: database["namespace"]}},
                                         "podSelector": {"matchLabels": dict(database["match_labels"])}}],
                                 "ports": port}]},
        })
    if ingress.get("isolated") and not ingress.get("allowed"):
        out.append({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": names["ingress"], "namespace": database["namespace"], "labels": labels},
            "spec": {"podSelector": {"matchLabels": dict(database["match_labels"])}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {NAME_LABEL: backend["namespace"]}},
                                            "podSelector": {"matchLabels": dict(backend["match_labels"])}}],
                                  "ports": port}]},
        })
    return out


# ------------------------------------------------------------------------ findings

def _finding(code, severity, message, evidence, component, ref, remediation):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence,
            "component": component, "ref": ref, "remediation": remediation}


def backend_crashloop_findings(ctx):
    """The runbook's findings from everything it read.

    ``ctx`` keys: component, ref, replicas, ready_replicas, restart_threshold, pods
    (backend_crashloop_pod_crashes), logs ({available, errors: [..]}), matches
    (backend_crashloop_log_matches), events ([reason: count lines]), missing_refs, network
    ({checked, allowed, egress, ingress, database_ref}), database ({reachable, connected, message,
    healthy, reasons}), memory_plan (backend_crashloop_memory_plan of the container, or None),
    container.
    Returns {findings, crashing, oomkilled, causes}.
    """
    comp = ctx.get("component", "backend")
    ref = ctx.get("ref")
    pods = ctx.get("pods") or []
    threshold = int(ctx.get("restart_threshold", 3))
    replicas = int(ctx.get("replicas") or 0)
    ready = int(ctx.get("ready_replicas") or 0)
    down = replicas > 0 and ready == 0
    severity = "critical" if down else "high"
    findings = []

    bad = [p for p in pods if p["waiting_reason"] in _k8s_health.BAD_WAITING_REASONS
           or p["restarts"] >= threshold or not p["ready"]]
    crashing = any(p["waiting_reason"] == "CrashLoopBackOff" or p["restarts"] >= threshold for p in pods)
    oom_pods = [p for p in pods if p["last_termination"] and p["last_termination"]["reason"] == "OOMKilled"]
    logs = ctx.get("logs") or {}
    matches = ctx.get("matches") or []
    causes = []

    if bad or (replicas > 0 and ready < replicas):
        evidence = ["%s of %s replicas ready" % (ready, replicas)]
        for p in bad:
            line = "pod %s: %s, %d restart(s)" % (p["name"], p["waiting_reason"] or p["phase"], p["restarts"])
            t = p["last_termination"]
            if t:
                line += "; last termination %s, exit code %s (%s)%s%s" % (
                    t["reason"] or "-", t["exit_code"], t["meaning"],
                    " at %s" % t["finished_at"] if t["finished_at"] else "",
                    ": %s" % t["message"] if t["message"] else "")
            evidence.append(line)
        evidence.extend("events: %s" % e for e in ctx.get("events") or [])
        if logs.get("available"):
            evidence.append("logs: read from %d pod(s)" % logs.get("read", 0))
        else:
            evidence.append("logs: unavailable (%s); judged from pod status, termination messages and events"
                            % "; ".join(sorted(set(logs.get("errors") or ["not read"])))[:300])
        code = "BACKEND_CRASHLOOP" if crashing else "BACKEND_UNAVAILABLE"
        what = "pods are crash-looping" if crashing else "pods are not ready"
        findings.append(_finding(code, severity, "%s: %s %s (%s of %s replicas ready)" % (comp, ref, what, ready,
                                                                                       replicas),
                                 evidence, comp, ref, "see the cause findings"))

    plan = ctx.get("memory_plan")
    if oom_pods:
        causes.append("memory")
        evidence = ["pod %s: container %s OOMKilled, exit code %s (%s)" % (
            p["name"], p["last_termination"]["container"], p["last_termination"]["exit_code"],
            p["last_termination"]["meaning"]) for p in oom_pods]
        if plan:
            evidence.append("memory limit %s (cap %s)" % (plan.get("limit_before") or "unset", plan.get("cap")))
        at_cap = bool(plan and (plan.get("at_cap") or plan.get("no_limit")))
        findings.append(_finding(
            "BACKEND_MEMORY_AT_CAP" if at_cap else "BACKEND_OOMKILLED", severity,
            ("%s: containers are killed for exceeding their memory limit and %s" % (comp, plan["message"]))
            if at_cap else ("%s: containers are killed for exceeding their memory limit %s" % (
                comp, (plan or {}).get("limit_before") or "")).strip(),
            evidence, comp, ref,
            "hand over: find the leak or raise the cap" if at_cap else "raise the memory limit (bounded)"))

    missing = ctx.get("missing_refs") or []
    if missing:
        causes.append("configuration")
    for m in missing:
        where = "container %s, %s" % (m["container"], m["via"]) if m.get("container") else "volume %s" % m["env"]
        if m["object_missing"]:
            code = "BACKEND_%s_MISSING" % ("SECRET" if m["kind"] == "Secret" else "CONFIGMAP")
            message = "%s: the %s %s it references does not exist (%s)" % (comp, m["kind"], m["name"], where)
        else:
            code = "BACKEND_%s_KEY_MISSING" % ("SECRET" if m["kind"] == "Secret" else "CONFIGMAP")
            message = "%s: key %s is missing from the %s %s (%s%s)" % (
                comp, m["key"], m["kind"], m["name"], where, ", variable %s" % m["env"] if m.get("env") else "")
        findings.append(_finding(
            code, severity, message,
            ["%s %s has no key %s" % (m["kind"], m["name"], m["key"]) if not m["object_missing"]
             else "%s %s not found" % (m["kind"], m["name"]),
             "referenced by %s without optional: true: a new pod cannot start (CreateContainerConfigError)" % where],
            comp, ref, "a human must supply the value; the runbook never invents secrets or configuration"))

    net = ctx.get("network") or {}
    if net.get("checked") and not net.get("allowed"):
        causes.append("network")
        evidence = []
        for side in ("egress", "ingress"):
            v = net.get(side) or {}
            if v.get("isolated") and not v.get("allowed"):
                evidence.append("%s isolated by %s, no rule allows %s" % (
                    side, ", ".join(v.get("selected_by") or []),
                    "the database" if side == "egress" else "the backend"))
        findings.append(_finding(
            "BACKEND_DB_BLOCKED_BY_NETWORK_POLICY", "critical",
            "%s: NetworkPolicies block traffic from the backend to the database %s" % (comp, net.get("database_ref")),
            evidence, comp, ref, "apply the desired allow policy (deny policies are left in place)"))

    db = ctx.get("database") or {}
    if db and (not db.get("connected", True) or not db.get("healthy", True)):
        causes.append("database")
        findings.append(_finding(
            "BACKEND_DATABASE_UNAVAILABLE", "critical",
            "%s: the database the backend needs is not available: %s" % (comp, db.get("message") or "unhealthy"),
            list(db.get("reasons") or []), comp, db.get("ref"), "hand over to postgres_connection.yml"))

    if matches:
        by_cause = {}
        for m in matches:
            by_cause.setdefault(m["cause"], []).append(m)
        for cause, hits in sorted(by_cause.items()):
            if cause not in causes:
                causes.append(cause)
        findings.append(_finding(
            "BACKEND_LOG_ERRORS", "medium",
            "%s: error patterns in logs or termination messages point at: %s" % (comp, ", ".join(sorted(by_cause))),
            ["%s (%s, %s): %s" % (m["pod"], m["source"], m["pattern"], m["line"]) for m in matches[:10]],
            comp, ref, "see the cause findings"))

    if crashing and not causes:
        findings.append(_finding(
            "BACKEND_CRASH_CAUSE_UNKNOWN", severity,
            "%s: the pods crash-loop and no known cause was found (not OOM, no missing configuration, database "
            "reachable and allowed, no known error pattern)" % comp,
            ["last exit codes: %s" % ", ".join(sorted(set(
                "%s (%s)" % (p["last_termination"]["exit_code"], p["last_termination"]["meaning"])
                for p in pods if p["last_termination"]))) or "none recorded"],
            comp, ref, "hand over: read the application's logs"))

    order = ("critical", "high", "medium", "low")
    findings.sort(key=lambda f: order.index(f["severity"]))
    return {"findings": findings, "crashing": crashing, "oomkilled": bool(oom_pods), "causes": causes}


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "backend_crashloop_quantity_bytes": backend_crashloop_quantity_bytes,
            "backend_crashloop_memory_plan": backend_crashloop_memory_plan,
            "backend_crashloop_config_refs": backend_crashloop_config_refs,
            "backend_crashloop_object_keys": backend_crashloop_object_keys,
            "backend_crashloop_object_queries": backend_crashloop_object_queries,
            "backend_crashloop_log_reads": backend_crashloop_log_reads,
            "backend_crashloop_missing_refs": backend_crashloop_missing_refs,
            "backend_crashloop_exit_meaning": backend_crashloop_exit_meaning,
            "backend_crashloop_select_pods": backend_crashloop_select_pods,
            "backend_crashloop_pod_crashes": backend_crashloop_pod_crashes,
            "backend_crashloop_log_sources": backend_crashloop_log_sources,
            "backend_crashloop_log_matches": backend_crashloop_log_matches,
            "backend_crashloop_event_summary": backend_crashloop_event_summary,
            "backend_crashloop_db_policies": backend_crashloop_db_policies,
            "backend_crashloop_findings": backend_crashloop_findings,
        }
