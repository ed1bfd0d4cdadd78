"""``terra.why(run)``: how a run differs from the closest earlier run of its task.

A call runs (instead of hitting the cache) when its cache key is new: some
argument, or the code of the task or of a function it calls, changed. Each
record keeps its input entries, the hash of every function its fingerprint
covers (``code``), and its cache key, so the difference can be named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import runs as R
from .objects import ObjectId, Tree
from .store import Store

__all__ = ["ArgChange", "WhyResult", "why"]

#: How many earlier runs of the task are compared to find the closest.
CANDIDATES = 50


@dataclass
class ArgChange:
    """One argument that differs; ``before``/``after`` are display strings (None: absent).

    ``name`` is the parameter name, ``args[i]`` or ``kwargs['key']``; ``path``
    is set when the argument is a file input (its content changed).
    """

    name: str
    before: str | None
    after: str | None
    path: str | None = None


@dataclass
class WhyResult:
    """The differences between a run and the closest earlier run of the same task."""

    run_id: int
    task: str
    baseline: int | None = None  # the earlier run compared against
    baseline_status: str | None = None
    args: list[ArgChange] = field(default_factory=list)
    code_changed: list[str] = field(default_factory=list)
    code_added: list[str] = field(default_factory=list)
    code_removed: list[str] = field(default_factory=list)
    version: tuple | None = None  # (before, after) when the task's version= changed
    identity: tuple | None = None  # (before, after) when the baseline ran under another identity
    unhashed: list[str] = field(default_factory=list)  # values this run's fingerprint could not hash
    same_key: bool = False
    environment: list[str] = field(default_factory=list)  # recorded, not part of the cache key

    @property
    def reason(self) -> str:
        """One sentence: why this run ran rather than reusing the baseline's result."""
        if self.baseline is None:
            return f"run {self.run_id} is the first recorded run of {self.task}"
        bits = []
        files = [a for a in self.args if a.path is not None]
        if files:
            bits.append("the content of file " + ", ".join(f"{a.name} ({a.path})" for a in files) + " changed")
        if len(files) < len(self.args):
            bits.append("arguments " + ", ".join(a.name for a in self.args if a.path is None) + " changed")
        if self.version:
            bits.append("the task version changed")
        if self.identity:
            bits.append(f"the task's identity changed ({self.identity[0]} -> {self.identity[1]})")
        bound = [n for n in self.code_changed + self.code_added + self.code_removed if n.startswith("bound:")]
        if bound:
            bits.append("bound values " + ", ".join(n[6:] for n in bound) + " changed")
        if len(bound) < len(self.code_changed) + len(self.code_added) + len(self.code_removed):
            bits.append("the code changed")
        if bits:
            return f"compared with run {self.baseline}: " + "; ".join(bits)
        if self.same_key and self.baseline_status != "success":
            return (f"same inputs and code as run {self.baseline}, which ended with status "
                    f"{self.baseline_status} and so was not cached")
        if self.same_key:
            return (f"same inputs and code as run {self.baseline}: it ran again because it was forced "
                    "or its task does not cache")
        return f"compared with run {self.baseline}: only ignored or unrecorded inputs differ"

    def __str__(self) -> str:
        lines = [f"run {self.run_id} ({self.task}): {self.reason}"]
        for a in self.args:
            if a.path is not None and a.before is not None and a.after is not None:
                lines.append(f"  ~ file {a.name} ({a.path}): {a.before} -> {a.after}")
            elif a.before is None:
                lines.append(f"  + argument {a.name} = {a.after}")
            elif a.after is None:
                lines.append(f"  - argument {a.name} (was {a.before})")
            else:
                lines.append(f"  ~ argument {a.name}: {a.before} -> {a.after}")
        if self.version:
            lines.append(f"  ~ version: {self.version[0]} -> {self.version[1]}")
        if self.identity:
            lines.append(f"  ~ identity: {self.identity[0]} -> {self.identity[1]}")
        lines += [f"  ~ {_part(n)}" for n in self.code_changed]
        lines += [f"  + {_part(n)} (new dependency)" for n in self.code_added]
        lines += [f"  - {_part(n)} (no longer used)" for n in self.code_removed]
        lines += [f"  ! value {n[6:]} was not hashed ({why}): changes to it are not seen"
                  for n, why in self.unhashed]
        if self.environment:
            lines.append("  environment (not part of the cache key): " + "; ".join(self.environment))
        return "\n".join(lines)


def why(run_id, store: Store | None = None) -> WhyResult:
    """Explain how a run differs from the closest earlier run of the same task.

    The closest run is, among the task's last :data:`CANDIDATES` earlier runs
    with a record, the one with the fewest differing arguments and functions
    (the most recent on a tie).

    Args:
        run_id: a run id or tag name.
        store: defaults to the configured store.

    Returns:
        A :class:`WhyResult` (``str()`` reads well).

    Raises:
        NotFound: no such run.
    """
    from .retention import resolve_run

    store = store or _store()
    rid = resolve_run(run_id, store)
    rec = R.get_run(rid, store)
    result = WhyResult(rid, rec.get("task") or "?")
    result.unhashed = sorted((n, v[len("unhashed: "):]) for n, v in (rec.get("code") or {}).items()
                             if isinstance(v, str) and v.startswith("unhashed: "))
    identity = rec.get("identity")
    if not identity:
        return result
    mine, my_files = _inputs(store, rec)
    best = None
    with store.refs() as txn:
        earlier = [int.from_bytes(k[-8:], "big") for k, _ in txn.scan(R.k_task_prefix(identity), reverse=True)]
    earlier = [e for e in earlier if e < rid][:CANDIDATES] or _renamed(store, rec, rid)
    for cand in earlier:
        try:
            other = R.get_run(cand, store)
        except Exception:  # noqa: BLE001 - an unreadable run cannot be the baseline
            continue
        if not other.get("inputs") and not other.get("code"):
            continue  # cut short before its record was written
        theirs, their_files = _inputs(store, other)
        score = (_count_diff(theirs, mine) + _count_diff(other.get("code") or {}, rec.get("code") or {}))
        if best is None or score < best[0]:
            best = (score, cand, other, theirs, their_files)
        if score == 0:
            break
    if best is None:
        return result
    _, cand, other, theirs, their_files = best
    result.baseline, result.baseline_status = cand, other.get("status")
    producers = {**R.input_producers(store, cand), **R.input_producers(store, rid)}
    for name in sorted(set(theirs) | set(mine)):
        a, b = theirs.get(name, _ABSENT), mine.get(name, _ABSENT)
        if not _same(a, b):
            path = my_files.get(name) if their_files.get(name) is not None else None
            result.args.append(ArgChange(name, _show(store, a, producers), _show(store, b, producers), path))
    old_code, new_code = other.get("code") or {}, rec.get("code") or {}
    result.code_changed = sorted(n for n in set(old_code) & set(new_code) if old_code[n] != new_code[n])
    result.code_added = sorted(set(new_code) - set(old_code))
    result.code_removed = sorted(set(old_code) - set(new_code))
    if other.get("identity") != identity:
        result.identity = (other.get("identity"), identity)
    if other.get("version") != rec.get("version"):
        result.version = (other.get("version"), rec.get("version"))
    result.same_key = other.get("cache_key") is not None and other.get("cache_key") == rec.get("cache_key")
    result.environment = _environment(other, rec)
    return result


_ABSENT = object()

#: How many runs before a task's first run are searched for the same function under another identity.
RENAME_WINDOW = 1000


def _part(name: str) -> str:
    if name.startswith("bound:"):
        return f"bound value {name[6:]}"
    if name.startswith("const:"):
        return f"value {name[6:]}"
    return f"code of {name}"


def _renamed(store: Store, rec: dict, rid: int) -> list[int]:
    """Earlier runs of the same function recorded under another identity (a module renamed or moved)."""
    fn = rec.get("fn")
    if not fn:
        return []
    out = []
    for cand in range(rid - 1, max(0, rid - 1 - RENAME_WINDOW), -1):
        try:
            ident = R.run_ref(store, cand).get("identity") or ""
        except Exception:  # noqa: BLE001 - removed or unreadable: not a baseline
            continue
        if ident != rec.get("identity") and ident.rpartition(":")[2] == fn:
            out.append(cand)
            if len(out) >= CANDIDATES:
                break
    return out


def _inputs(store: Store, rec: dict) -> tuple[dict, dict]:
    """A run's input entries by place, and the paths of its file inputs by place."""
    tree_id = rec.get("inputs")
    if tree_id is None:
        return {}, {}
    try:
        tree = store.get(tree_id)
        if not isinstance(tree, Tree):
            return {}, {}
        return R.input_entries(store, tree), dict(tree.meta.get("files") or {})
    except Exception:  # noqa: BLE001 - a missing inputs tree leaves nothing to compare
        return {}, {}


def _same(a, b) -> bool:
    if type(a) is not type(b) and not (isinstance(a, ObjectId) and isinstance(b, ObjectId)):
        return False
    if isinstance(a, float) and a != a and b != b:  # NaN equals NaN here
        return True
    return a == b


def _count_diff(a: dict, b: dict) -> int:
    return sum(1 for k in set(a) | set(b) if not _same(a.get(k, _ABSENT), b.get(k, _ABSENT)))


def _show(store: Store, entry, producers: dict) -> str | None:
    if entry is _ABSENT:
        return None
    if not isinstance(entry, ObjectId):
        text = repr(entry)
        return text if len(text) <= 60 else text[:57] + "..."
    desc = entry.hex()[:10]
    try:
        from .serialize import summarize

        s = summarize(store, entry)
        bits = [str(s.get("type", "?"))]
        shape = s.get("shape")
        if shape is not None:
            bits.append("x".join(map(str, shape)))
        elif s.get("len") is not None:
            bits.append(f"len {s['len']}")
        desc += f" ({' '.join(bits)})"
    except Exception:  # noqa: BLE001 - a description is best effort
        pass
    src = producers.get(bytes(entry))
    return desc + (f" from run {src}" if src is not None else "")


def _environment(old: dict, new: dict) -> list[str]:
    out = []
    ov, nv = old.get("versions") or {}, new.get("versions") or {}
    for k in sorted(set(ov) | set(nv)):
        if ov.get(k) != nv.get(k):
            out.append(f"{k} {ov.get(k)} -> {nv.get(k)}")
    og, ng = (old.get("git") or {}).get("commit"), (new.get("git") or {}).get("commit")
    if og != ng:
        out.append(f"git {str(og)[:10]} -> {str(ng)[:10]}")
    return out


def _store() -> Store:
    from .session import current_store

    return current_store()
