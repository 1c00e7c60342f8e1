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

The second cache is on the controller's side. ansible-playbook builds every module's AnsiballZ
payload anew in every run (its own cache lives in the run's temporary directory), and most of that
build is `ast`-compiling each module_utils file the module imports, directly or not - about 60
files for a module that imports AnsibleModule - to find what else they import (measured: a
fifth of the CPU of the forked task workers of a health_check run). When
ansible.executor.module_common is imported, its ModuleDepFinder is wrapped: the imports found in
a source are kept in the same cache folder under `ansiballz-deps/`, keyed by the sha256 of the
source, the module's name, whether it is a package and the ansible-core version; the source is
compiled only when they are not there (or when something asks the tree for more than its
imports). The same source always has the same imports, so the payload is the same.
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


def _cache_root():
    return os.environ.get("SAASODOO_ZIPIMPORT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "saasodoo-testbed", "zipimport")


def _patch_module_common(mc):
    """Wrap _compile_module_ast and ModuleDepFinder of ansible.executor.module_common (see above)."""
    import hashlib
    import json

    compile_ast = getattr(mc, "_compile_module_ast", None)
    finder_class = getattr(mc, "ModuleDepFinder", None)
    if compile_ast is None or finder_class is None or getattr(compile_ast, "_saasodoo_cached", False):
        return
    try:
        from ansible.release import __version__ as ansible_version
    except ImportError:
        return
    folder = os.path.join(_cache_root(), "ansiballz-deps")

    class LazyTree(object):
        """A module's source, compiled into its AST only when something needs more than its imports."""

        def __init__(self, name, source):
            self._name, self._source, self._tree = name, source, None

        def tree(self):
            if self._tree is None:
                self._tree = compile_ast(self._name, self._source)
            return self._tree

        def __getattr__(self, attr):
            if attr.startswith("_"):
                raise AttributeError(attr)
            return getattr(self.tree(), attr)

    def lazy_compile(module_name, source_code):
        return LazyTree(module_name, source_code)

    original_init = finder_class.__init__

    def cached_init(self, module_fqn, tree, is_pkg_init=False, *args, **kwargs):
        if not isinstance(tree, LazyTree) or args or kwargs:
            original_init(self, module_fqn, tree.tree() if isinstance(tree, LazyTree) else tree, is_pkg_init,
                          *args, **kwargs)
            return
        path = None
        try:
            source = tree._source
            data = source if isinstance(source, bytes) else ("%s" % source).encode("utf-8", "surrogateescape")
            key = hashlib.sha256(("%s\0%s\0%s\0" % (ansible_version, module_fqn, bool(is_pkg_init))).encode()
                                 + bytes(data)).hexdigest()
            path = os.path.join(folder, key + ".json")
            with open(path) as handle:
                found = json.load(handle)
            submodules = set(tuple(m) for m in found["submodules"])
            optional = set(tuple(m) for m in found["optional_imports"])
        except Exception:  # not cached (or unreadable): find them as ansible does, then keep them
            original_init(self, module_fqn, tree.tree(), is_pkg_init)
            if path:
                try:
                    os.makedirs(folder, exist_ok=True)
                    tmp = "%s.%d.tmp" % (path, os.getpid())
                    with open(tmp, "w") as handle:
                        json.dump({"submodules": sorted(self.submodules),
                                   "optional_imports": sorted(self.optional_imports)}, handle)
                    os.replace(tmp, path)
                except Exception:  # the cache must never break a build
                    pass
            return
        self._tree = tree
        self.submodules, self.optional_imports = submodules, optional
        self.module_fqn, self.is_pkg_init = module_fqn, is_pkg_init
        self._visit_map = {}

    lazy_compile._saasodoo_cached = True
    mc._compile_module_ast = lazy_compile
    finder_class.__init__ = cached_init


def _install_module_common_hook():
    """Patch ansible.executor.module_common right after it is imported (controller processes only)."""
    try:
        import importlib.machinery
    except ImportError:
        return
    target = "ansible.executor.module_common"

    class Hook(object):
        @staticmethod
        def find_spec(fullname, path=None, target_module=None):
            if fullname != target:
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                try:
                    _patch_module_common(module)
                except Exception:  # never break ansible's own import
                    pass

            spec.loader.exec_module = exec_and_patch
            return spec

    sys.meta_path.insert(0, Hook())


_install()
_install_module_common_hook()
del _install, _install_module_common_hook
