"""How an object's canonical encoding is laid out in a backend.

A stored value is one flag byte followed by either the encoding itself
(``RAW``) or a zstd frame of it (``ZSTD``). Compression is a storage detail:
ids are always computed over the uncompressed encoding. It is used only
where it pays: a sample is compressed first, and data that does not shrink
(random floats, already-compressed files) is stored raw at memcpy cost.
"""

from __future__ import annotations

import threading

import numpy as np
import zstandard

from ..errors import CorruptObject
from ..objects.model import byte_view

RAW = 0
ZSTD = 1
LEVEL = 3
_SMALL = 128  # below this, compression cannot win back its frame overhead
_SAMPLE = 8 << 10
_KEEP_RATIO = 0.9

_local = threading.local()


def _cctx(level: int) -> zstandard.ZstdCompressor:
    c = getattr(_local, f"c{level}", None)
    if c is None:
        c = zstandard.ZstdCompressor(level=level, write_content_size=True)
        setattr(_local, f"c{level}", c)
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def _compressible(payload: memoryview) -> bool:
    n = payload.nbytes
    if n <= 4 * _SAMPLE:
        return True
    step = (n - _SAMPLE) // 2
    sample = b"".join(payload[i : i + _SAMPLE] for i in (0, step, n - _SAMPLE))
    return len(_cctx(1).compress(sample)) < _KEEP_RATIO * len(sample)


def frame(header: bytes, payload) -> bytes | tuple:
    """The stored form of an encoding given as ``header + payload``.

    Returns bytes, or for a raw payload the parts ``(flag, header, payload)``
    whose concatenation is the stored value: the backend joins them straight
    into its own page (LMDB) so a large payload is copied once, not twice.
    """
    if payload is None:
        total = len(header)
        if total < _SMALL:
            return b"\x00" + header
        z = _cctx(LEVEL).compress(header)
        return b"\x01" + z if len(z) < _KEEP_RATIO * total else b"\x00" + header
    payload = byte_view(payload)
    total = len(header) + payload.nbytes
    if total < _SMALL:
        return b"\x00" + header + payload
    if _compressible(payload):
        c = _cctx(LEVEL).compressobj(size=total)
        z = c.compress(header) + c.compress(payload) + c.flush()
        if len(z) < _KEEP_RATIO * total:
            return b"\x01" + z
    return (b"\x00", header, payload)


def joined(value, out: np.ndarray | None = None):
    """``value`` as one buffer: a framed value is bytes-like or a tuple of parts.

    Parts are copied into ``out`` (a uint8 array at least that large) when
    given, else into a new array.
    """
    if not isinstance(value, tuple):
        return value
    n = sum(memoryview(p).nbytes for p in value)
    buf = np.empty(n, np.uint8) if out is None or out.nbytes < n else out[:n]
    pos = 0
    for p in value:
        m = memoryview(p).nbytes
        buf[pos : pos + m] = np.frombuffer(p, np.uint8)
        pos += m
    return buf


def size(value) -> int:
    """Bytes a framed value (bytes-like or tuple of parts) takes when stored."""
    if isinstance(value, tuple):
        return sum(memoryview(p).nbytes for p in value)
    return value.nbytes if isinstance(value, memoryview) else len(value)


def unframe(key: bytes, raw) -> memoryview:
    """The encoding inside a stored value; zero-copy when stored raw."""
    view = memoryview(raw)
    if not view.nbytes:
        raise CorruptObject(f"object {key.hex()} is corrupt: stored value is empty")
    flag = view[0]
    if flag == RAW:
        return view[1:]
    if flag == ZSTD:
        return memoryview(decompress_into(key, view[1:]))
    raise CorruptObject(f"object {key.hex()}: unknown storage flag {flag}")


def decompress_into(key: bytes, z, out: np.ndarray | None = None) -> np.ndarray:
    """Decompress a zstd frame into ``out`` (allocated to the frame's size if None)."""
    try:
        size = zstandard.frame_content_size(z)
    except zstandard.ZstdError as e:
        raise CorruptObject(f"object {key.hex()}: cannot decompress: {e}") from e
    if size < 0:
        raise CorruptObject(f"object {key.hex()}: zstd frame without a content size")
    if out is None:
        out = np.empty(size, dtype=np.uint8)
    decompress_parts(key, z, [out])
    return out


def decompress_parts(key: bytes, z, outs) -> None:
    """Decompress a zstd frame into the writable buffers ``outs``, filled in order.

    Raises:
        CorruptObject: the frame is damaged or its size is not the buffers' total.
    """
    views = [memoryview(o).cast("B") if memoryview(o).ndim != 1 else memoryview(o) for o in outs]
    total = sum(v.nbytes for v in views)
    try:
        if zstandard.frame_content_size(z) != total:
            raise CorruptObject(f"object {key.hex()} is corrupt: stored size does not match")
        reader = _dctx().stream_reader(z)
        for view in views:
            got = 0
            while got < view.nbytes:
                n = reader.readinto(view[got:])
                if not n:
                    raise CorruptObject(f"object {key.hex()} is corrupt: truncated")
                got += n
    except zstandard.ZstdError as e:
        raise CorruptObject(f"object {key.hex()}: cannot decompress: {e}") from e
