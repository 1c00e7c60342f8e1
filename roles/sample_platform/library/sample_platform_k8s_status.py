#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Patch the status subresource of a Kubernetes object (kubernetes.core.k8s cannot)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sample_platform_k8s_status
short_description: Set fields and conditions in the status subresource of a Kubernetes object
description:
  - Merges O(status) into the C(status) subresource of an existing object, the way a
    controller would (kubernetes.core.k8s writes the main resource only, where the API
    server ignores C(status) when the status subresource is enabled).
  - Idempotent. Conditions are matched by C(type); a condition whose given fields already
    match is left alone, one that changes gets a new C(lastTransitionTime) when it has none.
  - Reads the kubeconfig like kubernetes.core does (O(kubeconfig), E(K8S_AUTH_KUBECONFIG),
    E(KUBECONFIG), then the in-cluster or default configuration).
options:
  api_version:
    description: apiVersion of the object.
    type: str
    required: true
  kind:
    description: Kind of the object.
    type: str
    required: true
  name:
    description: Name of the object.
    type: str
    required: true
  namespace:
    description: Namespace of a namespaced object.
    type: str
  status:
    description: Fields to merge into the status; C(conditions) is a list merged by C(type).
    type: dict
    required: true
  kubeconfig:
    description: Path to a kubeconfig file.
    type: path
  context:
    description: Context of the kubeconfig to use.
    type: str
author:
  - SaaSOdoo Runbooks
"""

EXAMPLES = r"""
- name: Mark a Certificate Ready
  sample_platform_k8s_status:
    api_version: cert-manager.io/v1
    kind: Certificate
    name: saasodoo-platform-tls
    namespace: saasodoo-system
    status:
      notAfter: "2026-03-01T00:00:00Z"
      conditions:
        - {type: Ready, status: "True", reason: Ready, message: Certificate is up to date}
"""

RETURN = r"""
status:
  description: The status of the object after the call.
  returned: success
  type: dict
"""

import copy
import datetime
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from kubernetes import config as k8s_config
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError

    HAS_KUBERNETES = True
except ImportError:
    HAS_KUBERNETES = False


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_conditions(current, desired):
    """Return the merged condition list and whether anything changed."""
    merged = [copy.deepcopy(c) for c in (current or [])]
    changed = False
    for want in desired:
        have = next((c for c in merged if c.get("type") == want.get("type")), None)
        if have is None:
            new = dict(want)
            new.setdefault("lastTransitionTime", _now())
            merged.append(new)
            changed = True
            continue
        if all(have.get(k) == v for k, v in want.items()):
            continue
        if have.get("status") != want.get("status") and "lastTransitionTime" not in want:
            have["lastTransitionTime"] = _now()
        have.update(want)
        changed = True
    return merged, changed


def _merge_status(current, desired):
    merged = copy.deepcopy(current or {})
    changed = False
    for key, value in desired.items():
        if key == "conditions":
            merged[key], cond_changed = _merge_conditions(merged.get(key), value)
            changed = changed or cond_changed
        elif merged.get(key) != value:
            merged[key] = value
            changed = True
    return merged, changed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            api_version=dict(type="str", required=True),
            kind=dict(type="str", required=True),
            name=dict(type="str", required=True),
            namespace=dict(type="str"),
            status=dict(type="dict", required=True),
            kubeconfig=dict(type="path"),
            context=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"))

    params = module.params
    kubeconfig = (
        params["kubeconfig"]
        or os.environ.get("K8S_AUTH_KUBECONFIG")
        or os.environ.get("KUBECONFIG")
    )
    try:
        if kubeconfig:
            api_client = k8s_config.new_client_from_config(
                config_file=os.path.expanduser(kubeconfig.split(os.pathsep)[0]),
                context=params["context"],
            )
        else:
            try:
                k8s_config.load_incluster_config()
            except k8s_config.ConfigException:
                k8s_config.load_kube_config(context=params["context"])
            from kubernetes.client import ApiClient

            api_client = ApiClient()
        client = DynamicClient(api_client)
        resource = client.resources.get(api_version=params["api_version"], kind=params["kind"])
        obj = resource.get(name=params["name"], namespace=params["namespace"]).to_dict()
    except NotFoundError:
        module.fail_json(
            msg="%s %s not found in namespace %s"
            % (params["kind"], params["name"], params["namespace"])
        )
    except Exception as e:  # pylint: disable=broad-except
        module.fail_json(msg="Failed to read %s %s: %s" % (params["kind"], params["name"], e))

    desired = copy.deepcopy(params["status"])
    for cond in desired.get("conditions") or []:
        cond.setdefault("observedGeneration", obj["metadata"].get("generation"))
    merged, changed = _merge_status(obj.get("status"), desired)

    if changed and not module.check_mode:
        try:
            status_resource = resource.subresources["status"]
            result = status_resource.patch(
                body={"status": merged},
                name=params["name"],
                namespace=params["namespace"],
                content_type="application/merge-patch+json",
            ).to_dict()
            merged = result.get("status") or merged
        except (KeyError, DynamicApiError) as e:
            module.fail_json(
                msg="Failed to patch the status of %s %s: %s" % (params["kind"], params["name"], e)
            )

    module.exit_json(changed=changed, status=merged)


if __name__ == "__main__":
    main()
