"""The secret scan every runbook run of the suite goes through (tests/runbooks.run_playbook).

The test bed's sample platform carries distinctive secret values where real platforms keep them
(inventories/local/group_vars/all/sample_platform.yml): the backend's Secret data (SUPABASE_KEY,
KILLBILL_API_KEY), a literal env value in the backend's pod spec (saasodoo_component_env), and
the Grafana datasource's basicAuthPassword in its ConfigMap. None of them may appear in anything
a run leaves behind - stdout, ansible-runner's job events (what AWX stores), set_stats artifacts,
the files of ansible-runner's private data dir, the incident reports it writes - neither whole, nor
URL-encoded, nor base64-encoded, nor as the first SECRET_PREFIX characters. A run that leaks one
fails its test, whichever test it is, with where and in which form.

Not scanned: the playbooks that plant the values (deploy_platform.yml, teardown_platform.yml), a
test's own reads (run_module), and the database password (the test bed's `saasodoo-local` is not
distinctive enough to scan for).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import urllib.parse
from pathlib import Path

import yaml

SECRET_PREFIX = 6
NOT_SCANNED = {"deploy_platform.yml", "teardown_platform.yml"}


class SecretLeak(AssertionError):
    """A seeded secret value was found in a run's output."""


@functools.lru_cache(maxsize=1)
def seeded() -> dict[str, str]:
    """name -> value of every secret the sample platform is seeded with."""
    from testbed import platform_vars

    v = platform_vars.load()
    out = {}
    data = ((v.get("saasodoo_component_secrets") or {}).get("backend") or {}).get("data") or {}
    for key in ("SUPABASE_KEY", "KILLBILL_API_KEY"):
        if data.get(key):
            out[f"Secret data {key}"] = str(data[key])
    for component, env in (v.get("saasodoo_component_env") or {}).items():
        for name, value in (env or {}).items():
            out[f"{component} pod env {name}"] = str(value)
    grafana = ((v.get("saasodoo_component_configmaps") or {}).get("grafana") or {}).get("data") or {}
    for source in (yaml.safe_load(grafana.get("datasources.yaml") or "") or {}).get("datasources") or []:
        for name, value in (source.get("secureJsonData") or {}).items():
            out[f"Grafana datasource {name}"] = str(value)
    return {k: s for k, s in out.items() if len(s) >= SECRET_PREFIX}


def forms(value: str) -> dict[str, str]:
    return {
        "whole": value,
        "URL-encoded": urllib.parse.quote(value, safe=""),
        "base64": base64.b64encode(value.encode()).decode(),
        f"first {SECRET_PREFIX} characters": value[:SECRET_PREFIX],
    }


def find(text: str, secrets: dict[str, str] | None = None) -> list[str]:
    """'<secret> (<form>)' for each seeded secret found in text. The prefix counts where a token starts
    (not preceded by a letter, digit, + or /): six characters inside a long base64 blob - a certificate in
    an event - would match by chance about once in a few dozen suites."""
    hits = []
    for name, value in (seeded() if secrets is None else secrets).items():
        for form, needle in forms(value).items():
            if not needle:
                continue
            if form.startswith("first "):
                found = re.search(r"(?<![A-Za-z0-9+/])" + re.escape(needle), text) is not None
            else:
                found = needle in text
            if found:
                hits.append(f"{name} ({form})")
                break
    return hits


def scan_run(playbook: str, stdout: str, events: str, artifacts: dict, private_dir: str,
             report_dir: Path, started: float) -> None:
    """Raise SecretLeak when any output of the run holds a seeded secret."""
    if Path(playbook).name in NOT_SCANNED or not seeded():
        return
    places = {"stdout": stdout, "set_stats artifacts": json.dumps(artifacts, default=str)}
    for event in json.loads(events or "[]"):
        data = event.get("event_data") or {}
        places[f"job event {event.get('counter')} {event.get('event')} (task {data.get('task')!r})"] = json.dumps(event, default=str)
    for root, _dirs, files in os.walk(private_dir):
        rel = os.path.relpath(root, private_dir)
        # env/: the run's inputs, not its outputs; job_events/: the events, scanned one by one above.
        if rel == "env" or rel.startswith("env" + os.sep) or rel.endswith(os.sep + "job_events"):
            continue
        for name in files:
            path = os.path.join(root, name)
            try:
                places[f"private data dir {os.path.join(rel, name)}"] = Path(path).read_text(errors="replace")
            except OSError:
                continue
    if report_dir.is_dir():
        for path in report_dir.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime >= started:
                    places[f"report {path.name}"] = path.read_text(errors="replace")
            except OSError:
                continue
    leaks = [f"{where}: {hit}" for where, text in places.items() for hit in find(text)]
    if leaks:
        raise SecretLeak(f"{Path(playbook).name} leaked seeded secrets (tests/secret_scan.py):\n  "
                         + "\n  ".join(leaks[:20]))
