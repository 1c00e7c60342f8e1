"""Every procedure of the troubleshooting guide has a runbook, documented and tested.

The guide is kept in the repository (docs/guide/troubleshooting-guide.md, a copy of the platform
team's guide, compared with the original when it is beside the checkout). Its procedure headings
are parsed; docs/runbooks.md maps each one to a playbook; the playbook, its guide tag and its
integration test must exist. A heading that loses its runbook fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide" / "troubleshooting-guide.md"
UPSTREAM_GUIDE = ROOT.parent / "shared" / "guide" / "troubleshooting-guide.md"
TABLE = ROOT / "docs" / "runbooks.md"

# Where the guide keeps its procedures: (level-2 section, heading level, prefix to strip).
PROCEDURE_SECTIONS = (
    ("Emergency Procedures", 3, ""),
    ("Component-Specific Issues", 4, "Issue: "),
    ("Diagnostic Tools", 4, ""),
    ("Troubleshooting Checklist", 3, ""),
)


def guide_procedures(text: str) -> list[str]:
    procedures = []
    section = None
    for line in text.splitlines():
        match = re.match(r"^(#{2,4})\s+(.*?)\s*$", line)
        if not match:
            continue
        level, title = len(match.group(1)), match.group(2)
        if level == 2:
            section = next((s for s in PROCEDURE_SECTIONS if s[0] in title), None)
            continue
        if section and level == section[1] and title.startswith(section[2]):
            procedures.append(re.sub(r"\s*\(Severity:.*\)$", "", title[len(section[2]):]).strip())
    return procedures


def table_rows(text: str) -> dict[str, str]:
    """procedure -> playbook file name, from the table in docs/runbooks.md."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("|") or set(cells[0]) <= {"-", " "} or cells[1] == "procedure":
            continue
        playbook = re.search(r"`(?:playbooks/)?([a-z_]+\.yml)`", cells[2])
        rows[cells[1]] = playbook.group(1) if playbook and "not yet" not in cells[2] else ""
    return rows


PROCEDURES = guide_procedures(GUIDE.read_text())
ROWS = table_rows(TABLE.read_text())


def test_the_parser_finds_the_guide_procedures():
    # A parser that silently found nothing would make every other test here pass.
    assert "Platform Down" in PROCEDURES and "Backend Pods Crashing" in PROCEDURES
    assert "Quick Health Check" in PROCEDURES and "Resource Usage Script" in PROCEDURES
    assert len(PROCEDURES) >= 19, PROCEDURES


if UPSTREAM_GUIDE.exists():  # only where the platform team's checkout is beside this one (not collected otherwise)
    def test_the_vendored_guide_is_the_platform_teams_guide():
        assert GUIDE.read_text() == UPSTREAM_GUIDE.read_text(), "docs/guide is out of date: copy the guide again"


@pytest.mark.parametrize("procedure", PROCEDURES)
def test_every_procedure_has_a_documented_tested_runbook(procedure):
    assert procedure in ROWS, f"docs/runbooks.md has no row for the guide's procedure {procedure!r}"
    playbook = ROWS[procedure]
    assert playbook, f"{procedure!r} has no runbook yet"
    path = ROOT / "playbooks" / playbook
    assert path.is_file(), f"{procedure!r} maps to {path}, which does not exist"
    stem = path.stem
    plays = yaml.safe_load(path.read_text())
    tags = {t for play in plays for t in play.get("tags", [])}
    assert stem in tags and any(t.startswith("guide_") for t in tags), f"{playbook}: play tags {sorted(tags)}"
    test = ROOT / "tests" / "integration" / f"test_{stem}.py"
    assert test.is_file(), f"{playbook} has no integration test {test}"
    text = test.read_text()
    names = [rf"""["']{re.escape(playbook)}["']"""] + [
        re.escape(m) for m in re.findall(rf"""^([A-Z_]+)\s*=\s*["']{re.escape(playbook)}["']""", text, re.M)]
    assert any(re.search(rf"run_playbook\(\s*{n}", text) for n in names), f"{test} never runs {playbook}"


def test_the_table_names_no_procedure_the_guide_lacks():
    assert set(ROWS) <= set(PROCEDURES), sorted(set(ROWS) - set(PROCEDURES))


def test_every_playbook_passes_syntax_check():
    playbooks = sorted(str(p) for p in (ROOT / "playbooks").glob("*.yml"))
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", *playbooks],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
