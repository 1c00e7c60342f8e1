"""execution-environment.yml (ansible-builder 3), requirements-ee.txt and bindep.txt cover what the code needs."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EE = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
# Directories whose code runs in the execution environment.
SCANNED = ("plugins", "saasodoo_runbooks")
# Import name -> distribution on PyPI.
DISTRIBUTIONS = {"psycopg": "psycopg", "yaml": "pyyaml", "kubernetes": "kubernetes", "redis": "redis",
                 "jinja2": "jinja2", "cryptography": "cryptography", "urllib3": "urllib3"}
# Imports the EE provides through its own dependency keys, not requirements-ee.txt.
FROM_EE_KEYS = {"ansible": "ansible_core", "ansible_collections": "galaxy", "ansible_runner": "ansible_runner"}
# The project's own packages.
LOCAL = {"plugins", "saasodoo_runbooks", "testbed", "tests"}
TEST_TOOLS = {"pytest", "molecule", "ansible-lint", "ansible-core", "ansible", "ansible-runner"}
# ansible-builder 3's top-level keys and dependency keys (docs: "Execution environment definition").
TOP_KEYS = {"version", "images", "dependencies", "additional_build_files", "additional_build_steps",
            "build_arg_defaults", "options"}
DEPENDENCY_KEYS = {"ansible_core", "ansible_runner", "galaxy", "python", "python_interpreter", "system",
                   "exclude"}
BUILD_STEP_KEYS = {f"{when}_{stage}" for when in ("prepend", "append")
                   for stage in ("base", "galaxy", "builder", "final")}


def requirement_name(line: str) -> str | None:
    line = line.split("#", 1)[0].strip()
    if not line:
        return None
    return re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0].lower().replace("_", "-")


def requirements(path: Path) -> dict[str, str]:
    """{distribution: the whole requirement line} of a pip requirements file."""
    out = {}
    for raw in path.read_text().splitlines():
        name = requirement_name(raw)
        if name:
            out[name] = raw.split("#", 1)[0].strip()
    return out


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names)


def third_party_imports() -> dict[str, set[str]]:
    """{top-level import: files} over SCANNED; a fallback imported in `except ImportError:` is not required."""
    found: dict[str, set[str]] = {}
    for directory in SCANNED:
        for path in sorted((ROOT / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            fallbacks = {id(node) for handler in ast.walk(tree)
                         if isinstance(handler, ast.ExceptHandler) and handler.type is not None
                         and _catches_import_error(handler)
                         for node in ast.walk(handler) if isinstance(node, (ast.Import, ast.ImportFrom))}
            for node in ast.walk(tree):
                if id(node) in fallbacks:
                    continue
                if isinstance(node, ast.Import):
                    tops = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    if top in sys.stdlib_module_names or top == "__future__" or top in LOCAL:
                        continue
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_definition_is_ansible_builder_version_3():
    assert EE["version"] == 3
    assert set(EE) <= TOP_KEYS, f"unknown top-level keys: {set(EE) - TOP_KEYS}"
    assert isinstance(EE["images"]["base_image"]["name"], str) and ":" in EE["images"]["base_image"]["name"]
    deps = EE["dependencies"]
    assert set(deps) <= DEPENDENCY_KEYS
    assert deps["galaxy"] == "requirements.yml"
    assert deps["python"] == "requirements-ee.txt"
    assert deps["system"] == "bindep.txt"
    for key in ("ansible_core", "ansible_runner"):
        assert set(deps[key]) == {"package_pip"}
    if "python_interpreter" in deps:
        assert set(deps["python_interpreter"]) <= {"package_system", "python_path"}
    assert set(EE.get("additional_build_steps") or {}) <= BUILD_STEP_KEYS
    for name in ("requirements.yml", "requirements-ee.txt", "bindep.txt"):
        assert (ROOT / name).is_file()


def test_ansible_core_and_runner_match_requirements_txt():
    pinned = requirements(ROOT / "requirements.txt")
    assert EE["dependencies"]["ansible_core"]["package_pip"] == pinned["ansible-core"]
    assert EE["dependencies"]["ansible_runner"]["package_pip"] == pinned["ansible-runner"]


def test_requirements_ee_covers_every_third_party_import():
    listed = requirements(ROOT / "requirements-ee.txt")
    imports = third_party_imports()
    assert "kubernetes" in imports and "psycopg" in imports  # the scan sees the modules
    missing = []
    for top, files in sorted(imports.items()):
        if top in FROM_EE_KEYS:
            assert FROM_EE_KEYS[top] in EE["dependencies"], f"{top} needs dependencies.{FROM_EE_KEYS[top]}"
            continue
        assert top in DISTRIBUTIONS, f"import {top} ({', '.join(sorted(files))}): add its distribution to the map"
        if DISTRIBUTIONS[top] not in listed:
            missing.append(f"{DISTRIBUTIONS[top]} (import {top} in {', '.join(sorted(files))})")
    assert not missing, "requirements-ee.txt misses: " + "; ".join(missing)


def test_optional_fallback_imports_are_not_required():
    assert "psycopg2" not in third_party_imports()  # imported only in `except ImportError:`


def test_requirements_ee_is_runtime_only_and_consistent_with_requirements_txt():
    listed = requirements(ROOT / "requirements-ee.txt")
    pinned = requirements(ROOT / "requirements.txt")
    for name in ("kubernetes", "psycopg", "redis", "jinja2", "pyyaml", "cryptography"):
        assert name in listed, f"{name} is a runtime dependency of the runbooks"
    assert not set(listed) & TEST_TOOLS, "no test tools (nor what the EE installs itself) in requirements-ee.txt"
    for name in set(listed) & set(pinned):
        assert listed[name] == pinned[name], f"{name}: {listed[name]!r} differs from requirements.txt {pinned[name]!r}"


@pytest.mark.parametrize("platform", ["dpkg", "rpm"])
def test_bindep_lists_the_postgresql_client_and_openssl(platform):
    entries = []
    for raw in (ROOT / "bindep.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            package, _, selector = line.partition(" ")
            entries.append((package, selector))

    def has(package):
        return any(p == package and (not s or f"platform:{platform}" in s) for p, s in entries)

    assert has("postgresql-client" if platform == "dpkg" else "postgresql"), "pg_dump/pg_restore"
    assert has("openssl")
