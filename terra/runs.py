"""Run records, the indexes kept beside them, and lookups by run id.

A finished run is an immutable ``Run`` object (the commit-like record). The
ref space holds the mutable parts, all keyed so prefix scans answer queries:

    counter/committed                 highest run id committed
    run/<id:8>                        msgpack: status, task, start, record id
    task/<identity>\\0<id:8>           status, one byte (runs of a task)
    cache/<key:16>                    <id:8> + msgpack output entry and record id (cache hits)
    edge/c/<consumer:8><producer:8><artifact:16>   inputs of a run
    edge/p/<producer:8><consumer:8><artifact:16>   uses of a run's outputs
    tag/<name>                        <id:8>
    produced/<artifact:16>            <id:8> of the first run that output it
    record/<record:16>                <id:8> of the run whose record this is

Records mean the same in every store: ``origin`` is ``[store uuid, run id]``
where the run was made, and ``parents`` lists the producer runs by record id
(32 hex), never by local run id. Readers translate them back to local run ids
through ``record/``; pulled runs get local ids of their own.

Every value is stored sealed with a checksum over key and value
(``terra.store._refs``): reads verify it, a damaged entry raises
``CorruptRef`` (``get``) or is skipped and reported (``scan``). A cache entry
is served only once the verified record of the run it names confirms it
(:func:`cache_hit`), so a wrong value needs a wrong entry *and* a record
agreeing with it. A record names its run (``origin`` if made here, else
``record/``), so ``terra fsck --repair`` rebuilds the indexes from them.

A run in progress is short-lived state (``Store.update_state``): its
``run/`` and ``task/`` entries, its ``lease/<key:16>`` (pid, host, expiry)
and ``counter/run`` live where writes cost no sync, and ``Store.refs()``
shows them beneath the durable refs. A run's end is one durable commit of its
record and indexes; then its short-lived state is cleared.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import msgpack

from .errors import CorruptRef, NotFound
from .io import Artifact
from .objects import ObjectId, Run, Tree
from .store import Store

__all__ = [
    "STATUSES",
    "alive",
    "get_log",
    "get_meta",
    "get_run",
    "get_run_dir",
    "inp",
    "input_entries",
    "input_producers",
    "live_status",
    "out",
    "output_view",
    "run_ref",
]

STATUSES = ("running", "success", "failure", "interrupted")
_STATUS_BYTE = {s: bytes([i]) for i, s in enumerate(STATUSES)}
_BYTE_STATUS = {v: k for k, v in _STATUS_BYTE.items()}

K_COUNTER = b"counter/run"  # last run id handed out (short-lived state)
K_COMMITTED = b"counter/committed"  # highest run id committed durably
K_FORMAT = b"meta/format"
#: Records with ``origin`` and ``parents`` by record id (store format 2).
RECORD_FORMAT = 2
HOST = os.uname().nodename  # socket.gethostname(), without importing socket


def rid8(run_id: int) -> bytes:
    return int(run_id).to_bytes(8, "big")


def k_run(run_id: int) -> bytes:
    return b"run/" + rid8(run_id)


def k_task_prefix(identity: str) -> bytes:
    return b"task/" + identity.encode() + b"\0"


def k_task(identity: str, run_id: int) -> bytes:
    return k_task_prefix(identity) + rid8(run_id)


def k_produced(artifact: bytes) -> bytes:
    return b"produced/" + bytes(artifact)


def k_cache(key: bytes) -> bytes:
    return b"cache/" + key


def k_lease(key: bytes) -> bytes:
    return b"lease/" + key


def k_edge_c(consumer: int, producer: int, artifact: bytes) -> bytes:
    return b"edge/c/" + rid8(consumer) + rid8(producer) + artifact


def k_edge_p(producer: int, consumer: int, artifact: bytes) -> bytes:
    return b"edge/p/" + rid8(producer) + rid8(consumer) + artifact


def k_record(record: bytes) -> bytes:
    return b"record/" + bytes(record)


def get_or_damaged(txn, key: bytes) -> bytes | None:
    """``txn.get(key)``, None when the entry is damaged (for writers that overwrite it)."""
    try:
        return txn.get(key)
    except CorruptRef:
        return None


def committed(txn) -> int:
    """The highest run id committed durably: its counter, or the highest run entry if higher.

    A damaged or lost counter must never make run ids be handed out twice, so the
    last ``run/`` key (checksums unchecked: a damaged entry still holds its id) backs it up.
    """
    try:
        raw = txn.get(K_COMMITTED)
        counter = int.from_bytes(raw, "big") if raw else 0
    except CorruptRef:
        counter = 0
    last = next(iter(getattr(txn, "txn", txn).scan(b"run/", True)), None)
    return max(counter, int.from_bytes(last[0][4:12], "big") if last else 0)


def status_byte(status: str) -> bytes:
    return _STATUS_BYTE[status]


def byte_status(b: bytes) -> str:
    return _BYTE_STATUS.get(bytes(b[:1]), "unknown")


_local = threading.local()


def pack(obj) -> bytes:
    # msgpack.packb without making a Packer per call: one per thread (a Packer keeps its buffer).
    try:
        return _local.packer.pack(obj)
    except AttributeError:
        _local.packer = msgpack.Packer(use_bin_type=True)
        return _local.packer.pack(obj)


def unpack(b: bytes):
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


# -- entries: inline primitives or object ids ---------------------------------------


def pack_entry(entry, record: bytes | None = None) -> bytes:
    """A record entry (inline value or ObjectId) as msgpack bytes for an index.

    ``record``: the id of the run record that holds it (cache entries), so a hit
    is confirmed against that record in one read.
    """
    d = {"id": bytes(entry)} if isinstance(entry, ObjectId) else {"v": entry}
    if record is not None:
        d["r"] = bytes(record)
    return pack(d)


def unpack_entry(b: bytes):
    d = unpack(b)
    return ObjectId(d["id"]) if "id" in d else d["v"]


# -- reading runs -----------------------------------------------------------------


def run_ref(store: Store, run_id: int) -> dict:
    """The mutable state of a run (status, record id...).

    Raises:
        NotFound: no run has this id.
        CorruptRef: its entry is damaged.
    """
    with store.refs() as txn:
        raw = txn.get(k_run(run_id))
    if raw is None:
        raise NotFound(f"no run with run_id={run_id!r}")
    return decode_run_ref(run_id, raw)


def decode_run_ref(run_id: int, raw: bytes) -> dict:
    """A ``run/`` entry's value as a dict.

    Raises:
        CorruptRef: it is not one (a checksummed entry written wrongly, or a legacy store's damage).
    """
    try:
        ref = unpack(raw)
    except Exception as e:  # noqa: BLE001 - any undecodable entry is damage
        raise CorruptRef(f"run {run_id}: its entry cannot be decoded ({type(e).__name__}); "
                         "run `terra fsck --repair`") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("record", None), (bytes, type(None))):
        raise CorruptRef(f"run {run_id}: its entry is not a run entry; run `terra fsck --repair`")
    return ref


def verified_record(store: Store, run_id: int, ref: dict) -> Run:
    """The verified ``Run`` record a run entry names, checked to be that run's.

    Raises:
        CorruptRef: it names something that is not this run's record.
        NotFound, CorruptObject: the record is missing or damaged.
    """
    rec = bytes(ref["record"])
    obj = store.get(ObjectId(rec))
    if not isinstance(obj, Run) or local_run_id(store, rec, obj.fields) not in (run_id, None):
        raise CorruptRef(f"run {run_id}: its entry names object {rec.hex()}, "
                         "which is not its record; run `terra fsck --repair`")
    return obj


def local_run_id(store: Store, record: bytes, fields: dict) -> int | None:
    """The local run id a verified record belongs to, or None where nothing says.

    A run made here names itself in its ``origin``; a pulled run through the
    ``record/`` index; a record older than both (format 1) names no run.
    """
    origin = fields.get("origin")
    if isinstance(origin, (list, tuple)) and len(origin) == 2 and origin[0] == store.uuid:
        return origin[1] if isinstance(origin[1], int) else -1
    with store.refs() as txn:
        raw = get_or_damaged(txn, k_record(record))
    return int.from_bytes(raw, "big") if raw and len(raw) == 8 else None


def cached(store: Store, key: bytes) -> tuple[int, Any] | None:
    """The confirmed hit of cache key ``key``: ``(run id, output entry)``, or None if there is no entry.

    One verified ref read; the entry is confirmed by its run's record once per
    process (see :func:`cache_hit`), so a deleted or replaced entry is never
    answered from memory.

    Raises:
        CorruptRef: the entry is damaged or does not match its record.
    """
    raw = store.get_ref(b"cache/" + key)  # k_cache(key), inlined: every cache hit reads one
    if raw is None:
        return None
    hit = store.confirmed_hits.get((key, raw))
    return cache_hit(store, key, raw) if hit is None else hit


def cache_hit(store: Store, key: bytes, raw: bytes) -> tuple[int, Any]:
    """The run id and output entry of a cache entry, confirmed by that run's verified record.

    The output comes from the record, not from the entry; the record (named by
    the entry, or by the run's entry for caches written before records were
    named) must be this run's, successful, with this cache key and this output.
    Confirmations are remembered per store for the exact entry bytes, so a
    repeated hit costs one get and one dict lookup; a first hit one record read.

    Raises:
        CorruptRef: the entry does not match the record it names (or either is unreadable).
    """
    memo = store.confirmed_hits
    k = (key, raw)
    hit = memo.get(k)
    if hit is not None:
        return hit
    rid = int.from_bytes(raw[:8], "big")
    try:
        d = unpack(raw[8:])
        rec = d.get("r") or run_ref(store, rid).get("record")
        fields = verified_record(store, rid, {"record": rec}).fields if rec else {}
        ok = (fields.get("status") == "success" and bytes(fields.get("cache_key") or b"") == bytes(key)
              and pack_entry(fields.get("output")) == pack_entry(unpack_entry(raw[8:])))
    except Exception as e:  # noqa: BLE001 - whatever fails, the hit is not confirmed
        raise CorruptRef(f"cache entry {bytes(key).hex()} (run {rid}) cannot be confirmed: {e}") from None
    if not ok:
        raise CorruptRef(f"cache entry {bytes(key).hex()} does not match the record of run {rid}")
    if len(memo) > 65536:
        memo.clear()
    hit = memo[k] = (rid, fields.get("output"))
    return hit


def _check_id(run_id) -> int:
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        try:
            run_id = int(str(run_id))
        except ValueError:
            raise NotFound(f"run_id must be an integer, got {run_id!r}") from None
    if not 0 <= run_id < 1 << 64:  # run ids are 8-byte keys: nothing outside can exist
        raise NotFound(f"no run with run_id={run_id!r}")
    return run_id


def get_run(run_id: int, store: Store | None = None) -> dict:
    """The full record of a run as a dict (the ``Run`` object's fields plus ``run_id``)."""
    store = store or _store()
    run_id = _check_id(run_id)
    ref = run_ref(store, run_id)
    rec = ref.get("record")
    if rec is None:  # still running, or cut short before its record was written
        fields = dict(ref)
        fields.pop("record", None)
    else:
        fields = dict(verified_record(store, run_id, ref).fields)
    fields["run_id"] = run_id
    fields["status"] = live_status(fields, ref)
    if fields.get("parents"):
        with store.refs() as txn:
            fields["parents"] = local_parents(txn, fields["parents"])
    return fields


# -- global identity: records name their parents by record id -------------------------


def record_of(txn, run_id: int) -> bytes | None:
    """The record id of a finished run (None while running or unknown)."""
    raw = txn.get(k_run(run_id))
    return None if raw is None else unpack(raw).get("record")


def run_of_record(txn, record: bytes) -> int | None:
    """The local run id whose record is ``record`` (None if no run here has it, or it was removed).

    A damaged entry counts as absent (fsck reports it; ``fsck --repair`` rebuilds it).
    """
    raw = get_or_damaged(txn, k_record(record))
    if raw is None:
        return None
    rid = int.from_bytes(raw, "big")
    return rid if get_or_damaged(txn, k_run(rid)) is not None else None


def parent_records(store: Store, run_ids) -> list[str]:
    """The record ids (32 hex, sorted) of the finished runs ``run_ids``: a record's ``parents``."""
    if not run_ids:
        return []
    with store.refs() as txn:
        recs = {record_of(txn, rid) for rid in run_ids}
    return sorted(bytes(r).hex() for r in recs if r)


def local_parents(txn, parents) -> list[int]:
    """A record's ``parents`` as local run ids (sorted); parents not in this store are left out.

    Records of format 1 (before store format 2) held local run ids already.
    """
    out = set()
    for p in parents:
        if isinstance(p, int):
            out.add(p)
            continue
        rid = run_of_record(txn, bytes.fromhex(p))
        if rid is not None:
            out.add(rid)
    return sorted(out)


def migrate(store: Store) -> int:
    """Bring a store's run records to the current format; returns how many were rewritten.

    Format 1 records have no ``origin`` and list parents by local run id. Each
    gets ``origin = [store uuid, run id]`` and its parents' new record ids,
    producers first; ``run/`` and ``record/`` then point at the new records in
    one commit (the old records become garbage for gc). Safe to run from
    several processes at once: the rewrite is deterministic and the commit
    checks the format again.
    """
    with store.refs() as txn:
        fmt = txn.get(K_FORMAT)
        if fmt is None or int(fmt) >= RECORD_FORMAT or getattr(store.backend, "_readonly", False):
            return 0
        refs = {int.from_bytes(k[4:], "big"): unpack(v) for k, v in txn.scan(b"run/")}
    uuid = store.uuid
    new: dict[int, ObjectId | None] = {}
    objs: list = []

    def rewrite(rid: int, path: tuple = ()) -> ObjectId | None:
        if rid in new:
            return new[rid]
        rec = refs.get(rid, {}).get("record")
        if rec is None or rid in path:
            return None
        fields = dict(store.get(ObjectId(rec)).fields)
        if "origin" not in fields:
            parents = [rewrite(p, path + (rid,)) for p in fields.get("parents") or [] if isinstance(p, int)]
            fields["origin"] = [uuid, rid]
            fields["parents"] = sorted(p.hex() for p in parents if p is not None)
        run = Run(fields)
        from .objects import object_id

        oid = new[rid] = object_id(run)
        objs.append((oid, run))
        return oid

    for rid in sorted(refs):
        rewrite(rid)

    def commit(txn):
        cur = txn.get(K_FORMAT)
        if cur is not None and int(cur) >= RECORD_FORMAT:
            return
        for rid, oid in new.items():
            raw = txn.get(k_run(rid))
            if oid is None or raw is None:  # removed meanwhile
                continue
            ref = unpack(raw)
            ref["record"] = bytes(oid)
            txn.put(k_run(rid), pack(ref))
            txn.put(k_record(oid), rid8(rid))
        from .store._store import FORMAT_VERSION

        txn.put(K_FORMAT, str(FORMAT_VERSION).encode())  # its refs were sealed when the store opened

    store.commit(objs, commit)
    return len(objs)


def live_status(fields: dict, ref: dict) -> str:
    """A run's status, with 'running' turned into 'interrupted' when its process is gone."""
    status = ref.get("status", fields.get("status"))
    if status == "running" and not alive(ref.get("host"), ref.get("pid"), ref.get("expires")):
        return "interrupted"
    return status


def alive(host, pid, expires=None) -> bool:
    """Whether a process is still there: by pid on this host, by its renewed expiry elsewhere."""
    if host == HOST and pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _zombie(int(pid))
    return expires is None or expires > time.time()


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits for its parent to reap it (Linux ``/proc``; False elsewhere).

    A worker that died answers signal 0 until its parent (a process pool, Dask's nanny) joins
    it, and the executor reports the death before that.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:  # reaped meanwhile, where there is a /proc
        return os.path.exists("/proc/self/stat")
    except OSError:
        return False
    end = stat.rfind(b")")  # the command name, in parentheses, may hold anything
    return stat[end + 2 : end + 3] == b"Z"


def get_meta(run_id: int, store: Store | None = None) -> dict:
    """Metadata of a run for people to read: task, status, times, host, versions, git, error...

    Times (``start_time``, ``end_time``) are timezone-aware datetimes in local
    time and ``duration`` is in seconds; ids (``cache_key``) are hex strings.
    :func:`get_run` gives the raw record (epoch seconds, bytes).
    """
    import datetime as _dt

    rec = get_run(run_id, store)
    meta = {k: v for k, v in rec.items() if k not in ("inputs", "output", "log", "run_dir_tree")}
    start, end = meta.get("start_time"), meta.get("end_time")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        meta["duration"] = end - start
    for k in ("start_time", "end_time", "expires"):
        if isinstance(meta.get(k), (int, float)):
            meta[k] = _dt.datetime.fromtimestamp(meta[k], _dt.timezone.utc).astimezone()
    for k, v in meta.items():
        if isinstance(v, (bytes, ObjectId)):
            meta[k] = bytes(v).hex()
    return meta


def inp(run_id: int, store: Store | None = None) -> dict:
    """The inputs of a run: ``{name: value}`` for primitives, Artifacts otherwise.

    ``*args`` comes back as one tuple and ``**kwargs`` as one dict, each under
    its parameter name, their elements shown the same way. A file input is an
    Artifact of the file's content (``.load()`` restores a copy, a Path).
    """
    store = store or _store()
    rec = get_run(run_id, store)
    tree_id = rec.get("inputs")
    if tree_id is None:
        return {}
    tree = store.get(tree_id)
    producers = input_producers(store, run_id)

    def leaf(entry):
        return Artifact(entry, producers.get(bytes(entry)), store.root) if isinstance(entry, ObjectId) else entry

    var = _var_names(tree)
    out = {}
    for name, entry in tree.entries:
        if name in var:
            items = _var_items(store, name, entry, tree.meta)
            out[name] = (tuple(leaf(e) for _, e in items) if name == tree.meta.get("var_positional")
                         else {k: leaf(e) for k, e in items})
        else:
            out[name] = leaf(entry)
    return out


def input_entries(store: Store, tree: Tree) -> dict[str, Any]:
    """A run's input entries by place: named parameters by name, ``args[0]``, ``kwargs['key']``.

    ``tree`` is the run's inputs Tree; the places are those named in its
    ``files`` meta. Each place is unambiguous: a ``**kwargs`` key is shown
    quoted inside its parameter's brackets.
    """
    var = _var_names(tree)
    out: dict[str, Any] = {}
    for name, entry in tree.entries:
        if name in var:
            out.update((f"{name}[{k!r}]", e) for k, e in _var_items(store, name, entry, tree.meta))
        else:
            out[name] = entry
    return out


def _var_names(tree: Tree) -> set:
    return {tree.meta.get("var_positional"), tree.meta.get("var_keyword")} - {None}


def _var_items(store: Store, name: str, entry, meta: dict) -> list[tuple[Any, Any]]:
    """``(index or keyword, entry)`` for each element of a recorded ``*args`` tuple or ``**kwargs`` dict."""
    obj = store.get(entry)
    if name == meta.get("var_positional"):
        return list(enumerate(obj.entries))
    items = []
    for k, e in obj.entries:
        if isinstance(k, ObjectId):  # a long keyword name, stored as a value of its own
            from .serialize import load_value

            k = load_value(store, k)
        items.append((k, e))
    return items


def input_producers(store: Store, run_id: int) -> dict[bytes, int]:
    """``{artifact id: producing run id}`` for the Artifacts a run consumed (its lineage edges)."""
    prefix = b"edge/c/" + rid8(run_id)
    with store.refs() as txn:
        return {k[-16:]: int.from_bytes(k[15:23], "big") for k, _ in txn.scan(prefix)}


def out(run_id: int, store: Store | None = None):
    """The outputs of a run, in the structure the task returned (leaves as Artifacts).

    Raises:
        NotFound: no such run, or it has no output (failed or still running).
    """
    store = store or _store()
    rec = get_run(run_id, store)
    if rec.get("status") != "success":
        raise NotFound(f"run {run_id} of task {rec.get('task')} has no output (status: {rec.get('status')})")
    return output_view(store, rec.get("output"), run_id)


_skeletons: dict[bytes, Any] = {}


def output_view(store: Store, entry, run_id: int | None):
    """Rebuild a returned structure: containers as they were, leaves as Artifacts."""
    if not isinstance(entry, ObjectId):
        return entry
    skel = _skeletons.get(bytes(entry))
    if skel is None:
        skel = _skeleton(store, entry)
        if len(_skeletons) > 4096:
            _skeletons.clear()
        _skeletons[bytes(entry)] = skel
    return _materialize(skel, store.root, run_id)


class _Leaf:
    __slots__ = ("oid",)

    def __init__(self, oid):
        self.oid = oid


class _Literal:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _skeleton(store: Store, oid: ObjectId):
    from .serialize import plain_value

    obj = store.get(oid)
    if isinstance(obj, Tree) and obj.type in ("dict", "list", "tuple"):
        if obj.type == "dict":
            items = [(_literal_key(store, k), _entry_skeleton(store, v)) for k, v in obj.entries]
            return ("dict", items)
        return (obj.type, [_entry_skeleton(store, e) for e in obj.entries])
    try:
        # By codec, not by the type a stored meta claims: a view never unpickles.
        plain, value = plain_value(store, oid)
        if plain:
            return _Literal(value)
    except Exception:  # noqa: BLE001 - anything unreadable stays an Artifact
        pass
    return _Leaf(oid)


def _literal_key(store, k):
    if isinstance(k, ObjectId):
        from .serialize import load_value

        return load_value(store, k)
    return k


def _entry_skeleton(store, e):
    return _skeleton(store, e) if isinstance(e, ObjectId) else _Literal(e)


def _materialize(skel, root, run_id):
    if isinstance(skel, _Literal):
        return skel.value
    if isinstance(skel, _Leaf):
        return Artifact(skel.oid, run_id, root)
    kind, items = skel
    if kind == "dict":
        return {k: _materialize(v, root, run_id) for k, v in items}
    vals = [_materialize(v, root, run_id) for v in items]
    return tuple(vals) if kind == "tuple" else vals


def get_log(run_id: int, store: Store | None = None) -> str:
    """The captured stdout, stderr and logging of a run."""
    store = store or _store()
    rec = get_run(run_id, store)
    log = rec.get("log")
    if log is None:
        return ""
    from .serialize import load_value

    return load_value(store, log)


def run_dir_path(store: Store, run_id: int) -> str:
    return os.path.join(store.root, "run_dirs", str(run_id))


def get_run_dir(run_id: int, store: Store | None = None) -> str:
    """The run's directory; restored from the store if it was deleted.

    Raises:
        NotFound: the run has no run directory.
    """
    store = store or _store()
    rec = get_run(run_id, store)
    path = run_dir_path(store, run_id)
    snap = rec.get("run_dir_tree")
    if os.path.isdir(path):
        return path
    if snap is None:
        if rec.get("has_run_dir"):
            os.makedirs(path, exist_ok=True)
            return path
        raise NotFound(f"run {run_id} of task {rec.get('task')} has no run directory")
    from .serialize import restore_path

    restore_path(store, snap, path)
    return path


def producer_of(store: Store, artifact) -> int | None:
    """The first run that output ``artifact`` (from the producer index), or None."""
    with store.refs() as txn:
        raw = txn.get(k_produced(artifact))
    return int.from_bytes(raw, "big") if raw else None


def _store() -> Store:
    from .session import current_store

    return current_store()
