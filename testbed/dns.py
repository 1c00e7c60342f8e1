#!/usr/bin/env python3
"""Run the cluster's DNS server of the test bed: a real dnsmasq (Debian's dnsmasq-base) on loopback.

    testbed/dns.py up        write the records, start dnsmasq (or refresh the records of the running
                             one), wait until it answers
    testbed/dns.py down      stop it (a no-op when it is not running)
    testbed/dns.py status    one line per record source; exit 0 only when it runs and answers
    testbed/dns.py break-corefile     the DNS Resolution Problems fault: edit CoreDNS's real Corefile
                                      ConfigMap the way a hurried hand does (a misspelt plugin, a brace lost)
    testbed/dns.py restore-corefile   put back the Corefile saved by break-corefile

kwok's CoreDNS pods serve nothing, so this dnsmasq stands in for CoreDNS's data plane where the
runbooks reach it (`saasodoo_dns` in inventories/local/group_vars/all/services.yml: address, port,
cluster domain). It answers, from a hosts file it re-reads on SIGHUP:
  - <service>.<namespace>.svc.<cluster domain> -> the Service's ClusterIP, for every Service of the
    platform (label <saasodoo_part_of_label>=<saasodoo_part_of>) read from the real cluster at `up`;
  - the "external" names the dns_resolution runbook checks (dns_resolution_external_names) -> the
    loopback address where the test bed's external endpoints answer (the machine is offline).
Names under the cluster domain and the platform domain that it does not know get NXDOMAIN; it
forwards nothing (no upstream). State (config, records, pid, log) lives in $TESTBED_CACHE/run/dns/.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from plugins.module_utils.saasodoo_dns import query  # noqa: E402 - the runbooks' own DNS client
from testbed import platform_vars  # noqa: E402

CACHE = Path(os.environ.get("TESTBED_CACHE", ROOT / ".cache" / "testbed")).resolve()
STATE = CACHE / "run" / "dns"
PID = STATE / "dnsmasq.pid"
CONF = STATE / "dnsmasq.conf"
HOSTS = STATE / "records.hosts"
LOG = STATE / "dnsmasq.log"
EXTERNAL_ADDRESS = "127.0.0.1"
READY_TIMEOUT = 15.0


class DnsTestbedError(Exception):
    """A failure with a message meant for the engineer at the terminal."""


def log(msg: str) -> None:
    print(f"[testbed dns] {msg}", flush=True)


def settings() -> dict:
    """Address, port, domains and external names, from the inventory like the runbooks see them."""
    inv = platform_vars.load()
    dns = inv["saasodoo_dns"]
    return {
        "server": str(dns["server"]),
        "port": int(dns["port"]),
        "cluster_domain": str(dns["cluster_domain"]).strip("."),
        "platform_domain": str(inv["saasodoo_domain"]).strip("."),
        "external_names": [str(n).rstrip(".") for n in inv.get("dns_resolution_external_names", [])],
        "label": f"{inv['saasodoo_part_of_label']}={inv['saasodoo_part_of']}",
    }


def service_records(cfg: dict) -> list[tuple[str, str]]:
    """(name, ClusterIP) for every platform Service in the real cluster."""
    from kubernetes import client, config  # the venv's client; imported late so `down` works without it

    kubeconfig = os.environ.get("KUBECONFIG") or str(CACHE / "kubeconfig")
    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    records = []
    for svc in api.list_service_for_all_namespaces(label_selector=cfg["label"]).items:
        ip = svc.spec.cluster_ip
        if not ip or ip == "None":
            continue  # headless: no address of its own to answer with
        records.append((f"{svc.metadata.name}.{svc.metadata.namespace}.svc.{cfg['cluster_domain']}", ip))
    return sorted(records)


def write_records(cfg: dict) -> list[tuple[str, str]]:
    records = service_records(cfg) + [(name, EXTERNAL_ADDRESS) for name in cfg["external_names"]]
    STATE.mkdir(parents=True, exist_ok=True)
    tmp = HOSTS.with_suffix(".tmp")
    tmp.write_text("".join(f"{ip} {name}\n" for name, ip in records))
    tmp.replace(HOSTS)
    return records


def write_config(cfg: dict) -> None:
    lines = [
        f"port={cfg['port']}",
        f"listen-address={cfg['server']}",
        "bind-interfaces",
        "no-resolv",          # no upstream: the machine is offline, and answers must be the records below
        "no-hosts",           # not the machine's /etc/hosts
        f"addn-hosts={HOSTS}",
        f"local=/{cfg['cluster_domain']}/",   # authoritative: unknown names get NXDOMAIN, not REFUSED
        f"local=/{cfg['platform_domain']}/",
        "domain-needed",
        "bogus-priv",
        "local-ttl=5",
        "cache-size=0",       # records change under it (SIGHUP); never serve a stale answer
        "log-queries",
        f"log-facility={LOG}",
        f"pid-file={STATE / 'dnsmasq.daemon.pid'}",
        f"user={getpass.getuser()}",  # started as root it would switch to nobody, who cannot write the log
    ]
    CONF.write_text("\n".join(lines) + "\n")


def running_pid() -> int | None:
    try:
        pid = int(PID.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return None
    ours = any(arg.decode(errors="replace") == f"--conf-file={CONF}" for arg in cmdline)
    return pid if cmdline and cmdline[0].endswith(b"dnsmasq") and ours else None


def answers(cfg: dict, name: str, expect: str | None = None) -> bool:
    result = query(cfg["server"], name, "A", cfg["port"], timeout=1.0, retries=0)
    return result["status"] == "ok" and (expect is None or expect in result["addresses"])


def wait_answering(cfg: dict, probe: tuple[str, str] | None, pid: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if running_pid() != pid:
            raise DnsTestbedError(f"dnsmasq exited. Last lines of {LOG}:\n{tail()}")
        if probe is None or answers(cfg, probe[0], probe[1]):
            return
        time.sleep(0.2)
    raise DnsTestbedError(f"dnsmasq did not answer {probe} within {READY_TIMEOUT:.0f}s. Log:\n{tail()}")


def tail(lines: int = 15) -> str:
    try:
        return "\n".join("    " + line for line in LOG.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"    (no log at {LOG})"


def up() -> int:
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(binary).exists():
        raise DnsTestbedError("dnsmasq is not installed (apt-get install dnsmasq-base, or testbed/services.sh up)")
    cfg = settings()
    STATE.mkdir(parents=True, exist_ok=True)
    write_config(cfg)
    records = write_records(cfg)
    probe = records[0] if records else None
    pid = running_pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)  # re-read the hosts file; the config did not change
        wait_answering(cfg, probe, pid)
        log(f"already running (pid {pid}) on {cfg['server']}:{cfg['port']}; {len(records)} record(s) refreshed")
        return 0
    logf = open(STATE / "dnsmasq.stdout", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [binary, f"--conf-file={CONF}", "--keep-in-foreground"],
        stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True,
    )
    PID.write_text(str(proc.pid))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and running_pid() is None and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is not None:
        out = (STATE / "dnsmasq.stdout").read_text(errors="replace")[-2000:]
        raise DnsTestbedError(f"dnsmasq exited at once (code {proc.returncode}):\n{out}\n{tail()}")
    wait_answering(cfg, probe, proc.pid)
    log(f"dnsmasq answering on {cfg['server']}:{cfg['port']} (pid {proc.pid}, {len(records)} record(s), "
        f"log {LOG})")
    return 0


def down() -> int:
    pid = running_pid()
    if pid is None:
        PID.unlink(missing_ok=True)
        log("dnsmasq was not running; nothing to stop")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and running_pid() == pid:
        time.sleep(0.1)
    if running_pid() == pid:
        os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    PID.unlink(missing_ok=True)
    log(f"dnsmasq stopped (pid {pid})")
    return 0


def status() -> int:
    cfg = settings()
    pid = running_pid()
    try:
        records = [line.split() for line in HOSTS.read_text().splitlines() if line.strip()]
    except OSError:
        records = []
    if pid is None:
        print(f"dnsmasq      stopped   {cfg['server']}:{cfg['port']}")
        return 1
    ok = all(answers(cfg, name, ip) for ip, name in records)
    print(f"dnsmasq      {'answering' if ok else 'NOT ANSWERING'} {cfg['server']}:{cfg['port']} pid {pid}, "
          f"{len(records)} record(s)")
    for ip, name in records:
        print(f"  {name} -> {ip}")
    return 0 if ok else 1


# --------------------------------------------------------------------------- Corefile fault

SAVED_COREFILE = STATE / "corefile.before-fault"


def _corefile_target() -> tuple[str, str, str]:
    inv = platform_vars.load()
    comp = inv["saasodoo_components"][inv.get("dns_resolution_component", "coredns")]
    return comp["namespace"], inv.get("dns_resolution_configmap", inv["saasodoo_coredns_configmap"]), \
        inv.get("dns_resolution_corefile_key", "Corefile")


def _core_api():
    from kubernetes import client, config

    kubeconfig = os.environ.get("KUBECONFIG") or str(CACHE / "kubeconfig")
    return client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))


def broken(corefile: str) -> str:
    """The Corefile as a hurried edit leaves it: `forward` misspelt and its block's closing brace lost."""
    out, skipping = [], False
    for line in corefile.splitlines():
        stripped = line.strip()
        if stripped.startswith("forward ") and stripped.endswith("{"):
            out.append(line.replace("forward", "forwrd", 1))
            skipping = True   # drop the block's body and its closing brace
            continue
        if skipping:
            if stripped == "}":
                skipping = False
            continue
        out.append(line)
    result = "\n".join(out) + "\n"
    if result == corefile or result.strip() == corefile.strip():
        raise DnsTestbedError("the Corefile has no `forward ... {` block to break")
    return result


def break_corefile() -> str:
    """Edit the real Corefile ConfigMap; the live Corefile is saved for restore_corefile(). Returns it."""
    namespace, name, key = _corefile_target()
    api = _core_api()
    live = (api.read_namespaced_config_map(name, namespace).data or {}).get(key, "")
    STATE.mkdir(parents=True, exist_ok=True)
    if not SAVED_COREFILE.exists():
        SAVED_COREFILE.write_text(live)
    api.patch_namespaced_config_map(name, namespace, {"data": {key: broken(live)}})
    log(f"broke the Corefile in ConfigMap/{namespace}/{name} (saved the live one to {SAVED_COREFILE})")
    return live


def restore_corefile() -> bool:
    """Put the saved Corefile back when the ConfigMap still differs; True when something was written."""
    if not SAVED_COREFILE.exists():
        return False
    namespace, name, key = _corefile_target()
    api = _core_api()
    saved = SAVED_COREFILE.read_text()
    live = (api.read_namespaced_config_map(name, namespace).data or {}).get(key)
    changed = live != saved
    if changed:
        api.patch_namespaced_config_map(name, namespace, {"data": {key: saved}})
        log(f"restored the Corefile in ConfigMap/{namespace}/{name}")
    SAVED_COREFILE.unlink()
    return changed


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "status": status,
                "break-corefile": lambda: break_corefile() and 0,
                "restore-corefile": lambda: restore_corefile() and 0}
    if len(argv) != 2 or argv[1] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        return commands[argv[1]]()
    except DnsTestbedError as exc:
        print(f"testbed dns: ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
