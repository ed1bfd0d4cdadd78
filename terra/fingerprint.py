"""Code fingerprints: what a task's result depends on, as a hash.

A task's fingerprint covers its own code with comments, docstrings and
formatting ignored (the normalized AST), and, transitively, the project-local
functions, classes and module-level constants it refers to. Third-party and
standard-library code is not fingerprinted (its versions are recorded in each
run instead), nor is terra itself.

Fingerprints are memoized per function and revalidated on every call by
checking that each global name they depend on still refers to the same
object, so redefining a helper in a notebook invalidates as it should while
the common case costs a few dict lookups.
"""

from __future__ import annotations

import ast
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

__all__ = ["Fingerprint", "fingerprint"]

_MAX_CONST = 1 << 16  # bytes of repr beyond which a module constant is not inlined


class Fingerprint:
    """A function's code hash and the per-dependency hashes it was made of."""

    __slots__ = ("digest", "parts", "_deps")

    def __init__(self, digest: str, parts: dict[str, str], deps: list[tuple[dict, str, int]]):
        self.digest = digest
        self.parts = parts  # qualified name -> hash, for terra.why()
        self._deps = deps  # (namespace, name, id(obj)) the digest assumed

    def valid(self) -> bool:
        """True if every global it depended on is still bound to the same object."""
        for ns, name, ident in self._deps:
            if id(ns.get(name, _MISSING)) != ident:
                return False
        return True


_MISSING = object()
_memo: dict[Any, Fingerprint] = {}


def fingerprint(obj) -> Fingerprint:
    """The fingerprint of a function or class (memoized, revalidated cheaply)."""
    key = obj
    try:
        fp = _memo.get(key)
    except TypeError:
        fp, key = None, id(obj)
    if fp is not None and fp.valid():
        return fp
    parts: dict[str, str] = {}
    deps: list[tuple[dict, str, int]] = []
    _walk(obj, parts, deps, set())
    h = xxhash.xxh3_128()
    for name in sorted(parts):
        h.update(name.encode())
        h.update(b"\0")
        h.update(parts[name].encode())
        h.update(b"\0")
    fp = Fingerprint(h.hexdigest(), parts, deps)
    try:
        _memo[key] = fp
    except TypeError:
        pass
    return fp


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


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


def is_project_local(module_name: str | None) -> bool:
    """True if the module is the user's own code (not stdlib, site-packages or terra)."""
    global _ROOTS
    if not module_name:
        return False
    hit = _local_cache.get(module_name)
    if hit is not None:
        return hit
    if _ROOTS is None:
        _ROOTS = _third_party_roots()
    mod = sys.modules.get(module_name)
    if module_name == "__main__" or (mod is not None and getattr(mod, "__file__", None) is None and
                                     module_name in ("__main__", "__mp_main__")):
        result = True
    elif mod is None or module_name in sys.builtin_module_names:
        result = False
    else:
        f = getattr(mod, "__file__", None)
        if f is None:
            result = False
        else:
            f = os.path.realpath(f)
            result = not any(f == r or f.startswith(r + os.sep) for r in _ROOTS) and "site-packages" not in f
    _local_cache[module_name] = result
    return result


def _walk(obj, parts: dict[str, str], deps: list, seen: set) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, type):
        _walk_class(obj, parts, deps, seen)
        return
    fn = inspect.unwrap(obj) if callable(obj) else obj
    if isinstance(fn, (staticmethod, classmethod)):
        fn = fn.__func__
    code = getattr(fn, "__code__", None)
    if code is None:
        return
    name = _qualname(fn)
    tree, text = _normalized(fn)
    parts[name] = _h(text)
    globs = getattr(fn, "__globals__", {})
    for ref in _global_refs(code, tree):
        _follow(globs, ref, parts, deps, seen)
    for cell_name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # empty cell
            continue
        _dependency(f"{name}.<closure>.{cell_name}", value, parts, deps, seen)


def _walk_class(cls: type, parts, deps, seen) -> None:
    name = _qualname(cls)
    try:
        src = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(src)
        _strip(tree)
        parts[name] = _h(ast.dump(tree))
    except (OSError, TypeError, SyntaxError):
        parts[name] = _h(repr(sorted(vars(cls).keys())))
        tree = None
    for attr in vars(cls).values():
        f = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
        if isinstance(f, property):
            f = f.fget
        if isinstance(f, types.FunctionType) and is_project_local(getattr(f, "__module__", None)):
            globs = f.__globals__
            for ref in _global_refs(f.__code__, None):
                _follow(globs, ref, parts, deps, seen)


def _follow(globs: dict, ref: tuple[str, ...], parts, deps, seen) -> None:
    """Resolve a global name (or module attribute chain) and fingerprint what it names."""
    head = ref[0]
    value = globs.get(head, _MISSING)
    if value is _MISSING:
        return  # a builtin or a name defined later: nothing of the user's
    deps.append((globs, head, id(value)))
    label = head
    for attr in ref[1:]:
        if not isinstance(value, types.ModuleType) or not is_project_local(value.__name__):
            break
        ns = vars(value)
        nxt = ns.get(attr, _MISSING)
        if nxt is _MISSING:
            break
        deps.append((ns, attr, id(nxt)))
        value, label = nxt, f"{label}.{attr}"
    _dependency(label, value, parts, deps, seen)


def _dependency(label: str, value, parts, deps, seen) -> None:
    if isinstance(value, types.ModuleType):
        return
    if isinstance(value, (types.FunctionType, type)):
        if is_project_local(getattr(value, "__module__", None)):
            _walk(value, parts, deps, seen)
        return
    if callable(value) and hasattr(value, "__wrapped__"):  # a terra Task or functools wrapper
        inner = inspect.unwrap(value)
        if is_project_local(getattr(inner, "__module__", None)):
            _walk(inner, parts, deps, seen)
        return
    text = _constant_text(value)
    if text is not None:
        parts[f"const:{label}"] = _h(text)


def _constant_text(value) -> str | None:
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, enum.Enum)):
        text = repr(value)
    elif isinstance(value, (tuple, frozenset, list, dict, set)):
        try:
            text = repr(sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value)
        except Exception:  # noqa: BLE001 - an odd container is simply not fingerprinted
            return None
    else:
        return None
    return text if len(text) <= _MAX_CONST else None


def _normalized(fn) -> tuple[ast.AST | None, str]:
    try:
        src = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(src)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None, _bytecode_text(fn.__code__)
    node = tree.body[0] if tree.body else tree
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        node.decorator_list = []
        node.name = "_"  # renaming a task is not a change of its code
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Lambda):
        pass
    _strip(tree)
    return tree, ast.dump(tree, include_attributes=False)


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
        consts.append(_bytecode_text(c) if isinstance(c, types.CodeType) else repr(c))
    return repr((code.co_code, code.co_names, tuple(consts)))


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


def _code_names(code: types.CodeType):
    yield from code.co_names
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _code_names(c)


def _h(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass"))
