#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Resolve names through one named DNS server and report what it answered, per name."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_dns_query
short_description: Ask one DNS server for a list of names and report each answer
description:
  - Sends one standard query per name to O(server) (UDP, retried over TCP when the answer is truncated)
    and returns, per name, the status (C(ok), C(nodata), C(nxdomain), C(servfail), C(refused), C(error),
    C(timeout) or C(unreachable)), the response code, the records and the time it took.
  - Asks the named server directly, not the controller's resolver, so it tests the cluster's DNS server
    (CoreDNS, or the test bed's dnsmasq) whatever C(/etc/resolv.conf) says.
  - Standard library only (no dnspython), so it runs in any execution environment.
  - Never fails because of what the server or the network did; those outcomes are in RV(results) for the
    runbook to judge. Fails only on a question that cannot be asked (an empty or malformed name).
  - Read-only; runs the same in check mode and never reports a change.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  server:
    description: Address (IPv4 or IPv6) of the DNS server to ask.
    type: str
    required: true
  port:
    description: Port the DNS server answers on.
    type: int
    default: 53
  names:
    description: Names to resolve (absolute; a trailing dot is ignored). At most O(max_names).
    type: list
    elements: str
    required: true
  type:
    description: Record type to ask for.
    type: str
    default: A
    choices: [A, AAAA, CNAME, PTR, TXT, SRV, NS, SOA]
  timeout:
    description: Seconds to wait for each answer.
    type: float
    default: 2.0
  retries:
    description: Further attempts after a timeout (a refused connection is not retried).
    type: int
    default: 1
  tcp:
    description: Ask over TCP instead of UDP.
    type: bool
    default: false
  max_names:
    description: Guard rail against accidental floods; more names than this is refused.
    type: int
    default: 100
notes:
  - Supports check mode; the queries are read-only.
"""

EXAMPLES = r"""
- name: AUDIT | Resolve the platform's service names through the cluster DNS
  saasodoo_dns_query:
    server: "{{ saasodoo_dns.server }}"
    port: "{{ saasodoo_dns.port }}"
    names:
      - saasodoo-backend.saasodoo-system.svc.cluster.local
      - supabase.saasodoo.example.com
  register: dns

- name: Names that did not resolve
  ansible.builtin.debug:
    msg: "{{ dns.results | rejectattr('status', 'equalto', 'ok') | map(attribute='name') | list }}"
"""

RETURN = r"""
server:
  description: The server asked, as C(address:port).
  returned: always
  type: str
  sample: 10.96.0.10:53
results:
  description: One entry per name, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The name asked for.
      type: str
    type:
      description: The record type asked for.
      type: str
    status:
      description: ok, nodata, nxdomain, servfail, refused, error, timeout or unreachable.
      type: str
    rcode:
      description: The DNS response code (NOERROR, NXDOMAIN, ...), or null when nothing came back.
      type: str
    addresses:
      description: The data of the answer records of the type asked for (addresses for A and AAAA).
      type: list
      elements: str
    answers:
      description: Every answer record (name, type, ttl, data), CNAMEs included.
      type: list
      elements: dict
    elapsed_ms:
      description: Milliseconds from the first attempt to the answer or the last failure.
      type: int
    attempts:
      description: How many times the question was sent.
      type: int
    transport:
      description: udp, or tcp when asked for or when the UDP answer was truncated.
      type: str
    error:
      description: Why the name did not resolve, or null.
      type: str
  sample:
    - name: saasodoo-backend.saasodoo-system.svc.cluster.local
      type: A
      status: ok
      rcode: NOERROR
      addresses: [10.96.12.34]
      answers: [{name: saasodoo-backend.saasodoo-system.svc.cluster.local, type: A, ttl: 30, data: 10.96.12.34}]
      elapsed_ms: 1
      attempts: 1
      transport: udp
      error: null
resolved:
  description: Names whose status is C(ok).
  returned: always
  type: list
  elements: str
unresolved:
  description: Names whose status is anything but C(ok).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saasodoo_dns import DnsQueryError, query


def run(params):
    names = [n for n in params["names"]]
    if not names:
        raise DnsQueryError("names is empty: give at least one name to resolve")
    if len(names) > params["max_names"]:
        raise DnsQueryError("%d names given, more than max_names (%d); split the list or raise max_names"
                            % (len(names), params["max_names"]))
    if params["timeout"] <= 0 or params["retries"] < 0 or not 0 < params["port"] < 65536:
        raise DnsQueryError("timeout must be > 0, retries >= 0 and port between 1 and 65535")
    results = [query(params["server"], name, params["type"], params["port"], params["timeout"],
                     params["retries"], params["tcp"]) for name in names]
    return {
        "changed": False,
        "server": "%s:%d" % (params["server"], params["port"]),
        "results": results,
        "resolved": [r["name"] for r in results if r["status"] == "ok"],
        "unresolved": [r["name"] for r in results if r["status"] != "ok"],
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(
            server=dict(type="str", required=True),
            port=dict(type="int", default=53),
            names=dict(type="list", elements="str", required=True),
            type=dict(type="str", default="A", choices=["A", "AAAA", "CNAME", "PTR", "TXT", "SRV", "NS", "SOA"]),
            timeout=dict(type="float", default=2.0),
            retries=dict(type="int", default=1),
            tcp=dict(type="bool", default=False),
            max_names=dict(type="int", default=100),
        ),
        supports_check_mode=True,
    )
    try:
        module.exit_json(**run(module.params))
    except DnsQueryError as exc:
        module.fail_json(msg="saasodoo_dns_query: %s. Nothing was asked." % exc)


if __name__ == "__main__":
    main()
