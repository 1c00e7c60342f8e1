#!/usr/bin/python
# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks: several cluster-wide lists of Kubernetes objects in one task (read-only).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_k8s_lists
short_description: List several kinds of Kubernetes objects cluster-wide in one task (read-only)
description:
  - One cluster-wide list per kind in O(kinds), made in parallel in one module run, instead of one
    M(kubernetes.core.k8s_info) task per kind (each of which pays for starting Python and the client, several
    seconds on a busy controller).
  - Returns the objects as M(kubernetes.core.k8s_info) does (plain dicts, camelCase), with C(kind) filled in,
    paginated with O(page_size), under one key per kind. RV(api_calls) says how many requests were made.
  - ConfigMaps are returned with their keys only (every value replaced by null, C(binaryData) too) unless
    O(configmap_values=true), so that credentials kept in a ConfigMap never reach a log or a report. Secrets
    cannot be listed with this module.
  - Finished pods (C(Succeeded), C(Failed)) are left out unless O(finished_pods=true).
  - Never changes anything, so check mode runs it as is. The credentials need C(list) on those kinds
    cluster-wide.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  kinds:
    description: What to list.
    type: list
    elements: str
    required: true
    choices: [namespaces, pods, networkpolicies, resourcequotas, limitranges, configmaps, serviceaccounts,
              clusterroles, clusterrolebindings, roles, rolebindings]
  finished_pods:
    description: Also return pods that finished (phase C(Succeeded) or C(Failed)).
    type: bool
    default: false
  configmap_values:
    description: Return the values of ConfigMaps too (by default only their keys).
    type: bool
    default: false
  page_size:
    description: Objects per page of each list call (the API's C(limit)). C(0) disables pagination.
    type: int
    default: 500
  request_timeout:
    description: Seconds to wait for the API server to answer each read (connecting waits at most 10).
    type: int
    default: 30
extends_documentation_fragment:
  - saasodoo_k8s
attributes:
  check_mode:
    support: full
    description: Read-only; check mode returns the same result.
  diff_mode:
    support: none
    description: Changes nothing.
requirements:
  - python >= 3.8
  - kubernetes >= 24.2.0
seealso:
  - module: kubernetes.core.k8s_info
"""

EXAMPLES = r"""
- name: AUDIT | Read what tenant isolation and RBAC are made of
  saasodoo_k8s_lists:
    kinds: [namespaces, networkpolicies, pods, clusterrolebindings, clusterroles]
  register: __lists

- name: AUDIT | Count the pods
  ansible.builtin.debug:
    msg: "{{ __lists.pods | length }} pods in {{ __lists.namespaces | length }} namespaces"
"""

RETURN = r"""
namespaces:
  description: Every Namespace (when listed). Each kind asked for has its key, named as in O(kinds).
  returned: success, when listed
  type: list
  elements: dict
pods:
  description: Every pod of every namespace (when listed), finished ones only with O(finished_pods).
  returned: success, when listed
  type: list
  elements: dict
configmaps:
  description: Every ConfigMap (when listed), values replaced by null unless O(configmap_values).
  returned: success, when listed
  type: list
  elements: dict
api_calls:
  description: How many requests were sent to the API server (every page of every list).
  returned: success
  type: int
  sample: 5
"""

import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.saasodoo_findings import DiagnosisError
from ansible.module_utils.saasodoo_k8s_health import hide_env_values
from ansible.module_utils.saasodoo_k8s import (
    HAS_KUBERNETES,
    K8S_COMMON_ARGS,
    KUBERNETES_IMPORT_ERROR,
    ApiCallCounter,
    client,
    list_all,
)

try:
    from kubernetes.client import CoreV1Api, NetworkingV1Api, RbacAuthorizationV1Api
except ImportError:  # main() reports it (HAS_KUBERNETES)
    pass

# kind key -> (API class name, list method, selectors)
CALLS = {
    "namespaces": ("core", "list_namespace"),
    "pods": ("core", "list_pod_for_all_namespaces"),
    "networkpolicies": ("net", "list_network_policy_for_all_namespaces"),
    "resourcequotas": ("core", "list_resource_quota_for_all_namespaces"),
    "limitranges": ("core", "list_limit_range_for_all_namespaces"),
    "configmaps": ("core", "list_config_map_for_all_namespaces"),
    "serviceaccounts": ("core", "list_service_account_for_all_namespaces"),
    "clusterroles": ("rbac", "list_cluster_role"),
    "clusterrolebindings": ("rbac", "list_cluster_role_binding"),
    "roles": ("rbac", "list_role_for_all_namespaces"),
    "rolebindings": ("rbac", "list_role_binding_for_all_namespaces"),
}
FINISHED_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"


def keys_only(configmap):
    """A ConfigMap with every value (data and binaryData) replaced by None."""
    out = dict(configmap)
    for field in ("data", "binaryData"):
        if isinstance(out.get(field), dict):
            out[field] = dict((k, None) for k in out[field])
    return out


def read(params, api_client=None):
    api_client = api_client or client(params)
    apis = {"core": CoreV1Api(api_client), "net": NetworkingV1Api(api_client),
            "rbac": RbacAuthorizationV1Api(api_client)}
    counter = ApiCallCounter()
    kinds = [k for k in CALLS if k in params["kinds"]]
    with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
        futures = []
        for kind in kinds:
            api, method = CALLS[kind]
            selectors = {}
            if kind == "pods" and not params["finished_pods"]:
                selectors["field_selector"] = FINISHED_SELECTOR
            futures.append((kind, pool.submit(list_all, getattr(apis[api], method), counter=counter,
                                              page_size=params["page_size"], timeout=params["request_timeout"],
                                              what=kind, **selectors)))
        result = dict((kind, future.result()) for kind, future in futures)
    if "pods" in result:   # literal env values stay in the cluster (a password written into a pod spec)
        result["pods"] = [hide_env_values(p, kind="Pod") for p in result["pods"]]
    if "configmaps" in result and not params["configmap_values"]:
        result["configmaps"] = [keys_only(cm) for cm in result["configmaps"]]
    result.update(changed=False, api_calls=counter.calls)
    return result


def main():
    argument_spec = dict(K8S_COMMON_ARGS)
    argument_spec.update(
        kinds=dict(type="list", elements="str", choices=list(CALLS), required=True),
        finished_pods=dict(type="bool", default=False),
        configmap_values=dict(type="bool", default=False),
        page_size=dict(type="int", default=500),
        request_timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    if not module.params["kinds"]:
        module.fail_json(msg="saasodoo_k8s_lists: kinds must name at least one kind to list")
    if module.params["page_size"] < 0 or module.params["request_timeout"] < 1:
        module.fail_json(msg="saasodoo_k8s_lists: page_size must be 0 or more and request_timeout 1 or more")
    error, extra = None, {}
    try:
        result = read(module.params)
    except DiagnosisError as e:
        error = "saasodoo_k8s_lists: %s" % e
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message; the traceback with -vvv
        error = "saasodoo_k8s_lists failed unexpectedly (please report it): %s: %s" % (type(e).__name__, e)
        extra = {"exception": traceback.format_exc()}
    if error is not None:
        module.fail_json(msg=error, **extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
