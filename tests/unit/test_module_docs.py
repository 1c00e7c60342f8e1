"""Every custom module's DOCUMENTATION, EXAMPLES and RETURN parse, and ansible-doc renders them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted((ROOT / "plugins" / "modules").glob("saasodoo_*.py")) + sorted(
    (ROOT / "roles").glob("*/library/*.py"))


def _blocks(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {node.targets[0].id: node.value.value for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN")}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_documentation_examples_and_return_are_valid_yaml(path):
    blocks = _blocks(path)
    assert set(blocks) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, f"{path.name} lacks {set(('DOCUMENTATION', 'EXAMPLES', 'RETURN')) - set(blocks)}"
    doc = yaml.safe_load(blocks["DOCUMENTATION"])
    assert doc["module"] == path.stem and doc.get("short_description") and doc.get("description")
    assert isinstance(yaml.safe_load(blocks["EXAMPLES"]), list)
    assert isinstance(yaml.safe_load(blocks["RETURN"]), dict)


def test_ansible_doc_renders_every_module():
    names = [p.stem for p in MODULES if p.parent.name == "modules"]
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-M", str(ROOT / "plugins" / "modules"),
                             *names], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "ERROR" not in result.stderr, result.stderr[-3000:]
