#!/usr/bin/env python3
"""`make test`: every phase in order, each timed, and the times printed at the end.

    python3 tests/run_all.py [--workers N]

Phases: the virtualenv, the test bed's binaries (testbed/build.sh: linked from the machine's
cache when built once on this machine), ansible-lint (production profile), the unit tests, then
the integration tests and every role's Molecule scenario on N test beds side by side
(tests/parallel.py). A failing phase does not stop the later ones when they can still run
(lint and unit failures are reported together with the integration results); a failed
virtualenv or build stops the run. Standard library only: it runs before the virtualenv exists.

The last lines: a table of the phases with their wall time and result, then one line
`all: N passed, N failed, N skipped` counting the unit tests, the integration tests and the
Molecule scenarios. Exit status 0 only when every phase passed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("TEST_WORKERS", "2")),
                        help="test beds side by side for the integration and Molecule phase (default: $TEST_WORKERS or 2)")
    args = parser.parse_args(argv)
    JUNIT.mkdir(parents=True, exist_ok=True)
    for old in JUNIT.glob("*.xml"):
        old.unlink()

    phases = [
        ("venv", ["make", "--no-print-directory", "venv"], True),
        ("testbed build", ["bash", "testbed/build.sh"], True),
        ("lint", ["make", "--no-print-directory", "lint"], False),
        ("unit", [str(VENV_PY), "-m", "pytest", "tests/unit", "-q", f"--junitxml={JUNIT / 'unit.xml'}"], False),
        (f"integration + molecule ({args.workers} beds)",
         [str(VENV_PY), "tests/parallel.py", "--molecule", f"--workers={args.workers}"], False),
    ]
    results: list[tuple[str, float, str]] = []
    start = time.monotonic()
    for name, cmd, stops in phases:
        print(f"\n======== {name}: {' '.join(cmd)}", flush=True)
        t = time.monotonic()
        rc = subprocess.run(cmd, cwd=ROOT, check=False).returncode
        results.append((name, time.monotonic() - t, "passed" if rc == 0 else f"FAILED (exit {rc})"))
        if rc != 0 and stops:
            break

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
    failed_phases = [r for r in results if r[2] != "passed"]
    if failed_phases and f == 0:
        f = len(failed_phases)   # a failed phase with no failed test (lint, a bed that did not start) still counts
    print(f"all: {p} passed, {f} failed, {s} skipped", flush=True)
    return 0 if not failed_phases and len(results) == len(phases) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
