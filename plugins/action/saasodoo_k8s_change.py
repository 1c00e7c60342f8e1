# -*- coding: utf-8 -*-
# Action plugin of saasodoo_k8s_change (documentation: plugins/modules/saasodoo_k8s_change.py).
from __future__ import annotations

import importlib.util
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# Loaded by path, as the filters do: on the controller `ansible.module_utils.<project file>` is not importable.
_spec = importlib.util.spec_from_file_location(
    "saasodoo_k8s_health", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_k8s_health.py")
_health = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_health)

WRAPPED = ("kubernetes.core.k8s", "kubernetes.core.k8s_scale")
# Where kubernetes.core's modules put objects in their result.
OBJECT_KEYS = ("result", "resources")


def without_env_values(value):
    """A module result, or any part of it, with the literal env values of every pod or workload in it replaced
    by None (names and valueFrom kept): lists and dicts are walked, objects recognised by their kind."""
    if isinstance(value, list):
        return [without_env_values(v) for v in value]
    if isinstance(value, dict):
        hidden = _health.hide_env_values(value)
        return dict((k, without_env_values(v)) for k, v in hidden.items())
    return value


def sanitize(result):
    out = dict(result)
    for key in OBJECT_KEYS:
        if key in out:
            out[key] = without_env_values(out[key])
    diff = out.get("diff")
    if isinstance(diff, dict):
        out["diff"] = dict((k, without_env_values(v)) for k, v in diff.items())
    elif isinstance(diff, list):
        out["diff"] = [dict((k, without_env_values(v)) for k, v in d.items()) if isinstance(d, dict) else d
                       for d in diff]
    return out


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = dict(self._task.args)
        module = args.pop("module", WRAPPED[0])
        if module not in WRAPPED:
            raise AnsibleActionFail("saasodoo_k8s_change: module must be one of %s, not %r" % (", ".join(WRAPPED), module))
        result.update(sanitize(self._execute_module(module_name=module, module_args=args, task_vars=task_vars)))
        return result
