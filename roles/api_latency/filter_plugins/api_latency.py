"""api_latency's judgement: per-path verdicts and findings from saasodoo_http_probe results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCUMENTATION = """
name: api_latency_judge
short_description: Judge saasodoo_http_probe results of API paths against latency and error thresholds
description:
  - Input, the registered results of a loop of saasodoo_http_probe over paths (item = the path, samples returned).
  - A timed-out request counts in the percentiles as the time waited (a user waited at least that long); a refused
    or reset request or an unexpected status counts as an error, not as a time.
  - Returns base_url, thresholds, paths (path, url, verdict ok/slow/errors/slow+errors, requests, statuses, errors,
    timeouts, error_share, latency_ms), slow_paths, failing_paths, healthy and findings (API_PATH_SLOW,
    API_PATH_ERRORS).
"""

_spec = importlib.util.spec_from_file_location(
    "saasodoo_probe", Path(__file__).resolve().parents[3] / "plugins" / "module_utils" / "saasodoo_probe.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def _finding(code, severity, message, component, evidence, remediation, path):
    return {"code": code, "severity": severity, "message": message, "component": component, "ref": path,
            "evidence": evidence, "remediation": remediation}


def _fmt(ms):
    return "n/a" if ms is None else ("%.0f ms" % ms if ms < 10000 else "%.1f s" % (ms / 1000.0))


def judge_path(result, p95_ms, high_ms, error_ratio, timeout_s):
    """One path's measurement and verdict from its probe result."""
    samples = result.get("samples") or []
    timed = [s["ms"] for s in samples if s.get("status") is not None or s.get("error_kind") == "timeout"]
    latency = probe.latency_summary(timed)
    requests = result.get("requests", len(samples))
    timeouts = result.get("timeouts", 0)
    bad = (result.get("unanswered", 0) - timeouts) + result.get("unexpected", 0)
    share = round(bad / float(requests), 4) if requests else 0.0
    slow = (latency["p95"] is not None and latency["p95"] > p95_ms) or (timeouts > 0 and timeout_s * 1000 > p95_ms)
    errors = requests > 0 and share > error_ratio
    verdict = "+".join([v for v, on in (("slow", slow), ("errors", errors)) if on]) or "ok"
    return {
        "path": result.get("item"), "url": result.get("url"), "verdict": verdict, "slow": slow, "errors": errors,
        "requests": requests, "statuses": result.get("statuses", {}), "error_kinds": result.get("errors", {}),
        "timeouts": timeouts, "error_share": share, "error_samples": result.get("error_samples", []),
        "latency_ms": latency, "answered_latency_ms": result.get("latency_ms"),
        "very_slow": slow and (timeouts > 0 or (latency["p95"] or 0) >= high_ms),
    }


def api_latency_judge(results, p95_ms=2000.0, high_ms=5000.0, error_ratio=0.0, timeout_s=5.0, base_url="",
                      component="backend"):
    paths = [judge_path(r, p95_ms, high_ms, error_ratio, timeout_s) for r in results or []
             if not r.get("skipped")]
    findings = []
    for p in paths:
        lat = p["latency_ms"]
        evidence = ["%s: p50 %s, p95 %s, p99 %s over %d request(s) (threshold p95 %s)"
                    % (p["path"], _fmt(lat["p50"]), _fmt(lat["p95"]), _fmt(lat["p99"]), p["requests"], _fmt(p95_ms)),
                    "statuses: %s" % (", ".join("%s x%d" % (k, v) for k, v in sorted(p["statuses"].items())) or "none")]
        if p["timeouts"]:
            evidence.append("%d of %d request(s) timed out after %g s" % (p["timeouts"], p["requests"], timeout_s))
        if p["error_kinds"]:
            evidence.append("failures: %s" % ", ".join("%s x%d" % kv for kv in sorted(p["error_kinds"].items())))
        evidence.extend(p["error_samples"][:2])
        if p["slow"]:
            findings.append(_finding(
                "API_PATH_SLOW", "high" if p["very_slow"] else "medium",
                "API path %s is slow: p95 %s%s (threshold %s)" % (
                    p["path"], _fmt(lat["p95"]),
                    ", %d request(s) timed out" % p["timeouts"] if p["timeouts"] else "", _fmt(p95_ms)),
                component, evidence, "find the cause (backend saturation, database, cache) and fix it", p["path"]))
        if p["errors"]:
            findings.append(_finding(
                "API_PATH_ERRORS", "high",
                "API path %s fails: %.0f%% of requests got no good answer (%s)" % (
                    p["path"], p["error_share"] * 100,
                    ", ".join("%s x%d" % kv for kv in sorted(list(p["statuses"].items()) + list(p["error_kinds"].items()))
                              if kv[0] not in ("timeout",))),
                component, evidence, "platform_down.yml / backend_crashloop.yml when the backend is unhealthy",
                p["path"]))
    return {
        "base_url": base_url,
        "thresholds": {"p95_ms": p95_ms, "high_ms": high_ms, "error_ratio": error_ratio, "timeout_s": timeout_s},
        "paths": paths,
        "slow_paths": [p["path"] for p in paths if p["slow"]],
        "failing_paths": [p["path"] for p in paths if p["errors"]],
        "healthy": not findings,
        "findings": findings,
    }


class FilterModule:
    def filters(self):
        return {"api_latency_judge": api_latency_judge}
