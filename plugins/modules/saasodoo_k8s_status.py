#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Merge fields and conditions into the status subresource of a Kubernetes object."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_k8s_status
short_description: Set fields and conditions in the status subresource of a Kubernetes object
description:
  - Merges O(status) into the C(status) subresource of an existing object, the way a controller (or
    C(cmctl renew)) does. M(kubernetes.core.k8s) writes the main resource only, where the API server
    ignores C(status) when the status subresource is enabled.
  - Conditions are merged by C(type), like cert-manager's C(SetCertificateCondition); a condition whose
    given fields already match is left alone. C(lastTransitionTime) is set to now when a condition is new
    or its C(status) changes, and kept otherwise. C(observedGeneration) defaults to the object's
    C(metadata.generation).
  - Optimistic locking. The patch carries the C(resourceVersion) that was read, so a change made in
    between by a controller is never overwritten; on a conflict the module reads again and merges again
    (up to O(conflict_retries) times).
  - Idempotent; check mode predicts the merged status and changes nothing; diff mode returns the status
    before and after.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  api_version:
    description: C(apiVersion) of the object, e.g. C(cert-manager.io/v1).
    type: str
    required: true
  kind:
    description: Kind of the object, e.g. C(Certificate).
    type: str
    required: true
  name:
    description: Name of the object.
    type: str
    required: true
  namespace:
    description: Namespace of a namespaced object; leave out for a cluster-scoped one.
    type: str
  status:
    description:
      - Fields to merge into the status. C(conditions) is a list of conditions merged by C(type); every
        other key replaces the value it names.
    type: dict
    required: true
  conflict_retries:
    description: How many times to read and merge again when the object changed in between (HTTP 409).
    type: int
    default: 5
extends_documentation_fragment:
  - saasodoo_k8s
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
requirements:
  - kubernetes (Python library)
notes:
  - The object must exist and its kind must have the status subresource enabled.
seealso:
  - module: kubernetes.core.k8s
"""

EXAMPLES = r"""
- name: Trigger the re-issuance of a Certificate, as cmctl renew does
  saasodoo_k8s_status:
    api_version: cert-manager.io/v1
    kind: Certificate
    name: saasodoo-platform-tls
    namespace: saasodoo-system
    status:
      conditions:
        - type: Issuing
          status: "True"
          reason: ManuallyTriggered
          message: Certificate re-issuance manually triggered

- name: Mark an Issuer Ready (a controller's job; useful for a test bed without one)
  saasodoo_k8s_status:
    api_version: cert-manager.io/v1
    kind: Issuer
    name: saasodoo-ca
    namespace: saasodoo-system
    status:
      conditions:
        - {type: Ready, status: "True", reason: KeyPairVerified, message: Signing CA verified}
"""

RETURN = r"""
status:
  description: The status of the object after the call (in check mode, the status it would have).
  returned: success
  type: dict
  sample:
    conditions:
      - type: Issuing
        status: "True"
        reason: ManuallyTriggered
        message: Certificate re-issuance manually triggered
        observedGeneration: 1
        lastTransitionTime: "2026-01-01T00:00:00Z"
    revision: 1
previous_status:
  description: The status of the object before the call.
  returned: success
  type: dict
resource_version:
  description: C(metadata.resourceVersion) of the object after the call.
  returned: success
  type: str
diff:
  description: The status before and after, when diff mode is on.
  returned: changed and diff mode
  type: dict
"""

import copy
import datetime

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.saasodoo_findings import DiagnosisError
from ansible.module_utils.saasodoo_k8s import HAS_KUBERNETES, K8S_COMMON_ARGS, KUBERNETES_IMPORT_ERROR, client

try:
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ConflictError, DynamicApiError, NotFoundError, ResourceNotFoundError
except ImportError:  # reported by main() through HAS_KUBERNETES
    pass


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(current, desired, now=None):
    """Return the merged condition list and whether anything changed."""
    now = now or _now()
    merged = [copy.deepcopy(c) for c in (current or [])]
    changed = False
    for want in desired:
        have = next((c for c in merged if c.get("type") == want.get("type")), None)
        if have is None:
            new = dict(want)
            new.setdefault("lastTransitionTime", now)
            merged.append(new)
            changed = True
            continue
        if all(have.get(k) == v for k, v in want.items()):
            continue
        if have.get("status") != want.get("status") and "lastTransitionTime" not in want:
            have["lastTransitionTime"] = now
        have.update(want)
        changed = True
    return merged, changed


def merge_status(current, desired, generation=None, now=None):
    """Return the merged status and whether anything changed."""
    desired = copy.deepcopy(desired)
    for cond in desired.get("conditions") or []:
        if generation is not None:
            cond.setdefault("observedGeneration", generation)
    merged = copy.deepcopy(current or {})
    changed = False
    for key, value in desired.items():
        if key == "conditions":
            merged[key], cond_changed = merge_conditions(merged.get(key), value, now)
            changed = changed or cond_changed
        elif merged.get(key) != value:
            merged[key] = value
            changed = True
    return merged, changed


class StatusError(Exception):
    """A failure with a message for the engineer."""


def _describe(params):
    where = " in namespace %s" % params["namespace"] if params.get("namespace") else ""
    return "%s %s%s" % (params["kind"], params["name"], where)


def set_status(api_client, params, check_mode):
    dyn = DynamicClient(api_client)
    try:
        resource = dyn.resources.get(api_version=params["api_version"], kind=params["kind"])
    except ResourceNotFoundError:
        raise StatusError("the API server does not serve %s %s (is its CRD installed?)"
                          % (params["api_version"], params["kind"]))
    try:
        status_resource = resource.subresources["status"]
    except (KeyError, AttributeError, TypeError):
        raise StatusError("%s %s has no status subresource" % (params["api_version"], params["kind"]))

    attempts = max(0, params["conflict_retries"]) + 1
    for attempt in range(attempts):
        try:
            obj = resource.get(name=params["name"], namespace=params["namespace"]).to_dict()
        except NotFoundError:
            raise StatusError("%s not found" % _describe(params))
        except DynamicApiError as exc:
            raise StatusError("cannot read %s: %s" % (_describe(params), exc.summary()))
        before = obj.get("status") or {}
        merged, changed = merge_status(before, params["status"], obj["metadata"].get("generation"))
        rv = obj["metadata"].get("resourceVersion")
        if not changed or check_mode:
            return changed, before, merged, rv
        try:
            result = status_resource.patch(
                body={"metadata": {"resourceVersion": rv}, "status": merged},
                name=params["name"], namespace=params["namespace"],
                content_type="application/merge-patch+json",
            ).to_dict()
            return True, before, result.get("status") or merged, result["metadata"].get("resourceVersion")
        except ConflictError:
            if attempt + 1 == attempts:
                raise StatusError("%s kept changing while its status was being patched (%d conflicts); try again"
                                  % (_describe(params), attempts))
        except DynamicApiError as exc:
            raise StatusError("cannot patch the status of %s: %s" % (_describe(params), exc.summary()))
    raise StatusError("unreachable")  # pragma: no cover


def main():
    argument_spec = dict(
        api_version=dict(type="str", required=True),
        kind=dict(type="str", required=True),
        name=dict(type="str", required=True),
        namespace=dict(type="str"),
        status=dict(type="dict", required=True),
        conflict_retries=dict(type="int", default=5),
    )
    argument_spec.update(copy.deepcopy(K8S_COMMON_ARGS))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    try:
        changed, before, after, rv = set_status(client(module.params), module.params, module.check_mode)
    except (StatusError, DiagnosisError) as exc:
        module.fail_json(msg="saasodoo_k8s_status: %s" % exc)
    result = dict(changed=changed, status=after, previous_status=before, resource_version=rv)
    if changed and module._diff:
        result["diff"] = {"before": {"status": before}, "after": {"status": after}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
