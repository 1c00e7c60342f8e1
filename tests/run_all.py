#!/usr/bin/env python3
"""`make test`: every phase in order, each timed, and the times printed at the end.

    python3 tests/run_all.py [--workers N]

Phases: the virtualenv, the test bed's binaries (testbed/build.sh: linked from the machine's
cache when built once on this machine), then the integration tests and every role's Molecule
scenario on N test beds side by side (tests/parallel.py), with ansible-lint (production profile)
and the unit tests running alongside them at a lower CPU priority: the integration phase waits on
rollouts and kwok's pod stages for about a fifth of its time, and lint and unit fill that idle
CPU instead of adding their own minutes in front (measured in the commit that made them run
alongside). Their output is kept in .cache/junit/{lint,unit}.log and printed, in full, after the
integration phase. A failing phase does not stop the others; a failed virtualenv or build stops
the run. Standard library only: it runs before the virtualenv exists.

The last lines: a table of the phases with their wall time and result, then one line
`all: N passed, N failed, N skipped` counting the unit tests, the integration tests and the
Molecule scenarios, with each failed test named just above it (a CI log cut to its tail still says
what failed). Exit status 0 only when every phase passed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
JUNIT = ROOT / ".cache" / "junit"


def counts(path: Path) -> tuple[int, int, int]:
    """passed, failed (failures + errors), skipped of one pytest JUnit file."""
    if not path.exists():
        return 0, 0, 0
    passed = failed = skipped = 0
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            failed += 1
        elif "skipped" in tags:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def failures(path: Path) -> list[str]:
    """`file::test - first line of the message` for each failed or erroring test of one JUnit file."""
    if not path.exists():
        return []
    found = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for child in case:
            if child.tag in ("failure", "error"):
                where = case.get("file") or (case.get("classname", "").replace(".", "/") + ".py")
                message = (child.get("message") or child.text or "").strip().splitlines()
                first = message[0][:200] if message else ""
                found.append(f"{where}::{case.get('name')} ({child.tag}) - {first}")
                break
    return found


class Background:
    """A phase run beside the integration phase: its output to a file, its own wall time."""

    def __init__(self, name: str, cmd: list[str], log: Path):
        self.name, self.log = name, log
        self.handle = log.open("w")
        self.start = time.monotonic()
        self.seconds = 0.0
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.handle, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.waiter = threading.Thread(target=self._wait, daemon=True)
        self.waiter.start()

    def _wait(self) -> None:
        self.proc.wait()
        self.seconds = time.monotonic() - self.start

    def wait(self) -> int:
        self.waiter.join()
        self.handle.close()
        return self.proc.returncode

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("TEST_WORKERS", "2")),
                        help="test beds side by side for the integration and Molecule phase (default: $TEST_WORKERS or 2)")
    args = parser.parse_args(argv)
    JUNIT.mkdir(parents=True, exist_ok=True)
    for old in JUNIT.glob("*.xml"):
        old.unlink()

    serial = [
        ("venv", ["make", "--no-print-directory", "venv"]),
        ("testbed build", ["bash", "testbed/build.sh"]),
    ]
    alongside = [
        ("lint", ["make", "--no-print-directory", "lint"]),
        ("unit", [str(VENV_PY), "-m", "pytest", "tests/unit", "-q", f"--junitxml={JUNIT / 'unit.xml'}"]),
    ]
    main_phase = (f"integration + molecule ({args.workers} beds)",
                  [str(VENV_PY), "tests/parallel.py", "--molecule", f"--workers={args.workers}"])
    expected = len(serial) + len(alongside) + 1
    results: list[tuple[str, float, str]] = []
    start = time.monotonic()
    for name, cmd in serial:
        print(f"\n======== {name}: {' '.join(cmd)}", flush=True)
        t = time.monotonic()
        rc = subprocess.run(cmd, cwd=ROOT, check=False).returncode
        results.append((name, time.monotonic() - t, "passed" if rc == 0 else f"FAILED (exit {rc})"))
        if rc != 0:
            break
    else:
        background = []
        for name, cmd in alongside:
            log = JUNIT / f"{name}.log"
            print(f"\n======== {name}, alongside the integration phase (its output follows that phase): "
                  f"{' '.join(cmd)}", flush=True)
            # nice: the integration phase's critical path keeps the CPU it needs; lint and unit take the rest
            background.append(Background(name, ["nice", "-n", "10", *cmd], log))
        name, cmd = main_phase
        print(f"\n======== {name}: {' '.join(cmd)}", flush=True)
        t = time.monotonic()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, check=False).returncode
        except BaseException:       # Ctrl-C: nothing left running behind
            for job in background:
                job.kill()
            raise
        integration = (name, time.monotonic() - t, "passed" if rc == 0 else f"FAILED (exit {rc})")
        for job in background:
            rc = job.wait()
            print(f"\n======== {job.name} (ran alongside; its output from {job.log.relative_to(ROOT)})", flush=True)
            print(job.log.read_text(), end="", flush=True)
            results.append((f"{job.name} (alongside)", job.seconds, "passed" if rc == 0 else f"FAILED (exit {rc})"))
        results.append(integration)

    unit = counts(JUNIT / "unit.xml")
    integ = [counts(p) for p in sorted(JUNIT.glob("w*.xml"))]
    molecule_ok = molecule_failed = 0
    log = JUNIT / "molecule.txt"
    if log.exists():
        for line in log.read_text().splitlines():
            molecule_ok += line.endswith(" passed")
            molecule_failed += line.endswith((" FAILED", " not run"))
    print("\n======== make test: time per phase", flush=True)
    for name, seconds, outcome in results:
        print(f"  {name:<34} {seconds / 60:5.1f} min  ({seconds:5.0f} s)  {outcome}")
    total = time.monotonic() - start
    print(f"  {'total':<34} {total / 60:5.1f} min  ({total:5.0f} s)")
    p = unit[0] + sum(c[0] for c in integ) + molecule_ok
    f = unit[1] + sum(c[1] for c in integ) + molecule_failed
    s = unit[2] + sum(c[2] for c in integ)
    print(f"  counted: unit {unit[0]} passed, {unit[1]} failed; integration {sum(c[0] for c in integ)} passed, "
          f"{sum(c[1] for c in integ)} failed, {sum(c[2] for c in integ)} skipped; Molecule scenarios "
          f"{molecule_ok} passed, {molecule_failed} failed")
    failed_tests = [line for path in [JUNIT / "unit.xml", *sorted(JUNIT.glob("w*.xml"))] for line in failures(path)]
    failed_tests += [f"Molecule {line}" for line in (log.read_text().splitlines() if log.exists() else [])
                     if line.endswith((" FAILED", " not run"))]
    if failed_tests:   # last lines of the run: a CI log cut to its tail still names what failed
        print("  failed:", flush=True)
        for line in failed_tests:
            print(f"    {line}", flush=True)
    failed_phases = [r for r in results if r[2] != "passed"]
    if failed_phases and f == 0:
        f = len(failed_phases)   # a failed phase with no failed test (lint, a bed that did not start) still counts
    print(f"all: {p} passed, {f} failed, {s} skipped", flush=True)
    return 0 if not failed_phases and len(results) == expected else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
