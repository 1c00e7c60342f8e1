"""health_check.yml against the real test bed: each of the eight checklist items from a real probe.

Read-only: every run reports changed=0 and leaves the cluster as it was. The backup item needs a store:
this module takes a real backup of the platform database into a store of its own (restore_backup's
backup entry point) and points the runbook at it (SAASODOO_BACKUP_STORE). The runbook checks the newest
backup the way restore_backup does (manifest, size, sha256, pg_restore --list) without including it.

Every item is served by a real thing on the test bed: the cluster (pods), PostgreSQL (database), Redis,
the HTTP(S) endpoints (external, ssl), dnsmasq answering the platform's Service names (dns, testbed/dns.py),
Prometheus scraping its targets (monitoring, testbed/prometheus.py) and the backup store. This module starts
dnsmasq and Prometheus when they are not running and stops what it started.

Faults injected into the real things (one run, check mode and real), one per item: backend crash-loop
(pods), PostgreSQL stopped (database), Redis stopped (redis), Supabase down (external), dnsmasq stopped
(dns), an expired certificate served (ssl), Prometheus stopped (monitoring), the newest backup tampered
(backup).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from kubernetes import client

from testbed import dns, endpoints, faults, postgres_faults, prometheus
from tests import k8s_state
from tests.runbooks import ROOT, run_playbook

ITEMS = ["pods", "database", "redis", "external", "dns", "ssl", "monitoring", "backup"]
CACHE = Path(os.environ.get("TESTBED_CACHE", ROOT / ".cache" / "testbed"))


@pytest.fixture(scope="module")
def served(platform):
    """dnsmasq (the cluster DNS as the runbook reaches it) and Prometheus, up; stopped again if started here."""
    dns_was_running = dns.running_pid() is not None
    prom_was_up = all(s == "healthy" for s in prometheus.status().values())
    dns.up()
    prometheus.up()
    yield platform
    if not prom_was_up:
        prometheus.down()
    if not dns_was_running:
        dns.down()


@pytest.fixture(scope="module")
def store(served):
    """A backup store of this module's own, with one fresh, real backup of the platform database."""
    path = CACHE / f"hc-backups-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    taken = run_playbook(str(ROOT / "tests" / "integration" / "playbooks" / "restore_backup.yml"),
                         extravars={"runbook_entry_point": "backup", "restore_backup_store": str(path)})
    assert taken.rc == 0, taken.stdout[-3000:]
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(store: Path, check: bool = False):
    return run_playbook("health_check.yml", check=check, envvars={"SAASODOO_BACKUP_STORE": str(store)})


def _items(result) -> dict:
    return {item["name"]: item for item in result.artifacts["health_check_report"]["checklist"]}


def _findings(result, item: str) -> list[dict]:
    return [f for f in result.artifacts["health_check_report"]["findings"] if f["item"] == item]


def test_bad_input_is_refused(store):
    result = run_playbook("health_check.yml", extravars={"health_check_items": ["pods", "coffee"]})
    assert result.rc != 0
    assert "health_check_items" in result.stdout and "coffee" in result.stdout


def test_healthy_platform_passes_every_item(platform, store):
    faults.wait_healthy("backend")
    ns = platform["saasodoo_platform_namespace"]
    before = k8s_state.snapshot([ns])

    result = _run(store)

    assert result.rc == 0, result.stdout[-4000:]
    assert result.changed == 0, result.stdout[-3000:]
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    report = result.artifacts["health_check_report"]
    items = _items(result)
    assert list(items) == ITEMS
    for name in ITEMS:
        assert items[name]["status"] == "pass", (name, items[name], report["findings"])
    assert report["failed"] == [] and report["findings"] == [], report["findings"]
    # Evidence from the real things, not just a verdict.
    assert any("session opened on " + platform["saasodoo_db_name"] in e for e in items["database"]["evidence"])
    assert items["redis"]["evidence"][0].startswith("Redis ")
    assert any("Supabase: HTTP 200" in e for e in items["external"]["evidence"])
    assert any(e.startswith("handshake ") and ": valid," in e for e in items["ssl"]["evidence"])
    assert any("verified (manifest, size, sha256, pg_restore --list)" in e for e in items["backup"]["evidence"])
    dns_names = platform["health_check_dns_names"]
    assert all(any(name in e for e in items["dns"]["evidence"]) for name in dns_names), items["dns"]
    assert items["monitoring"]["evidence"], items["monitoring"]
    printed = " ".join(result.stdout.split())
    for item in ITEMS:
        assert f"[{items[item]['status'].upper()}] {items[item]['title']}" in printed, item


class Faults:
    """Backend crash-loop, Supabase down, Redis stopped, expired certificate, tampered newest backup."""

    def __init__(self, v: dict, store: Path):
        self.v, self.store = v, store
        self.ns = v["saasodoo_platform_namespace"]
        cert = next(c for c in v["saasodoo_certificates"] if c["namespace"] == self.ns)
        self.secret_name, self.issuer, self.dns_names = cert["secret_name"], cert["issuer"], cert["dns_names"]
        self.core = client.CoreV1Api(k8s_state.api_client())
        self.undo = []

    def inject(self) -> dict:
        crash = faults.crashloop("backend")
        self.undo.append(crash.undo)
        endpoints.set_fault("supabase", down=True)
        self.undo.append(lambda: endpoints.clear("supabase"))
        port = str(self.v["saasodoo_redis_port"])
        subprocess.run(["redis-cli", "-h", self.v["saasodoo_redis_host"], "-p", port, "shutdown", "nosave"],
                       capture_output=True, check=False)
        self.undo.append(lambda: subprocess.run(["bash", "testbed/services.sh", "up"], cwd=ROOT, capture_output=True,
                                                check=True))
        secret = self.core.read_namespaced_secret(self.secret_name, self.ns)
        self.undo.append(lambda: self.core.patch_namespaced_secret(self.secret_name, self.ns, {"data": secret.data}))
        stopped = postgres_faults.stop_server()
        self.undo.append(stopped.undo)
        dns.down()
        self.undo.append(dns.up)
        prometheus.down()
        self.undo.append(prometheus.up)
        serial = self.expire()
        newest = sorted(p for p in (self.store / self.v["saasodoo_db_name"]).iterdir() if not p.name.startswith("."))[-1]
        dump = newest / "dump.pgdump"
        original = dump.read_bytes()
        dump.write_bytes(original[:-64] + b"\0" * 64)
        self.undo.append(lambda: dump.write_bytes(original))
        return {"crash": crash, "serial": serial, "backup": newest.name}

    def expire(self) -> str:
        data = self.core.read_namespaced_secret(f"{self.issuer}-key-pair", self.ns).data
        ca = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
        ca_key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), password=None)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.dns_names[0])]))
                .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=100)).not_valid_after(now - datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in self.dns_names]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.core.patch_namespaced_secret(self.secret_name, self.ns, {"data": {
            "tls.crt": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
            "tls.key": base64.b64encode(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                                          serialization.NoEncryption())).decode()}})
        serial = "%x" % cert.serial_number
        public = self.v["saasodoo_endpoints"]["public"]
        host, port = public["url"].split("://", 1)[1].rstrip("/").rsplit(":", 1)
        faults.wait_until("the public endpoint to serve the expired certificate",
                          lambda: _served_serial(host, int(port), public["server_name"]) == serial, timeout=30)
        return serial

    def restore(self) -> None:
        for undo in reversed(self.undo):
            undo()


def _served_serial(host: str, port: int, server_name: str) -> str | None:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=3) as sock, \
                ctx.wrap_socket(sock, server_hostname=server_name) as tls:
            return "%x" % x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
    except OSError:
        return None


def test_faults_fail_their_items_with_evidence_and_nothing_changes(platform, store):
    faults.wait_healthy("backend")
    ns = platform["saasodoo_platform_namespace"]
    broken = Faults(platform, store)
    try:
        injected = broken.inject()
        before = k8s_state.snapshot([ns])

        check = _run(store, check=True)
        result = _run(store)

        assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
        assert not faults.component_healthy("backend"), "a health check must not heal anything"
    finally:
        broken.restore()

    for run in (check, result):
        assert run.rc == 0, run.stdout[-4000:]
        assert run.changed == 0, run.stdout[-3000:]
    assert {k: v["status"] for k, v in _items(check).items()} == {k: v["status"] for k, v in _items(result).items()}
    items = _items(result)
    report = result.artifacts["health_check_report"]
    for name in ITEMS:
        assert items[name]["status"] == "fail", (name, items[name])

    database = _findings(result, "database")[0]
    assert database["code"] == "PG_UNREACHABLE" and database["severity"] == "critical", database
    assert database["runbook"] == "postgres_connection"
    assert f"{platform['saasodoo_db_host']}:{platform['saasodoo_db_port']}" in database["message"] + " ".join(
        database["evidence"]), database

    dns_failed = _findings(result, "dns")[0]
    assert dns_failed["code"] == "HEALTH_DNS_RESOLUTION_FAILED" and dns_failed["runbook"] == "dns_resolution"
    assert f"{platform['saasodoo_dns']['server']}:{platform['saasodoo_dns']['port']}" in dns_failed["message"]

    monitoring = _findings(result, "monitoring")[0]
    assert monitoring["code"] == "HEALTH_MONITORING_DOWN" and monitoring["runbook"] == "metrics_collection"
    assert platform["saasodoo_prometheus_url"] in monitoring["message"] and monitoring["severity"] == "high"

    pods = _findings(result, "pods")[0]
    assert pods["code"] == "HEALTH_PODS_NOT_RUNNING" and pods["runbook"] == "platform_down"
    assert pods["severity"] == "critical"  # no healthy backend pod left: an outage
    assert any(name.split("/")[-1] in e and "CrashLoopBackOff" in e
               for name in injected["crash"].touched for e in pods["evidence"])

    redis = _findings(result, "redis")[0]
    assert redis["code"] == "HEALTH_REDIS_UNREACHABLE" and redis["severity"] == "critical"
    assert f"{platform['saasodoo_redis_host']}:{platform['saasodoo_redis_port']}" in redis["message"]

    external = _findings(result, "external")
    assert [(f["code"], f["severity"], f["runbook"]) for f in external] == [("HEALTH_EXTERNAL_SERVICE_DOWN", "high", None)]
    assert "Supabase" in external[0]["message"] and "refused" in external[0]["message"].lower()

    ssl_codes = {f["code"] for f in _findings(result, "ssl")}
    assert {"CERT_EXPIRED", "TLS_CERT_EXPIRED"} <= ssl_codes
    assert all(f["runbook"] == "ingress_tls" for f in _findings(result, "ssl"))
    served = next(f for f in _findings(result, "ssl") if f["code"] == "TLS_CERT_EXPIRED")
    assert any(injected["serial"] in e for e in served["evidence"])

    backup = _findings(result, "backup")[0]
    assert backup["code"] == "HEALTH_BACKUP_INVALID" and injected["backup"] in backup["message"]
    assert any(e.startswith("checksum mismatch: sha256 of dump.pgdump is ") for e in backup["evidence"])

    assert report["escalation"]["level"] == "critical"
    assert {"platform_down", "ingress_tls"} <= set(report["next_runbooks"])
    assert any(line.endswith("-> ingress_tls.yml") for line in report["handed_over"])
    # And back: the same run on the restored platform passes those items again (proves the faults were the cause).
    again = _run(store)
    assert again.rc == 0
    assert {k for k, v in _items(again).items() if v["status"] == "pass"} == set(ITEMS), \
        json.dumps(_items(again), indent=1)[-3000:]
