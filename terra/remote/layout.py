"""What a terra remote holds, path by path.

::

    terra-remote.json        create-only: {"format", "hash", "uuid"}
    objects/<2 hex>/<30 hex> an object's stored bytes exactly as the local store frames them
    runs/<record id>         JSON manifest of one run (written after its objects)
    refs/tags/<name>         JSON {"record": id}, moved by compare-and-swap

A reader that sees a manifest can fetch every object it lists: objects are
always written before the manifest that references them, and nothing on a
remote is ever overwritten except tags.
"""

from __future__ import annotations

import json
import re
import uuid as _uuid

from ..objects import HASH_ALGORITHM, ObjectId
from .errors import RemoteCorrupt, RemoteError

__all__ = ["FORMAT", "MANIFEST_FORMAT", "Manifest", "object_path", "open_remote", "run_path", "tag_path"]

FORMAT = 1
MANIFEST_FORMAT = 1
REMOTE_FILE = "terra-remote.json"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def object_path(oid: bytes) -> str:
    h = bytes(oid).hex()
    return f"objects/{h[:2]}/{h[2:]}"


def object_from_path(path: str) -> ObjectId | None:
    parts = path.split("/")
    h = "".join(parts[-2:]) if len(parts) >= 3 else ""
    return ObjectId(bytes.fromhex(h)) if _HEX32.match(h) else None


def run_path(record: bytes) -> str:
    return f"runs/{bytes(record).hex()}"


_TAG = re.compile(r"^[A-Za-z_][A-Za-z0-9_.+@\-]*$")


def tag_path(name: str) -> str:
    """Where tag ``name`` lives on a remote.

    Raises:
        NotFound: not a tag name (which also keeps paths like ``../x`` off the remote).
    """
    if not isinstance(name, str) or not _TAG.match(name) or ".." in name:
        from ..errors import NotFound

        raise NotFound(f"bad tag name {name!r}")
    return f"refs/tags/{name}"


def open_remote(client, create: bool) -> dict:
    """The remote's ``terra-remote.json``, made (create-only) when ``create`` and absent.

    Raises:
        RemoteError: not a terra remote, or one this terra cannot read.
    """
    raw = client.get(REMOTE_FILE)
    if raw is None and create:
        mine = {"format": FORMAT, "hash": HASH_ALGORITHM, "uuid": _uuid.uuid4().hex}
        client.create(REMOTE_FILE, json.dumps(mine, sort_keys=True).encode())
        raw = client.get(REMOTE_FILE)  # whoever created it first wins
    if raw is None:
        raise RemoteError(f"{client.url} is not a terra remote (no {REMOTE_FILE}); push to it first")
    try:
        info = json.loads(raw)
        fmt, algo, uid = int(info["format"]), info["hash"], info["uuid"]
    except (ValueError, KeyError, TypeError):
        raise RemoteError(f"{client.url}/{REMOTE_FILE} is not a terra remote description") from None
    if fmt > FORMAT:
        raise RemoteError(f"remote {client.url} has format {fmt}, newer than this terra reads ({FORMAT})")
    if algo != HASH_ALGORITHM:
        raise RemoteError(f"remote {client.url} hashes with {algo}, this terra with {HASH_ALGORITHM}")
    return {"format": fmt, "hash": algo, "uuid": str(uid)}


class Manifest:
    """One run as the remote lists it; the record object (verified by id) stays the authority.

    Attributes:
        record: the run's record id. origin: ``[store uuid, run id]`` where it was made.
        identity, task, status: of the run. cache_key: 32 hex or None.
        inputs: ``[(artifact id, producer record id)]``, the lineage edges into the run.
        parents: producer record ids. objects: every object id the run needs, record included.
        data: those of ``objects`` that are bulk payloads (``pull --records-only`` skips them).
    """

    __slots__ = ("record", "origin", "identity", "task", "status", "cache_key", "inputs", "parents", "objects",
                 "data")

    def __init__(self, record, origin, identity, task, status, cache_key, inputs, parents, objects, data=()):
        self.record, self.origin, self.identity, self.task = ObjectId(record), list(origin), identity, task
        self.status, self.cache_key = status, cache_key
        self.inputs = [(ObjectId(a), ObjectId(p)) for a, p in inputs]
        self.parents = [ObjectId(p) for p in parents]
        self.objects = [ObjectId(o) for o in objects]
        self.data = [ObjectId(o) for o in data]

    def encode(self) -> bytes:
        return json.dumps({
            "format": MANIFEST_FORMAT, "record": self.record.hex(), "origin": self.origin,
            "identity": self.identity, "task": self.task, "status": self.status,
            "cache_key": self.cache_key,
            "inputs": sorted([a.hex(), p.hex()] for a, p in self.inputs),
            "parents": sorted(p.hex() for p in self.parents),
            "objects": sorted(o.hex() for o in self.objects),
            "data": sorted(o.hex() for o in self.data),
        }, sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes, record: bytes, where: str) -> "Manifest":
        """Parse a manifest fetched from ``where``; it must describe ``record``.

        Raises:
            RemoteCorrupt: unreadable, of a newer format, or about another record.
        """
        try:
            d = json.loads(raw)
            if int(d["format"]) > MANIFEST_FORMAT:
                raise RemoteError(f"{where}: manifest format {d['format']} is newer than this terra reads")
            m = cls(bytes.fromhex(d["record"]), d["origin"], d["identity"], d["task"], d["status"],
                    d.get("cache_key"), [(bytes.fromhex(a), bytes.fromhex(p)) for a, p in d["inputs"]],
                    [bytes.fromhex(p) for p in d["parents"]], [bytes.fromhex(o) for o in d["objects"]],
                    [bytes.fromhex(o) for o in d.get("data", ())])
        except RemoteError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise RemoteCorrupt(f"{where} is not a valid run manifest: {e}") from None
        if m.record != bytes(record) or m.record not in set(m.objects):
            raise RemoteCorrupt(f"{where} does not describe record {bytes(record).hex()}")
        return m
