"""tests/job_queue.py: the queue tests/parallel.py's workers take their test modules from."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

from tests.job_queue import JobQueue

ROOT = Path(__file__).resolve().parents[2]


def test_each_job_is_taken_once_in_order(tmp_path):
    queue = JobQueue.create(tmp_path, ["long.py", "short.py", "molecule:role"])
    assert queue.take("w0") == "long.py"
    assert queue.take("w1", accept=lambda j: j.startswith("molecule:")) == "molecule:role"
    assert queue.take("w1") == "short.py"
    assert queue.take("w0") is None
    assert queue.takers() == {"long.py": "w0", "short.py": "w1", "molecule:role": "w1"}
    # A new run starts with nothing taken.
    assert JobQueue.create(tmp_path, ["long.py"]).take("w0") == "long.py"


def test_racing_takers_never_share_a_job(tmp_path):
    queue = JobQueue.create(tmp_path, [f"m{n}" for n in range(200)])
    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def drain(name):
        while (job := JobQueue(tmp_path).take(name)) is not None:
            got[name].append(job)
    threads = [threading.Thread(target=drain, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [j for jobs in got.values() for j in jobs]
    assert sorted(everything) == sorted(queue.order)   # each exactly once
    assert queue.takers() == {j: n for n, jobs in got.items() for j in jobs}


CONFTEST = textwrap.dedent('''
    import os
    import pytest

    @pytest.fixture(scope="session", autouse=True)
    def session_fixture():     # stands for the platform deploy: once per session
        with open(os.environ["QUEUE_TEST_LOG"], "a") as f:
            f.write(f"{os.environ['SAASODOO_TEST_WORKER']} session-setup - -\\n")
        yield
        with open(os.environ["QUEUE_TEST_LOG"], "a") as f:
            f.write(f"{os.environ['SAASODOO_TEST_WORKER']} session-teardown - -\\n")
''')

MODULE = textwrap.dedent('''
    import os, time
    import pytest

    LOG = os.environ["QUEUE_TEST_LOG"]

    def log(line):
        with open(LOG, "a") as f:
            f.write(f"{os.environ['SAASODOO_TEST_WORKER']} {line}\\n")

    @pytest.fixture(scope="module", autouse=True)
    def module_fixture():
        log("setup " + __name__)
        yield
        log("teardown " + __name__)

    @pytest.mark.parametrize("n", range(3))
    def test_case(n):
        time.sleep(0.05)
        log(f"run {__name__} {n}")
''')


def test_two_pytest_sessions_share_the_modules(tmp_path):
    """Two real pytest sessions with the plugin: every test runs once, each module's tests in one
    session with its module fixture set up and torn down exactly once around them."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "conftest.py").write_text(CONFTEST)
    names = [f"test_m{n}" for n in range(6)]
    for name in names:
        (project / f"{name}.py").write_text(MODULE)
    queue = JobQueue.create(tmp_path / "queue", [f"{n}.py" for n in reversed(names)])
    log = tmp_path / "log"
    procs = []
    for worker in ("w0", "w1"):
        env = dict(os.environ, SAASODOO_TEST_QUEUE=str(queue.path), SAASODOO_TEST_WORKER=worker,
                   QUEUE_TEST_LOG=str(log), PYTHONPATH=str(ROOT))
        procs.append(subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "tests.job_queue",
                                       "-p", "no:cacheprovider", *[f"{n}.py" for n in names]],
                                      cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    lines = [line.split() for line in log.read_text().splitlines()]
    runs = Counter((line[2], line[3]) for line in lines if line[1] == "run")
    assert runs == Counter({(name, str(n)): 1 for name in names for n in range(3)})
    takers = queue.takers()
    assert sorted(takers) == sorted(f"{n}.py" for n in names)
    for name in names:
        mine = [line for line in lines if line[2] == name]
        worker = takers[f"{name}.py"]
        assert {line[0] for line in mine} == {worker}          # one session ran the whole module
        events = [line[1] for line in mine]
        assert events == ["setup", "run", "run", "run", "teardown"], (name, events)
    # The session fixture: set up once and torn down once, at the end, in each session that ran tests.
    for worker in set(takers.values()):
        mine = [line[1] for line in lines if line[0] == worker]
        assert mine.count("session-setup") == 1 and mine.count("session-teardown") == 1, mine
        assert mine[0] == "session-setup" and mine[-1] == "session-teardown", mine
    # The sessions report what they ran, and only that.
    total = sum(int(out.split(" passed")[0].split()[-1]) for out in outputs if " passed" in out)
    assert total == 3 * len(names)
