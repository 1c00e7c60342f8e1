#!/usr/bin/env python3
"""Run the integration suite (and the Molecule scenarios) on several test beds side by side.

    python tests/parallel.py [--workers N] [--molecule] [--record] [MODULE ...] [-- PYTEST_ARGS]
    python tests/parallel.py --down      stop the beds of workers 1..N (make testbed-down does)

Why: most of a runbook test's time is spent waiting (rollouts, kwok's pod stages, restarts) or in
one single-threaded ansible-playbook process, so two beds on a 2-core machine finish the suite in
little more than half the time. Nothing is shared between beds: each worker has its own control
plane, PostgreSQL, Redis, endpoints, sample platform and reports, so a fault injected on one bed
can never be seen by a test on another.

Layout (docs/testbed.md has the table):
- worker 0 runs in this checkout, on the bed `make testbed-up` starts (.cache/testbed, the
  default ports);
- worker k >= 1 runs in a copy of the checkout's files under .cache/workers/wK (tracked and
  untracked-but-not-ignored files, refreshed on every run; its .cache keeps the bed's state), with
  every port moved: TESTBED_PORT_OFFSET + 1000*k for the control plane, SAASODOO_PORT_SHIFT + k for
  the endpoints, Prometheus, dnsmasq and PgBouncer, SAASODOO_DB_PORT/SAASODOO_REDIS_PORT + k.

The test modules (and the Molecule scenarios, with --molecule) wait in one queue, longest first
by their measured duration (tests/integration/durations.json); whichever worker is free takes the
next one (tests/job_queue.py). Each worker runs one pytest session (one platform deploy) that takes
module after module from the queue until none is left, then takes the scenarios left. The workers'
output is streamed with a [wK] prefix. At the end: each worker's result,
the 20 slowest tests over all workers, and one closing line `N passed, N failed, N skipped`.
--record writes the measured durations back to tests/integration/durations.json.

Exit status: 0 when every worker passed, 1 otherwise (2 on bad usage).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.job_queue import ENV as QUEUE_ENV, JobQueue  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DURATIONS = ROOT / "tests" / "integration" / "durations.json"
WORKERS_DIR = ROOT / ".cache" / "workers"
JUNIT = ROOT / ".cache" / "junit"
QUEUE = ROOT / ".cache" / "queue"
DEFAULT_ESTIMATE = 60.0
PORT_OFFSET_STEP = 1000
MAX_SHIFT = 9            # the endpoints' ports come in blocks of ten (services.yml)

_print_lock = threading.Lock()
START = time.monotonic()


def say(msg: str) -> None:
    with _print_lock:
        print(msg, flush=True)


def clock() -> str:
    return f"{time.monotonic() - START:6.0f}s"


# --------------------------------------------------------------------------- planning

def load_estimates() -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(DURATIONS.read_text()).items()}
    except (OSError, ValueError):
        return {}


def queue_order(jobs: list[str], estimates: dict[str, float]) -> list[str]:
    """The queue's order: the test modules longest first (so the short ones fill the gaps at the
    end), then the Molecule scenarios, which a worker takes once its pytest session is over."""
    return sorted(jobs, key=lambda j: (j.startswith("molecule:"), -estimates.get(j, DEFAULT_ESTIMATE), j))


def expected_loads(order: list[str], workers: int, estimates: dict[str, float]) -> list[float]:
    """What the queue should hand each worker if the estimates hold (for the plan printed first)."""
    loads = [0.0] * workers
    for job in order:
        k = min(range(workers), key=lambda i: (loads[i], i))
        loads[k] += estimates.get(job, DEFAULT_ESTIMATE)
    return loads


# --------------------------------------------------------------------------- playbook runs

def cpu_times() -> list[int] | None:
    """The machine's CPU time counters (/proc/stat: user nice system idle iowait ...), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            return [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def cpu_busy(before: list[int] | None, after: list[int] | None) -> float | None:
    """Share of the machine's CPU time spent busy between two cpu_times() readings."""
    if not before or not after:
        return None
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta)
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
    return (total - idle) / total if total > 0 else None


def read_run_logs(workers) -> list[dict]:
    """The playbook runs the workers' tests made (tests/runbooks.py writes one JSON line per run)."""
    runs = []
    for w in workers:
        path = JUNIT / f"runs-w{w.k}.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    runs.append(json.loads(line))
                except ValueError:
                    continue
    return runs


def run_breakdown(runs: list[dict], test_seconds: float) -> str:
    wall = sum(r["wall"] for r in runs)
    cpu = sum(r["cpu"] for r in runs)
    share = f" ({100 * wall / test_seconds:.0f}% of the tests' {test_seconds:.0f}s)" if test_seconds else ""
    return f"{len(runs)} playbook runs took {wall:.0f}s{share}, {cpu:.0f} CPU s"


def costliest_playbooks(runs: list[dict], top: int = 8) -> list[str]:
    totals: dict[str, list[float]] = {}       # playbook -> [runs, wall, cpu]
    for r in runs:
        t = totals.setdefault(r["playbook"], [0, 0.0, 0.0])
        t[0], t[1], t[2] = t[0] + 1, t[1] + r["wall"], t[2] + r["cpu"]
    rows = sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]
    return [f"{wall:7.0f}s  {n:3} runs  {wall / n:5.1f}s each  {cpu / max(wall, 0.001):4.0%} CPU  {name}"
            for name, (n, wall, cpu) in rows]


# --------------------------------------------------------------------------- workers

# What compileall writes .pyc files for in each worker's home (tests/parallel.py, Worker._run).
COMPILED = ("plugins", "playbooks", "tests", "testbed", "saasodoo_runbooks")


def checkout_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f and ((ROOT / f).is_file() or (ROOT / f).is_symlink())]


def sync_copy(dest: Path, files: list[str]) -> None:
    """Make dest hold exactly the checkout's files (its .cache, the bed's state, is kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in dest.iterdir():
        if entry.name != ".cache":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for rel in files:
        source, target = ROOT / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():      # e.g. playbooks/callback_plugins: kept a link, as in git
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)


def worker_env(k: int, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    cache = Path(env.get("TESTBED_CACHE", ROOT / ".cache" / "testbed")) if k == 0 else home / ".cache" / "testbed"
    base_shift = int(env.get("SAASODOO_PORT_SHIFT", "0"))
    env.update({
        "TESTBED_CACHE": str(cache),
        "KUBECONFIG": str(cache / "kubeconfig"),
        "K8S_AUTH_KUBECONFIG": str(cache / "kubeconfig"),
        "ANSIBLE_CONFIG": str(home / "ansible.cfg"),
        "TESTBED_PORT_OFFSET": str(int(env.get("TESTBED_PORT_OFFSET", "0")) + PORT_OFFSET_STEP * k),
        "SAASODOO_PORT_SHIFT": str(base_shift + k),
        "SAASODOO_DB_PORT": str(int(env.get("SAASODOO_DB_PORT", "55432")) + k),
        "SAASODOO_REDIS_PORT": str(int(env.get("SAASODOO_REDIS_PORT", "56379")) + k),
        "PYTHONUNBUFFERED": "1",
        # testbed/zipimport_cache/sitecustomize.py: AnsiballZ modules' imports compiled once, not per task
        "PYTHONPATH": os.pathsep.join(p for p in (str(home / "testbed" / "zipimport_cache"), env.get("PYTHONPATH")) if p),
    })
    # The venv's tools (molecule, ansible-playbook) first, as `make` puts them.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


class Worker(threading.Thread):
    def __init__(self, k: int, jobs: list[str], queue: JobQueue, pytest_args: list[str], files: list[str]):
        super().__init__(name=f"w{k}", daemon=True)
        self.k, self.jobs, self.queue, self.pytest_args, self.files = k, jobs, queue, pytest_args, files
        self.home = ROOT if k == 0 else WORKERS_DIR / f"w{k}"
        self.junit = JUNIT / f"w{k}.xml"
        self.failed: list[str] = []
        self.scenarios: dict[str, str] = {}     # role -> passed / FAILED / not run
        self.timings: dict[str, float] = {}
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.elapsed = 0.0

    def run_cmd(self, cmd: list[str], env: dict[str, str], label: str, quiet: bool = False,
                cwd: Path | None = None) -> int:
        if self.stopping:
            return 1
        prefix = f"[w{self.k}]"
        self.proc = subprocess.Popen(cmd, cwd=cwd or self.home, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        tail: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if quiet:
                tail = (tail + [line])[-40:]
            else:
                say(f"{prefix} {line}")
        rc = self.proc.wait()
        if rc != 0 and quiet:
            say(f"{prefix} {label} failed (exit {rc}); its last lines:")
            for line in tail:
                say(f"{prefix}   {line}")
        return rc

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            self._run()
        except Exception as exc:  # a worker's own failure must not hide the others' results
            self.failed.append(f"worker error: {exc}")
            say(f"[w{self.k}] worker error: {exc}")
        self.elapsed = time.monotonic() - t0

    def _run(self) -> None:
        env = worker_env(self.k, self.home)
        env[QUEUE_ENV] = str(self.queue.path)
        env["SAASODOO_TEST_WORKER"] = f"w{self.k}"
        # Every playbook run's wall and CPU seconds (tests/runbooks.py), for the summary's breakdown.
        JUNIT.mkdir(parents=True, exist_ok=True)
        env["SAASODOO_RUN_LOG"] = str(JUNIT / f"runs-w{self.k}.jsonl")
        Path(env["SAASODOO_RUN_LOG"]).unlink(missing_ok=True)
        py = sys.executable
        if self.k:
            sync_copy(self.home, self.files)
        say(f"[w{self.k}] {clock()} bed in {self.home} (ports: control plane +{env['TESTBED_PORT_OFFSET']}, "
            f"services shift {env['SAASODOO_PORT_SHIFT']}, PostgreSQL {env['SAASODOO_DB_PORT']})")
        # The project's Python compiled once up front: with PYTHONDONTWRITEBYTECODE set (as on the CI
        # machines) nothing writes a .pyc, and every forked task worker of ansible-playbook compiles all
        # of plugins/filter anew when it first templates a filter (measured: 17% of a runbook's CPU).
        self.run_cmd([py, "-m", "compileall", "-q", "-j", "0", *COMPILED], env, "compileall", quiet=True)
        t = time.monotonic()
        for label, cmd in (("testbed/build.sh", ["bash", "testbed/build.sh"]),
                           ("cluster.py up", [py, "testbed/cluster.py", "up"]),
                           ("services.sh up", ["bash", "testbed/services.sh", "up"]),
                           ("endpoints.py up", [py, "testbed/endpoints.py", "up"])):
            if self.run_cmd(cmd, env, label, quiet=True) != 0:
                self.failed.append(f"test bed: {label}")
                return
        self.timings["bed up"] = time.monotonic() - t
        say(f"[w{self.k}] {clock()} bed up in {self.timings['bed up']:.0f}s")

        # Every worker collects every module; the plugin runs only those it takes from the queue.
        modules = [j for j in self.jobs if not j.startswith("molecule:")]
        if modules:
            self.junit.parent.mkdir(parents=True, exist_ok=True)
            self.junit.unlink(missing_ok=True)
            t = time.monotonic()
            rc = self.run_cmd([py, "-m", "pytest", "-p", "tests.job_queue", "-v", "--durations=0", "--durations-min=5",
                               f"--junitxml={self.junit}", "-o", "junit_family=xunit2", *modules,
                               *self.pytest_args], env, "pytest")
            self.timings["pytest"] = time.monotonic() - t
            if rc not in (0, 5):
                self.failed.append(f"pytest (exit {rc})")
        while not self.stopping:
            job = self.queue.take(f"w{self.k}", accept=lambda j: j.startswith("molecule:"))
            if job is None:
                break
            role = job.split(":", 1)[1]
            t = time.monotonic()
            say(f"[w{self.k}] {clock()} ==> molecule test: roles/{role}")
            rc = self.run_cmd(["molecule", "test"], env, f"molecule {role}", quiet=True,
                              cwd=self.home / "roles" / role)
            self.timings[f"molecule:{role}"] = time.monotonic() - t
            self.scenarios[role] = "passed" if rc == 0 else "FAILED"
            say(f"[w{self.k}] {clock()} molecule {role}: {self.scenarios[role]} "
                f"in {self.timings[f'molecule:{role}']:.0f}s")
            if rc != 0:
                self.failed.append(f"molecule {role} (exit {rc})")

    def stop(self) -> None:
        """Stop the worker's running command and every process under it (ansible-runner starts
        ansible-playbook in a session of its own and traps SIGTERM, so the group is not enough)."""
        self.stopping = True
        if not self.proc or self.proc.poll() is not None:
            return
        tree = [self.proc.pid, *descendants(self.proc.pid)]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in tree:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(alive(pid) for pid in tree):
                time.sleep(0.2)


def descendants(root: int) -> list[int]:
    """Every process whose parent chain leads to root (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --------------------------------------------------------------------------- results

def read_junit(path: Path) -> list[dict]:
    """Every test case of a pytest JUnit file: nodeid, module, seconds, outcome."""
    if not path.exists():
        return []
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
            elif child.tag == "skipped":
                outcome = "skipped"
        classname = case.get("classname", "")
        module = "tests/" + "/".join(classname.split(".")[1:3]) + ".py" if classname.startswith("tests.") else classname
        cases.append({"id": f"{classname}::{case.get('name')}", "module": module,
                      "seconds": float(case.get("time") or 0), "outcome": outcome})
    return cases


DOWN = [["testbed/kwok_logs.py", "down"], ["testbed/prometheus.py", "down"], ["testbed/pgbouncer.py", "down"],
        ["testbed/dns.py", "down"], ["testbed/certmanager.py", "down"], ["testbed/endpoints.py", "down"]]


def down() -> int:
    """Stop the beds of workers 1..N (worker 0's bed is `make testbed-down`'s own)."""
    venv_py = ROOT / ".venv" / "bin" / "python"
    py = str(venv_py) if venv_py.exists() else sys.executable
    rc = 0
    for home in sorted(WORKERS_DIR.glob("w[0-9]*")):
        k = int(home.name[1:])
        env = worker_env(k, home)
        say(f"==> stopping the bed of worker {k} ({home})")
        steps = [[py, *c] for c in DOWN] + [["bash", "testbed/services.sh", "down"], [sys.executable, "testbed/cluster.py", "down"]]
        for cmd in steps:
            if (home / cmd[1]).exists() or cmd[0] == "bash":
                rc |= subprocess.run(cmd, cwd=home, env=env, check=False).returncode
    return rc


def main(argv: list[str]) -> int:
    if argv == ["--down"]:
        return down()
    pytest_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("TEST_WORKERS", "2")),
                        help="test beds side by side (default: $TEST_WORKERS or 2)")
    parser.add_argument("--molecule", action="store_true", help="also run every role's Molecule scenario")
    parser.add_argument("--record", action="store_true", help=f"write the measured durations to {DURATIONS.relative_to(ROOT)}")
    parser.add_argument("modules", nargs="*", help="test modules (default: every tests/integration/test_*.py)")
    args = parser.parse_args(argv)
    base_shift = int(os.environ.get("SAASODOO_PORT_SHIFT", "0"))
    if not 1 <= args.workers <= MAX_SHIFT + 1 - base_shift:
        parser.error(f"--workers must be between 1 and {MAX_SHIFT + 1 - base_shift} (SAASODOO_PORT_SHIFT={base_shift})")

    cpu_at_start = cpu_times()
    modules = args.modules or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "integration").glob("test_*.py"))
    for m in modules:
        if not (ROOT / m).is_file():
            parser.error(f"no such test module: {m}")
    jobs = list(modules)
    if args.molecule:
        jobs += [f"molecule:{p.parent.parent.name}" for p in sorted((ROOT / "roles").glob("*/molecule/default"))]
    estimates = load_estimates()
    workers_n = min(args.workers, len(jobs)) or 1
    order = queue_order(jobs, estimates)
    queue = JobQueue.create(QUEUE, order)
    loads = expected_loads(order, workers_n, estimates)
    say(f"==> {len(modules)} test modules" + (f" and {len(jobs) - len(modules)} Molecule scenarios" if args.molecule else "")
        + f" on {workers_n} test bed(s), taken from one queue, longest first (expected ~"
        + " / ".join(f"{load / 60:.0f}" for load in loads) + " min):")
    say("    " + " ".join(Path(j).stem.removeprefix("test_") if not j.startswith("molecule:") else j for j in order))

    files = checkout_files() if workers_n > 1 else []
    workers = [Worker(k, jobs, queue, pytest_args, files) for k in range(workers_n)]

    def interrupt(signum, _frame):
        say(f"==> signal {signum}: stopping the workers")
        for w in workers:
            w.stop()
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)

    for w in workers:
        w.start()
    for w in workers:
        while w.is_alive():
            w.join(1)

    # ------------------------------------------------------------------ summary
    cases = [dict(c, worker=w.k) for w in workers for c in read_junit(w.junit)]
    takers = queue.takers()
    untaken = [j for j in order if j not in takers]
    say("")
    say("==> integration workers")
    for w in workers:
        mine = [j for j in order if takers.get(j) == f"w{w.k}"]
        say(f"    w{w.k} took: {' '.join(Path(j).stem.removeprefix('test_') if not j.startswith('molecule:') else j for j in mine) or '-'}")
    if untaken:
        say(f"    NOT RUN (no worker took them): {' '.join(untaken)}")
    for w in workers:
        mine = [c for c in cases if c["worker"] == w.k]
        counts = {o: sum(1 for c in mine if c["outcome"] == o) for o in ("passed", "failed", "error", "skipped")}
        steps = ", ".join(f"{k} {v:.0f}s" for k, v in w.timings.items() if not k.startswith("molecule:"))
        mol = [k for k in w.timings if k.startswith("molecule:")]
        say(f"    w{w.k}: {'FAILED' if w.failed else 'ok'} in {w.elapsed:.0f}s; {counts['passed']} passed, "
            f"{counts['failed'] + counts['error']} failed, {counts['skipped']} skipped; {steps}"
            + (f"; {len(mol)} Molecule scenarios" if mol else ""))
        for what in w.failed:
            say(f"        failed: {what}")
    say("==> the 20 slowest tests (setup + call + teardown)")
    for c in sorted(cases, key=lambda c: -c["seconds"])[:20]:
        say(f"    {c['seconds']:7.1f}s  w{c['worker']}  {c['id']}")

    busy = cpu_busy(cpu_at_start, cpu_times())
    if busy is not None:
        say(f"==> the machine's {os.cpu_count()} CPU(s) were busy {busy:.0%} of the time")
    runs = read_run_logs(workers)
    if runs:
        say("==> where the time went: " + run_breakdown(runs, sum(c["seconds"] for c in cases)))
        for line in costliest_playbooks(runs):
            say(f"    {line}")

    if args.molecule:   # for tests/run_all.py's count
        JUNIT.mkdir(parents=True, exist_ok=True)
        (JUNIT / "molecule.txt").write_text("".join(f"{role} {outcome}\n" for w in workers
                                                    for role, outcome in w.scenarios.items()))

    measured = dict(estimates)
    for m in modules:
        mine = [c["seconds"] for c in cases if c["module"] == m]
        if mine:
            measured[m] = round(sum(mine), 1)
    for w in workers:
        measured.update({k: round(v, 1) for k, v in w.timings.items() if k.startswith("molecule:")})
    text = json.dumps(dict(sorted(measured.items())), indent=2) + "\n"
    JUNIT.mkdir(parents=True, exist_ok=True)
    (JUNIT / "durations.json").write_text(text)   # this run's, to compare or record
    if args.record:
        DURATIONS.write_text(text)
        say(f"==> durations written to {DURATIONS.relative_to(ROOT)}")

    passed = sum(1 for c in cases if c["outcome"] == "passed")
    failed = sum(1 for c in cases if c["outcome"] in ("failed", "error"))
    skipped = sum(1 for c in cases if c["outcome"] == "skipped")
    scenario_failures = sum(1 for w in workers for o in w.scenarios.values() if o != "passed")
    other_failures = sum(1 for w in workers for f in w.failed if not f.startswith(("molecule", "pytest")))
    say(f"==> on {workers_n} bed(s) in {time.monotonic() - START:.0f}s"
        + (f"; Molecule: {scenario_failures} scenario(s) failed" if args.molecule else ""))
    say(f"integration: {passed} passed, {failed} failed, {skipped} skipped")
    ok = not any(w.failed for w in workers) and failed == 0 and not untaken
    if not cases and not other_failures:
        say("==> no test ran")
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
