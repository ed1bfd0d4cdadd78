"""Tasks: the decorator, a task's identity, and how a call is answered.

A call binds its arguments to the signature, computes the cache key
``hash(task identity, code fingerprint, input ids)`` (:mod:`terra._keys`) and
looks it up: a hit returns the stored outputs of the original run without
running anything; a miss runs the function and commits a record
(:mod:`terra._lifecycle`).
"""

from __future__ import annotations

import functools
import inspect
import sys
import types
from typing import TYPE_CHECKING, Any, Callable

import xxhash

from . import runs as R
from ._keys import _plain_key, _prepare
from ._lifecycle import _damaged, _execute_keyed, _hit
from .config import get_config
from .errors import CorruptRef, SerializationError, TaskError
from .files import File
from .io import Artifact, TaskOutput
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
