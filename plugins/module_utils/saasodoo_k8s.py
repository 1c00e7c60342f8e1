# -*- coding: utf-8 -*-
# Shared by the project's Kubernetes modules: connection options, the client, paginated lists.
"""Kubernetes client code for the SaaSOdoo modules.

- ``K8S_COMMON_ARGS``: the connection options, named like kubernetes.core's, each falling back to
  the ``K8S_AUTH_*`` environment variable that AWX's OpenShift/Kubernetes credential injects.
- ``client(params)``: an ApiClient from those options; without any, from ``KUBECONFIG`` or
  ``~/.kube/config``, and in a pod from the in-cluster service account.
- ``list_all(api_call, ...)``: one list, page by page (``limit`` + ``continue``), returning plain
  dicts (camelCase, exactly what ``kubernetes.core.k8s_info`` returns) and counting every request
  in an ``ApiCallCounter``, so a module can prove how many calls it made.

Every failure becomes a ``DiagnosisError`` whose message a tired engineer understands (cannot
reach the API, credentials refused, timeout); only a module's ``main()`` turns it into fail_json.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import threading
import traceback

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.saasodoo_findings import DiagnosisError

try:
    import urllib3
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config
    from kubernetes.client.rest import ApiException
    from kubernetes.config.config_exception import ConfigException

    HAS_KUBERNETES = True
    KUBERNETES_IMPORT_ERROR = None
except ImportError:  # a module's main() reports it with missing_required_lib('kubernetes')
    HAS_KUBERNETES = False
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()

    class ApiException(Exception):  # noqa: D101 - placeholder so except clauses still parse
        status = 0
        reason = ""
        body = ""

    class ConfigException(Exception):  # noqa: D101
        pass


K8S_COMMON_ARGS = dict(
    kubeconfig=dict(type="path", fallback=(env_fallback, ["K8S_AUTH_KUBECONFIG"])),
    context=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_CONTEXT"])),
    host=dict(type="str", fallback=(env_fallback, ["K8S_AUTH_HOST"])),
    api_key=dict(type="str", no_log=True, fallback=(env_fallback, ["K8S_AUTH_API_KEY"])),
    validate_certs=dict(type="bool", aliases=["verify_ssl"], fallback=(env_fallback, ["K8S_AUTH_VERIFY_SSL"])),
    ca_cert=dict(type="path", aliases=["ssl_ca_cert"], fallback=(env_fallback, ["K8S_AUTH_SSL_CA_CERT"])),
    client_cert=dict(type="path", aliases=["cert_file"], fallback=(env_fallback, ["K8S_AUTH_CERT_FILE"])),
    client_key=dict(type="path", aliases=["key_file"], no_log=False,
                    fallback=(env_fallback, ["K8S_AUTH_KEY_FILE"])),
)

# Seconds to wait for a connection, then for each read of an answer. A list of thousands of
# pods streams for a while: the read timeout is per read, not for the whole answer.
DEFAULT_TIMEOUT = 30


class ApiCallCounter(object):
    """How many requests were sent to the API server, in total and per resource."""

    def __init__(self):
        self._lock = threading.Lock()  # lists may run in parallel threads
        self.calls = 0
        self.by_resource = {}

    def add(self, what):
        with self._lock:
            self.calls += 1
            self.by_resource[what] = self.by_resource.get(what, 0) + 1

    def reset(self):
        with self._lock:
            self.calls = 0
            self.by_resource = {}


# The counter list_all uses when the caller passes none (one module run = one process).
API_CALLS = ApiCallCounter()


def _kubeconfig_paths(params):
    """The kubeconfig to load: the option (or K8S_AUTH_KUBECONFIG), else KUBECONFIG, else the default."""
    if params.get("kubeconfig"):
        return params["kubeconfig"], "the kubeconfig option (or K8S_AUTH_KUBECONFIG)"
    if os.environ.get("KUBECONFIG"):
        # Passed on explicitly: the library reads KUBECONFIG only once, when it is imported.
        return os.environ["KUBECONFIG"], "KUBECONFIG"
    default = os.path.expanduser("~/.kube/config")
    if os.path.exists(default):
        return default, default
    return None, None


def client(params):
    """An ApiClient for the connection options (see K8S_COMMON_ARGS), or DiagnosisError.

    Order: an explicit kubeconfig/context (option or K8S_AUTH_*); else host (+ api_key or client
    certificate) alone; else KUBECONFIG or ~/.kube/config; else the in-cluster service account.
    Explicit host, api_key, certificates and validate_certs override what a kubeconfig says.
    """
    if not HAS_KUBERNETES:
        raise DiagnosisError("the Python library 'kubernetes' is not installed (pip install kubernetes)")
    params = params or {}
    configuration = k8s_client.Configuration()
    path, source = _kubeconfig_paths(params)
    explicit = params.get("kubeconfig") or params.get("context")
    # Like kubernetes.core: a host with its own credentials needs no kubeconfig.
    self_sufficient = params.get("host") and (
        params.get("api_key") or (params.get("client_cert") and params.get("client_key")))
    try:
        if explicit or (source and not self_sufficient):
            if path and os.pathsep not in path and not os.path.exists(path):
                raise DiagnosisError("the kubeconfig %s (from %s) does not exist" % (path, source))
            k8s_config.load_kube_config(config_file=path, context=params.get("context"),
                                        client_configuration=configuration, persist_config=False)
        elif not self_sufficient:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except ConfigException:
                if not params.get("host"):
                    raise DiagnosisError(
                        "no Kubernetes credentials: set the kubeconfig option (or K8S_AUTH_KUBECONFIG), KUBECONFIG, "
                        "~/.kube/config, or host and api_key; this is not a pod with a service account either")
    except ConfigException as exc:
        raise DiagnosisError("cannot use the kubeconfig from %s%s: %s" % (
            source or "the default location",
            " (context %s)" % params["context"] if params.get("context") else "", exc))
    except (IOError, OSError, ValueError, TypeError) as exc:
        raise DiagnosisError("cannot read the kubeconfig from %s: %s" % (source, exc))
    if params.get("host"):
        configuration.host = params["host"].rstrip("/")
    if params.get("api_key"):
        configuration.api_key = {"authorization": "Bearer %s" % params["api_key"]}
    if params.get("ca_cert"):
        configuration.ssl_ca_cert = params["ca_cert"]
    if params.get("client_cert"):
        configuration.cert_file = params["client_cert"]
    if params.get("client_key"):
        configuration.key_file = params["client_key"]
    if params.get("validate_certs") is not None:
        configuration.verify_ssl = bool(params["validate_certs"])
    # One retry for a dropped connection; more would only make a dead server take longer to report.
    configuration.retries = 1
    return k8s_client.ApiClient(configuration)


def _api_host(api_call):
    try:
        return api_call.__self__.api_client.configuration.host
    except AttributeError:
        return "(unknown host)"


def _root_cause(exc):
    """The innermost reason of a urllib3 error, as a short phrase."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    lowered = text.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered \
            or "temporary failure in name resolution" in lowered or "no address associated" in lowered:
        return "the host name does not resolve"
    if "no route to host" in lowered:
        return "no route to host"
    if "network is unreachable" in lowered:
        return "network is unreachable"
    if "certificate" in lowered or "ssl" in lowered:
        return "TLS error: %s" % text.split("(Caused by ")[-1].rstrip(")")
    if "failed to establish a new connection:" in lowered:
        return text.split("Failed to establish a new connection:")[-1].strip(" ')\"")
    return text


def _api_message(exc):
    """The API server's own message from an ApiException body (a Status object), else its reason."""
    body = getattr(exc, "body", None)
    if body:
        try:
            status = json.loads(body)
            if isinstance(status, dict) and status.get("message"):
                return status["message"]
        except (ValueError, TypeError):
            pass
    return "%s %s" % (getattr(exc, "status", ""), getattr(exc, "reason", "") or "")


def _what(api_call):
    """'list_pod_for_all_namespaces' -> 'pods', 'list_node' -> 'nodes'."""
    name = getattr(api_call, "__name__", "objects")
    name = name.replace("list_", "", 1).replace("_for_all_namespaces", "")
    if name.endswith("s"):
        return name.replace("_", " ") + "es"
    if name.endswith("y"):
        return name[:-1].replace("_", " ") + "ies"
    return name.replace("_", " ") + "s"


class ListExpired(DiagnosisError):
    """The continue token of a paginated list expired (HTTP 410)."""


def _call(api_call, what, timeout, kwargs):
    host = _api_host(api_call)
    scope = "cluster-wide" if "namespace" not in kwargs else "in namespace %s" % kwargs["namespace"]
    try:
        response = api_call(_preload_content=False, _request_timeout=(min(10, timeout), timeout), **kwargs)
        data = response.data
    except ApiException as exc:
        status = getattr(exc, "status", 0)
        if status == 410 and kwargs.get("_continue"):
            raise ListExpired("the list of %s expired while paging through it: %s" % (what, _api_message(exc)))
        if status in (401, 403):
            raise DiagnosisError("the credentials are not allowed to list %s %s: %s (HTTP %s from %s)" % (
                what, scope, _api_message(exc), status, host))
        if status == 0:
            raise DiagnosisError("cannot reach the Kubernetes API at %s: %s" % (host, _root_cause(exc)))
        raise DiagnosisError("the Kubernetes API at %s refused to list %s %s: HTTP %s: %s" % (
            host, what, scope, status, _api_message(exc)))
    except urllib3.exceptions.MaxRetryError as exc:
        inner = exc.reason
        # NewConnectionError subclasses ConnectTimeoutError in urllib3: test it first.
        if isinstance(inner, urllib3.exceptions.NewConnectionError):
            raise DiagnosisError("cannot reach the Kubernetes API at %s: %s" % (host, _root_cause(inner)))
        if isinstance(inner, urllib3.exceptions.ConnectTimeoutError):
            raise DiagnosisError("cannot reach the Kubernetes API at %s: no answer to the connection within %ss"
                                 % (host, min(10, timeout)))
        if isinstance(inner, urllib3.exceptions.ReadTimeoutError):
            raise DiagnosisError("the Kubernetes API at %s timed out after %ss while listing %s %s"
                                 % (host, timeout, what, scope))
        raise DiagnosisError("cannot reach the Kubernetes API at %s: %s" % (host, _root_cause(exc)))
    except urllib3.exceptions.NewConnectionError as exc:
        raise DiagnosisError("cannot reach the Kubernetes API at %s: %s" % (host, _root_cause(exc)))
    except urllib3.exceptions.ConnectTimeoutError:
        raise DiagnosisError("cannot reach the Kubernetes API at %s: no answer to the connection within %ss"
                             % (host, min(10, timeout)))
    except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.TimeoutError):
        raise DiagnosisError("the Kubernetes API at %s timed out after %ss while listing %s %s"
                             % (host, timeout, what, scope))
    except urllib3.exceptions.HTTPError as exc:
        raise DiagnosisError("cannot reach the Kubernetes API at %s: %s" % (host, _root_cause(exc)))
    except (IOError, OSError) as exc:
        raise DiagnosisError("cannot reach the Kubernetes API at %s: %s" % (host, exc))
    try:
        return json.loads(data)
    except ValueError as exc:
        raise DiagnosisError("the Kubernetes API at %s sent an answer that is not JSON while listing %s: %s"
                             % (host, what, exc))


def list_all(api_call, counter=None, page_size=500, timeout=DEFAULT_TIMEOUT, what=None, **kwargs):
    """Every item of a list call, page by page; each request is counted.

    api_call: a kubernetes client list method (e.g. CoreV1Api(...).list_pod_for_all_namespaces);
    kwargs go to it as is (label_selector, field_selector, namespace...). Items are plain dicts
    with their ``kind`` filled in (list answers leave it out). An expired continue token (HTTP 410)
    restarts the list once from the beginning.
    """
    counter = API_CALLS if counter is None else counter
    what = what or _what(api_call)
    items = []
    token = None
    restarted = False
    while True:
        args = dict(kwargs)
        if page_size:
            args["limit"] = int(page_size)
        if token:
            args["_continue"] = token
        counter.add(what)
        try:
            page = _call(api_call, what, timeout, args)
        except ListExpired:
            if restarted:
                raise
            restarted, token, items = True, None, []
            continue
        kind = (page.get("kind") or "")
        kind = kind[:-4] if kind.endswith("List") else kind
        for item in page.get("items") or []:
            if kind and not item.get("kind"):
                item["kind"] = kind
            items.append(item)
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return items
