"""frontend_not_loading.yml's judgement: the frontend's pods, route, static assets, volumes and its way to the API.

Pure functions over what kubernetes.core.k8s_info, kubernetes.core.k8s_log and saasodoo_http_probe return,
unit-tested in tests/unit/test_frontend_not_loading_filter.py. The route checks return the exact patch (or
object) that restores the desired state, so the runbook applies only what drifted.
"""

from __future__ import annotations

import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

DOCUMENTATION = """
name: frontend_not_loading
short_description: Diagnosis filters of the frontend_not_loading runbook
description:
  - C(frontend_asset_refs) lists the local static assets an HTML page refers to (script src, link href, img src).
  - C(frontend_pods) judges the frontend workload with its pods.
  - C(frontend_route) compares the frontend's Service, Ingress rule and Traefik IngressRoute with the desired route
    and returns findings plus the patches that restore it.
  - C(frontend_volumes) checks the volumes the pod template declares against what exists and the pods' state.
  - C(frontend_logs) scans pod logs for error patterns and says honestly when there are no logs.
  - C(frontend_assets) and C(frontend_reachability) judge the index, the assets and the API the frontend points at.
"""

_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_health", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_k8s_health.py")
k8s_health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s_health)
dig = k8s_health.dig

COMPONENT = "frontend"
# Waiting reasons of a pod that cannot start because of its volumes.
VOLUME_WAITING = ("ContainerCreating", "CreateContainerConfigError")


def _finding(code, severity, message, evidence=None, remediation=None, ref=None, component=COMPONENT):
    return {"code": code, "severity": severity, "message": message, "component": component, "ref": ref,
            "evidence": evidence if evidence is not None else [], "remediation": remediation}


# ------------------------------------------------------------------------------------ assets

class _Refs(HTMLParser):
    ATTRS = {"script": "src", "link": "href", "img": "src", "source": "src"}

    def __init__(self):
        HTMLParser.__init__(self)
        self.refs = []

    def handle_starttag(self, tag, attrs):
        wanted = self.ATTRS.get(tag)
        if wanted:
            for name, value in attrs:
                if name == wanted and value:
                    self.refs.append(value)


def frontend_asset_refs(html, prefix="/static/", base_url=""):
    """Local asset paths (starting with prefix) an HTML page refers to, in order, without duplicates."""
    parser = _Refs()
    try:
        parser.feed(html or "")
    except Exception:  # noqa: BLE001 - a broken page has the references found so far
        pass
    base_host = urlsplit(base_url).netloc if base_url else ""
    out = []
    for ref in parser.refs:
        parts = urlsplit(ref)
        if parts.scheme and parts.scheme not in ("http", "https"):
            continue
        if parts.netloc and parts.netloc != base_host:
            continue  # another site (a CDN): not this frontend's to serve
        path = parts.path if parts.path.startswith("/") else "/" + parts.path
        if path.startswith(prefix) and path not in out:
            out.append(path)
    return out


def frontend_assets(index, assets, config=None, prefix="/static/"):
    """Findings from the index probe, the asset probes (loop results, item = path) and the config probe."""
    findings = []
    index = index or {}
    statuses = index.get("statuses") or {}
    if not index.get("ok"):
        body = (index.get("body") or "").strip().splitlines()
        findings.append(_finding(
            "FRONTEND_INDEX_UNAVAILABLE", "critical",
            "The frontend's page %s does not load: %s" % (
                index.get("url"), ", ".join("HTTP %s x%d" % kv for kv in sorted(statuses.items()))
                or "; ".join(index.get("error_samples") or ["no answer"])),
            ["statuses: %s" % statuses] + (["answer: %s" % body[0][:200]] if body else [])
            + list(index.get("error_samples") or [])[:2],
            "bring the frontend's pods back (scale, restart) and check its route"))
        return {"findings": findings, "assets": [], "missing": []}
    checked = []
    for r in assets or []:
        if r.get("skipped"):
            continue
        checked.append({"path": r.get("item"), "ok": bool(r.get("ok")), "statuses": r.get("statuses") or {},
                        "errors": r.get("error_samples") or []})
    missing = [a for a in checked if not a["ok"]]
    if not checked:
        findings.append(_finding(
            "FRONTEND_NO_ASSETS_REFERENCED", "medium",
            "The frontend's page refers to no %s asset: it cannot render the application" % prefix,
            [(index.get("body") or "")[:300]], "redeploy the frontend (its build output is incomplete)"))
    if missing:
        findings.append(_finding(
            "FRONTEND_STATIC_ASSET_MISSING", "high",
            "Static assets of the frontend do not load: %s (the page stays blank)" % ", ".join(
                "%s (%s)" % (a["path"], ", ".join("HTTP %s" % s for s in sorted(a["statuses"])) or "no answer")
                for a in missing),
            ["%s: %s %s" % (a["path"], a["statuses"], "; ".join(a["errors"][:1])) for a in checked],
            "rolling restart of the frontend (stale pods), then verify the assets; redeploy if they stay missing"))
    config_report = None
    if config is not None and not config.get("skipped"):
        config_report = {"ok": bool(config.get("ok")), "statuses": config.get("statuses") or {}}
    return {"findings": findings, "assets": checked, "missing": [a["path"] for a in missing],
            "config": config_report}


# ------------------------------------------------------------------------------------ pods

def frontend_pods(workload, pods=None, restart_threshold=3, desired_replicas=1):
    """{exists, health, findings}: the workload judged with its pods."""
    if not workload:
        return {"exists": False, "health": None, "findings": [_finding(
            "FRONTEND_MISSING", "critical", "The frontend workload does not exist", [],
            "redeploy the platform's frontend")]}
    reports = [k8s_health.pod_health(p, restart_threshold) for p in pods or []]
    health = k8s_health.workload_health(workload, reports)
    ref = health["ref"]
    findings = []
    bad = ["%s: %s" % (p["name"], ", ".join(p["reasons"])) for p in reports if p["reasons"] and not p["terminating"]]
    if health["replicas"] == 0 and desired_replicas > 0:
        findings.append(_finding(
            "FRONTEND_SCALED_TO_ZERO", "critical",
            "%s is scaled to 0 replicas (desired %d): nothing serves the frontend" % (ref, desired_replicas),
            ["replicas 0, desired %d" % desired_replicas], "scale back to the desired replicas", ref))
    elif not health["healthy"]:
        findings.append(_finding(
            "FRONTEND_PODS_UNHEALTHY", "critical" if health["ready_replicas"] == 0 else "high",
            "%s is not healthy: %s" % (ref, "; ".join(health["reasons"][:3])), bad or health["reasons"],
            "rolling restart (restart_service)", ref))
    return {"exists": True, "health": health, "findings": findings}


# ------------------------------------------------------------------------------------ logs

def frontend_logs(results, patterns=None, max_lines=5):
    """Scan kubernetes.core.k8s_log results (loop, item = pod name) for error patterns.

    Pods whose logs cannot be read (a runtime without logs, a kubelet that does not answer) are reported as
    such: no logs is not the same as no errors.
    """
    compiled = [re.compile(p) for p in patterns or []]
    pods, unavailable, matches = [], [], []
    for r in results or []:
        if r.get("skipped"):
            continue
        name = r.get("item")
        if r.get("failed") or r.get("log_lines") is None:
            reason = (r.get("msg") or "no logs returned").strip().splitlines()
            unavailable.append({"pod": name, "reason": (reason[0] if reason else "no logs")[:240]})
            continue
        lines = r.get("log_lines") or []
        hits = [line for line in lines if any(c.search(line) for c in compiled)]
        pods.append({"pod": name, "lines": len(lines), "matches": len(hits)})
        matches.extend("%s: %s" % (name, line[:240]) for line in hits[:max_lines])
    findings = []
    if matches:
        findings.append(_finding(
            "FRONTEND_LOG_ERRORS", "medium",
            "The frontend's logs show errors (%d line(s) matching %s)" % (len(matches), ", ".join(patterns or [])),
            matches[:max_lines * 2], "read the errors; a restart helps only for stale pods"))
    if unavailable and not pods:
        findings.append(_finding(
            "FRONTEND_LOGS_UNAVAILABLE", "low",
            "No logs could be read from the frontend's pods (%d pod(s)): the diagnosis goes without them"
            % len(unavailable), ["%s: %s" % (u["pod"], u["reason"]) for u in unavailable[:3]],
            "read the logs where the runtime keeps them (centralized logging)"))
    return {"read": pods, "unavailable": unavailable, "findings": findings}


# ------------------------------------------------------------------------------------ route

def _selector(workload):
    return dict(dig(workload, "spec", "selector", "matchLabels", default={}) or {})


def _with_nulls(desired, live):
    """A JSON merge patch of a map: the desired keys, and null for every live key not desired."""
    patch = dict(desired)
    for key in live or {}:
        if key not in desired:
            patch[key] = None
    return patch


def _ingress_backend_ok(rule, service, port_name, port):
    for path in dig(rule, "http", "paths", default=[]) or []:
        svc = dig(path, "backend", "service", default={}) or {}
        if svc.get("name") != service:
            continue
        p = svc.get("port") or {}
        if p.get("name") == port_name or (p.get("number") is not None and int(p["number"]) == int(port)):
            if path.get("path", "/") == "/":
                return True
    return False


def _desired_rule(desired):
    return {"host": desired["host"], "http": {"paths": [{
        "path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": desired["service"]["name"], "port": {"name": desired["service"]["port_name"]}}},
    }]}}


def _route_matches_host(route, host):
    return ("Host(`%s`)" % host) in (route.get("match") or "")


def _desired_route(desired):
    return {"kind": "Rule", "match": "Host(`%s`)" % desired["host"], "services": [{
        "name": desired["service"]["name"], "namespace": desired["namespace"], "port": int(desired["service"]["port"])}]}


def frontend_route(workload, services=None, ingresses=None, ingressroutes=None, endpointslices=None, desired=None,
                   ingressroute_api_available=True):
    """Compare the live route of the frontend with the desired one.

    desired: {namespace, host, labels, service: {name, port, port_name, protocol}, ingress: {name, class, tls},
    ingressroute: {enabled, name, entry_points, tls_secret}}. Returns {findings, changes (each {kind, name, action,
    why, definition, merge_type}), service, ingress, ingressroute, endpoints}.
    """
    d = desired or {}
    ns = d["namespace"]
    svc_d = d["service"]
    findings, changes = [], []
    service = next((s for s in services or [] if dig(s, "metadata", "name") == svc_d["name"]), None)
    selector = _selector(workload) if workload else {}
    desired_ports = [{"name": svc_d["port_name"], "port": int(svc_d["port"]), "targetPort": svc_d["port_name"],
                      "protocol": svc_d.get("protocol", "TCP")}]
    svc_ref = "Service/%s/%s" % (ns, svc_d["name"])
    report = {"service": None, "ingress": None, "ingressroute": None, "endpoints": None}

    # Service
    if service is None:
        findings.append(_finding("FRONTEND_SERVICE_MISSING", "critical",
                                 "%s does not exist: the ingress has nowhere to send the frontend's traffic" % svc_ref,
                                 [], "reapply the Service from desired state", svc_ref))
        if workload:
            changes.append({"kind": "Service", "name": svc_d["name"], "action": "create", "why": "missing",
                            "merge_type": "merge", "definition": {
                                "apiVersion": "v1", "kind": "Service",
                                "metadata": {"name": svc_d["name"], "namespace": ns, "labels": dict(
                                    dig(workload, "spec", "template", "metadata", "labels", default={}) or {},
                                    **d.get("labels", {}))},
                                "spec": {"type": "ClusterIP", "selector": selector, "ports": desired_ports}}})
    else:
        live_selector = dig(service, "spec", "selector", default={}) or {}
        live_ports = dig(service, "spec", "ports", default=[]) or []
        port_ok = any(int(p.get("port", 0)) == int(svc_d["port"])
                      and str(p.get("targetPort", p.get("port"))) in (svc_d["port_name"], str(svc_d["port"]))
                      for p in live_ports)
        patch = {}
        why = []
        if workload and live_selector != selector:
            patch["selector"] = _with_nulls(selector, live_selector)
            why.append("selector %s, desired %s (the frontend's pods)" % (live_selector, selector))
        if not port_ok:
            patch["ports"] = desired_ports
            why.append("ports %s, desired %s" % (
                ["%s:%s->%s" % (p.get("name"), p.get("port"), p.get("targetPort")) for p in live_ports],
                ["%s:%s->%s" % (p["name"], p["port"], p["targetPort"]) for p in desired_ports]))
        report["service"] = {"ref": svc_ref, "selector": live_selector, "ports": live_ports, "drift": why}
        if patch:
            findings.append(_finding("FRONTEND_SERVICE_DRIFT", "critical",
                                     "%s does not route to the frontend's pods: %s" % (svc_ref, "; ".join(why)),
                                     why, "reapply the Service's selector and ports from desired state", svc_ref))
            changes.append({"kind": "Service", "name": svc_d["name"], "action": "patch", "why": "; ".join(why),
                            "merge_type": "merge", "definition": {
                                "apiVersion": "v1", "kind": "Service",
                                "metadata": {"name": svc_d["name"], "namespace": ns}, "spec": patch}})
        else:
            ready = [e for s in endpointslices or [] for e in s.get("endpoints") or []
                     if dig(e, "conditions", "ready", default=True)]
            report["endpoints"] = len(ready)
            if workload and (dig(workload, "spec", "replicas", default=1) or 0) > 0 \
                    and (dig(workload, "status", "readyReplicas", default=0) or 0) > 0 and not ready \
                    and endpointslices is not None:
                findings.append(_finding(
                    "FRONTEND_NO_ENDPOINTS", "high",
                    "%s has no ready endpoints although the frontend has ready pods" % svc_ref,
                    ["EndpointSlices: %d" % len(endpointslices or [])], "check the pods' readiness and the selector",
                    svc_ref))

    # Ingress rule for the frontend's host
    host = d["host"]
    ing_d = d["ingress"]
    holders = [i for i in ingresses or [] if any(r.get("host") == host for r in dig(i, "spec", "rules", default=[]) or [])]
    good = [i for i in holders if any(r.get("host") == host and _ingress_backend_ok(r, svc_d["name"], svc_d["port_name"],
                                                                                      svc_d["port"])
                                      for r in dig(i, "spec", "rules", default=[]) or [])]
    named = next((i for i in ingresses or [] if dig(i, "metadata", "name") == ing_d["name"]), None)
    ing_ref = "Ingress/%s/%s" % (ns, ing_d["name"])
    report["ingress"] = {"holders": [dig(i, "metadata", "name") for i in holders],
                        "routing_ok": [dig(i, "metadata", "name") for i in good]}
    if not good:
        target = holders[0] if holders else named
        if target is not None:
            rules = [r for r in dig(target, "spec", "rules", default=[]) or [] if r.get("host") != host]
            position = next((n for n, r in enumerate(dig(target, "spec", "rules", default=[]) or [])
                             if r.get("host") == host), len(rules))
            rules.insert(position, _desired_rule(d))
            target_name = dig(target, "metadata", "name")
            code = "FRONTEND_ROUTE_DRIFT" if holders else "FRONTEND_ROUTE_MISSING"
            live_rule = next((r for r in dig(target, "spec", "rules", default=[]) or [] if r.get("host") == host), None)
            findings.append(_finding(
                code, "critical",
                ("Ingress/%s/%s sends %s elsewhere: %s" % (ns, target_name, host, dig(live_rule, "http", "paths")))
                if holders else "No Ingress rule routes %s to %s" % (host, svc_ref),
                ["rules of Ingress/%s/%s: %s" % (ns, target_name, [r.get("host") for r in dig(target, "spec", "rules",
                                                                                          default=[]) or []])],
                "reapply the frontend's Ingress rule from desired state", "Ingress/%s/%s" % (ns, target_name)))
            changes.append({"kind": "Ingress", "name": target_name, "action": "patch", "why": code,
                            "merge_type": "merge", "definition": {
                                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                "metadata": {"name": target_name, "namespace": ns}, "spec": {"rules": rules}}})
        else:
            findings.append(_finding("FRONTEND_ROUTE_MISSING", "critical",
                                     "No Ingress routes %s (%s does not exist)" % (host, ing_ref), [],
                                     "reapply the frontend's Ingress from desired state", ing_ref))
            spec = {"ingressClassName": ing_d.get("class"), "rules": [_desired_rule(d)]}
            if ing_d.get("tls"):
                spec["tls"] = ing_d["tls"]
            changes.append({"kind": "Ingress", "name": ing_d["name"], "action": "create", "why": "missing",
                            "merge_type": "merge", "definition": {
                                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                                "metadata": {"name": ing_d["name"], "namespace": ns, "labels": d.get("labels_route", {}),
                                             "annotations": ing_d.get("annotations", {})},
                                "spec": spec}})

    # Traefik IngressRoute
    ir_d = d.get("ingressroute") or {}
    if ir_d.get("enabled") and ingressroute_api_available:
        ir_ref = "IngressRoute/%s/%s" % (ns, ir_d["name"])
        want = _desired_route(d)
        holders = [i for i in ingressroutes or [] if any(_route_matches_host(r, host)
                                                         for r in dig(i, "spec", "routes", default=[]) or [])]

        def route_ok(r):
            return _route_matches_host(r, host) and any(
                s.get("name") == svc_d["name"] and int(s.get("port", 0) or 0) == int(svc_d["port"])
                for s in r.get("services") or [])

        good = [i for i in holders if any(route_ok(r) for r in dig(i, "spec", "routes", default=[]) or [])]
        named = next((i for i in ingressroutes or [] if dig(i, "metadata", "name") == ir_d["name"]), None)
        report["ingressroute"] = {"holders": [dig(i, "metadata", "name") for i in holders],
                                  "routing_ok": [dig(i, "metadata", "name") for i in good]}
        if not good:
            target = holders[0] if holders else named
            if target is not None:
                live = dig(target, "spec", "routes", default=[]) or []
                position = next((n for n, r in enumerate(live) if _route_matches_host(r, host)), len(live))
                routes = [r for r in live if not _route_matches_host(r, host)]
                routes.insert(min(position, len(routes)), want)
                tname = dig(target, "metadata", "name")
                findings.append(_finding(
                    "FRONTEND_INGRESSROUTE_DRIFT" if holders else "FRONTEND_INGRESSROUTE_MISSING", "critical",
                    "IngressRoute/%s/%s does not route %s to %s:%s" % (ns, tname, host, svc_d["name"], svc_d["port"]),
                    ["routes: %s" % [r.get("match") for r in live]], "reapply the route from desired state",
                    "IngressRoute/%s/%s" % (ns, tname)))
                changes.append({"kind": "IngressRoute", "name": tname, "action": "patch", "why": "route drift",
                                "merge_type": "merge", "definition": {
                                    "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                                    "metadata": {"name": tname, "namespace": ns}, "spec": {"routes": routes}}})
            else:
                findings.append(_finding("FRONTEND_INGRESSROUTE_MISSING", "critical",
                                         "No Traefik IngressRoute routes %s (%s does not exist)" % (host, ir_ref), [],
                                         "reapply the route from desired state", ir_ref))
                spec = {"entryPoints": ir_d.get("entry_points") or ["web"], "routes": [want]}
                if ir_d.get("tls_secret"):
                    spec["tls"] = {"secretName": ir_d["tls_secret"]}
                changes.append({"kind": "IngressRoute", "name": ir_d["name"], "action": "create", "why": "missing",
                                "merge_type": "merge", "definition": {
                                    "apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute",
                                    "metadata": {"name": ir_d["name"], "namespace": ns,
                                                 "labels": d.get("labels_route", {})},
                                    "spec": spec}})
    for change in changes:
        change["ref"] = "%s/%s/%s" % (change["kind"], ns, change["name"])
    report["findings"] = findings
    report["changes"] = changes
    return report


# ------------------------------------------------------------------------------------ volumes

def frontend_volumes(workload, pods=None, configmaps=None, secrets=None, pvcs=None, events=None):
    """The volumes the pod template declares, whether each source exists, and pods stuck mounting them."""
    if not workload:
        return {"declared": [], "findings": [], "note": "no workload"}
    ns = dig(workload, "metadata", "namespace")
    volumes = dig(workload, "spec", "template", "spec", "volumes", default=[]) or []
    cm_names = {dig(o, "metadata", "name") for o in configmaps or []}
    secret_names = set(secrets or [])
    pvc_phase = {dig(o, "metadata", "name"): dig(o, "status", "phase") for o in pvcs or []}
    mounts = {}
    for c in dig(workload, "spec", "template", "spec", "containers", default=[]) or []:
        for m in c.get("volumeMounts") or []:
            mounts.setdefault(m.get("name"), []).append("%s:%s" % (c.get("name"), m.get("mountPath")))
    declared, problems = [], []
    for v in volumes:
        name = v.get("name")
        entry = {"name": name, "mounted_at": mounts.get(name, []), "source": None, "ok": True, "why": None}
        if "configMap" in v:
            ref = dig(v, "configMap", "name")
            entry["source"] = "ConfigMap/%s/%s" % (ns, ref)
            if ref not in cm_names and not dig(v, "configMap", "optional", default=False):
                entry.update(ok=False, why="ConfigMap %s does not exist" % ref)
        elif "secret" in v:
            ref = dig(v, "secret", "secretName")
            entry["source"] = "Secret/%s/%s" % (ns, ref)
            if ref not in secret_names and not dig(v, "secret", "optional", default=False):
                entry.update(ok=False, why="Secret %s does not exist" % ref)
        elif "persistentVolumeClaim" in v:
            ref = dig(v, "persistentVolumeClaim", "claimName")
            entry["source"] = "PersistentVolumeClaim/%s/%s" % (ns, ref)
            if ref not in pvc_phase:
                entry.update(ok=False, why="PersistentVolumeClaim %s does not exist" % ref)
            elif pvc_phase[ref] != "Bound":
                entry.update(ok=False, why="PersistentVolumeClaim %s is %s, not Bound" % (ref, pvc_phase[ref]))
        else:
            entry["source"] = next((k for k in v if k != "name"), "unknown")
        declared.append(entry)
        if not entry["ok"]:
            problems.append(entry)
    stuck = []
    for pod in pods or []:
        for cs in dig(pod, "status", "containerStatuses", default=[]) or []:
            reason = dig(cs, "state", "waiting", "reason")
            if reason in VOLUME_WAITING:
                stuck.append("%s: container %s waiting in %s" % (dig(pod, "metadata", "name"), cs.get("name"), reason))
    mount_events = ["%s: %s" % (dig(e, "involvedObject", "name"), (e.get("message") or "")[:200])
                    for e in events or [] if e.get("reason") in ("FailedMount", "FailedAttachVolume")]
    findings = []
    if problems:
        findings.append(_finding(
            "FRONTEND_VOLUME_SOURCE_MISSING", "critical",
            "Volumes of the frontend cannot be mounted: %s" % "; ".join("%s (%s)" % (p["name"], p["why"])
                                                                      for p in problems),
            ["%s -> %s: %s" % (p["name"], p["source"], p["why"]) for p in problems] + stuck[:3] + mount_events[:3],
            "restore the missing ConfigMap/Secret/PVC (redeploy the frontend's configuration)"))
    elif mount_events:
        findings.append(_finding(
            "FRONTEND_VOLUME_MOUNT_FAILED", "high", "The frontend's pods report volume mount failures",
            mount_events[:5] + stuck[:3], "read the events; restore the volume's source"))
    return {"declared": declared, "findings": findings,
            "note": None if volumes else "the frontend declares no volumes: its assets are in the image"}


# ------------------------------------------------------------------------------------ frontend -> backend

def frontend_reachability(config, api, api_url_key="apiUrl", policy=None, api_health_path="/health"):
    """The API URL the frontend hands to browsers (its config), whether that API answers, and whether network
    policies let the frontend's pods reach the backend's."""
    findings = []
    api_url = None
    if config is None:
        pass  # the page itself does not load: its configuration is not the question yet
    elif config.get("ok"):
        try:
            import json

            api_url = (json.loads(config.get("body") or "{}") or {}).get(api_url_key)
        except ValueError:
            api_url = None
    if config is not None and (not config.get("ok") or not api_url):
        findings.append(_finding(
            "FRONTEND_CONFIG_MISSING", "high",
            "The frontend's runtime configuration %s does not give the API URL (%s)" % (
                config.get("url"), "HTTP %s" % ", ".join(sorted((config.get("statuses") or {}).keys()))
                if config.get("statuses") else "; ".join(config.get("error_samples") or ["no answer"])),
            [(config.get("body") or "")[:200]], "redeploy the frontend's configuration"))
    elif api is not None and not api.get("ok"):
        findings.append(_finding(
            "FRONTEND_API_UNREACHABLE", "high",
            "The API the frontend uses (%s) does not answer its health check %s: %s" % (
                api_url, api_health_path, ", ".join("HTTP %s x%d" % kv for kv in sorted((api.get("statuses") or {}).items()))
                or "; ".join(api.get("error_samples") or ["no answer"])),
            list(api.get("error_samples") or [])[:3], "platform_down.yml / slow_api.yml for the backend", None,
            component="backend"))
    if policy is not None and not policy.get("allowed", True):
        blocked_by = dig(policy, "egress", "selected_by", default=[]) if not dig(policy, "egress", "allowed",
                                                                                  default=True) \
            else dig(policy, "ingress", "selected_by", default=[])
        findings.append(_finding(
            "FRONTEND_BACKEND_BLOCKED_BY_POLICY", "critical",
            "Network policies do not let the frontend's pods reach the backend's (%s side)" % (
                "egress" if not dig(policy, "egress", "allowed", default=True) else "ingress"),
            ["policies selecting the blocked side: %s" % blocked_by], "reapply the platform's network policies"))
    return {"api_url": api_url, "api_ok": bool(api and api.get("ok")), "checked": config is not None,
            "policy_allowed":
            None if policy is None else policy.get("allowed"), "findings": findings}


class FilterModule:
    def filters(self):
        return {
            "frontend_asset_refs": frontend_asset_refs,
            "frontend_assets": frontend_assets,
            "frontend_pods": frontend_pods,
            "frontend_logs": frontend_logs,
            "frontend_route": frontend_route,
            "frontend_volumes": frontend_volumes,
            "frontend_reachability": frontend_reachability,
        }
