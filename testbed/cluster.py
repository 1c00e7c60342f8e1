#!/usr/bin/env python3
"""Run the test bed's Kubernetes control plane as local processes on 127.0.0.1.

    testbed/cluster.py up       start etcd, kube-apiserver, kube-controller-manager,
                                kube-scheduler and kwok; create the simulated nodes
    testbed/cluster.py down     stop every component, leave no stray process
    testbed/cluster.py status   one line per component; exit 0 only when all are healthy
    testbed/cluster.py reset    down, then wipe the cluster's data (etcd)

Only the standard library is used, so it runs before the project's virtualenv exists.
The binaries come from testbed/build.sh; state, logs, certificates and the kubeconfig
live in the git-ignored cache (.cache/testbed, or $TESTBED_CACHE).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("TESTBED_CACHE", HERE.parent / ".cache" / "testbed")).resolve()
BIN = CACHE / "bin"
RUN = CACHE / "run"
PKI = RUN / "pki"
LOGS = RUN / "logs"
ETCD_DATA = RUN / "etcd"
KUBECONFIG = CACHE / "kubeconfig"
KWOK_CONFIG = HERE / "kwok" / "kwok.yaml"
# The per-machine cache testbed/build.sh keeps (Go module and build caches, built binaries), so
# a new clone on the same machine builds nothing; the CRDs of kwok and cert-manager are read
# from the module cache.
MACHINE_CACHE = Path(os.environ.get("TESTBED_MACHINE_CACHE")
                     or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "saasodoo-testbed")
GO_MODCACHE = Path(os.environ.get("GOMODCACHE_OVERRIDE") or MACHINE_CACHE / "go" / "mod")

HOST = "127.0.0.1"
# TESTBED_PORT_OFFSET moves every port, so a second test bed (another checkout, another
# TESTBED_CACHE) can run beside the first one.
PORT_OFFSET = int(os.environ.get("TESTBED_PORT_OFFSET", "0"))
PORTS = {name: port + PORT_OFFSET for name, port in {
    "etcd": 23790,
    "etcd-peer": 23800,
    "kube-apiserver": 16443,
    "kube-controller-manager": 20257,
    "kube-scheduler": 20259,
    "kwok": 20247,
}.items()}
# Order matters: each component needs the ones before it.
COMPONENTS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]

NODE_COUNT = int(os.environ.get("TESTBED_NODES", "3"))
NODE_CPU = os.environ.get("TESTBED_NODE_CPU", "8")
NODE_MEMORY = os.environ.get("TESTBED_NODE_MEMORY", "32Gi")
NODE_PODS = os.environ.get("TESTBED_NODE_PODS", "110")
READY_TIMEOUT = float(os.environ.get("TESTBED_READY_TIMEOUT", "180"))

START = time.monotonic()


class TestbedError(Exception):
    """A failure with a message meant for the engineer at the terminal."""


def log(msg: str) -> None:
    print(f"[testbed {time.monotonic() - START:6.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------- processes

def pid_file(name: str) -> Path:
    return RUN / f"{name}.pid"


def read_pid(name: str) -> int | None:
    try:
        pid = int(pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid, name) else None


def process_alive(pid: int, name: str) -> bool:
    """True when pid runs our binary `name` (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == str(BIN / name)


def stray_pids() -> list[tuple[int, str]]:
    """Every running process started from the test bed's bin directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            exe = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if exe.startswith(str(BIN) + "/"):
            found.append((int(entry.name), Path(exe).name))
    return found


def log_tail(name: str, lines: int = 25) -> str:
    path = LOGS / f"{name}.log"
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join("    " + line for line in text[-lines:])


def spawn(name: str, args: list[str]) -> int:
    binary = BIN / name
    if not binary.exists():
        raise TestbedError(f"{binary} is missing: build the control plane first (testbed/build.sh, or `make testbed-build`)")
    LOGS.mkdir(parents=True, exist_ok=True)
    logf = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    logf.write(f"\n==== started {time.strftime('%Y-%m-%dT%H:%M:%S')} ====\n".encode())
    logf.flush()
    proc = subprocess.Popen(
        [str(binary), *args],
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # outlives this script; `down` stops it
        close_fds=True,
    )
    pid_file(name).write_text(str(proc.pid))
    # The child may not have exec'd the binary yet; give it a moment before anyone checks.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and proc.poll() is None and not process_alive(proc.pid, name):
        time.sleep(0.05)
    log(f"{name}: started (pid {proc.pid}, log {LOGS / (name + '.log')})")
    return proc.pid


def stop(name: str, pid: int, timeout: float = 15) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid, name):
            break
        time.sleep(0.2)
    else:
        log(f"{name}: did not stop within {timeout:.0f}s, killing it")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # Reap it if it was our child (it is not, normally: start_new_session detaches it).
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------- PKI

def openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise TestbedError("openssl is not installed (apt-get install openssl)")
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TestbedError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def ensure_pki() -> None:
    """CA, apiserver serving cert, admin client cert, service-account key pair (once)."""
    PKI.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = PKI / "ca.key", PKI / "ca.crt"
    if not ca_crt.exists():
        log("pki: creating the cluster CA and certificates")
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt),
                "-days", "3650", "-subj", "/CN=saasodoo-testbed-ca")
    leaf = {
        "apiserver": ("/CN=kube-apiserver", "serverAuth",
                      "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,"
                      "DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"),
        "admin": ("/O=system:masters/CN=kubernetes-admin", "clientAuth", None),
    }
    for name, (subj, usage, san) in leaf.items():
        key, crt = PKI / f"{name}.key", PKI / f"{name}.crt"
        if crt.exists():
            continue
        csr = PKI / f"{name}.csr"
        ext = PKI / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment", f"extendedKeyUsage={usage}"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subj)
        openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
                "-out", str(crt), "-days", "3650", "-extfile", str(ext))
    sa_key = PKI / "sa.key"
    if not sa_key.exists():
        openssl("genrsa", "-out", str(sa_key), "2048")
        openssl("rsa", "-in", str(sa_key), "-pubout", "-out", str(PKI / "sa.pub"))


def write_kubeconfig() -> None:
    server = f"https://{HOST}:{PORTS['kube-apiserver']}"
    # JSON is valid YAML; kubectl, client-go and the Python client all read it.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "saasodoo-testbed",
                      "cluster": {"server": server, "certificate-authority": str(PKI / "ca.crt")}}],
        "users": [{"name": "testbed-admin",
                   "user": {"client-certificate": str(PKI / "admin.crt"), "client-key": str(PKI / "admin.key")}}],
        "contexts": [{"name": "saasodoo-testbed",
                      "context": {"cluster": "saasodoo-testbed", "user": "testbed-admin"}}],
        "current-context": "saasodoo-testbed",
    }
    KUBECONFIG.write_text(json.dumps(config, indent=2) + "\n")
    os.chmod(KUBECONFIG, 0o600)


# --------------------------------------------------------------------------- HTTP probes

def _ssl_context(client_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    if client_cert:
        ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    return ctx


def _insecure_context() -> ssl.SSLContext:
    # kube-controller-manager and kube-scheduler serve /healthz with a self-signed cert.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def http_get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 3) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return 0, str(exc)


def api(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    url = f"https://{HOST}:{PORTS['kube-apiserver']}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=_ssl_context()) as resp:  # noqa: S310 - loopback only
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return 0, {"message": str(exc)}


HEALTH = {
    "etcd": lambda: http_get(f"http://{HOST}:{PORTS['etcd']}/health"),
    "kube-apiserver": lambda: http_get(f"https://{HOST}:{PORTS['kube-apiserver']}/readyz", _ssl_context()),
    "kube-controller-manager": lambda: http_get(f"https://{HOST}:{PORTS['kube-controller-manager']}/healthz",
                                                _insecure_context()),
    "kube-scheduler": lambda: http_get(f"https://{HOST}:{PORTS['kube-scheduler']}/healthz", _insecure_context()),
    "kwok": lambda: http_get(f"http://{HOST}:{PORTS['kwok']}/healthz"),
}


def healthy(name: str) -> bool:
    code, body = HEALTH[name]()
    if name == "etcd":
        return code == 200 and '"health":"true"' in body.replace(" ", "")
    return code == 200


def wait_for(what: str, check, watch: list[str], timeout: float = READY_TIMEOUT) -> None:
    """Poll `check` until true; fail fast when a watched component's process dies."""
    started = time.monotonic()
    last_note = started
    while True:
        for name in watch:
            if read_pid(name) is None:
                raise TestbedError(f"{name} exited while waiting for {what}. Last lines of its log:\n{log_tail(name)}")
        if check():
            log(f"{what}: ready after {time.monotonic() - started:.1f}s")
            return
        now = time.monotonic()
        if now - started > timeout:
            details = "\n".join(f"--- {n} log:\n{log_tail(n, 15)}" for n in watch)
            raise TestbedError(f"timed out after {timeout:.0f}s waiting for {what}.\n{details}")
        if now - last_note >= 10:
            log(f"{what}: still waiting ({now - started:.0f}s)")
            last_note = now
        time.sleep(0.5)


# --------------------------------------------------------------------------- components

def args_for(name: str) -> list[str]:
    p = PORTS
    if name == "etcd":
        return [
            "--name=testbed", f"--data-dir={ETCD_DATA}",
            f"--listen-client-urls=http://{HOST}:{p['etcd']}", f"--advertise-client-urls=http://{HOST}:{p['etcd']}",
            f"--listen-peer-urls=http://{HOST}:{p['etcd-peer']}",
            f"--initial-advertise-peer-urls=http://{HOST}:{p['etcd-peer']}",
            f"--initial-cluster=testbed=http://{HOST}:{p['etcd-peer']}",
            "--unsafe-no-fsync", "--auto-compaction-retention=1", "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ]
    if name == "kube-apiserver":
        return [
            f"--etcd-servers=http://{HOST}:{p['etcd']}",
            f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={p['kube-apiserver']}",
            f"--tls-cert-file={PKI / 'apiserver.crt'}", f"--tls-private-key-file={PKI / 'apiserver.key'}",
            f"--client-ca-file={PKI / 'ca.crt'}",
            f"--service-account-key-file={PKI / 'sa.pub'}", f"--service-account-signing-key-file={PKI / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=Node,RBAC",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--v=1",
        ]
    if name == "kube-controller-manager":
        return [
            f"--kubeconfig={KUBECONFIG}", f"--authentication-kubeconfig={KUBECONFIG}",
            f"--authorization-kubeconfig={KUBECONFIG}",
            f"--bind-address={HOST}", f"--secure-port={p['kube-controller-manager']}",
            f"--service-account-private-key-file={PKI / 'sa.key'}", f"--root-ca-file={PKI / 'ca.crt'}",
            "--leader-elect=false", "--kube-api-qps=500", "--kube-api-burst=1000",
            "--node-monitor-grace-period=40s", "--v=1",
        ]
    if name == "kube-scheduler":
        return [
            f"--kubeconfig={KUBECONFIG}", f"--authentication-kubeconfig={KUBECONFIG}",
            f"--authorization-kubeconfig={KUBECONFIG}",
            f"--bind-address={HOST}", f"--secure-port={p['kube-scheduler']}",
            "--leader-elect=false", "--v=1",
        ]
    if name == "kwok":
        return [
            f"--kubeconfig={KUBECONFIG}", f"--config={KWOK_CONFIG}",
            "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--server-address={HOST}:{p['kwok']}", f"--node-ip={HOST}",
            "--node-lease-duration-seconds=40", "--cidr=10.244.0.1/16",
        ]
    raise KeyError(name)


def node_manifest(index: int) -> dict:
    name = f"kwok-worker-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/worker": "", "type": "kwok",
                "topology.kubernetes.io/zone": f"zone-{'abc'[(index - 1) % 3]}",
            },
        },
        "spec": {},
        # Node status may be set on create; kwok keeps the capacity it finds.
        "status": {
            "allocatable": {"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS, "ephemeral-storage": "100Gi"},
            "capacity": {"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": NODE_PODS, "ephemeral-storage": "100Gi"},
        },
    }


def ensure_nodes() -> None:
    for i in range(1, NODE_COUNT + 1):
        body = node_manifest(i)
        code, resp = api("GET", f"/api/v1/nodes/{body['metadata']['name']}")
        if code == 200:
            continue
        code, resp = api("POST", "/api/v1/nodes", body)
        if code not in (200, 201, 409):
            raise TestbedError(f"could not create node {body['metadata']['name']}: HTTP {code} {resp.get('message', '')}")
        log(f"node {body['metadata']['name']}: created ({NODE_CPU} CPU, {NODE_MEMORY})")


def nodes_ready() -> bool:
    code, resp = api("GET", "/api/v1/nodes?labelSelector=type%3Dkwok")
    if code != 200:
        return False
    ready = [
        n for n in resp.get("items", [])
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in n.get("status", {}).get("conditions", []))
    ]
    return len(ready) >= NODE_COUNT


def default_service_account() -> bool:
    code, _ = api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
    return code == 200


# --------------------------------------------------------------------------- commands

def component_states() -> dict[str, str]:
    states = {}
    for name in COMPONENTS:
        pid = read_pid(name)
        if pid is None:
            states[name] = "stopped" if not pid_file(name).exists() else "crashed"
        else:
            states[name] = "healthy" if healthy(name) else "unhealthy"
    return states


def cmd_up() -> int:
    missing = [n for n in COMPONENTS if not (BIN / n).exists()]
    if missing:
        raise TestbedError(f"missing binaries: {', '.join(missing)}. Build them first: testbed/build.sh")
    states = component_states()
    if all(s == "healthy" for s in states.values()):
        log("control plane already up; nothing to start")
        ensure_nodes()
        wait_for("nodes Ready", nodes_ready, watch=COMPONENTS)
        return 0
    broken = {n: s for n, s in states.items() if s in ("crashed", "unhealthy")}
    for name, state in broken.items():
        log(f"{name}: found {state}; restarting the control plane. Last lines of its log:\n{log_tail(name, 10)}")
    if any(s != "stopped" for s in states.values()):
        cmd_down(quiet=True)

    for d in (RUN, LOGS, ETCD_DATA):
        d.mkdir(parents=True, exist_ok=True)
    ETCD_DATA.chmod(0o700)
    ensure_pki()
    write_kubeconfig()

    spawn("etcd", args_for("etcd"))
    wait_for("etcd", lambda: healthy("etcd"), watch=["etcd"])
    spawn("kube-apiserver", args_for("kube-apiserver"))
    wait_for("kube-apiserver /readyz", lambda: healthy("kube-apiserver"), watch=["etcd", "kube-apiserver"])
    for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
        spawn(name, args_for(name))
    for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
        wait_for(f"{name} /healthz", lambda n=name: healthy(n), watch=COMPONENTS)
    wait_for("default ServiceAccount", default_service_account, watch=COMPONENTS)
    ensure_nodes()
    wait_for(f"{NODE_COUNT} kwok nodes Ready", nodes_ready, watch=COMPONENTS)
    log(f"test bed up. export KUBECONFIG={KUBECONFIG}")
    return 0


def cmd_down(quiet: bool = False) -> int:
    stopped = 0
    for name in reversed(COMPONENTS):
        pid = read_pid(name)
        if pid is not None:
            if not quiet:
                log(f"{name}: stopping (pid {pid})")
            stop(name, pid)
            stopped += 1
        pid_file(name).unlink(missing_ok=True)
    for pid, name in stray_pids():
        log(f"{name}: stray process {pid} (not in a pid file), stopping it")
        stop(name, pid)
        stopped += 1
    left = stray_pids()
    if left:
        raise TestbedError(f"processes still running after down: {left}")
    if not quiet:
        log("control plane stopped" if stopped else "control plane was not running; nothing to stop")
    return 0


def cmd_status() -> int:
    states = component_states()
    for name, state in states.items():
        pid = read_pid(name)
        print(f"{name:24} {state:10} {'pid ' + str(pid) if pid else ''}")
    if all(s == "healthy" for s in states.values()):
        print(f"{'nodes':24} {'ready' if nodes_ready() else 'NOT READY'}")
        print(f"KUBECONFIG={KUBECONFIG}")
        return 0 if nodes_ready() else 1
    return 1


def cmd_reset() -> int:
    cmd_down()
    shutil.rmtree(ETCD_DATA, ignore_errors=True)
    log("etcd data wiped; `up` starts an empty cluster")
    return 0


def main(argv: list[str]) -> int:
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "reset": cmd_reset}
    if len(argv) != 2 or argv[1] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        return commands[argv[1]]()
    except TestbedError as exc:
        print(f"testbed: ERROR: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv))
