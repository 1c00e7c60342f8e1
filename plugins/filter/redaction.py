"""Filter saasodoo_redact: data with the play's secrets out, for what leaves the run (set_stats, printed summaries).

The redaction itself is plugins/module_utils/saasodoo_redact.py, the one the incident report callback, the
log collector, the modules and saasodoo_runbooks use. Unit tests: tests/unit/test_redaction.py.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

DOCUMENTATION = """
name: saasodoo_redact
short_description: Redact data before it leaves the run (set_stats artifacts, summaries)
description:
  - Returns a copy of the data in which every string is redacted and every value under a secret-looking key
    (C(password), C(token), C(secret), C(api_key), ...; names ending in C(name), C(ref), C(file), C(path), C(dir)
    excepted) is replaced with C(********).
  - Known secrets are the values of the play's variables (nested keys too) whose names look secret, read from
    the first argument (pass C(vars)); a variable whose template fails is skipped. Also the secret-looking
    environment variables of the controller (AWX credentials) and the optional second argument (a list).
  - Each known value is hidden as it is, URL-encoded, escaped and base64-encoded; credentials are hidden by
    their shape even when unknown (C(scheme://user:pw@), C(Authorization) headers (Basic, Bearer), C(password=...),
    C(PASSWORD '...')).
  - "Use it on a task with C(no_log: true): the task reads every secret of the play."
positional: _input, variables, secrets
options:
  _input:
    description: The data (dict, list or string).
    type: raw
    required: true
  variables:
    description: The variables whose secret-looking values to hide, normally C(vars).
    type: dict
  secrets:
    description: More values to hide.
    type: list
    elements: str
"""

# Loaded by path: on the controller a filter plugin cannot import `ansible.module_utils.<project file>`.
_spec = importlib.util.spec_from_file_location(
    "saasodoo_redact", Path(__file__).resolve().parent.parent / "module_utils" / "saasodoo_redact.py")
redaction = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(redaction)


def known_secrets(variables=None, secrets=None, environ=None):
    """The values to hide: secret-named variables (rendered lazily, a failing one skipped), secret-named
    environment variables, and `secrets`."""
    found = set(redaction.env_secret_values(os.environ if environ is None else environ))
    found |= {v for v in (redaction.secret_value(s) for s in secrets or []) if v}
    if variables is not None:
        found |= redaction.secret_values(variables)
    return found


def saasodoo_redact(data, variables=None, secrets=None):
    """data with the secrets out (see DOCUMENTATION)."""
    return redaction.redact(data, known_secrets(variables, secrets))


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {"saasodoo_redact": saasodoo_redact}
