"""saasodoo-runbooks: list, run and chain the runbooks, with exit codes a pipeline can branch on."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from saasodoo_runbooks import __version__
from saasodoo_runbooks import api

PROG = "saasodoo-runbooks"

EXIT_CODES_HELP = """\
exit codes (run and chain):
  0   healthy      nothing found
  10  remediated   problems were found and fixed; the last step verified the platform healthy
  20  needs_human  findings remain, escalation critical or high, or remediation refused/handed over
  30  failed       a runbook failed (e.g. cannot reach the Kubernetes API); the chain stopped there
  2   usage error  unknown runbook, bad inventory path, bad -e; nothing was run
"""

EXAMPLES = """\
examples:
  saasodoo-runbooks list
  saasodoo-runbooks run platform_down --check
  saasodoo-runbooks run platform_down -i inventories/prod -e platform_down_max_restarts=1
  saasodoo-runbooks chain platform_down:check platform_down platform_down:check --json --junit report.xml
  saasodoo-runbooks chain health_check auto health_check --json   # diagnose, fix what it found, verify

The cluster comes from KUBECONFIG (or K8S_AUTH_KUBECONFIG, K8S_AUTH_CONTEXT), or from K8S_AUTH_HOST,
K8S_AUTH_API_KEY and K8S_AUTH_SSL_CA_CERT. Incident reports go to SAASODOO_REPORT_DIR (or --report-dir;
default reports/ in the project).
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-i", "--inventory", metavar="INVENTORY",
                        help="inventory path (default: the project's inventories/local)")
    common.add_argument("-e", "--extra-vars", metavar="VARS", action="append", default=[],
                        help="key=value (several separated by spaces), @file (YAML/JSON) or a JSON mapping; repeatable")
    common.add_argument("--json", action="store_true",
                        help="print a JSON summary on stdout and no progress on stderr")
    common.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (one testsuite per step)")
    common.add_argument("--report-dir", metavar="DIR",
                        help="directory of the incident reports (default $SAASODOO_REPORT_DIR, else reports/)")
    common.add_argument("--timeout", metavar="SECONDS", type=int, help="stop a runbook running longer than this")
    common.add_argument("--project-dir", metavar="DIR",
                        help="the runbook project (default $SAASODOO_RUNBOOKS_PROJECT, this package's checkout, cwd)")

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the SaaSOdoo runbooks (Ansible playbooks) through ansible-runner: one, or a chain "
                    "such as diagnose, remediate, verify. Prints progress on stderr and a summary on stdout.",
        epilog=EXIT_CODES_HELP + "\n" + EXAMPLES)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    lister = sub.add_parser("list", help="list the runbooks and their guide sections",
                            description="List the runbooks (playbooks/*.yml except deploy/teardown helpers).")
    lister.add_argument("--json", action="store_true", help="print the list as JSON")
    lister.add_argument("--project-dir", metavar="DIR", help="the runbook project")

    run = sub.add_parser("run", parents=[common], help="run one runbook",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES_HELP,
                         description="Run one runbook (diagnose and remediate; with --check diagnose only).")
    run.add_argument("runbook", metavar="RUNBOOK", help="runbook name, e.g. platform_down")
    run.add_argument("--check", action="store_true", help="check mode: diagnose and say what would be done")

    chain = sub.add_parser("chain", parents=[common], help="run runbooks in order, stop at the first failure",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXIT_CODES_HELP,
                           description="Run steps in order; a step is RUNBOOK (remediate) or RUNBOOK:check "
                                       "(diagnose only). The chain stops when a step fails. Example: "
                                       "platform_down:check platform_down platform_down:check = diagnose, "
                                       "remediate, verify. `auto` runs the runbooks the previous step's findings "
                                       "point to (at most 3, most severe first): health_check auto health_check.")
    chain.add_argument("steps", metavar="STEP", nargs="+",
                       help="RUNBOOK, RUNBOOK:check, or auto (the runbooks the previous step's findings point to)")
    return parser


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def cmd_list(args) -> int:
    try:
        books = api.list_runbooks(args.project_dir)
    except api.UsageError as exc:
        _error(str(exc))
        return api.EXIT_USAGE
    if args.json:
        print(json.dumps([b.to_dict() for b in books], indent=2))
        return 0
    width = max([len(b.name) for b in books] + [7])
    print(f"{'RUNBOOK':{width}}  GUIDE SECTION")
    for book in books:
        print(f"{book.name:{width}}  {book.guide or '-'}")
    return 0


def _human_summary(chain: api.ChainResult) -> str:
    lines = []
    width = max(len(s.label) for s in chain.planned)
    for step in chain.steps:
        lines.append(f"{step.step.label:{width}}  {step.result:11}  rc {step.rc}, {step.changed} changed, "
                     f"{step.duration:.1f}s")
        for finding in step.findings:
            lines.append(f"  found: {str(finding.get('severity', '')).upper()} {finding.get('code')} "
                         f"{finding.get('message', '')}")
        for action in (step.report or {}).get("actions") or []:
            lines.append(f"  did: {action}")
        if step.error:
            lines.append(f"  error: {step.error}")
        if step.report_files:
            lines.append(f"  report: {step.report_files['json']} (.md)")
    for step in chain.planned[len(chain.steps):]:
        lines.append(f"{step.label:{width}}  not run")
    lines.append(f"Outcome: {chain.outcome} (exit {chain.exit_code}): {chain.reason}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    try:
        project = api.find_project(args.project_dir)
        if args.command == "run":
            steps = [api.Step(api.runbook_name(args.runbook), args.check)]
        else:
            steps = [api.parse_step(s) for s in args.steps]
        api.validate_steps(steps, project)
        inventory = api.resolve_inventory(args.inventory, project)
        extravars = api.parse_extravars(args.extra_vars)
        if args.timeout is not None and args.timeout <= 0:
            raise api.UsageError("--timeout must be a positive number of seconds")
    except api.UsageError as exc:
        _error(str(exc))
        return api.EXIT_USAGE

    secrets = api.secret_values(dict(os.environ), extravars)
    progress = api.Progress(enabled=not args.json, secrets=secrets)
    try:
        chain = api.run_chain(steps, inventory=inventory, extravars=extravars, project=project, progress=progress,
                              report_dir=args.report_dir, timeout=args.timeout)
    except api.UsageError as exc:
        _error(str(exc))
        return api.EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:  # ansible-runner could not start ansible-playbook at all
        _error(api.redact(f"the runbook could not be started: {type(exc).__name__}: {exc}", secrets))
        return api.EXIT_FAILED

    for step in chain.steps:
        if step.error:
            _error(f"{step.step.label}: {step.error}")
    if args.junit:
        path = Path(args.junit)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(api.junit_xml(chain, secrets), encoding="utf-8")
    summary = api.redact(dict(chain.to_dict(), tool=PROG, version=__version__), secrets)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=False, default=str))
    else:
        print(api.redact(_human_summary(chain), secrets))
    return chain.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if args.command == "list":
        return cmd_list(args)
    return cmd_run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
