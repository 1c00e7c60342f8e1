"""saasodoo_runbooks without a cluster: parsing, results and exit codes, JUnit, redaction, usage errors."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from saasodoo_runbooks import api, cli

ROOT = Path(__file__).resolve().parents[2]
REF = "Deployment/saasodoo-system/saasodoo-backend"


def crash(**extra):
    finding = {"code": "WORKLOAD_CRASHLOOP", "severity": "critical", "layer": "backend", "component": "backend",
               "ref": REF, "message": f"backend: {REF} pods are in CrashLoopBackOff",
               "evidence": ["saasodoo-backend-1: CrashLoopBackOff, 7 restarts (threshold 3)"],
               "remediation": "restart_service"}
    finding.update(extra)
    return finding


def report(**overrides):
    """What platform_down.yml publishes; the defaults are a healthy platform."""
    data = {"runbook": "platform_down", "guide_section": "Platform Down", "check_mode": False,
            "healthy_before": True, "first_broken_layer": None, "findings": [], "actions": [], "skipped": [],
            "handed_over": [], "healthy_after": True, "remaining": [],
            "escalation": {"level": "none", "when": "", "why": "nothing found"}}
    data.update(overrides)
    return data


CRITICAL = {"level": "critical", "when": "immediately", "why": "critical findings remain after the runbook"}
REVIEW = {"level": "medium", "when": "within 24 hours", "why": "resolved by the runbook; review the root cause"}
DIAGNOSED = report(check_mode=True, healthy_before=False, first_broken_layer="backend", findings=[crash()],
                   actions=[f"would restart {REF}"], healthy_after=False, remaining=[crash()], escalation=CRITICAL)
REMEDIATED = report(healthy_before=False, first_broken_layer="backend", findings=[crash()],
                    actions=[f"rolling restart of {REF}"], healthy_after=True, remaining=[], escalation=REVIEW)
HEALTHY_CHECK = report(check_mode=True)


def step(label, rep, rc=0, status="successful", error=None, failures=None):
    s = api.parse_step(label)
    return api.StepResult(step=s, rc=rc, status=status, result=api.step_result(rep, rc, status), report=rep,
                          report_files={"json": f"/r/{s.runbook}.json", "md": f"/r/{s.runbook}.md"}, duration=1.5,
                          started="2026-01-01T10:00:00Z", error=error, failures=failures or [])


def chain(*steps, planned=None):
    outcome, code, reason = api.chain_outcome(list(steps))
    return api.ChainResult(list(steps), planned or [s.step for s in steps], outcome, code, reason,
                           "2026-01-01T10:00:00Z", 10.0)


# ------------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, expected", [
    ("platform_down", api.Step("platform_down", False)),
    ("platform_down:check", api.Step("platform_down", True)),
    ("platform_down.yml", api.Step("platform_down", False)),
    ("playbooks/platform_down.yml:check", api.Step("platform_down", True)),
])
def test_steps_parse(text, expected):
    assert api.parse_step(text) == expected
    assert api.parse_step("platform_down:check").label == "platform_down:check"


@pytest.mark.parametrize("text", ["platform_down:run", "platform_down:", ":check", ""])
def test_bad_steps_are_refused(text):
    with pytest.raises(api.UsageError, match="RUNBOOK, RUNBOOK:check or auto"):
        api.parse_step(text)


def test_extravars_parse_like_ansible_playbook(tmp_path):
    (tmp_path / "vars.yml").write_text("platform_down_max_restarts: 1\nnested: {a: [1, 2]}\n")
    (tmp_path / "vars.json").write_text('{"platform_down_remediate": false}')
    got = api.parse_extravars(["platform_down_cooldown_minutes=0", "a=1 b='two words'", "@vars.yml",
                               "@" + str(tmp_path / "vars.json"), '{"c": 3}'], base_dir=tmp_path)
    assert got == {"platform_down_cooldown_minutes": "0", "a": "1", "b": "two words",
                   "platform_down_max_restarts": 1, "nested": {"a": [1, 2]}, "platform_down_remediate": False, "c": 3}


@pytest.mark.parametrize("value, message", [
    ("novalue", "expected key=value"),
    ("1abc=2", "expected key=value"),
    ("@missing.yml", "cannot read extra vars file missing.yml"),
    ("{not: [closed", "not a valid JSON/YAML mapping"),
    ("a='unterminated", "bad -e"),
])
def test_bad_extravars_are_usage_errors(tmp_path, value, message):
    with pytest.raises(api.UsageError, match=message):
        api.parse_extravars([value], base_dir=tmp_path)


def test_extravars_file_must_hold_a_mapping(tmp_path):
    (tmp_path / "list.yml").write_text("- a\n- b\n")
    with pytest.raises(api.UsageError, match="must hold a mapping"):
        api.parse_extravars(["@list.yml"], base_dir=tmp_path)


def test_inventory_resolution(tmp_path):
    assert api.resolve_inventory(None, ROOT) == str(ROOT / "inventories" / "local")
    assert api.resolve_inventory(str(tmp_path), ROOT) == str(tmp_path.resolve())
    assert api.resolve_inventory("localhost,", ROOT) == "localhost,"
    with pytest.raises(api.UsageError, match="inventory not found: /no/such/inventory"):
        api.resolve_inventory("/no/such/inventory", ROOT)


# ------------------------------------------------------------------------------- runbooks

def test_list_reads_the_guide_header_and_skips_helpers():
    books = {b.name: b for b in api.list_runbooks(ROOT)}
    assert "platform_down" in books
    assert not [n for n in books if n.startswith(("deploy_", "teardown_"))]
    assert books["platform_down"].guide == "Emergency Procedures > Platform Down (Severity: Critical)"
    assert books["platform_down"].to_dict()["playbook"] == "playbooks/platform_down.yml"


def test_list_falls_back_to_the_guide_tag(tmp_path):
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "dns_resolution.yml").write_text(
        "---\n- name: DNS\n  hosts: localhost\n  tags: [dns, guide_dns_resolution_problems]\n  tasks: []\n")
    (tmp_path / "playbooks" / "deploy_thing.yml").write_text("---\n- name: x\n  hosts: localhost\n  tasks: []\n")
    books = api.list_runbooks(tmp_path)
    assert [(b.name, b.guide, b.title) for b in books] == [("dns_resolution", "Dns Resolution Problems", "DNS")]


def test_unknown_runbook_lists_the_known_ones():
    with pytest.raises(api.UsageError, match=r"unknown runbook 'nope'; known runbooks: .*platform_down"):
        api.resolve_runbook("nope", ROOT)


def test_a_directory_that_is_not_a_project_is_refused(tmp_path):
    with pytest.raises(api.UsageError, match="not a runbook project"):
        api.find_project(tmp_path)


# ------------------------------------------------------------------------------- results and exit codes

@pytest.mark.parametrize("rep, rc, status, expected", [
    (report(), 0, "successful", "healthy"),
    (HEALTHY_CHECK, 0, "successful", "healthy"),
    (DIAGNOSED, 0, "successful", "needs_human"),
    (REMEDIATED, 0, "successful", "remediated"),
    (dict(REMEDIATED, healthy_after=False, remaining=[crash()], escalation=CRITICAL), 0, "successful", "needs_human"),
    (dict(REMEDIATED, escalation={"level": "high", "when": "within 2 hours", "why": "x"}), 0, "successful",
     "needs_human"),
    (report(handed_over=["backend OOMKilled -> backend_crashloop.yml"]), 0, "successful", "needs_human"),
    (report(findings=[crash(severity="medium")], remaining=[crash(severity="medium")]), 0, "successful",
     "needs_human"),
    (None, 0, "successful", "needs_human"),
    (REMEDIATED, 2, "failed", "failed"),
    (report(), 0, "timeout", "failed"),
])
def test_step_result(rep, rc, status, expected):
    assert api.step_result(rep, rc, status) == expected


def test_remaining_defaults_when_the_report_has_no_remaining_key():
    rep = {k: v for k, v in DIAGNOSED.items() if k != "remaining"}
    assert api.remaining_findings(rep) == [crash()]
    rep = {k: v for k, v in REMEDIATED.items() if k != "remaining"}
    assert api.remaining_findings(rep) == []


def test_diagnose_remediate_verify_is_remediated():
    outcome, code, reason = api.chain_outcome([step("platform_down:check", DIAGNOSED),
                                               step("platform_down", REMEDIATED),
                                               step("platform_down:check", HEALTHY_CHECK)])
    assert (outcome, code) == ("remediated", 10)
    assert "WORKLOAD_CRASHLOOP backend" in reason and f"rolling restart of {REF}" in reason


def test_single_remediating_run_is_remediated():
    assert api.chain_outcome([step("platform_down", REMEDIATED)])[:2] == ("remediated", 10)


def test_nothing_found_is_healthy():
    assert api.chain_outcome([step("platform_down:check", HEALTHY_CHECK), step("platform_down", report())]) == \
        ("healthy", 0, "nothing found")


def test_findings_left_at_the_end_need_a_human():
    outcome, code, reason = api.chain_outcome([step("platform_down:check", DIAGNOSED)])
    assert (outcome, code) == ("needs_human", 20)
    assert reason.startswith("platform_down:check: escalation critical (immediately)")
    assert "1 finding(s) remain: CRITICAL WORKLOAD_CRASHLOOP" in reason


def test_refused_remediation_needs_a_human():
    refused = report(handed_over=["backend: containers OOMKilled -> backend_crashloop.yml"])
    outcome, code, reason = api.chain_outcome([step("platform_down", refused)])
    assert (outcome, code) == ("needs_human", 20)
    assert "handed over: backend: containers OOMKilled" in reason


def test_a_failed_step_fails_the_chain():
    outcome, code, reason = api.chain_outcome([step("platform_down:check", DIAGNOSED),
                                               step("platform_down", None, rc=2, status="failed",
                                                    error="cannot reach the Kubernetes API at https://x:1")])
    assert (outcome, code) == ("failed", 30)
    assert reason == "step 2 (platform_down) failed: cannot reach the Kubernetes API at https://x:1"


def test_findings_gone_without_an_action_still_report_the_incident():
    outcome, code, reason = api.chain_outcome([step("platform_down:check", DIAGNOSED),
                                               step("platform_down:check", HEALTHY_CHECK)])
    assert (outcome, code) == ("remediated", 10)
    assert "gone without an action" in reason


def test_summary_lists_steps_not_run():
    planned = [api.parse_step(s) for s in ("platform_down:check", "platform_down", "platform_down:check")]
    c = chain(step("platform_down:check", None, rc=2, status="failed", error="boom"), planned=planned)
    data = c.to_dict()
    assert data["outcome"] == "failed" and data["exit_code"] == 30
    assert data["not_run"] == ["platform_down", "platform_down:check"]
    assert data["steps"][0]["step"] == "platform_down:check" and data["steps"][0]["check"] is True


# ------------------------------------------------------------------------------- failures explained

def test_unreachable_api_is_named(tmp_path):
    msg = ("Failed to get client due to HTTPSConnectionPool(host='127.0.0.1', port=1): Max retries exceeded with url: "
           "/version (Caused by NewConnectionError(...: Failed to establish a new connection: [Errno 111] "
           "Connection refused'))")
    assert api.explain_failure([msg], {"K8S_AUTH_HOST": "https://127.0.0.1:1"}) == \
        "cannot reach the Kubernetes API at https://127.0.0.1:1 (connection refused)"
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "clusters": [{"name": "c", "cluster": {"server": "https://api.example:6443"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}], "current-context": "ctx"}))
    assert api.explain_failure([msg], {"KUBECONFIG": str(kubeconfig)}) == \
        "cannot reach the Kubernetes API at https://api.example:6443 (connection refused)"


@pytest.mark.parametrize("msg, start", [
    ("Invalid kube-config file. No configuration found.", "no Kubernetes credentials"),
    ("(401) Reason: Unauthorized", "the Kubernetes API at https://h refused the credentials"),
    ('(403) Reason: Forbidden ... nodes is forbidden: User "system:serviceaccount:x:y"', "the Kubernetes API at https://h forbids"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "cannot verify the TLS certificate"),
    ("timed out after 180s waiting for the rollout", None),
])
def test_other_failures_are_explained(msg, start):
    got = api.explain_failure([msg], {"K8S_AUTH_HOST": "https://h"})
    assert got == start if start is None else got.startswith(start)


def test_failure_message_without_a_failed_task_reads_the_error_line():
    stdout = "PLAY [x]\n[ERROR]: the role 'nope' was not found\n"
    assert api.failure_message([], stdout, 1, "failed", {}) == "the role 'nope' was not found"
    assert api.failure_message([{"task": "T", "msg": "bad thing"}], "", 2, "failed", {}) == "bad thing (task: T)"


def test_report_files_are_parsed_from_the_callback_line(tmp_path):
    out = "PLAY RECAP\nIncident report: reports/pd-1.json, reports/pd-1.md\n"
    assert api.parse_report_files(out, tmp_path) == {"json": str(tmp_path / "reports/pd-1.json"),
                                                      "md": str(tmp_path / "reports/pd-1.md")}
    assert api.parse_report_files("nothing", tmp_path) is None


def test_the_runbook_report_is_found_in_the_artifacts():
    assert api.find_report({"platform_down_report": {"a": 1}, "x_report": {"b": 2}}, "platform_down") == {"a": 1}
    assert api.find_report({"other_report": {"b": 2}}, "platform_down") == {"b": 2}
    assert api.find_report({}, "platform_down") is None


# ------------------------------------------------------------------------------- environment and secrets

def test_runner_env_points_at_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("ANSIBLE_CALLBACK_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)
    env = api.runner_env(ROOT, {"FOO": 1}, report_dir="out")
    assert env["ANSIBLE_CONFIG"] == str(ROOT / "ansible.cfg")
    assert env["ANSIBLE_CALLBACK_PLUGINS"] == str(ROOT / "plugins" / "callback")
    assert env["SAASODOO_REPORT_DIR"] == str(tmp_path / "out")  # the caller's cwd, not the project's
    assert env["FOO"] == "1"


def test_secrets_are_collected_and_redacted():
    secrets = api.secret_values({"SAASODOO_DB_PASSWORD": "hunter22", "K8S_AUTH_API_KEY": "tok-123456",
                                 "password_file": "/etc/pw", "PATH": "/bin"},
                                {"saasodoo_db_password": "hunter22", "deep": {"api_token": "abcd1234"},
                                 "restore_backup_confirm": "yes"})
    assert secrets == {"hunter22", "tok-123456", "abcd1234"}
    assert api.redact({"k": ["x hunter22 y"], "hunter22": 1}, secrets) == {"k": ["x ******** y"], "********": 1}


# ------------------------------------------------------------------------------- progress

def test_progress_plain_lines_when_not_a_tty():
    out = io.StringIO()
    p = api.Progress(stream=out, tty=False, secrets={"s3cr3t"})
    p.start("platform_down:check")
    p.task("AUDIT | List nodes s3cr3t")
    p.finish("healthy (rc 0, 0 changed)")
    lines = out.getvalue().splitlines()
    assert lines[0] == "[platform_down:check] starting"
    assert lines[1].startswith("[platform_down:check ") and lines[1].endswith("] AUDIT | List nodes ********")
    assert lines[2].endswith("] healthy (rc 0, 0 changed)")
    assert "\r" not in out.getvalue()


def test_progress_one_updating_line_on_a_tty():
    out = io.StringIO()
    p = api.Progress(stream=out, tty=True)
    p.start("platform_down")
    p.task("PATCH | Rolling restart")
    p.finish("remediated")
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("remediated\n")
    assert "\r\033[K[platform_down " in text


def test_progress_disabled_prints_nothing():
    out = io.StringIO()
    p = api.Progress(stream=out, enabled=False)
    p.start("x")
    p.task("y")
    p.finish("z")
    assert out.getvalue() == ""


# ------------------------------------------------------------------------------- JUnit

def test_junit_one_suite_per_step_failures_for_remaining_findings():
    c = chain(step("platform_down:check", DIAGNOSED), step("platform_down", REMEDIATED),
              step("platform_down:check", HEALTHY_CHECK))
    root = ET.fromstring(api.junit_xml(c))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "2", "0")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["1 platform_down:check", "2 platform_down", "3 platform_down:check"]
    diag, fix, verify = suites
    assert [c.get("name") for c in diag.findall("testcase")] == ["WORKLOAD_CRASHLOOP backend", "diagnosis: healthy"]
    assert diag.find("testcase/failure").get("type") == "critical"
    assert "check mode: not fixed in this step" in diag.find("testcase/failure").get("message")
    assert fix.get("failures") == "0" and fix.find("testcase/system-out").text.startswith("fixed: CRITICAL")
    assert [c.get("name") for c in verify.findall("testcase")] == ["diagnosis: healthy"]
    props = {p.get("name"): p.get("value") for p in fix.findall("properties/property")}
    assert props["result"] == "remediated" and props["report_json"] == "/r/platform_down.json"


def test_junit_failed_step_is_an_error_and_secrets_are_masked():
    failed = step("platform_down", None, rc=2, status="failed", error="cannot reach the Kubernetes API at https://h",
                  failures=[{"task": "AUDIT | List nodes", "msg": "Connection refused pw=Sup3rSecret"}])
    root = ET.fromstring(api.junit_xml(chain(failed), secrets={"Sup3rSecret"}))
    error = root.find("testsuite/testcase/error")
    assert error.get("message") == "cannot reach the Kubernetes API at https://h"
    assert "Sup3rSecret" not in error.text and "********" in error.text
    assert root.get("errors") == "1"


# ------------------------------------------------------------------------------- the command line

def test_help_documents_the_exit_codes(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for line in ("0   healthy", "10  remediated", "20  needs_human", "30  failed", "2   usage error"):
        assert line in out


def test_argument_parsing():
    args = cli.build_parser().parse_args(
        ["chain", "platform_down:check", "platform_down", "-e", "a=1", "-e", "@f.yml", "--json", "--junit", "j.xml",
         "-i", "inv", "--timeout", "60"])
    assert args.steps == ["platform_down:check", "platform_down"]
    assert args.extra_vars == ["a=1", "@f.yml"] and args.json and args.junit == "j.xml"
    assert args.inventory == "inv" and args.timeout == 60
    args = cli.build_parser().parse_args(["run", "platform_down", "--check"])
    assert (args.runbook, args.check, args.json) == ("platform_down", True, False)


@pytest.mark.parametrize("argv, message", [
    (["run", "nope"], "unknown runbook 'nope'; known runbooks: "),
    (["chain", "platform_down:check", "nope:check"], "unknown runbook 'nope'; known runbooks: "),
    (["run", "platform_down", "-i", "/no/such/inventory"], "inventory not found: /no/such/inventory"),
    (["run", "platform_down", "-e", "oops"], "bad -e 'oops'"),
    (["chain", "platform_down:fix"], "bad step 'platform_down:fix'"),
    (["run", "platform_down", "--timeout", "0"], "--timeout must be a positive number"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, message):
    assert cli.main(argv + ["--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("saasodoo-runbooks: error: ") and message in err[0]
    if "unknown runbook" in message:
        assert "platform_down" in err[0]


def test_argparse_errors_exit_2(capsys):
    assert cli.main(["run"]) == 2
    assert cli.main(["frobnicate"]) == 2
    capsys.readouterr()


def test_list_command(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("RUNBOOK") and any(line.startswith("platform_down ") for line in out)
    assert cli.main(["list", "--json"]) == 0
    books = json.loads(capsys.readouterr().out)
    assert {"name": "platform_down", "playbook": "playbooks/platform_down.yml",
            "guide": "Emergency Procedures > Platform Down (Severity: Critical)",
            "title": "Platform Down | diagnose layer by layer and restore service"} in books


def test_human_summary():
    text = cli._human_summary(chain(step("platform_down:check", DIAGNOSED), step("platform_down", REMEDIATED),
                                    step("platform_down:check", HEALTHY_CHECK)))
    lines = text.splitlines()
    assert lines[0].startswith("platform_down:check  needs_human  rc 0")
    assert "  found: CRITICAL WORKLOAD_CRASHLOOP backend: " + REF + " pods are in CrashLoopBackOff" in lines
    assert f"  did: rolling restart of {REF}" in lines
    assert lines[-1].startswith("Outcome: remediated (exit 10): ")


# ------------------------------------------------------------------------------- auto: what the findings point to

def test_auto_picks_the_runbooks_the_findings_name_most_severe_first():
    found = {"check_mode": True, "actions": [],
             "findings": [{"code": "A", "severity": "medium", "runbook": "dns_resolution"},
                          {"code": "B", "severity": "critical", "runbook": "platform_down.yml"},
                          {"code": "C", "severity": "high", "runbook": "ingress_tls"},
                          {"code": "D", "severity": "high", "runbook": "ingress_tls"},
                          {"code": "E", "severity": "high", "runbook": "no_such_runbook"},
                          {"code": "F", "severity": "low"}]}
    known = {"platform_down", "ingress_tls", "dns_resolution", "metrics_collection"}
    assert api.runbooks_pointed_to(found, known) == ["platform_down", "ingress_tls", "dns_resolution"]
    assert api.runbooks_pointed_to(found, known, limit=1) == ["platform_down"]
    assert api.runbooks_pointed_to({"findings": []}, known) == []
    assert api.runbooks_pointed_to(None, known) == []


def test_auto_cannot_start_a_chain():
    assert api.parse_step("auto") == api.Step("auto", False)
    with pytest.raises(api.UsageError, match="cannot be the first step"):
        api.validate_steps([api.Step("auto")])
