"""testbed/zipimport_cache/sitecustomize.py: code imported from a zip is compiled once and reused,
with the file name of the zip it is imported from now (tracebacks stay right)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[2] / "testbed" / "zipimport_cache"
PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import payload_mod
print(payload_mod.where())
try:
    payload_mod.boom()
except ZeroDivisionError as exc:
    print(exc.__traceback__.tb_next.tb_frame.f_code.co_filename)
"""


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("payload_mod.py", "def where():\n    return __file__\n\ndef boom():\n    return 1 / 0\n")
    return path


def _run(zip_path: Path, cache: Path) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(HERE), SAASODOO_ZIPIMPORT_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", PROBE, str(zip_path)], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_code_from_a_zip_is_cached_once_and_retargeted(tmp_path):
    cache = tmp_path / "cache"
    first = _zip(tmp_path / "one.zip")
    second = _zip(tmp_path / "two.zip")
    assert _run(first, cache) == [str(first / "payload_mod.py")] * 2
    kept = list(cache.rglob("*"))
    files = [p for p in kept if p.is_file()]
    assert len(files) == 1, kept                     # compiled once, stored by the source's digest
    stamp = files[0].stat().st_mtime_ns
    # Same source from another zip: the stored code is reused, named after the zip it now comes from.
    assert _run(second, cache) == [str(second / "payload_mod.py")] * 2
    assert files[0].stat().st_mtime_ns == stamp


def test_a_broken_cache_entry_falls_back_to_compiling(tmp_path):
    cache = tmp_path / "cache"
    first = _zip(tmp_path / "one.zip")
    _run(first, cache)
    for entry in cache.rglob("*"):
        if entry.is_file():
            entry.write_bytes(b"not marshal data")
    assert _run(first, cache)[0] == str(first / "payload_mod.py")


BUILD_PROBE = """
import datetime, io, json, sys, zipfile
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader()
from ansible._internal._ansiballz import _builder
from ansible.executor import module_common as mc
zf = zipfile.ZipFile(io.BytesIO(), "w")
mc.recursive_finder("probe", "ansible.modules.probe", open(sys.argv[1], "rb").read(), zf,
                    datetime.datetime(2020, 1, 1), _builder.ExtensionManager.create(task_vars={}))
print(json.dumps({"files": sorted(zf.namelist()),
                  "cached": bool(getattr(mc._compile_module_ast, "_saasodoo_cached", False))}))
"""


def _build(module: Path, cache: Path | None) -> dict:
    import json

    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if cache is not None:
        env.update(PYTHONPATH=str(HERE), SAASODOO_ZIPIMPORT_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", BUILD_PROBE, str(module)], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_ansiballz_payload_is_the_same_with_the_import_scan_cached(tmp_path):
    import ansible.modules

    cache = tmp_path / "cache"
    module = Path(ansible.modules.__file__).parent / "uri.py"
    plain = _build(module, None)
    cold = _build(module, cache)
    entries = sorted((cache / "ansiballz-deps").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in entries]
    warm = _build(module, cache)
    assert plain["cached"] is False and cold["cached"] is True and warm["cached"] is True
    assert len(plain["files"]) > 20 and "ansible/module_utils/basic.py" in plain["files"]
    # Every module_utils file the module needs is in the payload, from the scan or from the cache.
    assert cold["files"] == plain["files"] and warm["files"] == plain["files"]
    assert len(entries) > 20
    assert sorted((cache / "ansiballz-deps").glob("*.json")) == entries       # the warm build added nothing
    assert [p.stat().st_mtime_ns for p in entries] == stamps                  # and rewrote nothing
