#!/usr/bin/env python3
"""How fast is saasodoo_snapshot on a platform with many tenants? Seed, measure, print, clean up.

    .venv/bin/python bench/snapshot_bench.py                 # 300 tenants, 5 runs
    .venv/bin/python bench/snapshot_bench.py --tenants 1000 --runs 10 --page-size 250

Seeds N tenant namespaces (label saasodoo.io/tenant=bench-<n>, each with a one-replica
Deployment), runs the module's core function (run_snapshot: the same lists and analysis as the
module, without Ansible's start-up) several times, prints the API calls, the seconds
(min/median/max) and the objects seen, then deletes what it created, also on Ctrl-C.

The test bed's nodes hold 110 pods each and other engineers share them: tenants beyond the free
pod slots (minus a margin) get a Deployment with 0 replicas, so the bench never starves the platform.
Figures are printed, never asserted: timing depends on the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubernetes import client, config  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

from plugins.module_utils import saasodoo_findings  # noqa: E402

# The module imports its helpers the way Ansible ships them; point those names at the files.
sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
from plugins.module_utils import saasodoo_k8s  # noqa: E402

sys.modules.setdefault("ansible.module_utils.saasodoo_k8s", saasodoo_k8s)
from plugins.module_utils import saasodoo_k8s_health  # noqa: E402

sys.modules.setdefault("ansible.module_utils.saasodoo_k8s_health", saasodoo_k8s_health)
_spec = importlib.util.spec_from_file_location("saasodoo_snapshot",
                                               ROOT / "plugins" / "modules" / "saasodoo_snapshot.py")
snapshot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(snapshot)

from testbed import platform_vars  # noqa: E402

OWNER = {"saasodoo.test/owner": "snapshot-bench"}
PREFIX = "tenant-bench-"
POD_MARGIN = 40  # pod slots left free for the platform and other engineers' tests


def api_client(kubeconfig: str) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = 32
    return client.ApiClient(cfg)


def free_pod_slots(core: client.CoreV1Api) -> int:
    nodes = [n for n in core.list_node().items
             if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])]
    slots = sum(int(n.status.allocatable.get("pods", "0")) for n in nodes)
    used = len(core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed").items)
    return slots - used


def deployment(replicas: int) -> dict:
    labels = {"app": "odoo", **OWNER}
    return {
        "metadata": {"name": "odoo", "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "odoo"}},
                 "template": {"metadata": {"labels": labels}, "spec": {
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "odoo", "image": "odoo:17.0",
                                     "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}}}]}}},
    }


def seed(core, apps, count: int, label: str, replicas: int) -> tuple[list[str], int]:
    free = max(0, free_pod_slots(core) - POD_MARGIN)
    running = min(count, free // max(1, replicas)) if replicas else 0
    taken = [int(n.metadata.name[len(PREFIX):]) for n in core.list_namespace().items
             if n.metadata.name.startswith(PREFIX) and n.metadata.name[len(PREFIX):].isdigit()]
    start = max(taken, default=0) + 1
    names = [f"{PREFIX}{n}" for n in range(start, start + count)]

    def one(item):
        index, name = item
        core.create_namespace({"metadata": {"name": name, "labels": {label: name[len("tenant-"):], **OWNER}}})
        apps.create_namespaced_deployment(name, deployment(replicas if index < running else 0))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(one, enumerate(names)))
    return names, running


def wait_ready(apps, names: set[str], timeout: float) -> float:
    """Seconds until every seeded Deployment is ready (or the timeout), so runs see a steady state."""
    start = time.monotonic()
    selector = ",".join(f"{k}={v}" for k, v in OWNER.items())
    while time.monotonic() - start < timeout:
        deps = [d for d in apps.list_deployment_for_all_namespaces(label_selector=selector).items
                if d.metadata.namespace in names]
        if len(deps) == len(names) and all((d.status.ready_replicas or 0) == d.spec.replicas for d in deps):
            break
        time.sleep(1)
    return time.monotonic() - start


def cleanup(core, wait: float) -> int:
    selector = ",".join(f"{k}={v}" for k, v in OWNER.items())
    names = [n.metadata.name for n in core.list_namespace(label_selector=selector).items]

    def delete(name):
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(delete, names))
    deadline = time.monotonic() + wait
    left = len(names)
    while time.monotonic() < deadline and left:
        time.sleep(2)
        left = len(core.list_namespace(label_selector=selector).items)
    return left


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=300, help="tenant namespaces to seed (default 300)")
    parser.add_argument("--runs", type=int, default=5, help="snapshots to take (default 5)")
    parser.add_argument("--page-size", type=int, default=500, help="the module's page_size (default 500)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas per seeded tenant (default 1)")
    parser.add_argument("--settle", type=float, default=90, help="max seconds to wait for seeded pods (default 90)")
    parser.add_argument("--cleanup-wait", type=float, default=60, help="max seconds to wait for deletion (default 60)")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", str(ROOT / ".cache/testbed/kubeconfig")))
    args = parser.parse_args(argv)

    inventory = platform_vars.load()
    label = inventory["saasodoo_tenant_label"]
    params = {"components": inventory["saasodoo_components"], "tenant_label": label, "page_size": args.page_size,
              "restart_threshold": inventory["saasodoo_thresholds"]["pod_restart_warning"]}
    api = api_client(args.kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

    base = snapshot.run_snapshot(params, api_client=api)
    print(f"base platform: {base['api_calls']} API calls, {base['duration_seconds']:.3f}s, "
          f"{base['summary']['tenants']} tenants, counts {base['counts']}")
    try:
        t0 = time.monotonic()
        names, running = seed(core, apps, args.tenants, label, args.replicas)
        print(f"seeded {len(names)} tenant namespaces in {time.monotonic() - t0:.1f}s "
              f"({running} with {args.replicas} replica(s), {len(names) - running} with 0: pod slots kept free)")
        settled = wait_ready(apps, set(names), args.settle)
        print(f"seeded Deployments ready after {settled:.1f}s")

        durations, results = [], []
        for _ in range(args.runs):
            start = time.monotonic()
            results.append(snapshot.run_snapshot(params, api_client=api))
            durations.append(time.monotonic() - start)
        last = results[-1]
        objects = sum(last["counts"].values())
        print(f"\nsnapshot of {len(last['tenants'])} tenants, {args.runs} runs, page_size {args.page_size}:")
        print(f"  api calls      : {sorted({r['api_calls'] for r in results})} per run "
              f"(base platform: {base['api_calls']}) {last['api_calls_by_resource']}")
        print(f"  seconds        : min {min(durations):.3f}  median {statistics.median(durations):.3f}  "
              f"max {max(durations):.3f}")
        print(f"  objects seen   : {objects} {last['counts']}")
        print(f"  summary        : {last['summary']}")
        print(f"  findings       : {[(f['code'], f['severity']) for f in last['findings']][:10]}")
    finally:
        left = cleanup(core, args.cleanup_wait)
        print(f"\ncleanup: seeded namespaces deleted; {left} still terminating "
              f"(the namespace controller finishes them)" if left else "\ncleanup: all seeded namespaces gone")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
