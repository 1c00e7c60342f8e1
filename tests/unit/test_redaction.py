"""The shared redaction (plugins/module_utils/saasodoo_redact.py): every form a secret travels in, and its users.

Each case asserts the secret is gone and that no 6-character piece of its beginning is left behind.
"""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from plugins.module_utils import saasodoo_redact as red

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
