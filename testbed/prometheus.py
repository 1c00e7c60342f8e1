#!/usr/bin/env python3
"""A real Prometheus on the test bed (Debian's `prometheus`), scraping real local targets.

    testbed/prometheus.py up               start what is not running (idempotent); wait until every
                                           target has been scraped once
    testbed/prometheus.py down             stop everything this script started
    testbed/prometheus.py status           one line per piece; exit 0 only when all are healthy
    testbed/prometheus.py reload           derive the scrape jobs from the cluster's ServiceMonitors
                                           now and reload Prometheus (the loop below does it anyway)
    testbed/prometheus.py targets          the active targets, one line each (job, health, last error)
    testbed/prometheus.py exporter-down NAME / exporter-up NAME
                                           stop / start one scraped process (fault: a target down)

From Python (tests, other test-bed helpers) the same, plus reads of the real Prometheus API:

    from testbed import prometheus
    prometheus.up()                        # -> None; raises PrometheusError with the reason
    prometheus.url()                       # "http://127.0.0.1:<port>" from the inventory
    prometheus.targets()                   # /api/v1/targets activeTargets (dicts)
    prometheus.query("up")                 # /api/v1/query result (list of {metric, value})
    prometheus.wait_until("what", check)   # poll check() until true (timeout -> PrometheusError)
    prometheus.exporter_down("backend-http"); prometheus.exporter_up("backend-http")
    undo = prometheus.emulate_usage("ns", "pod", cpu="7", memory="28Gi")   # kwok-emulated usage; undo()
    prometheus.down()

What runs (state, logs and the TSDB under $TESTBED_CACHE/prometheus/):

  prometheus   /usr/bin/prometheus on the address of `saasodoo_prometheus_url` (inventory, services.yml),
               with --web.enable-lifecycle (POST /-/reload). Fixed jobs: `prometheus` (itself),
               `apiserver` (kube-apiserver /metrics with the test bed's admin client certificate,
               .cache/testbed/run/pki), `kwok` (kwok's own /metrics) and `kubelet-resource` (below).
  operator     a loop (every OPERATOR_INTERVAL s) doing what the Prometheus Operator does with
               ServiceMonitors (monitoring.coreos.com/v1): one scrape job per ServiceMonitor endpoint,
               named as the operator names them (`serviceMonitor/<namespace>/<name>/<index>`), whose
               targets (file_sd, one file per job) are the Services its selector and namespaceSelector
               pick that have the endpoint's named port. When the set of ServiceMonitors changes it
               rewrites prometheus.yml and reloads Prometheus: deleting a ServiceMonitor really
               removes its target, reapplying it really brings it back. Simplification: one target per
               Service port (the operator makes one per ready endpoint address), and the scrape
               interval is capped at MAX_SCRAPE_INTERVAL seconds so tests do not wait 30 s for a scrape.
  exporters    the sample platform's pods are kwok's: nothing listens in them. One small real HTTP
               process per component port that the platform declares as a metrics endpoint (the
               inventory's `saasodoo_servicemonitors`: component + port name) stands in for that
               component's /metrics. Named `<component>-<port>` (e.g. `backend-http`). A Service port
               without an exporter is scraped at a port where nothing listens (connection refused,
               like a pod port nobody serves) - e.g. a ServiceMonitor pointed at the wrong port.
  kwok-usage   a second kwok (the test bed's binary, same stages, same node-lease settings: it stays
               read-only while the main kwok holds the node leases) that also reads
               testbed/kwok/resource-usage.yaml and serves kubelet-like
               /metrics/nodes/<node>/metrics/resource: node, pod and container CPU and memory usage
               emulated from the pods the cluster runs (pod annotations kwok.x-k8s.io/usage-cpu and
               kwok.x-k8s.io/usage-memory; emulate_usage() sets them). Prometheus finds its targets
               with kwok's own HTTP service discovery (/discovery/prometheus).

Ports: Prometheus from the inventory; kwok-usage, the exporters and the closed port from
20270 + TESTBED_PORT_OFFSET upwards (next to the control plane's, moved the same way).
Uses the standard library and the venv's PyYAML/Jinja2 (through testbed/platform_vars.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import cluster  # noqa: E402 - the test bed's API access, PKI and ports

from testbed import platform_vars  # noqa: E402

PROMETHEUS_BIN = os.environ.get("PROMETHEUS_BIN", "/usr/bin/prometheus")
STATE = cluster.CACHE / "prometheus"
LOGS = STATE / "logs"
SD_DIR = STATE / "sd"
CONFIG = STATE / "prometheus.yml"
OPERATOR_STATUS = STATE / "operator.json"
KWOK_USAGE_CONFIG = cluster.HERE / "kwok" / "resource-usage.yaml"
HOST = "127.0.0.1"
BASE_PORT = 20270 + cluster.PORT_OFFSET
KWOK_USAGE_PORT = BASE_PORT
EXPORTER_PORTS = range(BASE_PORT + 1, BASE_PORT + 9)
CLOSED_PORT = BASE_PORT + 9  # nothing ever listens here
OPERATOR_INTERVAL = float(os.environ.get("TESTBED_PROMETHEUS_OPERATOR_INTERVAL", "2"))
MAX_SCRAPE_INTERVAL = int(os.environ.get("TESTBED_PROMETHEUS_MAX_SCRAPE_INTERVAL", "5"))
USAGE_SCRAPE_INTERVAL = "5s"
SERVICEMONITORS = "/apis/monitoring.coreos.com/v1/servicemonitors"
USAGE_CPU = "kwok.x-k8s.io/usage-cpu"
USAGE_MEMORY = "kwok.x-k8s.io/usage-memory"
READY_TIMEOUT = float(os.environ.get("TESTBED_PROMETHEUS_READY_TIMEOUT", "90"))


class PrometheusError(Exception):
    """A failure with a message meant for the engineer at the terminal."""


def log(msg: str) -> None:
    print(f"[prometheus] {msg}", flush=True)


# --------------------------------------------------------------------------- addresses

_VARS: dict = {"at": 0.0, "value": None}


def _inventory() -> dict:
    """The inventory's variables, read at most every 30 s (rendering it takes a moment)."""
    if _VARS["value"] is None or time.monotonic() - _VARS["at"] > 30:
        _VARS["value"], _VARS["at"] = platform_vars.load(), time.monotonic()
    return _VARS["value"]


def url() -> str:
    """Prometheus' HTTP API, as the runbooks reach it (inventory: saasodoo_prometheus_url)."""
    return _inventory()["saasodoo_prometheus_url"].rstrip("/")


def _listen() -> str:
    parts = urllib.parse.urlsplit(url())
    return f"{parts.hostname}:{parts.port}"


def exporters() -> dict[str, dict]:
    """`<component>-<port>` -> {namespace, service, port, address}, from the inventory's ServiceMonitors."""
    v = _inventory()
    result: dict[str, dict] = {}
    for sm in v.get("saasodoo_servicemonitors", []):
        comp = v["saasodoo_components"][sm["component"]]
        name = f"{sm['component']}-{sm['port']}"
        if name in result:
            continue
        if len(result) >= len(EXPORTER_PORTS):
            raise PrometheusError(f"more than {len(EXPORTER_PORTS)} metrics endpoints in the inventory")
        port = EXPORTER_PORTS[len(result)]
        result[name] = {"component": sm["component"], "namespace": comp["namespace"], "service": comp["name"],
                        "port": sm["port"], "address": f"{HOST}:{port}"}
    return result


# --------------------------------------------------------------------------- processes

def _pid_file(name: str) -> Path:
    return STATE / f"{name}.pid"


def _alive(name: str) -> int | None:
    """The pid of piece `name` when it runs the command line we started it with."""
    try:
        record = json.loads(_pid_file(name).read_text())
        pid, argv = int(record["pid"]), record["argv"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if stat.rsplit(")", 1)[-1].split()[0] == "Z" or cmdline != argv:
        return None
    return pid


def _spawn(name: str, argv: list[str]) -> int:
    LOGS.mkdir(parents=True, exist_ok=True)
    logf = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    logf.write(f"\n==== started {time.strftime('%Y-%m-%dT%H:%M:%S')} ====\n".encode())
    logf.flush()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True, close_fds=True, cwd=str(STATE))
    _pid_file(name).write_text(json.dumps({"pid": proc.pid, "argv": argv}))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and proc.poll() is None and _alive(name) is None:
        time.sleep(0.05)
    log(f"{name}: started (pid {proc.pid}, log {LOGS / (name + '.log')})")
    return proc.pid


def _stop(name: str, timeout: float = 15) -> bool:
    pid = _alive(name)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(name) is not None:
            time.sleep(0.1)
        if _alive(name) is not None:
            os.kill(pid, signal.SIGKILL)
    _pid_file(name).unlink(missing_ok=True)
    return pid is not None


def _log_tail(name: str, lines: int = 15) -> str:
    try:
        return "\n".join("    " + x for x in (LOGS / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "    (no log)"


def wait_until(what: str, check: Callable[[], bool], timeout: float = READY_TIMEOUT, watch: tuple[str, ...] = (),
               interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for name in watch:
            if _alive(name) is None:
                raise PrometheusError(f"{name} exited while waiting for {what}. Last lines of its log:\n{_log_tail(name)}")
        if check():
            return
        if time.monotonic() > deadline:
            raise PrometheusError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _http(method: str, address: str, timeout: float = 5) -> tuple[int, str]:
    req = urllib.request.Request(address, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return 0, str(exc)


# --------------------------------------------------------------------------- the exporter stand-in

def serve_exporter(name: str) -> int:
    """Foreground: answer /metrics for one component port (what `up` runs per exporter)."""
    spec = exporters()[name]
    host, port = spec["address"].split(":")
    started = time.time()
    scrapes = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # quiet: Prometheus scrapes every few seconds
            return

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            scrapes["n"] += 1
            labels = f'component="{spec["component"]}",namespace="{spec["namespace"]}",port="{spec["port"]}"'
            body = (
                "# HELP saasodoo_testbed_exporter_info The test bed's stand-in for a component's metrics endpoint.\n"
                "# TYPE saasodoo_testbed_exporter_info gauge\n"
                f"saasodoo_testbed_exporter_info{{{labels}}} 1\n"
                "# HELP saasodoo_testbed_exporter_scrapes_total Scrapes answered since the process started.\n"
                "# TYPE saasodoo_testbed_exporter_scrapes_total counter\n"
                f"saasodoo_testbed_exporter_scrapes_total{{{labels}}} {scrapes['n']}\n"
                "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                "# TYPE process_start_time_seconds gauge\n"
                f"process_start_time_seconds {started:.3f}\n"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((host, int(port)), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()
    return 0


def _exporter_argv(name: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "_serve-exporter", name]


def _exporter_ok(name: str) -> bool:
    return _http("GET", f"http://{exporters()[name]['address']}/metrics")[0] == 200


def exporter_up(name: str) -> None:
    """Start one exporter (no-op when it runs) and wait until it answers."""
    if name not in exporters():
        raise PrometheusError(f"no exporter {name!r}; known: {', '.join(exporters())}")
    piece = f"exporter-{name}"
    if _alive(piece) is None:
        _spawn(piece, _exporter_argv(name))
    wait_until(f"exporter {name} /metrics", lambda: _exporter_ok(name), timeout=20, watch=(piece,))


def exporter_down(name: str) -> None:
    """Stop one exporter: the targets scraped at its address go down (connection refused)."""
    if name not in exporters():
        raise PrometheusError(f"no exporter {name!r}; known: {', '.join(exporters())}")
    _stop(f"exporter-{name}")


# --------------------------------------------------------------------------- kwok-usage

def _kwok_usage_argv() -> list[str]:
    args = [a for a in cluster.args_for("kwok") if not a.startswith("--server-address=")]
    return [str(cluster.BIN / "kwok"), *args, f"--config={KWOK_USAGE_CONFIG}",
            f"--server-address={HOST}:{KWOK_USAGE_PORT}"]


def _kwok_usage_ok() -> bool:
    return _http("GET", f"http://{HOST}:{KWOK_USAGE_PORT}/healthz")[0] == 200


# --------------------------------------------------------------------------- the operator

def _duration_seconds(value: str | None, default: int = 30) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(value or "").strip())
    if not match:
        return default
    n, unit = int(match.group(1)), match.group(2) or "s"
    return max(1, {"ms": n // 1000, "s": n, "m": n * 60, "h": n * 3600}[unit])


def _api_list(path: str) -> list[dict] | None:
    code, body = cluster.api("GET", path)
    if code == 404:
        return None
    if code != 200:
        raise PrometheusError(f"GET {path}: HTTP {code} {body.get('message', '')}")
    return body.get("items", [])


def servicemonitor_jobs() -> list[dict]:
    """One scrape job per ServiceMonitor endpoint in the cluster, with its resolved targets."""
    monitors = _api_list(SERVICEMONITORS) or []  # None: the CRD is not installed
    by_service = {(e["namespace"], e["service"], e["port"]): e["address"] for e in exporters().values()}
    jobs = []
    for sm in sorted(monitors, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        ns, name = sm["metadata"]["namespace"], sm["metadata"]["name"]
        spec = sm.get("spec") or {}
        ns_sel = spec.get("namespaceSelector") or {}
        if ns_sel.get("any"):
            namespaces = [n["metadata"]["name"] for n in _api_list("/api/v1/namespaces") or []]
        else:
            namespaces = ns_sel.get("matchNames") or [ns]
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        selector = urllib.parse.quote(",".join(f"{k}={v}" for k, v in sorted(match.items())))
        for index, endpoint in enumerate(spec.get("endpoints") or []):
            groups = []
            for target_ns in namespaces:
                for svc in _api_list(f"/api/v1/namespaces/{target_ns}/services?labelSelector={selector}") or []:
                    ports = {p.get("name") for p in (svc.get("spec") or {}).get("ports", [])}
                    if endpoint.get("port") not in ports:
                        continue
                    svc_name = svc["metadata"]["name"]
                    address = by_service.get((target_ns, svc_name, endpoint["port"]), f"{HOST}:{CLOSED_PORT}")
                    groups.append({"targets": [address], "labels": {
                        "namespace": target_ns, "service": svc_name, "endpoint": endpoint["port"], "job": svc_name}})
            jobs.append({
                "job_name": f"serviceMonitor/{ns}/{name}/{index}",
                "metrics_path": endpoint.get("path") or "/metrics",
                "scrape_interval": f"{min(_duration_seconds(endpoint.get('interval')), MAX_SCRAPE_INTERVAL)}s",
                "groups": groups,
            })
    return jobs


def render_config(jobs: list[dict]) -> str:
    """prometheus.yml: the fixed jobs plus one file_sd job per ServiceMonitor endpoint (JSON is YAML)."""
    pki = cluster.PKI
    scrape = [
        {"job_name": "prometheus", "static_configs": [{"targets": [_listen()]}]},
        {"job_name": "apiserver", "scheme": "https",
         "tls_config": {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "admin.crt"),
                        "key_file": str(pki / "admin.key")},
         "static_configs": [{"targets": [f"{cluster.HOST}:{cluster.PORTS['kube-apiserver']}"]}],
         # Keep the few families the runbooks read; the full /metrics is several MB per scrape.
         "metric_relabel_configs": [{"source_labels": ["__name__"], "action": "keep",
                                     "regex": "apiserver_request_total|apiserver_current_inflight_requests"
                                              "|apiserver_storage_objects|process_.*|go_goroutines"}]},
        {"job_name": "kwok", "static_configs": [{"targets": [f"{cluster.HOST}:{cluster.PORTS['kwok']}"]}]},
        {"job_name": "kubelet-resource", "scrape_interval": USAGE_SCRAPE_INTERVAL,
         "http_sd_configs": [{"url": f"http://{HOST}:{KWOK_USAGE_PORT}/discovery/prometheus",
                              "refresh_interval": "15s"}],
         "relabel_configs": [{"source_labels": ["__metrics_path__"], "regex": "/metrics/nodes/([^/]+)/.*",
                              "target_label": "node", "replacement": "$1"}]},
    ]
    for i, job in enumerate(jobs):
        scrape.append({"job_name": job["job_name"], "metrics_path": job["metrics_path"],
                       "scrape_interval": job["scrape_interval"],
                       "file_sd_configs": [{"files": [str(SD_DIR / f"servicemonitor-{i}.json")]}]})
    config = {"global": {"scrape_interval": "10s", "scrape_timeout": "4s", "evaluation_interval": "30s"},
              "scrape_configs": scrape}
    return json.dumps(config, indent=1) + "\n"


def _write(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def sync(reload: bool = True) -> bool:
    """Write the config and the file_sd files from the cluster; reload Prometheus when the config changed."""
    STATE.mkdir(parents=True, exist_ok=True)
    SD_DIR.mkdir(parents=True, exist_ok=True)
    jobs = servicemonitor_jobs()
    for i, job in enumerate(jobs):  # targets first, so a reloaded config finds them
        _write(SD_DIR / f"servicemonitor-{i}.json", json.dumps(job["groups"], indent=1, sort_keys=True) + "\n")
    changed = _write(CONFIG, render_config(jobs))
    if changed and reload and _alive("prometheus") is not None:
        code, body = _http("POST", f"{url()}/-/reload")
        if code != 200:
            raise PrometheusError(f"reloading Prometheus failed: HTTP {code} {body.strip()}")
    _write(OPERATOR_STATUS, json.dumps({"jobs": [j["job_name"] for j in jobs]}) + "\n")
    return changed


def operator_loop() -> int:
    """Foreground: keep the scrape jobs in line with the cluster's ServiceMonitors."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        try:
            if sync():
                log("ServiceMonitors changed: config rewritten, Prometheus reloaded")
            OPERATOR_STATUS.touch()
        except Exception as exc:  # noqa: BLE001 - keep looping; the status shows it
            log(f"sync failed: {exc}")
        time.sleep(OPERATOR_INTERVAL)


def _operator_argv() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "_operator"]


def _operator_ok() -> bool:
    try:
        return time.time() - OPERATOR_STATUS.stat().st_mtime < max(10.0, 5 * OPERATOR_INTERVAL)
    except OSError:
        return False


# --------------------------------------------------------------------------- Prometheus' API

def _prometheus_argv() -> list[str]:
    return [PROMETHEUS_BIN, f"--config.file={CONFIG}", f"--storage.tsdb.path={STATE / 'data'}",
            "--storage.tsdb.retention.time=6h", f"--web.listen-address={_listen()}", "--web.enable-lifecycle",
            "--log.level=warn"]


def ready() -> bool:
    return _http("GET", f"{url()}/-/ready", timeout=2)[0] == 200


def _api(path: str) -> dict:
    code, body = _http("GET", f"{url()}{path}")
    if code != 200:
        raise PrometheusError(f"GET {path}: HTTP {code} {body[:200]}")
    data = json.loads(body)
    if data.get("status") != "success":
        raise PrometheusError(f"GET {path}: {data.get('error')}")
    return data["data"]


def targets() -> list[dict]:
    """Prometheus' active targets (labels, scrapePool, health, lastError...)."""
    return _api("/api/v1/targets?state=active")["activeTargets"]


def query(expr: str) -> list[dict]:
    """An instant query; the result vector."""
    return _api("/api/v1/query?query=" + urllib.parse.quote(expr))["result"]


def all_scraped() -> bool:
    """Every active target has been scraped at least once (health up or down, not unknown)."""
    try:
        active = targets()
    except PrometheusError:
        return False
    return bool(active) and all(t["health"] != "unknown" for t in active)


# --------------------------------------------------------------------------- emulated usage

def emulate_usage(namespace: str, pod: str, cpu: str | None = None, memory: str | None = None) -> Callable[[], None]:
    """Give a pod (per container) kwok-emulated CPU/memory usage; returns undo()."""
    annotations = {k: v for k, v in ((USAGE_CPU, cpu), (USAGE_MEMORY, memory)) if v is not None}
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}"
    code, before = cluster.api("GET", path)
    if code != 200:
        raise PrometheusError(f"pod {namespace}/{pod}: HTTP {code}")
    previous = {k: (before["metadata"].get("annotations") or {}).get(k) for k in annotations}
    _patch(path, annotations)

    def undo() -> None:
        _patch(path, previous, missing_ok=True)

    return undo


def _patch(path: str, annotations: dict, missing_ok: bool = False) -> None:
    body = json.dumps({"metadata": {"annotations": annotations}}).encode()
    req = urllib.request.Request(f"https://{cluster.HOST}:{cluster.PORTS['kube-apiserver']}{path}", data=body,
                                 method="PATCH", headers={"Content-Type": "application/merge-patch+json"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=cluster._ssl_context()):  # noqa: S310 - loopback only
            return
    except urllib.error.HTTPError as exc:
        if not (missing_ok and exc.code == 404):
            raise PrometheusError(f"PATCH {path}: HTTP {exc.code}") from exc


# --------------------------------------------------------------------------- commands

def status() -> dict[str, str]:
    """Piece -> healthy | unhealthy | stopped."""
    def state(piece: str, ok: Callable[[], bool]) -> str:
        if _alive(piece) is None:
            return "stopped"
        return "healthy" if ok() else "unhealthy"

    result = {"kwok-usage": state("kwok-usage", _kwok_usage_ok)}
    for name in exporters():
        result[f"exporter-{name}"] = state(f"exporter-{name}", lambda n=name: _exporter_ok(n))
    result["prometheus"] = state("prometheus", ready)
    result["operator"] = state("operator", _operator_ok)
    return result


def up(wait: bool = True) -> None:
    """Start every piece that is not running; with wait, until every target was scraped once."""
    if not Path(PROMETHEUS_BIN).exists():
        raise PrometheusError(f"{PROMETHEUS_BIN} is missing: apt-get install prometheus (testbed/services.sh does)")
    if not cluster.healthy("kube-apiserver"):
        raise PrometheusError("the test bed's API server is not up: start it first (testbed/cluster.py up)")
    STATE.mkdir(parents=True, exist_ok=True)
    if _alive("kwok-usage") is None:
        _spawn("kwok-usage", _kwok_usage_argv())
    for name in exporters():
        exporter_up(name)
    wait_until("kwok-usage /healthz", _kwok_usage_ok, watch=("kwok-usage",))
    if _alive("prometheus") is None:
        sync(reload=False)
        _spawn("prometheus", _prometheus_argv())
    wait_until(f"Prometheus {url()}/-/ready", ready, watch=("prometheus",))
    if _alive("operator") is None:
        _spawn("operator", _operator_argv())
    wait_until("the ServiceMonitor sync loop", _operator_ok, watch=("operator",))
    if wait:
        wait_until("every target to be scraped once", all_scraped, watch=("prometheus",))
    log(f"up: {url()}")


def down() -> None:
    """Stop every piece (the TSDB stays under $TESTBED_CACHE/prometheus/data)."""
    stopped = [p for p in ["operator", "prometheus", *(f"exporter-{n}" for n in exporters()), "kwok-usage"] if _stop(p)]
    log(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def reload() -> None:
    """Sync from the cluster's ServiceMonitors now and reload Prometheus."""
    sync(reload=False)
    code, body = _http("POST", f"{url()}/-/reload")
    if code != 200:
        raise PrometheusError(f"reloading Prometheus failed: HTTP {code} {body.strip()}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "reload", "targets", "exporter-up",
                                            "exporter-down", "_serve-exporter", "_operator"])
    parser.add_argument("name", nargs="?")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            down()
        elif args.command == "status":
            states = status()
            for piece, state in states.items():
                print(f"{piece:28} {state:10} {'pid ' + str(_alive(piece)) if _alive(piece) else ''}".rstrip())
            return 0 if all(s == "healthy" for s in states.values()) else 1
        elif args.command == "reload":
            reload()
        elif args.command == "targets":
            for t in targets():
                print(f"{t['scrapePool']:45} {t['health']:8} {t['scrapeUrl']} {t.get('lastError', '')}".rstrip())
        elif args.command in ("exporter-up", "exporter-down"):
            if not args.name:
                parser.error(f"{args.command} needs an exporter name: {', '.join(exporters())}")
            (exporter_up if args.command == "exporter-up" else exporter_down)(args.name)
        elif args.command == "_serve-exporter":
            return serve_exporter(args.name)
        elif args.command == "_operator":
            return operator_loop()
    except (PrometheusError, cluster.TestbedError) as exc:
        print(f"prometheus.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
