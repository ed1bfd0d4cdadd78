"""User codecs registered with :func:`register_codec`: ``Blob("user", {"codec", "type"}, bytes)``."""

from __future__ import annotations

from ..errors import SerializationError
from ..objects import ObjectId
from . import registry
from ._encode import Encoder, type_name


def _find(enc: Encoder, v) -> ObjectId | None:
    codec = registry.user_codec_for(type(v))
    if codec is None:
        return None
    try:
        data = codec.encode(v)
    except Exception as e:  # noqa: BLE001 - user code
        raise enc.fail(v, f"codec {codec.name!r} failed: {type(e).__name__}: {e}") from e
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise enc.fail(v, f"codec {codec.name!r} returned {type(data).__name__}, not bytes")
    return enc.payload("user", {"codec": codec.name, "type": type_name(type(v))}, data)


def _decode(dec, blob, payload):
    name = blob.meta.get("codec")
    codec = registry.USER_BY_NAME.get(name) if isinstance(name, str) else None
    if codec is None:
        raise SerializationError(f"object {dec.oid.hex()}: the stored {blob.meta.get('type', 'value')} "
                                 f"needs codec {name!r}: "
                                 f"call terra.register_codec(..., name={name!r}) before loading it")
    try:
        return codec.decode(payload.tobytes())
    except Exception as e:  # noqa: BLE001 - user code
        raise SerializationError(f"object {dec.oid.hex()}: codec {name!r} failed to decode it: "
                                 f"{type(e).__name__}: {e}") from e


PROVIDES = registry.Codec(finder=_find, blobs={"user": _decode})
