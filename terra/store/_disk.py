"""The filesystem under a store: is it safe for LMDB, and how much room is left on it."""

from __future__ import annotations

import os

import lmdb

from ..errors import StoreFull, UnsupportedFilesystem

__all__ = ["NETWORK_FILESYSTEMS", "check_local_filesystem", "disk_full"]

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "ncpfs", "fuse.sshfs",
    "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph", "lustre", "9p", "fuse.s3fs",
})


def _mountinfo() -> str | None:
    try:
        with open("/proc/self/mountinfo") as f:
            return f.read()
    except OSError:
        return None


def check_local_filesystem(path: str, mountinfo: str | None = None) -> str:
    """Return the filesystem type of ``path``; raise if LMDB cannot use it safely.

    Raises:
        UnsupportedFilesystem: ``path`` is on NFS, SMB or another network filesystem.
    """
    if mountinfo is None:
        mountinfo = _mountinfo()
        if mountinfo is None:  # not Linux: nothing to check against
            return "unknown"
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, right.split()[0]
    if fstype in NETWORK_FILESYSTEMS:
        raise UnsupportedFilesystem(
            f"{path} is on a {fstype} filesystem; LMDB is unsafe on network "
            "filesystems: put the store on a local disk and share it through a remote"
        )
    return fstype


# LMDB reports a short write on a full disk as EIO; errno texts that mean "no room".
_NO_ROOM = ("No space left", "File too large", "Disk quota exceeded")
_SLACK = 4 << 20  # room a commit needs beyond its data: page headers, branch pages, meta


def _room(path: str) -> tuple[int, str]:
    """Bytes the store file in directory ``path`` can still grow by, and what limits it."""
    st = os.statvfs(path)
    room, what = st.f_bavail * st.f_frsize, "free on the disk"
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        try:
            size = os.path.getsize(os.path.join(path, "data.mdb"))
        except OSError:
            size = 0
        if limit - size < room:
            room, what = max(limit - size, 0), f"left under the file-size limit ({_mib(limit)}, ulimit -f)"
    return room, what


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


_RECLAIM = ("Reclaim space with `terra rm` and `terra gc` (space freed inside the store is reused by later "
            "writes) and `terra gc --compact` (returns it to the disk), or free space elsewhere")


def disk_full(path: str, exc: BaseException, need: int, doing: str = "writing",
              advice: str = _RECLAIM) -> StoreFull | None:
    """A :class:`StoreFull` for ``exc`` if it was caused by a full disk or file-size limit, else None.

    Args:
        path: the store's directory.
        exc: the error the write raised.
        need: bytes the write was adding (an estimate).
        doing: what failed, for the message.
        advice: how to make room, for the message.
    """
    text = str(exc)
    if not (any(s in text for s in _NO_ROOM) or "Input/output error" in text or isinstance(exc, lmdb.DiskError)):
        return None
    try:
        room, what = _room(path)
    except OSError:
        return None
    needed = need + _SLACK
    if room >= needed and not any(s in text for s in _NO_ROOM):
        return None  # room enough: a real I/O error, not a full disk
    return StoreFull(
        f"store {path}: no room for {doing}: it needs about {_mib(needed)}, {_mib(room)} {what}. "
        f"The store is intact. {advice}", needed, room)
