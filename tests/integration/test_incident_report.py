"""The incident report callback on real runs: platform_down.yml heals a crashlooping backend, the
callback writes the report (JSON valid against the schema, Markdown), notifies a local receiver
through its failures, and a seeded secret appears nowhere. Three playbook runs in all.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest

from testbed import faults
from tests.runbooks import ROOT, RunResult, run_playbook

SCHEMA = json.loads((ROOT / "docs" / "incident-report.schema.json").read_text())
SECRET = "S33ded-Secr3t-" + secrets.token_hex(6)
ROUTING_KEY = "R0uting-" + secrets.token_hex(8)
SLACK_PATH = "/slack/services/T000/B000/" + secrets.token_hex(8)
WEBHOOK_PATH = "/webhook/" + secrets.token_hex(8)
PAGERDUTY_PATH = "/pagerduty/v2/enqueue"
# ansible.cfg enables the callback; ansible-runner overrides callback_plugins with its own
# directory, and the callback is found next to the playbooks (playbooks/callback_plugins).
CALLBACK = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
FAST_RETRIES = {"SAASODOO_NOTIFY_RETRIES": "3", "SAASODOO_NOTIFY_BACKOFF_SECONDS": "0.05",
                "SAASODOO_NOTIFY_TIMEOUT_SECONDS": "5"}
REPORT_LINE = re.compile(r"Incident report: (\S+\.json), (\S+\.md)")
HEADINGS = ["Issue Description", "Impact Assessment", "Steps Taken", "Logs and Evidence", "Timeline", "Urgency Level"]


class Receiver:
    """A local HTTP endpoint that records each POST and fails the first `fail_first` per path with 500."""

    def __init__(self, fail_first: int = 0, always_fail: bool = False):
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.always_fail = always_fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = sum(1 for r in receiver.requests if r["path"] == self.path)
                fail = receiver.always_fail or seen < receiver.fail_first
                receiver.requests.append({"path": self.path, "raw": raw.decode(), "status": 500 if fail else 202,
                                          "content_type": self.headers.get("Content-Type")})
                self.send_response(500 if fail else 202)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "error"}' if fail else b'{"status": "success"}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def to(self, path: str) -> list[dict]:
        return [r for r in self.requests if r["path"] == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return "http://127.0.0.1:%d%s" % (port, SLACK_PATH)


def notify_env(receiver_url: str, min_level: str, slack_url: str | None = None) -> dict:
    return {"SAASODOO_NOTIFY_WEBHOOK_URL": receiver_url + WEBHOOK_PATH,
            "SAASODOO_NOTIFY_SLACK_URL": slack_url or receiver_url + SLACK_PATH,
            "SAASODOO_NOTIFY_PAGERDUTY_URL": receiver_url + PAGERDUTY_PATH,
            "SAASODOO_NOTIFY_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
            "SAASODOO_NOTIFY_MIN_LEVEL": min_level}


@dataclass
class Run:
    result: RunResult
    report_dir: Path
    json_path: Path = None
    md_path: Path = None
    report: dict = field(default_factory=dict)
    requests: list = field(default_factory=list)


def run_with_report(playbook: str, report_dir: Path, extravars: dict | None = None, envvars: dict | None = None,
                    diff: bool = False) -> Run:
    env = dict(CALLBACK, SAASODOO_REPORT_DIR=str(report_dir), SAASODOO_DB_PASSWORD=SECRET, **FAST_RETRIES)
    env.update(envvars or {})
    # SECRET stands in for the database password, so platform_down's data-layer session (which would be
    # refused) is off here; test_platform_down covers that check with the real password.
    result = run_playbook(playbook, extravars=dict({"saasodoo_db_password": SECRET, "platform_down_check_data": False},
                                                   **(extravars or {})),
                          envvars=env, diff=diff)
    assert result.rc == 0, result.stdout[-4000:]
    match = REPORT_LINE.search(result.stdout)
    assert match, "no 'Incident report:' line:\n" + result.stdout[-3000:]
    run = Run(result, report_dir, Path(match.group(1)), Path(match.group(2)))
    run.report = json.loads(run.json_path.read_text())
    return run


def validate(report: dict) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(report)


def assert_no_secret(run: Run, *extra: str) -> None:
    for path in run.report_dir.iterdir():
        text = path.read_text()
        for value in (SECRET, ROUTING_KEY, SLACK_PATH, WEBHOOK_PATH) + extra:
            assert value not in text, f"{value!r} leaked into {path.name}"
    for value in (ROUTING_KEY, SLACK_PATH, WEBHOOK_PATH):
        assert value not in run.result.stdout, f"{value!r} printed"


@pytest.fixture(scope="module")
def healed(platform, tmp_path_factory):
    """platform_down.yml heals a crashlooping backend; notifications fail twice each, then get through."""
    faults.wait_healthy("backend")
    receiver = Receiver(fail_first=2)
    fault = faults.crashloop("backend")
    try:
        run = run_with_report("platform_down.yml", tmp_path_factory.mktemp("reports-healed"),
                              extravars={"platform_down_cooldown_minutes": 0},
                              envvars=notify_env(receiver.url, "medium"), diff=True)
    finally:
        fault.undo()
        receiver.stop()
    run.requests = receiver.requests
    return run


def test_both_report_files_are_written_and_the_json_follows_the_schema(healed):
    assert healed.json_path.parent == healed.report_dir
    assert healed.json_path.name.startswith("platform_down-") and healed.md_path.exists()
    assert (healed.report_dir / "platform_down-latest.json").read_text() == healed.json_path.read_text()
    assert (healed.report_dir / "platform_down-latest.md").read_text() == healed.md_path.read_text()
    validate(healed.report)
    md = healed.md_path.read_text()
    assert [line[3:] for line in md.splitlines() if line.startswith("## ") and line[3:] in HEADINGS] == HEADINGS


def test_report_names_the_cause_the_restart_and_the_urgency(healed, platform):
    backend = platform["saasodoo_components"]["backend"]
    ref = f"Deployment/{backend['namespace']}/{backend['name']}"
    report = healed.report
    assert report["runbook"] == "platform_down" and report["guide_section"] == "Platform Down"
    assert report["result"] == "remediated" and report["check_mode"] is False
    assert any(f["code"] == "WORKLOAD_CRASHLOOP" and f["component"] == "backend" for f in report["findings"])
    assert "CrashLoopBackOff" in report["description"]
    crash = next(e for e in report["evidence"] if e["code"] == "WORKLOAD_CRASHLOOP")
    assert any("CrashLoopBackOff" in line for line in crash["lines"])
    assert report["impact"]["scope"] == "platform" and "backend" in report["impact"]["components_affected"]

    step = next(s for s in report["steps_taken"] if s["action"] == f"rolling restart of {ref}")
    assert step["at"] and "CrashLoopBackOff" in step["before"] and step["after"] == "healthy"
    assert any(k.endswith("kubectl.kubernetes.io/restartedAt") for k in step["changes"]["after"]), step["changes"]
    patch = next(e for e in report["timeline"] if e["event"] == "changed" and e["object"]
                 and e["object"]["name"] == backend["name"])
    assert patch["object"]["kind"] == "Deployment" and "spec.template.spec.containers" not in json.dumps(patch)

    # Guide: a complete platform outage is critical; resolved by the runbook, it is left for review within 24 hours.
    assert report["urgency"] == {"level": "medium", "escalate": "within 24 hours",
                                 "why": "resolved by the runbook; review the root cause", "incident_severity": "critical"}
    assert report["urgency"]["level"] == healed.result.artifacts["platform_down_report"]["escalation"]["level"]


def test_seeded_secret_appears_nowhere(healed):
    assert_no_secret(healed)
    assert all(SECRET not in r["raw"] for r in healed.requests)


def test_notifications_reach_the_receiver_after_retries(healed):
    assert [(n["target"], n["ok"], n["attempts"]) for n in healed.report["notifications"]] == [
        ("webhook", True, 3), ("slack", True, 3), ("pagerduty", True, 3)]
    assert all("***" in n["url"] for n in healed.report["notifications"])
    for path in (WEBHOOK_PATH, SLACK_PATH, PAGERDUTY_PATH):
        got = [r["status"] for r in healed.requests if r["path"] == path]
        assert got == [500, 500, 202], (path, got)

    def last(path):
        request = [r for r in healed.requests if r["path"] == path][-1]
        assert request["content_type"] == "application/json"
        return json.loads(request["raw"])

    webhook = last(WEBHOOK_PATH)
    assert webhook["schema_version"] == 1 and webhook["runbook"] == "platform_down"
    assert webhook["result"] == "remediated" and webhook["findings"][0]["code"] == "WORKLOAD_CRASHLOOP"

    slack = last(SLACK_PATH)
    assert slack["text"].startswith("[MEDIUM] platform_down: remediated.")
    assert slack["blocks"][0]["type"] == "header" and any(b["type"] == "section" for b in slack["blocks"])

    pd = last(PAGERDUTY_PATH)
    assert pd["routing_key"] == ROUTING_KEY
    assert pd["event_action"] == "resolve", "healed: the incident is resolved"
    assert pd["dedup_key"] == "saasodoo-runbooks/platform_down"
    assert pd["payload"]["severity"] == "warning" and pd["payload"]["source"]
    assert "platform_down" in pd["payload"]["summary"]
    assert pd["payload"]["custom_details"]["result"] == "remediated"


def test_failed_notifications_never_fail_the_run(platform, tmp_path):
    faults.wait_healthy("backend")
    receiver = Receiver(always_fail=True)
    try:
        run = run_with_report("platform_down.yml", tmp_path, extravars={"platform_down_cooldown_minutes": 0},
                              envvars=dict(notify_env(receiver.url, "none", slack_url=closed_port_url()),
                                           SAASODOO_NOTIFY_RETRIES="1"))
    finally:
        receiver.stop()

    validate(run.report)
    assert run.report["result"] == "healthy" and run.report["urgency"]["level"] == "none"
    outcomes = {n["target"]: n for n in run.report["notifications"]}
    assert set(outcomes) == {"webhook", "slack", "pagerduty"}
    assert all(not n["ok"] and n["attempts"] == 2 and n["error"] for n in outcomes.values())
    assert outcomes["webhook"]["status"] == 500 and "cannot connect" in outcomes["slack"]["error"]
    assert len(receiver.to(WEBHOOK_PATH)) == 2 and len(receiver.to(PAGERDUTY_PATH)) == 2
    assert "notification to http://127.0.0.1:" in run.result.stdout and "failed after 2 attempt(s)" in run.result.stdout
    assert "## Notifications" in run.md_path.read_text()
    assert_no_secret(run)


SEEDED_PLAYBOOK = """
- name: A runbook that handles secrets
  hosts: localhost
  gather_facts: false
  vars:
    seeded_api_token: "tok-{{ saasodoo_db_password }}"
  tasks:
    - name: "PATCH | Log in as saasodoo:{{ saasodoo_db_password }}"
      ansible.builtin.debug:
        msg: "logged in"
      changed_when: true

    - name: PATCH | A change whose output is secret
      ansible.builtin.debug:
        msg: "{{ seeded_api_token }}"
      changed_when: true
      no_log: true

    - name: AUDIT | Publish the report
      ansible.builtin.set_stats:
        data:
          saasodoo_report:
            runbook: seeded_runbook
            guide_section: Tenant Isolation Problems
            started: "{{ now(utc=true, fmt='%Y-%m-%dT%H:%M:%SZ') }}"
            check_mode: false
            healthy_before: false
            first_broken_layer: null
            findings: &findings
              - code: TENANT_LOGIN_FAILED
                severity: high
                message: "Tenant acme: login refused for saasodoo:{{ saasodoo_db_password }}"
                tenant: acme
                evidence:
                  api_token: "{{ seeded_api_token }}"
                  killbill: "{{ saasodoo_component_secrets.backend.data.KILLBILL_API_KEY }}"
                  restarts: 4
                remediation: null
            actions: []
            skipped: []
            handed_over: []
            healthy_after: false
            remaining: *findings
            escalation: {level: high, when: within 2 hours, why: high-severity findings remain}
"""


def test_secrets_in_task_names_findings_and_no_log_results_are_redacted(tmp_path):
    playbook = tmp_path / "seeded.yml"
    playbook.write_text(SEEDED_PLAYBOOK)
    # Like playbooks/callback_plugins: ansible-runner replaces callback_plugins, the playbook's neighbour stays.
    (tmp_path / "callback_plugins").symlink_to(ROOT / "plugins" / "callback")
    killbill = "KB-" + secrets.token_hex(6)
    run = run_with_report(str(playbook), tmp_path / "reports", envvars={"SAASODOO_KILLBILL_API_KEY": killbill})

    validate(run.report)
    assert_no_secret(run, "tok-" + SECRET, killbill)
    assert "********" in run.json_path.read_text() and "********" in run.md_path.read_text()
    report = run.report
    assert report["runbook"] == "seeded_runbook" and report["source"]["stats_key"] == "saasodoo_report"
    assert report["result"] == "needs_human" and report["impact"]["tenants_affected"] == ["acme"]
    assert report["urgency"]["level"] == "high" and report["urgency"]["escalate"] == "within 2 hours"
    assert report["evidence"][0]["measurements"] == {"restarts": 4}
    changed = [e for e in report["timeline"] if e["event"] == "changed"]
    assert changed[0]["task"] == "PATCH | Log in as saasodoo:********"
    assert changed[1]["message"] == "output hidden (no_log)"
