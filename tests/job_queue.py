"""The shared job queue of tests/parallel.py: each worker takes the next job nobody has taken yet.

A job is a test module (`tests/integration/test_x.py`) or a Molecule scenario (`molecule:<role>`).
The queue is a directory: `order.json` lists the jobs, longest first by their measured duration;
a job is taken by creating `taken/<n>` with O_CREAT|O_EXCL, which exactly one process can do, so
no job runs twice and none is left while a worker is still taking jobs. Whichever worker is free
first takes the next one - a bed that starts late or a module that runs long no longer leaves the
other worker idle at the end, as a split fixed up front did (it was off by 170-270 s a run, because
module timings move ~10% between runs).

Inside each worker's pytest session the plugin below (`-p tests.job_queue`) runs the collected
tests module by module in the order the queue hands them out, so each worker still deploys its
platform once (session fixtures) and module fixtures are set up and torn down around their module
as usual (the last test of a module runs with a test of another module as its "next", so pytest
tears the module down and keeps the session; the next module is taken once it is over). Tests of
modules this worker did not take are neither run nor reported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ENV = "SAASODOO_TEST_QUEUE"


class JobQueue:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.order: list[str] = json.loads((self.path / "order.json").read_text())

    @classmethod
    def create(cls, path: Path, order: list[str]) -> "JobQueue":
        path = Path(path)
        taken = path / "taken"
        taken.mkdir(parents=True, exist_ok=True)
        for entry in taken.iterdir():
            entry.unlink()
        (path / "order.json").write_text(json.dumps(order, indent=1) + "\n")
        return cls(path)

    def take(self, worker: str, accept=lambda job: True) -> str | None:
        """The first job of the order that nobody has taken and `accept` allows; None when none is left."""
        for n, job in enumerate(self.order):
            if not accept(job) or (self.path / "taken" / str(n)).exists():
                continue
            try:
                fd = os.open(self.path / "taken" / str(n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as f:
                f.write(worker + "\n")
            return job
        return None

    def takers(self) -> dict[str, str]:
        """job -> the worker that took it (jobs nobody took are missing)."""
        out = {}
        for n, job in enumerate(self.order):
            try:
                out[job] = (self.path / "taken" / str(n)).read_text().strip()
            except OSError:
                pass
        return out


# --------------------------------------------------------------------------- pytest plugin

@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """Run the modules this worker takes from the queue, one after the other (without the
    variable, or with --collect-only, pytest's own loop runs everything as usual)."""
    path = os.environ.get(ENV)
    if not path or session.config.option.collectonly:
        return None
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        raise session.Interrupted(f"{session.testsfailed} error(s) during collection")
    queue = JobQueue(Path(path))
    worker = os.environ.get("SAASODOO_TEST_WORKER", str(os.getpid()))
    by_module: dict[str, list] = {}
    for item in session.items:
        by_module.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def take():
        job = queue.take(worker, accept=lambda j: j in by_module)
        return job, (by_module[job] if job else [])

    hook = session.config.hook
    current_module, current = take()
    while current:
        # The last test of a module is run with a test of another module as its next one: pytest
        # then tears down this module's fixtures and keeps the session's (the platform deploy), and
        # the next module is taken only when this one is over - not while its last test runs.
        other = next((items[0] for module, items in by_module.items() if module != current_module), None)
        for i, item in enumerate(current):
            nextitem = current[i + 1] if i + 1 < len(current) else other
            hook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if session.shouldfail:
                raise session.Failed(session.shouldfail)
            if session.shouldstop:
                raise session.Interrupted(session.shouldstop)
        current_module, current = take()
    # The session's fixtures are torn down by pytest's own pytest_sessionfinish (runner.py).
    return True
