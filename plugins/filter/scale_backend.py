"""Pure decisions of the scale_backend role: what to scale to, what to record, what to patch.

Every function takes the dicts that kubernetes.core.k8s_info returns (or plain values) and
returns a plan; the role only reads the cluster, calls these, and applies the plan. So every
decision, and every refusal message, is unit-tested without a cluster
(tests/unit/test_scale_backend_filter.py).
"""

from __future__ import annotations

import importlib.util
import re
from decimal import Decimal
from pathlib import Path

DOCUMENTATION = """
name: scale_backend
short_description: Planning filters for the scale_backend role
description:
  - C(scale_backend_quantity) turns a Kubernetes quantity (C(500m), C(1.5), C(512Mi), C(1e3)) into a number.
  - C(scale_backend_state) summarises a workload (replicas, recorded stop count, one container's resources).
  - C(scale_backend_target) computes the replica count for an absolute or relative request, within bounds.
  - C(scale_backend_stop_plan) and C(scale_backend_restore_plan) decide what stop and restore do.
  - C(scale_backend_hpa_definition) builds an autoscaling/v2 HorizontalPodAutoscaler for a workload.
  - C(scale_backend_hpa_summary) reads min, max and the target percentages back from one.
  - C(scale_backend_resources_plan) decides a container's new requests/limits and refuses decreases.
"""

_QUANTITY = re.compile(r"^(\+?(?:[0-9]+\.?[0-9]*|\.[0-9]+))([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$")
_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
# (resource field, resource name, the variable that sets it), in the order messages list them.
RESOURCE_FIELDS = [
    ("requests", "cpu", "scale_backend_cpu_request"),
    ("limits", "cpu", "scale_backend_cpu_limit"),
    ("requests", "memory", "scale_backend_memory_request"),
    ("limits", "memory", "scale_backend_memory_limit"),
]


# _get is the shared one (plugins/module_utils/saasodoo_k8s_health.py), loaded by path: on the
# controller a filter plugin cannot import project module_utils as ansible.module_utils.<name>.
_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_health", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_k8s_health.py")
_k8s_health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_k8s_health)
_get = _k8s_health.dig


def _parse(value) -> Decimal:
    """Decimal value of a quantity; ValueError with the offending text when it is not one."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi)")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number.scaleb(int(suffix[1:]))


def scale_backend_quantity(value):
    """'500m' -> 0.5, '1Gi' -> 1073741824.0, '1e3' -> 1000.0 (a float, for comparisons in templates)."""
    return float(_parse(value))


def _ref(workload):
    return f"{workload.get('kind', '?')}/{_get(workload, 'metadata', 'namespace', default='')}/" \
           f"{_get(workload, 'metadata', 'name', default='?')}"


def _containers(workload):
    return _get(workload, "spec", "template", "spec", "containers", default=[]) or []


def _resources(container):
    res = (container or {}).get("resources") or {}
    return {"limits": dict(res.get("limits") or {}), "requests": dict(res.get("requests") or {})}


def scale_backend_state(workload, annotation="saasodoo.io/replicas-before-stop", container=""):
    """What the role reports as before/after: replicas, the recorded stop count, a container's resources."""
    spec_replicas = _get(workload, "spec", "replicas")
    recorded = (_get(workload, "metadata", "annotations", default={}) or {}).get(annotation)
    containers = _containers(workload)
    chosen = next((c for c in containers if c.get("name") == container), None) if container else (
        containers[0] if containers else None)
    return {
        "ref": _ref(workload),
        "replicas": 1 if spec_replicas is None else int(spec_replicas),
        "ready_replicas": int(_get(workload, "status", "readyReplicas", default=0)),
        "recorded_replicas": int(recorded) if str(recorded or "").isdigit() else None,
        "container": chosen.get("name") if chosen else None,
        "resources": _resources(chosen) if chosen else None,
    }


def scale_backend_target(current, replicas=None, delta=None, minimum=1, maximum=10, clamp=True):
    """Replica count for an absolute (replicas) or relative (delta) request, held within [minimum, maximum].

    Returns {'requested', 'target', 'clamped', 'error', 'message'}; a non-empty error means refuse.
    """
    out = {"requested": None, "target": None, "clamped": False, "error": "", "message": ""}
    current = int(current or 0)
    if replicas is not None and delta is not None:
        out["error"] = ("give either scale_backend_replicas (absolute) or scale_backend_delta (relative), not both "
                        f"(got scale_backend_replicas={replicas}, scale_backend_delta={delta})")
        return out
    if replicas is None and delta is None:
        out["error"] = ("give scale_backend_replicas (absolute count) or scale_backend_delta "
                        "(relative, e.g. +2 or -1)")
        return out
    minimum, maximum = int(minimum), int(maximum)
    if minimum < 0 or minimum > maximum:
        out["error"] = (f"scale_backend_min_replicas={minimum} and scale_backend_max_replicas={maximum} "
                        "make no range (0 <= min <= max)")
        return out
    if replicas is not None:
        requested = int(replicas)
        how = f"scale_backend_replicas={requested}"
    else:
        requested = current + int(delta)
        how = f"{current} {'+' if int(delta) >= 0 else '-'} {abs(int(delta))} (scale_backend_delta) = {requested}"
    out["requested"] = requested
    bound = None
    if requested > maximum:
        bound = ("above", "scale_backend_max_replicas", maximum)
    elif requested < minimum:
        bound = ("below", "scale_backend_min_replicas", minimum)
    if bound and not clamp:
        out["error"] = (f"{how} is {bound[0]} {bound[1]}={bound[2]}; refused "
                        "(set scale_backend_clamp: true to scale to the bound instead)")
        return out
    out["target"] = bound[2] if bound else requested
    out["clamped"] = bool(bound)
    if bound:
        out["message"] = f"{how} is {bound[0]} {bound[1]}={bound[2]}: clamped to {bound[2]}"
    else:
        out["message"] = f"{how}"
    return out


def scale_backend_stop_plan(workload, annotation="saasodoo.io/replicas-before-stop"):
    """{'action': 'stop'|'none', 'record': count to record, 'message'} for stop mode."""
    state = scale_backend_state(workload, annotation)
    current, recorded = state["replicas"], state["recorded_replicas"]
    if current == 0 and recorded is not None:
        return {"action": "none", "record": recorded,
                "message": f"is already stopped (0 replicas); {recorded} recorded in {annotation}, kept."}
    if current == 0:
        return {"action": "none", "record": None,
                "message": f"is already at 0 replicas and no count is recorded; nothing to record "
                           "(restore mode will need scale_backend_replicas)."}
    note = f" (replaces the stale record {recorded})" if recorded is not None and recorded != current else ""
    return {"action": "stop", "record": current,
            "message": f"scaled from {current} to 0 to stop writes; {current} recorded in {annotation}{note}."}


def scale_backend_restore_plan(workload, annotation="saasodoo.io/replicas-before-stop", replicas=None,
                               minimum=1, maximum=10, clamp=True):
    """{'action': 'restore'|'none', 'target', 'source', 'error', 'message'} for restore mode.

    The recorded count wins; scale_backend_replicas is the fallback when nothing is recorded.
    """
    state = scale_backend_state(workload, annotation)
    current, recorded = state["replicas"], state["recorded_replicas"]
    out = {"action": "none", "target": current, "source": None, "error": "", "message": ""}
    raw = (_get(workload, "metadata", "annotations", default={}) or {}).get(annotation)
    if raw is not None and recorded is None:
        out["error"] = (f"annotation {annotation}={raw!r} is not a replica count; "
                        "fix or remove it, or pass scale_backend_replicas after removing it")
        return out
    if recorded is not None:
        out.update(action="restore", target=recorded, source="recorded")
        out["message"] = (f"scaled from {current} back to the recorded {recorded}; {annotation} removed."
                          if current != recorded else
                          f"already runs the recorded {recorded} replicas; {annotation} removed.")
        return out
    if replicas is None:
        out["message"] = (f"nothing recorded in {annotation} (never stopped by this role, or already "
                          f"restored); left at {current} replicas. Pass scale_backend_replicas to choose a count.")
        return out
    target = scale_backend_target(current, replicas=replicas, minimum=minimum, maximum=maximum, clamp=clamp)
    if target["error"]:
        out["error"] = target["error"]
        return out
    out.update(action="restore" if target["target"] != current else "none", target=target["target"],
               source="scale_backend_replicas")
    out["message"] = (f"nothing recorded in {annotation}; scaled from {current} to {target['target']} "
                      f"as scale_backend_replicas asks ({target['message']})."
                      if target["target"] != current else
                      f"nothing recorded in {annotation}; already at {current} replicas as "
                      "scale_backend_replicas asks.")
    return out


def scale_backend_hpa_definition(workload, minimum=1, maximum=10, cpu_percent=70, memory_percent=0, labels=None):
    """An autoscaling/v2 HorizontalPodAutoscaler named like the workload and aimed at it."""
    metrics = []
    for name, percent in (("cpu", cpu_percent), ("memory", memory_percent)):
        if percent:
            metrics.append({"type": "Resource", "resource": {
                "name": name, "target": {"type": "Utilization", "averageUtilization": int(percent)}}})
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": workload["name"], "namespace": workload["namespace"], "labels": dict(labels or {})},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": workload["kind"], "name": workload["name"]},
            "minReplicas": int(minimum),
            "maxReplicas": int(maximum),
            "metrics": metrics,
        },
    }


def scale_backend_hpa_summary(hpa):
    """{'name', 'min', 'max', 'cpu_percent', 'memory_percent', 'target'} of an HPA, or None without one."""
    if not hpa:
        return None
    percents = {}
    for metric in _get(hpa, "spec", "metrics", default=[]) or []:
        if metric.get("type") == "Resource":
            percents[_get(metric, "resource", "name")] = _get(metric, "resource", "target", "averageUtilization")
    target = _get(hpa, "spec", "scaleTargetRef", default={}) or {}
    return {
        "name": _get(hpa, "metadata", "name"),
        "min": _get(hpa, "spec", "minReplicas", default=1),
        "max": _get(hpa, "spec", "maxReplicas"),
        "cpu_percent": percents.get("cpu"),
        "memory_percent": percents.get("memory"),
        "target": f"{target.get('kind')}/{target.get('name')}",
    }


def scale_backend_resources_plan(workload, container="", cpu_request="", cpu_limit="", memory_request="",
                                 memory_limit="", allow_decrease=False):
    """Decide one container's new requests/limits.

    Empty values leave a field alone. A lower value than today's is refused unless allow_decrease;
    a limit where there was none counts as lowering (from unlimited). Returns
    {'container', 'containers', 'before', 'after', 'changes', 'decreases', 'changed', 'patch', 'error'};
    the patch is a strategic merge patch that touches only that container.
    """
    wanted = {"scale_backend_cpu_request": cpu_request, "scale_backend_cpu_limit": cpu_limit,
              "scale_backend_memory_request": memory_request, "scale_backend_memory_limit": memory_limit}
    containers = _containers(workload)
    names = [c.get("name") for c in containers]
    out = {"container": None, "containers": names, "before": None, "after": None, "changes": [],
           "decreases": [], "changed": False, "patch": {}, "error": ""}
    chosen = next((c for c in containers if c.get("name") == container), None) if container else (
        containers[0] if containers else None)
    if chosen is None:
        out["error"] = (f"no container named {container!r} (scale_backend_container); "
                        f"its containers: {', '.join(names) or 'none'}")
        return out
    if not any(str(v or "").strip() for v in wanted.values()):
        out["error"] = ("resources mode needs at least one of scale_backend_cpu_request, scale_backend_cpu_limit, "
                        "scale_backend_memory_request, scale_backend_memory_limit")
        return out
    out["container"] = chosen["name"]
    before = _resources(chosen)
    after = {"limits": dict(before["limits"]), "requests": dict(before["requests"])}
    patch_res: dict = {}
    errors = []
    for field, name, var in RESOURCE_FIELDS:
        new = str(wanted[var] or "").strip()
        if not new:
            continue
        try:
            new_value = _parse(new)
        except ValueError as exc:
            errors.append(f"{var}: {exc}")
            continue
        old = before[field].get(name)
        label = f"{name} {field[:-1]}"
        if old is not None:
            old_value = _parse(old)
            if old_value == new_value:
                continue
            change = f"{label} {old} -> {new}"
            if new_value < old_value:
                out["decreases"].append(f"{change} ({var})")
        else:
            change = f"{label} unset -> {new}"
            if field == "limits":
                out["decreases"].append(f"{label} unlimited -> {new} ({var})")
        out["changes"].append(change)
        after[field][name] = new
        patch_res.setdefault(field, {})[name] = new
    # The API refuses a request above its limit; say so before asking it.
    for name in ("cpu", "memory"):
        req, lim = after["requests"].get(name), after["limits"].get(name)
        try:
            if req is not None and lim is not None and _parse(req) > _parse(lim):
                errors.append(f"the {name} request {req} would exceed the {name} limit {lim} of container "
                              f"{chosen['name']}; raise scale_backend_{name}_limit too")
        except ValueError:
            pass  # already reported above
    if out["decreases"] and not allow_decrease:
        errors.append(f"refusing to lower resources of container {chosen['name']}: "
                      f"{'; '.join(out['decreases'])}. The guide says increase; "
                      "set scale_backend_allow_decrease: true if lowering is really meant")
    out["before"], out["after"] = before, after
    if errors:
        out["error"] = "; ".join(errors)
        out["changes"] = []
        return out
    out["changed"] = bool(patch_res)
    if patch_res:
        out["patch"] = {"spec": {"template": {"spec": {"containers": [
            {"name": chosen["name"], "resources": patch_res}]}}}}
    return out


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "scale_backend_quantity": scale_backend_quantity,
            "scale_backend_state": scale_backend_state,
            "scale_backend_target": scale_backend_target,
            "scale_backend_stop_plan": scale_backend_stop_plan,
            "scale_backend_restore_plan": scale_backend_restore_plan,
            "scale_backend_hpa_definition": scale_backend_hpa_definition,
            "scale_backend_hpa_summary": scale_backend_hpa_summary,
            "scale_backend_resources_plan": scale_backend_resources_plan,
        }
