# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks: the Kubernetes health judgements, written once.
#
# Pure functions over the dicts the Kubernetes API returns (k8s_info's `resources`, or the
# python client's objects sanitised to dicts). Only the standard library: the same file serves
#  - the modules (saasodoo_snapshot, saasodoo_tenant_check), which import it as
#    `ansible.module_utils.saasodoo_k8s_health` (AnsiballZ ships it, ansible.cfg's module_utils),
#  - the filter plugins (plugins/filter/saasodoo.py, scale_backend.py), which load it by path on
#    the controller,
# so a pod, a workload or a node gets the same verdict from a playbook's filter and a module.
# Unit tests: tests/unit/test_k8s_health.py.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from datetime import datetime, timezone

# Waiting reasons that mean the container cannot run, not that it is merely starting.
BAD_WAITING_REASONS = frozenset((
    "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
    "CreateContainerError", "InvalidImageName", "RunContainerError",
))


def dig(obj, *path, **kw):
    """obj[path[0]][path[1]]...; `default` (None) where a level is missing, null or not a dict."""
    default = kw.get("default")
    for key in path:
        if not isinstance(obj, dict):
            return default
        obj = obj.get(key)
        if obj is None:
            return default
    return obj


def workload_ref(obj):
    """'Kind/namespace/name' of an object."""
    meta = obj.get("metadata", {})
    return "%s/%s/%s" % (obj.get("kind", "?"), meta.get("namespace", ""), meta.get("name", "?"))


# ------------------------------------------------------------------------ quantities and times

_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIXES = {
    None: 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40, "Pi": 2.0 ** 50, "Ei": 2.0 ** 60,
}


def parse_quantity(value):
    """A Kubernetes quantity ('500m', '1.5', '128Mi', '1G', '1e3', 2) as a float in base units (cores, bytes).

    None or '' (unset) -> None; anything else that is not a quantity -> ValueError naming it.
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = None if isinstance(value, bool) else _QUANTITY.match(("%s" % value).strip())
    if not match:
        raise ValueError("%r is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi)" % (value,))
    if match.group(2):
        return float(match.group(1) + match.group(2))
    return float(match.group(1)) * _SUFFIXES[match.group(3)]


def pod_requests(pod):
    """{'cpu': cores, 'memory': bytes} the scheduler reserves for a pod.

    max(containers + sidecars, each init container with the sidecars started before it) + overhead;
    a sidecar is an init container with restartPolicy Always. ValueError on a malformed quantity.
    """
    spec = pod.get("spec") or {}

    def one(container, key):
        return parse_quantity(dig(container, "resources", "requests", key)) or 0.0

    out = {}
    for key in ("cpu", "memory"):
        main = sum(one(c, key) for c in spec.get("containers") or [])
        sidecars, init_max = 0.0, 0.0
        for c in spec.get("initContainers") or []:
            if c.get("restartPolicy") == "Always":
                sidecars += one(c, key)
            else:
                init_max = max(init_max, sidecars + one(c, key))
        out[key] = max(main + sidecars, init_max) + (parse_quantity((spec.get("overhead") or {}).get(key)) or 0.0)
    return out


_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value):
    """An API time ('2026-01-01T10:00:00Z', any fraction, any offset) as an aware datetime; None if unset or bad.

    A time without an offset is taken as UTC.
    """
    if not value:
        return None
    text = ("%s" % value).strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        # Python < 3.11 takes only 3 or 6 fraction digits; the API may send up to 9.
        try:
            parsed = datetime.fromisoformat(_FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, 1))
        except ValueError:
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def event_last_seen(event):
    """When an Event (core/v1 or events.k8s.io) last happened, as an aware datetime, or None."""
    return (parse_time(dig(event, "series", "lastObservedTime")) or parse_time(event.get("lastTimestamp"))
            or parse_time(event.get("eventTime")) or parse_time(dig(event, "metadata", "creationTimestamp")))


def selector_matches(selector, labels):
    """Whether a LabelSelector (matchLabels and matchExpressions) selects these labels; empty selects nothing."""
    selector = selector or {}
    labels = labels or {}
    match = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in expressions:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selector_strings(selector):
    """A LabelSelector as API label selector terms, ANDed: matchLabels as C(k=v), matchExpressions as
    C(k in (a,b)), C(k notin (a,b)), C(k), C(!k). An empty selector gives [] (which would list
    everything: callers must treat it as selecting nothing)."""
    selector = selector or {}
    out = ["%s=%s" % (k, v) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), sorted(expr.get("values") or [])
        if op == "In":
            out.append("%s in (%s)" % (key, ",".join(values)))
        elif op == "NotIn":
            out.append("%s notin (%s)" % (key, ",".join(values)))
        elif op == "Exists":
            out.append(key)
        elif op == "DoesNotExist":
            out.append("!%s" % key)
    return out


def owned_pods(workload, pods):
    """The pods a workload really has: in its namespace, selected by its whole selector (matchLabels and
    matchExpressions; an empty one selects nothing) and controlled by it - a StatefulSet's or DaemonSet's
    pods name it (its uid when known) as their controller, a Deployment's name one of its ReplicaSets
    (<name>-<pod-template-hash>). Another workload whose labels overlap, or a bare pod that happens to
    match, is never counted (nor restarted, nor deleted) as this one's."""
    meta = (workload or {}).get("metadata") or {}
    kind, name, namespace, uid = (workload or {}).get("kind"), meta.get("name"), meta.get("namespace"), meta.get("uid")
    selector = ((workload or {}).get("spec") or {}).get("selector") or {}
    out = []
    for pod in pods or []:
        pmeta = pod.get("metadata") or {}
        if pmeta.get("namespace") != namespace or not selector_matches(selector, pmeta.get("labels")):
            continue
        owner = next((o for o in pmeta.get("ownerReferences") or [] if o.get("controller")), None)
        if owner is None:
            continue
        if kind == "Deployment":
            template_hash = (pmeta.get("labels") or {}).get("pod-template-hash")
            if owner.get("kind") != "ReplicaSet" or not template_hash \
                    or owner.get("name") != "%s-%s" % (name, template_hash):
                continue
        elif owner.get("kind") != kind or owner.get("name") != name or (uid and owner.get("uid") != uid):
            continue
        out.append(pod)
    return out


# ------------------------------------------------------------------------ verdicts

def pod_health(pod, restart_threshold=3):
    """One pod's verdict: name, namespace, node, phase, ready, restarts, terminating, last_termination,
    waiting_reason (of the first waiting container), healthy and reasons."""
    meta = pod.get("metadata", {})
    status = pod.get("status", {}) or {}
    phase = status.get("phase", "Unknown")
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions", []) or []}
    ready = conditions.get("Ready") == "True"
    reasons = []
    restarts = 0
    last_termination = None
    waiting_reason = None
    for cs in status.get("containerStatuses", []) or []:
        restarts += int(cs.get("restartCount", 0) or 0)
        waiting = dig(cs, "state", "waiting") or {}
        if waiting.get("reason") and waiting_reason is None:
            waiting_reason = waiting["reason"]
        if waiting.get("reason") in BAD_WAITING_REASONS:
            reasons.append("container %s is waiting in %s" % (cs.get("name"), waiting["reason"]))
        terminated = dig(cs, "lastState", "terminated") or dig(cs, "state", "terminated")
        if terminated:
            last_termination = {
                "container": cs.get("name"),
                "reason": terminated.get("reason", ""),
                "exit_code": terminated.get("exitCode"),
                "finished_at": terminated.get("finishedAt"),
            }
    if last_termination and last_termination["reason"] == "OOMKilled":
        reasons.append("container %s was OOMKilled (exit code %s)" % (last_termination["container"],
                                                                      last_termination["exit_code"]))
    if phase in ("Failed", "Unknown"):
        reasons.append("pod phase is %s" % phase)
    elif phase == "Pending":
        reasons.append("pod is Pending (not scheduled or not started)")
    elif phase == "Running" and not ready:
        reasons.append("pod is Running but not Ready")
    if restarts >= restart_threshold:
        reasons.append("%s restarts (threshold %s)" % (restarts, restart_threshold))
    if meta.get("deletionTimestamp"):
        # A terminating pod is on its way out; it says nothing about the workload's health.
        reasons = []
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "node": dig(pod, "spec", "nodeName"),
        "phase": phase,
        "ready": ready,
        "restarts": restarts,
        "terminating": bool(meta.get("deletionTimestamp")),
        "last_termination": last_termination,
        "waiting_reason": waiting_reason,
        "healthy": not reasons,
        "reasons": reasons,
    }


def rollout_status(workload):
    """{'complete': bool, 'message': str} (and 'failed' past the progress deadline), as `kubectl rollout status` judges."""
    kind = workload.get("kind")
    meta = workload.get("metadata", {})
    spec = workload.get("spec", {}) or {}
    status = workload.get("status", {}) or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return {"complete": False, "message": "waiting for the controller to observe the new spec"}
    if kind == "Deployment":
        want = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        total = status.get("replicas", 0)
        available = status.get("availableReplicas", 0)
        ready = status.get("readyReplicas", 0)
        for cond in status.get("conditions", []) or []:
            if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
                return {"complete": False, "failed": True,
                        "message": "rollout exceeded its progress deadline: %s" % cond.get("message", "")}
        if updated < want:
            return {"complete": False, "message": "%s of %s replicas updated" % (updated, want)}
        if total > updated:
            return {"complete": False, "message": "%s old replicas pending termination" % (total - updated)}
        if available < updated or ready < want:
            return {"complete": False, "message": "%s of %s updated replicas available" % (min(available, ready), want)}
        return {"complete": True, "message": "%s of %s replicas updated and available" % (want, want)}
    if kind == "StatefulSet":
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0)
        updated = status.get("updatedReplicas", 0)
        if updated < want:
            return {"complete": False, "message": "%s of %s replicas updated" % (updated, want)}
        if ready < want:
            return {"complete": False, "message": "%s of %s replicas ready" % (ready, want)}
        if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
            return {"complete": False, "message": "waiting for the update revision to become current"}
        return {"complete": True, "message": "%s of %s replicas updated and ready" % (want, want)}
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled", 0)
        updated = status.get("updatedNumberScheduled", 0)
        available = status.get("numberAvailable", 0)
        if updated < want:
            return {"complete": False, "message": "%s of %s pods updated" % (updated, want)}
        if available < want:
            return {"complete": False, "message": "%s of %s updated pods available" % (available, want)}
        return {"complete": True, "message": "%s of %s pods updated and available" % (want, want)}
    return {"complete": False, "message": "unsupported kind %s" % kind}


def workload_health(workload, pod_reports):
    """A Deployment, StatefulSet or DaemonSet judged with its pods' pod_health reports.

    {'ref', 'kind', 'name', 'namespace', 'replicas', 'ready_replicas', 'healthy', 'reasons',
    'crashloop', 'oomkilled', 'pods' (the reports), 'rollout'}; terminating pods do not count.
    """
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
        reasons.append("%s of %s replicas ready" % (ready, want))
    live = [p for p in pod_reports if not p["terminating"]]
    for p in live:
        for reason in p["reasons"]:
            reasons.append("pod %s: %s" % (p["name"], reason))
    return {
        "ref": workload_ref(workload),
        "kind": kind,
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "replicas": want,
        "ready_replicas": ready,
        "healthy": not reasons,
        "reasons": reasons,
        "crashloop": any(any("CrashLoopBackOff" in r for r in p["reasons"]) for p in live),
        "oomkilled": any(p["last_termination"] and p["last_termination"]["reason"] == "OOMKilled" for p in live),
        "pods": list(pod_reports),
        "rollout": rollout_status(workload),
    }


def node_health(node):
    """{'name', 'ready', 'healthy', 'reasons', 'pressure', 'unschedulable', 'conditions' (type -> status)}."""
    conditions = {c.get("type"): c for c in dig(node, "status", "conditions", default=[]) or []}
    ready_cond = conditions.get("Ready", {})
    ready = ready_cond.get("status") == "True"
    reasons = []
    if not ready:
        reasons.append(("node is NotReady (%s: %s)" % (ready_cond.get("reason") or "no Ready condition",
                                                       ready_cond.get("message", ""))).strip())
    pressure = [t for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
                if conditions.get(t, {}).get("status") == "True"]
    reasons.extend("node reports %s" % t for t in pressure)
    unschedulable = bool(dig(node, "spec", "unschedulable"))
    if unschedulable:
        reasons.append("node is cordoned (unschedulable)")
    return {
        "name": dig(node, "metadata", "name"),
        "ready": ready,
        "healthy": not reasons,
        "reasons": reasons,
        "pressure": pressure,
        "unschedulable": unschedulable,
        "conditions": {t: c.get("status") for t, c in conditions.items()},
    }


# --------------------------------------------------------------------------------------------
# Literal env values: a password written into a pod spec must not travel with a health read.

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
# Where each kind keeps its pod spec.
POD_SPEC_PATHS = {"Pod": ("spec",), "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
                  "PodTemplate": ("template", "spec")}
for _kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"):
    POD_SPEC_PATHS[_kind] = ("spec", "template", "spec")


def _without_env_values(pod_spec, keep=()):
    spec = dict(pod_spec)
    for field in CONTAINER_LISTS:
        containers = spec.get(field)
        if isinstance(containers, list):
            spec[field] = [dict(c, env=[dict(e, value=None) if "value" in e and e.get("name") not in keep else e
                                        for e in c["env"]])
                           if isinstance(c, dict) and isinstance(c.get("env"), list) else c for c in containers]
    return spec


def _replace_at(obj, path, change):
    """obj with the dict at path replaced by change(it), copying only along the path."""
    if not path:
        return change(obj)
    if not isinstance(obj, dict) or not isinstance(obj.get(path[0]), dict):
        return obj
    out = dict(obj)
    out[path[0]] = _replace_at(obj[path[0]], path[1:], change)
    return out


def hide_env_values(obj, keep=(), kind=None):
    """A pod or a workload (by its kind, or `kind`) with every container's literal env value replaced
    by None - names and valueFrom kept, and the values of the env names in `keep`. Anything else is
    returned as it is; the input is not modified."""
    if not isinstance(obj, dict):
        return obj
    path = POD_SPEC_PATHS.get(obj.get("kind") or kind)
    keep = frozenset(keep or ())
    return _replace_at(obj, path, lambda spec: _without_env_values(spec, keep)) if path else obj

