# -*- coding: utf-8 -*-
# Shared by saasodoo_pg_settings (and unit-tested on its own): compare PostgreSQL settings with
# desired values the way the server reads them, and say what applying them takes.
"""Desired PostgreSQL settings against the running server and its configuration files.

PostgreSQL keeps three views of a setting: the value in use (``pg_settings.setting`` in the
setting's ``unit``, ``SHOW``), the value in the configuration files (``pg_file_settings``: the
last entry wins, ``postgresql.auto.conf`` - what ALTER SYSTEM writes - is read last) and, for
settings of context ``postmaster``, ``pending_restart`` once a reload has read a file value
that only a restart can apply.

``compare_value(desired, setting, unit, vartype)`` compares a desired value written as a human
would (``5min``, ``500ms``, ``1GB``, ``on``) with ``pg_settings.setting`` by value, with
PostgreSQL's units (memory units are powers of 1024; time units us, ms, s, min, h, d).
``plan(rows, file_rows, desired)`` says per setting what to do:
- ``ok``: in use already;
- ``set``: ALTER SYSTEM is needed (then a reload, or a restart for context postmaster);
- ``restart_pending``: the files already hold the desired value, only a restart applies it
  (setting it again would change nothing);
- ``kept``: a setting that may only be raised (``only_raise``, e.g. max_connections) whose value
  in use or waiting in the files is above the desired one: it is never lowered.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

MEMORY_UNITS = {"B": 1, "kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}
TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60000.0, "h": 3600000.0, "d": 86400000.0}
_NUMBER = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")
_BOOL = {"on": True, "true": True, "yes": True, "1": True, "t": True, "y": True,
         "off": False, "false": False, "no": False, "0": False, "f": False, "n": False}


# pg_file_settings.error of a line whose value only a restart can apply.
PENDING_ERROR = "setting could not be applied"


class SettingValueError(ValueError):
    """A desired value PostgreSQL would not take for that setting."""


def _unit_scale(unit):
    """('memory'|'time'|None, bytes or ms per unit) of a pg_settings unit such as '8kB', 'kB', 'ms', 'min'."""
    if not unit:
        return None, 1.0
    match = re.match(r"^(\d*)\s*([A-Za-z]+)$", unit)
    if not match:
        return None, 1.0
    count = int(match.group(1) or 1)
    base = match.group(2)
    if base in MEMORY_UNITS:
        return "memory", float(count * MEMORY_UNITS[base])
    if base in TIME_UNITS:
        return "time", count * TIME_UNITS[base]
    return None, 1.0


def to_base(value, unit, vartype):
    """A value (desired text or pg_settings.setting) as a number in bytes or milliseconds, or the
    plain number for unit-less settings. SettingValueError when it cannot be one."""
    kind, scale = _unit_scale(unit)
    match = _NUMBER.match("%s" % value)
    if not match:
        raise SettingValueError("%r is not a number%s" % (value, " with a unit" if kind else ""))
    number, suffix = float(match.group(1)), match.group(2)
    if not suffix:
        return number * scale if kind else number
    if kind == "memory" and suffix in MEMORY_UNITS:
        return number * MEMORY_UNITS[suffix]
    if kind == "time" and suffix in TIME_UNITS:
        return number * TIME_UNITS[suffix]
    raise SettingValueError("unit %r does not fit a setting measured in %s" % (suffix, unit or "plain numbers"))


def compare_value(desired, setting, unit, vartype):
    """Whether the desired value equals pg_settings.setting, by value. SettingValueError when the
    desired value does not fit the setting's type."""
    vartype = (vartype or "string").lower()
    if vartype == "bool":
        want = _BOOL.get(("%s" % desired).strip().lower())
        if want is None:
            raise SettingValueError("%r is not a boolean (on/off)" % (desired,))
        return want == _BOOL.get(("%s" % setting).strip().lower())
    if vartype in ("integer", "real"):
        want = to_base(desired, unit, vartype)
        have = to_base(setting, unit, vartype)
        # PostgreSQL rounds to the setting's unit; compare at that precision.
        _, scale = _unit_scale(unit)
        return abs(want - have) < max(scale, 1e-9) / 2.0 + 1e-9
    if vartype == "enum":
        return ("%s" % desired).strip().lower() == ("%s" % setting).strip().lower()
    return ("%s" % desired) == ("%s" % setting)


def file_values(file_rows):
    """{name: (setting, sourcefile)} of the configuration files: the last valid entry per name."""
    out = {}
    for row in sorted(file_rows or [], key=lambda r: r.get("seqno") or 0):
        # "setting could not be applied" marks a value that waits for a restart: it counts. Any
        # other error (a bad value) means the server ignores that line.
        if row.get("error") and row["error"] != PENDING_ERROR:
            continue
        out[row["name"]] = (row.get("setting"), row.get("sourcefile"))
    return out


def above(desired, values, unit, vartype):
    """Whether any of ``values`` (pg_settings.setting or a file value; None skipped) is above the
    desired value, by value with the setting's unit. Only numbers can be; SettingValueError when
    the desired value is not one."""
    if (vartype or "").lower() not in ("integer", "real"):
        raise SettingValueError("only numeric settings can be kept from being lowered (this one is %s)" % vartype)
    want = to_base(desired, unit, vartype)
    _, scale = _unit_scale(unit)
    return any(to_base(v, unit, vartype) > want + max(scale, 1e-9) / 2.0 for v in values if v is not None)


def plan(rows, file_rows, desired, file_readable=True, only_raise=()):
    """Per desired setting: what is in use, what the files say and the action (ok, set,
    restart_pending, kept). ``rows``: pg_settings rows (name, setting, unit, vartype, context,
    pending_restart, shown); ``file_rows``: pg_file_settings rows; ``desired``: {name: value};
    ``only_raise``: names of settings that are never lowered (kept when the server's value in
    use, or the value waiting in its files, is above the desired one).

    Returns {settings: [...], to_set, restart_pending, kept, restart_required, errors}.
    """
    by_name = dict((r["name"], r) for r in rows or [])
    files = file_values(file_rows) if file_readable else {}
    only_raise = set(only_raise or ())
    out = {"settings": [], "to_set": [], "restart_pending": [], "kept": [], "restart_required": False, "errors": []}
    for name in sorted(desired):
        value = "%s" % desired[name]
        row = by_name.get(name)
        if row is None:
            out["errors"].append("%s: no such setting on this server" % name)
            continue
        entry = {"name": name, "desired": value, "current": row.get("shown"), "setting": row.get("setting"),
                 "unit": row.get("unit"), "context": row.get("context"),
                 "pending_restart": bool(row.get("pending_restart")), "file_value": None, "file": None,
                 "restart_required": row.get("context") == "postmaster", "action": "ok"}
        if row.get("context") == "internal":
            out["errors"].append("%s: cannot be changed (internal)" % name)
            continue
        try:
            in_use = compare_value(value, row.get("setting"), row.get("unit"), row.get("vartype"))
            file_value, source = files.get(name, (None, None))
            entry["file_value"], entry["file"] = file_value, source
            if not file_readable:
                in_file = None  # unknown: judged from pending_restart alone
            elif file_value is None:
                in_file = in_use  # no file sets it: the built-in default is what a restart keeps
            else:
                in_file = compare_value(value, file_value, row.get("unit"), row.get("vartype"))
            higher = name in only_raise and above(value, (row.get("setting"), file_value), row.get("unit"),
                                                  row.get("vartype"))
        except SettingValueError as e:
            out["errors"].append("%s: %s" % (name, e))
            continue
        if higher:
            entry["action"] = "kept"
        elif entry["restart_required"]:
            if in_use and in_file is not False:
                entry["action"] = "ok"
            elif in_file or (in_file is None and entry["pending_restart"]):
                # Without pg_file_settings, a pending restart is taken as ours (the value cannot be read).
                entry["action"] = "restart_pending"
            else:
                entry["action"] = "set"
        else:
            entry["action"] = "ok" if in_use else "set"
        if entry["action"] == "set":
            out["to_set"].append(name)
        elif entry["action"] == "restart_pending":
            out["restart_pending"].append(name)
        elif entry["action"] == "kept":
            out["kept"].append(name)
        out["settings"].append(entry)
    out["restart_required"] = any(s["restart_required"] and s["action"] not in ("ok", "kept")
                                  for s in out["settings"])
    return out
