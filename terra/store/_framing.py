"""How an object's canonical encoding is laid out in a backend.

A stored value is one flag byte followed by either the encoding itself
(``RAW``) or a zstd frame of it (``ZSTD``). Compression is a storage detail:
ids are always computed over the uncompressed encoding. It is used only
where it pays: a sample is compressed first, and data that does not shrink
(random floats, already-compressed files) is stored raw at memcpy cost.

A flag with the ``SIGNED`` bit set is followed by a 32-byte signature, then
the body as above. Signatures (see :mod:`terra.trust`) vouch that this user
wrote the object; they sit outside the encoding, so an object's id is the
same whoever wrote it.

Decompression never trusts the frame: a frame must declare its content size,
that size must be one zstd can produce from the bytes present, and a frame
declaring more than ``VERIFY_OVER`` bytes is first decompressed in bounded
windows and checked against its id before a buffer of that size exists.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import zstandard

from ..errors import CorruptObject
from ..objects.ids import hasher
from ..objects.model import byte_view

if TYPE_CHECKING:
    import numpy as np

RAW = 0
ZSTD = 1
SIGNED = 0x80
SIG_BYTES = 32
# zstd's densest form is an RLE block: 3 header bytes and 1 byte for 128 KiB,
# so no frame holds more than 2**15 times its size; this bound leaves room.
MAX_RATIO = 1 << 16
# Frames declaring more than this are verified in windows before allocating.
VERIFY_OVER = 64 << 20
_WINDOW = 1 << 20
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


def frame(header: bytes, payload, signature: bytes | None = None) -> bytes | tuple:
    """The stored form of an encoding given as ``header + payload``.

    Returns bytes, or for a raw payload the parts ``(flag, header, payload)``
    whose concatenation is the stored value: the backend joins them straight
    into its own page (LMDB) so a large payload is copied once, not twice.
    ``signature`` (``SIG_BYTES`` long) is stored after the flag.
    """
    raw, zstd = b"\x00", b"\x01"
    if signature is not None:
        if len(signature) != SIG_BYTES:
            raise ValueError(f"a signature has {SIG_BYTES} bytes, got {len(signature)}")
        raw, zstd = bytes([RAW | SIGNED]) + signature, bytes([ZSTD | SIGNED]) + signature
    if payload is None:
        total = len(header)
        if total < _SMALL:
            return raw + header
        z = _cctx(LEVEL).compress(header)
        return zstd + z if len(z) < _KEEP_RATIO * total else raw + header
    payload = byte_view(payload)
    total = len(header) + payload.nbytes
    if total < _SMALL:
        return raw + header + payload
    if _compressible(payload):
        c = _cctx(LEVEL).compressobj(size=total)
        z = c.compress(header) + c.compress(payload) + c.flush()
        if len(z) < _KEEP_RATIO * total:
            return zstd + z
    return (raw, header, payload)


def split(key: bytes, raw) -> tuple[int, memoryview]:
    """``(RAW or ZSTD, body)`` of a stored value, past its flag and any signature.

    Raises:
        CorruptObject: the value is empty, too short or has an unknown flag.
    """
    view = memoryview(raw)
    if not view.nbytes:
        raise CorruptObject(f"object {key.hex()} is corrupt: stored value is empty")
    flag = view[0]
    start = 1
    if flag & SIGNED:
        flag &= ~SIGNED
        start += SIG_BYTES
        if view.nbytes < start:
            raise CorruptObject(f"object {key.hex()} is corrupt: truncated signature")
    if flag not in (RAW, ZSTD):
        raise CorruptObject(f"object {key.hex()}: unknown storage flag {view[0]}")
    return flag, view[start:]


def signature(raw) -> bytes | None:
    """The signature stored with a value, or None when it has none."""
    view = memoryview(raw)
    if view.nbytes <= SIG_BYTES or not view[0] & SIGNED:
        return None
    return bytes(view[1 : 1 + SIG_BYTES])


def is_view(raw) -> bool:
    """Whether :func:`unframe` returns a view into ``raw`` (stored uncompressed), not a new buffer."""
    view = memoryview(raw)
    return bool(view.nbytes) and view[0] & ~SIGNED == RAW


def joined(value, out: np.ndarray | None = None):
    """``value`` as one buffer: a framed value is bytes-like or a tuple of parts.

    Parts are copied into ``out`` (a uint8 array at least that large) when
    given, else into a new array.
    """
    if not isinstance(value, tuple):
        return value
    import numpy as np

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
    """The encoding inside a stored value; zero-copy when stored raw.

    Raises:
        CorruptObject: the value is malformed, or a compressed one is damaged,
            implausible or (when large) does not hash to ``key``.
    """
    flag, body = split(key, raw)
    if flag == RAW:
        return body
    return memoryview(decompress_into(key, body))


def content_size(key: bytes, z) -> int:
    """The size a zstd frame declares, refused unless the bytes present could hold it.

    Raises:
        CorruptObject: no declared size, or more than ``MAX_RATIO`` times the frame.
    """
    try:
        size = zstandard.frame_content_size(z)
    except zstandard.ZstdError as e:
        raise CorruptObject(f"object {key.hex()}: cannot decompress: {e}") from e
    if size < 0:
        raise CorruptObject(f"object {key.hex()}: zstd frame without a content size")
    n = memoryview(z).nbytes
    if size > MAX_RATIO * n + _SMALL:
        raise CorruptObject(f"object {key.hex()} is corrupt: a zstd frame of {n} bytes "
                            f"claims {size} bytes, more than zstd can produce from it")
    return size


_BYTEARRAY_MAX = 1 << 20  # larger buffers are numpy arrays: cheaper to fault in (see FACTS)
# Reads copy this much, then hash it while it is in the core's L2 cache.
HASH_WINDOW = 256 << 10
_COPY_WHOLE = 1 << 20


def decompress_into(key: bytes, z, out=None):
    """Decompress a zstd frame into ``out`` (allocated to the frame's size if None: a
    bytearray when small, else a numpy array).

    Raises:
        CorruptObject: see :func:`content_size` and :func:`decompress_parts`.
    """
    size = content_size(key, z)
    if out is None:
        if size <= _BYTEARRAY_MAX:  # records and small values: no numpy needed to read them
            out = bytearray(size)
        else:
            import numpy as np

            if size > VERIFY_OVER:
                verify_streamed(key, z, size)
            out = np.empty(size, dtype=np.uint8)
    decompress_parts(key, z, [out])
    return out


def verify_streamed(key: bytes, z, size: int) -> None:
    """Check that a frame decompresses to ``size`` bytes hashing to ``key``, in bounded memory."""
    h = hasher()
    window = bytearray(_WINDOW)
    got = 0
    try:
        reader = _dctx().stream_reader(z)
        while got <= size:
            n = reader.readinto(window)
            if not n:
                break
            got += n
            h.update(memoryview(window)[:n])
    except zstandard.ZstdError as e:
        raise CorruptObject(f"object {key.hex()}: cannot decompress: {e}") from e
    if got != size:
        raise CorruptObject(f"object {key.hex()} is corrupt: stored size does not match")
    if h.digest() != bytes(key):
        raise CorruptObject(f"object {key.hex()} is corrupt: its bytes do not match its id")


def decompress_parts(key: bytes, z, outs, h=None) -> None:
    """Decompress a zstd frame into the writable buffers ``outs``, filled in order.

    With ``h`` (a hasher), each buffer is hashed once it is filled. (Unlike a
    copy, decompression gains nothing from hashing window by window: zstd
    writes straight into a buffer that takes the whole frame, and through
    its own window buffer, ~5% slower, into a smaller one.)

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
            if h is not None:
                h.update(view)
        # Bytes beyond the declared size mean the frame lied about it.
        if reader.read(1):
            raise CorruptObject(f"object {key.hex()} is corrupt: more data than its stored size")
    except zstandard.ZstdError as e:
        raise CorruptObject(f"object {key.hex()}: cannot decompress: {e}") from e


def copy_hashed(src, dest, h) -> None:
    """Copy ``src`` into ``dest`` (same size, uint8 arrays) and hash what landed in ``dest``.

    A large copy is hashed window by window while each window is in the
    core's cache: one pass over memory instead of two (~20% off a 10 MB load
    whose source is not cached). Up to ``_COPY_WHOLE`` the buffer stays in
    the cache anyway, and one copy and one hash cost less than the windows.
    """
    n = dest.nbytes
    if n <= _COPY_WHOLE:
        dest[...] = src
        h.update(dest)
        return
    for start in range(0, n, HASH_WINDOW):
        end = min(start + HASH_WINDOW, n)
        window = dest[start:end]
        window[...] = src[start:end]
        h.update(window)
