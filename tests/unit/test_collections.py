"""Every collection the project uses is in requirements.yml, with a range the installed one meets."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def _yaml_docs(folder: str) -> tuple:
    """Every YAML document under a folder of the project (templates left out), parsed once."""
    return tuple(doc for path in sorted((ROOT / folder).rglob("*.yml")) if "templates" not in path.parts
                 for doc in yaml.safe_load_all(path.read_text()))


def used_collections() -> set[str]:
    found: set = set()
    for folder in ("playbooks", "roles", "molecule", "awx"):
        for doc in _yaml_docs(folder):
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


def test_every_required_collection_is_used():
    unused = sorted(required().keys() - used_collections())
    assert not unused, f"listed in requirements.yml but used by no task, filter or lookup: {unused}"


# ----------------------------------------------------------------------------- floors

def _collection_dir(ns: str, coll: str) -> Path:
    for base in ansible_collections.__path__:
        if (Path(base) / ns / coll).is_dir():
            return Path(base) / ns / coll
    raise AssertionError(f"collection {ns}.{coll} is not installed")


def _yaml_constant(path: Path, name: str) -> dict:
    """A module's (or doc fragment's) DOCUMENTATION-like string constant, parsed; {} when absent."""
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return yaml.safe_load(node.value.value) or {}
    return {}


def module_uses() -> dict[str, set[str]]:
    """collection module FQCN -> the option names the project's tasks give it."""
    uses: dict[str, set[str]] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                m = KEY.match(str(key))
                if m and m.groups() not in BUILTIN and isinstance(value, dict):
                    uses.setdefault(str(key), set()).update(str(k) for k in value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for folder in ("playbooks", "roles", "molecule"):
        for doc in _yaml_docs(folder):
            walk(doc)
    return uses


def added_in(fqcn: str, options: set[str]) -> dict[str, Version]:
    """What of a module the tasks use -> the collection version that added it (module and options,
    from the installed collection's DOCUMENTATION and its own doc fragments). Options documented by a
    fragment of another collection (ansible.builtin's `files`: mode, owner...) have no collection version."""
    ns, coll, name = fqcn.split(".")
    folder = _collection_dir(ns, coll)
    doc = _yaml_constant(folder / "plugins" / "modules" / f"{name}.py", "DOCUMENTATION")
    assert doc, f"{fqcn}: no DOCUMENTATION in the installed collection (redirected?)"
    documented = dict(doc.get("options") or {})
    foreign = False
    for fragment in doc.get("extends_documentation_fragment") or []:
        parts = fragment.split(".")
        if parts[:2] != [ns, coll]:
            foreign = True
            continue
        attr = parts[3].upper() if len(parts) > 3 else "DOCUMENTATION"
        frag = _yaml_constant(folder / "plugins" / "doc_fragments" / f"{parts[2]}.py", attr)
        for key, value in (frag.get("options") or {}).items():
            documented.setdefault(key, value)
    found = {"the module": doc.get("version_added")}
    for option in sorted(options):
        spec = documented.get(option)
        if spec is None:
            spec = next((v for v in documented.values() if option in ((v or {}).get("aliases") or [])), None)
        assert spec is not None or foreign, f"{fqcn}: the tasks pass '{option}', which its documentation does not know"
        found[f"option {option}"] = (spec or {}).get("version_added")
    return {what: Version(str(v)) for what, v in found.items() if v}


def test_each_floor_is_at_least_what_the_tasks_use():
    req = required()
    uses = module_uses()
    assert "community.postgresql.postgresql_alter_system" in uses, "the task scan found nothing: it is broken"
    too_low = []
    for fqcn, options in sorted(uses.items()):
        name = ".".join(fqcn.split(".")[:2])
        floor = min((Version(s.version) for s in req[name] if s.operator in (">=", "==", "~=")), default=None)
        assert floor is not None, f"{name}: requirements.yml gives no lower bound"
        for what, version in added_in(fqcn, options).items():
            if version > floor:
                too_low.append(f"{fqcn} {what} needs {name} >= {version}; requirements.yml floor is {floor}")
    assert not too_low, "\n".join(too_low)
