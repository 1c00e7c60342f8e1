"""Run the project's playbooks the way CI pipelines do: through ansible-runner."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ansible_runner

from tests import secret_scan

ROOT = Path(__file__).resolve().parent.parent
# ansible-runner starts `ansible-playbook` from PATH: use the one next to this interpreter.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")
KUBECONFIG = Path(os.environ.get("TESTBED_CACHE", ROOT / ".cache" / "testbed")) / "kubeconfig"


@dataclass
class RunResult:
    rc: int
    status: str
    stats: dict
    stdout: str
    artifacts: dict = field(default_factory=dict)
    # Every ansible-runner job event of the run as JSON text (what AWX stores): for secret scans.
    events: str = ""

    def count(self, key: str) -> int:
        """Sum of a recap counter (ok, changed, failures, ...) over all hosts."""
        return sum((self.stats.get(key) or {}).values())

    @property
    def changed(self) -> int:
        return self.count("changed")

    @property
    def failed(self) -> int:
        return self.count("failures") + self.count("dark")


def run_playbook(playbook: str, extravars: dict | None = None, check: bool = False, diff: bool = False,
                 envvars: dict | None = None, inventory: str | None = None,
                 event_handler: Callable[[dict], object] | None = None) -> RunResult:
    """event_handler: called with each job event as the run goes (to inject a fault mid-run)."""
    env = {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "KUBECONFIG": str(KUBECONFIG),
        "K8S_AUTH_KUBECONFIG": str(KUBECONFIG),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "SAASODOO_REPORT_DIR": str(ROOT / ".cache" / "test-reports"),
    }
    env.update(envvars or {})
    cmdline = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
    started = time.time() - 1
    t0, c0 = time.monotonic(), os.times()
    with tempfile.TemporaryDirectory(prefix="runner-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(ROOT),
            playbook=playbook if os.path.isabs(playbook) else str(ROOT / "playbooks" / playbook),
            inventory=inventory or str(ROOT / "inventories" / "local"),
            extravars=extravars or {},
            envvars=env,
            cmdline=cmdline or None,
            quiet=True,
            event_handler=(lambda event: event_handler(event) is not False) if event_handler else None,
        )
        stdout = runner.stdout.read()
        _log_run(playbook, check, t0, c0)
        artifacts = {}
        events = list(runner.events)
        for event in events:
            if event.get("event") == "playbook_on_stats":
                artifacts = (event.get("event_data") or {}).get("artifact_data") or {}
        result = RunResult(runner.rc, runner.status, runner.stats or {}, stdout, artifacts,
                           json.dumps(events, default=str))
        # Every runbook run of the suite: no seeded secret in anything it left (tests/secret_scan.py).
        secret_scan.scan_run(playbook, stdout, result.events, artifacts, private, Path(env["SAASODOO_REPORT_DIR"]), started)
        return result


def _log_run(playbook: str, check: bool, t0: float, c0: os.times_result) -> None:
    """With SAASODOO_RUN_LOG set (tests/parallel.py sets it per worker): one JSON line per playbook run,
    its wall seconds and the CPU seconds of ansible-playbook and everything it started (runs made at
    the same time from threads of one test count in each other's CPU: os.times sees all children)."""
    path = os.environ.get("SAASODOO_RUN_LOG")
    if not path:
        return
    c1 = os.times()
    cpu = c1.children_user + c1.children_system - c0.children_user - c0.children_system
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").removesuffix(" (call)"),
                              "playbook": Path(playbook).name, "check": check,
                              "wall": round(time.monotonic() - t0, 2), "cpu": round(cpu, 2)}) + "\n")


def run_module(module: str, args: dict | None = None, check: bool = False, envvars: dict | None = None) -> dict:
    """Run one module on localhost through ansible-runner; return its result dict (failed or not)."""
    env = {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "KUBECONFIG": str(KUBECONFIG),
        "K8S_AUTH_KUBECONFIG": str(KUBECONFIG),
        "ANSIBLE_NOCOLOR": "1",
    }
    env.update(envvars or {})
    import json

    with tempfile.TemporaryDirectory(prefix="runner-") as private:
        runner = ansible_runner.run(
            private_data_dir=private,
            project_dir=str(ROOT),
            host_pattern="localhost",
            module=module,
            module_args=json.dumps(args) if args else None,
            inventory=str(ROOT / "inventories" / "local"),
            envvars=env,
            cmdline="--check" if check else None,
            quiet=True,
        )
        for event in runner.events:
            if event.get("event") in ("runner_on_ok", "runner_on_failed"):
                result = dict(event["event_data"]["res"])
                # ansible-core 2.19 leaves `failed` out of a failed event's result.
                result["failed"] = event["event"] == "runner_on_failed"
                return result
        raise AssertionError(f"module {module} produced no result (rc={runner.rc}):\n{runner.stdout.read()[-3000:]}")


def assert_held_by_another_run(result: RunResult, report: dict, holder: str, details: dict) -> None:
    """The run found the platform's one-writer Lease held by another live run (testbed.faults.lease_held):
    it acted on nothing, handed over exactly one line naming the Lease, the holder, its details and since
    when, and ends as "needs a human"."""
    from saasodoo_runbooks import api
    from testbed import platform_vars

    lease = platform_vars.load()["saasodoo_lease"]
    assert report["actions"] == [], report["actions"]
    held = [h for h in report["handed_over"] if "holds the one-writer" in h]
    assert len(held) == 1, report["handed_over"]
    assert f"Lease {lease['namespace']}/{lease['name']} - {holder}" in held[0]
    assert all(f"{key} {value}" in held[0] for key, value in details.items()) and " since " in held[0], held[0]
    assert api.step_result(report, result.rc) == "needs_human"
