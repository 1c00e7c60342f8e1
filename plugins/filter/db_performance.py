"""Pure decisions of db_performance.yml: which tuned settings the findings call for, whether the
pooler is needed and the backend points at it, and the runbook's own findings.

The runbook reads PostgreSQL (saasodoo_pg_health, saasodoo_pg_settings), PgBouncer
(saasodoo_pgbouncer_info) and the cluster (the database StatefulSet and its pods, the backend
Deployment, the pooler's Deployment), and lets these filters decide. Unit tests:
tests/unit/test_db_performance_filter.py. The bounded memory math is backend_crashloop's
(backend_crashloop_memory_plan).
"""

from __future__ import annotations

DOCUMENTATION = """
name: db_performance
short_description: Planning filters of the db_performance runbook
description:
  - C(db_performance_wanted_settings) picks the tuned settings whose C(for) codes the findings contain.
  - C(db_performance_env_points_at) tells whether a workload's container environment points at a host and port.
  - C(db_performance_pgbouncer_ini) renders the pgbouncer.ini of the pooler the runbook deploys.
  - C(db_performance_findings) builds the runbook's own findings (pooler missing, backend not pooled, settings not
    tuned, restart pending, database OOMKilled or at its memory cap) next to saasodoo_pg_health's and
    saasodoo_pgbouncer_info's.
  - C(db_performance_actions) and C(db_performance_handover) write the report's lines (done or would be done; left
    to a human, with the blocking pid and its query).
"""

PRESSURE_CODES = ("PG_CONNECTIONS_NEAR_LIMIT", "PG_CONNECTIONS_EXHAUSTED", "PGBOUNCER_CLIENTS_WAITING")
ORDER = ("critical", "high", "medium", "low")


def db_performance_wanted_settings(tuned, codes):
    """{name: value} of the tuned settings called for by any of the finding codes.

    ``tuned``: {name: {value, for: [codes]}}; ``codes``: the codes found.
    """
    codes = set(codes or [])
    return dict((name, "%s" % spec["value"]) for name, spec in sorted((tuned or {}).items())
                if codes & set(spec.get("for") or []))


def db_performance_tuned_values(tuned):
    """{name: value} of every tuned setting (to see which of them wait for a restart)."""
    return dict((name, "%s" % spec["value"]) for name, spec in sorted((tuned or {}).items()))


def db_performance_only_raise(tuned):
    """Names of the tuned settings marked ``only_raise: true`` (never lowered), sorted."""
    return sorted(name for name, spec in (tuned or {}).items() if spec.get("only_raise"))


def db_performance_env_points_at(workload, host, port, env_names, container=None):
    """Whether the container's env has env_names.host == host and env_names.port == port.

    Returns {pointed, host, port, container} (host/port as found, None when unset).
    """
    containers = ((((workload or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers") or []
    chosen = next((c for c in containers if c.get("name") == container), None) if container else (
        containers[0] if containers else None)
    env = dict((e.get("name"), e.get("value")) for e in (chosen or {}).get("env") or [] if "value" in e)
    have_host, have_port = env.get(env_names["host"]), env.get(env_names["port"])
    return {"pointed": have_host == "%s" % host and "%s" % have_port == "%s" % port,
            "host": have_host, "port": have_port, "container": (chosen or {}).get("name")}


def db_performance_pgbouncer_ini(pgbouncer, database, db_name, db_user, cluster_domain):
    """pgbouncer.ini for the pooler: one [databases] entry for the platform database behind its
    Service, the pooling settings of ``pgbouncer`` (the inventory's db_performance_pgbouncer),
    SCRAM auth against the mounted auth file, ``db_user`` allowed to read the admin console's SHOW
    commands (stats_users)."""
    host = "%s.%s.svc.%s" % (database["name"], database["namespace"], cluster_domain)
    lines = [
        "; Rendered by db_performance.yml from db_performance_pgbouncer; edits are overwritten.",
        "[databases]",
        "%s = host=%s port=%s dbname=%s" % (db_name, host, database["port"], db_name),
        "",
        "[pgbouncer]",
        "listen_addr = 0.0.0.0",
        "listen_port = %s" % pgbouncer["port"],
        "auth_type = scram-sha-256",
        "auth_file = /etc/pgbouncer-auth/userlist.txt",
        "stats_users = %s" % db_user,
        "pool_mode = %s" % pgbouncer.get("pool_mode", "transaction"),
        "default_pool_size = %s" % pgbouncer.get("default_pool_size", 10),
        "reserve_pool_size = %s" % pgbouncer.get("reserve_pool_size", 0),
        "max_client_conn = %s" % pgbouncer.get("max_client_conn", 100),
        "max_db_connections = %s" % pgbouncer.get("max_db_connections", 0),
        "server_idle_timeout = %s" % pgbouncer.get("server_idle_timeout", 600),
        "ignore_startup_parameters = extra_float_digits",
        "",
    ]
    return "\n".join(lines)


def _finding(code, severity, message, evidence, component, ref, remediation):
    return {"code": code, "severity": severity, "message": message, "evidence": evidence,
            "component": component, "ref": ref, "remediation": remediation}


def db_performance_findings(ctx):
    """The runbook's findings: saasodoo_pg_health's and saasodoo_pgbouncer_info's, tagged with
    the component, plus its own.

    ``ctx`` keys: component, ref (the database workload), pg (saasodoo_pg_health result), pooler
    ({deployed, ref, info (saasodoo_pgbouncer_info result or None)}), backend ({ref, pointed,
    host, port, want_host, want_port}), tuning (saasodoo_pg_settings result), wanted ({name:
    value}), oom ({oomkilled, pods, plan}).
    Returns {findings, pressure, codes}.
    """
    comp = ctx.get("component", "postgres")
    ref = ctx.get("ref")
    pg = ctx.get("pg") or {}
    findings = []
    for f in pg.get("findings") or []:
        findings.append(dict(f, component=comp, ref=ref))
    pooler = ctx.get("pooler") or {}
    info = pooler.get("info") or {}
    for f in info.get("findings") or []:
        findings.append(dict(f, component="pgbouncer", ref=pooler.get("ref")))
    codes = set(f["code"] for f in findings)
    pressure = bool(codes & set(PRESSURE_CODES))

    backend = ctx.get("backend") or {}
    if pressure and not pooler.get("deployed"):
        conns = pg.get("connections") or {}
        findings.append(_finding(
            "DB_POOLER_MISSING", "high",
            "No connection pooler in front of PostgreSQL: every backend process holds its own server connection "
            "(%s of max_connections %s in use)." % (conns.get("total"), conns.get("max")),
            ["connections by user: %s" % conns.get("by_user"), "connections by state: %s" % conns.get("by_state"),
             "%s does not exist" % pooler.get("ref")],
            "pgbouncer", pooler.get("ref"), "deploy PgBouncer and point the backend at it"))
    if (pooler.get("deployed") or pressure) and backend and not backend.get("pointed"):
        findings.append(_finding(
            "DB_BACKEND_NOT_POOLED", "high" if pressure else "medium",
            "The backend connects to PostgreSQL directly, not through the pooler %s:%s." % (
                backend.get("want_host"), backend.get("want_port")),
            ["%s env: host=%s port=%s" % (backend.get("ref"), backend.get("host"), backend.get("port"))],
            "backend", backend.get("ref"), "point the backend's database host and port at PgBouncer"))

    tuning = ctx.get("tuning") or {}
    wanted = ctx.get("wanted") or {}
    by_name = dict((s["name"], s) for s in tuning.get("settings") or [])
    to_set = [by_name[n] for n in sorted(wanted) if n in by_name and by_name[n]["action"] == "set"]
    if to_set:
        findings.append(_finding(
            "DB_SETTINGS_NOT_TUNED", "medium",
            "PostgreSQL settings that the findings call for are not tuned: %s." % ", ".join(s["name"] for s in to_set),
            ["%s: %s -> %s%s" % (s["name"], s["current"], s["desired"],
                                 " (needs a restart)" if s["restart_required"] else " (a reload is enough)")
             for s in to_set],
            comp, ref, "apply the tuned settings (ALTER SYSTEM)"))
    kept = [by_name[n] for n in sorted(wanted) if n in by_name and by_name[n]["action"] == "kept"]
    if kept:
        findings.append(_finding(
            "DB_SETTING_KEPT_HIGHER", "low",
            "PostgreSQL already allows more than the tuned value of %s: kept, never lowered." % ", ".join(
                s["name"] for s in kept),
            ["%s: %s in use%s, tuned value %s (only raised)" % (
                s["name"], s["current"], ", %s waiting in %s" % (s["file_value"], s["file"])
                if s["file_value"] not in (None, s["setting"]) else "",
                s["desired"]) for s in kept],
            comp, ref, "nothing: a lower value would cut what the server allows today"))
    pending = [s for s in tuning.get("settings") or [] if s["action"] == "restart_pending"]
    if pending:
        findings.append(_finding(
            "DB_RESTART_PENDING", "medium",
            "PostgreSQL needs a restart to apply %s (restart pending)." % ", ".join(s["name"] for s in pending),
            ["%s: %s in use, %s in %s" % (s["name"], s["current"], s["file_value"], s["file"] or "the files")
             for s in pending],
            comp, ref, "restart PostgreSQL in a maintenance window (db_performance_allow_restart=true)"))

    oom = ctx.get("oom") or {}
    if oom.get("oomkilled"):
        plan = oom.get("plan") or {}
        at_cap = bool(plan.get("at_cap") or plan.get("no_limit"))
        findings.append(_finding(
            "DB_MEMORY_AT_CAP" if at_cap else "DB_OOMKILLED", "critical",
            ("PostgreSQL's containers are killed for exceeding their memory limit and %s" % plan.get("message"))
            if at_cap else "PostgreSQL's containers are killed for exceeding their memory limit %s" % (
                plan.get("limit_before") or ""),
            list(oom.get("pods") or []), comp, ref,
            "hand over: a human must decide" if at_cap else "raise the StatefulSet's memory (bounded)"))

    findings.sort(key=lambda f: ORDER.index(f["severity"]))
    return {"findings": findings, "pressure": pressure, "codes": sorted(set(f["code"] for f in findings))}


def _one_line(text, limit=160):
    text = " ".join(("%s" % (text or "?")).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def db_performance_actions(ctx):
    """One line per action taken (or, in check mode, that would be taken).

    ``ctx`` keys: check_mode, before (the diagnosis), set (names set), pool (bool), pooler_ref,
    pgbouncer, backend_ref, backend_env ({name: value}), probe (saasodoo_pgbouncer_info result
    after deploying, or {}), probe_endpoint, raise (bool), ref, blockers (PG_BLOCKING_LOCKS
    evidence), terminate, max_terminations, terminated (evidence of those terminated), restarted.
    """
    check = bool(ctx.get("check_mode"))
    before = ctx.get("before") or {}
    tuning = dict((s["name"], s) for s in before.get("tuning") or [])
    lines = []
    for name in ctx.get("set") or []:
        restart = (tuning.get(name) or {}).get("restart_required")
        lines.append("%s %s = %s (ALTER SYSTEM; %s)" % (
            "would set" if check else "set", name, (before.get("wanted") or {}).get(name),
            "restart pending" if restart else "reloaded"))
    if ctx.get("pool"):
        pb = ctx.get("pgbouncer") or {}
        lines.append("%s PgBouncer %s with its Service, ConfigMap and Secret (pool_mode %s, default_pool_size %s)" % (
            "would deploy" if check else "deployed", ctx.get("pooler_ref"), pb.get("pool_mode"),
            pb.get("default_pool_size")))
        lines.append("%s %s at the pooler: %s" % (
            "would point" if check else "pointed", ctx.get("backend_ref"),
            ", ".join("%s=%s" % kv for kv in sorted((ctx.get("backend_env") or {}).items()))))
    probe = ctx.get("probe") or {}
    if (probe.get("probe") or {}).get("ok"):
        pools = ", ".join("%s/%s: %s client(s), %s server connection(s)" % (
            p.get("database"), p.get("user"), p.get("cl_active", 0),
            (p.get("sv_active") or 0) + (p.get("sv_idle") or 0) + (p.get("sv_used") or 0))
            for p in probe.get("pools") or [])
        lines.append("verified pooling through PgBouncer at %s: a query through it answered; pools: %s" % (
            ctx.get("probe_endpoint"), pools or "none"))
    if ctx.get("raise"):
        plan = before.get("memory_plan") or {}
        lines.append("%s the memory of %s container %s: %s" % (
            "would raise" if check else "raised", ctx.get("ref"), plan.get("container"), plan.get("message")))
    for b in ctx.get("terminated") or []:
        lines.append("terminated blocking session %s (its transaction was rolled back); its query: %s" % (
            b.get("blocker_pid"), _one_line(b.get("blocker_query"))))
    if check and ctx.get("terminate"):
        for b in (ctx.get("blockers") or [])[:int(ctx.get("max_terminations") or 0)]:
            lines.append("would terminate blocking session %s; its query: %s" % (
                b.get("blocker_pid"), _one_line(b.get("blocker_query"))))
    for ref in ctx.get("restarted") or []:
        lines.append("%s %s" % ("would restart" if check else "rolling restart of", ref))
    return lines


def db_performance_handover(ctx):
    """Findings left to a human, one line each: blocking sessions not terminated (pid and query),
    a restart pending, slow queries to review, memory at its cap."""
    before = ctx.get("before") or {}
    blockers = list(ctx.get("blockers") or [])
    if ctx.get("terminate"):
        blockers = blockers[int(ctx.get("max_terminations") or 0):]
    lines = []
    for b in blockers:
        lines.append(
            "session %s (%s on %s, %s) blocks %s session(s); its query: %s -> a human: terminating it rolls its "
            "transaction back; after review rerun with db_performance_terminate_blockers=true"
            % (b.get("blocker_pid"), b.get("blocker_user"), b.get("blocker_database"), b.get("blocker_state"),
               b.get("blocked_count"), _one_line(b.get("blocker_query"))))
    pending = list(ctx.get("pending") or [])
    if pending and not ctx.get("allow_restart"):
        lines.append("PostgreSQL needs a restart to apply %s (restart pending) -> a human: restart it in a maintenance "
                     "window, or rerun with db_performance_allow_restart=true" % ", ".join(pending))
    for f in before.get("findings") or []:
        if f["code"] in ("PG_SLOW_STATEMENTS", "PG_LONG_RUNNING_QUERY"):
            lines.append("%s -> a human: review the queries (EXPLAIN, indexes)" % f["message"])
        elif f["code"] == "DB_MEMORY_AT_CAP":
            lines.append("%s -> a human" % f["message"])
    return lines


class FilterModule:
    """Ansible entry point."""

    def filters(self):
        return {
            "db_performance_wanted_settings": db_performance_wanted_settings,
            "db_performance_tuned_values": db_performance_tuned_values,
            "db_performance_only_raise": db_performance_only_raise,
            "db_performance_env_points_at": db_performance_env_points_at,
            "db_performance_pgbouncer_ini": db_performance_pgbouncer_ini,
            "db_performance_findings": db_performance_findings,
            "db_performance_actions": db_performance_actions,
            "db_performance_handover": db_performance_handover,
        }
