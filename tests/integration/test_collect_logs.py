"""collect_logs.yml against the real test bed.

Logs flow through the real Kubernetes API: the API server asks the pod's node for
/containerLogs/..., and kwok serves the file a kwok.x-k8s.io Logs object names
(testbed/kwok_logs.py). Events are real core/v1 Events in the platform's namespaces, posted the
way a kubelet posts them. Pods without a Logs object answer "no logs found", which the bundle
must record honestly.
"""

from __future__ import annotations

import datetime
import json
import tarfile
import uuid

import pytest
from kubernetes import client

from testbed import faults, kwok_logs
from tests import k8s_state
from tests.runbooks import run_playbook

SECRET = "hunter2-" + uuid.uuid4().hex[:8]
TOKEN = "tok-" + uuid.uuid4().hex


def _now(minus_minutes: int = 0) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=minus_minutes)


@pytest.fixture(scope="module")
def log_server(platform):
    was_running = kwok_logs.running_pid() is not None
    kwok_logs.up()
    yield
    if not was_running:
        kwok_logs.down()  # nodes' kubelet port back to 0, Logs objects deleted, process stopped


@pytest.fixture(scope="module")
def seeded(platform, log_server):
    """Log lines for the backend and frontend pods and events for them, all carrying one marker."""
    marker = "m" + uuid.uuid4().hex[:10]
    comps = platform["saasodoo_components"]
    for key in ("backend", "frontend"):
        faults.wait_healthy(key)
    backend_pods = [p.metadata.name for p in faults._pods(comps["backend"])]
    frontend_pods = [p.metadata.name for p in faults._pods(comps["frontend"])]
    ns = comps["backend"]["namespace"]
    for pod in backend_pods:
        kwok_logs.write_lines(ns, pod, "backend", [
            (f"ERROR {marker} stale failure outside the window", "stderr", _now(180)),
            (f"INFO {marker} request served in 12ms", "stdout", _now(2)),
            (f"WARN {marker} slow query took 2.5s", "stdout", _now(1)),
            (f"ERROR {marker} auth failed for postgresql://saasodoo:{SECRET}@db:5432/saasodoo token={TOKEN}",
             "stderr", _now(1)),
        ], replace=True)
    for pod in frontend_pods:
        kwok_logs.write_lines(ns, pod, "frontend", [(f"ERROR {marker} static asset missing", "stderr", _now(1))],
                              replace=True)

    core = faults.core()
    created = []

    def event(pod, etype, reason, message, when):
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{pod}.", namespace=ns),
            involved_object=client.V1ObjectReference(kind="Pod", name=pod, namespace=ns),
            type=etype, reason=reason, message=f"{marker} {message}", count=1,
            first_timestamp=when, last_timestamp=when,
            source=client.V1EventSource(component="kubelet"))
        created.append(core.create_namespaced_event(ns, body).metadata.name)

    event(backend_pods[0], "Warning", "BackOff", "Back-off restarting failed container backend", _now(1))
    event(backend_pods[0], "Normal", "Pulled", "Container image already present on machine", _now(1))
    event(backend_pods[0], "Warning", "Failed", "old failure outside the window", _now(180))
    event(frontend_pods[0], "Warning", "Unhealthy", "Readiness probe failed: HTTP 503", _now(1))
    yield {"marker": marker, "namespace": ns, "backend_pods": backend_pods, "frontend_pods": frontend_pods}
    for name in created:
        core.delete_namespaced_event(name, ns)


def _bundles(folder):
    dirs = sorted(p for p in folder.glob("saasodoo-logs-*") if p.is_dir()) if folder.exists() else []
    archives = sorted(folder.glob("saasodoo-logs-*.tar.gz")) if folder.exists() else []
    return dirs, archives


def _all_text(bundle) -> str:
    return "\n".join(p.read_text() for p in bundle.rglob("*") if p.is_file())


def test_check_mode_reads_everything_and_writes_nothing(platform, seeded, tmp_path):
    out = tmp_path / "bundles"
    namespaces = sorted({c["namespace"] for c in platform["saasodoo_components"].values()})
    before = k8s_state.snapshot(namespaces)

    result = run_playbook("collect_logs.yml", check=True, extravars={
        "collect_logs_output_dir": str(out), "collect_logs_services": ["backend"]})

    assert result.rc == 0, result.stdout[-3000:]
    assert not out.exists(), f"check mode wrote {list(out.rglob('*'))}"
    assert k8s_state.diff(before, k8s_state.snapshot(namespaces)) == []
    report = result.artifacts["collect_logs_report"]
    assert report["bundle"]["written"] is False
    assert report["actions"][0].startswith(f"would write the log bundle {out}/saasodoo-logs-")
    # The collection itself ran: the seeded error lines were read and matched.
    errors = next(f for f in report["findings"] if f["code"] == "LOG_ERROR_PATTERNS")
    assert any(seeded["marker"] in line for line in errors["evidence"]), errors
    assert SECRET not in json.dumps(report) and TOKEN not in json.dumps(report)


def test_bundle_holds_the_real_logs_and_events_filtered(platform, seeded, tmp_path):
    out = tmp_path / "bundles"
    marker, ns = seeded["marker"], seeded["namespace"]
    namespaces = sorted({c["namespace"] for c in platform["saasodoo_components"].values()})
    before = k8s_state.snapshot(namespaces)

    result = run_playbook("collect_logs.yml", extravars={
        "collect_logs_output_dir": str(out), "collect_logs_services": ["backend"],
        "collect_logs_min_severity": "warning", "collect_logs_since_minutes": 60})

    assert result.rc == 0, result.stdout[-3000:]
    assert k8s_state.diff(before, k8s_state.snapshot(namespaces)) == []
    # Writing the bundle is the run's only change, and it is reported as one.
    assert result.changed > 0
    dirs, archives = _bundles(out)
    assert len(dirs) == 1 and [a.name for a in archives] == [dirs[0].name + ".tar.gz"]
    bundle = dirs[0]
    index = json.loads((bundle / "index.json").read_text())
    assert index["filters"] == {"services": ["backend"], "min_severity": "warning", "namespaces": [ns]}
    assert index["window"]["minutes"] == 60

    # Service filter: the backend's containers only, each read through the API.
    assert {e["component"] for e in index["logs"]} == {"backend"}
    assert sorted(e["pod"] for e in index["logs"]) == sorted(seeded["backend_pods"])
    for entry in index["logs"]:
        assert entry["available"] is True, entry
        # Time window: the API (kwok's sinceSeconds) left the 3-hour-old line out; 3 recent lines came.
        assert entry["lines_total"] == 3, entry
        # Severity filter: WARN and ERROR kept, INFO dropped.
        assert entry["lines_kept"] == 2 and entry["by_severity"] == {"error": 1, "warning": 1, "info": 1}, entry
        text = (bundle / entry["file"]).read_text()
        assert f"WARN {marker} slow query" in text and f"ERROR {marker} auth failed" in text
        assert "request served" not in text and "stale failure" not in text
        assert "postgresql://saasodoo:********@db" in text and "token=********" in text
    everything = _all_text(bundle)
    assert SECRET not in everything and TOKEN not in everything
    assert "static asset missing" not in everything  # the frontend was not asked for

    # Events: the backend's recent Warning only (not the frontend's, not Normal, not the old one).
    events = (bundle / f"events/{ns}.log").read_text()
    assert f"BackOff" in events and f"{marker} Back-off restarting" in events
    assert f"{marker} Readiness probe failed" not in events
    assert f"{marker} Container image already present" not in events
    assert f"{marker} old failure" not in events
    kept = [e for e in json.loads((bundle / "events/events.json").read_text()) if marker in e["message"]]
    assert [(e["reason"], e["component"]) for e in kept] == [("BackOff", "backend")]

    # The index counts what is in the files, and samples the error pattern matches.
    assert index["counts"]["log_lines_kept"] == 2 * len(seeded["backend_pods"])
    assert index["counts"]["containers_unavailable"] == 0
    samples = [s["line"] for m in index["errors"] for s in m["samples"]]
    assert any(f"ERROR {marker} auth failed" in s for s in samples)
    assert any(f"{marker} Back-off" in s for s in samples)

    # The archive holds the same bundle.
    with tarfile.open(archives[0]) as tar:
        names = tar.getnames()
        member = next(n for n in names if n.endswith("index.json"))
        assert json.loads(tar.extractfile(member).read()) == index
    assert any(n.endswith(entry["file"]) for n in names)

    report = result.artifacts["collect_logs_report"]
    assert report["bundle"]["directory"] == str(bundle) and report["bundle"]["written"] is True
    assert f"archived it as {bundle}.tar.gz" in report["actions"]
    assert SECRET not in json.dumps(report) and TOKEN not in json.dumps(report)


def test_second_run_writes_a_new_bundle_and_records_unavailable_logs(platform, seeded, tmp_path):
    out = tmp_path / "bundles"
    marker = seeded["marker"]

    # The first run names its services the way an AWX multiselect survey passes them (one per line).
    first = run_playbook("collect_logs.yml", extravars={"collect_logs_output_dir": str(out),
                                                        "collect_logs_services": "frontend\nredis"})
    second = run_playbook("collect_logs.yml", extravars={"collect_logs_output_dir": str(out)})

    assert first.rc == 0, first.stdout[-3000:]
    assert second.rc == 0, second.stdout[-3000:]
    dirs, archives = _bundles(out)
    assert len(dirs) == 2 and len(archives) == 2, dirs  # a new bundle per run, none overwritten
    assert first.changed > 0 and second.changed > 0
    assert json.loads((dirs[0] / "index.json").read_text())["filters"]["services"] == ["frontend", "redis"]
    index = json.loads((dirs[-1] / "index.json").read_text())
    assert index["filters"]["services"] == "all" and index["filters"]["min_severity"] == "info"
    comps = {e["component"] for e in index["logs"]}
    assert set(platform["saasodoo_components"]) <= comps
    by_pod = {e["pod"]: e for e in index["logs"]}
    for pod in seeded["frontend_pods"]:
        assert by_pod[pod]["available"] and by_pod[pod]["lines_kept"] == 1
    text = _all_text(dirs[-1])
    assert f"INFO {marker} request served" in text  # info is kept now
    assert f"{marker} Readiness probe failed" in text and f"{marker} Container image already present" in text
    # Pods without a Logs object: the API's answer, recorded per container, never invented lines.
    redis = [e for e in index["logs"] if e["component"] == "redis"]
    assert redis and all(not e["available"] and e["reason"].startswith("logs unavailable: ")
                         and "no logs found" in e["reason"] for e in redis), redis
    report = second.artifacts["collect_logs_report"]
    unavailable = next(f for f in report["findings"] if f["code"] == "LOGS_UNAVAILABLE")
    assert unavailable["severity"] == "low"
    assert report["healthy_before"] is True and report["escalation"]["level"] == "none"


def test_bad_input_is_refused_before_anything_is_read_or_written(platform, tmp_path):
    out = tmp_path / "bundles"

    result = run_playbook("collect_logs.yml", extravars={"collect_logs_output_dir": str(out),
                                                         "collect_logs_services": ["backend", "no-such-service"]})

    assert result.rc != 0
    assert "nothing was read or written" in result.stdout and "unknown: no-such-service" in result.stdout
    assert "collect_logs_report" not in result.artifacts
    assert not out.exists()
