#!/usr/bin/env python3
"""How long does each runbook take on a healthy platform? Run, measure, print.

    .venv/bin/python bench/runbook_bench.py                      # every runbook, check mode, 1 run each
    .venv/bin/python bench/runbook_bench.py --runs 3 platform_down health_check
    .venv/bin/python bench/runbook_bench.py --real --deploy      # real runs, and deploy_platform.yml first

Needs the test bed and the sample platform (`make platform`). Each runbook runs through
ansible-runner exactly as the tests and the CLI run it (check mode unless --real; on a healthy
platform a real run changes nothing either). Prints, per runbook: seconds (min/median/max), tasks
run (ok + changed + skipped) and changed. Figures are printed, never asserted: timing depends on
the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from saasodoo_runbooks import api  # noqa: E402
from tests.runbooks import run_playbook  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench(name: str, runs: int, real: bool) -> dict:
    seconds, cpu, result = [], [], None
    for _ in range(runs):
        start, cpu_start = time.monotonic(), _children_cpu()
        result = run_playbook(f"{name}.yml", check=not real)
        seconds.append(time.monotonic() - start)
        cpu.append(_children_cpu() - cpu_start)  # ansible-playbook and every module it started
    tasks = sum(result.count(k) for k in ("ok", "changed", "skipped"))
    return {"name": name, "rc": result.rc, "min": min(seconds), "median": statistics.median(seconds),
            "max": max(seconds), "cpu": statistics.median(cpu), "tasks": tasks, "changed": result.changed}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runbooks", nargs="*", help="runbook names (default: every runbook)")
    parser.add_argument("--runs", type=int, default=1, help="runs per runbook (default 1)")
    parser.add_argument("--real", action="store_true", help="real runs instead of check mode")
    parser.add_argument("--deploy", action="store_true", help="time deploy_platform.yml first (a no-op when deployed)")
    parser.add_argument("--json", default=str(ROOT / ".cache" / "bench" / "runbook_bench.json"),
                        help="where to write the figures as JSON (default .cache/bench/runbook_bench.json)")
    args = parser.parse_args(argv)
    known = [b.name for b in api.list_runbooks(ROOT)]
    names = args.runbooks or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        print(f"unknown runbook(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    rows = []
    if args.deploy:
        start, cpu_start = time.monotonic(), _children_cpu()
        deployed = run_playbook("deploy_platform.yml")
        rows.append({"name": "deploy_platform", "rc": deployed.rc, "min": time.monotonic() - start,
                     "median": time.monotonic() - start, "max": time.monotonic() - start,
                     "cpu": _children_cpu() - cpu_start,
                     "tasks": sum(deployed.count(k) for k in ("ok", "changed", "skipped")), "changed": deployed.changed})
    for name in names:
        row = bench(name, args.runs, args.real)
        rows.append(row)
        print(f"  {row['name']:<22} {row['median']:7.1f}s", file=sys.stderr, flush=True)
    mode = "real" if args.real else "check"
    print(f"{'runbook':<22} {'mode':<6} {'runs':>4} {'min s':>7} {'median s':>9} {'max s':>7} {'cpu s':>7} "
          f"{'tasks':>6} {'changed':>8} rc")
    for row in rows:
        print(f"{row['name']:<22} {mode if row['name'] != 'deploy_platform' else 'real':<6} "
              f"{args.runs if row['name'] != 'deploy_platform' else 1:>4} {row['min']:7.1f} {row['median']:9.1f} "
              f"{row['max']:7.1f} {row['cpu']:7.1f} {row['tasks']:>6} {row['changed']:>8} {row['rc']}")
    total = sum(r["median"] for r in rows)
    print(f"{'total (medians)':<22} {'':<6} {'':>4} {'':>7} {total:9.1f} {'':>7} {sum(r['cpu'] for r in rows):7.1f}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mode": mode,
                               "runs": args.runs, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                              "system": platform.platform()},
                               "rows": rows}, indent=2) + "\n")
    print(f"figures written to {out}")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
