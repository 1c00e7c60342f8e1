"""The local inventory's database password: the test bed's default only outside AWX."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def password(*extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SAASODOO_DB_PASSWORD"}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    out = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-i", str(ROOT / "inventories" / "local"),
                          "-m", "ansible.builtin.debug", "-a", "var=saasodoo_db_password", "-o", *extra],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.split("=>", 1)[1])["saasodoo_db_password"]


def test_the_test_bed_default_outside_awx():
    assert password() == "saasodoo-local"


@pytest.mark.parametrize("job_var", ["awx_job_id", "tower_job_id"])
def test_an_awx_job_without_the_credential_gets_no_password(job_var):
    """AWX sets awx_job_id/tower_job_id on every job: there the committed default never applies, so a
    template without the SaaSOdoo Platform Database credential fails to log in instead of using it."""
    assert password("-e", f"{job_var}=42") == ""
