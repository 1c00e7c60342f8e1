"""The incident report callback's pure parts: report, Markdown, redaction, urgency, notification bodies."""

from __future__ import annotations

import io
import json
import urllib.error
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from plugins.callback import saasodoo_report as r

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "incident-report.schema.json").read_text())
REF = "Deployment/saasodoo/backend"


def validate(report):
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(json.dumps(report)))


def crash_finding(**extra):
    finding = {"code": "WORKLOAD_CRASHLOOP", "severity": "critical", "layer": "backend", "component": "backend",
               "ref": REF, "message": f"backend: {REF} pods are in CrashLoopBackOff",
               "evidence": ["backend-1: container backend is waiting in CrashLoopBackOff, 5 restarts (threshold 3)",
                            "backend-2: container backend is waiting in CrashLoopBackOff, 7 restarts (threshold 3)"],
               "remediation": "restart_service"}
    finding.update(extra)
    return finding


def runbook_report(**overrides):
    """What platform_down.yml publishes after healing a crashlooping backend."""
    report = {"runbook": "platform_down", "guide_section": "Platform Down", "started": "2026-01-01T10:00:00Z",
              "check_mode": False, "healthy_before": False, "first_broken_layer": "backend",
              "findings": [crash_finding()], "actions": [f"rolling restart of {REF}"], "skipped": [],
              "handed_over": [], "healthy_after": True, "remaining": [],
              "escalation": {"level": "medium", "when": "within 24 hours",
                             "why": "resolved by the runbook; review the root cause"}}
    report.update(overrides)
    return report


def restart_entry():
    result = {"changed": True, "method": "patch",
              "result": {"kind": "Deployment", "metadata": {"name": "backend", "namespace": "saasodoo"},
                         "spec": {"template": {"spec": {"containers": [{"name": "backend"}]}}}},
              "diff": {"before": {"metadata": {"resourceVersion": "1", "annotations": {}}},
                       "after": {"metadata": {"resourceVersion": "2",
                                              "annotations": {"saasodoo.io/last-restart-at": "2026-01-01T10:00:05Z"}},
                                 "spec": {"template": {"metadata": {"annotations": {
                                     "kubectl.kubernetes.io/restartedAt": "2026-01-01T10:00:05Z"}}}}}}}
    return r.timeline_entry("changed", "2026-01-01T10:00:05Z", f"PATCH | Rolling restart of {REF}", host="localhost",
                            action="kubernetes.core.k8s", result=result)


RUN = {"playbook": "platform_down", "started": "2026-01-01T09:59:59Z", "finished": "2026-01-01T10:01:00Z",
       "failed": False, "failures": [], "stats_key": "platform_down_report"}


# -- finding the runbook's report in the custom stats -------------------------------------------

def test_report_is_found_under_a_key_ending_in_report_or_the_generic_key():
    assert r.find_runbook_report({"_run": {"platform_down_report": {"runbook": "x"}, "other": 1}}) == (
        "platform_down_report", {"runbook": "x"})
    assert r.find_runbook_report({"_run": {"saasodoo_report": {"runbook": "y"}}})[0] == "saasodoo_report"
    assert r.find_runbook_report({"localhost": {"scale_backend_report": {"runbook": "z"}}})[0] == "scale_backend_report"
    assert r.find_runbook_report({"_run": {"something": {}}}) == (None, None)
    assert r.find_runbook_report({}) == (None, None)


# -- the report ---------------------------------------------------------------------------------

def test_report_of_a_healed_crashloop_validates_and_tells_the_story():
    report = r.build_report(runbook_report(), [restart_entry()], RUN)

    validate(report)
    assert report["schema_version"] == 1
    assert report["result"] == "remediated"
    assert "CrashLoopBackOff" in report["description"] and "First broken layer: backend" in report["description"]
    assert "rolling restart of" in report["description"]
    assert report["impact"]["scope"] == "platform"
    assert report["impact"]["components_affected"] == ["backend"]
    assert report["impact"]["counts"]["critical"] == 1
    step = next(s for s in report["steps_taken"] if s["action"] == f"rolling restart of {REF}")
    assert step["at"] == "2026-01-01T10:00:05Z"
    assert "CrashLoopBackOff" in step["before"] and step["after"] == "healthy"
    assert step["changes"]["after"] == {
        "metadata.annotations.saasodoo.io/last-restart-at": "2026-01-01T10:00:05Z",
        "spec.template.metadata.annotations.kubectl.kubernetes.io/restartedAt": "2026-01-01T10:00:05Z"}
    assert report["evidence"][0]["code"] == "WORKLOAD_CRASHLOOP"
    assert report["evidence"][0]["measurements"] == {"restarts": 7}
    assert len(report["evidence"][0]["lines"]) == 2


def test_timeline_never_holds_the_full_object_nor_bookkeeping_fields():
    entry = restart_entry()
    assert entry["object"] == {"kind": "Deployment", "name": "backend", "namespace": "saasodoo"}
    assert "metadata.resourceVersion" not in entry["after"]
    assert "spec.template.spec.containers" not in json.dumps(entry)


def test_secret_objects_changes_are_not_recorded():
    change = r.minimal_diff({"before": {"data": {"k": "b2xk"}}, "after": {"data": {"k": "bmV3"}}}, kind="Secret")
    assert "b2xk" not in json.dumps(change) and "bmV3" not in json.dumps(change)


def test_no_log_results_stay_hidden_in_the_timeline():
    entry = r.timeline_entry("changed", "2026-01-01T10:00:00Z", "PATCH | set password", host="localhost",
                             action="kubernetes.core.k8s", result={"changed": True, "censored": "hidden"})
    assert entry["message"] == "output hidden (no_log)" and entry["object"] is None and entry["before"] is None


def test_failed_run_without_a_report_still_gets_one():
    failed = dict(RUN, failed=True, failures=["AUDIT | Diagnose on localhost: cannot reach the API server"])
    entry = r.timeline_entry("failed", "2026-01-01T10:00:00Z", "AUDIT | Diagnose", host="localhost",
                             action="kubernetes.core.k8s_info", result={"msg": "cannot reach the API server"})
    report = r.build_report(None, [entry], failed)

    validate(report)
    assert report["result"] == "failed"
    assert report["runbook"] == "platform_down"
    assert "cannot reach the API server" in report["description"]
    assert report["urgency"]["level"] == "high"
    assert report["impact"]["summary"].startswith("Unknown")


@pytest.mark.parametrize("overrides, result", [
    ({}, "remediated"),
    ({"healthy_before": True, "findings": [], "actions": [], "first_broken_layer": None}, "healthy"),
    ({"check_mode": True, "actions": [f"would restart {REF}"], "healthy_after": False,
      "remaining": [crash_finding()]}, "needs_human"),
    ({"actions": [], "healthy_after": False, "remaining": [crash_finding()]}, "needs_human"),
])
def test_result(overrides, result):
    assert r.run_result(runbook_report(**overrides)) == result
    assert r.run_result(runbook_report(**overrides), failed=True) == "failed"


# -- urgency, per the guide's "When to Escalate" -------------------------------------------------

@pytest.mark.parametrize("level, escalate", [
    ("critical", "immediately"), ("high", "within 2 hours"), ("medium", "within 24 hours"), ("none", "")])
def test_urgency_follows_the_runbooks_escalation(level, escalate):
    u = r.urgency(runbook_report(escalation={"level": level, "when": escalate, "why": "because"}))
    assert (u["level"], u["escalate"], u["why"]) == (level, escalate, "because")
    assert u["incident_severity"] == "critical"


def test_urgency_is_derived_from_what_remains_without_an_escalation():
    assert r.urgency({"findings": [crash_finding()], "remaining": [crash_finding()]})["escalate"] == "immediately"
    assert r.urgency({"findings": [crash_finding(severity="high")],
                      "remaining": [crash_finding(severity="high")]})["level"] == "high"
    assert r.urgency({"findings": [crash_finding(severity="low")],
                      "remaining": [crash_finding(severity="low")]})["level"] == "medium"
    assert r.urgency({"findings": [], "remaining": []})["level"] == "none"


def test_a_failed_run_is_at_least_high_and_critical_stays_critical():
    assert r.urgency(runbook_report(), failed=True)["level"] == "high"
    critical = runbook_report(escalation={"level": "critical", "when": "immediately", "why": "down"})
    assert r.urgency(critical, failed=True)["level"] == "critical"


# -- Markdown ------------------------------------------------------------------------------------

def test_markdown_has_one_heading_per_item_of_information_to_include():
    md = r.render_markdown(r.build_report(runbook_report(), [restart_entry()], RUN))
    headings = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert headings == ["Issue Description", "Impact Assessment", "Steps Taken", "Logs and Evidence",
                        "Timeline", "Urgency Level"]
    assert f"rolling restart of {REF} (at 2026-01-01T10:00:05Z)" in md
    assert "| 2026-01-01T10:00:05Z | changed |" in md
    assert "Escalate: within 24 hours" in md
    assert "Measurements: restarts=7" in md


def test_runbook_details_are_kept_in_json_and_markdown():
    rb = runbook_report(handed_over=["database saasodoo is damaged (DB_ROWS_MISSING) -> data_loss.yml"],
                        skipped=[{"ref": REF, "why": "cap reached"}],
                        checklist=[{"name": "pods", "status": "fail"}], measurements={"p95_ms": 812})
    report = r.build_report(rb, [], RUN)

    validate(report)
    assert report["details"] == {
        "handed_over": ["database saasodoo is damaged (DB_ROWS_MISSING) -> data_loss.yml"],
        "left_alone": [{"ref": REF, "why": "cap reached"}],
        "runbook": {"checklist": [{"name": "pods", "status": "fail"}], "first_broken_layer": "backend",
                    "measurements": {"p95_ms": 812}}}
    md = r.render_markdown(report)
    assert "- Handed over: database saasodoo is damaged (DB_ROWS_MISSING) -> data_loss.yml" in md
    assert f"- Left alone: {REF}: cap reached" in md
    assert '- measurements: `{"p95_ms": 812}`' in md
    # A report with nothing beyond the standard keys has empty details and no such section.
    bare = r.build_report({k: v for k, v in runbook_report().items() if k != "first_broken_layer"}, [], RUN)
    assert bare["details"] == {"handed_over": [], "left_alone": [], "runbook": {}}
    assert "handed over, left alone and measured" not in r.render_markdown(bare)


# -- redaction -----------------------------------------------------------------------------------

def test_secret_values_come_from_secret_names_nested_and_rendered():
    variables = {
        "saasodoo_db_password": "{{ lookup('env', 'X') }}",
        "saasodoo_backend_secret_name": "saasodoo-backend-secrets",
        "saasodoo_component_secrets": {"backend": {"name": "x-secrets", "data": {"KILLBILL_API_KEY": "kb-key-1234",
                                                                               "REDIS_URL": "redis://r:6379/0"}}},
        "github_token": "ghp_abcdef",
        "api_tokens": ["tok-one-1", "tok-two-2"],
        "restart_service_reason": "a reason",
        "short_password": "abc",
        "hostvars": {"h": {"db_password": "never-walked"}},
    }
    found = r.secret_values(variables, render=lambda v: "Rendered-S3cret")
    assert found == {"Rendered-S3cret", "kb-key-1234", "ghp_abcdef", "tok-one-1", "tok-two-2"}
    assert r.secret_values({"x_password": "{{ undefined }}"}, render=lambda v: 1 / 0) == set()
    assert r.env_secret_values({"SAASODOO_DB_PASSWORD": "envS3cret", "VAULT_PASSWORD_FILE": "/p", "HOME": "/root"}) == {
        "envS3cret"}


def test_redaction_covers_every_string_and_secret_keys(tmp_path):
    secret = "S33ded-Secr3t-unit"
    report = r.build_report(runbook_report(findings=[crash_finding(
        message=f"backend: cannot log in with {secret}", evidence={"db_password": "0ther-pw", "url": f"pg://u:{secret}@h"})]),
        [restart_entry()], RUN)
    clean = r.redact(report, {secret})
    text = json.dumps(clean)
    assert secret not in text and "0ther-pw" not in text and r.MASK in text

    json_path, md_path = r.write_report(report, str(tmp_path), datetime(2026, 1, 1, tzinfo=timezone.utc), {secret})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["platform_down-20260101T000000Z.json", "platform_down-20260101T000000Z.md",
                     "platform_down-latest.json", "platform_down-latest.md"]
    for path in tmp_path.iterdir():
        assert secret not in path.read_text(), path
    validate(json.loads(Path(json_path).read_text()))
    again = r.write_report(report, str(tmp_path), datetime(2026, 1, 1, tzinfo=timezone.utc), {secret})
    assert again[0].endswith("platform_down-20260101T000000Z-2.json"), "two runs in one second keep both reports"


def test_mask_url_keeps_scheme_and_host_only():
    assert r.mask_url("https://hooks.slack.com/services/T0/B0/XyZ") == "https://hooks.slack.com/***"
    assert r.mask_url("http://user:pw@127.0.0.1:8080/x?k=1") == "http://127.0.0.1:8080/***"
    assert r.mask_url("https://events.pagerduty.com") == "https://events.pagerduty.com"


# -- notifications -------------------------------------------------------------------------------

@pytest.mark.parametrize("level, severity", [("critical", "critical"), ("high", "error"), ("medium", "warning"),
                                             ("none", "info")])
def test_pagerduty_body_is_an_events_v2_event(level, severity):
    report = r.build_report(runbook_report(actions=[], healthy_after=False, remaining=[crash_finding()],
                                           escalation={"level": level, "when": "", "why": "x"}), [], RUN)
    body = r.pagerduty_body(report, "R0UT1NGKEY", source="awx-1", report_path="/r/x.json")
    assert body["routing_key"] == "R0UT1NGKEY"
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "saasodoo-runbooks/platform_down"
    assert body["payload"]["severity"] == severity
    assert body["payload"]["source"] == "awx-1"
    assert 0 < len(body["payload"]["summary"]) <= 1024
    assert body["payload"]["custom_details"]["report"] == "/r/x.json"
    assert body["payload"]["class"] == "WORKLOAD_CRASHLOOP"


def test_pagerduty_resolves_when_healed_whatever_the_threshold():
    report = r.build_report(runbook_report(), [], RUN)
    assert r.pagerduty_body(report, "k")["event_action"] == "resolve"
    options = {"notify_pagerduty_url": "https://pd/x", "notify_pagerduty_routing_key": "k",
               "notify_slack_url": "https://slack/x", "notify_min_level": "critical"}
    assert [t for t, _, _ in r.notification_plan(report, options)] == ["pagerduty"]


def test_slack_body_has_text_and_blocks():
    body = r.slack_body(r.build_report(runbook_report(), [restart_entry()], RUN), "/r/x.json")
    assert body["text"].startswith("[MEDIUM] platform_down: remediated.")
    assert body["blocks"][0]["type"] == "header" and len(body["blocks"][0]["text"]["text"]) <= 150
    assert any("rolling restart of" in b.get("text", {}).get("text", "") for b in body["blocks"])
    assert "/r/x.json" in body["blocks"][-1]["elements"][0]["text"]


def test_notifications_go_out_only_from_the_minimum_level():
    assert r.should_notify("critical", "high") and r.should_notify("high", "high")
    assert not r.should_notify("medium", "high") and not r.should_notify("none", "medium")
    assert r.should_notify("none", "none")
    report = r.build_report(runbook_report(escalation={"level": "high", "when": "within 2 hours", "why": "x"},
                                           remaining=[crash_finding(severity="high")], healthy_after=False), [], RUN)
    options = {"notify_webhook_url": "https://w/x", "notify_slack_url": "https://s/x",
               "notify_pagerduty_url": "https://pd/x", "notify_pagerduty_routing_key": "k"}
    assert [t for t, _, _ in r.notification_plan(report, dict(options, notify_min_level="high"))] == [
        "webhook", "slack", "pagerduty"]
    assert r.notification_plan(report, dict(options, notify_min_level="critical")) == []
    assert r.notification_plan(report, {"notify_min_level": "none"}) == []


class FakeResponse(io.BytesIO):
    status = 202

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def opener_failing(codes):
    calls = []

    def opener(request, timeout):
        calls.append((request.full_url, json.loads(request.data), timeout))
        code = codes[len(calls) - 1] if len(calls) <= len(codes) else 202
        if code == "refused":
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        if code >= 400:
            raise urllib.error.HTTPError(request.full_url, code, "Server Error", {}, None)
        return FakeResponse(b"{}")

    return opener, calls


def test_post_json_retries_with_exponential_backoff():
    opener, calls = opener_failing([500, "refused", 503])
    sleeps = []
    outcome = r.post_json("https://hooks.example/T0/secret-path", {"a": 1}, retries=3, backoff=0.5, timeout=5,
                          sleep=sleeps.append, opener=opener)
    assert outcome == {"ok": True, "attempts": 4, "status": 202, "error": None}
    assert sleeps == [0.5, 1.0, 2.0]
    assert all(c[1] == {"a": 1} and c[2] == 5 for c in calls)


def test_post_json_gives_up_and_never_leaks_the_url():
    url = "https://hooks.example/T0/secret-path"
    opener, calls = opener_failing([500] * 10)
    outcome = r.post_json(url, {}, retries=2, backoff=0, sleep=lambda s: None, opener=opener)
    assert (outcome["ok"], outcome["attempts"], outcome["status"]) == (False, 3, 500)
    assert "secret-path" not in outcome["error"]
    opener, calls = opener_failing([404])
    outcome = r.post_json(url, {}, retries=3, backoff=0, sleep=lambda s: None, opener=opener)
    assert outcome["attempts"] == 1 and not outcome["ok"], "a 4xx will not get better: no retry"


def test_a_change_made_through_saasodoo_k8s_change_is_matched_like_kubernetes_core():
    entry = restart_entry()
    wrapped = r.timeline_entry("changed", entry["at"], entry["task"], host="localhost", action="saasodoo_k8s_change",
                               result={"changed": True, "result": {"kind": "Deployment", "metadata": {
                                   "name": "saasodoo-backend", "namespace": "saasodoo-system"}}})
    assert wrapped["object"] == {"kind": "Deployment", "name": "saasodoo-backend", "namespace": "saasodoo-system"}
