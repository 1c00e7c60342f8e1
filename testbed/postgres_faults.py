#!/usr/bin/env python3
"""Faults of the platform database, for the data_loss and postgres_connection runbooks' tests.

From pytest:
    from testbed import postgres_faults
    fault = postgres_faults.stop_server()      # the test bed's real PostgreSQL is stopped
    ...
    fault.undo()                               # started again (testbed/services.sh up)

    fault = postgres_faults.pvc_unbound()      # the postgres StatefulSet's data PVC is Pending, its pod too
    fault.undo()                               # the volume is freed for the claim, the pod runs again

    postgres_faults.superuser_sql("SET session_replication_role = replica; DELETE ...")

From the command line (KUBECONFIG and the test bed's variables set, e.g. `source .env.sh`):
    testbed/postgres_faults.py status          # server up or down, PVC phase
    testbed/postgres_faults.py stop            # stop the server
    testbed/postgres_faults.py start           # start it (testbed/services.sh up, idempotent)
    testbed/postgres_faults.py pvc-unbound     # break the PVC binding
    testbed/postgres_faults.py pvc-bound       # repair it

The server is the one testbed/services.sh runs ($TESTBED_CACHE/pg, port SAASODOO_DB_PORT); the
superuser session goes over its unix socket as the server's OS user (peer authentication), as
services.sh does. Kubernetes names come from the inventory (testbed/platform_vars.py).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes.client.rest import ApiException  # noqa: E402

from testbed import faults, platform_vars  # noqa: E402
from testbed.faults import Fault, FaultError, wait_until  # noqa: E402

ROOT = platform_vars.ROOT
CACHE = Path(os.environ.get("TESTBED_CACHE", ROOT / ".cache" / "testbed"))
PGDIR = CACHE / "pg"
PGDATA = PGDIR / "data"


def _port() -> int:
    return int(platform_vars.load()["saasodoo_db_port"])


def _bindir() -> Path:
    """Highest installed PostgreSQL major's bin directory (as services.sh picks it)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: [int(x) for x in p.split("/")[4].split(".") if x.isdigit()])
    if not found:
        raise FaultError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


def _as_server_user(argv: list[str]) -> list[str]:
    """Run as the OS user the server runs as (postgres when we are root), from /."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str], what: str, stdin: str | None = None) -> str:
    result = subprocess.run(_as_server_user(argv), input=stdin, capture_output=True, text=True, cwd="/", check=False)
    if result.returncode != 0:
        raise FaultError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return result.stdout


def superuser_sql(sql: str, db: str | None = None) -> str:
    """Run SQL as the server's superuser (what only a superuser may do, e.g. bypass foreign keys)."""
    db = db or platform_vars.load()["saasodoo_db_name"]
    return _run([str(_bindir() / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(PGDIR),
                 "-p", str(_port()), "-d", db], f"psql on {db}", stdin=sql)


def server_running() -> bool:
    if not (PGDATA / "postmaster.pid").exists():
        return False
    result = subprocess.run(_as_server_user([str(_bindir() / "pg_ctl"), "-D", str(PGDATA), "status"]),
                            capture_output=True, text=True, cwd="/", check=False)
    return result.returncode == 0


def start_server() -> None:
    """Start the test bed's PostgreSQL (and re-apply its roles and schema): testbed/services.sh up, idempotent."""
    result = subprocess.run(["bash", str(ROOT / "testbed" / "services.sh"), "up"], capture_output=True, text=True,
                            cwd=ROOT, check=False)
    if result.returncode != 0:
        raise FaultError(f"testbed/services.sh up failed: {result.stdout[-1000:]}{result.stderr[-1000:]}")


def stop_server() -> Fault:
    """Stop the real PostgreSQL of the test bed (fast shutdown: sessions are ended, nothing is lost)."""
    if server_running():
        _run([str(_bindir() / "pg_ctl"), "-D", str(PGDATA), "-m", "fast", "-w", "-t", "60", "stop"], "pg_ctl stop")
    wait_until("PostgreSQL to be stopped", lambda: not server_running(), timeout=30)
    return Fault("postgres-stopped", "postgres", [f"PostgreSQL {PGDATA}"], start_server)


# --------------------------------------------------------------------------- the data volume


def _postgres() -> dict:
    return platform_vars.component("postgres")


def _claim_names(sts) -> list[str]:
    """The PVCs of a StatefulSet's pods: <template>-<statefulset>-<ordinal>."""
    templates = sts.spec.volume_claim_templates or []
    return [f"{t.metadata.name}-{sts.metadata.name}-{i}" for t in templates for i in range(sts.spec.replicas or 0)]


def _volume_for(namespace: str, claim: str):
    for pv in faults.core().list_persistent_volume().items:
        ref = pv.spec.claim_ref
        if ref and ref.namespace == namespace and ref.name == claim:
            return pv
    return None


def _pvc_phase(namespace: str, claim: str) -> str | None:
    try:
        return faults.core().read_namespaced_persistent_volume_claim(claim, namespace).status.phase
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def pvc_unbound() -> Fault:
    """The postgres StatefulSet's first data PVC ends up Pending, and its pod Pending with it.

    The claim is deleted and its pod with it; the StatefulSet controller creates both again, but the
    volume (Retain) stays reserved for the old claim (Released): the new claim finds no volume and stays
    Pending, the pod is unschedulable ("unbound immediate PersistentVolumeClaims"). This is what a
    claim deleted by mistake, or a volume whose claimRef still names an old claim, looks like.
    """
    comp = _postgres()
    ns = comp["namespace"]
    sts = faults._workload(comp)
    claims = _claim_names(sts)
    if not claims:
        raise FaultError(f"{comp['kind']} {comp['name']} has no volumeClaimTemplates")
    claim = claims[0]
    pod = f"{sts.metadata.name}-0"
    volume = _volume_for(ns, claim)
    if volume is None:
        raise FaultError(f"no PersistentVolume reserved for {ns}/{claim}")
    old_uid = faults.core().read_namespaced_persistent_volume_claim(claim, ns).metadata.uid
    faults.core().delete_namespaced_persistent_volume_claim(claim, ns)
    try:
        faults.core().delete_namespaced_pod(pod, ns, grace_period_seconds=0)
    except ApiException as exc:
        if exc.status != 404:
            raise

    def new_claim_pending() -> bool:
        try:
            pvc = faults.core().read_namespaced_persistent_volume_claim(claim, ns)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return pvc.metadata.uid != old_uid and pvc.status.phase == "Pending"

    wait_until(f"a new, Pending claim {ns}/{claim}", new_claim_pending, timeout=90)

    def pod_pending() -> bool:
        try:
            p = faults.core().read_namespaced_pod(pod, ns)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return p.status.phase == "Pending" and p.metadata.deletion_timestamp is None

    wait_until(f"pod {ns}/{pod} to be Pending", pod_pending, timeout=90)

    def undo() -> None:
        bind_volume(volume.metadata.name)
        faults.wait_healthy("postgres")

    return Fault("pvc-unbound", "postgres", [f"PersistentVolumeClaim/{ns}/{claim}", f"Pod/{ns}/{pod}"], undo)


def bind_volume(name: str | None = None) -> None:
    """Free a Released volume for the claim of the same name (drop the old claim's uid) and wait until Bound."""
    comp = _postgres()
    ns = comp["namespace"]
    claims = _claim_names(faults._workload(comp))
    if name is None:
        volume = _volume_for(ns, claims[0]) if claims else None
        if volume is None:
            return
        name = volume.metadata.name
    pv = faults.core().read_persistent_volume(name)
    if pv.status.phase != "Bound" and pv.spec.claim_ref is not None and pv.spec.claim_ref.uid:
        faults.core().patch_persistent_volume(name, [{"op": "remove", "path": "/spec/claimRef/uid"},
                                                     {"op": "remove", "path": "/spec/claimRef/resourceVersion"}])
    claim = pv.spec.claim_ref.name if pv.spec.claim_ref else None
    if claim:
        wait_until(f"claim {ns}/{claim} to be Bound", lambda: _pvc_phase(ns, claim) == "Bound", timeout=90)


def status() -> dict:
    comp = _postgres()
    claims = _claim_names(faults._workload(comp))
    return {"server_running": server_running(), "port": _port(),
            "claims": {c: _pvc_phase(comp["namespace"], c) for c in claims}}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("status", "stop", "start", "pvc-unbound", "pvc-bound"):
        print(__doc__.split("From the command line")[1], file=sys.stderr)
        return 2
    try:
        if argv[0] == "stop":
            stop_server()
        elif argv[0] == "start":
            start_server()
        elif argv[0] == "pvc-unbound":
            pvc_unbound()
        elif argv[0] == "pvc-bound":
            bind_volume()
            faults.wait_healthy("postgres")
    except FaultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(status())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
