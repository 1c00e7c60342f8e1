"""Filters of the metrics_collection runbook (guide: Monitoring Issues > Metrics Not Collecting).

Pure functions over what kubernetes.core.k8s_info and ansible.builtin.uri return, so the runbook's
judgements are unit-tested without a cluster (tests/unit/test_metrics_collection_filter.py).
"""

from __future__ import annotations

from urllib.parse import urlsplit

DOCUMENTATION = """
name: metrics_collection
short_description: Diagnosis filters of the metrics_collection runbook
description:
  - C(servicemonitor_manifests) renders the desired ServiceMonitors from the inventory's short form.
  - C(network_policy_manifests) renders the desired monitoring NetworkPolicies from the inventory's short form.
  - C(components_health) flattens saasodoo_snapshot's components into a list.
  - C(servicemonitor_pools) and C(pools_settled) name the Prometheus Operator's scrape pools and say when they are all up.
  - C(desired_drift) compares desired Kubernetes objects with the live ones (desired fields only).
  - C(drift_findings) turns that comparison into findings.
  - C(prometheus_findings) judges Prometheus' readiness and active targets against the desired ServiceMonitors.
  - C(grafana_datasource_findings) judges the Grafana datasource (configuration and health).
  - C(target_handover) says, for each target down, who can fix it.
  - C(remediation_plan) decides what the runbook restarts, reapplies and hands over.
"""

SERVICEMONITOR_POOL = "serviceMonitor/{namespace}/{name}/{index}"


def _finding(code, severity, message, evidence=None, component=None, ref=None):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence or [],
            "component": component, "ref": ref}


def servicemonitor_manifests(servicemonitors, components, namespace, part_of_label, part_of, component_label):
    """ServiceMonitor objects (monitoring.coreos.com/v1) from [{name, component, port, path, interval}].

    Each selects its component's Service (labels app.kubernetes.io/name and the component label) in the
    component's namespace, the way the sample platform creates them.
    """
    result = []
    for sm in servicemonitors or []:
        comp = components[sm["component"]]
        result.append({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {
                "name": sm["name"],
                "namespace": namespace,
                "labels": {part_of_label: part_of, component_label: sm["component"]},
            },
            "spec": {
                "namespaceSelector": {"matchNames": [comp["namespace"]]},
                "selector": {"matchLabels": {"app.kubernetes.io/name": comp["name"], component_label: sm["component"]}},
                "endpoints": [{"port": sm["port"], "path": sm.get("path") or "/metrics",
                               "interval": sm.get("interval") or "30s"}],
            },
        })
    return result


def network_policy_manifests(policies, labels=None):
    """NetworkPolicy objects from [{name, namespace, pod_selector, from_namespace, from_pod_selector, ports}].

    One ingress rule each: the pods `pod_selector` picks (in `namespace`) accept traffic from the pods
    `from_pod_selector` picks in `from_namespace`, on `ports` (port names or numbers, TCP).
    """
    result = []
    for pol in policies or []:
        peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pol["from_namespace"]}}}
        if pol.get("from_pod_selector"):
            peer["podSelector"] = {"matchLabels": dict(pol["from_pod_selector"])}
        rule = {"from": [peer]}
        if pol.get("ports"):
            rule["ports"] = [{"port": p, "protocol": "TCP"} for p in pol["ports"]]
        meta = {"name": pol["name"], "namespace": pol["namespace"]}
        if labels:
            meta["labels"] = dict(labels)
        result.append({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta,
            "spec": {"podSelector": {"matchLabels": dict(pol.get("pod_selector") or {})},
                     "policyTypes": ["Ingress"], "ingress": [rule]},
        })
    return result


def _same(desired, live):
    """Desired scalars compare as strings where Kubernetes may return another type (8000 vs "8000")."""
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired == live
    if isinstance(desired, (int, float, str)) and isinstance(live, (int, float, str)):
        return str(desired) == str(live)
    return desired == live


def _diff(desired, live, path, out):
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            out.append(f"{path or '.'}: want an object, found {live!r}")
            return
        for key, value in desired.items():
            _diff(value, live.get(key), f"{path}.{key}" if path else key, out)
    elif isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            out.append(f"{path}: want {desired!r}, found {live!r}")
            return
        for i, (d, lv) in enumerate(zip(desired, live)):
            _diff(d, lv, f"{path}[{i}]", out)
    elif not _same(desired, live):
        out.append(f"{path}: want {desired!r}, found {live!r}")


def desired_drift(desired, live, fields=("spec",)):
    """For each desired object: {ref, kind, name, namespace, state: ok|missing|drifted, differences, desired}.

    `live` is the list of live objects of that kind. Only the desired `fields` are compared (the desired
    values must be present and equal; what the API server or others added is ignored), so a reapply
    of the desired object repairs every difference reported.
    """
    index = {(o.get("metadata", {}).get("namespace"), o.get("metadata", {}).get("name")): o for o in live or []}
    result = []
    for obj in desired or []:
        meta = obj.get("metadata", {})
        key = (meta.get("namespace"), meta.get("name"))
        ref = f"{obj.get('kind')}/{key[0]}/{key[1]}"
        entry = {"ref": ref, "kind": obj.get("kind"), "name": key[1], "namespace": key[0], "desired": obj,
                 "differences": [], "state": "ok"}
        current = index.get(key)
        if current is None:
            entry["state"] = "missing"
        else:
            for field in fields:
                _diff(obj.get(field), current.get(field), field, entry["differences"])
            if entry["differences"]:
                entry["state"] = "drifted"
        result.append(entry)
    return result


def drift_findings(drift, code_prefix, severity="medium", what=None):
    """<PREFIX>_MISSING / <PREFIX>_DRIFTED findings from desired_drift's output."""
    findings = []
    for entry in drift or []:
        label = what or entry["kind"]
        if entry["state"] == "missing":
            findings.append(_finding(
                f"{code_prefix}_MISSING", severity,
                f"{label} {entry['namespace']}/{entry['name']} is missing (it is in the desired state).",
                [f"desired: {entry['ref']}"], ref=entry["ref"]))
        elif entry["state"] == "drifted":
            findings.append(_finding(
                f"{code_prefix}_DRIFTED", severity,
                f"{label} {entry['namespace']}/{entry['name']} differs from the desired state.",
                entry["differences"][:10], ref=entry["ref"]))
    return findings


def _pools_of(servicemonitors):
    """{scrape pool name: ServiceMonitor ref} for a list of ServiceMonitor objects."""
    pools = {}
    for sm in servicemonitors or []:
        meta = sm.get("metadata", {})
        for index, _ in enumerate((sm.get("spec") or {}).get("endpoints") or []):
            pools[SERVICEMONITOR_POOL.format(namespace=meta.get("namespace"), name=meta.get("name"), index=index)] = (
                f"ServiceMonitor/{meta.get('namespace')}/{meta.get('name')}")
    return pools


def _target_ref(target):
    labels = target.get("labels") or {}
    return f"{target.get('scrapePool')} {labels.get('instance', target.get('scrapeUrl', ''))}".strip()


def prometheus_findings(ready, targets, desired_servicemonitors, live_servicemonitors, url=""):
    """Findings about Prometheus itself: readiness, targets down, desired ServiceMonitors without targets.

    ready:   the uri result of GET /-/ready (status, msg).
    targets: the uri result of GET /api/v1/targets?state=active (json.data.activeTargets), or None when
             Prometheus did not answer.
    desired_servicemonitors / live_servicemonitors: ServiceMonitor objects (desired, and in the cluster).
    """
    findings = []
    ready = ready or {}
    if ready.get("status") != 200:
        findings.append(_finding(
            "PROMETHEUS_NOT_READY", "high",
            f"Prometheus at {url} is not ready: it collects no metrics (monitoring system down).",
            [f"GET {url}/-/ready: status {ready.get('status')} {str(ready.get('msg', ''))[:200]}".strip()],
            component="prometheus"))
        return findings
    active = (((targets or {}).get("json") or {}).get("data") or {}).get("activeTargets")
    if active is None:
        findings.append(_finding(
            "PROMETHEUS_API_UNAVAILABLE", "high",
            f"Prometheus at {url} is ready but its targets API did not answer.",
            [f"GET {url}/api/v1/targets: status {(targets or {}).get('status')} {str((targets or {}).get('msg', ''))[:200]}"],
            component="prometheus"))
        return findings
    down = [t for t in active if t.get("health") == "down"]
    if active and len(down) == len(active):
        findings.append(_finding(
            "PROMETHEUS_ALL_TARGETS_DOWN", "high",
            f"Every one of Prometheus' {len(active)} targets is down: no metrics are collected.",
            [f"{_target_ref(t)}: {t.get('lastError', '')}" for t in down[:10]], component="prometheus"))
    for t in sorted(down, key=_target_ref):
        findings.append(_finding(
            "PROMETHEUS_TARGET_DOWN", "medium",
            f"Prometheus cannot scrape {t.get('scrapeUrl')} (scrape pool {t.get('scrapePool')}).",
            [f"scrapePool: {t.get('scrapePool')}", f"scrapeUrl: {t.get('scrapeUrl')}",
             f"lastError: {t.get('lastError', '')}", f"lastScrape: {t.get('lastScrape', '')}"],
            ref=t.get("scrapePool")))
    pools_seen = {t.get("scrapePool") for t in active}
    live_refs = set(_pools_of(live_servicemonitors).values())
    for pool, ref in sorted(_pools_of(desired_servicemonitors).items()):
        if pool in pools_seen or ref not in live_refs:
            continue  # scraped, or the ServiceMonitor itself is missing (reported as such)
        findings.append(_finding(
            "SERVICEMONITOR_NO_TARGETS", "medium",
            f"{ref} exists but Prometheus has no target for it (scrape pool {pool}).",
            [f"scrape pools Prometheus has: {', '.join(sorted(p for p in pools_seen if p))}",
             "its selector matches no Service with the endpoint's port, or Prometheus has not loaded it"],
            ref=pool))
    return findings


def components_health(components):
    """[{component, healthy, reasons, missing}] from saasodoo_snapshot's `components` (keyed by component)."""
    return [{"component": key, "healthy": bool(value.get("healthy")), "reasons": list(value.get("reasons") or []),
             "missing": bool(value.get("missing"))}
            for key, value in sorted((components or {}).items())]


def pools_settled(active_targets, pools):
    """True when each scrape pool has at least one target and every target of it is up."""
    for pool in pools or []:
        health = [t.get("health") for t in active_targets or [] if t.get("scrapePool") == pool]
        if not health or any(h != "up" for h in health):
            return False
    return True


def servicemonitor_pools(servicemonitors):
    """The scrape pools the Prometheus Operator makes of ServiceMonitor objects (serviceMonitor/<ns>/<name>/<i>)."""
    return sorted(_pools_of(servicemonitors))


def target_handover(findings, desired_servicemonitors, workload_health, fixable_refs,
                    component_label="app.kubernetes.io/component"):
    """For each PROMETHEUS_TARGET_DOWN: who fixes it.

    Returns {fixed_here: [scrape pools whose ServiceMonitor this runbook reapplies],
    handed_over: [lines]}. A target whose ServiceMonitor is missing or drifted (fixable_refs) is
    fixed here; one whose component's workload is unhealthy goes to platform_down.yml; any other
    target down is a metrics endpoint that does not answer, for the component's owner.
    """
    pools = _pools_of(desired_servicemonitors)
    component_of_sm = {}
    for sm in desired_servicemonitors or []:
        meta = sm.get("metadata", {})
        component_of_sm[f"ServiceMonitor/{meta.get('namespace')}/{meta.get('name')}"] = (
            (meta.get("labels") or {}).get(component_label))
    unhealthy = {h.get("component"): h for h in workload_health or [] if not h.get("healthy")}
    fixed, handed = [], []
    for f in findings or []:
        if f.get("code") != "PROMETHEUS_TARGET_DOWN":
            continue
        pool = f.get("ref")
        sm_ref = pools.get(pool)
        if sm_ref and sm_ref in (fixable_refs or []):
            fixed.append(pool)
            continue
        component = component_of_sm.get(sm_ref) if sm_ref else None
        if component and component in unhealthy:
            handed.append(f"{pool}: its component {component} is unhealthy "
                          f"({', '.join(unhealthy[component].get('reasons') or [])}) -> platform_down.yml")
        else:
            last_error = next((e for e in f.get("evidence", []) if e.startswith("lastError: ")), "lastError: ?")
            handed.append(f"{pool}: the metrics endpoint does not answer ({last_error[len('lastError: '):]}); "
                          "its configuration is as desired -> the owner of that service")
    return {"fixed_here": fixed, "handed_over": handed}


RESTARTABLE_CODES = ("WORKLOAD_CRASHLOOP", "WORKLOAD_UNAVAILABLE")
HANDOVER = (
    (("WORKLOAD_MISSING", "WORKLOAD_SCALED_TO_ZERO", "WORKLOAD_OOMKILLED"),
     "a restart does not cure this -> platform_down.yml / backend_crashloop.yml"),
    (("SERVICEMONITOR_CRD_MISSING",), "install the Prometheus Operator's CRDs -> platform team"),
    (("GRAFANA_DATASOURCE_MISCONFIGURED", "GRAFANA_DATASOURCE_CONFIG_MISSING"),
     "redeploy the monitoring configuration -> deploy_platform.yml"),
    (("SERVICEMONITOR_NO_TARGETS",), "check its selector against the Services -> monitoring owner"),
)


def remediation_plan(diag, desired_servicemonitors, monitoring_components, restartable, grafana_method,
                     component_label="app.kubernetes.io/component"):
    """What metrics_collection does about a diagnosis: {restart, servicemonitors, policies, handed_over}.

    restart: monitoring components (keys) to restart - crash-looping or unavailable ones, Prometheus when
    it does not answer, Grafana when Grafana's own API says its datasource is unhealthy while Prometheus
    answers; only components both listed in monitoring_components and restartable.
    servicemonitors / policies: the drift entries (missing or drifted) to reapply.
    handed_over: one line per finding this runbook cannot fix, naming who can.
    """
    findings = diag.get("findings") or []
    codes = {f.get("code") for f in findings}
    restart = [f.get("component") for f in findings
               if f.get("code") in RESTARTABLE_CODES and f.get("component") in monitoring_components]
    prometheus_down = bool(codes & {"PROMETHEUS_NOT_READY", "PROMETHEUS_API_UNAVAILABLE"})
    if prometheus_down:
        restart.append("prometheus")
    if grafana_method == "grafana_api" and "GRAFANA_DATASOURCE_UNHEALTHY" in codes and not prometheus_down:
        restart.append("grafana")
    restart = [c for i, c in enumerate(restart)
               if c in monitoring_components and c in restartable and c not in restart[:i]]
    sm_fix = [d for d in diag.get("servicemonitor_drift") or [] if d.get("state") in ("missing", "drifted")]
    np_fix = [d for d in diag.get("policy_drift") or [] if d.get("state") in ("missing", "drifted")]
    targets = target_handover(findings, desired_servicemonitors, diag.get("components"),
                              [d["ref"] for d in sm_fix], component_label)
    handed = list(targets["handed_over"])
    for codes_, where in HANDOVER:
        handed += [f"{f.get('message')} {where[0].upper()}{where[1:]}" for f in findings if f.get("code") in codes_]
    return {"restart": restart, "servicemonitors": sm_fix, "policies": np_fix, "handed_over": handed}


def _datasources(document):
    if not isinstance(document, dict):
        return []
    return [d for d in document.get("datasources") or [] if isinstance(d, dict)]


def grafana_datasource_findings(configmap, key, datasource_name, expected_url, probe, method, probe_url=""):
    """Findings about Grafana's Prometheus datasource.

    configmap: the provisioning ConfigMap (or None); key: its data key (a YAML document already parsed
    is accepted under `parsed`); expected_url: where the datasource must point (the Prometheus Service);
    probe: the uri result of the health check; method: 'grafana_api' (Grafana's datasource health) or
    'datasource_url' (the datasource's URL queried with the Prometheus API, when no Grafana API is reachable).
    """
    findings = []
    if configmap is None:
        findings.append(_finding(
            "GRAFANA_DATASOURCE_CONFIG_MISSING", "medium",
            f"Grafana's datasource provisioning ConfigMap is missing (key {key}).", [], component="grafana"))
    else:
        parsed = configmap.get("parsed")
        match = [d for d in _datasources(parsed) if d.get("name") == datasource_name]
        if not match:
            findings.append(_finding(
                "GRAFANA_DATASOURCE_CONFIG_MISSING", "medium",
                f"Grafana has no datasource named {datasource_name} in ConfigMap "
                f"{configmap.get('metadata', {}).get('namespace')}/{configmap.get('metadata', {}).get('name')}.",
                [f"datasources: {', '.join(str(d.get('name')) for d in _datasources(parsed)) or 'none'}"],
                component="grafana"))
        else:
            got = str(match[0].get("url", "")).strip().rstrip("/")
            if _norm_url(got) != _norm_url(expected_url):
                findings.append(_finding(
                    "GRAFANA_DATASOURCE_MISCONFIGURED", "medium",
                    f"Grafana's datasource {datasource_name} points at {got}, not at Prometheus ({expected_url}).",
                    [f"configured url: {got}", f"expected url: {expected_url}"], component="grafana"))
    probe = probe or {}
    if method == "grafana_api":
        healthy = probe.get("status") == 200 and str((probe.get("json") or {}).get("status", "")).upper() == "OK"
        where = "Grafana's datasource health check"
    else:
        healthy = probe.get("status") == 200 and (probe.get("json") or {}).get("status") == "success"
        where = f"the datasource's Prometheus API ({probe_url})"
    if not healthy:
        findings.append(_finding(
            "GRAFANA_DATASOURCE_UNHEALTHY", "high",
            f"Grafana's datasource {datasource_name} does not answer: dashboards show no data.",
            [f"{where}: status {probe.get('status')} {str(probe.get('msg', '') or (probe.get('json') or {}).get('message', ''))[:200]}"],
            component="grafana"))
    return findings


def _norm_url(value):
    parts = urlsplit(str(value or "").strip())
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return (parts.scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/"))


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "servicemonitor_manifests": servicemonitor_manifests,
            "network_policy_manifests": network_policy_manifests,
            "desired_drift": desired_drift,
            "drift_findings": drift_findings,
            "prometheus_findings": prometheus_findings,
            "target_handover": target_handover,
            "components_health": components_health,
            "remediation_plan": remediation_plan,
            "pools_settled": pools_settled,
            "servicemonitor_pools": servicemonitor_pools,
            "grafana_datasource_findings": grafana_datasource_findings,
        }
