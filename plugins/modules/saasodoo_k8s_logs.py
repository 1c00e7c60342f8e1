#!/usr/bin/python
# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks: the logs of many containers in one task (read-only).

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_k8s_logs
short_description: Read the logs of many pods' containers in one task (read-only)
description:
  - Reads each of O(reads) through the Kubernetes API (C(pods/log)), as M(kubernetes.core.k8s_log) would, and
    returns one result per read, in order, shaped like the C(results) of a looped M(kubernetes.core.k8s_log)
    task whose failures are ignored - C(log) and C(log_lines) when the log was read, C(failed) and C(msg) when it
    could not be (a pod without a reachable kubelet, a container that never ran, no previous instance).
  - One module run and one client for every log, the reads made in parallel, instead of one
    M(kubernetes.core.k8s_log) task per container, each of which starts Python and imports the Kubernetes
    client again.
  - A log that cannot be read is an answer, not a failure of the task; the task fails only on bad input or
    when the cluster cannot be reached with the credentials given.
  - Never changes anything, so check mode runs it as is. The credentials need C(get) on C(pods/log).
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  reads:
    description: The logs to read, answered in the same order.
    type: list
    elements: dict
    required: true
    suboptions:
      namespace:
        description: The pod's namespace.
        type: str
        required: true
      name:
        description: The pod's name.
        type: str
        required: true
      container:
        description: The container; needed when the pod has more than one.
        type: str
      previous:
        description: The log of the container's previous instance (the one that crashed).
        type: bool
        default: false
      since_seconds:
        description: Only lines newer than this many seconds.
        type: int
      tail_lines:
        description: Only the last lines, this many.
        type: int
      item:
        description: Any value, returned as the result's C(item); without it, the read itself.
        type: raw
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
  - module: kubernetes.core.k8s_log
"""

EXAMPLES = r"""
- name: AUDIT | Read the last 50 lines of each backend pod's previous container
  saasodoo_k8s_logs:
    reads: "{{ pods | map('community.general.dict_kv', 'name') | map('combine', {'namespace': 'saasodoo-system',
                                                                            'previous': true, 'tail_lines': 50}) }}"
  register: __logs
  no_log: true  # raw log lines may hold secrets
"""

RETURN = r"""
results:
  description: One entry per read, in the order of O(reads).
  returned: success
  type: list
  elements: dict
  contains:
    log:
      description: The log, when it was read.
      type: str
    log_lines:
      description: The log split on newlines (as M(kubernetes.core.k8s_log) returns it), when it was read.
      type: list
      elements: str
    failed:
      description: Whether the log could not be read.
      type: bool
    msg:
      description: Why the log could not be read (the API server's own message).
      type: str
    item:
      description: The read's C(item); without one, the read's options that were set.
      type: raw
api_calls:
  description: How many requests were sent to the API server.
  returned: success
  type: int
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
    ApiException,
    _api_message,
    client,
)

try:
    import urllib3
    from kubernetes.client import CoreV1Api
except ImportError:  # main() reports it (HAS_KUBERNETES)
    pass

READ_FIELDS = ("namespace", "name", "container", "previous", "since_seconds", "tail_lines")
MAX_THREADS = 8


def read_one(api, read, counter, timeout):
    asked = dict((k, read[k]) for k in READ_FIELDS if read.get(k) not in (None, False))
    out = {"item": read["item"] if read.get("item") is not None else asked}
    what = "pod %s/%s%s" % (read["namespace"], read["name"],
                            " container %s" % read["container"] if read.get("container") else "")
    kwargs = dict((k, read[k]) for k in ("container", "since_seconds", "tail_lines") if read.get(k) is not None)
    if read.get("previous"):
        kwargs["previous"] = True
    counter.add("pods/log")
    try:
        response = api.read_namespaced_pod_log(read["name"], read["namespace"], _preload_content=False,
                                               _request_timeout=(min(10, timeout), timeout), **kwargs)
        text = response.data.decode("utf-8", "replace")
    except ApiException as exc:
        out.update(failed=True, msg="cannot read the log of %s: %s (HTTP %s)" % (
            what, _api_message(exc).strip(), getattr(exc, "status", "?")))
        return out
    except (urllib3.exceptions.HTTPError, IOError, OSError) as exc:
        out.update(failed=True, msg="cannot read the log of %s: %s" % (what, exc))
        return out
    out.update(failed=False, log=text, log_lines=text.split("\n"))
    return out


def read(params, api_client=None):
    api = CoreV1Api(api_client or client(params))
    counter = ApiCallCounter()
    reads = params["reads"]
    threads = max(1, min(MAX_THREADS, len(reads)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(lambda r: read_one(api, r, counter, params["request_timeout"]), reads))
    return {"changed": False, "results": results, "api_calls": counter.calls}


def main():
    argument_spec = dict(K8S_COMMON_ARGS)
    argument_spec.update(
        reads=dict(type="list", elements="dict", required=True, options=dict(
            namespace=dict(type="str", required=True),
            name=dict(type="str", required=True),
            container=dict(type="str"),
            previous=dict(type="bool", default=False),
            since_seconds=dict(type="int"),
            tail_lines=dict(type="int"),
            item=dict(type="raw"),
        )),
        request_timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    if module.params["request_timeout"] < 1:
        module.fail_json(msg="saasodoo_k8s_logs: request_timeout must be 1 or more")
    error, extra = None, {}
    try:
        result = read(module.params)
    except DiagnosisError as e:
        error = "saasodoo_k8s_logs: %s" % e
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message; the traceback with -vvv
        error = "saasodoo_k8s_logs failed unexpectedly (please report it): %s: %s" % (type(e).__name__, e)
        extra = {"exception": traceback.format_exc()}
    if error is not None:
        module.fail_json(msg=error, **extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
