"""Pull: run manifests, their ancestry and their objects, verified, into the local store.

Nothing is ingested until everything needed has been fetched and verified
against its id: a corrupt or missing object on the remote is refused naming
it and the remote, and the store is left as it was. Pulled runs get the next
local run ids and keep their origin; their cache entries and lineage edges
are rebuilt, so a pulled call is a cache hit here and ``terra lineage``
shows the same graph.

Trust: verification proves the bytes are the ones named, not that they are
safe. Pulled pickles are someone else's code; the signed-pickle check of the
trust issue (a per-user key) is what must refuse them without consent. NOTE
for that work: it had not landed when remotes were written, so until it does
a pulled pickle loads like a local one (under ``allow_pickle``); signatures
must be checked against this user's key, so nothing here needs to mark
pulled objects.
"""

from __future__ import annotations

import json

from .. import runs as R
from ..errors import CorruptObject, NotFound, TerraError
from ..objects import ObjectId, Run
from ..store import Store
from . import layout as L
from ._transfer import DATA_MIN, TransferResult, check
from .client import client
from .config import get_remote
from .errors import RemoteCorrupt, RemoteError
from .left import record as record_left

__all__ = ["fetch_missing", "pull"]

#: Bytes of verified objects a pull holds in memory before staging the rest in files under the store.
STAGE_MEMORY = 256 << 20


def pull(runs=None, remote: str | None = None, tag: str | None = None, all: bool = False,  # noqa: A002
         records_only: bool = False, store: Store | None = None, progress=None) -> TransferResult:
    """Fetch runs (with their ancestry) from a remote into the local store.

    Args:
        runs: record ids or unique prefixes (>= 4 hex) of runs on the remote.
        tag: the run a remote tag names (the local tag is set too, if free). all: every run.
        records_only: leave bulk payloads on the remote; ``Artifact.load()`` fetches them
            on demand from the default remote.
        progress: ``progress(phase, done, total)``.

    Returns:
        A :class:`TransferResult`; ``run_ids`` are the local ids the pulled runs got.

    Raises:
        RemoteCorrupt: an object or manifest fails verification (nothing was ingested).
        NotFound: no such run or tag on the remote. RemoteError: the remote is unreachable.
    """
    store = store or _store()
    name, url = get_remote(remote, store)
    result = TransferResult("pull", name, url)
    cl = client(url)
    info = L.open_remote(cl, create=False)
    wanted = _select(cl, runs, tag, all)

    # Manifests of the wanted runs and their ancestry, skipping runs this store has.
    manifests: dict[ObjectId, L.Manifest] = {}
    frontier = list(wanted)
    here: set = set()
    while frontier:
        fresh = []
        with store.refs() as txn:
            for r in dict.fromkeys(frontier):
                if r in manifests or r in here:
                    continue
                if R.run_of_record(txn, r) is not None:
                    here.add(r)
                else:
                    fresh.append(r)
        frontier = []
        for rec, raw in zip(fresh, cl.get_many([L.run_path(r) for r in fresh])):
            if raw is None:
                raise NotFound(f"run {rec.hex()} is not on remote {name} ({url})")
            m = manifests[rec] = L.Manifest.decode(raw, rec, f"{url}/{L.run_path(rec)}")
            frontier += m.parents
    result.runs_skipped = len(here)

    # Their objects, fetched and verified before anything is written here.
    needed: dict[ObjectId, ObjectId] = {}
    for m in manifests.values():
        data = set(m.data) if records_only else set()
        for o in m.objects:
            if o not in data:
                needed.setdefault(o, m.record)
    left = skipped_data(manifests, records_only)
    order = _topological(manifests)
    # Held from gc before anything here is relied on (the has_many below) or written.
    with _Intake(store, name, len(order), [*needed, *left]) as intake:
        here = intake.here(needed)
        todo = [o for o in needed if o not in here]
        result.objects_skipped = len(needed) - len(todo)
        staged = _Staged(store)
        try:
            refs = _fetch(cl, name, todo, progress, lambda o: f"listed by run {needed[o].hex()}", staged)
            # A manifest must list everything its run needs: never ingest a run with holes in it.
            dangling = [r for r in refs if r not in needed and r not in left]
            if dangling:
                intake.hold(dangling)
            here = intake.here(dangling)
            for r in dangling:
                if r not in here:
                    raise RemoteCorrupt(f"remote {name} ({url}): object {r.hex()} is referred to but listed by "
                                        f"no manifest of the runs pulled (run {refs[r].hex()}); nothing was pulled")
            result.objects = len(staged)
            result.bytes = staged.size
            records = {}
            for rec, m in manifests.items():
                obj = staged.records.get(rec)
                if obj is None and rec not in staged.mem and rec not in staged.files:
                    obj = store.get(rec)  # here already (an earlier pull stopped before its commit)
                if not isinstance(obj, Run):
                    raise RemoteCorrupt(f"remote {name} ({url}): run manifest {rec.hex()} names an object that "
                                        "is not a run record")
                records[rec] = dict(obj.fields)
                _agree(m, records[rec], name, url)

            # Ingest: objects, then every pulled run's refs in one commit.
            for batch in staged.batches():
                store.backend.put_many(batch, durable=False)
        finally:
            staged.close()
        here = intake.here(left)
        away = [o for o in left if o not in here]
        result.objects_left = len(away)
        result.run_ids = _commit_runs(store, order, manifests, records, intake.first, (info["uuid"], url, away))
    result.runs = len(order)
    result.records = [r.hex() for r in order]
    if tag is not None:
        _set_local_tag(store, tag, wanted[0], info["uuid"])
    return result.done()


def _select(cl, runs, tag, all_) -> list[ObjectId]:
    if sum(x is not None and x is not False and x != [] and x != () for x in (runs, tag, all_ or None)) != 1:
        raise TerraError("say what to pull: record ids, a tag, or all")
    if tag is not None:
        raw = cl.get(L.tag_path(tag))
        if raw is None:
            raise NotFound(f"no tag {tag!r} on remote {cl.url}")
        try:
            return [ObjectId(bytes.fromhex(json.loads(raw)["record"]))]
        except (ValueError, KeyError, TypeError):
            raise RemoteCorrupt(f"{cl.url}/{L.tag_path(tag)} is not a tag") from None
    listed = [p.rsplit("/", 1)[-1] for p, _ in cl.list("runs/")]
    if all_:
        return [ObjectId(bytes.fromhex(h)) for h in listed if len(h) == 32]
    if isinstance(runs, str):
        runs = [runs]
    out = []
    for r in runs:
        r = str(r).lower()
        hits = [h for h in listed if h.startswith(r)] if len(r) >= 4 else []
        if len(hits) != 1:
            raise NotFound(f"{'no' if not hits else 'more than one'} run on remote {cl.url} matches {r!r}"
                           " (give a record id or a unique prefix of at least 4 hex characters)")
        out.append(ObjectId(bytes.fromhex(hits[0])))
    return out


class _Intake:
    """A pull in progress as gc sees a run in progress: from before it relies on or writes anything
    until its records are committed.

    One short-lived transaction reserves the local run ids the pulled runs will get, puts a
    running entry for this process under the first (renewed as a run's is) and holds every id
    the pull may write or find here (``hold/`` keys, as :meth:`Store.holding` puts them). A gc
    marking before that transaction has a lower counter, so its sweep finds these runs once
    committed; one marking after it finds them held, or already committed. Either way nothing
    they need is deleted, whatever the grace period.
    """

    def __init__(self, store: Store, remote: str, n: int, oids: list):
        self.store, self.remote, self.n, self.oids = store, remote, n, oids
        self.first: int | None = None

    def __enter__(self) -> "_Intake":
        import os
        import time

        from ..config import get_config
        from ..leases import committed_counter, leases
        from ..store import hold_key

        if not self.n:
            return self
        committed = committed_counter(self.store)  # read first: never take the durable lock inside the state's
        seconds = get_config().lease_seconds
        now = time.time()

        def begin(txn):
            counter = txn.get(R.K_COUNTER)
            first = max(int.from_bytes(counter, "big") if counter else 0, committed) + 1
            txn.put(R.K_COUNTER, R.rid8(first + self.n - 1))
            txn.put(R.k_run(first), R.pack({
                "status": "running", "task": "pull", "identity": "terra.pull", "pull": self.remote,
                "start_time": now, "pid": os.getpid(), "host": R.HOST, "expires": now + seconds, "record": None}))
            for oid in self.oids:
                txn.put(hold_key(first, oid), b"")
            return first

        self.first = self.store.update_state(begin)
        leases.hold(self.store, _RENEW, self.first, seconds)
        return self

    def hold(self, oids) -> None:
        """Hold more ids, before relying on them."""
        from ..store import hold_key

        def put(txn):
            for oid in oids:
                txn.put(hold_key(self.first, oid), b"")
        self.store.update_state(put)

    def here(self, oids) -> set:
        """Those of the held ``oids`` stored here, and sure to stay until the commit.

        Found with ``has_many``, then touched: a write serializes with gc's deletes, so a
        delete whose check for holds ran before ours were written, and that removed an id
        after ``has_many`` read it, is seen here; that id is then not here (it is fetched).
        """
        oids = list(oids)
        if not oids:
            return set()
        present = [o for o, p in zip(oids, self.store.backend.has_many(oids)) if p]
        touched = self.store.backend.put_many([(o, None) for o in present], durable=False) if present else []
        return {o for o, r in zip(present, touched) if r is not None}

    def __exit__(self, exc_type, *exc) -> bool:
        from ..leases import leases
        from ..store import hold_key

        first = self.first
        if first is None:
            return False
        leases.release(self.store, _RENEW, first)

        def end(txn):
            last = R.rid8(first + self.n - 1)
            if exc_type is not None and txn.get(R.K_COUNTER) == last:  # nothing committed: give the ids back
                txn.put(R.K_COUNTER, R.rid8(first - 1))
            txn.delete(R.k_run(first))
            for k in [k for k, _ in txn.scan(hold_key(first))]:
                txn.delete(k)

        try:
            self.store.update_state(end)
        except Exception:  # noqa: BLE001 - a failed pull's own error matters more; gc drops dead holds
            if exc_type is None:
                raise
        return False


#: The lease key under which the renewal thread keeps a pull's running entry fresh (no such lease exists).
_RENEW = b"pull"


class _Staged:
    """Verified objects waiting to be ingested: in memory up to a budget, then in files in the store's tmp/."""

    def __init__(self, store: Store, budget: int | None = None):
        self.store, self.budget = store, STAGE_MEMORY if budget is None else budget
        self.mem: dict[ObjectId, bytes] = {}
        self.files: list[ObjectId] = []
        self.size = 0
        self.dir: str | None = None
        self.records: dict[ObjectId, Run] = {}

    def add(self, oid: ObjectId, raw: bytes) -> None:
        self.size += len(raw)
        if self.size <= self.budget:
            self.mem[oid] = raw
            return
        import os
        import tempfile

        if self.dir is None:
            root = getattr(self.store, "root", None)
            base = os.path.join(root, "tmp") if root else None
            if base:
                os.makedirs(base, exist_ok=True)
            self.dir = tempfile.mkdtemp(prefix="pull-", dir=base)
        with open(os.path.join(self.dir, oid.hex()), "wb") as f:
            f.write(raw)
        self.files.append(oid)

    def __len__(self) -> int:
        return len(self.mem) + len(self.files)

    def batches(self, max_bytes: int = 64 << 20):
        """Lists of ``(id, stored bytes)`` of at most about ``max_bytes`` each."""
        import os

        batch, size = [], 0
        items = list(self.mem.items())
        for pair in items:
            batch.append(pair)
            size += len(pair[1])
            if size >= max_bytes:
                yield batch
                batch, size = [], 0
        for oid in self.files:
            with open(os.path.join(self.dir, oid.hex()), "rb") as f:
                batch.append((oid, f.read()))
            size += len(batch[-1][1])
            if size >= max_bytes:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def close(self) -> None:
        if self.dir is not None:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)


def _fetch(cl, name: str, oids: list, progress, why, staged: "_Staged") -> dict:
    """Fetch and verify ``oids`` into ``staged``; returns ``{referenced id: referrer}``."""
    refs: dict = {}
    count = [0]

    def sink(i, raw):
        oid = oids[i]
        if raw is None:
            raise RemoteError(f"remote {name} ({cl.url}) is missing object {oid.hex()} ({why(oid)}); "
                              "nothing was pulled")
        try:
            obj = check(oid, raw)
        except CorruptObject as e:
            raise RemoteCorrupt(f"remote {name} ({cl.url}): object {oid.hex()} failed verification ({e}); "
                                "nothing was pulled") from None
        for r in _children(obj):
            refs.setdefault(r, oid)
        if isinstance(obj, Run):
            staged.records[oid] = obj
        staged.add(oid, raw)
        count[0] += 1
        if progress:
            progress("objects", count[0], len(oids))

    cl.get_each([L.object_path(o) for o in oids], sink)
    return refs


def _children(obj) -> list[ObjectId]:
    from ..objects import references

    if obj.kind == "chunked":
        return [ObjectId(c) for c in obj.chunks]
    if obj.kind == "tree":
        return [ObjectId(r) for r in references(obj)]
    if obj.kind == "run":  # parents are record ids as hex text, not references
        return [ObjectId(r) for r in references(obj)]
    return []


def skipped_data(manifests: dict, records_only: bool) -> set:
    """Objects a records-only pull leaves on the remote."""
    return {o for m in manifests.values() for o in m.data} if records_only else set()


def _agree(m: L.Manifest, fields: dict, name: str, url: str) -> None:
    key = fields.get("cache_key")
    parents = sorted(p for p in fields.get("parents") or [] if isinstance(p, str))
    if (list(fields.get("origin") or []) != m.origin or fields.get("identity") != m.identity
            or (bytes(key).hex() if key else None) != m.cache_key or parents != sorted(p.hex() for p in m.parents)):
        raise RemoteCorrupt(f"remote {name} ({url}): manifest of run {m.record.hex()} disagrees with its record")


def _topological(manifests: dict) -> list[ObjectId]:
    done: dict[ObjectId, None] = {}

    def visit(rec, path=()):
        if rec in done or rec not in manifests or rec in path:
            return
        for p in manifests[rec].parents:
            visit(p, path + (rec,))
        done[rec] = None

    for rec in sorted(manifests, key=lambda r: (manifests[r].origin[0] or "", manifests[r].origin[1] or 0)):
        visit(rec)
    return list(done)


def _commit_runs(store: Store, order: list, manifests: dict, records: dict, first: int, left: tuple) -> list[int]:
    """Commit the pulled runs' refs under the run ids reserved from ``first``, and the objects ``left`` on the remote."""
    if not order:
        return []
    ids = {rec: first + i for i, rec in enumerate(order)}
    produced = {rec: _produced(store, records[rec]) for rec in order}

    def commit(txn):
        ids.clear()
        ids.update({rec: first + i for i, rec in enumerate(order)})
        for rec in order:
            already = R.run_of_record(txn, rec)  # another pull into this store committed it meanwhile
            if already is not None:
                ids[rec] = already
                continue
            rid, f, m = ids[rec], records[rec], manifests[rec]
            status = f.get("status")
            ref = {"status": status, "task": f.get("task"), "identity": f.get("identity"),
                   "start_time": f.get("start_time"), "end_time": f.get("end_time"), "pid": f.get("pid"),
                   "host": f.get("host"), "record": bytes(rec)}
            txn.put(R.k_run(rid), R.pack(ref))
            txn.put(R.k_task(f.get("identity"), rid), R.status_byte(status))
            txn.put(R.k_record(rec), R.rid8(rid))
            key = f.get("cache_key")
            if status == "success" and key and R.get_or_damaged(txn, R.k_cache(bytes(key))) is None:
                txn.put(R.k_cache(bytes(key)), R.rid8(rid) + R.pack_entry(f.get("output"), rec))
            for art, producer in m.inputs:
                p = R.run_of_record(txn, producer)
                if p is not None:
                    txn.put(R.k_edge_c(rid, p, bytes(art)), b"")
                    txn.put(R.k_edge_p(p, rid, bytes(art)), b"")
            for oid in produced[rec]:
                if R.get_or_damaged(txn, R.k_produced(oid)) is None:
                    txn.put(R.k_produced(oid), R.rid8(rid))
        if left[2]:
            record_left(txn, *left)
        cur = txn.get(R.K_COMMITTED)
        last = first + len(order) - 1
        if cur is None or int.from_bytes(cur, "big") < last:
            txn.put(R.K_COMMITTED, R.rid8(last))

    store.update_refs(commit)
    return [ids[r] for r in order]


def _produced(store: Store, fields: dict) -> set[bytes]:
    from ..io import Artifact
    from .._lifecycle import _artifacts

    out = fields.get("output")
    if fields.get("status") != "success" or not isinstance(out, ObjectId):
        return set()
    arts: list = []
    try:
        _artifacts(R.output_view(store, out, None), arts)
    except NotFound:  # records only: the structure is there, a leaf may not be
        pass
    return {bytes(out)} | {bytes(a.__terra_ref__) for a in arts if isinstance(a, Artifact)}


def _set_local_tag(store: Store, name: str, rec: ObjectId, remote_uuid: str) -> None:
    from .push import _k_seen

    def fn(txn):
        rid = R.run_of_record(txn, rec)
        if txn.get(b"tag/" + name.encode()) is None and rid is not None:
            txn.put(b"tag/" + name.encode(), R.rid8(rid))
        txn.put(_k_seen(remote_uuid, name), rec.hex().encode())

    store.update_refs(fn)


def fetch_missing(store: Store, oid: ObjectId, remote: str | None = None) -> int:
    """Fetch ``oid`` and everything it refers to that is missing here, verified, from a remote.

    For ``Artifact.load()`` after ``pull --records-only``. Without ``remote``, each object
    comes from a configured remote a records-only pull left it on (the default one first),
    else from the default remote. Returns how many objects came.

    Raises:
        NotFound: no remote configured, or the remote lacks the object.
        RemoteCorrupt: an object failed verification (nothing was ingested).
    """
    from ..objects import references

    from ._transfer import read_raw

    got: list[tuple[ObjectId, bytes]] = []
    seen: set = set()
    level = [ObjectId(oid)]
    while level:
        level = [o for o in dict.fromkeys(level) if o not in seen]
        seen.update(level)
        local = read_raw(store, level)
        missing = [o for o, raw in zip(level, local) if raw is None]
        raws, where = {}, {}
        for (name, url), oids in _sources(store, missing, remote).items():
            for o, raw in zip(oids, client(url).get_many([L.object_path(o) for o in oids])):
                raws[o], where[o] = raw, (name, url)
        nxt = []
        for o, raw in zip(level, local):
            if raw is None:
                raw = raws[o]
                name, url = where[o]
                if raw is None:
                    raise NotFound(f"object {o.hex()} is neither here nor on remote {name} ({url})")
                try:
                    obj = check(o, raw)
                except CorruptObject as e:
                    raise RemoteCorrupt(f"remote {name} ({url}): object {o.hex()} failed verification ({e}); "
                                        "nothing was fetched") from None
                got.append((o, raw))
            elif raw[:1] == b"\x00" and len(raw) > DATA_MIN:
                continue  # a payload that is here: it refers to nothing worth reading it for
            else:
                obj = check(o, raw)
            if obj.kind == "chunked":
                nxt += [ObjectId(c) for c in obj.chunks]
            elif obj.kind in ("tree", "run"):
                nxt += [ObjectId(r) for r in references(obj)]
        level = nxt
    if got:
        store.backend.put_many(got)
    return len(got)


def _sources(store: Store, oids: list, remote: str | None) -> dict[tuple[str, str], list]:
    """``{(name, url): ids}``: where to fetch each of ``oids`` from (see :func:`fetch_missing`)."""
    from .config import default_remote
    from .left import recorded

    if not oids:
        return {}
    out: dict[tuple[str, str], list] = {}
    if remote is not None:
        out[get_remote(remote, store)] = list(oids)
        return out
    held = recorded(store, oids)
    default = default_remote(store)
    for o in oids:
        names = held.get(bytes(o)) or []
        name = default if default in names or not names else names[0]
        out.setdefault(get_remote(name, store), []).append(o)
    return out


def _store() -> Store:
    from ..session import current_store

    return current_store()
