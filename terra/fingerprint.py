"""Code fingerprints: what a task's result depends on, as a hash.

A fingerprint covers, transitively, the project-local functions, classes and
module-level values a task refers to. Third-party and standard-library code is
not fingerprinted (its versions are recorded in each run instead), nor is
terra itself. Each part is hashed as follows:

* a function: its normalized AST (comments, docstrings, formatting, its name
  and decorators ignored), or the loaded bytecode when there is no source or
  the file was edited since import (see :mod:`terra._source`): always the
  code that runs. A lambda is its own node of its line. Defaults and closure
  cells are hashed as values.
* a class: its source, and each of its methods as a function.
* a value (a global or closure cell that is data: scalars, containers, numpy
  arrays, pandas objects, dataclasses, instances of the project's classes):
  by value, bounded in size (see :mod:`terra._guards`). A global or cell the
  code writes into (``LOG.append(x)``, ``COUNTS[k] = n``) is state the task
  keeps, not an input: its binding is guarded, its content is not hashed.

Fingerprints are memoized per callable and revalidated on every call, so a
helper redefined in a notebook or a global dict mutated in place invalidates
them while the common case stays a few identity checks: every global name used
must still be bound to the *same object* (``is``; the fingerprint holds a
reference, so an id cannot be reused), every function walked must keep its
``__code__``, defaults and closure cells, and every mutable value must pass its
content guard (exact for small values, sampled for large ones: the trade-off
is explained in :mod:`terra._guards`).

The values bound into a partial, a bound method's instance and a callable
object's state are not part of a fingerprint: the task hashes them on every
call, like arguments.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import os
import site
import sys
import sysconfig
import textwrap
import types
from typing import Any

import xxhash

from ._guards import ATOMS, content_guard, mutable, value_part
from . import _source
from ._source import code_text, global_refs, receive_sources, strip_docstrings
from ._source import written as written_into

__all__ = ["Fingerprint", "fingerprint", "module_name", "receive_sources", "sources"]

class Fingerprint:
    """A callable's code hash, the per-part hashes it was made of, and the guards that keep it valid."""

    __slots__ = ("digest", "parts", "_binds", "_fns", "_cells", "_contents")

    def __init__(self, digest: str, parts: dict[str, str], guards: "_Guards"):
        self.digest = digest
        self.parts = parts  # part name -> hash (or "unhashed: why"), for terra.why()
        self._binds = guards.binds
        self._fns = guards.fns
        self._cells = guards.cells
        self._contents = guards.contents

    def valid(self) -> bool:
        """True if nothing the digest was computed from has changed."""
        # Every cache hit asks: an empty kind of guard costs a test, not a loop.
        for fn, code, defaults, kwdefaults in self._fns:
            if fn.__code__ is not code or fn.__defaults__ is not defaults or fn.__kwdefaults__ is not kwdefaults:
                return False
        if self._binds:
            for ns, name, obj in self._binds:
                if ns.get(name, _MISSING) is not obj:
                    return False
        if self._cells:
            for cell, obj in self._cells:
                try:
                    if cell.cell_contents is not obj:
                        return False
                except ValueError:  # the cell was emptied
                    return False
        if self._contents:
            for obj, digest in self._contents:
                if content_guard(obj) != digest:
                    return False
        return True


class _Guards:
    __slots__ = ("binds", "fns", "cells", "contents")

    def __init__(self):
        self.binds: list[tuple[dict, str, Any]] = []
        self.fns: list[tuple] = []
        self.cells: list[tuple] = []
        self.contents: list[tuple[Any, int]] = []


_MISSING = object()
_memo: dict[Any, Fingerprint] = {}
_alive: dict[int, Any] = {}


def fingerprint(obj) -> Fingerprint:
    """The fingerprint of a function, class, partial, bound method or callable object.

    Memoized and revalidated on every call (see the module docstring). Values
    bound into a partial, a bound method's instance or a callable object's
    state are not part of it: they are hashed per call, like arguments.
    """
    key = obj
    try:
        fp = _memo.get(key)
    except TypeError:
        fp, key = None, id(obj)
    if fp is not None and fp.valid():
        return fp
    parts: dict[str, str] = {}
    guards = _Guards()
    _walk_callable(obj, parts, guards, set())
    h = xxhash.xxh3_128()
    for name in sorted(parts):
        h.update(name.encode())
        h.update(b"\0")
        h.update(parts[name].encode())
        h.update(b"\0")
    fp = Fingerprint(h.hexdigest(), parts, guards)
    if key is not obj:
        _alive[key] = obj  # keyed by id: obj must outlive its entry, or the id could be reused
    _memo[key] = fp
    return fp


def sources(fp: Fingerprint) -> dict:
    """The source of each function a fingerprint covers, to send with them when they are pickled by value."""
    return _source.sources(fn for fn, _, _, _ in fp._fns)


# -- where code lives ------------------------------------------------------------------

_MAIN_NAMES = ("__main__", "__mp_main__")
_main_cache: dict[str, str] = {}


def module_name(name: str | None) -> str:
    """The importable name of module ``name`` as this process runs it.

    ``__main__`` (and ``__mp_main__``, the main module re-run in spawned
    workers) resolve to the spec name of the module that was started, so
    ``python -m pkg.mod``, ``import pkg.mod`` and their workers agree. A script
    run by path or ``python -c`` has no importable name: ``__main__`` it stays,
    in its spawned workers too.
    """
    if not name:
        return "__main__"
    if name not in _MAIN_NAMES:
        return name
    hit = _main_cache.get(name)
    if hit is None:
        spec = getattr(sys.modules.get(name), "__spec__", None)
        ok = spec is not None and spec.name and spec.name not in _MAIN_NAMES
        hit = _main_cache[name] = spec.name if ok else "__main__"
    return hit


def _third_party_roots() -> tuple[str, ...]:
    roots = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            roots.add(os.path.realpath(p))
    try:
        roots.update(os.path.realpath(p) for p in site.getsitepackages())
    except AttributeError:  # virtualenv's old site module
        pass
    user = getattr(site, "USER_SITE", None)
    if user:
        roots.add(os.path.realpath(user))
    roots.add(os.path.realpath(os.path.dirname(os.path.dirname(__file__))) + os.sep + "terra")
    return tuple(sorted(roots))


_ROOTS: tuple[str, ...] | None = None
_local_cache: dict[str, bool] = {}


def is_project_local(module: str | None) -> bool:
    """True if the module is the user's own code (not stdlib, site-packages or terra)."""
    global _ROOTS
    if not module:
        return False
    hit = _local_cache.get(module)
    if hit is not None:
        return hit
    if _ROOTS is None:
        _ROOTS = _third_party_roots()
    mod = sys.modules.get(module)
    f = getattr(mod, "__file__", None) if mod is not None else None
    if module in _MAIN_NAMES and f is None:
        result = True  # python -c, a notebook, a REPL: the user's code
    elif f is None or module in sys.builtin_module_names:
        result = False
    else:
        f = os.path.realpath(f)
        result = not any(f == r or f.startswith(r + os.sep) for r in _ROOTS) and "site-packages" not in f
    _local_cache[module] = result
    return result


def _qualname(obj) -> str:
    qual = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    return f"{module_name(getattr(obj, '__module__', None))}.{qual}"


# -- the walk ------------------------------------------------------------------------


def _walk_callable(obj, parts, guards: _Guards, seen: set) -> None:
    """Fingerprint the code of any callable a Task accepts (bound values excluded)."""
    import functools

    if isinstance(obj, functools.partial):
        _walk_callable(obj.func, parts, guards, seen)
    elif isinstance(obj, types.MethodType):
        _walk_callable(obj.__func__, parts, guards, seen)
        cls = obj.__self__ if isinstance(obj.__self__, type) else type(obj.__self__)
        if is_project_local(getattr(cls, "__module__", None)):
            _walk(cls, parts, guards, seen)  # self.helper() calls are not global names
    elif isinstance(obj, (types.FunctionType, type)) or hasattr(obj, "__wrapped__"):
        _walk(obj, parts, guards, seen)
    elif callable(obj) and is_project_local(getattr(type(obj), "__module__", None)):
        _walk(type(obj), parts, guards, seen)  # a callable object: its class's code


def _walk(obj, parts, guards: _Guards, seen: set) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, type):
        _walk_class(obj, parts, guards, seen)
        return
    fn = inspect.unwrap(obj) if callable(obj) else obj
    if isinstance(fn, (staticmethod, classmethod)):
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType):
        return
    code = fn.__code__
    name = _qualname(fn)
    tree, text = code_text(fn)
    parts[name] = _h(text)
    guards.fns.append((fn, code, fn.__defaults__, fn.__kwdefaults__))
    for i, d in enumerate(fn.__defaults__ or ()):
        _dependency(f"{name}.<default {i}>", d, parts, guards, seen)
    for k, d in sorted((fn.__kwdefaults__ or {}).items()):
        _dependency(f"{name}.<default {k}>", d, parts, guards, seen)
    globs = fn.__globals__
    written = written_into(tree)
    for ref in global_refs(code, tree):
        if ref[0] in written:
            value = globs.get(ref[0], _MISSING)
            if value is not _MISSING and len(ref) == 1:
                guards.binds.append((globs, ref[0], value))  # rebinding it still counts
            continue
        _follow(globs, ref, parts, guards, seen)
    for cell_name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # empty cell
            continue
        guards.cells.append((cell, value))
        if cell_name == "__class__" or cell_name in written:
            continue  # super()'s cell (the class, walked as such), or state the function writes into
        _dependency(f"{name}.<closure>.{cell_name}", value, parts, guards, seen)


def _walk_class(cls: type, parts, guards: _Guards, seen: set) -> None:
    name = _qualname(cls)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        strip_docstrings(tree)
        parts[name] = _h(ast.dump(tree))
    except (OSError, TypeError, SyntaxError):
        parts[name] = _h(repr(sorted(vars(cls))))  # no source: the methods below carry the code
    for attr in list(vars(cls).values()):
        f = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        if isinstance(f, property):
            f = f.fget
        if isinstance(f, types.FunctionType) and is_project_local(getattr(f, "__module__", None)):
            _walk(f, parts, guards, seen)


def _follow(globs: dict, ref: tuple[str, ...], parts, guards: _Guards, seen) -> None:
    """Resolve a global name (or module attribute chain) and fingerprint what it names."""
    head = ref[0]
    value = globs.get(head, _MISSING)
    if value is _MISSING:
        return  # a builtin or a name defined later: nothing of the user's
    guards.binds.append((globs, head, value))
    label = head
    for attr in ref[1:]:
        if not isinstance(value, types.ModuleType) or not is_project_local(value.__name__):
            break
        ns = vars(value)
        nxt = ns.get(attr, _MISSING)
        if nxt is _MISSING:
            break
        guards.binds.append((ns, attr, nxt))
        value, label = nxt, f"{label}.{attr}"
    _dependency(label, value, parts, guards, seen)


def _dependency(label: str, value, parts, guards: _Guards, seen) -> None:
    import functools

    if isinstance(value, types.ModuleType):
        return
    if isinstance(value, types.MethodType):
        _dependency(f"{label}.__func__", value.__func__, parts, guards, seen)
        _dependency(f"{label}.__self__", value.__self__, parts, guards, seen)
        return
    if isinstance(value, functools.partial):
        _dependency(f"{label}.func", value.func, parts, guards, seen)
        _dependency(f"{label}.args", (value.args, value.keywords), parts, guards, seen)
        return
    if isinstance(value, (types.FunctionType, type)):
        if is_project_local(getattr(value, "__module__", None)):
            _walk(value, parts, guards, seen)
        return
    if callable(value) and hasattr(value, "__wrapped__"):  # a terra Task or functools wrapper
        inner = inspect.unwrap(value)
        if is_project_local(getattr(inner, "__module__", None)):
            _walk(inner, parts, guards, seen)
        return
    if not _is_value(value):
        return
    cls = type(value)
    if is_project_local(getattr(cls, "__module__", None)):
        _walk(cls, parts, guards, seen)  # an instance of the project's class: its code and its state
    parts[f"const:{label}"] = value_part(value)
    if mutable(value):
        guards.contents.append((value, content_guard(value)))


# -- values ------------------------------------------------------------------------------


def _is_value(v) -> bool:
    """Data whose value a task's result may depend on (not a lock, logger, client...)."""
    if isinstance(v, ATOMS) or isinstance(v, (enum.Enum, tuple, list, dict, set, frozenset, bytearray)):
        return True
    t = type(v)
    mod = t.__module__ or ""
    if mod.startswith(("numpy", "pandas")) or dataclasses.is_dataclass(v):
        return True
    return is_project_local(mod)  # an instance of the project's own classes


def _h(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass"))
