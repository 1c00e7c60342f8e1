"""Every custom module's DOCUMENTATION, EXAMPLES and RETURN parse, and ansible-doc renders them.

The connection options shared by several modules are documented once, in the doc fragments of
plugins/doc_fragments/ (``extends_documentation_fragment``), which ansible-doc finds through the
project's ansible.cfg (``doc_fragment_plugins``).
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from plugins.module_utils import saasodoo_findings, saasodoo_redact

# The shared argument specs, imported the way Ansible imports module_utils.
sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
sys.modules.setdefault("ansible.module_utils.saasodoo_redact", saasodoo_redact)
pg_utils = importlib.import_module("plugins.module_utils.saasodoo_pg")
k8s_utils = importlib.import_module("plugins.module_utils.saasodoo_k8s")

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DOC = str(Path(sys.executable).parent / "ansible-doc")
MODULES = sorted((ROOT / "plugins" / "modules").glob("saasodoo_*.py")) + sorted(
    (ROOT / "roles").glob("*/library/*.py"))
PROJECT_MODULES = [p for p in MODULES if p.parent.name == "modules"]
FRAGMENT_DIR = ROOT / "plugins" / "doc_fragments"
# Each doc fragment and the argument spec (and its name in the modules' code) it documents.
FRAGMENTS = {
    "saasodoo_pg": ("POSTGRES_COMMON_ARGS", pg_utils.POSTGRES_COMMON_ARGS),
    "saasodoo_k8s": ("K8S_COMMON_ARGS", k8s_utils.K8S_COMMON_ARGS),
}


def _blocks(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN")}


def _fragment_doc(name: str) -> dict:
    """The DOCUMENTATION of plugins/doc_fragments/<name>.py's ModuleDocFragment, parsed."""
    tree = ast.parse((FRAGMENT_DIR / f"{name}.py").read_text())
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "ModuleDocFragment"]
    (text,) = [node.value.value for node in cls.body if isinstance(node, ast.Assign)
               and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "DOCUMENTATION"]
    return yaml.safe_load(text)


def _extends(path: Path) -> list[str]:
    return yaml.safe_load(_blocks(path)["DOCUMENTATION"]).get("extends_documentation_fragment", [])


def _ansible_env() -> dict[str, str]:
    """The project's ansible.cfg, whatever the caller's environment says: it names the doc fragments."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    env.pop("ANSIBLE_DOC_FRAGMENT_PLUGINS", None)  # what is tested is ansible.cfg's doc_fragment_plugins
    return env


def _ansible_doc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANSIBLE_DOC, "-M", str(ROOT / "plugins" / "modules"), *args], cwd=ROOT,
                          env=_ansible_env(), capture_output=True, text=True, check=False)


@functools.lru_cache(maxsize=None)
def _rendered() -> dict:
    """ansible-doc --json of every project module: the documentation with its fragments merged in."""
    result = _ansible_doc("--json", *(p.stem for p in PROJECT_MODULES))
    assert result.returncode == 0 and "ERROR" not in result.stderr, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_documentation_examples_and_return_are_valid_yaml(path):
    blocks = _blocks(path)
    assert set(blocks) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, f"{path.name} lacks {set(('DOCUMENTATION', 'EXAMPLES', 'RETURN')) - set(blocks)}"
    doc = yaml.safe_load(blocks["DOCUMENTATION"])
    assert doc["module"] == path.stem and doc.get("short_description") and doc.get("description")
    assert isinstance(yaml.safe_load(blocks["EXAMPLES"]), list)
    assert isinstance(yaml.safe_load(blocks["RETURN"]), dict)
    for fragment in doc.get("extends_documentation_fragment", []):
        assert (FRAGMENT_DIR / f"{fragment}.py").is_file(), f"{path.name}: no doc fragment {fragment}"


def test_ansible_doc_renders_every_module():
    result = _ansible_doc(*(p.stem for p in PROJECT_MODULES))
    assert result.returncode == 0 and "ERROR" not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(FRAGMENTS))
def test_doc_fragment_documents_the_shared_argument_spec(name):
    options = _fragment_doc(name)["options"]
    spec = FRAGMENTS[name][1]
    assert sorted(options) == sorted(spec)
    for option, arg in spec.items():
        documented = options[option]
        assert documented.get("description"), option
        assert documented["type"] == arg.get("type", "str"), option
        assert documented.get("default") == arg.get("default"), option
        assert documented.get("choices") == arg.get("choices"), option
        assert sorted(documented.get("aliases", [])) == sorted(arg.get("aliases", [])), option


def test_modules_that_take_the_shared_options_document_them():
    """In ansible-doc's merged documentation: the fragment is resolved and none of its options is lost."""
    rendered = _rendered()
    checked = set()
    for path in PROJECT_MODULES:
        extends = _extends(path)
        assert set(extends) <= set(FRAGMENTS), f"{path.name}: unknown fragment in {extends}"
        source = path.read_text()
        for fragment, (spec_name, _) in FRAGMENTS.items():
            if fragment not in extends and spec_name not in source:
                continue
            checked.add((path.stem, fragment))
            options = rendered[path.stem]["doc"]["options"]
            fragment_options = _fragment_doc(fragment)["options"]
            missing = set(fragment_options) - set(options)
            assert not missing, f"{path.stem} does not document {sorted(missing)} (fragment {fragment})"
            if fragment in extends:  # the module's own keys override the fragment's, the rest is merged in
                for option, documented in fragment_options.items():
                    assert options[option]["type"] == documented["type"], (path.stem, option)
    assert {fragment for _, fragment in checked} == set(FRAGMENTS), "a fragment whose options no module takes"


@pytest.mark.parametrize("path", PROJECT_MODULES, ids=lambda p: p.stem)
def test_every_rendered_option_has_a_description(path):
    options = _rendered()[path.stem]["doc"].get("options", {})
    undescribed = sorted(name for name, option in options.items() if not option.get("description"))
    assert not undescribed, f"{path.stem}: options without a description: {undescribed}"
