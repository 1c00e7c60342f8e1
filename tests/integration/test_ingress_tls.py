"""ingress_tls.yml against the real test bed: real Traefik objects, the REAL cert-manager controller, a real
TLS endpoint serving the platform's TLS Secret.

The public site of testbed/endpoints.py serves the certificate in the platform's TLS Secret (copied
whenever the Secret changes, as Traefik loads it), so what the runbook's handshake sees is what is in the
cluster, and a certificate cert-manager re-issues is really served afterwards. cert-manager's controller
(testbed/certmanager.py) watches the platform namespace for this module only.

Faults, injected into the real things:
  expired   the Secret gets a real certificate (signed by the platform's CA) that expired 5 days ago, and
            the Certificate carries the status cert-manager leaves after a failed issuance (it backs off
            for an hour): only a forced re-issuance (the runbook's renew_cert) brings a new one
  route     the Traefik IngressRoute of the public hosts is deleted
  traefik   Traefik's pods crash-loop (real run only): the public site answers 503
"""

from __future__ import annotations

import base64
import copy
import datetime
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client
from kubernetes.client.rest import ApiException

from testbed import faults
from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

GROUP, VERSION = "cert-manager.io", "v1"
TRAEFIK_GROUP, TRAEFIK_VERSION = "traefik.io", "v1alpha1"
# Repeated restarts of the same Traefik in one session must not be blocked by the guard rail's cooldown
# (it has its own test in restart_service's module).
NO_COOLDOWN = {"ingress_tls_cooldown_minutes": 0}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _served(host: str, port: int, server_name: str, cafile: str | None = None) -> x509.Certificate:
    """The certificate the endpoint presents for server_name; with cafile, a fully verified handshake
    (chain to that CA, host name, validity) or ssl.SSLCertVerificationError."""
    if cafile:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_name) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def _serial(cert: x509.Certificate) -> str:
    return "%x" % cert.serial_number


class Bed:
    """The platform's TLS objects, saved before the faults and put back after them."""

    def __init__(self, v: dict):
        self.v = v
        self.ns = v["saasodoo_platform_namespace"]
        cert = next(c for c in v["saasodoo_certificates"] if c["namespace"] == self.ns)
        self.cert_name, self.secret_name, self.issuer = cert["name"], cert["secret_name"], cert["issuer"]
        self.dns_names = cert["dns_names"]
        public = v["saasodoo_endpoints"]["public"]
        self.server_name = public["server_name"]
        hostport = public["url"].split("://", 1)[1].rstrip("/")
        self.host, self.port = hostport.rsplit(":", 1)[0], int(hostport.rsplit(":", 1)[1])
        self.route_name = v["saasodoo_part_of"]
        self.core = client.CoreV1Api(k8s_state.api_client())
        self.custom = client.CustomObjectsApi(k8s_state.api_client())

    # ------------------------------------------------------------------ reading
    def secret(self):
        return self.core.read_namespaced_secret(self.secret_name, self.ns)

    def secret_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(base64.b64decode(self.secret().data["tls.crt"]))

    def certificate(self) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, "certificates", self.cert_name)

    def ingressroute(self) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(TRAEFIK_GROUP, TRAEFIK_VERSION, self.ns, "ingressroutes",
                                                            self.route_name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def ca(self) -> tuple[x509.Certificate, object]:
        data = self.core.read_namespaced_secret(f"{self.issuer}-key-pair", self.ns).data
        return (x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"])),
                serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), password=None))

    def served(self, cafile: str | None = None) -> x509.Certificate:
        return _served(self.host, self.port, self.server_name, cafile)

    def tls_state(self) -> dict:
        """What check mode must leave alone: the Secret's content, the Certificate's spec and Issuing trigger,
        the routes."""
        crt = self.certificate()
        issuing = [c for c in crt.get("status", {}).get("conditions", []) if c["type"] == "Issuing"]
        route = self.ingressroute()
        return {"secret": self.secret().data, "certificate_spec": crt["spec"], "issuing": issuing,
                "ingressroute": route and route["spec"]}

    def wait(self, check, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    # ------------------------------------------------------------------ faults
    def save(self) -> None:
        self.saved_secret = self.secret()
        self.saved_status = copy.deepcopy(self.certificate().get("status"))
        self.saved_route = self.ingressroute()
        assert self.saved_route is not None, "the sample platform's IngressRoute is missing before the test"

    def expire(self) -> str:
        """A real certificate for the Certificate's names, signed by the platform's CA, expired 5 days ago."""
        ca_cert, ca_key = self.ca()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.dns_names[0])]))
                .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=95)).not_valid_after(now - datetime.timedelta(days=5))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in self.dns_names]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        # First the status cert-manager leaves after a failed issuance (it backs off for an hour), then the
        # expired certificate: cert-manager must not simply renew it on its own.
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, self.ns, "certificates", self.cert_name, {
            "status": {"lastFailureTime": stamp, "failedIssuanceAttempts": 1, "conditions": [
                {"type": "Ready", "status": "False", "reason": "Failed", "lastTransitionTime": stamp,
                 "observedGeneration": 1, "message": "The certificate request has failed to complete"}]}})
        pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        self.core.patch_namespaced_secret(self.secret_name, self.ns, {"data": {
            "tls.crt": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
            "tls.key": base64.b64encode(pem_key).decode()}})
        serial = _serial(cert)
        self.wait(lambda: _serial(self.served()) == serial, "the public endpoint to serve the expired certificate")
        return serial

    def delete_route(self) -> None:
        self.custom.delete_namespaced_custom_object(TRAEFIK_GROUP, TRAEFIK_VERSION, self.ns, "ingressroutes",
                                                    self.route_name)
        self.wait(lambda: self.ingressroute() is None, "the IngressRoute to be gone")

    def restore(self) -> None:
        """Put the saved Secret, Certificate status and IngressRoute back (cert-manager stopped first)."""
        if self.ingressroute() is None:
            body = {k: self.saved_route[k] for k in ("apiVersion", "kind", "spec")}
            body["metadata"] = {k: self.saved_route["metadata"][k] for k in ("name", "namespace", "labels")
                                if k in self.saved_route["metadata"]}
            self.custom.create_namespaced_custom_object(TRAEFIK_GROUP, TRAEFIK_VERSION, self.ns, "ingressroutes", body)
        live = self.secret()
        saved = self.saved_secret
        if live.data != saved.data or live.metadata.owner_references != saved.metadata.owner_references:
            live.data = saved.data
            live.metadata.labels = saved.metadata.labels
            live.metadata.annotations = saved.metadata.annotations
            live.metadata.owner_references = saved.metadata.owner_references
            self.core.replace_namespaced_secret(self.secret_name, self.ns, live)
        crt = self.certificate()
        if crt.get("status") != self.saved_status:
            crt["status"] = self.saved_status
            self.custom.replace_namespaced_custom_object_status(GROUP, VERSION, self.ns, "certificates",
                                                                self.cert_name, crt)
        for req in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, "certificaterequests")["items"]:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, "certificaterequests",
                                                        req["metadata"]["name"])


def _certmanager(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "testbed/certmanager.py", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False)


@pytest.fixture(scope="module")
def bed(platform):
    b = Bed(platform)
    faults.wait_healthy("traefik")
    b.save()
    started = _certmanager("up", f"--namespace={b.ns}")
    if started.returncode != 0:
        pytest.fail(f"cert-manager did not start:\n{started.stdout[-2000:]}\n{started.stderr[-2000:]}", pytrace=False)
    try:
        yield b
    finally:
        _certmanager("down")
        b.restore()
        if not faults.component_healthy("traefik"):
            faults.undo_by_name("crashloop", "traefik")


@pytest.fixture(scope="module")
def broken(bed):
    """Expired certificate served + IngressRoute deleted, once for the check-mode and the real run."""
    serial = bed.expire()
    bed.delete_route()
    return {"expired_serial": serial}


def _codes(report: dict) -> set[str]:
    return {f["code"] for f in report["findings"]}


def test_bad_input_is_refused_before_anything_changes(bed):
    before = bed.tls_state()
    result = run_playbook("ingress_tls.yml", extravars={"ingress_tls_component": "nope"})
    assert result.rc != 0
    assert "ingress_tls: nothing was changed. ingress_tls_component ('nope') must be a key of saasodoo_components" \
        in " ".join(result.stdout.split())
    assert bed.tls_state() == before


def test_check_mode_reports_the_expired_certificate_and_the_missing_route_and_changes_nothing(platform, bed, broken):
    ns = bed.ns
    before, tls_before = k8s_state.snapshot([ns]), bed.tls_state()

    result = run_playbook("ingress_tls.yml", extravars=NO_COOLDOWN, check=True)

    assert result.rc == 0, result.stdout[-4000:]
    report = result.artifacts["ingress_tls_report"]
    assert {"CERT_EXPIRED", "TLS_CERT_EXPIRED", "ROUTE_MISSING"} <= _codes(report), report["findings"]
    expired = next(f for f in report["findings"] if f["code"] == "TLS_CERT_EXPIRED")
    assert expired["severity"] == "critical" and expired["runbook"] == "ingress_tls"
    assert any(broken["expired_serial"] in line for line in expired["evidence"]), expired
    route_ref = f"IngressRoute/{ns}/{bed.route_name}"
    cert_ref = f"Certificate/{ns}/{bed.cert_name}"
    assert next(f for f in report["findings"] if f["code"] == "ROUTE_MISSING")["ref"] == route_ref
    assert f"would reapply route {route_ref}" in report["actions"]
    assert f"would trigger re-issuance of {cert_ref}" in report["actions"]
    assert report["check_mode"] is True and report["healthy_before"] is False
    # Logs: each Traefik pod's log was read, or the report says why not (kwok's pods have no kubelet to serve one).
    logs = report["traefik_logs"]
    pods = report["traefik"]["pods"]
    assert pods and sorted(logs["read"] + [u.split(":", 1)[0] for u in logs["unavailable"]]) == sorted(pods), logs
    assert all(": " in u for u in logs["unavailable"])
    # Nothing changed: workloads, the Secret, the Certificate's trigger, the route; still the expired cert served.
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    assert bed.tls_state() == tls_before
    assert bed.ingressroute() is None
    assert _serial(bed.served()) == broken["expired_serial"]


def test_real_run_renews_reapplies_restarts_and_the_new_certificate_is_served(platform, bed, broken):
    ns = bed.ns
    traefik = platform["saasodoo_components"]["traefik"]
    crash = faults.crashloop("traefik")
    try:
        result = run_playbook("ingress_tls.yml", extravars=NO_COOLDOWN)
    finally:
        if not faults.component_healthy("traefik"):
            crash.undo()

    assert result.rc == 0, result.stdout[-4000:]
    report = result.artifacts["ingress_tls_report"]
    codes = _codes(report)
    assert {"CERT_EXPIRED", "TLS_CERT_EXPIRED", "ROUTE_MISSING", "WORKLOAD_CRASHLOOP",
            "PUBLIC_ENDPOINT_UNAVAILABLE"} <= codes, report["findings"]
    unavailable = next(f for f in report["findings"] if f["code"] == "PUBLIC_ENDPOINT_UNAVAILABLE")
    assert any("503" in line for line in unavailable["evidence"]), unavailable
    route_ref = f"IngressRoute/{ns}/{bed.route_name}"
    cert_ref = f"Certificate/{ns}/{bed.cert_name}"
    assert f"reapplied route {route_ref}" in report["actions"], report["actions"]
    assert f"rolling restart of Deployment/{traefik['namespace']}/{traefik['name']}" in report["actions"]
    renewal = next(a for a in report["actions"] if a.startswith("re-issued through cert-manager and verified: "))
    assert cert_ref in renewal and broken["expired_serial"] in renewal
    assert report["healthy_after"] is True, report["remaining"]
    assert report["remaining"] == []
    assert report["escalation"]["level"] == "medium"  # resolved; the root cause deserves a review

    # Really healed, read from the cluster and the wire (not from the report):
    new = bed.secret_cert()
    assert _serial(new) != broken["expired_serial"]
    assert new.not_valid_after_utc > _now() + datetime.timedelta(days=30)
    assert bed.ingressroute()["spec"] == bed.saved_route["spec"]
    assert faults.component_healthy("traefik")
    ca_cert, _ = bed.ca()
    with tempfile.NamedTemporaryFile("wb", suffix=".pem") as cafile:
        cafile.write(ca_cert.public_bytes(serialization.Encoding.PEM))
        cafile.flush()
        # A fully verified handshake: chain to the platform's CA, valid now, valid for the server name.
        served = bed.served(cafile.name)
    assert _serial(served) == _serial(new)
    after = report["handshakes_after"][0]
    assert after["state"] == "valid" and after["hostname_matches"] is True and after["serial"] == _serial(new)

    again = run_playbook("ingress_tls.yml", extravars=NO_COOLDOWN)

    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    assert again.artifacts["ingress_tls_report"]["findings"] == []
    assert again.artifacts["ingress_tls_report"]["actions"] == []


def test_certificate_for_another_host_is_named_and_handed_over(platform, bed):
    """A wrong-host certificate: the public endpoint is asked for a name its (valid) certificate does not cover.
    The Certificates are fine and Traefik serves its Secret, so there is nothing to renew or restart:
    reported, handed over to a human, nothing changed."""
    ns = bed.ns
    wrong = "wrong-host." + platform["saasodoo_endpoints"]["public"]["server_name"].split(".", 1)[-1]
    before, tls_before = k8s_state.snapshot([ns]), bed.tls_state()

    result = run_playbook("ingress_tls.yml", extravars={**NO_COOLDOWN, "ingress_tls_server_names": [wrong]})

    assert result.rc == 0, result.stdout[-4000:]
    assert result.changed == 0, result.stdout[-3000:]
    report = result.artifacts["ingress_tls_report"]
    mismatch = next(f for f in report["findings"] if f["code"] == "TLS_HOSTNAME_MISMATCH")
    assert wrong in mismatch["message"] and mismatch["severity"] == "critical"
    assert not {"CERT_EXPIRED", "CERT_INVALID", "ROUTE_MISSING"} & _codes(report), report["findings"]
    assert report["actions"] == []
    assert any("TLS_HOSTNAME_MISMATCH" in h and "a human" in h for h in report["handed_over"]), report["handed_over"]
    assert report["escalation"]["level"] == "critical"
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == [] and bed.tls_state() == tls_before
