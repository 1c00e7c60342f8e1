"""testbed/platform_vars.load() renders references between variables the way Ansible would."""

from __future__ import annotations

from testbed import platform_vars


def test_port_shift_moves_ports_computed_from_another_variable(monkeypatch):
    monkeypatch.setenv("SAASODOO_PORT_SHIFT", "7")
    shifted = platform_vars.load()
    monkeypatch.setenv("SAASODOO_PORT_SHIFT", "0")
    base = platform_vars.load()

    def port(url: str) -> int:
        return int(url.rsplit(":", 1)[1])

    assert port(shifted["saasodoo_prometheus_url"]) == port(base["saasodoo_prometheus_url"]) + 7
    assert port(shifted["saasodoo_endpoints"]["api"]["url"]) == port(base["saasodoo_endpoints"]["api"]["url"]) + 7
    assert int(shifted["saasodoo_pgbouncer"]["port"]) == int(base["saasodoo_pgbouncer"]["port"]) + 7
