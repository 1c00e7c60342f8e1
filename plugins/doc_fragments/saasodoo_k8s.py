# -*- coding: utf-8 -*-
# Documentation of the Kubernetes connection options (K8S_COMMON_ARGS in
# plugins/module_utils/saasodoo_k8s.py), shared by the modules that accept them:
#   extends_documentation_fragment:
#     - saasodoo_k8s
# Named like kubernetes.core's; each falls back to the K8S_AUTH_* environment variable that
# AWX's OpenShift/Kubernetes credential injects.

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file. Falls back to E(K8S_AUTH_KUBECONFIG), then to E(KUBECONFIG) and
        C(~/.kube/config), then to the in-cluster service account.
    type: path
  context:
    description: The kubeconfig context to use. Falls back to E(K8S_AUTH_CONTEXT).
    type: str
  host:
    description:
      - The Kubernetes API server URL, e.g. C(https://k8s.example.com:6443). Overrides the kubeconfig's.
        Falls back to E(K8S_AUTH_HOST).
    type: str
  api_key:
    description:
      - A bearer token for the API server. Falls back to E(K8S_AUTH_API_KEY).
      - Never returned or logged (C(no_log)).
    type: str
  validate_certs:
    description:
      - Whether to verify the API server's certificate. Falls back to E(K8S_AUTH_VERIFY_SSL); unset, the
        kubeconfig decides.
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
"""
