#!/usr/bin/env python3
"""Make pod logs flow through the Kubernetes API on the test bed, with kwok's own Logs objects.

    testbed/kwok_logs.py up       install kwok's Logs and ClusterLogs CRDs, start a log-serving kwok,
                                  point the kwok nodes' kubelet endpoint at it (a no-op when done)
    testbed/kwok_logs.py down     nodes' kubelet endpoint back to what kwok reports (port 0), delete the
                                  Logs objects this file created, stop the log-serving kwok
    testbed/kwok_logs.py status   one line; exit 0 only when `kubectl logs` can reach it
    testbed/kwok_logs.py write NAMESPACE POD CONTAINER LINE...   append lines to a pod's log

How it works. `kubectl logs` (and kubernetes.core.k8s_log) asks the API server, which connects to the
pod's node at <InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/... kwok's
nodes report port 0 (the test bed's kwok runs without --node-port), so the API server dials 10250 and
fails: no logs. kwok's server implements the kubelet's containerLogs endpoint and serves, for a pod,
the file named by a `kwok.x-k8s.io/v1alpha1` Logs object of the pod's name and namespace (CRI log
format: `<RFC3339Nano> stdout|stderr F <line>`; kwok filters by sinceSeconds/sinceTime, tailLines).

The test bed's main kwok is started by testbed/cluster.py without `--enable-crds=Logs`, so this file
starts a SECOND kwok process that manages no node (`--manage-single-node` names a node that does not
exist) and only serves the kubelet API with Logs enabled, on 127.0.0.1:<20248 + TESTBED_PORT_OFFSET>,
and patches each kwok node's kubelet port to it. Logs objects and files are written by tests
(`write_lines`) for the pods they need; pods without one answer "no logs found" - as a real kubelet
answers for a container that logged nothing, the API returns an error the runbooks must handle.

State (pid, config, log files) lives in $TESTBED_CACHE/run/kwok-logs/. The CRDs come from the kwok
module testbed/build.sh downloaded (kustomize/crd/bases), like testbed/certmanager.py's.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cluster  # noqa: E402 - the test bed's paths, ports, API helper and logging

NAME = "kwok-logs"
STATE = cluster.RUN / NAME
PID = STATE / "kwok.pid"
CONFIG = STATE / "config.yaml"
FILES = STATE / "files"
PROCESS_LOG = STATE / "kwok.log"
PORT = 20248 + cluster.PORT_OFFSET
ADDRESS = f"{cluster.HOST}:{PORT}"
GO_MOD = HERE / "go" / "kwok" / "go.mod"
NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")   # the nodes testbed/cluster.py's kwok manages
OWNER_LABEL = "saasodoo.test/kwok-logs"
GROUP, VERSION = "kwok.x-k8s.io", "v1alpha1"
NO_SUCH_NODE = "saasodoo-kwok-logs-serves-no-node"
READY_TIMEOUT = 30.0

# kwok refuses to start without stages; these select nothing (and it manages no node anyway).
_CONFIG = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: kwok-logs-no-pod}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector: {matchLabels: {saasodoo.test/kwok-logs-never: "true"}}
  next: {statusTemplate: ""}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata: {name: kwok-logs-no-node}
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector: {matchLabels: {saasodoo.test/kwok-logs-never: "true"}}
  next: {statusTemplate: ""}
"""


class KwokLogsError(Exception):
    """A failure with a message meant for the engineer at the terminal."""


def crd_dir() -> Path:
    match = re.search(r"^\s*(?:require\s+)?sigs\.k8s\.io/kwok (v\S+)", GO_MOD.read_text(), re.M)
    if not match:
        raise KwokLogsError(f"cannot find the kwok version in {GO_MOD}")
    modcache = cluster.GO_MODCACHE
    path = modcache / "sigs.k8s.io" / f"kwok@{match.group(1)}" / "kustomize" / "crd" / "bases"
    if not path.is_dir():
        raise KwokLogsError(f"{path} is missing: build the test bed first (testbed/build.sh)")
    return path


def _api(method: str, path: str, body: dict | None = None, content_type: str = "application/json") -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    url = f"https://{cluster.HOST}:{cluster.PORTS['kube-apiserver']}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10, context=cluster._ssl_context()) as resp:  # noqa: S310 - loopback
            raw = resp.read()
            try:
                return resp.status, json.loads(raw or b"{}")
            except ValueError:
                return resp.status, {"text": raw.decode(errors="replace")}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"message": raw.decode(errors="replace")}
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"message": str(exc)}


def install_crds() -> None:
    import yaml  # the venv's PyYAML: CRD files are YAML

    for kind in ("logs", "clusterlogs"):
        crd = yaml.safe_load((crd_dir() / f"kwok.x-k8s.io_{kind}.yaml").read_text())
        name = crd["metadata"]["name"]
        code, _ = _api("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        if code == 200:
            continue
        code, resp = _api("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        if code not in (200, 201, 409):
            raise KwokLogsError(f"creating CRD {name} failed: HTTP {code} {resp.get('message', '')}")
        cluster.log(f"{NAME}: CRD {name} created")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _api("GET", f"/apis/{GROUP}/{VERSION}/logs")[0] == 200:
            return
        time.sleep(0.3)
    raise KwokLogsError("the Logs CRD is not served after 30s")


def running_pid() -> int | None:
    try:
        pid = int(PID.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    ours = f"--server-address={ADDRESS}".encode() in cmdline
    return pid if cmdline and cmdline[0] == str(cluster.BIN / "kwok").encode() and ours else None


def serving() -> bool:
    code, body = cluster.http_get(f"http://{ADDRESS}/healthz")
    return code == 200 and body.strip() == "ok"


def kwok_nodes() -> list[dict]:
    code, resp = _api("GET", "/api/v1/nodes")
    if code != 200:
        raise KwokLogsError(f"listing nodes failed: HTTP {code} {resp.get('message', '')}")
    key, value = NODE_ANNOTATION
    return [n for n in resp.get("items", []) if (n["metadata"].get("annotations") or {}).get(key) == value]


def set_kubelet_port(port: int) -> list[str]:
    """Point every kwok node's kubelet endpoint at `port`; return the nodes changed."""
    changed = []
    for node in kwok_nodes():
        current = (((node.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port", 0)
        if current == port:
            continue
        name = node["metadata"]["name"]
        code, resp = _api("PATCH", f"/api/v1/nodes/{name}/status",
                          {"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}},
                          content_type="application/merge-patch+json")
        if code != 200:
            raise KwokLogsError(f"patching node {name} failed: HTTP {code} {resp.get('message', '')}")
        changed.append(name)
    return changed


def up() -> int:
    if not (cluster.BIN / "kwok").exists():
        raise KwokLogsError(f"{cluster.BIN / 'kwok'} is missing: build the test bed first (testbed/build.sh)")
    if not cluster.healthy("kube-apiserver"):
        raise KwokLogsError("the test bed's API server is not up: start it first (testbed/cluster.py up)")
    install_crds()
    STATE.mkdir(parents=True, exist_ok=True)
    FILES.mkdir(parents=True, exist_ok=True)
    pid = running_pid()
    if pid is None:
        CONFIG.write_text(_CONFIG)
        logf = open(PROCESS_LOG, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [str(cluster.BIN / "kwok"), f"--kubeconfig={cluster.KUBECONFIG}", f"--config={CONFIG}",
             f"--manage-single-node={NO_SUCH_NODE}", f"--server-address={ADDRESS}",
             f"--node-ip={cluster.HOST}", "--enable-crds=Logs,ClusterLogs"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        PID.write_text(str(proc.pid))
        deadline = time.monotonic() + READY_TIMEOUT
        while not serving():
            if proc.poll() is not None:
                tail = PROCESS_LOG.read_text(errors="replace").splitlines()[-10:]
                raise KwokLogsError(f"the log-serving kwok exited (code {proc.returncode}):\n" + "\n".join(tail))
            if time.monotonic() > deadline:
                raise KwokLogsError(f"the log-serving kwok did not answer on {ADDRESS} within {READY_TIMEOUT:.0f}s")
            time.sleep(0.2)
        cluster.log(f"{NAME}: serving the kubelet API with Logs on {ADDRESS} (pid {proc.pid}, log {PROCESS_LOG})")
    else:
        cluster.log(f"{NAME}: already running (pid {pid}) on {ADDRESS}")
    changed = set_kubelet_port(PORT)
    if changed:
        cluster.log(f"{NAME}: kubelet endpoint of {', '.join(changed)} now {ADDRESS}")
    return 0


def down() -> int:
    if cluster.healthy("kube-apiserver"):
        changed = set_kubelet_port(0)
        if changed:
            cluster.log(f"{NAME}: kubelet endpoint of {', '.join(changed)} back to port 0")
        code, resp = _api("GET", f"/apis/{GROUP}/{VERSION}/logs?labelSelector={OWNER_LABEL}%3Dtrue")
        for item in resp.get("items", []) if code == 200 else []:
            meta = item["metadata"]
            _api("DELETE", f"/apis/{GROUP}/{VERSION}/namespaces/{meta['namespace']}/logs/{meta['name']}")
    pid = running_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and running_pid() == pid:
            time.sleep(0.1)
        if running_pid() == pid:
            os.kill(pid, signal.SIGKILL)
        cluster.log(f"{NAME}: stopped (pid {pid})")
    PID.unlink(missing_ok=True)
    return 0


def status() -> int:
    pid = running_pid()
    ports = {n["metadata"]["name"]: (((n.get("status") or {}).get("daemonEndpoints") or {})
                                     .get("kubeletEndpoint") or {}).get("Port", 0) for n in kwok_nodes()}
    wired = bool(ports) and all(p == PORT for p in ports.values())
    ok = pid is not None and serving() and wired
    print(f"{NAME:12} {'ready' if ok else 'NOT READY'} {ADDRESS} pid {pid or '-'}; node kubelet ports {ports}")
    return 0 if ok else 1


def cri_line(text: str, stream: str = "stdout", when: datetime.datetime | None = None) -> str:
    """One line in the CRI log format kwok (and the kubelet) read."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    stamp = when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    return f"{stamp} {stream} F {text}\n"


def log_file(namespace: str, pod: str, container: str) -> Path:
    return FILES / namespace / pod / f"{container}.log"


def write_lines(namespace: str, pod: str, container: str, lines: list, replace: bool = False) -> Path:
    """Append (or write) lines to a container's log and make sure a Logs object points at it.

    Each line is a string (stdout, now), or (text, stream) or (text, stream, datetime).
    """
    path = log_file(namespace, pod, container)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for line in lines:
        parts = (line,) if isinstance(line, str) else tuple(line)
        out.append(cri_line(parts[0], *(parts[1:] or ())))
    with open(path, "w" if replace else "a") as fh:
        fh.writelines(out)
    _ensure_logs_object(namespace, pod)
    return path


def _ensure_logs_object(namespace: str, pod: str) -> None:
    folder = FILES / namespace / pod
    entries = [{"containers": [p.stem], "logsFile": str(p)} for p in sorted(folder.glob("*.log"))]
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Logs",
            "metadata": {"name": pod, "namespace": namespace, "labels": {OWNER_LABEL: "true"}},
            "spec": {"logs": entries}}
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/logs"
    code, current = _api("GET", f"{path}/{pod}")
    if code == 200:
        if current.get("spec", {}).get("logs") == entries:
            return
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        code, resp = _api("PUT", f"{path}/{pod}", body)
    else:
        code, resp = _api("POST", path, body)
    if code not in (200, 201):
        raise KwokLogsError(f"writing Logs {namespace}/{pod} failed: HTTP {code} {resp.get('message', '')}")
    # kwok picks the object up from its watch; wait until the API serves the log through it.
    deadline = time.monotonic() + 15
    container = entries[0]["containers"][0]
    while time.monotonic() < deadline:
        code, _ = _api("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log?container={container}&tailLines=1")
        if code == 200:
            return
        time.sleep(0.2)
    raise KwokLogsError(f"the API does not serve the log of {namespace}/{pod} 15s after its Logs object was written")


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "status": status}
    try:
        if len(argv) >= 6 and argv[1] == "write":
            print(write_lines(argv[2], argv[3], argv[4], argv[5:]))
            return 0
        if len(argv) != 2 or argv[1] not in commands:
            print(__doc__.strip(), file=sys.stderr)
            return 2
        return commands[argv[1]]()
    except KwokLogsError as exc:
        print(f"testbed kwok-logs: ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
