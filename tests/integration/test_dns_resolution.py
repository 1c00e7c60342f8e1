"""dns_resolution.yml against the real test bed: CoreDNS's real Deployment and Corefile ConfigMap,
and real DNS lookups through a real dnsmasq (testbed/dns.py) standing in for CoreDNS's data plane."""

from __future__ import annotations

import pytest

from testbed import dns, faults
from tests import k8s_state
from tests.runbooks import run_playbook

# The cooldown is a guard rail with its own test (restart_service); here it would block the
# CoreDNS restarts one session makes.
NO_COOLDOWN = {"dns_resolution_cooldown_minutes": 0}


@pytest.fixture(scope="module")
def dns_server(platform):
    """The cluster DNS as the runbook reaches it: dnsmasq answering the platform's Service names."""
    was_running = dns.running_pid() is not None
    dns.up()  # (re)reads the Services' ClusterIPs from the real cluster
    yield dns.settings()
    if not was_running:
        dns.down()


@pytest.fixture
def coredns(platform, dns_server):
    comp = platform["saasodoo_components"][platform["dns_resolution_component"]]
    faults.wait_healthy(platform["dns_resolution_component"])
    return comp


@pytest.fixture
def broken_corefile(platform, coredns):
    before = dns.break_corefile()
    yield before
    dns.restore_corefile()
    faults.wait_healthy(platform["dns_resolution_component"])


def _corefile(platform) -> str:
    ns, name, key = dns._corefile_target()
    return (dns._core_api().read_namespaced_config_map(name, ns).data or {}).get(key, "")


def _codes(report: dict) -> set[tuple[str, str]]:
    return {(f["code"], f.get("component") or "") for f in report["findings"]}


def _ref(comp: dict) -> str:
    return f"{comp['kind']}/{comp['namespace']}/{comp['name']}"


def test_check_mode_on_broken_corefile_changes_nothing(platform, coredns, broken_corefile):
    ns = coredns["namespace"]
    live = _corefile(platform)
    before = k8s_state.snapshot([ns])

    result = run_playbook("dns_resolution.yml", extravars=NO_COOLDOWN, check=True)

    assert result.rc == 0, result.stdout[-3000:]
    # k8s_state compares specs and metadata; a ConfigMap's data is compared here directly.
    assert _corefile(platform) == live, "check mode must not restore the Corefile"
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
    report = result.artifacts["dns_resolution_report"]
    assert ("COREFILE_INVALID", "coredns") in _codes(report)
    invalid = next(f for f in report["findings"] if f["code"] == "COREFILE_INVALID")
    assert invalid["severity"] == "critical"
    assert any("forwrd" in line for line in invalid["evidence"]), invalid["evidence"]
    assert any("never closed" in line for line in invalid["evidence"]), invalid["evidence"]
    cm_ref = f"ConfigMap/{ns}/{platform['dns_resolution_configmap']}"
    assert f"would restore the Corefile in {cm_ref} from desired state" in report["actions"], report["actions"]
    assert f"would restart {_ref(coredns)}" in report["actions"], report["actions"]
    assert report["check_mode"] is True


def test_broken_corefile_is_restored_and_coredns_rolled(platform, coredns, broken_corefile):
    old_pods = {p.metadata.name for p in faults._pods(coredns)}

    result = run_playbook("dns_resolution.yml", extravars=NO_COOLDOWN)

    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["dns_resolution_report"]
    assert ("COREFILE_INVALID", "coredns") in _codes(report)
    cm_ref = f"ConfigMap/{coredns['namespace']}/{platform['dns_resolution_configmap']}"
    assert f"restored the Corefile in {cm_ref} from desired state" in report["actions"]
    assert f"rolling restart of {_ref(coredns)}" in report["actions"]
    assert report["healthy_after"] is True, report["remaining"]
    assert report["remaining"] == []
    assert report["escalation"]["level"] == "medium"  # resolved, root cause to review
    # The real ConfigMap holds the desired Corefile again, and CoreDNS rolled to load it.
    assert _corefile(platform).strip() == platform["dns_resolution_corefile"].strip()
    assert faults.component_healthy(platform["dns_resolution_component"])
    assert old_pods.isdisjoint(p.metadata.name for p in faults._pods(coredns))
    assert "kubectl.kubernetes.io/restartedAt" in faults._workload(coredns).spec.template.metadata.annotations

    again = run_playbook("dns_resolution.yml", extravars=NO_COOLDOWN)

    assert again.rc == 0, again.stdout[-3000:]
    assert again.changed == 0, again.stdout[-3000:]
    healed = again.artifacts["dns_resolution_report"]
    assert healed["findings"] == [] and healed["actions"] == []
    # The lookups were real: every platform Service name and the external names answered.
    backend = platform["saasodoo_components"]["backend"]
    domain = platform["saasodoo_dns"]["cluster_domain"]
    resolved = set(healed["lookups"]["resolved"])
    assert f"{backend['name']}.{backend['namespace']}.svc.{domain}" in resolved
    assert set(platform["dns_resolution_external_names"]) <= resolved
    assert healed["lookups"]["failed"] == []


def test_coredns_at_zero_is_scaled_back(platform, coredns):
    key = platform["dns_resolution_component"]
    fault = faults.scale_to_zero(key)
    try:
        result = run_playbook("dns_resolution.yml", extravars=NO_COOLDOWN)

        assert result.rc == 0, result.stdout[-3000:]
        report = result.artifacts["dns_resolution_report"]
        assert ("WORKLOAD_SCALED_TO_ZERO", key) in _codes(report)
        assert f"scaled {_ref(coredns)} back to {coredns['replicas']} replicas" in report["actions"], report["actions"]
        assert report["healthy_after"] is True, report["remaining"]
        assert faults._workload(coredns).spec.replicas == coredns["replicas"]
        assert faults.component_healthy(key)

        again = run_playbook("dns_resolution.yml", extravars=NO_COOLDOWN)
        assert again.rc == 0 and again.changed == 0, again.stdout[-3000:]
        assert again.artifacts["dns_resolution_report"]["findings"] == []
    finally:
        if not faults.component_healthy(key):
            fault.undo()


def test_dns_server_not_answering_is_handed_over_not_fixed(platform, coredns, dns_server):
    ns = coredns["namespace"]
    before = k8s_state.snapshot([ns])
    dns.down()
    try:
        result = run_playbook("dns_resolution.yml", extravars=NO_COOLDOWN)
    finally:
        dns.up()

    assert result.rc == 0, result.stdout[-3000:]
    report = result.artifacts["dns_resolution_report"]
    assert [f["code"] for f in report["findings"]] == ["DNS_SERVER_UNREACHABLE"], report["findings"]
    assert report["findings"][0]["severity"] == "critical"
    assert f"{dns_server['server']}:{dns_server['port']}" in report["findings"][0]["message"]
    assert report["actions"] == []
    assert any(h.startswith("DNS_SERVER_UNREACHABLE") and "network" in h for h in report["handed_over"]), report
    assert report["healthy_after"] is False
    assert report["escalation"]["level"] == "critical"
    # CoreDNS was healthy: the runbook must not have restarted or otherwise touched it.
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []


def test_bad_input_is_refused_before_anything_is_read_or_changed(platform, coredns):
    ns = coredns["namespace"]
    before = k8s_state.snapshot([ns])
    live = _corefile(platform)
    # Restoring a desired Corefile that is itself broken would break CoreDNS: refused up front.
    bad = dns.broken(platform["dns_resolution_corefile"])

    result = run_playbook("dns_resolution.yml", extravars={"dns_resolution_corefile": bad})

    assert result.rc != 0
    assert "nothing was read or changed" in result.stdout and "forwrd" in result.stdout
    assert "dns_resolution_report" not in result.artifacts
    assert _corefile(platform) == live
    assert k8s_state.diff(before, k8s_state.snapshot([ns])) == []
