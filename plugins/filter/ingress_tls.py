"""Judgements of the ingress_tls runbook: the certificate a TLS server really presents, and the findings.

Pure functions over what the modules return (community.crypto.get_certificate, kubernetes.core.k8s_info,
the renew_cert_inspect filter, platform_diagnose), unit-tested in tests/unit/test_ingress_tls_filter.py.
Nothing returned ever contains key material.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCUMENTATION = """
name: ingress_tls
short_description: TLS handshake verdicts and the findings and plan of the ingress_tls runbook
description:
  - C(tls_served) judges the certificate a server presented in a handshake (the result of
    community.crypto.get_certificate with get_certificate_chain) for one server name - expiry, whether its
    SANs cover the name (wildcards count), and whether the chain leads to one of the trusted CAs.
  - C(route_backends) lists the Services an Ingress or a Traefik IngressRoute sends traffic to.
  - C(ingress_route_verdicts) judges each desired route against the live object (missing, drifted fields,
    missing backend Services).
  - C(ingress_tls_findings) turns the diagnosis (Traefik, routes, certificates, handshakes, the public
    endpoint's answer) into findings with a stable code, severity, evidence and the runbook that fixes each.
  - C(ingress_tls_plan) decides what the runbook remediates and what it hands over.
requirements:
  - cryptography (Python library)
"""

# The x509 helpers of the renew_cert role are reused (same parsing, same serial format), loaded by path:
# a filter plugin file is not imported as part of a package.
_spec = importlib.util.spec_from_file_location("saasodoo_x509_filters", Path(__file__).resolve().parent / "x509.py")
x509f = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(x509f)

SEVERITY_ORDER = ("critical", "high", "medium", "low")
RESTART_CODES = ("WORKLOAD_CRASHLOOP", "WORKLOAD_UNAVAILABLE")
CERT_CODES = {"expired": ("CERT_EXPIRED", "critical"), "missing-secret": ("CERT_MISSING_SECRET", "critical"),
              "invalid": ("CERT_INVALID", "high"), "expiring": ("CERT_EXPIRING", "medium"),
              "missing": ("CERT_OBJECT_MISSING", "high")}


def _finding(code, severity, message, evidence=None, component=None, ref=None, runbook="ingress_tls",
             remediation=None):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence or [],
            "component": component, "ref": ref, "runbook": runbook, "remediation": remediation}


def _pem_list(value):
    """PEM certificates from a string (a bundle) or a list of strings/bundles."""
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        text = x509f._text(item)
        for block in text.split("-----END CERTIFICATE-----"):
            if "-----BEGIN CERTIFICATE-----" in block:
                out.append(block[block.index("-----BEGIN CERTIFICATE-----"):] + "-----END CERTIFICATE-----\n")
    return out


def _verify_chain(chain_pems, trusted_pems):
    """(verified, detail): does the presented chain lead to one of the trusted CAs?"""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    if not trusted_pems:
        return None, "no trusted CA known to check the chain against"
    try:
        chain = [x509.load_pem_x509_certificate(p.encode()) for p in chain_pems]
        trusted = [x509.load_pem_x509_certificate(p.encode()) for p in trusted_pems]
    except ValueError as exc:
        return False, "unparsable certificate in the chain: %s" % exc
    current, seen = chain[0], 0
    while seen <= len(chain):
        for ca in trusted:
            if ca.subject == current.issuer:
                try:
                    current.verify_directly_issued_by(ca)
                    return True, "issued by trusted CA %s" % ca.subject.rfc4514_string()
                except (InvalidSignature, ValueError, TypeError) as exc:
                    return False, "signature does not verify with trusted CA %s (%s)" % (
                        ca.subject.rfc4514_string(), type(exc).__name__)
        nxt = next((c for c in chain[1:] if c.subject == current.issuer and c is not current), None)
        if nxt is None:
            return False, "issuer %s is not a trusted CA (trusted: %s)" % (
                current.issuer.rfc4514_string(), ", ".join(c.subject.rfc4514_string() for c in trusted))
        try:
            current.verify_directly_issued_by(nxt)
        except (InvalidSignature, ValueError, TypeError) as exc:
            return False, "chain broken at %s (%s)" % (current.subject.rfc4514_string(), type(exc).__name__)
        current, seen = nxt, seen + 1
    return False, "chain does not end"


def tls_served(result, server_name, trusted=None, renew_before_days=15, now=None, endpoint=None):
    """Verdict on the certificate presented for server_name (get_certificate's registered result).

    state: valid, expiring, expired, wrong-host, untrusted or unreachable (the worst that applies);
    reasons: one sentence per problem.
    """
    result = result or {}
    out = {"server_name": server_name, "endpoint": endpoint, "reachable": False, "error": None,
           "serial": None, "not_before": None, "not_after": None, "days_left": None, "expired": None,
           "subject": None, "issuer": None, "dns_names": [], "hostname_matches": None,
           "chain_verified": None, "chain": None, "state": "unreachable", "reasons": []}
    cert = result.get("cert")
    if result.get("failed") or not cert:
        out["error"] = (result.get("msg") or "no certificate presented").strip().splitlines()[0]
        out["reasons"] = ["no TLS handshake with %s for %s: %s" % (endpoint or "the endpoint", server_name,
                                                                    out["error"])]
        return out
    info = x509f.x509_info(cert, now=now)
    if not info["parsed"]:
        out.update(reachable=True, error=info["error"], state="untrusted",
                   reasons=["the presented certificate cannot be parsed: %s" % info["error"]])
        return out
    out.update(reachable=True, serial=info["serial"], not_before=info["not_before"], not_after=info["not_after"],
               days_left=info["days_left"], expired=info["expired"], subject=info["subject"],
               issuer=info["issuer"], dns_names=info["dns_names"] + info["ip_addresses"])
    missing = x509f.x509_missing_names(info, [server_name])
    out["hostname_matches"] = not missing
    chain = _pem_list(result.get("unverified_chain")) or _pem_list(cert)
    out["chain_verified"], out["chain"] = _verify_chain(chain, _pem_list(trusted))
    reasons, state = [], "valid"
    if out["chain_verified"] is False:
        reasons.append("chain not trusted: %s" % out["chain"])
        state = "untrusted"
    if missing:
        reasons.insert(0, "its SANs (%s) do not cover %s" % (", ".join(out["dns_names"]) or "none", server_name))
        state = "wrong-host"
    if info["expired"]:
        if info["days_left"] is not None and info["days_left"] < 0:
            reasons.insert(0, "expired on %s (%.1f days ago)" % (info["not_after"], -info["days_left"]))
        else:
            reasons.insert(0, "not valid before %s" % info["not_before"])
        state = "expired"
    elif state == "valid" and info["days_left"] < float(renew_before_days):
        reasons.append("expires on %s, in %.1f days (threshold %s days)" % (info["not_after"], info["days_left"],
                                                                          renew_before_days))
        state = "expiring"
    out.update(state=state, reasons=reasons)
    return out


def tls_served_item(result, trusted=None, renew_before_days=15, endpoint=None, now=None):
    """tls_served for one result of a get_certificate loop over server names (the name is its item)."""
    result = result or {}
    return tls_served(result, result.get("item"), trusted, renew_before_days, now, endpoint)


def ingress_trusted_cas(secrets, issuers=None):
    """The CA certificates (PEM) a served chain may lead to: the CA key pairs of the Issuers (tls.crt of the
    Secret in spec.ca.secretName) and the ca.crt of every TLS Secret. Never returns a key."""
    by_key = {((s.get("metadata") or {}).get("namespace"), (s.get("metadata") or {}).get("name")): s
              for s in secrets or []}
    pems = []
    for issuer in issuers or []:
        secret_name = (((issuer.get("spec") or {}).get("ca")) or {}).get("secretName")
        secret = by_key.get(((issuer.get("metadata") or {}).get("namespace"), secret_name))
        if secret:
            pems.extend(_pem_list(x509f._text(x509f._b64(secret.get("data"), "tls.crt"))))
    for secret in secrets or []:
        if "ca.crt" in (secret.get("data") or {}):
            pems.extend(_pem_list(x509f._text(x509f._b64(secret.get("data"), "ca.crt"))))
    unique = []
    for pem in pems:
        if pem not in unique:
            unique.append(pem)
    return unique


def ingress_certificate_missing(ref):
    """The inspection entry of a Certificate ({name, namespace}) that does not exist."""
    return {"ref": "Certificate/%s/%s" % (ref.get("namespace"), ref.get("name")), "kind": "Certificate",
            "name": ref.get("name"), "namespace": ref.get("namespace"), "secret_name": None, "managed": False,
            "state": "missing", "reasons": ["Certificate %s/%s does not exist" % (ref.get("namespace"), ref.get("name"))],
            "dns_names": [], "ip_addresses": [], "serial": None, "not_after": None, "days_left": None}


def ingress_expected_serials(server_names, certificates):
    """{server name: serial of the certificate in the Secret of the Certificate that lists it} (None: unknown)."""
    out = {}
    for name in server_names or []:
        entry = _cert_for(name, certificates)
        out[name] = entry.get("serial") if entry and entry.get("state") not in ("missing", "missing-secret") else None
    return out


def route_backends(route):
    """[{'name', 'namespace'}] of the Services an Ingress or IngressRoute routes to, in order, once each."""
    route = route or {}
    meta, spec = route.get("metadata") or {}, route.get("spec") or {}
    ns = meta.get("namespace")
    found = []
    if route.get("kind") == "Ingress":
        backends = [spec.get("defaultBackend")] + [
            (path or {}).get("backend") for rule in spec.get("rules") or []
            for path in ((rule or {}).get("http") or {}).get("paths") or []]
        for backend in backends:
            service = (backend or {}).get("service") or {}
            if service.get("name"):
                found.append({"name": service["name"], "namespace": ns})
    else:  # Traefik IngressRoute (traefik.io or traefik.containo.us)
        for r in spec.get("routes") or []:
            for service in (r or {}).get("services") or []:
                if (service or {}).get("name") and (service.get("kind") or "Service") == "Service":
                    found.append({"name": service["name"], "namespace": service.get("namespace") or ns})
    unique = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return unique


def _drift(desired, live, path=""):
    """Paths where a desired value differs from the live one; fields only the live object has are ignored."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return ["%s: %s live, desired a mapping" % (path or ".", type(live).__name__)]
        out = []
        for key, value in desired.items():
            sub = "%s.%s" % (path, key) if path else str(key)
            if key not in live:
                out.append("%s: missing live" % sub)
            else:
                out.extend(_drift(value, live[key], sub))
        return out
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return ["%s: %s item(s) live, %d desired" % (path, len(live) if isinstance(live, list) else "no",
                                                          len(desired))]
        out = []
        for index, (want, have) in enumerate(zip(desired, live)):
            out.extend(_drift(want, have, "%s[%d]" % (path, index)))
        return out
    if desired != live and str(desired) != str(live):
        return ["%s: %r live, %r desired" % (path, live, desired)]
    return []


def ingress_route_verdicts(live_results, services=None):
    """One verdict per desired route, from the registered loop of k8s_info reads (item = desired manifest).

    services: the Services of the namespaces the routes send traffic to.
    """
    known = {((s.get("metadata") or {}).get("namespace"), (s.get("metadata") or {}).get("name"))
             for s in services or []}
    out = []
    for read in live_results or []:
        desired = read.get("item") or {}
        meta = desired.get("metadata") or {}
        live = (read.get("resources") or [None])[0]
        hosts = [r.get("host") for r in (desired.get("spec") or {}).get("rules") or [] if r.get("host")]
        hosts += [m for r in (desired.get("spec") or {}).get("routes") or [] for m in [r.get("match")] if m]
        entry = {"ref": "%s/%s/%s" % (desired.get("kind"), meta.get("namespace"), meta.get("name")),
                 "kind": desired.get("kind"), "api_version": desired.get("apiVersion"), "name": meta.get("name"),
                 "namespace": meta.get("namespace"), "hosts": hosts, "exists": live is not None,
                 "drift": False, "diff": [],
                 "backends": [dict(b, exists=(b["namespace"], b["name"]) in known) for b in route_backends(desired)]}
        if live is not None:
            diff = _drift({k: v for k, v in desired.items() if k not in ("status",)},
                          {k: v for k, v in live.items() if k not in ("status",)})
            entry.update(drift=bool(diff), diff=diff[:10])
        out.append(entry)
    return out


def _cert_for(server_name, certificates):
    """The Certificate entry whose spec lists server_name (wildcards count), else None."""
    for entry in certificates or []:
        if not x509f.x509_missing_names({"dns_names": entry.get("dns_names") or [],
                                          "ip_addresses": entry.get("ip_addresses") or []}, [server_name]):
            return entry
    return None


def ingress_tls_findings(traefik=None, routes=None, certificates=None, handshakes=None, http=None, logs=None):
    """Findings of the ingress diagnosis, worst first.

    traefik: the findings platform_diagnose made for the ingress component; routes: one entry per desired
    route ({ref, exists, drift, diff, backends: [{name, namespace, exists}]}); certificates: the
    `certificates` of renew_cert_inspect; handshakes: tls_served verdicts; http: {url, status, error, body}
    of the public endpoint; logs: {available, errors: [lines], error}.
    """
    findings = []
    traefik_broken = False
    for f in traefik or []:
        f = dict(f)
        restartable = f.get("code") in RESTART_CODES
        traefik_broken = True
        f["runbook"] = "ingress_tls" if restartable else "platform_down"
        findings.append(f)
    for route in routes or []:
        if not route.get("exists"):
            findings.append(_finding("ROUTE_MISSING", "critical", "route %s does not exist: its public hosts get no "
                                     "traffic" % route["ref"], [("hosts: %s" % ", ".join(route.get("hosts") or []))
                                                                or "no hosts"], ref=route["ref"]))
            continue
        if route.get("drift"):
            findings.append(_finding("ROUTE_DRIFT", "high", "route %s differs from its desired state" % route["ref"],
                                     route.get("diff") or ["live object differs from the desired manifest"],
                                     ref=route["ref"]))
        missing = [b for b in route.get("backends") or [] if not b.get("exists")]
        if missing:
            findings.append(_finding("ROUTE_BACKEND_MISSING", "high", "route %s sends traffic to Service(s) that do "
                                     "not exist: %s" % (route["ref"], ", ".join("%s/%s" % (b["namespace"], b["name"])
                                                                               for b in missing)),
                                     ["Service/%s/%s: not found" % (b["namespace"], b["name"]) for b in missing],
                                     ref=route["ref"], runbook="platform_down"))
    for entry in certificates or []:
        if entry.get("state") in CERT_CODES:
            code, severity = CERT_CODES[entry["state"]]
            evidence = list(entry.get("reasons") or [])
            if entry.get("serial"):
                evidence.append("Secret %s/%s: serial %s, not after %s" % (entry.get("namespace"), entry.get("secret_name"),
                                                                         entry.get("serial"), entry.get("not_after")))
            if entry["state"] == "missing":
                findings.append(_finding(code, severity, "certificate %s does not exist: nothing issues or renews its "
                                         "Secret" % entry["ref"], evidence, ref=entry["ref"], runbook=None,
                                         remediation="recreate the Certificate from the platform's desired state"))
                continue
            findings.append(_finding(code, severity, "certificate %s is %s" % (entry["ref"], entry["state"]),
                                     evidence, ref=entry["ref"]))
    for hs in handshakes or []:
        where = "%s (%s)" % (hs.get("endpoint") or "endpoint", hs["server_name"])
        served = ["served: serial %s, subject %s, issuer %s, not after %s, SANs %s" % (
            hs.get("serial"), hs.get("subject"), hs.get("issuer"), hs.get("not_after"),
            ", ".join(hs.get("dns_names") or []) or "none")] if hs.get("reachable") else []
        if not hs.get("reachable"):
            findings.append(_finding("TLS_HANDSHAKE_FAILED", "critical", "no TLS handshake with %s" % where,
                                     hs.get("reasons") or [hs.get("error")]))
            continue
        if hs.get("expired"):
            findings.append(_finding("TLS_CERT_EXPIRED", "critical", "%s serves an expired certificate" % where,
                                     hs["reasons"][:1] + served))
        if hs.get("hostname_matches") is False:
            findings.append(_finding("TLS_HOSTNAME_MISMATCH", "critical", "%s serves a certificate that is not valid "
                                     "for %s" % (where, hs["server_name"]),
                                     [r for r in hs["reasons"] if "do not cover" in r] + served))
        if hs.get("chain_verified") is False and not hs.get("expired"):
            findings.append(_finding("TLS_CHAIN_UNTRUSTED", "high", "%s serves a certificate whose chain is not "
                                     "trusted" % where, [hs.get("chain")] + served))
        if hs.get("state") == "expiring":
            findings.append(_finding("TLS_CERT_EXPIRING", "medium", "%s serves a certificate that expires soon"
                                     % where, hs["reasons"] + served))
        backing = _cert_for(hs["server_name"], certificates)
        if backing is None and certificates is not None:
            findings.append(_finding("TLS_NO_CERTIFICATE_FOR_HOST", "high", "no Certificate lists %s: renewing "
                                     "cannot fix what %s serves" % (hs["server_name"], where),
                                     ["Certificates: %s" % ", ".join("%s (%s)" % (c["ref"], ", ".join(c.get("dns_names")
                                                                                                      or []))
                                                                     for c in certificates or []) or "none"],
                                     runbook=None, remediation="add the host to a Certificate's dnsNames "
                                     "(desired state), then run ingress_tls"))
        elif (backing is not None and backing.get("state") == "valid" and backing.get("serial")
              and backing["serial"] != hs.get("serial")):
            findings.append(_finding("TLS_SERVED_CERT_STALE", "high", "%s does not serve the certificate of %s (Secret "
                                     "%s)" % (where, backing["ref"], backing.get("secret_name")),
                                     ["Secret %s/%s: serial %s, not after %s" % (backing.get("namespace"),
                                                                                backing.get("secret_name"),
                                                                                backing["serial"],
                                                                                backing.get("not_after"))] + served,
                                     ref=backing["ref"]))
    if http and (http.get("error") or int(http.get("status") or 0) >= 500 or not http.get("status")):
        answer = ("HTTP %s: %s" % (http.get("status"), (http.get("body") or "").strip()[:200])
                  if http.get("status") else http.get("error"))
        findings.append(_finding("PUBLIC_ENDPOINT_UNAVAILABLE", "critical", "the public endpoint %s does not serve "
                                 "the platform" % http.get("url"), [answer],
                                 runbook="ingress_tls" if traefik_broken else "frontend_not_loading"))
    if logs and logs.get("errors"):
        findings.append(_finding("TRAEFIK_LOG_ERRORS", "low", "Traefik logged %d error line(s)" % len(logs["errors"]),
                                 logs["errors"][:10], component="traefik"))
    findings.sort(key=lambda f: (SEVERITY_ORDER.index(f["severity"]), f["code"], f.get("ref") or ""))
    return findings


def ingress_tls_plan(findings, routes=None, max_routes=10):
    """What the runbook does about the findings: routes to reapply, restart Traefik, renew, hand over."""
    codes = {f["code"] for f in findings or []}
    reapply, skipped = [], []
    for f in findings or []:
        if f["code"] in ("ROUTE_MISSING", "ROUTE_DRIFT") and f["ref"] not in reapply:
            if len(reapply) >= int(max_routes):
                skipped.append({"ref": f["ref"], "why": "cap reached: at most %s route(s) reapplied per run" % max_routes})
            else:
                reapply.append(f["ref"])
    restart_reasons = [f["message"] for f in findings or [] if f["code"] in RESTART_CODES + ("TLS_SERVED_CERT_STALE",)]
    renew = sorted({f["ref"] for f in findings or [] if f["code"] in ("CERT_EXPIRED", "CERT_MISSING_SECRET",
                                                                       "CERT_INVALID", "CERT_EXPIRING")})
    handover = []
    for f in findings or []:
        if f.get("runbook") not in (None, "ingress_tls") and f["code"] != "TRAEFIK_LOG_ERRORS":
            handover.append("%s: %s -> %s.yml" % (f["code"], f["message"], f["runbook"]))
        elif f.get("runbook") is None and f["severity"] != "low":
            handover.append("%s: %s -> a human (%s)" % (f["code"], f["message"], f.get("remediation") or "escalate"))
    served_bad = codes & {"TLS_CERT_EXPIRED", "TLS_HOSTNAME_MISMATCH", "TLS_CHAIN_UNTRUSTED", "TLS_CERT_EXPIRING"}
    if served_bad and not renew and not restart_reasons:
        handover.append("%s while every Certificate is valid and Traefik serves its Secret -> a human (check the "
                        "issuer and what sits in front of Traefik)" % ", ".join(sorted(served_bad)))
    return {"reapply": reapply, "restart": bool(restart_reasons), "restart_reasons": restart_reasons,
            "renew": renew, "handover": handover, "skipped": skipped}


def ingress_ref(obj):
    """'Kind/namespace/name' of a manifest or of a {kind, name, namespace} dict."""
    obj = obj or {}
    meta = obj.get("metadata") or obj
    return "%s/%s/%s" % (obj.get("kind"), meta.get("namespace"), meta.get("name"))


def ingress_ref_object(ref):
    """{'name', 'namespace'} of a 'Kind/namespace/name' string (what renew_cert_certificates takes)."""
    _, namespace, name = ref.split("/", 2)
    return {"name": name, "namespace": namespace}


def ingress_name_namespace(entry):
    """{'name', 'namespace'} of an inventory certificate entry (which has more keys)."""
    return {"name": entry["name"], "namespace": entry["namespace"]}


def ingress_routes_named(manifests, refs):
    """The manifests whose 'Kind/namespace/name' is in refs, in the manifests' order."""
    return [m for m in manifests or [] if ingress_ref(m) in (refs or [])]


def ingress_renewal_line(entry):
    """One report line for a verified re-issuance of renew_cert."""
    before, after = entry.get("before") or {}, entry.get("after") or {}
    return "re-issued through cert-manager and verified: %s (serial %s -> %s, valid until %s)" % (
        entry.get("ref"), before.get("serial"), after.get("serial"), after.get("not_after"))


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "tls_served": tls_served,
            "tls_served_item": tls_served_item,
            "ingress_trusted_cas": ingress_trusted_cas,
            "ingress_certificate_missing": ingress_certificate_missing,
            "ingress_expected_serials": ingress_expected_serials,
            "route_backends": route_backends,
            "ingress_route_verdicts": ingress_route_verdicts,
            "ingress_tls_findings": ingress_tls_findings,
            "ingress_tls_plan": ingress_tls_plan,
            "ingress_ref": ingress_ref,
            "ingress_ref_object": ingress_ref_object,
            "ingress_routes_named": ingress_routes_named,
            "ingress_name_namespace": ingress_name_namespace,
            "ingress_renewal_line": ingress_renewal_line,
        }
