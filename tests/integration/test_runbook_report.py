"""runbook_report alone, through ansible-runner: the report every runbook ends with."""

from __future__ import annotations

import json
from pathlib import Path

from tests.runbooks import ROOT, run_playbook

PLAYBOOK = str(ROOT / "tests" / "integration" / "playbooks" / "runbook_report.yml")
FOUND = [{"code": "API_SLOW", "severity": "high", "message": "p95 is 3.1 s", "evidence": ["GET /health 3100 ms"]}]


def test_remediated_report_is_published_printed_and_written(tmp_path):
    result = run_playbook(PLAYBOOK, extravars={"rr_name": "rr_fixed", "rr_findings": FOUND, "rr_acted": True,
                                               "rr_remaining": [], "rr_actions": ["scaled backend 2 -> 3"]},
                          envvars={"SAASODOO_REPORT_DIR": str(tmp_path)})

    assert result.rc == 0, result.stdout[-3000:]
    assert result.changed == 0
    report = result.artifacts["rr_fixed_report"]
    assert report["findings"] == FOUND and report["remaining"] == []
    assert report["healthy_before"] is False and report["healthy_after"] is True
    assert report["escalation"]["level"] == "medium"  # resolved, still worth a review
    assert report["checklist"] == [{"item": "x", "status": "pass"}]
    assert "Diagnosis: 1 finding(s), worst severity high" in result.stdout
    assert "Did: scaled backend 2 -> 3" in result.stdout
    written = json.loads(next(Path(tmp_path).glob("rr_fixed-*.json")).read_text())
    assert written["runbook"] == "rr_fixed"


def test_findings_left_alone_escalate():
    result = run_playbook(PLAYBOOK, extravars={"rr_name": "rr_open", "rr_findings": FOUND, "rr_acted": False})

    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["rr_open_report"]
    assert report["remaining"] == FOUND and report["healthy_after"] is False
    assert report["escalation"] == {"level": "high", "when": "within 2 hours", "why": "high-severity findings remain"}


def test_remediation_without_verification_is_refused():
    result = run_playbook(PLAYBOOK, extravars={"rr_name": "rr_unverified", "rr_findings": FOUND, "rr_acted": True})

    assert result.rc != 0
    assert "remediated but passed no runbook_report_remaining" in result.stdout


def test_a_finding_without_severity_is_refused():
    result = run_playbook(PLAYBOOK, extravars={"rr_name": "rr_bad", "rr_acted": False,
                                               "rr_findings": [{"code": "X", "severity": "urgent", "message": "m"}]})

    assert result.rc != 0
    assert "without code, message or a severity of" in result.stdout
