"""saasodoo_lease's decisions: take a free or expired Lease, renew one's own, never take or delete a live
holder's, and read again when another run wrote first. The API is a stand-in here; the integration tests
(tests/integration/test_lease.py) run the module against the test bed's API server."""

from __future__ import annotations

import copy
import importlib.util
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from plugins.module_utils import saasodoo_findings

sys.modules.setdefault("ansible.module_utils.saasodoo_findings", saasodoo_findings)
from plugins.module_utils import saasodoo_k8s  # noqa: E402

sys.modules.setdefault("ansible.module_utils.saasodoo_k8s", saasodoo_k8s)
from plugins.module_utils import saasodoo_k8s_health  # noqa: E402

sys.modules.setdefault("ansible.module_utils.saasodoo_k8s_health", saasodoo_k8s_health)
_spec = importlib.util.spec_from_file_location(
    "saasodoo_lease", Path(__file__).resolve().parents[2] / "plugins" / "modules" / "saasodoo_lease.py")
m = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(m)

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=timezone.utc)


class Conflict(m.ApiException):
    def __init__(self, status=409):
        self.status, self.reason, self.body = status, "Conflict", "{}"


class FakeLeases:
    """A single Lease with resourceVersion checks, like the API server's optimistic concurrency."""

    def __init__(self, lease=None, race=None):
        self.lease, self.version, self.race, self.writes = copy.deepcopy(lease), 1, race, []

    def read(self):
        if self.race:                 # another run writes between our read and our write, once
            race, self.race = self.race, None
            snapshot = copy.deepcopy(self.lease)
            self.lease = race
            self.version += 1
            if self.lease:
                self.lease["metadata"]["resourceVersion"] = str(self.version)
            return snapshot
        return copy.deepcopy(self.lease)

    def create(self, body):
        if self.lease is not None:
            raise Conflict()
        return self._store(body, "create")

    def replace(self, body):
        if self.lease is None or body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise Conflict()
        return self._store(body, "replace")

    def delete(self, uid, resource_version):
        if self.lease is None or resource_version != self.lease["metadata"]["resourceVersion"]:
            raise Conflict()
        self.writes.append("delete")
        self.lease = None
        return {}

    def _store(self, body, what):
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"].update(resourceVersion=str(self.version), uid="u1")
        self.writes.append(what)
        return copy.deepcopy(self.lease)


def lease(holder, renewed_ago=10, duration=900, runbook="data_loss"):
    renewed = NOW - timedelta(seconds=renewed_ago)
    return {"metadata": {"name": "lock", "namespace": "ns", "uid": "u0", "resourceVersion": "1",
                         "annotations": {"saasodoo.io/lease-runbook": runbook}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": m.micro_time(renewed - timedelta(seconds=60)), "renewTime": m.micro_time(renewed)}}


def params(state="acquired", holder="platform_down/h/1"):
    return {"name": "lock", "namespace": "ns", "holder": holder, "state": state, "duration_seconds": 600,
            "details": {"runbook": "platform_down", "awx_job": "", "host": "h"}}


def test_a_free_lease_is_created_with_who_holds_it():
    api = FakeLeases()
    out = m.run(params(), False, api, NOW)
    assert out["acquired"] and out["changed"] and out["took_over"] is None and api.writes == ["create"]
    assert api.lease["spec"]["holderIdentity"] == "platform_down/h/1"
    assert api.lease["spec"]["leaseDurationSeconds"] == 600
    assert api.lease["metadata"]["annotations"] == {"saasodoo.io/lease-runbook": "platform_down",
                                                    "saasodoo.io/lease-host": "h"}


def test_a_live_holder_keeps_it_and_is_named():
    api = FakeLeases(lease("data_loss/awx/9"))
    out = m.run(params(), False, api, NOW)
    assert not out["acquired"] and not out["changed"] and not out["could_acquire"] and api.writes == []
    assert out["held_by"]["holder"] == "data_loss/awx/9" and out["held_by"]["details"] == {"runbook": "data_loss"}
    assert out["held_by"]["expired"] is False


def test_an_expired_lease_is_taken_over_and_the_old_holder_named():
    api = FakeLeases(lease("data_loss/awx/9", renewed_ago=1000))
    out = m.run(params(), False, api, NOW)
    assert out["acquired"] and out["took_over"]["holder"] == "data_loss/awx/9" and api.writes == ["replace"]
    assert api.lease["spec"]["leaseTransitions"] == 1 and api.lease["spec"]["holderIdentity"] == "platform_down/h/1"


def test_ones_own_lease_is_renewed_keeping_its_acquire_time():
    mine = lease("platform_down/h/1", renewed_ago=100)
    api = FakeLeases(mine)
    out = m.run(params(), False, api, NOW)
    assert out["acquired"] and out["took_over"] is None
    assert api.lease["spec"]["acquireTime"] == mine["spec"]["acquireTime"]
    assert api.lease["spec"]["renewTime"] == m.micro_time(NOW)


def test_check_mode_never_writes():
    for start in (None, lease("x", renewed_ago=1000), lease("platform_down/h/1")):
        api = FakeLeases(start)
        out = m.run(params(), True, api, NOW)
        assert out["could_acquire"] and not out["acquired"] and api.writes == []
    api = FakeLeases(lease("platform_down/h/1"))
    assert m.run(params("released"), True, api, NOW)["changed"] is True and api.writes == []


def test_release_deletes_only_ones_own_lease():
    api = FakeLeases(lease("platform_down/h/1"))
    assert m.run(params("released"), False, api, NOW)["changed"] and api.writes == ["delete"] and api.lease is None
    other = FakeLeases(lease("data_loss/awx/9"))
    assert not m.run(params("released"), False, other, NOW)["changed"] and other.writes == []


def test_a_lost_race_reads_again_and_finds_the_winner():
    # Free when read; another run creates it before our create: ours is refused (409), the re-read names it.
    api = FakeLeases(None, race=lease("data_loss/awx/9"))
    out = m.run(params(), False, api, NOW)
    assert not out["acquired"] and out["held_by"]["holder"] == "data_loss/awx/9" and api.writes == []
    # Expired when read; taken over by another run first: our replace carries the old resourceVersion.
    api = FakeLeases(lease("old", renewed_ago=1000), race=lease("data_loss/awx/9"))
    out = m.run(params(), False, api, NOW)
    assert not out["acquired"] and out["held_by"]["holder"] == "data_loss/awx/9"


def test_a_release_after_a_takeover_deletes_nothing():
    # Ours when read, then (expired) taken over by another run before our delete: precondition fails, re-read.
    api = FakeLeases(lease("platform_down/h/1"), race=lease("data_loss/awx/9"))
    out = m.run(params("released"), False, api, NOW)
    assert not out["changed"] and api.lease["spec"]["holderIdentity"] == "data_loss/awx/9"


def test_a_lease_that_keeps_changing_is_a_clear_error():
    class Racing(FakeLeases):
        def create(self, body):
            raise Conflict()

    with pytest.raises(m.DiagnosisError, match="kept changing"):
        m.run(params(), False, Racing(None), NOW)
