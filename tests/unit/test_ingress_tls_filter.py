"""ingress_tls's judgements on hand-made data: the served certificate, routes, findings and the plan."""

from __future__ import annotations

import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plugins.filter import ingress_tls as f

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn, key):
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - 400 * DAY)
            .not_valid_after(NOW + 3650 * DAY).add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))


CA_KEY, OTHER_KEY = _key(), _key()
CA = _ca("unit-ca", CA_KEY)
OTHER_CA = _ca("other-ca", OTHER_KEY)


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def leaf(names=("app.example.com",), not_before=NOW - 30 * DAY, not_after=NOW + 60 * DAY, ca=CA, ca_key=CA_KEY,
         issuer_name=None):
    key = _key()
    cert = (x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(issuer_name or ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert


def handshake(cert, chain=None):
    """What community.crypto.get_certificate returns (the parts the filter reads)."""
    return {"cert": _pem(cert), "unverified_chain": [_pem(c) for c in (chain or [cert])], "changed": False}


# ----------------------------------------------------------------------------------- tls_served

def test_a_valid_certificate_for_the_name_from_the_trusted_ca():
    cert = leaf()
    out = f.tls_served(handshake(cert), "app.example.com", [_pem(CA)], 15, NOW, "127.0.0.1:443")
    assert out["state"] == "valid" and out["reasons"] == []
    assert out["reachable"] is True and out["hostname_matches"] is True and out["chain_verified"] is True
    assert out["serial"] == "%x" % cert.serial_number and out["endpoint"] == "127.0.0.1:443"
    assert out["chain"] == "issued by trusted CA CN=unit-ca"


def test_expired_wins_over_every_other_problem_and_says_when():
    cert = leaf(names=("other.example.com",), not_before=NOW - 95 * DAY, not_after=NOW - 5 * DAY)
    out = f.tls_served(handshake(cert), "app.example.com", [_pem(CA)], 15, NOW)
    assert out["state"] == "expired" and out["expired"] is True
    assert out["reasons"][0] == "expired on 2026-05-27T12:00:00Z (5.0 days ago)"
    assert any("do not cover app.example.com" in r for r in out["reasons"])


def test_wrong_host_wildcards_and_expiring():
    wrong = f.tls_served(handshake(leaf(names=("api.example.com",))), "app.example.com", [_pem(CA)], 15, NOW)
    assert wrong["state"] == "wrong-host" and wrong["hostname_matches"] is False
    assert wrong["reasons"] == ["its SANs (api.example.com) do not cover app.example.com"]
    wildcard = f.tls_served(handshake(leaf(names=("*.example.com",))), "app.example.com", [_pem(CA)], 15, NOW)
    assert wildcard["state"] == "valid"
    soon = f.tls_served(handshake(leaf(not_after=NOW + 3 * DAY)), "app.example.com", [_pem(CA)], 15, NOW)
    assert soon["state"] == "expiring" and "in 3.0 days (threshold 15 days)" in soon["reasons"][0]


def test_chain_untrusted_forged_issuer_and_through_an_intermediate():
    stranger = f.tls_served(handshake(leaf(ca=OTHER_CA, ca_key=OTHER_KEY)), "app.example.com", [_pem(CA)], 15, NOW)
    assert stranger["state"] == "untrusted" and stranger["chain_verified"] is False
    assert "issuer CN=other-ca is not a trusted CA (trusted: CN=unit-ca)" in stranger["chain"]
    # Claims the trusted CA's name but is signed by another key.
    forged = f.tls_served(handshake(leaf(ca_key=OTHER_KEY)), "app.example.com", [_pem(CA)], 15, NOW)
    assert forged["chain_verified"] is False and "signature does not verify" in forged["chain"]
    # leaf <- intermediate (served) <- trusted root
    inter_key = _key()
    inter = (x509.CertificateBuilder().subject_name(_name("inter")).issuer_name(CA.subject)
             .public_key(inter_key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(NOW - DAY).not_valid_after(NOW + 100 * DAY)
             .add_extension(x509.BasicConstraints(ca=True, path_length=0), True).sign(CA_KEY, hashes.SHA256()))
    cert = leaf(ca=inter, ca_key=inter_key)
    via = f.tls_served(handshake(cert, [cert, inter]), "app.example.com", [_pem(CA)], 15, NOW)
    assert via["chain_verified"] is True and via["state"] == "valid"
    unknown = f.tls_served(handshake(leaf()), "app.example.com", [], 15, NOW)
    assert unknown["chain_verified"] is None and unknown["state"] == "valid"


def test_no_handshake_is_unreachable_with_the_reason():
    out = f.tls_served({"failed": True, "msg": "Failed to get cert from 127.0.0.1:443, error: [Errno 111] "
                                              "Connection refused"}, "app.example.com", endpoint="127.0.0.1:443")
    assert out["state"] == "unreachable" and out["reachable"] is False
    assert out["reasons"] == ["no TLS handshake with 127.0.0.1:443 for app.example.com: Failed to get cert from "
                              "127.0.0.1:443, error: [Errno 111] Connection refused"]
    item = f.tls_served_item({"item": "app.example.com", "failed": True, "msg": "timed out"}, endpoint="e")
    assert item["server_name"] == "app.example.com" and item["error"] == "timed out"


# ----------------------------------------------------------------------------------- routes

INGRESS = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": "saasodoo", "namespace": "sys", "labels": {"a": "b"}},
           "spec": {"ingressClassName": "traefik",
                    "rules": [{"host": "app.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "frontend",
                                                                                     "port": {"name": "http"}}}}]}},
                              {"host": "api.example.com", "http": {"paths": [
                                  {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "backend",
                                                                                               "port": {"name": "http"}}}}]}}]}}
ROUTE = {"apiVersion": "traefik.io/v1alpha1", "kind": "IngressRoute", "metadata": {"name": "saasodoo", "namespace": "sys"},
         "spec": {"entryPoints": ["web"], "routes": [
             {"kind": "Rule", "match": "Host(`app.example.com`)", "services": [{"name": "frontend", "port": 3000}]},
             {"kind": "Rule", "match": "Host(`api.example.com`)",
              "services": [{"name": "backend", "namespace": "other", "port": 8000}]}],
             "tls": {"secretName": "tls"}}}


def _service(ns, name):
    return {"kind": "Service", "metadata": {"namespace": ns, "name": name}}


def test_route_backends_of_ingress_and_ingressroute():
    assert f.route_backends(INGRESS) == [{"name": "frontend", "namespace": "sys"}, {"name": "backend", "namespace": "sys"}]
    assert f.route_backends(ROUTE) == [{"name": "frontend", "namespace": "sys"}, {"name": "backend", "namespace": "other"}]


def test_route_verdicts_missing_drift_defaults_and_backends():
    live = copy_with(INGRESS, status={"loadBalancer": {}})
    live["metadata"] = dict(live["metadata"], uid="1", resourceVersion="9", labels={"a": "b", "extra": "x"})
    drifted = copy_with(ROUTE)
    drifted["spec"] = dict(ROUTE["spec"], entryPoints=["websecure"])
    out = f.ingress_route_verdicts(
        [{"item": INGRESS, "resources": [live]}, {"item": ROUTE, "resources": [drifted]},
         {"item": ROUTE, "resources": []}],
        [_service("sys", "frontend"), _service("sys", "backend")])
    ingress, route, gone = out
    # Fields only the live object has (uid, extra labels, status) are not drift.
    assert ingress["exists"] and not ingress["drift"] and ingress["hosts"] == ["app.example.com", "api.example.com"]
    assert route["drift"] and route["diff"] == ["spec.entryPoints[0]: 'websecure' live, 'web' desired"]
    assert route["backends"] == [{"name": "frontend", "namespace": "sys", "exists": True},
                                 {"name": "backend", "namespace": "other", "exists": False}]
    assert gone["exists"] is False and gone["ref"] == "IngressRoute/sys/saasodoo"


def copy_with(obj, **extra):
    import copy

    out = copy.deepcopy(obj)
    out.update(extra)
    return out


# ----------------------------------------------------------------------------------- certificates

def _secret(ns, name, cert=None, ca=None):
    data = {}
    if cert is not None:
        data["tls.crt"] = base64.b64encode(_pem(cert).encode()).decode()
    if ca is not None:
        data["ca.crt"] = base64.b64encode(_pem(ca).encode()).decode()
    return {"kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"namespace": ns, "name": name}, "data": data}


def test_trusted_cas_from_issuer_key_pairs_and_ca_crt_without_duplicates():
    issuer = {"kind": "Issuer", "metadata": {"namespace": "sys", "name": "ca"}, "spec": {"ca": {"secretName": "ca-kp"}}}
    secrets = [_secret("sys", "ca-kp", CA), _secret("sys", "tls", leaf(), ca=CA), _secret("sys", "x", leaf(), OTHER_CA)]
    assert f.ingress_trusted_cas(secrets, [issuer]) == [_pem(CA), _pem(OTHER_CA)]


def test_expected_serials_and_missing_certificate_entry():
    certs = [{"ref": "Certificate/sys/c", "dns_names": ["*.example.com"], "state": "valid", "serial": "ab"},
             {"ref": "Certificate/sys/d", "dns_names": ["db.example.org"], "state": "missing-secret", "serial": None}]
    assert f.ingress_expected_serials(["app.example.com", "db.example.org", "x.test"], certs) == {
        "app.example.com": "ab", "db.example.org": None, "x.test": None}
    missing = f.ingress_certificate_missing({"name": "c", "namespace": "sys"})
    assert missing["state"] == "missing" and missing["ref"] == "Certificate/sys/c"


# ----------------------------------------------------------------------------------- findings and plan

def _hs(**kw):
    base = {"server_name": "app.example.com", "endpoint": "127.0.0.1:443", "reachable": True, "serial": "ab",
            "subject": "CN=app", "issuer": "CN=ca", "not_after": "2027-01-01T00:00:00Z", "dns_names": ["app.example.com"],
            "expired": False, "hostname_matches": True, "chain_verified": True, "chain": "issued by trusted CA CN=ca",
            "state": "valid", "reasons": []}
    base.update(kw)
    return base


CERT_OK = {"ref": "Certificate/sys/c", "namespace": "sys", "secret_name": "tls", "dns_names": ["app.example.com"],
           "state": "valid", "serial": "ab", "not_after": "2027-01-01T00:00:00Z", "reasons": []}


def test_a_healthy_ingress_has_no_findings_and_nothing_to_do():
    findings = f.ingress_tls_findings([], [{"ref": "Ingress/sys/s", "exists": True, "drift": False, "backends": []}],
                                      [CERT_OK], [_hs()], {"url": "https://x", "status": 200, "error": None},
                                      {"errors": [], "unavailable": ["p: no log"]})
    assert findings == []
    assert f.ingress_tls_plan(findings) == {"reapply": [], "restart": False, "restart_reasons": [], "renew": [],
                                            "handover": [], "skipped": []}


def test_expired_certificate_missing_route_and_crashing_traefik():
    expired_cert = dict(CERT_OK, state="expired", serial="0e", reasons=["expired on 2026-05-27T12:00:00Z (5.0 days ago)"])
    crash = {"code": "WORKLOAD_CRASHLOOP", "severity": "critical", "message": "traefik: pods in CrashLoopBackOff",
             "component": "traefik", "ref": "Deployment/sys/traefik", "evidence": ["p1: CrashLoopBackOff"]}
    findings = f.ingress_tls_findings(
        [crash], [{"ref": "IngressRoute/sys/s", "exists": False, "hosts": ["Host(`app.example.com`)"]}],
        [expired_cert], [_hs(serial="0e", expired=True, state="expired", reasons=["expired on x (5.0 days ago)"])],
        {"url": "https://x/", "status": 503, "body": "no available server (traefik: no ready pod)\n"})
    codes = [x["code"] for x in findings]
    assert codes == ["CERT_EXPIRED", "PUBLIC_ENDPOINT_UNAVAILABLE", "ROUTE_MISSING", "TLS_CERT_EXPIRED",
                     "WORKLOAD_CRASHLOOP"]
    assert {x["severity"] for x in findings} == {"critical"}
    assert all(x["runbook"] == "ingress_tls" for x in findings)
    assert "HTTP 503: no available server (traefik: no ready pod)" in findings[1]["evidence"]
    plan = f.ingress_tls_plan(findings)
    assert plan["reapply"] == ["IngressRoute/sys/s"] and plan["restart"] is True
    assert plan["renew"] == ["Certificate/sys/c"] and plan["handover"] == []


def test_stale_served_certificate_restarts_traefik_and_a_host_without_certificate_goes_to_a_human():
    stale = f.ingress_tls_findings([], [], [CERT_OK], [_hs(serial="old")], None)
    assert [x["code"] for x in stale] == ["TLS_SERVED_CERT_STALE"]
    assert f.ingress_tls_plan(stale)["restart"] is True
    orphan = f.ingress_tls_findings([], [], [CERT_OK], [_hs(server_name="shop.example.org", hostname_matches=False,
                                                            state="wrong-host", reasons=["its SANs (app.example.com) "
                                                                                         "do not cover shop.example.org"])],
                                    None)
    assert [x["code"] for x in orphan] == ["TLS_HOSTNAME_MISMATCH", "TLS_NO_CERTIFICATE_FOR_HOST"]
    plan = f.ingress_tls_plan(orphan)
    assert plan["renew"] == [] and not plan["restart"]
    assert any("TLS_NO_CERTIFICATE_FOR_HOST" in h and "a human" in h for h in plan["handover"])


def test_scaled_to_zero_traefik_and_missing_backends_are_handed_over_and_caps_hold():
    zero = {"code": "WORKLOAD_SCALED_TO_ZERO", "severity": "critical", "message": "traefik at 0", "ref": "D/s/t"}
    findings = f.ingress_tls_findings(
        [zero], [{"ref": "Ingress/sys/a", "exists": True, "drift": True, "diff": ["spec.x"],
                  "backends": [{"name": "gone", "namespace": "sys", "exists": False}]},
                 {"ref": "Ingress/sys/b", "exists": False}], None, None, None)
    plan = f.ingress_tls_plan(findings, max_routes=1)
    assert plan["restart"] is False
    assert plan["reapply"] == ["Ingress/sys/b"]
    assert plan["skipped"] == [{"ref": "Ingress/sys/a", "why": "cap reached: at most 1 route(s) reapplied per run"}]
    assert any(h.startswith("WORKLOAD_SCALED_TO_ZERO") and h.endswith("platform_down.yml") for h in plan["handover"])
    assert any(h.startswith("ROUTE_BACKEND_MISSING") for h in plan["handover"])


def test_refs_and_report_lines():
    assert f.ingress_ref(ROUTE) == "IngressRoute/sys/saasodoo"
    assert f.ingress_ref({"kind": "Deployment", "namespace": "sys", "name": "traefik"}) == "Deployment/sys/traefik"
    assert f.ingress_ref_object("Certificate/sys/c") == {"name": "c", "namespace": "sys"}
    assert f.ingress_routes_named([INGRESS, ROUTE], ["IngressRoute/sys/saasodoo"]) == [ROUTE]
    assert f.ingress_name_namespace({"name": "c", "namespace": "s", "dns_names": []}) == {"name": "c", "namespace": "s"}
    line = f.ingress_renewal_line({"ref": "Certificate/sys/c", "before": {"serial": "0e"},
                                   "after": {"serial": "ff", "not_after": "2027-01-01T00:00:00Z"}})
    assert line == ("re-issued through cert-manager and verified: Certificate/sys/c (serial 0e -> ff, "
                    "valid until 2027-01-01T00:00:00Z)")
