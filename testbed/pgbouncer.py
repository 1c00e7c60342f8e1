#!/usr/bin/env python3
"""Run the PgBouncer that the db_performance runbook deploys, as the real Debian binary on loopback.

    testbed/pgbouncer.py up       start the stand-in kubelet for the pooler (a no-op when it runs)
    testbed/pgbouncer.py down     stop it and the pgbouncer it runs
    testbed/pgbouncer.py status   one line; exit 0 when the stand-in runs

Why a stand-in kubelet: the runbook deploys PgBouncer the way a real installation needs it - a
ConfigMap with pgbouncer.ini, a Secret with the auth file, a Deployment and a Service in the
platform namespace. The test bed's nodes are kwok's, which run no containers. So this process
plays the kubelet for that one Deployment: it watches the objects in the cluster every
second and, while the Deployment exists with replicas > 0 and its ConfigMap and Secret exist,
runs /usr/sbin/pgbouncer with exactly the deployed pgbouncer.ini. Only what a pod network
would provide is translated to loopback:
  - [pgbouncer] listen_addr/listen_port -> 127.0.0.1 and services.yml's saasodoo_pgbouncer port,
  - [databases] host=<the database Service's DNS name> port=<its port> -> the test bed's
    PostgreSQL (database.yml's saasodoo_db_host/saasodoo_db_port),
  - auth_file, logfile, pidfile, unix_socket_dir -> files under $TESTBED_CACHE/pgbouncer/.
Every pooling setting (pool_mode, pool sizes, max_client_conn, auth_type, stats_users...) is
the deployed one. A changed ConfigMap or Secret restarts pgbouncer; a deleted Deployment (or
zero replicas) stops it. So before the runbook deploys the pooler nothing answers on the port,
and afterwards the real pgbouncer pools real connections to the real PostgreSQL.

Names come from the inventory (db_performance_pgbouncer in
inventories/local/group_vars/all/db_performance.yml); the cluster is reached like
testbed/cluster.py does (its admin client certificate). PgBouncer refuses to run as root:
as root it runs as the OS user postgres (the test bed's PostgreSQL user).
"""

from __future__ import annotations

import configparser
import hashlib
import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import cluster  # noqa: E402 - the test bed's cache layout and API access

from testbed import platform_vars  # noqa: E402

NAME = "pgbouncer-kubelet"
DIR = cluster.CACHE / "pgbouncer"
STATE = DIR / "state.json"
SUPERVISOR_PID = DIR / "supervisor.pid"
LOG = DIR / "supervisor.log"
POLL_SECONDS = 1.0
CONFIG_KEY = "pgbouncer.ini"
AUTH_KEY = "userlist.txt"


class PgbouncerError(Exception):
    """The stand-in could not do what was asked."""


def log(msg: str) -> None:
    print(f"[pgbouncer] {msg}", flush=True)


def pgbouncer_binary() -> str:
    path = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if not path:
        raise PgbouncerError("pgbouncer is not installed (Debian package pgbouncer; testbed/services.sh up installs it)")
    return path


def settings() -> dict:
    """What the stand-in needs from the inventory."""
    v = platform_vars.load()
    pb = v["db_performance_pgbouncer"]
    db = v["saasodoo_components"][v.get("db_performance_component", "postgres")]
    domain = v.get("saasodoo_cluster_domain", "cluster.local")
    service_names = [db["name"], f"{db['name']}.{db['namespace']}", f"{db['name']}.{db['namespace']}.svc",
                     f"{db['name']}.{db['namespace']}.svc.{domain}"]
    return {
        "name": pb["name"], "namespace": pb["namespace"], "auth_secret": f"{pb['name']}-auth",
        "listen_host": v["saasodoo_pgbouncer"]["host"], "listen_port": int(v["saasodoo_pgbouncer"]["port"]),
        "db_services": service_names, "db_port": str(db["port"]),
        "db_host": v["saasodoo_db_host"], "db_host_port": str(int(v["saasodoo_db_port"])),
    }


# --------------------------------------------------------------------------- the cluster side

def _get(path: str) -> dict | None:
    code, body = cluster.api("GET", path)
    if code == 404:
        return None
    if code != 200:
        raise PgbouncerError(f"GET {path}: HTTP {code} {body.get('message', '')}")
    return body


def desired(cfg: dict) -> dict | None:
    """The deployed pooler ({ini, auth}) when it should run, else None."""
    ns, name = cfg["namespace"], cfg["name"]
    deployment = _get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    if not deployment or int((deployment.get("spec") or {}).get("replicas", 1) or 0) < 1:
        return None
    configmap = _get(f"/api/v1/namespaces/{ns}/configmaps/{name}")
    secret = _get(f"/api/v1/namespaces/{ns}/secrets/{cfg['auth_secret']}")
    if not configmap or CONFIG_KEY not in (configmap.get("data") or {}):
        return None
    if not secret or AUTH_KEY not in (secret.get("data") or {}):
        return None
    import base64

    return {"ini": configmap["data"][CONFIG_KEY], "auth": base64.b64decode(secret["data"][AUTH_KEY]).decode()}


def local_ini(ini: str, cfg: dict) -> str:
    """The deployed pgbouncer.ini with the pod-network parts mapped onto loopback."""
    parser = configparser.RawConfigParser(delimiters=("=",), strict=False)
    parser.optionxform = str  # keep the keys' case (database names)
    parser.read_string(ini)
    if not parser.has_section("pgbouncer"):
        raise PgbouncerError("the deployed pgbouncer.ini has no [pgbouncer] section")
    section = parser["pgbouncer"]
    section["listen_addr"] = cfg["listen_host"]
    section["listen_port"] = str(cfg["listen_port"])
    section["auth_file"] = str(DIR / "userlist.txt")
    section["logfile"] = str(DIR / "pgbouncer.log")
    section["pidfile"] = str(DIR / "pgbouncer.pid")
    section["unix_socket_dir"] = ""
    if parser.has_section("databases"):
        for key, value in parser["databases"].items():
            parts = [p for p in value.split() if p]
            host = next((p.split("=", 1)[1] for p in parts if p.startswith("host=")), None)
            if host in cfg["db_services"]:
                out = []
                for p in parts:
                    if p.startswith("host="):
                        p = "host=" + cfg["db_host"]
                    elif p.startswith("port="):
                        p = "port=" + cfg["db_host_port"]
                    out.append(p)
                if not any(p.startswith("port=") for p in parts):
                    out.append("port=" + cfg["db_host_port"])
                parser["databases"][key] = " ".join(out)
    buf = io.StringIO()
    buf.write("; Written by testbed/pgbouncer.py from the deployed ConfigMap; edits are lost.\n")
    parser.write(buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- the process side

def _run_as():
    """(uid, gid) to run pgbouncer as: the postgres OS user when root (pgbouncer refuses root)."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("postgres")
    return user.pw_uid, user.pw_gid


def write_files(ini: str, auth: str) -> None:
    DIR.mkdir(parents=True, exist_ok=True)
    ids = _run_as()
    for name, text, mode in (("pgbouncer.ini", ini, 0o600), ("userlist.txt", auth, 0o600)):
        path = DIR / name
        path.write_text(text)
        os.chmod(path, mode)
        if ids:
            os.chown(path, *ids)
    if ids:
        os.chown(DIR, *ids)
        for name in ("pgbouncer.log", "pgbouncer.pid"):
            if (DIR / name).exists():
                os.chown(DIR / name, *ids)


def start_pgbouncer() -> subprocess.Popen:
    ids = _run_as()

    def demote():
        if ids:
            os.setgid(ids[1])
            os.setuid(ids[0])

    (DIR / "pgbouncer.pid").unlink(missing_ok=True)
    out = open(DIR / "pgbouncer.stdout", "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([pgbouncer_binary(), str(DIR / "pgbouncer.ini")], stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT, preexec_fn=demote, close_fds=True)


def stop_pgbouncer(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # pgbouncer: SIGINT = safe shutdown, SIGTERM = immediate
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def write_state(**state) -> None:
    STATE.write_text(json.dumps(dict(state, updated=time.time())))


def supervise() -> int:
    """The stand-in kubelet's loop (runs detached; `down` sends SIGTERM)."""
    cfg = settings()
    proc: subprocess.Popen | None = None
    running_hash = None
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    log(f"watching Deployment/{cfg['namespace']}/{cfg['name']}; pgbouncer would listen on "
        f"{cfg['listen_host']}:{cfg['listen_port']}")
    error = None
    while not stopping:
        try:
            want = desired(cfg)
            error = None
        except PgbouncerError as exc:
            error = str(exc)
            want = "unknown"  # the API did not answer: keep what runs
        if want is None:
            if proc is not None and proc.poll() is None:
                log("the pooler is not deployed (any more): stopping pgbouncer")
            stop_pgbouncer(proc)
            proc, running_hash = None, None
        elif want != "unknown":
            try:
                ini = local_ini(want["ini"], cfg)
            except (PgbouncerError, configparser.Error) as exc:
                error = f"cannot use the deployed pgbouncer.ini: {exc}"
                ini = None
            if ini is not None:
                digest = hashlib.sha256((ini + "\0" + want["auth"]).encode()).hexdigest()
                if digest != running_hash or proc is None or proc.poll() is not None:
                    if proc is not None and proc.poll() is None:
                        log("the deployed configuration changed: restarting pgbouncer")
                    elif proc is not None:
                        log(f"pgbouncer exited with {proc.returncode}: starting it again")
                    stop_pgbouncer(proc)
                    write_files(ini, want["auth"])
                    proc = start_pgbouncer()
                    running_hash = digest
                    log(f"pgbouncer started (pid {proc.pid}) with the deployed configuration")
                    time.sleep(1)  # let a crash show before the next look
        write_state(supervisor_pid=os.getpid(), pgbouncer_pid=proc.pid if proc and proc.poll() is None else None,
                    deployed=running_hash is not None, error=error, port=cfg["listen_port"])
        time.sleep(POLL_SECONDS)
    stop_pgbouncer(proc)
    write_state(supervisor_pid=None, pgbouncer_pid=None, deployed=False, error=None, port=cfg["listen_port"])
    log("stopped")
    return 0


# --------------------------------------------------------------------------- commands

def supervisor_pid() -> int | None:
    try:
        pid = int(SUPERVISOR_PID.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if any(part.endswith(b"pgbouncer.py") for part in cmdline) and b"_supervise" in cmdline else None


def read_state() -> dict:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {}


def cmd_up() -> int:
    pgbouncer_binary()
    settings()  # fail early on an inventory without db_performance_pgbouncer
    pid = supervisor_pid()
    if pid:
        log(f"{NAME}: already running (pid {pid})")
        return 0
    DIR.mkdir(parents=True, exist_ok=True)
    STATE.unlink(missing_ok=True)
    logf = open(LOG, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_supervise"], stdin=subprocess.DEVNULL,
                            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                            cwd=str(platform_vars.ROOT))
    SUPERVISOR_PID.write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PgbouncerError(f"{NAME} exited with {proc.returncode}; log {LOG}:\n{LOG.read_text()[-2000:]}")
        if read_state().get("supervisor_pid") == proc.pid:
            log(f"{NAME}: running (pid {proc.pid}, log {LOG})")
            return 0
        time.sleep(0.2)
    raise PgbouncerError(f"{NAME} did not report within 30 s; log {LOG}")


def cmd_down() -> int:
    pid = supervisor_pid()
    if not pid:
        log(f"{NAME}: already stopped")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and supervisor_pid():
        time.sleep(0.2)
    if supervisor_pid():
        os.kill(pid, signal.SIGKILL)
    SUPERVISOR_PID.unlink(missing_ok=True)
    log(f"{NAME}: stopped")
    return 0


def cmd_status() -> int:
    pid = supervisor_pid()
    if not pid:
        log(f"{NAME}: stopped")
        return 1
    state = read_state()
    what = (f"pgbouncer running (pid {state['pgbouncer_pid']}) on port {state.get('port')}"
            if state.get("pgbouncer_pid") else "pgbouncer not running (the pooler is not deployed)")
    log(f"{NAME}: running (pid {pid}); {what}" + (f"; error: {state['error']}" if state.get("error") else ""))
    return 0


def main(argv: list[str]) -> int:
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "_supervise": supervise}
    if len(argv) != 2 or argv[1] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        return commands[argv[1]]()
    except PgbouncerError as exc:
        print(f"[pgbouncer] ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
