"""Filters of the DNS Resolution Problems runbook: judge a Corefile and the cluster DNS's answers.

Pure functions over what kubernetes.core.k8s_info and saasodoo_dns_query return, so the runbook's
decisions are unit-tested without a cluster (tests/unit/test_dns_resolution_filter.py).
"""

from __future__ import annotations

import difflib

DOCUMENTATION = """
name: dns_resolution
short_description: Corefile sanity checks and DNS findings for the dns_resolution runbook
description:
  - C(corefile_problems) lists what would stop CoreDNS from loading a Corefile or from serving the platform
    (unbalanced braces, no server block, unknown plugins, required plugins missing).
  - C(corefile_diff) gives the unified diff between the live and the desired Corefile.
  - C(corefile_findings) turns the Corefile ConfigMap into COREFILE_MISSING, COREFILE_INVALID or COREFILE_DRIFT.
  - C(dns_query_findings) turns saasodoo_dns_query results into DNS_SERVER_UNREACHABLE,
    DNS_SERVICE_NAME_UNRESOLVED, DNS_WRONG_ADDRESS, DNS_EXTERNAL_UNRESOLVED and DNS_SLOW.
  - C(dns_handover_lines) says where each finding the runbook cannot fix goes.
  - C(dns_service_names) builds <service>.<namespace>.svc.<cluster domain> and its expected address from Services.
"""

# CoreDNS's plugins (plugin.cfg of CoreDNS 1.11) and the Caddy directives a Corefile may use; an
# unknown directive stops CoreDNS at start ("Unknown directive").
KNOWN_PLUGINS = frozenset("""
root metadata geoip cancel tls timeouts multisocket reload nsid bufsize bind debug trace ready health pprof
prometheus errors log dnstap local dns64 acl any chaos loadbalance tsig cache rewrite header dnssec autopath
minimal template transfer hosts route53 azure clouddns k8s_external kubernetes file auto secondary etcd loop
forward grpc erratic whoami on sign view import
""".split())

SEVERITY_ORDER = ["critical", "high", "medium", "low"]


def _finding(code, severity, message, evidence=None, component=None, ref=None, remediation=None):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence or [],
            "component": component, "ref": ref, "remediation": remediation}


def _split(line):
    """Tokens of one Corefile line: quoted strings kept whole, braces on their own, comments dropped."""
    tokens, current, quoted = [], "", False
    for ch in line:
        if quoted:
            current += ch
            if ch == '"':
                quoted = False
            continue
        if ch == '"':
            current += ch
            quoted = True
        elif ch == "#":
            break
        elif ch in "{}" or ch.isspace():
            if current:
                tokens.append(current)
                current = ""
            if ch in "{}":
                tokens.append(ch)
        else:
            current += ch
    if current:
        tokens.append(current)
    return tokens


def _tokens(text):
    """(line number, tokens) per line that has any."""
    for number, raw in enumerate((text or "").splitlines(), 1):
        tokens = _split(raw)
        if tokens:
            yield number, tokens


def corefile_parse(text):
    """{'blocks': [{'keys': [...], 'plugins': [...], 'line': n}], 'problems': [...]} of a Corefile."""
    blocks, problems, depth = [], [], 0
    current = None
    for number, tokens in _tokens(text):
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok == "{":
                if depth == 0:
                    problems.append(f"line {number}: '{{' without a server address before it")
                depth += 1
                i += 1
                continue
            if tok == "}":
                if depth == 0:
                    problems.append(f"line {number}: '}}' closes nothing")
                else:
                    depth -= 1
                    if depth == 0:
                        current = None
                i += 1
                continue
            rest = tokens[i:]
            if depth == 0:
                # Server block keys: everything up to '{' (e.g. ".:53" or "example.org:53 example.net").
                keys = []
                while i < len(tokens) and tokens[i] != "{":
                    keys.append(tokens[i])
                    i += 1
                current = {"keys": keys, "plugins": [], "line": number}
                blocks.append(current)
                if i == len(tokens):
                    problems.append(f"line {number}: server block '{' '.join(keys)}' has no opening '{{' on its line")
                else:
                    depth += 1
                    i += 1
                continue
            if depth == 1 and current is not None:
                name = rest[0]
                current["plugins"].append(name)
                if name not in KNOWN_PLUGINS:
                    problems.append(f"line {number}: unknown plugin '{name}' in server block "
                                    f"'{' '.join(current['keys'])}' (CoreDNS refuses to start)")
            # Skip the rest of this directive's tokens up to a brace, handled by the loop.
            i += 1
            while i < len(tokens) and tokens[i] not in ("{", "}"):
                i += 1
    if depth > 0:
        problems.append(f"{depth} '{{' never closed (unbalanced braces)")
    if not blocks:
        problems.append("no server block (e.g. '.:53 { ... }')")
    return {"blocks": blocks, "problems": problems}


def corefile_problems(text, required_plugins=None):
    """What stops CoreDNS from loading this Corefile or from serving the platform; [] when sane."""
    if not any(True for _ in _tokens(text)):
        return ["the Corefile is empty (nothing but blanks and comments)"]
    parsed = corefile_parse(text)
    problems = list(parsed["problems"])
    present = {p for b in parsed["blocks"] for p in b["plugins"]}
    for plugin in required_plugins or []:
        if plugin not in present:
            problems.append(f"required plugin '{plugin}' is in no server block")
    return problems


def corefile_diff(live, desired, max_lines=60):
    """Unified diff lines live -> desired (what a restore would change), capped."""
    lines = list(difflib.unified_diff((live or "").splitlines(), (desired or "").splitlines(),
                                      "live Corefile", "desired Corefile", lineterm="", n=1))
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"... {len(lines) - max_lines} more diff line(s)"]
    return lines


def _norm(text):
    return "\n".join(line.rstrip() for line in (text or "").strip().splitlines())


def corefile_findings(configmaps, key, desired, required_plugins=None, ref=None, component=None):
    """Findings about the Corefile ConfigMap (the `resources` of a k8s_info call: [] or [configmap])."""
    configmap = (configmaps or [None])[0] if isinstance(configmaps, list) else configmaps
    if not configmap:
        return [_finding("COREFILE_MISSING", "critical",
                         f"the Corefile ConfigMap {ref} does not exist; CoreDNS has no configuration to load",
                         [f"{ref}: not found"], component, ref, "restore the Corefile from desired state")]
    data = configmap.get("data") or {}
    if key not in data:
        return [_finding("COREFILE_MISSING", "critical",
                         f"the ConfigMap {ref} has no '{key}' key; CoreDNS has no configuration to load",
                         [f"keys present: {', '.join(sorted(data)) or 'none'}"], component, ref,
                         "restore the Corefile from desired state")]
    live = data[key]
    problems = corefile_problems(live, required_plugins)
    drift = bool(desired) and _norm(live) != _norm(desired)
    diff = corefile_diff(live, desired) if drift else []
    if problems:
        return [_finding("COREFILE_INVALID", "critical",
                         f"the Corefile in {ref} is broken: {problems[0]}"
                         + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
                         + "; CoreDNS cannot load it on its next reload or restart",
                         problems + diff, component, ref, "restore the Corefile from desired state, restart CoreDNS")]
    if drift:
        return [_finding("COREFILE_DRIFT", "medium",
                         f"the Corefile in {ref} differs from the desired one (it loads, but is not what the "
                         "platform expects)", diff, component, ref, "restore the Corefile from desired state")]
    return []


def dns_service_names(services, cluster_domain, namespaces=None):
    """{name: expected address or None (headless)} for Services (k8s_info resources), sorted by name."""
    out = {}
    domain = (cluster_domain or "cluster.local").strip(".")
    for svc in services or []:
        meta = svc.get("metadata") or {}
        if namespaces and meta.get("namespace") not in namespaces:
            continue
        ip = (svc.get("spec") or {}).get("clusterIP")
        out[f"{meta.get('name')}.{meta.get('namespace')}.svc.{domain}"] = ip if ip and ip != "None" else None
    return dict(sorted(out.items()))


def dns_query_findings(results, expected=None, external_names=None, slow_ms=0, server="", component=None):
    """Findings from saasodoo_dns_query results.

    expected: {service name: ClusterIP or None}; external_names: names outside the cluster that must
    resolve (any address). A server that answers nothing at all is one finding, not one per name.
    """
    expected = expected or {}
    external = set(n.rstrip(".") for n in external_names or [])
    results = results or []
    findings = []
    if not results:
        return findings
    silent = [r for r in results if r.get("status") in ("unreachable", "timeout")]
    if len(silent) == len(results):
        return [_finding("DNS_SERVER_UNREACHABLE", "critical",
                         f"the cluster DNS server {server} does not answer ({silent[0].get('error')}); "
                         "no name resolves, services cannot find each other",
                         [f"{r['name']}: {r['status']} ({r.get('error')})" for r in results[:5]],
                         component, server or None, "check CoreDNS's Service, kube-proxy and the network plugin")]
    unresolved, wrong, ext_bad, slow = [], [], [], []
    for r in results:
        name = r["name"].rstrip(".")
        if r.get("status") != "ok":
            line = f"{name}: {r.get('status')}" + (f" ({r.get('error')})" if r.get("error") else "")
            (ext_bad if name in external else unresolved).append(line)
            continue
        want = expected.get(name)
        if want and want not in (r.get("addresses") or []):
            wrong.append(f"{name}: answered {', '.join(r.get('addresses') or [])}, the Service's ClusterIP is {want}")
        if slow_ms and (r.get("elapsed_ms") or 0) > slow_ms:
            slow.append(f"{name}: {r.get('elapsed_ms')} ms")
    if unresolved:
        findings.append(_finding(
            "DNS_SERVICE_NAME_UNRESOLVED", "critical",
            f"{len(unresolved)} platform service name(s) do not resolve through {server}; services cannot "
            "reach each other", unresolved, component, server or None,
            "check the Corefile's kubernetes plugin and CoreDNS's health, then kube-proxy and the network plugin"))
    if wrong:
        findings.append(_finding(
            "DNS_WRONG_ADDRESS", "high",
            f"{len(wrong)} service name(s) resolve to an address that is not their Service's ClusterIP "
            "(stale records)", wrong, component, server or None, "restart CoreDNS to drop stale answers"))
    if ext_bad:
        findings.append(_finding(
            "DNS_EXTERNAL_UNRESOLVED", "high",
            f"{len(ext_bad)} external name(s) do not resolve through {server}; the platform cannot reach "
            "its external services", ext_bad, component, server or None,
            "check the Corefile's forward plugin and the upstream resolvers' reachability"))
    if slow:
        findings.append(_finding(
            "DNS_SLOW", "medium", f"{len(slow)} lookup(s) slower than {slow_ms} ms through {server} "
            "(intermittent connectivity)", slow, component, server or None,
            "look at CoreDNS's load (replicas, cache) and the network path"))
    return findings


def dns_handover_lines(findings, destinations):
    """'CODE: message -> where it goes' per finding; destinations maps codes (and 'default') to a destination."""
    destinations = destinations or {}
    default = destinations.get("default", "escalate")
    return [f"{f['code']}: {f['message']} -> {destinations.get(f['code'], default)}" for f in findings or []]


def sort_findings(findings):
    return sorted(findings or [], key=lambda f: SEVERITY_ORDER.index(f.get("severity", "low")))


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "corefile_problems": corefile_problems,
            "corefile_diff": corefile_diff,
            "corefile_findings": corefile_findings,
            "dns_service_names": dns_service_names,
            "dns_query_findings": dns_query_findings,
            "dns_sort_findings": sort_findings,
            "dns_handover_lines": dns_handover_lines,
        }
