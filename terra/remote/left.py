"""Objects a records-only pull left on a remote: recorded, found again, confirmed.

``pull --records-only`` leaves bulk payloads on the remote. It records, in the
same commit as the runs, which objects it left (``remote-only/<id:16>`` → the
uuids of the remotes holding them) and where it saw each remote
(``remote-seen/<uuid>`` → URL). One rule, used by on-demand loads and by
``terra fsck``: an object missing here is *held by* a configured remote whose
URL is where this store saw a remote it left that object on. A remote that is
no longer configured holds nothing as far as this store is concerned.
"""

from __future__ import annotations

from .. import runs as R

__all__ = ["K_LEFT", "K_SEEN", "holders", "on_remote", "record", "recorded"]

K_LEFT = b"remote-only/"
K_SEEN = b"remote-seen/"


def record(txn, remote_uuid: str, url: str, oids) -> None:
    """Inside the pull's commit: ``oids`` were left on the remote ``remote_uuid`` at ``url``."""
    txn.put(K_SEEN + remote_uuid.encode(), url.encode())
    for oid in oids:
        k = K_LEFT + bytes(oid)
        raw = txn.get(k)
        have = list(R.unpack(raw)) if raw is not None else []
        if remote_uuid not in have:
            txn.put(k, R.pack(have + [remote_uuid]))


def holders(left: dict, seen: dict, configured: dict) -> dict[bytes, list[str]]:
    """Which configured remotes hold each recorded object.

    Args:
        left: ``{object id: [remote uuid, ...]}`` as recorded under ``remote-only/``.
        seen: ``{remote uuid: URL}`` as recorded under ``remote-seen/``.
        configured: ``{name: URL}`` of the configured remotes.

    Returns:
        ``{object id: [remote name, ...]}`` (an empty list: none of its remotes is configured).
    """
    by_url: dict[str, list[str]] = {}
    for name, url in configured.items():
        by_url.setdefault(url, []).append(name)
    return {bytes(o): [n for u in uuids for n in by_url.get(seen.get(u), ())] for o, uuids in left.items()}


def recorded(store, oids) -> dict[bytes, list[str]]:
    """``holders`` of ``oids`` as this store records them (ids never recorded are left out)."""
    from .config import remotes

    with store.refs() as txn:
        left = {bytes(o): R.unpack(raw) for o in oids if (raw := txn.get(K_LEFT + bytes(o))) is not None}
        seen = {k[len(K_SEEN):].decode(): bytes(v).decode() for k, v in txn.scan(K_SEEN)}
    return holders(left, seen, remotes(store)) if left else {}


def on_remote(url: str, oids) -> set[bytes]:
    """Those of ``oids`` the remote at ``url`` has: one LIST per ``objects/<2 hex>/`` directory asked about.

    Raises:
        RemoteError: the remote cannot be reached.
    """
    from . import layout as L
    from .client import client

    cl = client(url)
    want = {bytes(o) for o in oids}
    dirs = sorted({L.object_path(o).rsplit("/", 1)[0] + "/" for o in want})
    found: set[bytes] = set()

    def sink(_, listed):
        for path, _size in listed:
            o = L.object_from_path(path)
            if o is not None and bytes(o) in want:
                found.add(bytes(o))

    cl.list_each(dirs, sink)
    return found


class Found:
    """What :func:`classify` found about objects missing here.

    Attributes:
        held: ``{remote name: ids}`` that remote holds for this store (confirmed unless unchecked).
        excused: ids not damage: held, or unconfirmed because their remote could not be reached.
        problems: one line per thing that is wrong (an object gone from its remote as well,
            recorded on a remote no longer configured, a remote that could not be reached).
    """

    def __init__(self):
        self.held: dict[str, set[bytes]] = {}
        self.excused: set[bytes] = set()
        self.problems: list[str] = []


def classify(refs: dict[bytes, bytes], missing, check: bool = True) -> Found:
    """Which of the ``missing`` object ids a configured remote holds for this store.

    Args:
        refs: this store's refs whose keys start with ``remote`` (as read by fsck).
        missing: ids referenced here but not stored.
        check: confirm with each remote that it still has them (one LIST per object
            directory asked about); False trusts the records.
    """
    import json

    from .errors import RemoteError

    left, seen, configured = {}, {}, {}
    for k, v in refs.items():
        try:
            if k.startswith(K_LEFT) and len(k) == len(K_LEFT) + 16:
                left[k[len(K_LEFT):]] = [str(u) for u in R.unpack(v)]
            elif k.startswith(K_SEEN):
                seen[k[len(K_SEEN):].decode()] = bytes(v).decode()
            elif k.startswith(b"remote/"):
                configured[k[len(b"remote/"):].decode()] = json.loads(v)["url"]
        except (ValueError, TypeError, KeyError):  # fsck checked their seals; a bad shape holds nothing
            continue
    found = Found()
    recorded_here = {bytes(o): left[bytes(o)] for o in missing if bytes(o) in left}
    names = holders(recorded_here, seen, configured)
    by_name: dict[str, set[bytes]] = {}
    for oid, ns in sorted(names.items()):
        if not ns:
            urls = sorted({seen.get(u, f"remote {u}") for u in recorded_here[oid]})
            found.problems.append(f"object {oid.hex()} was left on {', '.join(urls)} by a records-only pull, "
                                  "and no configured remote points there (terra remote add NAME URL)")
        for n in ns:
            by_name.setdefault(n, set()).add(oid)
    for name, oids in sorted(by_name.items()):
        if not check:
            have = set(oids)
        else:
            try:
                have = on_remote(configured[name], oids - found.excused)
            except RemoteError as e:
                found.excused |= oids
                found.problems.append(f"could not reach remote {name} to confirm {len(oids)} object(s) that only it "
                                      f"holds for this store: {e}; run fsck again when it can be reached")
                continue
        if have:
            found.held[name] = have
            found.excused |= have
    for oid in sorted(set(names) - found.excused):
        if names[oid]:
            found.problems.append(f"object {oid.hex()} was left on remote {', '.join(names[oid])} by a records-only "
                                  "pull and is gone from it too")
    return found
