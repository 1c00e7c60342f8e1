"""The DNS runbook's pieces without a cluster: the Corefile checks and findings (plugins/filter/
dns_resolution.py), the stdlib DNS client (plugins/module_utils/saasodoo_dns.py) against a tiny DNS
server of the test's own on loopback, and saasodoo_dns_query's input checks."""

from __future__ import annotations

import importlib
import socket
import struct
import sys
import threading

import pytest

from plugins.filter import dns_resolution as f
from plugins.module_utils import saasodoo_dns as d
from testbed import dns as testbed_dns
from testbed import platform_vars

sys.modules.setdefault("ansible.module_utils.saasodoo_dns", d)
module = importlib.import_module("plugins.modules.saasodoo_dns_query")

REQUIRED = ["kubernetes", "forward"]
DESIRED = platform_vars.load()["saasodoo_coredns_corefile"]
REF = "ConfigMap/kube-system/coredns"


def codes(findings):
    return [x["code"] for x in findings]


# --------------------------------------------------------------------------- Corefile


def test_desired_corefile_of_the_inventory_is_sane():
    assert f.corefile_problems(DESIRED, REQUIRED) == []
    parsed = f.corefile_parse(DESIRED)
    assert [b["keys"] for b in parsed["blocks"]] == [[".:53"]]
    assert {"kubernetes", "forward", "cache", "reload"} <= set(parsed["blocks"][0]["plugins"])
    # Nested blocks' directives (pods insecure, lameduck) are not plugins.
    assert "pods" not in parsed["blocks"][0]["plugins"]


def test_the_test_beds_broken_corefile_is_caught():
    problems = f.corefile_problems(testbed_dns.broken(DESIRED), REQUIRED)
    assert any("unknown plugin 'forwrd'" in p for p in problems)
    assert any("never closed" in p for p in problems)
    assert any("required plugin 'forward'" in p for p in problems)


@pytest.mark.parametrize("text, expected", [
    ("", "empty"),
    ("   \n# only a comment\n", "empty"),
    (".:53 {\n    errors\n}\n}\n", "closes nothing"),
    ("errors\n", "no opening"),
    (".:53\n{\n forward . 1.1.1.1\n kubernetes cluster.local\n}\n", "no opening"),
    (".:53 {\n    forward . 8.8.8.8\n}\n", "required plugin 'kubernetes'"),
    (".:53 {\n    kubernetes cluster.local\n    frward . 8.8.8.8\n}\n", "unknown plugin 'frward'"),
])
def test_corefile_problems(text, expected):
    assert any(expected in p for p in f.corefile_problems(text, REQUIRED)), f.corefile_problems(text, REQUIRED)


def test_comments_and_quoted_hashes_do_not_confuse_the_parser():
    text = '.:53 { # main\n  kubernetes cluster.local # {\n  forward . 1.1.1.1\n  template IN A x { answer "a # {" }\n}\n'
    assert f.corefile_problems(text, REQUIRED) == []


def test_corefile_findings_missing_invalid_drift_ok():
    assert codes(f.corefile_findings([], "Corefile", DESIRED, REQUIRED, REF, "coredns")) == ["COREFILE_MISSING"]
    missing_key = f.corefile_findings([{"data": {"other": "x"}}], "Corefile", DESIRED, REQUIRED, REF, "coredns")
    assert codes(missing_key) == ["COREFILE_MISSING"] and "other" in missing_key[0]["evidence"][0]
    invalid = f.corefile_findings([{"data": {"Corefile": testbed_dns.broken(DESIRED)}}], "Corefile", DESIRED,
                                  REQUIRED, REF, "coredns")
    assert codes(invalid) == ["COREFILE_INVALID"] and invalid[0]["severity"] == "critical"
    assert "+    forward . /etc/resolv.conf {" in invalid[0]["evidence"]  # the diff a restore applies
    drifted = DESIRED.replace("cache 30", "cache 300")
    drift = f.corefile_findings([{"data": {"Corefile": drifted}}], "Corefile", DESIRED, REQUIRED, REF, "coredns")
    assert codes(drift) == ["COREFILE_DRIFT"] and drift[0]["severity"] == "medium"
    assert "-    cache 300" in drift[0]["evidence"] and "+    cache 30" in drift[0]["evidence"]
    # Trailing whitespace and a final newline are not drift.
    same = DESIRED.rstrip("\n") + "  \n\n"
    assert f.corefile_findings([{"data": {"Corefile": same}}], "Corefile", DESIRED, REQUIRED, REF, "coredns") == []
    # No desired Corefile: only the sanity check.
    assert f.corefile_findings([{"data": {"Corefile": drifted}}], "Corefile", "", REQUIRED, REF, "coredns") == []


# --------------------------------------------------------------------------- lookups


def svc(name, ns, ip):
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": ip}}


def res(name, status="ok", addresses=("10.0.0.1",), elapsed=1, error=None):
    return {"name": name, "status": status, "addresses": list(addresses) if status == "ok" else [],
            "elapsed_ms": elapsed, "error": error}


def test_dns_service_names():
    names = f.dns_service_names([svc("b", "sys", "10.0.0.2"), svc("a", "sys", "10.0.0.1"),
                                 svc("h", "sys", "None"), svc("x", "other", "10.0.0.9")], "cluster.local.", ["sys"])
    assert names == {"a.sys.svc.cluster.local": "10.0.0.1", "b.sys.svc.cluster.local": "10.0.0.2",
                     "h.sys.svc.cluster.local": None}


def test_dns_query_findings():
    expected = {"a.sys.svc.cluster.local": "10.0.0.1", "b.sys.svc.cluster.local": "10.0.0.2",
                "h.sys.svc.cluster.local": None}
    healthy = [res("a.sys.svc.cluster.local"), res("b.sys.svc.cluster.local", addresses=["10.0.0.2"]),
               res("h.sys.svc.cluster.local", addresses=["10.1.1.1"]), res("ext.example.com", addresses=["1.2.3.4"])]
    assert f.dns_query_findings(healthy, expected, ["ext.example.com"], 500, "s:53", "coredns") == []
    broken = [res("a.sys.svc.cluster.local", "nxdomain", error="server answered NXDOMAIN"),
              res("b.sys.svc.cluster.local", addresses=["10.9.9.9"], elapsed=900),
              res("ext.example.com", "servfail")]
    found = f.dns_query_findings(broken, expected, ["ext.example.com."], 500, "s:53", "coredns")
    assert codes(found) == ["DNS_SERVICE_NAME_UNRESOLVED", "DNS_WRONG_ADDRESS", "DNS_EXTERNAL_UNRESOLVED", "DNS_SLOW"]
    assert [x["severity"] for x in found] == ["critical", "high", "high", "medium"]
    assert found[0]["evidence"] == ["a.sys.svc.cluster.local: nxdomain (server answered NXDOMAIN)"]
    assert "10.9.9.9" in found[1]["evidence"][0] and "10.0.0.2" in found[1]["evidence"][0]
    # Nothing answers at all: one finding, not one per name.
    silent = [res("a.sys.svc.cluster.local", "unreachable", error="connection refused"), res("e.x", "timeout")]
    only = f.dns_query_findings(silent, expected, ["e.x"], 0, "s:53", "coredns")
    assert codes(only) == ["DNS_SERVER_UNREACHABLE"] and "s:53" in only[0]["message"]
    assert f.dns_query_findings([], expected) == []


def test_handover_lines_and_sorting():
    findings = [{"code": "DNS_SLOW", "severity": "medium", "message": "m"},
                {"code": "WORKLOAD_MISSING", "severity": "critical", "message": "gone"}]
    assert [x["code"] for x in f.sort_findings(findings)] == ["WORKLOAD_MISSING", "DNS_SLOW"]
    lines = f.dns_handover_lines(findings, {"WORKLOAD_MISSING": "redeploy", "default": "network"})
    assert lines == ["DNS_SLOW: m -> network", "WORKLOAD_MISSING: gone -> redeploy"]


# --------------------------------------------------------------------------- the DNS client


def test_build_query_and_name_checks():
    qid, payload = d.build_query("a.example.org", "A", query_id=0x1234)
    assert qid == 0x1234 and payload[:2] == b"\x12\x34"
    assert payload[12:] == b"\x01a\x07example\x03org\x00\x00\x01\x00\x01"
    for bad in ["", "a..b", "x" * 64 + ".org"]:
        with pytest.raises(d.DnsQueryError):
            d.build_query(bad)
    with pytest.raises(d.DnsQueryError):
        d.build_query("a.org", "MX")


def _answer(query, rcode=0, records=(), truncated=False):
    """A DNS answer to `query` with compressed names pointing at the question (offset 12)."""
    qid = struct.unpack("!H", query[:2])[0]
    flags = 0x8000 | 0x0400 | 0x0080 | rcode | (0x0200 if truncated else 0)
    out = struct.pack("!HHHHHH", qid, flags, 1, len(records), 0, 0) + query[12:]
    for rtype, rdata in records:
        out += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 30, len(rdata)) + rdata
    return out


class TinyDns:
    """A UDP (and TCP) DNS server on loopback answering from a table: name -> (rcode, records, truncated)."""

    def __init__(self, table):
        self.table = table
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(4)
        self.stop = False
        threading.Thread(target=self._serve_udp, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def _reply(self, query, over_tcp):
        name = d._read_name(query, 12)[0]
        rcode, records, truncated = self.table.get(name, (3, (), False))
        return _answer(query, rcode, records if not (truncated and not over_tcp) else (), truncated and not over_tcp)

    def _serve_udp(self):
        while not self.stop:
            try:
                data, peer = self.udp.recvfrom(512)
            except OSError:
                return
            if self.table.get(d._read_name(data, 12)[0], (0, (), False))[0] == "silent":
                continue
            self.udp.sendto(self._reply(data, False), peer)

    def _serve_tcp(self):
        while not self.stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                length = struct.unpack("!H", conn.recv(2))[0]
                reply = self._reply(conn.recv(length), True)
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def close(self):
        self.stop = True
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def tiny():
    server = TinyDns({
        "svc.ns.svc.cluster.local": (0, [(1, socket.inet_aton("10.96.0.7"))], False),
        "alias.example.org": (0, [(5, b"\xc0\x0c"), (1, socket.inet_aton("192.0.2.1"))], False),
        "v6.example.org": (0, [(28, socket.inet_pton(socket.AF_INET6, "2001:db8::1"))], False),
        "big.example.org": (0, [(1, socket.inet_aton("192.0.2.9"))], True),
        "broken.example.org": (2, (), False),
        "slow.example.org": ("silent", (), False),
    })
    yield server
    server.close()


def test_query_statuses(tiny):
    ok = d.query("127.0.0.1", "svc.ns.svc.cluster.local", "A", tiny.port)
    assert ok["status"] == "ok" and ok["addresses"] == ["10.96.0.7"] and ok["rcode"] == "NOERROR"
    assert ok["answers"][0]["ttl"] == 30 and ok["transport"] == "udp"
    alias = d.query("127.0.0.1", "alias.example.org", "A", tiny.port)
    assert alias["addresses"] == ["192.0.2.1"] and alias["answers"][0]["type"] == "CNAME"
    assert d.query("127.0.0.1", "v6.example.org", "AAAA", tiny.port)["addresses"] == ["2001:db8::1"]
    assert d.query("127.0.0.1", "v6.example.org", "A", tiny.port)["status"] == "nodata"
    big = d.query("127.0.0.1", "big.example.org", "A", tiny.port)
    assert big["status"] == "ok" and big["transport"] == "tcp" and big["addresses"] == ["192.0.2.9"]
    assert d.query("127.0.0.1", "nothing.example.org", "A", tiny.port)["status"] == "nxdomain"
    assert d.query("127.0.0.1", "broken.example.org", "A", tiny.port)["status"] == "servfail"
    slow = d.query("127.0.0.1", "slow.example.org", "A", tiny.port, timeout=0.2, retries=1)
    assert slow["status"] == "timeout" and slow["attempts"] == 2


def test_query_to_a_closed_port_is_unreachable():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = d.query("127.0.0.1", "a.example.org", "A", port, timeout=1, retries=3)
    assert result["status"] == "unreachable" and result["attempts"] == 1


def test_parse_response_refuses_garbage():
    with pytest.raises(d.DnsFormatError):
        d.parse_response(b"\x00\x01")
    _, query = d.build_query("a.org", query_id=7)
    with pytest.raises(d.DnsFormatError):
        d.parse_response(query)  # a query, not an answer
    with pytest.raises(d.DnsFormatError):
        d.parse_response(_answer(query), query_id=8)


def test_module_run_and_refusals(tiny):
    params = {"server": "127.0.0.1", "port": tiny.port, "names": ["svc.ns.svc.cluster.local", "nothing.example.org"],
              "type": "A", "timeout": 1.0, "retries": 0, "tcp": False, "max_names": 10}
    out = module.run(params)
    assert out["changed"] is False
    assert out["resolved"] == ["svc.ns.svc.cluster.local"] and out["unresolved"] == ["nothing.example.org"]
    for bad in ({"names": []}, {"max_names": 1}, {"timeout": 0}, {"port": 0}, {"names": ["a..b"]}):
        with pytest.raises(d.DnsQueryError):
            module.run({**params, **bad})
