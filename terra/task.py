"""Tasks: the decorator, cache keys, and the life of a run.

A call binds its arguments to the signature, computes the cache key
``hash(task identity, code fingerprint, input ids)`` and looks it up: a hit
returns the stored outputs of the original run without running anything. A
miss takes a lease on the key (so concurrent identical calls compute once),
allocates the next run id, runs the function with its output captured, stores
inputs, outputs, log and run-dir snapshot, then commits the record and its
index entries in one transaction.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
import types
import traceback
import warnings
from typing import TYPE_CHECKING, Any, Callable

import msgpack
import xxhash

from . import runs as R
from .config import get_config
from .errors import CorruptRef, DamagedRefWarning, SerializationError, TaskError
from .files import File, FileInput, is_file_arg
from .io import Artifact, TaskOutput
from .leases import begin, committed_counter, end, leases, wait
from .objects import ObjectId, Run, Tree, digest, encode, is_inline
from .session import current_store, store_for
from .store import Store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Task", "task"]

_CALL_KEYWORDS = ("force", "return_run_id", "skip_terra_cache", "silence_task")
_CALL_KEYWORD_SET = frozenset(_CALL_KEYWORDS)
_RESERVED = ("run_dir", "run_id")


class Task:
    """A function (or class) whose every call is a recorded, cached run.

    Use bare (``@Task``), as ``@Task.make_task``, or with options through
    ``@Task.make(...)`` / ``@terra.task(...)``.

    Its ``identity`` is the importable ``module:qualname`` of the code it wraps
    (``__main__`` resolved to the file's import name); a partial, bound method
    or callable object is named after its function or class, and the values
    bound into it are hashed into every call's key. A task pickles by
    reference to its module-level name, else by value (cloudpickle).

    Args:
        fn: a function, class, ``functools.partial``, bound method or callable object.
        version: pins the code fingerprint: the cache survives code edits until it changes.
        no_dump_args: arguments not stored with the run (still part of the cache key).
        no_load_args: arguments whose Artifacts are passed to the function unloaded.
        cache_ignored_args: arguments stored but not part of the cache key.
        cache: False runs every call (still recorded).
        notify: Slack message when a computed run ends: True, False or "failure";
            None follows the config's ``notify``.

    The names in the ``*_args`` options are parameter names (``args`` for all
    of ``*args``) or, for a task taking ``**kwargs``, keywords passed there.
    ``pathlib.Path`` and :class:`terra.File` arguments are keyed by the
    content of the file or directory (see :mod:`terra.files`).
    """

    def __init__(self, fn: Callable, *, version: str | int | None = None, no_dump_args=(),
                 no_load_args=(), cache_ignored_args=(), cache: bool = True,
                 notify: bool | str | None = None):
        if not callable(fn):
            raise TaskError(f"Task needs a function or class, got {fn!r}")
        if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TaskError(f"{getattr(fn, '__qualname__', fn)} cannot be a task: it returns a coroutine or "
                            "generator, not a value to store; make a function that returns the result")
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.module, self.qualname, self.name = _describe(fn)
        self.identity = f"{self.module}:{self.qualname}"
        self._options = {"version": version, "no_dump_args": no_dump_args, "no_load_args": no_load_args,
                         "cache_ignored_args": cache_ignored_args, "cache": cache, "notify": notify}
        self._bound = _bound_values(fn)
        self.version = version
        self.cache = cache
        if not (notify is None or isinstance(notify, bool) or (isinstance(notify, str) and notify == "failure")):
            raise TaskError(f"task {self.name}: notify must be True, False, \"failure\" or None, got {notify!r}")
        self.notify = notify
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError) as e:
            raise TaskError(f"task {self.name}: cannot read its signature: {e}") from e
        params = self.signature.parameters
        self.no_dump = _names(no_dump_args, params, self.name, "no_dump_args")
        self.no_load = _names(no_load_args, params, self.name, "no_load_args")
        self.cache_ignored = _names(cache_ignored_args, params, self.name, "cache_ignored_args")
        self._wants = tuple(n for n in _RESERVED if n in params)
        kinds = {p.kind for p in params.values()}
        self._simple = not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD,
                                    inspect.Parameter.POSITIONAL_ONLY}
        self._positional = [n for n, p in params.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
        # Which parameter each positional argument lands in (for no_load_args); *args takes the rest.
        self._slots = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self._star = next((n for n, p in params.items() if p.kind == p.VAR_POSITIONAL), None)
        self._var_pos = next((n for n, p in params.items() if p.kind == p.VAR_POSITIONAL), None)
        self._var_kw = next((n for n, p in params.items() if p.kind == p.VAR_KEYWORD), None)
        self._defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}
        # The common call passes every parameter by position to a plain signature: binding it is
        # a zip (see _prepare). -1 when the signature has anything else.
        plain = self._simple and not self._wants and len(self._positional) == len(params)
        self._n_plain = len(params) if plain else -1
        # (name, position) of the keyed parameters in key order (by name), for such calls.
        self._key_order = tuple(sorted((n, i) for i, n in enumerate(self._positional) if n not in self.cache_ignored))
        self._key_head: tuple | None = None  # their key's packed constant parts (see _plain_key)
        self._fp = None  # the fingerprint last used, kept while its guards hold (see _code)
        self._last_run_id: int | None = None

    # -- construction -----------------------------------------------------------

    @classmethod
    def make_task(cls, fn: Callable) -> "Task":
        """Decorator: make ``fn`` a task with default options."""
        return cls(fn)

    @classmethod
    def make(cls, **options) -> Callable[[Callable], "Task"]:
        """Decorator factory: ``@Task.make(version=2, no_dump_args=["verbose"])``."""
        return lambda fn: cls(fn, **options)

    def __get__(self, obj, objtype=None):
        # Tasks defined in a class body behave like methods.
        return self if obj is None else functools.partial(self, obj)

    def __reduce__(self):
        # By reference when the task is what its module-level name holds (the
        # receiver imports it); by value through cloudpickle otherwise: tasks in
        # __main__, closures, lambdas, partials, bound methods.
        fn = self.fn
        mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
        if isinstance(fn, (types.FunctionType, type)) and mod and qual and mod not in ("__main__", "__mp_main__") \
                and "<" not in qual and _resolve(sys.modules.get(mod), qual) is self:
            return _task_by_name, (mod, qual)
        import cloudpickle

        from .fingerprint import sources

        return _task_by_value, (cloudpickle.dumps((fn, self._options, self.identity)), sources(fingerprint(fn)))

    # -- identity -------------------------------------------------------------------

    def _code(self) -> str:
        """The code part of the cache key: fingerprint (or version pin) and the values bound into the callable."""
        if self.version is not None:
            code = f"version:{self.version}"
        else:
            fp = self._fp
            if fp is None or not fp.valid():  # revalidated on every call: edits and mutations count at once
                fp = self._fp = fingerprint(self.fn)
            code = fp.digest
        if self._bound is None:
            return code
        return code + "|" + _bound_digest(self)[0]

    def _code_fields(self) -> dict:
        """What a run record says of the code: the fingerprint and its parts, bound values included."""
        fp = fingerprint(self.fn)
        parts = dict(fp.parts)
        if self._bound is not None:
            parts.update(_bound_digest(self)[1])
        return {"fingerprint": fp.digest, "code": parts}

    # -- calling ------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> TaskOutput:
        """Run (or fetch from the cache) the function on these arguments; see :data:`terra.io.TaskOutput`."""
        if kwargs and not _CALL_KEYWORD_SET.isdisjoint(kwargs):
            return self._call_with_options(args, kwargs)
        cfg = get_config()
        store = store_for(cfg)
        looked_up = False
        if not kwargs and self.cache:
            # The common call: a hit is answered from the key alone, before anything a miss needs is built.
            key = _plain_key(self, args)
            if key is not None:
                try:  # _lookup's body: one call less on every hit
                    hit = R.cached(store, key)
                except CorruptRef as e:
                    hit = _damaged(e)
                if hit is not None:
                    run_id, output = _hit(self, store, hit, cfg)
                    self._last_run_id = run_id
                    return output
                looked_up = True
        return self._answer(store, args, kwargs, False, looked_up)[1]

    def _call_with_options(self, args, kwargs):
        """A call passing ``force``, ``return_run_id``, ``skip_terra_cache`` or ``silence_task``."""
        opts = {k: kwargs.pop(k) for k in _CALL_KEYWORDS if k in kwargs and k not in self.signature.parameters}
        if opts.get("silence_task"):
            call_args, call_kwargs = self._call_args(args, kwargs)
            return self.fn(*call_args, **call_kwargs)
        force = bool(opts.get("force") or opts.get("skip_terra_cache"))
        run_id, output = self._answer(current_store(), args, kwargs, force)
        return (run_id, output) if opts.get("return_run_id") else output

    def _answer(self, store: Store, args, kwargs, force: bool, looked_up: bool = False) -> tuple[int, TaskOutput]:
        """Bind, key and answer a call: ``(run_id, output)``."""
        bound, dumped, key = _prepare(self, args, kwargs, store)
        run_id, output = _execute_keyed(self, store, key, args, kwargs, bound, dumped, force, looked_up=looked_up)
        self._last_run_id = run_id
        return run_id, output

    def _bind(self, args, kwargs) -> dict[str, Any]:
        """Arguments by parameter name with defaults applied, as ``BoundArguments.arguments``.

        ``*args`` is one entry (a tuple) and ``**kwargs`` one entry (a dict),
        never merged with the named parameters.
        """
        for r in self._wants:
            kwargs.pop(r, None)
        if self._simple and len(args) <= len(self._positional):
            bound = dict(zip(self._positional, args))
            for k, v in kwargs.items():
                if k not in self.signature.parameters or k in bound:
                    return self._bind_slow(args, kwargs)
                bound[k] = v
            for k, v in self._defaults.items():
                bound.setdefault(k, v)
            if len(bound) + len(self._wants) != len(self.signature.parameters):
                return self._bind_slow(args, kwargs)
            for r in self._wants:
                bound.pop(r, None)
            return bound
        return self._bind_slow(args, kwargs)

    def _bind_slow(self, args, kwargs) -> dict[str, Any]:
        try:
            ba = self.signature.bind(*args, **kwargs, **{r: None for r in self._wants})
        except TypeError as e:
            raise TaskError(f"task {self.name}: {e}") from None
        ba.apply_defaults()
        out = {name: value for name, value in ba.arguments.items() if name not in self._wants}
        if self._var_kw is not None and any(r in out[self._var_kw] for r in _RESERVED):
            # run_dir/run_id never reach the function through **kwargs (see _call_args)
            out[self._var_kw] = {k: v for k, v in out[self._var_kw].items() if k not in _RESERVED}
        return out

    def _call_args(self, args, kwargs) -> tuple[list, dict]:
        """Arguments as the function receives them: Artifacts loaded, except ``no_load_args``."""
        names, no_load = self._slots, self.no_load
        call_args = [a if (names[i] if i < len(names) else self._star) in no_load else _load_deep(a)
                     for i, a in enumerate(args)]
        call_kwargs = {k: (v if k in no_load else _load_deep(v)) for k, v in kwargs.items() if k not in _RESERVED}
        return call_args, call_kwargs

    # -- parallel calls (terra.parallel) ------------------------------------------

    def submit(self, *args, executor=None, **kwargs):
        """Start one call on ``executor`` (a ``concurrent.futures.Executor``; None: here, now).

        A hit or a call already computed comes back as a done Future. Only the
        task's arguments go into ``args``/``kwargs``: ``executor`` is the one
        keyword taken here.

        Returns:
            A ``concurrent.futures.Future`` of what the call returns (or raises).
        """
        from .parallel import submit_call

        return submit_call(self, args, kwargs, executor)

    def map(self, *iterables, executor=None, as_completed: bool = False):
        """Call the task over ``iterables`` zipped (one per positional argument), like ``Executor.map``.

        Hits are answered at once, identical calls run once, misses go to
        ``executor`` (None: one after another in this process; a Dask ``Client``
        is used through ``get_executor(pure=False)``). A progress bar shows on a terminal.

        Args:
            as_completed: yield ``(index, result)`` pairs as calls finish instead
                of returning the list in input order.

        Returns:
            The results in input order (or the iterator of ``(index, result)``).

        Raises:
            Exception: the first failed call's exception (by input order), after every call
                finished and was recorded; with ``as_completed``, when the iterator reaches it.
        """
        from .parallel import map_calls

        return map_calls(self, iterables, executor, as_completed)

    # -- accessors (original terra API) --------------------------------------------

    @property
    def last_run_id(self) -> int | None:
        """Run id of this task's latest call in this process, else its latest successful run."""
        if self._last_run_id is not None:
            return self._last_run_id
        for rid, status in self._runs(current_store(), reverse=True):
            if status == "success":
                return rid
        return None

    def _run_id(self, run_id):
        if run_id is not None:
            return run_id
        rid = self.last_run_id
        if rid is None:
            raise R.NotFound(f"task {self.name} has no successful run")
        return rid

    def _runs(self, store: Store, reverse=False):
        with store.refs() as txn:
            items = list(txn.scan(R.k_task_prefix(self.identity), reverse=reverse))
        return [(int.from_bytes(k[-8:], "big"), R.byte_status(v)) for k, v in items]

    def out(self, run_id: int | None = None):
        """Outputs of ``run_id`` (default: the latest run)."""
        return R.out(self._run_id(run_id))

    def inp(self, run_id: int | None = None) -> dict:
        """Inputs of ``run_id`` (default: the latest run)."""
        return R.inp(self._run_id(run_id))

    def get_meta(self, run_id: int | None = None) -> dict:
        """Metadata of ``run_id`` (default: the latest run)."""
        return R.get_meta(self._run_id(run_id))

    def get_log(self, run_id: int | None = None) -> str:
        """Captured log of ``run_id`` (default: the latest run)."""
        return R.get_log(self._run_id(run_id))

    def run_dir(self, run_id: int | None = None) -> str:
        """Run directory of ``run_id`` (default: the latest run), restored if needed."""
        return R.get_run_dir(self._run_id(run_id))

    def get_runs(self) -> "pd.DataFrame":
        """This task's runs as a DataFrame, newest first."""
        from .query import get_runs

        return get_runs(task=self.identity)

    def __repr__(self) -> str:
        return f"<terra.Task {self.identity}>"


def task(fn: Callable | None = None, **options):
    """Make a task: ``@terra.task`` or ``@terra.task(version=..., cache=False, ...)``."""
    if fn is not None:
        return Task(fn, **options)
    return lambda f: Task(f, **options)


# -- identity and pickling ----------------------------------------------------------


def _describe(fn) -> tuple[str, str, str]:
    """(module, qualname, name) naming a callable; ``__main__`` resolved to its importable name."""
    from .fingerprint import module_name

    if isinstance(fn, functools.partial):
        module, qual, name = _describe(fn.func)
        return module, f"partial({qual})", name
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    elif not isinstance(fn, (types.FunctionType, type, types.BuiltinFunctionType)) and not hasattr(fn, "__qualname__"):
        cls = type(fn)  # a callable object: its class's __call__
        return module_name(cls.__module__), f"{cls.__qualname__}.__call__", cls.__name__
    name = getattr(fn, "__name__", type(fn).__name__)
    return module_name(getattr(fn, "__module__", None)), getattr(fn, "__qualname__", name), name


def _bound_values(fn) -> list[tuple[str, Any]] | None:
    """Where the values bound into a callable are (a partial's arguments, a method's instance...)."""
    out: list[tuple[str, Any]] = []
    prefix = "bound:"
    while isinstance(fn, functools.partial):
        out += [(f"{prefix}args[{i}]", lambda fn=fn, i=i: fn.args[i]) for i in range(len(fn.args))]
        out += [(f"{prefix}kw.{k}", lambda fn=fn, k=k: fn.keywords[k]) for k in sorted(fn.keywords)]
        fn, prefix = fn.func, prefix + "func."
    if isinstance(fn, types.MethodType):
        out.append((f"{prefix}self", lambda fn=fn: fn.__self__))
    elif not isinstance(fn, (types.FunctionType, type, types.BuiltinFunctionType)) and callable(fn) \
            and not hasattr(fn, "__qualname__"):
        out.append((f"{prefix}object", lambda fn=fn: fn))
    return out or None


def _bound_digest(t: Task) -> tuple[str, dict[str, str]]:
    """Hash the values bound into the task's callable now (they may have changed since the last call)."""
    from .serialize import hash_value

    parts = {}
    for label, get in t._bound:
        value = get()
        try:
            parts[label] = hash_value(value).hex()  # an instance may pickle, as a class-body task's self does
        except SerializationError as e:
            raise SerializationError(f"task {t.name}: cannot hash its bound value {label[6:]}: {e}") from None
    h = xxhash.xxh3_128()
    for label in sorted(parts):
        h.update(f"{label}\0{parts[label]}\0".encode())
    return h.hexdigest(), parts


def _resolve(mod, qual: str):
    obj = mod
    for attr in qual.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


def _task_by_name(module: str, qualname: str) -> Task:
    """Unpickle a task by reference: import its module and look its name up."""
    import importlib

    obj = _resolve(importlib.import_module(module), qualname)
    if not isinstance(obj, Task):
        raise TaskError(f"cannot unpickle task {module}:{qualname}: that name holds {obj!r}, not a task")
    return obj


def fingerprint(fn):
    """:func:`terra.fingerprint.fingerprint`, imported on the first call (ast, sysconfig... stay out of ``import terra``)."""
    global fingerprint
    from .fingerprint import fingerprint

    return fingerprint(fn)


def _task_by_value(payload: bytes, code_sources: dict) -> Task:
    """Unpickle a task sent by value; it keeps the identity and code fingerprint it had where it was made."""
    import pickle

    from .fingerprint import receive_sources

    receive_sources(code_sources)  # cloudpickle drops the file name: the sender's source stands in
    fn, options, identity = pickle.loads(payload)
    t = Task(fn, **options)
    t.identity = identity
    t.module, t.qualname = identity.split(":", 1)
    return t


def _names(names, params, task_name: str, option: str) -> frozenset:
    if isinstance(names, str):
        names = (names,)
    names = frozenset(names or ())
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = [n for n in names if n not in params and not has_var_kw]
    if unknown:
        raise TaskError(f"task {task_name}: {option} names unknown arguments {sorted(unknown)}")
    return names


# -- artifacts inside arguments ----------------------------------------------------


def _load_deep(v):
    t = type(v)
    if t is Artifact:
        return v.load()
    if t is File:
        return v.path
    if t is dict:
        return {k: _load_deep(x) for k, x in v.items()}
    if t is list:
        return [_load_deep(x) for x in v]
    if t is tuple:
        return tuple(_load_deep(x) for x in v)
    return v


def _artifacts(v, out: list) -> None:
    t = type(v)
    if t is Artifact:
        out.append(v)
    elif t is dict:
        for x in v.values():
            _artifacts(x, out)
    elif t in (list, tuple):
        for x in v:
            _artifacts(x, out)


def _entry(value, hash_only: bool, store: Store):
    if is_inline(value):
        return value
    ref = getattr(value, "__terra_ref__", None)
    if isinstance(ref, ObjectId):
        return ref
    from .serialize import hash_value, store_value

    return hash_value(value) if hash_only else store_value(store, value)


# -- the run lifecycle ---------------------------------------------------------------


#: Names the layout of the packed key below; change it whenever the layout changes.
KEY_FORMAT = "terra-call-2"


def _key_default(obj):
    if type(obj) is ObjectId:
        return msgpack.ExtType(0, bytes(obj))
    raise TypeError(f"unexpected {type(obj).__name__} in a cache key")


# Every value in a key is an exact None/bool/int/float/str/bytes (packed by
# msgpack in a family of its own: nil, bool, int, float64 with all its bits,
# str, bin) or an ObjectId (extension type 0): strict_types sends every
# subclass, ObjectId included, to _key_default instead of packing it as its base.
_key_packer = msgpack.Packer(use_bin_type=True, strict_types=True, default=_key_default)


def _cache_key(t: Task, named: list, var_positional: list, var_keyword: list) -> bytes:
    """xxh3-128 of the packed ``[KEY_FORMAT, identity, code, named, *args, **kwargs]``.

    ``named`` is ``[[name, entry], ...]`` sorted by name, ``var_positional``
    ``[entry, ...]`` in order, ``var_keyword`` ``[[key, entry], ...]`` sorted
    by key; an entry is an inline value or an ObjectId. Each part has its own
    slot, so no argument of one kind can pass for one of another.
    """
    code = t._code()
    return xxhash.xxh3_128_digest(_key_packer.pack([KEY_FORMAT, t.identity, code, named, var_positional,
                                                    var_keyword]))


def _plain_key(t: Task, args: tuple) -> bytes | None:
    """The cache key of a call passing inline values to every parameter by position (plain signature), else None.

    The same key as :func:`_call_key` gives, without binding (such a call has
    no defaults to apply, no files to hash and no values to hash as objects),
    and the same bytes as :func:`_cache_key` packs: msgpack writes an array
    as its header then each item, so the parts that depend only on the task
    and its code are packed once per code version and only the arguments on
    every call.
    """
    if len(args) != t._n_plain:
        return None
    for a in args:
        if not is_inline(a):
            return None
    code = t._code()  # revalidated on every call
    head = t._key_head
    if head is None or head[0] != code or head[1] != t.identity:
        head = t._key_head = _plain_key_head(t, code)
    prefix, pairs = head[2], head[3]
    pack = _key_packer.pack
    if len(pairs) == 1:  # the common one-parameter task: no list to build
        pair, i = pairs[0]
        return xxhash.xxh3_128_digest(prefix + pair + pack(args[i]) + _NO_VARIADICS)
    return xxhash.xxh3_128_digest(prefix + b"".join([pair + pack(args[i]) for pair, i in pairs]) + _NO_VARIADICS)


def _plain_key_head(t: Task, code: str) -> tuple:
    """The constant parts of a plain call's key: ``(code, identity, prefix, ((pair, position), ...))``.

    ``prefix`` packs the outer array's header, ``KEY_FORMAT``, identity, code
    and the header of ``named``; each ``pair`` packs the header and name of a
    ``[name, value]`` item, its value taken from ``args[position]``.
    """
    pk = _key_packer
    prefix = pk.pack_array_header(6) + pk.pack(KEY_FORMAT) + pk.pack(t.identity) + pk.pack(code) \
        + pk.pack_array_header(len(t._key_order))
    pairs = tuple((pk.pack_array_header(2) + pk.pack(name), i) for name, i in t._key_order)
    return code, t.identity, prefix, pairs


def _call_key(t: Task, bound: dict, store: Store) -> bytes:
    """The cache key of a bound call (``cache_ignored_args`` left out)."""
    ignored = t.cache_ignored
    where = None
    try:
        if t._simple:
            named = [[k, v if is_inline(v) else _entry(v, True, store)] for k, v in sorted(bound.items())
                     if k not in ignored]
            return _cache_key(t, named, _EMPTY, _EMPTY)
        named, var_pos, var_kw = [], [], []
        for where, v in sorted(bound.items()):
            if where in ignored:
                continue
            if where == t._var_pos:
                var_pos = [x if is_inline(x) else _entry(x, True, store) for x in v]
            elif where == t._var_kw:
                var_kw = [[k, x if is_inline(x) else _entry(x, True, store)] for k, x in sorted(v.items())
                          if k not in ignored]
            else:
                named.append([where, v if is_inline(v) else _entry(v, True, store)])
        return _cache_key(t, named, var_pos, var_kw)
    except SerializationError as e:
        if where is None:  # the simple path does not track it: find the argument again
            where = next((k for k, v in bound.items() if k not in ignored and not _hashable(v, store)), "")
        raise SerializationError(f"task {t.name}: cannot hash argument {where} for the cache key: {e} (an "
                                 "argument listed in cache_ignored_args is left out of the key)") from None


def _hashable(v, store: Store) -> bool:
    try:
        _entry(v, True, store)
    except SerializationError:
        return False
    return True


_EMPTY: list = []
_NO_VARIADICS = _key_packer.pack(_EMPTY) + _key_packer.pack(_EMPTY)  # the key's *args and **kwargs of a plain call


def _file_inputs(t: Task, bound: dict, store: Store) -> None:
    """Replace ``Path``/``File`` arguments in ``bound`` by FileInputs, hashing their content."""
    if t._simple:
        for name, v in bound.items():
            if is_file_arg(v):
                bound[name] = FileInput(v, t.name, name, store)
        return
    for name, v in bound.items():
        if name == t._var_pos and any(map(is_file_arg, v)):
            bound[name] = tuple(FileInput(x, t.name, f"{name}[{i}]", store) if is_file_arg(x) else x
                                for i, x in enumerate(v))
        elif name == t._var_kw and any(map(is_file_arg, v.values())):
            bound[name] = {k: FileInput(x, t.name, f"{name}[{k!r}]", store) if is_file_arg(x) else x
                           for k, x in v.items()}
        elif is_file_arg(v):
            bound[name] = FileInput(v, t.name, name, store)



def _prepare(t: Task, args, kwargs, store: Store) -> tuple[dict, dict, bytes]:
    """Bind a call: ``(bound arguments, arguments recorded, cache key)``."""
    if not kwargs and len(args) == t._n_plain:
        bound = dict(zip(t._positional, args))  # what _bind returns for such a call, without its checks
        key = _plain_key(t, args)
        if key is not None:
            return bound, (_dumped(t, bound) if t.no_dump else bound), key
    else:
        bound = t._bind(args, dict(kwargs) if kwargs else {})
    _file_inputs(t, bound, store)
    key = _call_key(t, bound, store)
    dumped = _dumped(t, bound) if t.no_dump else bound
    return bound, dumped, key


def _execute_keyed(t: Task, store: Store, key: bytes, args, kwargs, bound, dumped, force: bool, code=None,
                   looked_up: bool = False):
    """Answer a call whose key is known (from :func:`_prepare`, maybe in another process).

    ``code``: the code fields the driver computed (fingerprint and parts), recorded as they are.
    ``looked_up``: the caller found no cache entry for the key just now.
    """
    cfg = get_config()
    use_cache = t.cache and not force
    if use_cache and not looked_up:
        hit = _lookup(store, key)
        if hit is not None:
            return _hit(t, store, hit, cfg)
    held: list[Artifact] = []
    _artifacts(list(dumped.values()), held)
    holds = sorted({bytes(a.__terra_ref__) for a in held})
    committed = committed_counter(store)  # read first: never take the durable lock inside the state's
    while True:
        state, value = store.update_state(
            lambda txn: begin(txn, t, key, use_cache, cfg.lease_seconds, committed, holds))
        if state == "run":
            # A call that finished between our lookup and our lease: its result stands.
            hit = _lookup(store, key) if use_cache else None
            if hit is None:
                try:
                    with store.holding(value):  # gc keeps what the run writes until its record commits
                        return _run(t, store, cfg, value, key, args, kwargs, bound, dumped, code)
                except BaseException:
                    _abandon(t, store, key, value)
                    raise
            store.update_state(lambda txn, rid=value: end(txn, t, rid, key, give_back=True))
            return _hit(t, store, hit, cfg)
        wait(store, key, value)


def _abandon(t: Task, store: Store, key: bytes, run_id: int) -> None:
    """Drop a run's lease and short-lived state whatever failed (idempotent after a normal end).

    A failure before the run's own cleanup (a damaged store while its record is
    prepared, say) must not leave a lease this process keeps renewing: the next
    identical call would wait on it forever.
    """
    leases.release(store, key, run_id)
    try:
        store.update_state(lambda txn: end(txn, t, run_id, key))
    except Exception:  # noqa: BLE001 - the original error is what the caller needs
        pass


def _lookup(store: Store, key: bytes):
    """The confirmed cache hit for ``key``, or None; a damaged entry is a miss (and a warning)."""
    try:
        return R.cached(store, key)
    except CorruptRef as e:
        return _damaged(e)


def _damaged(e: CorruptRef) -> None:
    """A damaged cache entry is a miss: warn; recomputing commits a fresh entry over it."""
    warnings.warn(f"{e}; recomputing", DamagedRefWarning, stacklevel=3)


def _hit(t: Task, store: Store, hit, cfg):
    run_id, entry = hit
    if not cfg.quiet:
        print(f"task: {t.name}, run_id={run_id} (cached)")
    if type(entry) is not ObjectId:  # an inline output is the output (output_view, one call less)
        return hit
    return run_id, R.output_view(store, entry, run_id)


def _run(t: Task, store: Store, cfg, run_id: int, key: ObjectId, args, kwargs, bound, dumped, code=None):
    start = time.time()
    if not cfg.quiet:
        print(f"task: {t.name}, run_id={run_id}")
    leases.hold(store, key, run_id, cfg.lease_seconds)  # renews the run's entry too, cached or not
    run_dir = None
    extra = {}
    if "run_dir" in t._wants:
        run_dir = R.run_dir_path(store, run_id)
        if os.path.exists(run_dir):  # left over from a store that was wiped: start clean
            import shutil

            shutil.rmtree(run_dir)
        os.makedirs(run_dir)
        extra["run_dir"] = run_dir
    if "run_id" in t._wants:
        extra["run_id"] = run_id
    fields: dict[str, Any] = {
        "task": t.name, "module": t.module, "fn": t.qualname, "identity": t.identity,
        "cache_key": key, "start_time": start, **_environment(t.fn),
    }
    fields.update(t._code_fields() if code is None else code)
    if t.version is not None:
        fields["version"] = str(t.version)
    arts: list[Artifact] = []
    _artifacts([v for k, v in dumped.items()], arts)
    # Global identity: where this run was made, and its producers by record id (not local run id).
    fields["origin"] = [store.uuid, run_id]
    fields["parents"] = R.parent_records(store, {a.run_id for a in arts if a.run_id is not None})
    if not t.cache:
        fields["cache"] = False  # fsck --repair restores cache entries only for cached runs
    status, result, error, exc = "success", None, None, None
    m = _miss_modules()
    capture = m.Capture()
    inputs_tree = Tree("inputs", ())
    try:
        # Inputs are stored before the call: a function that mutates its
        # arguments must not change what the record says it was given.
        with store.deferred():
            inputs_tree = _inputs_tree(store, t, dumped)
        call_args, call_kwargs = t._call_args(args, kwargs)
        with capture:
            result = t.fn(*call_args, **call_kwargs, **extra)
    except KeyboardInterrupt as e:
        status, exc = "interrupted", e
        error = _error_info(e)
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised unchanged
        status, exc = "failure", e
        error = _error_info(e)
    output = None
    try:
        # Objects written here need no sync of their own: the final commit covers them.
        with store.deferred():
            if status == "success":
                try:
                    output = _entry(result, False, store)
                except SerializationError as e:
                    status = "failure"
                    exc = SerializationError(f"task {t.name} (run {run_id}): cannot store its output: {e}")
                    exc.__cause__ = e
                    error = _error_info(exc)
            if capture.text:
                fields["log"] = m.store_value(store, capture.text)
            if run_dir is not None:
                fields["has_run_dir"] = True
                if os.listdir(run_dir):
                    fields["run_dir_tree"] = m.store_path(store, run_dir)
    except BaseException as e:  # noqa: BLE001 - recorded as the run's failure, then raised
        if exc is None or isinstance(exc, SerializationError):
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failure"
            exc, output, error = e, None, _error_info(e)
    inputs = _identified(inputs_tree)
    fields["inputs"] = inputs[0]
    fields.update(status=status, end_time=time.time(), error=error, output=output if status == "success" else None)
    rec = _identified(Run(fields))
    rec_id = rec[0]
    edges = [(a.run_id, bytes(a.__terra_ref__)) for a in arts if a.run_id is not None]
    view = R.output_view(store, output, run_id) if status == "success" else None
    produced: list = []
    _artifacts(view, produced)
    produced_ids = {bytes(a.__terra_ref__) for a in produced}
    if isinstance(output, ObjectId):
        produced_ids.add(bytes(output))
    try:
        store.commit([inputs, rec],
                     lambda txn: _commit(txn, t, run_id, key, rec_id, fields, output, edges, produced_ids))
    finally:
        # Also when the commit failed (disk full...): waiters must not wait on a lease nobody renews.
        leases.release(store, key, run_id)
        store.update_state(lambda txn: end(txn, t, run_id, key))
    m.run_finished(t.notify, m.RunSummary(t.name, run_id, status, fields["end_time"] - start, fields["host"], error))
    if exc is not None:
        raise exc
    return run_id, view


def _identified(obj) -> tuple:
    """``(id, obj, encoding)``: the encoding is made once, for the id and for the commit."""
    enc = encode(obj)
    return digest(enc if enc[1] is not None else enc[:1]), obj, enc


def _environment(fn) -> dict:
    return _miss_modules().environment(fn)


_miss = None


def _miss_modules():
    """What a miss needs beyond the hit path, imported by the first miss, not by ``import terra``.

    Output capture (logging), the environment (platform, git), notifications
    and value storage; kept here so later misses pay no import statement.
    """
    global _miss
    if _miss is None:
        from .capture import Capture
        from .environment import environment
        from .notify import RunSummary, run_finished
        from .serialize import store_path, store_value

        _miss = types.SimpleNamespace(Capture=Capture, environment=environment, RunSummary=RunSummary,
                                      run_finished=run_finished, store_path=store_path, store_value=store_value)
    return _miss


def _commit(txn, t: Task, run_id, key, rec_id, fields, output, edges, produced_ids) -> None:
    status = fields["status"]
    # Keep counter/committed >= every durable run entry (committed_counter trusts it): read
    # before this run's entry; a lost or damaged counter is rebuilt from the run entries.
    raw = R.get_or_damaged(txn, R.K_COMMITTED)
    committed = int.from_bytes(raw, "big") if raw is not None and len(raw) == 8 else R.committed(txn)
    ref = {"status": status, "task": t.name, "identity": t.identity, "start_time": fields["start_time"],
           "end_time": fields["end_time"], "pid": fields["pid"], "host": fields["host"], "record": bytes(rec_id)}
    txn.put(R.k_run(run_id), R.pack(ref))
    txn.put(R.k_task(t.identity, run_id), R.status_byte(status))
    txn.put(R.k_record(rec_id), R.rid8(run_id))
    if status == "success" and t.cache:
        txn.put(R.k_cache(key), R.rid8(run_id) + R.pack_entry(output, rec_id))
    for producer, art in edges:
        txn.put(R.k_edge_c(run_id, producer, art), b"")
        txn.put(R.k_edge_p(producer, run_id, art), b"")
    for oid in produced_ids:  # first producer wins: get_artifact(id) names it
        if R.get_or_damaged(txn, R.k_produced(oid)) is None:  # a damaged entry is replaced
            txn.put(R.k_produced(oid), R.rid8(run_id))
    if committed < run_id:
        txn.put(R.K_COMMITTED, R.rid8(run_id))


def _dumped(t: Task, bound: dict) -> dict:
    """The arguments a run records: ``bound`` without ``no_dump_args`` (names or ``**kwargs`` keys)."""
    drop = t.no_dump
    out = {k: v for k, v in bound.items() if k not in drop}
    if t._var_kw in out:
        out[t._var_kw] = {k: v for k, v in out[t._var_kw].items() if k not in drop}
    return out


def _inputs_tree(store: Store, t: Task, dumped: dict) -> Tree:
    """The inputs as a Tree, storing every non-inline argument value and file input.

    Entries are ``(parameter name, entry)``; ``*args`` is one entry (a stored
    tuple) and ``**kwargs`` one (a stored dict), named in the meta as
    ``var_positional``/``var_keyword``; ``files`` maps each file input's place
    (``data``, ``args[0]``, ``kwargs['x']``) to its path.
    """
    store_value = _miss_modules().store_value
    meta: dict[str, Any] = {}
    files: dict[str, str] = {}

    def stored_files(v, where):
        if type(v) is FileInput:
            v.store(store, t.name, where)
            files[where] = os.path.abspath(v.path)

    try:
        entries = []
        for name, v in dumped.items():
            if name == t._var_pos:
                meta["var_positional"] = name
                for i, x in enumerate(v):
                    stored_files(x, f"{name}[{i}]")
                entries.append((name, store_value(store, v)))
            elif name == t._var_kw:
                meta["var_keyword"] = name
                for k, x in v.items():
                    stored_files(x, f"{name}[{k!r}]")
                entries.append((name, store_value(store, v)))
            else:
                stored_files(v, name)
                entries.append((name, _entry(v, False, store)))
    except SerializationError as e:
        raise SerializationError(f"cannot store an argument: {e}") from e
    if files:
        meta["files"] = files
    return Tree("inputs", tuple(sorted(entries)), meta)


def _error_info(e: BaseException) -> dict:
    return {"type": f"{type(e).__module__}.{type(e).__qualname__}", "message": str(e),
            "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))}
