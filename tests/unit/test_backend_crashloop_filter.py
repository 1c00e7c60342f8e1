"""backend_crashloop's decisions on hand-made objects: the bounded memory math, the missing
configuration keys, the crash summaries, the log patterns, the allow policies and the findings."""

from __future__ import annotations

import pytest

from plugins.filter import backend_crashloop as f
from plugins.filter import netpol

GI = 2 ** 30
MI = 2 ** 20


# ------------------------------------------------------------------------ memory math

@pytest.mark.parametrize("limit, factor, cap, after, capped", [
    ("1Gi", 1.5, "4Gi", "1536Mi", False),
    ("512Mi", 2, "4Gi", "1Gi", False),
    ("3Gi", 1.5, "4Gi", "4Gi", True),          # 4.5Gi would pass the cap: held at it
    ("1000M", 1.5, "4Gi", "1431Mi", False),   # decimal units, rounded up to whole MiB
    ("100Mi", 1.1, "4Gi", "110Mi", False),
])
def test_the_limit_grows_by_the_factor_and_never_passes_the_cap(limit, factor, cap, after, capped):
    plan = f.backend_crashloop_memory_plan({"limits": {"memory": limit}}, factor, cap)
    assert plan["changed"] is True
    assert plan["limit_after"] == after
    assert plan["capped"] is capped
    assert f.backend_crashloop_quantity_bytes(plan["limit_after"]) <= f.backend_crashloop_quantity_bytes(cap)
    assert f.backend_crashloop_quantity_bytes(plan["limit_after"]) > f.backend_crashloop_quantity_bytes(limit)


@pytest.mark.parametrize("limit", ["4Gi", "4096Mi", "8Gi"])
def test_a_limit_at_or_above_the_cap_is_not_raised_and_says_so(limit):
    plan = f.backend_crashloop_memory_plan({"limits": {"memory": limit}}, 1.5, "4Gi")
    assert plan["changed"] is False and plan["at_cap"] is True
    assert plan["limit_after"] == limit
    assert "already at the cap 4Gi" in plan["message"]


def test_no_limit_means_nothing_to_raise():
    plan = f.backend_crashloop_memory_plan({"requests": {"memory": "256Mi"}}, 1.5, "4Gi")
    assert plan["changed"] is False and plan["no_limit"] is True
    assert "node's memory pressure" in plan["message"]


def test_the_request_grows_only_when_asked_and_never_above_the_new_limit():
    res = {"limits": {"memory": "3Gi"}, "requests": {"memory": "3Gi"}}
    assert f.backend_crashloop_memory_plan(res, 1.5, "4Gi")["request_after"] == "3Gi"
    plan = f.backend_crashloop_memory_plan(res, 1.5, "4Gi", raise_request=True)
    assert (plan["limit_after"], plan["request_after"]) == ("4Gi", "4Gi")
    assert "memory request 3Gi -> 4Gi" in plan["message"]


@pytest.mark.parametrize("factor, cap, match", [
    (1, "4Gi", "above 1"), (0.5, "4Gi", "above 1"), (1.5, "0", "positive"), (1.5, "lots", "not a Kubernetes quantity"),
])
def test_bad_inputs_are_refused(factor, cap, match):
    with pytest.raises(ValueError, match=match):
        f.backend_crashloop_memory_plan({"limits": {"memory": "1Gi"}}, factor, cap)


# ------------------------------------------------------------------------ configuration references

def deployment(env=None, env_from=None, volumes=None):
    return {"kind": "Deployment", "metadata": {"name": "api", "namespace": "ns"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}},
                     "template": {"metadata": {"labels": {"app": "api"}},
                                  "spec": {"containers": [{"name": "api", "env": env or [], "envFrom": env_from or []}],
                                           "volumes": volumes or []}}}}


def secret_env(name, secret, key, optional=None):
    ref = {"name": secret, "key": key}
    if optional is not None:
        ref["optional"] = optional
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def test_every_kind_of_reference_is_listed():
    d = deployment(
        env=[secret_env("DB", "s", "DATABASE_URL"), {"name": "PLAIN", "value": "x"},
             {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "LOG_LEVEL"}}}],
        env_from=[{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "s2", "optional": True}, "prefix": "X_"}],
        volumes=[{"name": "certs", "secret": {"secretName": "tls", "items": [{"key": "tls.crt", "path": "a"}]}},
                 {"name": "conf", "configMap": {"name": "files"}}])
    refs = f.backend_crashloop_config_refs(d)
    assert [(r["kind"], r["name"], r["key"], r["via"]) for r in refs] == [
        ("Secret", "s", "DATABASE_URL", "secretKeyRef"),
        ("ConfigMap", "c", "LOG_LEVEL", "configMapKeyRef"),
        ("ConfigMap", "c", None, "envFrom"),
        ("Secret", "s2", None, "envFrom"),
        ("Secret", "tls", "tls.crt", "volume"),
        ("ConfigMap", "files", None, "volume"),
    ]
    assert refs[3]["optional"] is True and refs[0]["env"] == "DB"


def test_a_missing_key_and_a_missing_object_are_found_optional_ones_never():
    refs = f.backend_crashloop_config_refs(deployment(env=[
        secret_env("DB", "s", "DATABASE_URL"), secret_env("KB", "s", "KILLBILL_API_KEY"),
        secret_env("OPT", "s", "OPTIONAL_KEY", optional=True), secret_env("OTHER", "gone", "X"),
        secret_env("KB2", "s", "KILLBILL_API_KEY")]))
    missing = f.backend_crashloop_missing_refs(refs, {"Secret": {"s": ["DATABASE_URL"]}})
    assert [(m["name"], m["key"], m["object_missing"]) for m in missing] == [
        ("s", "KILLBILL_API_KEY", False), ("gone", "X", True)]


def test_object_keys_keep_names_never_values():
    results = [{"item": "s", "resources": [{"metadata": {"name": "s"}, "data": {"B": "c2VjcmV0", "A": "eA=="}}]},
               {"item": "gone", "resources": []}]
    keys = f.backend_crashloop_object_keys(results)
    assert keys == {"s": ["A", "B"]}
    assert "c2VjcmV0" not in repr(keys)


# ------------------------------------------------------------------------ pods, logs, events

def pod(name, reason="OOMKilled", code=137, restarts=4, ready=False, message="", waiting="CrashLoopBackOff"):
    cs = {"name": "api", "restartCount": restarts,
          "state": {"waiting": {"reason": waiting}} if waiting else {"running": {}}}
    if reason:
        cs["lastState"] = {"terminated": {"reason": reason, "exitCode": code, "message": message,
                                          "finishedAt": "2026-01-01T10:00:00Z"}}
    return {"metadata": {"name": name}, "status": {"phase": "Running",
                                                   "conditions": [{"type": "Ready", "status": str(ready)}],
                                                   "containerStatuses": [cs]}}


@pytest.mark.parametrize("code, meaning", [
    (137, "killed (SIGKILL: out of memory or forced stop)"), (1, "application error"), (143, "terminated (SIGTERM)"),
    (130, "killed by signal 2"), (3, "application exit code 3"), (None, "unknown"),
])
def test_exit_codes_are_explained(code, meaning):
    assert f.backend_crashloop_exit_meaning(code) == meaning


def test_pod_crashes_carry_the_last_termination():
    crashes = f.backend_crashloop_pod_crashes([pod("a", message="container exceeded its memory limit"),
                                               {"metadata": {"name": "gone", "deletionTimestamp": "x"}}])
    assert len(crashes) == 1
    t = crashes[0]["last_termination"]
    assert (t["reason"], t["exit_code"], t["container"]) == ("OOMKilled", 137, "api")
    assert crashes[0]["waiting_reason"] == "CrashLoopBackOff" and crashes[0]["restarts"] == 4


def test_pods_are_matched_to_their_workload_by_its_selector():
    workload = {"metadata": {"namespace": "ns"}, "spec": {"selector": {"matchLabels": {"app": "api"}}}}
    pods = [{"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "api", "x": "y"}}},
            {"metadata": {"name": "b", "namespace": "ns", "labels": {"app": "db"}}},
            {"metadata": {"name": "c", "namespace": "other", "labels": {"app": "api"}}}]
    assert [p["metadata"]["name"] for p in f.backend_crashloop_select_pods(pods, workload)] == ["a"]
    assert f.backend_crashloop_select_pods(pods, None) == []


PATTERNS = [
    {"name": "db", "cause": "database", "regex": "could not connect to server|connection refused"},
    {"name": "oom", "cause": "memory", "regex": "exceeded its memory limit"},
]


def test_log_sources_say_why_logs_are_missing_and_keep_termination_messages():
    crashes = f.backend_crashloop_pod_crashes([pod("a", message="container exceeded its memory limit")])
    logs = f.backend_crashloop_log_sources(
        [{"item": {"name": "a"}, "failed": True, "msg": "dial tcp 127.0.0.1:10250: connect: connection refused\nmore"},
         {"item": {"name": "b"}, "log": "psycopg.OperationalError: could not connect to server", "failed": False}],
        crashes)
    assert logs["summary"] == {"available": True, "read": 1,
                               "errors": ["dial tcp 127.0.0.1:10250: connect: connection refused"]}
    matches = f.backend_crashloop_log_matches(logs["sources"], PATTERNS)
    assert [(m["pod"], m["source"], m["cause"]) for m in matches] == [
        ("b", "log", "database"), ("a", "termination message", "memory")]


def test_log_matches_are_capped_per_pattern_and_a_bad_regex_is_named():
    text = "\n".join("connection refused %d" % i for i in range(20))
    assert len(f.backend_crashloop_log_matches([{"pod": "p", "text": text}], PATTERNS, limit=3)) == 3
    with pytest.raises(ValueError, match="'bad' has a bad regex"):
        f.backend_crashloop_log_matches([], [{"name": "bad", "regex": "("}])


def test_events_are_grouped_by_reason_for_the_workloads_objects_only():
    events = [
        {"involvedObject": {"name": "api-7d9-abc"}, "reason": "BackOff", "type": "Warning", "count": 5,
         "message": "Back-off restarting failed container", "lastTimestamp": "2026-01-01T10:00:00Z"},
        {"involvedObject": {"name": "api-7d9-abc"}, "reason": "BackOff", "type": "Warning", "count": 2,
         "message": "Back-off restarting failed container api", "lastTimestamp": "2026-01-01T10:05:00Z"},
        {"involvedObject": {"name": "api-7d9-abc"}, "reason": "Pulled", "type": "Normal", "count": 1,
         "message": "pulled", "lastTimestamp": "2026-01-01T10:06:00Z"},
        {"involvedObject": {"name": "apiother"}, "reason": "Failed", "type": "Warning", "message": "not ours"},
    ]
    assert f.backend_crashloop_event_summary(events, ["api"]) == [
        "BackOff (Warning) x7: Back-off restarting failed container api", "Pulled (Normal) x1: pulled"]


# ------------------------------------------------------------------------ network policies

BACKEND = {"namespace": "sys", "match_labels": {"app": "api"}}
DATABASE = {"namespace": "sys", "match_labels": {"app": "db"}, "port": 5432}
NAMES = {"egress": "allow-api-to-db", "ingress": "allow-db-from-api"}


def policy(name, selector, types, egress=None, ingress=None):
    spec = {"podSelector": {"matchLabels": selector}, "policyTypes": types}
    if egress is not None:
        spec["egress"] = egress
    if ingress is not None:
        spec["ingress"] = ingress
    return {"metadata": {"name": name, "namespace": "sys"}, "spec": spec}


def verdict(policies):
    return netpol.netpol_allows({"namespace": "sys", "labels": {"app": "api"}},
                                {"namespace": "sys", "labels": {"app": "db"}}, policies, {"sys": {}})


def test_a_blocked_egress_gets_only_an_egress_allow_that_reopens_the_path():
    deny = policy("deny-api-egress", {"app": "api"}, ["Egress"], egress=[])
    v = verdict([deny])
    assert v["allowed"] is False
    made = f.backend_crashloop_db_policies(v, BACKEND, DATABASE, NAMES, {"x": "y"})
    assert [p["metadata"]["name"] for p in made] == ["allow-api-to-db"]
    assert made[0]["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert made[0]["metadata"]["labels"] == {"x": "y"}
    after = verdict([deny] + made)
    assert after["allowed"] is True and after["egress"]["allowed_by"] == ["sys/allow-api-to-db"]


def test_a_blocked_ingress_gets_only_an_ingress_allow():
    deny = policy("default-deny", {"app": "db"}, ["Ingress"], ingress=[])
    made = f.backend_crashloop_db_policies(verdict([deny]), BACKEND, DATABASE, NAMES)
    assert [p["metadata"]["name"] for p in made] == ["allow-db-from-api"]
    assert verdict([deny] + made)["allowed"] is True


def test_both_sides_blocked_get_both_and_an_open_path_gets_none():
    denies = [policy("deny-all", {}, ["Ingress", "Egress"], egress=[], ingress=[])]
    made = f.backend_crashloop_db_policies(verdict(denies), BACKEND, DATABASE, NAMES)
    assert len(made) == 2 and verdict(denies + made)["allowed"] is True
    assert f.backend_crashloop_db_policies(verdict([]), BACKEND, DATABASE, NAMES) == []


# ------------------------------------------------------------------------ findings

def ctx(**kw):
    base = {"component": "backend", "ref": "Deployment/sys/api", "replicas": 2, "ready_replicas": 2,
            "restart_threshold": 3, "pods": [], "events": [], "logs": {"available": False, "errors": ["no kubelet"]},
            "matches": [], "missing_refs": [], "network": {"checked": True, "allowed": True},
            "database": {"connected": True, "healthy": True}, "memory_plan": None}
    base.update(kw)
    return base


def codes(result):
    return [(x["code"], x["severity"]) for x in result["findings"]]


def test_a_healthy_backend_has_no_findings():
    healthy = f.backend_crashloop_pod_crashes([pod("a", reason=None, restarts=0, ready=True, waiting=None)])
    assert f.backend_crashloop_findings(ctx(pods=healthy))["findings"] == []


def test_oomkilled_pods_give_the_symptom_and_the_cause_with_logs_said_unavailable():
    crashes = f.backend_crashloop_pod_crashes([pod("a"), pod("b")])
    plan = f.backend_crashloop_memory_plan({"limits": {"memory": "1Gi"}}, 1.5, "4Gi")
    result = f.backend_crashloop_findings(ctx(pods=crashes, ready_replicas=0, memory_plan=plan))
    assert codes(result) == [("BACKEND_CRASHLOOP", "critical"), ("BACKEND_OOMKILLED", "critical")]
    assert result["oomkilled"] and result["crashing"] and result["causes"] == ["memory"]
    crash = result["findings"][0]
    assert any("exit code 137" in e for e in crash["evidence"])
    assert any(e.startswith("logs: unavailable (no kubelet)") for e in crash["evidence"])


def test_oom_at_the_cap_is_its_own_finding():
    crashes = f.backend_crashloop_pod_crashes([pod("a")])
    plan = f.backend_crashloop_memory_plan({"limits": {"memory": "4Gi"}}, 1.5, "4Gi")
    result = f.backend_crashloop_findings(ctx(pods=crashes, ready_replicas=1, memory_plan=plan))
    assert ("BACKEND_MEMORY_AT_CAP", "high") in codes(result)
    assert "already at the cap" in next(x for x in result["findings"] if x["code"] == "BACKEND_MEMORY_AT_CAP")["message"]


def test_a_missing_secret_key_is_named_even_when_the_pods_still_run():
    refs = f.backend_crashloop_config_refs(deployment(env=[secret_env("KB", "s", "KILLBILL_API_KEY")]))
    missing = f.backend_crashloop_missing_refs(refs, {"Secret": {"s": []}})
    result = f.backend_crashloop_findings(ctx(missing_refs=missing))
    assert codes(result) == [("BACKEND_SECRET_KEY_MISSING", "high")]
    assert "key KILLBILL_API_KEY is missing from the Secret s" in result["findings"][0]["message"]
    assert "a human must supply" in result["findings"][0]["remediation"]


def test_a_blocked_network_path_is_critical_and_names_the_policy():
    v = verdict([policy("deny-api-egress", {"app": "api"}, ["Egress"], egress=[])])
    result = f.backend_crashloop_findings(ctx(network=dict(v, checked=True, database_ref="StatefulSet/sys/db")))
    assert codes(result) == [("BACKEND_DB_BLOCKED_BY_NETWORK_POLICY", "critical")]
    assert result["findings"][0]["evidence"] == ["egress isolated by sys/deny-api-egress, no rule allows the database"]


def test_an_unexplained_crash_is_handed_over_and_a_database_outage_named():
    crashes = f.backend_crashloop_pod_crashes([pod("a", reason="Error", code=1)])
    result = f.backend_crashloop_findings(ctx(pods=crashes, ready_replicas=1))
    assert codes(result) == [("BACKEND_CRASHLOOP", "high"), ("BACKEND_CRASH_CAUSE_UNKNOWN", "high")]
    down = f.backend_crashloop_findings(ctx(pods=crashes, database={"connected": False, "healthy": True,
                                                                    "message": "refused", "reasons": ["r"]}))
    assert "BACKEND_DATABASE_UNAVAILABLE" in [c for c, _ in codes(down)]
    assert "BACKEND_CRASH_CAUSE_UNKNOWN" not in [c for c, _ in codes(down)]


def test_log_patterns_name_a_cause():
    crashes = f.backend_crashloop_pod_crashes([pod("a", reason="Error", code=1)])
    matches = [{"pod": "a", "source": "log", "pattern": "db", "cause": "database", "line": "connection refused"}]
    result = f.backend_crashloop_findings(ctx(pods=crashes, matches=matches))
    assert ("BACKEND_LOG_ERRORS", "medium") in codes(result)
    assert "BACKEND_CRASH_CAUSE_UNKNOWN" not in [c for c, _ in codes(result)]
    assert result["causes"] == ["database"]
