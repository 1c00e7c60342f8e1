#!/usr/bin/python
# -*- coding: utf-8 -*-
# The work is done on the controller by plugins/action/saasodoo_k8s_change.py; this file documents it.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: saasodoo_k8s_change
short_description: Change Kubernetes objects with kubernetes.core.k8s or k8s_scale, without a pod spec's env values in the result
description:
  - Runs M(kubernetes.core.k8s) (default) or M(kubernetes.core.k8s_scale) with the task's other options, unchanged,
    and returns its result with the literal C(env) values of every pod and workload in it (C(result),
    C(resources), and the C(before)/C(after) of C(diff)) replaced by null - names and C(valueFrom) kept.
  - Why - those modules return the whole object they changed. Patching or scaling a Deployment would otherwise
    carry a password written into its pod spec into the job's events (ansible-runner, AWX); C(no_log) would hide
    it, but also the C(--diff) an SRE reads in check mode and the error of a failed change.
  - Check mode and diff mode as the wrapped module (its server-side dry run); the change itself is the wrapped
    module's, so idempotence, C(wait), C(current_replicas) and the rest behave exactly as documented there.
  - Runs as an action plugin on the controller (the wrapped module runs as usual).
version_added: "1.0.0"
author:
  - SaaSOdoo Runbooks
options:
  module:
    description:
      - The module to run; every other option of the task is passed to it.
    type: str
    choices: [kubernetes.core.k8s, kubernetes.core.k8s_scale]
    default: kubernetes.core.k8s
notes:
  - The options of the wrapped module are not repeated here; see M(kubernetes.core.k8s) and M(kubernetes.core.k8s_scale).
"""

EXAMPLES = r"""
- name: Patch a Deployment; its pod spec's literal env values stay out of the job events
  saasodoo_k8s_change:
    state: patched
    kind: Deployment
    name: saasodoo-backend
    namespace: saasodoo-system
    definition: {spec: {replicas: 3}}

- name: Scale a StatefulSet back to its replicas
  saasodoo_k8s_change:
    module: kubernetes.core.k8s_scale
    kind: StatefulSet
    name: saasodoo-postgres
    namespace: saasodoo-system
    replicas: 1
    wait: true
"""

RETURN = r"""
result:
  description: The wrapped module's C(result) (the object after the change), literal env values of pod specs null.
  returned: when the wrapped module returns it
  type: dict
diff:
  description: The wrapped module's diff (C(before), C(after)), with the same values null.
  returned: in diff mode, when the wrapped module returns it
  type: dict
changed:
  description: Whether the wrapped module changed the object.
  returned: always
  type: bool
"""
