"""Every collection the project uses is in requirements.yml, with a range the installed one meets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ansible_collections
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
# Modules are task keys (namespace.collection.module); filters, tests and lookups sit in
# Jinja strings (`| ns.coll.filter`, `is ns.coll.test`, `lookup('ns.coll.name', ...)`).
KEY = re.compile(r"^([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*$")
IN_JINJA = re.compile(r"(?:\|\s*|\bis\s+|(?:lookup|query)\(\s*['\"])([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*")
BUILTIN = {("ansible", "builtin"), ("ansible", "legacy")}


def _walk(node, found: set) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            m = KEY.match(str(key))
            if m:
                found.add(m.groups())
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)
    elif isinstance(node, str):
        found.update(IN_JINJA.findall(node))


def used_collections() -> set[str]:
    found: set = set()
    for folder in ("playbooks", "roles", "molecule", "awx"):
        for path in (ROOT / folder).rglob("*.yml"):
            if "templates" in path.parts:
                continue
            for doc in yaml.safe_load_all(path.read_text()):
                _walk(doc, found)
    return {f"{ns}.{name}" for ns, name in found if (ns, name) not in BUILTIN}


def installed_version(name: str) -> Version:
    ns, coll = name.split(".")
    for base in ansible_collections.__path__:
        manifest = Path(base) / ns / coll / "MANIFEST.json"
        if manifest.exists():
            return Version(json.loads(manifest.read_text())["collection_info"]["version"])
    raise AssertionError(f"collection {name} is not installed")


def required() -> dict[str, SpecifierSet]:
    data = yaml.safe_load((ROOT / "requirements.yml").read_text())
    return {c["name"]: SpecifierSet(c["version"]) for c in data["collections"]}


def test_every_used_collection_is_required_and_satisfied():
    req = required()
    used = used_collections()
    assert "kubernetes.core" in used, "the scan found no kubernetes.core use: the scan itself is broken"
    missing = sorted(used - req.keys())
    assert not missing, f"used but not in requirements.yml: {missing}"
    for name in sorted(used):
        version = installed_version(name)
        assert version in req[name], f"{name} {version} is installed but requirements.yml asks {req[name]}"


def test_required_collections_are_installed_in_range():
    for name, spec in required().items():
        assert installed_version(name) in spec, f"{name}: installed {installed_version(name)} not in {spec}"
