#!/usr/bin/env python3
"""Real HTTP and HTTPS endpoints on loopback for the runbooks' tests: the platform's API, frontend,
public HTTPS entry point, and the external Supabase and Kill Bill health endpoints.

These are real servers (sockets, HTTP, TLS), not mocks: the runbooks probe them the way they probe a
real installation. Where the addresses are comes from the inventory (`saasodoo_endpoints` in
inventories/local/group_vars/all/services.yml). What they serve:

  api       /health             200 when the test bed's PostgreSQL and Redis accept TCP connections, else 503
            /api/v1/tenants     a REAL query of the platform database (slow when a lock blocks it)
            /api/v1/plans       static JSON
  frontend  /  /index.html      the single-page app's HTML, referring to the static assets below
            /static/js/main.js, /static/css/main.css, /config.json
  public    HTTPS, same content as the frontend, with the certificate in <cache>/endpoints/tls/
            (tls.crt, tls.key; reloaded when the files change, so a test can serve an expired or
            wrong-host certificate). `up` writes a self-signed one for the inventory's server_name.
            Like Traefik, the site serves the platform's real TLS Secret: the Secret of the
            inventory's certificate (`saasodoo_certificates`) that covers the public server_name is
            copied into tls/ whenever it changes in the cluster, so a certificate that cert-manager
            renews (or a test breaks) is really served. Files written into tls/ by hand stay
            served until the Secret changes again.
  supabase  /auth/v1/health     GoTrue's health answer
  killbill  /1.0/healthcheck    Kill Bill's health answer

The sites follow the cluster, the way an ingress does: a site whose component (the inventory's
`component` of the endpoint; the public site also needs the frontend) has no ready pod answers 503
"no available server", as Traefik does. So scaling the frontend to zero or crash-looping the backend
is visible over HTTP, and healing it in the cluster heals the endpoint.

Faults are controlled per site and path prefix, and take effect within a fraction of a second:

  endpoints.py fault api --path /api/v1/tenants --latency-ms 2500   # slow endpoint
  endpoints.py fault frontend --path /static/js --status 404        # asset missing
  endpoints.py fault supabase --down                                # connection refused
  endpoints.py fault frontend --path /static/js --status 404 --until-restart frontend
                           # a stale-pod fault: lasts until none of the frontend's current pods is left
  endpoints.py clear [SITE]                                         # back to healthy
  endpoints.py up | down | status | serve (foreground)

Environment: TESTBED_CACHE (state), SAASODOO_PORT_SHIFT (ports, through the inventory),
SAASODOO_DB_PORT / SAASODOO_REDIS_PORT / SAASODOO_DB_PASSWORD (what /health and the tenants query use).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed import platform_vars  # noqa: E402

CACHE = Path(os.environ.get("TESTBED_CACHE", platform_vars.ROOT / ".cache" / "testbed")).resolve()
STATE = CACHE / "endpoints"
FAULTS = STATE / "faults.json"
TLS_DIR = STATE / "tls"
TLS_SOURCE = TLS_DIR / "source.json"  # which Secret (and which content of it) tls/ was last copied from
PID = STATE / "endpoints.pid"
LOG = STATE / "endpoints.log"
ACCESS_LOG = STATE / "access.log"
SITES = ("api", "frontend", "public", "supabase", "killbill")
POLL_SECONDS = 1.5  # after a failed list or watch of the cluster, how long until the next list
WATCH_SECONDS = 60  # the longest watch: a new list (and the workloads' selectors read again) at least this often
UP_TIMEOUT = float(os.environ.get("TESTBED_READY_TIMEOUT", "90"))


class EndpointsError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[endpoints] {msg}", flush=True)


def config() -> dict:
    """Sites (scheme, port, server name) and the database/cache addresses, from the inventory."""
    v = platform_vars.load()
    sites = {}
    for name in SITES:
        ep = v["saasodoo_endpoints"][name]
        url = urlsplit(ep["url"])
        needs = [c for c in (ep.get("component"),) if c]
        if name == "public" and v["saasodoo_endpoints"]["frontend"].get("component"):
            needs.append(v["saasodoo_endpoints"]["frontend"]["component"])
        sites[name] = {"scheme": url.scheme, "host": url.hostname, "port": url.port, "needs": needs,
                       "server_name": ep.get("server_name") or url.hostname, "url": ep["url"],
                       "health": ep["url"] + ep.get("health_path", "/")}
    return {
        "sites": sites,
        "tls_secret": tls_secret(v, sites["public"]["server_name"]),
        "db": {"host": v["saasodoo_db_host"], "port": int(v["saasodoo_db_port"]), "dbname": v["saasodoo_db_name"],
               "user": v["saasodoo_db_user"], "password": os.environ.get("SAASODOO_DB_PASSWORD", "saasodoo-local")},
        "redis": {"host": v["saasodoo_redis_host"], "port": int(v["saasodoo_redis_port"])},
    }


def tls_secret(v: dict, server_name: str) -> dict | None:
    """The TLS Secret Traefik would serve for the public server name: the Secret of the inventory's
    certificate that lists the name (else the first certificate of the platform namespace)."""
    certs = v.get("saasodoo_certificates") or []
    chosen = next((c for c in certs if server_name in (c.get("dns_names") or [])), None)
    chosen = chosen or next((c for c in certs if c.get("namespace") == v.get("saasodoo_platform_namespace")), None)
    if not chosen:
        return None
    return {"namespace": chosen["namespace"], "name": chosen["secret_name"]}


# --------------------------------------------------------------------------- faults

def read_faults() -> dict:
    try:
        return json.loads(FAULTS.read_text())
    except (OSError, ValueError):
        return {}


def write_faults(data: dict) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    tmp = FAULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(FAULTS)


def rule_active(rule: dict) -> bool:
    """A stale-pod fault (`until_restart`) ends when none of the pods it was injected into is ready."""
    if not rule.get("until_restart"):
        return True
    current = CLUSTER.ready_pods(rule["until_restart"])
    return current is None or bool(set(rule.get("pods", [])) & current)


def fault_for(site: str, path: str) -> dict:
    """The most specific fault for a request: the longest matching path prefix of the site."""
    rules = {k: r for k, r in read_faults().get(site, {}).items() if rule_active(r)}
    best = {}
    best_len = -1
    for prefix, rule in rules.items():
        if prefix == "*" and best_len < 0:
            best, best_len = rule, 0
        elif prefix != "*" and path.startswith(prefix) and len(prefix) > best_len:
            best, best_len = rule, len(prefix)
    return best


def site_down(site: str) -> bool:
    return bool(read_faults().get(site, {}).get("*", {}).get("down"))


# --------------------------------------------------------------------------- content

INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SaaSOdoo</title>
<meta name="api-url" content="{api}">
<link rel="stylesheet" href="/static/css/main.css"></head>
<body><div id="root">SaaSOdoo</div><script src="/static/js/main.js"></script></body></html>
"""
STATIC = {
    "/static/js/main.js": ("application/javascript", "window.saasodoo={ready:true};\n"),
    "/static/css/main.css": ("text/css", "body{font-family:sans-serif}\n"),
}


def tcp_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def query_tenants(db: dict) -> tuple[int, dict]:
    try:
        import psycopg
    except ImportError:
        return 501, {"error": "psycopg is not available to the test bed's API server"}
    try:
        with psycopg.connect(host=db["host"], port=db["port"], dbname=db["dbname"], user=db["user"],
                             password=db["password"], connect_timeout=3,
                             options="-c statement_timeout=20000", application_name="saasodoo-testbed-api") as conn:
            rows = conn.execute("SELECT slug, tier FROM tenants ORDER BY id").fetchall()
    except Exception as exc:  # noqa: BLE001 - any database error is a 503 with its message
        return 503, {"error": f"database: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"}
    return 200, {"tenants": [{"slug": s, "tier": t} for s, t in rows]}


def respond(site: str, path: str, cfg: dict) -> tuple[int, str, bytes]:
    """(status, content type, body) of the healthy site for a path."""
    def js(status, data):
        return status, "application/json", json.dumps(data).encode()

    if site == "api":
        if path == "/health":
            checks = {"database": "ok" if tcp_ok(cfg["db"]["host"], cfg["db"]["port"]) else "unreachable",
                      "redis": "ok" if tcp_ok(cfg["redis"]["host"], cfg["redis"]["port"]) else "unreachable"}
            healthy = all(v == "ok" for v in checks.values())
            return js(200 if healthy else 503, {"status": "ok" if healthy else "degraded", "checks": checks})
        if path == "/api/v1/tenants":
            return js(*query_tenants(cfg["db"]))
        if path == "/api/v1/plans":
            return js(200, {"plans": ["basic", "premium"]})
        return js(404, {"error": "not found"})
    if site in ("frontend", "public"):
        if path in ("/", "/index.html"):
            return 200, "text/html; charset=utf-8", INDEX_HTML.format(api=cfg["sites"]["api"]["url"]).encode()
        if path in STATIC:
            ctype, body = STATIC[path]
            return 200, ctype, body.encode()
        if path == "/config.json":
            return js(200, {"apiUrl": cfg["sites"]["api"]["url"]})
        return 404, "text/html", b"<h1>404 Not Found</h1>"
    if site == "supabase":
        if path == "/auth/v1/health":
            return js(200, {"name": "GoTrue", "version": "v2.151.0", "description": "GoTrue is a user registration API"})
        return js(404, {"error": "not found"})
    if site == "killbill":
        if path == "/1.0/healthcheck":
            return js(200, {"org.killbill.billing.server.healthchecks.KillbillHealthcheck": {"healthy": True},
                            "org.killbill.billing.server.healthchecks.DatabaseHealthcheck": {"healthy": True}})
        return js(404, {"error": "not found"})
    return js(404, {"error": "unknown site"})


# --------------------------------------------------------------------------- the cluster

def list_and_watch(list_fn, stopping: threading.Event, on_list, on_event, on_error, **kwargs) -> None:
    """Keep a view of what `list_fn(**kwargs)` lists, the way an ingress controller's informer does:
    list, then watch from the list's resourceVersion until the watch ends (the API server closes it
    after WATCH_SECONDS) and list again. An error is reported to `on_error`, then POLL_SECONDS later
    the list starts over. An idle cluster costs one list per WATCH_SECONDS, not one per poll."""
    from kubernetes import watch as k8s_watch

    while not stopping.is_set():
        try:
            listed = list_fn(**kwargs)
            on_list(listed.items)
            stream = k8s_watch.Watch()
            for event in stream.stream(list_fn, resource_version=listed.metadata.resource_version,
                                       timeout_seconds=WATCH_SECONDS, _request_timeout=WATCH_SECONDS + 15,
                                       **kwargs):
                if stopping.is_set():
                    stream.stop()
                    break
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    on_event(event["type"], event["object"])
        except Exception as exc:  # noqa: BLE001 - no cluster (yet), an expired watch: list again shortly
            on_error(exc)
            stopping.wait(POLL_SECONDS)


def _ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


class ClusterView:
    """Ready pods of the platform's components, kept current by a watch on the pods of their
    namespaces (list_and_watch); the components' selectors are read from their workloads at every
    list. A component whose workload or pods cannot be read has no answer (None): its sites serve."""

    def __init__(self):
        self._ready: dict[str, set[str]] = {}
        self._specs: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.error = ""

    def ready_pods(self, component: str) -> set[str] | None:
        """Names of the component's ready pods; None when the cluster could not be read."""
        with self._lock:
            return self._ready.get(component)

    def refresh(self, components: list[str]) -> None:
        """Read the components' ready pods once, now (a process that does not watch: `fault --until-restart`)."""
        from testbed import faults
        try:
            ready = {}
            for comp in components:
                self._specs.setdefault(comp, faults._component(comp))
                ready[comp] = {p.metadata.name for p in faults._pods(self._specs[comp])
                               if _ready(p) and faults.CRASHLOOP_LABEL not in (p.metadata.labels or {})}
        except Exception as exc:  # noqa: BLE001 - no cluster: no answer
            self._failed(components, exc)
            return
        with self._lock:
            self._ready.update(ready)

    def watch(self, components: list[str], stopping: threading.Event) -> None:
        """One watching thread per namespace of the components."""
        from testbed import faults
        try:
            self._specs.update({c: faults._component(c) for c in components})  # the inventory, read once
        except Exception as exc:  # noqa: BLE001 - an inventory without the components: serve regardless
            self._failed(components, exc)
            return
        by_namespace: dict[str, list[str]] = {}
        for comp in components:
            by_namespace.setdefault(self._specs[comp]["namespace"], []).append(comp)
        for namespace, comps in sorted(by_namespace.items()):
            threading.Thread(target=self._watch_namespace, args=(namespace, comps, stopping), daemon=True).start()

    def _failed(self, comps: list[str], exc: Exception) -> None:
        if str(exc) != self.error:
            log(f"cluster not readable, sites serve regardless: {str(exc).splitlines()[0][:200] if str(exc) else exc!r}")
        self.error = str(exc)
        with self._lock:
            for comp in comps:
                self._ready.pop(comp, None)

    def _watch_namespace(self, namespace: str, comps: list[str], stopping: threading.Event) -> None:
        from testbed import faults
        pods: dict[str, object] = {}
        selectors: dict[str, dict] = {}

        def publish():
            ready = {}
            for comp in comps:
                want = selectors[comp].items()
                ready[comp] = {name for name, p in pods.items()
                               if p.metadata.deletion_timestamp is None
                               and want <= (p.metadata.labels or {}).items()
                               and _ready(p) and faults.CRASHLOOP_LABEL not in (p.metadata.labels or {})}
            with self._lock:
                self._ready.update(ready)

        def on_list(items):
            selectors.clear()
            selectors.update({c: dict(faults._workload(self._specs[c]).spec.selector.match_labels or {}) for c in comps})
            pods.clear()
            pods.update({p.metadata.name: p for p in items})
            self.error = ""
            publish()

        def on_event(kind, pod):
            if kind == "DELETED":
                pods.pop(pod.metadata.name, None)
            else:
                pods[pod.metadata.name] = pod
            publish()

        list_and_watch(faults.core().list_namespaced_pod, stopping, on_list, on_event,
                       lambda exc: self._failed(comps, exc), namespace=namespace)


CLUSTER = ClusterView()


def unavailable(site: str, cfg: dict) -> str:
    """Why the ingress has nothing to send this site's requests to ('' when it has)."""
    for comp in cfg["sites"][site]["needs"]:
        if CLUSTER.ready_pods(comp) == set():
            return comp
    return ""


# --------------------------------------------------------------------------- servers

class Handler(BaseHTTPRequestHandler):
    server_version = "saasodoo-testbed"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # access log goes to its own file
        pass

    def _serve(self, head: bool = False) -> None:
        started = time.monotonic()
        site = self.server.site
        path = urlsplit(self.path).path
        rule = fault_for(site, path)
        if rule.get("latency_ms"):
            time.sleep(float(rule["latency_ms"]) / 1000.0)
        missing = unavailable(site, self.server.cfg)
        if missing:
            status, ctype, body = 503, "text/plain", f"no available server ({missing}: no ready pod)\n".encode()
        else:
            status, ctype, body = respond(site, path, self.server.cfg)
        if rule.get("status"):
            status = int(rule["status"])
            body = json.dumps({"error": f"injected status {status}"}).encode()
            ctype = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Testbed-Site", site)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        with open(ACCESS_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {site} {self.command} {path} "
                     f"{status} {int((time.monotonic() - started) * 1000)}ms\n")

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._serve()

    def do_HEAD(self):  # noqa: N802
        self._serve(head=True)


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, site: str, cfg: dict):
        self.site = site
        self.cfg = cfg
        spec = cfg["sites"][site]
        self.tls = spec["scheme"] == "https"
        self._ctx = None
        self._ctx_key = None
        super().__init__((spec["host"], spec["port"]), Handler)

    def tls_context(self) -> ssl.SSLContext:
        crt, key = TLS_DIR / "tls.crt", TLS_DIR / "tls.key"
        stamp = (crt.stat().st_mtime_ns, key.stat().st_mtime_ns)
        if stamp != self._ctx_key:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                ctx.load_cert_chain(str(crt), str(key))
            except ssl.SSLError:
                if self._ctx is None:
                    raise
                return self._ctx  # a certificate and key being replaced: serve the previous pair meanwhile
            self._ctx, self._ctx_key = ctx, stamp
        return self._ctx

    def finish_request(self, request, client_address):
        if self.tls:
            try:
                request = self.tls_context().wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # a failed handshake is the client's business (it saw the certificate)
        super().finish_request(request, client_address)


def ensure_certificate(server_name: str) -> None:
    """A self-signed certificate for the public site, valid for its server name, unless one is there."""
    crt, key = TLS_DIR / "tls.crt", TLS_DIR / "tls.key"
    if crt.exists() and key.exists():
        return
    TLS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
                    "-subj", f"/CN={server_name}", "-addext", f"subjectAltName=DNS:{server_name}",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)


class TlsSync:
    """Copies the platform's TLS Secret into tls/ whenever its content changes, as Traefik loads it.

    Only a change of the Secret is copied (its content's sha256 is recorded in tls/source.json), so
    a certificate written into tls/ by hand stays served until the Secret changes. A Secret that is
    missing or unreadable leaves tls/ as it is.
    """

    def __init__(self, secret: dict | None):
        self.secret = secret
        self.error = ""

    @staticmethod
    def recorded() -> dict:
        try:
            return json.loads(TLS_SOURCE.read_text())
        except (OSError, ValueError):
            return {}

    def once(self, obj=None) -> bool:
        """One look at the Secret (read now, or `obj` as a watch delivered it); True when tls/ was rewritten."""
        if not self.secret:
            return False
        try:
            import base64
            import hashlib

            from testbed import faults
            if obj is None:
                obj = faults.core().read_namespaced_secret(self.secret["name"], self.secret["namespace"])
            data = obj.data or {}
            crt, key = base64.b64decode(data.get("tls.crt") or ""), base64.b64decode(data.get("tls.key") or "")
            if not crt or not key:
                raise EndpointsError("the Secret has no tls.crt or tls.key")
            self.error = ""
        except Exception as exc:  # noqa: BLE001 - no cluster or no Secret (yet): keep serving what tls/ has
            self.failed(exc)
            return False
        digest = hashlib.sha256(crt + b"\0" + key).hexdigest()
        if self.recorded().get("sha256") == digest:
            return False
        TLS_DIR.mkdir(parents=True, exist_ok=True)
        # The key first, then the certificate: the server reloads on the pair's mtimes and keeps the
        # previous pair while the two do not match.
        for name, content, mode in (("tls.key", key, 0o600), ("tls.crt", crt, 0o644)):
            tmp = TLS_DIR / f".{name}.tmp"
            tmp.write_bytes(content)
            tmp.chmod(mode)
            tmp.replace(TLS_DIR / name)
        TLS_SOURCE.write_text(json.dumps({"namespace": self.secret["namespace"], "name": self.secret["name"],
                                          "resource_version": obj.metadata.resource_version, "sha256": digest,
                                          "synced_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                         indent=2, sort_keys=True))
        log(f"public: serving TLS Secret {self.secret['namespace']}/{self.secret['name']} "
            f"(resourceVersion {obj.metadata.resource_version})")
        return True

    def failed(self, exc: Exception) -> None:
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if message != self.error:
            log(f"public: TLS Secret {self.secret['namespace']}/{self.secret['name']} not served: {message}")
        self.error = message

    def watch(self, stopping: threading.Event) -> None:
        """The Secret as a watch delivers it (list_and_watch); a deleted Secret leaves tls/ as it is."""
        if not self.secret:
            return
        from testbed import faults

        def on_list(items):
            if items:
                self.once(items[0])
            else:
                self.failed(EndpointsError("the Secret does not exist"))

        list_and_watch(faults.core().list_namespaced_secret, stopping, on_list,
                       lambda kind, obj: kind != "DELETED" and self.once(obj), self.failed,
                       namespace=self.secret["namespace"], field_selector=f"metadata.name={self.secret['name']}")


def serve() -> int:
    cfg = config()
    STATE.mkdir(parents=True, exist_ok=True)
    ensure_certificate(cfg["sites"]["public"]["server_name"])
    running: dict[str, SiteServer] = {}
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    components = sorted({c for site in cfg["sites"].values() for c in site["needs"]})
    threading.Thread(target=CLUSTER.watch, args=(components, stopping), daemon=True).start()
    sync = TlsSync(cfg["tls_secret"])
    sync.once()
    threading.Thread(target=sync.watch, args=(stopping,), daemon=True).start()
    while not stopping.is_set():
        faults = read_faults()
        for site in SITES:
            down = bool(faults.get(site, {}).get("*", {}).get("down"))
            if down and site in running:
                server = running.pop(site)
                server.shutdown()
                server.server_close()
                log(f"{site}: stopped listening (fault: down)")
            elif not down and site not in running:
                try:
                    server = SiteServer(site, cfg)
                except OSError as exc:
                    log(f"{site}: cannot listen on port {cfg['sites'][site]['port']}: {exc}")
                    continue
                threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
                running[site] = server
                log(f"{site}: listening on {cfg['sites'][site]['url']}")
        stopping.wait(0.2)
    for server in running.values():
        server.shutdown()
        server.server_close()
    return 0


# --------------------------------------------------------------------------- control

def read_pid() -> int | None:
    try:
        pid = int(PID.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"endpoints.py" in cmdline else None


def probe(site: dict, timeout: float = 2.0) -> str:
    ctx = ssl._create_unverified_context() if site["scheme"] == "https" else None  # noqa: S323 - only "is it up"
    try:
        with urllib.request.urlopen(site["health"], timeout=timeout, context=ctx) as resp:
            return str(resp.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        return f"down ({getattr(exc, 'reason', exc)})"


def cmd_up() -> int:
    cfg = config()
    if read_pid() is None:
        STATE.mkdir(parents=True, exist_ok=True)
        with open(LOG, "ab") as logf:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "serve"], stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        PID.write_text(str(proc.pid))
        log(f"started (pid {proc.pid}, log {LOG})")
    else:
        log(f"already running (pid {read_pid()})")
    deadline = time.monotonic() + UP_TIMEOUT
    faults = read_faults()
    wanted = [s for s in SITES if not faults.get(s, {}).get("*", {}).get("down")]
    while True:
        states = {s: probe(cfg["sites"][s], timeout=1) for s in wanted}
        if all(not v.startswith("down") for v in states.values()):
            break
        if time.monotonic() > deadline:
            raise EndpointsError(f"endpoints not answering after {UP_TIMEOUT:.0f} s: {states} (log {LOG})")
        time.sleep(0.2)
    for site in SITES:
        log(f"{site:9} {cfg['sites'][site]['url']}")
    return 0


def cmd_down() -> int:
    pid = read_pid()
    if pid is None:
        log("not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if read_pid() is None or not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    PID.unlink(missing_ok=True)
    log(f"stopped (pid {pid})")
    return 0


def cmd_status() -> int:
    cfg = config()
    pid = read_pid()
    log(f"server: {'running (pid %d)' % pid if pid else 'not running'}")
    for site in SITES:
        log(f"{site:9} {cfg['sites'][site]['url']:28} {probe(cfg['sites'][site]) if pid else '-'}")
    source = TlsSync.recorded()
    secret = cfg["tls_secret"]
    log("public TLS: " + (f"Secret {source['namespace']}/{source['name']} (resourceVersion "
                          f"{source['resource_version']}, copied {source['synced_at']})" if source
                          else "self-signed (no Secret copied yet)")
        + (f"; follows Secret {secret['namespace']}/{secret['name']}" if secret else "; no Secret to follow"))
    faults = read_faults()
    if faults:
        log("faults: " + json.dumps(faults, sort_keys=True))
    return 0 if pid else 1


def set_fault(site: str, path: str = "*", latency_ms: int | None = None, status: int | None = None,
              down: bool = False, until_restart: str | None = None) -> None:
    """Python API for tests: the same as `endpoints.py fault`."""
    if site not in SITES:
        raise EndpointsError(f"unknown site {site!r}; known: {', '.join(SITES)}")
    faults = read_faults()
    rule = {k: v for k, v in (("latency_ms", latency_ms), ("status", status), ("down", down)) if v}
    if until_restart:
        CLUSTER.refresh([until_restart])
        pods = CLUSTER.ready_pods(until_restart)
        if not pods:
            raise EndpointsError(f"--until-restart {until_restart}: no ready pod to tie the fault to ({CLUSTER.error})")
        rule.update(until_restart=until_restart, pods=sorted(pods))
    if down:
        path = "*"
    faults.setdefault(site, {})[path] = rule
    write_faults(faults)
    time.sleep(0.5 if down else 0)  # the server applies "down" on its next 0.2 s tick


def clear(site: str | None = None) -> None:
    faults = read_faults()
    was_down = [s for s in faults if faults[s].get("*", {}).get("down") and (site is None or s == site)]
    if site is None:
        faults = {}
    else:
        faults.pop(site, None)
    write_faults(faults)
    if was_down and read_pid():
        cfg = config()
        deadline = time.monotonic() + 5
        while any(probe(cfg["sites"][s], timeout=0.5).startswith("down") for s in was_down):
            if time.monotonic() > deadline:
                raise EndpointsError(f"{', '.join(was_down)} did not come back up (log {LOG})")
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "serve"):
        sub.add_parser(name)
    f = sub.add_parser("fault", help="inject a fault into a site")
    f.add_argument("site", choices=SITES)
    f.add_argument("--path", default="*", help="path prefix (default: the whole site)")
    f.add_argument("--latency-ms", type=int)
    f.add_argument("--status", type=int)
    f.add_argument("--down", action="store_true", help="stop listening (connection refused)")
    f.add_argument("--until-restart", metavar="COMPONENT",
                   help="the fault lasts until none of the component's current pods is ready (a stale-pod fault)")
    c = sub.add_parser("clear", help="remove faults")
    c.add_argument("site", nargs="?", choices=SITES)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            return cmd_up()
        if args.cmd == "down":
            return cmd_down()
        if args.cmd == "status":
            return cmd_status()
        if args.cmd == "serve":
            return serve()
        if args.cmd == "fault":
            set_fault(args.site, args.path, args.latency_ms, args.status, args.down, args.until_restart)
            log(f"{args.site}: fault set: {read_faults()[args.site]}")
            return 0
        clear(args.site)
        log("faults cleared" + (f" for {args.site}" if args.site else ""))
        return 0
    except EndpointsError as exc:
        print(f"endpoints: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
