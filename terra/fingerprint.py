"""Code fingerprints: what a task's result depends on, as a hash.

A fingerprint covers, transitively, the project-local functions, classes and
module-level values a task refers to. Third-party and standard-library code is
not fingerprinted (its versions are recorded in each run instead), nor is
terra itself. Each part is hashed as follows:

* a function: its normalized AST (comments, docstrings, formatting, its name
  and decorators ignored) when the source on disk is the code that is loaded.
  When there is no source (``python -c``, ``exec``) or the file was edited
  since it was imported, the loaded bytecode, names and constants are hashed
  instead: the fingerprint is always of the code that runs. A lambda is its
  own node of its line (two lambdas on one line differ). Defaults and
  closure cells are hashed by value.
* a class: its source, and each of its methods as a function.
* a value (a module global or closure cell that is data: scalars,
  containers, numpy arrays, pandas objects, dataclasses, instances of the
  project's classes): by value, with :func:`terra.serialize.hash_value` (the
  id ``terra.hash`` gives). A value over :data:`MAX_CONST_BYTES` is not
  hashed; its part says ``unhashed: ...`` and ``terra why`` lists it.

Fingerprints are memoized per callable and revalidated on every call, so
redefining a helper in a notebook or mutating a global dict invalidates them
while the common case stays a few identity checks:

* every global name (and attribute chain) used must still be bound to the
  *same object* (``is``; the fingerprint holds a reference, so an id cannot be
  reused), every function walked must keep its ``__code__``, defaults and
  closure cells;
* mutable values are revalidated by content, with a cheap guard: containers
  up to :data:`GUARD_ITEMS` items are checked in full (exactly: types and
  reprs), larger ones by their length and a spread sample of items; numpy
  arrays by pointer, shape, strides, dtype and up to :data:`GUARD_BYTES`
  bytes (the whole buffer when small, evenly spaced windows when not).

The trade-off: an in-place write into a large container or array that
touches no sampled item is not seen by the process that made it (a fresh
process hashes the value whole). Re-hashing a 100 MB array on every call
would cost about 10 ms per cache hit, a hundred times a hit's cost.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import linecache
import os
import site
import sys
import sysconfig
import textwrap
import types
import warnings
from typing import Any

import xxhash

__all__ = ["Fingerprint", "fingerprint", "module_name", "receive_sources", "sources"]

MAX_CONST_BYTES = 1 << 26  #: values larger than this (64 MiB) are recorded as not hashed
GUARD_ITEMS = 512  #: items of a mutable container revalidated exactly on every call
GUARD_BYTES = 1 << 14  #: bytes of a numpy array revalidated on every call

_ATOMS = (type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis))


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
        for ns, name, obj in self._binds:
            if ns.get(name, _MISSING) is not obj:
                return False
        for fn, code, defaults, kwdefaults in self._fns:
            if fn.__code__ is not code or fn.__defaults__ is not defaults or fn.__kwdefaults__ is not kwdefaults:
                return False
        for cell, obj in self._cells:
            try:
                if cell.cell_contents is not obj:
                    return False
            except ValueError:  # the cell was emptied
                return False
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


# -- where code lives ------------------------------------------------------------------

_MAIN_NAMES = ("__main__", "__mp_main__")
_main_cache: dict[str, str] = {}


def module_name(name: str | None) -> str:
    """The importable name of the module called ``name`` in this process.

    ``__main__`` (and ``__mp_main__`` in spawned workers) resolve to the name
    the same file is imported under: its spec name for ``python -m pkg.mod``,
    else the file's dotted path below the ``sys.path`` entry holding it. A
    main module with no file (``python -c``, a notebook) stays ``__main__``.
    """
    if not name:
        return "__main__"
    if name not in _MAIN_NAMES:
        return name
    hit = _main_cache.get(name)
    if hit is None:
        hit = _main_cache[name] = _resolve_main(sys.modules.get(name)) or "__main__"
    return hit


def _resolve_main(mod) -> str | None:
    spec = getattr(mod, "__spec__", None)
    if spec is not None and spec.name and spec.name not in _MAIN_NAMES:
        return spec.name
    f = getattr(mod, "__file__", None)
    if not f or not f.endswith(".py"):
        return None
    f = os.path.realpath(f)
    best = None
    for entry in sys.path:
        root = os.path.realpath(entry or os.getcwd())
        if not f.startswith(root + os.sep):
            continue
        rel = os.path.relpath(f, root)[:-3].split(os.sep)
        if rel[-1] == "__init__":
            rel = rel[:-1]
        pkg_dirs = [os.path.join(root, *rel[:i]) for i in range(1, len(rel))]
        if rel and all(p.isidentifier() for p in rel) and all(
                os.path.exists(os.path.join(d, "__init__.py")) for d in pkg_dirs):
            if best is None or len(rel) < len(best):
                best = rel
    return ".".join(best) if best else None


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
    tree, text = _code_text(fn)
    parts[name] = _h(text)
    guards.fns.append((fn, code, fn.__defaults__, fn.__kwdefaults__))
    for i, d in enumerate(fn.__defaults__ or ()):
        _dependency(f"{name}.<default {i}>", d, parts, guards, seen)
    for k, d in sorted((fn.__kwdefaults__ or {}).items()):
        _dependency(f"{name}.<default {k}>", d, parts, guards, seen)
    globs = fn.__globals__
    written = _written(tree)
    for ref in _global_refs(code, tree):
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
        _strip(tree)
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
    if _mutable(value):
        guards.contents.append((value, content_guard(value)))


# -- values ------------------------------------------------------------------------------


def _is_value(v) -> bool:
    """Data whose value a task's result may depend on (not a lock, logger, client...)."""
    if isinstance(v, _ATOMS) or isinstance(v, (enum.Enum, tuple, list, dict, set, frozenset, bytearray)):
        return True
    t = type(v)
    mod = t.__module__ or ""
    if mod.startswith(("numpy", "pandas")) or dataclasses.is_dataclass(v):
        return True
    return is_project_local(mod)  # an instance of the project's own classes


def _mutable(v) -> bool:
    if isinstance(v, _ATOMS) or isinstance(v, enum.Enum):
        return False
    if type(v) in (tuple, frozenset):
        return any(_mutable(x) for x in v)
    return True


def value_part(value) -> str:
    """A value's part of a fingerprint: the hex of ``hash_value(value)``, or ``unhashed: why``."""
    size = _size(value, MAX_CONST_BYTES)
    if size > MAX_CONST_BYTES:
        return f"unhashed: {type(value).__name__} over {MAX_CONST_BYTES >> 20} MiB"
    from .serialize import PickleWarning, hash_value

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PickleWarning)
            return hash_value(value).hex()
    except Exception as e:  # noqa: BLE001 - recorded, never skipped silently
        return f"unhashed: {type(value).__name__} cannot be hashed ({type(e).__name__})"


def _size(v, limit: int, depth: int = 0) -> int:
    """Approximate byte size of a value, stopping once past ``limit``."""
    nbytes = getattr(v, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(v, (str, bytes, bytearray)):
        return len(v)
    if depth > 50:
        return limit + 1  # a structure this deep is not a constant to hash on every import
    total = 0
    if isinstance(v, dict):
        items = (x for kv in v.items() for x in kv)
    elif isinstance(v, (list, tuple, set, frozenset)):
        items = iter(v)
    elif type(v).__module__.startswith("pandas"):
        try:
            return int(v.memory_usage(deep=True).sum()) if hasattr(v, "columns") else int(v.memory_usage(deep=True))
        except Exception:  # noqa: BLE001
            return 0
    elif hasattr(v, "__dict__") and not isinstance(v, type):
        items = iter(vars(v).values())
    else:
        return 8
    for x in items:
        total += 8 + _size(x, limit - total, depth + 1)
        if total > limit:
            break
    return total


def content_guard(v) -> int:
    """A cheap digest of a mutable value's content, recomputed when a fingerprint is revalidated."""
    h = xxhash.xxh3_64()
    _feed(v, h, [GUARD_ITEMS])
    return h.intdigest()


def _feed(v, h, budget: list) -> None:
    budget[0] -= 1
    t = type(v)
    h.update(t.__name__.encode())
    if t is str:
        h.update(v.encode("utf-8", "surrogatepass"))
    elif t is bytes or t is bytearray:
        h.update(v)
    elif t in (int, float, bool, complex, type(None)) or isinstance(v, enum.Enum):
        h.update(repr(v).encode())
    elif t in (list, tuple):
        h.update(len(v).to_bytes(8, "little"))
        for x in _spread(v, budget):
            _feed(x, h, budget)
    elif t is dict:
        h.update(len(v).to_bytes(8, "little"))
        n = max(budget[0], 8)
        for i, (k, x) in enumerate(v.items()):
            if i >= n:
                break
            _feed(k, h, budget)
            _feed(x, h, budget)
    elif t in (set, frozenset):
        h.update(len(v).to_bytes(8, "little"))
        if len(v) <= budget[0]:
            for x in v:  # the same object iterates in the same order until it changes
                _feed(x, h, budget)
    elif t.__module__ == "numpy" and hasattr(v, "dtype") and hasattr(v, "strides"):
        _feed_array(v, h, budget)
    elif t.__module__.startswith("pandas"):
        h.update(repr(getattr(v, "shape", None)).encode())
        if hasattr(v, "columns"):
            for name in v.columns[: max(budget[0], 1)]:
                _feed(repr(name), h, budget)
                _feed_array(v[name].to_numpy(), h, budget)
        elif hasattr(v, "to_numpy"):
            _feed_array(v.to_numpy(), h, budget)
    elif hasattr(v, "__dict__") and not isinstance(v, type):
        h.update(id(v).to_bytes(8, "little"))
        _feed(vars(v), h, budget)
    else:
        h.update(id(v).to_bytes(8, "little"))


def _spread(seq, budget: list):
    n = len(seq)
    room = max(budget[0], 8)
    if n <= room:
        return seq
    step = n / room
    return [seq[int(i * step)] for i in range(room)] + [seq[-1]]


def _feed_array(a, h, budget: list) -> None:
    import numpy as np

    # hash() is per process, as is the guard: it is only compared within this process.
    h.update(hash((a.shape, a.strides, a.dtype.str)).to_bytes(8, "little", signed=True))
    if a.dtype.hasobject:
        for x in _spread(a.reshape(-1), budget):
            _feed(x, h, budget)
        return
    if a.nbytes <= GUARD_BYTES:
        h.update(a if a.flags.c_contiguous else np.ascontiguousarray(a))
        return
    # Whole elements at an even stride (always the first and the last): one gather, one hash.
    flat = a.reshape(-1) if a.flags.c_contiguous else a.ravel(order="K") if a.flags.f_contiguous else None
    if flat is None:
        flat = a[tuple(slice(None, None, max(1, n // 16)) for n in a.shape)].reshape(-1)
    step = max(1, flat.size * flat.itemsize // GUARD_BYTES)
    h.update(flat[::step].tobytes())
    h.update(flat[-1:].tobytes())


# -- code as text ------------------------------------------------------------------------------


def _code_text(fn) -> tuple[ast.AST | None, str]:
    """The text a function's part hashes: its normalized AST, or its loaded bytecode."""
    code = fn.__code__
    found = _source_of(fn)
    if found is None:
        return None, "bytecode:" + _bytecode_text(code)
    lines, start = found
    src = "".join(lines)
    margin = len(src) - len(src.lstrip(" \t")) if src[:1] in " \t" else 0
    try:
        tree = ast.parse(textwrap.dedent(src))
    except SyntaxError:
        return None, "bytecode:" + _bytecode_text(code)
    node = tree.body[0] if tree.body else tree
    if code.co_name == "<lambda>":
        lam = _lambda_node(tree, code, start, margin)
        if lam is None:
            return None, "bytecode:" + _bytecode_text(code)
        node = tree = lam
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        node.decorator_list = []
        node.name = "_"  # renaming a task is not a change of its code
    _strip(tree)
    return tree, ast.dump(tree, include_attributes=False)


def _source_of(fn) -> tuple[list[str], int] | None:
    """The source lines of the code that is loaded, or None (no source, or the file changed since import).

    The source is used only when compiling the file's current text gives the
    loaded code; otherwise the bytecode is what runs, and what is hashed.
    """
    code = fn.__code__
    if _received:
        hit = _received.get(_signature(code))
        if hit is not None:
            return hit
    try:
        lines, start = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return None
    if not _source_matches(code) and _plain_loader(fn):
        _warn_stale(fn)
        return None
    return lines, start


_received: dict[tuple, tuple[list[str], int]] = {}


def sources(fp: Fingerprint) -> dict:
    """The source of each function a fingerprint covers, keyed by its code, to send along with them.

    A function pickled by value (cloudpickle) arrives without its file; the
    receiver passes this to :func:`receive_sources` so that it fingerprints
    the same code the same way (and hits the sender's cache entries).
    """
    out = {}
    for fn, code, _, _ in fp._fns:
        found = _source_of(fn)
        if found is not None:
            out[_signature(code)] = found
    return out


def receive_sources(found: dict) -> None:
    """Register sources sent by :func:`sources`; used only for code whose bytecode is identical."""
    _received.update(found)


def _lambda_node(tree: ast.AST, code: types.CodeType, start: int, margin: int) -> ast.Lambda | None:
    """The lambda of the parsed lines whose span holds the code's instructions."""
    lambdas = [n for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
    positions = getattr(code, "co_positions", None)  # Python 3.11+
    if positions is None:
        return lambdas[0] if len(lambdas) == 1 else None
    spots = [(ln, col) for ln, _, col, end in positions()
             if ln is not None and col is not None and (col, end) != (0, 0)]
    if not spots:
        return None
    ln, col = min(spots)
    ln, col = ln - start + 1, col - margin
    best = None
    for node in lambdas:
        if (node.lineno, node.col_offset) <= (ln, col) \
                <= (node.end_lineno, node.end_col_offset):
            if best is None or (node.lineno, node.col_offset) > (best.lineno, best.col_offset):
                best = node
    return best


def _plain_loader(fn) -> bool:
    """True if the function's module was compiled from its file as is (no code-rewriting import hook).

    Files loaded through a hook that rewrites code (pytest's assertion
    rewriting) cannot be compared with their source; their source is trusted.
    """
    import importlib.machinery as m

    mod = sys.modules.get(fn.__module__ or "")
    loader = getattr(mod, "__loader__", None) if mod is not None else fn.__globals__.get("__loader__")
    return loader is None or type(loader) in (m.SourceFileLoader, m.SourcelessFileLoader)


_file_tables: dict[str, tuple[int, dict]] = {}
_stale_warned: set = set()


def _source_matches(code: types.CodeType) -> bool:
    """True if compiling the file's current source yields this code (line numbers aside)."""
    filename = code.co_filename
    lines = linecache.getlines(filename)  # inspect.getsourcelines just refreshed it
    if not lines:
        return False
    text = "".join(lines)
    tag = xxhash.xxh3_64_intdigest(text.encode("utf-8", "surrogatepass"))
    cached = _file_tables.get(filename)
    if cached is None or cached[0] != tag:
        table: dict[str, set] = {}
        try:
            _index(compile(text, filename, "exec", dont_inherit=True), table)
        except (SyntaxError, ValueError):
            pass
        cached = _file_tables[filename] = (tag, table)
    return _signature(code) in cached[1].get(_qual(code), ())


def _index(code: types.CodeType, table: dict) -> None:
    table.setdefault(_qual(code), set()).add(_signature(code))
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _index(c, table)


def _qual(code: types.CodeType) -> str:
    return getattr(code, "co_qualname", code.co_name)  # co_qualname: Python 3.11+


def _signature(code: types.CodeType) -> tuple:
    consts = tuple(_signature(c) if isinstance(c, types.CodeType) else (type(c).__name__, repr(c))
                   for c in code.co_consts)
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
            code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags, consts)


def _warn_stale(fn) -> None:
    key = (fn.__code__.co_filename, _qual(fn.__code__))
    if key not in _stale_warned:
        _stale_warned.add(key)
        warnings.warn(f"terra: {_qualname(fn)} was changed in {fn.__code__.co_filename} since it was imported; "
                      "its results are keyed by the code loaded in this process (reload it to run the new code)",
                      stacklevel=4)


def _strip(tree: ast.AST) -> None:
    """Remove docstrings in place."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]


def _bytecode_text(code: types.CodeType) -> str:
    consts = []
    for c in code.co_consts:
        consts.append(_bytecode_text(c) if isinstance(c, types.CodeType) else f"{type(c).__name__}:{c!r}")
    return repr((code.co_code, code.co_names, code.co_varnames, code.co_freevars, code.co_argcount,
                 code.co_kwonlyargcount, code.co_flags, tuple(consts)))


def _global_refs(code: types.CodeType, tree: ast.AST | None) -> list[tuple[str, ...]]:
    """Global names the code loads, with attribute chains (``mod.helper``) where visible."""
    names = set(_code_names(code))
    chains: set[tuple[str, ...]] = set()
    if tree is not None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain = []
                cur = node
                while isinstance(cur, ast.Attribute):
                    chain.append(cur.attr)
                    cur = cur.value
                if isinstance(cur, ast.Name) and cur.id in names:
                    chains.add((cur.id, *reversed(chain)))
    out = {(n,) for n in names}
    out.update(chains)
    return sorted(out)


_MUTATORS = frozenset({"append", "extend", "add", "update", "insert", "clear", "discard", "remove",
                       "appendleft", "extendleft"})


def _written(tree: ast.AST | None) -> frozenset:
    """Globals the code writes into (``LOG.append(x)``, ``COUNTS[k] = n``, ``STATE.x = v``).

    Such a global is state the task keeps (a log, a counter, a memo), not an
    input: a result that depended on it would depend on the call history,
    which no cache can honour. Its binding is guarded, its content is not
    hashed; otherwise every call would miss once the task had written to it.
    """
    if tree is None:
        return frozenset()
    parents: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
    writes: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)):
            continue
        up = parents.get(id(node))
        if isinstance(up, (ast.Subscript, ast.Attribute)) and up.value is node:
            if isinstance(up.ctx, (ast.Store, ast.Del)):
                writes.add(node.id)
            elif isinstance(up, ast.Attribute) and up.attr in _MUTATORS:
                call = parents.get(id(up))
                if isinstance(call, ast.Call) and call.func is up:
                    writes.add(node.id)
    return frozenset(writes)


def _code_names(code: types.CodeType):
    yield from code.co_names
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _code_names(c)


def _h(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass"))
