#!/usr/bin/python
# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks: many Kubernetes reads (any kind, named or listed) in one task, read-only.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_k8s_read
short_description: Make many Kubernetes reads - any kind, by name or by selector - in one task (read-only)
description:
  - Runs each of O(queries) as M(kubernetes.core.k8s_info) would run it (a kind and API version, optionally a
    namespace, a name, label and field selectors) and returns one result per query, in order, shaped like the
    C(results) of a looped M(kubernetes.core.k8s_info) task (C(resources), C(api_found), C(item)).
  - One module run, one client, the reads made in parallel. A runbook that needs the backend's Deployment, its
    pods, the database's StatefulSet, the events and the NetworkPolicies makes one task instead of one
    M(kubernetes.core.k8s_info) task per read, each of which starts Python and imports the Kubernetes client
    again (about a second of CPU each).
  - Each distinct API version is looked up once (C(/api/v1), C(/apis/<group>/<version>)) to find the kind's
    resource name and scope; an API version or kind the cluster does not serve gives C(api_found=false) and no
    resources, as M(kubernetes.core.k8s_info) does. A named object that does not exist gives no resources.
    Lists are paginated with O(page_size).
  - The literal C(env) values of pods' and workloads' containers are always replaced by null inside the module
    (names and C(valueFrom) kept), except the names a query lists in C(env_values) - a password written into a
    pod spec never travels with a health read into the job's events. With C(keys_only) on a query, the values
    of Secrets and ConfigMaps (C(data), C(stringData), C(binaryData)) are replaced by null too, so a runbook
    that only needs key names never receives a secret.
  - Never changes anything, so check mode runs it as is. The credentials need C(get) (named reads) or C(list)
    on what is read.
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  queries:
    description: The reads to make, answered in the same order.
    type: list
    elements: dict
    required: true
    suboptions:
      kind:
        description: The object kind, e.g. C(Deployment), C(Pod), C(Certificate).
        type: str
        required: true
      api_version:
        description:
          - The API group and version, e.g. C(apps/v1), C(cert-manager.io/v1).
          - Without it, the version Kubernetes serves the kind in for the workload, batch, networking,
            autoscaling, policy and RBAC kinds (C(Deployment) is C(apps/v1), C(NetworkPolicy) is
            C(networking.k8s.io/v1), ...), else C(v1).
        type: str
      namespace:
        description:
          - The namespace to read in. Without it a namespaced kind is listed in every namespace (a named read
            of a namespaced kind needs it). Ignored for cluster-scoped kinds.
        type: str
      name:
        description: The object's name; without it, every object the selectors match is listed.
        type: str
      label_selectors:
        description: Label selectors, ANDed (C(app=backend), C(tier in (web,api))).
        type: list
        elements: str
        default: []
      field_selectors:
        description: Field selectors, ANDed (C(status.phase=Running)).
        type: list
        elements: str
        default: []
      keys_only:
        description:
          - For Secrets and ConfigMaps, return the keys with every value replaced by null.
        type: bool
        default: false
      env_values:
        description:
          - For Pods and workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob), every
            container's literal C(env) value is replaced by null (names and C(valueFrom) kept) - except the
            env names listed here, whose values the runbook needs (a host, a port). Never list a secret's name.
        type: list
        elements: str
        default: []
      owned_by:
        description:
          - For C(kind=Pod) - the workload (a Deployment, StatefulSet or DaemonSet as read, or just its C(kind),
            C(metadata) C(name), C(namespace) and C(uid), and C(spec.selector)) whose pods to list. The pods are
            selected by the workload's whole selector (C(matchLabels) and C(matchExpressions)) and kept only when
            the workload controls them (ownerReferences; a Deployment's through its ReplicaSets), so another
            workload whose labels overlap is never counted as this one's. An empty selector selects nothing.
          - The namespace defaults to the workload's; it cannot be combined with O(queries[].name).
        type: dict
      item:
        description:
          - Any value, returned as the result's C(item) (what a loop's C(item) would have been).
          - Without it, the result's C(item) is the query itself (its options that were set), so that
            C(results | selectattr('item.kind', 'equalto', 'Pod')) works as after a looped
            M(kubernetes.core.k8s_info).
        type: raw
  wait_for:
    description:
      - Read again, every O(wait_interval) seconds inside this one module run, until the answer is what is
        waited for; at O(wait_timeout) the task fails with the last answer in RV(results) and says what was
        still missing.
      - C(rollout) - every query finds its object(s), and every Deployment, StatefulSet or DaemonSet found has
        completed its rollout (as C(kubectl rollout status) judges; a rollout past its progress deadline fails
        at once).
      - C(absent) - no query finds anything (pods gone after a scale to zero, a namespace deleted).
      - C(none) - read once (the default).
    type: str
    choices: [none, rollout, absent]
    default: none
  wait_timeout:
    description: Seconds O(wait_for) may wait.
    type: int
    default: 120
  wait_interval:
    description: Seconds between two reads while waiting.
    type: float
    default: 1.0
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
  - module: saasodoo_k8s_lists
"""

EXAMPLES = r"""
- name: AUDIT | Read the backend, its pods and the Secrets it references (key names only)
  saasodoo_k8s_read:
    queries:
      - {kind: Deployment, api_version: apps/v1, namespace: saasodoo-system, name: saasodoo-backend}
      - {kind: Pod, namespace: saasodoo-system, label_selectors: ["app.kubernetes.io/name=backend"]}
      - {kind: Secret, namespace: saasodoo-system, name: saasodoo-backend-secrets, keys_only: true}
  register: __reads

- name: AUDIT | Name what was read
  ansible.builtin.debug:
    msg: "{{ __reads.results | map(attribute='resources') | map('length') | list }} objects per read"
"""

RETURN = r"""
results:
  description: One entry per query, in the order of O(queries).
  returned: success
  type: list
  elements: dict
  contains:
    resources:
      description: The objects read (plain dicts, camelCase, as M(kubernetes.core.k8s_info) returns them).
      type: list
      elements: dict
    api_found:
      description: Whether the cluster serves the query's API version and kind.
      type: bool
    item:
      description: The query's C(item), unchanged; without one, the query's options that were set.
      type: raw
    query:
      description: The query as made (kind, api_version, namespace, name, selectors; owned_by as C(Kind/namespace/name)).
      type: dict
waited:
  description: Seconds spent waiting (O(wait_for)).
  returned: success and when the wait timed out
  type: float
api_calls:
  description: How many requests were sent to the API server (discovery, every page of every list).
  returned: success
  type: int
  sample: 6
"""

import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.saasodoo_findings import DiagnosisError
from ansible.module_utils.saasodoo_k8s_health import (
    hide_env_values,
    owned_pods,
    rollout_status,
    selector_strings,
)
from ansible.module_utils.saasodoo_k8s import (
    HAS_KUBERNETES,
    K8S_COMMON_ARGS,
    KUBERNETES_IMPORT_ERROR,
    ApiCallCounter,
    ApiException,
    _call,
    client,
    list_all,
)

try:
    from kubernetes.dynamic import DynamicClient
except ImportError:  # main() reports it (HAS_KUBERNETES)
    pass

VALUE_FIELDS = ("data", "stringData", "binaryData")
# The API version of kinds outside the core group, for queries that name none.
DEFAULT_API_VERSIONS = dict(
    [(k, "apps/v1") for k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ControllerRevision")]
    + [(k, "batch/v1") for k in ("Job", "CronJob")]
    + [(k, "networking.k8s.io/v1") for k in ("NetworkPolicy", "Ingress", "IngressClass")]
    + [("HorizontalPodAutoscaler", "autoscaling/v2"), ("PodDisruptionBudget", "policy/v1"),
       ("Lease", "coordination.k8s.io/v1"), ("StorageClass", "storage.k8s.io/v1")]
    + [(k, "rbac.authorization.k8s.io/v1") for k in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")])
QUERY_FIELDS = ("kind", "api_version", "namespace", "name", "label_selectors", "field_selectors", "keys_only",
                "env_values")
MAX_THREADS = 8


class _NoDiscovery(object):
    """DynamicClient's discoverer, unused: each API version is looked up once, by this module."""

    def __init__(self, client, cache_file=None):
        pass


class _Get(object):
    """One GET of a path, callable as list_all and _call expect of a kubernetes client method."""

    def __init__(self, dyn, path):
        self.api_client = dyn.client        # _api_host names the server in error messages from this
        self.dyn, self.path, self.status = dyn, path, None
        self.__name__ = path

    def get(self, _preload_content=False, _request_timeout=None, **kwargs):
        try:
            return self.dyn.request("get", self.path, serialize=False, _request_timeout=_request_timeout, **kwargs)
        except ApiException as exc:
            self.status = getattr(exc, "status", None)
            raise


def keys_only(obj):
    """A Secret or ConfigMap with every value replaced by None; a pod or a workload with every
    container's literal env value replaced by None (names and valueFrom kept). The input is not
    modified."""
    out = dict(obj)
    for field in VALUE_FIELDS:
        if isinstance(out.get(field), dict):
            out[field] = dict((k, None) for k in out[field])
    return hide_env_values(out)


def group_path(api_version):
    return "/api/v1" if api_version == "v1" else "/apis/%s" % api_version


def discover(dyn, api_version, counter, timeout):
    """{kind: (resource name, namespaced)} for one API version; {} when the cluster does not serve it."""
    getter = _Get(dyn, group_path(api_version))
    counter.add("discovery")
    try:
        answer = _call(getter.get, "the resources of %s" % api_version, timeout, {})
    except DiagnosisError:
        if getter.status == 404:
            return {}
        raise
    return dict((r["kind"], (r["name"], bool(r.get("namespaced"))))
                for r in answer.get("resources") or [] if "/" not in r.get("name", "/"))


def owner_ref(owner):
    meta = (owner or {}).get("metadata") or {}
    return "%s/%s/%s" % ((owner or {}).get("kind"), meta.get("namespace"), meta.get("name"))


def read_one(dyn, query, kinds, counter, page_size, timeout):
    owner = query.get("owned_by")
    if owner:
        query = dict(query, namespace=query.get("namespace") or (owner.get("metadata") or {}).get("namespace"),
                     label_selectors=list(query.get("label_selectors") or [])
                     + selector_strings((owner.get("spec") or {}).get("selector")))
    found = query["kind"] in kinds
    asked = dict((k, query[k]) for k in QUERY_FIELDS if query.get(k) not in (None, [], False))
    if owner:
        asked["owned_by"] = owner_ref(owner)
    out = {"resources": [], "api_found": found, "query": asked,
           "item": query["item"] if query.get("item") is not None else asked}
    if not found:
        return out
    if owner and not selector_strings((owner.get("spec") or {}).get("selector")):
        return out      # an empty selector selects nothing (listing would return every pod)
    plural, namespaced = kinds[query["kind"]]
    if namespaced and query.get("name") and not query.get("namespace"):
        raise DiagnosisError("the read of %s %s needs a namespace: %s is namespaced" % (
            query["kind"], query["name"], query["kind"]))
    path = group_path(query["api_version"])
    if namespaced and query.get("namespace"):
        path += "/namespaces/%s" % query["namespace"]
    path += "/%s" % plural
    what = "%s %s" % (query["kind"], query.get("name") or "objects")
    if query.get("name"):
        getter = _Get(dyn, path + "/%s" % query["name"])
        counter.add(plural)
        try:
            objects = [_call(getter.get, what, timeout, {})]
        except DiagnosisError:
            if getter.status == 404:
                return out
            raise
    else:
        selectors = {}
        if query.get("label_selectors"):
            selectors["label_selector"] = ",".join(query["label_selectors"])
        if query.get("field_selectors"):
            selectors["field_selector"] = ",".join(query["field_selectors"])
        objects = list_all(_Get(dyn, path).get, counter=counter, page_size=page_size, timeout=timeout,
                           what=plural, **selectors)
    for obj in objects:
        obj.setdefault("kind", query["kind"])
        obj.setdefault("apiVersion", query["api_version"])
    if query.get("keys_only"):
        objects = [keys_only(o) for o in objects]
    # Always: literal env values of pods and workloads stay in the cluster, except those asked for by name.
    objects = [hide_env_values(o, keep=query.get("env_values") or ()) for o in objects]
    if owner:
        objects = owned_pods(owner, objects)
    out["resources"] = objects
    return out


def check(queries):
    """The first problem with the queries, or None."""
    for i, q in enumerate(queries):
        if not q.get("kind"):
            return "query %d has no kind" % (i + 1)
        if q.get("name") and (q.get("label_selectors") or q.get("field_selectors")):
            return "query %d (%s %s) has both a name and selectors; give one or the other" % (
                i + 1, q["kind"], q["name"])
        if q.get("owned_by") is not None:
            owner = q["owned_by"]
            meta = owner.get("metadata") or {}
            if q["kind"] != "Pod" or q.get("name"):
                return "query %d: owned_by lists the pods of a workload (kind Pod, no name)" % (i + 1)
            if owner.get("kind") not in WORKLOAD_KINDS or not meta.get("name") or not meta.get("namespace"):
                return "query %d: owned_by needs a %s with metadata.name and metadata.namespace" % (
                    i + 1, ", ".join(WORKLOAD_KINDS))
    return None


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


class WaitTimedOut(DiagnosisError):
    """What was waited for did not happen in time; carries the last answer."""

    def __init__(self, message, result):
        super(WaitTimedOut, self).__init__(message)
        self.result = result


def missing(results, wait_for):
    """Why the answer is not yet what is waited for ('' when it is); a rollout past its deadline raises."""
    if wait_for == "absent":
        left = ["%s %s" % (o.get("kind"), (o.get("metadata") or {}).get("name")) for r in results for o in r["resources"]]
        return "still there: %s" % ", ".join(left[:10]) if left else ""
    for r in results:
        q = r["query"]
        if not r["resources"]:
            return "%s %s not found" % (q.get("kind"), q.get("name") or "objects")
        for obj in r["resources"]:
            if obj.get("kind") in WORKLOAD_KINDS:
                status = rollout_status(obj)
                ref = "%s/%s/%s" % (obj["kind"], (obj.get("metadata") or {}).get("namespace"),
                                    (obj.get("metadata") or {}).get("name"))
                if status.get("failed"):
                    raise WaitTimedOut("%s: %s" % (ref, status["message"]), {"results": results})
                if not status["complete"]:
                    return "%s: %s" % (ref, status["message"])
    return ""


def read(params, api_client=None, sleep=time.sleep, clock=time.monotonic):
    dyn = DynamicClient(api_client or client(params), discoverer=_NoDiscovery)
    counter = ApiCallCounter()
    timeout, page_size = params["request_timeout"], params["page_size"]
    queries = [dict(q, api_version=q.get("api_version") or DEFAULT_API_VERSIONS.get(q["kind"], "v1"))
               for q in params["queries"]]
    versions = sorted(set(q["api_version"] for q in queries))
    threads = max(1, min(MAX_THREADS, len(queries)))
    wait_for = params.get("wait_for") or "none"
    start = clock()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = dict(zip(versions, pool.map(lambda v: discover(dyn, v, counter, timeout), versions)))
        while True:
            results = list(pool.map(lambda q: read_one(dyn, q, found[q["api_version"]], counter, page_size, timeout),
                                    queries))
            if wait_for == "none":
                break
            try:
                left = missing(results, wait_for)
            except WaitTimedOut as exc:
                exc.result.update(waited=round(clock() - start, 1), api_calls=counter.calls)
                raise
            waited = clock() - start
            if not left:
                break
            if waited >= params["wait_timeout"]:
                raise WaitTimedOut("waited %ss for %s: %s" % (params["wait_timeout"], wait_for, left),
                                   {"results": results, "waited": round(waited, 1), "api_calls": counter.calls})
            sleep(max(0.1, min(params["wait_interval"], params["wait_timeout"] - waited)))
    out = {"changed": False, "results": results, "api_calls": counter.calls}
    if wait_for != "none":
        out["waited"] = round(clock() - start, 1)
    return out


def main():
    argument_spec = dict(K8S_COMMON_ARGS)
    argument_spec.update(
        queries=dict(type="list", elements="dict", required=True, options=dict(
            kind=dict(type="str", required=True),
            api_version=dict(type="str"),
            namespace=dict(type="str"),
            name=dict(type="str"),
            label_selectors=dict(type="list", elements="str", default=[]),
            field_selectors=dict(type="list", elements="str", default=[]),
            keys_only=dict(type="bool", default=False, no_log=False),
            env_values=dict(type="list", elements="str", default=[], no_log=False),
            owned_by=dict(type="dict"),
            item=dict(type="raw"),
        )),
        wait_for=dict(type="str", choices=["none", "rollout", "absent"], default="none"),
        wait_timeout=dict(type="int", default=120),
        wait_interval=dict(type="float", default=1.0),
        page_size=dict(type="int", default=500),
        request_timeout=dict(type="int", default=30),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_KUBERNETES:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=KUBERNETES_IMPORT_ERROR)
    problem = check(module.params["queries"])
    if module.params["page_size"] < 0 or module.params["request_timeout"] < 1:
        problem = "page_size must be 0 or more and request_timeout 1 or more"
    if problem:
        module.fail_json(msg="saasodoo_k8s_read: %s" % problem)
    if module.params["wait_timeout"] < 0 or module.params["wait_interval"] <= 0:
        module.fail_json(msg="saasodoo_k8s_read: wait_timeout must be 0 or more and wait_interval above 0")
    error, extra = None, {}
    try:
        result = read(module.params)
    except WaitTimedOut as e:
        error, extra = "saasodoo_k8s_read: %s" % e, e.result
    except DiagnosisError as e:
        error = "saasodoo_k8s_read: %s" % e
    except Exception as e:  # pylint: disable=broad-except  # a bug: still a message; the traceback with -vvv
        error = "saasodoo_k8s_read failed unexpectedly (please report it): %s: %s" % (type(e).__name__, e)
        extra = {"exception": traceback.format_exc()}
    if error is not None:
        module.fail_json(msg=error, **extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
