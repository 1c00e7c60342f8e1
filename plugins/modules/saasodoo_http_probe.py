#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Timed HTTP(S) requests to one URL: status counts, latency percentiles, errors."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_http_probe
short_description: Make N timed HTTP(S) requests to a URL and report status counts, latency percentiles and errors
description:
  - Sends O(count) requests (C(GET) or C(HEAD)) to O(url), sequentially or O(concurrency) at a time, and
    measures each one from the start of the TCP connection to the last byte of the body.
  - Returns how many answers had each status, how many had an O(expected_status), the failures by kind
    (timeout, refused, reset, dns, unreachable, tls, protocol, other) with a few of their messages, and the
    latency percentiles (p50, p95, p99; linear interpolation between the closest ranks, as numpy's default).
  - A failed request is a measurement, not a module failure; the module fails only on bad input. Judging
    the numbers (is p95 too slow, is one error too many) is the caller's job, so the same probe serves the
    slow-API, performance and health checks with their own thresholds.
  - O(server_name) reaches a virtual host behind one address (an ingress); the request carries it as the
    C(Host) header and, over HTTPS, as the TLS server name (SNI) the certificate is verified against.
  - Only C(GET) and C(HEAD) are allowed, so probing never changes the service; check mode runs the
    same requests.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  url:
    description: Absolute C(http://) or C(https://) URL to request.
    type: str
    required: true
  count:
    description: Number of requests (1 to 1000).
    type: int
    default: 5
  concurrency:
    description: How many requests may be in flight at once (1 = one after the other).
    type: int
    default: 1
  timeout:
    description: Seconds to wait for the connection and for each read of the answer.
    type: float
    default: 5
  expected_status:
    description: Status codes that count as a good answer.
    type: list
    elements: int
    default: [200]
  method:
    description: HTTP method; only methods that change nothing are allowed.
    type: str
    default: GET
    choices: [GET, HEAD]
  validate_certs:
    description: Verify the server's certificate (chain and name) over HTTPS. A failed verification is a C(tls) error.
    type: bool
    default: true
  ca_path:
    description: PEM file of the CA(s) to trust instead of the system's, when O(validate_certs) is true.
    type: path
  server_name:
    description:
      - Virtual host to ask for. Sent as the C(Host) header (with the port when it is not 80 or 443) and, over
        HTTPS, as the TLS server name the certificate must be valid for. Default is the URL's host.
    type: str
  headers:
    description: Extra request headers. A C(Host) header given here wins over O(server_name).
    type: dict
    default: {}
  return_body:
    description: Return the body of the last answer (at most 64 KiB, decoded as UTF-8), e.g. to parse an index page.
    type: bool
    default: false
  return_samples:
    description: Return every request's status, time and error.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Only reads (GET or HEAD), so check mode makes the same requests and returns the same result.
notes:
  - Redirects are not followed; a 301 is reported as a 301.
  - Percentiles of a handful of requests are rough; use O(count) of 20 or more for a p95 that means something.
seealso:
  - module: ansible.builtin.uri
  - module: saasodoo_tcp_probe
"""

EXAMPLES = r"""
- name: AUDIT | Measure the API's tenant listing (20 requests, 4 at a time)
  saasodoo_http_probe:
    url: "{{ saasodoo_endpoints.api.url }}/api/v1/tenants"
    count: 20
    concurrency: 4
    timeout: 5
  register: __probe

- name: AUDIT | Fail when p95 is over 2 s
  ansible.builtin.assert:
    that: __probe.latency_ms.p95 is not none and __probe.latency_ms.p95 < 2000
  changed_when: false

- name: AUDIT | The public entry point, as the browser reaches app.example.com, certificate verified
  saasodoo_http_probe:
    url: https://203.0.113.10/
    server_name: app.example.com
    ca_path: /etc/ssl/certs/platform-ca.pem
    count: 3
    expected_status: [200, 304]
"""

RETURN = r"""
url:
  description: The URL probed.
  returned: always
  type: str
requests:
  description: Requests made.
  returned: always
  type: int
  sample: 20
statuses:
  description: Answers per HTTP status (keys are the status as a string).
  returned: always
  type: dict
  sample: {"200": 19, "503": 1}
expected:
  description: Answers whose status is in O(expected_status).
  returned: always
  type: int
unexpected:
  description: Answers with another status.
  returned: always
  type: int
unanswered:
  description:
    - Requests that got no answer (timeout, refused, TLS failure...). Not named C(failed), which Ansible reads as
      the task's own failure.
  returned: always
  type: int
timeouts:
  description: Requests that timed out (part of C(unanswered)).
  returned: always
  type: int
errors:
  description: Requests without an answer, per kind (timeout, refused, reset, dns, unreachable, tls, protocol, other).
  returned: always
  type: dict
  sample: {"timeout": 2}
error_samples:
  description: The messages of the first (at most 5) failed requests.
  returned: always
  type: list
  elements: str
success_ratio:
  description: Share of requests answered with an expected status.
  returned: always
  type: float
  sample: 0.95
ok:
  description: Every request was answered with an expected status.
  returned: always
  type: bool
latency_ms:
  description:
    - Time to the last byte of the answered requests, in milliseconds (count, min, mean, p50, p95, p99, max);
      the values are null when no request was answered.
  returned: always
  type: dict
  sample: {count: 20, min: 3.1, mean: 12.4, p50: 8.2, p95: 40.7, p99: 51.0, max: 53.3}
latency_all_ms:
  description: The same over every request, failed ones counted until they failed (a timeout as the time waited).
  returned: always
  type: dict
connect_ms:
  description: Time to establish the connection (TCP, and TLS over HTTPS), for the requests that connected.
  returned: always
  type: dict
samples:
  description: Per request, in order - status (null when failed), ms, connect_ms, error, error_kind.
  returned: when O(return_samples) is true
  type: list
  elements: dict
  sample: [{status: 200, ms: 8.2, connect_ms: 0.4, error: null, error_kind: null}]
body:
  description: Body of the last answer (null when the last request failed).
  returned: when O(return_body) is true
  type: str
headers:
  description: Response headers of the last answer, names in lower case.
  returned: when O(return_body) is true
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.saasodoo_probe import (ProbeError, http_once, parse_http_url, run,
                                                  summarize_http)


def argument_spec():
    return dict(
        url=dict(type="str", required=True),
        count=dict(type="int", default=5),
        concurrency=dict(type="int", default=1),
        timeout=dict(type="float", default=5),
        expected_status=dict(type="list", elements="int", default=[200]),
        method=dict(type="str", default="GET", choices=["GET", "HEAD"]),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        server_name=dict(type="str"),
        headers=dict(type="dict", default={}),
        return_body=dict(type="bool", default=False),
        return_samples=dict(type="bool", default=True),
    )


def validate(params):
    """A message for bad input, else None."""
    if not 1 <= params["count"] <= 1000:
        return "count must be between 1 and 1000, got %s" % params["count"]
    if not 1 <= params["concurrency"] <= 50:
        return "concurrency must be between 1 and 50, got %s" % params["concurrency"]
    if not 0 < params["timeout"] <= 300:
        return "timeout must be more than 0 and at most 300 seconds, got %s" % params["timeout"]
    if not params["expected_status"]:
        return "expected_status must list at least one status code"
    bad = [s for s in params["expected_status"] if not 100 <= s <= 599]
    if bad:
        return "expected_status must hold HTTP status codes (100-599), got %s" % bad
    try:
        parse_http_url(params["url"])
    except ProbeError as e:
        return "%s" % e
    return None


def probe(params):
    def once():
        return http_once(params["url"], timeout=params["timeout"], method=params["method"],
                         headers=params["headers"], validate_certs=params["validate_certs"],
                         server_name=params["server_name"], ca_path=params["ca_path"],
                         read_body=params["return_body"])

    samples = run(once, params["count"], params["concurrency"])
    result = summarize_http(samples, params["expected_status"])
    result["url"] = params["url"]
    if params["return_samples"]:
        result["samples"] = [
            {"status": s["status"], "ms": round(s["ms"], 1),
             "connect_ms": round(s["connect_ms"], 1) if s["connect_ms"] is not None else None,
             "error": s["error"], "error_kind": s["error_kind"]}
            for s in samples]
    if params["return_body"]:
        result["body"] = samples[-1]["body"]
        result["headers"] = samples[-1]["headers"]
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    problem = validate(module.params)
    if problem:
        module.fail_json(msg=problem)
    error = None
    try:
        result = probe(module.params)
    except ProbeError as e:
        error = "%s" % e
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message, not a traceback
        error = "saasodoo_http_probe failed unexpectedly (please report it): %s: %s" % (type(e).__name__, e)
    if error is not None:
        module.fail_json(msg=error)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
