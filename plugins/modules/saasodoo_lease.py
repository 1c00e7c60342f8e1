#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Take, renew and give back the one-writer Lease of a platform (coordination.k8s.io/v1)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_lease
short_description: Take, renew or give back a platform's one-writer Lease (coordination.k8s.io/v1)
description:
  - One runbook acts on a platform at a time. Before it changes anything, a runbook takes the platform's
    C(Lease); while another live holder has it, the runbook acts on nothing and says who holds it since when.
  - O(state=acquired) creates the Lease, renews it when this O(holder) already has it, or takes it over when
    its holder let it expire (C(renewTime) + C(leaseDurationSeconds) in the past - a run that was killed);
    RV(took_over) then names that holder. Held by another live holder, nothing is written and RV(acquired)
    is false.
  - O(state=released) deletes the Lease when this O(holder) has it (with the C(resourceVersion) it read as a
    precondition, so a Lease taken over in between is never deleted); otherwise it changes nothing.
  - Every write carries the C(resourceVersion) read just before (create, or replace with that version) - when
    two runs race, the API server accepts one and the other reads again and finds the Lease held.
  - Who holds it is written in the Lease - C(holderIdentity) and annotations from O(details) (runbook, AWX
    job, CI job, host, start) - so C(kubectl get lease -o yaml) tells an engineer the same as the report.
  - Check mode reads only - it never takes the Lease - and says whether the run could take it.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  name:
    description: Name of the Lease.
    type: str
    required: true
  namespace:
    description: Namespace of the Lease.
    type: str
    required: true
  holder:
    description: This run's identity, unique per run (e.g. C(<runbook>/<host>/<pid>/<start>)).
    type: str
    required: true
  state:
    description: C(acquired) (take or renew) or C(released) (give back).
    type: str
    choices: [acquired, released]
    default: acquired
  duration_seconds:
    description:
      - How long the Lease stays valid after each renewal. A holder that neither renews nor releases it
        within this time (killed) loses it to the next run. Longer than the longest step between renewals.
    type: int
    default: 900
  details:
    description:
      - What to record about the holder, as C(saasodoo.io/lease-<key>) annotations (C(runbook), C(awx_job),
        C(ci_job), C(host), C(started)). Empty values are left out.
    type: dict
    default: {}
  request_timeout:
    description: Seconds to wait for each answer of the API server.
    type: int
    default: 30
extends_documentation_fragment:
  - saasodoo_k8s
attributes:
  check_mode:
    support: full
    description: Reads the Lease and says whether it could be taken; writes nothing.
  diff_mode:
    support: none
    description: No diff.
requirements:
  - python >= 3.8
  - kubernetes >= 24.2.0
seealso:
  - module: saasodoo_k8s_read
"""

EXAMPLES = r"""
- name: PATCH | Take the platform's one-writer lease
  saasodoo_lease:
    name: saasodoo-runbooks
    namespace: saasodoo-system
    holder: "platform_down/{{ inventory_hostname }}/{{ __started }}"
    details: {runbook: platform_down, awx_job: "{{ tower_job_id | default('') }}"}
  register: __lease

- name: PATCH | Give it back
  saasodoo_lease:
    name: saasodoo-runbooks
    namespace: saasodoo-system
    holder: "platform_down/{{ inventory_hostname }}/{{ __started }}"
    state: released
"""

RETURN = r"""
acquired:
  description: Whether this run holds the Lease now (always false in check mode and after a release).
  returned: always
  type: bool
could_acquire:
  description: Whether the Lease is free, expired or already this run's (what check mode would have done).
  returned: always
  type: bool
held_by:
  description: The holder found when another live holder has the Lease, else null.
  returned: always
  type: dict
  sample: {holder: data_loss/awx-1/20261207T031500Z, since: "2026-12-07T03:15:00.000000Z",
           renewed: "2026-12-07T03:16:10.000000Z", expires: "2026-12-07T03:31:10.000000Z",
           details: {runbook: data_loss, awx_job: "4711", host: awx-1, started: "2026-12-07T03:15:00Z"}}
took_over:
  description: The expired holder whose Lease this run took over (same shape as RV(held_by)), else null.
  returned: always
  type: dict
lease:
  description: The Lease as it is after the call (C(kind), C(metadata), C(spec)), or null when there is none.
  returned: always
  type: dict
"""

import json
import traceback
from datetime import datetime, timedelta, timezone

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.saasodoo_findings import DiagnosisError
from ansible.module_utils.saasodoo_k8s_health import parse_time
from ansible.module_utils.saasodoo_k8s import (
    HAS_KUBERNETES,
    K8S_COMMON_ARGS,
    KUBERNETES_IMPORT_ERROR,
    ApiException,
    client,
)

ANNOTATION = "saasodoo.io/lease-%s"
DETAIL_KEYS = ("runbook", "awx_job", "ci_job", "host", "started")


def micro_time(moment):
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def holder_of(lease, now):
    """{holder, since, renewed, expires, expired, details} of a Lease dict, or None when nobody holds it."""
    spec = (lease or {}).get("spec") or {}
    if not spec.get("holderIdentity"):
        return None
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or 0)
    expires = renewed + timedelta(seconds=duration) if renewed else None
    annotations = ((lease.get("metadata") or {}).get("annotations")) or {}
    return {"holder": spec["holderIdentity"], "since": spec.get("acquireTime"), "renewed": spec.get("renewTime"),
            "expires": micro_time(expires) if expires else None,
            "expired": expires is None or expires <= now,
            "details": dict((k, annotations[ANNOTATION % k]) for k in DETAIL_KEYS if annotations.get(ANNOTATION % k))}


class Leases(object):
    """The few calls this module makes, each with a timeout and a message an engineer understands."""

    def __init__(self, api_client, namespace, name, timeout):
        from kubernetes.client import CoordinationV1Api

        self.api = CoordinationV1Api(api_client)
        self.namespace, self.name, self.timeout = namespace, name, timeout
        self.host = getattr(api_client.configuration, "host", "the API server")

    def _do(self, what, call, *args, **kwargs):
        try:
            answer = call(*args, _preload_content=False, _request_timeout=(min(10, self.timeout), self.timeout),
                          **kwargs)
            data = answer.data
            return json.loads(data) if data else {}
        except ApiException as exc:
            if exc.status in (404, 409, 412):
                raise
            detail = ""
            try:
                detail = json.loads(exc.body or "{}").get("message") or ""
            except ValueError:
                detail = exc.reason or ""
            if exc.status in (401, 403):
                raise DiagnosisError("the credentials may not %s Lease %s/%s: %s (HTTP %s from %s). The runbook's "
                                     "role needs get, create, update and delete on leases there." % (
                                         what, self.namespace, self.name, detail, exc.status, self.host))
            raise DiagnosisError("the Kubernetes API at %s refused to %s Lease %s/%s: HTTP %s: %s" % (
                self.host, what, self.namespace, self.name, exc.status, detail))
        except DiagnosisError:
            raise
        except Exception as exc:  # connection refused, timeouts: urllib3's errors
            raise DiagnosisError("cannot %s Lease %s/%s at %s: %s" % (what, self.namespace, self.name, self.host,
                                                                        exc))

    def read(self):
        try:
            return self._do("read", self.api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DiagnosisError("reading Lease %s/%s: HTTP %s" % (self.namespace, self.name, exc.status))

    def create(self, body):
        return self._do("create", self.api.create_namespaced_lease, self.namespace, body)

    def replace(self, body):
        return self._do("update", self.api.replace_namespaced_lease, self.name, self.namespace, body)

    def delete(self, uid, resource_version):
        return self._do("delete", self.api.delete_namespaced_lease, self.name, self.namespace,
                        body={"preconditions": {"uid": uid, "resourceVersion": resource_version}})


def desired(params, now, existing=None, renew_only=False):
    """The Lease this run writes: a new one, a takeover of ``existing``, or ``existing`` renewed."""
    annotations = dict(((existing or {}).get("metadata") or {}).get("annotations") or {})
    for key in DETAIL_KEYS:
        annotations.pop(ANNOTATION % key, None)
    for key, value in sorted((params.get("details") or {}).items()):
        if key in DETAIL_KEYS and value not in (None, ""):
            annotations[ANNOTATION % key] = "%s" % value
    metadata = {"name": params["name"], "namespace": params["namespace"], "annotations": annotations,
                "labels": {"app.kubernetes.io/managed-by": "saasodoo-runbooks"}}
    spec = {"holderIdentity": params["holder"], "leaseDurationSeconds": params["duration_seconds"],
            "acquireTime": micro_time(now), "renewTime": micro_time(now)}
    if existing:
        metadata["resourceVersion"] = existing["metadata"]["resourceVersion"]
        metadata["labels"] = dict((existing["metadata"].get("labels") or {}), **metadata["labels"])
        old = existing.get("spec") or {}
        if renew_only:
            spec["acquireTime"] = old.get("acquireTime") or spec["acquireTime"]
        spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + (0 if renew_only else 1)
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


def shape(lease):
    if not lease:
        return None
    meta = lease.get("metadata") or {}
    return {"kind": "Lease", "metadata": {k: meta.get(k) for k in ("name", "namespace", "annotations", "resourceVersion")},
            "spec": lease.get("spec")}


def run(params, check_mode, leases, now=None):
    """The module's result for state acquired or released (leases: a Leases or a stand-in with its methods)."""
    now = now or datetime.now(timezone.utc)
    me = params["holder"]
    result = {"changed": False, "acquired": False, "could_acquire": False, "held_by": None, "took_over": None,
              "lease": None}
    for _attempt in range(3):       # a lost race re-reads: at most twice
        lease = leases.read()
        current = holder_of(lease, now)
        result["lease"] = shape(lease)
        if params["state"] == "released":
            if lease and current and current["holder"] == me:
                if not check_mode:
                    try:
                        leases.delete(lease["metadata"]["uid"], lease["metadata"]["resourceVersion"])
                    except ApiException as exc:
                        if exc.status in (404, 409):
                            continue    # changed since we read it: look again
                        raise
                    result["lease"] = None
                result["changed"] = True
            return result
        mine = bool(current and current["holder"] == me)
        free = current is None or current["expired"]
        result["could_acquire"] = mine or free
        if not (mine or free):
            result["held_by"] = current
            return result
        if check_mode:
            return result
        body = desired(params, now, lease, renew_only=mine)
        try:
            written = leases.replace(body) if lease else leases.create(body)
        except ApiException as exc:
            if exc.status in (409, 404):
                continue        # another run wrote first (or deleted it): read again
            raise
        result.update(changed=True, acquired=True, lease=shape(written),
                      took_over=current if (current and not mine) else None)
        return result
    raise DiagnosisError("Lease %s/%s kept changing while this run tried to %s it; another run is racing for it" % (
        params["namespace"], params["name"], "release" if params["state"] == "released" else "take"))


def main():
    argument_spec = dict(K8S_COMMON_ARGS)
    argument_spec.update(
        name=dict(type="str", required=True),
        namespace=dict(type="str", required=True),
        holder=dict(type="str", required=True),
        state=dict(type="str", choices=["acquired", "released"], default="acquired"),
        duration_seconds=dict(type="int", default=900),
        details=dict(type="dict", default={}),
        request_timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    params = module.params
    if params["duration_seconds"] < 1 or params["request_timeout"] < 1 or not params["holder"].strip():
        module.fail_json(msg="saasodoo_lease: duration_seconds and request_timeout must be 1 or more, holder not empty")
    try:
        leases = Leases(client(params), params["namespace"], params["name"], params["request_timeout"])
        result = run(params, module.check_mode, leases)
    except DiagnosisError as e:
        module.fail_json(msg="saasodoo_lease: %s" % e)
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message; the traceback with -vvv
        module.fail_json(msg="saasodoo_lease failed unexpectedly (please report it): %s: %s" % (type(e).__name__, e),
                         exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
