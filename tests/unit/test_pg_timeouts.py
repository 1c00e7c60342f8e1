"""Every community.postgresql task has a connect timeout: a database that does not answer ends the task
in seconds with an error, instead of hanging the run until AWX's job timeout kills it (issue 12).

The timeout is either in the task (connect_params.connect_timeout) or in a module_defaults entry that
applies to it (group/community.postgresql.all or the module's own), on the task, a block around it, the
play, or a block around the import_tasks/include_tasks that brings its file in. The scan starts at the
playbooks, each role's tasks/main.yml and every file named by tasks_from, and follows the imports.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PG = re.compile(r"^community\.postgresql\.postgresql_[a-z_]+$")
IMPORT_KEYS = ("ansible.builtin.import_tasks", "ansible.builtin.include_tasks", "import_tasks", "include_tasks")
GROUP = "group/community.postgresql.all"


def _has_timeout(args) -> bool:
    return isinstance(args, dict) and "connect_timeout" in (args.get("connect_params") or {})


def _defaults(node: dict, inherited: dict) -> dict:
    return {**inherited, **(node.get("module_defaults") or {})} if isinstance(node, dict) else inherited


def _covered(fqcn: str, args, defaults: dict) -> bool:
    return _has_timeout(args) or _has_timeout(defaults.get(GROUP)) or _has_timeout(defaults.get(fqcn))


class Scan:
    def __init__(self, root: Path = ROOT):
        self.root = root
        self.missing: list[str] = []
        self.seen: set[Path] = set()
        self.tasks = 0

    def file(self, path: Path, defaults: dict) -> None:
        self.seen.add(path)
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, list):
                for entry in doc:
                    if isinstance(entry, dict) and "hosts" in entry:      # a play
                        play_defaults = _defaults(entry, defaults)
                        for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                            self.tasks_list(entry.get(key) or [], path, play_defaults)
                    else:
                        self.tasks_list([entry], path, defaults)

    def tasks_list(self, tasks: list, path: Path, defaults: dict) -> None:
        for task in tasks:
            if not isinstance(task, dict):
                continue
            here = _defaults(task, defaults)
            for key in ("block", "rescue", "always"):
                if key in task:
                    self.tasks_list(task[key] or [], path, here)
            for key, args in task.items():
                if PG.match(str(key)):
                    self.tasks += 1
                    if not _covered(str(key), args, here):
                        self.missing.append(f"{path.relative_to(self.root)}: {task.get('name', key)}")
                if key in IMPORT_KEYS:
                    target = args if isinstance(args, str) else (args or {}).get("file")
                    if target and "{{" not in target and (path.parent / target).is_file():
                        self.file(path.parent / target, here)


def roots() -> list[Path]:
    found = sorted((ROOT / "playbooks").glob("*.yml")) + sorted((ROOT / "roles").glob("*/tasks/main.yml"))
    for text_path in list((ROOT / "playbooks").rglob("*.yml")) + list((ROOT / "roles").rglob("tasks/*.yml")):
        for role, entry in re.findall(r"name:\s*([a-z_]+)\s*\n\s*tasks_from:\s*([a-z_]+)", text_path.read_text()):
            candidate = ROOT / "roles" / role / "tasks" / f"{entry}.yml"
            if candidate.is_file():
                found.append(candidate)
    return found


def test_every_postgresql_task_has_a_connect_timeout():
    scan = Scan()
    for path in roots():
        scan.file(path, {})
    # Task files no entry point reaches are scanned on their own: nothing around them sets a default.
    for path in sorted(set((ROOT / "roles").rglob("tasks/*.yml")) | set((ROOT / "playbooks").rglob("tasks/**/*.yml"))):
        if path not in scan.seen:
            scan.file(path, {})
    assert scan.tasks >= 10, f"the scan found only {scan.tasks} PostgreSQL tasks: it is broken"
    assert not scan.missing, "PostgreSQL tasks without connect_params.connect_timeout:\n  " + "\n  ".join(sorted(set(scan.missing)))


def test_the_scan_sees_module_defaults_around_an_import(tmp_path):
    (tmp_path / "inner.yml").write_text("- name: q\n  community.postgresql.postgresql_query:\n    query: SELECT 1\n")
    outer = tmp_path / "outer.yml"
    outer.write_text(yaml.safe_dump([
        {"name": "b", "module_defaults": {GROUP: {"connect_params": {"connect_timeout": 5}}},
         "block": [{"name": "i", "ansible.builtin.import_tasks": "inner.yml"}]},
        {"name": "bare", "ansible.builtin.import_tasks": "inner.yml"}]))
    scan = Scan(root=tmp_path)
    scan.file(outer, {})
    assert scan.tasks == 2 and scan.missing == ["inner.yml: q"]   # covered inside the block, not outside


def _all_tasks(node):
    """Every task dict under a task list (blocks, rescue, always included)."""
    for task in node or []:
        if isinstance(task, dict):
            yield task
            for key in ("block", "rescue", "always"):
                yield from _all_tasks(task.get(key))


def test_every_task_is_bounded_by_the_task_timeout_above_every_configured_wait():
    """kubernetes.core has no request timeout: ansible.cfg's task_timeout bounds every task instead. It sits
    above every wait the inventory configures (a rollout, the deploy, a tenant), and the only tasks that opt
    out are pg_dump and pg_restore, whose limit is restore_backup_command_timeout."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "ansible.cfg")
    limit = cfg.getint("defaults", "task_timeout")
    waits = {}
    for path in (ROOT / "inventories" / "local" / "group_vars" / "all").glob("*.yml"):
        data = yaml.safe_load(path.read_text()) or {}
        for name, value in list(data.items()) + [(f"saasodoo_thresholds.{k}", v)
                                                 for k, v in (data.get("saasodoo_thresholds") or {}).items()]:
            if re.search(r"timeout", name) and isinstance(value, int):
                waits[name] = value
    assert waits and "saasodoo_thresholds.rollout_timeout_seconds" in waits, waits
    assert all(limit > seconds for seconds in waits.values()), (limit, waits)
    opted_out = {}
    for path in sorted((ROOT / "roles").glob("*/tasks/*.yml")) + sorted((ROOT / "playbooks").rglob("*.yml")):
        for task in _all_tasks(yaml.safe_load(path.read_text())):
            if "timeout" in task:
                opted_out[f"{path.relative_to(ROOT)}: {task.get('name')}"] = task["timeout"]
    assert sorted(opted_out.values()) == ["{{ restore_backup_command_timeout | int }}"] * 2, opted_out
    assert any("pg_dump" in name for name in opted_out) and any("Load the chosen backup" in name for name in opted_out)
