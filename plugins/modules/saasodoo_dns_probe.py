#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ask one DNS server for the addresses of a few names (standard library only)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_dns_probe
short_description: Resolve names through one given DNS server and say what it answered
description:
  - Sends one DNS query (UDP, recursion desired) per name and record type to O(server):O(port), the way
    C(dig @server -p port name) does, and returns for each what the server answered - its response code
    and the addresses - or why there was no answer (timeout, refused, malformed reply).
  - Needs no DNS library on the controller (the queries are built with the standard library), so it works
    where C(dnspython), and therefore the M(community.general.dig) lookup, is not installed.
  - Read-only; never changes anything; runs in check mode. A server that does not answer is a result, not
    a failure of the module (see RV(resolved)); the module fails only on bad input.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  server:
    description: Address (IPv4 or IPv6) of the DNS server to ask.
    type: str
    required: true
  port:
    description: Port of the DNS server.
    type: int
    default: 53
  names:
    description: Names to resolve (fully qualified; a trailing dot is optional).
    type: list
    elements: str
    required: true
  record_type:
    description: Record type to ask for.
    type: str
    choices: [A, AAAA]
    default: A
  timeout:
    description: Seconds to wait for each answer.
    type: float
    default: 2
notes:
  - Only the answer section's records of O(record_type) are returned; CNAME chains are followed only as far
    as the server itself does (recursive servers return the final addresses).
"""

EXAMPLES = r"""
- name: Resolve the platform's service names through the cluster's DNS
  saasodoo_dns_probe:
    server: 10.96.0.10
    names:
      - saasodoo-backend.saasodoo-system.svc.cluster.local
      - saasodoo-postgres.saasodoo-system.svc.cluster.local
  register: dns

- name: Fail when one did not resolve
  ansible.builtin.assert:
    that: dns.resolved
    fail_msg: "{{ dns.results | rejectattr('resolved') | map(attribute='summary') | join('; ') }}"
"""

RETURN = r"""
resolved:
  description: Whether every name got at least one address.
  type: bool
  returned: always
server:
  description: The server asked, as C(address:port).
  type: str
  returned: always
results:
  description: One entry per name, in the order given.
  type: list
  elements: dict
  returned: always
  contains:
    name:
      description: The name asked for.
      type: str
    resolved:
      description: The server answered NOERROR with at least one address.
      type: bool
    rcode:
      description: The server's response code (NOERROR, NXDOMAIN, SERVFAIL, REFUSED...), or null without an answer.
      type: str
    addresses:
      description: The addresses in the answer.
      type: list
      elements: str
    error:
      description: Why there was no usable answer (timeout, connection refused, malformed reply), or null.
      type: str
    elapsed_ms:
      description: Milliseconds until the answer (or the error).
      type: int
    summary:
      description: One line saying what happened, for reports.
      type: str
"""

import random
import socket
import struct
import time

from ansible.module_utils.basic import AnsibleModule

RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
TYPES = {"A": 1, "AAAA": 28}


class ProbeError(Exception):
    """A name that cannot be put in a query."""


def build_query(name, qtype, query_id):
    """A DNS query message: header with RD set, one question of class IN."""
    labels = [part for part in name.rstrip(".").split(".") if part]
    if not labels:
        raise ProbeError("empty name %r" % name)
    qname = b""
    for label in labels:
        raw = label.encode("idna") if any(ord(c) > 127 for c in label) else label.encode("ascii")
        if len(raw) > 63:
            raise ProbeError("label %r of %r is longer than 63 bytes" % (label, name))
        qname += struct.pack("!B", len(raw)) + raw
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + qname + b"\0" + struct.pack("!HH", qtype, 1)


def _skip_name(message, offset):
    """Offset just after a (possibly compressed) name."""
    while True:
        if offset >= len(message):
            raise ValueError("name runs past the end of the message")
        length = message[offset]
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def parse_reply(message, query_id, qtype):
    """(rcode name, [addresses]) of a reply; ValueError when it is not a reply to our query."""
    if len(message) < 12:
        raise ValueError("reply shorter than a DNS header")
    rid, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", message[:12])
    if rid != query_id or not flags & 0x8000:
        raise ValueError("not a reply to this query")
    rcode = RCODES.get(flags & 0x000F, "RCODE%d" % (flags & 0x000F))
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(message, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(message, offset)
        rtype, _, _, rdlength = struct.unpack("!HHIH", message[offset:offset + 10])
        offset += 10
        rdata = message[offset:offset + rdlength]
        offset += rdlength
        if rtype == qtype == 1 and rdlength == 4:
            addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == qtype == 28 and rdlength == 16:
            addresses.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return rcode, addresses


def probe(server, port, name, record_type="A", timeout=2.0):
    """Ask the server for one name; never raises for network trouble."""
    qtype = TYPES[record_type]
    query_id = random.randint(0, 0xFFFF)
    entry = {"name": name, "resolved": False, "rcode": None, "addresses": [], "error": None, "elapsed_ms": 0}
    started = time.monotonic()
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    try:
        # A connected UDP socket hears the ICMP "port unreachable" of a server that is not there:
        # refused at once instead of a timeout, and replies from other addresses are not taken.
        sock.connect((server, port))
        sock.send(build_query(name, qtype, query_id))
        deadline = started + timeout
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            message = sock.recv(4096)
            try:
                entry["rcode"], entry["addresses"] = parse_reply(message, query_id, qtype)
                break
            except ValueError as exc:
                if "not a reply to this query" in str(exc) and time.monotonic() < deadline:
                    continue  # a late answer to someone else's query: keep waiting for ours
                entry["error"] = "malformed reply: %s" % exc
                break
    except socket.timeout:
        entry["error"] = "no answer within %ss" % timeout
    except ConnectionRefusedError:
        entry["error"] = "connection refused (nothing listens on %s port %s/udp)" % (server, port)
    except OSError as exc:
        entry["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        sock.close()
    entry["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    entry["resolved"] = entry["rcode"] == "NOERROR" and bool(entry["addresses"])
    if entry["resolved"]:
        entry["summary"] = "%s -> %s (%d ms)" % (name, ", ".join(entry["addresses"]), entry["elapsed_ms"])
    elif entry["error"]:
        entry["summary"] = "%s: %s" % (name, entry["error"])
    else:
        entry["summary"] = "%s: %s, no %s record" % (name, entry["rcode"], record_type)
    return entry


def main():
    module = AnsibleModule(
        argument_spec=dict(
            server=dict(type="str", required=True),
            port=dict(type="int", default=53),
            names=dict(type="list", elements="str", required=True),
            record_type=dict(type="str", default="A", choices=list(TYPES)),
            timeout=dict(type="float", default=2.0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not 0 < params["port"] < 65536:
        module.fail_json(msg="saasodoo_dns_probe: port must be between 1 and 65535, got %s" % params["port"])
    if params["timeout"] <= 0:
        module.fail_json(msg="saasodoo_dns_probe: timeout must be > 0, got %s" % params["timeout"])
    results = []
    for name in params["names"]:
        try:
            results.append(probe(params["server"], params["port"], name, params["record_type"], params["timeout"]))
        except ProbeError as exc:
            module.fail_json(msg="saasodoo_dns_probe: %s" % exc)
    module.exit_json(changed=False, server="%s:%s" % (params["server"], params["port"]), results=results,
                     resolved=bool(results) and all(r["resolved"] for r in results))


if __name__ == "__main__":
    main()
