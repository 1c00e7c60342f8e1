"""A compile cache for code Python imports from zip files: test-bed speed, not behaviour.

Ansible runs every module as an AnsiballZ zip; Python's zipimport compiles each imported source
file from that zip anew on every task (zips carry no .pyc), and in Python 3.11 twice: find_spec
asks for the file name, which compiles, then exec_module compiles again. For a module like
kubernetes.core.k8s_info that is most of its CPU time, and the test suite runs tens of thousands
of tasks on a 2-core machine.

With this directory on PYTHONPATH (tests/parallel.py puts it there for the test beds), Python
imports this file at start-up (`sitecustomize`) and wraps zipimport._compile_source: the code
object compiled from a source is kept in SAASODOO_ZIPIMPORT_CACHE (default
~/.cache/saasodoo-testbed/zipimport), keyed by the sha256 of the source and the interpreter's
cache tag, and reused - retargeted to the file name it is imported from now, so tracebacks name
the right file. The same source always compiles to the same code, so nothing a module does
changes. Any error in the cache falls back to compiling.
"""

import os
import sys


def _install():
    try:
        import hashlib
        import marshal
        import zipimport
    except ImportError:
        return
    compile_source = getattr(zipimport, "_compile_source", None)
    if compile_source is None or getattr(compile_source, "_saasodoo_cached", False):
        return
    root = os.environ.get("SAASODOO_ZIPIMPORT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "saasodoo-testbed", "zipimport")
    folder = os.path.join(root, sys.implementation.cache_tag or "python")
    code_type = type(_install.__code__)

    def retarget(code, filename):
        consts = tuple(retarget(c, filename) if isinstance(c, code_type) else c for c in code.co_consts)
        return code.replace(co_filename=filename, co_consts=consts)

    def cached_compile_source(pathname, source):
        try:
            key = hashlib.sha256(source if isinstance(source, bytes) else source.encode()).hexdigest()
            path = os.path.join(folder, key)
            try:
                with open(path, "rb") as handle:
                    code = marshal.load(handle)
            except (OSError, EOFError, ValueError, TypeError):
                code = compile_source(pathname, source)
                os.makedirs(folder, exist_ok=True)
                tmp = "%s.%d.tmp" % (path, os.getpid())
                with open(tmp, "wb") as handle:
                    marshal.dump(code, handle)
                os.replace(tmp, path)
                return code
            return code if code.co_filename == pathname else retarget(code, pathname)
        except Exception:  # the cache must never break an import
            return compile_source(pathname, source)

    cached_compile_source._saasodoo_cached = True
    zipimport._compile_source = cached_compile_source


_install()
del _install
