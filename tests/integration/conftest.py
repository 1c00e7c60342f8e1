"""One test bed for the whole session: started (or found running) once, shared by every test.

Everything here is real: the control plane from testbed/cluster.py, PostgreSQL and Redis from
testbed/services.sh, the sample platform from playbooks/deploy_platform.yml.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.runbooks import KUBECONFIG, ROOT, run_playbook


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def testbed():
    """Start the control plane and the services (no-ops when `make testbed-up` already did)."""
    os.environ.setdefault("KUBECONFIG", str(KUBECONFIG))
    os.environ.setdefault("K8S_AUTH_KUBECONFIG", str(KUBECONFIG))
    _run([sys.executable, "testbed/cluster.py", "up"])
    _run(["bash", "testbed/services.sh", "up"])
    _run([sys.executable, "testbed/endpoints.py", "up"])
    yield


@pytest.fixture(scope="session")
def platform(testbed):
    """The sample platform, deployed once per session (idempotent when already there)."""
    result = run_playbook("deploy_platform.yml")
    assert result.rc == 0, result.stdout[-4000:]
    from testbed import platform_vars

    return platform_vars.load()
