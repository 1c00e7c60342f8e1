#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Timed TCP connections (and optionally a request/answer exchange) to one address."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_tcp_probe
short_description: Measure TCP connect time (and a request/answer round trip) to a host and port
description:
  - Opens O(count) TCP connections to O(host):O(port), one after the other, and measures how long each
    connection took (network latency as an application sees it, DNS lookup included).
  - With O(send), writes it after connecting and measures the time until O(expect) (or, without it, any
    bytes) came back - for instance C(PING) and C(+PONG) for Redis.
  - Returns the successes, the failures by kind with a few messages, and latency percentiles (shared with
    M(saasodoo_http_probe)). A failed connection is a measurement, not a module failure.
  - Sends nothing unless O(send) is given, so it is safe in check mode; only send requests that read.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  host:
    description: Host name or address.
    type: str
    required: true
  port:
    description: TCP port.
    type: int
    required: true
  count:
    description: Number of connections (1 to 1000).
    type: int
    default: 5
  timeout:
    description: Seconds to wait for the connection and for the answer.
    type: float
    default: 3
  send:
    description: Text to send after connecting (escape sequences such as C(\r\n) are sent as written in YAML).
    type: str
  expect:
    description: Text the answer must contain (only with O(send)).
    type: str
attributes:
  check_mode:
    support: full
    description: Connects and, with O(send), sends the same request in check mode; give only read-only requests.
seealso:
  - module: saasodoo_http_probe
"""

EXAMPLES = r"""
- name: AUDIT | Network latency to the platform database
  saasodoo_tcp_probe:
    host: "{{ saasodoo_db_host }}"
    port: "{{ saasodoo_db_port }}"
    count: 10
  register: __db_latency

- name: AUDIT | Redis PING round trip
  saasodoo_tcp_probe:
    host: "{{ saasodoo_redis_host }}"
    port: "{{ saasodoo_redis_port }}"
    count: 10
    send: "PING\r\n"
    expect: "+PONG"
  register: __redis_ping
"""

RETURN = r"""
host:
  description: The host probed.
  returned: always
  type: str
port:
  description: The port probed.
  returned: always
  type: int
attempts:
  description: Connections attempted.
  returned: always
  type: int
succeeded:
  description: Attempts that connected (and, with O(send), got the expected answer).
  returned: always
  type: int
failures:
  description: Attempts that did not (not named C(failed), which Ansible reads as the task's own failure).
  returned: always
  type: int
errors:
  description: Failed attempts per kind (timeout, refused, reset, dns, unreachable, unexpected_reply, no_reply, other).
  returned: always
  type: dict
error_samples:
  description: Messages of the first (at most 5) failed attempts.
  returned: always
  type: list
  elements: str
success_ratio:
  description: Share of successful attempts.
  returned: always
  type: float
ok:
  description: Every attempt succeeded.
  returned: always
  type: bool
connect_ms:
  description: Connection time in milliseconds of the attempts that connected (count, min, mean, p50, p95, p99, max).
  returned: always
  type: dict
  sample: {count: 10, min: 0.1, mean: 0.2, p50: 0.2, p95: 0.4, p99: 0.4, max: 0.4}
roundtrip_ms:
  description: Time from sending O(send) to the expected answer, for the successful attempts (empty without O(send)).
  returned: always
  type: dict
reply:
  description: The first 200 characters of the last answer (with O(send)).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saasodoo_probe import run, summarize_tcp, tcp_once


def argument_spec():
    return dict(
        host=dict(type="str", required=True),
        port=dict(type="int", required=True),
        count=dict(type="int", default=5),
        timeout=dict(type="float", default=3),
        send=dict(type="str"),
        expect=dict(type="str"),
    )


def validate(params):
    if not params["host"]:
        return "host must not be empty"
    if not 1 <= params["port"] <= 65535:
        return "port must be between 1 and 65535, got %s" % params["port"]
    if not 1 <= params["count"] <= 1000:
        return "count must be between 1 and 1000, got %s" % params["count"]
    if not 0 < params["timeout"] <= 300:
        return "timeout must be more than 0 and at most 300 seconds, got %s" % params["timeout"]
    if params["expect"] and params["send"] is None:
        return "expect needs send (the request whose answer it checks)"
    return None


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    problem = validate(params)
    if problem:
        module.fail_json(msg=problem)
    error = None
    try:
        samples = run(lambda: tcp_once(params["host"], params["port"], params["timeout"], params["send"],
                                       params["expect"]), params["count"])
        result = summarize_tcp(samples)
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message, not a traceback
        error = "saasodoo_tcp_probe failed unexpectedly (please report it): %s: %s" % (type(e).__name__, e)
    if error is not None:
        module.fail_json(msg=error)
    result.update(host=params["host"], port=params["port"], reply=samples[-1]["reply"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
