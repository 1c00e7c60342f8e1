"""renew_cert's X.509 inspection and decisions, on certificates made here with `cryptography`."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plugins.filter import x509 as f

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


CA_KEY = _key()
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit-test-ca")])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def leaf(names=("app.example.com",), not_before=NOW - 30 * DAY, not_after=NOW + 60 * DAY, key=None, ips=()):
    """(cert PEM, key PEM) signed by the unit-test CA."""
    key = key or _key()
    import ipaddress

    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")]))
               .issuer_name(CA_NAME).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(CA_KEY, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def secret(name, cert=None, key=None, ns="ns", annotations=None, kind="kubernetes.io/tls"):
    data = {}
    if cert is not None:
        data["tls.crt"] = base64.b64encode(cert).decode()
    if key is not None:
        data["tls.key"] = base64.b64encode(key).decode()
    return {"kind": "Secret", "type": kind, "data": data,
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}}}


def certificate(name, secret_name=None, dns=("app.example.com",), ns="ns", conditions=None, issuer="ca"):
    return {"kind": "Certificate", "metadata": {"name": name, "namespace": ns, "generation": 1},
            "spec": {"secretName": secret_name or name + "-tls", "dnsNames": list(dns),
                     "issuerRef": {"name": issuer, "kind": "Issuer", "group": "cert-manager.io"}},
            "status": {"conditions": conditions or [{"type": "Ready", "status": "True"}]}}


def issuer(name="ca", ready="True", ns="ns", secret_name="ca-key-pair"):
    return {"kind": "Issuer", "metadata": {"name": name, "namespace": ns}, "spec": {"ca": {"secretName": secret_name}},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "R", "message": "M"}]}}


# --------------------------------------------------------------------------- x509_info

def test_info_reads_validity_sans_issuer_and_key_match():
    cert, key = leaf(names=("app.example.com", "api.example.com"), ips=("10.0.0.1",))
    info = f.x509_info(cert, key, now=NOW)
    assert info["parsed"] and info["error"] is None
    assert info["dns_names"] == ["app.example.com", "api.example.com"]
    assert info["ip_addresses"] == ["10.0.0.1"]
    assert info["issuer"] == "CN=unit-test-ca"
    assert info["common_name"] == "app.example.com"
    assert info["days_left"] == 60.0 and info["expired"] is False
    assert info["not_after"] == "2026-07-31T12:00:00Z"
    assert info["key_matches"] is True
    assert all("PRIVATE" not in str(v) for v in info.values())


def test_info_detects_a_key_that_belongs_to_another_certificate():
    cert, _ = leaf()
    _, other_key = leaf()
    info = f.x509_info(cert, other_key, now=NOW)
    assert info["key_matches"] is False


@pytest.mark.parametrize("pem, message", [
    (b"", "no certificate"), (None, "no certificate"), (b"garbage", "not a PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a PEM certificate"),
])
def test_info_never_raises_on_bad_input(pem, message):
    info = f.x509_info(pem, now=NOW)
    assert info["parsed"] is False and message in info["error"]


def test_info_reports_an_unreadable_key():
    cert, _ = leaf()
    info = f.x509_info(cert, b"not a key", now=NOW)
    assert info["key_matches"] is False and "tls.key is not a readable PEM private key" in info["key_error"]


def test_expiry_and_not_yet_valid():
    expired, _ = leaf(not_before=NOW - 90 * DAY, not_after=NOW - 2 * DAY)
    future, _ = leaf(not_before=NOW + DAY, not_after=NOW + 90 * DAY)
    assert f.x509_info(expired, now=NOW)["expired"] is True
    assert f.x509_info(expired, now=NOW)["days_left"] == -2.0
    assert f.x509_info(future, now=NOW)["expired"] is True
    assert f.x509_info(future, now=NOW.isoformat())["expired"] is True


@pytest.mark.parametrize("sans, names, missing", [
    (["a.example.com"], ["a.example.com"], []),
    (["*.example.com"], ["a.example.com", "b.example.com"], []),
    (["*.example.com"], ["example.com", "x.a.example.com"], ["example.com", "x.a.example.com"]),
    (["A.Example.com"], ["a.example.COM."], []),
    ([], ["a.example.com"], ["a.example.com"]),
])
def test_missing_names_with_wildcards(sans, names, missing):
    assert f.x509_missing_names({"dns_names": sans, "ip_addresses": []}, names) == missing


def test_missing_ip_addresses():
    assert f.x509_missing_names({"dns_names": [], "ip_addresses": ["10.0.0.1"]}, ["10.0.0.1", "10.0.0.2"]) == ["10.0.0.2"]


# --------------------------------------------------------------------------- inspection

def _inspect(certs, secrets, **kw):
    return f.renew_cert_inspect(certs, secrets, 15, now=NOW, **kw)


def test_each_state_and_its_reason():
    ok = leaf()
    soon = leaf(not_after=NOW + 3 * DAY)
    old = leaf(not_before=NOW - 100 * DAY, not_after=NOW - DAY)
    mismatch = (leaf()[0], leaf()[1])
    wrong_sans = leaf(names=("other.example.com",))
    certs = [certificate(n) for n in ("ok", "soon", "old", "mismatch", "sans", "garbage", "gone")]
    secrets = [secret("ok-tls", *ok), secret("soon-tls", *soon), secret("old-tls", *old),
               secret("mismatch-tls", *mismatch), secret("sans-tls", *wrong_sans),
               secret("garbage-tls", b"junk", b"junk")]
    found = {c["name"]: c for c in _inspect(certs, secrets)["certificates"]}
    assert {n: c["state"] for n, c in found.items()} == {
        "ok": "valid", "soon": "expiring", "old": "expired", "mismatch": "invalid", "sans": "invalid",
        "garbage": "invalid", "gone": "missing-secret"}
    assert found["ok"]["reasons"] == []
    assert found["soon"]["reasons"][0].startswith("expires on ") and "in 3.0 days (threshold 15" in found["soon"]["reasons"][0]
    assert found["old"]["reasons"][0].startswith("expired on ") and "1.0 days ago" in found["old"]["reasons"][0]
    assert "tls.key does not match tls.crt" in found["mismatch"]["reasons"][0]
    assert found["sans"]["reasons"] == ["SANs other.example.com do not cover app.example.com"]
    assert "not a PEM certificate" in found["garbage"]["reasons"][0]
    assert found["gone"]["reasons"] == ["Secret ns/gone-tls does not exist"]
    assert found["ok"]["ref"] == "Certificate/ns/ok" and found["ok"]["secret_name"] == "ok-tls"


def test_the_worst_state_wins_and_all_reasons_are_kept():
    cert, _ = leaf(names=("x.example.com",), not_before=NOW - 100 * DAY, not_after=NOW - DAY)
    _, other = leaf()
    entry = _inspect([certificate("c")], [secret("c-tls", cert, other)])["certificates"][0]
    assert entry["state"] == "expired"
    assert len(entry["reasons"]) == 3


def test_a_missing_key_is_invalid():
    cert, _ = leaf()
    entry = _inspect([certificate("c")], [secret("c-tls", cert)])["certificates"][0]
    assert entry["state"] == "invalid" and "no private key" in entry["reasons"][0]


def test_duplicates_from_two_selections_count_once():
    ok = leaf()
    result = _inspect([certificate("c"), certificate("c")], [secret("c-tls", *ok)])
    assert len(result["certificates"]) == 1


def test_unmanaged_secrets_are_reported_with_advice_and_ca_key_pairs_apart():
    ok = leaf()
    hand = leaf(names=("legacy.example.com",), not_after=NOW + 2 * DAY)
    orphan = leaf(names=("gone.example.com",))
    secrets = [secret("ok-tls", *ok), secret("legacy-tls", *hand),
               secret("orphan-tls", *orphan, annotations={"cert-manager.io/certificate-name": "deleted"}),
               secret("ca-key-pair", *leaf(names=("ca",))),
               secret("opaque", kind="Opaque"), secret("other-ns", *hand, ns="elsewhere")]
    result = _inspect([certificate("ok")], secrets, issuers=[issuer()], unmanaged_namespaces=["ns"])
    by_name = {s["name"]: s for s in result["secrets"]}
    assert set(by_name) == {"legacy-tls", "orphan-tls", "ca-key-pair"}
    legacy = by_name["legacy-tls"]
    assert legacy["managed"] is False and legacy["state"] == "expiring" and legacy["role"] == "unmanaged"
    assert "not managed by cert-manager" in legacy["why"]
    assert "renew it by hand" in legacy["why"].lower() and "put it under cert-manager" in legacy["why"]
    assert "spec.secretName is legacy-tls" in legacy["why"]
    assert "Certificate deleted, which does not exist" in by_name["orphan-tls"]["why"]
    assert by_name["ca-key-pair"]["role"] == "ca-key-pair" and "Issuer/ns/ca" in by_name["ca-key-pair"]["why"]
    assert _inspect([certificate("ok")], secrets, unmanaged=False)["secrets"] == []


# --------------------------------------------------------------------------- plan

def _entry(name, state, days=None, **kw):
    return {"ref": f"Certificate/ns/{name}", "name": name, "namespace": "ns", "state": state, "days_left": days,
            "issuing": False, "issuer_ref": {"name": "ca", "kind": "Issuer", "group": "cert-manager.io"}, **kw}


def test_plan_renews_the_broken_worst_first_within_the_cap():
    inspected = {"certificates": [_entry("soon", "expiring", 3), _entry("ok", "valid", 60), _entry("old", "expired", -2),
                                  _entry("bad", "invalid", 50), _entry("gone", "missing-secret")],
                 "secrets": [{"ref": "Secret/ns/legacy", "why": "not managed by cert-manager"}]}
    plan = f.renew_cert_plan(inspected, 3, issuers=[issuer()])
    assert [e["name"] for e in plan["renew"]] == ["old", "bad", "gone"]
    assert plan["skipped"] == [
        {"ref": "Certificate/ns/soon", "why": "cap reached: renew_cert_max_renewals is 3; run again to re-issue the rest"},
        {"ref": "Secret/ns/legacy", "why": "not managed by cert-manager"}]
    assert f.renew_cert_plan(inspected, 0, issuers=[issuer()])["renew"] == []


def test_plan_leaves_alone_what_cert_manager_is_issuing_and_what_a_broken_issuer_would_fail():
    inspected = {"certificates": [_entry("busy", "expired", -1, issuing=True, issuing_since="2026-06-01T11:00:00Z"),
                                  _entry("stuck", "expired", -1),
                                  _entry("lost", "expired", -1, issuer_ref={"name": "nope", "kind": "Issuer"}),
                                  _entry("ext", "expired", -1, issuer_ref={"name": "x", "kind": "AWSPCAIssuer",
                                                                            "group": "awspca.cert-manager.io"})],
                 "secrets": []}
    plan = f.renew_cert_plan(inspected, 5, issuers=[issuer(ready="False")])
    why = {s["ref"].split("/")[-1]: s["why"] for s in plan["skipped"]}
    assert "already issuing it (Issuing=True since 2026-06-01T11:00:00Z)" in why["busy"]
    assert "its issuer Issuer ca is not Ready (R: M): fix the issuer first" in why["stuck"]
    assert "its issuer Issuer nope does not exist in namespace ns" in why["lost"]
    assert [e["name"] for e in plan["renew"]] == ["ext"]
    forced = f.renew_cert_plan(inspected, 5, issuers=[issuer(ready="False")], check_issuers=False)
    assert [e["name"] for e in forced["renew"]] == ["ext", "lost", "stuck"]  # same state and days: by name


def test_cluster_issuers_are_found_cluster_wide():
    entry = _entry("c", "expired", -1, issuer_ref={"name": "global", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    cluster_issuer = {"kind": "ClusterIssuer", "metadata": {"name": "global"},
                      "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    plan = f.renew_cert_plan({"certificates": [entry], "secrets": []}, 5, issuers=[cluster_issuer])
    assert [e["name"] for e in plan["renew"]] == ["c"]


# --------------------------------------------------------------------------- waiting and verifying

def test_issued_means_a_new_parsable_certificate():
    first, second = leaf(), leaf()
    serial = f.x509_info(first[0])["serial"]
    assert f.renew_cert_issued(secret("s", *first), serial) is False
    assert f.renew_cert_issued(secret("s", *second), serial) is True
    assert f.renew_cert_issued(secret("s", b"junk", b"junk"), serial) is False
    assert f.renew_cert_issued(secret("s", *second), None) is True
    assert f.renew_cert_issued(None, None) is False


def _request(name, certificate_name, created, conditions):
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "annotations": {"cert-manager.io/certificate-name": certificate_name}},
            "status": {"conditions": conditions}}


def test_request_problem_reads_the_latest_request_of_the_certificate():
    old = _request("web-1", "web", "2026-06-01T10:00:00Z", [{"type": "Ready", "status": "True"}])
    new = _request("web-2", "web", "2026-06-01T11:00:00Z", [
        {"type": "Approved", "status": "True"},
        {"type": "Ready", "status": "False", "reason": "Failed", "message": "CA key pair is invalid"}])
    other = _request("api-1", "api", "2026-06-01T12:00:00Z", [])
    assert f.renew_cert_request_problem([new, old, other], "web") == (
        "its CertificateRequest web-2 is not Ready (Failed: CA key pair is invalid)")
    assert "no CertificateRequest was created" in f.renew_cert_request_problem([other], "web")
    denied = _request("web-3", "web", "2026-06-01T13:00:00Z", [{"type": "Denied", "status": "True",
                                                               "reason": "Policy", "message": "no"}])
    assert f.renew_cert_request_problem([denied], "web") == "its CertificateRequest web-3 was denied (Policy: no)"
    assert f.renew_cert_request_problem([other], "api") == "its CertificateRequest api-1 is not approved yet"


def test_verified_compares_before_and_after():
    done = [{"ref": "Certificate/ns/a", "before": {"serial": "1"}, "after": {"serial": "2"}, "error": None},
            {"ref": "Certificate/ns/b", "before": {"serial": "1"}, "after": None, "error": "no new certificate"},
            {"ref": "Certificate/ns/c", "before": {"serial": "1"}, "after": None, "error": None},
            {"ref": "Certificate/ns/d", "before": {"serial": "1"}, "after": {"serial": "2"}, "error": None}]
    after = {"certificates": [
        {"ref": "Certificate/ns/a", "state": "valid", "reasons": [], "serial": "2", "not_after": "t", "days_left": 90},
        {"ref": "Certificate/ns/d", "state": "invalid", "reasons": ["SANs x do not cover y"], "serial": "2"}]}
    out = {e["ref"][-1]: e for e in f.renew_cert_verified(done, after)}
    assert out["a"]["verified"] is True and out["a"]["after"]["state"] == "valid"
    assert out["b"]["verified"] is False and "no new certificate" in out["b"]["problem"]
    assert out["c"]["verified"] is None
    assert out["d"]["verified"] is False and "SANs x do not cover y" in out["d"]["problem"]
