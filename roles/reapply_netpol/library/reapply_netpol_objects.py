#!/usr/bin/python
# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks, role reapply_netpol: the objects tenant isolation is made of, in one task (read-only).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: reapply_netpol_objects
short_description: List Namespaces, NetworkPolicies, ResourceQuotas and LimitRanges cluster-wide in one task (read-only)
description:
  - One cluster-wide list per kind, made in parallel in one module run, instead of one
    C(kubernetes.core.k8s_info) task per kind (each of which pays for starting Python and the client).
  - Returns the objects as C(kubernetes.core.k8s_info) does (plain dicts, camelCase, C(kind) filled in),
    paginated with O(page_size). RV(api_calls) says how many requests were made.
  - Never changes anything, so check mode runs it as is.
  - The credentials need C(list) on those kinds cluster-wide.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  kinds:
    description: What to list.
    type: list
    elements: str
    choices: [namespaces, networkpolicies, resourcequotas, limitranges]
    default: [namespaces, networkpolicies, resourcequotas, limitranges]
  page_size:
    description: Objects per page of each list call (the API's C(limit)). C(0) disables pagination.
    type: int
    default: 500
  request_timeout:
    description: Seconds to wait for the API server to answer each read (connecting waits at most 10).
    type: int
    default: 30
  kubeconfig:
    description:
      - Path to a kubeconfig file. Falls back to E(K8S_AUTH_KUBECONFIG), then to E(KUBECONFIG) and
        C(~/.kube/config), then to the in-cluster service account.
    type: path
  context:
    description: The kubeconfig context to use. Falls back to E(K8S_AUTH_CONTEXT).
    type: str
  host:
    description: The Kubernetes API server URL. Falls back to E(K8S_AUTH_HOST).
    type: str
  api_key:
    description: A bearer token for the API server. Falls back to E(K8S_AUTH_API_KEY).
    type: str
  validate_certs:
    description: Whether to verify the API server's certificate. Falls back to E(K8S_AUTH_VERIFY_SSL).
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description: The CA certificate that signed the API server's. Falls back to E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ssl_ca_cert]
  client_cert:
    description: A client certificate to authenticate with. Falls back to E(K8S_AUTH_CERT_FILE).
    type: path
    aliases: [cert_file]
  client_key:
    description: The key of O(client_cert). Falls back to E(K8S_AUTH_KEY_FILE).
    type: path
    aliases: [key_file]
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
"""

EXAMPLES = r"""
- name: AUDIT | Read what tenant isolation is made of
  reapply_netpol_objects:
  register: __reapply_netpol_objects
"""

RETURN = r"""
namespaces:
  description: Every Namespace (when listed).
  returned: success
  type: list
  elements: dict
networkpolicies:
  description: Every NetworkPolicy of every namespace (when listed).
  returned: success
  type: list
  elements: dict
resourcequotas:
  description: Every ResourceQuota of every namespace (when listed).
  returned: success
  type: list
  elements: dict
limitranges:
  description: Every LimitRange of every namespace (when listed).
  returned: success
  type: list
  elements: dict
api_calls:
  description: How many requests were sent to the API server (every page of every list).
  returned: success
  type: int
  sample: 4
"""

import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.saasodoo_findings import DiagnosisError
from ansible.module_utils.saasodoo_k8s import (
    HAS_KUBERNETES,
    K8S_COMMON_ARGS,
    KUBERNETES_IMPORT_ERROR,
    ApiCallCounter,
    client,
    list_all,
)

try:
    from kubernetes.client import CoreV1Api, NetworkingV1Api
except ImportError:  # main() reports it (HAS_KUBERNETES)
    pass

KINDS = ("namespaces", "networkpolicies", "resourcequotas", "limitranges")


def list_calls(api_client):
    core = CoreV1Api(api_client)
    net = NetworkingV1Api(api_client)
    return {
        "namespaces": core.list_namespace,
        "networkpolicies": net.list_network_policy_for_all_namespaces,
        "resourcequotas": core.list_resource_quota_for_all_namespaces,
        "limitranges": core.list_limit_range_for_all_namespaces,
    }


def read(params):
    counter = ApiCallCounter()
    calls = list_calls(client(params))
    kinds = [k for k in KINDS if k in params["kinds"]]
    with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
        futures = [(kind, pool.submit(list_all, calls[kind], counter=counter, page_size=params["page_size"],
                                      timeout=params["request_timeout"], what=kind)) for kind in kinds]
        result = dict((kind, future.result()) for kind, future in futures)
    result.update(changed=False, api_calls=counter.calls)
    return result


def main():
    argument_spec = dict(K8S_COMMON_ARGS)
    argument_spec.update(
        kinds=dict(type="list", elements="str", choices=list(KINDS), default=list(KINDS)),
        page_size=dict(type="int", default=500),
        request_timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    if module.params["page_size"] < 0 or module.params["request_timeout"] < 1:
        module.fail_json(msg="page_size must be 0 or more and request_timeout 1 or more")
    error, extra = None, {}
    try:
        result = read(module.params)
    except DiagnosisError as e:
        error = "%s" % e
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message; the traceback with -vvv
        error = "reapply_netpol_objects failed unexpectedly: %s: %s" % (type(e).__name__, e)
        extra = {"exception": traceback.format_exc()}
    if error is not None:
        module.fail_json(msg=error, **extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
