"""tests/secret_scan.py finds a seeded secret in every form a leak takes, and nothing else."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from tests import secret_scan

SECRETS = {"hook": "wh3Tc8Ly-hook-Fo1Vk7Gi"}


@pytest.mark.parametrize("text", [
    "env value wh3Tc8Ly-hook-Fo1Vk7Gi in a pod spec",
    "url=" + urllib.parse.quote("wh3Tc8Ly-hook-Fo1Vk7Gi", safe=""),
    '"data": {"hook": "' + base64.b64encode(b"wh3Tc8Ly-hook-Fo1Vk7Gi").decode() + '"}',
    "cut at the edge: wh3Tc8...",
])
def test_every_form_of_a_leak_is_found(text):
    hits = secret_scan.find(text, SECRETS)
    assert len(hits) == 1 and hits[0].startswith("hook ("), hits


def test_nothing_else_is_found():
    assert secret_scan.find("wh3Tc (too short), hook-Fo1Vk7Gi (not the start), xwh3Tc8Ly (inside a token)", SECRETS) == []


def test_a_leaking_run_fails_and_names_the_event(tmp_path):
    events = json.dumps([{"counter": 7, "event": "runner_on_ok",
                          "event_data": {"task": "AUDIT | Read it", "res": {"env": "wh3Tc8Ly-hook-Fo1Vk7Gi"}}}])
    original = secret_scan.seeded
    secret_scan.seeded = lambda: SECRETS
    try:
        with pytest.raises(secret_scan.SecretLeak, match=r"job event 7 runner_on_ok \(task 'AUDIT \| Read it'\): hook"):
            secret_scan.scan_run("health_check.yml", "", events, {}, str(tmp_path), tmp_path / "reports", 0)
        secret_scan.scan_run("health_check.yml", "clean", "[]", {"x": 1}, str(tmp_path), tmp_path / "reports", 0)
        # The playbooks that plant the values are not scanned.
        secret_scan.scan_run("deploy_platform.yml", "wh3Tc8Ly-hook-Fo1Vk7Gi", events, {}, str(tmp_path), tmp_path, 0)
    finally:
        secret_scan.seeded = original


def test_the_test_bed_is_seeded():
    found = secret_scan.seeded()
    assert {"Secret data SUPABASE_KEY", "backend pod env LEGACY_WEBHOOK_SECRET",
            "Grafana datasource basicAuthPassword"} <= set(found), found
