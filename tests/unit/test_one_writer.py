"""One writer per platform: every change a runbook makes is made under the platform's Lease.

Read from the playbooks themselves (no cluster). A task that changes something is named ``PATCH | ...``
(STYLE.md); so is a task that includes a task file or a role holding such tasks, whatever its name.
Each of them must sit in the ``block:`` of a block that first takes the lease (include_role
runbook_lease) and gives it back in its ``always:`` (tasks_from release), with a ``when`` on
``runbook_lease_result.blocked`` between the lease and the change (another live run holds it: change
nothing). The lease block itself has a ``when``: it is taken only when the run is going to act.
Every playbook with such tasks takes the lease. The list of playbooks comes from the files.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "playbooks"
ROLES = ROOT / "roles"
LEASE_ROLE = "runbook_lease"
INCLUDE_ROLE = {"ansible.builtin.include_role", "ansible.builtin.import_role", "include_role", "import_role"}
INCLUDE_TASKS = {"ansible.builtin.include_tasks", "ansible.builtin.import_tasks", "include_tasks", "import_tasks"}

# collect_logs.yml writes its log bundle on the controller and only reads the platform: its PATCH tasks
# are these local file modules (checked below), so it does not take the platform's lease.
LOCAL_ONLY = {"collect_logs.yml": {"ansible.builtin.file", "ansible.builtin.copy", "community.general.archive"}}
# Not runbooks: the test bed's own deploy and teardown of the sample platform (the platform the runbooks
# act on; Makefile `platform`, tests/integration/conftest.py). They change it wholesale, on purpose.
TESTBED = {"deploy_platform.yml", "teardown_platform.yml"}


def load(path: Path):
    return yaml.safe_load(path.read_text()) or []


def is_patch(task: dict) -> bool:
    return str(task.get("name", "")).startswith("PATCH |")


def role_call(task: dict):
    for key in INCLUDE_ROLE:
        if key in task:
            args = task[key] or {}
            return args.get("name"), args.get("tasks_from", "main")
    return None, None


def is_take(task: dict) -> bool:
    return role_call(task) in ((LEASE_ROLE, "main"), (LEASE_ROLE, "main.yml"))


def is_release(task: dict) -> bool:
    return role_call(task) in ((LEASE_ROLE, "release"), (LEASE_ROLE, "release.yml"))


def is_lease_block(task: dict) -> bool:
    return (isinstance(task.get("block"), list) and bool(task["block"]) and is_take(task["block"][0])
            and any(is_release(t) for t in task.get("always") or []))


def include_target(task: dict):
    for key in INCLUDE_TASKS:
        if key in task:
            return task[key] if isinstance(task[key], str) else (task[key] or {}).get("file", "")
    return None


@functools.lru_cache(maxsize=None)
def file_changes(path: Path, base: Path) -> bool:
    """Does this task file hold a PATCH task, or include a task file or a role that does?

    ``base``: where its include_tasks are resolved (playbooks/, or the role's tasks/). A templated
    file name (``{{ mode }}.yml``) stands for every file it can name."""
    for task, _ in walk(load(path)):
        if changes(task, base):
            return True
    return False


def role_changes(name: str, tasks_from: str) -> bool:
    if name == LEASE_ROLE:
        return False
    tasks = ROLES / name / "tasks"
    entry = tasks / (tasks_from if tasks_from.endswith(".yml") else tasks_from + ".yml")
    return file_changes(entry, tasks)


def changes(task: dict, base: Path = PLAYBOOKS) -> bool:
    """Does this task change the platform (or run something that does)? A block counts through its tasks."""
    if is_lease_block(task) or is_take(task) or is_release(task) or "block" in task:
        return False
    if is_patch(task):
        return True
    name, tasks_from = role_call(task)
    if name:
        return role_changes(name, str(tasks_from))
    target = include_target(task)
    if target:
        pattern = re.sub(r"{{.*?}}", "*", target)
        return any(file_changes(f, base) for f in sorted(base.glob(pattern)))
    return False


def walk(tasks, ancestors=()):
    """Yield (task, ancestors) for every task and block; ancestors are (block, section) pairs, outermost first."""
    for task in tasks or []:
        if not isinstance(task, dict):
            continue
        yield task, ancestors
        for section in ("block", "rescue", "always"):
            if isinstance(task.get(section), list):
                yield from walk(task[section], ancestors + ((task, section),))


def play_tasks(play: dict):
    for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
        yield from walk(play.get(section))


def problems(path: Path) -> tuple[list[str], bool, bool]:
    """(what is not under the lease, whether the playbook changes anything, whether it takes the lease)."""
    found, acts, takes = [], False, False
    for play in load(path):
        for role in play.get("roles") or []:
            name = role if isinstance(role, str) else role.get("role", role.get("name"))
            if role_changes(name, "main"):
                acts = True
                found.append(f"play {play.get('name')!r}: role {name} changes the platform outside any lease block")
        for task, ancestors in play_tasks(play):
            if is_lease_block(task):
                takes = True
                if not task.get("when"):
                    found.append(f"{task.get('name')!r}: the lease is taken on every run (no `when`)")
                continue
            if is_take(task) or is_release(task):
                parent, section = ancestors[-1] if ancestors else (None, None)
                ok = parent is not None and is_lease_block(parent) and (
                    (is_take(task) and section == "block" and parent["block"][0] is task)
                    or (is_release(task) and section == "always"))
                if not ok:
                    found.append(f"{task.get('name')!r}: runbook_lease taken or given back outside a lease block")
                continue
            if not changes(task):
                continue
            acts = True
            lease = [i for i, (block, section) in enumerate(ancestors) if is_lease_block(block)]
            if not lease:
                found.append(f"{task.get('name')!r}: not inside a block that takes the one-writer lease")
                continue
            inner = ancestors[lease[-1]:]
            if any(section != "block" for _, section in inner):
                found.append(f"{task.get('name')!r}: in the rescue/always of the lease block (runs without the lease)")
            guards = [b.get("when") for b, _ in inner[1:]] + [task.get("when")]
            if "runbook_lease_result.blocked" not in yaml.safe_dump(guards):
                found.append(f"{task.get('name')!r}: runs even when another run holds the lease "
                             f"(no `when: not runbook_lease_result.blocked`)")
    return found, acts, takes


RUNBOOKS = sorted(p.name for p in PLAYBOOKS.glob("*.yml"))


def test_the_checks_see_the_changes():
    # A parser that found nothing would make every test here pass.
    assert all(role_changes(r, "main") for r in ("restart_service", "scale_backend", "restore_backup", "provision_tenant"))
    assert role_changes("restore_backup", "backup") and not role_changes("restore_backup", "inspect")
    assert not role_changes("platform_diagnose", "main") and not role_changes(LEASE_ROLE, "main")
    acting = [p for p in RUNBOOKS if problems(PLAYBOOKS / p)[1]]
    assert {"platform_down.yml", "data_loss.yml", "backend_crashloop.yml", "tenant_provisioning.yml",
            "db_performance.yml"} <= set(acting), acting
    assert problems(PLAYBOOKS / "deploy_platform.yml")[1]     # the test bed's deploy does change the platform
    broken = [{"name": "PATCH | Restart", "ansible.builtin.include_role": {"name": "restart_service"}}]
    assert not is_lease_block({"block": broken, "always": []})


def test_a_change_outside_the_lease_is_caught(tmp_path):
    unguarded = [{"hosts": "localhost", "tasks": [
        {"name": "PATCH | Under the lease", "when": "x", "block": [
            {"name": "PATCH | Take", "ansible.builtin.include_role": {"name": LEASE_ROLE}},
            {"name": "PATCH | Change without the blocked guard", "kubernetes.core.k8s": {}}],
         "always": [{"name": "PATCH | Give back",
                     "ansible.builtin.include_role": {"name": LEASE_ROLE, "tasks_from": "release"}}]},
        {"name": "AUDIT | Restart, named AUDIT", "ansible.builtin.include_role": {"name": "restart_service"}}]}]
    path = tmp_path / "x.yml"
    path.write_text(yaml.safe_dump(unguarded))
    found, acts, takes = problems(path)
    assert acts and takes
    assert len(found) == 2 and "blocked" in found[0] and "not inside" in found[1], found


@pytest.mark.parametrize("playbook", [p for p in RUNBOOKS if p not in LOCAL_ONLY and p not in TESTBED])
def test_every_change_is_made_under_the_one_writer_lease(playbook):
    found, acts, takes = problems(PLAYBOOKS / playbook)
    assert found == [], f"{playbook}: " + "; ".join(found)
    assert takes or not acts, f"{playbook} changes the platform but never takes the one-writer lease"


@pytest.mark.parametrize("playbook", sorted(LOCAL_ONLY))
def test_the_exceptions_only_write_on_the_controller(playbook):
    plays = load(PLAYBOOKS / playbook)
    assert all(p.get("hosts") == "localhost" for p in plays)
    patches = [t for p in plays for t, _ in play_tasks(p) if is_patch(t) and "block" not in t]
    assert patches
    for task in patches:
        modules = {key for key in task if "." in key}   # the module, by its FQCN
        assert modules and modules <= LOCAL_ONLY[playbook], (task["name"], modules)
        assert "delegate_to" not in task, task["name"]
    assert not any(changes(t) for p in plays for t, _ in play_tasks(p) if not is_patch(t))
