#!/usr/bin/python
# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks: what the Kubernetes API server's audit log says about refused requests (read-only).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_audit_log
short_description: Count the requests the Kubernetes API server refused (401/403), from its audit log (read-only)
description:
  - Reads the API server's audit log (the file of C(--audit-log-path), JSON lines of C(audit.k8s.io/v1) C(Event)s,
    as the host running the module sees it) and answers the troubleshooting guide's Security Check items "No
    unauthorized access attempts" and "Audit logs collecting".
  - Counts the events of the last O(since_minutes) whose response was C(401 Unauthorized) or C(403 Forbidden)
    (each request once, at stage C(ResponseComplete) or C(Panic), or events without a stage), by user, by source IP
    and by verb and resource, with a few samples; and says when the last event of any kind was written, so a log
    that stopped growing shows.
  - Reads at most the last O(max_bytes) of the file, line by line, so a large log costs bounded memory and time
    (RV(truncated) says when the beginning was skipped). Rotated files are not read.
  - A missing file is not an error (RV(exists) is false); the caller decides what that means. An unreadable one
    fails with a clear message.
  - Never changes anything, so check mode runs it as is.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  path:
    description: The audit log file.
    type: path
    required: true
  since_minutes:
    description: Only events of the last this many minutes count as refused requests.
    type: int
    default: 60
  max_bytes:
    description: Read at most this many bytes from the end of the file.
    type: int
    default: 67108864
  top:
    description: How many users, source IPs, resources and samples to return.
    type: int
    default: 10
attributes:
  check_mode:
    support: full
    description: Read-only; check mode returns the same result.
  diff_mode:
    support: none
    description: Changes nothing.
notes:
  - The audit policy decides what is logged; a policy at C(None) level for some requests hides them from this count.
  - Usernames and source IPs are returned; request and response bodies never are.
seealso:
  - name: Kubernetes auditing
    description: The audit log format and policy.
    link: https://kubernetes.io/docs/tasks/debug/debug-cluster/audit/
"""

EXAMPLES = r"""
- name: AUDIT | Count the refused requests of the last hour
  saasodoo_audit_log:
    path: /var/log/kubernetes/audit/audit.log
    since_minutes: 60
  register: __audit

- name: AUDIT | Warn about many refusals
  ansible.builtin.debug:
    msg: "{{ __audit.denied.total }} refused requests; top users {{ __audit.denied.by_user[:3] }}"
  when: __audit.exists and __audit.denied.total > 10
"""

RETURN = r"""
exists:
  description: Whether the file exists.
  returned: always
  type: bool
path:
  description: The file read.
  returned: always
  type: str
size_bytes:
  description: Its size.
  returned: when it exists
  type: int
bytes_read:
  description: How many bytes were read (at most O(max_bytes)).
  returned: always
  type: int
truncated:
  description: Whether the beginning of the file was skipped because of O(max_bytes).
  returned: always
  type: bool
events:
  description: Audit events parsed (every stage).
  returned: always
  type: int
parse_errors:
  description: Lines that are not audit events (not JSON, no timestamp).
  returned: always
  type: int
first_event:
  description: Timestamp of the oldest event read (ISO 8601), or null.
  returned: always
  type: str
last_event:
  description: Timestamp of the newest event read (ISO 8601), or null.
  returned: always
  type: str
last_event_age_minutes:
  description: Minutes since the newest event, or null without events.
  returned: always
  type: float
since_minutes:
  description: The window of the counts (O(since_minutes)).
  returned: always
  type: int
denied:
  description: The requests refused with 401 or 403 in the window.
  returned: always
  type: dict
  contains:
    total: {description: How many., type: int}
    "401": {description: Refused as unauthenticated., type: int}
    "403": {description: Refused as forbidden., type: int}
    by_user: {description: "[{user, count}], most first.", type: list}
    by_source_ip: {description: "[{ip, count}], most first.", type: list}
    by_resource: {description: "[{verb, resource, count}], most first.", type: list}
    samples: {description: "The newest few: {time, user, verb, uri, code, source_ips}.", type: list}
  sample: {total: 3, "401": 1, "403": 2, by_user: [{user: "system:serviceaccount:tenant-acme:default", count: 2}]}
"""

import datetime
import json
import os
from collections import Counter

from ansible.module_utils.basic import AnsibleModule

COUNTED_STAGES = (None, "ResponseComplete", "Panic")
DENIED = (401, 403)


class AuditLogError(Exception):
    """The audit log cannot be read."""


def parse_time(value):
    """An audit timestamp (RFC 3339, 'Z' or offset, up to nanoseconds) as an aware datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        tail = rest[len(digits):]
        text = "%s.%s%s" % (head, (digits + "000000")[:6], tail)
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def _lines(path, max_bytes):
    """(lines, size, bytes_read, truncated) of the last max_bytes of the file, whole lines only."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            start = max(0, size - max_bytes) if max_bytes > 0 else 0
            handle.seek(start)
            data = handle.read()
    except OSError as e:
        raise AuditLogError("cannot read the audit log %s: %s" % (path, e.strerror or e))
    truncated = start > 0
    if truncated:
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    return data.decode("utf-8", "replace").splitlines(), size, len(data), truncated


def _top(counter, key, top):
    return [dict([(key, k), ("count", n)]) for k, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def scan(path, since_minutes=60, max_bytes=64 * 1024 * 1024, top=10, now=None):
    """The module's result for one audit log file (no AnsibleModule needed: unit-tested as is)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    result = {"path": path, "exists": os.path.exists(path), "bytes_read": 0, "truncated": False, "events": 0,
              "parse_errors": 0, "first_event": None, "last_event": None, "last_event_age_minutes": None,
              "since_minutes": since_minutes,
              "denied": {"total": 0, "401": 0, "403": 0, "by_user": [], "by_source_ip": [], "by_resource": [],
                         "samples": []}}
    if not result["exists"]:
        return result
    if os.path.isdir(path):
        raise AuditLogError("the audit log %s is a directory, not a file" % path)
    lines, size, read, truncated = _lines(path, max_bytes)
    result.update(size_bytes=size, bytes_read=read, truncated=truncated)
    since = now - datetime.timedelta(minutes=since_minutes)
    first = last = None
    users, ips, resources, samples = Counter(), Counter(), Counter(), []
    codes = Counter()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            result["parse_errors"] += 1
            continue
        if not isinstance(event, dict):
            result["parse_errors"] += 1
            continue
        when = parse_time(event.get("stageTimestamp")) or parse_time(event.get("requestReceivedTimestamp"))
        if when is None:
            result["parse_errors"] += 1
            continue
        result["events"] += 1
        first = when if first is None or when < first else first
        last = when if last is None or when > last else last
        code = (event.get("responseStatus") or {}).get("code")
        if code not in DENIED or event.get("stage") not in COUNTED_STAGES or when < since:
            continue
        user = (event.get("user") or {}).get("username") or "(unauthenticated)"
        ref = event.get("objectRef") or {}
        resource = ref.get("resource") or event.get("requestURI") or "?"
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        codes[code] += 1
        users[user] += 1
        for ip in event.get("sourceIPs") or ["(unknown)"]:
            ips[ip] += 1
        resources[(event.get("verb") or "?", resource)] += 1
        samples.append({"time": when.isoformat(), "user": user, "verb": event.get("verb"),
                        "uri": event.get("requestURI"), "code": code, "source_ips": event.get("sourceIPs") or []})
    result.update(
        first_event=first.isoformat() if first else None, last_event=last.isoformat() if last else None,
        last_event_age_minutes=round((now - last).total_seconds() / 60.0, 1) if last else None)
    result["denied"] = {
        "total": sum(codes.values()), "401": codes[401], "403": codes[403],
        "by_user": _top(users, "user", top), "by_source_ip": _top(ips, "ip", top),
        "by_resource": [{"verb": v, "resource": r, "count": n}
                        for (v, r), n in sorted(resources.items(), key=lambda kv: (-kv[1], kv[0]))[:top]],
        "samples": sorted(samples, key=lambda s: s["time"], reverse=True)[:top],
    }
    return result


def validate(params):
    """A message for inputs that cannot work, or None."""
    if params["since_minutes"] <= 0:
        return "since_minutes must be > 0 (got %s)" % params["since_minutes"]
    if params["max_bytes"] < 0:
        return "max_bytes must be >= 0 (0 reads the whole file; got %s)" % params["max_bytes"]
    if params["top"] <= 0:
        return "top must be > 0 (got %s)" % params["top"]
    return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            since_minutes=dict(type="int", default=60),
            max_bytes=dict(type="int", default=64 * 1024 * 1024),
            top=dict(type="int", default=10),
        ),
        supports_check_mode=True,
    )
    problem = validate(module.params)
    error, result = None, None
    if problem:
        error = "saasodoo_audit_log: %s" % problem
    else:
        try:
            result = scan(module.params["path"], module.params["since_minutes"], module.params["max_bytes"],
                          module.params["top"])
        except AuditLogError as e:
            error = "saasodoo_audit_log: %s" % e
    if error is not None:
        module.fail_json(msg=error, path=module.params["path"])
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
