"""X.509 inspection of TLS Secrets and the decisions of the renew_cert role.

Every function takes plain values or the dicts kubernetes.core.k8s_info returns, and returns
plain data: the role only reads the cluster, calls these and acts on the plan, so each
judgement and each message is unit-tested without a cluster (tests/unit/test_x509_filter.py).

Nothing returned ever contains key material: a private key is only loaded to compare its public
key with the certificate's.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress

DOCUMENTATION = """
name: x509
short_description: X.509 inspection filters and the planning filters of the renew_cert role
description:
  - C(x509_info) parses a PEM certificate (and optionally the PEM private key that goes with it) into
    serial, validity, days left, subject, issuer, SANs and whether the key matches the certificate.
  - C(x509_missing_names) lists the names of a list that a certificate's SANs do not cover (wildcards count).
  - C(tls_secret_info) does C(x509_info) on a Kubernetes Secret's C(tls.crt)/C(tls.key) (base64 C(data)).
  - C(renew_cert_inspect) judges cert-manager Certificates with their Secrets, and the TLS Secrets no
    Certificate manages; C(renew_cert_plan) chooses what to re-issue within a cap.
  - C(renew_cert_issued) tells whether a Secret holds a new, parsable certificate (the wait condition).
  - C(renew_cert_request_problem) explains, from the CertificateRequests, why an issuance did not finish.
  - C(renew_cert_verified) adds to each re-issuance what the verification found.
requirements:
  - cryptography (Python library)
"""

CERT_MANAGER_ANNOTATION = "cert-manager.io/certificate-name"
ISSUER_ANNOTATIONS = ("cert-manager.io/issuer-name", "cert-manager.io/issuer-kind", "cert-manager.io/issuer-group")
# Renew in this order: what is broken now first, then what breaks soonest.
PRIORITY = {"expired": 0, "invalid": 1, "missing-secret": 2, "expiring": 3}


def _utc_now(now=None):
    if now is None:
        return datetime.datetime.now(datetime.timezone.utc)
    if isinstance(now, (int, float)):
        return datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    if isinstance(now, str):
        return datetime.datetime.fromisoformat(now.replace("Z", "+00:00"))
    return now if now.tzinfo else now.replace(tzinfo=datetime.timezone.utc)


def _iso(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value):
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _public_bytes(public_key):
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def x509_info(cert_pem, key_pem=None, now=None):
    """Parse the first certificate of a PEM bundle; compare it with key_pem when given.

    Never raises on bad input: ``parsed`` is false and ``error`` says why.
    """
    info = {"parsed": False, "error": None, "serial": None, "not_before": None, "not_after": None,
            "days_left": None, "expired": None, "subject": None, "issuer": None, "common_name": None,
            "dns_names": [], "ip_addresses": [], "is_ca": False, "self_signed": None,
            "key_matches": None, "key_error": None}
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.x509.oid import NameOID
    except ImportError:  # pragma: no cover - the project's venv has it
        info["error"] = "the Python library 'cryptography' is not installed"
        return info

    text = _text(cert_pem).strip()
    if not text:
        info["error"] = "no certificate (tls.crt is empty or missing)"
        return info
    try:
        cert = x509.load_pem_x509_certificate(text.encode())
    except ValueError as exc:
        info["error"] = "tls.crt is not a PEM certificate (%s)" % (str(exc).splitlines()[0] if str(exc) else "unparsable")
        return info

    moment = _utc_now(now)
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    info.update(
        parsed=True,
        serial="%x" % cert.serial_number,
        not_before=_iso(not_before),
        not_after=_iso(not_after),
        days_left=round((not_after - moment).total_seconds() / 86400, 2),
        expired=not (not_before <= moment <= not_after),
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        self_signed=cert.subject == cert.issuer,
    )
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    info["common_name"] = _text(common_names[0].value) if common_names else None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        info["dns_names"] = san.get_values_for_type(x509.DNSName)
        info["ip_addresses"] = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    try:
        info["is_ca"] = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        pass

    if key_pem is not None:
        key_text = _text(key_pem).strip()
        if not key_text:
            info["key_matches"] = False
            info["key_error"] = "no private key (tls.key is empty or missing)"
        else:
            try:
                key = serialization.load_pem_private_key(key_text.encode(), password=None)
                info["key_matches"] = _public_bytes(key.public_key()) == _public_bytes(cert.public_key())
            except (ValueError, TypeError) as exc:
                info["key_matches"] = False
                info["key_error"] = "tls.key is not a readable PEM private key (%s)" % type(exc).__name__
    return info


def _name_covered(name, patterns):
    name = name.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern == name:
            return True
        # A wildcard covers exactly one leftmost label (RFC 6125 6.4.3).
        if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def x509_missing_names(info, names):
    """The names (DNS names or IP addresses) that the certificate described by ``info`` does not cover."""
    info = info or {}
    missing = []
    for name in names or []:
        try:
            ip = str(ipaddress.ip_address(name))
            if ip not in (info.get("ip_addresses") or []):
                missing.append(name)
            continue
        except ValueError:
            pass
        if not _name_covered(name, info.get("dns_names") or []):
            missing.append(name)
    return missing


def _b64(data, key):
    value = (data or {}).get(key)
    if value is None:
        return None
    try:
        return base64.b64decode(value)
    except (binascii.Error, ValueError, TypeError):
        return b""


def tls_secret_info(secret, now=None):
    """x509_info of a Secret's tls.crt with its tls.key (the dict kubernetes.core.k8s_info returns)."""
    data = (secret or {}).get("data") or {}
    key = _b64(data, "tls.key")
    return x509_info(_b64(data, "tls.crt"), key if key is not None else b"", now)


def _condition(obj, kind):
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def _ref(kind, obj):
    meta = obj.get("metadata") or {}
    return "%s/%s/%s" % (kind, meta.get("namespace"), meta.get("name"))


def _judge(info, renew_before_days, wanted_names):
    """State and reasons from one certificate's info; the state is the worst one that applies."""
    if not info["parsed"]:
        return "invalid", [info["error"]]
    reasons = []
    state = "valid"
    if info["key_matches"] is False:
        reasons.append(info["key_error"] or "tls.key does not match tls.crt (different public keys)")
        state = "invalid"
    missing = x509_missing_names(info, wanted_names)
    if missing:
        reasons.append("SANs %s do not cover %s" % (", ".join(info["dns_names"] + info["ip_addresses"]) or "(none)",
                                                    ", ".join(missing)))
        state = "invalid"
    if info["expired"]:
        if info["days_left"] is not None and info["days_left"] < 0:
            reasons.insert(0, "expired on %s (%.1f days ago)" % (info["not_after"], -info["days_left"]))
        else:
            reasons.insert(0, "not valid before %s" % info["not_before"])
        state = "expired"
    elif state == "valid" and info["days_left"] < renew_before_days:
        reasons.append("expires on %s, in %.1f days (threshold %s days)" % (
            info["not_after"], info["days_left"], renew_before_days))
        state = "expiring"
    return state, reasons


def _summary(info):
    return {key: info.get(key) for key in ("serial", "not_before", "not_after", "days_left", "issuer", "subject",
                                           "dns_names", "ip_addresses", "key_matches")}


def _unique(objects):
    """The objects once each (by namespace and name), in their first order."""
    seen, out = set(), []
    for obj in objects or []:
        meta = obj.get("metadata") or {}
        key = (obj.get("kind"), meta.get("namespace"), meta.get("name"))
        if key not in seen:
            seen.add(key)
            out.append(obj)
    return out


def renew_cert_inspect(certificates, secrets, renew_before_days=15, now=None, issuers=None, unmanaged=True,
                       unmanaged_namespaces=None):
    """Judge each Certificate with its Secret, and the TLS Secrets that no Certificate manages.

    certificates: cert-manager Certificates; secrets: the Secrets of their namespaces (any type);
    issuers: Issuers/ClusterIssuers (to recognise CA key-pair Secrets); unmanaged: also report the
    TLS Secrets no Certificate names (only in unmanaged_namespaces when that is given).
    Returns {'certificates': [...], 'secrets': [...]}.
    """
    renew_before_days = float(renew_before_days)
    certificates = _unique(certificates)
    by_key = {}
    for secret in secrets or []:
        meta = secret.get("metadata") or {}
        by_key[(meta.get("namespace"), meta.get("name"))] = secret
    managed_keys = set()
    out_certs = []
    for crt in certificates or []:
        meta, spec = crt.get("metadata") or {}, crt.get("spec") or {}
        ns, secret_name = meta.get("namespace"), spec.get("secretName")
        managed_keys.add((ns, secret_name))
        ready, issuing = _condition(crt, "Ready"), _condition(crt, "Issuing")
        entry = {
            "ref": _ref("Certificate", crt), "kind": "Certificate", "name": meta.get("name"), "namespace": ns,
            "secret_name": secret_name, "managed": True,
            "generation": meta.get("generation"), "revision": (crt.get("status") or {}).get("revision"),
            "dns_names": list(spec.get("dnsNames") or []), "ip_addresses": list(spec.get("ipAddresses") or []),
            "issuer_ref": {"name": (spec.get("issuerRef") or {}).get("name"),
                           "kind": (spec.get("issuerRef") or {}).get("kind") or "Issuer",
                           "group": (spec.get("issuerRef") or {}).get("group") or "cert-manager.io"},
            "ready": ready.get("status") if ready else None,
            "ready_message": ("%s: %s" % (ready.get("reason"), ready.get("message"))) if ready else None,
            "issuing": bool(issuing and issuing.get("status") == "True"),
            "issuing_since": issuing.get("lastTransitionTime") if issuing else None,
        }
        secret = by_key.get((ns, secret_name))
        if secret is None:
            entry.update(state="missing-secret", reasons=["Secret %s/%s does not exist" % (ns, secret_name)],
                         serial=None, not_before=None, not_after=None, days_left=None, issuer=None, subject=None,
                         key_matches=None)
        else:
            info = tls_secret_info(secret, now)
            state, reasons = _judge(info, renew_before_days, entry["dns_names"] + entry["ip_addresses"])
            entry.update(_summary(info), state=state, reasons=reasons,
                         cert_dns_names=info["dns_names"], cert_ip_addresses=info["ip_addresses"])
            entry["dns_names"] = list(spec.get("dnsNames") or [])
            entry["ip_addresses"] = list(spec.get("ipAddresses") or [])
        out_certs.append(entry)

    ca_secrets = {}
    for issuer in issuers or []:
        ca = (issuer.get("spec") or {}).get("ca") or {}
        if ca.get("secretName"):
            meta = issuer.get("metadata") or {}
            ca_secrets[(meta.get("namespace"), ca["secretName"])] = _ref(issuer.get("kind") or "Issuer", issuer)

    out_secrets = []
    for key, secret in sorted(by_key.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or "")):
        if not unmanaged or key in managed_keys:
            continue
        if unmanaged_namespaces is not None and key[0] not in unmanaged_namespaces:
            continue
        data = secret.get("data") or {}
        if secret.get("type") != "kubernetes.io/tls" and "tls.crt" not in data:
            continue
        meta = secret.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        info = tls_secret_info(secret, now)
        entry = {"ref": _ref("Secret", secret), "kind": "Secret", "name": meta.get("name"),
                 "namespace": meta.get("namespace"), "secret_name": meta.get("name"), "managed": False}
        entry.update(_summary(info))
        if key in ca_secrets:
            state, reasons = _judge(info, renew_before_days, [])
            entry.update(state=state, reasons=reasons, role="ca-key-pair", why=(
                "CA key pair of %s; not renewed by this runbook: rotate a CA by hand (new key pair in this "
                "Secret, then re-issue the Certificates it signed)" % ca_secrets[key]))
        else:
            state, reasons = _judge(info, renew_before_days, [])
            certificate = annotations.get(CERT_MANAGER_ANNOTATION)
            if certificate:
                why = ("annotated as issued by cert-manager for Certificate %s, which does not exist: nothing renews "
                       "it. Recreate the Certificate (spec.secretName: %s) or renew the Secret by hand"
                       % (certificate, meta.get("name")))
            else:
                why = ("not managed by cert-manager (no Certificate names it in spec.secretName, no cert-manager.io "
                       "annotations): nothing renews it automatically. Renew it by hand with the CA that issued it "
                       "(issuer: %s) and replace tls.crt and tls.key, or put it under cert-manager with a Certificate "
                       "whose spec.secretName is %s" % (info.get("issuer") or "unknown", meta.get("name")))
            entry.update(state=state, reasons=reasons, role="unmanaged", why=why)
        out_secrets.append(entry)
    return {"certificates": out_certs, "secrets": out_secrets}


def _issuer_problem(entry, issuers):
    ref = entry.get("issuer_ref") or {}
    if ref.get("group") not in (None, "", "cert-manager.io"):
        return None  # an external issuer: its readiness is not ours to read
    kind = ref.get("kind") or "Issuer"
    for issuer in issuers or []:
        meta = issuer.get("metadata") or {}
        if (issuer.get("kind") or "Issuer") != kind or meta.get("name") != ref.get("name"):
            continue
        if kind == "Issuer" and meta.get("namespace") != entry.get("namespace"):
            continue
        ready = _condition(issuer, "Ready")
        if ready and ready.get("status") == "True":
            return None
        detail = ("%s: %s" % (ready.get("reason"), ready.get("message"))) if ready else "no Ready condition"
        return "its issuer %s %s is not Ready (%s): fix the issuer first; re-issuing now would only fail" % (
            kind, ref.get("name"), detail)
    where = (" in namespace %s" % entry.get("namespace")) if kind == "Issuer" else ""
    return "its issuer %s %s does not exist%s: create it (or fix spec.issuerRef) first" % (kind, ref.get("name"), where)


def renew_cert_plan(inspected, max_renewals=5, issuers=None, check_issuers=True):
    """What to re-issue: the broken Certificates, worst first, at most max_renewals; the rest with why."""
    max_renewals = int(max_renewals)
    inspected = inspected or {}
    renew, skipped = [], []
    broken = [c for c in inspected.get("certificates", []) if c.get("state") in PRIORITY]
    broken.sort(key=lambda c: (PRIORITY[c["state"]], c["days_left"] if c.get("days_left") is not None else -1e9,
                               c["ref"]))
    for entry in broken:
        if entry.get("issuing"):
            skipped.append({"ref": entry["ref"], "why": (
                "cert-manager is already issuing it (Issuing=True since %s): wait for it; if it does not finish, "
                "read its CertificateRequest (kubectl -n %s get certificaterequests)" % (
                    entry.get("issuing_since") or "unknown", entry.get("namespace")))})
            continue
        problem = _issuer_problem(entry, issuers) if check_issuers else None
        if problem:
            skipped.append({"ref": entry["ref"], "why": problem})
            continue
        if len(renew) >= max_renewals:
            skipped.append({"ref": entry["ref"], "why": (
                "cap reached: renew_cert_max_renewals is %d; run again to re-issue the rest" % max_renewals)})
            continue
        renew.append(entry)
    for entry in inspected.get("secrets", []):
        skipped.append({"ref": entry["ref"], "why": entry["why"]})
    return {"renew": renew, "skipped": skipped}


def renew_cert_issued(secret, before_serial=None, now=None):
    """True when the Secret holds a parsable certificate whose serial differs from before_serial."""
    if not secret:
        return False
    info = tls_secret_info(secret, now)
    return bool(info["parsed"]) and info["serial"] != before_serial


def renew_cert_request_problem(requests, certificate):
    """Why a triggered issuance did not finish, from the Certificate's latest CertificateRequest."""
    mine = [r for r in requests or []
            if ((r.get("metadata") or {}).get("annotations") or {}).get(CERT_MANAGER_ANNOTATION) == certificate]
    if not mine:
        return ("no CertificateRequest was created for it: is the cert-manager controller running, and does it "
                "watch this namespace?")
    last = sorted(mine, key=lambda r: ((r.get("metadata") or {}).get("creationTimestamp") or "",
                                       (r.get("metadata") or {}).get("name") or ""))[-1]
    conditions = {c.get("type"): c for c in (last.get("status") or {}).get("conditions") or []}
    name = last["metadata"]["name"]

    def detail(cond):
        return "%s: %s" % (cond.get("reason"), cond.get("message"))

    for kind, verb in (("Denied", "was denied"), ("InvalidRequest", "is invalid")):
        if (conditions.get(kind) or {}).get("status") == "True":
            return "its CertificateRequest %s %s (%s)" % (name, verb, detail(conditions[kind]))
    ready = conditions.get("Ready")
    if ready and ready.get("status") != "True":
        return "its CertificateRequest %s is not Ready (%s)" % (name, detail(ready))
    if (conditions.get("Approved") or {}).get("status") != "True":
        return "its CertificateRequest %s is not approved yet" % name
    return "its CertificateRequest %s has no outcome yet" % name


def renew_cert_verified(done, after):
    """The re-issuances with what verification found: after-state, reasons, verified, problem."""
    by_ref = {entry["ref"]: entry for entry in (after or {}).get("certificates", [])}
    out = []
    for item in done or []:
        item = dict(item)
        now = by_ref.get(item["ref"])
        if item.get("error"):
            item.update(verified=False, problem="%s: %s" % (item["ref"], item["error"]))
        elif item.get("after") is None:
            item.update(verified=None, problem=None)
        elif now is None:
            item.update(verified=False, problem="%s: could not be read back" % item["ref"])
        else:
            item["after"] = dict(item["after"], state=now["state"], reasons=now["reasons"],
                                 not_after=now.get("not_after"), serial=now.get("serial"),
                                 days_left=now.get("days_left"), dns_names=now.get("cert_dns_names"),
                                 key_matches=now.get("key_matches"))
            ok = now["state"] == "valid" and now.get("serial") != (item.get("before") or {}).get("serial")
            item.update(verified=ok, problem=None if ok else "%s: the new certificate is %s (%s)" % (
                item["ref"], now["state"], "; ".join(now["reasons"]) or "same serial as before"))
        out.append(item)
    return out


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "x509_info": x509_info,
            "x509_missing_names": x509_missing_names,
            "tls_secret_info": tls_secret_info,
            "renew_cert_inspect": renew_cert_inspect,
            "renew_cert_plan": renew_cert_plan,
            "renew_cert_issued": renew_cert_issued,
            "renew_cert_request_problem": renew_cert_request_problem,
            "renew_cert_verified": renew_cert_verified,
        }
