"""The diagnosis filters decide what the runbooks do; here they meet hand-made objects."""

from __future__ import annotations

from plugins.filter import saasodoo as f


def pod(name, phase="Running", ready=True, restarts=0, waiting=None, last=None, exit_code=None, deleting=False):
    cs = {"name": "app", "restartCount": restarts, "state": {"waiting": {"reason": waiting}} if waiting else {"running": {}}}
    if last:
        cs["lastState"] = {"terminated": {"reason": last, "exitCode": exit_code}}
    # Owned like a real Deployment's pod: through the ReplicaSet <deployment>-<pod-template-hash>.
    meta = {"name": name, "namespace": "ns", "labels": {"app": "x", "pod-template-hash": "abc"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc", "controller": True}]}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                                          "containerStatuses": [cs]}}


def deployment(replicas=2, ready=2, updated=2, available=2, total=2, generation=1, observed=1, annotations=None):
    return {"kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns", "generation": generation, "annotations": annotations or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "x"}}},
            "status": {"observedGeneration": observed, "replicas": total, "readyReplicas": ready,
                       "updatedReplicas": updated, "availableReplicas": available}}


def test_selector_is_sorted_key_value_pairs():
    assert f.k8s_selector({"b": "2", "a": "1"}) == ["a=1", "b=2"]
    assert f.k8s_selector(None) == []


def test_crashloop_pod_is_unhealthy_with_reason():
    report = f.pod_health(pod("p", ready=False, restarts=5, waiting="CrashLoopBackOff", last="Error", exit_code=1))
    assert not report["healthy"]
    assert any("CrashLoopBackOff" in r for r in report["reasons"])
    assert any("5 restarts" in r for r in report["reasons"])


def test_oomkilled_is_named_with_exit_code():
    report = f.pod_health(pod("p", ready=False, restarts=1, waiting="CrashLoopBackOff", last="OOMKilled", exit_code=137))
    assert any("OOMKilled (exit code 137)" in r for r in report["reasons"])


def test_terminating_pod_does_not_count():
    report = f.pod_health(pod("p", ready=False, waiting="CrashLoopBackOff", deleting=True))
    assert report["healthy"] and report["terminating"]


def test_healthy_pod_below_restart_threshold():
    assert f.pod_health(pod("p", restarts=2), restart_threshold=3)["healthy"]
    assert not f.pod_health(pod("p", restarts=3), restart_threshold=3)["healthy"]


def test_rollout_status_follows_kubectl_rules():
    assert f.rollout_status(deployment())["complete"]
    assert not f.rollout_status(deployment(generation=2, observed=1))["complete"]
    assert "old replicas" in f.rollout_status(deployment(total=3))["message"]
    assert not f.rollout_status(deployment(updated=1))["complete"]
    assert not f.rollout_status(deployment(available=1))["complete"]


def test_workload_health_flags_crashloop_and_scaled_to_zero():
    bad = f.workload_health(deployment(ready=0), [pod("p", ready=False, waiting="CrashLoopBackOff", restarts=4)])
    assert not bad["healthy"] and bad["crashloop"] and not bad["oomkilled"]
    zero = f.workload_health(deployment(replicas=0, ready=0), [])
    assert "scaled to zero replicas" in zero["reasons"]
    good = f.workload_health(deployment(), [pod("a"), pod("b")])
    assert good["healthy"] and good["reasons"] == []


POD_KEYS = {"name", "namespace", "node", "phase", "ready", "restarts", "terminating", "last_termination", "healthy",
            "reasons"}


def test_filter_outputs_keep_the_keys_playbooks_read():
    """The judgements are shared with the modules (saasodoo_k8s_health); the filters' outputs stay as they were."""
    assert set(f.pod_health(pod("p"))) == POD_KEYS
    report = f.workload_health(deployment(annotations={"a": "b"}), [pod("p")])
    assert set(report) == {"ref", "kind", "name", "namespace", "replicas", "ready_replicas", "healthy", "reasons",
                           "crashloop", "oomkilled", "pods", "rollout", "annotations"}
    assert report["annotations"] == {"a": "b"} and set(report["pods"][0]) == POD_KEYS
    assert f.workload_health(deployment())["annotations"] == {}
    assert set(f.node_health(node("n1", unschedulable=True))) == {"name", "ready", "healthy", "reasons", "pressure"}
    assert f.node_health(node("n1", unschedulable=True))["reasons"] == ["node is cordoned (unschedulable)"]
    assert f.rollout_status is f.k8s_health.rollout_status


def test_cooldown_counts_down_from_the_annotation():
    w = deployment(annotations={"saasodoo.io/last-restart-at": "2026-11-29T10:00:00Z"})
    assert f.cooldown_remaining(w, 10, now="2026-11-29T10:04:00Z") == 360
    assert f.cooldown_remaining(w, 10, now="2026-11-29T10:11:00Z") == 0
    assert f.cooldown_remaining(w, 0, now="2026-11-29T10:01:00Z") == 0
    assert f.cooldown_remaining(deployment(), 10) == 0


def _report(ref, healthy, cooldown=0):
    return {"ref": ref, "healthy": healthy, "cooldown_remaining": cooldown}


def test_restart_plan_skips_healthy_respects_cooldown_and_cap():
    plan = f.restart_plan([_report("a", True), _report("b", False), _report("c", False, cooldown=30),
                           _report("d", False), _report("e", False)], max_restarts=2)
    assert [r["ref"] for r in plan["restart"]] == ["b", "d"]
    assert {s["ref"]: s["why"].split(";")[0].split(":")[0] for s in plan["skipped"]} == {
        "c": "restarted recently", "e": "cap reached"}
    forced = f.restart_plan([_report("a", True)], force=True)
    assert [r["ref"] for r in forced["restart"]] == ["a"]
    assert f.restart_plan([_report("a", False)], max_restarts=0)["restart"] == []


def node(name, ready="True", pressure=None, unschedulable=False):
    conds = [{"type": "Ready", "status": ready, "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown"}]
    for p in pressure or []:
        conds.append({"type": p, "status": "True"})
    return {"metadata": {"name": name}, "spec": {"unschedulable": unschedulable}, "status": {"conditions": conds}}


COMPONENTS = {
    "traefik": {"kind": "Deployment", "name": "traefik", "namespace": "ns", "layer": "ingress", "critical": True, "replicas": 2},
    "backend": {"kind": "Deployment", "name": "web", "namespace": "ns", "layer": "backend", "critical": True, "replicas": 2},
}
LAYERS = ["nodes", "ingress", "frontend", "backend", "data"]


def traefik(ready=2):
    d = deployment(ready=ready)
    d["metadata"]["name"] = "traefik"
    d["spec"]["selector"]["matchLabels"] = {"app": "traefik"}
    return d


def test_platform_diagnosis_names_first_broken_layer_and_codes():
    result = f.platform_diagnosis([node("n1"), node("n2")], COMPONENTS, [traefik(), deployment(ready=0)],
                                  [pod("p1", ready=False, waiting="CrashLoopBackOff", restarts=4)], LAYERS)
    assert result["first_broken_layer"] == "backend"
    assert [(x["code"], x["component"], x["severity"]) for x in result["findings"]] == [
        ("WORKLOAD_CRASHLOOP", "backend", "critical")]
    assert result["findings"][0]["evidence"] and result["severity"] == "critical"


def test_platform_diagnosis_missing_workload_and_not_ready_nodes():
    result = f.platform_diagnosis([node("n1", ready="Unknown"), node("n2", ready="Unknown")], COMPONENTS,
                                  [deployment()], [pod("p1"), pod("p2")], LAYERS)
    codes = [x["code"] for x in result["findings"]]
    assert "NODE_NOT_READY" in codes and "WORKLOAD_MISSING" in codes
    assert result["first_broken_layer"] == "nodes"


def test_platform_diagnosis_healthy():
    result = f.platform_diagnosis([node("n1")], COMPONENTS, [traefik(), deployment()], [pod("p1"), pod("p2")], LAYERS)
    assert result["healthy"] and result["findings"] == [] and result["first_broken_layer"] is None


def test_platform_add_findings_breaks_the_data_layer_and_names_it():
    healthy = f.platform_diagnosis([node("n1")], COMPONENTS, [traefik(), deployment()], [pod("p1"), pod("p2")], LAYERS)
    damage = {"code": "DB_FK_ORPHANS", "severity": "critical", "message": "2 orphaned rows", "layer": "data",
              "component": "postgres", "runbook": "data_loss"}
    result = f.platform_add_findings(healthy, [damage], LAYERS)
    assert result["first_broken_layer"] == "data" and not result["healthy"] and result["severity"] == "critical"
    data = next(layer for layer in result["layers"] if layer["name"] == "data")
    assert data["broken"] and data["problems"] == ["2 orphaned rows"]
    assert result["findings"] == [damage] and result["nodes"] == healthy["nodes"]
    # An earlier broken layer stays the first one; a low finding breaks nothing; nothing added, nothing changed.
    down = f.platform_diagnosis([node("n1"), node("n2")], COMPONENTS, [traefik(), deployment(ready=0)],
                                [pod("p1", ready=False, waiting="CrashLoopBackOff", restarts=4)], LAYERS)
    assert f.platform_add_findings(down, [damage], LAYERS)["first_broken_layer"] == "backend"
    low = f.platform_add_findings(healthy, [dict(damage, severity="low")], LAYERS)
    assert low["first_broken_layer"] is None and not low["healthy"]
    assert f.platform_add_findings(healthy, [], LAYERS) == healthy
    assert f.platform_add_findings(healthy, [dict(damage, layer="elsewhere")], LAYERS) == healthy


ENDPOINTS = {
    "api": {"url": "http://127.0.0.1:1/", "health_path": "/health", "component": "backend"},
    "supabase": {"url": "http://127.0.0.1:2/", "health_path": "/auth/v1/health", "external": True},
    "killbill": {"url": "http://127.0.0.1:3", "health_path": "/1.0/healthcheck", "external": True, "critical": False},
}


def test_external_probes_take_only_the_external_endpoints():
    probes = f.external_probes(ENDPOINTS)
    assert [(p["name"], p["url"], p["critical"]) for p in probes] == [
        ("killbill", "http://127.0.0.1:3/1.0/healthcheck", False),
        ("supabase", "http://127.0.0.1:2/auth/v1/health", True)]
    assert f.external_probes(None) == []


def test_probe_result_from_a_uri_loop_item():
    ok = f.probe_result({"item": {"name": "s", "url": "u", "status": 200}, "status": 200})
    assert ok["ok"] and ok["error"] == "" and ok["layer"] == "external"
    refused = f.probe_result({"item": {"name": "s", "url": "u"}, "status": -1,
                              "msg": "Status code was -1 and not [200]: Request failed: <urlopen error refused>"})
    assert not refused["ok"] and refused["error"] == "<urlopen error refused>"
    wrong = f.probe_result({"item": {"name": "s", "url": "u"}, "status": 503, "msg": "Status code was 503"})
    assert not wrong["ok"] and wrong["status"] == 503


def test_platform_diagnosis_failed_probe_is_a_finding_in_its_layer():
    probes = [{"name": "supabase", "url": "http://x/health", "layer": "external", "critical": True, "ok": False,
               "status": -1, "error": "refused"},
              {"name": "killbill", "url": "http://y/health", "layer": "external", "critical": False, "ok": False,
               "status": 503, "error": ""}]
    result = f.platform_diagnosis([node("n1")], COMPONENTS, [traefik(), deployment()], [pod("p1"), pod("p2")],
                                  LAYERS + ["external"], probes=probes)
    assert result["first_broken_layer"] == "external"
    assert [(x["code"], x["component"], x["severity"]) for x in result["findings"]] == [
        ("ENDPOINT_DOWN", "supabase", "critical"), ("ENDPOINT_DOWN", "killbill", "high")]
    assert "HTTP 503" in result["findings"][1]["message"] and "refused" in result["findings"][0]["message"]
    external = next(layer for layer in result["layers"] if layer["name"] == "external")
    assert external["members"] == ["supabase", "killbill"] and external["broken"]


def test_escalation_ignores_low_observations_left():
    low = [{"severity": "low", "code": "X", "message": "m"}]
    assert f.escalation(low, low)["level"] == "none"
    assert f.escalation(low + [{"severity": "high", "code": "Y", "message": "n"}], low)["level"] == "none"
    assert f.escalation([{"severity": "high"}], [{"severity": "high"}])["level"] == "high"


def test_summary_lines_without_layers_counts_findings_and_flattens_evidence():
    report = {"runbook": "slow_api", "healthy_before": False, "check_mode": True,
              "findings": [{"severity": "high", "code": "API_SLOW", "message": "p95 3.1 s",
                            "evidence": {"p95_ms": 3100}}],
              "actions": ["would scale"], "escalation": {"level": "high", "when": "within 2 hours", "why": "w"}}
    lines = f.summary_lines(report)
    assert lines[0] == "SLOW_API RUNBOOK (CHECK MODE: nothing was changed)"
    assert lines[1] == "Diagnosis: 1 finding(s), worst severity high"
    assert "       evidence: p95_ms: 3100" in lines
    assert "Did: would scale" in lines and "Verification: not run (check mode)" in lines


def test_report_problems_refuses_unverified_remediation_and_bad_findings_without_quoting_them():
    from plugins.filter.saasodoo import report_problems

    good = [{"code": "X", "severity": "high", "message": "m"}]
    assert report_problems(good, None, False, "rb") == []
    assert report_problems(good, [], True, "rb") == []
    unverified = report_problems(good, None, True, "rb")
    assert len(unverified) == 1 and "rb remediated but passed no runbook_report_remaining" in unverified[0]
    bad = report_problems([{"code": "X", "severity": "urgent", "message": "s3cr3t in evidence"},
                           {"severity": "low"}], [{"code": "Y", "severity": "low"}], True, "rb")
    assert len(bad) == 3, bad
    assert "findings #1 (code 'X') lacks a severity of critical, high, medium or low" in bad[0]
    assert "findings #2 (code None) lacks a code and a message" in bad[1]
    assert "remaining #1 (code 'Y') lacks a message" in bad[2]
    assert all("without code, message or a severity of" in b for b in bad)
    assert not any("s3cr3t" in b for b in bad)  # a finding's message is never quoted


def test_read_queries_keep_each_target_as_the_results_item():
    from plugins.filter.saasodoo import k8s_log_reads, k8s_manifest_queries, k8s_pod_queries, k8s_queries

    ref = {"kind": "Deployment", "name": "web", "namespace": "ns", "ref": "Deployment/ns/web", "layer": "x"}
    assert k8s_queries([ref]) == [{"kind": "Deployment", "name": "web", "namespace": "ns", "item": ref}]
    manifest = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "r", "namespace": "ns"}}
    assert k8s_manifest_queries([manifest]) == [{"kind": "Ingress", "api_version": "networking.k8s.io/v1",
                                                 "name": "r", "namespace": "ns", "item": manifest}]
    workload = {"metadata": {"namespace": "ns"}, "spec": {"selector": {"matchLabels": {"b": "2", "a": "1"}}}}
    assert k8s_pod_queries([{"resources": [workload], "item": ref}, {"resources": [], "item": {}}]) == [
        {"kind": "Pod", "namespace": "ns", "label_selectors": ["a=1", "b=2"], "keys_only": True, "item": ref}]
    assert k8s_log_reads(["p1"], "ns", 50) == [{"name": "p1", "namespace": "ns", "tail_lines": 50, "item": "p1"}]
    target = {"namespace": "n2", "pod": "p2", "container": "c"}
    assert k8s_log_reads([target], None, 10, 600, "pod") == [
        {"name": "p2", "namespace": "n2", "container": "c", "tail_lines": 10, "since_seconds": 600, "item": target}]


def test_only_the_pods_a_workload_owns_count():
    """Another workload's pods that its labels select, a bare pod, a pod of another namespace: none is its."""
    mine = pod("web-abc-1")
    other_rs = pod("web-api-def-1")
    other_rs["metadata"]["labels"]["pod-template-hash"] = "def"
    other_rs["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "web-api-def", "controller": True}]
    bare = pod("debug")
    bare["metadata"]["ownerReferences"] = []
    elsewhere = pod("web-abc-2")
    elsewhere["metadata"]["namespace"] = "other"
    assert f.k8s_health.owned_pods(deployment(), [mine, other_rs, bare, elsewhere]) == [mine]
    broken = pod("broken", ready=False, waiting="CrashLoopBackOff", restarts=9)
    [report] = f.workloads_health([deployment()], [[mine, other_rs, bare]])
    assert report["healthy"] is True and [p["name"] for p in report["pods"]] == ["web-abc-1"]
    [report] = f.workloads_health([deployment()], [[mine, broken]])
    assert report["healthy"] is False  # its own crash-looping pod counts
    sts = {"kind": "StatefulSet", "metadata": {"name": "db", "namespace": "ns", "uid": "u1"},
           "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}}}
    own, twin = pod("db-0"), pod("db-b-0")
    own["metadata"]["ownerReferences"] = [{"kind": "StatefulSet", "name": "db", "uid": "u1", "controller": True}]
    twin["metadata"]["ownerReferences"] = [{"kind": "StatefulSet", "name": "db-b", "uid": "u2", "controller": True}]
    assert f.k8s_health.owned_pods(sts, [own, twin]) == [own]
    sts["spec"]["selector"] = {}
    assert f.k8s_health.owned_pods(sts, [own]) == []  # an empty selector selects nothing


def test_k8s_owner_keeps_only_what_owned_by_needs():
    from plugins.filter.saasodoo import k8s_owner, k8s_selector_terms

    workload = {"kind": "Deployment", "metadata": {"name": "api", "namespace": "ns", "uid": "u", "labels": {"a": "1"}},
                "spec": {"selector": {"matchLabels": {"app": "api"}},
                         "template": {"spec": {"containers": [{"env": [{"name": "PW", "value": "hunter2"}]}]}}}}
    assert k8s_owner(workload) == {"kind": "Deployment", "metadata": {"name": "api", "namespace": "ns", "uid": "u"},
                                   "spec": {"selector": {"matchLabels": {"app": "api"}}}}
    assert k8s_selector_terms({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}) == [
        "tier in (web)"]
    assert k8s_selector_terms({}) == []


def test_k8s_hide_env_drops_literal_env_values_of_lookup_reads():
    container = {"name": "app", "env": [{"name": "HOOK_SECRET", "value": "hk-s3cr3t"}, {"name": "HOST", "value": "db"},
                                        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}}]}
    deploy = {"kind": "Deployment", "spec": {"replicas": 2, "template": {"spec": {"containers": [container]}}}}
    pod = {"kind": "Pod", "spec": {"initContainers": [container], "containers": [container]}}
    hidden = f.k8s_hide_env([deploy, pod])
    assert "hk-s3cr3t" not in repr(hidden) and "secretKeyRef" in repr(hidden) and "HOOK_SECRET" in repr(hidden)
    assert hidden[0]["spec"]["replicas"] == 2
    assert f.k8s_hide_env(deploy, ["HOST"])["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] == "db"
    assert f.k8s_hide_env(None) is None and f.k8s_hide_env({"kind": "Service"}) == {"kind": "Service"}
    assert container["env"][0]["value"] == "hk-s3cr3t"          # the input is left as it was


def test_summary_lines_group_a_finding_shared_by_a_thousand_tenants_and_cut_long_lists():
    """Issue 13: the printed summary of a 1,000-tenant incident fits on a screen; the JSON keeps every one."""
    many = [{"severity": "high", "code": "TENANT_NOT_SERVING", "message": f"tenant t{i:04d} has no ready pod",
             "ref": f"Deployment/tenant-t{i:04d}/odoo", "evidence": [f"pods 0/1 in tenant-t{i:04d}"]}
            for i in range(1000)]
    few = [{"severity": "medium", "code": "TENANT_QUOTA_MISSING", "message": f"tenant q{i} has no quota",
            "ref": f"ResourceQuota/tenant-q{i}"} for i in range(2)]
    report = {"runbook": "tenant_provisioning", "healthy_before": False, "check_mode": False,
              "findings": many[:500] + few + many[500:],
              "actions": [f"re-applied tenant t{i:04d}" for i in range(1000)],
              "skipped": [{"ref": f"Namespace/tenant-s{i}", "why": "being deleted"} for i in range(30)],
              "handed_over": ["tenant x: quota exhausted"],
              "healthy_after": False, "remaining": many[:700] + few[:1],
              "escalation": {"level": "high"}}
    lines = f.summary_lines(report)
    assert len(lines) < 60, "\n".join(lines)
    found = [line for line in lines if line.startswith("Found: ")]
    assert found == ["Found: HIGH TENANT_NOT_SERVING x1000, the first: tenant t0000 has no ready pod",
                     "Found: MEDIUM TENANT_QUOTA_MISSING tenant q0 has no quota",
                     "Found: MEDIUM TENANT_QUOTA_MISSING tenant q1 has no quota"]
    assert ("       1000 objects: Deployment/tenant-t0000/odoo, Deployment/tenant-t0001/odoo, "
            "Deployment/tenant-t0002/odoo and 997 more (every one in the JSON report)") in lines
    assert "       evidence: pods 0/1 in tenant-t0000" in lines
    did = [line for line in lines if line.startswith("Did: ")]
    assert len(did) == 21 and did[-1] == "Did: ... and 980 more (every one in the JSON report)"
    assert "Left alone: ... and 10 more (every one in the JSON report)" in lines
    assert "Hand over: tenant x: quota exhausted" in lines
    assert lines[-2] == ("Verification: STILL UNHEALTHY: tenant t0000 has no ready pod (and 699 more TENANT_NOT_SERVING); "
                         "tenant q0 has no quota")
    assert len(report["findings"]) == 1002 and len(report["actions"]) == 1000   # the report itself is untouched


def test_summary_lines_keep_every_line_of_a_small_report():
    findings = [{"severity": "high", "code": "WORKLOAD_CRASHLOOP", "message": f"c{i} crash-loops"} for i in range(5)]
    report = {"runbook": "platform_down", "findings": findings, "actions": [f"restart {i}" for i in range(20)],
              "healthy_after": False, "remaining": findings}
    lines = f.summary_lines(report)
    assert [line for line in lines if line.startswith("Found: ")] == [
        f"Found: HIGH WORKLOAD_CRASHLOOP c{i} crash-loops" for i in range(5)]
    assert [line for line in lines if line.startswith("Did: ")] == [f"Did: restart {i}" for i in range(20)]
    assert lines[-2] == "Verification: STILL UNHEALTHY: " + "; ".join(f"c{i} crash-loops" for i in range(5))
