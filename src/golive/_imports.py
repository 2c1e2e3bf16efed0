"""Importing the user's code: a module name (``pkg.mod``) or a file (``path/to/file.py``), optionally ``:attr``.

Used for PyTorch import-path sources, exporter translation tables and Python custom-op modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from golive.errors import ModelLoadError, SourceNotFoundError

__all__ = ["import_user_modules", "is_import_path", "is_python_file", "load_module", "load_object", "split_file_attr"]

_IMPORT_RE = re.compile(r"^(?P<mod>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def is_python_file(name: str) -> bool:
    return name.endswith(".py")


def is_import_path(source: str) -> bool:
    """``package.module:name`` or ``path/to/file.py:name``."""
    m = _IMPORT_RE.match(source)
    if not m:
        return False
    return is_python_file(m["mod"]) or _MODULE_RE.fullmatch(m["mod"]) is not None


def split_file_attr(value: str) -> tuple[str, str]:
    """The one rule for ``path/to/file.py:name`` wherever a path may carry a name: (``path/to/file.py``, ``:name``);
    anything else (a plain path, a module name, ``pkg.mod:Net``) -> (value, "")."""
    m = _IMPORT_RE.match(value)
    if m and is_python_file(m["mod"]):
        return m["mod"], ":" + m["attr"]
    return value, ""


def _module_name(file: Path) -> str:
    """A module name from the file's bytes: a copy of the file (a run folder's custom_ops/) is the same module,
    so what it registers (onnxruntime-extensions' Python ops) is not registered twice."""
    import hashlib

    return "golive_user_" + hashlib.sha1(file.read_bytes()).hexdigest()[:12]


def load_module(name: str, *, reuse: bool = False) -> ModuleType:
    """Import ``name``: a dotted module (found from the current folder too) or a .py file.

    A file is executed under a name of its own; ``reuse`` returns the module already executed from
    the same file in this process instead of running it again (for modules that register things).
    """
    if is_python_file(name):
        file = Path(name)
        if not file.is_file():
            raise SourceNotFoundError(f"Python file {name} does not exist", hint="check the path before the colon")
        unique = _module_name(file)
        if reuse and unique in sys.modules:
            return sys.modules[unique]
        resolved = file.resolve()
        for existing in list(sys.modules.values()):  # already imported under another name: the same module
            origin = getattr(existing, "__file__", None)
            if origin and origin.endswith(".py") and Path(origin).resolve() == resolved:
                return existing
        spec = importlib.util.spec_from_file_location(unique, file)
        if spec is None or spec.loader is None:  # a .py file always gets a spec with a loader; said for the checker
            raise ModelLoadError(f"importing {file} failed: Python found no loader for it")
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module
        folder = str(file.resolve().parent)
        sys.path.insert(0, folder)
        # The file may also be imported by its plain name (a translation table next to it doing `import zoo`):
        # that must give this module, not run the file a second time. A second run registers its torch custom
        # operators twice, and torch then fails at random inside the dispatcher.
        stem = file.stem
        if stem.isidentifier() and stem not in sys.modules:
            try:
                found = importlib.util.find_spec(stem)
            except (ImportError, ValueError):
                found = None
            if found is not None and found.origin and Path(found.origin).resolve() == file.resolve():
                sys.modules[stem] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(unique, None)
            if sys.modules.get(stem) is module:
                sys.modules.pop(stem, None)
            raise ModelLoadError(f"importing {file} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            sys.path.remove(folder)
        return module
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # modules in the current folder import as they would from a script run here
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise SourceNotFoundError(
            f"cannot import module {name}: {exc}", hint="install the package, run from its folder, or use path/to/file.py"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"importing {name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def load_object(path: str, *, reuse: bool = False) -> Any:
    """``module:attr.sub`` or ``file.py:attr``: the object it names."""
    mod_name, _, attr = path.rpartition(":")
    if not mod_name or not attr:
        raise SourceNotFoundError(f"{path!r} is not an import path", hint="write module:name or path/to/file.py:name")
    module = load_module(mod_name, reuse=reuse)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(module) if not n.startswith("_"))
            raise SourceNotFoundError(f"{mod_name} has no attribute {attr}", hint="names there: " + ", ".join(names[:20]))
        obj = getattr(obj, part)
    return obj


def import_user_modules(names: list[str]) -> None:
    """--import: modules the source needs loaded first (a Keras model's registered custom layers, say)."""
    from golive._io import captured_output

    for name in names:
        with captured_output():  # what they print on import (TensorFlow's C++ log lines, say) goes to the debug log
            load_module(name, reuse=True)
