"""List, run and chain the SaaSOdoo runbooks through ansible-runner.

The pure parts (runbook discovery, step and extra-vars parsing, the result of a step and the
outcome of a chain, the JUnit rendering, redaction) are plain functions, unit-tested without a
cluster (tests/unit/test_cli.py). ``run_runbook`` and ``run_chain`` start ``ansible-playbook``
through ansible-runner with the project's ansible.cfg, so the incident report callback
(plugins/callback/saasodoo_report.py) writes its JSON and Markdown reports as on any other run.

Outcome of a run or a chain, and the exit code a pipeline branches on:

    healthy       0   nothing found
    remediated   10   problems were found and the last step verified the platform healthy
    needs_human  20   findings remain, escalation critical/high, or remediation refused/handed over
    failed       30   a runbook failed (includes a cluster that cannot be reached)
    usage         2   unknown runbook, bad inventory path, bad -e (nothing was run)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import yaml

# The redaction lives in plugins/module_utils/saasodoo_redact.py, shared with the incident report callback,
# the filters and the modules. This package runs the playbooks of its own checkout (pyproject.toml), so the
# file is loaded by path from there, as the filter plugins load their module_utils.
_REDACT_PATH = Path(__file__).resolve().parent.parent / "plugins" / "module_utils" / "saasodoo_redact.py"
_spec = importlib.util.spec_from_file_location("saasodoo_redact", _REDACT_PATH)
redaction = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(redaction)

EXIT_HEALTHY = 0
EXIT_REMEDIATED = 10
EXIT_NEEDS_HUMAN = 20
EXIT_FAILED = 30
EXIT_USAGE = 2
EXIT_CODES = {"healthy": EXIT_HEALTHY, "remediated": EXIT_REMEDIATED,
              "needs_human": EXIT_NEEDS_HUMAN, "failed": EXIT_FAILED}

# Playbooks that are not runbooks: they build and remove the sample platform on the test bed.
HELPER_PREFIXES = ("deploy_", "teardown_")
GUIDE_HEADER = re.compile(r"^#\s*Guide:\s*(.+?)\s*$")
REPORT_LINE = re.compile(r"Incident report: (\S+\.json), (\S+\.md)")
ESCALATE_LEVELS = ("critical", "high")

# Failure messages that mean "the API server could not be reached", as kubernetes.core, urllib3 and
# the project's modules word them; the most telling reason first.
UNREACHABLE_REASONS = (
    ("connection refused", re.compile(r"connection refused", re.I)),
    ("name not resolved", re.compile(r"name or service not known|nodename nor servname|temporary failure in name "
                                     r"resolution|no address associated|getaddrinfo failed", re.I)),
    ("no route to host", re.compile(r"no route to host|network is unreachable", re.I)),
    ("connection timed out", re.compile(r"connect timeout|connecttimeout|connection timed out", re.I)),
    ("connection reset", re.compile(r"connection reset|connection aborted|remote end closed", re.I)),
    ("no connection", re.compile(r"failed to establish a new connection|max retries exceeded|cannot reach"
                                 r"|could not reach", re.I)),
)
UNTRUSTED = re.compile(r"certificate verify failed|certificate_verify_failed", re.I)
UNAUTHORIZED = re.compile(r"\(401\)|\b401 unauthorized|\bunauthorized\b", re.I)
FORBIDDEN = re.compile(r"\(403\)|\b403 forbidden|\bforbidden\b", re.I)
NO_CREDENTIALS = re.compile(r"invalid kube-config|no configuration found|no kubernetes credentials"
                            r"|service host/port is not set", re.I)

# Same rule as the incident report callback (the same code): names that hold secrets, and names that only
# refer to one.
SECRET_NAME = redaction.SECRET_NAME
NOT_SECRET_NAME = redaction.NOT_SECRET_NAME
MASK = redaction.MASK


class UsageError(Exception):
    """Bad input: unknown runbook, missing inventory, malformed -e. Nothing was run (exit 2)."""


# ---------------------------------------------------------------------------------------------
# The project and its runbooks
# ---------------------------------------------------------------------------------------------

def _is_project(path: Path) -> bool:
    return (path / "ansible.cfg").is_file() and (path / "playbooks").is_dir()


def find_project(explicit: str | os.PathLike | None = None) -> Path:
    """The runbook project: --project-dir, $SAASODOO_RUNBOOKS_PROJECT, this package's parent, or the cwd."""
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not _is_project(path):
            raise UsageError(f"not a runbook project (no ansible.cfg and playbooks/): {explicit}")
        return path
    candidates = [os.environ.get("SAASODOO_RUNBOOKS_PROJECT"), Path(__file__).resolve().parent.parent, Path.cwd()]
    for candidate in candidates:
        if candidate and _is_project(Path(candidate)):
            return Path(candidate).resolve()
    raise UsageError("cannot find the runbook project (ansible.cfg and playbooks/): "
                     "use --project-dir or set SAASODOO_RUNBOOKS_PROJECT")


@dataclass(frozen=True)
class Runbook:
    name: str
    path: Path
    guide: str
    title: str

    def to_dict(self) -> dict:
        return {"name": self.name, "playbook": f"playbooks/{self.path.name}", "guide": self.guide, "title": self.title}


def describe_playbook(path: Path) -> tuple[str, str]:
    """(guide section, play name) of a playbook: the `# Guide: ...` header, else the play's guide_* tag."""
    text = path.read_text(encoding="utf-8")
    guide = ""
    for line in text.splitlines():
        if not line.startswith("#") and line.strip() not in ("", "---"):
            break
        match = GUIDE_HEADER.match(line)
        if match:
            guide = match.group(1).rstrip(".")
            break
    title = ""
    try:
        plays = yaml.safe_load(text) or []
    except yaml.YAMLError:
        plays = []
    if isinstance(plays, list) and plays and isinstance(plays[0], dict):
        title = str(plays[0].get("name") or "")
        if not guide:
            tags = plays[0].get("tags") or []
            tags = [tags] if isinstance(tags, str) else tags
            tag = next((t for t in tags if str(t).startswith("guide_")), None)
            if tag:
                guide = str(tag)[len("guide_"):].replace("_", " ").title()
    return guide, title


def list_runbooks(project: str | os.PathLike | None = None) -> list[Runbook]:
    """The runbooks: playbooks/*.yml except the deploy_/teardown_ helpers, sorted by name."""
    root = find_project(project)
    books = []
    for path in sorted((root / "playbooks").glob("*.yml")):
        if path.stem.startswith(HELPER_PREFIXES):
            continue
        guide, title = describe_playbook(path)
        books.append(Runbook(path.stem, path, guide, title))
    return books


def runbook_name(text: str) -> str:
    """platform_down, platform_down.yml and playbooks/platform_down.yml all name platform_down."""
    name = text.strip()
    if name.startswith("playbooks/"):
        name = name[len("playbooks/"):]
    for suffix in (".yml", ".yaml"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def resolve_runbook(name: str, project: str | os.PathLike | None = None) -> Runbook:
    books = list_runbooks(project)
    wanted = runbook_name(name)
    for book in books:
        if book.name == wanted:
            return book
    known = ", ".join(b.name for b in books) or "none"
    raise UsageError(f"unknown runbook {name!r}; known runbooks: {known}")


@dataclass(frozen=True)
class Step:
    runbook: str
    check: bool = False

    @property
    def label(self) -> str:
        return f"{self.runbook}:check" if self.check else self.runbook


AUTO = "auto"
AUTO_MAX_RUNBOOKS = 3


def parse_step(text: str) -> Step:
    """RUNBOOK (run, remediating), RUNBOOK:check (diagnose only, --check), or `auto`.

    `auto` (or `auto:check`) stands for the runbooks the previous step's findings point to (each
    finding's `runbook`, e.g. from health_check), most severe first, at most AUTO_MAX_RUNBOOKS.
    """
    name, sep, mode = text.partition(":")
    if not name.strip() or (sep and mode != "check"):
        raise UsageError(f"bad step {text!r}: use RUNBOOK, RUNBOOK:check or auto")
    return Step(runbook_name(name), check=bool(sep))


SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}


def runbooks_pointed_to(report: dict | None, known: set[str], limit: int = AUTO_MAX_RUNBOOKS) -> list[str]:
    """The runbooks a report's remaining findings name (their `runbook` key), most severe first, known ones only."""
    findings = sorted(remaining_findings(report), key=lambda f: SEVERITY_RANK.get(str(f.get("severity")), 9))
    picked: list[str] = []
    for finding in findings:
        name = runbook_name(str(finding.get("runbook") or ""))
        if name and name in known and name not in picked:
            picked.append(name)
    return picked[:limit]


# ---------------------------------------------------------------------------------------------
# Input: inventory and extra vars
# ---------------------------------------------------------------------------------------------

def resolve_inventory(inventory: str | None, project: Path) -> str:
    """An inventory path (absolute), or a comma-separated host list as given. UsageError when missing."""
    if not inventory:
        return str(project / "inventories" / "local")
    if "," in inventory and not os.path.exists(inventory):
        return inventory  # `host1,host2,` like ansible-playbook -i
    path = Path(inventory).expanduser()
    if not path.exists():
        raise UsageError(f"inventory not found: {inventory}")
    return str(path.resolve())


def parse_extravars(values: Iterable[str] | None, base_dir: str | os.PathLike | None = None) -> dict:
    """-e values, in order: key=value pairs (strings, as ansible-playbook), @file (YAML/JSON), or a mapping."""
    result: dict = {}
    for value in values or []:
        text = value.strip()
        if text.startswith("@"):
            path = Path(base_dir or os.getcwd()) / Path(text[1:]).expanduser()
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise UsageError(f"cannot read extra vars file {text[1:]}: {exc.strerror}") from None
            except yaml.YAMLError as exc:
                raise UsageError(f"extra vars file {text[1:]} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
            if data is None:
                continue
            if not isinstance(data, dict):
                raise UsageError(f"extra vars file {text[1:]} must hold a mapping of variables")
            result.update(data)
        elif text.startswith("{"):
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                data = None
            if not isinstance(data, dict):
                raise UsageError(f"bad -e {value!r}: not a valid JSON/YAML mapping")
            result.update(data)
        else:
            try:
                pairs = shlex.split(text)
            except ValueError as exc:
                raise UsageError(f"bad -e {value!r}: {exc}") from None
            if not pairs:
                raise UsageError("bad -e '': expected key=value, @file or a JSON/YAML mapping")
            for pair in pairs:
                key, sep, val = pair.partition("=")
                if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                    raise UsageError(f"bad -e {value!r}: expected key=value, @file or a JSON/YAML mapping")
                result[key] = val
    return result


# ---------------------------------------------------------------------------------------------
# Redaction: what the CLI prints and writes never carries a secret
# ---------------------------------------------------------------------------------------------

is_secret_name = redaction.is_secret_name


def secret_values(*mappings: dict | None) -> set[str]:
    """Values (4+ characters) held under secret-looking names, at any depth of the mappings."""
    found: set[str] = set()
    for mapping in mappings:
        found |= redaction.secret_values(mapping or {}, depth=50)
    return found


def redact(data, secrets: set[str] | None = None):
    """data (str, dict, list) with the secrets out: known values in any form, credentials by their shape,
    values under secret-looking keys."""
    return redaction.redact(data, secrets or ())


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

def _finding_key(finding: dict) -> tuple:
    return (finding.get("code"), finding.get("ref") or finding.get("component") or finding.get("message"))


def remaining_findings(report: dict | None) -> list[dict]:
    """The findings left after the run: the report's `remaining`, else all of them unless it verified healthy."""
    if not isinstance(report, dict):
        return []
    findings = list(report.get("findings") or [])
    if "remaining" in report:
        return list(report.get("remaining") or [])
    if report.get("check_mode") or not report.get("actions") or not report.get("healthy_after"):
        return findings
    return []


def step_result(report: dict | None, rc: int, status: str = "successful") -> str:
    """healthy, remediated, needs_human or failed, from the runbook's published report and the run."""
    if rc != 0 or status != "successful":
        return "failed"
    if not isinstance(report, dict):
        return "needs_human"  # a runbook that says nothing cannot be trusted to be healthy
    findings = report.get("findings") or []
    actions = report.get("actions") or []
    level = str((report.get("escalation") or {}).get("level") or "none").lower()
    if remaining_findings(report) or report.get("handed_over") or level in ESCALATE_LEVELS:
        return "needs_human"
    if report.get("healthy_after") is False:
        return "needs_human"
    if report.get("check_mode") and actions:
        return "needs_human"  # it would act: something is wrong
    if findings:
        return "remediated"
    return "healthy"


def needs_human_reason(report: dict | None) -> str:
    if not isinstance(report, dict):
        return "the runbook published no report"
    parts = []
    esc = report.get("escalation") or {}
    if esc.get("level") and esc.get("level") != "none":
        when = f" ({esc['when']})" if esc.get("when") else ""
        parts.append(f"escalation {esc['level']}{when}: {esc.get('why') or ''}".rstrip(": "))
    left = remaining_findings(report)
    if left:
        shown = "; ".join(f"{f.get('severity', '?').upper()} {f.get('code', '?')} {f.get('message', '')}".strip()
                          for f in left[:3])
        more = f"; and {len(left) - 3} more" if len(left) > 3 else ""
        parts.append(f"{len(left)} finding(s) remain: {shown}{more}")
    for handed in report.get("handed_over") or []:
        parts.append(f"handed over: {handed}")
    if report.get("check_mode") and not left and report.get("actions"):
        parts.append("check mode: it would " + "; ".join(report["actions"]))
    return "; ".join(parts) or "the runbook did not verify the platform healthy"


@dataclass
class StepResult:
    step: Step
    rc: int
    status: str
    result: str
    changed: int = 0
    report: dict | None = None
    report_files: dict | None = None
    duration: float = 0.0
    started: str = ""
    error: str | None = None
    failures: list[dict] = field(default_factory=list)

    @property
    def findings(self) -> list[dict]:
        return list((self.report or {}).get("findings") or [])

    def to_dict(self) -> dict:
        return {"runbook": self.step.runbook, "step": self.step.label, "check": self.step.check, "rc": self.rc,
                "status": self.status, "result": self.result, "changed": self.changed, "report": self.report,
                "report_files": self.report_files, "started": self.started,
                "duration_seconds": round(self.duration, 1), "error": self.error}


@dataclass
class ChainResult:
    steps: list[StepResult]
    planned: list[Step]
    outcome: str
    exit_code: int
    reason: str
    started: str = ""
    duration: float = 0.0

    def to_dict(self) -> dict:
        ran = len(self.steps)
        return {"outcome": self.outcome, "exit_code": self.exit_code, "reason": self.reason,
                "started": self.started, "duration_seconds": round(self.duration, 1),
                "steps": [s.to_dict() for s in self.steps],
                "not_run": [s.label for s in self.planned[ran:]]}


def chain_outcome(steps: list[StepResult]) -> tuple[str, int, str]:
    """(outcome, exit code, reason) of a chain from its steps' results (the chain stops at a failure)."""
    if not steps:
        return "failed", EXIT_FAILED, "no step ran"
    for index, step in enumerate(steps, 1):
        if step.result == "failed":
            return "failed", EXIT_FAILED, f"step {index} ({step.step.label}) failed: {step.error or 'see the output'}"
    last = steps[-1]
    if last.result == "needs_human":
        return "needs_human", EXIT_NEEDS_HUMAN, f"{last.step.label}: {needs_human_reason(last.report)}"
    found = [s for s in steps if s.findings]
    if found:
        acted = [a for s in steps if not s.step.check for a in ((s.report or {}).get("actions") or [])]
        first = found[0]
        what = "; ".join(f"{f.get('code')} {f.get('component') or f.get('ref') or ''}".strip()
                         for f in first.findings[:3])
        how = ("did: " + "; ".join(acted[:3])) if acted else "gone without an action by these runbooks"
        return ("remediated", EXIT_REMEDIATED,
                f"found {what} ({first.step.label}); {how}; {last.step.label} verified healthy")
    return "healthy", EXIT_HEALTHY, "nothing found"


# ---------------------------------------------------------------------------------------------
# Failures as a tired engineer needs them
# ---------------------------------------------------------------------------------------------

def api_server(env: dict | None = None) -> str:
    """The API server the runbooks talk to: K8S_AUTH_HOST, else the kubeconfig's current cluster."""
    env = dict(os.environ if env is None else env)
    if env.get("K8S_AUTH_HOST"):
        return env["K8S_AUTH_HOST"]
    path = env.get("K8S_AUTH_KUBECONFIG") or (env.get("KUBECONFIG") or "").split(os.pathsep)[0]
    if not path and env.get("HOME"):
        path = os.path.join(env["HOME"], ".kube", "config")
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        context_name = env.get("K8S_AUTH_CONTEXT") or config.get("current-context")
        context = next(c["context"] for c in config.get("contexts") or [] if c.get("name") == context_name)
        cluster = next(c["cluster"] for c in config.get("clusters") or [] if c.get("name") == context.get("cluster"))
        return cluster.get("server") or "the configured cluster"
    except (OSError, StopIteration, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return "the configured cluster"


def explain_failure(messages: list[str], env: dict | None = None) -> str | None:
    """A one-line cause for the usual failures (API unreachable or untrusted, credentials refused or missing)."""
    text = " ".join(messages)
    if NO_CREDENTIALS.search(text):
        return ("no Kubernetes credentials: set KUBECONFIG (or K8S_AUTH_KUBECONFIG), or K8S_AUTH_HOST with "
                "K8S_AUTH_API_KEY")
    if UNTRUSTED.search(text):
        return (f"cannot verify the TLS certificate of the Kubernetes API at {api_server(env)}: "
                "check K8S_AUTH_SSL_CA_CERT or the kubeconfig's certificate-authority")
    for reason, pattern in UNREACHABLE_REASONS:
        if pattern.search(text):
            return f"cannot reach the Kubernetes API at {api_server(env)} ({reason})"
    if UNAUTHORIZED.search(text):
        return f"the Kubernetes API at {api_server(env)} refused the credentials (401 Unauthorized)"
    if FORBIDDEN.search(text):
        return f"the Kubernetes API at {api_server(env)} forbids what the runbook needs (403 Forbidden): check RBAC"
    return None


def _one_line(text, limit: int = 400, secrets: set[str] | None = None) -> str:
    """text on one line, at most `limit` characters; redacted whole first, before spaces are squeezed or it is cut."""
    text = " ".join(redaction.redact_text(str(text or ""), secrets or ()).split())
    return redaction.cut(text, limit)


def failure_message(failures: list[dict], stdout: str, rc: int, status: str, env: dict | None = None,
                    secrets: set[str] | None = None) -> str:
    messages = [f.get("msg") or "" for f in failures]
    if not failures:
        errors = [line for line in stdout.splitlines() if re.match(r"\s*(\[ERROR\]|ERROR!)", line)]
        messages = [re.sub(r"^\s*(\[ERROR\]:?|ERROR!)\s*", "", line) for line in errors[-3:]]
    cause = explain_failure(messages, env)
    first = failures[0] if failures else None
    where = f" (task: {first['task']})" if first and first.get("task") else ""
    if cause:
        return cause + where
    if status == "timeout":
        return "the run timed out"
    if messages and any(messages):
        return _one_line(next(m for m in messages if m), secrets=secrets) + where
    return f"ansible-playbook exited with rc {rc} ({status})"


# ---------------------------------------------------------------------------------------------
# Progress on stderr
# ---------------------------------------------------------------------------------------------

class Progress:
    """Current task and elapsed seconds: one updating line on a TTY, plain lines otherwise, or nothing."""

    def __init__(self, stream=None, enabled: bool = True, tty: bool | None = None, secrets: set[str] | None = None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty() if tty is None else tty
        self.secrets = secrets or set()
        self._lock = threading.Lock()
        self._label = ""
        self._task = ""
        self._t0 = 0.0
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def _write(self, text: str, newline: bool) -> None:
        text = redact(text, self.secrets)
        with self._lock:
            if self.tty:
                width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
                self.stream.write("\r\033[K" + text[:width] + ("\n" if newline else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def _line(self) -> str:
        return f"[{self._label} {time.monotonic() - self._t0:5.1f}s] {self._task}"

    def start(self, label: str) -> None:
        self._label, self._task, self._t0 = label, "starting", time.monotonic()
        if not self.enabled:
            return
        if self.tty:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        else:
            self._write(f"[{label}] starting", True)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._write(self._line(), False)

    def task(self, name: str) -> None:
        self._task = name or "?"
        if self.enabled:
            self._write(self._line(), not self.tty)

    def note(self, text: str) -> None:
        """A line of its own between steps (e.g. what `auto` chose)."""
        if self.enabled:
            self._write(text, True)

    def finish(self, text: str) -> None:
        if not self.enabled:
            return
        if self._ticker:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
        self._write(f"[{self._label} {time.monotonic() - self._t0:5.1f}s] {text}", True)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def runner_env(project: Path, envvars: dict | None = None, report_dir: str | None = None) -> dict:
    """Environment for ansible-playbook: the project's ansible.cfg and the report callback, whatever runner sets."""
    env = {
        "ANSIBLE_CONFIG": str(project / "ansible.cfg"),
        # ansible-runner replaces callback_plugins from ansible.cfg with its own directory; it keeps
        # (and appends to) what ANSIBLE_CALLBACK_PLUGINS already holds, so the report callback loads
        # for any playbook path, not only next to playbooks/callback_plugins.
        "ANSIBLE_CALLBACK_PLUGINS": os.pathsep.join(
            p for p in (os.environ.get("ANSIBLE_CALLBACK_PLUGINS"), str(project / "plugins" / "callback")) if p),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    # ansible-runner starts `ansible-playbook` from PATH: prefer the one next to this interpreter.
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if (Path(bindir) / "ansible-playbook").exists() and bindir not in path.split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + path
    # The playbook runs in the project directory: a relative report dir is the caller's, not the project's.
    chosen = report_dir or (envvars or {}).get("SAASODOO_REPORT_DIR") or os.environ.get("SAASODOO_REPORT_DIR")
    if chosen:
        env["SAASODOO_REPORT_DIR"] = str(Path(chosen).expanduser().resolve())
    for key, value in (envvars or {}).items():
        if key != "SAASODOO_REPORT_DIR":
            env[key] = str(value)
    return env


def find_report(artifacts: dict | None, runbook: str) -> dict | None:
    """The runbook's *_report from the set_stats artifacts (platform_down_report for platform_down)."""
    artifacts = artifacts or {}
    preferred = f"{runbook}_report"
    if isinstance(artifacts.get(preferred), dict):
        return artifacts[preferred]
    for key in sorted(artifacts):
        if str(key).endswith("_report") and isinstance(artifacts[key], dict):
            return artifacts[key]
    return None


def parse_report_files(stdout: str, base: Path) -> dict | None:
    matches = REPORT_LINE.findall(stdout or "")
    if not matches:
        return None
    json_path, md_path = matches[-1]
    return {"json": str((base / json_path).resolve()), "md": str((base / md_path).resolve())}


def run_runbook(runbook: str | Step, *, check: bool = False, inventory: str | None = None,
                extravars: dict | None = None, envvars: dict | None = None,
                project: str | os.PathLike | None = None, progress: Progress | None = None,
                report_dir: str | None = None, timeout: int | None = None,
                secrets: set[str] | None = None) -> StepResult:
    """Run one runbook through ansible-runner and return what happened (never raises for a failed run)."""
    import ansible_runner  # late: list and the unit tests do not need it

    step = runbook if isinstance(runbook, Step) else Step(runbook_name(runbook), check)
    root = find_project(project)
    book = resolve_runbook(step.runbook, root)
    inv = resolve_inventory(inventory, root)
    env = runner_env(root, envvars, report_dir)
    merged_env = dict(os.environ, **env)
    secrets = set(secrets or ()) | secret_values(merged_env, extravars)
    progress = progress or Progress(enabled=False)
    failures: list[dict] = []
    stats: dict = {}

    def on_event(event: dict) -> bool:
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind in ("playbook_on_task_start", "playbook_on_handler_task_start"):
            progress.task(str(data.get("task") or "").strip())
        elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            res = data.get("res") or {}
            failures.append({"task": str(data.get("task") or "").strip(), "host": data.get("host"),
                             "msg": _one_line(res.get("msg") or res.get("stderr") or res.get("reason") or kind, 2000,
                                              secrets)})
        elif kind == "playbook_on_stats":
            stats["artifacts"] = data.get("artifact_data") or {}
            stats["changed"] = sum((data.get("changed") or {}).values())
        return True  # keep the event

    started, t0 = _utc_now(), time.monotonic()
    progress.start(step.label)
    with tempfile.TemporaryDirectory(prefix="saasodoo-runner-") as private:
        try:
            runner = ansible_runner.run(
                private_data_dir=private,
                project_dir=str(root),
                playbook=str(book.path),
                inventory=inv,
                extravars=extravars or {},
                envvars=env,
                cmdline="--check" if step.check else None,
                quiet=True,
                event_handler=on_event,
                timeout=timeout,
            )
        except BaseException:
            progress.finish("could not run")
            raise
        stdout = runner.stdout.read() if runner.stdout else ""
        rc, status = runner.rc, runner.status
    duration = time.monotonic() - t0
    report = find_report(stats.get("artifacts"), book.name)
    result = step_result(report, rc, status)
    error = failure_message(failures, stdout, rc, status, merged_env, secrets) if result == "failed" else None
    out = StepResult(step=step, rc=rc, status=status, result=result, changed=stats.get("changed", 0),
                     report=redact(report, secrets), report_files=parse_report_files(stdout, root),
                     duration=duration, started=started, error=redact(error, secrets),
                     failures=redact(failures, secrets))
    progress.finish(f"{result} (rc {rc}, {out.changed} changed)" + (f": {out.error}" if out.error else ""))
    return out


def validate_steps(steps: list[Step], project: str | os.PathLike | None = None) -> None:
    """Every step names a known runbook (UsageError listing the known ones otherwise)."""
    if not steps:
        raise UsageError("no step given")
    if steps[0].runbook == AUTO:
        raise UsageError("`auto` runs what the previous step found: it cannot be the first step")
    for step in steps:
        if step.runbook != AUTO:
            resolve_runbook(step.runbook, project)


def run_chain(steps: list[Step | str], *, inventory: str | None = None, extravars: dict | None = None,
              envvars: dict | None = None, project: str | os.PathLike | None = None,
              progress: Progress | None = None, report_dir: str | None = None,
              timeout: int | None = None, on_step: Callable[[StepResult], None] | None = None) -> ChainResult:
    """Run the steps in order; stop at the first failed step. UsageError before anything runs."""
    planned = [s if isinstance(s, Step) else parse_step(s) for s in steps]
    root = find_project(project)
    validate_steps(planned, root)
    inv = resolve_inventory(inventory, root)
    started, t0 = _utc_now(), time.monotonic()
    results: list[StepResult] = []
    known = {b.name for b in list_runbooks(root)}
    ran: list[Step] = []
    failed = False
    for index, step in enumerate(planned):
        if step.runbook == AUTO:
            chosen = runbooks_pointed_to(results[-1].report if results else None, known)
            if progress:
                progress.note(f"auto: {', '.join(chosen) if chosen else 'nothing to remediate'}"
                              f" (from {results[-1].step.label})")
            expanded = [Step(name, check=step.check) for name in chosen]
        else:
            expanded = [step]
        for real in expanded:
            result = run_runbook(real, inventory=inv, extravars=extravars, envvars=envvars, project=root,
                                 progress=progress, report_dir=report_dir, timeout=timeout)
            results.append(result)
            ran.append(real)
            if on_step:
                on_step(result)
            if result.result == "failed":
                failed = True
                break
        if failed:
            ran.extend(planned[index + 1:])
            break
    outcome, code, reason = chain_outcome(results)
    return ChainResult(results, ran, outcome, code, reason, started, time.monotonic() - t0)


# ---------------------------------------------------------------------------------------------
# JUnit XML for a pipeline's test report
# ---------------------------------------------------------------------------------------------

def _finding_text(finding: dict) -> str:
    lines = [f"{str(finding.get('severity', '')).upper()} {finding.get('code', '')}: {finding.get('message', '')}"]
    evidence = finding.get("evidence")
    if isinstance(evidence, dict):
        lines += [f"  evidence: {k}: {v}" for k, v in evidence.items()]
    elif isinstance(evidence, (list, tuple)):
        lines += [f"  evidence: {e}" for e in evidence]
    if finding.get("remediation"):
        lines.append(f"  remediation: {finding['remediation']}")
    return "\n".join(lines)


def junit_xml(chain: ChainResult, secrets: set[str] | None = None) -> str:
    """One testsuite per step; one testcase per finding (a failure while it remains) and one for the verification."""
    suites = ET.Element("testsuites", name="saasodoo-runbooks")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for index, step in enumerate(chain.steps, 1):
        mode = "diagnose (check mode)" if step.step.check else "run"
        suite = ET.SubElement(suites, "testsuite", name=f"{index} {step.step.label}", timestamp=step.started,
                              time=f"{step.duration:.1f}")
        props = ET.SubElement(suite, "properties")
        for name, value in (("runbook", step.step.runbook), ("mode", mode), ("result", step.result),
                            ("rc", str(step.rc)), ("changed", str(step.changed)),
                            ("report_json", (step.report_files or {}).get("json", "")),
                            ("report_md", (step.report_files or {}).get("md", ""))):
            ET.SubElement(props, "property", name=name, value=value)
        counts = {"tests": 0, "failures": 0, "errors": 0}
        left = {_finding_key(f) for f in remaining_findings(step.report)}
        for finding in step.findings:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=f"{step.step.runbook}.findings",
                                 name=f"{finding.get('code')} {finding.get('component') or finding.get('ref') or ''}".strip())
            if _finding_key(finding) in left:
                counts["failures"] += 1
                why = "check mode: not fixed in this step" if step.step.check else "still there after the run"
                failure = ET.SubElement(case, "failure", type=str(finding.get("severity") or "finding"),
                                        message=f"{finding.get('message', '')} ({why})")
                failure.text = _finding_text(finding)
            else:
                out = ET.SubElement(case, "system-out")
                out.text = "fixed: " + _finding_text(finding)
        counts["tests"] += 1
        name = "verification: healthy" if not step.step.check else "diagnosis: healthy"
        case = ET.SubElement(suite, "testcase", classname=step.step.runbook, name=name, time=f"{step.duration:.1f}")
        if step.result == "failed":
            counts["errors"] += 1
            error = ET.SubElement(case, "error", type="failed", message=step.error or "the runbook failed")
            error.text = "\n".join(f"{f.get('task')}: {f.get('msg')}" for f in step.failures) or (step.error or "")
        elif step.result == "needs_human":
            counts["failures"] += 1
            failure = ET.SubElement(case, "failure", type="needs_human", message=needs_human_reason(step.report))
            failure.text = needs_human_reason(step.report)
        else:
            out = ET.SubElement(case, "system-out")
            out.text = f"{step.result}; actions: {'; '.join((step.report or {}).get('actions') or []) or 'none'}"
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("skipped", "0")
    for key, value in totals.items():
        suites.set(key, str(value))
    suites.set("time", f"{chain.duration:.1f}")
    ET.indent(suites)
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    return redact(text, secrets or set())
