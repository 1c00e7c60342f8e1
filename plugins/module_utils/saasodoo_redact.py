# -*- coding: utf-8 -*-
# SaaSOdoo Runbooks: redaction, written once.
#
# Only the standard library: the same file serves
#  - the modules (saasodoo_pg_health) and module_utils (saasodoo_pg), which import it as
#    `ansible.module_utils.saasodoo_redact` (AnsiballZ ships it, ansible.cfg's module_utils),
#  - the incident report callback, the filter plugins (collect_logs, saasodoo_redact used by the
#    runbook_report role) and saasodoo_runbooks (API and CLI), which load it by path,
# so a secret is hidden the same way in a report, a log bundle, an AWX artifact and the CLI's output.
# Unit tests: tests/unit/test_redaction.py.
"""Redaction: known secret values in every form they travel in, and credentials by their shape.

- Known values (from variables and environment variables whose names say they hold a secret) are
  replaced as they are, URL-encoded (quote and quote_plus), JSON- and XML-escaped, and base64-encoded
  (standard and URL-safe, with and without padding, alone or at any alignment inside a longer
  blob); a base64 token that decodes to something holding a known value (``user:password``) goes too.
- Credentials are hidden by their shape even when the value is unknown: ``scheme://user:pw@`` and
  ``scheme://:pw@``, ``Authorization: Basic|Bearer ...``, ``password=...``/``token: ...``/``"api_key":
  "..."`` pairs, PostgreSQL's ``PASSWORD '...'`` and private keys in PEM.
- ``shorten`` redacts the whole text before it cuts it: a secret at the edge of a cut never leaves
  its first characters behind.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import json
import re
from functools import lru_cache

try:
    from urllib.parse import quote, quote_plus
except ImportError:  # pragma: no cover - Python 2 targets are not supported by ansible-core 2.19
    from urllib import quote, quote_plus  # noqa: F401

MASK = "********"
# Names of variables whose values are secrets, and names that only refer to a secret.
SECRET_NAME = re.compile(r"password|passwd|secret|token|api_?key|private_key|routing_key", re.I)
NOT_SECRET_NAME = re.compile(r"(name|names|ref|file|path|dir)$", re.I)
MIN_SECRET_LENGTH = 4
NOT_SECRET_VALUES = frozenset(("true", "false", "yes", "no", "none", "null"))
# Magic and lazy variables: never walked (hostvars would template the whole inventory).
SKIP_VARS = frozenset(("hostvars", "vars", "groups", "group_names", "omit", "play_hosts", "ansible_play_hosts",
                       "ansible_play_hosts_all", "ansible_play_batch", "environment", "role_names",
                       "ansible_role_names", "ansible_dependent_role_names", "ansible_play_role_names"))
# Base64 cores shorter than this are not searched inside longer blobs (too many chance matches).
MIN_CORE_LENGTH = 6

# -- credentials by their shape ------------------------------------------------------------------
_PEM = re.compile(r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)")
# PostgreSQL: PASSWORD 'x', password='a''b'; an unterminated literal (a query text cut by the
# server) is hidden up to the end.
_SQL_PASSWORD = re.compile(r"(?i)(\bpassword(?:\s+|\s*=\s*)E?)'(?:[^']|'')*(?:'|$)")
# scheme://user:password@ and scheme://:password@ (the password up to the last @ before a / or space).
_URL_CREDENTIALS = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/@\"'<>]*:)[^\s/\"'<>]*@")
_AUTHORIZATION = re.compile(
    r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?\s*(?:(?:basic|bearer|token|digest|negotiate)\s+)?)"
    r"([^\s\"',;]+)")
_BEARER = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/-]{8,}=*)")
_BASIC = re.compile(r"(?i)(\bbasic\s+)([A-Za-z0-9+/_-]{6,}={0,2})")
_SECRET_KEY = (r"[A-Za-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|apikey|private[_-]?key"
               r"|routing[_-]?key|access[_-]?key)")
# key=value, key: value, "key": "value", 'key': 'value' (the key's quote is optional). A value that
# opens a structure ({, [) is not one secret: its own keys are looked at.
_KEY_VALUE = re.compile(
    r"(?i)(?P<head>\b" + _SECRET_KEY + r"(?![A-Za-z0-9_])[\"']?\s*(?::|=>?)\s*)"
    r"(?:\"(?P<dq>(?:[^\"\\]|\\.)*)\"|'(?P<sq>(?:[^'\\]|\\.|'')*)'|(?P<bare>[^\s\"',;&{}\[\]()]+))")
_B64_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


# -- which values are secrets ---------------------------------------------------------------------

def is_secret_name(name):
    name = "%s" % (name,)
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET_NAME.search(name)


def secret_value(value, min_length=MIN_SECRET_LENGTH):
    """The value as a plain str when it can be a secret (long enough, not a boolean word), else None."""
    if not isinstance(value, str):
        return None
    value = "".join([value]).strip()  # a plain str, also from a str subclass (Ansible's tagged values)
    if len(value) < min_length or value.lower() in NOT_SECRET_VALUES:
        return None
    return value


# A template under a name that does not say "secret" can still hold one only when it renders to data with a
# secret-named key: its text names one, parses text into data, or asks a lookup other than env (a vault's
# answer is a mapping). Everything else is left unrendered: Ansible's lazy `vars` renders a value when it is
# read, and rendering every template of an inventory cost 0.5 s of each runbook run (ansible-core 2.19).
_MAY_HOLD_SECRET_KEYS = re.compile(
    SECRET_NAME.pattern + r"""|from_yaml|from_json|vars\[|lookup\((?!\s*['"](ansible\.builtin\.)?env['"])|query\(|\bq\(""",
    re.I)


def _worth_reading(container, key, name):
    """False for an item of one of Ansible's lazy containers that is a template string (or a plain string)
    whose rendered value cannot be or hold a secret: `name` (its own or, in a list, its parent's) does not say
    secret, and its text gives no way to a secret-named key. Anything else is read."""
    native = dict if isinstance(container, dict) else list
    try:
        raw = native.__getitem__(container, key)
    except Exception:  # pylint: disable=broad-except  # not a plain container: read it
        return True
    if type(raw).__name__ != "_LazyValue" or not isinstance(getattr(raw, "value", None), str):
        return True
    if name is not None and is_secret_name(name):
        return True
    return bool(_MAY_HOLD_SECRET_KEYS.search(raw.value))


def _items(container, name=None):
    """(key, value) of a mapping or a list; an item that cannot be read (a failing lazy template) is left out,
    and so is a lazy template that cannot hold a secret (_worth_reading). `name`: the container's own name."""
    keys = list(container.keys()) if isinstance(container, dict) else range(len(container))
    for key in keys:
        if not _worth_reading(container, key, key if isinstance(container, dict) else name):
            continue
        try:
            yield key, container[key]
        except Exception:  # pylint: disable=broad-except  # an undefined or failing template
            continue


def secret_values(variables, render=None, depth=6):
    """Values of the (nested) variables whose names say they are secrets.

    `variables` may be Ansible's lazily templated mapping (a filter's `vars`): a variable whose template
    fails is skipped, not fatal. `render` turns a templated string into its value (None: strings that
    still hold a template are skipped); it may raise.
    """
    found = set()

    def visit(name, value, level):
        if level > depth:
            return
        if isinstance(value, (dict, list, tuple)):
            for key, sub in _items(value, name):
                visit(key if isinstance(value, dict) else name, sub, level + 1)
        elif isinstance(value, str) and name is not None and is_secret_name(name):
            text = value
            if "{{" in text or "{%" in text:
                if render is None:
                    return
                try:
                    text = render(value)
                except Exception:  # pylint: disable=broad-except  # says nothing about secrets
                    return
                if not isinstance(text, str):
                    text = str(text) if isinstance(text, (int, float)) and not isinstance(text, bool) else None
            secret = secret_value(text)
            if secret and "{{" not in secret:
                found.add(secret)

    if not hasattr(variables, "keys"):
        return found
    for key in list(variables.keys()):
        if key in SKIP_VARS or not _worth_reading(variables, key, key):
            continue
        try:
            value = variables[key]
        except Exception:  # pylint: disable=broad-except
            continue
        if isinstance(value, (str, dict, list, tuple)):
            visit(key, value, 0)
    return found


def env_secret_values(environ):
    """Values of environment variables whose names say they are secrets (AWX credentials, CI secrets)."""
    return set(secret_value(v) for k, v in (environ or {}).items() if is_secret_name(k) and secret_value(v))


# -- the forms a known value travels in -----------------------------------------------------------

def _xml_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _b64_forms(raw):
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(raw).decode("ascii")
        forms.update((text, text.rstrip("=")))
    return forms


def _b64_cores(raw):
    """The base64 characters that depend only on the value, for each of the 3 alignments in a longer blob."""
    cores = set()
    for offset in range(3):
        start = -(-8 * offset // 6)
        end = 8 * (offset + len(raw)) // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(b"\0" * offset + raw).decode("ascii")[start:end]
            if len(core) >= MIN_CORE_LENGTH:
                cores.add(core)
    return cores


@lru_cache(maxsize=1024)
def secret_forms(secret):
    """Every text a known secret can show up as: as is, URL-encoded, escaped, base64-encoded."""
    forms = set([secret])
    for form in (quote(secret, safe=""), quote(secret), quote_plus(secret), quote_plus(secret, safe="")):
        forms.update((form, _PERCENT.sub(lambda m: m.group(0).lower(), form)))
    for escaped in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        forms.update((escaped, json.dumps(escaped)[1:-1]))
    forms.update((_xml_escape(secret), secret.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                  .replace('"', "&quot;").replace("'", "&#x27;")))
    raw = secret.encode("utf-8")
    forms |= _b64_forms(raw)
    forms |= _b64_cores(raw)
    return frozenset(f for f in forms if f)


class _Known(object):
    """The compiled form of a set of known secrets (cached: the same set is used for many texts)."""

    def __init__(self, secrets):
        self.forms = sorted(set().union(*[secret_forms(s) for s in secrets]) if secrets else (),
                            key=lambda f: (-len(f), f))
        self.raws = tuple(s.encode("utf-8") for s in secrets)


@lru_cache(maxsize=64)
def _known(secrets):
    return _Known(secrets)


def _usable(secrets, min_length):
    if isinstance(secrets, str):
        secrets = (secrets,)
    out = set()
    for secret in secrets or ():
        if isinstance(secret, str):
            secret = "".join([secret])
            if len(secret) >= min_length and secret.lower() not in NOT_SECRET_VALUES:
                out.add(secret)
    return frozenset(out)


def _decodes_to_secret(token, raws):
    body = token.rstrip("=")
    if len(body) % 4 == 1:
        return False
    padded = body + "=" * (-len(body) % 4)
    for altchars in (None, b"-_"):
        if (altchars is None and ("-" in body or "_" in body)) or (altchars and ("+" in body or "/" in body)):
            continue
        try:
            decoded = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(raw in decoded for raw in raws):
            return True
    return False


def _looks_like_basic(token):
    body = token.rstrip("=")
    try:
        decoded = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_" if "-" in body or "_" in body
                                   else None, validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _key_value(match):
    for group in ("dq", "sq", "bare"):
        value = match.group(group)
        if value is not None:
            break
    if value in ("", MASK) or value.lower() in NOT_SECRET_VALUES:
        return match.group(0)
    quote_char = {"dq": '"', "sq": "'", "bare": ""}[group]
    return match.group("head") + quote_char + MASK + quote_char


def redact_patterns(text):
    """Credentials hidden by their shape, whatever their value."""
    if not text:
        return text
    text = _PEM.sub(lambda m: m.group(1) + MASK + m.group(2), text)
    text = _SQL_PASSWORD.sub(lambda m: m.group(1) + "'" + MASK + "'", text)
    text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _AUTHORIZATION.sub(lambda m: m.group(0) if m.group(2) == MASK else m.group(1) + MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK if re.search(r"[0-9._~+/-]", m.group(2)) else m.group(0), text)
    text = _BASIC.sub(lambda m: m.group(1) + MASK if _looks_like_basic(m.group(2)) else m.group(0), text)
    text = _KEY_VALUE.sub(_key_value, text)
    return text


def redact_text(text, secrets=(), patterns=True, min_length=MIN_SECRET_LENGTH):
    """text with every known secret (in any of its forms) and, with `patterns`, every credential-shaped
    part replaced by ********. `secrets` shorter than `min_length` are not replaced blindly."""
    if not isinstance(text, str):
        text = "%s" % (text,)
    known = _known(_usable(secrets, min_length))
    if known.raws:  # first: a blob holding a secret goes whole (user:password, a secret inside a longer value)
        text = _B64_TOKEN.sub(lambda m: MASK if _decodes_to_secret(m.group(0), known.raws) else m.group(0), text)
    for form in known.forms:
        if form in text:
            text = text.replace(form, MASK)
    if patterns:
        text = redact_patterns(text)
    return text


def redact(data, secrets=(), patterns=True):
    """A copy of data with every string redacted (keys too), and the values under secret-looking keys masked."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if isinstance(key, str):
                key = redact_text(key, secrets, patterns)
            if is_secret_name(key) and isinstance(value, (str, int, float)) and not isinstance(value, bool) \
                    and value != "":
                out[key] = MASK
            else:
                out[key] = redact(value, secrets, patterns)
        return out
    if isinstance(data, (list, tuple)):
        return [redact(v, secrets, patterns) for v in data]
    if isinstance(data, str):
        return redact_text(data, secrets, patterns)
    return data


def cut(text, limit, marker="..."):
    """text cut to `limit` characters, the cut marked. Only for text that is already redacted: use shorten."""
    if limit is None or len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def shorten(text, limit, secrets=(), patterns=True):
    """The whole text redacted, then cut to `limit` characters: a secret at the edge never leaves a prefix."""
    if text is None:
        return None
    return cut(redact_text(text, secrets, patterns), limit)
