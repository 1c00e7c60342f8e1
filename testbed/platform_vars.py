"""Read the platform's desired state from the inventory, the way Ansible would see it.

The fault library and the tests need the same names the runbooks use (namespaces, component
names, tenants), and they must come from the inventory, not be typed again. This loads
`inventories/<name>/group_vars/all/*.yml` and renders the Jinja references between variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
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
    done: dict = {}
    busy: set = set()

    class Lazy(Mapping):
        """The variables as a template sees them: each rendered on first use, like Ansible's lazy templating.

        Rendering against half-rendered values would be wrong where a filter hides it: `{{ x | int }}`
        of a still unrendered `x` is 0, so e.g. ports shifted by SAASODOO_PORT_SHIFT came out unshifted.
        """

        def __getitem__(self, key):
            if key in raw:
                return resolve(key)
            return env.globals[key]

        def __iter__(self):
            return iter(raw)

        def __len__(self):
            return len(raw)

    def render(value, depth=0):
        if isinstance(value, str) and "{{" in value:
            template = env.from_string(value)
            result = env.concat(template.root_render_func(template.new_context(Lazy(), shared=True)))
            return render(result, depth + 1) if depth < 5 else result
        if isinstance(value, dict):
            return {k: render(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v, depth) for v in value]
        return value

    def resolve(key):
        if key not in done:
            if key in busy:
                raise ValueError(f"inventory variable {key!r} refers to itself")
            busy.add(key)
            done[key] = render(raw[key])
            busy.discard(key)
        return done[key]

    return {k: resolve(k) for k in raw}


def component(name: str, inventory: str = "local") -> dict:
    return load(inventory)["saasodoo_components"][name]
