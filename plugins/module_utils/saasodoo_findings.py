# -*- coding: utf-8 -*-
# Shared by the project's diagnosis modules: one shape for every finding.
"""Findings: what a diagnosis module found, in a shape the runbooks branch on.

Every finding has a stable ``code`` (runbooks branch on codes, never on message text), a
``severity`` following the troubleshooting guide's escalation rules, a ``message`` a tired
engineer understands, the ``evidence`` behind it, and the ``remediation`` (the role or
runbook that fixes it).

Severity, per the guide's "When to Escalate":
- critical: complete outage, data loss or corruption, security breach, several tenants down
- high: one tenant down, degradation affecting several tenants, backup failures, monitoring down
- medium: non-critical failures, minor performance issues
- low: worth knowing, nothing to do now
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

SEVERITIES = ("critical", "high", "medium", "low")


class DiagnosisError(Exception):
    """A diagnosis could not be made (unreachable server, missing permission...).

    Helpers raise it; only a module's main() turns it into fail_json, with the message as is.
    """


def finding(code, severity, message, evidence=None, remediation=None, **extra):
    if severity not in SEVERITIES:
        raise ValueError("unknown severity %r" % (severity,))
    result = {
        "code": code,
        "severity": severity,
        "message": message,
        "evidence": evidence if evidence is not None else {},
        "remediation": remediation,
    }
    result.update(extra)
    return result


def worst_severity(findings):
    """The most severe level among the findings, or 'none'."""
    levels = set(f["severity"] for f in findings)
    for level in SEVERITIES:
        if level in levels:
            return level
    return "none"


def sort_findings(findings):
    return sorted(findings, key=lambda f: (SEVERITIES.index(f["severity"]), f["code"]))
