"""Push: runs, their whole ancestry and every object they need, to a remote.

Order makes a remote readable at every instant: all objects first, then the
run manifests, producers before consumers, then tags. Every write is
create-only, so pushers of overlapping runs need no lock: ``AlreadyExists``
means someone wrote those same bytes. What the remote already has is known
without one request per object: run manifests by one LIST of ``runs/``,
objects from a local per-remote index (plus one LIST of ``objects/`` the
first time this store pushes to a remote).
"""

from __future__ import annotations

from .. import runs as R
from ..errors import NotFound, TerraError
from ..objects import ObjectId
from ..store import Store
from . import layout as L
from ._transfer import TransferResult, closure, index_prefix, read_raw
from .client import client
from .config import get_remote
from .errors import RemoteConflict

__all__ = ["push"]

#: Bytes of objects held in memory at once while uploading.
BATCH_BYTES = 64 << 20


def push(runs=None, remote: str | None = None, tag: str | None = None, all: bool = False,  # noqa: A002
         force: bool = False, store: Store | None = None, progress=None) -> TransferResult:
    """Upload runs with their whole ancestry to a remote, skipping what it has.

    Args:
        runs: run ids or tag names. tag: push the run this local tag names, and the tag.
        all: every finished run. remote: a configured name or a URL (default: the default remote).
        force: move the remote tag even if it names a run this store has not seen there.
        progress: ``progress(phase, done, total)``, called as work advances.

    Returns:
        A :class:`TransferResult` (a second push of an unchanged store transfers nothing).

    Raises:
        NotFound: an unknown run, tag or remote. RemoteConflict: the remote tag moved meanwhile.
        RemoteError: the remote cannot be reached or is not a terra remote.
    """
    from ..retention import resolve_run

    store = store or _store()
    name, url = get_remote(remote, store)
    result = TransferResult("push", name, url)
    selected = _select(store, runs, tag, all, resolve_run)
    cl = client(url)
    info = L.open_remote(cl, create=True)
    prefix = index_prefix(info["uuid"])

    # The runs to push: the selection and its ancestry, producers first.
    order, recs = _ancestry(store, selected)
    have_runs = {p.rsplit("/", 1)[-1] for p, _ in cl.list("runs/")}
    todo = [rid for rid in order if recs[rid].hex() not in have_runs]
    result.runs_skipped = len(order) - len(todo)

    # Their objects, minus what the remote holds.
    with store.refs() as txn:
        indexed = {k[len(prefix):] for k, _ in txn.scan(prefix)}
    listed: set = set()
    if todo and not indexed:  # first push from this store here: someone else may have pushed these
        listed = {o for p, _ in cl.list("objects/") if (o := L.object_from_path(p)) is not None}
    manifests, needed = [], {}
    for i, rid in enumerate(todo):
        objs: dict = {}
        closure(store, recs[rid], objs)
        manifests.append(_manifest(store, rid, recs, objs))
        needed.update(objs)
        if progress:
            progress("reading", i + 1, len(todo))
    upload = [o for o in needed if bytes(o) not in indexed and o not in listed]
    result.objects_skipped = len(needed) - len(upload)

    sent = [0, 0]

    def done(nbytes):
        sent[0] += 1
        sent[1] += nbytes
        if progress:
            progress("objects", sent[0], len(upload))

    batch, size = [], 0
    for oid in upload:
        batch.append(oid)
        size += _size_hint(store, oid)
        if size >= BATCH_BYTES:
            _send(store, cl, batch, result, done)
            batch, size = [], 0
    _send(store, cl, batch, result, done)

    # Manifests, producers before consumers: a reader never meets a run whose ancestry is missing.
    for level in _levels(manifests):
        cl.create_many([(L.run_path(m.record), m.encode()) for m in level])
        result.runs += len(level)
        result.records += [m.record.hex() for m in level]
    if needed:
        def index(txn):
            for oid in needed:
                txn.put(prefix + bytes(oid), b"")
        store.update_refs(index, durable=False)  # a lost index only costs re-checking
    if tag is not None:
        _push_tag(store, cl, info["uuid"], tag, recs[selected[0]], force)
    return result.done()


def _select(store, runs, tag, all_, resolve_run) -> list[int]:
    if sum(x is not None and x is not False and x != [] and x != () for x in (runs, tag, all_ or None)) != 1:
        raise TerraError("say what to push: run ids, a tag, or all")
    if tag is not None:
        return [resolve_run(tag, store)]
    if all_:
        with store.refs() as txn:
            return [int.from_bytes(k[4:], "big") for k, v in txn.scan(b"run/") if R.unpack(v).get("record")]
    if isinstance(runs, (int, str)):
        runs = [runs]
    return [resolve_run(r, store) for r in runs]


def _ancestry(store: Store, selected: list[int]) -> tuple[list[int], dict[int, ObjectId]]:
    recs: dict[int, ObjectId] = {}
    stack = list(selected)
    with store.refs() as txn:
        while stack:
            rid = stack.pop()
            if rid in recs:
                continue
            rec = R.record_of(txn, rid)
            if rec is None:
                raise NotFound(f"run {rid} has no record yet (still running?): nothing to push")
            recs[rid] = ObjectId(rec)
            stack.extend(_parents(store, txn, rid, rec))
    return sorted(recs), recs


def _parents(store, txn, rid, rec) -> list[int]:
    fields = store.get(ObjectId(rec)).fields
    return R.local_parents(txn, fields.get("parents") or [])


def _manifest(store: Store, rid: int, recs: dict, objs: dict) -> L.Manifest:
    fields = store.get(recs[rid]).fields
    with store.refs() as txn:
        edges = []
        for k, _ in txn.scan(b"edge/c/" + R.rid8(rid)):
            producer = R.record_of(txn, int.from_bytes(k[15:23], "big"))
            if producer is not None:
                edges.append((k[23:], producer))
    key = fields.get("cache_key")
    return L.Manifest(recs[rid], fields.get("origin") or [None, rid], fields.get("identity"), fields.get("task"),
                      fields.get("status"), bytes(key).hex() if key else None, edges,
                      [bytes.fromhex(p) for p in fields.get("parents") or [] if isinstance(p, str)],
                      list(objs), [o for o, is_data in objs.items() if is_data])


def _levels(manifests: list) -> list[list]:
    """Manifests grouped so every run's producers sit in an earlier group."""
    by = {m.record: m for m in manifests}
    depth: dict = {}

    def d(rec, seen=()):
        if rec not in depth:
            m = by.get(rec)
            depth[rec] = 0 if m is None or rec in seen else 1 + max(
                (d(p, seen + (rec,)) for p in m.parents), default=-1)
        return depth[rec]

    levels: dict[int, list] = {}
    for m in manifests:
        levels.setdefault(d(m.record), []).append(m)
    return [levels[k] for k in sorted(levels)]


def _size_hint(store: Store, oid) -> int:
    with store.backend.reading() as r:
        raw = r.get(oid)
        return 0 if raw is None else len(raw)


def _send(store: Store, cl, batch: list, result: TransferResult, done) -> None:
    if not batch:
        return
    raws = read_raw(store, batch)
    items = [(L.object_path(o), raw) for o, raw in zip(batch, raws) if raw is not None]
    new = cl.create_many(items, done)
    for (_, raw), n in zip(items, new):
        if n:
            result.objects += 1
            result.bytes += len(raw)
        else:  # someone else pushed it meanwhile
            result.objects_skipped += 1


def _k_seen(remote_uuid: str, name: str) -> bytes:
    """The record this store last saw remote tag ``name`` name."""
    return b"remote-tag/" + remote_uuid.encode() + b"/" + name.encode()


def _push_tag(store: Store, cl, remote_uuid: str, name: str, record: ObjectId, force: bool) -> None:
    import json

    path = L.tag_path(name)
    cur = cl.get(path)
    new = json.dumps({"record": record.hex()}).encode()
    if cur == new:
        return
    seen = store.get_ref(_k_seen(remote_uuid, name))
    if cur is not None and not force and (seen is None or json.loads(cur).get("record") != seen.decode()):
        raise RemoteConflict(f"tag {name!r} on {cl.url} names record {json.loads(cur).get('record')}, "
                             "which this store has not pulled: pull it first, or push with force")
    cl.swap(path, cur, new)
    store.update_refs(lambda txn: txn.put(_k_seen(remote_uuid, name), record.hex().encode()))


def _store() -> Store:
    from ..session import current_store

    return current_store()
