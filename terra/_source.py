"""The text a function's fingerprint part hashes: its normalized source, or the bytecode that runs.

The source is used only when compiling the file's current text gives the
loaded code (line numbers aside); otherwise (no source: ``python -c``,
``exec``; or a file edited since it was imported) the loaded bytecode, names
and constants are hashed, with a warning for the edited file. Files loaded
through an import hook that rewrites code (pytest's assertion rewriting)
cannot be compared with their source; their source is trusted.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import sys
import textwrap
import types
import warnings

import xxhash

__all__ = ["code_text", "global_refs", "receive_sources", "sources", "strip_docstrings", "written"]


def code_text(fn) -> tuple[ast.AST | None, str]:
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
    strip_docstrings(tree)
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


def sources(fns) -> dict:
    """The source of each function (that has one matching its code), keyed by its code, to send along.

    A function pickled by value (cloudpickle) arrives without its file; the
    receiver passes this to :func:`receive_sources` so that it fingerprints
    the same code the same way (and hits the sender's cache entries).
    """
    out = {}
    for fn in fns:
        found = _source_of(fn)
        if found is not None:
            out[_signature(fn.__code__)] = found
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
        warnings.warn(f"terra: {fn.__module__}.{fn.__qualname__} was changed in {fn.__code__.co_filename} since it was imported; "
                      "its results are keyed by the code loaded in this process (reload it to run the new code)",
                      stacklevel=4)


def strip_docstrings(tree: ast.AST) -> None:
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


def global_refs(code: types.CodeType, tree: ast.AST | None) -> list[tuple[str, ...]]:
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


def written(tree: ast.AST | None) -> frozenset:
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
