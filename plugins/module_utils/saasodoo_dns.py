# -*- coding: utf-8 -*-
# A DNS client on the standard library: one question, one answer, UDP with a TCP retry when truncated.
"""Ask one DNS server one question and say what it answered.

Used by the ``saasodoo_dns_query`` module and by the test bed (``testbed/dns.py``). The standard
library is enough for what the runbooks need (A, AAAA and CNAME records from one named server),
so no third-party resolver has to be installed on the controller or in the execution environment.

``query()`` never raises for what a DNS server or the network does (timeouts, refusals,
NXDOMAIN): those are answers the runbooks judge. It raises ``DnsQueryError`` only for a question
that cannot be asked (a malformed name, an unknown record type).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import random
import socket
import struct
import time

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "TXT": 16, "AAAA": 28, "SRV": 33}
TYPE_NAMES = dict((v, k) for k, v in TYPES.items())
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
CLASS_IN = 1
FLAG_RD = 0x0100
FLAG_QR = 0x8000
FLAG_TC = 0x0200


class DnsQueryError(Exception):
    """The question cannot be asked (bad name or type)."""


class DnsFormatError(Exception):
    """The server's answer cannot be parsed."""


def encode_name(name):
    """'a.b.c' -> wire labels. Raises DnsQueryError for names DNS cannot carry."""
    name = (name or "").strip().rstrip(".")
    if not name:
        raise DnsQueryError("empty DNS name")
    out = b""
    for label in name.split("."):
        try:
            raw = label.encode("idna") if any(ord(c) > 127 for c in label) else label.encode("ascii")
        except UnicodeError as exc:
            raise DnsQueryError("name %r cannot be encoded: %s" % (name, exc))
        if not raw or len(raw) > 63:
            raise DnsQueryError("name %r has an empty label or a label longer than 63 bytes" % name)
        out += struct.pack("!B", len(raw)) + raw
    out += b"\x00"
    if len(out) > 255:
        raise DnsQueryError("name %r is longer than 255 bytes" % name)
    return out


def build_query(name, qtype="A", query_id=None, recursion=True):
    """(query_id, bytes) of a standard query for one name."""
    if qtype not in TYPES:
        raise DnsQueryError("unsupported record type %r (supported: %s)" % (qtype, ", ".join(sorted(TYPES))))
    query_id = random.randint(0, 0xFFFF) if query_id is None else query_id
    header = struct.pack("!HHHHHH", query_id, FLAG_RD if recursion else 0, 1, 0, 0, 0)
    return query_id, header + encode_name(name) + struct.pack("!HH", TYPES[qtype], CLASS_IN)


def _read_name(data, offset, depth=0):
    """(name, offset after the name) with compression pointers followed."""
    labels = []
    jumped_to = None
    while True:
        if offset >= len(data):
            raise DnsFormatError("name runs past the end of the message")
        length = data[offset] if isinstance(data[offset], int) else ord(data[offset])
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data) or depth > 20:
                raise DnsFormatError("bad compression pointer")
            pointer = struct.unpack("!H", data[offset:offset + 2])[0] & 0x3FFF
            if jumped_to is None:
                jumped_to = offset + 2
            offset = pointer
            depth += 1
            continue
        offset += 1
        if length == 0:
            break
        labels.append(data[offset:offset + length].decode("ascii", "replace"))
        offset += length
    return ".".join(labels), (jumped_to if jumped_to is not None else offset)


def _rdata(rtype, data, start, length):
    raw = data[start:start + length]
    if rtype == TYPES["A"] and length == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if rtype == TYPES["AAAA"] and length == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    if rtype in (TYPES["CNAME"], TYPES["PTR"], TYPES["NS"]):
        return _read_name(data, start)[0]
    if rtype == TYPES["TXT"]:
        parts, i = [], 0
        while i < len(raw):
            n = raw[i] if isinstance(raw[i], int) else ord(raw[i])
            parts.append(raw[i + 1:i + 1 + n].decode("utf-8", "replace"))
            i += 1 + n
        return "".join(parts)
    return raw.hex() if hasattr(raw, "hex") else repr(raw)


def parse_response(data, query_id=None):
    """{'id', 'rcode', 'truncated', 'authoritative', 'answers': [{name, type, ttl, data}]}."""
    if len(data) < 12:
        raise DnsFormatError("answer shorter than a DNS header (%d bytes)" % len(data))
    rid, flags, qdcount, ancount, _nscount, _arcount = struct.unpack("!HHHHHH", data[:12])
    if not flags & FLAG_QR:
        raise DnsFormatError("the message is a query, not an answer")
    if query_id is not None and rid != query_id:
        raise DnsFormatError("answer id %d does not match query id %d" % (rid, query_id))
    offset = 12
    for _ in range(qdcount):
        _name, offset = _read_name(data, offset)
        offset += 4
    answers = []
    for _ in range(ancount):
        name, offset = _read_name(data, offset)
        if offset + 10 > len(data):
            raise DnsFormatError("answer record runs past the end of the message")
        rtype, _rclass, ttl, rdlength = struct.unpack("!HHIH", data[offset:offset + 10])
        offset += 10
        if offset + rdlength > len(data):
            raise DnsFormatError("record data runs past the end of the message")
        answers.append({"name": name, "type": TYPE_NAMES.get(rtype, str(rtype)), "ttl": ttl,
                        "data": _rdata(rtype, data, offset, rdlength)})
        offset += rdlength
    rcode = flags & 0x000F
    return {"id": rid, "rcode": RCODES.get(rcode, str(rcode)), "truncated": bool(flags & FLAG_TC),
            "authoritative": bool(flags & 0x0400), "answers": answers}


def _family(server):
    return socket.AF_INET6 if ":" in server else socket.AF_INET


def _udp(server, port, payload, timeout):
    sock = socket.socket(_family(server), socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        # A connected UDP socket gets ICMP "port unreachable" as ConnectionRefusedError.
        sock.connect((server, port))
        sock.send(payload)
        return sock.recv(65535)
    finally:
        sock.close()


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise DnsFormatError("the server closed the TCP connection mid-answer")
        buf += chunk
    return buf


def _tcp(server, port, payload, timeout):
    sock = socket.create_connection((server, port), timeout=timeout)
    try:
        sock.sendall(struct.pack("!H", len(payload)) + payload)
        length = struct.unpack("!H", _recv_exact(sock, 2))[0]
        return _recv_exact(sock, length)
    finally:
        sock.close()


def query(server, name, qtype="A", port=53, timeout=2.0, retries=1, tcp=False):
    """Ask `server` for `name`/`qtype`; return what happened, never raising for network outcomes.

    Returns {'name', 'type', 'server', 'status', 'rcode', 'answers', 'addresses', 'elapsed_ms',
    'attempts', 'error'}. status is one of: ok (NOERROR with records of the type asked for),
    nodata (NOERROR, nothing of that type), nxdomain, servfail, refused, error (another rcode
    or an unparsable answer), timeout, unreachable (connection refused / no route).
    """
    query_id, payload = build_query(name, qtype)
    result = {"name": name.rstrip("."), "type": qtype, "server": "%s:%d" % (server, port), "status": "error",
              "rcode": None, "answers": [], "addresses": [], "elapsed_ms": None, "attempts": 0, "error": None,
              "transport": "tcp" if tcp else "udp"}
    started = time.monotonic()
    for attempt in range(1, max(0, retries) + 2):
        result["attempts"] = attempt
        try:
            raw = _tcp(server, port, payload, timeout) if tcp else _udp(server, port, payload, timeout)
            answer = parse_response(raw, query_id)
            if answer["truncated"] and not tcp:
                result["transport"] = "tcp"
                answer = parse_response(_tcp(server, port, payload, timeout), query_id)
        except socket.timeout:
            result.update(status="timeout", error="no answer within %.1fs" % timeout)
            continue
        except (ConnectionRefusedError, ConnectionResetError) as exc:
            result.update(status="unreachable", error="connection refused (%s)" % exc)
            break
        except OSError as exc:
            result.update(status="unreachable", error=str(exc))
            break
        except DnsFormatError as exc:
            result.update(status="error", error="unparsable answer: %s" % exc)
            break
        result["rcode"] = answer["rcode"]
        result["answers"] = answer["answers"]
        wanted = [a["data"] for a in answer["answers"] if a["type"] == qtype]
        result["addresses"] = wanted
        if answer["rcode"] == "NOERROR":
            result["status"] = "ok" if wanted else "nodata"
            result["error"] = None if wanted else "no %s record" % qtype
        else:
            result["status"] = answer["rcode"].lower() if answer["rcode"] in ("NXDOMAIN", "SERVFAIL", "REFUSED") else "error"
            result["error"] = "server answered %s" % answer["rcode"]
        break
    result["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    return result
