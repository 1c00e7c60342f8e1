"""The resource_usage runbook's judgements (plugins/filter/resource_usage.py) on hand-made data."""

from __future__ import annotations

from plugins.filter import resource_usage as f

GI = 2 ** 30
NODES = [
    {"name": "n1", "ready": True, "allocatable": {"cpu_millicores": 8000, "memory_bytes": 32 * GI},
     "requested": {"cpu_millicores": 7000, "memory_bytes": 4 * GI}},
    {"name": "n2", "ready": True, "allocatable": {"cpu_millicores": 8000, "memory_bytes": 32 * GI},
     "requested": {"cpu_millicores": 1000, "memory_bytes": 30 * GI}},
]


def vector(*samples):
    return {"status": 200, "json": {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": metric, "value": [1700000000, str(value)]} for metric, value in samples]}}}


def codes(findings):
    return sorted((x["code"], x.get("ref")) for x in findings)


def test_prometheus_vector_keys_by_labels_and_fails_soft():
    answer = vector(({"node": "n1"}, 7.5), ({"node": "n2"}, "0.25"), ({"other": "x"}, 1))
    assert f.prometheus_vector(answer, "node") == {"n1": 7.5, "n2": 0.25}
    pods = vector(({"namespace": "a", "pod": "p"}, 1e9))
    assert f.prometheus_vector(pods, ["namespace", "pod"]) == {"a/p": 1e9}
    assert f.prometheus_vector({"status": -1, "msg": "refused"}, "node") is None
    assert f.prometheus_vector(None, "node") is None


def test_metrics_api_usage_sums_containers():
    nodes = [{"metadata": {"name": "n1"}, "usage": {"cpu": "7500m", "memory": "28Gi"}}]
    assert f.metrics_api_usage(nodes) == {"cpu": {"n1": 7.5}, "memory": {"n1": 28 * GI}}
    pods = [{"metadata": {"name": "p", "namespace": "a"}, "containers": [
        {"usage": {"cpu": "250m", "memory": "1Gi"}}, {"usage": {"cpu": "250m", "memory": "1Gi"}}]}]
    assert f.metrics_api_usage(pods, "pod") == {"cpu": {"a/p": 0.5}, "memory": {"a/p": 2 * GI}}


def test_measured_usage_over_threshold_is_found_per_node_and_resource():
    rows = f.node_utilisation(NODES, {"n1": 7.0, "n2": 0.5}, {"n1": 28 * GI, "n2": 2 * GI}, "prometheus")
    assert [(r["name"], r["cpu_percent"], r["memory_percent"]) for r in rows] == [("n1", 87.5, 87.5), ("n2", 6.2, 6.2)]
    findings = f.utilisation_findings(rows, 80, 80)
    assert codes(findings) == [("NODE_CPU_HIGH", "Node/n1"), ("NODE_MEMORY_HIGH", "Node/n1")]
    assert findings[0]["severity"] == "medium"
    assert "7.0 of 8.0 cores (prometheus)" in findings[0]["evidence"][0]
    assert "28.00 GiB of 32.00 GiB" in findings[1]["evidence"][0]


def test_exactly_at_threshold_counts_and_missing_node_is_unknown():
    rows = f.node_utilisation(NODES, {"n1": 6.4}, {"n1": 1}, "metrics_api")
    findings = f.utilisation_findings(rows, 80, 80)
    assert codes(findings) == [("NODE_CPU_HIGH", "Node/n1"), ("NODE_USAGE_UNKNOWN", "Node/n2")]


def test_allocation_fallback_is_labelled_allocation_not_utilisation():
    rows = f.node_utilisation(NODES, source="allocation")
    assert rows[0]["cpu_percent"] == 87.5 and rows[1]["memory_percent"] == 93.8
    findings = f.utilisation_findings(rows, 80, 80)
    assert codes(findings) == [("NODE_CPU_ALLOCATION_HIGH", "Node/n1"), ("NODE_MEMORY_ALLOCATION_HIGH", "Node/n2")]
    assert all("allocation, not utilisation" in x["message"] for x in findings)


def pod(ns, name, node="n1", memory_limit="1Gi", phase="Running"):
    resources = {"limits": {"memory": memory_limit}} if memory_limit else {}
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"nodeName": node, "containers": [
        {"name": "c", "resources": resources}]}, "status": {"phase": phase}}


def test_pod_utilisation_ranks_and_flags_memory_near_the_limit():
    pods = [pod("a", "busy"), pod("a", "idle"), pod("b", "nolimit", memory_limit=None), pod("c", "unmeasured")]
    cpu = {"a/busy": 2.0, "a/idle": 0.001, "b/nolimit": 0.5}
    mem = {"a/busy": 0.95 * GI, "a/idle": 0.1 * GI, "b/nolimit": 5 * GI}
    result = f.pod_utilisation(pods, cpu, mem, top=2, memory_threshold=90)
    assert [r["pod"] for r in result["top"]] == ["a/busy", "b/nolimit"]
    assert result["top"][0]["memory_percent_of_limit"] == 95.0
    assert result["top"][1]["memory_limit_bytes"] is None
    assert codes(result["findings"]) == [("POD_MEMORY_NEAR_LIMIT", "Pod/a/busy")]


def quota(ns, hard, used=None):
    q = {"metadata": {"namespace": ns, "name": "tenant-quota"}, "spec": {"hard": hard}, "status": {"hard": hard}}
    if used is not None:
        q["status"]["used"] = used
    return q


def test_quota_near_limit_exhausted_and_not_computed():
    hard = {"requests.cpu": "1", "requests.memory": "2Gi", "pods": "10"}
    quotas = [
        quota("tenant-globex", hard, {"requests.cpu": "850m", "requests.memory": "1536Mi", "pods": "2"}),
        quota("tenant-acme", hard, {"requests.cpu": "1", "requests.memory": "2Gi", "pods": "10"}),
        quota("tenant-initech", hard, {"requests.cpu": "250m", "requests.memory": "512Mi", "pods": "1"}),
        quota("scratch", hard),
    ]
    tenants = {"tenant-globex": "globex", "tenant-acme": "acme", "tenant-initech": "initech"}
    result = f.quota_usage(quotas, tenants, 80)
    assert codes(result["findings"]) == [
        ("QUOTA_EXHAUSTED", "ResourceQuota/tenant-acme/tenant-quota"),
        ("QUOTA_NEAR_LIMIT", "ResourceQuota/tenant-globex/tenant-quota"),
        ("QUOTA_NOT_COMPUTED", "ResourceQuota/scratch/tenant-quota")]
    near = next(x for x in result["findings"] if x["code"] == "QUOTA_NEAR_LIMIT")
    assert near["tenant"] == "globex" and near["severity"] == "medium"
    assert near["evidence"] == ["requests.cpu: 850m of 1 (85.0%)"]
    full = next(x for x in result["findings"] if x["code"] == "QUOTA_EXHAUSTED")
    assert full["severity"] == "high" and len(full["evidence"]) == 3
    globex = next(r for r in result["quotas"] if r["namespace"] == "tenant-globex")
    assert {r["resource"]: r["percent"] for r in globex["resources"]} == {
        "pods": 20.0, "requests.cpu": 85.0, "requests.memory": 75.0}


def test_netpol_coverage_by_namespace_with_severity_for_tenants():
    pods = [pod("tenant-a", "odoo"), pod("saasodoo-system", "api"), pod("kube-system", "dns"),
            pod("empty", "done", phase="Succeeded"), pod("tenant-b", "odoo")]
    policies = [{"metadata": {"namespace": "tenant-b", "name": "default-deny"}}]
    result = f.netpol_coverage(pods, policies, {"tenant-a": "a", "tenant-b": "b"}, ["kube-system"], "high", "low")
    assert [(r["namespace"], r["policies"]) for r in result["namespaces"]] == [
        ("saasodoo-system", []), ("tenant-a", []), ("tenant-b", ["default-deny"])]
    assert [(x["code"], x["ref"], x["severity"]) for x in result["findings"]] == [
        ("NAMESPACE_WITHOUT_NETWORK_POLICY", "Namespace/saasodoo-system", "low"),
        ("NAMESPACE_WITHOUT_NETWORK_POLICY", "Namespace/tenant-a", "high")]
    assert "tenant a is not isolated" in result["findings"][1]["message"]


def test_database_size_against_its_volume():
    pvcs = [{"metadata": {"namespace": "s", "name": "data-saasodoo-postgres-0"},
             "spec": {"resources": {"requests": {"storage": "20Gi"}}}, "status": {"capacity": {"storage": "20Gi"}}},
            {"metadata": {"namespace": "s", "name": "other"}, "status": {"capacity": {"storage": "1Gi"}}}]
    small = f.database_storage({"saasodoo": {"size": str(8 * 2 ** 20)}}, "saasodoo", pvcs, "-saasodoo-postgres-[0-9]+$", 80)
    assert small["database"] == {"database": "saasodoo", "size_bytes": 8 * 2 ** 20, "volume": "s/data-saasodoo-postgres-0",
                                 "capacity_bytes": 20 * GI, "percent": 0.0}
    assert small["findings"] == []
    big = f.database_storage({"saasodoo": {"size": str(17 * GI)}}, "saasodoo", pvcs, "-saasodoo-postgres-[0-9]+$", 80)
    assert codes(big["findings"]) == [("DB_SIZE_NEAR_CAPACITY", "PersistentVolumeClaim/s/data-saasodoo-postgres-0")]
    unknown = f.database_storage({}, "saasodoo", pvcs, "-saasodoo-postgres-[0-9]+$", 80)
    assert [x["code"] for x in unknown["findings"]] == ["DB_SIZE_UNKNOWN"]


def test_pvc_rows():
    rows = f.pvc_rows([{"metadata": {"namespace": "t", "name": "odoo-data"},
                        "spec": {"resources": {"requests": {"storage": "5Gi"}}, "storageClassName": "local", "volumeName": "v"},
                        "status": {"phase": "Bound", "capacity": {"storage": "5Gi"}}}])
    assert rows == [{"pvc": "t/odoo-data", "phase": "Bound", "requested": "5Gi", "capacity": "5Gi",
                     "storage_class": "local", "volume": "v"}]


def test_label_map_names_to_label_values():
    namespaces = [{"metadata": {"name": "tenant-a", "labels": {"saasodoo.io/tenant": "a"}}},
                  {"metadata": {"name": "default", "labels": {}}}, {"metadata": {"name": "x"}}]
    assert f.label_map(namespaces, "saasodoo.io/tenant") == {"tenant-a": "a"}


def test_summary_lines():
    rows = f.node_utilisation(NODES[:1], {"n1": 7.0}, {"n1": 28 * GI}, "prometheus")
    analysis = {"source": "prometheus", "source_note": "measured", "nodes": rows,
                "top_pods": [{"pod": "a/p", "cpu_cores": 7.0, "memory_bytes": 28 * GI}],
                "quotas": f.quota_usage([quota("t", {"pods": "10", "requests.cpu": "1"},
                                               {"pods": "1", "requests.cpu": "850m"})])["quotas"],
                "storage": {"database": {"database": "saasodoo", "size_bytes": 8 * 2 ** 20, "percent": 0.0,
                                         "volume": "s/data-0"}}}
    assert f.summary(analysis) == [
        "Source: measured",
        "Node n1: CPU 87.5%, memory 87.5% (requests: CPU 87.5%, memory 12.5%)",
        "Pod a/p: CPU 7.0 cores, memory 28.00 GiB",
        "Quota ResourceQuota/t/tenant-quota: highest requests.cpu 850m of 1 (85.0%)",
        "Database saasodoo: 8.0 MiB = 0.0% of volume s/data-0"]
