"""renew_cert alone, against the REAL cert-manager controller, in a namespace of the test's own.

The controller is cert-manager's own code (testbed/certmanager.py, built by testbed/build.sh),
watching only this namespace. The namespace holds a CA Issuer and:

  (a) expired   - Certificate whose Secret holds an expired certificate
  (b) expiring  - Certificate whose Secret holds a certificate expiring in 3 days
  (c) valid     - Certificate issued by cert-manager itself when the test starts
  (d) mismatch  - Certificate whose Secret's tls.key belongs to another certificate
  (e) legacy    - a TLS Secret no Certificate manages (no cert-manager annotations)

(a), (b) and (d) are the situation `cmctl renew` exists for: their last issuance failed, so
cert-manager backs off (status.lastFailureTime, set here as the fixture: one hour of back-off)
and would leave them broken. The role must trigger their re-issuance, wait for the new
certificates, verify them, leave (c) and (e) alone, say what to do about (e), and change nothing
in check mode or on a second run.
"""

from __future__ import annotations

import base64
import datetime
import subprocess
import sys
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client

from tests import k8s_state
from tests.runbooks import ROOT, run_module, run_playbook

PLAYBOOK = str(ROOT / "tests" / "integration" / "playbooks" / "renew_cert.yml")
GROUP, VERSION = "cert-manager.io", "v1"
NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
BROKEN = ("expired", "expiring", "mismatch")


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _serial(secret) -> str:
    return "%x" % x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"])).serial_number


class Bed:
    """The namespace, its CA and the fixtures; the cert-manager controller watching it."""

    def __init__(self):
        self.ns = f"rc-test-{uuid.uuid4().hex[:6]}"
        self.core = client.CoreV1Api(k8s_state.api_client())
        self.custom = client.CustomObjectsApi(k8s_state.api_client())
        self.ca_key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{self.ns}-ca")])
        self.ca_name = name
        self.ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - 400 * DAY).not_valid_after(NOW + 3650 * DAY)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .sign(self.ca_key, hashes.SHA256()))

    def dns(self, name: str) -> str:
        return f"{name}.{self.ns}.example.com"

    def leaf(self, name: str, not_before, not_after, key=None) -> tuple[bytes, bytes]:
        key = key or _key()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.dns(name))]))
                .issuer_name(self.ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(not_before).not_valid_after(not_after)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(self.dns(name))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        return _pem(cert), _pem_key(key)

    def tls_secret(self, name: str, cert: bytes, key: bytes, annotations: dict | None = None) -> None:
        self.core.create_namespaced_secret(self.ns, {
            "metadata": {"name": name, "annotations": annotations or {}}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": _b64(cert), "tls.key": _b64(key), "ca.crt": _b64(_pem(self.ca))}})

    def certificate(self, name: str) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, "certificates", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Certificate", "metadata": {"name": name},
            "spec": {"secretName": f"{name}-tls", "dnsNames": [self.dns(name)], "duration": "2160h",
                     "privateKey": {"algorithm": "RSA", "size": 2048, "rotationPolicy": "Always"},
                     "issuerRef": {"name": "ca", "kind": "Issuer", "group": GROUP}}})

    def backing_off(self, name: str) -> None:
        """The status cert-manager leaves after a failed issuance: it backs off for an hour."""
        stamp = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, self.ns, "certificates", name, {
            "status": {"lastFailureTime": stamp, "failedIssuanceAttempts": 1, "conditions": [
                {"type": "Ready", "status": "False", "reason": "Failed", "lastTransitionTime": stamp,
                 "observedGeneration": 1, "message": "The certificate request has failed to complete"}]}})

    def read(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, "certificates", name)

    def secret(self, name: str):
        return self.core.read_namespaced_secret(name, self.ns)

    def condition(self, name: str, kind: str) -> dict | None:
        return next((c for c in self.read(name).get("status", {}).get("conditions", []) if c["type"] == kind), None)

    def setup(self) -> None:
        self.core.create_namespace({"metadata": {"name": self.ns}})
        self.tls_secret("ca-key-pair", _pem(self.ca), _pem_key(self.ca_key))
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, "issuers", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Issuer", "metadata": {"name": "ca"},
            "spec": {"ca": {"secretName": "ca-key-pair"}}})
        # (a), (b), (d), in place before the controller watches the namespace.
        self.tls_secret("expired-tls", *self.leaf("expired", NOW - 95 * DAY, NOW - 5 * DAY))
        self.tls_secret("expiring-tls", *self.leaf("expiring", NOW - 87 * DAY, NOW + 3 * DAY))
        cert, _ = self.leaf("mismatch", NOW - DAY, NOW + 89 * DAY)
        self.tls_secret("mismatch-tls", cert, _pem_key(_key()))
        # (e): made by hand long ago, no Certificate, no cert-manager annotations.
        self.tls_secret("legacy-tls", *self.leaf("legacy", NOW - 300 * DAY, NOW + 65 * DAY))
        for name in BROKEN:
            self.certificate(name)
            self.backing_off(name)
        run = subprocess.run([sys.executable, "testbed/certmanager.py", "up", f"--namespace={self.ns}"],
                             cwd=ROOT, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            pytest.fail(f"cert-manager did not start:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}", pytrace=False)
        self.wait(lambda: (self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, "issuers", "ca")
                           .get("status", {}).get("conditions") or [{}])[0].get("status") == "True", "Issuer ready")
        # (c): issued by cert-manager itself.
        self.certificate("valid")
        self.wait(lambda: (self.condition("valid", "Ready") or {}).get("status") == "True"
                  and self.condition("valid", "Issuing") is None, "valid issued")
        self.settle()

    def state(self) -> dict:
        """Every Secret and Certificate of the namespace, as the API serves them (resourceVersion included)."""
        ser = k8s_state.api_client().sanitize_for_serialization
        state = {}
        for s in self.core.list_namespaced_secret(self.ns).items:
            state[f"Secret/{s.metadata.name}"] = {"rv": s.metadata.resource_version, "data": s.data,
                                                  "meta": ser(s.metadata.annotations), "labels": s.metadata.labels}
        for c in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, "certificates")["items"]:
            state[f"Certificate/{c['metadata']['name']}"] = {"rv": c["metadata"]["resourceVersion"],
                                                              "spec": c["spec"], "status": c.get("status")}
        return state

    def settle(self) -> None:
        """Wait until cert-manager has stopped updating the namespace (its post-issuance bookkeeping)."""
        last = self.state()
        quiet_since = time.monotonic()
        deadline = time.monotonic() + 60
        while time.monotonic() - quiet_since < 3:
            assert time.monotonic() < deadline, "cert-manager kept changing the namespace"
            time.sleep(0.5)
            now = self.state()
            if now != last:
                last, quiet_since = now, time.monotonic()

    @staticmethod
    def wait(check, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    def teardown(self) -> None:
        subprocess.run([sys.executable, "testbed/certmanager.py", "down"], cwd=ROOT, capture_output=True, check=False)
        self.core.delete_namespace(self.ns)


@pytest.fixture(scope="module")
def bed(testbed):
    b = Bed()
    try:
        b.setup()
        yield b
    finally:
        b.teardown()


def _vars(bed: Bed, **extra) -> dict:
    return {"renew_cert_namespaces": [bed.ns], "renew_cert_timeout": 60, "renew_cert_poll_interval": 1, **extra}


def _refs(entries) -> set[str]:
    return {e["ref"].rsplit("/", 1)[-1] for e in entries}


def test_bad_input_is_refused_before_anything_changes(bed):
    before = bed.state()
    nothing = run_playbook(PLAYBOOK, extravars={})
    bad_type = run_playbook(PLAYBOOK, extravars=_vars(bed, renew_cert_max_renewals="five"))
    bad_entry = run_playbook(PLAYBOOK, extravars={"renew_cert_certificates": [{"name": "valid"}]})
    missing = run_playbook(PLAYBOOK, extravars={"renew_cert_certificates": [{"name": "nope", "namespace": bed.ns}]})

    assert nothing.rc != 0 and "Give renew_cert_namespaces" in nothing.stdout
    assert bad_type.rc != 0 and "renew_cert_max_renewals" in bad_type.stdout
    assert bad_entry.rc != 0 and "namespace" in bad_entry.stdout
    assert missing.rc != 0 and f"Certificate nope not found in namespace {bed.ns}" in missing.stdout
    assert bed.state() == before


def test_check_mode_predicts_within_the_cap_and_changes_nothing(bed):
    before = bed.state()
    check = run_playbook(PLAYBOOK, extravars=_vars(bed, renew_cert_max_renewals=2), check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert bed.state() == before
    res = check.artifacts["renew_cert_result"]
    assert res["check_mode"] is True
    state = {e["name"]: e["state"] for e in res["inspected"]}
    assert state == {"expired": "expired", "expiring": "expiring", "mismatch": "invalid", "valid": "valid",
                     "legacy-tls": "valid", "ca-key-pair": "valid"}, state
    # The worst first: expired, then invalid; the cap holds back the one that still works for 3 days.
    assert _refs(res["renewed"]) == {"expired", "mismatch"}
    assert {r["action"] for r in res["renewed"]} == {"would trigger re-issuance (check mode)"}
    assert {"ref": f"Certificate/{bed.ns}/expiring",
            "why": "cap reached: renew_cert_max_renewals is 2; run again to re-issue the rest"} in res["skipped"]


def test_status_module_predicts_in_check_mode_and_names_a_missing_object(bed):
    before = bed.state()
    trigger = {"api_version": f"{GROUP}/{VERSION}", "kind": "Certificate", "name": "valid", "namespace": bed.ns,
               "status": {"conditions": [{"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
                                          "message": "Certificate re-issuance manually triggered"}]}}
    predicted = run_module("saasodoo_k8s_status", trigger, check=True)
    assert predicted["failed"] is False and predicted["changed"] is True, predicted
    issuing = next(c for c in predicted["status"]["conditions"] if c["type"] == "Issuing")
    assert issuing["observedGeneration"] == bed.read("valid")["metadata"]["generation"]
    assert issuing["lastTransitionTime"]
    missing = run_module("saasodoo_k8s_status", {**trigger, "name": "nope"}, check=True)
    assert missing["failed"] is True
    assert missing["msg"] == f"saasodoo_k8s_status: Certificate nope in namespace {bed.ns} not found"
    assert bed.state() == before


def test_renews_the_broken_ones_with_real_cert_manager_then_is_idempotent(bed):
    serials = {n: _serial(bed.secret(f"{n}-tls")) for n in (*BROKEN, "valid", "legacy")}
    legacy_before = bed.secret("legacy-tls").data

    result = run_playbook(PLAYBOOK, extravars=_vars(bed))
    assert result.rc == 0, result.stdout[-4000:]
    res = result.artifacts["renew_cert_result"]
    assert _refs(res["renewed"]) == set(BROKEN)
    for entry in res["renewed"]:
        name = entry["name"]
        assert entry["verified"] is True, entry
        assert entry["before"]["serial"] == serials[name] != entry["after"]["serial"]
        assert entry["after"]["state"] == "valid" and entry["after"]["key_matches"] is True
        assert entry["after"]["days_left"] > 80
        assert entry["after"]["serial"] == _serial(bed.secret(f"{name}-tls"))
        assert (bed.condition(name, "Ready") or {}).get("status") == "True"
        assert bed.condition(name, "Issuing") is None
    by_name = {e["name"]: e for e in res["renewed"]}
    assert any(r.startswith("expired on ") for r in by_name["expired"]["reasons_before"])
    assert any("in 3.0 days" in r or "in 2.9 days" in r for r in by_name["expiring"]["reasons_before"])
    assert any("tls.key does not match tls.crt" in r for r in by_name["mismatch"]["reasons_before"])

    # (c) untouched, (e) reported with advice and untouched.
    assert _serial(bed.secret("valid-tls")) == serials["valid"]
    assert bed.secret("legacy-tls").data == legacy_before
    legacy = next(s for s in res["skipped"] if s["ref"] == f"Secret/{bed.ns}/legacy-tls")
    assert "not managed by cert-manager" in legacy["why"] and "Renew it by hand" in legacy["why"]
    assert "put it under cert-manager with a Certificate whose spec.secretName is legacy-tls" in legacy["why"]
    assert res["unmanaged"] == [f"Secret/{bed.ns}/ca-key-pair", f"Secret/{bed.ns}/legacy-tls"]
    ca = next(s for s in res["skipped"] if s["ref"] == f"Secret/{bed.ns}/ca-key-pair")
    assert ca["why"].startswith(f"CA key pair of Issuer/{bed.ns}/ca")
    assert "not managed by cert-manager" in result.stdout
    assert res["failed"] == [] and res["check_mode"] is False and res["duration_seconds"] >= 0

    bed.settle()
    again = run_playbook(PLAYBOOK, extravars=_vars(bed))
    assert again.rc == 0 and again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["renew_cert_result"]["renewed"] == []
    # The Secrets cert-manager does not manage are still named (once each) with nothing to renew.
    assert again.artifacts["renew_cert_result"]["unmanaged"] == [
        f"Secret/{bed.ns}/ca-key-pair", f"Secret/{bed.ns}/legacy-tls"]
    assert {e["name"]: e["state"] for e in again.artifacts["renew_cert_result"]["inspected"]} == {
        "expired": "valid", "expiring": "valid", "mismatch": "valid", "valid": "valid", "legacy-tls": "valid",
        "ca-key-pair": "valid"}


def test_without_a_controller_the_run_fails_and_says_why(bed):
    """Last: it stops cert-manager. The trigger is set, nothing issues, the report names the cause."""
    subprocess.run([sys.executable, "testbed/certmanager.py", "down"], cwd=ROOT, capture_output=True, check=True)
    bed.tls_secret("stalled-tls", *bed.leaf("stalled", NOW - 95 * DAY, NOW - DAY))
    bed.certificate("stalled")

    result = run_playbook(PLAYBOOK, extravars={"renew_cert_certificates": [{"name": "stalled", "namespace": bed.ns}],
                                               "renew_cert_timeout": 3, "renew_cert_poll_interval": 1})

    assert result.rc != 0
    assert f"re-issuance triggered but not verified for Certificate/{bed.ns}/stalled" in result.stdout
    assert "no new certificate within 3s: no CertificateRequest was created for it: is the cert-manager controller " \
           "running" in " ".join(result.stdout.split())
    issuing = bed.condition("stalled", "Issuing")
    assert issuing["reason"] == "ManuallyTriggered" and issuing["message"] == "Certificate re-issuance manually triggered"
