#!/usr/bin/env python3
"""Run cert-manager's controller on the test bed, as a local process watching one namespace.

    testbed/certmanager.py up [--namespace NS]   create the cert-manager CRDs the cluster lacks,
                                                 start the controller (a no-op when it already
                                                 runs for NS), wait until its caches have synced
    testbed/certmanager.py down                  stop it
    testbed/certmanager.py status                one line; exit 0 only when it is ready

The binary is `.cache/testbed/bin/cert-manager-controller`, built by testbed/build.sh from the
published module github.com/cert-manager/cert-manager (wrapper module testbed/go/cert-manager:
its main.go wires cert-manager's own certificate, CertificateRequest-approver, CA and Issuer
control loops; no webhook, no ACME, no leader election).

It watches ONE namespace (default `cert-manager-test`, or $CERTMANAGER_NAMESPACE): the sample
platform's Certificates in other namespaces are never touched. Its CRDs come from the module's
deploy/crds; a CRD that already exists (the sample platform installs minimal ones for
Certificate, Issuer and ClusterIssuer) is left as it is - the controller works with those.

Only the standard library is used, like testbed/cluster.py, whose process helpers it shares
(pid file and log under .cache/testbed/run/, crash detection while waiting).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster  # noqa: E402 - the test bed's process helpers, same cache and layout

NAME = "cert-manager-controller"
HEALTH = os.environ.get("CERTMANAGER_HEALTHZ", f"127.0.0.1:{20403 + cluster.PORT_OFFSET}")
DEFAULT_NAMESPACE = os.environ.get("CERTMANAGER_NAMESPACE", "cert-manager-test")
NAMESPACE_FILE = cluster.RUN / f"{NAME}.namespace"
GO_MOD = cluster.HERE / "go" / "cert-manager" / "go.mod"
READY_TIMEOUT = float(os.environ.get("CERTMANAGER_READY_TIMEOUT", "60"))


def module_version() -> str:
    match = re.search(r"^\s*(?:require\s+)?github\.com/cert-manager/cert-manager (v\S+)", GO_MOD.read_text(), re.M)
    if not match:
        raise cluster.TestbedError(f"cannot find the cert-manager version in {GO_MOD}")
    return match.group(1)


def crd_dir() -> Path:
    """deploy/crds of the module version build.sh downloaded (GOMODCACHE as build.sh sets it)."""
    modcache = cluster.GO_MODCACHE
    path = modcache / "github.com" / "cert-manager" / f"cert-manager@{module_version()}" / "deploy" / "crds"
    if not path.is_dir():
        raise cluster.TestbedError(f"{path} is missing: build cert-manager first (testbed/build.sh)")
    return path


def ready() -> bool:
    code, _ = cluster.http_get(f"http://{HEALTH}/readyz")
    return code == 200


def running_namespace() -> str | None:
    try:
        return NAMESPACE_FILE.read_text().strip()
    except OSError:
        return None


def state() -> str:
    pid = cluster.read_pid(NAME)
    if pid is None:
        return "crashed" if cluster.pid_file(NAME).exists() else "stopped"
    return "ready" if ready() else "starting"


def install_crds() -> None:
    binary = cluster.BIN / NAME
    result = subprocess.run([str(binary), "install-crds", f"--kubeconfig={cluster.KUBECONFIG}", f"--dir={crd_dir()}"],
                            capture_output=True, text=True, check=False, timeout=120)
    for line in result.stdout.splitlines():
        cluster.log(f"crd {line}")
    if result.returncode != 0:
        raise cluster.TestbedError(f"installing the cert-manager CRDs failed: {result.stderr.strip()}")


def cmd_up(namespace: str) -> int:
    if not (cluster.BIN / NAME).exists():
        raise cluster.TestbedError(f"{cluster.BIN / NAME} is missing: build it first (testbed/build.sh)")
    if not cluster.healthy("kube-apiserver"):
        raise cluster.TestbedError("the test bed's API server is not up: start it first (testbed/cluster.py up)")
    current = state()
    if current == "ready" and running_namespace() == namespace:
        cluster.log(f"{NAME}: already running for namespace {namespace}; nothing to start")
        return 0
    if current != "stopped":
        if current == "crashed":
            cluster.log(f"{NAME}: found crashed. Last lines of its log:\n{cluster.log_tail(NAME, 10)}")
        else:
            cluster.log(f"{NAME}: restarting for namespace {namespace} (was {running_namespace()}, {current})")
        cmd_down(quiet=True)
    install_crds()
    cluster.RUN.mkdir(parents=True, exist_ok=True)
    cluster.spawn(NAME, [
        f"--kubeconfig={cluster.KUBECONFIG}",
        f"--namespace={namespace}",
        f"--cluster-resource-namespace={namespace}",
        "--leader-elect=false",
        "--enable-certificate-owner-ref",
        f"--healthz-listen-address={HEALTH}",
        "--v=2",
    ])
    NAMESPACE_FILE.write_text(namespace + "\n")
    cluster.wait_for(f"{NAME} /readyz", ready, watch=[NAME], timeout=READY_TIMEOUT)
    cluster.log(f"{NAME}: issuing for namespace {namespace} (log {cluster.LOGS / (NAME + '.log')})")
    return 0


def cmd_down(quiet: bool = False) -> int:
    pid = cluster.read_pid(NAME)
    if pid is not None:
        if not quiet:
            cluster.log(f"{NAME}: stopping (pid {pid})")
        cluster.stop(NAME, pid)
    elif not quiet:
        cluster.log(f"{NAME}: was not running; nothing to stop")
    cluster.pid_file(NAME).unlink(missing_ok=True)
    NAMESPACE_FILE.unlink(missing_ok=True)
    return 0


def cmd_status() -> int:
    current = state()
    pid = cluster.read_pid(NAME)
    where = f"namespace {running_namespace()}" if pid else ""
    print(f"{NAME:24} {current:10} {'pid ' + str(pid) if pid else ''} {where}".rstrip())
    return 0 if current == "ready" else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace the controller watches (up)")
    args = parser.parse_args(argv[1:])
    try:
        if args.command == "up":
            return cmd_up(args.namespace)
        if args.command == "down":
            return cmd_down()
        return cmd_status()
    except cluster.TestbedError as exc:
        print(f"certmanager: ERROR: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv))
