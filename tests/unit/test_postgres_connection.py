"""postgres_connection.yml's diagnosis on hand-made objects: pods, claims, disk, connection results."""

from __future__ import annotations

import copy

from plugins.filter import postgres_connection as f

SPEC = {"kind": "StatefulSet", "name": "saasodoo-postgres", "namespace": "saasodoo-system", "replicas": 1,
        "storage": "20Gi", "critical": True}
REF = "StatefulSet/saasodoo-system/saasodoo-postgres"
SETTINGS = {"component": "postgres", "spec": SPEC, "database": "saasodoo", "endpoint": "127.0.0.1:5432",
            "restart_threshold": 3, "db_size_warning_percent": 80, "db_size_critical_percent": 95}
GI = 1024 ** 3


def sts(replicas=1, ready=1):
    return {"kind": "StatefulSet",
            "metadata": {"name": "saasodoo-postgres", "namespace": "saasodoo-system", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "pg"}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}}]},
            "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": ready,
                       "updatedReplicas": replicas, "currentRevision": "r1", "updateRevision": "r1"}}


def pod(ready=True, phase="Running", waiting=None, restarts=0, scheduled=None):
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if scheduled:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": scheduled})
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {"metadata": {"name": "saasodoo-postgres-0", "namespace": "saasodoo-system", "labels": {"app": "pg"}},
            "status": {"phase": phase, "conditions": conditions,
                       "containerStatuses": [] if phase == "Pending" else
                       [{"name": "postgres", "restartCount": restarts, "state": state}]}}


def pvc(phase="Bound", uid="u2", storage_class="saasodoo-local"):
    return {"metadata": {"name": "data-saasodoo-postgres-0", "namespace": "saasodoo-system", "uid": uid},
            "spec": {"storageClassName": storage_class, "volumeName": "pv-0" if phase == "Bound" else None,
                     "resources": {"requests": {"storage": "20Gi"}}},
            "status": {"phase": phase, "capacity": {"storage": "20Gi"} if phase == "Bound" else {}}}


def pv(phase="Bound", uid="u2"):
    return {"metadata": {"name": "pv-0"}, "status": {"phase": phase},
            "spec": {"claimRef": {"namespace": "saasodoo-system", "name": "data-saasodoo-postgres-0", "uid": uid}}}


def pg(connected=True, size=100 * 1024 ** 2, findings=None):
    return {"connected": connected, "reachable": connected, "findings": findings or [],
            "sizes": {"databases": [{"database": "saasodoo", "bytes": size}]} if connected else None}


def diagnose(statefulset=None, pods=None, pvcs=None, pvs=None, classes=("saasodoo-local",), events=(), health=None,
             integrity=None, **settings):
    return f.postgres_connection_diagnosis(
        sts() if statefulset is None else statefulset, [pod()] if pods is None else pods,
        [pvc()] if pvcs is None else pvcs, [pv()] if pvs is None else pvs, list(classes), list(events),
        pg() if health is None else health, integrity or {}, dict(SETTINGS, **settings))


def codes(result):
    return [x["code"] for x in result["findings"]]


def test_claim_names():
    assert f.postgres_connection_claim_names(sts(replicas=2)) == ["data-saasodoo-postgres-0", "data-saasodoo-postgres-1"]
    assert f.postgres_connection_claim_names(None) == []


def test_healthy():
    result = diagnose()
    assert result["findings"] == [] and result["handed_over"] == [] and not result["restart"]
    assert result["volume_bytes"] == 20 * GI and result["volume_used_percent"] == 0.5
    assert result["claims"][0]["bound"] and result["connected"]


def test_crashloop_is_restarted():
    result = diagnose(statefulset=sts(ready=0), pods=[pod(ready=False, waiting="CrashLoopBackOff", restarts=5)])
    assert codes(result) == ["PG_POD_CRASHLOOP"] and result["findings"][0]["severity"] == "critical"
    assert result["restart"] and result["skipped"] == []


def test_unbound_claim_is_handed_over_and_not_restarted():
    result = diagnose(statefulset=sts(ready=0),
                      pods=[pod(ready=False, phase="Pending",
                                scheduled="0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.")],
                      pvcs=[pvc(phase="Pending", uid="u3")], pvs=[pv(phase="Released", uid="u2")],
                      events=[{"involvedObject": {"kind": "PersistentVolumeClaim", "name": "data-saasodoo-postgres-0"},
                               "reason": "FailedBinding", "message": "no persistent volumes available",
                               "lastTimestamp": "2026-01-01T10:00:00Z"}])
    assert codes(result) == ["PG_POD_UNAVAILABLE", "PG_PVC_UNBOUND"]
    unbound = next(x for x in result["findings"] if x["code"] == "PG_PVC_UNBOUND")
    assert "claim saasodoo-system/data-saasodoo-postgres-0 is Pending" in unbound["evidence"]
    assert any("PersistentVolume pv-0 (Released) is still reserved for an earlier claim" in e for e in unbound["evidence"])
    assert "event FailedBinding: no persistent volumes available" in unbound["evidence"]
    assert any("unbound immediate PersistentVolumeClaims" in e for e in unbound["evidence"])
    assert not result["restart"]
    assert result["skipped"][0]["ref"] == REF and "not bound" in result["skipped"][0]["why"]
    assert any(h.startswith("storage: saasodoo-system/data-saasodoo-postgres-0 not bound") for h in result["handed_over"])


def test_missing_storage_class_is_named():
    result = diagnose(pvcs=[pvc(phase="Pending", storage_class="fast-ssd")], pvs=[])
    unbound = next(x for x in result["findings"] if x["code"] == "PG_PVC_UNBOUND")
    assert "its StorageClass fast-ssd does not exist" in unbound["message"]


def test_missing_claim():
    result = diagnose(pvcs=[])
    assert "PG_PVC_UNBOUND" in codes(result)


def test_scaled_to_zero_is_scaled_back():
    result = diagnose(statefulset=sts(replicas=0, ready=0), pods=[])
    assert codes(result) == ["PG_STATEFULSET_SCALED_TO_ZERO"] and result["scale_to"] == 1 and not result["restart"]


def test_missing_statefulset():
    result = f.postgres_connection_diagnosis(None, [], [], [], [], [], pg(), {}, SETTINGS)
    assert codes(result) == ["PG_STATEFULSET_MISSING"] and result["handed_over"]


def test_unreachable_server_with_ready_pods_is_handed_over_naming_data_loss():
    down = {"connected": False, "reachable": False, "sizes": None, "findings": [
        {"code": "PG_UNREACHABLE", "severity": "critical", "message": "PostgreSQL at 127.0.0.1:5432 refused the connection",
         "evidence": {"endpoint": "127.0.0.1:5432", "kind": "refused"}}]}
    result = diagnose(health=down)
    assert codes(result) == ["PG_UNREACHABLE"] and not result["restart"]
    assert result["findings"][0]["evidence"] == ["endpoint: 127.0.0.1:5432", "kind: refused"]
    handed = result["handed_over"][0]
    assert "reports all pods Ready" in handed and "data_loss.yml" in handed
    assert result["volume_used_percent"] is None


def test_missing_database_goes_to_data_loss():
    rejected = {"connected": False, "reachable": True, "findings": [
        {"code": "PG_LOGIN_REJECTED", "severity": "high", "message": "no database",
         "evidence": {"endpoint": "127.0.0.1:5432", "kind": "missing_db"}}]}
    result = diagnose(health=rejected)
    assert codes(result) == ["DB_DATABASE_MISSING"] and "data_loss.yml" in result["handed_over"][0]


def test_database_filling_its_volume():
    assert codes(diagnose(health=pg(size=int(17 * GI)))) == ["PG_DB_SIZE_NEAR_CAPACITY"]
    high = diagnose(health=pg(size=int(17 * GI)))["findings"][0]
    assert high["severity"] == "high" and "85.0%" in high["message"]
    assert diagnose(health=pg(size=int(19.5 * GI)))["findings"][0]["severity"] == "critical"


def test_broken_foreign_keys_go_to_data_loss():
    integrity = {"findings": [{"code": "DB_FK_ORPHANS", "severity": "critical", "message": "2 rows ...",
                               "evidence": ["public.users.tenant_id -> public.tenants(id): 2 orphaned"]}]}
    result = diagnose(integrity=integrity)
    assert codes(result) == ["DB_FK_ORPHANS"] and "data_loss.yml" in result["handed_over"][0]


def test_inputs_are_not_modified():
    objects = [sts(ready=0), [pod(ready=False, waiting="CrashLoopBackOff", restarts=5)], [pvc()], [pv()]]
    before = copy.deepcopy(objects)
    f.postgres_connection_diagnosis(*objects, ["saasodoo-local"], [], pg(), {}, SETTINGS)
    assert objects == before
