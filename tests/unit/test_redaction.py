"""The shared redaction (plugins/module_utils/saasodoo_redact.py): every form a secret travels in, and its users.

Each case asserts the secret is gone and that no 6-character piece of its beginning is left behind.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest

from plugins.module_utils import saasodoo_redact as red

ROOT = Path(__file__).resolve().parents[2]

# Quotes, %, @ and spaces: what breaks naive escaping.
SECRET = "p@ss w'o%rd\"x-Zq81"
USER = "odoo"


def leaked_prefix(text: str, secret: str = SECRET, size: int = 6) -> str | None:
    """The first prefix (6+ characters) of the secret found in text, or None."""
    for end in range(len(secret), size - 1, -1):
        if secret[:end] in text:
            return secret[:end]
    return None


def assert_hidden(text: str, secret: str = SECRET) -> None:
    assert secret not in text, text
    assert leaked_prefix(text, secret) is None, (leaked_prefix(text, secret), text)
    assert red.MASK in text, text


def b64(data: str, urlsafe=False, pad=True) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    text = encode(data.encode()).decode()
    return text if pad else text.rstrip("=")


KNOWN_FORMS = {
    "plain": f"login refused for {USER}:{SECRET} on db",
    "quote": f"dsn=postgresql://{USER}:{urllib.parse.quote(SECRET, safe='')}@db/odoo",
    "quote default safe": f"next={urllib.parse.quote(SECRET)}",
    "quote_plus": f"form: password={urllib.parse.quote_plus(SECRET)}&user={USER}",
    "base64": f"data {b64(SECRET)} end",
    "base64 no padding": f"data {b64(SECRET, pad=False)} end",
    "urlsafe base64": f"data {b64(SECRET, urlsafe=True)} end",
    "urlsafe base64 no padding": f"data {b64(SECRET, urlsafe=True, pad=False)} end",
    "basic auth pair": f"Authorization: Basic {b64(USER + ':' + SECRET)}",
    "basic auth pair, urlsafe, no header": f"creds {b64('admin:' + SECRET, urlsafe=True, pad=False)}",
    "json-escaped": json.dumps({"msg": f"cannot log in with {SECRET}"}),
    "xml attribute": '<error message="p@ss w\'o%rd&quot;x-Zq81 refused"/>',
}


@pytest.mark.parametrize("name", sorted(KNOWN_FORMS))
def test_a_known_secret_is_hidden_in_every_form(name):
    text = KNOWN_FORMS[name]
    out = red.redact_text(text, {SECRET})
    assert_hidden(out)
    # and no encoded form of it either
    for form in (urllib.parse.quote(SECRET, safe=""), urllib.parse.quote_plus(SECRET), b64(SECRET, pad=False),
                 b64(SECRET, urlsafe=True, pad=False)):
        assert form not in out, (form, out)


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 4, 5])
def test_a_secret_inside_a_longer_base64_blob_is_hidden_at_any_alignment(offset):
    raw = ("h" * offset + SECRET + "-and-some-tail").encode()
    blob = base64.b64encode(raw).decode()
    for text in (f"blob {blob} end", f"data:text/plain;base64,{blob}", f"xx{blob[:-2]}"):
        out = red.redact_text(text, {SECRET})
        assert red.MASK in out, (offset, text, out)
        # what is left of the blob no longer decodes to the secret or a 6-character piece of it
        left = out.replace(red.MASK, " ")
        for token in left.split():
            body = token.split(",")[-1]
            try:
                decoded = base64.b64decode(body + "=" * (-len(body) % 4)).decode("latin-1")
            except Exception:
                continue
            assert leaked_prefix(decoded) is None, (offset, decoded)


def test_a_base64_token_holding_a_known_secret_goes_whole():
    # A 4-character password is too short for the base64 pieces searched in any blob: the token is decoded.
    short = "Pw9!"
    assert red.redact_text(f"creds {b64('admin:' + short)} ok", {short}) == "creds ******** ok"
    assert red.redact_text(f"creds {b64('admin:' + SECRET, urlsafe=True)} ok", {SECRET}) == "creds ******** ok"
    assert red.redact_text(f"creds {b64('admin:other-pw')} ok", {short}) == f"creds {b64('admin:other-pw')} ok"


PATTERN_CASES = {
    # name: (text, the value that must go)
    "dsn with user": ("connect postgresql://odoo:Zx9-pa55word-1@db:5432/odoo?sslmode=require", "Zx9-pa55word-1"),
    "dsn without user": ("REDIS_URL=redis://:r3dis-Pa55word@redis:6379/0", "r3dis-Pa55word"),
    "dsn with @ in the password": ("amqp://guest:gu@st-Secret9@mq/vhost", "gu@st-Secret9"),
    "basic header": ("curl -H 'Authorization: Basic " + b64("svc:B4sic-Secret-9") + "' https://x", b64("svc:B4sic-Secret-9")),
    "bearer header": ('{"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"}',
                      "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"),
    "bearer without header": ("token type Bearer ya29.a0AfH6SMBx-long-token", "ya29.a0AfH6SMBx-long-token"),
    "password=": ("host=db user=odoo password=Unkn0wn-Value sslmode=disable", "Unkn0wn-Value"),
    "passwd:": ("passwd: Unkn0wn-Passwd", "Unkn0wn-Passwd"),
    "secret=": ("CLIENT_SECRET=Unkn0wn-Secret-1 next", "Unkn0wn-Secret-1"),
    "token=": ("GET /api?token=Unkn0wn-T0ken&page=2", "Unkn0wn-T0ken"),
    "api_key:": ("api_key: Unkn0wn-Api-Key", "Unkn0wn-Api-Key"),
    "x-api-key header": ("X-Api-Key: Unkn0wn-Header-Key", "Unkn0wn-Header-Key"),
    "json key": ('{"db_password": "Unkn0wn \\"quoted\\" pw", "user": "odoo"}', 'Unkn0wn \\"quoted\\" pw'),
    "python dict": ("{'api_token': 'Unkn0wn-Py-Token', 'n': 1}", "Unkn0wn-Py-Token"),
    "sql PASSWORD": ("ALTER ROLE odoo WITH LOGIN PASSWORD 'Unkn0wn''Sql-Pw' VALID UNTIL 'infinity'", "Unkn0wn''Sql-Pw"),
    "sql password=": ("CREATE USER y WITH password='Unkn0wn-Sql-2'", "Unkn0wn-Sql-2"),
    "sql literal cut by the server": ("ALTER USER z PASSWORD 'Unkn0wn-Cut-Liter", "Unkn0wn-Cut-Liter"),
    "private key": ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretkeymaterial\n-----END RSA PRIVATE KEY-----",
                    "MIIEowIBAAKCAQEAsecretkeymaterial"),
}


@pytest.mark.parametrize("name", sorted(PATTERN_CASES))
def test_credentials_are_hidden_by_their_shape_without_knowing_them(name):
    text, value = PATTERN_CASES[name]
    out = red.redact_text(text)
    assert_hidden(out, value)


def test_pattern_redaction_keeps_the_shape_readable():
    assert red.redact_text("postgresql://odoo:pw-123456@db:5432/odoo") == "postgresql://odoo:********@db:5432/odoo"
    assert red.redact_text("redis://:pw-123456@redis:6379/0") == "redis://:********@redis:6379/0"
    assert red.redact_text('password="hunter22" user=x') == 'password="********" user=x'
    assert red.redact_text("ALTER ROLE x PASSWORD 'hunter2' VALID UNTIL 'infinity'") == \
        "ALTER ROLE x PASSWORD '********' VALID UNTIL 'infinity'"
    assert red.redact_text("Authorization: Bearer abc.def.ghi") == "Authorization: Bearer ********"


ORDINARY = [
    "tokens per second: 42",
    "password policy ok",
    "the password's length is checked",
    "password authentication failed for user odoo",
    "https://saasodoo.local:8443/web/login?redirect=/odoo",
    "redis://redis.saasodoo.svc:6379/0",
    "ssh git@github.com:org/repo.git",
    "Basic authentication is disabled",
    "Bearer authentication required",
    "secret_name: saasodoo-platform-tls",
    "secretName: saasodoo-platform-tls",
    "token_file=/var/run/secrets/kubernetes.io/serviceaccount/token",
    "Secret saasodoo/backend-secrets: key KILLBILL_API_KEY missing",
    "password: null",
    "backend: Deployment/saasodoo/backend pods are in CrashLoopBackOff, 5 restarts",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_readable(text):
    assert red.redact_text(text, {"Zz-unrelated-9"}) == text


def test_short_and_boolean_values_are_not_replaced_blindly():
    assert red.redact_text("abc yes true", {"abc", "yes", "true"}) == "abc yes true"
    assert red.secret_value("  yes ") is None and red.secret_value("abc") is None
    assert red.secret_value(" hunter22 ") == "hunter22"


def test_structures_keys_and_secret_named_values():
    data = {"msg": f"x {SECRET}", SECRET: 1, "db_password": "other-value", "password_file": "/run/pw",
            "items": [f"{b64(SECRET)}", ("t", 2)], "count": 3, "token_ok": True, "n": None}
    out = red.redact(data, {SECRET})
    assert out == {"msg": "x ********", "********": 1, "db_password": "********", "password_file": "/run/pw",
                   "items": ["********", ["t", 2]], "count": 3, "token_ok": True, "n": None}
    assert SECRET in data["msg"], "the input is not changed"


def test_redaction_runs_before_the_cut():
    # The secret starts 6 characters before the cut: cutting first would leave "p@ss w" behind.
    text = "x" * 94 + SECRET + " and more text after it"
    short = red.shorten(text, 100, {SECRET})
    assert len(short) <= 100 and short.endswith("...")
    assert leaked_prefix(short) is None, short
    # an unknown credential at the edge: its shape is recognised on the whole text
    dsn = "y" * 80 + " postgresql://odoo:Unkn0wn-Edge-Pw@db/odoo"
    assert leaked_prefix(red.shorten(dsn, 110), "Unkn0wn-Edge-Pw") is None
    assert red.shorten(None, 10) is None and red.cut("abcdef", 10) == "abcdef"


class Lazy(dict):
    """Ansible's lazily templated `vars`: reading an item renders it, and a broken template raises."""

    def __getitem__(self, key):
        value = dict.__getitem__(self, key)
        if value == "BROKEN":
            raise RuntimeError("undefined variable")
        return value


def test_secret_values_survive_a_failing_variable_and_skip_magic_ones():
    variables = Lazy({
        "saasodoo_db_password": "Db-Pa55word",
        "broken_token": "BROKEN",
        "nested": Lazy({"deep": {"api_key": "Deep-Api-Key"}, "bad": "BROKEN"}),
        "saasodoo_backend_secret_name": "saasodoo-backend-secrets",
        "hostvars": {"h": {"db_password": "never-walked"}},
        "restart_reason": "a reason",
    })
    assert red.secret_values(variables) == {"Db-Pa55word", "Deep-Api-Key"}
    assert red.env_secret_values({"K8S_AUTH_API_KEY": "Env-Api-Key", "VAULT_PASSWORD_FILE": "/p"}) == {"Env-Api-Key"}


def test_plugin_documentation_is_valid_yaml():
    # Ansible parses it when it loads the plugin: a bad DOCUMENTATION stops every run.
    import ast

    import yaml

    for path in ("plugins/callback/saasodoo_report.py", "plugins/filter/redaction.py", "plugins/filter/collect_logs.py"):
        tree = ast.parse((ROOT / path).read_text())
        doc = next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", "") == "DOCUMENTATION")
        assert yaml.safe_load(doc)["name"], path


# ------------------------------------------------------------------------------------------------
# The users of the shared redaction: each redacts the whole value before it cuts it.
# ------------------------------------------------------------------------------------------------

def edge_text(limit: int, secret: str = SECRET, before: int = 6) -> str:
    """A text whose secret starts `before` characters ahead of a cut at `limit` (marker "..." included)."""
    return "x" * (limit - 3 - before) + secret + " tail" * 40


def test_callback_timeline_evidence_and_markdown_redact_before_they_cut(tmp_path):
    from datetime import datetime, timezone

    from plugins.callback import saasodoo_report as r

    assert r.redact.__module__ == "saasodoo_redact" and r.redact_text.__module__ == "saasodoo_redact"  # shared code
    failed = r.timeline_entry("failed", "2026-01-01T10:00:00Z", "PATCH | x", host="localhost", action="command",
                              result={"msg": edge_text(500)}, secrets={SECRET})
    assert leaked_prefix(failed["message"]) is None and len(failed["message"]) <= 500, failed["message"]
    unknown = r.timeline_entry("failed", "2026-01-01T10:00:00Z", "PATCH | x", result={
        "msg": "y" * 480 + " postgresql://odoo:Unkn0wn-Edge-Pw@db/odoo"})
    assert leaked_prefix(unknown["message"], "Unkn0wn-Edge-Pw") is None, unknown["message"]
    diff = r.minimal_diff({"before": {"spec": {"cmd": "a"}}, "after": {"spec": {"cmd": edge_text(r.MAX_VALUE_CHARS)}}},
                          secrets={SECRET})
    assert leaked_prefix(json.dumps(diff)) is None, diff

    finding = {"code": "LOGIN_FAILED", "severity": "high", "message": "login refused",
               "evidence": [edge_text(r.MAX_VALUE_CHARS), "dsn " + b64(SECRET)],
               "ref": "Deployment/saasodoo/backend"}
    report = r.build_report({"runbook": "platform_down", "findings": [finding], "remaining": [finding],
                             "details_blob": edge_text(400), "actions": []},
                            [failed], {"playbook": "platform_down", "finished": "2026-01-01T10:01:00Z"}, {SECRET})
    for line in report["evidence"][0]["lines"]:
        assert leaked_prefix(line) is None and len(line) <= r.MAX_VALUE_CHARS, line
    markdown = r.render_markdown(report, {SECRET})
    assert leaked_prefix(markdown) is None
    # the files, from the raw report: the same
    json_path, md_path = r.write_report(
        r.build_report({"runbook": "platform_down", "findings": [finding]}, [], {}, {SECRET}),
        str(tmp_path), datetime(2026, 1, 1, tzinfo=timezone.utc), {SECRET})
    for path in (json_path, md_path):
        text = open(path).read()
        assert leaked_prefix(text) is None and b64(SECRET, pad=False) not in text, path


def test_cli_redacts_failure_messages_before_it_cuts_them():
    from saasodoo_runbooks import api

    assert leaked_prefix(api._one_line(edge_text(400), 400, {SECRET})) is None
    assert leaked_prefix(api._one_line("z" * 380 + " redis://:Unkn0wn-Cli-Pw@redis:6379/0", 400), "Unkn0wn-Cli-Pw") is None
    # a secret holding spaces is recognised before the spaces are squeezed
    spaced = "tok  en with  two spaces"
    assert spaced not in api._one_line(f"error: {spaced}!", 400, {spaced}) and "tok en with" not in api._one_line(
        f"error: {spaced}!", 400, {spaced})
    message = api.failure_message([], "ERROR! " + edge_text(400), 2, "failed", secrets={SECRET})
    assert leaked_prefix(message) is None, message
    assert api.redact({"msg": f"{urllib.parse.quote_plus(SECRET)}"}, {SECRET}) == {"msg": "********"}


def test_collect_logs_redacts_whole_lines_reasons_and_events():
    from plugins.filter import collect_logs as f

    assert leaked_prefix(f._unavailable_reason({"msg": edge_text(400)}, values=[SECRET])) is None
    reason = f._unavailable_reason({"msg": "w" * 370 + " Authorization: Bearer eyJ.Unkn0wn-Reason-Tok.sig"})
    assert leaked_prefix(reason, "eyJ.Unkn0wn-Reason-Tok.sig") is None, reason
    target = {"component": "backend", "namespace": "saasodoo", "pod": "be-1", "container": "backend"}
    bundle = f.collect_logs_bundle(
        [{"item": target, "log_lines": ["ERROR " + edge_text(500), "ERROR login " + urllib.parse.quote(SECRET)]}],
        [{"metadata": {"namespace": "saasodoo"}, "type": "Warning", "reason": "Failed",
          "involvedObject": {"kind": "Pod", "name": "be-1", "namespace": "saasodoo"},
          "message": "pull failed:\n" + SECRET, "lastTimestamp": "2026-01-01T10:00:00Z"}],
        {"error_patterns": ["ERROR"], "redact_values": [SECRET], "max_samples": 5,
         "window": {"since": "2026-01-01T09:00:00Z", "until": "2026-01-01T11:00:00Z"}})
    text = json.dumps(bundle)
    assert leaked_prefix(text) is None and red.MASK in text


def test_pg_health_redacts_the_whole_query_text_before_it_cuts_it():
    import importlib
    import sys

    from plugins.module_utils import saasodoo_findings

    sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
    sys.modules.setdefault("ansible.module_utils.saasodoo_redact", red)
    sys.modules.setdefault("ansible.module_utils.saasodoo_pg", importlib.import_module("plugins.module_utils.saasodoo_pg"))
    health = importlib.import_module("plugins.modules.saasodoo_pg_health")

    unknown = "Unkn0wn-Query-Pw-1"
    sql = "/* " + "q" * (health.QUERY_CHARS - 40) + " */ ALTER ROLE odoo PASSWORD '" + unknown + "'"
    assert leaked_prefix(health.redact_query(sql), unknown) is None, health.redact_query(sql)
    known = "SELECT 1 /* " + edge_text(health.QUERY_CHARS - len("SELECT 1 /* ")) + " */"
    assert leaked_prefix(health.redact_query(known, [SECRET])) is None
    assert len(health.redact_query(known, [SECRET])) <= health.QUERY_CHARS
    # the SQL reads the whole text; the cut is made in Python, after the redaction
    assert "left(" not in health.ACTIVITY_SQL_14 + health.ACTIVITY_SQL_10 + health._STAT_STATEMENTS_SQL

    class Conn:
        def __init__(self, rows):
            self.rows = rows

    calls = []

    def fake_query(conn, sql, params=None):
        calls.append(params)
        return [dict(r) for r in conn.rows]

    original = health.query
    health.query = fake_query
    try:
        rows = health.collect_activity(Conn([{"query": known, "blocked_by": []}]), 160000, [SECRET])
    finally:
        health.query = original
    assert leaked_prefix(rows[0]["query"]) is None and len(rows[0]["query"]) <= health.QUERY_CHARS


# ------------------------------------------------------------------------------------------------
# runbook_report: what set_stats publishes (AWX artifacts, the next workflow node's extra vars)
# ------------------------------------------------------------------------------------------------

def test_the_report_filter_takes_secrets_from_the_variables_the_environment_and_the_argument():
    from plugins.filter import redaction as flt

    variables = Lazy({"saasodoo_db_password": SECRET, "broken_password": "BROKEN",
                      "components": {"backend": {"env": {"KILLBILL_API_KEY": "Kb-Api-Key-1"}}}})
    report = {"findings": [{"code": "X", "message": f"login {SECRET}", "evidence": [b64("u:" + SECRET), "Kb-Api-Key-1",
                                                                                      "Env-Only-Secret"]}],
              "details": {"api_token": "anything", "note": "tokens per second: 5"}}
    out = flt.known_secrets(variables, ["Extra-Secret-9"], environ={"CI_TOKEN": "Env-Only-Secret"})
    assert out == {SECRET, "Kb-Api-Key-1", "Extra-Secret-9", "Env-Only-Secret"}
    clean = red.redact(report, out)
    assert clean["findings"][0]["message"] == "login ********"
    assert clean["findings"][0]["evidence"] == ["********"] * 3
    assert clean["details"] == {"api_token": "********", "note": "tokens per second: 5"}
    assert flt.FilterModule().filters()["saasodoo_redact"] is flt.saasodoo_redact
    assert flt.saasodoo_redact({"m": f"x {SECRET}"}, {"db_password": SECRET}) == {"m": "x ********"}


def test_the_role_redacts_before_set_stats():
    import yaml

    tasks = yaml.safe_load((ROOT / "roles" / "runbook_report" / "tasks" / "main.yml").read_text())
    build = next(t for t in tasks if "runbook_report_result" in (t.get("ansible.builtin.set_fact") or {}))
    assert "saasodoo_redact(vars)" in build["ansible.builtin.set_fact"]["runbook_report_result"]
    assert build.get("no_log") is True
    stats = next(t for t in tasks if "ansible.builtin.set_stats" in t)
    assert "runbook_report_result" in stats["ansible.builtin.set_stats"]["data"]
    assert not any("unredacted" in key for t in tasks for key in t.get("ansible.builtin.set_fact") or {}), \
        "the unredacted report is never stored as a fact"


ROLE_PLAYBOOK = """
- name: A runbook whose report quotes secrets
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    rr_db_password: "SECRET"
    rr_nested: {db: {api_token: "Nested-T0ken-77"}}
    rr_broken_password: "{{ undefined_variable_here }}"
  roles:
    - role: runbook_report
      vars:
        runbook_report_name: rrtest
        runbook_report_guide_section: Test
        runbook_report_findings:
          - code: LOGIN_FAILED
            severity: high
            message: "login refused for odoo:{{ rr_db_password }}"
            evidence:
              - "dsn=postgresql://odoo:{{ rr_db_password | urlencode }}@db/odoo"
              - "Authorization: Basic {{ ('odoo:' ~ rr_db_password) | b64encode }}"
              - "token {{ rr_nested.db.api_token }} and redis://:Unkn0wn-Redis-Pw@redis:6379"
              - "tokens per second: 5; password policy ok"
        runbook_report_extra:
          db_password: "{{ rr_db_password }}"
          note: "{{ rr_db_password | b64encode }}"
"""


def test_the_role_publishes_a_redacted_report(tmp_path):
    """runbook_report run by ansible-playbook on localhost (no cluster): set_stats, facts and output hold no secret."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    playbook = tmp_path / "rr.yml"
    secret = "p@ss w'o%rd-Zq81"  # a double quote would need YAML escaping in the playbook: covered above
    playbook.write_text(ROLE_PLAYBOOK.replace("SECRET", secret))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
               SAASODOO_REPORT_DIR=str(tmp_path / "reports"), ANSIBLE_NOCOLOR="1")
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output, _end = json.JSONDecoder().raw_decode(done.stdout)
    tasks = {t["task"]["name"].split(" : ", 1)[-1]: t["hosts"]["localhost"] for p in output["plays"] for t in p["tasks"]}
    stats = tasks["Publish the report for AWX and ansible-runner"]["ansible_stats"]["data"]["rrtest_report"]
    finding = stats["findings"][0]
    assert finding["message"] == "login refused for odoo:********"
    assert finding["evidence"] == ["dsn=postgresql://odoo:********@db/odoo", "Authorization: Basic ********",
                                   "token ******** and redis://:********@redis:6379",
                                   "tokens per second: 5; password policy ok"]
    assert stats["db_password"] == "********" and stats["note"] == "********"
    everything = done.stdout + done.stderr + "".join(p.read_text() for p in (tmp_path / "reports").iterdir())
    for value in (secret, urllib.parse.quote(secret, safe=""), b64(secret), "Nested-T0ken-77", "Unkn0wn-Redis-Pw"):
        assert value not in everything, value
    assert leaked_prefix(everything, secret) is None


LAZY_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    vault_answer: "{{ lookup('ansible.builtin.file', 'CREDS') | from_json }}"
    inline_mapping: "{{ {'api_key': 'Inline-Api-Key-42'} }}"
    listed: ["{{ 'listed-item' | record_render }}", {db_password: "{{ 'Listed-Db-Pw-5' | record_render }}"}]
    plain_port: "{{ 'port-template' | record_render }}"
    counted_password: "{{ 'Counted-Pw-77' | record_render }}"
  tasks:
    - name: Redact with the play's variables
      ansible.builtin.debug:
        msg: "{{ 'a Vault-Answer-Pw-91 b Inline-Api-Key-42 c Counted-Pw-77 d Listed-Db-Pw-5' | saasodoo_redact(vars) }}"
"""

RECORD_FILTER = """
def record_render(value):
    with open(__file__ + ".log", "a") as log:
        log.write(value + "\\n")
    return value

class FilterModule:
    def filters(self):
        return {"record_render": record_render}
"""


def test_the_report_filter_renders_only_templates_that_can_hold_a_secret(tmp_path):
    """Ansible's lazy `vars` renders what is read: the filter reads secret-named values and templates that can
    make a secret-named key (a parsed lookup, a mapping naming one), and leaves every other template unrendered
    (rendering them all cost 0.5 s of each runbook run)."""
    import os
    import subprocess
    import sys

    (tmp_path / "filters").mkdir()
    (tmp_path / "filters" / "record.py").write_text(RECORD_FILTER)
    (tmp_path / "creds.json").write_text(json.dumps({"user": "odoo", "password": "Vault-Answer-Pw-91"}))
    playbook = tmp_path / "lazy.yml"
    playbook.write_text(LAZY_PLAYBOOK.replace("CREDS", str(tmp_path / "creds.json")))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_FILTER_PLUGINS=f"{tmp_path / 'filters'}:{ROOT / 'plugins' / 'filter'}",
               SAASODOO_REPORT_DIR=str(tmp_path / "reports"), ANSIBLE_NOCOLOR="1")
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(playbook)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output, _end = json.JSONDecoder().raw_decode(done.stdout)
    msg = output["plays"][0]["tasks"][0]["hosts"]["localhost"]["msg"]
    assert msg == "a ******** b ******** c ******** d ********"
    rendered = (tmp_path / "filters" / "record.py.log").read_text().split()
    assert set(rendered) == {"Counted-Pw-77", "Listed-Db-Pw-5"}   # never 'port-template' nor 'listed-item'
