"""saasodoo_dns_probe against a tiny DNS server on loopback (real UDP sockets, answers built by hand)."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading

import pytest

from plugins.modules import saasodoo_dns_probe as m
from tests.runbooks import ROOT

ZONE = {"backend.sys.svc.cluster.local": ["10.96.0.10", "10.96.0.11"]}


class FakeDNS:
    """Answers A queries from ZONE (with a compressed name pointer), NXDOMAIN otherwise; `mode` breaks it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.mode = "ok"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                data, addr = self.sock.recvfrom(512)
            except OSError:
                return
            if self.mode == "silent":
                continue
            qid = struct.unpack("!H", data[:2])[0]
            offset, labels = 12, []
            while data[offset]:
                labels.append(data[offset + 1:offset + 1 + data[offset]].decode())
                offset += 1 + data[offset]
            question = data[12:offset + 5]
            name = ".".join(labels)
            if self.mode == "stray":  # an answer to another query first, then ours
                self.sock.sendto(struct.pack("!HHHHHH", qid ^ 1, 0x8180, 0, 0, 0, 0), addr)
            addresses = ZONE.get(name, [])
            rcode = 0 if name in ZONE else 3
            reply = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(addresses), 0, 0) + question
            for ip in addresses:
                reply += struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + socket.inet_aton(ip)
            self.sock.sendto(reply, addr)

    def close(self):
        self.sock.close()


@pytest.fixture
def dns():
    server = FakeDNS()
    yield server
    server.close()


def test_build_query_and_refuse_bad_names():
    query = m.build_query("a.example.com.", 1, 0x1234)
    assert query[:2] == b"\x12\x34" and query[12:] == b"\x01a\x07example\x03com\x00\x00\x01\x00\x01"
    with pytest.raises(m.ProbeError):
        m.build_query("x" * 64 + ".com", 1, 1)
    with pytest.raises(m.ProbeError):
        m.build_query(".", 1, 1)


def test_resolves_follows_pointers_and_ignores_a_stray_reply(dns):
    out = m.probe("127.0.0.1", dns.port, "backend.sys.svc.cluster.local", timeout=2)
    assert out["resolved"] is True and out["rcode"] == "NOERROR" and out["error"] is None
    assert out["addresses"] == ["10.96.0.10", "10.96.0.11"]
    assert out["summary"].startswith("backend.sys.svc.cluster.local -> 10.96.0.10, 10.96.0.11 (")
    dns.mode = "stray"
    assert m.probe("127.0.0.1", dns.port, "backend.sys.svc.cluster.local", timeout=2)["resolved"] is True


def test_nxdomain_silence_and_nothing_listening(dns):
    missing = m.probe("127.0.0.1", dns.port, "nope.cluster.local", timeout=2)
    assert missing["resolved"] is False and missing["rcode"] == "NXDOMAIN"
    assert missing["summary"] == "nope.cluster.local: NXDOMAIN, no A record"
    dns.mode = "silent"
    silent = m.probe("127.0.0.1", dns.port, "backend.sys.svc.cluster.local", timeout=0.3)
    assert silent["error"] == "no answer within 0.3s" and silent["rcode"] is None
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    refused = m.probe("127.0.0.1", port, "a.b", timeout=1)
    assert refused["resolved"] is False
    assert refused["error"] == f"connection refused (nothing listens on 127.0.0.1 port {port}/udp)"


def _run_module(args: dict) -> dict:
    """The module as Ansible runs it: a separate process reading its arguments as JSON."""
    proc = subprocess.run([sys.executable, "-m", "plugins.modules.saasodoo_dns_probe"], cwd=ROOT,
                          input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
                          timeout=30, check=False)
    return json.loads(proc.stdout)


def test_module_entry_point_reports_and_refuses_bad_input(dns):
    ok = _run_module({"server": "127.0.0.1", "port": dns.port, "names": ["backend.sys.svc.cluster.local",
                                                                         "nope.cluster.local"]})
    assert ok["changed"] is False and ok["resolved"] is False and ok["server"] == "127.0.0.1:%d" % dns.port
    assert [r["resolved"] for r in ok["results"]] == [True, False]
    bad = _run_module({"server": "127.0.0.1", "port": 70000, "names": ["a"]})
    assert bad["failed"] is True and bad["msg"] == "saasodoo_dns_probe: port must be between 1 and 65535, got 70000"
