"""saasodoo-runbooks against the real test bed, run as a pipeline runs it: a subprocess, exit codes, files.

Nothing is mocked: the backend really crash-loops, the chain really heals it; a ServiceAccount's
bearer token (K8S_AUTH_* only, as AWX injects it) really lists the cluster; an unreachable API
really refuses the connection.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from saasodoo_runbooks import api
from testbed import faults
from tests.runbooks import KUBECONFIG, ROOT

SECRET = "Cli-S3cret-" + secrets.token_hex(8)
# SECRET stands in for the database password, so the data layer's session (which would rightly be
# refused: PG_LOGIN_REJECTED) is off here; test_platform_down covers it with the real password.
NO_DATA_CHECK = ("-e", '{"platform_down_check_data": false}')
K8S_AUTH = ("KUBECONFIG", "K8S_AUTH_KUBECONFIG", "K8S_AUTH_CONTEXT", "K8S_AUTH_HOST", "K8S_AUTH_API_KEY",
            "K8S_AUTH_SSL_CA_CERT", "K8S_AUTH_VERIFY_SSL")


def cli(*args: str, env: dict | None = None, kubeconfig: bool = True, timeout: int = 300):
    """python -m saasodoo_runbooks ARGS from the project directory, with the test bed's kubeconfig or none."""
    full = {k: v for k, v in os.environ.items() if k not in K8S_AUTH}
    if kubeconfig:
        full.update(KUBECONFIG=str(KUBECONFIG), K8S_AUTH_KUBECONFIG=str(KUBECONFIG))
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "saasodoo_runbooks", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=timeout, check=False)


def cluster_endpoint() -> tuple[str, str]:
    """(API server URL, CA file) of the test bed, from its kubeconfig."""
    config = yaml.safe_load(KUBECONFIG.read_text())
    cluster = config["clusters"][0]["cluster"]
    return cluster["server"], cluster["certificate-authority"]


def all_healthy(platform) -> None:
    for component in platform["saasodoo_components"]:
        faults.wait_healthy(component)


def assert_no_secret(secret: str, *texts: str, directory: Path | None = None) -> None:
    for text in texts:
        assert secret not in text
    for path in sorted(directory.rglob("*")) if directory else []:
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), f"the secret leaked into {path}"


def test_chain_diagnoses_heals_and_verifies_a_crashlooping_backend(platform, tmp_path):
    backend = platform["saasodoo_components"]["backend"]
    ref = f"Deployment/{backend['namespace']}/{backend['name']}"
    faults.wait_healthy("backend")
    fault = faults.crashloop("backend")
    try:
        done = cli("chain", "platform_down:check", "platform_down", "platform_down:check",
                   "--json", "--junit", str(tmp_path / "j.xml"), "-e", "platform_down_cooldown_minutes=0",
                   "-e", f"saasodoo_db_password={SECRET}", *NO_DATA_CHECK,
                   env={"SAASODOO_REPORT_DIR": str(tmp_path / "reports"), "SAASODOO_DB_PASSWORD": SECRET})
    finally:
        fault.undo()

    assert done.returncode == 10, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout)  # stdout is the JSON summary and nothing else
    assert summary["outcome"] == "remediated" and summary["exit_code"] == 10
    assert "[platform_down" not in done.stderr, "--json must keep the progress quiet"
    diagnose, heal, verify = summary["steps"]
    assert [s["step"] for s in summary["steps"]] == ["platform_down:check", "platform_down", "platform_down:check"]
    assert [s["result"] for s in summary["steps"]] == ["needs_human", "remediated", "healthy"]
    assert all(s["rc"] == 0 and s["status"] == "successful" for s in summary["steps"])
    assert ("WORKLOAD_CRASHLOOP", "backend") in {(f["code"], f["component"]) for f in diagnose["report"]["findings"]}
    assert diagnose["check"] is True and diagnose["report"]["escalation"]["level"] == "critical"
    assert f"would restart {ref}" in diagnose["report"]["actions"]
    assert heal["check"] is False and f"rolling restart of {ref}" in heal["report"]["actions"]
    assert heal["changed"] > 0 and heal["report"]["healthy_after"] is True
    assert verify["report"]["findings"] == [] and verify["report"]["check_mode"] is True
    for s in summary["steps"]:
        files = s["report_files"]
        assert Path(files["json"]).parent == tmp_path / "reports"
        assert Path(files["json"]).is_file() and Path(files["md"]).is_file()
        assert json.loads(Path(files["json"]).read_text())["runbook"] == "platform_down"
        assert s["duration_seconds"] > 0
    assert len({s["report_files"]["json"] for s in summary["steps"]}) == 3

    junit = ET.parse(tmp_path / "j.xml").getroot()
    assert [s.get("name") for s in junit.findall("testsuite")] == [
        "1 platform_down:check", "2 platform_down", "3 platform_down:check"]
    assert junit.find("testsuite[1]").get("failures") != "0"
    assert junit.find("testsuite[3]").get("failures") == "0"
    assert_no_secret(SECRET, done.stdout, done.stderr, directory=tmp_path)


def test_run_on_a_healthy_platform_exits_0_without_leaking_a_secret(platform, tmp_path):
    all_healthy(platform)

    done = cli("run", "platform_down", "-e", f"saasodoo_db_password={SECRET}", *NO_DATA_CHECK,
               env={"SAASODOO_REPORT_DIR": str(tmp_path), "SAASODOO_DB_PASSWORD": SECRET})

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Outcome: healthy (exit 0): nothing found" in done.stdout
    # Not a TTY: plain progress lines with the task and the elapsed seconds.
    assert "] AUDIT | List nodes, workloads and pods cluster-wide" in done.stderr and "[platform_down " in done.stderr
    assert len(list(tmp_path.glob("platform_down-2*.json"))) == 1
    assert_no_secret(SECRET, done.stdout, done.stderr, directory=tmp_path)


# The permissions platform_down needs: read the cluster, restart and scale workloads.
RUNBOOK_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets",
                                          "controllerrevisions"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods", "nodes", "events"], "verbs": ["get", "list", "watch"]},
]


@pytest.fixture
def service_account(testbed):
    """A ServiceAccount runbook-ci in a namespace of its own, its ClusterRole, and a bearer token."""
    api_client = faults.api()
    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    suffix = secrets.token_hex(3)
    ns, role = f"runbook-ci-{suffix}", f"saasodoo-runbook-ci-{suffix}"
    core.create_namespace({"metadata": {"name": ns}})
    try:
        core.create_namespaced_service_account(ns, {"metadata": {"name": "runbook-ci"}})
        rbac.create_cluster_role({"metadata": {"name": role}, "rules": RUNBOOK_RULES})
        token = core.create_namespaced_service_account_token(
            "runbook-ci", ns, {"spec": {"expirationSeconds": 900}}).status.token

        def bind() -> None:
            rbac.create_cluster_role_binding({
                "metadata": {"name": role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": "runbook-ci", "namespace": ns}]})

        yield token, bind
    finally:
        for delete, name in ((rbac.delete_cluster_role_binding, role), (rbac.delete_cluster_role, role),
                             (core.delete_namespace, ns)):
            try:
                delete(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def test_a_bearer_token_alone_is_enough(platform, service_account, tmp_path):
    """K8S_AUTH_HOST / K8S_AUTH_API_KEY / K8S_AUTH_SSL_CA_CERT only, as AWX's credential injects them."""
    token, bind = service_account
    server, ca = cluster_endpoint()
    home = tmp_path / "home"
    home.mkdir()  # no ~/.kube/config to fall back on
    env = {"HOME": str(home), "K8S_AUTH_HOST": server, "K8S_AUTH_API_KEY": token, "K8S_AUTH_SSL_CA_CERT": ca,
           "SAASODOO_REPORT_DIR": str(tmp_path / "reports")}

    # Before the binding the token is refused: proof that it, and nothing else, is what the run uses.
    refused = cli("run", "platform_down", "--check", "--json", env=env, kubeconfig=False)
    assert refused.returncode == 30, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert f"the Kubernetes API at {server} forbids what the runbook needs (403 Forbidden)" in refused.stderr

    bind()
    all_healthy(platform)
    done = cli("run", "platform_down", "--check", "--json", env=env, kubeconfig=False)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["outcome"] == "healthy"
    (only,) = summary["steps"]
    assert only["report"]["runbook"] == "platform_down" and only["report"]["findings"] == []
    assert Path(only["report_files"]["json"]).is_file() and Path(only["report_files"]["md"]).is_file()
    assert_no_secret(token, done.stdout, done.stderr, refused.stdout, refused.stderr, directory=tmp_path)


def test_an_unreachable_cluster_is_named(tmp_path):
    home = tmp_path / "home"
    home.mkdir()

    done = cli("run", "platform_down", "--check", kubeconfig=False,
               env={"HOME": str(home), "K8S_AUTH_HOST": "https://127.0.0.1:1", "K8S_AUTH_API_KEY": "not-a-token",
                    "SAASODOO_REPORT_DIR": str(tmp_path / "reports")})

    assert done.returncode == 30, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("saasodoo-runbooks: error: ")]
    assert len(errors) == 1
    assert "cannot reach the Kubernetes API at https://127.0.0.1:1 (connection refused)" in errors[0]
    assert "Outcome: failed (exit 30)" in done.stdout
    assert api.EXIT_FAILED == 30


def test_health_check_auto_health_check_heals_what_the_checklist_found(platform, tmp_path):
    """The guide's Quick Health Check as diagnosis and verification, the runbook in between chosen by its findings."""
    backend = platform["saasodoo_components"]["backend"]
    faults.wait_healthy("backend")
    fault = faults.crashloop("backend")
    items = '{"health_check_items": ["pods", "database", "redis", "external"], "platform_down_cooldown_minutes": 0}'
    try:
        done = cli("chain", "health_check", "auto", "health_check", "--json", "-e", items,
                   env={"SAASODOO_REPORT_DIR": str(tmp_path / "reports")}, timeout=900)
    finally:
        if not faults.component_healthy("backend"):
            fault.undo()

    assert done.returncode == 10, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["outcome"] == "remediated"
    # auto became the runbook the health check's finding names: platform_down.
    assert [s["step"] for s in summary["steps"]] == ["health_check", "platform_down", "health_check"]
    diagnose, heal, verify = summary["steps"]
    pods = [f for f in diagnose["report"]["findings"] if f.get("runbook") == "platform_down"]
    assert pods and any(backend["name"] in json.dumps(f) for f in pods), diagnose["report"]["findings"]
    assert f"rolling restart of Deployment/{backend['namespace']}/{backend['name']}" in heal["report"]["actions"]
    assert verify["result"] == "healthy" and verify["report"]["findings"] == []
    assert faults.component_healthy("backend")
