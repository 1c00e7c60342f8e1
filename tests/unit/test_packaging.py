"""The Python package depends at runtime only on what the runbooks and the CLI need; the test tools
are the `test` extra (requirements-dev.txt), which `make venv` installs as well."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_TOOLS = {"pytest", "molecule", "ansible-lint"}


def _names(path: Path) -> set[str]:
    names = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower())
    return names


def test_runtime_requirements_carry_no_test_tool():
    runtime = _names(ROOT / "requirements.txt")
    assert {"ansible-core", "ansible-runner", "kubernetes", "psycopg", "redis"} <= runtime
    assert not runtime & TEST_TOOLS, f"test tools in requirements.txt: {sorted(runtime & TEST_TOOLS)}"


def test_the_test_extra_is_the_dev_requirements_and_make_installs_both():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"]["file"] == ["requirements.txt"]
    assert dynamic["optional-dependencies"]["test"]["file"] == ["requirements-dev.txt"]
    assert set(project["project"]["dynamic"]) == {"dependencies", "optional-dependencies"}
    assert _names(ROOT / "requirements-dev.txt") == TEST_TOOLS
    makefile = (ROOT / "Makefile").read_text()
    assert "-r requirements.txt -r requirements-dev.txt" in makefile
