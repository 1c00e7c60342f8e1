"""Read the platform's desired state from the inventory, the way Ansible would see it.

The fault library and the tests need the same names the runbooks use (namespaces, component
names, tenants), and they must come from the inventory, not be typed again. This loads
`inventories/<name>/group_vars/all/*.yml` and renders the Jinja references between variables.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _lookup(kind: str, name: str, default: str = "", **_: object) -> str:
    if kind in ("env", "ansible.builtin.env"):
        return os.environ.get(name, default)
    raise ValueError(f"lookup {kind!r} is not supported outside Ansible")


def load(inventory: str = "local") -> dict:
    raw: dict = {}
    folder = ROOT / "inventories" / inventory / "group_vars" / "all"
    for path in sorted(folder.glob("*.yml")):
        raw.update(yaml.safe_load(path.read_text()) or {})
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.globals["lookup"] = _lookup

    def render(value, context, depth=0):
        if isinstance(value, str) and "{{" in value:
            result = env.from_string(value).render(**context)
            return render(result, context, depth + 1) if depth < 5 else result
        if isinstance(value, dict):
            return {k: render(v, context, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v, context, depth) for v in value]
        return value

    rendered = raw
    # References between variables resolve in a few passes. Each pass renders the RAW values with
    # the previous pass's results, so a value rendered early against a still-unrendered reference
    # (e.g. a port computed from saasodoo_testbed_port_shift) is corrected in the next pass.
    for _ in range(5):
        rendered = {k: render(v, rendered) for k, v in raw.items()}
    return rendered


def component(name: str, inventory: str = "local") -> dict:
    return load(inventory)["saasodoo_components"][name]
